//! The tidy test (as rust-analyzer's): rules about the source tree that no compiler lint
//! checks, run by `cargo test --workspace` (so by `cargo xtask test` and CI).
//!
//! * **Numeric `as` casts** in the library crates (`quant-traits`, `quant-core`,
//!   `quant-matmul`, `quant-analysis`) live in `quant-traits`' `cast` module, whose
//!   conversions are exact, checked or documented. A file elsewhere may keep at most the casts
//!   its line in [`CAST_ALLOWANCE`] grants, with the reason there; the allowance only goes
//!   down (a file with fewer casts than granted fails too, so the table is kept exact).
//! * **Every `unsafe fn` has a `# Safety` section** in its doc comment (trait-impl methods
//!   inherit the trait's).
//! * **SIMD intrinsics** (`_mm*_` calls) only in files under an `arch/` directory: each
//!   crate's one tree of per-tier modules, with no exception.
//! * **No hand-written JSON or argument parsing:** JSON is written and read with `serde_json`,
//!   arguments with `clap` (the CLI and the xtask); `std::env::args` only where
//!   [`ARGS_READERS`] says.

use std::path::{Path, PathBuf};

/// Files (relative to the workspace root) allowed numeric `as` casts outside `cast.rs`, how
/// many, and why.
const CAST_ALLOWANCE: &[(&str, usize, &str)] = &[
    ("crates/quant-core/src/ggml/round.rs", 2, "ggml's nearest_int bit trick and (float)i, as ggml writes them"),
    (
        "crates/quant-core/src/ggml/kquants.rs",
        28,
        "ports of ggml's k-quant C code, casts kept operation for operation so the bytes match ggml's",
    ),
    (
        "crates/quant-core/src/ggml/mod.rs",
        8,
        "ggml's block packing (nibbles, 5th bits) and its bits per weight, as above",
    ),
    ("crates/quant-core/src/ggml/lanes.rs", 1, "codes already clamped to 0..=63 stored as bytes, as ggml does"),
    ("crates/quant-core/src/superblock/fit.rs", 5, "small integer level tables (|v| <= 127) to i32/f32, exact"),
    (
        "crates/quant-core/src/arch/x86_64/avx2.rs",
        5,
        "i8/u8 code bounds (|v| <= 255) to f32, exact; the k-quant search's small integers to f32 and its codes (0..=63) to bytes, as ggml does",
    ),
    ("crates/quant-core/src/arch/x86_64/avx512.rs", 3, "i8/u8 code bounds (|v| <= 255) to f32, exact"),
    ("crates/quant-traits/src/float.rs", 4, "the float trait's own conversions, which cast.rs builds on"),
    ("crates/quant-traits/src/storage.rs", 2, "a storage type's MIN/MAX widened to i64 in a const, exact"),
    ("crates/quant-traits/src/cpu.rs", 1, "a tier's index into Tier::ALL (< 5) as the cached u8"),
    ("crates/quant-matmul/src/group/weights.rs", 2, "i8 codes to their u8 bits, bit widths (<= 8) as usize"),
    (
        "crates/quant-matmul/src/arch/decode.rs",
        5,
        "bit widths (<= 8) as usize; the references' i32 group dot products and codes (|v| < 2^24) to f32, exact",
    ),
    ("crates/quant-matmul/src/group/mod.rs", 1, "an activation code clamped to -127..=127, to i8"),
    (
        "crates/quant-matmul/src/arch/x86_64/avx512.rs",
        1,
        "the zmm decode kernel's i32 sum of activation codes (< 2^24) to f32",
    ),
    ("crates/quant-matmul/src/gemm/pack.rs", 1, "an i16's bits as u16, to pack it as the low half of a word"),
    ("crates/quant-matmul/src/gemm/epilogue.rs", 3, "wrapping i32 arithmetic, exact wherever the i32 path is taken"),
    ("crates/quant-matmul/src/exact.rs", 3, "widening to u128 for the overflow bound of the exact reference"),
    (
        "crates/quant-matmul/src/arch/x86_64/decode.rs",
        2,
        "a shuffle index (< 16) as i8; an i32 sum of activation codes (< 2^24) to f32 (ymm and zmm kernels)",
    ),
    (
        "crates/quant-matmul/src/arch/portable.rs",
        1,
        "an i32 word's bits as u32, to read its four bytes as vpdpbusd does",
    ),
    ("crates/quant-matmul/src/arch/mod.rs", 1, "the chunk bound's i32::MAX as u64"),
    ("crates/quant-matmul/src/gemm/output.rs", 1, "the f32 stage's one documented rounding of its f64 value"),
    ("crates/quant-matmul/src/gemm/operands.rs", 1, "the i32 depth bound as usize"),
    ("crates/quant-matmul/src/gemm/driver.rs", 1, "the chunk bound's i32::MAX as usize"),
];

