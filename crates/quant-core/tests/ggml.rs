//! llama.cpp's `Q8_0`, `Q4_0` and `Q4_1` against fixtures made by the `gguf` Python package
//! (the llama.cpp project's NumPy port of its reference quantizers; `crates/quant-core/tests/fixtures/ggml.py`
//! regenerates them): every byte of the blocks and every bit of the dequantized values. Then
//! the conventions those formats pin, and their errors.

use quant_core::{BlockFormat, QuantError};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml");

/// The fixtures made by ggml itself (`crates/quant-core/tests/fixtures/ggml_k.py`).
const DIR_K: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml_k");

fn read(dir: &str, name: &str) -> Vec<u8> {
    let path = format!("{dir}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn bytes(name: &str) -> Vec<u8> {
    read(DIR, name)
}

fn floats(name: &str) -> Vec<f32> {
    to_f32(&bytes(name))
}

fn golden(format: BlockFormat, file: &str) {
    let x = floats("input.f32");
    let want = bytes(&format!("{file}.bin"));
    assert_eq!(x.len() / 32 * format.block_bytes(), want.len(), "fixture sizes");
    let got = format.quantize(&x).expect("finite, whole blocks");
    let bb = format.block_bytes();
    for (i, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
        assert_eq!(g, w, "{} block {i}: input {:?}", format.name(), &x[i * 32..i * 32 + 32]);
    }
    let back = format.dequantize(&want).expect("whole blocks");
    let want_back = floats(&format!("{file}.deq.f32"));
    assert_eq!(back.len(), want_back.len());
    for (i, (g, w)) in back.iter().zip(&want_back).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{} value {i}: {g:e} vs {w:e}",
            format.name()
        );
    }
}

#[test]
fn q8_0_matches_gguf_byte_for_byte() {
    golden(BlockFormat::Q8_0, "q8_0");
}

#[test]
fn q4_0_matches_gguf_byte_for_byte() {
    golden(BlockFormat::Q4_0, "q4_0");
}

#[test]
fn q4_1_matches_gguf_byte_for_byte() {
    golden(BlockFormat::Q4_1, "q4_1");
}

#[test]
fn q8_0_rounds_ties_away_from_zero_and_q4_0_keeps_split_halves() -> Result<(), QuantError> {
    // amax 127 -> d = 1: codes are roundf(x), so 2.5 -> 3 and -2.5 -> -3 (ties-to-even would give 2, -2).
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.5;
    let b = BlockFormat::Q8_0.quantize(&x)?;
    assert_eq!(&b[..2], &0x3c00u16.to_le_bytes()); // f16 1.0
    assert_eq!([b[2], b[3], b[4], b[5]].map(|v| v as i8), [127, 3, -3, 1]);
    // Q4_0: max -8 -> d = 1, q = trunc(x + 8.5): value j in the low nibble of byte j, value
    // j + 16 in its high nibble.
    let mut x = [0.0f32; 32];
    x[0] = -8.0;
    x[16] = 7.0;
    x[1] = 1.5;
    let b = BlockFormat::Q4_0.quantize(&x)?;
    assert_eq!(&b[..2], &0x3c00u16.to_le_bytes());
    assert_eq!(b[2], 0xf0); // low nibble q(-8) = 0, high nibble q(7) = 15
    assert_eq!(b[3], 0x8a); // low nibble trunc(1.5 + 8.5) = 10, high nibble q(0) = 8
    Ok(())
}

#[test]
fn bad_rows_are_errors_and_nothing_is_written() {
    let x = vec![0.5f32; 33];
    for f in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
        assert_eq!(
            f.quantize(&x),
            Err(QuantError::NotABlockMultiple { what: "row", format: f.name(), len: 33, block: 32 })
        );
        let mut y = vec![0.5f32; 64];
        y[40] = f32::NAN;
        let mut out = vec![0xAAu8; f.block_bytes() * 2];
        assert!(matches!(f.quantize_into(&y, &mut out), Err(QuantError::NonFinite { index: 40, .. })));
        assert!(out.iter().all(|&b| b == 0xAA), "{}: nothing written", f.name());
        assert!(matches!(f.dequantize(&[0u8; 35]), Err(QuantError::NotABlockMultiple { what: "bytes", len: 35, .. })));
        let msg = f.quantize(&x).expect_err("33 values").to_string();
        assert_eq!(msg, format!("row has length 33, which is not a multiple of {}'s block size 32", f.name()));
    }
}

