//! The integer storage trait: where quantized codes are kept.
//!
//! A storage *unit* holds [`Storage::CODES_PER_UNIT`] codes: one for the plain integers
//! (`i8 u8 i16 u16 i32 u32`), two for the packed 4-bit types [`I4x2`] and [`U4x2`], four for the
//! packed 2-bit types [`I2x4`] and [`U2x4`]. A tensor of `len` codes occupies
//! [`Storage::units_for`]`(len)` units; codes are laid out in order, the first code of a unit in
//! its lowest bits (the ONNX and PyTorch `int4`/`uint4` order), and the unused high lanes of a
//! final, partly filled unit are zero (odd lengths are padded with zero bits).
//!
//! Widths 3, 5, 6 and 7 have no packed type: their codes live in the next type that holds
//! them (`i8`/`u8`), which the quantizers check ([`Storage::BITS`] against the scheme's width).

#![allow(clippy::as_conversions, reason = "a storage type's MIN/MAX widened to i64 in a const, exact")]

use core::fmt::Debug;

use crate::cast::{clamp_i64, narrow};
use crate::QuantError;

mod sealed {
    pub trait Sealed {}
}

/// Integer storage for quantized codes.
///
/// Codes travel as `i64` (wide enough for every signed and unsigned code of 2..=32 bits);
/// `MIN_CODE..=MAX_CODE` is the range a unit can hold per lane. A scheme whose code range does
/// not fit is rejected up front by the quantizers with
/// [`QuantError::StorageTooNarrow`](crate::QuantError::StorageTooNarrow).
///
/// The trait is sealed so that the packing contract (lane order, zero padding) holds for every
/// implementation.
pub trait Storage: Copy + Default + Debug + PartialEq + Send + Sync + 'static + sealed::Sealed {
    /// The type's name (`"i8"`, `"u4x2"`, ...), used in errors.
    const NAME: &'static str;
    /// Bits per code.
    const BITS: u32;
    /// Smallest code a lane holds.
    const MIN_CODE: i64;
    /// Largest code a lane holds.
    const MAX_CODE: i64;
    /// Codes per storage unit (1; 2 for the packed 4-bit types; 4 for the 2-bit ones).
    const CODES_PER_UNIT: usize;

    /// Packs up to [`CODES_PER_UNIT`](Storage::CODES_PER_UNIT) codes, the first into the lowest
    /// bits; missing lanes are zero. Each code is clamped into `MIN_CODE..=MAX_CODE` (the
    /// quantizers have clamped already, so this never changes a value they pass).
    fn pack(codes: &[i64]) -> Self;

    /// The code in lane `lane` (`0..CODES_PER_UNIT`).
    fn lane(self, lane: usize) -> i64;

    /// Units needed for `codes` codes.
    #[inline]
    fn units_for(codes: usize) -> usize {
        codes.div_ceil(Self::CODES_PER_UNIT)
    }

    /// The code at flat position `index` of a packed buffer.
    ///
    /// # Panics
    /// If `index / CODES_PER_UNIT` is out of bounds of `units`, like slice indexing.
    #[inline]
    fn code_at(units: &[Self], index: usize) -> i64 {
        units[index / Self::CODES_PER_UNIT].lane(index % Self::CODES_PER_UNIT)
    }
}

/// Packs `codes` into `out`, which must hold exactly [`Storage::units_for`]`(codes.len())`
/// units: whole units straight from `codes`, a final partial unit padded with zero lanes.
/// Codes outside `Q`'s range are clamped (see [`Storage::pack`]).
///
/// # Errors
/// [`QuantError::LengthMismatch`] if `out` has the wrong length.
///
/// # Example
/// ```
/// use quant_traits::{pack_codes, unpack_codes, I4x2};
///
/// let mut packed = [I4x2::default(); 2];
/// pack_codes(&[1, -2, 7], &mut packed)?;
/// assert_eq!(packed, [I4x2(0xe1), I4x2(0x07)]); // first code in the low nibble, zero padding
/// let mut back = [0i64; 3];
/// unpack_codes(&packed, &mut back)?;
/// assert_eq!(back, [1, -2, 7]);
/// # Ok::<(), quant_traits::QuantError>(())
/// ```
pub fn pack_codes<Q: Storage>(codes: &[i64], out: &mut [Q]) -> Result<(), QuantError> {
    QuantError::check_length("packed units", Q::units_for(codes.len()), out.len())?;
    let per = Q::CODES_PER_UNIT;
    let whole = codes.chunks_exact(per);
    let tail = whole.remainder();
    for (u, c) in out.iter_mut().zip(whole) {
        *u = Q::pack(c);
    }
    if let Some(last) = out.last_mut().filter(|_| !tail.is_empty()) {
        *last = Q::pack(tail);
    }
    Ok(())
}

