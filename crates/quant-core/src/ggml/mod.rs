//! llama.cpp's block formats, byte for byte: the legacy `Q8_0`, `Q4_0`, `Q4_1`, `Q5_0`,
//! `Q5_1` (blocks of 32), the k-quants `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K` (super-blocks
//! of 256), `MXFP4` (blocks of 32) and the non-linear `IQ4_NL` (blocks of 32) and `IQ4_XS`
//! (super-blocks of 256).
//!
//! A row of `f32` values is cut into blocks; each block becomes a fixed number of bytes, exactly
//! as llama.cpp's reference row quantizers (`quantize_row_q8_0_ref` and friends in
//! `ggml-quants.c`, which `ggml_quantize_chunk` runs when no importance matrix is given) write
//! them. The arithmetic is theirs, in `f32`, including the roundings that differ from the rest
//! of this crate (which rounds ties to even):
//!
//! | format | bytes | block | codes |
//! |---|---|---|---|
//! | `Q8_0` | 34 | `d: f16`, `qs: [i8; 32]` | `d = amax / 127`, `q = roundf(x · (1/d))` (ties away from zero) |
//! | `Q4_0` | 18 | `d: f16`, `qs: [u8; 16]` | `d = max / -8` (`max` the value of largest magnitude, the first one on a tie), `q = min(15, trunc(x · (1/d) + 8.5))` |
//! | `Q4_1` | 20 | `d: f16`, `m: f16`, `qs: [u8; 16]` | `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - min) · (1/d) + 0.5))` |
//! | `Q5_0` | 22 | `d: f16`, `qh: [u8; 4]`, `qs: [u8; 16]` | `d = max / -16`, `q = min(31, trunc(x · (1/d) + 16.5))` |
//! | `Q5_1` | 24 | `d: f16`, `m: f16`, `qh: [u8; 4]`, `qs: [u8; 16]` | `d = (max - min) / 31`, `m = min`, `q = trunc((x - min) · (1/d) + 0.5)` |
//! | `Q2_K` | 84 per 256 | `d`, `dmin`, 4-bit scales and mins per 16 values, 2-bit codes | searched per sub-block of 16 (absolute error) |
//! | `Q3_K` | 110 per 256 | `d`, 6-bit scales per 16 values, 2-bit codes plus a high-bit mask | searched per sub-block of 16 |
//! | `Q4_K` | 144 per 256 | `d`, `dmin`, 6-bit sub-block scales and mins, 4-bit codes | searched per sub-block of 32 (see `kquants`) |
//! | `Q5_K` | 176 per 256 | as `Q4_K` with a fifth bit per code | searched per sub-block of 32 |
//! | `Q6_K` | 210 per 256 | 6-bit codes, 8-bit scales per 16 values, `d` | searched per sub-block of 16 |
//! | `MXFP4` | 17 | `e: E8M0`, `qs: [u8; 16]` (E2M1) | `e = floor(log2f(amax)) - 2 + 127`, nearest level, see [`crate::mxfp4`] |
//! | `IQ4_NL` | 18 | `d: f16`, `qs: [u8; 16]` (indices into 16 levels) | a scale search over 16 candidates per block, nearest level (see `iq4`) |
//! | `IQ4_XS` | 136 per 256 | `d`, 6-bit scales per 32 values, `qs: [u8; 128]` | the same search per sub-block of 32, scales to 6 bits |
//!
//! * Every product, sum and quotient is one `f32` operation, rounded to nearest even, in ggml's
//!   order, with no fused multiply-add (ggml's reference quantizers live in `ggml-base`, which
//!   x86-64 builds compile for the baseline ISA, without FMA; `gguf`'s NumPy code has none
//!   either). `1/d` is computed from the `f32` `d`, before `d` is stored as `f16` (to nearest,
//!   ties to even); `d = 0` gives `1/d = 0`.
//! * The 32-value formats keep llama.cpp's *split halves* order: byte `j` of `qs` holds value
//!   `j` in its low nibble and value `j + 16` in its high nibble. (Not the interleaved order of
//!   [`I4x2`](quant_traits::I4x2).) `Q4_0` stores `q` with an offset of 8, `Q5_0` with 16; the
//!   `Q5` formats keep each code's fifth bit in `qh` (bit `j` for value `j`, little-endian).
//! * Dequantization: `Q8_0` `x = q · d`, `Q4_0` `x = (q - 8) · d`, `Q5_0` `x = (q - 16) · d`,
//!   `Q4_1` and `Q5_1` `x = q · d + m` (one rounding each, `d` and `m` widened from `f16`); the
//!   k-quants as `kquants` says.
//!
//! **Importance matrices.** [`BlockFormat::quantize_weighted`] takes llama.cpp's `imatrix`
//! (one weight per column, from calibration activations) and runs ggml's weighted searches
//! (`quantize_row_*_impl`): `make_qx_quants` for `Q4_0`, `Q5_0`, `Q3_K` and `Q6_K`,
//! `make_qkx3_quants` for `Q4_1`, `Q5_1`, `Q2_K`, `Q4_K`, `Q5_K` (37 candidate scales), and
//! `make_qp_quants` for the k-quants' sub-block scales; `IQ4_NL` and `IQ4_XS` run their own
//! search under the weights (with `σ²` of the block, or super-block); `Q8_0` and `MXFP4`
//! ignore the weights, as ggml does.
//!
//! Golden tests compare every byte and every dequantized bit: the legacy `Q8_0`/`Q4_0`/`Q4_1`
//! with fixtures made by the `gguf` package (`crates/quant-core/tests/fixtures/ggml.py`), `Q5_0`, `Q5_1`, the
//! k-quants and the `IQ4` formats with fixtures made by ggml itself (`crates/quant-core/tests/fixtures/ggml_k.py`, ggml-python built
//! from source; `gguf`'s dequantizers agree with ggml's on all of them). Rows whose length is
//! not a whole number of blocks and NaN or infinite values are errors, not silently encoded.

