//! `quant report`: what `measure` finds, as `render` writes it.
//!
//! `report` works in one of three ways:
//! * **measure** (the default): every 2-D floating tensor of a safetensors or GGUF file is
//!   quantized under each scheme (`--scheme/--bits/--granularity`, all combinations) and each
//!   llama.cpp format (`--type`), dequantized, and compared with itself. Tensors a file already
//!   holds in a llama.cpp format cannot be measured this way (the original is gone): a note
//!   counts them and names `--reference`.
//! * **`--reference ORIGINAL`**: every floating tensor of two or more dimensions of the file,
//!   quantized (`Q4_K`, ...) or plain, is compared, as stored, with the tensor of the same name
//!   and shape in `ORIGINAL` (safetensors, or a plain `F32`/`F16`/`BF16` GGUF such as
//!   `convert_hf_to_gguf.py` writes). Rows are grouped by the stored type.
//! * **`--reconstructed BACK`**: every 2-D floating tensor of the file (the original) is
//!   compared with the tensor of the same name and shape in `BACK` (e.g. written by `quant
//!   dequantize`). Rows are grouped by `BACK`'s type.
//!
//! Values of different types are compared exactly (both widened to `f64`). Bytes per tensor:
//! for a scheme, what `quant quantize` writes (codes of 2 and 4 bits packed, 3 bits in 4, 5 to 8
//! bits in a byte, wider ones counted at their width; the scale in the tensor's type and an
//! `i32` zero point per scale when asymmetric); for a llama.cpp format, its blocks; when
//! comparing files, the stored tensor's bytes. Bits per weight are `8 · bytes / values`.
//!

use std::path::Path;

use quant_io::imatrix::Importance;

use std::path::PathBuf;

use super::{block_format, plan, FitArg, SchemeArg};
use crate::measure::{measure_file, Against, Method};
use crate::render::{render, Format, Sort};
use crate::{CliError, Progress};

/// `quant report`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The safetensors or GGUF file.
    pub model: PathBuf,
    /// Schemes, comma-separated (default sym, unless only --type is given).
    #[arg(long, value_delimiter = ',')]
    pub scheme: Vec<SchemeArg>,
    /// Widths in bits (2..=32), comma-separated (default 8).
    #[arg(long, value_delimiter = ',')]
    pub bits: Vec<u32>,
    /// `tensor`, `channel` (one scale per row) or `group:G` (per G values of a row),
    /// comma-separated (default channel).
    #[arg(long, value_delimiter = ',')]
    pub granularity: Vec<String>,
    /// llama.cpp formats to measure too (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k,
    /// q5_k, q6_k), comma-separated, byte for byte as ggml quantizes them.
    #[arg(long = "type", value_delimiter = ',')]
    pub ty: Vec<String>,
    /// Our two-level formats to measure, comma-separated: `GRID BITS/SUB[:sS|:f16|:bf16][@SUPER]`
    /// with GRID `sym`, `offset`, `zp` (integer zero points) or `levels` (4 to 6 bits), e.g. `sym4/16` (4-bit codes, 6-bit
    /// scales per 16 values under one f16 per row), `levels4/16`, `offset4/32:s6@256`,
    /// `sym4/32:f16` (groups of 32 with f16 scales).
    #[arg(long = "super", value_delimiter = ',')]
    pub super_formats: Vec<String>,
    /// How the two-level formats fit their scales: an error-minimizing search, or min-max.
    #[arg(long, value_enum, default_value = "search")]
    pub fit: FitArg,
    /// llama.cpp importance matrix (GGUF or legacy .dat) weighting the two-level formats'
    /// search (tensors it names; the others unweighted).
    #[arg(long, requires = "super_formats")]
    pub importance: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Order of the summary: as given, by bits per weight (size against error), or by SNR.
    #[arg(long, value_enum, default_value = "given")]
    pub sort: Sort,
    /// Compare with this file (e.g. written by `quant dequantize`) instead of quantizing.
    #[arg(long, conflicts_with_all = ["reference", "scheme", "bits", "granularity", "ty", "super_formats"])]
    pub reconstructed: Option<PathBuf>,
    /// The original this file was made from (safetensors, or an F32/F16/BF16 GGUF): every
    /// floating tensor of the file, quantized or not, is compared with it as stored.
    #[arg(long, conflicts_with_all = ["scheme", "bits", "granularity", "ty", "super_formats"])]
    pub reference: Option<PathBuf>,
}

