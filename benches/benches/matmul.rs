//! The exact reference integer matmul: int8-range codes (i32 accumulator) and full 32-bit codes
//! (i128 accumulator), in integer operations (2·m·k·n) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_matmul::{matmul_exact, Gemm, GemmShape, MatMut, MatRef, Operands, Scale, ZeroPoint};
use quant_testkit::Rng;
use std::hint::black_box;

fn codes(rng: &mut Rng, len: usize, lo: i64, hi: i64) -> Vec<i32> {
    (0..len).map(|_| i32::try_from(rng.int(lo, hi)).expect("fits")).collect()
}

fn matmul(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut g = c.benchmark_group("matmul_exact");
    for size in [64usize, 128, 256] {
        let shape = GemmShape::new(size, size, size);
        g.throughput(Throughput::Elements(2 * (size * size * size) as u64));
        let a = codes(&mut rng, size * size, -128, 127);
        let b = codes(&mut rng, size * size, -128, 127);
        g.bench_function(BenchmarkId::new("i8_codes", format!("{size}x{size}x{size}")), |bch| {
            bch.iter(|| matmul_exact(black_box(&a), black_box(&b), shape).expect("valid"));
        });
        if size <= 128 {
            let a = codes(&mut rng, size * size, i64::from(i32::MIN), i64::from(i32::MAX));
            let b = codes(&mut rng, size * size, i64::from(i32::MIN), i64::from(i32::MAX));
            g.bench_function(BenchmarkId::new("i32_codes", format!("{size}x{size}x{size}")), |bch| {
                bch.iter(|| matmul_exact(black_box(&a), black_box(&b), shape).expect("valid"));
            });
        }
    }
    g.finish();
}

fn engine(c: &mut Criterion) {
    let mut rng = Rng::new(4);
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    for &(m, k, n) in &[(256usize, 256usize, 256usize), (1024, 1024, 1024), (128, 4096, 4096)] {
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let a: Vec<u8> = (0..m * k).map(|_| rng.int(0, 255) as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|_| rng.int(-128, 127) as i8).collect();
        let ops = Operands::new(
            MatRef::row_major(&a, m, k).expect("valid"),
            ZeroPoint::PerTensor(128),
            MatRef::row_major(&b, k, n).expect("valid"),
            ZeroPoint::None,
        )
        .expect("valid");
        let mut out = vec![0f32; m * n];
        for threads in [1usize, 2] {
            let gemm = Gemm::new().threads(threads);
            g.bench_function(BenchmarkId::new(format!("u8i8_f32/t{threads}"), format!("{m}x{k}x{n}")), |bch| {
                bch.iter(|| {
                    gemm.f32(
                        &ops,
                        0.01,
                        Scale::PerTensor(0.01),
                        None,
                        MatMut::row_major(&mut out, m, n).expect("valid"),
                    )
                    .expect("valid")
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, matmul, engine);
criterion_main!(benches);
