//! `cargo xtask bench --profile CASE`: where one case's time goes, measured with `perf record`
//! on one thread, for the kernel tier that runs.
//!
//! `quant-bench --serve` prepares the case and warms it up; then `perf record -p` samples the
//! process while it times the case for a few seconds, so the inputs' preparation is not in the
//! profile. Each sampled function is put in one part, by its name:
//!
//! | part | functions |
//! |---|---|
//! | micro-kernel | the kernels' tile and row functions (`quant_matmul::arch`), their in-register correction and output stage included |
//! | packing | `gemm::pack` and the kernels' packing help (A and B into panels) |
//! | epilogue | the element-by-element correction and stages (`gemm::epilogue`, `gemm::output`) and the kernels' deferred epilogue |
//! | driver | the rest of quant-matmul (blocking, correction terms, the call's checks), and the allocator |
//! | OS | the operating system's kernel, and thread-pool scheduling (rayon, futexes) |
//! | other | the bench harness (its clock and loop) and anything unnamed |
//!
//! The figure that counts is the share outside the micro-kernel.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::root;

/// The parts a sample is put in, in the order they are printed.
const PARTS: [&str; 6] = ["micro-kernel", "packing", "epilogue", "driver", "OS", "other"];

/// The shapes profiled for a case named without one.
const SHAPES: [&str; 3] = ["256x256x256", "1024x1024x1024", "2048x2048x2048"];

/// Seconds of timing under `perf`.
const SECONDS: f64 = 3.0;

/// The part of a sampled function (`dso` and demangled `symbol`, as `perf report` prints them).
pub(crate) fn part(dso: &str, symbol: &str) -> &'static str {
    let has = |s: &str| symbol.contains(s);
    if dso.starts_with("[kernel") || has("futex") || has("rayon_core") || has("sched_yield") || has("__lll_lock") {
        "OS"
    } else if has("gemm::pack")
        || has("arch::pack")
        || has("arch::x86_64::pack")
        || has("interleave4")
        || has("pack_a")
        || has("pack_b")
    {
        "packing"
    } else if has("epilogue") || has("gemm::output") {
        "epilogue"
    } else if has("quant_matmul::arch") || has("as quant_matmul::arch::MicroKernel") {
        "micro-kernel"
    } else if has("quant_matmul") || has("malloc") || has("free") || has("memcpy") || has("memset") || has("memmove") {
        "driver"
    } else {
        "other"
    }
}

/// Profiles each case of `cases` (`NAME` or `NAME:SHAPE`, comma-separated).
pub fn run(ours_bin: &Path, cpu: &str, kernel: &str, cases: &str) -> Result<(), String> {
    let mut todo = Vec::new();
    for c in cases.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match c.split_once(':') {
            Some((name, shape)) => todo.push((name.to_string(), shape.to_string())),
            None => todo.extend(SHAPES.iter().map(|s| (c.to_string(), s.to_string()))),
        }
    }
    if todo.is_empty() {
        return Err("--profile needs a case, e.g. gemm_u8i8 or gemm_u8i8:1024x1024x1024".into());
    }
    let probe = Command::new("perf").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err("--profile needs `perf` (Debian's linux-perf) on the PATH".into());
    }
    println!("CPU: {cpu}; kernel: {kernel}; one thread, {SECONDS} s of timing per case under perf record");
    println!(
        "{:<14} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "case", "shape", PARTS[0], PARTS[1], PARTS[2], PARTS[3], PARTS[4], PARTS[5], "outside"
    );
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (name, shape) in todo {
        let shares = profile_one(ours_bin, &dir.join("profile.data"), &name, &shape)?;
        let outside = 100.0 - shares[0];
        let cells: Vec<String> = shares.iter().map(|v| format!("{v:>8.1}%")).collect();
        println!("{name:<14} {shape:<16} {} {outside:>8.1}%", cells.join(" "));
    }
    println!("\noutside: the share of samples outside the micro-kernel (targets: at most 10 % at 1024³ and 2048³, 25 % at 256³)");
    Ok(())
}

