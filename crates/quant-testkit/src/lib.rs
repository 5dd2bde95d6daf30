//! Deterministic random data for the quant crates' tests, benches and demo.
//!
//! A seeded SplitMix64 generator (no dependencies, identical output on every machine) and the
//! few distributions the tests need: uniform, normal (Box-Muller), random bit patterns of each
//! float type, and shapes that include the `0` and `1` edges.

pub mod gguf;

use quant_traits::QuantFloat;

/// A SplitMix64 pseudo-random generator: tiny, fast, and the same sequence everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as i64
    }

    /// Uniform index in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A dimension for property tests: 0 and 1 often, otherwise up to `max`.
    pub fn dim(&mut self, max: usize) -> usize {
        match self.index(8) {
            0 => 0,
            1 => 1,
            _ => 1 + self.index(max),
        }
    }

    /// One element of type `F` drawn from a mix that exercises the edge cases: ordinary values
    /// at a random magnitude, exact zeros, halves, and (rarely) values near `F`'s extremes
    /// and its subnormals. Always finite.
    pub fn element<F: QuantFloat>(&mut self, magnitude: f64) -> F {
        let v = match self.index(16) {
            0 => 0.0,
            1 => (self.int(-20, 20) as f64) * 0.5 * magnitude,
            _ => self.uniform(-1.0, 1.0) * magnitude,
        };
        // Keep the value finite (10 * F::MAX would overflow f64 for F = f64), then round to F.
        F::from_f64_saturating(v.clamp(-F::MAX_FINITE, F::MAX_FINITE))
    }

    /// A random "magnitude" for a whole tensor: from the subnormals of `F` up to its maximum,
    /// weighted towards ordinary sizes.
    pub fn magnitude<F: QuantFloat>(&mut self) -> f64 {
        match self.index(10) {
            0 => F::MAX_FINITE,
            1 => F::MAX_FINITE * self.unit(),
            2 => {
                // Down to the smallest subnormal of F.
                let min_sub = F::from_f64_nearest(0.0).next_up().to_f64_exact();
                min_sub * (1.0 + 1000.0 * self.unit())
            }
            _ => 10f64.powf(self.uniform(-6.0, 6.0)),
        }
    }

    /// A vector of `len` elements of `F` at one random magnitude (see [`Rng::element`]).
    pub fn tensor<F: QuantFloat>(&mut self, len: usize) -> Vec<F> {
        let m = self.magnitude::<F>();
        (0..len).map(|_| self.element::<F>(m)).collect()
    }

    /// A random bit width in `2..=32`.
    pub fn bits(&mut self) -> u32 {
        self.int(2, 32) as u32
    }
}

/// proptest strategies for the same data as [`Rng`]'s generators (feature `proptest`): they
/// shrink towards shorter tensors, smaller widths and simpler values.
#[cfg(feature = "proptest")]
pub mod strategy {
    use proptest::prelude::*;
    use quant_traits::QuantFloat;

    /// A tensor-wide magnitude, as [`crate::Rng::magnitude`]: `F`'s maximum, a fraction of it,
    /// `F`'s subnormals, or (mostly) `10^-6 ..= 10^6`.
    pub fn magnitude<F: QuantFloat>() -> BoxedStrategy<f64> {
        let min_sub = F::from_f64_nearest(0.0).next_up().to_f64_exact();
        prop_oneof![
            7 => (-6.0..=6.0f64).prop_map(|e| 10f64.powf(e)),
            1 => Just(F::MAX_FINITE),
            1 => (0.0..=1.0f64).prop_map(|u| F::MAX_FINITE * u),
            1 => (0.0..=1000.0f64).prop_map(move |u| min_sub * (1.0 + u)),
        ]
        .boxed()
    }

    /// One element at magnitude `m`, as [`crate::Rng::element`]: ordinary values, exact zeros
    /// and multiples of half the magnitude. Always finite.
    pub fn element<F: QuantFloat>(m: f64) -> BoxedStrategy<F> {
        prop_oneof![
            14 => (-1.0..=1.0f64).prop_map(move |u| u * m),
            1 => Just(0.0),
            1 => (-20i32..=20).prop_map(move |k| f64::from(k) * 0.5 * m),
        ]
        .prop_map(|v| F::from_f64_saturating(v.clamp(-F::MAX_FINITE, F::MAX_FINITE)))
        .boxed()
    }

    /// A tensor of `len` elements at one magnitude.
    pub fn tensor<F: QuantFloat>(len: core::ops::Range<usize>) -> BoxedStrategy<Vec<F>> {
        magnitude::<F>().prop_flat_map(move |m| proptest::collection::vec(element::<F>(m), len.clone())).boxed()
    }

    /// A bit width in `2..=32`.
    pub fn bits() -> BoxedStrategy<u32> {
        (2u32..=32).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_traits::half::{bf16, f16};

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_ne!(Rng::new(5).next_u64(), Rng::new(6).next_u64());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::new(1);
        let v: Vec<f64> = (0..100_000).map(|_| rng.normal()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }

    fn all_finite<F: QuantFloat>() {
        let mut rng = Rng::new(9);
        for _ in 0..2000 {
            let t: Vec<F> = rng.tensor(8);
            assert!(t.iter().all(|v| v.is_finite()), "{}", F::NAME);
        }
    }

    #[test]
    fn tensors_are_finite_in_every_type() {
        all_finite::<f32>();
        all_finite::<f64>();
        all_finite::<f16>();
        all_finite::<bf16>();
    }
}
