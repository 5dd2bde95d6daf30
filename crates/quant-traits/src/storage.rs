//! The integer storage trait: where quantized codes are kept.
//!
//! A storage *unit* holds [`Storage::CODES_PER_UNIT`] codes: one for the plain integers
//! (`i8 u8 i16 u16 i32 u32`), two for the packed 4-bit types [`I4x2`] and [`U4x2`]. A tensor of
//! `len` codes occupies [`Storage::units_for`]`(len)` units; codes are laid out in order, the
//! first code of a unit in its lowest bits (the ONNX and PyTorch `int4`/`uint4` order), and the
//! unused high lanes of a final, partly filled unit are zero.

use core::fmt::Debug;

use crate::cast::{clamp_i64, narrow};

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
    /// Codes per storage unit (1, or 2 for the packed nibble types).
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

macro_rules! nibble_storage {
    ($t:ident, $name:literal, $min:expr, $max:expr, $decode:expr) => {
        impl sealed::Sealed for $t {}
        impl Storage for $t {
            const NAME: &'static str = $name;
            const BITS: u32 = 4;
            const MIN_CODE: i64 = $min;
            const MAX_CODE: i64 = $max;
            const CODES_PER_UNIT: usize = 2;

            #[inline]
            fn pack(codes: &[i64]) -> Self {
                let nibble = |i: usize| {
                    codes.get(i).map_or(0u8, |&c| {
                        // Two's complement low nibble: the `& 0xf` keeps 4 bits of a clamped code.
                        narrow::to_u8(clamp_i64(c, $min, $max) & 0xf)
                    })
                };
                $t(nibble(0) | (nibble(1) << 4))
            }

            #[inline]
            fn lane(self, lane: usize) -> i64 {
                let nibble = (self.0 >> (4 * (lane & 1))) & 0xf;
                $decode(nibble)
            }
        }
    };
}

nibble_storage!(I4x2, "i4x2", -8, 7, |n: u8| i64::from(n) - (i64::from(n & 0x8) << 1));
nibble_storage!(U4x2, "u4x2", 0, 15, i64::from);

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

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
    fn plain_types_report_their_ranges() {
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
    }
}
