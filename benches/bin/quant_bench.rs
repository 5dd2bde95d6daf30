//! `quant-bench`: times our kernels on the shapes `cargo xtask bench` compares, and prints one
//! JSON object per measurement: `{"case": .., "shape": .., "threads": .., "seconds": ..,
//! "work": ..}` (`seconds` is the median of the repetitions; `work` is operations for a GEMM,
//! elements for (de)quantization, bytes for the bandwidth probes: `read_bandwidth` the bytes
//! read, `copy_bandwidth` the bytes read plus the bytes written).
//!
//! Usage:
//! - `quant-bench THREADS [CASE_FILTER]`: every case (or those whose name contains the filter)
//!   on every shape, once.
//! - `quant-bench --serve`: reads `CASE SHAPE THREADS [SECONDS]` lines on stdin and answers each
//!   with one JSON line (inputs are built once per case and shape, then kept; the case is timed
//!   for about SECONDS, 0.3 by default). `cargo xtask bench` drives it this way to interleave
//!   our measurements with the peers' one by one, and to profile one case with `perf`.
//! - `quant-bench --list`: the `CASE SHAPE` pairs, one per line.
//! - `quant-bench --errors DIR`: writes activations and weights to `DIR` and prints the
//!   relative error of the group multiply's modes on them (see `errors.rs`).
//! - `quant-bench --peak`: the selected kernel tier, its inner instruction and that
//!   instruction's peak on one core in GOPS, as one JSON line.
//!
//! `QLEN=N` in the environment changes the (de)quantization length (default `2^24`), e.g. to
//! see the in-cache speed; the peers always use the default.
//!
//! The model cases `minilm_f32`, `minilm_w8a8` (activations `u8` per row) and `minilm_w8a8_sym`
//! (`i8` per row, symmetric) (shapes `b1`, `b32`: the batch size) run
//! all-MiniLM-L6-v2 from the directory `QUANT_MINILM_DIR` names (`cargo xtask bench` fetches
//! it) on the first 64 evaluation sentences of `crates/quant-eval/data/sentences.txt`; their
//! work is the sentence count, so their rate is sentences per second (times 1e-9).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::time::Instant;

use quant_core::BlockFormat;
use quant_core::{dequantize_into, quantize_into, QuantParams, QuantSpec};
use quant_matmul::{quantized_matmul, Gemm, GroupGemm, GroupWeights, MatMut, MatRef, Operands, PackedB, ZeroPoint};
use quant_testkit::Rng;

mod errors;
mod peak;

/// GEMM shapes (M, K, N).
const GEMM_SHAPES: [(usize, usize, usize); 8] = [
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (1, 4096, 4096),
    (16, 4096, 4096),
    (128, 4096, 4096),
    (1, 4096, 11008),
];

const GEMM_CASES: [&str; 3] = ["gemm_u8i8", "gemm_u7i8", "gemm_i8i8"];
const QUANT_CASES: [&str; 2] = ["quantize_f32_i8", "dequantize_i8_f32"];

/// Elements for the (de)quantization cases.
fn quant_len() -> usize {
    std::env::var("QLEN").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 24)
}

/// Median seconds of `f` over at least 5 runs and about `budget` seconds, after one warm-up
/// run (which also faults in the output pages).
fn median_seconds(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    // At most 200 repetitions for the usual short budgets; a long budget (a profile) runs on.
    let cap = if budget > 1.0 { usize::MAX } else { 200 };
    while times.len() < 5 || (start.elapsed().as_secs_f64() < budget && times.len() < cap) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    quant_analysis::median(&times)
}

fn line(case: &str, shape: &str, threads: usize, seconds: f64, work: f64) -> String {
    serde_json::json!({"case": case, "shape": shape, "threads": threads, "seconds": seconds, "work": work}).to_string()
}

