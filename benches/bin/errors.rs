//! `quant-bench --errors DIR`: the relative error of each compute mode of the group multiply on
//! data written to `DIR` for the peers to use too, so every library is measured on the same
//! activations and the same weights.
//!
//! Writes `x.f32` (`M x K` activations, little-endian `f32`), `w.f32` (`N x K` weights) and
//! `w.q4_0`, `w.q8_0`, `w.q4_k` (our llama.cpp block bytes of `w`, which the peers compare with
//! their own quantization), then prints one JSON line per (format, mode):
//! `{"case": "group_q4_0", "mode": "int8", "error": ...}` with
//! `error = ||y - y*|| / ||y*||`, `y* = x · Wᵀ` in `f64` with the dequantized weights. `Q4_K`
//! also runs as `int8-group` (an activation scale a group of 32 instead of a super-block).

use std::path::Path;

use quant_core::BlockFormat;
use quant_matmul::{ActivationBlocks, GroupGemm, GroupWeights, MatMut, MatRef};
use quant_testkit::Rng;

/// The data's shape: a decode batch of 16 rows of a 4096-wide layer.
pub const SHAPE: (usize, usize, usize) = (16, 4096, 4096);

/// Activations as a transformer's are: normal, with a few feature columns far larger.
fn activations(rng: &mut Rng, m: usize, k: usize) -> Vec<f32> {
    (0..m * k).map(|i| rng.normal() as f32 * if i % k % 512 == 7 { 20.0 } else { 1.0 }).collect()
}

fn write_f32(path: &Path, v: &[f32]) -> Result<(), String> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

pub fn run(dir: &Path) -> Result<(), String> {
    let (m, k, n) = SHAPE;
    let mut rng = Rng::new(21);
    let x = activations(&mut rng, m, k);
    let w: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32 * 0.02).collect();
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write_f32(&dir.join("x.f32"), &x)?;
    write_f32(&dir.join("w.f32"), &w)?;
    for (format, name) in [(BlockFormat::Q4_0, "q4_0"), (BlockFormat::Q8_0, "q8_0"), (BlockFormat::Q4_K, "q4_k")] {
        let bytes = format.quantize(&w).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(format!("w.{name}")), &bytes).map_err(|e| e.to_string())?;
        let gw = GroupWeights::from_blocks(format, &bytes, n, k).map_err(|e| e.to_string())?;
        let exact: Vec<f64> = (0..m)
            .flat_map(|i| {
                let (x, gw) = (&x, &gw);
                (0..n).map(move |c| (0..k).map(|j| f64::from(x[i * k + j]) * gw.value(c, j)).sum::<f64>())
            })
            .collect();
        let norm = exact.iter().map(|v| v * v).sum::<f64>().sqrt();
        let modes: &[&str] =
            if format == BlockFormat::Q4_K { &["int8", "int8-group", "float"] } else { &["int8", "float"] };
        for &mode in modes {
            let mut y = vec![0f32; m * n];
            let (xr, yr) = (MatRef::row_major(&x, m, k), MatMut::row_major(&mut y, m, n));
            let (xr, yr) = (xr.map_err(|e| e.to_string())?, yr.map_err(|e| e.to_string())?);
            let g = GroupGemm::new();
            match mode {
                "int8" => g.int8_activations(xr, &gw, None, yr),
                "int8-group" => g.activation_blocks(ActivationBlocks::Group).int8_activations(xr, &gw, None, yr),
                _ => g.float_activations(xr, &gw, None, yr),
            }
            .map_err(|e| e.to_string())?;
            let err = y.iter().zip(&exact).map(|(&a, &b)| (f64::from(a) - b).powi(2)).sum::<f64>().sqrt() / norm;
            println!("{}", serde_json::json!({"case": format!("group_{name}"), "mode": mode, "error": err}));
        }
    }
    Ok(())
}
