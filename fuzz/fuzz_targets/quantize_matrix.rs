//! `quantize_matrix` (and so `quantize_matrix_into`) with an arbitrary width, scheme,
//! granularity, shape and data (NaN, infinities, subnormals, ±MAX: the bytes are f32 bit
//! patterns). Oracle: an `Ok` has codes in range and every element within `scale / 2` of its
//! dequantized value; an `Err` is the documented one for the input (a bad width, a zero group,
//! a length that is not the shape, the first non-finite element by row and column).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant_core::{quantize_matrix, Axis, Granularity, MatrixShape, QuantError, QuantParams, QuantSpec, Storage};

type Outcome = Result<(Vec<QuantParams<f32>>, Vec<f32>, Vec<i64>), QuantError>;

/// The parameters, the reconstruction and every code, row-major.
fn run<Q: Storage>(x: &[f32], shape: MatrixShape, spec: QuantSpec, g: Granularity) -> Outcome {
    let m = quantize_matrix::<f32, Q>(x, shape, spec, g)?;
    let codes = (0..shape.rows).flat_map(|r| (0..shape.cols).map(move |c| (r, c))).map(|(r, c)| m.code(r, c)).collect();
    Ok((m.params().to_vec(), m.dequantize(), codes))
}

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<4>() else { return };
    let [bits, how, rows, cols] = *head;
    let bits = u32::from(bits % 40);
    let (rows, cols) = (usize::from(rows % 17), usize::from(cols % 17));
    let asymmetric = how & 1 == 1;
    let granularity = match (how >> 1) % 4 {
        0 => Granularity::PerTensor,
        1 => Granularity::PerChannel(if how & 0x40 == 0 { Axis::Rows } else { Axis::Cols }),
        _ => Granularity::PerGroup {
            axis: if how & 0x40 == 0 { Axis::Rows } else { Axis::Cols },
            size: usize::from(how >> 3 & 7),
        },
    };
    let x: Vec<f32> = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let shape = MatrixShape::new(rows, cols);
    let spec = if asymmetric { QuantSpec::asymmetric(bits) } else { QuantSpec::symmetric(bits) };
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            assert!(!(2..=32).contains(&bits), "width {bits} refused: {e}");
            assert!(matches!(e, QuantError::InvalidBits { .. }), "{e}");
            return;
        }
    };
    let result =
        if asymmetric { run::<u32>(&x, shape, spec, granularity) } else { run::<i32>(&x, shape, spec, granularity) };
    let first_bad = x.iter().position(|v| !v.is_finite());
    match result {
        Ok((params, back, codes)) => {
            assert_eq!(x.len(), rows * cols, "a length that is not the shape was accepted");
            assert!(first_bad.is_none(), "a non-finite element was accepted");
            assert!(!matches!(granularity, Granularity::PerGroup { size: 0, .. }));
            assert_eq!((codes.len(), back.len()), (x.len(), x.len()));
            for (i, &c) in codes.iter().enumerate() {
                assert!((spec.code_min()..=spec.code_max()).contains(&c), "code {c} at {i}");
            }
            // Every element within half a step of its reconstruction. The largest scale bounds
            // every element's step (the per-element bound is the property tests'); the slack
            // covers the f32 rounding of the reconstruction.
            let step = params.iter().map(|p| f64::from(p.scale())).fold(0.0, f64::max);
            for (i, (&v, &b)) in x.iter().zip(&back).enumerate() {
                let err = (f64::from(v) - f64::from(b)).abs();
                let slack = (f64::from(v).abs() + f64::from(b).abs()) * 2f64.powi(-22) + 1e-45;
                assert!(b.is_finite() && err <= step / 2.0 + slack, "element {i}: {v:e} -> {b:e}, scale <= {step:e}");
            }
        }
        Err(QuantError::InvalidGroupSize) => assert!(matches!(granularity, Granularity::PerGroup { size: 0, .. })),
        Err(QuantError::LengthMismatch { .. }) => assert_ne!(x.len(), rows * cols),
        Err(QuantError::NonFiniteInMatrix { row, col, value }) => {
            let i = first_bad.expect("a non-finite element");
            assert_eq!((row, col), (i / cols, i % cols));
            assert!(value.is_nan() && x[i].is_nan() || value == f64::from(x[i]));
        }
        Err(QuantError::ScaleOverflow { .. } | QuantError::InvalidRange { .. }) => {
            // A finite range too wide for f32's scale (max - min overflows): documented.
            assert!(first_bad.is_none());
        }
        Err(e) => panic!("undocumented error for this input: {e:?}"),
    }
});
