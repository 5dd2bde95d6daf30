//! `cargo xtask fuzz [--seconds N] [--only TARGET,..]`: runs every cargo-fuzz target of `fuzz/`
//! for `N` seconds (libFuzzer, `cargo +nightly fuzz run`), each on its minimized corpus in
//! `fuzz/corpus/<target>` (inputs that reach new code are added there), and prints how many
//! executions each ran. A crash stops with libFuzzer's report and the input it saved under
//! `fuzz/artifacts/<target>/`; each crash fixed becomes a regression test of the crate.
//!
//! Needs the nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
//! (`cargo install cargo-fuzz`); CI does not run it.

use std::process::Command;

use crate::root;

/// The targets, as `fuzz/Cargo.toml` names them.
pub const TARGETS: [&str; 7] =
    ["safetensors_reader", "gguf_reader", "block_decoder", "quantize_matrix", "gemm", "observers", "onnx_tensor"];

/// `cargo xtask fuzz`'s options.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Only these targets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Runs `cargo xtask fuzz` with `o`.
pub(crate) fn run(o: &Options) -> Result<(), String> {
    if let Some(bad) = o.only.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        return Err(format!("no fuzz target `{bad}` (targets: {})", TARGETS.join(", ")));
    }
    let nightly = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        return Err("cargo fuzz needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly; \
                    cargo install cargo-fuzz"
            .into());
    }
    let dir = root().join("fuzz");
    let mut summary = Vec::new();
    for target in TARGETS.iter().filter(|t| o.only.is_empty() || o.only.iter().any(|x| x == *t)) {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        eprintln!("$ cargo +nightly fuzz run {target} corpus/{target} -- -max_total_time={}", o.seconds);
        let out = Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", o.seconds))
            .arg("-rss_limit_mb=4096")
            .output()
            .map_err(|e| format!("cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("fuzz target {target} failed:\n{}", tail.join("\n")));
        }
        // libFuzzer's last line: "Done 123456 runs in 61 second(s)".
        let runs = log
            .lines()
            .filter_map(|l| l.strip_prefix("Done "))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.parse::<u64>().ok())
            .next_back()
            .ok_or_else(|| format!("fuzz target {target}: no `Done N runs` line from libFuzzer"))?;
        let inputs = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        summary
            .push(format!("{target:<20} {runs:>12} executions in {} s, corpus {inputs} inputs, no crash", o.seconds));
    }
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target of `fuzz/Cargo.toml` is run, and every one run exists there.
    #[test]
    fn targets_match_the_fuzz_manifest() {
        let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
        let mut named: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "quant-fuzz")
            .collect();
        named.sort_unstable();
        let mut ours = TARGETS.to_vec();
        ours.sort_unstable();
        assert_eq!(named, ours);
        for t in TARGETS {
            assert!(root().join("fuzz/fuzz_targets").join(format!("{t}.rs")).exists(), "{t}");
            assert!(root().join("fuzz/corpus").join(t).read_dir().is_ok_and(|mut d| d.next().is_some()), "{t}: corpus");
        }
    }
}
