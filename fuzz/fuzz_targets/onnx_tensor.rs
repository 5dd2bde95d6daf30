//! ONNX-shaped input: an N-D tensor of arbitrary rank, dimensions, axis (negative too) and block
//! size, arbitrary f32 bit patterns for the data and the scales, arbitrary zero points, every
//! convention, into integer codes or any float8/float4 format; and MXFP4 on arbitrary data and
//! bytes.
//!
//! Oracle:
//! * An `Err` is the documented one for the input: `InvalidTensorAxis` exactly when the axis is
//!   outside `-rank..rank`, `InvalidGroupSize` for a block of 0, `InvalidScale`,
//!   `InvalidZeroPoint`, `NonFinite` at the first NaN (or infinity, for integer codes),
//!   `UnsupportedByConvention`; the output is then untouched.
//! * An `Ok` has every element's code computed with the parameter set that an independent walk
//!   over the dimensions assigns it (ONNX's `reshape_input`: the scale tensor's index of
//!   `(outer, channel / block, inner)`), and dequantizes to the format's value times that scale.
//! * MXFP4: whole blocks only; every value dequantizes within `2d` of its input up to the
//!   largest level `12d` (half the widest gap, from `8d` to `12d`), within `4d` beyond it, where
//!   `d` is the block's step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant_core::minifloat::MiniFloat;
use quant_core::tensor::{
    dequantize_minifloat_into, dequantize_tensor_into, minifloat_bytes, quantize_minifloat_into, quantize_tensor_into,
};
use quant_core::{mxfp4, Convention, QuantError, QuantParams, QuantSpec, Scheme, TensorLayout};

