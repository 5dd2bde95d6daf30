//! Quantize and dequantize throughput of the public entry points (f32 <-> i8/u8, per tensor and
//! per row; the kernel tier the CPU selects, AVX2 where it has it), in elements per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quant_core::{
    dequantize_into, quantize_into, quantize_matrix_into, Axis, Granularity, MatrixShape, QuantParams, QuantSpec,
};
use quant_testkit::Rng;
use std::hint::black_box;

const LEN: usize = 1 << 20;

fn data() -> Vec<f32> {
    let mut rng = Rng::new(1);
    (0..LEN).map(|_| rng.normal() as f32).collect()
}

fn quantize(c: &mut Criterion) {
    let x = data();
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Elements(LEN as u64));
    let sym = QuantSpec::symmetric(8).expect("valid");
    let asym = QuantSpec::asymmetric(8).expect("valid");
    let ps = QuantParams::from_tensor(sym, &x).expect("finite");
    let pa = QuantParams::from_tensor(asym, &x).expect("finite");
    let mut out_i8 = vec![0i8; LEN];
    let mut out_u8 = vec![0u8; LEN];
    g.bench_function(BenchmarkId::new("f32_to_i8/tensor", LEN), |b| {
        b.iter(|| quantize_into(black_box(&x), sym, &ps, &mut out_i8).expect("valid"));
    });
    g.bench_function(BenchmarkId::new("f32_to_u8/tensor", LEN), |b| {
        b.iter(|| quantize_into(black_box(&x), asym, &pa, &mut out_u8).expect("valid"));
    });
    let shape = MatrixShape::new(1024, LEN / 1024);
    let rows = Granularity::PerChannel(Axis::Rows);
    let pr = quant_core::matrix_params(&x, shape, sym, rows).expect("finite");
    g.bench_function(BenchmarkId::new("f32_to_i8/row", "1024x1024"), |b| {
        b.iter(|| quantize_matrix_into(black_box(&x), shape, sym, rows, &pr, &mut out_i8).expect("valid"));
    });
    g.bench_function(BenchmarkId::new("params/f32/tensor", LEN), |b| {
        b.iter(|| QuantParams::<f32>::from_tensor(sym, black_box(&x)).expect("finite"));
    });
    g.finish();

    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Elements(LEN as u64));
    quantize_into(&x, sym, &ps, &mut out_i8).expect("valid");
    let mut back = vec![0f32; LEN];
    g.bench_function(BenchmarkId::new("i8_to_f32/tensor", LEN), |b| {
        b.iter(|| dequantize_into(black_box(&out_i8), LEN, &ps, &mut back).expect("valid"));
    });
    g.finish();
}

criterion_group!(benches, quantize);
criterion_main!(benches);
