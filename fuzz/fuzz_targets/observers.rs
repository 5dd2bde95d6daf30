//! The calibration observers (min-max, moving average, percentile, MSE-optimal) fed arbitrary
//! f32 batches (NaN, infinities, subnormals, ±MAX). Oracle: a batch with a non-finite value is
//! refused with `NonFinite` naming its first one and changes nothing; after finite batches,
//! min-max's range is exactly the extremes seen and every other range is finite, ordered and
//! inside them (or zero); the parameters, when `Ok`, have a finite positive scale, and the
//! only refusal is `ScaleOverflow` for a range wider than `f32` can scale; before any value,
//! `NothingObserved`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant_core::{MinMax, MovingAverageMinMax, MseOptimal, Observer, Percentile, QuantError, QuantSpec};

fn feed<O: Observer + Clone + PartialEq + core::fmt::Debug>(o: &mut O, batch: &[f32]) {
    let before = o.clone();
    match o.observe(batch) {
        Ok(()) => assert!(batch.iter().all(|v| v.is_finite()), "a non-finite batch was taken"),
        Err(QuantError::NonFinite { index, .. }) => {
            assert_eq!(Some(index), batch.iter().position(|v| !v.is_finite()));
            assert_eq!(*o, before, "a refused batch changed the observer");
        }
        Err(e) => panic!("undocumented error: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let x: Vec<f32> = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let batches: Vec<&[f32]> = x.chunks(usize::from(cut % 16) + 1).collect();
    let spec = QuantSpec::asymmetric(8).expect("width");
    let mut minmax = MinMax::default();
    let mut moving = MovingAverageMinMax::new(0.01).expect("constant");
    let mut percentile = Percentile::new(99.9).expect("percentile");
    let mut mse = MseOptimal::default();
    for b in &batches {
        feed(&mut minmax, b);
        feed(&mut moving, b);
        feed(&mut percentile, b);
        feed(&mut mse, b);
    }
    let seen: Vec<f64> = batches
        .iter()
        .filter(|b| b.iter().all(|v| v.is_finite()))
        .flat_map(|b| b.iter().map(|&v| f64::from(v)))
        .collect();
    let Some(&first) = seen.first() else {
        assert!(matches!(minmax.range(spec), Err(QuantError::NothingObserved)));
        return;
    };
    let (lo, hi) = seen.iter().fold((first, first), |(l, h), &v| (l.min(v), h.max(v)));
    let exact = minmax.range(spec).expect("observed");
    assert_eq!((exact.lo, exact.hi), (lo, hi), "min-max range");
    for r in [moving.range(spec), percentile.range(spec), mse.range(spec)] {
        let r = r.expect("observed");
        assert!(r.lo.is_finite() && r.hi.is_finite() && r.lo <= r.hi, "range {r:?}");
        assert!(r.lo >= lo.min(0.0) && r.hi <= hi.max(0.0), "range {r:?} outside [{lo}, {hi}] and zero");
    }
    for p in [
        minmax.params::<f32>(spec),
        moving.params::<f32>(spec),
        percentile.params::<f32>(spec),
        mse.params::<f32>(spec),
    ] {
        match p {
            Ok(p) => assert!(p.scale().is_finite() && p.scale() > 0.0, "scale {}", p.scale()),
            Err(QuantError::ScaleOverflow { .. }) => assert!(hi - lo > f64::from(f32::MAX)),
            Err(e) => panic!("undocumented error: {e:?}"),
        }
    }
});
