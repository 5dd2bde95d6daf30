//! Quick single-run timings of the engine (u8 x i8, f32 out) for tuning; not a benchmark of
//! record (use `cargo xtask bench`). Usage: scaling [M K N threads reps]
use quant_matmul::{Gemm, MatMut, MatRef, Operands, Scale, ZeroPoint};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let get = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (m, k, n, threads, reps) = (get(0, 1024), get(1, 1024), get(2, 1024), get(3, 1), get(4, 10));
    let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 256) as u8).collect();
    let b: Vec<i8> = (0..k * n).map(|i| (i * 13 % 256) as u8 as i8).collect();
    let ops = Operands::new(
        MatRef::row_major(&a, m, k)?,
        ZeroPoint::PerTensor(128),
        MatRef::row_major(&b, k, n)?,
        ZeroPoint::None,
    )?;
    let mut out = vec![0f32; m * n];
    let g = Gemm::new().threads(threads);
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        g.f32(&ops, 1.0, Scale::PerTensor(1.0), None, MatMut::row_major(&mut out, m, n)?)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = quant_analysis::median(&times);
    println!(
        "{m}x{k}x{n} threads {threads}: median {:.3} ms, {:.1} GOPS (min {:.1}, max {:.1})",
        med * 1e3,
        2.0 * (m * k * n) as f64 / med / 1e9,
        2.0 * (m * k * n) as f64 / times[times.len() - 1] / 1e9,
        2.0 * (m * k * n) as f64 / times[0] / 1e9
    );
    Ok(())
}
