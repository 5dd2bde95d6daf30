//! End to end: the `quant` binary on safetensors files written here (f32, f16, bf16; 1-D and
//! 2-D; an integer tensor), its figures against the library's in-memory ones, the round trip
//! quantize -> dequantize -> report, and every bad input: a clear one-line error naming the
//! file, a non-zero exit code, and no output file left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use quant_analysis::error_stats;
use quant_core::{quantize_matrix, Axis, Granularity, MatrixShape, QuantFloat, QuantSpec, Scheme, Storage};
use quant_traits::half::{bf16, f16};
use quant_traits::{I4x2, U4x2};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

fn quant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quant")).args(args).output().expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = quant(args);
    assert!(out.status.success(), "quant {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A fresh directory under the target folder.
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Deterministic values with a few outliers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            (u * if i % 97 == 0 { 4.0 } else { 0.1 }) as f32
        })
        .collect()
}

struct Model {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    bf16s: Vec<bf16>,
}

const W32: (usize, usize) = (48, 100);
const W16: (usize, usize) = (32, 64);
const WB: (usize, usize) = (16, 70);

/// Writes the test model with the safetensors crate itself.
fn write_model(path: &Path) -> Model {
    let f32s = values(W32.0 * W32.1, 1);
    let f16s: Vec<f16> = values(W16.0 * W16.1, 2).iter().map(|&v| f16::from_f32(v)).collect();
    let bf16s: Vec<bf16> = values(WB.0 * WB.1, 3).iter().map(|&v| bf16::from_f32(v)).collect();
    let b32: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
    let b16: Vec<u8> = f16s.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let bb: Vec<u8> = bf16s.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let bias: Vec<u8> = values(48, 4).iter().flat_map(|v| v.to_le_bytes()).collect();
    let norm: Vec<u8> = values(64, 5).iter().flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes()).collect();
    let ids: Vec<u8> = (0..6i32).flat_map(|v| v.to_le_bytes()).collect();
    fn t(d: Dtype, shape: Vec<usize>, data: &[u8]) -> TensorView<'_> {
        TensorView::new(d, shape, data).expect("consistent")
    }
    let tensors = vec![
        ("layer.w32", t(Dtype::F32, vec![W32.0, W32.1], &b32)),
        ("layer.w16", t(Dtype::F16, vec![W16.0, W16.1], &b16)),
        ("layer.wbf16", t(Dtype::BF16, vec![WB.0, WB.1], &bb)),
        ("layer.bias", t(Dtype::F32, vec![48], &bias)),
        ("layer.norm", t(Dtype::F16, vec![64], &norm)),
        ("ids", t(Dtype::I32, vec![2, 3], &ids)),
    ];
    std::fs::write(path, safetensors::serialize(tensors, None).expect("serializes")).expect("written");
    Model { f32s, f16s, bf16s }
}

/// The library's figures for one tensor: (mse, max_error, snr_db).
fn library<F: QuantFloat, Q: Storage>(x: &[F], shape: (usize, usize), spec: QuantSpec, g: Granularity) -> [f64; 3] {
    let m = quantize_matrix::<F, Q>(x, MatrixShape::new(shape.0, shape.1), spec, g).expect("quantizes");
    let s = error_stats(x, &m.dequantize()).expect("finite");
    [s.mse, s.max_error, s.snr_db]
}