/// The group multiply's cases: weights format, `_f32` for the float-activation mode. Any
/// llama.cpp format also runs as `group_<name>` (e.g. `group_q4_k`, `group_iq4_nl_f32`), and
/// our `levels4/16@256` two-level format as `group_levels4`.
const GROUP_CASES: [&str; 11] = [
    "group_q4_0",
    "group_q8_0",
    "group_s4_g128",
    "group_q4_0_f32",
    "group_s4_g128_f32",
    "group_q4_k",
    "group_q6_k",
    "group_iq4_nl",
    "group_levels4",
    "group_q4_k_f32",
    "group_levels4_f32",
];
/// `M = 1` with weights far larger than any L3 (Q4_0: 151 MB, our packed form 168 MB).
const STREAM_SHAPE: &str = "1x8192x32768";
const GROUP_SHAPES: [&str; 7] =
    ["1x4096x4096", "16x4096x4096", "128x4096x4096", "1x4096x11008", "16x4096x11008", "128x4096x11008", STREAM_SHAPE];

/// Every `(case, shape)` this binary measures.
fn all_cases() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for &(m, k, n) in &GEMM_SHAPES {
        for case in GEMM_CASES {
            v.push((case.to_string(), format!("{m}x{k}x{n}")));
        }
    }
    for case in QUANT_CASES {
        v.push((case.to_string(), quant_len().to_string()));
    }
    // Group-quantized weights (llama.cpp's blocks, and symmetric 4-bit codes with groups of
    // 128), both compute modes (`_f32`: float activations), on the decode shapes and on one
    // streaming shape whose weights are many times the L3 (as in real decoding).
    for shape in GROUP_SHAPES {
        for case in GROUP_CASES {
            v.push((case.to_string(), shape.to_string()));
        }
    }
    // The 8-bit engine on the streaming shape (the 4-bit decoding target is against it).
    v.push(("gemm_u8i8".to_string(), STREAM_SHAPE.to_string()));
    // The seed API on int8-range codes, nested `Vec`s in and out, beside the engine's figure.
    v.push(("seed_matmul".to_string(), "1024x1024x1024".to_string()));
    v.push(("read_bandwidth".to_string(), "512MiB".to_string()));
    v.push(("copy_bandwidth".to_string(), "512MiB".to_string()));
    v.push(("peak_inner".to_string(), "registers".to_string()));
    for shape in ["b1", "b32"] {
        for case in ["minilm_f32", "minilm_w8a8", "minilm_w8a8_sym"] {
            v.push((case.to_string(), shape.to_string()));
        }
    }
    v
}

/// The llama.cpp format a `group_<name>[_f32]` case names.
fn group_format(case: &str) -> Option<BlockFormat> {
    let name = case.strip_prefix("group_")?;
    let name = name.strip_suffix("_f32").unwrap_or(name);
    BlockFormat::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
}

/// The inputs of one case, built once.
enum Prepared {
    GemmU8 { m: usize, n: usize, seven_bit: bool, a: Vec<u8>, packed: PackedB, c: Vec<i32> },
    GemmI8 { m: usize, n: usize, a: Vec<i8>, packed: PackedB, c: Vec<i32> },
    Quantize { x: Vec<f32>, q: Vec<i8> },
    Dequantize { q: Vec<i8>, params: QuantParams<f32>, back: Vec<f32> },
    Bandwidth { buf: Vec<u64> },
    Copy { src: Vec<u64>, dst: Vec<u64> },
    Seed { a: Vec<Vec<i32>>, b: Vec<Vec<i32>>, m: usize, k: usize, n: usize },
    Peak,
    Group { x: Vec<f32>, w: GroupWeights, y: Vec<f32>, float: bool },
    Model { model: quant_eval::Encoder, batches: Vec<quant_eval::Batch>, sentences: usize },
}

/// Sentences the model cases embed per timing.
const MODEL_SENTENCES: usize = 64;

