//! The start and finish of a tile of two ymm registers per row (16 columns), shared by the
//! AVX2 and AVX-VNNI kernels: the correction added to the accumulators before the first
//! product, and the output stage applied to them after the last, so a tile writes C once.
//!
//! The `f32` stage converts each `i32` lane to `f64` (exact), multiplies by the column's
//! `f64` scale, adds its `f64` bias and rounds once to `f32` (`vcvtpd2ps`, ties to even): the
//! operations of the scalar stage, in its order, so the bits are the same.

use core::arch::x86_64::*;

use super::super::{Finish, Start};

/// Columns of a tile.
const NR: usize = 16;

/// Lane masks of columns `0..cols` for the two vectors of a row (all ones when `cols >= 16`).
///
/// # Safety
/// AVX2 present.
#[inline(always)]
unsafe fn masks(cols: usize) -> [__m256i; 2] {
    let live = i32::try_from(cols.min(NR)).unwrap_or(0);
    // SAFETY: AVX2 present (caller).
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        [_mm256_cmpgt_epi32(_mm256_set1_epi32(live), lanes), _mm256_cmpgt_epi32(_mm256_set1_epi32(live - 8), lanes)]
    }
}

/// The accumulators of rows `r0 .. r0 + R` as `start` says: loaded (or zero), plus the terms.
/// The fields are read one by one, never copied as a whole: the driver writes them just
/// before the call, and a wide load of narrower stores would wait for them to retire.
///
/// # Safety
/// `start`'s pointers are valid for rows `r0 .. r0 + R` and `cols` columns; AVX2 present.
#[inline(always)]
pub(super) unsafe fn start<const R: usize>(start: &Start, cols: usize, r0: usize) -> [[__m256i; 2]; R] {
    // SAFETY: AVX present (caller).
    let mut c = [[unsafe { _mm256_setzero_si256() }; 2]; R];
    // SAFETY: every read is inside the rows and columns (masked past `cols`; masked lanes are
    // not read), or inside the terms' NR values and rows (caller).
    unsafe {
        if let Some((src, ld)) = &start.load {
            let (src, ld) = (*src, *ld);
            let full = cols >= NR;
            let m = masks(cols);
            for (r, acc) in c.iter_mut().enumerate() {
                for (v, x) in acc.iter_mut().enumerate() {
                    let p = src.add((r0 + r) * ld + 8 * v);
                    *x = if full { _mm256_loadu_si256(p.cast()) } else { _mm256_maskload_epi32(p, m[v]) };
                }
            }
        }
        if let Some(t) = &start.terms {
            let (col, row) = (t.col, t.row.add(r0));
            let col = [_mm256_loadu_si256(col.cast()), _mm256_loadu_si256(col.add(8).cast())];
            for (r, acc) in c.iter_mut().enumerate() {
                let rv = _mm256_set1_epi32(*row.add(r));
                for (x, &cv) in acc.iter_mut().zip(&col) {
                    *x = _mm256_add_epi32(*x, _mm256_add_epi32(cv, rv));
                }
            }
            for term in &t.mul {
                let Some((x, y)) = term else { continue };
                let (x, y) = (x.add(r0), *y);
                let yv = [_mm256_loadu_si256(y.cast()), _mm256_loadu_si256(y.add(8).cast())];
                for (r, acc) in c.iter_mut().enumerate() {
                    let xv = _mm256_set1_epi32(*x.add(r));
                    for (v, &m) in acc.iter_mut().zip(&yv) {
                        *v = _mm256_add_epi32(*v, _mm256_mullo_epi32(xv, m));
                    }
                }
            }
        }
    }
    c
}

/// Writes rows `r0 .. r0 + R` of accumulators as `finish` says (fields read one by one, as in
/// [`start`]).
///
/// # Safety
/// `finish`'s pointers are valid for rows `r0 .. r0 + R` and `cols` columns; AVX2 present.
#[inline(always)]
pub(super) unsafe fn finish<const R: usize>(c: &[[__m256i; 2]; R], finish: &Finish, cols: usize, r0: usize) {
    let full = cols >= NR;
    // SAFETY: every write is inside the rows and columns (masked past `cols`), every read of
    // the scale and bias inside their NR values (caller).
    unsafe {
        let m = masks(cols);
        match finish {
            Finish::I32 { dst, ld } => {
                let (dst, ld) = (dst.add(r0 * *ld), *ld);
                for (r, acc) in c.iter().enumerate() {
                    for (v, &x) in acc.iter().enumerate() {
                        let p = dst.add(r * ld + 8 * v);
                        if full {
                            _mm256_storeu_si256(p.cast(), x);
                        } else {
                            _mm256_maskstore_epi32(p, m[v], x);
                        }
                    }
                }
            }
            Finish::F32 { dst, ld, scale, bias } => {
                let (dst, ld, scale, bias) = (dst.add(r0 * *ld), *ld, *scale, *bias);
                for v in 0..2 {
                    let s = [_mm256_loadu_pd(scale.add(8 * v)), _mm256_loadu_pd(scale.add(8 * v + 4))];
                    let b = [_mm256_loadu_pd(bias.add(8 * v)), _mm256_loadu_pd(bias.add(8 * v + 4))];
                    for (r, acc) in c.iter().enumerate() {
                        let x = acc[v];
                        let lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(x));
                        let hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(x));
                        let lo = _mm256_cvtpd_ps(_mm256_add_pd(_mm256_mul_pd(lo, s[0]), b[0]));
                        let hi = _mm256_cvtpd_ps(_mm256_add_pd(_mm256_mul_pd(hi, s[1]), b[1]));
                        let f = _mm256_set_m128(hi, lo);
                        let p = dst.add(r * ld + 8 * v);
                        if full {
                            _mm256_storeu_ps(p, f);
                        } else {
                            _mm256_maskstore_ps(p, m[v], f);
                        }
                    }
                }
            }
        }
    }
}

/// [`super::super::MicroKernel::epilogue`] for 16-column panels, four rows at a time: `rows`
/// rows of `start`, then `finish`.
///
/// # Safety
/// As `MicroKernel::epilogue` for these parts; AVX2 present.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn epilogue(start: &Start, finish: &Finish, rows: usize, cols: usize) {
    let mut r = 0;
    // SAFETY: rows `r .. r + 4` (or `r`) of the parts, inside `rows` (caller's contract).
    unsafe {
        while r + 4 <= rows {
            self::finish::<4>(&self::start::<4>(start, cols, r), finish, cols, r);
            r += 4;
        }
        while r < rows {
            self::finish::<1>(&self::start::<1>(start, cols, r), finish, cols, r);
            r += 1;
        }
    }
}
