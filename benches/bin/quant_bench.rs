//! `quant-bench`: times our kernels on the shapes `cargo xtask bench --peers` compares, and
//! prints one JSON object per line: `{"case": .., "shape": .., "threads": .., "seconds": ..,
//! "work": ..}` (`seconds` is the median of the repetitions; `work` is operations for a GEMM,
//! elements for (de)quantization, bytes for the bandwidth probe).
//!
//! Usage: `quant-bench THREADS [CASE_FILTER]`. Run by `cargo xtask bench --peers`.
//! `QLEN=N` in the environment changes the (de)quantization length (default `2^24`), e.g. to
//! see the in-cache speed; the peers always use the default.

use std::hint::black_box;
use std::time::Instant;

use quant_core::{dequantize_into, quantize_into, QuantParams, QuantSpec};
use quant_matmul::{Gemm, MatMut, MatRef, Operands, PackedB, ZeroPoint};
use quant_testkit::Rng;

/// GEMM shapes (M, K, N).
pub const GEMM_SHAPES: [(usize, usize, usize); 8] = [
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (1, 4096, 4096),
    (16, 4096, 4096),
    (128, 4096, 4096),
    (1, 4096, 11008),
];

/// Elements for the (de)quantization cases.
fn quant_len() -> usize {
    std::env::var("QLEN").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 24)
}

fn median_seconds(mut f: impl FnMut()) -> f64 {
    f(); // warm up (and fault in pages)
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < 0.5 && times.len() < 200) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn emit(case: &str, shape: &str, threads: usize, seconds: f64, work: f64) {
    println!(
        r#"{{"case": "{case}", "shape": "{shape}", "threads": {threads}, "seconds": {seconds:e}, "work": {work}}}"#
    );
}

fn gemm<A: quant_matmul::Operand>(
    case: &str,
    threads: usize,
    seven_bit: bool,
    a_zero: ZeroPoint<'_>,
    draw: impl Fn(&mut Rng) -> A,
) {
    let mut rng = Rng::new(7);
    let g = Gemm::new().threads(threads).seven_bit_activations(seven_bit);
    for &(m, k, n) in &GEMM_SHAPES {
        let a: Vec<A> = (0..m * k).map(|_| draw(&mut rng)).collect();
        let b: Vec<i8> = (0..k * n).map(|_| rng.int(-128, 127) as i8).collect();
        let packed = PackedB::new(MatRef::row_major(&b, k, n).expect("valid"));
        let ops = Operands::packed(MatRef::row_major(&a, m, k).expect("valid"), a_zero, &packed, ZeroPoint::None)
            .expect("valid");
        let mut c = vec![0i32; m * n];
        let s = median_seconds(|| {
            g.i32(black_box(&ops), MatMut::row_major(&mut c, m, n).expect("valid")).expect("valid");
        });
        emit(case, &format!("{m}x{k}x{n}"), threads, s, 2.0 * (m * k * n) as f64);
    }
}

fn quantize(threads: usize) {
    let mut rng = Rng::new(9);
    let x: Vec<f32> = (0..quant_len()).map(|_| rng.normal() as f32).collect();
    let spec = QuantSpec::symmetric(8).expect("valid");
    let params = QuantParams::from_tensor(spec, &x).expect("finite");
    let mut q = vec![0i8; quant_len()];
    let s = median_seconds(|| {
        quantize_into(black_box(&x), spec, &params, &mut q).expect("valid");
        black_box(&mut q);
    });
    emit("quantize_f32_i8", &quant_len().to_string(), threads, s, quant_len() as f64);
    let mut back = vec![0f32; quant_len()];
    let s = median_seconds(|| {
        dequantize_into(black_box(&q), quant_len(), &params, &mut back).expect("valid");
        black_box(&mut back);
    });
    emit("dequantize_i8_f32", &quant_len().to_string(), threads, s, quant_len() as f64);
}

/// Read bandwidth: sum a 512 MiB buffer (larger than every cache).
fn bandwidth(threads: usize) {
    let words = 64usize << 20;
    let buf: Vec<u64> = (0..words as u64).collect();
    let s = median_seconds(|| {
        // Eight independent lanes the compiler turns into vector adds: bound by memory.
        let mut acc = [0u64; 8];
        for c in black_box(&buf).chunks_exact(8) {
            for (a, v) in acc.iter_mut().zip(c) {
                *a = a.wrapping_add(*v);
            }
        }
        black_box(acc);
    });
    emit("read_bandwidth", "512MiB", threads, s, (words * 8) as f64);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args.first().and_then(|t| t.parse().ok()).unwrap_or(1);
    let filter = args.get(1).cloned().unwrap_or_default();
    let want = |case: &str| filter.is_empty() || case.contains(&filter);
    let run = || {
        if want("gemm_u8i8") {
            gemm::<u8>("gemm_u8i8", threads, false, ZeroPoint::PerTensor(128), |r| r.int(0, 255) as u8);
        }
        if want("gemm_u7i8") {
            // Activations quantized to 7 bits (reduce_range): the vpmaddubsw path.
            gemm::<u8>("gemm_u7i8", threads, true, ZeroPoint::PerTensor(64), |r| r.int(0, 127) as u8);
        }
        if want("gemm_i8i8") {
            gemm::<i8>("gemm_i8i8", threads, false, ZeroPoint::None, |r| r.int(-128, 127) as i8);
        }
        if want("quantize") {
            quantize(threads);
        }
        if want("read_bandwidth") && threads == 1 {
            bandwidth(threads);
        }
    };
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(run),
        Err(e) => eprintln!("quant-bench: no thread pool: {e}"),
    }
}