fn figures(json: &Value, name: &str, scheme: Option<u64>) -> [f64; 3] {
    let t = json["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .find(|t| t["name"] == name && t["scheme"].as_u64() == scheme)
        .unwrap_or_else(|| panic!("{name} in the report"));
    ["mse", "max_error", "snr_db"].map(|k| t[k].as_f64().unwrap_or(f64::INFINITY))
}

#[test]
fn report_matches_the_library_and_the_round_trip_matches_the_report() {
    let d = dir("report");
    let model = d.join("model.safetensors");
    let m = write_model(&model);
    let path = model.to_str().expect("utf-8");
    let json: Value = serde_json::from_str(&ok(&[
        "report",
        path,
        "--scheme",
        "sym,asym",
        "--bits",
        "8,4",
        "--granularity",
        "channel,group:32",
        "--format",
        "json",
    ]))
    .expect("json");
    assert_eq!(json["schemes"].as_array().map(Vec::len), Some(8));
    // Only the three 2-D floating tensors are measured, under every scheme.
    assert_eq!(json["tensors"].as_array().map(Vec::len), Some(24));
    let mut index = 0;
    for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
        for bits in [8, 4] {
            for g in [Granularity::PerChannel(Axis::Rows), Granularity::PerGroup { axis: Axis::Cols, size: 32 }] {
                let spec = QuantSpec::new(scheme, bits).expect("valid");
                let want = match (scheme, bits) {
                    (Scheme::Symmetric, 8) => [
                        library::<f32, i8>(&m.f32s, W32, spec, g),
                        library::<f16, i8>(&m.f16s, W16, spec, g),
                        library::<bf16, i8>(&m.bf16s, WB, spec, g),
                    ],
                    (Scheme::Asymmetric, 8) => [
                        library::<f32, u8>(&m.f32s, W32, spec, g),
                        library::<f16, u8>(&m.f16s, W16, spec, g),
                        library::<bf16, u8>(&m.bf16s, WB, spec, g),
                    ],
                    (Scheme::Symmetric, _) => [
                        library::<f32, I4x2>(&m.f32s, W32, spec, g),
                        library::<f16, I4x2>(&m.f16s, W16, spec, g),
                        library::<bf16, I4x2>(&m.bf16s, WB, spec, g),
                    ],
                    (Scheme::Asymmetric, _) => [
                        library::<f32, U4x2>(&m.f32s, W32, spec, g),
                        library::<f16, U4x2>(&m.f16s, W16, spec, g),
                        library::<bf16, U4x2>(&m.bf16s, WB, spec, g),
                    ],
                };
                for (name, w) in ["layer.w32", "layer.w16", "layer.wbf16"].iter().zip(want) {
                    assert_eq!(figures(&json, name, Some(index)), w, "{name}, scheme {index}");
                }
                // quantize -> dequantize -> report on the pair: the same figures, exactly.
                let (q, back) = (d.join(format!("q{index}.safetensors")), d.join(format!("b{index}.safetensors")));
                let gran = if matches!(g, Granularity::PerChannel(_)) { "channel" } else { "group:32" };
                let kind = if scheme == Scheme::Symmetric { "sym" } else { "asym" };
                ok(&[
                    "quantize",
                    path,
                    "-o",
                    q.to_str().expect("utf-8"),
                    "--scheme",
                    kind,
                    "--bits",
                    &bits.to_string(),
                    "--granularity",
                    gran,
                ]);
                ok(&["dequantize", q.to_str().expect("utf-8"), "-o", back.to_str().expect("utf-8")]);
                let pair: Value = serde_json::from_str(&ok(&[
                    "report",
                    path,
                    "--reconstructed",
                    back.to_str().expect("utf-8"),
                    "--format",
                    "json",
                ]))
                .expect("json");
                for (name, w) in ["layer.w32", "layer.w16", "layer.wbf16"].iter().zip(want) {
                    assert_eq!(figures(&pair, name, None), w, "{name} round trip, scheme {index}");
                }
                index += 1;
            }
        }
    }
}

#[test]
fn a_quantized_file_holds_what_the_docs_say() {
    let d = dir("layout");
    let model = d.join("model.safetensors");
    write_model(&model);
    let out = d.join("q.safetensors");
    ok(&[
        "quantize",
        model.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
        "--scheme",
        "asym",
        "--bits",
        "4",
        "--granularity",
        "group:32",
    ]);
    let bytes = std::fs::read(&out).expect("written");
    // Written through a temporary file, yet an ordinary file (not tempfile's private 0600), and
    // no temporary file left beside it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode & 0o644, 0o644, "mode {mode:o}");
    }
    let left: Vec<String> =
        std::fs::read_dir(&d).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|f| !f.ends_with(".partial")), "{left:?}");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("valid safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let info = |n: &str| st.tensor(n).unwrap_or_else(|_| panic!("{n}"));
    // Packed 4-bit codes as U8, one dimension; scales in the tensor's dtype; i32 zero points.
    assert_eq!((info("layer.wbf16").dtype(), info("layer.wbf16").shape()), (Dtype::U8, &[WB.0 * WB.1 / 2][..]));
    assert_eq!((info("layer.wbf16.scale").dtype(), info("layer.wbf16.scale").shape()), (Dtype::BF16, &[WB.0, 3][..]));
    assert_eq!(
        (info("layer.w16.zero_point").dtype(), info("layer.w16.zero_point").shape()),
        (Dtype::I32, &[W16.0, 2][..])
    );
    // 1-D and integer tensors are copied bit for bit.
    let original = std::fs::read(&model).expect("model");
    let src = safetensors::SafeTensors::deserialize(&original).expect("valid");
    for n in ["layer.bias", "layer.norm", "ids"] {
        assert_eq!(info(n).data(), src.tensor(n).expect("present").data(), "{n}");
    }
    let md = meta.metadata().clone().expect("metadata");
    assert_eq!(md.get("quant.scheme").map(String::as_str), Some("asym"));
    assert_eq!(md.get("quant.bits").map(String::as_str), Some("4"));
    assert_eq!(md.get("quant.granularity").map(String::as_str), Some("group:32"));
    let t: Value = serde_json::from_str(&md["quant.tensor.layer.wbf16"]).expect("json");
    assert_eq!(t, serde_json::json!({"dtype": "BF16", "shape": [16, 70], "storage": "u4x2"}));
    // The listing names every tensor with dtype, shape, elements and bytes.
    let listing = ok(&["inspect", out.to_str().expect("utf-8")]);
    assert!(
        listing.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["layer.wbf16.scale", "BF16", "[16,", "3]", "48", "96"]
        ),
        "{listing}"
    );
}

/// The error line and that nothing was left in `d` but the listed files.
fn fails(args: &[&str], d: &Path, needle: &str, keep: &[&str]) {
    let out = quant(args);
    assert!(!out.status.success(), "quant {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("quant: ") && err.contains(needle), "{args:?}: {err}");
    let mut left: Vec<String> = std::fs::read_dir(d)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, keep, "no partial output after {args:?}");
}