mod iq4;
mod kquants;
mod lanes;
pub mod mxfp4;
mod round;

use alloc::vec::Vec;

use quant_traits::cast::{f64_to_i64_saturating, narrow, round_half_away, trunc};
use quant_traits::half::f16;
use quant_traits::{QuantError, QuantFloat};

use crate::scalar::first_non_finite;

use round::signed_max;

/// Values per block of the legacy formats (`Q8_0`, `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`); the
/// k-quants take super-blocks of [`BlockFormat::block_len`] = 256.
pub const BLOCK: usize = 32;

/// One of llama.cpp's block formats (see the module docs for their exact arithmetic).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types)] // llama.cpp's names, as GGUF files and users spell them
pub enum BlockFormat {
    /// 8-bit symmetric: `f16` scale and 32 `i8` codes (34 bytes per 32 values).
    Q8_0,
    /// 4-bit symmetric with offset 8: `f16` scale and 16 bytes of codes (18 bytes).
    Q4_0,
    /// 4-bit with a minimum: `f16` scale, `f16` minimum and 16 bytes of codes (20 bytes).
    Q4_1,
    /// 5-bit symmetric with offset 16: `f16` scale, 4 bytes of fifth bits, 16 bytes of low
    /// nibbles (22 bytes).
    Q5_0,
    /// 5-bit with a minimum: `f16` scale and minimum, fifth bits, low nibbles (24 bytes).
    Q5_1,
    /// k-quant, 2 bits with 4-bit scales and minimums per 16 values (84 bytes per 256).
    Q2_K,
    /// k-quant, 3 bits with 6-bit scales per 16 values (110 bytes per 256).
    Q3_K,
    /// k-quant, 4 bits with 6-bit scales and minimums per 32 values (144 bytes per 256).
    Q4_K,
    /// k-quant, 5 bits with 6-bit scales and minimums per 32 values (176 bytes per 256).
    Q5_K,
    /// k-quant, 6 bits with an 8-bit scale per 16 values (210 bytes per 256).
    Q6_K,
    /// OCP microscaling FP4: an E8M0 exponent and 32 E2M1 codes (17 bytes per 32), with
    /// llama.cpp's arithmetic ([`crate::mxfp4`]).
    MXFP4,
    /// Non-linear 4-bit: an `f16` scale and 32 indices into 16 levels (18 bytes per 32).
    IQ4_NL,
    /// Non-linear 4-bit with 6-bit scales per 32 values under one `f16` (136 bytes per 256).
    IQ4_XS,
}

impl BlockFormat {
    /// Every format, legacy first.
    pub const ALL: [BlockFormat; 13] = [
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q2_K,
        BlockFormat::Q3_K,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
        BlockFormat::MXFP4,
        BlockFormat::IQ4_NL,
        BlockFormat::IQ4_XS,
    ];

