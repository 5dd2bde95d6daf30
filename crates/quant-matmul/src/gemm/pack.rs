//! Packing operands into the micro-kernels' panel layout.
//!
//! Both operands are stored in *pairs along K* (depth `2p` and `2p + 1` side by side), which
//! is what `vpmaddwd` (and the portable kernel) multiply and add. An odd depth is padded with
//! a zero; rows or columns past the matrix edge are zero, so kernels always compute full tiles.
//!
//! * A, packed per call into `i32` words of two `i16`: in a panel of `MR` rows, word
//!   `p * MR + r` holds `(a[r][2p], a[r][2p+1])`.
//! * B (weights) stays 8-bit: in a panel of `NR` columns, bytes `(p * NR + c) * 2` and `+ 1`
//!   hold `b[2p][c]` and `b[2p+1][c]`. The kernel sign-extends 16 of those bytes to one
//!   vector of 8 pairs. [`PackedB`] keeps a whole matrix packed this way, so weights are packed
//!   once and reused (half the memory traffic of `i16` panels, which matters for `M = 1`).

use alloc::vec::Vec;

use quant_traits::{I4x2, QuantError, Storage};

use crate::gemm::operand::Operand;
use crate::kernels::{MR, NR};
use crate::view::MatRef;

/// One word from two `i16` values: `lo` in bits 0..16, `hi` in bits 16..32.
#[inline(always)]
fn pair(lo: i16, hi: i16) -> i32 {
    i32::from(lo as u16) | (i32::from(hi) << 16)
}

/// Number of K pairs for depth `k`.
#[inline]
pub(crate) fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// Packs rows `[r0, r0 + rows)` of A (all of K) into panels of `mr` rows in `out` (resized).
/// Panel `i` starts at word `i * pairs(k) * mr`.
pub(crate) fn pack_a<T: Operand>(a: &MatRef<'_, T>, r0: usize, rows: usize, mr: usize, out: &mut Vec<i32>) {
    let k = a.cols();
    let kp = pairs(k);
    let panels = rows.div_ceil(mr);
    // Every word is written below, so the buffer is only grown, never cleared.
    out.resize(panels * kp * mr, 0);
    for panel in 0..panels {
        let dst = &mut out[panel * kp * mr..(panel + 1) * kp * mr];
        let live = mr.min(rows - panel * mr);
        if live == mr && mr == MR && k % 2 == 0 {
            // The common case: a full panel, written in order, reading MR rows side by side.
            let src: [&[T]; MR] = core::array::from_fn(|r| a.row(r0 + panel * MR + r));
            for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
                for (w, row) in d.iter_mut().zip(&src) {
                    *w = pair(row[2 * p].widen(), row[2 * p + 1].widen());
                }
            }
            continue;
        }
        // A partial panel (last rows, odd depth): zero first for the padding rows and word.
        dst.fill(0);
        for r in 0..live {
            let row = a.row(r0 + panel * mr + r);
            let (full, tail) = row.split_at(k - k % 2);
            for (d, two) in dst.iter_mut().skip(r).step_by(mr).zip(full.chunks_exact(2)) {
                *d = pair(two[0].widen(), two[1].widen());
            }
            if let Some(&last) = tail.first() {
                dst[(kp - 1) * mr + r] = pair(last.widen(), 0);
            }
        }
    }
}

/// Packs rows `[r0, r0 + rows)` of a `u8` A (all of K) into panels of `mr` rows of *quads*:
/// word `q * mr + r` holds the bytes `a[r][4q .. 4q + 4]` (zero past K), lowest address in the
/// lowest byte. This is the layout of the 7-bit `vpmaddubsw` kernels.
pub(crate) fn pack_a_quads<T: Operand>(a: &MatRef<'_, T>, r0: usize, rows: usize, mr: usize, out: &mut Vec<i32>) {
    let k = a.cols();
    let kq = pairs(k).div_ceil(2);
    let panels = rows.div_ceil(mr);
    // Every word is written below (padding rows zeroed), so the buffer is only grown.
    out.resize(panels * kq * mr, 0);
    for panel in 0..panels {
        let dst = &mut out[panel * kq * mr..(panel + 1) * kq * mr];
        let live = mr.min(rows - panel * mr);
        if live < mr {
            dst.fill(0); // padding rows
        }
        for r in 0..live {
            let row = a.row(r0 + panel * mr + r);
            // The low byte of `widen` is the code's byte (the 7-bit path only sees 0..=127).
            let byte = |v: &T| v.widen() as u8;
            let (full, tail) = row.split_at(row.len() - row.len() % 4);
            for (d, four) in dst.iter_mut().skip(r).step_by(mr).zip(full.chunks_exact(4)) {
                *d = i32::from_le_bytes([byte(&four[0]), byte(&four[1]), byte(&four[2]), byte(&four[3])]);
            }
            if !tail.is_empty() {
                let mut last = [0u8; 4];
                for (l, v) in last.iter_mut().zip(tail) {
                    *l = byte(v);
                }
                dst[(kq - 1) * mr + r] = i32::from_le_bytes(last);
            }
        }
    }
}