/// `Q5_0`, `Q5_1` and the k-quants against ggml itself (`crates/quant-core/tests/fixtures/ggml_k.py`: bytes from
/// `ggml_quantize_chunk`, values from ggml's `to_float`), 28 rows of 256 values that reach each
/// format's corners (see the fixtures' README).
fn golden_k(format: BlockFormat, file: &str) {
    let x = to_f32(&read(DIR_K, "input.f32"));
    let want = read(DIR_K, &format!("{file}.bin"));
    let (n, bb) = (format.block_len(), format.block_bytes());
    assert_eq!(x.len() / n * bb, want.len(), "fixture sizes");
    let got = format.quantize(&x).expect("finite, whole blocks");
    let mut wrong = Vec::new();
    for (i, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
        if g != w {
            let first = g.iter().zip(w).position(|(a, b)| a != b).unwrap_or(0);
            wrong.push(format!(
                "block {i} (values {}..{}): first differing byte {first}: {} vs {}",
                i * n,
                (i + 1) * n,
                g[first],
                w[first]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {} of {} blocks differ:\n{}",
        format.name(),
        wrong.len(),
        want.len() / bb,
        wrong.join("\n")
    );
    let back = format.dequantize(&want).expect("whole blocks");
    let want_back = to_f32(&read(DIR_K, &format!("{file}.deq.f32")));
    assert_eq!(back.len(), want_back.len());
    for (i, (g, w)) in back.iter().zip(&want_back).enumerate() {
        assert!(g.to_bits() == w.to_bits(), "{} value {i}: {g:e} vs {w:e}", format.name());
    }
}

#[test]
fn q5_0_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q5_0, "q5_0");
}

#[test]
fn q5_1_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q5_1, "q5_1");
}

#[test]
fn q2_k_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q2_K, "q2_k");
}

#[test]
fn q3_k_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q3_K, "q3_k");
}

#[test]
fn q4_k_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q4_K, "q4_k");
}

#[test]
fn q5_k_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q5_K, "q5_k");
}

#[test]
fn q6_k_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::Q6_K, "q6_k");
}

#[test]
fn iq4_nl_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::IQ4_NL, "iq4_nl");
}

#[test]
fn iq4_xs_matches_ggml_byte_for_byte() {
    golden_k(BlockFormat::IQ4_XS, "iq4_xs");
}

#[test]
fn k_quants_reject_partial_super_blocks_and_non_finite_values() {
    for format in [
        BlockFormat::Q2_K,
        BlockFormat::Q3_K,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
        BlockFormat::IQ4_XS,
    ] {
        assert_eq!(
            format.quantize(&[0.5; 255]),
            Err(QuantError::NotABlockMultiple { what: "row", format: format.name(), len: 255, block: 256 })
        );
        let mut x = vec![0.25f32; 512];
        x[300] = f32::NAN;
        assert!(matches!(format.quantize(&x), Err(QuantError::NonFinite { index: 300, .. })), "{}", format.name());
        assert!(matches!(
            format.dequantize(&vec![0u8; format.block_bytes() + 1]),
            Err(QuantError::NotABlockMultiple { what: "bytes", .. })
        ));
    }
}

/// Round trips through the k-quants stay within each format's resolution: the error of a row of
/// uniform-like values (4 bits: about range / 15 / sqrt(12), some 7 % of the RMS) relative to its
/// RMS shrinks with the bits (4.5, 5.5, 6.56 bits per weight).
#[test]
fn k_quant_errors_shrink_with_the_bits() -> Result<(), QuantError> {
    let x: Vec<f32> = (0..4096).map(|i| ((i * 7919 % 4093) as f32 / 4093.0 - 0.5) * ((i % 13) as f32 + 1.0)).collect();
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    let mut last = f32::INFINITY;
    for format in [BlockFormat::Q2_K, BlockFormat::Q3_K, BlockFormat::Q4_K, BlockFormat::Q5_K, BlockFormat::Q6_K] {
        let back = format.dequantize(&format.quantize(&x)?)?;
        let rel = (x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32).sqrt() / rms;
        assert!(rel < last / 1.5 && rel < 0.4, "{}: relative RMS error {rel} (previous {last})", format.name());
        last = rel;
    }
    Ok(())
}

