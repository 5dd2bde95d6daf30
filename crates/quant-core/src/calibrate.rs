//! Calibration: observers that see a tensor in batches, then give the range to quantize it with.
//!
//! Activations are quantized with parameters fixed in advance, from calibration batches. An
//! [`Observer`] takes the batches ([`Observer::observe`]) and then produces a [`Range`] or the
//! [`QuantParams`] for a [`QuantSpec`] (through [`QuantParams::from_range`], so the parameters
//! follow this crate's conventions once the range is chosen).
//!
//! | observer | range | batches in any order give |
//! |---|---|---|
//! | [`MinMax`] | smallest and largest value seen | the same range as the whole tensor at once (exact) |
//! | [`MovingAverageMinMax`] | `min ← min + c·(batch min − min)` (same for max), the first batch as is (PyTorch's `MovingAverageMinMaxObserver`) | an order-dependent result, by design |
//! | [`Percentile`] | `[q(100 − p), q(p)]`: the `p`-th percentile and its mirror, from a histogram | the same range as the whole tensor at once (exact) |
//! | [`MseOptimal`] | the clipping of `[min, max]` (each end scaled by a fraction `i/256`) whose expected quantization MSE is least for the spec | the same range as the whole tensor at once (exact) |
//!
//! * The histogram ([`Percentile`], [`MseOptimal`]) has `2^17` buckets over the `f32` line,
//!   ordered by value and spaced logarithmically: each bucket spans `2^15` consecutive `f32`
//!   values, 1/256 of an octave (0.4 %), so it covers magnitudes from the subnormals to `f32::MAX`
//!   with the same relative resolution and needs no range known in advance. Counts only add, so
//!   batches commute and the answer is exactly that of one big batch. It takes 1 MiB, allocated
//!   on the first batch. A percentile is reported as the far edge of its bucket (the range errs
//!   outward by at most 0.4 %), clamped to the exact minimum and maximum seen.
//! * [`MseOptimal`] scores a candidate clipping `[α·lo, β·hi]` by the expected squared error of
//!   each bucket's values (at the bucket's middle value): `scale²/12` (rounding noise) inside the
//!   range, `(v − edge)²` outside. Symmetric specs search `α = β` over `i/256` (the range
//!   `±α·max|x|`); asymmetric ones start there, then search each end in turn, twice. The range
//!   always includes 0.
//! * Values are checked: NaN and infinities are an error naming the index in the batch (the
//!   observer is left as it was). Asking for a range before any value was seen is
//!   [`QuantError::NothingObserved`]; a percentile outside `(0, 100]` or an averaging constant
//!   outside `(0, 1]` is an error at construction.
//! * Per channel: [`ChannelObserver`] keeps one observer per row or column of a matrix.

use alloc::vec::Vec;

use quant_traits::cast::{abs, ceil, floor, i64_to_f64, u32_to_f64, u64_to_f64};
use quant_traits::{MatrixShape, QuantError, QuantFloat};

use crate::granularity::Axis;
use crate::params::QuantParams;
use crate::range::{check_finite, Range};
use crate::scheme::{QuantSpec, Scheme};

/// Sees batches of values, then gives a range (see the module docs).
pub trait Observer {
    /// Takes one batch.
    ///
    /// # Errors
    /// [`QuantError::NonFinite`] naming the first NaN or infinite value of the batch (nothing
    /// of the batch is recorded then).
    fn observe<F: QuantFloat>(&mut self, x: &[F]) -> Result<(), QuantError>;

    /// The calibrated range for `spec` (only [`MseOptimal`] depends on it).
    ///
    /// # Errors
    /// [`QuantError::NothingObserved`] before any value was seen.
    fn range(&self, spec: QuantSpec) -> Result<Range, QuantError>;

    /// The parameters for `spec` from [`Observer::range`].
    ///
    /// # Errors
    /// As [`Observer::range`] and [`QuantParams::from_range`].
    fn params<F: QuantFloat>(&self, spec: QuantSpec) -> Result<QuantParams<F>, QuantError> {
        let r = self.range(spec)?;
        QuantParams::from_range(spec, r.lo, r.hi)
    }
}

