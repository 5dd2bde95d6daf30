//! The named conventions against fixtures (`crates/quant-core/tests/fixtures/conventions.py`): ONNX codes from
//! `onnx`'s reference evaluator (QuantizeLinear opset 28, default and `DOUBLE` precision), per
//! tensor, per row and blocked along either axis, into int8, uint8 and int4; ONNX Runtime's own
//! QuantizeLinear codes (which `Onnx` must match); PyTorch parameters and codes from its
//! published formulas in float32. Then the facts that tell them apart.

use quant_core::{Axis, Convention, Granularity, MatrixShape, QuantError, QuantParams, QuantSpec, Storage};
use quant_traits::I4x2;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/conventions");
const SHAPE: MatrixShape = MatrixShape::new(8, 64);

fn read(name: &str) -> Vec<u8> {
    let path = format!("{DIR}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn f32s(name: &str) -> Vec<f32> {
    read(name).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn i64s(name: &str) -> Vec<i64> {
    read(name).chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
}

fn granularity(layout: &str) -> Granularity {
    let (kind, block) = layout.split_once(':').expect("layout:block");
    let size: usize = block.parse().expect("block size");
    match kind {
        "tensor" => Granularity::PerTensor,
        "rows" => Granularity::PerChannel(Axis::Rows),
        "group_cols" => Granularity::PerGroup { axis: Axis::Cols, size },
        "group_rows" => Granularity::PerGroup { axis: Axis::Rows, size },
        _ => panic!("unknown layout {layout}"),
    }
}

/// Quantizes the fixture input with the fixture's parameters into `Q` under `conv`.
fn codes<Q: Storage>(conv: Convention, spec: QuantSpec, g: Granularity, params: &[QuantParams<f32>]) -> Vec<i64> {
    let x = f32s("input.f32");
    let mut out = vec![Q::default(); Q::units_for(x.len())];
    conv.quantize_matrix_into(&x, SHAPE, spec, g, params, &mut out).expect("valid case");
    (0..x.len()).map(|i| Q::code_at(&out, i)).collect()
}

fn cases() -> Vec<(String, String, String)> {
    String::from_utf8(read("cases.txt"))
        .expect("utf-8")
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (w[0].to_string(), w[1].to_string(), w[2].to_string())
        })
        .collect()
}

fn check(name: &str, layout: &str, storage: &str) -> Result<(), QuantError> {
    let conv = match name.split('_').next() {
        Some("pytorch") => Convention::PyTorch,
        _ if name.starts_with("onnx_f32") || name.starts_with("ort_") => Convention::Onnx,
        _ => Convention::Exact,
    };
    let g = granularity(layout);
    let scales = f32s(&format!("{name}.scale.f32"));
    let zps = i64s(&format!("{name}.zp.i64"));
    let want = i64s(&format!("{name}.codes.i64"));
    let bits = if storage == "i4" { 4 } else { 8 };
    let spec = if zps.iter().all(|&z| z == 0) && storage != "u8" {
        QuantSpec::symmetric(bits)?
    } else {
        QuantSpec::asymmetric(bits)?
    };
    let params: Vec<QuantParams<f32>> =
        scales.iter().zip(&zps).map(|(&s, &z)| QuantParams::new(spec, s, z)).collect::<Result<_, _>>()?;
    if conv == Convention::PyTorch {
        // The parameters too, from the data.
        let x = f32s("input.f32");
        let ours = conv.matrix_params(&x, SHAPE, spec, g)?;
        assert_eq!(ours, params, "{name}: parameters");
    }
    let got = match storage {
        "i8" => codes::<i8>(conv, spec, g, &params),
        "u8" => codes::<u8>(conv, spec, g, &params),
        "i4" => codes::<I4x2>(conv, spec, g, &params),
        _ => panic!("storage {storage}"),
    };
    let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        bad.is_empty(),
        "{name}: {} codes differ, first at {:?}: ours {} vs fixture {}",
        bad.len(),
        SHAPE.position(bad[0]),
        got[bad[0]],
        want[bad[0]]
    );
    Ok(())
}

#[test]
fn every_fixture_case_matches_code_for_code() -> Result<(), QuantError> {
    let cases = cases();
    assert_eq!(cases.len(), 19);
    for (name, layout, storage) in &cases {
        check(name, layout, storage)?;
    }
    Ok(())
}