/// With an importance matrix: every weighted format against ggml's `ggml_quantize_chunk` with
/// the same weights (rows of 512, so blocks past a row's first take their own weights).
#[test]
fn importance_weighted_formats_match_ggml_byte_for_byte() {
    let (x, imatrix) = (to_f32(&read(DIR_K, "input.f32")), to_f32(&read(DIR_K, "imatrix.f32")));
    let row = imatrix.len();
    assert_eq!(row, 512);
    let mut report = Vec::new();
    for (format, file) in [
        (BlockFormat::Q4_0, "q4_0"),
        (BlockFormat::Q4_1, "q4_1"),
        (BlockFormat::Q5_0, "q5_0"),
        (BlockFormat::Q5_1, "q5_1"),
        (BlockFormat::Q2_K, "q2_k"),
        (BlockFormat::Q3_K, "q3_k"),
        (BlockFormat::Q4_K, "q4_k"),
        (BlockFormat::Q5_K, "q5_k"),
        (BlockFormat::Q6_K, "q6_k"),
        (BlockFormat::IQ4_NL, "iq4_nl"),
        (BlockFormat::IQ4_XS, "iq4_xs"),
    ] {
        let want = read(DIR_K, &format!("{file}.imatrix.bin"));
        let got = format.quantize_weighted(&x, row, &imatrix).expect("whole rows, finite");
        assert_eq!(got.len(), want.len(), "{}", format.name());
        let bb = format.block_bytes();
        let bad = got.chunks(bb).zip(want.chunks(bb)).filter(|(g, w)| g != w).count();
        if bad > 0 {
            report.push(format!("{}: {bad} of {} blocks differ", format.name(), want.len() / bb));
        }
        // The weights matter: the unweighted bytes differ from ggml's weighted ones.
        assert_ne!(format.quantize(&x).expect("finite"), want, "{}: weights changed nothing", format.name());
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn importance_weighted_quantization_checks_its_inputs() {
    let x = vec![0.5f32; 1024];
    let w = vec![1.0f32; 512];
    assert_eq!(
        BlockFormat::Q4_K.quantize_weighted(&x, 500, &w[..500]),
        Err(QuantError::NotABlockMultiple { what: "row", format: "Q4_K", len: 500, block: 256 })
    );
    assert_eq!(
        BlockFormat::Q4_K.quantize_weighted(&x[..768], 512, &w),
        Err(QuantError::NotABlockMultiple { what: "values (whole rows)", format: "Q4_K", len: 768, block: 512 })
    );
    assert_eq!(
        BlockFormat::Q4_0.quantize_weighted(&x, 512, &w[..511]),
        Err(QuantError::LengthMismatch { what: "importance weights (one per column)", expected: 512, found: 511 })
    );
    let mut bad = w.clone();
    bad[9] = f32::INFINITY;
    assert!(matches!(
        BlockFormat::Q5_K.quantize_weighted(&x, 512, &bad),
        Err(QuantError::NonFiniteParameter { what: "importance weight", index: 9, .. })
    ));
    // Q8_0 takes no weights in ggml: the weighted call gives the plain bytes.
    let y: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.37).sin()).collect();
    assert_eq!(BlockFormat::Q8_0.quantize_weighted(&y, 512, &w), BlockFormat::Q8_0.quantize(&y));
}