/// The model case `case` (`minilm_f32`, `minilm_w8a8`) at batch size `shape` (`b1`, `b32`).
fn prepare_model(case: &str, shape: &str) -> Result<Prepared, String> {
    let batch: usize =
        shape.strip_prefix('b').and_then(|b| b.parse().ok()).ok_or(format!("{case}: bad batch {shape}, want bN"))?;
    let dir = std::env::var_os("QUANT_MINILM_DIR").ok_or(format!(
        "{case}: set QUANT_MINILM_DIR to all-MiniLM-L6-v2's directory (cargo xtask bench fetches it)"
    ))?;
    let dir = std::path::PathBuf::from(dir);
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/quant-eval/data/sentences.txt");
    let mut sentences = quant_eval::read_sentences(&file, quant_eval::Split::Evaluation).map_err(|e| e.to_string())?;
    sentences.truncate(MODEL_SENTENCES);
    let text = quant_eval::TextEncoder::load(&dir).map_err(|e| e.to_string())?;
    let batches = text.batches(&sentences, batch).map_err(|e| e.to_string())?;
    let scheme =
        if case.ends_with("_sym") { quant_eval::RowScheme::Symmetric } else { quant_eval::RowScheme::Asymmetric };
    let model = match case {
        "minilm_f32" => quant_eval::load_f32(&dir),
        _ => quant_eval::Encoder::load(&dir, &mut |w| {
            Ok(Box::new(quant_eval::DynamicInt8::new(w, scheme)?) as Box<dyn quant_eval::Linear>)
        }),
    }
    .map_err(|e| e.to_string())?;
    Ok(Prepared::Model { model, batches, sentences: sentences.len() })
}

fn parse_shape(shape: &str) -> Option<(usize, usize, usize)> {
    let mut it = shape.split('x').map(|d| d.parse::<usize>().ok());
    let dims = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(dims)
}