#[test]
fn bad_input_gets_a_clear_error_and_no_output_file() {
    let d = dir("bad");
    let good = d.join("good.safetensors");
    write_model(&good);
    let bytes = std::fs::read(&good).expect("model");
    let out = d.join("out.safetensors");
    let (g, o) = (good.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    let mut keep = vec!["good.safetensors"];

    let missing = d.join("missing.safetensors");
    fails(&["quantize", missing.to_str().expect("utf-8"), "-o", o], &d, "missing.safetensors: cannot open", &keep);

    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("write");
    keep.insert(0, "truncated.safetensors");
    keep.sort();
    fails(&["quantize", truncated.to_str().expect("utf-8"), "-o", o], &d, "truncated", &keep);

    let garbage = d.join("garbage.safetensors");
    let mut corrupted = bytes.clone();
    corrupted[8] = b'#'; // the opening brace of the JSON header
    std::fs::write(&garbage, &corrupted).expect("write");
    keep.push("garbage.safetensors");
    keep.sort();
    fails(
        &["report", garbage.to_str().expect("utf-8")],
        &d,
        "garbage.safetensors: header is not valid safetensors JSON",
        &keep,
    );

    // A header that lies about offsets: the first tensor's range shifted by 4 bytes.
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).expect("utf-8");
    let liar = d.join("liar.safetensors");
    let lied = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    assert_ne!(lied, header);
    let mut lying = bytes[..8].to_vec();
    lying.extend(lied.as_bytes());
    lying.extend(&bytes[8 + n..]);
    std::fs::write(&liar, &lying).expect("write");
    keep.push("liar.safetensors");
    keep.sort();
    fails(&["quantize", liar.to_str().expect("utf-8"), "-o", o], &d, "lies about offsets", &keep);

    // An 8-bit float tensor: a dtype quant cannot read.
    let f8 = d.join("f8.safetensors");
    let data = vec![0u8; 6];
    let v = TensorView::new(Dtype::F8_E4M3, vec![2, 3], &data).expect("consistent");
    std::fs::write(&f8, safetensors::serialize(vec![("w8", v)], None).expect("serializes")).expect("write");
    keep.push("f8.safetensors");
    keep.sort();
    fails(&["quantize", f8.to_str().expect("utf-8"), "-o", o], &d, "F8_E4M3, which quant cannot read", &keep);

    // Options: unknown, bad granularity, bits a file cannot hold, a file that is not quantized.
    fails(&["quantize", g, "-o", o, "--frobnicate"], &d, "--frobnicate", &keep);
    fails(&["quantize", g, "-o", o, "--granularity", "group:0"], &d, "group:G with G >= 1", &keep);
    fails(&["quantize", g, "-o", o, "--bits", "12"], &d, "files hold 2 to 8 bits", &keep);
    fails(&["report", g, "--bits", "40"], &d, "--bits 40", &keep);
    fails(&["dequantize", g, "-o", o], &d, "not a file written by `quant quantize`", &keep);
    // An unwritable destination: the error names it, nothing is created.
    let nowhere = d.join("no/such/dir/out.safetensors");
    fails(&["quantize", g, "-o", nowhere.to_str().expect("utf-8")], &d, "cannot create", &keep);
}

#[test]
fn the_demo_needs_no_files() {
    let out = ok(&["demo"]);
    assert!(out.contains("synthetic transformer block"), "{out}");
    let row = out.lines().find(|l| l.starts_with("sym") && l.contains("group:32")).expect("a group:32 row");
    // scheme, bits, granularity, bytes, bpw, ratio, MSE, max error, SNR dB
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 9, "{row}");
    // 4-bit codes and an f32 scale per 32 weights: 5 bits per weight.
    assert_eq!(cols[4], "5.000", "{row}");
}