    /// The format's name as llama.cpp spells it (`"Q8_0"`, `"Q4_K"`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q2_K => "Q2_K",
            BlockFormat::Q3_K => "Q3_K",
            BlockFormat::Q4_K => "Q4_K",
            BlockFormat::Q5_K => "Q5_K",
            BlockFormat::Q6_K => "Q6_K",
            BlockFormat::MXFP4 => "MXFP4",
            BlockFormat::IQ4_NL => "IQ4_NL",
            BlockFormat::IQ4_XS => "IQ4_XS",
        }
    }

    /// The format's type id in ggml (`enum ggml_type`) and so in GGUF files.
    #[must_use]
    pub const fn ggml_type(self) -> u32 {
        match self {
            BlockFormat::Q4_0 => 2,
            BlockFormat::Q4_1 => 3,
            BlockFormat::Q5_0 => 6,
            BlockFormat::Q5_1 => 7,
            BlockFormat::Q8_0 => 8,
            BlockFormat::Q2_K => 10,
            BlockFormat::Q3_K => 11,
            BlockFormat::Q4_K => 12,
            BlockFormat::Q5_K => 13,
            BlockFormat::Q6_K => 14,
            BlockFormat::MXFP4 => 39,
            BlockFormat::IQ4_NL => 20,
            BlockFormat::IQ4_XS => 23,
        }
    }

    /// Values per block: 32, or 256 for the k-quants and `IQ4_XS`.
    #[must_use]
    pub const fn block_len(self) -> usize {
        match self {
            BlockFormat::Q2_K
            | BlockFormat::Q3_K
            | BlockFormat::Q4_K
            | BlockFormat::Q5_K
            | BlockFormat::Q6_K
            | BlockFormat::IQ4_XS => kquants::QK_K,
            BlockFormat::Q8_0
            | BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::MXFP4
            | BlockFormat::IQ4_NL => BLOCK,
        }
    }

    /// Bytes per block of [`BlockFormat::block_len`] values.
    #[must_use]
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q2_K => 84,
            BlockFormat::Q3_K => 110,
            BlockFormat::Q4_K => 144,
            BlockFormat::Q5_K => 176,
            BlockFormat::Q6_K => 210,
            BlockFormat::MXFP4 => mxfp4::BLOCK_BYTES,
            BlockFormat::IQ4_NL => iq4::NL_BYTES,
            BlockFormat::IQ4_XS => iq4::XS_BYTES,
        }
    }

    /// Values per sub-block: the span of one scale (and minimum) in
    /// [`BlockFormat::integer_form_into`]: 16 for `Q2_K`, `Q3_K` and `Q6_K`, 32 for the others.
    #[must_use]
    pub const fn sub_block_len(self) -> usize {
        match self {
            BlockFormat::Q2_K | BlockFormat::Q3_K | BlockFormat::Q6_K => 16,
            BlockFormat::Q8_0
            | BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::Q4_K
            | BlockFormat::Q5_K
            | BlockFormat::MXFP4
            | BlockFormat::IQ4_NL
            | BlockFormat::IQ4_XS => BLOCK,
        }
    }

    /// What the format's integer codes stand for (see [`BlockFormat::integer_form_into`]).
    #[must_use]
    pub const fn codes(self) -> BlockCodes {
        match self {
            BlockFormat::Q8_0 => BlockCodes::Signed { bits: 8 },
            BlockFormat::Q4_0 => BlockCodes::Signed { bits: 4 },
            BlockFormat::Q5_0 => BlockCodes::Signed { bits: 5 },
            BlockFormat::Q3_K => BlockCodes::Signed { bits: 3 },
            BlockFormat::Q6_K => BlockCodes::Signed { bits: 6 },
            BlockFormat::Q2_K => BlockCodes::Unsigned { bits: 2 },
            BlockFormat::Q4_1 | BlockFormat::Q4_K => BlockCodes::Unsigned { bits: 4 },
            BlockFormat::Q5_1 | BlockFormat::Q5_K => BlockCodes::Unsigned { bits: 5 },
            BlockFormat::MXFP4 => BlockCodes::Levels(&mxfp4::LEVELS),
            BlockFormat::IQ4_NL | BlockFormat::IQ4_XS => BlockCodes::Levels(&iq4::LEVELS),
        }
    }

    /// Bits per weight, scales included (`Q4_0`: 4.5, `Q4_K`: 4.5, `Q6_K`: 6.5625).
    #[must_use]
    #[expect(clippy::as_conversions, reason = "ggml's block packing (nibbles, 5th bits), as ggml writes it")]
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }

    /// Bytes for `len` values (which must be a whole number of blocks).
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] if `len` is not a multiple of
    /// [`BlockFormat::block_len`].
    pub fn bytes_for(self, len: usize) -> Result<usize, QuantError> {
        self.check_row(len)?;
        Ok(len / self.block_len() * self.block_bytes())
    }

    fn check_row(self, len: usize) -> Result<(), QuantError> {
        if len.is_multiple_of(self.block_len()) {
            Ok(())
        } else {
            Err(QuantError::NotABlockMultiple { what: "row", format: self.name(), len, block: self.block_len() })
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
        for (block, bytes) in x.chunks_exact(self.block_len()).zip(out.chunks_exact_mut(self.block_bytes())) {
            if let Some(block) = block.first_chunk::<BLOCK>().filter(|_| self.block_len() == BLOCK) {
                match self {
                    BlockFormat::Q8_0 => q8_0(block, bytes),
                    BlockFormat::Q4_0 => q4_0(block, bytes),
                    BlockFormat::Q4_1 => q4_1(block, bytes),
                    BlockFormat::Q5_0 => q5_0(block, bytes),
                    BlockFormat::Q5_1 => q5_1(block, bytes),
                    BlockFormat::MXFP4 => mxfp4::quantize_block(block, bytes),
                    BlockFormat::IQ4_NL => iq4::quantize_nl(block, None, bytes),
                    // Blocks of 256: the branch below.
                    BlockFormat::Q2_K
                    | BlockFormat::Q3_K
                    | BlockFormat::Q4_K
                    | BlockFormat::Q5_K
                    | BlockFormat::Q6_K
                    | BlockFormat::IQ4_XS => {}
                }
            } else if let Some(block) = block.first_chunk::<{ kquants::QK_K }>() {
                self.k_block(block, bytes, None);
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

    /// Quantizes rows of `row_len` values with an importance matrix, as llama.cpp's
    /// `llama-quantize --imatrix` does (ggml's `quantize_*` with `quant_weights`): one
    /// non-negative weight per column, `importance[c]` for value `c` of every row, saying how
    /// much an error there costs. The formats search their scales under these weights (the
    /// k-quants and `Q4_0`/`Q4_1`/`Q5_0`/`Q5_1`, byte for byte with ggml; `Q8_0` ignores them,
    /// as ggml does). The legacy formats weigh value `x` of a row by
    /// `importance · sqrt(σ² + x²)` with `σ²` the row's mean square; the k-quants take `σ²` per
    /// super-block (see the module docs of each format).
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] if `row_len` is not a whole number of blocks or `x`
    /// not a whole number of rows; [`QuantError::LengthMismatch`] for an importance vector that
    /// is not `row_len` long or an `out` of the wrong length; [`QuantError::NonFinite`] naming
    /// the first NaN or infinite value and [`QuantError::NonFiniteParameter`] the first such
    /// weight. All are found before anything is written.
    #[expect(clippy::as_conversions, reason = "ggml's block packing (nibbles, 5th bits), as ggml writes it")]
    pub fn quantize_weighted_into(
        self,
        x: &[f32],
        row_len: usize,
        importance: &[f32],
        out: &mut [u8],
    ) -> Result<(), QuantError> {
        let row_bytes = self.bytes_for(row_len)?;
        if row_len == 0 || !x.len().is_multiple_of(row_len) {
            return Err(QuantError::NotABlockMultiple {
                what: "values (whole rows)",
                format: self.name(),
                len: x.len(),
                block: row_len,
            });
        }
        QuantError::check_length("importance weights (one per column)", row_len, importance.len())?;
        QuantError::check_length("block bytes", x.len() / row_len * row_bytes, out.len())?;
        if let Some(index) = first_non_finite(x) {
            return Err(QuantError::NonFinite { index, value: f64::from(x[index]) });
        }
        if let Some(index) = first_non_finite(importance) {
            return Err(QuantError::NonFiniteParameter {
                what: "importance weight",
                index,
                value: f64::from(importance[index]),
            });
        }
        let (n, bb) = (self.block_len(), self.block_bytes());
        for (row, row_out) in x.chunks_exact(row_len).zip(out.chunks_exact_mut(row_bytes)) {
            let sigma2 = kquants::sum_squares(row) / row_len as f32;
            for ((block, bytes), qw) in
                row.chunks_exact(n).zip(row_out.chunks_exact_mut(bb)).zip(importance.chunks_exact(n))
            {
                if let (Some(block), Some(qw)) = (block.first_chunk::<BLOCK>(), qw.first_chunk::<BLOCK>()) {
                    match self {
                        BlockFormat::Q4_0 => q4_0_weighted(block, sigma2, qw, bytes),
                        BlockFormat::Q4_1 => q4_1_weighted(block, sigma2, qw, bytes, 15),
                        BlockFormat::Q5_0 => q5_0_weighted(block, sigma2, qw, bytes),
                        BlockFormat::Q5_1 => q4_1_weighted(block, sigma2, qw, bytes, 31),
                        // ggml's quantize_q8_0 and quantize_mxfp4 ignore the weights.
                        BlockFormat::Q8_0 => q8_0(block, bytes),
                        BlockFormat::MXFP4 => mxfp4::quantize_block(block, bytes),
                        // IQ4_NL weighs by the block's own σ², as ggml does.
                        BlockFormat::IQ4_NL => iq4::quantize_nl(block, Some(qw), bytes),
                        // Blocks of 256: the branch below.
                        BlockFormat::Q2_K
                        | BlockFormat::Q3_K
                        | BlockFormat::Q4_K
                        | BlockFormat::Q5_K
                        | BlockFormat::Q6_K
                        | BlockFormat::IQ4_XS => {}
                    }
                }
                if let (Some(block), Some(qw)) =
                    (block.first_chunk::<{ kquants::QK_K }>(), qw.first_chunk::<{ kquants::QK_K }>())
                {
                    self.k_block(block, bytes, Some(qw));
                }
            }
        }
        Ok(())
    }

    /// Quantizes rows of `row_len` values with an importance matrix into a new byte vector.
    ///
    /// # Errors
    /// As [`BlockFormat::quantize_weighted_into`].
    pub fn quantize_weighted(self, x: &[f32], row_len: usize, importance: &[f32]) -> Result<Vec<u8>, QuantError> {
        let rows = x.len().checked_div(row_len).unwrap_or(0);
        let mut out = alloc::vec![0u8; rows * self.bytes_for(row_len)?];
        self.quantize_weighted_into(x, row_len, importance, &mut out)?;
        Ok(out)
    }

    /// One k-quant super-block, with importance weights or without.
    fn k_block(self, x: &[f32; kquants::QK_K], out: &mut [u8], qw: Option<&[f32; kquants::QK_K]>) {
        match self {
            BlockFormat::Q2_K => kquants::q2_k(x, out, qw),
            BlockFormat::Q3_K => kquants::q3_k(x, out, qw),
            BlockFormat::Q4_K => kquants::q4_k(x, out, qw),
            BlockFormat::Q5_K => kquants::q5_k(x, out, qw),
            BlockFormat::Q6_K => kquants::q6_k(x, out, qw),
            BlockFormat::IQ4_XS => iq4::quantize_xs(x, qw, out),
            // Blocks of 32: quantized by the callers' own match, never here.
            BlockFormat::Q8_0
            | BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::MXFP4
            | BlockFormat::IQ4_NL => {}
        }
    }

    /// Dequantizes `bytes` (whole blocks) into `out` ([`BlockFormat::block_len`] values per
    /// block).
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
        QuantError::check_length("dequantized values", bytes.len() / bb * self.block_len(), out.len())?;
        let (n, subs) = (self.block_len(), self.block_len() / self.sub_block_len());
        let has_min = matches!(self.codes(), BlockCodes::Unsigned { .. });
        let (mut q, mut s, mut m) = ([0i8; kquants::QK_K], [0f32; 16], [0f32; 16]);
        for (b, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(n)) {
            let (q, s, m) = (&mut q[..n], &mut s[..subs], &mut m[..subs]);
            self.integer_block(b, q, s, m);
            // `scale · code (+ min)`: ggml's `d · q` and `dl · q - ml` bit for bit (`a - b` is
            // `a + (-b)` in IEEE arithmetic, zeros' signs included).
            for (i, (o, &c)) in o.iter_mut().zip(q.iter()).enumerate() {
                let v = s[i / (n / subs)] * f32::from(c);
                *o = if has_min { v + m[i / (n / subs)] } else { v };
            }
        }
        Ok(())
    }

    /// Decodes `bytes` (whole blocks) into their exact integer form: for value `i`, in
    /// sub-block `s = i / sub_block_len()`, `w_i = scales[s] · codes[i] + mins[s]` in real
    /// arithmetic. This is what an integer kernel multiplies: the codes are the small integers
    /// of [`BlockFormat::codes`] (`q - 8` for `Q4_0`, `q - 16` for `Q5_0`, `q - 32` for `Q6_K`,
    /// the level `L[i]` for `MXFP4`), and every scale and minimum is an exact `f32`: a block's
    /// `f16` `d` (or `dmin`) times its sub-block's integer scale (at most 8 bits, so at most 19
    /// significant bits), negated for the k-quants' minimums (`- dmin · m`), or `MXFP4`'s
    /// power of two. `mins` are 0 for the formats without a minimum ([`BlockCodes::Signed`],
    /// [`BlockCodes::Levels`]).
    ///
    /// Rounded once to `f32`, `scales[s] · codes[i] + mins[s]` (`scales[s] · codes[i]` for the
    /// formats without a minimum) is [`BlockFormat::dequantize_into`]'s value, bit for bit.
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] if `bytes` is not whole blocks;
    /// [`QuantError::LengthMismatch`] for `codes` not one per value or `scales`/`mins` not one
    /// per sub-block; [`QuantError::NonFiniteParameter`] naming the first block whose scale or
    /// minimum is NaN or infinite (the outputs are then partly written).
    ///
    /// # Example
    /// ```
    /// use quant_core::BlockFormat;
    ///
    /// let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let bytes = BlockFormat::Q4_K.quantize(&x)?;
    /// let (mut codes, mut scales, mut mins) = (vec![0i8; 256], vec![0f32; 8], vec![0f32; 8]);
    /// BlockFormat::Q4_K.integer_form_into(&bytes, &mut codes, &mut scales, &mut mins)?;
    /// let back = BlockFormat::Q4_K.dequantize(&bytes)?;
    /// for i in 0..256 {
    ///     let exact = f64::from(scales[i / 32]) * f64::from(codes[i]) + f64::from(mins[i / 32]);
    ///     assert_eq!(exact as f32, back[i]);
    /// }
    /// # Ok::<(), quant_core::QuantError>(())
    /// ```
    pub fn integer_form_into(
        self,
        bytes: &[u8],
        codes: &mut [i8],
        scales: &mut [f32],
        mins: &mut [f32],
    ) -> Result<(), QuantError> {
        let (bb, n, sub) = (self.block_bytes(), self.block_len(), self.sub_block_len());
        if !bytes.len().is_multiple_of(bb) {
            return Err(QuantError::NotABlockMultiple {
                what: "bytes",
                format: self.name(),
                len: bytes.len(),
                block: bb,
            });
        }
        let blocks = bytes.len() / bb;
        QuantError::check_length("integer codes (one per value)", blocks * n, codes.len())?;
        QuantError::check_length("scales (one per sub-block)", blocks * (n / sub), scales.len())?;
        QuantError::check_length("minimums (one per sub-block)", blocks * (n / sub), mins.len())?;
        let subs = n / sub;
        for (index, b) in bytes.chunks_exact(bb).enumerate() {
            let (q, s, m) = (
                &mut codes[index * n..(index + 1) * n],
                &mut scales[index * subs..(index + 1) * subs],
                &mut mins[index * subs..(index + 1) * subs],
            );
            self.integer_block(b, q, s, m);
            for (what, v) in [("scale of block", &*s), ("minimum of block", &*m)] {
                if let Some(&bad) = v.iter().find(|v| !v.is_finite()) {
                    return Err(QuantError::NonFiniteParameter { what, index, value: f64::from(bad) });
                }
            }
        }
        Ok(())
    }

    /// The super-block factors of one block of a two-level format (`Q2_K` to `Q6_K`,
    /// `IQ4_XS`): `(d, -dmin)`, the block's `f16` scale and negated minimum scale widened to
    /// `f32` (`-dmin` is 0 for the formats without minimums). Every sub-block scale of
    /// [`BlockFormat::integer_form_into`] is `d` times a small integer (the sub-block's stored
    /// scale, at most 8 bits), every minimum `-dmin` times one, both products exact. `None` for
    /// the one-level formats (one `f16` scale per block) and when `block` is not one block.
    #[must_use]
    pub fn super_params(self, block: &[u8]) -> Option<(f32, f32)> {
        if block.len() != self.block_bytes() {
            return None;
        }
        match self {
            BlockFormat::Q2_K => Some((half_at(block, 80), -half_at(block, 82))),
            BlockFormat::Q3_K => Some((half_at(block, 108), 0.0)),
            BlockFormat::Q4_K | BlockFormat::Q5_K => Some((half_at(block, 0), -half_at(block, 2))),
            BlockFormat::Q6_K => Some((half_at(block, 208), 0.0)),
            BlockFormat::IQ4_XS => Some((half_at(block, 0), 0.0)),
            BlockFormat::Q8_0
            | BlockFormat::Q4_0
            | BlockFormat::Q4_1
            | BlockFormat::Q5_0
            | BlockFormat::Q5_1
            | BlockFormat::MXFP4
            | BlockFormat::IQ4_NL => None,
        }
    }

    /// One block's exact integer form (see [`BlockFormat::integer_form_into`]), unchecked:
    /// `q` one code per value, `s` and `m` one scale and minimum per sub-block (0 without).
    fn integer_block(self, b: &[u8], q: &mut [i8], s: &mut [f32], m: &mut [f32]) {
        m.fill(0.0);
        match self {
            BlockFormat::Q8_0 => {
                s[0] = half_at(b, 0);
                for (c, &v) in q.iter_mut().zip(&b[2..34]) {
                    *c = i8::from_le_bytes([v]);
                }
            }
            BlockFormat::Q4_0 => {
                s[0] = half_at(b, 0);
                split_halves(&b[2..18], |j, u| q[j] = narrow::to_i8(i64::from(u) - 8));
            }
            BlockFormat::Q4_1 => {
                (s[0], m[0]) = (half_at(b, 0), half_at(b, 2));
                split_halves(&b[4..20], |j, u| q[j] = narrow::to_i8(i64::from(u)));
            }
            BlockFormat::Q5_0 => {
                s[0] = half_at(b, 0);
                fives(&b[2..22], |j, u| q[j] = narrow::to_i8(i64::from(u) - 16));
            }
            BlockFormat::Q5_1 => {
                (s[0], m[0]) = (half_at(b, 0), half_at(b, 2));
                fives(&b[4..24], |j, u| q[j] = narrow::to_i8(i64::from(u)));
            }
            BlockFormat::Q2_K => kquants::integer_q2_k(b, q, s, m),
            BlockFormat::Q3_K => kquants::integer_q3_k(b, q, s),
            BlockFormat::Q4_K => kquants::integer_q45_k(b, false, q, s, m),
            BlockFormat::Q5_K => kquants::integer_q45_k(b, true, q, s, m),
            BlockFormat::Q6_K => kquants::integer_q6_k(b, q, s),
            BlockFormat::MXFP4 => mxfp4::integer_block(b, q, s),
            BlockFormat::IQ4_NL => iq4::integer_nl(b, q, s),
            BlockFormat::IQ4_XS => iq4::integer_xs(b, q, s),
        }
    }

    /// Dequantizes `bytes` into a new vector.
    ///
    /// # Errors
    /// As [`BlockFormat::dequantize_into`].
    pub fn dequantize(self, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
        let mut out = alloc::vec![0f32; bytes.len() / self.block_bytes() * self.block_len()];
        self.dequantize_into(bytes, &mut out)?;
        Ok(out)
    }
}