fn prepare(case: &str, shape: &str) -> Result<Prepared, String> {
    let gemm_dims = || parse_shape(shape).ok_or_else(|| format!("{case}: bad shape {shape}, want MxKxN"));
    let weights = |rng: &mut Rng, k: usize, n: usize| {
        let b: Vec<i8> = (0..k * n).map(|_| rng.int(-128, 127) as i8).collect();
        PackedB::new(MatRef::row_major(&b, k, n).expect("valid shape")).map_err(|e| e.to_string())
    };
    let len = || shape.parse::<usize>().map_err(|_| format!("{case}: bad length {shape}"));
    let mut rng = Rng::new(7);
    Ok(match case {
        "gemm_u8i8" | "gemm_u7i8" => {
            let (m, k, n) = gemm_dims()?;
            let seven_bit = case == "gemm_u7i8";
            let hi = if seven_bit { 127 } else { 255 };
            let a = (0..m * k).map(|_| rng.int(0, hi) as u8).collect();
            Prepared::GemmU8 { m, n, seven_bit, a, packed: weights(&mut rng, k, n)?, c: vec![0; m * n] }
        }
        "gemm_i8i8" => {
            let (m, k, n) = gemm_dims()?;
            let a = (0..m * k).map(|_| rng.int(-128, 127) as i8).collect();
            Prepared::GemmI8 { m, n, a, packed: weights(&mut rng, k, n)?, c: vec![0; m * n] }
        }
        "quantize_f32_i8" | "dequantize_i8_f32" => {
            let len = len()?;
            let x: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
            let spec = QuantSpec::symmetric(8).expect("valid");
            let params = QuantParams::from_tensor(spec, &x).map_err(|e| e.to_string())?;
            let mut q = vec![0i8; len];
            quantize_into(&x, spec, &params, &mut q).map_err(|e| e.to_string())?;
            if case == "quantize_f32_i8" {
                Prepared::Quantize { x, q }
            } else {
                Prepared::Dequantize { q, params, back: vec![0.0; len] }
            }
        }
        "read_bandwidth" => Prepared::Bandwidth { buf: (0..64u64 << 20).collect() },
        // 256 MiB read and 256 MiB written: the yardstick of (de)quantization, which reads one
        // array and writes another.
        "copy_bandwidth" => Prepared::Copy { src: (0..32u64 << 20).collect(), dst: vec![0; 32 << 20] },
        "seed_matmul" => {
            let (m, k, n) = gemm_dims()?;
            let mut codes = |rows: usize, cols: usize| -> Vec<Vec<i32>> {
                (0..rows).map(|_| (0..cols).map(|_| rng.int(-128, 127) as i32).collect()).collect()
            };
            let a = codes(m, k);
            let b = codes(k, n);
            Prepared::Seed { a, b, m, k, n }
        }
        "peak_inner" => Prepared::Peak,
        "group_s4_g128" | "group_s4_g128_f32" => {
            // Symmetric 4-bit codes, one f32 scale per 128 inputs (MatMulNBits' block 128).
            let (m, k, n) = gemm_dims()?;
            let codes: Vec<quant_traits::I4x2> =
                (0..n * k / 2).map(|_| quant_traits::I4x2(rng.int(0, 255) as u8)).collect();
            let scales: Vec<f32> = (0..n * k / 128).map(|_| rng.uniform(1e-3, 1e-2) as f32).collect();
            let w = GroupWeights::sym4(&codes, &scales, n, k, 128).map_err(|e| e.to_string())?;
            let x = (0..m * k).map(|_| rng.normal() as f32).collect();
            Prepared::Group { x, w, y: vec![0.0; m * n], float: case.ends_with("_f32") }
        }
        "group_levels4" | "group_levels4_f32" => {
            // Our levels4/16@256: 4-bit levels, sub-blocks of 16, 6-bit sub-scales under an f16
            // per 256 (4.4375 bits a weight in the file).
            let (m, k, n) = gemm_dims()?;
            let wf: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32 * 0.02).collect();
            let spec = quant_core::superblock::SuperSpec::new(quant_core::superblock::Grid::Levels, 4, 16)
                .and_then(|s| s.with_super_len(Some(256)))
                .map_err(|e| e.to_string())?;
            let q = quant_core::superblock::quantize_super(&wf, quant_traits::MatrixShape::new(n, k), spec, None)
                .map_err(|e| e.to_string())?;
            drop(wf);
            let w = GroupWeights::from_super(&q).map_err(|e| e.to_string())?;
            let x = (0..m * k).map(|_| rng.normal() as f32).collect();
            Prepared::Group { x, w, y: vec![0.0; m * n], float: case.ends_with("_f32") }
        }
        "minilm_f32" | "minilm_w8a8" | "minilm_w8a8_sym" => prepare_model(case, shape)?,
        _ if group_format(case).is_some() => {
            let format = group_format(case).ok_or("a block format")?;
            let (m, k, n) = gemm_dims()?;
            let wf: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32 * 0.02).collect();
            let bytes = format.quantize(&wf).map_err(|e| e.to_string())?;
            drop(wf);
            let w = GroupWeights::from_blocks(format, &bytes, n, k).map_err(|e| e.to_string())?;
            let x = (0..m * k).map(|_| rng.normal() as f32).collect();
            Prepared::Group { x, w, y: vec![0.0; m * n], float: case.ends_with("_f32") }
        }
        _ => return Err(format!("unknown case {case}")),
    })
}

