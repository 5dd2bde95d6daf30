//! llama.cpp's block formats `Q8_0`, `Q4_0` and `Q4_1`, byte for byte.
//!
//! A row of `f32` values is cut into blocks of 32; each block becomes a fixed number of bytes,
//! exactly as llama.cpp's reference row quantizers (`quantize_row_q8_0_ref` and friends in
//! `ggml-quants.c`) and their NumPy port in the `gguf` Python package (`gguf.quants`) write them.
//! The arithmetic is theirs, in `f32`, including the roundings that differ from the rest of this
//! crate (which rounds ties to even):
//!
//! | format | bytes | block | codes |
//! |---|---|---|---|
//! | `Q8_0` | 34 | `d: f16`, `qs: [i8; 32]` | `d = amax / 127`, `q = roundf(x · (1/d))` (ties away from zero) |
//! | `Q4_0` | 18 | `d: f16`, `qs: [u8; 16]` | `d = max / -8` (`max` the value of largest magnitude, the first one on a tie), `q = min(15, trunc(x · (1/d) + 8.5))` |
//! | `Q4_1` | 20 | `d: f16`, `m: f16`, `qs: [u8; 16]` | `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - min) · (1/d) + 0.5))` |
//!
//! * Every product, sum and quotient above is one `f32` operation, rounded to nearest even, in
//!   that order (no fused multiply-add; `gguf`'s NumPy code has none, and llama.cpp's C matches it
//!   when the compiler does not contract `x * id + 8.5`). `1/d` is computed from the `f32` `d`,
//!   before `d` is stored as `f16` (to nearest, ties to even); `d = 0` gives `1/d = 0`.
//! * The 4-bit formats keep llama.cpp's *split halves* order: byte `j` of `qs` holds value `j`
//!   in its low nibble and value `j + 16` in its high nibble. (Not the interleaved order of
//!   [`I4x2`](quant_traits::I4x2).) `Q4_0` stores `q` with an offset of 8.
//! * Dequantization: `Q8_0` `x = q · d`, `Q4_0` `x = (q - 8) · d`, `Q4_1` `x = q · d + m`
//!   (one rounding each, `d` and `m` widened from `f16`).
//!
//! Golden tests compare every byte and every dequantized bit with fixtures made by the `gguf`
//! package (`xtask/fixtures/ggml.py` regenerates them). Rows whose length is not a multiple of
//! 32 and NaN or infinite values are errors, not silently encoded.

use alloc::vec::Vec;

use quant_traits::cast::{f64_to_i64_saturating, narrow, round_half_away, trunc};
use quant_traits::half::f16;
use quant_traits::{QuantError, QuantFloat};

use crate::scalar::first_non_finite;

/// Values per block, in every format here.
pub const BLOCK: usize = 32;

/// One of llama.cpp's block formats (see the module docs for their exact arithmetic).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// 8-bit symmetric: `f16` scale and 32 `i8` codes (34 bytes per 32 values).
    Q8_0,
    /// 4-bit symmetric with offset 8: `f16` scale and 16 bytes of codes (18 bytes).
    Q4_0,
    /// 4-bit with a minimum: `f16` scale, `f16` minimum and 16 bytes of codes (20 bytes).
    Q4_1,
}