/// The smallest and largest value of one batch (already checked finite); `None` if empty.
fn batch_range<F: QuantFloat>(x: &[F]) -> Option<Range> {
    let mut it = x.iter().map(|v| v.to_f64_exact());
    let first = it.next()?;
    Some(it.fold(Range { lo: first, hi: first }, |r, v| Range { lo: r.lo.min(v), hi: r.hi.max(v) }))
}

/// `seen` widened to include the batch range `b`.
fn union(seen: Option<Range>, b: Range) -> Range {
    match seen {
        None => b,
        Some(r) => Range { lo: r.lo.min(b.lo), hi: r.hi.max(b.hi) },
    }
}

/// Running minimum and maximum: exactly the range of everything seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MinMax {
    range: Option<Range>,
}

impl MinMax {
    /// An observer that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Observer for MinMax {
    fn observe<F: QuantFloat>(&mut self, x: &[F]) -> Result<(), QuantError> {
        check_finite(x)?;
        if let Some(b) = batch_range(x) {
            self.range = Some(union(self.range, b));
        }
        Ok(())
    }

    fn range(&self, _spec: QuantSpec) -> Result<Range, QuantError> {
        self.range.ok_or(QuantError::NothingObserved)
    }
}

/// PyTorch's moving-average min/max: the first non-empty batch sets the range, each later one
/// moves it by `c` of the way towards the batch's own min and max.
#[derive(Clone, Debug, PartialEq)]
pub struct MovingAverageMinMax {
    constant: f64,
    range: Option<Range>,
}

impl MovingAverageMinMax {
    /// An observer with averaging constant `c` in `(0, 1]` (PyTorch's default is 0.01).
    ///
    /// # Errors
    /// [`QuantError::InvalidAveragingConstant`] outside `(0, 1]`.
    pub fn new(c: f64) -> Result<Self, QuantError> {
        if c > 0.0 && c <= 1.0 {
            Ok(MovingAverageMinMax { constant: c, range: None })
        } else {
            Err(QuantError::InvalidAveragingConstant { constant: c })
        }
    }
}

impl Observer for MovingAverageMinMax {
    fn observe<F: QuantFloat>(&mut self, x: &[F]) -> Result<(), QuantError> {
        check_finite(x)?;
        if let Some(b) = batch_range(x) {
            let c = self.constant;
            self.range = Some(match self.range {
                None => b,
                Some(r) => Range { lo: r.lo + c * (b.lo - r.lo), hi: r.hi + c * (b.hi - r.hi) },
            });
        }
        Ok(())
    }

    fn range(&self, _spec: QuantSpec) -> Result<Range, QuantError> {
        self.range.ok_or(QuantError::NothingObserved)
    }
}

/// Buckets of the histogram: the top 17 bits of the order-preserving key of an `f32`.
const BUCKETS: usize = 1 << 17;
const SHIFT: u32 = 32 - 17;

/// An order-preserving `u32` key of an `f32`: larger values, larger keys.
fn key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | (1 << 31)
    }
}

/// The `f32` of a key (inverse of [`key`]).
fn value_of(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
}

/// Counts per bucket, plus the exact extremes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    range: Option<Range>,
}

impl Histogram {
    fn add<F: QuantFloat>(&mut self, x: &[F]) -> Result<(), QuantError> {
        check_finite(x)?;
        let Some(b) = batch_range(x) else { return Ok(()) };
        if self.counts.is_empty() {
            self.counts = alloc::vec![0; BUCKETS];
        }
        for v in x {
            let v = <f32 as QuantFloat>::from_f64_nearest(v.to_f64_exact());
            self.counts[usize::try_from(key(v) >> SHIFT).unwrap_or(0)] += 1;
        }
        self.total += u64::try_from(x.len()).unwrap_or(u64::MAX);
        self.range = Some(union(self.range, b));
        Ok(())
    }

