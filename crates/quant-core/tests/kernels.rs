//! The SIMD quantize/dequantize fast paths against the scalar reference, bit for bit: random
//! data with exact ties, out-of-range values, every tail length, both 8-bit storages; and a
//! check that the requested implementation is the one that runs.

use quant_core::{
    dequantize_code, dequantize_into, quantize_into, quantize_matrix, quantize_value, selected_kernel, Axis,
    Granularity, MatrixShape, QuantError, QuantParams, QuantSpec, Storage,
};
use quant_testkit::Rng;

type Res = Result<(), QuantError>;

/// Values built to hit ties exactly: (k + 0.5) * scale, and ordinary and out-of-range values.
fn data(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.index(4) {
            0 => (rng.int(-300, 300) as f32 + 0.5) * scale,
            1 => rng.uniform(-400.0, 400.0) as f32 * scale,
            2 => 0.0,
            _ => rng.normal() as f32 * 60.0 * scale,
        })
        .collect()
}

fn check<Q: Storage + Copy + Default + std::fmt::Debug + PartialEq>(spec: QuantSpec, seed: u64) -> Res {
    let mut rng = Rng::new(seed);
    // 4_194_320 crosses the non-temporal-store threshold of dequantization.
    for len in (0..70).chain([1000, 4099, 4_194_320]) {
        // Ordinary scales take the f32-lane path; extreme ones the f64-lane path.
        let scale = match len % 5 {
            3 => 1e-35,
            4 => 3e35,
            _ => rng.uniform(1e-3, 10.0) as f32,
        };
        let zp = if spec.code_min() == 0 { rng.int(0, spec.code_max()) } else { 0 };
        let params = QuantParams::new(spec, scale, zp)?;
        let x = data(&mut rng, len, scale);
        let mut fast = vec![Q::default(); len];
        quantize_into(&x, spec, &params, &mut fast)?;
        let want: Vec<i64> = x
            .iter()
            .map(|&v| quantize_value(f64::from(v), f64::from(scale), zp, spec.code_min(), spec.code_max()))
            .collect();
        let got: Vec<i64> = fast.iter().map(|&u| u.lane(0)).collect();
        assert_eq!(got, want, "len {len}, scale {scale}, zp {zp}");
        let mut back = vec![0f32; len];
        dequantize_into(&fast, len, &params, &mut back)?;
        let want: Vec<f32> = want.iter().map(|&q| dequantize_code(q, scale, zp)).collect();
        assert_eq!(back, want, "len {len}");
    }
    Ok(())
}

#[test]
fn f32_to_i8_matches_scalar() -> Res {
    check::<i8>(QuantSpec::symmetric(8)?, 1)
}

#[test]
fn f32_to_u8_matches_scalar() -> Res {
    check::<u8>(QuantSpec::asymmetric(8)?, 2)
}

#[test]
fn narrower_widths_in_8_bit_storage_match_scalar() -> Res {
    check::<i8>(QuantSpec::symmetric(5)?, 3)?;
    check::<u8>(QuantSpec::asymmetric(3)?, 4)
}

#[test]
fn dequantize_saturates_like_scalar() -> Res {
    let spec = QuantSpec::symmetric(8)?;
    let params = QuantParams::new(spec, f32::MAX / 100.0, 0)?;
    let codes: Vec<i8> = (-128..=127).collect();
    let mut out = vec![0f32; codes.len()];
    dequantize_into(&codes, codes.len(), &params, &mut out)?;
    let want: Vec<f32> = codes.iter().map(|&q| dequantize_code(i64::from(q), params.scale(), 0)).collect();
    assert_eq!(out, want);
    assert_eq!(out[0], f32::MIN);
    Ok(())
}

#[test]
fn per_row_matrix_uses_the_same_codes() -> Res {
    let mut rng = Rng::new(5);
    let shape = MatrixShape::new(7, 37);
    let x = data(&mut rng, 7 * 37, 0.01);
    let spec = QuantSpec::asymmetric(8)?;
    let m = quantize_matrix::<f32, u8>(&x, shape, spec, Granularity::PerChannel(Axis::Rows))?;
    for r in 0..shape.rows {
        let p = m.params()[r];
        for c in 0..shape.cols {
            let v = f64::from(x[r * shape.cols + c]);
            let want = quantize_value(v, f64::from(p.scale()), p.zero_point(), 0, 255);
            assert_eq!(i64::from(m.codes()[r * shape.cols + c]), want);
        }
    }
    Ok(())
}

/// The code that runs is the one asked for: `QUANT_KERNEL`'s tier (`cargo xtask test` runs
/// this file once per tier this CPU has), or without it the best tier this CPU has, detected
/// here independently of the library. Fails, not skips, when the requested one did not run.
#[test]
fn the_requested_implementation_runs() -> Res {
    let requested = std::env::var("QUANT_KERNEL").unwrap_or_default().to_ascii_lowercase();
    #[cfg(target_arch = "x86_64")]
    let best = {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512vnni"].iter().all(|f| match *f {
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            _ => std::is_x86_feature_detected!("avx512vnni"),
        });
        if avx2 && avx512 {
            "avx512vnni"
        } else if avx2 {
            "avx2"
        } else {
            "portable"
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let best = "portable";
    let tier = if requested.is_empty() { best } else { requested.as_str() };
    let want = match tier {
        "avx512vnni" | "amx" => "avx512",
        "avx2" | "avxvnni" => "avx2",
        _ => "portable",
    };
    assert_eq!(selected_kernel()?, want, "QUANT_KERNEL={requested:?}");
    Ok(())
}

