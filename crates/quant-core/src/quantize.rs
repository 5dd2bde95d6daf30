//! Quantize and dequantize flat tensors with explicit parameters, into any [`Storage`].
//!
//! # Conventions
//! * Quantize: `q = clamp(round_ties_even(x / scale) + zero_point, code_min, code_max)`:
//!   divide (not multiply by a reciprocal), round half to even, *then* add the zero point,
//!   then saturate. This is the ONNX `QuantizeLinear` and PyTorch order; it differs from
//!   "add, then round" only at exact `.5` ties with an odd zero point.
//! * Dequantize: `x = (q - zero_point) * scale`, computed in `f64` and rounded once to `F`;
//!   a value beyond `F`'s finite range saturates to `±F::MAX` (reachable only when the
//!   range spans nearly all of `F`, e.g. `127 * scale` for an `f16` tensor holding 65504).
//! * Inputs must be finite: NaN or ±inf anywhere is an error naming the index, checked before
//!   anything is written.

use alloc::vec::Vec;

use quant_traits::{QuantError, QuantFloat, Storage};

use crate::params::QuantParams;
use crate::scalar::first_non_finite;
use crate::scheme::QuantSpec;

pub use crate::scalar::{dequantize_code, quantize_value};

/// Packs a stream of codes into storage units, in order (first code in the lowest lane).
/// `out` must hold exactly `Q::units_for(number of codes)` units.
pub(crate) fn write_codes<Q: Storage>(out: &mut [Q], codes: impl Iterator<Item = i64>) {
    let mut lanes = [0i64; 8];
    let per = Q::CODES_PER_UNIT;
    let mut filled = 0;
    let mut units = out.iter_mut();
    for code in codes {
        lanes[filled] = code;
        filled += 1;
        if filled == per {
            if let Some(u) = units.next() {
                *u = Q::pack(&lanes[..per]);
            }
            filled = 0;
        }
    }
    if filled > 0 {
        if let Some(u) = units.next() {
            *u = Q::pack(&lanes[..filled]);
        }
    }
}

/// Reads `len` codes from storage units, in order.
pub fn read_codes<Q: Storage>(units: &[Q], len: usize) -> impl Iterator<Item = i64> + '_ {
    units.iter().flat_map(|u| (0..Q::CODES_PER_UNIT).map(move |lane| u.lane(lane))).take(len)
}

/// Checks that `found` storage units hold exactly `len` codes.
pub(crate) fn check_units<Q: Storage>(what: &'static str, len: usize, found: usize) -> Result<(), QuantError> {
    QuantError::check_length(what, Q::units_for(len), found)
}

/// Checks explicit parameters against a spec (a zero point made for another spec).
pub(crate) fn check_params<F: QuantFloat>(spec: QuantSpec, p: &QuantParams<F>) -> Result<(), QuantError> {
    QuantParams::new(spec, p.scale(), p.zero_point()).map(|_| ())
}

/// Quantizes `x` with explicit parameters into `out`, which must hold
/// `Q::units_for(x.len())` units. Values outside the parameters' range saturate.
///
/// # Errors
/// [`QuantError::StorageTooNarrow`] if `Q` cannot hold `spec`'s codes,
/// [`QuantError::InvalidZeroPoint`] if `params` does not fit `spec`,
/// [`QuantError::LengthMismatch`] if `out` has the wrong length,
/// [`QuantError::NonFinite`] for the first NaN or infinite element. The shape and parameter
/// errors are found before anything is written; a non-finite element is found in the same
/// pass that converts (one read of `x` instead of two), so `out` may then hold the codes of
/// the elements before it. [`quantize`] returns no codes at all on error.
///
/// # Example
/// ```
/// use quant_core::{quantize_into, QuantParams, QuantSpec};
///
/// let spec = QuantSpec::asymmetric(8)?;
/// let params = QuantParams::new(spec, 0.5f32, 10)?;
/// let mut codes = [0u8; 4];
/// quantize_into(&[0.0f32, 0.75, -5.0, 1000.0], spec, &params, &mut codes)?;
/// // 0.75 / 0.5 = 1.5 rounds to 2 (ties to even), plus 10; -5 and 1000 saturate.
/// assert_eq!(codes, [10, 12, 0, 255]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_into<F: QuantFloat, Q: Storage>(
    x: &[F],
    spec: QuantSpec,
    params: &QuantParams<F>,
    out: &mut [Q],
) -> Result<(), QuantError> {
    spec.check_storage::<Q>()?;
    check_params(spec, params)?;
    check_units::<Q>("output codes", x.len(), out.len())?;
    crate::arch::check()?;
    let (scale, zp) = (params.scale().to_f64_exact(), params.zero_point());
    quantize_slice(x, scale, zp, spec.code_min(), spec.code_max(), out)
        .map_err(|index| QuantError::NonFinite { index, value: x[index].to_f64_exact() })
}

