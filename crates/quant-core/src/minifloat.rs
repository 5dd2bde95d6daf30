//! Small floating-point formats as quantization targets: ONNX's `float8e4m3fn`,
//! `float8e4m3fnuz`, `float8e5m2`, `float8e5m2fnuz` and `float4e2m1`, bit for bit.
//!
//! | format | exponent, mantissa bits | bias | largest finite | infinity | NaN | `-0` |
//! |---|---|---|---|---|---|---|
//! | [`E4M3Fn`](MiniFloat::E4M3Fn) | 4, 3 | 7 | 448 | none | `S.1111.111` | yes |
//! | [`E4M3FnUz`](MiniFloat::E4M3FnUz) | 4, 3 | 8 | 240 | none | `0x80` only | none |
//! | [`E5M2`](MiniFloat::E5M2) | 5, 2 | 15 | 57344 | `S.11111.00` | `S.11111.xx` (written as `S.11111.10`) | yes |
//! | [`E5M2FnUz`](MiniFloat::E5M2FnUz) | 5, 2 | 16 | 57344 | none | `0x80` only | none |
//! | [`E2M1`](MiniFloat::E2M1) | 2, 1 | 1 | 6 | none | none | yes |
//!
//! # Conventions (ONNX `Cast` and `QuantizeLinear`, as `ml_dtypes` computes them)
//! * **Rounding**: to nearest, ties to even, with gradual underflow (subnormals); a value that
//!   rounds to zero keeps its sign, except in the `fnuz` formats, which have no `-0`.
//! * **Overflow** (a value that rounds beyond the largest finite one, and `±inf`): with
//!   `saturate` (ONNX's default) the largest finite value of that sign; without, `±inf` in
//!   `E5M2` and NaN in `E4M3Fn`, `E4M3FnUz`, `E5M2FnUz`. `E2M1` always saturates (it has
//!   neither).
//! * **NaN** becomes the format's NaN, keeping the sign where the format has one (`0x7f`/`0xff`
//!   in `E4M3Fn`, `0x7e`/`0xfe` in `E5M2`, `0x80` in the `fnuz` formats). `E2M1` has no NaN:
//!   quantizing one is an error ([`QuantError::NonFinite`](crate::QuantError::NonFinite)) rather than `ml_dtypes`' sign-flipped
//!   zero.
//! * **Decoding** is exact (every value of these formats is an `f32`); NaN codes decode to NaN.
//!
//! Tested against `ml_dtypes` on every code and on values around every rounding boundary, both
//! saturating and not (`crates/quant-core/tests/fixtures/minifloat.py`).

use quant_traits::cast::{copysign, f64_to_i64_saturating, i64_to_f64, round_to_format, scale_by_pow2};

/// A small floating-point format (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MiniFloat {
    /// `float8e4m3fn`: no infinity, NaN `S.1111.111`, largest 448.
    E4M3Fn,
    /// `float8e4m3fnuz`: no infinity, no `-0`, NaN `0x80`, largest 240.
    E4M3FnUz,
    /// `float8e5m2`: IEEE-style infinities and NaNs, largest 57344.
    E5M2,
    /// `float8e5m2fnuz`: no infinity, no `-0`, NaN `0x80`, largest 57344.
    E5M2FnUz,
    /// `float4e2m1` (OCP FP4): values `0, 0.5, 1, 1.5, 2, 3, 4, 6` and their negatives.
    E2M1,
}

/// How a format spends its special codes.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Specials {
    /// The top exponent holds infinity (mantissa 0) and NaNs.
    Ieee,
    /// Only the all-ones code of each sign is NaN.
    Fn,
    /// `0x80` (negative zero's code) is the one NaN.
    FnUz,
    /// No infinity, no NaN.
    None,
}

impl MiniFloat {
    /// Every format, in declaration order.
    pub const ALL: [MiniFloat; 5] =
        [MiniFloat::E4M3Fn, MiniFloat::E4M3FnUz, MiniFloat::E5M2, MiniFloat::E5M2FnUz, MiniFloat::E2M1];