/// Unpacks `out.len()` codes from `units`, which must be exactly
/// [`Storage::units_for`]`(out.len())` units long (the inverse of [`pack_codes`]).
///
/// # Errors
/// [`QuantError::LengthMismatch`] if `units` has the wrong length.
pub fn unpack_codes<Q: Storage>(units: &[Q], out: &mut [i64]) -> Result<(), QuantError> {
    QuantError::check_length("packed units", Q::units_for(out.len()), units.len())?;
    let per = Q::CODES_PER_UNIT;
    for (u, o) in units.iter().zip(out.chunks_mut(per)) {
        for (lane, v) in o.iter_mut().enumerate() {
            *v = u.lane(lane);
        }
    }
    Ok(())
}

macro_rules! plain_storage {
    ($t:ty, $name:literal, $narrow:path) => {
        impl sealed::Sealed for $t {}
        impl Storage for $t {
            const NAME: &'static str = $name;
            const BITS: u32 = <$t>::BITS;
            const MIN_CODE: i64 = <$t>::MIN as i64;
            const MAX_CODE: i64 = <$t>::MAX as i64;
            const CODES_PER_UNIT: usize = 1;

            #[inline]
            fn pack(codes: &[i64]) -> Self {
                codes.first().map_or(0, |&c| $narrow(clamp_i64(c, Self::MIN_CODE, Self::MAX_CODE)))
            }

            #[inline]
            fn lane(self, _lane: usize) -> i64 {
                i64::from(self)
            }
        }
    };
}

plain_storage!(i8, "i8", narrow::to_i8);
plain_storage!(u8, "u8", narrow::to_u8);
plain_storage!(i16, "i16", narrow::to_i16);
plain_storage!(u16, "u16", narrow::to_u16);
plain_storage!(i32, "i32", narrow::to_i32);
plain_storage!(u32, "u32", narrow::to_u32);

/// Two signed 4-bit codes (`-8..=7`) in one byte, two's complement, first code in the low
/// nibble (ONNX `INT4`, PyTorch `int4` packing).
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct I4x2(pub u8);

/// Two unsigned 4-bit codes (`0..=15`) in one byte, first code in the low nibble (ONNX
/// `UINT4`, PyTorch `uint4` packing).
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct U4x2(pub u8);

/// Four signed 2-bit codes (`-2..=1`) in one byte, two's complement, first code in bits 0..2
/// (the same lowest-first order as the 4-bit types; ONNX `INT2`).
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct I2x4(pub u8);

/// Four unsigned 2-bit codes (`0..=3`) in one byte, first code in bits 0..2 (ONNX `UINT2`).
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct U2x4(pub u8);

/// Packed sub-byte codes: `8 / BITS` lanes per byte, lane `i` in bits `BITS*i .. BITS*(i+1)`.
/// Packing and unpacking are shifts and masks, no branch per code.
macro_rules! sub_byte_storage {
    ($t:ident, $name:literal, $bits:literal, signed: $signed:literal) => {
        impl sealed::Sealed for $t {}
        impl Storage for $t {
            const NAME: &'static str = $name;
            const BITS: u32 = $bits;
            const MIN_CODE: i64 = if $signed { -(1 << ($bits - 1)) } else { 0 };
            const MAX_CODE: i64 = if $signed { (1 << ($bits - 1)) - 1 } else { (1 << $bits) - 1 };
            const CODES_PER_UNIT: usize = 8 / $bits;

            #[inline]
            fn pack(codes: &[i64]) -> Self {
                let mut byte = 0u8;
                for (i, &c) in codes.iter().take(Self::CODES_PER_UNIT).enumerate() {
                    // The low `BITS` bits of the clamped code (two's complement when signed).
                    let field = narrow::to_u8(clamp_i64(c, Self::MIN_CODE, Self::MAX_CODE) & ((1 << $bits) - 1));
                    byte |= field << ($bits * i);
                }
                $t(byte)
            }

            #[inline]
            fn lane(self, lane: usize) -> i64 {
                const MASK: u8 = (1 << $bits) - 1;
                let field = i64::from((self.0 >> ($bits * (lane % Self::CODES_PER_UNIT))) & MASK);
                if $signed {
                    // Sign-extend: subtract 2^BITS when the top bit of the field is set.
                    field - ((field & (1 << ($bits - 1))) << 1)
                } else {
                    field
                }
            }
        }
    };
}