/// A GGUF file written by the `gguf` package's own writer (`crates/quant-cli/tests/fixtures/gguf_small.py`; the
/// quantized tensors by ggml itself): `inspect` lists its metadata and tensors, and
/// `dequantize` gives, tensor by tensor, exactly the values the `gguf` package's reader gives.
#[test]
fn gguf_files_inspect_and_dequantize_as_the_gguf_package_reads_them() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = fixtures.join("small.gguf");
    let text = ok(&["inspect", model.to_str().expect("utf-8 path")]);
    assert!(text.contains("GGUF version 3, 10 tensors, 15 key/values"), "{text}");
    for line in [
        "metadata general.architecture = \"llama\"",
        "metadata test.u64 = 1099511627777",
        "metadata test.f64 = -1.5e-300",
        "metadata tokenizer.ggml.tokens = [4 x string] \"<s>\", \"</s>\", \"hello\", \"wörld\"",
        "metadata test.ints = [3 x i32] 1, -2, 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("blk.2.q4_k.weight") && l.contains("Q4_K") && l.contains("[2, 256]")));

    let d = dir("gguf_dequantize");
    let out = d.join("back.safetensors");
    ok(&["dequantize", model.to_str().expect("utf-8"), "-o", out.to_str().expect("utf-8")]);
    let bytes = std::fs::read(&out).expect("written");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("small.expected.json")).expect("fixture"))
            .expect("json");
    let tensors = expected.as_array().expect("a list");
    assert_eq!(st.len(), tensors.len());
    for t in tensors {
        let name = t["name"].as_str().expect("name");
        let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<usize> =
            t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
        let got: Vec<f32> = match view.dtype() {
            Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => view.data().chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => view.data().chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        let want: Vec<f32> =
            t["values"].as_array().expect("values").iter().map(|v| v.as_f64().expect("number") as f32).collect();
        assert_eq!(got.len(), want.len(), "{name}");
        let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{name} ({}): {differ} values differ from the gguf package's", t["type"]);
    }
    let st_meta = safetensors::SafeTensors::read_metadata(&bytes).expect("header").1;
    let meta = st_meta.metadata().clone().unwrap_or_default();
    assert_eq!(meta.get("gguf.general.architecture").map(String::as_str), Some("llama"));
    assert_eq!(meta.get("gguf.llama.block_count").map(String::as_str), Some("2"));

    // A damaged GGUF file: one line naming the problem, exit code 1, nothing written.
    let bad = d.join("cut.gguf");
    let whole = std::fs::read(&model).expect("fixture");
    std::fs::write(&bad, &whole[..whole.len() - 100]).expect("write");
    let out2 = d.join("never.safetensors");
    let r = quant(&["dequantize", bad.to_str().expect("utf-8"), "-o", out2.to_str().expect("utf-8")]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("cut.gguf") && err.contains("runs past the end") && err.lines().count() == 1, "{err}");
    assert!(!out2.exists(), "no output file for a bad input");
}