#[test]
fn the_f32_division_differs_from_the_exact_one_near_ties() -> Result<(), QuantError> {
    // The fixture crafts values within ulps of (k + 1/2)·scale: ONNX's default (f32 division)
    // and its DOUBLE precision disagree there, and each convention matches its own column.
    let a = i64s("onnx_f32_tensor_i8.codes.i64");
    let b = i64s("onnx_tensor_i8.codes.i64");
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(differ >= 20, "only {differ} codes differ");
    // One such value by hand: s = 1/3 in f32; x = 2.5 * s rounded to f32 lies below 2.5 * s,
    // but x / s in f32 rounds to exactly 2.5, which goes to 2 (even) ...
    let s = 1.0f32 / 3.0;
    let x = 2.5f32 * s;
    let (exact, onnx) =
        (Convention::Exact.quantize_value(x, s, 0, -128, 127), Convention::Onnx.quantize_value(x, s, 0, -128, 127));
    assert_eq!(x / s, 2.5);
    assert_eq!(onnx, 2);
    // ... while the exact quotient is 2.5 plus or minus a hair, and rounds accordingly.
    let quotient = f64::from(x) / f64::from(s);
    assert_ne!(quotient, 2.5);
    assert_eq!(exact, if quotient > 2.5 { 3 } else { 2 });
    Ok(())
}

#[test]
fn onnx_divides_in_the_input_type() {
    use quant_traits::half::{bf16, f16};
    // Every f16 in [-4, 4) against scale f16(1/3): the code is rint of the quotient rounded to
    // f16 (computed here as numpy does, the f32 quotient rounded to f16), and that differs
    // from the exact division somewhere.
    let s = f16::from_f32(1.0 / 3.0);
    let mut differ = 0;
    for bits in 0..=u16::MAX {
        let x = f16::from_bits(bits);
        if !x.is_finite() || x.to_f32().abs() >= 4.0 {
            continue;
        }
        let want = f16::from_f32(x.to_f32() / s.to_f32()).to_f32().round_ties_even() as i64;
        assert_eq!(Convention::Onnx.quantize_value(x, s, 0, -128, 127), want.clamp(-128, 127), "x = {x}");
        differ += usize::from(Convention::Exact.quantize_value(x, s, 0, -128, 127) != want);
    }
    assert!(differ > 0);
    // bf16 the same way, and f64 (its own division) equals Exact.
    let s = bf16::from_f32(0.3);
    for bits in (0..=u16::MAX).step_by(7) {
        let x = bf16::from_bits(bits);
        if x.is_finite() && x.to_f32().abs() < 30.0 {
            let want = bf16::from_f32(x.to_f32() / s.to_f32()).to_f32().round_ties_even() as i64;
            assert_eq!(Convention::Onnx.quantize_value(x, s, 0, -128, 127), want.clamp(-128, 127));
        }
    }
    for x in [0.1f64, 2.5, -7.25, 1e-300] {
        assert_eq!(
            Convention::Onnx.quantize_value(x, 0.3, 3, -128, 127),
            Convention::Exact.quantize_value(x, 0.3, 3, -128, 127)
        );
    }
}

#[test]
fn onnx_parameters_are_dynamic_quantize_linear_in_f32() -> Result<(), QuantError> {
    let u8s = QuantSpec::asymmetric(8)?;
    // An all-zero tensor: scale 1/255 (ONNX), not this crate's 1.
    let p = Convention::Onnx.params(&[0.0f32; 4], u8s)?;
    assert_eq!((p.scale(), p.zero_point()), (1.0 / 255.0, 0));
    assert_eq!(Convention::Exact.params(&[0.0f32; 4], u8s)?, QuantParams::identity());
    // Signed codes: the same scale, ONNX Runtime's int8 zero point round(-128 - min / scale).
    let x = [-1.0f32, 0.25, 3.0];
    let u = Convention::Onnx.params(&x, u8s)?;
    let s = Convention::Onnx.params(&x, QuantSpec::asymmetric_signed(8)?)?;
    assert_eq!((u.scale(), u.zero_point()), (4.0f32 / 255.0, 64));
    assert_eq!((s.scale(), s.zero_point()), (4.0f32 / 255.0, -64));
    // The scale is f32(f32(max - min) / 255): here f32(1e-7 + 1) rounds before dividing.
    let p = Convention::Onnx.params(&[-1e-7f32, 1.0], u8s)?;
    assert_eq!(p.scale(), (1.0f32 + 1e-7) / 255.0);
    // Symmetric: f32(max|x| / qmax).
    let p = Convention::Onnx.params(&[-3.0f32, 1.0], QuantSpec::symmetric(8)?)?;
    assert_eq!((p.scale(), p.zero_point()), (3.0 / 127.0, 0));
    // A scale that underflows is an error, not a division by zero.
    let tiny = f32::from_bits(1);
    assert!(matches!(Convention::Onnx.params(&[tiny], QuantSpec::symmetric(8)?), Err(QuantError::InvalidScale { .. })));
    Ok(())
}

