//! The few loops of the runtime written with intrinsics, for the CPUs that have them.

/// The smallest and largest value of `row`, NaN skipped, `(0, 0)` when it holds no number,
/// eight lanes at a time (`vminps`/`vmaxps` keep the running value when the new one is NaN, as
/// `f32::min` does).
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn row_range_avx2(row: &[f32]) -> (f32, f32) {
    use core::arch::x86_64::{_mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_set1_ps, _mm256_storeu_ps};
    let (mut lo, mut hi) = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(f32::NEG_INFINITY));
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: 8 readable values.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        // `min(a, b)` returns `b` when either is NaN: the running value `b` survives a NaN `a`.
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
    // SAFETY: 8 writable values each.
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
    }
    let lo = l.iter().chain(rest).fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = h.iter().chain(rest).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if lo <= hi {
        (lo, hi)
    } else {
        (0.0, 0.0)
    }
}
