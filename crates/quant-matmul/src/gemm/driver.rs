//! The blocked driver, generic over the micro-kernel and monomorphised per kernel, and the
//! split of one call between threads.
//!
//! Unpacked weights are packed `K::NC` columns at a time (all of the depth); pre-packed weights
//! are used in place. For each block of `K::MC` rows, A is packed once; then every
//! `K::MR x K::NR` tile runs the micro-kernel over the depth, in runs of at most
//! `chunk_groups` (the kernel's proved `i32` bound), and goes straight through the epilogue.
//! `M = 1` streams the packed weights once through the row kernel.

use alloc::vec::Vec;

use crate::gemm::epilogue::Epilogue;
use crate::gemm::operand::Operand;
use crate::gemm::operands::{Operands, Weights};
use crate::gemm::output::Stage;
use crate::gemm::pack::{groups, pack_a, pack_a_quads, pack_b_block, quads_from_pairs};
use crate::kernels::{AWords, Cpu, MicroKernel, MAX_MR, MAX_NR};
use crate::view::Block;

/// Rows per block on a pair kernel's 7-bit path, whose packed A is half as large (bytes, not
/// `i16`). Larger blocks also regroup each B panel into quads fewer times.
const MC_QUADS: usize = 96;

/// Runs one call on kernel `K`: splits it between `threads` threads (rows or columns), or runs
/// it on this one.
pub(crate) fn drive_all<K: MicroKernel, A: Operand, S: Stage>(
    cpu: Cpu<K>,
    seven_bit: bool,
    ops: &Operands<'_, A>,
    row_sums: &[i64],
    stage: &S,
    c: Block<'_, S::Out>,
    threads: usize,
) where
    S::Out: Copy,
{
    #[cfg(feature = "parallel")]
    if threads > 1 {
        split_and_drive(cpu, seven_bit, ops, row_sums, stage, c, threads);
        return;
    }
    let _ = threads;
    drive(cpu, seven_bit, ops, row_sums, stage, c);
}

#[cfg(feature = "parallel")]
fn split_and_drive<K: MicroKernel, A: Operand, S: Stage>(
    cpu: Cpu<K>,
    seven_bit: bool,
    ops: &Operands<'_, A>,
    sums: &[i64],
    stage: &S,
    c: Block<'_, S::Out>,
    threads: usize,
) where
    S::Out: Copy,
{
    // Pre-packed weights and enough rows: split the rows (each thread packs only its own rows
    // of A, the weights are shared). Otherwise split the columns into whole NR panels (each
    // thread packs only its own columns of B).
    let (m, _, _) = ops.dims();
    let by_rows = matches!(ops.b, Weights::Packed(_)) && m >= threads * 4 * K::MR;
    let blocks = crate::threads::split(c, by_rows, if by_rows { K::MR } else { K::NR }, threads);
    rayon::scope(|s| {
        for block in blocks {
            s.spawn(move |_| drive(cpu, seven_bit, ops, sums, stage, block));
        }
    });
}