/// Times one prepared case with `threads` threads (the caller installs the pool): (median
/// seconds, work).
fn measure(p: &mut Prepared, threads: usize, budget: f64) -> (f64, f64) {
    let g = Gemm::new().threads(threads);
    match p {
        Prepared::GemmU8 { m, n, seven_bit, a, packed, c } => {
            let (m, n, k) = (*m, *n, packed.k());
            let g = g.seven_bit_activations(*seven_bit);
            let zero = if *seven_bit { 64 } else { 128 };
            let ops = Operands::packed(
                MatRef::row_major(a, m, k).expect("valid"),
                ZeroPoint::PerTensor(zero),
                packed,
                ZeroPoint::None,
            )
            .expect("valid");
            let s = median_seconds(budget, || {
                g.i32(black_box(&ops), MatMut::row_major(c, m, n).expect("valid")).expect("valid");
            });
            (s, 2.0 * (m * k * n) as f64)
        }
        Prepared::GemmI8 { m, n, a, packed, c } => {
            let (m, n, k) = (*m, *n, packed.k());
            let ops =
                Operands::packed(MatRef::row_major(a, m, k).expect("valid"), ZeroPoint::None, packed, ZeroPoint::None)
                    .expect("valid");
            let s = median_seconds(budget, || {
                g.i32(black_box(&ops), MatMut::row_major(c, m, n).expect("valid")).expect("valid");
            });
            (s, 2.0 * (m * k * n) as f64)
        }
        Prepared::Quantize { x, q } => {
            let spec = QuantSpec::symmetric(8).expect("valid");
            let params = QuantParams::from_tensor(spec, x).expect("finite");
            let s = median_seconds(budget, || {
                quantize_into(black_box(&x[..]), spec, &params, &mut q[..]).expect("valid");
                black_box(&mut *q);
            });
            (s, x.len() as f64)
        }
        Prepared::Dequantize { q, params, back } => {
            let s = median_seconds(budget, || {
                dequantize_into(black_box(&q[..]), q.len(), params, &mut back[..]).expect("valid");
                black_box(&mut *back);
            });
            (s, q.len() as f64)
        }
        Prepared::Seed { a, b, m, k, n } => {
            let s = median_seconds(budget, || {
                black_box(quantized_matmul(black_box(&a[..]), &b[..], 0.01f32, 0.02f32).expect("valid"));
            });
            (s, 2.0 * (*m * *k * *n) as f64)
        }
        Prepared::Group { x, w, y, float } => {
            let (k, n) = (w.k(), w.n());
            let m = x.len() / k;
            let g = GroupGemm::new().threads(threads);
            let s = median_seconds(budget, || {
                let (x, y) = (
                    MatRef::row_major(black_box(&x[..]), m, k).expect("valid"),
                    MatMut::row_major(&mut y[..], m, n).expect("valid"),
                );
                if *float { g.float_activations(x, w, None, y) } else { g.int8_activations(x, w, None, y) }
                    .expect("valid");
            });
            (s, 2.0 * (m * k * n) as f64)
        }
        Prepared::Model { model, batches, sentences } => {
            // The pool installed by the caller has `threads` threads: every parallel step of
            // the encoder and its GEMMs runs on it.
            let s = median_seconds(budget, || {
                black_box(quant_eval::embed_all(model, black_box(batches)).expect("the model runs"));
            });
            (s, *sentences as f64)
        }
        Prepared::Peak => {
            // One core's peak: the thread count does not apply (run on the calling thread).
            let tier = g.tier().unwrap_or(quant_traits::cpu::Tier::Portable);
            let iters = 2_000_000;
            let mut ops = 0.0;
            let s = median_seconds(budget, || ops = peak::run(tier, black_box(iters)).unwrap_or(0.0));
            (s, ops)
        }
        Prepared::Copy { src, dst } => {
            // Each thread copies its own contiguous part (memcpy).
            let part = src.len().div_ceil(threads);
            let s = median_seconds(budget, || {
                rayon::scope(|sc| {
                    for (d, s) in dst.chunks_mut(part).zip(black_box(&src[..]).chunks(part)) {
                        sc.spawn(move |_| d.copy_from_slice(s));
                    }
                });
                black_box(&mut *dst);
            });
            (s, (src.len() * 16) as f64)
        }
        Prepared::Bandwidth { buf } => {
            // Eight independent lanes the compiler turns into vector adds: bound by memory.
            // With `threads` threads, each sums its own contiguous part.
            let sum = |part: &[u64]| {
                let mut acc = [0u64; 8];
                for c in part.chunks_exact(8) {
                    for (a, v) in acc.iter_mut().zip(c) {
                        *a = a.wrapping_add(*v);
                    }
                }
                black_box(acc);
            };
            let part = buf.len().div_ceil(threads).next_multiple_of(8);
            let s = median_seconds(budget, || {
                rayon::scope(|sc| {
                    for chunk in black_box(&buf[..]).chunks(part) {
                        sc.spawn(move |_| sum(chunk));
                    }
                });
            });
            (s, (buf.len() * 8) as f64)
        }
    }
}

