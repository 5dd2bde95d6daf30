//! ggml's integer rounding in `f32`, as its k-quant searches use it (shared by the scalar
//! searches in `kquants` and the lane-parallel one in `lanes`).

/// ggml's `nearest_int`: `v + 12582912` in `f32`, whose low 23 bits minus `2^22` are `v` rounded
/// to nearest, ties to even, for `|v| <= 4194303` (and ggml's value, whatever it is, beyond).
#[expect(clippy::as_conversions, reason = "ggml's nearest_int bit trick and (float)i, as ggml writes them")]
pub(super) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits();
    (bits & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `i` as ggml's `(float)i` for the small integers here (exact).
#[expect(clippy::as_conversions, reason = "ggml's nearest_int bit trick and (float)i, as ggml writes them")]
pub(super) fn float_of(i: i32) -> f32 {
    i as f32
}