/// The parameter set of every element, by walking the dimensions (no `TensorLayout`).
fn expected_sets(dims: &[usize], axis: usize, block: Option<usize>, per_tensor: bool) -> Vec<usize> {
    let outer: usize = dims[..axis].iter().product();
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut sets = Vec::new();
    for o in 0..outer {
        for c in 0..channels {
            for i in 0..inner {
                sets.push(match (per_tensor, block) {
                    (true, _) => 0,
                    (false, None) => c,
                    (false, Some(b)) => (o * channels.div_ceil(b) + c / b) * inner + i,
                });
            }
        }
    }
    sets
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Quantizes into `Q` (filled with a marker first) and dequantizes back: the result with the
/// dequantized values, and the codes if anything was written.
fn integer_case<Q: quant_core::Storage>(
    x: &[f32],
    layout: &TensorLayout,
    spec: QuantSpec,
    params: &[QuantParams<f32>],
    convention: Convention,
) -> (Result<Vec<f32>, QuantError>, Option<Vec<i64>>) {
    let marker = Q::pack(&[spec.code_min() + 1]);
    let mut out = vec![marker; x.len()];
    let r = quantize_tensor_into(x, layout, spec, params, convention, &mut out);
    let codes: Vec<i64> = quant_core::read_codes(&out, x.len()).collect();
    let untouched = out.iter().all(|&u| u == marker);
    match r {
        Err(e) => (Err(e), (!untouched).then_some(codes)),
        Ok(()) => {
            let mut back = vec![0f32; x.len()];
            dequantize_tensor_into(&out, layout, params, &mut back).expect("valid");
            (Ok(back), Some(codes))
        }
    }
}

fn mxfp4_case(body: &[u8]) {
    // Arbitrary bytes decode when whole blocks, else NotABlockMultiple.
    match mxfp4::dequantize(body) {
        Ok(v) => assert_eq!((body.len() % 17, v.len()), (0, body.len() / 17 * 32)),
        Err(e) => assert!(matches!(e, QuantError::NotABlockMultiple { .. }) && body.len() % 17 != 0, "{e}"),
    }
    let x = f32s(body);
    match mxfp4::quantize(&x) {
        Err(QuantError::NotABlockMultiple { .. }) => assert_ne!(x.len() % 32, 0),
        Err(QuantError::NonFinite { index, .. }) => assert_eq!(Some(index), x.iter().position(|v| !v.is_finite())),
        Err(e) => panic!("unexpected {e}"),
        Ok(bytes) => {
            let back = mxfp4::dequantize(&bytes).expect("whole blocks");
            for (b, (xs, vs)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
                let d = 2f64.powi(i32::from(bytes[b * 17]) - 128);
                for (&v, &r) in xs.iter().zip(vs) {
                    let (v, r) = (f64::from(v), f64::from(r));
                    // Half the widest gap (8d to 12d) inside the levels; up to 16d beyond 12d.
                    let bound = if v.abs() <= 12.0 * d { 2.0 * d } else { 4.0 * d };
                    assert!((v - r).abs() <= bound, "block {b}: {v} became {r} (d = {d})");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<8>() else { return };
    let [rank, d01, d23, axis_byte, how, target, zp_byte, scale_byte] = *head;
    if how == 0xff {
        return mxfp4_case(body);
    }
    let rank = usize::from(rank % 4) + 1;
    let dims: Vec<usize> =
        [d01 & 15, d01 >> 4, d23 & 15, d23 >> 4].iter().take(rank).map(|&d| usize::from(d % 5)).collect();
    let axis = isize::from(i8::from_le_bytes([axis_byte]) % 6);
    let block = usize::from(how >> 2 & 7);
    let convention = Convention::ALL[usize::from(how >> 5 & 3)];
    let layout = match how & 3 {
        0 => TensorLayout::per_tensor(&dims),
        1 => TensorLayout::per_axis(&dims, axis),
        _ => TensorLayout::blocked(&dims, axis, block),
    };
    let axis_ok = (-(rank as isize)..rank as isize).contains(&axis);
    let layout = match layout {
        Ok(l) => {
            assert!(how & 3 == 0 || axis_ok, "axis {axis} accepted at rank {rank}");
            assert!(how & 3 < 2 || block > 0, "block 0 accepted");
            l
        }
        Err(QuantError::InvalidTensorAxis { axis: a, rank: r }) => {
            assert_eq!((a, r), (axis, rank));
            assert!(!axis_ok);
            return;
        }
        Err(QuantError::InvalidGroupSize) => {
            assert_eq!(block, 0);
            return;
        }
        Err(e) => panic!("unexpected {e}"),
    };
    let index = if axis < 0 { (rank as isize + axis) as usize } else { axis as usize };
    let sets =
        expected_sets(&dims, if how & 3 == 0 { 0 } else { index }, (how & 3 >= 2).then_some(block), how & 3 == 0);
    assert_eq!(layout.len(), sets.len());
    if let Some(m) = sets.iter().max() {
        assert_eq!(m + 1, layout.param_count());
    }
    // Scales: ordinary values, or raw bit patterns (zero, negative, NaN, infinite).
    let count = layout.param_count();
    let (scale_bytes, body) = body.split_at(body.len().min(4 * count));
    let raw = f32s(scale_bytes);
    let scales: Vec<f32> = (0..count)
        .map(|i| if scale_byte & 1 == 0 { 0.01 + i as f32 * 0.37 } else { raw.get(i).copied().unwrap_or(1.0) })
        .collect();
    let x = f32s(body);
    if x.len() != sets.len() {
        return;
    }
    let scale_bad = scales.iter().position(|s| !(s.is_finite() && *s > 0.0));
    if let Some(format) = MiniFloat::ALL.get(usize::from(target % 8)).copied() {
        let saturate = target & 8 != 0;
        let zps = vec![if zp_byte & 0x80 != 0 { zp_byte & 0x7f } else { 0 }; count];
        let zp_bad = zps.iter().any(|&z| format.decode(z) != 0.0);
        let mut out = vec![0xa5u8; minifloat_bytes(format, x.len())];
        let r = quantize_minifloat_into(&x, &layout, format, &scales, Some(&zps), saturate, convention, &mut out);
        match r {
            Err(e) => {
                assert!(out.iter().all(|&b| b == 0xa5), "{e}: output written");
                match e {
                    QuantError::UnsupportedByConvention { .. } => {
                        assert!(matches!(convention, Convention::PyTorch | Convention::Ggml))
                    }
                    QuantError::InvalidScale { .. } => assert!(scale_bad.is_some()),
                    QuantError::InvalidZeroPoint { .. } => assert!(zp_bad),
                    QuantError::NonFinite { index, .. } => {
                        assert!(!format.has_nan());
                        assert_eq!(Some(index), x.iter().position(|v| v.is_nan()));
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            Ok(()) => {
                assert!(scale_bad.is_none() && !zp_bad);
                let mut back = vec![0f32; x.len()];
                dequantize_minifloat_into(&out, &layout, format, &scales, Some(&zps), &mut back).expect("valid");
                for (i, (&v, &r)) in x.iter().zip(&back).enumerate() {
                    let s = f64::from(scales[sets[i]]);
                    let q = f64::from(v) / s;
                    let q = if convention == Convention::Onnx { f64::from(q as f32) } else { q };
                    // ONNX adds float4's (zero) zero point: -0 becomes +0.
                    let q = if format == MiniFloat::E2M1 { q + 0.0 } else { q };
                    let code = format.encode(q, saturate);
                    let want = (format.decode(code) * s) as f32;
                    assert!(
                        r.to_bits() == want.to_bits() || (r.is_nan() && want.is_nan()),
                        "element {i}: {r} vs {want}"
                    );
                }
            }
        }
        return;
    }
    // Integer codes, signed or unsigned 8-bit, asymmetric with a zero point from the input.
    let signed = target & 8 != 0;
    let spec = if signed {
        QuantSpec::for_storage::<i8>(Scheme::Asymmetric)
    } else {
        QuantSpec::for_storage::<u8>(Scheme::Asymmetric)
    }
    .expect("spec");
    let zp = i64::from(zp_byte) - if signed { 128 } else { 0 } + i64::from(scale_byte >> 7) * 300;
    let params: Result<Vec<QuantParams<f32>>, QuantError> =
        scales.iter().map(|&s| QuantParams::new(spec, s, zp)).collect();
    let params = match params {
        Ok(p) => {
            assert!(count == 0 || (scale_bad.is_none() && (spec.code_min()..=spec.code_max()).contains(&zp)));
            p
        }
        Err(QuantError::InvalidScale { .. }) => return assert!(scale_bad.is_some()),
        Err(QuantError::InvalidZeroPoint { .. }) => return assert!(!(spec.code_min()..=spec.code_max()).contains(&zp)),
        Err(e) => panic!("unexpected {e}"),
    };
    let (r, written) = if signed {
        integer_case::<i8>(&x, &layout, spec, &params, convention)
    } else {
        integer_case::<u8>(&x, &layout, spec, &params, convention)
    };
    match r {
        Err(QuantError::NonFinite { index, .. }) => {
            assert_eq!(Some(index), x.iter().position(|v| !v.is_finite()));
            assert!(written.is_none(), "output written");
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(back) => {
            let got = written.expect("codes");
            for (i, (&v, &c)) in x.iter().zip(&got).enumerate() {
                let p = &params[sets[i]];
                assert_eq!(
                    c,
                    convention.quantize_value(v, p.scale(), p.zero_point(), spec.code_min(), spec.code_max())
                );
                assert_eq!(back[i], quant_core::dequantize_code(c, p.scale(), p.zero_point()));
            }
        }
    }
});