/// The 32 nibbles of a legacy block's 16 code bytes, handed to `each(j, u)` for value `j`:
/// byte `j` holds value `j` in its low nibble and value `j + 16` in its high nibble.
fn split_halves(qs: &[u8], mut each: impl FnMut(usize, u8)) {
    for (j, &v) in qs.iter().enumerate() {
        each(j, v & 0x0f);
        each(j + BLOCK / 2, v >> 4);
    }
}

/// The 32 five-bit codes of a `Q5` block's `qh` (4 bytes) and `qs` (16), handed to
/// `each(j, u)` for value `j`.
fn fives(b: &[u8], mut each: impl FnMut(usize, u8)) {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let fifth = |j: usize| if (qh >> j) & 1 == 1 { 16 } else { 0 };
    split_halves(&b[4..20], |j, u| each(j, u | fifth(j)));
}

/// What the integer codes of a block format stand for, per sub-block `s` with scale `d_s`
/// (and minimum `m_s`): see [`BlockFormat::integer_form_into`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockCodes {
    /// Signed integers `q` of `bits` bits: `w = d_s · q` (`Q8_0`, `Q4_0`, `Q5_0`, `Q3_K`,
    /// `Q6_K`).
    Signed {
        /// Bits per code.
        bits: u32,
    },
    /// Unsigned integers `u` of `bits` bits with a minimum: `w = d_s · u + m_s` (`Q4_1`,
    /// `Q5_1`, `Q2_K`, `Q4_K`, `Q5_K`).
    Unsigned {
        /// Bits per code.
        bits: u32,
    },
    /// 4-bit indices into 16 integer levels `L`: `w = d_s · L[i]`; the integer code is the
    /// level (`MXFP4`: E2M1's values doubled).
    Levels(&'static [i8; 16]),
}