/// Prepared inputs and one rayon pool per thread count.
#[derive(Default)]
struct Bench {
    prepared: HashMap<(String, String), Prepared>,
    pools: HashMap<usize, rayon::ThreadPool>,
}

impl Bench {
    fn run(&mut self, case: &str, shape: &str, threads: usize, budget: f64) -> Result<String, String> {
        let p = match self.prepared.entry((case.to_string(), shape.to_string())) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(prepare(case, shape)?),
        };
        let pool = match self.pools.entry(threads) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| format!("no thread pool of {threads}: {e}"))?,
            ),
        };
        let (s, work) = pool.install(|| measure(p, threads, budget));
        Ok(line(case, shape, threads, s, work))
    }
}

fn serve() -> Result<(), String> {
    let mut bench = Bench::default();
    let stdout = std::io::stdout();
    for request in std::io::stdin().lock().lines() {
        let request = request.map_err(|e| format!("reading stdin: {e}"))?;
        let words: Vec<&str> = request.split_whitespace().collect();
        let reply = match words[..] {
            [case, shape, threads] | [case, shape, threads, _] => {
                let budget = words.get(3).map_or(Ok(0.3), |b| b.parse::<f64>());
                match (threads.parse(), budget) {
                    (Ok(t), Ok(b)) if b > 0.0 => bench.run(case, shape, t, b),
                    _ => Err(format!("bad thread count or seconds in {request:?}")),
                }
            }
            [] => continue,
            _ => Err(format!("want CASE SHAPE THREADS [SECONDS], got {request:?}")),
        };
        // A failed request answers with an error line, so the driver never waits forever.
        let text = reply.unwrap_or_else(|e| serde_json::json!({"error": e}).to_string());
        let mut out = stdout.lock();
        writeln!(out, "{text}").and_then(|()| out.flush()).map_err(|e| format!("writing stdout: {e}"))?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--serve") => serve(),
        Some("--errors") => match args.get(1) {
            Some(dir) => errors::run(std::path::Path::new(dir)),
            None => Err("--errors needs a directory".to_string()),
        },
        Some("--peak") => {
            let tier = Gemm::new().tier().map_err(|e| e.to_string());
            tier.map(|t| {
                println!("{}", serde_json::json!({"kernel": t.name(), "instruction": peak::instruction(t)}));
            })
        }
        Some("--list") => {
            for (case, shape) in all_cases() {
                println!("{case} {shape}");
            }
            Ok(())
        }
        first => {
            let threads: usize = first.and_then(|t| t.parse().ok()).unwrap_or(1);
            let filter = args.get(1).cloned().unwrap_or_default();
            let mut bench = Bench::default();
            all_cases()
                .into_iter()
                .filter(|(case, _)| case.contains(&filter) && !(case == "peak_inner" && threads > 1))
                .try_for_each(|(case, shape)| {
                    let text = bench.run(&case, &shape, threads, 0.5)?;
                    // Free each case's inputs once measured.
                    bench.prepared.clear();
                    println!("{text}");
                    Ok(())
                })
        }
    };
    if let Err(e) = result {
        eprintln!("quant-bench: {e}");
        std::process::exit(1);
    }
}
