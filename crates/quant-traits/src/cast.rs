//! Every rounding, every clamp and every numeric `as` cast of the quant crates, in one place.
//!
//! The rest of the workspace converts numbers only through these functions, so that the
//! conventions live in exactly one spot:
//!
//! * [`round_ties_even`]: round half to even (Python `round`, NumPy `rint`, PyTorch, ONNX).
//!   Rust's `f64::round` rounds ties *away* from zero and is never used; where a convention
//!   asks for that (llama.cpp's `roundf`), [`round_half_away`] says so by its name, and
//!   [`trunc`] is C's truncation toward zero.
//! * [`round_to_format`]: round an `f64` to a narrower binary format (f32, f16, bf16) to
//!   nearest, ties to even, exactly as IEEE 754 does, overflowing to infinity. Used to build
//!   `f16`/`bf16` values: `half`'s own `from_f64` truncates the low bits of the `f64` first, which
//!   can mis-round values just above a tie.
//! * [`f64_to_i64_saturating`] and [`clamp_i64`]: saturating conversions, never wrapping.
//!
//! All functions work without `std` (no `libm`): they use bit manipulation and the classic
//! `2^52` trick, which is exact under the default IEEE rounding mode that Rust guarantees.

#![allow(
    clippy::as_conversions,
    reason = "this module is where the numeric casts live: each conversion here is exact, checked or documented"
)]

/// `2^52`: at and above this magnitude every `f64` is an integer.
const TWO_POW_52: f64 = 4_503_599_627_370_496.0;

/// The absolute value of `x` (clears the sign bit; works without `std`).
#[inline]
#[must_use]
pub fn abs(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & !(1u64 << 63))
}

/// `magnitude` with the sign of `sign` (works without `std`).
#[inline]
#[must_use]
pub fn copysign(magnitude: f64, sign: f64) -> f64 {
    f64::from_bits((magnitude.to_bits() & !(1u64 << 63)) | (sign.to_bits() & (1u64 << 63)))
}

/// Rounds `x` to the nearest integer, ties to even: `0.5 -> 0`, `1.5 -> 2`, `2.5 -> 2`,
/// `-2.5 -> -2`.
///
/// Identical to `f64::round_ties_even` from `std` (tested against it on millions of values),
/// but available without `std`. NaN and infinities are returned unchanged; the sign of zero is
/// kept (`-0.4 -> -0.0`).
#[inline]
#[must_use]
pub fn round_ties_even(x: f64) -> f64 {
    let a = abs(x);
    // Values that large are already integers; NaN is returned as it is.
    if a >= TWO_POW_52 || a.is_nan() {
        return x;
    }
    // Adding 2^52 moves `a` into [2^52, 2^53), where the spacing of f64 is exactly 1, so the
    // addition itself rounds `a` to an integer, ties to even (2^52 is even, so the parity of
    // the sum is the parity of the rounded `a`). Subtracting 2^52 is then exact.
    let r = (a + TWO_POW_52) - TWO_POW_52;
    copysign(r, x)
}

/// Rounds `x` toward zero (C `trunc`): `2.7 -> 2`, `-2.7 -> -2`. NaN and infinities are
/// returned unchanged; the sign of zero is kept.
#[inline]
#[must_use]
pub fn trunc(x: f64) -> f64 {
    let a = abs(x);
    if a >= TWO_POW_52 || a.is_nan() {
        return x;
    }
    let r = round_ties_even(a);
    copysign(if r > a { r - 1.0 } else { r }, x)
}

/// Rounds `x` to the nearest integer, ties *away from zero* (C `roundf`, Rust's `f64::round`):
/// `0.5 -> 1`, `2.5 -> 3`, `-2.5 -> -3`. Only for conventions that ask for it (llama.cpp's
/// `Q8_0`); everything else rounds with [`round_ties_even`].
#[inline]
#[must_use]
pub fn round_half_away(x: f64) -> f64 {
    let a = abs(x);
    if a >= TWO_POW_52 || a.is_nan() {
        return x;
    }
    let t = trunc(a);
    // `a - t` is exact (both below 2^52, `t` within 1 of `a`).
    copysign(if a - t >= 0.5 { t + 1.0 } else { t }, x)
}

