//! Operand element types (`u8`, `i8`) and zero points: what every other part of the GEMM builds on.

use quant_traits::QuantError;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// An 8-bit operand element: `u8` (activations) or `i8` (activations or weights).
///
/// The engine widens operands to `i16` while packing, so every `u8 x i8`, `i8 x i8` and
/// `u8 x u8` product and pair sum is exact in `i32` (no `vpmaddubsw`-style saturation).
pub trait Operand: Copy + Send + Sync + 'static + sealed::Sealed {
    /// `"u8"` or `"i8"`.
    const NAME: &'static str;
    /// Smallest value.
    const MIN: i32;
    /// Largest value.
    const MAX: i32;
    /// Whether the type is unsigned (`u8`).
    const UNSIGNED: bool;
    /// The value as `i16` (exact).
    fn widen(self) -> i16;
    /// The value of an `i64` already clamped into `MIN..=MAX`.
    fn narrow(v: i64) -> Self;
    /// The values' bytes (two's complement for `i8`), for packing.
    fn bytes(values: &[Self]) -> &[u8];
}

impl Operand for u8 {
    const NAME: &'static str = "u8";
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    const UNSIGNED: bool = true;
    #[inline(always)]
    fn widen(self) -> i16 {
        i16::from(self)
    }
    #[inline(always)]
    fn narrow(v: i64) -> Self {
        quant_traits::cast::narrow::to_u8(v)
    }
    #[inline(always)]
    fn bytes(values: &[Self]) -> &[u8] {
        values
    }
}

impl Operand for i8 {
    const NAME: &'static str = "i8";
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    const UNSIGNED: bool = false;
    #[inline(always)]
    fn widen(self) -> i16 {
        i16::from(self)
    }
    #[inline(always)]
    fn narrow(v: i64) -> Self {
        quant_traits::cast::narrow::to_i8(v)
    }
    #[inline(always)]
    fn bytes(values: &[Self]) -> &[u8] {
        // SAFETY: `i8` and `u8` have the same size and alignment and every bit pattern is a
        // valid `u8`; the new slice borrows the same memory for the same lifetime.
        unsafe { core::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len()) }
    }
}

/// The zero point of an operand: none (symmetric), one for the tensor, or one per channel
/// (per row of A, per column of B).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ZeroPoint<'a> {
    /// Zero point 0.
    #[default]
    None,
    /// One zero point for the whole operand.
    PerTensor(i32),
    /// One zero point per row of A, or per column of B.
    PerChannel(&'a [i32]),
}

impl ZeroPoint<'_> {
    /// The zero point of channel `i`.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> i32 {
        match *self {
            ZeroPoint::None => 0,
            ZeroPoint::PerTensor(z) => z,
            ZeroPoint::PerChannel(z) => z[i],
        }
    }

    /// Largest `|v - z|` over the operand's values `v` and these zero points.
    pub(crate) fn max_centered<T: Operand>(&self) -> u64 {
        let span = |z: i32| u64::from((T::MAX - z).unsigned_abs().max((T::MIN - z).unsigned_abs()));
        match *self {
            ZeroPoint::None => span(0),
            ZeroPoint::PerTensor(z) => span(z),
            ZeroPoint::PerChannel(zs) => zs.iter().map(|&z| span(z)).max().unwrap_or(0),
        }
    }

    /// Checks the length (per channel) and that every zero point is a value of `T`.
    pub(crate) fn check<T: Operand>(&self, what: &'static str, channels: usize) -> Result<(), QuantError> {
        let bad = |index: usize, z: i32| QuantError::ZeroPointOutOfRange {
            zero_point: z,
            index,
            operand: T::NAME,
            min: T::MIN,
            max: T::MAX,
        };
        match *self {
            ZeroPoint::None => Ok(()),
            ZeroPoint::PerTensor(z) => {
                if (T::MIN..=T::MAX).contains(&z) {
                    Ok(())
                } else {
                    Err(bad(0, z))
                }
            }
            ZeroPoint::PerChannel(zs) => {
                QuantError::check_length(what, channels, zs.len())?;
                match zs.iter().position(|z| !(T::MIN..=T::MAX).contains(z)) {
                    None => Ok(()),
                    Some(i) => Err(bad(i, zs[i])),
                }
            }
        }
    }
}
