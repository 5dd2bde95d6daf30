//! Schemes and widths: which codes a quantizer produces.
//!
//! | scheme | codes | zero point |
//! |--------|-------|------------|
//! | [`Scheme::Symmetric`]  | `-2^(b-1) ..= 2^(b-1) - 1` (e.g. `-128..=127`) | always 0 |
//! | [`Scheme::Asymmetric`] | `0 ..= 2^b - 1` (e.g. `0..=255`)               | in the code range |

use quant_traits::{QuantError, Storage};

/// How real values map onto codes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `scale = max|x| / (2^(b-1) - 1)`, zero point 0, signed codes. Suits weights, which are
    /// centred on zero.
    Symmetric,
    /// `scale = (hi - lo) / (2^b - 1)` over the range widened to include 0, a zero point that
    /// makes 0.0 exactly representable, unsigned codes. Suits activations (e.g. after ReLU).
    Asymmetric,
}

impl Scheme {
    /// `"symmetric"` or `"asymmetric"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Symmetric => "symmetric",
            Scheme::Asymmetric => "asymmetric",
        }
    }
}

/// A scheme at a validated bit width (`2..=32`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct QuantSpec {
    scheme: Scheme,
    bits: u32,
}

impl QuantSpec {
    /// A `bits`-wide `scheme`.
    ///
    /// # Errors
    /// [`QuantError::InvalidBits`] unless `2 <= bits <= 32`.
    pub fn new(scheme: Scheme, bits: u32) -> Result<Self, QuantError> {
        if (2..=32).contains(&bits) {
            Ok(QuantSpec { scheme, bits })
        } else {
            Err(QuantError::InvalidBits { bits })
        }
    }

    /// Shorthand for `QuantSpec::new(Scheme::Symmetric, bits)`.
    ///
    /// # Errors
    /// As [`QuantSpec::new`].
    pub fn symmetric(bits: u32) -> Result<Self, QuantError> {
        Self::new(Scheme::Symmetric, bits)
    }

    /// Shorthand for `QuantSpec::new(Scheme::Asymmetric, bits)`.
    ///
    /// # Errors
    /// As [`QuantSpec::new`].
    pub fn asymmetric(bits: u32) -> Result<Self, QuantError> {
        Self::new(Scheme::Asymmetric, bits)
    }

    /// The scheme.
    #[must_use]
    pub const fn scheme(self) -> Scheme {
        self.scheme
    }

    /// The width in bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.bits
    }

    /// Smallest code: `-2^(b-1)` (symmetric) or `0` (asymmetric).
    #[must_use]
    pub const fn code_min(self) -> i64 {
        match self.scheme {
            Scheme::Symmetric => -(1i64 << (self.bits - 1)),
            Scheme::Asymmetric => 0,
        }
    }

    /// Largest code: `2^(b-1) - 1` (symmetric) or `2^b - 1` (asymmetric).
    #[must_use]
    pub const fn code_max(self) -> i64 {
        match self.scheme {
            Scheme::Symmetric => (1i64 << (self.bits - 1)) - 1,
            Scheme::Asymmetric => (1i64 << self.bits) - 1,
        }
    }

    /// Checks that storage `Q` holds every code of this spec.
    ///
    /// # Errors
    /// [`QuantError::StorageTooNarrow`], e.g. symmetric codes in `u8`, or 9-bit codes in `i8`.
    pub fn check_storage<Q: Storage>(self) -> Result<(), QuantError> {
        if Q::MIN_CODE <= self.code_min() && self.code_max() <= Q::MAX_CODE {
            Ok(())
        } else {
            Err(QuantError::StorageTooNarrow {
                scheme: self.scheme.name(),
                bits: self.bits,
                min: self.code_min(),
                max: self.code_max(),
                storage: Q::NAME,
                storage_min: Q::MIN_CODE,
                storage_max: Q::MAX_CODE,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_traits::{I4x2, U4x2};
    use rstest::rstest;

    #[rstest]
    #[case(Scheme::Symmetric, 2, -2, 1)]
    #[case(Scheme::Symmetric, 8, -128, 127)]
    #[case(Scheme::Symmetric, 32, -2_147_483_648, 2_147_483_647)]
    #[case(Scheme::Asymmetric, 2, 0, 3)]
    #[case(Scheme::Asymmetric, 8, 0, 255)]
    #[case(Scheme::Asymmetric, 32, 0, 4_294_967_295)]
    fn code_ranges(#[case] scheme: Scheme, #[case] bits: u32, #[case] lo: i64, #[case] hi: i64) {
        let spec = QuantSpec::new(scheme, bits).expect("valid width");
        assert_eq!((spec.code_min(), spec.code_max()), (lo, hi));
    }

    #[rstest]
    #[case(0)]
    #[case(1)]
    #[case(33)]
    #[case(64)]
    fn widths_outside_2_to_32_are_rejected(#[case] bits: u32) {
        assert_eq!(QuantSpec::symmetric(bits), Err(QuantError::InvalidBits { bits }));
        assert_eq!(QuantSpec::asymmetric(bits), Err(QuantError::InvalidBits { bits }));
    }

    #[test]
    fn storage_must_hold_the_codes() {
        let s8 = QuantSpec::symmetric(8).expect("valid");
        let a8 = QuantSpec::asymmetric(8).expect("valid");
        let a4 = QuantSpec::asymmetric(4).expect("valid");
        let s4 = QuantSpec::symmetric(4).expect("valid");
        assert_eq!(s8.check_storage::<i8>(), Ok(()));
        assert_eq!(a8.check_storage::<u8>(), Ok(()));
        assert_eq!(a8.check_storage::<i16>(), Ok(()));
        assert_eq!(s4.check_storage::<I4x2>(), Ok(()));
        assert_eq!(a4.check_storage::<U4x2>(), Ok(()));
        assert!(matches!(s8.check_storage::<u8>(), Err(QuantError::StorageTooNarrow { .. })));
        assert!(matches!(a8.check_storage::<i8>(), Err(QuantError::StorageTooNarrow { .. })));
        assert!(matches!(s8.check_storage::<I4x2>(), Err(QuantError::StorageTooNarrow { .. })));
        assert!(matches!(
            QuantSpec::asymmetric(32).expect("valid").check_storage::<i32>(),
            Err(QuantError::StorageTooNarrow { storage: "i32", .. })
        ));
    }
}
