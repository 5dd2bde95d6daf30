//! Calibration observers: batches in any order give exactly the whole-tensor answer (min-max,
//! percentile, MSE-optimal), percentiles land within one histogram bucket of the sorted
//! reference, the moving average follows PyTorch's update, per-channel observers equal
//! per-channel parameters, and every bad input is a typed error.

use quant_core::{
    matrix_params, Axis, ChannelObserver, Granularity, MatrixShape, MinMax, MovingAverageMinMax, MseOptimal, Observer,
    Percentile, QuantError, QuantParams, QuantSpec, Range,
};
use quant_testkit::Rng;

type Res = Result<(), QuantError>;

/// Heavy-tailed data: normal with a few large values.
fn data(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * if rng.index(200) == 0 { 20.0 } else { 1.0 }) as f32).collect()
}

/// Feeds `x` in random batches, in a random order.
fn feed<O: Observer>(o: &mut O, x: &[f32], rng: &mut Rng) -> Res {
    let mut cuts: Vec<usize> = (0..rng.index(6)).map(|_| rng.index(x.len() + 1)).collect();
    cuts.extend([0, x.len()]);
    cuts.sort_unstable();
    let mut batches: Vec<&[f32]> = cuts.windows(2).map(|w| &x[w[0]..w[1]]).collect();
    for i in (1..batches.len()).rev() {
        batches.swap(i, rng.index(i + 1));
    }
    for b in batches {
        o.observe(b)?;
    }
    Ok(())
}

#[test]
fn batches_in_any_order_give_the_whole_tensor_answer() -> Res {
    let mut rng = Rng::new(3);
    for _ in 0..40 {
        let n = 1 + rng.index(5000);
        let x = data(&mut rng, n);
        for spec in [QuantSpec::symmetric(4)?, QuantSpec::asymmetric(8)?] {
            let (mut a, mut b) = (MinMax::new(), MinMax::new());
            a.observe(&x)?;
            feed(&mut b, &x, &mut rng)?;
            assert_eq!(a.range(spec)?, b.range(spec)?);
            assert_eq!(a.params::<f32>(spec)?, QuantParams::from_tensor(spec, &x)?);
            let (mut a, mut b) = (Percentile::new(99.9)?, Percentile::new(99.9)?);
            a.observe(&x)?;
            feed(&mut b, &x, &mut rng)?;
            assert_eq!(a.range(spec)?, b.range(spec)?);
            let (mut a, mut b) = (MseOptimal::new(), MseOptimal::new());
            a.observe(&x)?;
            feed(&mut b, &x, &mut rng)?;
            assert_eq!(a.range(spec)?, b.range(spec)?);
        }
    }
    Ok(())
}