/// Quantizes `x` into `out` (`Q::units_for(x.len())` units): the SIMD fast path where one
/// exists (checking finiteness in the same pass), else a finiteness check and the scalar
/// reference. `Err(i)`: `x[i]` is the first NaN or infinity.
pub(crate) fn quantize_slice<F: QuantFloat, Q: Storage>(
    x: &[F],
    scale: f64,
    zp: i64,
    lo: i64,
    hi: i64,
    out: &mut [Q],
) -> Result<(), usize> {
    #[cfg(feature = "parallel")]
    if let Some(parts) = parallel_parts::<Q>(x.len()) {
        // Every part reports its first bad element; the smallest index is the first overall.
        let chunk = x.len().div_ceil(parts).next_multiple_of(64);
        let results: Vec<Result<(), usize>> = {
            use rayon::prelude::*;
            x.par_chunks(chunk)
                .zip(out.par_chunks_mut(chunk))
                .enumerate()
                .map(|(p, (xs, os))| quantize_serial(xs, scale, zp, lo, hi, os).map_err(|i| p * chunk + i))
                .collect()
        };
        return results.into_iter().filter_map(Result::err).min().map_or(Ok(()), Err);
    }
    quantize_serial(x, scale, zp, lo, hi, out)
}

/// How many parts to split a call of `len` elements into, if any: only for one code per unit
/// (so parts of the input and the output line up), at least `2^20` elements, several threads.
#[cfg(feature = "parallel")]
fn parallel_parts<Q: Storage>(len: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    (Q::CODES_PER_UNIT == 1 && len >= 1 << 20 && threads > 1).then_some(threads)
}

fn quantize_serial<F: QuantFloat, Q: Storage>(
    x: &[F],
    scale: f64,
    zp: i64,
    lo: i64,
    hi: i64,
    out: &mut [Q],
) -> Result<(), usize> {
    if let Some(result) = crate::arch::quantize(x, scale, zp, lo, hi, out) {
        return result;
    }
    if let Some(i) = first_non_finite(x) {
        return Err(i);
    }
    write_codes(out, x.iter().map(|v| quantize_value(v.to_f64_exact(), scale, zp, lo, hi)));
    Ok(())
}

/// Dequantizes `len` codes stored in `codes` into `out` (`out.len() == len`).
///
/// # Errors
/// [`QuantError::LengthMismatch`] if `codes` does not hold exactly `len` codes or `out` is
/// not `len` long.
pub fn dequantize_into<F: QuantFloat, Q: Storage>(
    codes: &[Q],
    len: usize,
    params: &QuantParams<F>,
    out: &mut [F],
) -> Result<(), QuantError> {
    check_units::<Q>("input codes", len, codes.len())?;
    QuantError::check_length("output values", len, out.len())?;
    crate::arch::check()?;
    let (scale, zp) = (params.scale(), params.zero_point());
    #[cfg(feature = "parallel")]
    if let Some(parts) = parallel_parts::<Q>(len) {
        use rayon::prelude::*;
        let chunk = len.div_ceil(parts).next_multiple_of(64);
        codes
            .par_chunks(chunk)
            .zip(out.par_chunks_mut(chunk))
            .for_each(|(cs, os)| dequantize_serial(cs, scale, zp, os));
        return Ok(());
    }
    dequantize_serial(codes, scale, zp, out);
    Ok(())
}

/// Dequantizes `out.len()` codes from `codes` (validated lengths).
fn dequantize_serial<F: QuantFloat, Q: Storage>(codes: &[Q], scale: F, zp: i64, out: &mut [F]) {
    if !crate::arch::dequantize(codes, scale.to_f64_exact(), zp, out) {
        let len = out.len();
        for (o, q) in out.iter_mut().zip(read_codes(codes, len)) {
            *o = dequantize_code(q, scale, zp);
        }
    }
}

/// A quantized tensor: codes in storage `Q`, the spec and the parameters that made them.
///
/// Built only by [`quantize`], so the codes, length and parameters always agree.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized<F, Q> {
    codes: Vec<Q>,
    len: usize,
    spec: QuantSpec,
    params: QuantParams<F>,
}

impl<F: QuantFloat, Q: Storage> Quantized<F, Q> {
    /// Assembles a quantized tensor from parts that agree (checked by the callers).
    pub(crate) fn from_parts(codes: Vec<Q>, len: usize, spec: QuantSpec, params: QuantParams<F>) -> Self {
        Quantized { codes, len, spec, params }
    }

    /// The storage units, `Q::CODES_PER_UNIT` codes to a unit.
    #[must_use]
    pub fn codes(&self) -> &[Q] {
        &self.codes
    }

    /// Takes the storage units out.
    #[must_use]
    pub fn into_codes(self) -> Vec<Q> {
        self.codes
    }

    /// Number of codes (elements).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The scheme and width.
    #[must_use]
    pub fn spec(&self) -> QuantSpec {
        self.spec
    }

    /// Scale and zero point.
    #[must_use]
    pub fn params(&self) -> &QuantParams<F> {
        &self.params
    }

    /// The code of element `i` (`i < len`).
    #[must_use]
    pub fn code(&self, i: usize) -> i64 {
        Q::code_at(&self.codes, i)
    }