#[test]
fn every_convention_has_a_name_it_is_found_by() {
    for c in Convention::ALL {
        assert_eq!(Convention::from_name(c.name()), Some(c));
    }
    assert_eq!(Convention::from_name("onnx-f32"), None);
    assert_eq!(Convention::default(), Convention::Exact);
}

#[test]
fn pytorch_parameters_differ_where_its_formulas_say() -> Result<(), QuantError> {
    let spec = QuantSpec::symmetric(8)?;
    let shape = MatrixShape::new(1, 3);
    // Symmetric: max|x| / 127.5, not / 127.
    let p = Convention::PyTorch.matrix_params(&[0.0f32, 1.0, -2.55], shape, spec, Granularity::PerTensor)?;
    assert_eq!(p[0].scale(), 2.55f32 / 127.5);
    // All zero: eps = 2^-23, not 1.
    let p = Convention::PyTorch.matrix_params(&[0.0f32; 3], shape, spec, Granularity::PerTensor)?;
    assert_eq!(p[0].scale(), f32::EPSILON);
    let asym = QuantSpec::asymmetric(8)?;
    // Asymmetric: scale (1 - (-1)) / 255 in f32, zero point 0 - round(-1 / scale): the f32
    // quotient is -127.49999 (NumPy float32 agrees), so 127, where the exact -127.5 would give
    // 128 (ties to even).
    let p = Convention::PyTorch.matrix_params(&[-1.0f32, 0.5, 1.0], shape, asym, Granularity::PerTensor)?;
    assert_eq!((p[0].scale(), p[0].zero_point()), (2.0 / 255.0, 127));
    // The code multiplies by the f32 reciprocal: 3 * (1 / 3 in f32) = 1.0000001 -> 1.
    assert_eq!(Convention::PyTorch.quantize_value(3.0f32, 3.0, 0, -128, 127), 1);
    // NaN is an error naming the element, as everywhere.
    let err =
        Convention::PyTorch.quantize_matrix::<f32, i8>(&[0.0, f32::NAN, 1.0], shape, spec, Granularity::PerTensor);
    assert!(matches!(err, Err(QuantError::NonFiniteInMatrix { row: 0, col: 1, .. })));
    Ok(())
}

#[test]
fn ggml_convention_gives_the_q8_0_codes_of_the_gguf_fixtures() -> Result<(), QuantError> {
    // The llama.cpp fixture rows as one matrix of 32-wide groups: Convention::Ggml, 8 bits,
    // groups of 32 along the rows, must give exactly the qs bytes of gguf's Q8_0 blocks.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml");
    let x: Vec<f32> = std::fs::read(format!("{dir}/input.f32"))
        .expect("fixture")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let q8 = std::fs::read(format!("{dir}/q8_0.bin")).expect("fixture");
    let shape = MatrixShape::new(1, x.len());
    let g = Granularity::PerGroup { axis: Axis::Cols, size: 32 };
    let m = Convention::Ggml.quantize_matrix::<f32, i8>(&x, shape, QuantSpec::symmetric(8)?, g)?;
    let want: Vec<i8> = q8.chunks_exact(34).flat_map(|b| b[2..].iter().map(|&v| v as i8)).collect();
    assert_eq!(m.codes(), want.as_slice());
    // Ties go away from zero: 2.5 with scale 1 is 3 (ONNX: 2).
    assert_eq!(Convention::Ggml.quantize_value(2.5f32, 1.0, 0, -128, 127), 3);
    assert_eq!(Convention::Exact.quantize_value(2.5f32, 1.0, 0, -128, 127), 2);
    assert_eq!(Convention::Onnx.quantize_value(2.5f32, 1.0, 0, -128, 127), 2);
    // Asymmetric has no ggml form with an integer zero point.
    let err = Convention::Ggml.quantize_matrix::<f32, u8>(&x, shape, QuantSpec::asymmetric(8)?, g).map(|_| ());
    assert!(matches!(err, Err(QuantError::UnsupportedByConvention { convention: "ggml", .. })));
    Ok(())
}