#[test]
fn percentiles_land_within_one_bucket_of_the_sorted_reference() -> Res {
    let mut rng = Rng::new(5);
    let spec = QuantSpec::asymmetric(8)?;
    for p in [50.0, 90.0, 99.0, 99.99, 100.0] {
        let x = data(&mut rng, 20_000);
        let mut o = Percentile::new(p)?;
        o.observe(&x)?;
        let Range { lo, hi } = o.range(spec)?;
        let mut sorted: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let want_hi = sorted[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
        let want_lo = sorted[((1.0 - p / 100.0) * n as f64).floor() as usize];
        // Outward by at most one bucket (1/256 of an octave), never beyond the data.
        let slack = |v: f64| v.abs() / 128.0 + 1e-30;
        assert!(hi >= want_hi && hi <= want_hi + slack(want_hi), "p {p}: hi {hi} vs {want_hi}");
        assert!(lo <= want_lo && lo >= want_lo - slack(want_lo), "p {p}: lo {lo} vs {want_lo}");
        assert!(lo >= sorted[0] && hi <= sorted[n - 1]);
        if p == 100.0 {
            assert_eq!((lo, hi), (sorted[0], sorted[n - 1]));
        }
    }
    Ok(())
}

#[test]
fn moving_average_follows_pytorch() -> Res {
    let spec = QuantSpec::asymmetric(8)?;
    let mut o = MovingAverageMinMax::new(0.5)?;
    o.observe(&[-1.0f32, 3.0])?; // first batch as is: [-1, 3]
    o.observe::<f32>(&[])?; // empty batches change nothing
    o.observe(&[-3.0f32, 1.0])?; // -1 + 0.5 (-3 + 1) = -2,  3 + 0.5 (1 - 3) = 2
    o.observe(&[0.0f32, 6.0])?; // -2 + 0.5 (0 + 2) = -1,  2 + 0.5 (6 - 2) = 4
    assert_eq!(o.range(spec)?, Range { lo: -1.0, hi: 4.0 });
    Ok(())
}

#[test]
fn channel_observers_equal_per_channel_parameters() -> Res {
    let mut rng = Rng::new(8);
    let spec = QuantSpec::asymmetric(8)?;
    for axis in [Axis::Rows, Axis::Cols] {
        let shape = MatrixShape::new(1 + rng.index(6), 1 + rng.index(30));
        let x: Vec<f32> = data(&mut rng, shape.rows * shape.cols);
        let channels = if axis == Axis::Rows { shape.rows } else { shape.cols };
        let mut o = ChannelObserver::new(MinMax::new(), axis, channels);
        // Two batches of the same shape: rows of the second double the first.
        let twice: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        o.observe(&x, shape)?;
        o.observe(&twice, shape)?;
        let mut both = x.clone();
        both.extend(&twice);
        let stacked = if axis == Axis::Rows {
            // Per row: each channel saw its own row of both batches.
            let per_row: Vec<QuantParams<f32>> = (0..shape.rows)
                .map(|r| {
                    let mut v = x[r * shape.cols..(r + 1) * shape.cols].to_vec();
                    v.extend(&twice[r * shape.cols..(r + 1) * shape.cols]);
                    QuantParams::from_tensor(spec, &v)
                })
                .collect::<Result<_, _>>()?;
            per_row
        } else {
            matrix_params(
                &both,
                MatrixShape::new(2 * shape.rows, shape.cols),
                spec,
                Granularity::PerChannel(Axis::Cols),
            )?
        };
        assert_eq!(o.params::<f32>(spec)?, stacked, "{axis:?}");
    }
    Ok(())
}

#[test]
fn bad_settings_and_bad_data_are_typed_errors() -> Res {
    let spec = QuantSpec::symmetric(8)?;
    for p in [0.0, -1.0, 100.5, f64::NAN] {
        assert!(matches!(Percentile::new(p), Err(QuantError::InvalidPercentile { .. })), "{p}");
    }
    assert_eq!(
        Percentile::new(101.0).map(|_| ()).map_err(|e| e.to_string()),
        Err("percentile 101 is outside (0, 100]".to_string())
    );
    for c in [0.0, 1.5, f64::NAN] {
        assert!(matches!(MovingAverageMinMax::new(c), Err(QuantError::InvalidAveragingConstant { .. })), "{c}");
    }
    assert_eq!(MinMax::new().range(spec), Err(QuantError::NothingObserved));
    assert_eq!(Percentile::new(99.0)?.params::<f32>(spec), Err(QuantError::NothingObserved));
    assert_eq!(MseOptimal::new().range(spec), Err(QuantError::NothingObserved));
    // A NaN batch is rejected, naming the index, and leaves the observer as it was.
    let mut o = MseOptimal::new();
    o.observe(&[1.0f32, -2.0])?;
    let before = o.clone();
    assert!(matches!(o.observe(&[0.0f32, 5.0, f32::NAN]), Err(QuantError::NonFinite { index: 2, .. })));
    assert_eq!(o, before);
    let mut m = MinMax::new();
    assert!(matches!(m.observe(&[f32::INFINITY]), Err(QuantError::NonFinite { index: 0, .. })));
    assert_eq!(m.range(spec), Err(QuantError::NothingObserved));
    // A channel observer checks the batch shape and the channel count.
    let mut c = ChannelObserver::new(MinMax::new(), Axis::Rows, 3);
    assert!(matches!(
        c.observe(&[1.0f32; 6], MatrixShape::new(2, 3)),
        Err(QuantError::LengthMismatch { what: "channels", .. })
    ));
    assert!(matches!(c.observe(&[1.0f32; 5], MatrixShape::new(3, 2)), Err(QuantError::LengthMismatch { .. })));
    Ok(())
}
