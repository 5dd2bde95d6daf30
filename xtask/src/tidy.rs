//! The tidy test (as rust-analyzer's): rules about the source tree that no compiler lint
//! checks, run by `cargo test --workspace` (so by `cargo xtask test` and CI).
//!
//! * **Sibling modules form no cycle** in any crate: a piece two modules need lives where both
//!   can import it.
//! * **Every `unsafe fn` has a `# Safety` section** in its doc comment (trait-impl methods
//!   inherit the trait's).
//! * **SIMD intrinsics** (`_mm*_` calls) only in files under an `arch/` directory: each
//!   crate's one tree of per-tier modules, with no exception.
//! * **No hand-written JSON or argument parsing:** JSON is written and read with `serde_json`,
//!   arguments with `clap` (the CLI and the xtask); `std::env::args` only where
//!   [`ARGS_READERS`] says.
//!
//! Numeric `as` casts are a lint's business: the library crates deny clippy's
//! `as_conversions`, so a cast outside `quant_traits::cast` carries an
//! `#[expect(clippy::as_conversions, reason = "...")]` where it is.

use std::path::{Path, PathBuf};

/// Files that may read `std::env::args`, and why.
const ARGS_READERS: &[(&str, &str)] = &[
    ("xtask/src/main.rs", "the command line as given, to label the tables `bench` records (clap parses it)"),
    ("benches/bin/quant_bench.rs", "the bench server's mode switch (--serve, --peak, --list)"),
    (
        "benches/candle/src/main.rs",
        "the candle peer server's one form, --serve THREADS (a crate outside the workspace)",
    ),
    ("benches/examples/scaling.rs", "an example's positional sizes"),
];

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

fn is_test_file(rel: &str) -> bool {
    rel.contains("/tests/")
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