/// The `f16` at `b[at..at + 2]` (little-endian), widened to `f32` (exact).
pub(super) fn half_at(b: &[u8], at: usize) -> f32 {
    let h = f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]));
    // Every f16 is an f32: the round trip through f64 is exact.
    f32::from_f64_nearest(h.to_f64_exact())
}

/// `d` rounded to `f16` (to nearest, ties to even), little-endian.
pub(super) fn half_bytes(d: f32) -> [u8; 2] {
    f16::from_f64_nearest(f64::from(d)).to_bits().to_le_bytes()
}

/// A legacy format's code: `v` truncated toward zero (C's conversion to an integer type),
/// then clamped to `0..=max` (ggml's `MIN(max, ..)`, or for `Q5_1` a value already in range;
/// `v` is never below 0 there).
fn truncated_code(v: f32, max: i64) -> u8 {
    narrow::to_u8(f64_to_i64_saturating(trunc(f64::from(v))).clamp(0, max))
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
    let d = signed_max(x).0 / -8.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&half_bytes(d));
    let code = |v: f32| truncated_code(v * id + 8.5, 15);
    for j in 0..BLOCK / 2 {
        out[2 + j] = code(x[j]) | (code(x[j + BLOCK / 2]) << 4);
    }
}

/// The header of `Q4_1` and `Q5_1` (`d = (max - min) / nmax` and `min`, as `f16`, in `out[..4]`):
/// returns `min` and ggml's inverse of `d`, both in `f32` as ggml computes them.
fn min_max_head(x: &[f32; BLOCK], nmax: f32, out: &mut [u8]) -> (f32, f32) {
    let min = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
    let max = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
    let d = (max - min) / nmax;
    out[..2].copy_from_slice(&half_bytes(d));
    out[2..4].copy_from_slice(&half_bytes(min));
    (min, inverse(d))
}