/// `2^k` as an `f64`, for `k` in the normal range `-1022..=1023`.
///
/// # Panics
/// Debug builds assert the range; callers in this workspace only pass exponents they derived
/// from a finite value's exponent field, which stay inside it.
#[inline]
#[must_use]
pub fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k), "pow2 exponent {k} out of range");
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// The unbiased binary exponent of a finite, nonzero `x`: `floor(log2(|x|))`.
///
/// Subnormal `f64` values report `-1023` (they are all smaller than `2^-1022`), which is all
/// the callers here need.
#[inline]
#[must_use]
pub fn exponent(x: f64) -> i32 {
    (((x.to_bits() >> 52) & 0x7ff) as i32) - 1023
}

/// Multiplies `x` by `2^k` for any `k` in `-2100..=2100`, in up to three exact steps, so that
/// a factor outside the range of a single `f64` power of two (e.g. `2^1074`) still works.
/// The result is exact unless it overflows (to infinity) or underflows into the subnormals.
#[must_use]
pub fn scale_by_pow2(x: f64, k: i32) -> f64 {
    let mut x = x;
    let mut k = k;
    while k > 1023 {
        x *= pow2(1023);
        k -= 1023;
    }
    while k < -1022 {
        x *= pow2(-1022);
        k += 1022;
    }
    x * pow2(k)
}

/// Rounds `x` to the nearest value of a binary floating-point format with `digits` significand
/// bits (including the implicit one), smallest normal exponent `min_exp` and largest finite value
/// `max_finite`; ties go to the value with an even last significand bit.
///
/// This is IEEE 754 round-to-nearest-even, including gradual underflow (subnormals) and
/// overflow: a value whose rounding (with an unbounded exponent) exceeds `max_finite` becomes
/// `±inf`. NaN stays NaN. The result is returned as the `f64` holding that value, which is then
/// exactly representable in the target format.
///
/// | format | `digits` | `min_exp` | `max_finite` |
/// |--------|----------|-----------|--------------|
/// | f32    | 24       | -126      | `f32::MAX`   |
/// | f16    | 11       | -14       | 65504        |
/// | bf16   | 8        | -126      | `bf16::MAX`  |
#[must_use]
pub fn round_to_format(x: f64, digits: u32, min_exp: i32, max_finite: f64) -> f64 {
    let a = abs(x);
    if x.is_nan() || a == f64::INFINITY || a == 0.0 {
        return x;
    }
    // The quantum (spacing of the target format) at `a`: 2^(e - digits + 1), where e is the
    // exponent of `a` but never below the format's smallest normal exponent (subnormals share
    // the spacing of the smallest binade).
    let e = exponent(a).max(min_exp);
    let quantum_exp = e - (digits as i32 - 1);
    // Dividing by a power of two is exact here (`a` is at least 2^-1074 and the quotient stays
    // below 2^digits, far inside the normal range); rounding that quotient to an integer is
    // exactly rounding `a` to the format's grid.
    let steps = round_ties_even(scale_by_pow2(a, -quantum_exp));
    let r = scale_by_pow2(steps, quantum_exp);
    let r = if r > max_finite { f64::INFINITY } else { r };
    copysign(r, x)
}

/// Converts an `f64` that holds an integer (or ±inf) to `i64`, saturating at the `i64` bounds;
/// NaN becomes 0 (callers validate NaN away before this point).
#[inline]
#[must_use]
pub fn f64_to_i64_saturating(x: f64) -> i64 {
    // `as` from float to int saturates in Rust (and maps NaN to 0); it never wraps.
    x as i64
}

/// Converts an `i64` to the nearest `f64` (ties to even); exact for `|v| <= 2^53`, which covers
/// every code of a 2..=32-bit scheme.
#[inline]
#[must_use]
pub fn i64_to_f64(v: i64) -> f64 {
    v as f64
}

/// Converts an `i128` (an exact matmul accumulator) to the nearest `f64`, ties to even.
#[inline]
#[must_use]
pub fn i128_to_f64(v: i128) -> f64 {
    v as f64
}

/// Converts a `u32` bit width or small count to `f64` (always exact).
#[inline]
#[must_use]
pub fn u32_to_f64(v: u32) -> f64 {
    f64::from(v)
}

/// Converts an element count to `f64` (exact below `2^53` elements).
#[inline]
#[must_use]
pub fn usize_to_f64(v: usize) -> f64 {
    v as f64
}