/// The generator of `crates/quant-core/tests/fixtures/ggml_bulk.py`, bit for bit: SplitMix64 draws, four summed
/// per value in f64, a power-of-two scale per row, every 211th value times 16, a zero row and a
/// constant row in every 64.
fn bulk_values(rows: usize, n: usize) -> Vec<f32> {
    let mut rng = quant_testkit::Rng::new(2028);
    let mut x: Vec<f32> = (0..rows * n)
        .map(|i| {
            let u: [f64; 4] = core::array::from_fn(|_| rng.unit());
            let r = i / n;
            let mut v = (((u[0] + u[1]) + u[2]) + u[3] - 2.0) * ((1u64 << (3 * (r % 9))) as f64 / 65536.0);
            if i % 211 == 0 {
                v *= 16.0;
            }
            v as f32
        })
        .collect();
    for (r, row) in x.chunks_mut(n).enumerate() {
        match r % 64 {
            63 => row.fill(0.0),
            62 => {
                let first = row[0];
                row.fill(first);
            }
            _ => {}
        }
    }
    x
}

/// The importance matrix of `ggml_bulk.py`: `u² · 4` per column, 0 on every 17th, 1000 on
/// column 100.
fn bulk_importance() -> Vec<f32> {
    let mut rng = quant_testkit::Rng::new(2029);
    (0..512)
        .map(|c| {
            let u = rng.unit();
            match c {
                100 => 1000.0,
                c if c % 17 == 0 => 0.0,
                _ => (u * u * 4.0) as f32,
            }
        })
        .collect()
}

/// 64-bit FNV-1a, as the fixture script hashes.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> String {
    let h = bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// Half a million generated values (2048 rows) in every format, without and with an importance