/// safetensors -> GGUF (`quantize --type`) -> safetensors (`dequantize`): every tensor whose rows
/// are whole blocks comes back exactly as the library's quantize + dequantize of its `f32` values
/// gives it in memory; a matrix whose rows are not falls back as llama-quantize does (a k-quant
/// to its 32-value twin, with a note; rows of no whole 32 to `F16`); 1-D and integer tensors
/// come back byte for byte; bad `--type` and requantizing a quantized GGUF are one-line errors
/// with no output.
#[test]
fn safetensors_to_gguf_and_back_round_trips_exactly() {
    use quant_core::BlockFormat;
    let d = dir("gguf_round_trip");
    let model = d.join("m.safetensors");
    let a = values(8 * 512, 11);
    let b: Vec<f16> = values(4 * 256, 12).iter().map(|&v| f16::from_f32(v)).collect();
    let c: Vec<bf16> = values(2 * 256, 13).iter().map(|&v| bf16::from_f32(v)).collect();
    let odd = values(3 * 100, 14);
    let fall = values(2 * 288, 16);
    let norm = values(512, 15);
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ba, bodd, bnorm) = (le(&a), le(&odd), le(&norm));
    let bb: Vec<u8> = b.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let bc: Vec<u8> = c.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let ids: Vec<u8> = (0..6i32).flat_map(|v| v.to_le_bytes()).collect();
    let t = |dt: Dtype, shape: Vec<usize>, data: &'static [u8]| TensorView::new(dt, shape, data).expect("consistent");
    let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
    let tensors = vec![
        ("blk.a", t(Dtype::F32, vec![8, 512], leak(ba))),
        ("blk.b", t(Dtype::F16, vec![4, 256], leak(bb))),
        ("blk.c", t(Dtype::BF16, vec![2, 256], leak(bc))),
        ("blk.odd", t(Dtype::F32, vec![3, 100], leak(bodd.clone()))),
        ("blk.fall", t(Dtype::F32, vec![2, 288], leak(le(&fall)))),
        ("blk.norm", t(Dtype::F32, vec![512], leak(bnorm.clone()))),
        ("ids", t(Dtype::I32, vec![2, 3], leak(ids.clone()))),
    ];
    std::fs::write(&model, safetensors::serialize(tensors, None).expect("serializes")).expect("written");
    let m = model.to_str().expect("utf-8");
    // Each format, and the one rows of 288 fall back to (llama-quantize's).
    for (ty, format, fallback) in [
        ("q4_k", BlockFormat::Q4_K, BlockFormat::Q5_0),
        ("Q6_K", BlockFormat::Q6_K, BlockFormat::Q8_0),
        ("q4_0", BlockFormat::Q4_0, BlockFormat::Q4_0),
        ("q3_k", BlockFormat::Q3_K, BlockFormat::IQ4_NL),
        ("iq4_xs", BlockFormat::IQ4_XS, BlockFormat::IQ4_NL),
    ] {
        let g = d.join(format!("m.{ty}.gguf"));
        let back = d.join(format!("back.{ty}.safetensors"));
        let run = quant(&["quantize", m, "-o", g.to_str().expect("utf-8"), "--type", ty]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let said = String::from_utf8_lossy(&run.stderr);
        let note =
            format!("rows of 288 values are not whole {} blocks of 256: {} instead", format.name(), fallback.name());
        assert_eq!(said.contains(&note), fallback != format, "{said}");
        assert!(said.contains("rows of 100 values are not whole") && said.contains(": F16 instead"), "{said}");
        // The summary: a line per stored type, with its tensors, bytes and bits per weight.
        let n = 3 + usize::from(fallback == format);
        let line = format!("quant:   {}: {n} tensors, ", format.name());
        assert!(said.contains(&line) && said.contains(&format!("{:.3} bpw", format.bits_per_weight())), "{said}");
        assert!(said.contains("quant:   F16: 1 tensor, 600 bytes, 16.000 bpw"), "{said}");
        let listing = ok(&["inspect", g.to_str().expect("utf-8")]);
        assert!(listing.contains("metadata general.quantization_version = 2"), "{listing}");
        let bpw = format!("{:.3}", format.bits_per_weight());
        assert!(
            listing.lines().any(|l| l.starts_with("blk.a ") && l.contains(format.name()) && l.ends_with(&bpw)),
            "{listing}"
        );
        assert!(listing.lines().any(|l| l.starts_with("blk.odd ") && l.contains("F16")), "{listing}");
        assert!(listing.lines().any(|l| l.starts_with("blk.fall ") && l.contains(fallback.name())), "{listing}");
        ok(&["dequantize", g.to_str().expect("utf-8"), "-o", back.to_str().expect("utf-8")]);
        let bytes = std::fs::read(&back).expect("written");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
        let floats = |name: &str| -> Vec<f32> {
            let v = st.tensor(name).expect(name);
            assert_eq!(v.dtype(), Dtype::F32, "{name}");
            v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let round = |x: &[f32]| format.dequantize(&format.quantize(x).expect("whole blocks")).expect("bytes");
        let same = |got: Vec<f32>, want: Vec<f32>, name: &str| {
            assert!(
                got.iter().zip(&want).all(|(p, q)| p.to_bits() == q.to_bits()) && got.len() == want.len(),
                "{ty} {name}"
            );
        };
        same(floats("blk.a"), round(&a), "blk.a");
        same(floats("blk.b"), round(&b.iter().map(|v| v.to_f32()).collect::<Vec<_>>()), "blk.b");
        same(floats("blk.c"), round(&c.iter().map(|v| v.to_f32()).collect::<Vec<_>>()), "blk.c");
        let fell = fallback.dequantize(&fallback.quantize(&fall).expect("whole blocks")).expect("bytes");
        same(floats("blk.fall"), fell, "blk.fall");
        // Rows of 100: F16, rounded to nearest even (as ggml_fp32_to_fp16_row).
        let odd16: Vec<u8> = odd.iter().flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes()).collect();
        let stored_odd = st.tensor("blk.odd").expect("odd");
        assert_eq!((stored_odd.dtype(), stored_odd.data()), (Dtype::F16, odd16.as_slice()));
        assert_eq!(st.tensor("blk.norm").expect("norm").data(), bnorm.as_slice());
        assert_eq!(st.tensor("ids").expect("ids").data(), ids.as_slice());
        assert_eq!(st.tensor("blk.a").expect("a").shape(), [8, 512]);
        // The GGUF reported against its original: every tensor as stored, with the library's
        // figures, the same as measuring the format on the original; the copied F32 tensor
        // without error.
        let g = g.to_str().expect("utf-8");
        let against: Value =
            serde_json::from_str(&ok(&["report", g, "--reference", m, "--format", "json"])).expect("json");
        let measured: Value =
            serde_json::from_str(&ok(&["report", m, "--type", ty, "--format", "json"])).expect("json");
        let row = |v: &Value, name: &str| -> Value {
            v["tensors"].as_array().and_then(|t| t.iter().find(|r| r["name"] == name)).cloned().expect(name)
        };
        let want = error_stats(&a, &round(&a)).expect("finite");
        let r = row(&against, "blk.a");
        assert_eq!(r["stored"].as_str(), Some(format.name()));
        assert_eq!([r["mse"].as_f64(), r["snr_db"].as_f64()], [Some(want.mse), Some(want.snr_db)], "{ty}");
        assert_eq!(r["bits_per_weight"].as_f64(), Some(format.bits_per_weight()));
        for name in ["blk.a", "blk.b", "blk.c"] {
            let (p, q) = (row(&against, name), row(&measured, name));
            assert_eq!(
                [&p["mse"], &p["max_error"], &p["snr_db"]],
                [&q["mse"], &q["max_error"], &q["snr_db"]],
                "{ty} {name}"
            );
        }
        let odd16: Vec<f32> = odd.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        let want_odd = error_stats(&odd, &odd16).expect("finite");
        let r_odd = row(&against, "blk.odd");
        assert_eq!((r_odd["stored"].as_str(), r_odd["mse"].as_f64()), (Some("F16"), Some(want_odd.mse)));
        // Measuring: rows of 100 are not whole blocks, said in a note instead of a row.
        assert!(measured["tensors"].as_array().is_some_and(|t| t.iter().all(|r| r["name"] != "blk.odd")));
        let (named, why) = ("\"blk.odd\" (3 x 100)", format!("not measured in {}", format.name()));
        let said = measured["notes"][0].as_str().unwrap_or_default();
        assert!(said.contains(named) && said.contains(&why), "{}", measured["notes"]);
    }
    let gg = d.join("never.gguf");
    let r = quant(&["quantize", m, "-o", gg.to_str().expect("utf-8"), "--type", "q7_k"]);
    assert_eq!(r.status.code(), Some(2), "a bad --type is a command-line error");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--type q7_k: not one of"));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.gguf");
    let r = quant(&["quantize", fixture.to_str().expect("utf-8"), "-o", gg.to_str().expect("utf-8"), "--type", "q4_k"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("does not requantize"));
    assert!(!gg.exists());
    // llama.cpp's mixes need llama.cpp's names and metadata: not from safetensors.
    let r = quant(&["quantize", m, "-o", gg.to_str().expect("utf-8"), "--type", "q4_k_m"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("convert_hf_to_gguf.py"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!gg.exists());
}

/// Reads every tensor of a safetensors file: name -> (dtype, shape, bytes).
fn tensors(path: &Path) -> std::collections::HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

#[test]
fn two_level_files_round_trip_bit_for_bit_with_the_library() {
    use quant_core::superblock::{quantize_super, SuperSpec};
    let d = dir("super");
    let m = d.join("model.safetensors");
    let model = write_model(&m);
    let q = d.join("q.safetensors");
    let back = d.join("back.safetensors");
    let (ms, qs, bs) = (m.to_str().expect("utf-8"), q.to_str().expect("utf-8"), back.to_str().expect("utf-8"));
    for (format, grid, bits, sub) in [
        ("levels4/16", quant_core::superblock::Grid::Levels, 4, 16),
        ("offset3/32@64", quant_core::superblock::Grid::Offset, 3, 32),
        ("zp3/16:bf16", quant_core::superblock::Grid::ZeroPoint, 3, 16),
    ] {
        ok(&["quantize", ms, "-o", qs, "--super", format, "-q"]);
        let mut spec = SuperSpec::new(grid, bits, sub).expect("spec");
        if format.contains('@') {
            spec = spec.with_super_len(Some(64)).expect("super");
        }
        if format.ends_with(":bf16") {
            spec = spec.with_sub_scale(quant_core::superblock::SubScale::Bf16).expect("bf16");
        }
        let stored = tensors(&q);
        // The codes in the file are the library's, and the bias, norm and ids are copied.
        let lib = quantize_super(&model.f32s, MatrixShape::new(W32.0, W32.1), spec, None).expect("library");
        assert_eq!(stored["layer.w32"].2, lib.codes(), "{format}");
        assert_eq!(stored["layer.w32.scales"].2, lib.scales(), "{format}");
        assert_eq!(stored["layer.bias"].0, Dtype::F32);
        assert_eq!(stored.contains_key("layer.w32.offsets"), !format.starts_with("levels"));
        assert_eq!(stored.contains_key("layer.w32.super_scales"), !format.ends_with(":bf16"));
        ok(&["dequantize", qs, "-o", bs, "-q"]);
        let restored = tensors(&back);
        let want32: Vec<u8> = lib.dequantize::<f32>().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(restored["layer.w32"], (Dtype::F32, vec![W32.0, W32.1], want32), "{format}");
        let lib16 = quantize_super(&model.f16s, MatrixShape::new(W16.0, W16.1), spec, None).expect("library");
        let want16: Vec<u8> = lib16.dequantize::<f16>().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
        assert_eq!(restored["layer.w16"], (Dtype::F16, vec![W16.0, W16.1], want16), "{format}");
        let libb = quantize_super(&model.bf16s, MatrixShape::new(WB.0, WB.1), spec, None).expect("library");
        let wantb: Vec<u8> = libb.dequantize::<bf16>().iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
        assert_eq!(restored["layer.wbf16"], (Dtype::BF16, vec![WB.0, WB.1], wantb), "{format}");
        assert!(!restored.contains_key("layer.w32.scales"));
        assert_eq!(restored["ids"], tensors(&m)["ids"]);
    }
}

/// A file whose metadata claims a huge shape, with its header rewritten.
fn with_metadata(src: &Path, dst: &Path, key: &str, value: &str) {
    let bytes = std::fs::read(src).expect("file");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    header["__metadata__"][key] = Value::String(value.to_string());
    let mut text = serde_json::to_vec(&header).expect("json");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dst, out).expect("written");
}

#[test]
fn two_level_files_with_bad_parts_or_options_get_a_clear_error() {
    let d = dir("super-bad");
    let m = d.join("model.safetensors");
    write_model(&m);
    let q = d.join("q.safetensors");
    let (ms, qs) = (m.to_str().expect("utf-8"), q.to_str().expect("utf-8"));
    ok(&["quantize", ms, "-o", qs, "--super", "sym4/16", "-q"]);
    let bad = d.join("bad.safetensors");
    let out = d.join("out.safetensors");
    let (bad_s, out_s) = (bad.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    let mut keep = vec!["bad.safetensors", "model.safetensors", "q.safetensors"];
    keep.sort();
    // A shape the parts cannot hold: refused before anything is allocated or written.
    with_metadata(&q, &bad, "quant.tensor.layer.w32", r#"{"dtype":"F32","shape":[1099511627776,2],"storage":"super"}"#);
    fails(&["dequantize", bad_s, "-o", out_s], &d, "but U8 of", &keep);
    with_metadata(&q, &bad, "quant.super", "sym9/16");
    fails(&["dequantize", bad_s, "-o", out_s], &d, "metadata quant.super", &keep);
    // A one-level file whose metadata claims a huge shape (found by mutating quantized files:
    // it used to allocate 8.8 TB and abort, leaving a .partial file behind).
    let plain4 = d.join("plain4.safetensors");
    ok(&["quantize", ms, "-o", plain4.to_str().expect("utf-8"), "--bits", "4", "-q"]);
    with_metadata(
        &plain4,
        &bad,
        "quant.tensor.layer.w32",
        r#"{"dtype":"F32","shape":[1099511627776,2],"storage":"i4x2"}"#,
    );
    keep.push("plain4.safetensors");
    keep.sort();
    fails(&["dequantize", bad_s, "-o", out_s], &d, "claims shape 1099511627776x2", &keep);
    with_metadata(&plain4, &bad, "quant.tensor.layer.w32", r#"{"dtype":"F32","shape":[48,101],"storage":"i4x2"}"#);
    fails(&["dequantize", bad_s, "-o", out_s], &d, "(2400 bytes stored)", &keep);
    // Two-level parts in a file that does not say which format: refused, not read as codes.
    let plain = d.join("plain.safetensors");
    ok(&["quantize", ms, "-o", plain.to_str().expect("utf-8"), "--bits", "4", "-q"]);
    with_metadata(&plain, &bad, "quant.tensor.layer.w32", r#"{"dtype":"F32","shape":[48,100],"storage":"super"}"#);
    keep.push("plain.safetensors");
    keep.sort();
    fails(&["dequantize", bad_s, "-o", out_s], &d, "no quant.super names the format", &keep);
    // Bad formats and options on the command line.
    fails(&["quantize", ms, "-o", out_s, "--super", "levels3/16"], &d, "4-, 5- or 6-bit codes", &keep);
    fails(&["quantize", ms, "-o", out_s, "--super", "sym4"], &d, "no /SUB", &keep);
    fails(&["quantize", ms, "-o", out_s, "--super", "sym4/16:s9"], &d, "2..=8 bits", &keep);
    // An importance file that names no tensor of the model.
    let imatrix = d.join("imatrix.dat");
    let mut b = 1i32.to_le_bytes().to_vec();
    b.extend_from_slice(&17i32.to_le_bytes());
    b.extend_from_slice(b"blk.0.ffn_up.weig");
    b.extend_from_slice(&1i32.to_le_bytes());
    b.extend_from_slice(&2i32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    std::fs::write(&imatrix, &b).expect("written");
    keep.push("imatrix.dat");
    keep.sort();
    let im = imatrix.to_str().expect("utf-8");
    fails(
        &["quantize", ms, "-o", out_s, "--super", "sym4/16", "--importance", im],
        &d,
        "names none of the tensors",
        &keep,
    );
}

#[test]
fn importance_files_weight_the_search() {
    let d = dir("super-importance");
    let m = d.join("model.safetensors");
    // write_model's values without its 40x outliers (a sub-block holding one is ruled by it,
    // weights or not), and two more matrices without an importance entry.
    let model = write_model(&d.join("base.safetensors"));
    let w32: Vec<f32> = model.f32s.iter().map(|v| v.clamp(-0.05, 0.05)).collect();
    let b32: Vec<u8> = w32.iter().flat_map(|v| v.to_le_bytes()).collect();
    let b16: Vec<u8> = model.f16s.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let bb: Vec<u8> = model.bf16s.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let views = vec![
        ("layer.w32", TensorView::new(Dtype::F32, vec![W32.0, W32.1], &b32).expect("view")),
        ("layer.w16", TensorView::new(Dtype::F16, vec![W16.0, W16.1], &b16).expect("view")),
        ("layer.wbf16", TensorView::new(Dtype::BF16, vec![WB.0, WB.1], &bb).expect("view")),
    ];
    std::fs::write(&m, safetensors::serialize(views, None).expect("serializes")).expect("written");
    // llama.cpp's legacy imatrix: one entry, for layer.w32 (100 columns), two calls.
    let mut b = 1i32.to_le_bytes().to_vec();
    let name = b"layer.w32";
    b.extend_from_slice(&(name.len() as i32).to_le_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(&2i32.to_le_bytes());
    b.extend_from_slice(&(W32.1 as i32).to_le_bytes());
    for c in 0..W32.1 {
        let v: f32 = if c % 10 == 0 { 400.0 } else { 0.02 };
        b.extend_from_slice(&v.to_le_bytes());
    }
    let imatrix = d.join("imatrix.dat");
    std::fs::write(&imatrix, &b).expect("written");
    let (plain, weighted) = (d.join("plain.safetensors"), d.join("weighted.safetensors"));
    let ms = m.to_str().expect("utf-8");
    ok(&["quantize", ms, "-o", plain.to_str().expect("utf-8"), "--super", "sym3/16", "-q"]);
    let out = quant(&[
        "quantize",
        ms,
        "-o",
        weighted.to_str().expect("utf-8"),
        "--super",
        "sym3/16",
        "--importance",
        imatrix.to_str().expect("utf-8"),
        "-q",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Two float matrices have no entry: said on stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 3 tensors have no importance entry"));
    let (p, w) = (tensors(&plain), tensors(&weighted));
    assert_ne!(p["layer.w32"].2, w["layer.w32"].2, "the weights change the codes");
    assert_eq!(p["layer.w16"].2, w["layer.w16"].2, "tensors without an entry are as without the file");
    // Error on the important columns (every 10th) drops.
    let back = |q: &Path| -> Vec<f32> {
        let b = d.join("b.safetensors");
        ok(&["dequantize", q.to_str().expect("utf-8"), "-o", b.to_str().expect("utf-8"), "-q"]);
        tensors(&b)["layer.w32"].2.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    let err = |v: &[f32]| -> f64 {
        (0..W32.0 * W32.1).filter(|i| (i % W32.1).is_multiple_of(10)).map(|i| f64::from(v[i] - w32[i]).powi(2)).sum()
    };
    let (ep, ew) = (err(&back(&plain)), err(&back(&weighted)));
    assert!(ew < 0.5 * ep, "weighted columns' error {ew} against {ep} unweighted");
}

/// Every `quantize` ends with one line saying what it wrote (not with `--quiet`): tensors
/// converted and copied, and the two file sizes.
#[test]
fn quantize_says_what_it_wrote() {
    let d = dir("summary");
    let model = d.join("model.safetensors");
    write_model(&model);
    let out = d.join("q.safetensors");
    let (ms, qs) = (model.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    let r = quant(&["quantize", ms, "-o", qs, "--bits", "4", "--granularity", "group:16"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let bytes = |p: &Path| std::fs::metadata(p).expect("exists").len();
    // Three float matrices quantized; the bias, the norm and the integer ids copied.
    let said = String::from_utf8_lossy(&r.stderr);
    let first = format!(
        "quant: wrote {qs}: 3 tensors quantized to sym int4 group:16, 3 copied as they are; {} bytes from {} bytes\n",
        bytes(&out),
        bytes(&model)
    );
    assert!(said.starts_with(&first), "{said}");
    // A line per stored type. A quantized matrix takes its 4-bit codes (two a byte) and a scale
    // in its own float type per 16 values of a row.
    let quantized =
        |(rows, cols): (usize, usize), float: usize| (rows * cols).div_ceil(2) + rows * cols.div_ceil(16) * float;
    let (q_bytes, q_values) =
        (quantized(W32, 4) + quantized(W16, 2) + quantized(WB, 2), W32.0 * W32.1 + W16.0 * W16.1 + WB.0 * WB.1);
    let bpw = 8.0 * q_bytes as f64 / q_values as f64;
    for line in [
        format!("quant:   sym int4 group:16: 3 tensors, {q_bytes} bytes, {bpw:.3} bpw\n"),
        "quant:   F32: 1 tensor, 192 bytes, 32.000 bpw\n".to_string(),
        "quant:   F16: 1 tensor, 128 bytes, 16.000 bpw\n".to_string(),
        "quant:   I32: 1 tensor, 24 bytes, 32.000 bpw\n".to_string(),
    ] {
        assert!(said.contains(&line), "{line} in {said}");
    }
    assert_eq!(said.lines().count(), 5, "{said}");
    let r = quant(&["quantize", ms, "-o", qs, "--bits", "4", "-q"]);
    assert!(r.status.success() && r.stderr.is_empty(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn eval_and_imatrix_name_what_is_wrong() {
    let d = dir("eval_errors");
    let sentences = d.join("sentences.txt");
    std::fs::write(&sentences, "One sentence.\nAnother one.\n").expect("write");
    let (model, s) = (d.to_str().expect("utf-8"), sentences.to_str().expect("utf-8"));
    // A directory that is not a model: the missing file is named, exit 1, nothing written.
    let r = quant(&["eval", model, "--sentences", s]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("tokenizer.json"), "{}", String::from_utf8_lossy(&r.stderr));
    let out = d.join("imatrix.gguf");
    let r = quant(&["imatrix", model, "--sentences", s, "-o", out.to_str().expect("utf-8")]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("tokenizer.json"));
    assert!(!out.exists(), "no partial output");
    // Command-line mistakes: exit 2, naming the value.
    for (args, word) in [
        (vec!["eval", model, "--sentences", s, "--batch", "0"], "--batch"),
        (vec!["eval", model, "--sentences", s, "--w8a8", "sometimes"], "sometimes"),
        (vec!["imatrix", model, "--sentences", s, "-o", "x.gguf", "--batch", "0"], "--batch"),
    ] {
        let r = quant(&args);
        assert_eq!(r.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&r.stderr).contains(word), "{args:?}: {}", String::from_utf8_lossy(&r.stderr));
    }
}
