//! `candle-bench`: candle-core's `QMatMul` (CPU) on the decode product's shapes, answering as
//! `quant-bench --serve` and `xtask/peers/peers.py --serve` do, so that `cargo xtask bench
//! --peers` interleaves it with our measurements.
//!
//! Usage: `candle-bench --serve THREADS` reads `CASE SHAPE` lines on stdin (`CASE` is
//! `candle_<type>`, e.g. `candle_q4_k`, `candle_q8_0`; `SHAPE` is `MxKxN`) and answers each
//! with one JSON line `{"case", "shape", "threads", "seconds", "work"}` (the median of
//! repetitions over about 0.3 s; `work` is `2 M K N`) or `{"error": ..}`. candle reads its
//! thread count once, from `CANDLE_NUM_THREADS` (set it to THREADS before starting this).
//!
//! The weights are `N x K` normal values (σ = 0.02) quantized by candle itself
//! (`QTensor::quantize`), the activations `M x K` normal values: the data `quant-bench` uses.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

/// candle's type for a case name.
fn dtype(case: &str) -> Option<GgmlDType> {
    Some(match case.strip_prefix("candle_")? {
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q8_0" => GgmlDType::Q8_0,
        "q2_k" => GgmlDType::Q2K,
        "q3_k" => GgmlDType::Q3K,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        _ => return None,
    })
}

/// `MxKxN`.
fn dims(shape: &str) -> Option<(usize, usize, usize)> {
    let v: Vec<usize> = shape.split('x').map(str::parse).collect::<Result<_, _>>().ok()?;
    match v[..] {
        [m, k, n] => Some((m, k, n)),
        _ => None,
    }
}

/// A deterministic normal sample (SplitMix64 and Box-Muller), `len` values times `sigma`.
fn normal(seed: u64, len: usize, sigma: f64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * sigma) as f32
        })
        .collect()
}

/// The inputs of one case and shape, built once.
struct Prepared {
    mm: QMatMul,
    x: Tensor,
    work: f64,
}

fn prepare(case: &str, shape: &str) -> Result<Prepared, String> {
    let t = dtype(case).ok_or_else(|| format!("unknown case {case}"))?;
    let (m, k, n) = dims(shape).ok_or_else(|| format!("bad shape {shape}, want MxKxN"))?;
    let dev = Device::Cpu;
    let w = Tensor::from_vec(normal(1, n * k, 0.02), (n, k), &dev).map_err(|e| e.to_string())?;
    let q = QTensor::quantize(&w, t).map_err(|e| e.to_string())?;
    let mm = QMatMul::from_qtensor(q).map_err(|e| e.to_string())?;
    let x = Tensor::from_vec(normal(2, m * k, 1.0), (m, k), &dev).map_err(|e| e.to_string())?;
    Ok(Prepared { mm, x, work: 2.0 * (m * k * n) as f64 })
}

/// The median seconds of `forward` over about `budget` seconds (at least 5 runs).
fn time(p: &Prepared, budget: f64) -> Result<f64, String> {
    p.mm.forward(&p.x).map_err(|e| e.to_string())?;
    let (start, mut times) = (Instant::now(), Vec::new());
    while times.len() < 5 || (start.elapsed().as_secs_f64() < budget && times.len() < 200) {
        let t = Instant::now();
        let y = p.mm.forward(&p.x).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
        drop(y);
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    Ok(if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2.0 })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = match (args.first().map(String::as_str), args.get(1).and_then(|t| t.parse().ok())) {
        (Some("--serve"), Some(t)) => t,
        _ => {
            eprintln!("usage: candle-bench --serve THREADS (then CASE SHAPE lines on stdin)");
            std::process::exit(2);
        }
    };
    let mut prepared: HashMap<(String, String), Prepared> = HashMap::new();
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let (Some(case), Some(shape)) = (words.next(), words.next()) else { continue };
        let key = (case.to_string(), shape.to_string());
        if !prepared.contains_key(&key) {
            match prepare(case, shape) {
                Ok(p) => {
                    prepared.insert(key.clone(), p);
                }
                Err(e) => {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{}", serde_json::json!({"error": e}));
                    let _ = out.flush();
                    continue;
                }
            }
        }
        let answer = match prepared.get(&key).ok_or_else(|| "not prepared".to_string()) {
            Ok(p) => match time(p, 0.3) {
                Ok(s) => {
                    serde_json::json!({"case": case, "shape": shape, "threads": threads, "seconds": s, "work": p.work})
                }
                Err(e) => serde_json::json!({"error": e}),
            },
            Err(e) => serde_json::json!({"error": e}),
        };
        let mut out = stdout.lock();
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}
