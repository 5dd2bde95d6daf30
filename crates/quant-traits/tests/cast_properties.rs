//! Property tests: every function of `quant_traits::cast` that `std` also has gives `std`'s
//! answer bit for bit, on arbitrary bit patterns (NaN, infinities, subnormals, ±0 included)
//! and on values built to sit on ties.

use proptest::prelude::*;
use quant_traits::cast;

/// Any f64 bit pattern, an integer plus a half (a tie for the rounding functions), or an
/// ordinary value.
fn f64_any() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        (-(1i64 << 52)..(1i64 << 52)).prop_map(|k| k as f64 + 0.5),
        (-1e6..1e6f64),
    ]
}

/// Any f32 bit pattern, or an ordinary value.
fn f32_any() -> impl Strategy<Value = f32> {
    prop_oneof![any::<u32>().prop_map(f32::from_bits), (-1e3..1e3f32)]
}

/// Two values are the same: equal bits, or both NaN.
fn same64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn rounding_functions_equal_std(x in f64_any()) {
        prop_assert!(same64(cast::round_ties_even(x), x.round_ties_even()), "round_ties_even({x:e})");
        prop_assert!(same64(cast::round_half_away(x), x.round()), "round_half_away({x:e})");
        prop_assert!(same64(cast::trunc(x), x.trunc()), "trunc({x:e})");
        prop_assert!(same64(cast::floor(x), x.floor()), "floor({x:e})");
        prop_assert!(same64(cast::ceil(x), x.ceil()), "ceil({x:e})");
        prop_assert!(same64(cast::abs(x), x.abs()), "abs({x:e})");
    }

    #[test]
    fn copysign_equals_std(m in f64_any(), s in f64_any()) {
        prop_assert!(same64(cast::copysign(m, s), m.copysign(s)));
    }

    #[test]
    fn integer_conversions_equal_as(x in f64_any(), v in any::<i64>(), w in any::<i128>(), u in any::<u64>()) {
        prop_assert_eq!(cast::f64_to_i64_saturating(x), x as i64);
        prop_assert_eq!(cast::i64_to_f64(v).to_bits(), (v as f64).to_bits());
        prop_assert_eq!(cast::i128_to_f64(w).to_bits(), (w as f64).to_bits());
        prop_assert_eq!(cast::u64_to_f64(u).to_bits(), (u as f64).to_bits());
        prop_assert_eq!(cast::clamp_i64(v, -5, 7), v.clamp(-5, 7));
    }

    #[test]
    fn fma_and_sqrt_equal_std(a in f32_any(), b in f32_any(), c in f32_any()) {
        prop_assert!(same32(cast::fma_f32(a, b, c), a.mul_add(b, c)), "fma({a:e}, {b:e}, {c:e})");
        prop_assert!(same32(cast::sqrt_f32(a), a.sqrt()), "sqrt({a:e})");
    }
}