fn q4_1(x: &[f32; BLOCK], out: &mut [u8]) {
    let (min, id) = min_max_head(x, 15.0, out);
    let code = |v: f32| truncated_code((v - min) * id + 0.5, 15);
    for j in 0..BLOCK / 2 {
        out[4 + j] = code(x[j]) | (code(x[j + BLOCK / 2]) << 4);
    }
}

/// Packs 32 five-bit codes: low nibbles split halves at `qs`, fifth bits into `qh`.
fn pack5(code: impl Fn(usize) -> u8, qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let (lo, hi) = (code(j), code(j + BLOCK / 2));
        *q = (lo & 0x0f) | ((hi & 0x0f) << 4);
        h |= u32::from(lo >> 4) << j;
        h |= u32::from(hi >> 4) << (j + BLOCK / 2);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

fn q5_0(x: &[f32; BLOCK], out: &mut [u8]) {
    let d = signed_max(x).0 / -16.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&half_bytes(d));
    let code = |j: usize| truncated_code(x[j] * id + 16.5, 31);
    let (qh, qs) = out[2..22].split_at_mut(4);
    pack5(code, qh, qs);
}

fn q5_1(x: &[f32; BLOCK], out: &mut [u8]) {
    let (min, id) = min_max_head(x, 31.0, out);
    // ggml converts to uint8_t with no clamp: the codes are 0..=31 by construction.
    let code = |j: usize| truncated_code((x[j] - min) * id + 0.5, 31);
    let (qh, qs) = out[4..24].split_at_mut(4);
    pack5(code, qh, qs);
}