impl BlockFormat {
    /// The format's name as llama.cpp spells it (`"Q8_0"`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
        }
    }

    /// Bytes per block of [`BLOCK`] values.
    #[must_use]
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
        }
    }

    /// Bytes for `len` values (which must be a multiple of [`BLOCK`]).
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] if `len % 32 != 0`.
    pub fn bytes_for(self, len: usize) -> Result<usize, QuantError> {
        self.check_row(len)?;
        Ok(len / BLOCK * self.block_bytes())
    }

    fn check_row(self, len: usize) -> Result<(), QuantError> {
        if len.is_multiple_of(BLOCK) {
            Ok(())
        } else {
            Err(QuantError::NotABlockMultiple { what: "row", format: self.name(), len, block: BLOCK })
        }
    }

    /// Quantizes `x` into `out` (`bytes_for(x.len())` bytes), block after block.
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] if `x.len()` is not a multiple of 32;
    /// [`QuantError::LengthMismatch`] if `out` has the wrong length; [`QuantError::NonFinite`]
    /// naming the first NaN or infinite value. All are found before anything is written.
    pub fn quantize_into(self, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
        QuantError::check_length("block bytes", self.bytes_for(x.len())?, out.len())?;
        if let Some(index) = first_non_finite(x) {
            return Err(QuantError::NonFinite { index, value: f64::from(x[index]) });
        }
        for (block, bytes) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(self.block_bytes())) {
            let Some(block) = block.first_chunk::<BLOCK>() else { continue };
            match self {
                BlockFormat::Q8_0 => q8_0(block, bytes),
                BlockFormat::Q4_0 => q4_0(block, bytes),
                BlockFormat::Q4_1 => q4_1(block, bytes),
            }
        }
        Ok(())
    }

    /// Quantizes `x` into a new byte vector.
    ///
    /// # Errors
    /// As [`BlockFormat::quantize_into`].
    ///
    /// # Example
    /// ```
    /// use quant_core::BlockFormat;
    ///
    /// let x: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
    /// let bytes = BlockFormat::Q8_0.quantize(&x)?;
    /// assert_eq!(bytes.len(), 34);
    /// // d = 15.5 / 127 (stored as f16); codes roundf(x / d): -15.5 -> -127, -14.5 -> -118.8 -> -119
    /// assert_eq!([bytes[2], bytes[3]].map(|b| b as i8), [-127, -119]);
    /// let back = BlockFormat::Q8_0.dequantize(&bytes)?;
    /// assert!((back[0] - -15.5).abs() < 0.07);
    /// # Ok::<(), quant_core::QuantError>(())
    /// ```
    pub fn quantize(self, x: &[f32]) -> Result<Vec<u8>, QuantError> {
        let mut out = alloc::vec![0u8; self.bytes_for(x.len())?];
        self.quantize_into(x, &mut out)?;
        Ok(out)
    }

    /// Dequantizes `bytes` (whole blocks) into `out` (32 values per block).
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] if `bytes` is not whole blocks;
    /// [`QuantError::LengthMismatch`] if `out` has the wrong length.
    pub fn dequantize_into(self, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
        let bb = self.block_bytes();
        if !bytes.len().is_multiple_of(bb) {
            return Err(QuantError::NotABlockMultiple {
                what: "bytes",
                format: self.name(),
                len: bytes.len(),
                block: bb,
            });
        }
        QuantError::check_length("dequantized values", bytes.len() / bb * BLOCK, out.len())?;
        for (b, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(BLOCK)) {
            let d = half_at(b, 0);
            match self {
                BlockFormat::Q8_0 => {
                    for (v, &q) in o.iter_mut().zip(&b[2..]) {
                        *v = f32::from(i8::from_le_bytes([q])) * d;
                    }
                }
                BlockFormat::Q4_0 => {
                    for (j, &q) in b[2..].iter().enumerate() {
                        o[j] = f32::from(i16::from(q & 0x0f) - 8) * d;
                        o[j + BLOCK / 2] = f32::from(i16::from(q >> 4) - 8) * d;
                    }
                }
                BlockFormat::Q4_1 => {
                    let m = half_at(b, 2);
                    for (j, &q) in b[4..].iter().enumerate() {
                        o[j] = f32::from(q & 0x0f) * d + m;
                        o[j + BLOCK / 2] = f32::from(q >> 4) * d + m;
                    }
                }
            }
        }
        Ok(())
    }

    /// Dequantizes `bytes` into a new vector.
    ///
    /// # Errors
    /// As [`BlockFormat::dequantize_into`].
    pub fn dequantize(self, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
        let mut out = alloc::vec![0f32; bytes.len() / self.block_bytes() * BLOCK];
        self.dequantize_into(bytes, &mut out)?;
        Ok(out)
    }
}

/// The `f16` at `b[at..at + 2]` (little-endian), widened to `f32` (exact).
fn half_at(b: &[u8], at: usize) -> f32 {
    let h = f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]));
    // Every f16 is an f32: the round trip through f64 is exact.
    f32::from_f64_nearest(h.to_f64_exact())
}

/// `d` rounded to `f16` (to nearest, ties to even), little-endian.
fn half_bytes(d: f32) -> [u8; 2] {
    f16::from_f64_nearest(f64::from(d)).to_bits().to_le_bytes()
}

/// `1/d`, or 0 for `d = 0` (as llama.cpp: `id = d ? 1.0f/d : 0.0f`).
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

fn q8_0(x: &[f32; BLOCK], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&half_bytes(d));
    for (o, &v) in out[2..].iter_mut().zip(x) {
        // |v · id| <= 127 (up to rounding), so the code fits i8.
        let q = f64_to_i64_saturating(round_half_away(f64::from(v * id)));
        *o = narrow::to_i8(q.clamp(-128, 127)).to_le_bytes()[0];
    }
}

fn q4_0(x: &[f32; BLOCK], out: &mut [u8]) {
    // The value of largest magnitude, the first one on a tie (a strict `<`, as llama.cpp).
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&half_bytes(d));
    let code = |v: f32| narrow::to_u8(f64_to_i64_saturating(trunc(f64::from(v * id + 8.5))).clamp(0, 15));
    for j in 0..BLOCK / 2 {
        out[2 + j] = code(x[j]) | (code(x[j + BLOCK / 2]) << 4);
    }
}

fn q4_1(x: &[f32; BLOCK], out: &mut [u8]) {
    let min = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
    let max = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
    let d = (max - min) / 15.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&half_bytes(d));
    out[2..4].copy_from_slice(&half_bytes(min));
    let code = |v: f32| narrow::to_u8(f64_to_i64_saturating(trunc(f64::from((v - min) * id + 0.5))).clamp(0, 15));
    for j in 0..BLOCK / 2 {
        out[4 + j] = code(x[j]) | (code(x[j + BLOCK / 2]) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(
            [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1].map(BlockFormat::block_bytes),
            [34, 18, 20]
        );
        assert_eq!(BlockFormat::Q4_1.bytes_for(64), Ok(40));
        assert_eq!(
            BlockFormat::Q4_0.bytes_for(33),
            Err(QuantError::NotABlockMultiple { what: "row", format: "Q4_0", len: 33, block: 32 })
        );
    }
}
