//! The portable micro-kernels: plain Rust, always compiled, the reference for the SIMD ones.

use super::{MicroKernel, MR, NR};

/// Low and high `i16` halves of a packed A word.
#[inline(always)]
fn halves(w: i32) -> (i32, i32) {
    (i32::from(w as i16), w >> 16)
}

pub(crate) struct Portable;

impl MicroKernel for Portable {
    const NAME: &'static str = "portable";

    unsafe fn tile(kp: usize, a: &[i32], b: &[i8], tile: &mut [i32; MR * NR]) {
        let mut acc = [[0i32; NR]; MR];
        for (ap, bp) in a[..kp * MR].chunks_exact(MR).zip(b[..kp * NR * 2].chunks_exact(NR * 2)) {
            for (row, &aw) in acc.iter_mut().zip(ap) {
                let (alo, ahi) = halves(aw);
                for (cell, bw) in row.iter_mut().zip(bp.chunks_exact(2)) {
                    *cell += alo * i32::from(bw[0]) + ahi * i32::from(bw[1]);
                }
            }
        }
        for (dst, row) in tile.chunks_exact_mut(NR).zip(&acc) {
            dst.copy_from_slice(row);
        }
    }

    unsafe fn tile_u7(kq: usize, a: &[i32], b: &[i8], _ahead: &[i8], tile: &mut [i32; MR * NR]) {
        let mut acc = [[0i32; NR]; MR];
        for (aq, bq) in a[..kq * MR].chunks_exact(MR).zip(b[..kq * NR * 4].chunks_exact(NR * 4)) {
            for (row, &aw) in acc.iter_mut().zip(aq) {
                let ab = (aw as u32).to_le_bytes().map(i32::from);
                for (cell, four) in row.iter_mut().zip(bq.chunks_exact(4)) {
                    *cell += ab.iter().zip(four).map(|(&x, &y)| x * i32::from(y)).sum::<i32>();
                }
            }
        }
        for (dst, row) in tile.chunks_exact_mut(NR).zip(&acc) {
            dst.copy_from_slice(row);
        }
    }

    unsafe fn row(kp: usize, a: &[i32], b: &[i8], out: &mut [i32; NR]) {
        let mut acc = [0i32; NR];
        for (&aw, bp) in a[..kp].iter().zip(b[..kp * NR * 2].chunks_exact(NR * 2)) {
            let (alo, ahi) = halves(aw);
            for (cell, bw) in acc.iter_mut().zip(bp.chunks_exact(2)) {
                *cell += alo * i32::from(bw[0]) + ahi * i32::from(bw[1]);
            }
        }
        *out = acc;
    }
}
