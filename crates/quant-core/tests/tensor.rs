//! Property tests of the N-D (ONNX) layer and the float8/float4 formats:
//! * a 2-D tensor per axis or blocked gives exactly the matrix API's per-channel and per-group
//!   codes (the N-D layout against the tested matrix layout);
//! * every float8/float4 conversion picks the nearest value of the format, found by brute force
//!   over all its codes (ties to the even code), saturates or overflows as its spec says, and
//!   maps NaN to the format's NaN;
//! * bad input is refused with the error that names it, before anything is written.

use proptest::prelude::*;
use quant_core::minifloat::MiniFloat;
use quant_core::tensor::{
    dequantize_minifloat_into, dequantize_tensor_into, quantize_minifloat_into, quantize_tensor_into,
};
use quant_core::{
    quantize_matrix, Axis, Convention, Granularity, MatrixShape, QuantError, QuantSpec, Scheme, TensorLayout,
};
use quant_testkit::strategy::{element, magnitude};
use quant_traits::QuantFloat;

fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..=9, 1usize..=9).prop_flat_map(|(r, c)| {
        (
            Just(r),
            Just(c),
            magnitude::<f32>().prop_flat_map(move |m| proptest::collection::vec(element::<f32>(m), r * c)),
        )
    })
}

/// The format's value nearest `x` by brute force (ties: the even code), as ONNX's saturating
/// cast computes it for finite `x`.
fn nearest(format: MiniFloat, x: f64) -> u8 {
    let codes = 0..=u8::try_from((1u16 << format.bits()) - 1).expect("code");
    let clipped = x.clamp(-format.max(), format.max());
    let mut best: Option<(f64, u8)> = None;
    for c in codes {
        let v = format.decode(c);
        if !v.is_finite()
            || (v == 0.0 && v.is_sign_negative() != x.is_sign_negative() && format.decode(c ^ 0x80) == 0.0)
        {
            continue; // NaN/inf codes, and the zero of the wrong sign where both exist
        }
        let d = (v - clipped).abs();
        best = match best {
            Some((bd, bc)) if bd < d || (bd == d && (bc & 1) == 0) => Some((bd, bc)),
            _ => Some((d, c)),
        };
    }
    best.expect("a finite code").1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Per axis and blocked over a 2-D tensor equal the matrix API's per channel and per
    /// group, on both axes, with signed and unsigned codes.
    #[test]
    fn two_dimensional_layouts_equal_the_matrix_api((rows, cols, x) in matrix(), b in 2u32..=32, size in 1usize..=5) {
        let shape = MatrixShape::new(rows, cols);
        let dims = [rows, cols];
        for spec in [QuantSpec::symmetric(b).expect("w"), QuantSpec::asymmetric_signed(b).expect("w")] {
            let layouts = [
                (TensorLayout::per_axis(&dims, 0), Granularity::PerChannel(Axis::Rows)),
                (TensorLayout::per_axis(&dims, -1), Granularity::PerChannel(Axis::Cols)),
                (TensorLayout::blocked(&dims, 1, size), Granularity::PerGroup { axis: Axis::Cols, size }),
                (TensorLayout::blocked(&dims, 0, size), Granularity::PerGroup { axis: Axis::Rows, size }),
                (TensorLayout::per_tensor(&dims), Granularity::PerTensor),
            ];
            for (layout, g) in layouts {
                let layout = layout.expect("valid");
                let want = quantize_matrix::<f32, i32>(&x, shape, spec, g).expect("finite");
                prop_assert_eq!(layout.param_count(), want.params().len());
                let mut codes = vec![0i32; x.len()];
                quantize_tensor_into(&x, &layout, spec, want.params(), Convention::Exact, &mut codes).expect("valid");
                prop_assert_eq!(&codes[..], want.codes(), "{:?}", g);
                let mut back = vec![0f32; x.len()];
                dequantize_tensor_into(&codes, &layout, want.params(), &mut back).expect("valid");
                prop_assert_eq!(back, want.dequantize(), "{:?}", g);
            }
        }
    }

    /// Every conversion is the nearest value (saturating), whatever the input's magnitude.
    #[test]
    fn minifloat_conversion_is_the_nearest_value(bits_ in any::<u32>()) {
        let x = f32::from_bits(bits_);
        for f in MiniFloat::ALL {
            let sat = f.encode(f64::from(x), true);
            let raw = f.encode(f64::from(x), false);
            if x.is_nan() {
                prop_assert!(f.decode(sat).is_nan() || !f.has_nan());
                continue;
            }
            let x = f64::from(x);
            prop_assert_eq!(sat, nearest(f, x), "{} x = {:e}", f.name(), x);
            // Without saturation only overflow differs: infinity where the format has one, else
            // NaN; E2M1 has neither and always saturates.
            if raw != sat {
                let v = f.decode(raw);
                prop_assert!(x.abs() > f.max(), "{} x = {:e}", f.name(), x);
                match f {
                    MiniFloat::E5M2 => prop_assert_eq!(v, f64::INFINITY.copysign(x)),
                    MiniFloat::E2M1 => prop_assert!(false, "E2M1 always saturates"),
                    _ => prop_assert!(v.is_nan()),
                }
            } else {
                prop_assert!(f.decode(raw).is_finite());
            }
        }
    }

    /// Float8 and float4 quantize-dequantize: within half a step of the format times the scale
    /// (relative to the value) for values in range, exactly the scale times a format value.
    #[test]
    fn minifloat_round_trip(x in proptest::collection::vec(-500.0f32..500.0, 1..40), scale in 0.01f32..4.0) {
        let layout = TensorLayout::per_tensor(&[x.len()]).expect("valid");
        for f in MiniFloat::ALL {
            let mut codes = vec![0u8; quant_core::tensor::minifloat_bytes(f, x.len())];
            quantize_minifloat_into(&x, &layout, f, &[scale], None, true, Convention::Exact, &mut codes).expect("valid");
            let mut back = vec![0f32; x.len()];
            dequantize_minifloat_into(&codes, &layout, f, &[scale], None, &mut back).expect("valid");
            for (&v, &r) in x.iter().zip(&back) {
                let q = f64::from(v) / f64::from(scale);
                let code = nearest(f, q);
                prop_assert_eq!(r, f32::from_f64_nearest(f.decode(code) * f64::from(scale)), "{} x = {}", f.name(), v);
            }
        }
    }
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let layout = TensorLayout::per_axis(&[2, 3], 0).expect("valid");
    let spec = QuantSpec::for_storage::<i8>(Scheme::Asymmetric).expect("spec");
    let p = quant_core::QuantParams::new(spec, 0.5f32, -3).expect("valid");
    let mut out = [7i8; 6];
    // A NaN element: named, nothing written.
    let x = [0.0f32, 1.0, 2.0, 3.0, f32::NAN, 5.0];
    assert!(matches!(
        quantize_tensor_into(&x, &layout, spec, &[p, p], Convention::Onnx, &mut out),
        Err(QuantError::NonFinite { index: 4, .. })
    ));
    assert_eq!(out, [7; 6]);
    // One parameter set too few.
    assert_eq!(
        quantize_tensor_into(&[0.0f32; 6], &layout, spec, &[p], Convention::Onnx, &mut out),
        Err(QuantError::LengthMismatch { what: "parameter sets", expected: 2, found: 1 })
    );
    // float4 has no NaN; a float8 zero point must be zero.
    let l6 = TensorLayout::per_tensor(&[6]).expect("valid");
    let mut bytes = [9u8; 3];
    assert!(matches!(
        quantize_minifloat_into(&x, &l6, MiniFloat::E2M1, &[1.0f32], None, true, Convention::Onnx, &mut bytes),
        Err(QuantError::NonFinite { index: 4, .. })
    ));
    assert_eq!(bytes, [9; 3]);
    let mut bytes = [9u8; 6];
    assert_eq!(
        quantize_minifloat_into(
            &[1.0f32; 6],
            &l6,
            MiniFloat::E4M3Fn,
            &[1.0f32],
            Some(&[0x38]),
            true,
            Convention::Onnx,
            &mut bytes
        ),
        Err(QuantError::InvalidZeroPoint { zero_point: 0x38, min: 0, max: 0 })
    );
    assert_eq!(
        quantize_minifloat_into(
            &[1.0f32; 6],
            &l6,
            MiniFloat::E4M3Fn,
            &[0.0f32],
            None,
            true,
            Convention::Onnx,
            &mut bytes
        ),
        Err(QuantError::InvalidScale { value: 0.0 })
    );
    assert!(matches!(
        quantize_minifloat_into(
            &[1.0f32; 6],
            &l6,
            MiniFloat::E4M3Fn,
            &[1.0f32],
            None,
            true,
            Convention::Ggml,
            &mut bytes
        ),
        Err(QuantError::UnsupportedByConvention { .. })
    ));
    assert_eq!(bytes, [9; 6]);
    // float8 NaN and infinity follow the format instead of failing.
    quantize_minifloat_into(
        &[f32::NAN, f32::INFINITY, -1e9, 1.0, 0.0, -0.0],
        &l6,
        MiniFloat::E4M3Fn,
        &[1.0f32],
        None,
        false,
        Convention::Onnx,
        &mut bytes,
    )
    .expect("float8 takes NaN and infinity");
    assert_eq!(bytes, [0x7f, 0x7f, 0xff, 0x38, 0x00, 0x80]);
}