/// The sequential engine over one block of whole columns (`col0` a multiple of `K::NR`).
fn drive<K: MicroKernel, A: Operand, S: Stage>(
    cpu: Cpu<K>,
    seven_bit: bool,
    ops: &Operands<'_, A>,
    row_sums: &[i64],
    stage: &S,
    mut c: Block<'_, S::Out>,
) where
    S::Out: Copy,
{
    let (mr, nr, group) = (K::MR, K::NR, K::GROUP);
    let (_, k, _) = ops.dims();
    let (row0, m) = (c.row0(), c.rows());
    let pair_kernel = K::A_WORDS == AWords::Pairs;
    // A pair kernel's 7-bit quad tiles (a quad kernel's normal path already takes u8 quads).
    let quads = seven_bit && pair_kernel && m > 1;
    // What packing adds to A, corrected as a zero point by the epilogue.
    let shift = i32::from(crate::gemm::pack::a_shift::<K, A>());
    let kg = groups(k, group);
    // Largest run of depth groups whose raw tile sums are exact in i32 (the kernel's bound
    // for its A values); on the 7-bit path in pairs, even, so runs start on whole quads.
    let chunk = if quads {
        (i32::MAX as usize / (127 * 128) / 2) & !1
    } else {
        let a_max = if pair_kernel { A::MAX.unsigned_abs().max(A::MIN.unsigned_abs()) } else { 255 };
        K::chunk_groups(a_max)
    };
    // Words of one packed A panel.
    let a_panel = if quads { kg.div_ceil(2) * mr } else { kg * mr };
    // One tile over groups `g0 .. g0 + len` (g0 even on the 7-bit path, where `bpanel` is the
    // quad panel).
    let run = |g0: usize, len: usize, rows: usize, apanel: &[i32], bpanel: &[i8], ahead: &[i8], tile: &mut [i32]| {
        if quads {
            let ahead = ahead.get(g0 * nr * 2..).unwrap_or(&[]);
            cpu.tile_u7(rows, len.div_ceil(2), &apanel[g0 / 2 * mr..], &bpanel[g0 / 2 * nr * 4..], ahead, tile);
        } else {
            let ahead = ahead.get(g0 * nr * group..).unwrap_or(&[]);
            cpu.tile(rows, len, &apanel[g0 * mr..], &bpanel[g0 * nr * group..], ahead, tile);
        }
    };
    // Every corrected result fits i32: the tile and the correction stay in (wrapping) i32,
    // which is exact because the true result is representable.
    let narrow = kg <= chunk && k <= ops.max_i32_depth();
    let (col0, ncols) = (c.col0(), c.cols());
    let epi = Epilogue { ops, row_sums, stage, k, shift };
    let mut apack = Vec::new();
    let mut bquads = Vec::new();
    let mc_block = if quads { MC_QUADS } else { K::MC };
    let (mut bdata, mut bsums) = (Vec::new(), Vec::new());
    // Cache-line aligned: the AMX kernel stores 64-byte tile rows here, and a row split
    // across two lines costs both a slow store and a slow reload in the epilogue.
    let mut tile_buf = TileBuf([0i32; MAX_MR * MAX_NR]);
    let tile = &mut tile_buf.0;
    let mut wide = [0i64; MAX_MR * MAX_NR];
    let mut row = [0i32; MAX_NR];
    // Pre-packed weights: one block spans all of this thread's columns, so A is packed once
    // per row block. Otherwise B is packed here, NC columns at a time.
    let block_cols = match ops.b {
        Weights::Packed(_) => ncols.max(1),
        Weights::Matrix(_) => K::NC,
    };
    let panel_bytes = kg * nr * group;
    for jc in (0..ncols).step_by(block_cols) {
        let nc = block_cols.min(ncols - jc);
        let npanels = nc.div_ceil(nr);
        let (panels, col_sums): (&[i8], &[i64]) = match ops.b {
            Weights::Packed(p) => {
                let first = (col0 + jc) / nr;
                (&p.data_from(first)[..npanels * panel_bytes], &p.col_sums()[col0 + jc..col0 + jc + nc])
            }
            Weights::Matrix(b) => {
                pack_b_block::<K>(&b, col0 + jc, nc, &mut bdata, &mut bsums);
                (&bdata, &bsums)
            }
        };
        let panel = |jr: usize| &panels[jr * panel_bytes..(jr + 1) * panel_bytes];
        if m == 1 {
            pack_a::<K, A>(&ops.a, row0, 1, 1, &mut apack);
            for jr in 0..npanels {
                let bpanel = panel(jr);
                wide[..nr].fill(0);
                for g0 in (0..kg).step_by(chunk) {
                    let len = chunk.min(kg - g0);
                    cpu.row(len, &apack[g0..], &bpanel[g0 * nr * group..], &mut row);
                    for (w, &t) in wide.iter_mut().zip(&row[..nr]) {
                        *w += i64::from(t);
                    }
                }
                let cols = nr.min(nc - jr * nr);
                let cs = &col_sums[jr * nr..jr * nr + cols];
                epi.write_wide(row0, col0 + jc + jr * nr, cs, &wide[..cols], c.row_part(row0, jc + jr * nr, cols));
            }
            continue;
        }
        for ic in (row0..row0 + m).step_by(mc_block) {
            let mc = mc_block.min(row0 + m - ic);
            if quads {
                pack_a_quads(&ops.a, ic, mc, mr, 0, &mut apack);
            } else {
                pack_a::<K, A>(&ops.a, ic, mc, mr, &mut apack);
            }
            for jr in 0..npanels {
                let mut bpanel = panel(jr);
                if quads {
                    // Regrouped once here for the row block's tiles.
                    quads_from_pairs(bpanel, kg, &mut bquads);
                    bpanel = &bquads;
                }
                let cols = nr.min(nc - jr * nr);
                let j0 = col0 + jc + jr * nr;
                let cs = &col_sums[jr * nr..jr * nr + cols];
                let cols_ctx = epi.columns(j0, cs);
                // With a single row block (few rows), B streams from memory exactly once: the
                // first tile of each panel prefetches the next one (the 7-bit path regroups it
                // when it gets there). The AVX2 pair kernel fetches the next panel itself.
                let next = if m <= mc_block && jr + 1 < npanels { panel(jr + 1) } else { &[][..] };
                for ir in 0..mc.div_ceil(mr) {
                    let ahead = if ir == 0 { next } else { &[][..] };
                    let apanel = &apack[ir * a_panel..(ir + 1) * a_panel];
                    let rows = mr.min(mc - ir * mr);
                    if narrow {
                        run(0, kg, rows, apanel, bpanel, ahead, tile);
                        for r in 0..rows {
                            let i = ic + ir * mr + r;
                            let out = c.row_part(i, jc + jr * nr, cols);
                            epi.write_narrow(i, &cols_ctx, &tile[r * nr..r * nr + cols], out);
                        }
                        continue;
                    }
                    wide.fill(0);
                    for g0 in (0..kg).step_by(chunk) {
                        let len = chunk.min(kg - g0);
                        run(g0, len, rows, apanel, bpanel, ahead, tile);
                        for (w, &t) in wide.iter_mut().zip(&tile[..rows * nr]) {
                            *w += i64::from(t);
                        }
                    }
                    for r in 0..rows {
                        let i = ic + ir * mr + r;
                        let out = c.row_part(i, jc + jr * nr, cols);
                        epi.write_wide(i, j0, cs, &wide[r * nr..r * nr + cols], out);
                    }
                }
            }
        }
    }
}

/// One tile of raw sums, aligned to a cache line.
#[repr(C, align(64))]
struct TileBuf([i32; MAX_MR * MAX_NR]);