    /// ONNX's name of the type: `"float8e4m3fn"`, ..., `"float4e2m1"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            MiniFloat::E4M3Fn => "float8e4m3fn",
            MiniFloat::E4M3FnUz => "float8e4m3fnuz",
            MiniFloat::E5M2 => "float8e5m2",
            MiniFloat::E5M2FnUz => "float8e5m2fnuz",
            MiniFloat::E2M1 => "float4e2m1",
        }
    }

    /// Exponent bits, mantissa bits, bias, specials.
    const fn layout(self) -> (i32, i32, i32, Specials) {
        match self {
            MiniFloat::E4M3Fn => (4, 3, 7, Specials::Fn),
            MiniFloat::E4M3FnUz => (4, 3, 8, Specials::FnUz),
            MiniFloat::E5M2 => (5, 2, 15, Specials::Ieee),
            MiniFloat::E5M2FnUz => (5, 2, 16, Specials::FnUz),
            MiniFloat::E2M1 => (2, 1, 1, Specials::None),
        }
    }

    /// Bits per code: 8, or 4 for [`MiniFloat::E2M1`].
    #[must_use]
    pub const fn bits(self) -> u32 {
        let (e, m, _, _) = self.layout();
        e.unsigned_abs() + m.unsigned_abs() + 1
    }

    /// The largest finite value (448, 240, 57344, 57344, 6).
    #[must_use]
    pub fn max(self) -> f64 {
        let (e, m, bias, specials) = self.layout();
        let top = (1 << e) - 1;
        let (exp, mantissa) = match specials {
            Specials::Ieee => (top - 1, (1 << m) - 1),
            Specials::Fn => (top, (1 << m) - 2),
            Specials::FnUz | Specials::None => (top, (1 << m) - 1),
        };
        scale_by_pow2(i64_to_f64(i64::from((1 << m) + mantissa)), exp - bias - m)
    }

    /// Whether the format has a NaN code.
    #[must_use]
    pub fn has_nan(self) -> bool {
        self.layout().3 != Specials::None
    }

    /// The code of `x` (see the module docs for rounding, overflow and NaN). `E2M1` maps NaN
    /// to `+0`; the quantizers refuse NaN for it before calling this.
    #[must_use]
    pub fn encode(self, x: f64, saturate: bool) -> u8 {
        let (e, m, bias, specials) = self.layout();
        let sign_bit: u8 = 1 << (e + m);
        let negative = x.is_sign_negative();
        let sign = if negative { sign_bit } else { 0 };
        let all_ones = sign_bit - 1;
        let nan = match specials {
            Specials::Ieee => sign | (all_ones - 1),
            Specials::Fn => sign | all_ones,
            Specials::FnUz => sign_bit,
            Specials::None => 0,
        };
        if x.is_nan() {
            return nan;
        }
        let max = self.max();
        let emin = 1 - bias;
        let r = round_to_format(x, m.unsigned_abs() + 1, emin, max);
        if r.is_infinite() {
            return match (saturate, specials) {
                (true, _) | (_, Specials::None) => sign | self.encode(max, true),
                (false, Specials::Ieee) => sign | (all_ones - ((1 << m) - 1)),
                (false, _) => nan,
            };
        }
        let a = r.abs();
        if a == 0.0 {
            // The fnuz formats have no -0 (its code is their NaN).
            return if specials == Specials::FnUz { 0 } else { sign };
        }
        let exp = quant_traits::cast::exponent(a);
        let (field, mantissa) = if exp < emin {
            (0, scale_by_pow2(a, m - emin))
        } else {
            (exp + bias, scale_by_pow2(a, m - exp) - i64_to_f64(1 << m))
        };
        let code = (i64::from(field) << m) + f64_to_i64_saturating(mantissa);
        sign | u8::try_from(code).unwrap_or(all_ones)
    }

    /// The value of `code` (its low [`bits`](MiniFloat::bits) bits), exactly; NaN codes give NaN.
    #[must_use]
    pub fn decode(self, code: u8) -> f64 {
        let (e, m, bias, specials) = self.layout();
        let sign_bit: u8 = 1 << (e + m);
        let code = code & (sign_bit | (sign_bit - 1));
        let field = i32::from((code & (sign_bit - 1)) >> m);
        let mantissa = i64::from(code & ((1 << m) - 1));
        let top = (1 << e) - 1;
        let special = match specials {
            Specials::FnUz if code == sign_bit => Some(f64::NAN),
            Specials::Fn if field == top && mantissa == (1 << m) - 1 => Some(f64::NAN),
            Specials::Ieee if field == top => Some(if mantissa == 0 { f64::INFINITY } else { f64::NAN }),
            _ => None,
        };
        let magnitude = special.unwrap_or_else(|| {
            if field == 0 {
                scale_by_pow2(i64_to_f64(mantissa), 1 - bias - m)
            } else {
                scale_by_pow2(i64_to_f64((1 << m) + mantissa), field - bias - m)
            }
        });
        copysign(magnitude, if code & sign_bit != 0 { -1.0 } else { 1.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_values_and_widths() {
        let max: [f64; 5] = MiniFloat::ALL.map(MiniFloat::max);
        assert_eq!(max, [448.0, 240.0, 57344.0, 57344.0, 6.0]);
        assert_eq!(MiniFloat::ALL.map(MiniFloat::bits), [8, 8, 8, 8, 4]);
    }

    #[test]
    fn every_finite_code_round_trips() {
        for f in MiniFloat::ALL {
            for code in 0..(1u16 << f.bits()) {
                let code = u8::try_from(code).expect("8 bits");
                let v = f.decode(code);
                if v.is_nan() {
                    continue;
                }
                let back = f.encode(v, false);
                // Infinity encodes to itself; -0 has no code in the fnuz formats (never decoded).
                assert_eq!(back, code, "{} code {code:#x} = {v}", f.name());
            }
        }
    }

    #[test]
    fn float4_values() {
        let values: Vec<f64> = (0..16).map(|c| MiniFloat::E2M1.decode(c)).collect();
        assert_eq!(values[..8], [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(values[9..], [-0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]);
        // 2.5 is a tie between 2 (mantissa 0) and 3 (mantissa 1): even wins; 5 ties to 4.
        assert_eq!(MiniFloat::E2M1.encode(2.5, true), 4);
        assert_eq!(MiniFloat::E2M1.encode(5.0, true), 6);
        assert_eq!(MiniFloat::E2M1.encode(0.25, true), 0); // tie between 0 and 0.5
        assert_eq!(MiniFloat::E2M1.encode(-100.0, false), 0xf);
    }
}