    /// Lowest and highest value of bucket `i`.
    fn edges(i: usize) -> (f32, f32) {
        let k = u32::try_from(i).unwrap_or(0) << SHIFT;
        (value_of(k), value_of(k | ((1 << SHIFT) - 1)))
    }

    /// The non-empty buckets as (middle value, count), in order.
    fn occupied(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
            let (lo, hi) = Self::edges(i);
            let mid =
                if lo.is_finite() && hi.is_finite() { (f64::from(lo) + f64::from(hi)) / 2.0 } else { f64::from(lo) };
            (mid, u64_to_f64(c))
        })
    }
}

/// The `p`-th percentile and its mirror image: `[q(100 − p), q(p)]` (from a histogram; see the
/// module docs). `p = 100` is the exact minimum and maximum.
#[derive(Clone, Debug, PartialEq)]
pub struct Percentile {
    percentile: f64,
    hist: Histogram,
}

impl Percentile {
    /// An observer for percentile `p` in `(0, 100]`, e.g. 99.99.
    ///
    /// # Errors
    /// [`QuantError::InvalidPercentile`] outside `(0, 100]`.
    pub fn new(p: f64) -> Result<Self, QuantError> {
        if p > 0.0 && p <= 100.0 {
            Ok(Percentile { percentile: p, hist: Histogram::default() })
        } else {
            Err(QuantError::InvalidPercentile { percentile: p })
        }
    }
}

impl Observer for Percentile {
    fn observe<F: QuantFloat>(&mut self, x: &[F]) -> Result<(), QuantError> {
        self.hist.add(x)
    }

    fn range(&self, _spec: QuantSpec) -> Result<Range, QuantError> {
        let exact = self.hist.range.ok_or(QuantError::NothingObserved)?;
        if self.percentile >= 100.0 {
            return Ok(exact);
        }
        let n = u64_to_f64(self.hist.total);
        // The smallest value with at least p % of the values at or below it, and its mirror.
        let upper_rank = ceil(self.percentile / 100.0 * n).max(1.0);
        let lower_rank = floor((1.0 - self.percentile / 100.0) * n) + 1.0;
        let (mut lo, mut hi) = (exact.lo, exact.hi);
        let mut seen = 0.0;
        let mut lo_done = false;
        for (i, &c) in self.hist.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            seen += u64_to_f64(c);
            let (low_edge, high_edge) = Histogram::edges(i);
            if !lo_done && seen >= lower_rank {
                lo = f64::from(low_edge).max(exact.lo);
                lo_done = true;
            }
            if seen >= upper_rank {
                hi = f64::from(high_edge).min(exact.hi);
                break;
            }
        }
        Ok(Range { lo: lo.min(hi), hi })
    }
}

/// The clipping range with the least expected quantization MSE for the spec (see the module
/// docs): what the ONNX Runtime and TensorRT calibrators search for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MseOptimal {
    hist: Histogram,
}

impl MseOptimal {
    /// Candidate clippings tried: `α = i / 256` for `i = 1..=256`.
    pub const CANDIDATES: u32 = 256;

    /// An observer that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The expected squared error of quantizing the histogram's `buckets` (middle value,
    /// count) into `[lo, hi]` with `spec`.
    fn expected_mse(buckets: &[(f64, f64)], spec: QuantSpec, lo: f64, hi: f64) -> f64 {
        let steps = i64_to_f64(spec.code_max() - spec.code_min());
        let scale = (hi - lo) / steps;
        // The representable ends: symmetric codes reach -qmax·s .. qmax·s (one more code below).
        let (low_end, high_end) = match spec.scheme() {
            Scheme::Symmetric => (lo - scale, hi),
            Scheme::Asymmetric => (lo, hi),
        };
        let noise = scale * scale / 12.0;
        let (mut sum, mut n) = (0.0, 0.0);
        for &(v, c) in buckets {
            let e = if v > high_end {
                (v - high_end) * (v - high_end)
            } else if v < low_end {
                (low_end - v) * (low_end - v)
            } else {
                noise
            };
            sum += c * e;
            n += c;
        }
        sum / n
    }
}

