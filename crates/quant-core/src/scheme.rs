//! Schemes and widths: which codes a quantizer produces.
//!
//! | scheme | codes | zero point |
//! |--------|-------|------------|
//! | [`Scheme::Symmetric`]  | `-2^(b-1) ..= 2^(b-1) - 1` (e.g. `-128..=127`) | always 0 |
//! | [`Scheme::Asymmetric`] | `0 ..= 2^b - 1` (e.g. `0..=255`)               | in the code range |
//! | [`Scheme::Asymmetric`], signed codes ([`QuantSpec::asymmetric_signed`]) | `-2^(b-1) ..= 2^(b-1) - 1` | in the code range |
//!
//! Asymmetric codes are unsigned unless asked for signed: ONNX's `int8`/`int4`/`int16` with a
//! zero point (ONNX Runtime's default activation format in `int8` QDQ models) are signed codes
//! with any zero point in their range. [`QuantSpec::for_storage`] takes the code range from the
//! storage type, as ONNX takes it from the zero point's type. The two asymmetric code ranges give
//! the same scale and the same steps: signed codes and zero points are the unsigned ones minus
//! `2^(b-1)`.

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
    /// Whether the codes are signed (always for symmetric; asked for with asymmetric).
    signed: bool,
}

impl QuantSpec {
    /// A `bits`-wide `scheme`.
    ///
    /// # Errors
    /// [`QuantError::InvalidBits`] unless `2 <= bits <= 32`.
    pub fn new(scheme: Scheme, bits: u32) -> Result<Self, QuantError> {
        if (2..=32).contains(&bits) {
            Ok(QuantSpec { scheme, bits, signed: scheme == Scheme::Symmetric })
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

    /// An asymmetric scheme with signed codes, `-2^(b-1) ..= 2^(b-1) - 1`, and a zero point
    /// anywhere in that range (ONNX `int8`, `int4`, `int16` with a zero point).
    ///
    /// # Errors
    /// As [`QuantSpec::new`].
    ///
    /// # Example
    /// ```
    /// use quant_core::{quantize, QuantSpec};
    ///
    /// let spec = QuantSpec::asymmetric_signed(8)?;
    /// assert_eq!((spec.code_min(), spec.code_max()), (-128, 127));
    /// let q = quantize::<f32, i8>(&[-1.0, 0.0, 3.0], spec)?;
    /// assert_eq!((q.params().scale(), q.params().zero_point()), (4.0 / 255.0, -64)); // 64 - 128
    /// assert_eq!(q.codes(), [-128, -64, 127]);
    /// # Ok::<(), quant_core::QuantError>(())
    /// ```
    pub fn asymmetric_signed(bits: u32) -> Result<Self, QuantError> {
        Self::new(Scheme::Asymmetric, bits).map(|s| QuantSpec { signed: true, ..s })
    }

    /// `scheme` over exactly the codes of storage `Q`: its width, and signed codes if `Q` is
    /// signed (`i8`, [`I4x2`](quant_traits::I4x2), ...). This is how ONNX picks the code range,
    /// from the type of the zero point: `for_storage::<i8>(Scheme::Asymmetric)` is ONNX `int8`
    /// with a zero point, `for_storage::<u16>(Scheme::Asymmetric)` ONNX `uint16`.
    ///
    /// # Errors
    /// [`QuantError::StorageTooNarrow`] for a symmetric scheme in unsigned storage (symmetric
    /// codes are signed).
    pub fn for_storage<Q: Storage>(scheme: Scheme) -> Result<Self, QuantError> {
        let signed = Q::MIN_CODE < 0;
        let spec = match scheme {
            Scheme::Asymmetric if signed => Self::asymmetric_signed(Q::BITS)?,
            _ => Self::new(scheme, Q::BITS)?,
        };
        spec.check_storage::<Q>().map(|()| spec)
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

    /// Whether the codes are signed: always for symmetric, and for
    /// [`QuantSpec::asymmetric_signed`].
    #[must_use]
    pub const fn is_signed(self) -> bool {
        self.signed
    }

    /// Smallest code: `-2^(b-1)` (signed codes) or `0` (unsigned).
    #[must_use]
    pub const fn code_min(self) -> i64 {
        if self.signed {
            -(1i64 << (self.bits - 1))
        } else {
            0
        }
    }

    /// Largest code: `2^(b-1) - 1` (signed codes) or `2^b - 1` (unsigned).
    #[must_use]
    pub const fn code_max(self) -> i64 {
        if self.signed {
            (1i64 << (self.bits - 1)) - 1
        } else {
            (1i64 << self.bits) - 1
        }
    }

    /// The number of steps between the smallest and the largest code that a scale spans:
    /// `2^(b-1) - 1` for symmetric (the top half), `2^b - 1` for asymmetric.
    #[must_use]
    pub const fn steps(self) -> i64 {
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
    #[case(2, -2, 1)]
    #[case(4, -8, 7)]
    #[case(8, -128, 127)]
    #[case(32, -2_147_483_648, 2_147_483_647)]
    fn signed_asymmetric_codes(#[case] bits: u32, #[case] lo: i64, #[case] hi: i64) {
        let spec = QuantSpec::asymmetric_signed(bits).expect("valid width");
        assert_eq!((spec.code_min(), spec.code_max(), spec.steps()), (lo, hi, (1i64 << bits) - 1));
        assert!(spec.is_signed());
        assert!(!QuantSpec::asymmetric(bits).expect("valid").is_signed());
    }

    #[test]
    fn for_storage_takes_the_code_range_of_the_type() {
        use quant_traits::I2x4;
        let range = |s: QuantSpec| (s.scheme(), s.code_min(), s.code_max());
        let a = Scheme::Asymmetric;
        assert_eq!(QuantSpec::for_storage::<i8>(a).map(range), Ok((a, -128, 127)));
        assert_eq!(QuantSpec::for_storage::<u16>(a).map(range), Ok((a, 0, 65535)));
        assert_eq!(QuantSpec::for_storage::<I4x2>(a).map(range), Ok((a, -8, 7)));
        assert_eq!(QuantSpec::for_storage::<I2x4>(a).map(range), Ok((a, -2, 1)));
        let s = Scheme::Symmetric;
        assert_eq!(QuantSpec::for_storage::<i16>(s).map(range), Ok((s, -32768, 32767)));
        assert!(matches!(QuantSpec::for_storage::<u8>(s), Err(QuantError::StorageTooNarrow { storage: "u8", .. })));
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
