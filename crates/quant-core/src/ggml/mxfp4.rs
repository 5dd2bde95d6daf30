//! MXFP4, the OCP microscaling block format as llama.cpp stores it (`GGML_TYPE_MXFP4`), byte
//! for byte: blocks of 32 values, each one E8M0 shared exponent and 32 E2M1 (`float4e2m1`)
//! codes, 17 bytes per block (4.25 bits per weight).
//!
//! # Arithmetic (llama.cpp's `quantize_row_mxfp4_ref`, the `gguf` package's `MXFP4`)
//! * `amax = max |x|` over the block; `e = floor(log2f(amax)) - 2 + 127` (0 for an all-zero
//!   block), where `log2f` is rounded to `f32` before the floor: a maximum one ulp below a
//!   power of two `2^k` (for `|k| >= 2`) gets `k`, as in llama.cpp, not the exact `k - 1`.
//! * `d = 2^(e - 128)` (half the OCP scale `2^(e - 127)`, since the levels are stored doubled:
//!   `0, 1, 2, 3, 4, 6, 8, 12` and their negatives, i.e. E2M1's values times 2).
//! * Each value's code is the level `k` minimising `|f32(f32(d · k) - x)|`, the first of the 16 codes
//!   on a tie. That is the nearest value, like OCP's round-to-nearest-even conversion, except on
//!   exact ties, where the lower code wins: `1.75` goes to `1.5`, `3.5` to `3`, where RNE gives
//!   `2` and `4` (and `-0.25 · 2d` to `+0` rather than `-0`).
//! * Byte 0 is `e`; bytes `1 + j` hold value `j` in their low nibble and value `j + 16` in their
//!   high nibble (llama.cpp's split halves).
//! * Dequantization: `x = d · k`, exact in `f32`.
//! * A block maximum below `2^-125` would make `e` negative; `gguf` then wraps the byte around
//!   (a C cast of a negative float to `uint8_t` is undefined). Here `e` is 0 there, whose
//!   `d = 2^-128` still represents such values to within half a level.
//! * NaN or infinite values are an error naming the element; lengths must be whole blocks.
//!
//! The functions here are [`BlockFormat::MXFP4`]'s (the `quant` tool writes it into GGUF files as
//! type 39); this module holds its arithmetic.
//!
//! Golden-tested against the `gguf` package (`crates/quant-core/tests/fixtures/mxfp4.py`): every byte and every
//! dequantized bit, on blocks built to hit every tie, the `log2f` rounding, zeros and both ends
//! of `f32`'s range.

use alloc::vec::Vec;

use quant_traits::cast::{exponent, floor, i64_to_f64, scale_by_pow2};
use quant_traits::{QuantError, QuantFloat};

use super::BlockFormat;

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: the exponent and 16 bytes of codes.
pub const BLOCK_BYTES: usize = 17;

/// The 16 levels, doubled (llama.cpp's `kvalues_mxfp4`), in code order.
pub(crate) const LEVELS: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `ln(m)` for `m` in `[1, 2)`, to within a few `f64` ulps (`2 atanh((m - 1) / (m + 1))`).
fn ln_1_2(m: f64) -> f64 {
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let (mut term, mut sum) = (s, 0.0);
    // s <= 1/3: each term shrinks by 9 at least; 30 terms reach far below an ulp.
    for n in 0..30 {
        sum += term / i64_to_f64(2 * n + 1);
        term *= s2;
    }
    2.0 * sum
}

/// `floor(log2f(a))` for a finite `a > 0`: `log2(a)` rounded to `f32`, then floored.
fn floor_log2f(a: f64) -> i32 {
    let k = exponent(a);
    let m = scale_by_pow2(a, -k);
    let log2 = i64_to_f64(i64::from(k)) + ln_1_2(m) / core::f64::consts::LN_2;
    let rounded = f32::from_f64_nearest(log2).to_f64_exact();
    // Only the rounding up onto k + 1 can change the floor.
    if floor(rounded) > i64_to_f64(i64::from(k)) {
        k + 1
    } else {
        k
    }
}

/// The code of `x` against the doubled levels scaled by `d`: the first minimum of
/// `|f32(f32(d · k) - x)|` (`d · k` overflows to infinity in `f32` near `f32::MAX`, as in
/// llama.cpp, and then loses).
fn code(x: f32, d: f64) -> u8 {
    let mut best = (f64::INFINITY, 0u8);
    for (c, &k) in (0u8..).zip(&LEVELS) {
        let level = f32::from_f64_nearest(d * f64::from(k)).to_f64_exact();
        let err = f32::from_f64_nearest(level - f64::from(x)).to_f64_exact().abs();
        if err < best.0 {
            best = (err, c);
        }
    }
    best.1
}