impl Observer for MseOptimal {
    fn observe<F: QuantFloat>(&mut self, x: &[F]) -> Result<(), QuantError> {
        self.hist.add(x)
    }

    fn range(&self, spec: QuantSpec) -> Result<Range, QuantError> {
        let exact = self.hist.range.ok_or(QuantError::NothingObserved)?;
        let (lo, hi) = match spec.scheme() {
            Scheme::Symmetric => {
                let amax = abs(exact.lo).max(abs(exact.hi));
                (-amax, amax)
            }
            Scheme::Asymmetric => (exact.lo.min(0.0), exact.hi.max(0.0)),
        };
        if lo == hi {
            return Ok(Range { lo, hi });
        }
        let buckets: Vec<(f64, f64)> = self.hist.occupied().collect();
        let mse = |a: f64, b: f64| Self::expected_mse(&buckets, spec, a * lo, b * hi);
        // The best of the candidate fractions for one end, the other end's fraction fixed.
        let sweep = |score: &dyn Fn(f64) -> f64| {
            let mut best = (f64::INFINITY, 1.0);
            for i in 1..=Self::CANDIDATES {
                let alpha = u32_to_f64(i) / u32_to_f64(Self::CANDIDATES);
                let m = score(alpha);
                // Strictly better only: ties keep the smaller clipping found first.
                if m < best.0 {
                    best = (m, alpha);
                }
            }
            best.1
        };
        // Both ends scaled together; then, for asymmetric specs, each end in turn (two rounds
        // of coordinate descent), since skewed data wants different clippings.
        let both = sweep(&|a| mse(a, a));
        let (mut a_lo, mut a_hi) = (both, both);
        if spec.scheme() == Scheme::Asymmetric {
            for _ in 0..2 {
                a_hi = sweep(&|a| mse(a_lo, a));
                a_lo = sweep(&|a| mse(a, a_hi));
            }
        }
        Ok(Range { lo: a_lo * lo, hi: a_hi * hi })
    }
}

/// One observer per channel (row or column) of a matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelObserver<O> {
    axis: Axis,
    observers: Vec<O>,
    column: Vec<f64>,
}

impl<O: Observer + Clone> ChannelObserver<O> {
    /// `channels` copies of `observer`, one per row (`Axis::Rows`) or column (`Axis::Cols`).
    #[must_use]
    pub fn new(observer: O, axis: Axis, channels: usize) -> Self {
        ChannelObserver { axis, observers: alloc::vec![observer; channels], column: Vec::new() }
    }

    /// Takes one batch: a row-major matrix whose rows (or columns) are the channels.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] if `x` disagrees with `shape` or the channel count with
    /// the observer's; [`QuantError::NonFinite`] as [`Observer::observe`] (the index is in `x`).
    pub fn observe<F: QuantFloat>(&mut self, x: &[F], shape: MatrixShape) -> Result<(), QuantError> {
        shape.check_len("calibration batch", x.len())?;
        let channels = if self.axis == Axis::Rows { shape.rows } else { shape.cols };
        QuantError::check_length("channels", self.observers.len(), channels)?;
        check_finite(x)?;
        match self.axis {
            Axis::Rows => {
                for (o, row) in self.observers.iter_mut().zip(x.chunks_exact(shape.cols.max(1))) {
                    o.observe(row)?;
                }
            }
            Axis::Cols => {
                for (c, o) in self.observers.iter_mut().enumerate() {
                    self.column.clear();
                    self.column.extend((0..shape.rows).map(|r| x[r * shape.cols + c].to_f64_exact()));
                    o.observe(&self.column)?;
                }
            }
        }
        Ok(())
    }

    /// Parameters for every channel.
    ///
    /// # Errors
    /// As [`Observer::params`], for the first channel that fails.
    pub fn params<F: QuantFloat>(&self, spec: QuantSpec) -> Result<Vec<QuantParams<F>>, QuantError> {
        self.observers.iter().map(|o| o.params(spec)).collect()
    }

    /// The per-channel observers.
    #[must_use]
    pub fn observers(&self) -> &[O] {
        &self.observers
    }
}
