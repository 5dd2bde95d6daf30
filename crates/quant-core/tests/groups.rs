//! Per-group (block) quantization: on random shapes, group sizes (dividing or not, larger than
//! a line, 1), both axes, symmetric and asymmetric, widths 2..=32 and all four float types,
//! each group gets exactly the parameters and codes of per-tensor quantization of its values
//! alone; the parameter sets follow ONNX's blocked scale layout; per-channel is the
//! whole-line group; bad group sizes are errors.

use quant_core::{
    quantize, quantize_matrix, quantize_matrix_into, Axis, Granularity, MatrixShape, QuantError, QuantFloat, QuantSpec,
    Scheme, Storage,
};
use quant_testkit::Rng;
use quant_traits::half::{bf16, f16};
use quant_traits::{I2x4, I4x2, U2x4, U4x2};
use rstest::rstest;

type Res = Result<(), QuantError>;

/// The values of group `g` (in the order of the module docs' table), by index.
fn group_indices(shape: MatrixShape, axis: Axis, size: usize) -> Vec<Vec<usize>> {
    let (rows, cols) = (shape.rows, shape.cols);
    let mut groups = Vec::new();
    match axis {
        Axis::Cols => {
            for r in 0..rows {
                for start in (0..cols).step_by(size) {
                    groups.push((start..(start + size).min(cols)).map(|c| r * cols + c).collect());
                }
            }
        }
        Axis::Rows => {
            for start in (0..rows).step_by(size) {
                for c in 0..cols {
                    groups.push((start..(start + size).min(rows)).map(|r| r * cols + c).collect());
                }
            }
        }
    }
    groups
}

fn groups_match_per_tensor<F: QuantFloat, Q: Storage>(rng: &mut Rng, scheme: Scheme, max_bits: u32) -> Res {
    let shape = MatrixShape::new(rng.dim(9), rng.dim(40));
    let axis = if rng.index(2) == 0 { Axis::Rows } else { Axis::Cols };
    let largest = if rng.index(4) == 0 { 50 } else { 12 };
    let size = 1 + rng.index(largest);
    let bits = rng.int(2, i64::from(max_bits)) as u32;
    let spec = QuantSpec::new(scheme, bits)?;
    let x: Vec<F> = rng.tensor(shape.rows * shape.cols);
    let g = Granularity::PerGroup { axis, size };
    let m = quantize_matrix::<F, Q>(&x, shape, spec, g)?;
    let groups = group_indices(shape, axis, size);
    assert_eq!(m.params().len(), groups.len(), "{shape:?} {axis:?} {size}");
    assert_eq!(g.channels(shape), groups.len());
    let back = m.dequantize();
    for (p, idx) in m.params().iter().zip(&groups) {
        let values: Vec<F> = idx.iter().map(|&i| x[i]).collect();
        let alone = quantize::<F, Q>(&values, spec)?;
        assert_eq!(
            (p.scale().to_f64_exact(), p.zero_point()),
            (alone.params().scale().to_f64_exact(), alone.params().zero_point()),
            "{} {} {bits}-bit {scheme:?}, group {idx:?} of {shape:?} {axis:?} size {size}",
            F::NAME,
            Q::NAME
        );
        let want_back = alone.dequantize();
        for (k, &i) in idx.iter().enumerate() {
            let (r, c) = shape.position(i);
            assert_eq!(m.code(r, c), alone.code(k), "code of ({r}, {c})");
            assert_eq!(back[i].to_f64_exact(), want_back[k].to_f64_exact(), "dequantized ({r}, {c})");
        }
    }
    Ok(())
}

#[rstest]
#[case::f32(0.0f32, 1)]
#[case::f64(0.0f64, 2)]
#[case::f16(f16::ZERO, 3)]
#[case::bf16(bf16::ZERO, 4)]
fn each_group_equals_per_tensor_of_its_values<F: QuantFloat>(#[case] _ty: F, #[case] seed: u64) -> Res {
    let mut rng = Rng::new(seed);
    for _ in 0..300 {
        groups_match_per_tensor::<F, i32>(&mut rng, Scheme::Symmetric, 32)?;
        groups_match_per_tensor::<F, u32>(&mut rng, Scheme::Asymmetric, 32)?;
        groups_match_per_tensor::<F, i8>(&mut rng, Scheme::Symmetric, 8)?;
        groups_match_per_tensor::<F, u8>(&mut rng, Scheme::Asymmetric, 8)?;
        groups_match_per_tensor::<F, I4x2>(&mut rng, Scheme::Symmetric, 4)?;
        groups_match_per_tensor::<F, U4x2>(&mut rng, Scheme::Asymmetric, 4)?;
        groups_match_per_tensor::<F, I2x4>(&mut rng, Scheme::Symmetric, 2)?;
        groups_match_per_tensor::<F, U2x4>(&mut rng, Scheme::Asymmetric, 2)?;
    }
    Ok(())
}