/// A finished report: the text for stdout, and the notes (tensors skipped, and why), which the
/// table and JSON also hold and CSV cannot.
pub struct Report {
    /// The table, JSON or CSV.
    pub text: String,
    /// One line per note.
    pub notes: Vec<String>,
}

/// `quant report`.
pub fn report(
    path: &Path,
    methods: &[Method],
    against: Option<Against>,
    format: Format,
    sort: Sort,
    importance: Option<(&Path, &Importance)>,
    progress: &Progress,
) -> Result<Report, CliError> {
    let measured = measure_file(path, methods, against, importance, progress)?;
    let text = render(path, against, &measured, format, sort);
    Ok(Report { text, notes: measured.notes })
}

/// Runs `quant report` with `args`: the report on stdout (CSV's notes on stderr).
pub fn run(args: Args, progress: &Progress) -> Result<(), CliError> {
    let Args {
        model,
        scheme,
        bits,
        granularity,
        ty,
        super_formats,
        fit,
        importance,
        format,
        sort,
        reconstructed,
        reference,
    } = args;

    let mut methods = Vec::new();
    // Our schemes: every combination, with sym / 8 / channel for what is not given, and
    // none when only llama.cpp or two-level formats are asked for.
    let only_formats = !(ty.is_empty() && super_formats.is_empty());
    if !(only_formats && scheme.is_empty() && bits.is_empty() && granularity.is_empty()) {
        let scheme = if scheme.is_empty() { vec![SchemeArg::Sym] } else { scheme };
        let bits = if bits.is_empty() { vec![8] } else { bits };
        let granularity = if granularity.is_empty() { vec!["channel".to_string()] } else { granularity };
        for &s in &scheme {
            for &b in &bits {
                for g in &granularity {
                    methods.push(Method::Plan(plan(s, b, g)?));
                }
            }
        }
    }
    for name in &super_formats {
        let spec = crate::scheme::parse_super(name, fit.fit()).map_err(|e| CliError::usage(format!("--super {e}")))?;
        methods.push(Method::Super(spec));
    }
    for name in &ty {
        methods.push(Method::Format(block_format(name)?));
    }
    let against = match (&reconstructed, &reference) {
        (Some(p), _) => Some(Against::Reconstructed(p)),
        (_, Some(p)) => Some(Against::Reference(p)),
        _ => None,
    };
    let imp = importance.as_deref().map(quant_io::imatrix::Importance::load).transpose()?;
    let imp = importance.as_deref().zip(imp.as_ref());
    let r = report(&model, &methods, against, format, sort, imp, progress)?;
    print!("{}", r.text);
    if format == Format::Csv {
        for n in &r.notes {
            eprintln!("quant: note: {n}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use quant_core::BlockFormat;
    use quant_traits::half::f16;
    use serde_json::Value;

    use quant_analysis::error_stats;

    use super::*;
    use quant_testkit::gguf::Builder;

    fn json_report(path: &Path, methods: &[Method], against: Option<Against>) -> Result<Value, CliError> {
        let r = report(path, methods, against, Format::Json, Sort::Given, None, &Progress::new(true))?;
        Ok(serde_json::from_str(&r.text).expect("json"))
    }

    fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
        v["tensors"].as_array().and_then(|t| t.iter().find(|t| t["name"] == name)).expect("row")
    }

    /// A GGUF written by `quant quantize --type q4_k` from an F32/F16 GGUF, reported against that
    /// original: each tensor's figures are the library's (Q4_K round trip against the original
    /// values, F16 ones widened exactly), the same as measuring Q4_K on the original directly;
    /// a wrong reference is a clear error.
    #[test]
    fn a_quantized_gguf_against_its_reference_gives_the_library_figures() {
        let dir = std::env::temp_dir().join(format!("quant-report-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (original, quantized) = (dir.join("in.gguf"), dir.join("q.gguf"));
        let x: Vec<f32> = (0..2 * 256).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let h: Vec<f16> = x[..256].iter().map(|&v| f16::from_f32(v * 0.5)).collect();
        let mut b = Builder::new();
        b.tensors = vec![
            ("a".into(), vec![256, 2], 0, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("h".into(), vec![256, 1], 1, h.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()),
            ("n".into(), vec![256], 0, x[..256].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ];
        std::fs::write(&original, b.bytes()).expect("write");
        crate::gguf::quantize(
            &original,
            &quantized,
            crate::gguf::Target::Format(BlockFormat::Q4_K),
            &Progress::new(true),
        )
        .expect("quantizes");

        let a_back = BlockFormat::Q4_K.dequantize(&BlockFormat::Q4_K.quantize(&x).expect("blocks")).expect("blocks");
        let want_a = error_stats(&x, &a_back).expect("finite");
        let h32: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let h_back = BlockFormat::Q4_K.dequantize(&BlockFormat::Q4_K.quantize(&h32).expect("blocks")).expect("blocks");
        let widen = |v: &[f32]| v.iter().map(|&y| f64::from(y)).collect::<Vec<f64>>();
        let want_h = error_stats(&widen(&h32), &widen(&h_back)).expect("finite");

        let v = json_report(&quantized, &[], Some(Against::Reference(&original))).expect("report");
        assert_eq!(v["tensors"].as_array().map(Vec::len), Some(2), "the 1-D tensor is not compared");
        for (name, want) in [("a", &want_a), ("h", &want_h)] {
            let r = row(&v, name);
            assert_eq!((r["stored"].as_str(), r["dtype"].as_str()), (Some("Q4_K"), Some("Q4_K")));
            assert_eq!(r["mse"].as_f64(), Some(want.mse), "{name}");
            assert_eq!(r["max_error"].as_f64(), Some(want.max_error), "{name}");
            assert_eq!(r["snr_db"].as_f64(), Some(want.snr_db), "{name}");
            assert_eq!(r["bits_per_weight"].as_f64(), Some(4.5), "{name}");
        }
        let s = &v["summary"][0];
        assert_eq!((s["stored"].as_str(), s["tensors"].as_u64()), (Some("Q4_K"), Some(2)));
        let (n, signal, err) = (
            256.0 * 3.0,
            want_a.signal_power * 512.0 + want_h.signal_power * 256.0,
            want_a.mse * 512.0 + want_h.mse * 256.0,
        );
        let total = s["snr_db_total"].as_f64().expect("finite");
        assert!((total - 10.0 * (signal / err).log10()).abs() < 1e-12, "{total} over {n} values");

        // Measuring Q4_K on the original gives the same figures.
        let m = json_report(&original, &[Method::Format(BlockFormat::Q4_K)], None).expect("report");
        assert_eq!(row(&m, "a")["snr_db"], row(&v, "a")["snr_db"]);
        assert_eq!(row(&m, "h")["mse"], row(&v, "h")["mse"]);
        // The quantized file alone: nothing to measure, and a note saying why.
        let alone = json_report(&quantized, &[Method::Format(BlockFormat::Q6_K)], None).expect("report");
        assert_eq!(alone["tensors"].as_array().map(Vec::len), Some(0));
        assert!(alone["notes"][0].as_str().is_some_and(|n| n.contains("2 Q4_K") && n.contains("--reference")));

        // A reference without the tensor, or with another shape: one line naming it.
        let mut wrong = Builder::new();
        wrong.tensors = vec![("a".into(), vec![256, 2], 0, vec![0; 2048])];
        let bad = dir.join("wrong.gguf");
        std::fs::write(&bad, wrong.bytes()).expect("write");
        let e = json_report(&quantized, &[], Some(Against::Reference(&bad))).expect_err("no tensor h");
        assert!(e.to_string().contains("has no tensor \"h\""), "{e}");
        wrong.tensors = vec![("a".into(), vec![128, 4], 0, vec![0; 2048]), ("h".into(), vec![256, 1], 1, vec![0; 512])];
        std::fs::write(&bad, wrong.bytes()).expect("write");
        let e = json_report(&quantized, &[], Some(Against::Reference(&bad))).expect_err("shapes differ");
        assert!(e.to_string().contains("tensor \"a\" is F32 [4, 128]"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