/// matrix: the hash of our bytes is the hash of ggml's, and so is the hash of the values we
/// dequantize them to (`crates/quant-core/tests/fixtures/ggml_bulk.py` made the hashes with ggml itself).
#[test]
fn every_format_matches_ggml_on_half_a_million_values() {
    let text = read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"), "ggml_bulk.json");
    let want: serde_json::Value = serde_json::from_slice(&text).expect("json");
    let (rows, n) = (want["rows"].as_u64().expect("rows") as usize, want["row_len"].as_u64().expect("n") as usize);
    let x = bulk_values(rows, n);
    let w = bulk_importance();
    let floats = |v: &[f32]| fnv(v.iter().flat_map(|f| f.to_le_bytes()));
    assert_eq!(floats(&x), want["values"]["input"], "the generator drifted from the script's");
    assert_eq!(floats(&w), want["values"]["importance"]);
    let mut checked = 0;
    // MXFP4 is not in this fixture: the ggml that ggml-python builds predates it. Its golden
    // data comes from the gguf package (tests/mxfp4.rs).
    for format in BlockFormat::ALL.into_iter().filter(|&f| f != BlockFormat::MXFP4) {
        let name = format.name().to_ascii_lowercase();
        for (key, q) in [
            (name.clone(), format.quantize(&x).expect("finite")),
            (format!("{name}.imatrix"), format.quantize_weighted(&x, 512, &w).expect("finite")),
        ] {
            assert_eq!(fnv(q.iter().copied()), want["bytes"][&key], "{key}: bytes");
            let back = format.dequantize(&q).expect("whole blocks");
            assert_eq!(floats(&back), want["dequantized"][&key], "{key}: dequantized values");
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

/// Every format's exact integer form ([`BlockFormat::integer_form_into`]) rounds back to its
/// dequantized values bit for bit, on ggml's own blocks (the `ggml_k` fixtures) and on blocks
/// quantized here from data with outliers, zero and constant rows; its codes lie in the
/// format's range, and a scale or minimum that is NaN or infinite names its block.
#[test]
fn integer_forms_are_the_dequantized_values_exactly() -> Result<(), QuantError> {
    use quant_core::BlockCodes;
    let x = bulk_values(16, 512);
    let mut from_ggml = 0;
    for format in BlockFormat::ALL {
        let mut sets = vec![format.quantize(&x)?];
        // ggml's own blocks, for the formats the ggml_k fixtures hold.
        let file = format!("{}.bin", format.name().to_ascii_lowercase());
        if std::path::Path::new(DIR_K).join(&file).exists() {
            sets.push(read(DIR_K, &file));
            from_ggml += 1;
        }
        for bytes in sets {
            let values = bytes.len() / format.block_bytes() * format.block_len();
            let subs = values / format.sub_block_len();
            let (mut q, mut s, mut m) = (vec![0i8; values], vec![f32::NAN; subs], vec![f32::NAN; subs]);
            format.integer_form_into(&bytes, &mut q, &mut s, &mut m)?;
            let back = format.dequantize(&bytes)?;
            let (lo, hi) = match format.codes() {
                BlockCodes::Signed { bits } => (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1),
                BlockCodes::Unsigned { bits } => (0, (1i32 << bits) - 1),
                BlockCodes::Levels(l) => (i32::from(*l.iter().min().unwrap()), i32::from(*l.iter().max().unwrap())),
                _ => unreachable!("a format this test does not know"),
            };
            let has_min = matches!(format.codes(), BlockCodes::Unsigned { .. });
            // Two-level formats: each sub-block scale (minimum) is the block's super factor
            // times an integer of at most 8 bits, exactly.
            let (bb, subs_per) = (format.block_bytes(), format.block_len() / format.sub_block_len());
            for (b, block) in bytes.chunks_exact(bb).enumerate() {
                let Some((d, dm)) = format.super_params(block) else { continue };
                for j in b * subs_per..(b + 1) * subs_per {
                    for (v, f) in [(s[j], d), (m[j], dm)] {
                        let l = if f == 0.0 { 0.0 } else { v / f };
                        assert!(l == l.round() && l.abs() <= 255.0, "{} sub-block {j}: {v} / {f}", format.name());
                        assert_eq!(f * l, v, "{} sub-block {j}", format.name());
                    }
                }
            }
            for (i, (&c, &want)) in q.iter().zip(&back).enumerate() {
                let sub = i / format.sub_block_len();
                assert!((lo..=hi).contains(&i32::from(c)), "{} code {c} at {i}", format.name());
                if !has_min {
                    assert_eq!(m[sub], 0.0, "{} minimum of sub-block {sub}", format.name());
                }
                let exact = f64::from(s[sub]) * f64::from(c);
                let got = if has_min { (exact + f64::from(m[sub])) as f32 } else { exact as f32 };
                assert_eq!(got.to_bits(), want.to_bits(), "{} value {i}: {got:e} vs {want:e}", format.name());
            }
        }
    }
    assert_eq!(from_ggml, 9, "Q5_0, Q5_1, the five k-quants and the two IQ4 formats");
    // A NaN `d` (Q4_0, block 1) and an infinite `dmin` (Q4_K) are named.
    let mut bytes = BlockFormat::Q4_0.quantize(&x[..64])?;
    bytes[18..20].copy_from_slice(&0x7e00u16.to_le_bytes());
    let (mut q, mut s, mut m) = (vec![0i8; 64], vec![0f32; 2], vec![0f32; 2]);
    assert!(matches!(
        BlockFormat::Q4_0.integer_form_into(&bytes, &mut q, &mut s, &mut m),
        Err(QuantError::NonFiniteParameter { what: "scale of block", index: 1, .. })
    ));
    let mut bytes = BlockFormat::Q4_K.quantize(&x[..256])?;
    bytes[2..4].copy_from_slice(&0x7c00u16.to_le_bytes());
    let (mut q, mut s, mut m) = (vec![0i8; 256], vec![0f32; 8], vec![0f32; 8]);
    let got = BlockFormat::Q4_K.integer_form_into(&bytes, &mut q, &mut s, &mut m);
    // A sub-block minimum of 0 times an infinite dmin is NaN; either way block 0 is named.
    assert!(matches!(got, Err(QuantError::NonFiniteParameter { what: "minimum of block", index: 0, .. })), "{got:?}");
    assert_eq!(
        BlockFormat::Q6_K.integer_form_into(&[0; 210], &mut [0; 255], &mut [0.0; 16], &mut [0.0; 16]),
        Err(QuantError::LengthMismatch { what: "integer codes (one per value)", expected: 256, found: 255 })
    );
    assert_eq!(
        BlockFormat::Q6_K.integer_form_into(&[0; 211], &mut [0; 256], &mut [0.0; 16], &mut [0.0; 16]),
        Err(QuantError::NotABlockMultiple { what: "bytes", format: "Q6_K", len: 211, block: 210 })
    );
    Ok(())
}