#[test]
fn parameter_sets_follow_the_onnx_blocked_layout() -> Res {
    // 2 x 5, groups of 2 along the columns: [rows, ceil(5/2) = 3] sets; the last group of each
    // row has one value. Each group's max |x| is set so its scale identifies it.
    let x = [1.0f32, -2.0, 3.0, 4.0, 5.0, 10.0, 20.0, -30.0, 40.0, 50.0];
    let shape = MatrixShape::new(2, 5);
    let spec = QuantSpec::symmetric(8)?;
    let m = quantize_matrix::<f32, i8>(&x, shape, spec, Granularity::PerGroup { axis: Axis::Cols, size: 2 })?;
    let amax: Vec<f32> = m.params().iter().map(|p| p.scale() * 127.0).collect();
    assert_eq!(amax, [2.0, 4.0, 5.0, 20.0, 40.0, 50.0]);
    // Groups of 2 along the rows of a 3 x 2 matrix: [ceil(3/2) = 2, cols] sets.
    let x = [1.0f32, 2.0, -3.0, 4.0, 5.0, -6.0];
    let m = quantize_matrix::<f32, i8>(
        &x,
        MatrixShape::new(3, 2),
        spec,
        Granularity::PerGroup { axis: Axis::Rows, size: 2 },
    )?;
    let amax: Vec<f32> = m.params().iter().map(|p| p.scale() * 127.0).collect();
    assert_eq!(amax, [3.0, 4.0, 5.0, 6.0]);
    Ok(())
}

#[test]
fn per_channel_is_the_whole_line_group() -> Res {
    let mut rng = Rng::new(9);
    for _ in 0..200 {
        let shape = MatrixShape::new(rng.dim(8), 1 + rng.index(20));
        let x: Vec<f32> = rng.tensor(shape.rows * shape.cols);
        let spec = QuantSpec::asymmetric(rng.bits())?;
        let rows = quantize_matrix::<f32, u32>(&x, shape, spec, Granularity::PerChannel(Axis::Rows))?;
        let g = Granularity::PerGroup { axis: Axis::Cols, size: shape.cols + rng.index(3) };
        let groups = quantize_matrix::<f32, u32>(&x, shape, spec, g)?;
        assert_eq!((rows.params(), rows.codes()), (groups.params(), groups.codes()));
        if shape.rows > 0 {
            let cols = quantize_matrix::<f32, u32>(&x, shape, spec, Granularity::PerChannel(Axis::Cols))?;
            let g = Granularity::PerGroup { axis: Axis::Rows, size: shape.rows };
            let groups = quantize_matrix::<f32, u32>(&x, shape, spec, g)?;
            assert_eq!((cols.params(), cols.codes()), (groups.params(), groups.codes()));
        }
    }
    Ok(())
}