/// Regroups one B panel of `kp` depth pairs into quads for the 7-bit kernels: bytes
/// `(q * NR + c) * 4 .. + 4` of `out` (resized) hold column `c` at depths `4q .. 4q + 4`,
/// that is pair `2q` then pair `2q + 1` (zero past `kp`).
pub(crate) fn quads_from_pairs(panel: &[i8], kp: usize, out: &mut Vec<i8>) {
    let kq = kp.div_ceil(2);
    out.resize(kq * NR * 4, 0);
    let zeros = [0i8; NR * 2];
    let mut rows = panel[..kp * NR * 2].chunks_exact(NR * 2).filter_map(<[i8]>::first_chunk::<{ NR * 2 }>);
    for dst in out.chunks_exact_mut(NR * 4).filter_map(<[i8]>::first_chunk_mut::<{ NR * 4 }>) {
        // Pairs 2q and 2q + 1; past `kp` (odd depth), zeros.
        let p0 = rows.next().unwrap_or(&zeros);
        let p1 = rows.next().unwrap_or(&zeros);
        interleave_pairs(p0, p1, dst);
    }
}

/// `dst` holds, per column `c`, `p0`'s pair `c` then `p1`'s pair `c`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn interleave_pairs(p0: &[i8; NR * 2], p1: &[i8; NR * 2], dst: &mut [i8; NR * 4]) {
    use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128, _mm_unpackhi_epi16, _mm_unpacklo_epi16};
    const _: () = assert!(NR == 16);
    // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16 bytes inside a 32-byte
    // array (offsets 0 and 16) and every store writes 16 bytes inside the 64-byte `dst`.
    unsafe {
        let (p0, p1, d) =
            (p0.as_ptr().cast::<__m128i>(), p1.as_ptr().cast::<__m128i>(), dst.as_mut_ptr().cast::<__m128i>());
        for half in 0..2 {
            let (x, y) = (_mm_loadu_si128(p0.add(half)), _mm_loadu_si128(p1.add(half)));
            _mm_storeu_si128(d.add(2 * half), _mm_unpacklo_epi16(x, y));
            _mm_storeu_si128(d.add(2 * half + 1), _mm_unpackhi_epi16(x, y));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn interleave_pairs(p0: &[i8; NR * 2], p1: &[i8; NR * 2], dst: &mut [i8; NR * 4]) {
    for c in 0..NR {
        dst[4 * c..4 * c + 2].copy_from_slice(&p0[2 * c..2 * c + 2]);
        dst[4 * c + 2..4 * c + 4].copy_from_slice(&p1[2 * c..2 * c + 2]);
    }
}

/// Weights packed once for the engine: `K x N` `i8` values in panels of `NR` columns, K in
/// pairs, plus each column's sum (for the zero-point correction of A).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: Vec<i8>,
    col_sums: Vec<i64>,
}

impl PackedB {
    /// Packs a `K x N` `i8` matrix.
    #[must_use]
    pub fn new(b: MatRef<'_, i8>) -> Self {
        let (k, n) = (b.rows(), b.cols());
        let mut packed = PackedB::zeroed(k, n);
        pack_b_into(&b, 0, n, &mut packed.data, &mut packed.col_sums);
        packed
    }

    /// Packs a `K x N` matrix of signed 4-bit codes (ONNX `INT4` order: two codes per byte,
    /// first in the low nibble, row-major over the whole matrix, a `K x N` matrix taking
    /// `ceil(K * N / 2)` bytes), unpacking while packing.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] unless `codes` holds exactly `K * N` codes;
    /// [`QuantError::ShapeOverflow`] if `K * N` overflows.
    pub fn from_i4(codes: &[I4x2], k: usize, n: usize) -> Result<Self, QuantError> {
        let len = k.checked_mul(n).ok_or(QuantError::ShapeOverflow { rows: k, cols: n })?;
        QuantError::check_length("int4 codes (bytes)", I4x2::units_for(len), codes.len())?;
        // Unpack one pair of rows at a time into a small buffer, then pack that like i8.
        let mut packed = PackedB::zeroed(k, n);
        let mut rows = alloc::vec![0i8; 2 * n];
        let kp = pairs(k);
        for p in 0..kp {
            let count = if 2 * p + 1 < k { 2 } else { 1 };
            for (idx, v) in rows.iter_mut().enumerate().take(count * n) {
                let code = I4x2::code_at(codes, 2 * p * n + idx);
                *v = quant_traits::cast::narrow::to_i8(code);
            }
            let (lo, hi) = rows.split_at(n);
            let hi = (count == 2).then_some(hi);
            PairRows { lo, hi }.pack(p, kp, 0, n, &mut packed.data, &mut packed.col_sums);
        }
        Ok(packed)
    }

    fn zeroed(k: usize, n: usize) -> Self {
        let kp = pairs(k);
        PackedB { k, n, data: alloc::vec![0; n.div_ceil(NR) * kp * NR * 2], col_sums: alloc::vec![0; n] }
    }

    /// Depth `K`.
    #[must_use]
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns `N`.
    #[must_use]
    pub fn n(&self) -> usize {
        self.n
    }

    /// The bytes from panel `j` (columns `j * NR ..`) to the end.
    #[inline]
    pub(crate) fn data_from(&self, j: usize) -> &[i8] {
        &self.data[j * pairs(self.k) * NR * 2..]
    }

    pub(crate) fn col_sums(&self) -> &[i64] {
        &self.col_sums
    }
}

/// Packs columns `[c0, c0 + cols)` of B (all of K) into `data` (panel `j` of these columns at
/// byte `j * pairs(k) * NR * 2`), and their column sums into `sums` (`cols` long). Both are
/// resized.
pub(crate) fn pack_b_block(b: &MatRef<'_, i8>, c0: usize, cols: usize, data: &mut Vec<i8>, sums: &mut Vec<i64>) {
    let kp = pairs(b.rows());
    data.clear();
    data.resize(cols.div_ceil(NR) * kp * NR * 2, 0);
    sums.clear();
    sums.resize(cols, 0);
    pack_b_into(b, c0, cols, data, sums);
}

fn pack_b_into(b: &MatRef<'_, i8>, c0: usize, cols: usize, data: &mut [i8], sums: &mut [i64]) {
    let k = b.rows();
    let kp = pairs(k);
    for p in 0..kp {
        let hi = if 2 * p + 1 < k { Some(b.row(2 * p + 1)) } else { None };
        PairRows { lo: b.row(2 * p), hi }.pack(p, kp, c0, cols, data, sums);
    }
}

/// Rows `2p` and `2p + 1` of B (the second absent past an odd K).
struct PairRows<'a> {
    lo: &'a [i8],
    hi: Option<&'a [i8]>,
}