/// Files that may read `std::env::args`, and why.
const ARGS_READERS: &[(&str, &str)] = &[
    ("xtask/src/main.rs", "the command line as given, to label the tables `bench` records (clap parses it)"),
    ("benches/bin/quant_bench.rs", "the bench server's mode switch (--serve, --peak, --list)"),
    ("benches/examples/scaling.rs", "an example's positional sizes"),
];

const LIBRARY_CRATES: [&str; 4] = ["quant-traits", "quant-core", "quant-matmul", "quant-analysis"];

fn root() -> PathBuf {
    crate::root()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `.rs` file of the workspace's own code (crates, benches, xtask, fuzz), relative paths
/// with their text: read once for all the rules.
fn workspace_files() -> &'static [(String, String)] {
    static FILES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    FILES.get_or_init(read_workspace_files)
}

fn read_workspace_files() -> Vec<(String, String)> {
    let root = root();
    let mut files = Vec::new();
    for dir in ["crates", "benches", "xtask", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&root).ok()?.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&p).ok()?;
            Some((rel, text))
        })
        .collect()
}

/// The code part of a line: without a `//` comment (doc comments included).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// Numeric `as` casts in a line's code.
fn casts(line: &str) -> usize {
    const TYPES: [&str; 14] =
        ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "u128", "i128", "usize", "isize", "f32", "f64"];
    let words: Vec<&str> =
        code(line).split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    words.windows(2).filter(|w| w[0] == "as" && TYPES.contains(&w[1])).count()
}

fn is_test_file(rel: &str) -> bool {
    rel.contains("/tests/")
}

