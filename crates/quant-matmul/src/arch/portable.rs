//! The portable micro-kernel: plain Rust, always compiled, the reference for the SIMD ones.
//!
//! It computes what `vpdpbusd` computes (unsigned bytes of A times signed bytes of B, four at
//! a time, into `i32`), in the quad layout the VNNI kernels use, so the `i8` shift of A and
//! the quad packing are exercised on every CPU. Tile 4 x 16; its start and finish are
//! [`super::load_scalar`] and [`super::apply_scalar`], the definition of every kernel's.
//!
//! Chunk bound: A bytes are at most 255 (the `i8` shift included), B at most 128 in magnitude,
//! so `Σ a·b` over `d` values is exact in `i32` for `d <= i32::MAX / (255 · 128) = 65 793`.

use quant_traits::cpu::Portable;

use super::decode::{reference_panel_f32, reference_panel_i8, DecodeKernel, FloatRows, Panels, QuantizedRows, PANEL};
use super::{apply_scalar, load_scalar, AWords, MicroKernel, TileIo};

/// `Σ_t a_t · b_t` over one quad: A's four unsigned bytes (lowest first) times four signed bytes.
#[inline(always)]
#[expect(clippy::as_conversions, reason = "an i32 word's bits as u32, to read its four bytes as vpdpbusd does")]
fn quad(aw: i32, b: &[i8]) -> i32 {
    let a = (aw as u32).to_le_bytes();
    a.iter().zip(b).fold(0i32, |s, (&x, &y)| s.wrapping_add(i32::from(x) * i32::from(y)))
}

const MR: usize = 4;
const NR: usize = 16;

impl MicroKernel for Portable {
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::Quads;
    const MC: usize = 64;
    const NC: usize = 256;
    // Depth blocks of 1 024 values: the reference runs the driver's depth blocks on every
    // machine (the SIMD kernels, prefetching, run the whole depth at once).
    const KC: usize = 256;
    const LAYOUT: &'static str = "quads x16 (portable, avxvnni)";

    unsafe fn tile(kg: usize, a: &[i32], b: &[i8], _ahead: &[i8], io: &TileIo) {
        let mut acc = [[0i32; NR]; MR];
        // SAFETY: forwarded from the trait contract for `io`.
        unsafe { load_scalar(io, &mut acc) };
        for (ag, bg) in a[..kg * MR].chunks_exact(MR).zip(b[..kg * NR * 4].chunks_exact(NR * 4)) {
            for (row, &aw) in acc.iter_mut().zip(ag).take(io.rows) {
                for (cell, four) in row.iter_mut().zip(bg.chunks_exact(4)) {
                    *cell = cell.wrapping_add(quad(aw, four));
                }
            }
        }
        // SAFETY: as above.
        unsafe { apply_scalar(io, &mut acc) };
    }

    unsafe fn epilogue(io: &TileIo) {
        // SAFETY: forwarded from the trait contract.
        unsafe { epilogue_rows::<NR>(io) }
    }

    unsafe fn row(kg: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        let mut acc = [0i32; NR];
        for (&aw, bg) in a[..kg].iter().zip(b[..kg * NR * 4].chunks_exact(NR * 4)) {
            for (cell, four) in acc.iter_mut().zip(bg.chunks_exact(4)) {
                *cell = cell.wrapping_add(quad(aw, four));
            }
        }
        out[..NR].copy_from_slice(&acc);
    }
}

/// The decode product's references: every other tier's results are these, bit for bit.
impl DecodeKernel for Portable {
    const WIDTH: usize = PANEL;
    const FLOAT_SIMD: bool = false;

    unsafe fn panel_i8<const R: usize>(
        w: &Panels<'_>,
        a: &QuantizedRows<'_>,
        rows: [usize; R],
        p: usize,
    ) -> [[f32; PANEL]; R] {
        reference_panel_i8(w, a, rows, p)
    }

    unsafe fn panels_f32<const R: usize, const P: usize>(
        w: &Panels<'_>,
        a: &FloatRows<'_>,
        rows: [usize; R],
        p: usize,
        _scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R] {
        let mut out = [[[0f32; PANEL]; P]; R];
        for q in 0..P {
            for (o, l) in out.iter_mut().zip(reference_panel_f32(w, a, rows, p + q)) {
                o[q] = l;
            }
        }
        out
    }

    unsafe fn dequantize(_w: &Panels<'_>, _p: usize, _count: usize, _out: &mut [f32]) -> bool {
        false
    }
}

/// [`MicroKernel::epilogue`] in plain Rust for panels of `W` columns, a row at a time.
///
/// # Safety
/// As [`MicroKernel::epilogue`].
pub(crate) unsafe fn epilogue_rows<const W: usize>(io: &TileIo) {
    for r in 0..io.rows {
        let row = io.rows_from(r, 1);
        let mut acc = [[0i32; W]; 1];
        // SAFETY: row `r` of `io` (caller's contract), as a one-row tile.
        unsafe {
            load_scalar(&row, &mut acc);
            apply_scalar(&row, &mut acc);
        }
    }
}