/// ggml's `quantize_row_q4_0_impl` for one block: `make_qx_quants` under the weights.
#[expect(clippy::as_conversions, reason = "ggml's block packing (nibbles, 5th bits), as ggml writes it")]
fn q4_0_weighted(x: &[f32; BLOCK], sigma2: f32, qw: &[f32; BLOCK], out: &mut [u8]) {
    let mut l = [0i8; BLOCK];
    let d = kquants::make_qx_quants(8, x, &mut l, Some(&kquants::importance(qw, x, sigma2)));
    out[..2].copy_from_slice(&half_bytes(d));
    for j in 0..BLOCK / 2 {
        out[2 + j] = (l[j] as u8) | ((l[j + BLOCK / 2] as u8) << 4);
    }
}

/// ggml's `quantize_row_q5_0_impl` for one block.
#[expect(clippy::as_conversions, reason = "ggml's block packing (nibbles, 5th bits), as ggml writes it")]
fn q5_0_weighted(x: &[f32; BLOCK], sigma2: f32, qw: &[f32; BLOCK], out: &mut [u8]) {
    let mut l = [0i8; BLOCK];
    let d = kquants::make_qx_quants(16, x, &mut l, Some(&kquants::importance(qw, x, sigma2)));
    out[..2].copy_from_slice(&half_bytes(d));
    let (qh, qs) = out[2..22].split_at_mut(4);
    pack5(|j| l[j] as u8, qh, qs);
}

