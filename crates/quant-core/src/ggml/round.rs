//! The small helpers ggml's quantizers share, with ggml's exact semantics: its integer
//! rounding in `f32` (the scalar searches in `kquants` and `iq4`, the lane-parallel one in
//! `lanes`) and its value of largest magnitude (the legacy formats, `kquants`, `iq4`).

/// ggml's `nearest_int`: `v + 12582912` in `f32`, whose low 23 bits minus `2^22` are `v` rounded
/// to nearest, ties to even, for `|v| <= 4194303` (and ggml's value, whatever it is, beyond).
#[expect(clippy::as_conversions, reason = "ggml's nearest_int bit trick and (float)i, as ggml writes them")]
pub(super) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits();
    (bits & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The value of largest magnitude and that magnitude, `(max, amax)`, the first one on a tie
/// (ggml's strict comparison); `(0, 0)` for an empty or all-zero slice.
pub(super) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// `i` as ggml's `(float)i` for the small integers here (exact).
#[expect(clippy::as_conversions, reason = "ggml's nearest_int bit trick and (float)i, as ggml writes them")]
pub(super) fn float_of(i: i32) -> f32 {
    i as f32
}