impl PairRows<'_> {
    /// Writes depth pair `p` of columns `[c0, c0 + cols)` into every panel, and adds the two
    /// rows to the column sums.
    fn pack(&self, p: usize, kp: usize, c0: usize, cols: usize, data: &mut [i8], sums: &mut [i64]) {
        let panel_len = kp * NR * 2;
        for (panel, start) in (0..cols).step_by(NR).enumerate() {
            let width = NR.min(cols - start);
            let lo = &self.lo[c0 + start..c0 + start + width];
            let dst = &mut data[panel * panel_len + p * NR * 2..][..width * 2];
            match self.hi {
                Some(hi) => {
                    let hi = &hi[c0 + start..c0 + start + width];
                    for ((d, &l), &h) in dst.chunks_exact_mut(2).zip(lo).zip(hi) {
                        d[0] = l;
                        d[1] = h;
                    }
                    for ((s, &l), &h) in sums[start..start + width].iter_mut().zip(lo).zip(hi) {
                        *s += i64::from(l) + i64::from(h);
                    }
                }
                None => {
                    for (d, &l) in dst.chunks_exact_mut(2).zip(lo) {
                        d[0] = l;
                    }
                    for (s, &l) in sums[start..start + width].iter_mut().zip(lo) {
                        *s += i64::from(l);
                    }
                }
            }
        }
    }
}

/// `sum_k a[r][k]` for every row (exact in `i64`).
pub(crate) fn row_sums<T: Operand>(a: &MatRef<'_, T>) -> Vec<i64> {
    (0..a.rows()).map(|r| a.row(r).iter().map(|&v| i64::from(v.widen())).sum()).collect()
}
