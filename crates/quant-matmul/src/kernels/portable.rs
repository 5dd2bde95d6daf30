//! The portable micro-kernel: plain Rust, always compiled, the reference for the SIMD ones.
//!
//! It computes what `vpdpbusd` computes (unsigned bytes of A times signed bytes of B, four at
//! a time, into `i32`), in the quad layout the VNNI kernels use, so the `i8` shift of A and
//! the quad packing are exercised on every CPU. Tile 4 x 16.
//!
//! Chunk bound: A bytes are at most 255 (the `i8` shift included), B at most 128 in magnitude,
//! so `Σ a·b` over `d` values is exact in `i32` for `d <= i32::MAX / (255 · 128) = 65 793`.

use super::{AWords, MicroKernel, Tier};

pub(crate) struct Portable;

/// `Σ_t a_t · b_t` over one quad: A's four unsigned bytes (lowest first) times four signed bytes.
#[inline(always)]
fn quad(aw: i32, b: &[i8]) -> i32 {
    let a = (aw as u32).to_le_bytes();
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

impl MicroKernel for Portable {
    const TIER: Tier = Tier::Portable;
    const MR: usize = 4;
    const NR: usize = 16;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::Quads;
    const MC: usize = 64;
    const NC: usize = 256;
    const KC: usize = usize::MAX;
    const LAYOUT: &'static str = "quads x16 (portable, avxvnni)";

    unsafe fn tile(rows: usize, kg: usize, a: &[i32], b: &[i8], _ahead: &[i8], tile: &mut [i32]) {
        const MR: usize = Portable::MR;
        const NR: usize = Portable::NR;
        let mut acc = [[0i32; NR]; MR];
        for (ag, bg) in a[..kg * MR].chunks_exact(MR).zip(b[..kg * NR * 4].chunks_exact(NR * 4)) {
            for (row, &aw) in acc.iter_mut().zip(ag).take(rows) {
                for (cell, four) in row.iter_mut().zip(bg.chunks_exact(4)) {
                    *cell += quad(aw, four);
                }
            }
        }
        for (dst, row) in tile.chunks_exact_mut(NR).zip(&acc) {
            dst.copy_from_slice(row);
        }
    }

    unsafe fn row(kg: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        const NR: usize = Portable::NR;
        let mut acc = [0i32; NR];
        for (&aw, bg) in a[..kg].iter().zip(b[..kg * NR * 4].chunks_exact(NR * 4)) {
            for (cell, four) in acc.iter_mut().zip(bg.chunks_exact(4)) {
                *cell += quad(aw, four);
            }
        }
        out[..NR].copy_from_slice(&acc);
    }
}