/// Converts a count to `f64` (exact below `2^53`).
#[inline]
#[must_use]
pub fn u64_to_f64(v: u64) -> f64 {
    v as f64
}

/// Rounds `x` up to an integer (C `ceil`; works without `std`).
#[inline]
#[must_use]
pub fn ceil(x: f64) -> f64 {
    let t = trunc(x);
    if t < x {
        t + 1.0
    } else {
        t
    }
}

/// Rounds `x` down to an integer (C `floor`; works without `std`).
#[inline]
#[must_use]
pub fn floor(x: f64) -> f64 {
    let t = trunc(x);
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// `a · b + c` with one rounding (to nearest, ties to even): IEEE 754's fused multiply-add on
/// `f32`, bit for bit what `f32::mul_add` and the `vfmadd` instructions give, without `std`.
///
/// The product is exact in `f64` (24 + 24 bits, exponents far inside its range), and so is
/// the error of the `f64` sum (Knuth's two-sum), so the only way rounding the `f64` sum to
/// `f32` can go wrong is a sum that lands exactly halfway between two `f32` values while the
/// exact value does not: then the sum is moved one `f64` step toward the exact value first.
/// Tested against `f32::mul_add` on millions of values, ties and subnormals included.
#[must_use]
pub fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
    let (xy, z) = (f64::from(a) * f64::from(b), f64::from(c));
    let s = xy + z;
    if !s.is_finite() {
        return s as f32;
    }
    let bv = s - xy;
    let err = (xy - (s - bv)) + (z - bv);
    let r = s as f32;
    if err == 0.0 || f64::from(r) == s {
        return r;
    }
    // The f32 next to `r` on `s`'s side (`r` may be zero or infinite; both have that side).
    let bits = r.to_bits();
    let other = f32::from_bits(if abs(s) > abs(f64::from(r)) { bits + 1 } else { bits - 1 });
    let mid = if r.is_infinite() {
        copysign(f64::from(f32::MAX) + pow2(103), s)
    } else {
        (f64::from(r) + f64::from(other)) / 2.0 // exact: adjacent f32 values, 25 bits
    };
    if s != mid {
        return r;
    }
    // One f64 step from `s` toward the exact value `s + err`.
    let toward_larger_magnitude = (err > 0.0) == (s > 0.0);
    let sb = s.to_bits();
    f64::from_bits(if toward_larger_magnitude { sb + 1 } else { sb - 1 }) as f32
}

/// The square root of `x`, correctly rounded (to nearest; a square root is never a tie): bit for
/// bit what `f32::sqrt`, C's `sqrtf` and `sqrtss` give, without `std`. Negative values and NaN
/// give NaN; `-0.0`, `+0.0` and `+inf` are their own roots.
///
/// The significand, scaled by an even power of two into `[2^46, 2^48)`, has an integer square
/// root of 24 bits; the remainder says which way to round. Tested against `f32::sqrt`.
#[must_use]
pub fn sqrt_f32(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 || x.is_infinite() {
        return x;
    }
    let bits = x.to_bits();
    // x = m · 2^e exactly.
    let (mut m, mut e) = if bits >> 23 == 0 {
        (u64::from(bits), -149i32)
    } else {
        (u64::from((bits & 0x007f_ffff) | 0x0080_0000), ((bits >> 23) as i32) - 150)
    };
    if e & 1 != 0 {
        m <<= 1;
        e -= 1;
    }
    while m < 1 << 46 {
        m <<= 2;
        e -= 2;
    }
    // Digit by digit: q = floor(sqrt(m)), in [2^23, 2^24).
    let (mut rest, mut q, mut bit) = (m, 0u64, 1u64 << 46);
    while bit != 0 {
        if rest >= q + bit {
            rest -= q + bit;
            q = (q >> 1) + bit;
        } else {
            q >>= 1;
        }
        bit >>= 2;
    }
    // Round up when m >= (q + 1/2)^2 = q^2 + q + 1/4, i.e. when the remainder exceeds q.
    if rest > q {
        q += 1;
    }
    // q <= 2^24 and the exponent is far inside f32's normal range: both steps are exact.
    (q as f64 * pow2(e / 2)) as f32
}