#[test]
fn numeric_casts_stay_in_the_cast_module() {
    let mut problems = Vec::new();
    for (rel, text) in workspace_files() {
        let library = LIBRARY_CRATES.iter().any(|c| rel.starts_with(&format!("crates/{c}/src/")));
        if !library || rel == "crates/quant-traits/src/cast.rs" {
            continue;
        }
        // Unit tests at the end of a file (`#[cfg(test)]`) may cast freely.
        let body = text.split("#[cfg(test)]").next().unwrap_or("");
        let lines: Vec<(usize, &str)> =
            body.lines().enumerate().filter(|(_, l)| casts(l) > 0).map(|(i, l)| (i + 1, l.trim())).collect();
        let count: usize = body.lines().map(casts).sum();
        let allowed = CAST_ALLOWANCE.iter().find(|(f, _, _)| *f == rel).map_or(0, |(_, n, _)| *n);
        if count > allowed {
            let at: Vec<String> = lines.iter().map(|(n, l)| format!("  {rel}:{n}: {l}")).collect();
            problems.push(format!(
                "{rel}: {count} numeric `as` casts, {allowed} allowed (use quant_traits::cast, or grant them in tidy.rs with a reason):\n{}",
                at.join("\n")
            ));
        } else if count < allowed {
            problems.push(format!(
                "{rel}: {count} numeric `as` casts but {allowed} allowed: lower its allowance in tidy.rs"
            ));
        }
    }
    for (f, _, _) in CAST_ALLOWANCE {
        if !root().join(f).exists() {
            problems.push(format!("{f}: in CAST_ALLOWANCE but gone: remove its line"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether the `unsafe fn` on line `i` is a method of a trait impl (whose docs are the
/// trait's): the nearest enclosing less-indented line opens an `impl ... for ...` block.
fn in_trait_impl(lines: &[&str], i: usize) -> bool {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let own = indent(lines[i]);
    lines[..i]
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty() && indent(l) < own && !l.trim_start().starts_with("//"))
        .is_some_and(|l| {
            let l = l.trim_start();
            (l.starts_with("impl") || l.starts_with("unsafe impl")) && l.contains(" for ")
        })
}

#[test]
fn every_unsafe_fn_documents_its_safety() {
    let mut problems = Vec::new();
    for (rel, text) in workspace_files() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let c = code(line).trim_start();
            let is_unsafe_fn = c.starts_with("unsafe fn ")
                || c.starts_with("pub unsafe fn ")
                || (c.starts_with("pub(") && c.contains(") unsafe fn "));
            if !is_unsafe_fn || in_trait_impl(&lines, i) {
                continue;
            }
            // The doc comment above, past attributes.
            let documented = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with("///") || l.trim_start().starts_with("#["))
                .any(|l| l.contains("# Safety"));
            if !documented {
                problems.push(format!("{rel}:{}: `unsafe fn` without a `# Safety` doc section", i + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn simd_intrinsics_live_under_arch() {
    let mut problems = Vec::new();
    for (rel, text) in workspace_files() {
        if rel.contains("/arch/") || is_test_file(rel) || rel.starts_with("benches/") || rel.starts_with("xtask/") {
            continue;
        }
        let uses = text.lines().enumerate().find(|(_, l)| {
            let c = code(l);
            c.match_indices("_mm").any(|(at, _)| {
                let rest = &c[at + 3..];
                let before = c[..at].chars().last();
                !before.is_some_and(|b| b.is_alphanumeric() || b == '_')
                    && (rest.starts_with('_') || rest.starts_with("256_") || rest.starts_with("512_"))
            })
        });
        if let Some((n, l)) = uses {
            problems.push(format!("{rel}:{}: SIMD intrinsic outside arch/: {}", n + 1, l.trim()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_hand_written_json_or_argument_parsing() {
    let mut problems = Vec::new();
    for (rel, text) in workspace_files() {
        if rel == "xtask/src/tidy.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let c = code(line);
            // A JSON object built by formatting (`{"key": ...}` in a format string), or a
            // key searched for in text.
            let writes_json = c.contains("r#\"") && c.contains("{{") && c.contains("\":");
            let reads_json = c.contains("\\\"{key}\\\": ") || c.contains("\"\\\"{key}\\\"");
            if writes_json || reads_json {
                problems.push(format!("{rel}:{}: hand-written JSON (use serde_json): {}", n + 1, line.trim()));
            }
            if c.contains("env::args()") && !ARGS_READERS.iter().any(|(f, _)| *f == rel) {
                problems.push(format!("{rel}:{}: reads std::env::args (use clap, or list it in tidy.rs)", n + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The module path of a source file under `src/` (`ggml/kquants.rs` → `ggml::kquants`,
/// `ggml/mod.rs` → `ggml`, `lib.rs` → the root, `""`); `None` outside `src/` or under
/// `src/bin/`.
fn module_of(rel_in_src: &str) -> Option<String> {
    if rel_in_src.starts_with("bin/") {
        return None;
    }
    let path = rel_in_src.strip_suffix(".rs")?;
    let path = path.strip_suffix("/mod").unwrap_or(path);
    Some(if matches!(path, "lib" | "main") { String::new() } else { path.replace('/', "::") })
}

/// The module paths a file's code (before its `#[cfg(test)]` part, comments left out) names
/// through `crate::` or `super::`, resolved against the module `module` it is.
fn referenced_paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    let here: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    // The code as one line, so that a `use` group over several lines reads as one.
    let joined: String = body.lines().map(code).collect::<Vec<_>>().join(" ");
    let line = joined.as_str();
    let mut out = Vec::new();
    {
        for (start, _) in line.match_indices("crate::").chain(line.match_indices("super::")) {
            // Only a path's first segment (not `foo::crate::`, not `$crate::`).
            let before = line[..start].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$') {
                continue;
            }
            let mut base: Vec<String> = Vec::new();
            let mut rest = &line[start..];
            if let Some(r) = rest.strip_prefix("crate::") {
                rest = r;
            } else {
                base = here.clone();
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
            }
            // `a::b::c` or a group `{a, b::c}` (its first level: commas outside inner braces).
            let heads: Vec<String> = match rest.strip_prefix('{') {
                Some(group) => {
                    let (mut depth, mut heads, mut cur) = (0usize, Vec::new(), String::new());
                    for c in group.chars() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                heads.push(std::mem::take(&mut cur));
                                continue;
                            }
                            _ => {}
                        }
                        if !c.is_whitespace() {
                            cur.push(c);
                        }
                    }
                    heads.push(cur);
                    heads.retain(|h| !h.is_empty());
                    heads
                }
                None => vec![rest.to_string()],
            };
            for h in heads {
                let mut path = base.clone();
                for seg in h.split("::") {
                    let id = ident(seg);
                    if id.is_empty() {
                        break;
                    }
                    path.push(id);
                    if !seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        break;
                    }
                }
                out.push(path);
            }
        }
    }
    out
}

/// For each crate, the edges between sibling modules (`parent`, `from`, `to`): a module that
/// names something in a sibling's subtree depends on that sibling. (A child naming its parent,
/// or a parent its child, is the module tree itself, not an edge.)
fn sibling_edges() -> Vec<(String, String, String, String)> {
    let mut by_crate: std::collections::BTreeMap<String, Vec<(String, &str)>> = Default::default();
    for (rel, text) in workspace_files() {
        let Some((krate, in_src)) = rel.split_once("/src/") else { continue };
        if let Some(m) = module_of(in_src) {
            by_crate.entry(krate.to_string()).or_default().push((m, text.as_str()));
        }
    }
    let mut edges = Vec::new();
    for (krate, files) in &by_crate {
        let modules: Vec<Vec<&str>> =
            files.iter().map(|(m, _)| m.split("::").filter(|s| !s.is_empty()).collect()).collect();
        for ((m, text), from) in files.iter().zip(&modules) {
            for path in referenced_paths(m, text) {
                // The deepest module the path names.
                let target = modules
                    .iter()
                    .filter(|t| t.len() <= path.len() && t.iter().zip(&path).all(|(a, b)| a == b))
                    .max_by_key(|t| t.len());
                let Some(to) = target else { continue };
                let common = from.iter().zip(to.iter()).take_while(|(a, b)| a == b).count();
                if common >= from.len() || common >= to.len() {
                    continue; // one is the other's ancestor
                }
                let edge = (krate.clone(), from[..common].join("::"), from[common].to_string(), to[common].to_string());
                if !edges.contains(&edge) {
                    edges.push(edge);
                }
            }
        }
    }
    edges
}

/// No two sibling modules of a crate depend on each other, directly or through other
/// siblings: each crate's module tree is layered, and a piece both need lives where both can
/// import it.
#[test]
fn sibling_modules_form_no_cycle() {
    let edges = sibling_edges();
    let mut cycles = Vec::new();
    for (krate, parent, from, to) in &edges {
        // A path back from `to` to `from` among the same parent's children.
        let mut seen = vec![to.clone()];
        let mut stack = vec![vec![from.clone(), to.clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().cloned().unwrap_or_default();
            for (k, p, f, t) in &edges {
                if k == krate && p == parent && *f == last {
                    if t == from {
                        let mut cycle = path.clone();
                        cycle.sort();
                        let text = format!("{krate}: {} (under `{parent}`)", path.join(" -> ") + " -> " + from);
                        if !cycles.iter().any(|(c, _): &(Vec<String>, String)| *c == cycle) {
                            cycles.push((cycle, text));
                        }
                    } else if !seen.contains(t) {
                        seen.push(t.clone());
                        let mut next = path.clone();
                        next.push(t.clone());
                        stack.push(next);
                    }
                }
            }
        }
    }
    let found: Vec<&str> = cycles.iter().map(|(_, t)| t.as_str()).collect();
    assert!(found.is_empty(), "sibling modules that depend on each other:\n{}", found.join("\n"));
}

/// The cycle check sees `crate::`, `super::` and grouped paths, and nothing in comments.
#[test]
fn references_resolve_against_the_module() {
    let text = "use super::lanes::{x, y};\nuse crate::{\n    tensor::{T, U},\n    scheme,\n};\n// crate::nope\nlet a = super::super::top::f();";
    let got = referenced_paths("ggml::kquants", text);
    let want: Vec<Vec<String>> = [&["tensor"][..], &["scheme"], &["ggml", "lanes"], &["top", "f"]]
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(got, want);
    assert_eq!(module_of("ggml/mod.rs").as_deref(), Some("ggml"));
    assert_eq!(module_of("lib.rs").as_deref(), Some(""));
}