/// One block of 32 finite values into 17 bytes.
pub(crate) fn quantize_block(block: &[f32], bytes: &mut [u8]) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let e = if amax > 0.0 { (floor_log2f(f64::from(amax)) - 2 + 127).clamp(0, 254) } else { 0 };
    let d = scale_by_pow2(1.0, e - 128);
    bytes[0] = u8::try_from(e).unwrap_or(0);
    for j in 0..BLOCK / 2 {
        bytes[1 + j] = code(block[j], d) | (code(block[j + BLOCK / 2], d) << 4);
    }
}

/// One block's exact integer form: the levels and the scale `d = 2^(e - 128)` (an `f32`
/// from `2^-128`, a subnormal, to `2^127`).
pub(crate) fn integer_block(b: &[u8], codes: &mut [i8], scale: &mut [f32]) {
    scale[0] = f32::from_f64_nearest(scale_by_pow2(1.0, i32::from(b[0]) - 128));
    for (j, &q) in b[1..BLOCK_BYTES].iter().enumerate() {
        codes[j] = LEVELS[usize::from(q & 0xf)];
        codes[j + BLOCK / 2] = LEVELS[usize::from(q >> 4)];
    }
}

/// Quantizes `x` (whole blocks of 32) into `out` (17 bytes per block).
///
/// # Errors
/// [`QuantError::NotABlockMultiple`], [`QuantError::LengthMismatch`],
/// [`QuantError::NonFinite`] naming the first NaN or infinite value; all before anything is
/// written.
///
/// # Example
/// ```
/// use quant_core::mxfp4;
///
/// let mut x = [0.0f32; 32];
/// x[0] = 6.0; // amax 6: e = floor(log2 6) - 2 + 127 = 127, levels 0.5 apart up to 6
/// x[1] = 1.75; // a tie between 1.5 and 2: the lower code, as llama.cpp
/// x[16] = -0.5;
/// let bytes = mxfp4::quantize(&x)?;
/// assert_eq!((bytes.len(), bytes[0]), (17, 127));
/// assert_eq!((bytes[1], bytes[2]), (0x9 << 4 | 7, 3)); // -0.5 (code 9) above 6 (code 7); 1.5
/// assert_eq!(mxfp4::dequantize(&bytes)?[..2], [6.0, 1.5]);
/// # Ok::<(), quant_core::QuantError>(())
/// ```
pub fn quantize_into(x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    BlockFormat::MXFP4.quantize_into(x, out)
}

/// Quantizes `x` (whole blocks of 32) into a new vector.
///
/// # Errors
/// As [`quantize_into`].
pub fn quantize(x: &[f32]) -> Result<Vec<u8>, QuantError> {
    BlockFormat::MXFP4.quantize(x)
}

/// Dequantizes whole blocks: `x = 2^(e - 128) · k`.
///
/// # Errors
/// [`QuantError::NotABlockMultiple`] if `bytes` is not whole blocks;
/// [`QuantError::LengthMismatch`] if `out` is not 32 values per block.
pub fn dequantize_into(bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    BlockFormat::MXFP4.dequantize_into(bytes, out)
}

/// Dequantizes whole blocks into a new vector.
///
/// # Errors
/// As [`dequantize_into`].
pub fn dequantize(bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    BlockFormat::MXFP4.dequantize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2f_rounds_onto_the_next_power_below_it() {
        assert_eq!(floor_log2f(6.0), 2);
        assert_eq!(floor_log2f(1.0), 0);
        // One f32 ulp below 8: log2 is 3 - 8.6e-8, which rounds to 3.0 in f32.
        assert_eq!(floor_log2f(f64::from(f32::from_bits(8.0f32.to_bits() - 1))), 3);
        // One ulp below 1: -8.6e-8 is an f32 of its own, so the floor stays -1.
        assert_eq!(floor_log2f(f64::from(f32::from_bits(1.0f32.to_bits() - 1))), -1);
        assert_eq!(floor_log2f(f64::from(f32::from_bits(1))), -149);
    }

    #[test]
    fn bad_lengths_and_values_are_refused() {
        assert!(matches!(quantize(&[0.0; 31]), Err(QuantError::NotABlockMultiple { len: 31, block: 32, .. })));
        let mut x = [1.0f32; 64];
        x[40] = f32::NAN;
        assert!(matches!(quantize(&x), Err(QuantError::NonFinite { index: 40, .. })));
        assert!(matches!(dequantize(&[0; 16]), Err(QuantError::NotABlockMultiple { len: 16, block: 17, .. })));
    }
}