#[test]
fn explicit_parameters_and_the_simd_path_agree_with_the_reference() -> Res {
    // quantize_matrix_into with i8 and f32 takes the SIMD slice path group by group; the
    // generic path (i32 storage) is the reference.
    let mut rng = Rng::new(17);
    for _ in 0..200 {
        let shape = MatrixShape::new(rng.dim(6), rng.dim(300));
        let x: Vec<f32> = rng.tensor(shape.rows * shape.cols);
        let g = Granularity::PerGroup { axis: Axis::Cols, size: 1 + rng.index(70) };
        let spec = QuantSpec::symmetric(8)?;
        let wide = quantize_matrix::<f32, i32>(&x, shape, spec, g)?;
        let mut fast = vec![0i8; x.len()];
        quantize_matrix_into(&x, shape, spec, g, wide.params(), &mut fast)?;
        let want: Vec<i8> = wide.codes().iter().map(|&c| c as i8).collect();
        assert_eq!(fast, want);
    }
    // A NaN inside a group is named by its (row, column) in the matrix.
    let mut x = vec![0.5f32; 3 * 70];
    x[2 * 70 + 65] = f32::NAN;
    let shape = MatrixShape::new(3, 70);
    let g = Granularity::PerGroup { axis: Axis::Cols, size: 32 };
    let spec = QuantSpec::symmetric(8)?;
    let err = quantize_matrix::<f32, i8>(&x, shape, spec, g).expect_err("NaN");
    assert!(matches!(err, QuantError::NonFiniteInMatrix { row: 2, col: 65, .. }), "{err:?}");
    // The same through the packed path (4-bit, groups of 32 start on whole bytes).
    let err = quantize_matrix::<f32, I4x2>(&x, MatrixShape::new(3, 70), QuantSpec::symmetric(4)?, g).expect_err("NaN");
    assert!(matches!(err, QuantError::NonFiniteInMatrix { row: 2, col: 65, .. }), "{err:?}");
    let params = quantize_matrix::<f32, i8>(&vec![0.5f32; 3 * 70], shape, spec, g)?.params().to_vec();
    let err = quantize_matrix_into(&x, shape, spec, g, &params, &mut vec![0i8; 210]).expect_err("NaN");
    assert!(matches!(err, QuantError::NonFiniteInMatrix { row: 2, col: 65, .. }), "{err:?}");
    Ok(())
}

#[test]
fn a_group_size_of_zero_is_an_error() {
    let g = Granularity::PerGroup { axis: Axis::Cols, size: 0 };
    let spec = QuantSpec::symmetric(4).expect("valid");
    let x = [1.0f32; 6];
    assert_eq!(
        quantize_matrix::<f32, I4x2>(&x, MatrixShape::new(2, 3), spec, g).map(|_| ()),
        Err(QuantError::InvalidGroupSize)
    );
    assert_eq!(
        quantize_matrix_into::<f32, i8>(&x, MatrixShape::new(2, 3), spec, g, &[], &mut [0; 6]),
        Err(QuantError::InvalidGroupSize)
    );
    assert_eq!(g.channels(MatrixShape::new(2, 3)), 0);
    assert_eq!(QuantError::InvalidGroupSize.to_string().split(':').next(), Some("group size 0"));
    // The parameter count must match the layout.
    let g = Granularity::PerGroup { axis: Axis::Cols, size: 2 };
    let err = quantize_matrix_into::<f32, i8>(&x, MatrixShape::new(2, 3), spec, g, &[], &mut [0; 6]);
    assert_eq!(err, Err(QuantError::LengthMismatch { what: "parameter sets", expected: 4, found: 0 }));
}

#[test]
fn dequantize_matrix_into_inverts_the_stored_codes() -> Res {
    let mut rng = Rng::new(23);
    for _ in 0..200 {
        let shape = MatrixShape::new(rng.dim(7), rng.dim(40));
        let x: Vec<f32> = rng.tensor(shape.rows * shape.cols);
        let g = Granularity::PerGroup {
            axis: if rng.index(2) == 0 { Axis::Cols } else { Axis::Rows },
            size: 1 + rng.index(9),
        };
        let m = quantize_matrix::<f32, U4x2>(&x, shape, QuantSpec::asymmetric(4)?, g)?;
        let mut out = vec![0f32; x.len()];
        quant_core::dequantize_matrix_into(m.codes(), shape, g, m.params(), &mut out)?;
        assert_eq!(out, m.dequantize());
    }
    let m = quantize_matrix::<f32, i8>(
        &[1.0, 2.0, 3.0, 4.0],
        MatrixShape::new(2, 2),
        QuantSpec::symmetric(8)?,
        Granularity::PerTensor,
    )?;
    let err = quant_core::dequantize_matrix_into(
        &m.codes()[..3],
        MatrixShape::new(2, 2),
        Granularity::PerTensor,
        m.params(),
        &mut [0f32; 4],
    );
    assert_eq!(err, Err(QuantError::LengthMismatch { what: "codes", expected: 4, found: 3 }));
    let err = quant_core::dequantize_matrix_into(
        m.codes(),
        MatrixShape::new(2, 2),
        Granularity::PerChannel(Axis::Rows),
        m.params(),
        &mut [0f32; 4],
    );
    assert_eq!(err, Err(QuantError::LengthMismatch { what: "parameter sets", expected: 2, found: 1 }));
    Ok(())
}