sub_byte_storage!(I4x2, "i4x2", 4, signed: true);
sub_byte_storage!(U4x2, "u4x2", 4, signed: false);
sub_byte_storage!(I2x4, "i2x4", 2, signed: true);
sub_byte_storage!(U2x4, "u2x4", 2, signed: false);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use rstest::rstest;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn i4_round_trips_every_pair() {
        for a in -8..=7i64 {
            for b in -8..=7i64 {
                let unit = I4x2::pack(&[a, b]);
                assert_eq!((unit.lane(0), unit.lane(1)), (a, b));
            }
        }
    }

    #[test]
    fn u4_round_trips_every_pair() {
        for a in 0..=15i64 {
            for b in 0..=15i64 {
                let unit = U4x2::pack(&[a, b]);
                assert_eq!((unit.lane(0), unit.lane(1)), (a, b));
            }
        }
    }

    #[rstest]
    // First code in the low nibble: [1, 2] -> 0x21, [-1, 0] -> 0x0f, [-8, 7] -> 0x78.
    #[case(&[1, 2], 0x21)]
    #[case(&[-1, 0], 0x0f)]
    #[case(&[-8, 7], 0x78)]
    #[case(&[-3], 0x0d)] // odd tail: high nibble zero
    fn i4_layout_matches_onnx(#[case] codes: &[i64], #[case] byte: u8) {
        assert_eq!(I4x2::pack(codes).0, byte);
    }

    #[rstest]
    #[case(&[15, 0], 0x0f)]
    #[case(&[0, 15], 0xf0)]
    #[case(&[9], 0x09)]
    fn u4_layout_matches_onnx(#[case] codes: &[i64], #[case] byte: u8) {
        assert_eq!(U4x2::pack(codes).0, byte);
    }

    #[test]
    fn two_bit_types_round_trip_every_quad() {
        let signed = [-2i64, -1, 0, 1];
        let unsigned = [0i64, 1, 2, 3];
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let s = [signed[a], signed[b], signed[c], signed[d]];
                        let unit = I2x4::pack(&s);
                        assert_eq!([0, 1, 2, 3].map(|l| unit.lane(l)), s);
                        let u = [unsigned[a], unsigned[b], unsigned[c], unsigned[d]];
                        let unit = U2x4::pack(&u);
                        assert_eq!([0, 1, 2, 3].map(|l| unit.lane(l)), u);
                        // The byte is the four fields, first lowest.
                        assert_eq!(unit.0, (u[0] | u[1] << 2 | u[2] << 4 | u[3] << 6) as u8);
                    }
                }
            }
        }
    }

    #[rstest]
    // Two's complement 2-bit fields, first code lowest: [1, -2, -1, 0] -> 0b00_11_10_01.
    #[case(&[1, -2, -1, 0], 0b00_11_10_01)]
    #[case(&[-1], 0b11)] // tail padded with zero bits
    #[case(&[-2, -2, -2], 0b00_10_10_10)]
    fn i2_layout(#[case] codes: &[i64], #[case] byte: u8) {
        assert_eq!(I2x4::pack(codes).0, byte);
    }

    fn round_trip<Q: Storage>(codes: &[i64]) {
        let mut units = vec![Q::default(); Q::units_for(codes.len())];
        pack_codes(codes, &mut units).expect("right length");
        let mut back = vec![0i64; codes.len()];
        unpack_codes(&units, &mut back).expect("right length");
        assert_eq!(back, codes, "{}", Q::NAME);
        // The padding lanes of the last unit are zero.
        if let Some(last) = units.last() {
            for lane in codes.len() % Q::CODES_PER_UNIT..Q::CODES_PER_UNIT {
                if !codes.len().is_multiple_of(Q::CODES_PER_UNIT) {
                    assert_eq!(last.lane(lane), 0, "{} padding lane {lane}", Q::NAME);
                }
            }
        }
    }

    #[test]
    fn pack_and_unpack_round_trip_every_length() {
        for len in 0..20usize {
            let signed: Vec<i64> = (0..len as i64).map(|i| (i * 5 + 3) % 16 - 8).collect();
            round_trip::<I4x2>(&signed);
            round_trip::<I2x4>(&signed.iter().map(|c| c.rem_euclid(4) - 2).collect::<Vec<_>>());
            round_trip::<U4x2>(&signed.iter().map(|c| c + 8).collect::<Vec<_>>());
            round_trip::<U2x4>(&signed.iter().map(|c| c.rem_euclid(4)).collect::<Vec<_>>());
            round_trip::<i8>(&signed);
        }
        let mut short = [U4x2::default(); 1];
        assert_eq!(
            pack_codes(&[1, 2, 3], &mut short),
            Err(QuantError::LengthMismatch { what: "packed units", expected: 2, found: 1 })
        );
        assert!(unpack_codes(&short, &mut [0i64; 3]).is_err());
    }

    #[test]
    fn plain_types_report_their_ranges() {
        assert_eq!((I2x4::MIN_CODE, I2x4::MAX_CODE, I2x4::CODES_PER_UNIT), (-2, 1, 4));
        assert_eq!((U2x4::MIN_CODE, U2x4::MAX_CODE, U2x4::units_for(5)), (0, 3, 2));
        assert_eq!(U2x4::code_at(&[U2x4(0xff), U2x4(0b10_00)], 5), 2);
        assert_eq!((i8::MIN_CODE, i8::MAX_CODE), (-128, 127));
        assert_eq!((u32::MIN_CODE, u32::MAX_CODE), (0, 4_294_967_295));
        assert_eq!(i32::pack(&[i64::from(i32::MIN)]), i32::MIN);
        assert_eq!(u8::units_for(5), 5);
        assert_eq!(U4x2::units_for(5), 3);
        assert_eq!(I4x2::code_at(&[I4x2(0x21), I4x2(0x0d)], 2), -3);
    }

    #[test]
    fn pack_clamps_out_of_range_codes() {
        assert_eq!(u8::pack(&[300]), 255);
        assert_eq!(I4x2::pack(&[100, -100]).0, 0x87);
        assert_eq!(I2x4::pack(&[5, -5]).0, 0b10_01);
        assert_eq!(U2x4::pack(&[9]).0, 3);
    }
}