/// With the `parallel` feature, a large call is split across threads: the codes, the values
/// and the index an error names must be those of one thread. (`cargo xtask test` runs this file
/// with the feature on.)
#[test]
fn thread_count_changes_nothing() -> Res {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("thread pool");
    let (one, two) = (pool(1), pool(2));
    let mut rng = Rng::new(9);
    let len = (1 << 20) + 777;
    let x = data(&mut rng, len, 0.01);
    let spec = QuantSpec::asymmetric(8)?;
    let params = QuantParams::new(spec, 0.01f32, 100)?;
    let run = |pool: &rayon::ThreadPool, x: &[f32]| {
        pool.install(|| {
            let mut q = vec![0u8; x.len()];
            let r = quantize_into(x, spec, &params, &mut q);
            let mut back = vec![0f32; x.len()];
            if r.is_ok() {
                dequantize_into(&q, x.len(), &params, &mut back)?;
            }
            r.map(|()| (q, back))
        })
    };
    assert_eq!(run(&one, &x)?, run(&two, &x)?);
    // Two bad values in different halves: both report the first.
    let mut bad = x.clone();
    bad[len - 10] = f32::NAN;
    bad[300_000] = f32::INFINITY;
    let want = Err(QuantError::NonFinite { index: 300_000, value: f64::INFINITY });
    assert_eq!(run(&one, &bad).map(|_| ()), want);
    assert_eq!(run(&two, &bad).map(|_| ()), want);
    // One bad value in the second half is named by its index in the whole tensor.
    let mut bad = x.clone();
    bad[len - 10] = f32::NAN;
    for pool in [&one, &two] {
        assert!(matches!(run(pool, &bad), Err(QuantError::NonFinite { index, .. }) if index == len - 10));
    }
    Ok(())
}

#[test]
fn a_non_finite_value_anywhere_in_a_vector_block_is_named() -> Res {
    // The f32-lane path finds NaN and infinities through its near-tie comparison; the f64-lane
    // path (extreme scales) through its own check. Every position of the first two 16-wide
    // blocks and of the scalar tail, for both paths and both 8-bit storages.
    let spec = QuantSpec::symmetric(8)?;
    for scale in [0.05f32, 1e-35] {
        let params = QuantParams::new(spec, scale, 0)?;
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..37).map(|_| rng.uniform(-100.0, 100.0) as f32 * scale).collect();
        for at in 0..x.len() {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut y = x.clone();
                y[at] = bad;
                let named = |e: QuantError| {
                    matches!(e, QuantError::NonFinite { index, value }
                    if index == at && value.to_bits() == f64::from(bad).to_bits())
                };
                let e = quantize_into(&y, spec, &params, &mut vec![0i8; y.len()]).expect_err("rejected");
                assert!(named(e), "scale {scale}, position {at}, value {bad}");
                let e = quantize_into(
                    &y,
                    QuantSpec::asymmetric(8)?,
                    &QuantParams::new(QuantSpec::asymmetric(8)?, scale, 3)?,
                    &mut vec![0u8; y.len()],
                )
                .expect_err("rejected");
                assert!(named(e), "u8, scale {scale}, position {at}, value {bad}");
            }
        }
    }
    Ok(())
}

#[test]
fn streaming_quantization_from_a_misaligned_output_matches_scalar() -> Res {
    // Above the non-temporal-store threshold the kernel writes the first bytes up to a 16-byte
    // boundary with the scalar path: start the output one byte off the allocation's alignment.
    let len = (1 << 22) + 37;
    let mut rng = Rng::new(77);
    let spec = QuantSpec::asymmetric(8)?;
    let params = QuantParams::new(spec, 0.013f32, 7)?;
    let x = data(&mut rng, len, 0.013);
    let mut buf = vec![0u8; len + 1];
    quantize_into(&x, spec, &params, &mut buf[1..])?;
    for (i, (&got, &v)) in buf[1..].iter().zip(&x).enumerate() {
        let want = quantize_value(f64::from(v), f64::from(0.013f32), 7, 0, 255);
        assert_eq!(i64::from(got), want, "element {i}");
    }
    // A NaN in the streamed part and one in the scalar prologue are both named.
    for at in [3, len - 100] {
        let mut y = x.clone();
        y[at] = f32::NAN;
        let e = quantize_into(&y, spec, &params, &mut buf[1..]).expect_err("NaN");
        assert!(matches!(e, QuantError::NonFinite { index, .. } if index == at), "{e:?}");
    }
    Ok(())
}