/// The share (percent) of each of [`PARTS`] in one case's samples.
fn profile_one(ours_bin: &Path, data: &Path, case: &str, shape: &str) -> Result<[f64; 6], String> {
    let mut server = Command::new(ours_bin)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start quant-bench: {e}"))?;
    let pid = server.id().to_string();
    let (Some(mut stdin), Some(stdout)) = (server.stdin.take(), server.stdout.take()) else {
        return Err("quant-bench: no pipes".into());
    };
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut ask = |request: &str| -> Result<(), String> {
        writeln!(stdin, "{request}").and_then(|()| stdin.flush()).map_err(|e| format!("quant-bench: {e}"))?;
        let reply = lines.next().and_then(Result::ok).unwrap_or_default();
        if reply.contains("\"error\"") || reply.is_empty() {
            return Err(format!("quant-bench answered {request:?} with {reply:?}"));
        }
        Ok(())
    };
    // Prepared and warmed up outside the profile.
    ask(&format!("{case} {shape} 1"))?;
    let mut perf = Command::new("perf")
        .args(["record", "-q", "-F", "2999", "-o"])
        .arg(data)
        .args(["-p", &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start perf record: {e}"))?;
    // perf needs a moment to attach before the timed run starts.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let timed = ask(&format!("{case} {shape} 1 {SECONDS}"));
    let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
    let _ = perf.wait();
    let _ = server.kill();
    let _ = server.wait();
    timed?;
    let report = Command::new("perf")
        .args(["report", "--no-children", "--sort", "dso,sym", "--stdio", "--percent-limit", "0", "-i"])
        .arg(data)
        .output()
        .map_err(|e| format!("perf report: {e}"))?;
    let text = String::from_utf8_lossy(&report.stdout);
    let mut shares = [0.0; 6];
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        // "    12.34%  quant-bench  [.] symbol"
        let mut words = line.split_whitespace();
        let Some(pct) = words.next().and_then(|w| w.strip_suffix('%')).and_then(|w| w.parse::<f64>().ok()) else {
            continue;
        };
        let dso = words.next().unwrap_or("");
        let symbol = line.split_once("] ").map_or("", |(_, s)| s.trim());
        let i = PARTS.iter().position(|p| *p == part(dso, symbol)).unwrap_or(5);
        shares[i] += pct;
    }
    let total: f64 = shares.iter().sum();
    if total <= 0.0 {
        return Err(format!("perf recorded no samples of {case} {shape} (is perf_event_paranoid too high?)"));
    }
    Ok(shares.map(|v| 100.0 * v / total))
}

#[cfg(test)]
mod tests {
    use super::part;

    #[test]
    fn samples_go_to_their_parts() {
        let cases = [
            ("quant-bench", "quant_matmul::arch::x86_64::avx512::tile_rows", "micro-kernel"),
            ("quant-bench", "<quant_traits::cpu::Amx as quant_matmul::arch::MicroKernel>::tile", "micro-kernel"),
            ("quant-bench", "quant_matmul::arch::x86_64::avx512::epilogue_zmm", "epilogue"),
            ("quant-bench", "quant_matmul::gemm::epilogue::Epilogue<A,S>::full_run", "epilogue"),
            ("quant-bench", "quant_matmul::gemm::pack::pack_a_quads", "packing"),
            ("quant-bench", "quant_matmul::arch::x86_64::pack::interleave4", "packing"),
            ("quant-bench", "quant_matmul::gemm::driver::drive", "driver"),
            ("libc.so.6", "__memset_avx512_unaligned_erms", "driver"),
            ("[kernel.kallsyms]", "clear_page_erms", "OS"),
            ("quant-bench", "rayon_core::registry::WorkerThread::wait_until_cold", "OS"),
            ("quant-bench", "quant_bench::measure", "other"),
        ];
        for (dso, sym, want) in cases {
            assert_eq!(part(dso, sym), want, "{sym}");
        }
    }
}