/// Clamps `v` into `lo..=hi` (callers guarantee `lo <= hi`).
#[inline]
#[must_use]
pub fn clamp_i64(v: i64, lo: i64, hi: i64) -> i64 {
    v.max(lo).min(hi)
}

/// Narrows an `i64` that the caller has already clamped into the target's range.
///
/// These are the only narrowing integer casts of the workspace; every caller clamps first, and
/// debug builds check it.
pub mod narrow {
    macro_rules! narrow_fn {
        ($name:ident, $t:ty) => {
            #[doc = concat!("Narrows a code already clamped into the `", stringify!($t), "` range.")]
            #[inline]
            #[must_use]
            pub fn $name(v: i64) -> $t {
                debug_assert!(
                    v >= i64::from(<$t>::MIN) && v <= i64::from(<$t>::MAX),
                    "code {v} does not fit {}",
                    stringify!($t)
                );
                v as $t
            }
        };
    }
    narrow_fn!(to_i8, i8);
    narrow_fn!(to_u8, u8);
    narrow_fn!(to_i16, i16);
    narrow_fn!(to_u16, u16);
    narrow_fn!(to_i32, i32);
    narrow_fn!(to_u32, u32);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(0.5, 0.0)]
    #[case(1.5, 2.0)]
    #[case(2.5, 2.0)]
    #[case(-0.5, -0.0)]
    #[case(-1.5, -2.0)]
    #[case(-2.5, -2.0)]
    #[case(127.5, 128.0)]
    #[case(-63.5, -64.0)]
    #[case(0.49999999999999994, 0.0)]
    #[case(4503599627370495.5, 4503599627370496.0)]
    #[case(4503599627370497.0, 4503599627370497.0)]
    #[case(-1e300, -1e300)]
    fn ties_go_to_even(#[case] x: f64, #[case] want: f64) {
        let got = round_ties_even(x);
        assert_eq!(got.to_bits(), want.to_bits(), "round_ties_even({x}) = {got}, want {want}");
    }

    #[test]
    fn round_ties_even_matches_std_on_many_values() {
        // Halves, near-halves and random bit patterns across the whole exponent range.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..2_000_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = match i % 4 {
                0 => f64::from_bits(state),
                1 => (state % 100_000) as f64 / 2.0 - 25_000.0,
                2 => f64::from_bits(state & 0xC33F_FFFF_FFFF_FFFF), // exponents near 0
                _ => (state % 1_000_000) as f64 * 0.25 - 125_000.0,
            };
            let same = |got: f64, want: f64| got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan());
            let (got, want) = (round_ties_even(x), x.round_ties_even());
            assert!(same(got, want), "x = {x:e}: got {got:e}, want {want:e}");
            let (got, want) = (trunc(x), x.trunc());
            assert!(same(got, want), "trunc({x:e}): got {got:e}, want {want:e}");
            let (got, want) = (round_half_away(x), x.round());
            assert!(same(got, want), "round_half_away({x:e}): got {got:e}, want {want:e}");
            assert!(same(ceil(x), x.ceil()) && same(floor(x), x.floor()), "ceil/floor({x:e})");
        }
    }

    #[rstest]
    #[case(0.5, 1.0, 0.0)]
    #[case(2.5, 3.0, 2.0)]
    #[case(-2.5, -3.0, -2.0)]
    #[case(-0.49999999999999994, -0.0, -0.0)]
    #[case(2.7, 3.0, 2.0)]
    #[case(-2.7, -3.0, -2.0)]
    fn away_from_zero_and_truncation(#[case] x: f64, #[case] away: f64, #[case] toward_zero: f64) {
        assert_eq!(round_half_away(x).to_bits(), away.to_bits(), "round_half_away({x})");
        assert_eq!(trunc(x).to_bits(), toward_zero.to_bits(), "trunc({x})");
    }

    #[test]
    fn round_to_format_as_f32_matches_the_hardware_cast() {
        let mut state = 0x0123_4567_89AB_CDEFu64;
        for _ in 0..1_000_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Keep exponents in and around f32's range, including its subnormals and overflow.
            let bits = (state & 0x800F_FFFF_FFFF_FFFF) | ((0x340 + (state >> 52) % 0x100) << 52);
            let x = f64::from_bits(bits);
            let want = f64::from(x as f32);
            let got = round_to_format(x, 24, -126, f64::from(f32::MAX));
            assert_eq!(got.to_bits(), want.to_bits(), "x = {x:e}");
        }
    }

    #[test]
    fn fma_f32_matches_std_mul_add() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let same = |got: f32, want: f32| got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan());
        for i in 0..3_000_000u32 {
            let (u, v, w) = (next(), next(), next());
            let (a, b, c) = match i % 4 {
                // Any bit patterns: infinities, NaN, subnormals, overflow.
                0 => (f32::from_bits(u as u32), f32::from_bits(v as u32), f32::from_bits(w as u32)),
                // Exponents near 0 with c cancelling most of a · b.
                1 => {
                    let a = f32::from_bits((u as u32 & 0x807F_FFFF) | (((u >> 40) % 16 + 120) as u32) << 23);
                    let b = f32::from_bits((v as u32 & 0x807F_FFFF) | (((v >> 40) % 16 + 120) as u32) << 23);
                    let c = -((f64::from(a) * f64::from(b)) as f32) * (1.0 + (w % 8) as f32 * f32::EPSILON);
                    (a, b, c)
                }
                // a · b exactly halfway between two f32 values (25 significant bits) and c far
                // below it: the f64 sum is that tie, and only c says which way to round.
                2 => {
                    let (ia, ib) = ((u % 4096) as u32 * 2 + 4097, (v % 2048) as u32 * 2 + 6145);
                    let scale = f32::from_bits((((u >> 40) % 8 + 100) as u32) << 23);
                    let (a, b) = (ia as f32 * scale, ib as f32 / scale / 1024.0);
                    let tiny = (f64::from(a) * f64::from(b) * f64::from(f32::EPSILON).powi(2 + (w % 3) as i32)) as f32;
                    (a, b, if w & 8 == 0 { tiny } else { -tiny })
                }
                // Results in the subnormal range.
                _ => {
                    let a = f32::from_bits((u as u32 & 0x807F_FFFF) | (((u >> 40) % 40 + 40) as u32) << 23);
                    let b = f32::from_bits((v as u32 & 0x807F_FFFF) | (((v >> 40) % 40 + 40) as u32) << 23);
                    (a, b, f32::from_bits(w as u32 & 0x80FF_FFFF))
                }
            };
            let (got, want) = (fma_f32(a, b, c), a.mul_add(b, c));
            assert!(same(got, want), "fma({a:e}, {b:e}, {c:e}) = {got:e}, want {want:e}");
        }
        // A tie the f64 sum lands on exactly: 1 + 2^-24 (halfway) plus a tiny positive part.
        let (a, b, c) = (1.0 + f32::EPSILON, 1.0 + f32::EPSILON, -f32::EPSILON * 1.5);
        assert_eq!(fma_f32(a, b, c).to_bits(), a.mul_add(b, c).to_bits());
    }

    #[test]
    fn sqrt_f32_matches_std() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..2_000_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = match i % 3 {
                0 => f32::from_bits(state as u32),
                1 => f32::from_bits((state as u32) & 0x007f_ffff), // subnormals
                _ => (state % 100_000) as f32 * 0.25,              // squares and near-squares
            };
            let (got, want) = (sqrt_f32(x), x.sqrt());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "sqrt({x:e}) = {got:e}, want {want:e}"
            );
        }
        for x in [0.0f32, -0.0, f32::INFINITY, f32::MAX, f32::MIN_POSITIVE, f32::from_bits(1), 4.0, 2.0] {
            assert_eq!(sqrt_f32(x).to_bits(), x.sqrt().to_bits(), "sqrt({x:e})");
        }
        assert!(sqrt_f32(-1.0).is_nan() && sqrt_f32(f32::NEG_INFINITY).is_nan());
    }

    #[test]
    fn clamp_and_saturate() {
        assert_eq!(clamp_i64(300, -128, 127), 127);
        assert_eq!(clamp_i64(-300, -128, 127), -128);
        assert_eq!(f64_to_i64_saturating(f64::INFINITY), i64::MAX);
        assert_eq!(f64_to_i64_saturating(-1e300), i64::MIN);
        assert_eq!(scale_by_pow2(1.0, 1074).to_bits(), f64::INFINITY.to_bits());
        assert_eq!(scale_by_pow2(f64::from_bits(1), 1074), 1.0);
    }
}