/// ggml's `quantize_row_q4_1_impl` (`nmax = 15`) and `quantize_row_q5_1_impl` (`nmax = 31`)
/// for one block: a scale and a minimum searched under the weights.
fn q4_1_weighted(x: &[f32; BLOCK], sigma2: f32, qw: &[f32; BLOCK], out: &mut [u8], nmax: i32) {
    let mut l = [0u8; BLOCK];
    let (d, the_min) =
        kquants::make_qkx2_quants(nmax, x, &kquants::importance(qw, x, sigma2), &mut l, -0.9, 0.05, 36, false);
    out[..2].copy_from_slice(&half_bytes(d));
    out[2..4].copy_from_slice(&half_bytes(-the_min));
    if nmax == 15 {
        for j in 0..BLOCK / 2 {
            out[4 + j] = l[j] | (l[j + BLOCK / 2] << 4);
        }
    } else {
        let (qh, qs) = out[4..24].split_at_mut(4);
        pack5(|j| l[j], qh, qs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(
            BlockFormat::ALL.map(BlockFormat::block_bytes),
            [34, 18, 20, 22, 24, 84, 110, 144, 176, 210, 17, 18, 136]
        );
        assert_eq!(
            BlockFormat::ALL.map(BlockFormat::block_len),
            [32, 32, 32, 32, 32, 256, 256, 256, 256, 256, 32, 32, 256]
        );
        assert_eq!(BlockFormat::IQ4_XS.bits_per_weight(), 4.25);
        assert_eq!(BlockFormat::Q2_K.bits_per_weight(), 2.625);
        assert_eq!(BlockFormat::Q3_K.bits_per_weight(), 3.4375);
        assert_eq!(BlockFormat::Q4_K.bits_per_weight(), 4.5);
        assert_eq!(BlockFormat::Q6_K.bits_per_weight(), 6.5625);
        assert_eq!(
            BlockFormat::Q4_K.bytes_for(32),
            Err(QuantError::NotABlockMultiple { what: "row", format: "Q4_K", len: 32, block: 256 })
        );
        assert_eq!(BlockFormat::Q4_1.bytes_for(64), Ok(40));
        assert_eq!(
            BlockFormat::Q4_0.bytes_for(33),
            Err(QuantError::NotABlockMultiple { what: "row", format: "Q4_0", len: 33, block: 32 })
        );
    }
}