    /// All codes, unpacked, in order.
    pub fn iter_codes(&self) -> impl Iterator<Item = i64> + '_ {
        read_codes(&self.codes, self.len)
    }

    /// Dequantizes every element.
    #[must_use]
    pub fn dequantize(&self) -> Vec<F> {
        let (scale, zp) = (self.params.scale(), self.params.zero_point());
        self.iter_codes().map(|q| dequantize_code(q, scale, zp)).collect()
    }
}

/// Quantizes `x` per tensor: parameters from its range (see [`QuantParams::from_tensor`]),
/// codes in storage `Q`.
///
/// # Errors
/// [`QuantError::StorageTooNarrow`] or [`QuantError::NonFinite`].
///
/// # Example
/// ```
/// use quant_core::{quantize, QuantSpec};
/// use quant_traits::I4x2;
///
/// let q = quantize::<f32, I4x2>(&[7.0, -2.5, 0.5, 1.5, -7.0], QuantSpec::symmetric(4)?)?;
/// assert_eq!(q.params().scale(), 1.0); // 7 / (2^3 - 1)
/// assert_eq!(q.iter_codes().collect::<Vec<_>>(), [7, -2, 0, 2, -7]); // ties to even
/// assert_eq!(q.codes().len(), 3); // five nibbles in three bytes
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize<F: QuantFloat, Q: Storage>(x: &[F], spec: QuantSpec) -> Result<Quantized<F, Q>, QuantError> {
    spec.check_storage::<Q>()?;
    let params = QuantParams::from_tensor(spec, x)?;
    let mut codes = alloc::vec![Q::default(); Q::units_for(x.len())];
    quantize_into(x, spec, &params, &mut codes)?;
    Ok(Quantized { codes, len: x.len(), spec, params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    // Round first, then add the zero point (ONNX / PyTorch): 2.5 -> 2, + 3 = 5.
    // Adding first would give round(5.5) = 6.
    #[case(2.5, 1.0, 3, 5)]
    #[case(3.5, 1.0, 3, 7)]
    #[case(-0.5, 1.0, 0, 0)]
    #[case(-1.5, 1.0, 10, 8)]
    #[case(1e30, 1.0, 0, 255)]
    #[case(-1e30, 1.0, 200, 0)]
    fn round_then_add_zero_point(#[case] x: f64, #[case] s: f64, #[case] zp: i64, #[case] q: i64) {
        assert_eq!(quantize_value(x, s, zp, 0, 255), q);
    }

    #[test]
    fn dequantize_saturates_at_the_float_max() {
        use quant_traits::half::f16;
        let s = f16::from_f64_nearest(65504.0 / 127.0); // rounds up to 516
        assert_eq!(dequantize_code(127, s, 0), f16::MAX);
        assert_eq!(dequantize_code(-128, s, 0), f16::MIN);
    }

    #[test]
    fn shape_errors_write_nothing_and_nan_is_named() {
        let spec = QuantSpec::symmetric(8).expect("valid");
        let p = QuantParams::new(spec, 1.0f32, 0).expect("valid");
        let mut out = [7i8; 3];
        assert!(matches!(
            quantize_into(&[1.0f32, 2.0, f32::NAN], spec, &p, &mut out),
            Err(QuantError::NonFinite { index: 2, .. })
        ));
        // Every length and SIMD block position of the bad element is named exactly.
        for len in [1usize, 15, 16, 17, 40, 100] {
            for bad in [0, len / 2, len - 1] {
                let mut x = vec![0.5f32; len];
                x[bad] = f32::INFINITY;
                let mut o = vec![0i8; len];
                assert_eq!(
                    quantize_into(&x, spec, &p, &mut o),
                    Err(QuantError::NonFinite { index: bad, value: f64::INFINITY })
                );
            }
        }
        let mut out = [7i8; 3];
        assert_eq!(
            quantize_into(&[1.0f32, 2.0], spec, &p, &mut out),
            Err(QuantError::LengthMismatch { what: "output codes", expected: 2, found: 3 })
        );
    }

    #[test]
    fn params_from_another_spec_are_rejected() {
        let a8 = QuantSpec::asymmetric(8).expect("valid");
        let a4 = QuantSpec::asymmetric(4).expect("valid");
        let p = QuantParams::new(a8, 1.0f32, 200).expect("valid");
        let mut out = [0u8; 1];
        assert_eq!(
            quantize_into(&[1.0f32], a4, &p, &mut out),
            Err(QuantError::InvalidZeroPoint { zero_point: 200, min: 0, max: 15 })
        );
    }

    #[test]
    fn dequantize_checks_lengths() {
        let spec = QuantSpec::asymmetric(4).expect("valid");
        let p = QuantParams::new(spec, 1.0f32, 0).expect("valid");
        let mut out = [0.0f32; 3];
        let codes = [quant_traits::U4x2(0x21), quant_traits::U4x2(0x03)];
        dequantize_into(&codes, 3, &p, &mut out).expect("lengths match");
        assert_eq!(out, [1.0, 2.0, 3.0]);
        assert_eq!(
            dequantize_into(&codes, 5, &p, &mut [0.0f32; 5]),
            Err(QuantError::LengthMismatch { what: "input codes", expected: 3, found: 2 })
        );
    }
}
