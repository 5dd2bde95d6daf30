//! The blocked driver, generic over the micro-kernel and monomorphised per kernel, and the
//! split of one call between threads.
//!
//! # The register path (every call whose results fit `i32`, with an `i32` or `f32` output)
//! ```text
//! pack this thread's rows of A (all of K) and their row terms, once
//! for each block of NC columns (unpacked B: packed here): its column terms
//!   for each block of MC rows
//!     for each depth block of KC groups
//!       for each panel of NR columns, for each tile of MR rows:
//!         acc = first block ? correction : C          (in registers)
//!         acc += A_tile · B_panel over the depth block (the micro-kernel)
//!         C = last block ? stage(acc) : acc           (written once)
//! ```
//! The correction is the gemmlowp one,
//! `C[i][j] = S[i][j] - zb[j]·rowsum_A[i] - za[i]·colsum_B[j] + K·za[i]·zb[j]`, split into
//! `col[j] + row[i]` plus at most two rank-one terms ([`Correction`]), all in wrapping `i32`:
//! exact because the true result fits `i32` (see the kernel contract). Between depth blocks
//! the sums wait in C itself (an `f32` output's words hold them as `i32` until the last
//! block converts them). A kernel whose accumulators cannot take the `f32` stage (AMX) stores
//! `i32` sums and converts each finished column panel of a row block at once.
//!
//! # The other paths
//! * `M = 1` streams the packed weights once through the row kernel.
//! * Results that may exceed `i32` (depths beyond [`crate::Operands::max_i32_depth`]): tiles
//!   start from zero, run at most the kernel's chunk bound deep, and are carried in `i64`.
//! * Requantized outputs (`i8`/`u8`, which cannot hold the sums between depth blocks): one
//!   run over the whole depth per tile, the raw tile stored, then corrected and requantized
//!   element by element ([`Epilogue`]).
//!
//! A call with one thread runs here, on the calling thread; only more threads touch rayon.

use alloc::vec::Vec;

use crate::aligned::Aligned;
use crate::arch::{self, AWords, Cpu, Finish, MicroKernel, Session, Start, Terms, TileIo, MAX_MR, MAX_NR};
use crate::gemm::element::{Operand, ZeroPoint};
use crate::gemm::epilogue::Epilogue;
use crate::gemm::operands::{Operands, Weights};
use crate::gemm::output::{RegisterStage, Stage};
use crate::gemm::pack::{groups, pack_a, pack_a_quads, pack_b_block, quads_from_pairs, row_sum_wrapping};
use crate::view::Block;

/// Rows per block on a pair kernel's 7-bit path, whose packed A is half as large (bytes, not
/// `i16`). Larger blocks also regroup each B panel into quads fewer times.
const MC_QUADS: usize = 96;

/// How one call runs: decided once for all its threads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// `M = 1`: the row kernel.
    Row,
    /// Results may exceed `i32`: chunked raw tiles carried in `i64`.
    Wide,
    /// A stage the kernels cannot run (requantization): raw tiles, corrected element by
    /// element.
    Memory,
    /// The correction and the stage in the kernels.
    Registers,
}

impl Path {
    /// The path of a call with these operands and this stage.
    pub(crate) fn of<A: Operand, S: Stage>(ops: &Operands<'_, A>, stage: &S) -> Path {
        let (m, k, _) = ops.dims();
        if m == 1 {
            Path::Row
        } else if k > ops.max_i32_depth() {
            Path::Wide
        } else if stage.registers().is_some() {
            Path::Registers
        } else {
            Path::Memory
        }
    }

    /// Whether the element-by-element epilogue needs `i64` row sums of A.
    pub(crate) fn needs_wide_row_sums(self) -> bool {
        self != Path::Registers
    }
}

/// Runs one call on kernel `K`: splits it between `threads` threads (rows or columns), or runs
/// it on this one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive_all<K: MicroKernel, A: Operand, S: Stage>(
    cpu: Cpu<K>,
    seven_bit: bool,
    path: Path,
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
        split_and_drive(cpu, seven_bit, path, ops, row_sums, stage, c, threads);
        return;
    }
    let _ = threads;
    drive(cpu, seven_bit, path, ops, row_sums, stage, c);
}

#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
fn split_and_drive<K: MicroKernel, A: Operand, S: Stage>(
    cpu: Cpu<K>,
    seven_bit: bool,
    path: Path,
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
    let by_rows = matches!(ops.b, Weights::Packed(_)) && m >= threads * K::MR;
    let blocks = crate::threads::split(c, by_rows, if by_rows { K::MR } else { K::NR }, threads);
    rayon::scope(|s| {
        for block in blocks {
            s.spawn(move |_| drive(cpu, seven_bit, path, ops, sums, stage, block));
        }
    });
}

/// The sequential engine over one block of whole columns (`col0` a multiple of `K::NR`).
fn drive<K: MicroKernel, A: Operand, S: Stage>(
    cpu: Cpu<K>,
    seven_bit: bool,
    path: Path,
    ops: &Operands<'_, A>,
    row_sums: &[i64],
    stage: &S,
    c: Block<'_, S::Out>,
) where
    S::Out: Copy,
{
    if c.rows() == 0 || c.cols() == 0 {
        return;
    }
    let session = cpu.session();
    match (path, stage.registers()) {
        (Path::Registers, Some(regs)) => drive_registers(&session, seven_bit, ops, regs, c),
        _ => drive_memory(&session, seven_bit, path, ops, row_sums, stage, c),
    }
}

/// The weights of columns `[c0, c0 + cols)` as the kernel reads them: whole panels and their
/// column sums, borrowed from pre-packed weights or packed into `data` / `sums`.
fn weights_block<'b, K: MicroKernel>(
    b: Weights<'b>,
    c0: usize,
    cols: usize,
    data: &'b mut Aligned<i8>,
    sums: &'b mut Vec<i64>,
) -> (&'b [i8], &'b [i64]) {
    let kg = groups(b_rows(b), K::GROUP);
    let panel_bytes = kg * K::NR * K::GROUP;
    match b {
        Weights::Packed(p) => {
            (&p.data_from(c0 / K::NR)[..cols.div_ceil(K::NR) * panel_bytes], &p.col_sums()[c0..c0 + cols])
        }
        Weights::Matrix(m) => {
            pack_b_block::<K>(&m, c0, cols, data, sums);
            (&data[..], &sums[..])
        }
    }
}

fn b_rows(b: Weights<'_>) -> usize {
    match b {
        Weights::Packed(p) => p.k(),
        Weights::Matrix(m) => m.rows(),
    }
}

/// The zero-point correction `C - S = col[j] + row[i] + Σ x[i]·y[j]` of one call, in wrapping
/// `i32`, with `za[i]` and `rowsum[i]` A's zero point and row sum as the kernel sees A (the
/// quad kernels' `i8` shift included) and `zb[j]`, `colsum[j]` B's as packed (`u8` weights'
/// offset included):
///
/// | A's zero point | B's zero point | `col[j]` | `row[i]` | rank-one terms |
/// |---|---|---|---|---|
/// | one | one | `za·(K·zb - colsum[j])` | `-zb·rowsum[i]` | none |
/// | one | per column | `za·(K·zb[j] - colsum[j])` | 0 | `rowsum[i] · -zb[j]` |
/// | per row | one | 0 | `K·za[i]·zb - zb·rowsum[i]` | `za[i] · -colsum[j]` |
/// | per row | per column | 0 | 0 | `za[i] · (K·zb[j] - colsum[j])`, `rowsum[i] · -zb[j]` |
///
/// Row sums are computed only when B's zero point (as packed) is not all zero.
struct Correction<'o, 'a, A> {
    ops: &'o Operands<'a, A>,
    /// What packing adds to A.
    shift: i32,
    /// `K` in wrapping `i32`.
    k: i32,
    /// A's zero point per row.
    za_rows: bool,
    /// B's zero point per column.
    zb_cols: bool,
    /// Whether row sums enter.
    row_sums: bool,
}

/// A correction's per-column arrays for a block of panels (`NR` values a panel, padded).
#[derive(Default)]
struct ColumnTerms {
    col: Vec<i32>,
    y: [Vec<i32>; 2],
}

/// A correction's per-row arrays for a block of rows.
#[derive(Default)]
struct RowTerms {
    row: Vec<i32>,
    x: [Vec<i32>; 2],
}

/// `v` modulo `2^32`, as `i32`.
#[inline]
fn wrap(v: i64) -> i32 {
    let b = v.to_le_bytes();
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl<'o, 'a, A: Operand> Correction<'o, 'a, A> {
    fn new(ops: &'o Operands<'a, A>, shift: i16) -> Self {
        let (_, k, _) = ops.dims();
        let za_rows = matches!(ops.a_zero, ZeroPoint::PerChannel(_));
        let zb_cols = matches!(ops.b_zero, ZeroPoint::PerChannel(_));
        let zb_zero = ops.b_offset() == 0 && matches!(ops.b_zero, ZeroPoint::None | ZeroPoint::PerTensor(0));
        Correction {
            ops,
            shift: i32::from(shift),
            k: wrap(i64::try_from(k).unwrap_or(i64::MAX)),
            za_rows,
            zb_cols,
            row_sums: !zb_zero,
        }
    }

    fn za(&self, i: usize) -> i32 {
        self.ops.a_zero.get(i).wrapping_add(self.shift)
    }

    /// The column arrays of columns `[j0, j0 + cols)` (their packed sums `col_sums`), in
    /// panels of `nr`.
    fn columns(&self, j0: usize, col_sums: &[i64], nr: usize, out: &mut ColumnTerms) {
        let padded = col_sums.len().div_ceil(nr) * nr;
        let [y0, y1] = &mut out.y;
        for v in [&mut out.col, y0, y1] {
            v.clear();
            v.resize(padded, 0);
        }
        let za = self.za(0);
        for (c, &s) in col_sums.iter().enumerate() {
            let (zb, cs) = (self.ops.zb(j0 + c), wrap(s));
            let k_zb_cs = self.k.wrapping_mul(zb).wrapping_sub(cs);
            match (self.za_rows, self.zb_cols) {
                (false, _) => out.col[c] = za.wrapping_mul(k_zb_cs),
                (true, false) => out.y[0][c] = cs.wrapping_neg(),
                (true, true) => out.y[0][c] = k_zb_cs,
            }
            if self.zb_cols {
                out.y[1][c] = zb.wrapping_neg();
            }
        }
    }

    /// The row arrays of rows `[i0, i0 + rows)`, padded to `padded` rows.
    fn rows(&self, i0: usize, rows: usize, padded: usize, out: &mut RowTerms) {
        let [x0, x1] = &mut out.x;
        for v in [&mut out.row, x0, x1] {
            v.clear();
            v.resize(padded, 0);
        }
        let zb = self.ops.zb(0);
        let shift = i16::try_from(self.shift).unwrap_or(0);
        for r in 0..rows {
            let i = i0 + r;
            let rs = if self.row_sums { row_sum_wrapping(self.ops.a.row(i), shift) } else { 0 };
            let za = self.za(i);
            match (self.za_rows, self.zb_cols) {
                (false, false) => out.row[r] = zb.wrapping_neg().wrapping_mul(rs),
                (false, true) => out.x[1][r] = rs,
                (true, false) => {
                    out.row[r] = self.k.wrapping_mul(za).wrapping_mul(zb).wrapping_sub(zb.wrapping_mul(rs));
                    out.x[0][r] = za;
                }
                (true, true) => {
                    out.x[0][r] = za;
                    out.x[1][r] = rs;
                }
            }
        }
    }

    /// Whether the correction is `col[j]` alone (A's zero point one, B's zero point zero):
    /// the same for every row.
    fn same_for_every_row(&self) -> bool {
        !self.za_rows && !self.zb_cols && !self.row_sums
    }

    /// The terms of a tile at column `cp` of the column arrays and row `rp` of the row arrays.
    fn terms(&self, cols: &ColumnTerms, cp: usize, rows: &RowTerms, rp: usize) -> Terms {
        let x0 = self.za_rows.then(|| (rows.x[0][rp..].as_ptr(), cols.y[0][cp..].as_ptr()));
        let x1 = self.zb_cols.then(|| (rows.x[1][rp..].as_ptr(), cols.y[1][cp..].as_ptr()));
        Terms { col: cols.col[cp..].as_ptr(), row: rows.row[rp..].as_ptr(), mul: [x0, x1] }
    }
}

/// The register path (module docs) over one thread's block.
///
/// All of the thread's rows of A are packed once; then, block of `NC` columns after block,
/// each block of `MC` rows runs every depth block. A column block's weights (`K · NC` bytes)
/// stay in L2 while every row block reads them, and a row block's C (`MC · NC` words) stays
/// in L2 across its depth blocks, so the sums waiting between them never go to memory.
fn drive_registers<K: MicroKernel, A: Operand, O: Copy>(
    session: &Session<K>,
    seven_bit: bool,
    ops: &Operands<'_, A>,
    regs: RegisterStage<'_>,
    c: Block<'_, O>,
) {
    // The output holds 4-byte words: the stage's `i32` or `f32`, and `i32` sums in between.
    assert!(core::mem::size_of::<O>() == 4 && core::mem::align_of::<O>() == 4, "register stages write 4-byte words");
    let (_, k, _) = ops.dims();
    let quads = seven_bit && K::A_WORDS == AWords::Pairs;
    let shift = crate::gemm::pack::a_shift::<K, A>();
    let kg = groups(k, K::GROUP);
    // Depth blocks: whole runs (the kernel's KC is a multiple of its run), even on the 7-bit
    // path (whole quads).
    let kc = if quads { K::KC & !1 } else { K::KC }.max(2);
    debug_assert!(kc % K::RUN_GROUPS == 0, "KC of {} is not whole runs", K::TIER);
    let mut run = Blocks {
        session,
        ops,
        regs,
        correction: Correction::new(ops, shift),
        quads,
        kg,
        kc,
        a_panel: if quads { kg.div_ceil(2) * K::MR } else { kg * K::MR },
        c,
        apack: Aligned::new(),
        bquads: Aligned::new(),
        cols: ColumnTerms::default(),
        rows: RowTerms::default(),
        scales: Vec::new(),
        biases: Vec::new(),
        starts: Aligned::new(),
    };
    let (row0, m, col0, ncols) = (run.c.row0(), run.c.rows(), run.c.col0(), run.c.cols());
    let mc_block = if quads { MC_QUADS } else { K::MC };
    let (mut bdata, mut bsums) = (Aligned::new(), Vec::new());
    run.pack_rows(row0, m);
    for jc in (0..ncols).step_by(K::NC) {
        let nc = K::NC.min(ncols - jc);
        let (panels, col_sums) = weights_block::<K>(ops.b, col0 + jc, nc, &mut bdata, &mut bsums);
        run.columns(jc, col_sums);
        for ic in (row0..row0 + m).step_by(mc_block) {
            let mc = mc_block.min(row0 + m - ic);
            run.block(ic, mc, jc, nc, panels);
        }
    }
}

/// One call's register path: its constants and the buffers its blocks reuse.
struct Blocks<'s, 'o, 'a, 'c, K: MicroKernel, A, O> {
    session: &'s Session<K>,
    ops: &'o Operands<'a, A>,
    regs: RegisterStage<'o>,
    correction: Correction<'o, 'a, A>,
    /// The 7-bit path of a pair kernel.
    quads: bool,
    /// Depth groups.
    kg: usize,
    /// Depth groups per depth block.
    kc: usize,
    /// Words of one packed A panel.
    a_panel: usize,
    c: Block<'c, O>,
    /// This thread's rows of A, packed.
    apack: Aligned<i32>,
    bquads: Aligned<i8>,
    cols: ColumnTerms,
    rows: RowTerms,
    scales: Vec<f64>,
    biases: Vec<f64>,
    /// For a kernel with a deferred epilogue and a correction that is the same for every row:
    /// each panel's start tile (`MR x NR`, every row the panel's column terms), built once
    /// per column block; empty otherwise.
    starts: Aligned<i32>,
}

impl<K: MicroKernel, A: Operand, O: Copy> Blocks<'_, '_, '_, '_, K, A, O> {
    /// Packs rows `[r0, r0 + m)` of A (this thread's rows) and their row terms.
    fn pack_rows(&mut self, r0: usize, m: usize) {
        if self.quads {
            pack_a_quads(&self.ops.a, r0, m, K::MR, 0, &mut self.apack);
        } else {
            pack_a::<K, A>(&self.ops.a, r0, m, K::MR, &mut self.apack);
        }
        self.correction.rows(r0, m, m.div_ceil(K::MR) * K::MR, &mut self.rows);
    }

    /// The column terms, scales and biases (and start tiles) of columns
    /// `[jc, jc + col_sums.len())` of the block.
    fn columns(&mut self, jc: usize, col_sums: &[i64]) {
        let (nr, j0) = (K::NR, self.c.col0() + jc);
        self.correction.columns(j0, col_sums, nr, &mut self.cols);
        let padded = col_sums.len().div_ceil(nr) * nr;
        self.scales.clear();
        self.biases.clear();
        for j in (0..padded).filter(|_| matches!(self.regs, RegisterStage::F32 { .. })) {
            let (s, b) = if j < col_sums.len() { self.regs.column(j0 + j) } else { (0.0, 0.0) };
            self.scales.push(s);
            self.biases.push(b);
        }
        self.starts.reset(0);
        if K::EPILOGUE == arch::Epilogue::Deferred && self.correction.same_for_every_row() {
            let panels = self.cols.col.chunks_exact(nr);
            // Every word is written: MR copies of each panel's column terms.
            self.starts.reset(panels.len() * K::MR * nr);
            for (tile, panel) in self.starts.chunks_exact_mut(K::MR * nr).zip(panels) {
                for row in tile.chunks_exact_mut(nr) {
                    row.copy_from_slice(panel);
                }
            }
        }
    }

    /// The output stage of a tile (or a deferred panel) at `ptr`, for panel `jr` of the block.
    fn finish(&self, ptr: *mut O, ld: usize, jr: usize) -> Finish {
        match self.regs {
            RegisterStage::F32 { .. } => Finish::F32 {
                dst: ptr.cast(),
                ld,
                scale: self.scales[jr * K::NR..].as_ptr(),
                bias: self.biases[jr * K::NR..].as_ptr(),
            },
            RegisterStage::I32 => Finish::I32 { dst: ptr.cast(), ld },
        }
    }

    /// Rows `[ic, ic + mc)` by columns `[jc, jc + nc)` of the block (`panels`), every depth
    /// block, in the kernel's tile order ([`MicroKernel::ROWS_OUTER`]).
    fn block(&mut self, ic: usize, mc: usize, jc: usize, nc: usize, panels: &[i8]) {
        let (kg, kc) = (self.kg, self.kc);
        let npanels = nc.div_ceil(K::NR);
        let ntiles = mc.div_ceil(K::MR);
        // A deferred epilogue converts to f32 after the tiles; an i32 output needs none.
        let convert_later = K::EPILOGUE == arch::Epilogue::Deferred && matches!(self.regs, RegisterStage::F32 { .. });
        // At least one depth block, so that a depth of 0 still writes the correction.
        for block in 0..kg.div_ceil(kc).max(1) {
            let g0 = block * kc;
            let len = kc.min(kg - g0);
            let last = g0 + len == kg;
            if K::ROWS_OUTER && !self.quads && mc >= nc {
                for ir in 0..ntiles {
                    for jr in 0..npanels {
                        self.tile_at(ic, mc, jc, nc, panels, (g0, len), (jr, ir));
                    }
                    // The previous row tile's sums converted in place: a row tile late, so
                    // that its tile stores have left the core.
                    if convert_later && last {
                        if ir > 0 {
                            self.convert_rows(ic, mc, jc, nc, ir - 1);
                        }
                        if ir + 1 == ntiles {
                            self.convert_rows(ic, mc, jc, nc, ir);
                        }
                    }
                }
            } else {
                for jr in 0..npanels {
                    for ir in 0..ntiles {
                        self.tile_at(ic, mc, jc, nc, panels, (g0, len), (jr, ir));
                    }
                    // The previous panel's sums converted in place: a panel late, so that its
                    // tile stores have left the core.
                    if convert_later && last {
                        if jr > 0 {
                            self.convert(ic, mc, jc, nc, jr - 1);
                        }
                        if jr + 1 == npanels {
                            self.convert(ic, mc, jc, nc, jr);
                        }
                    }
                }
            }
        }
    }

    /// Tile `ir` of panel `jr` of the block at rows `[ic, ic + mc)`, columns `[jc, jc + nc)`,
    /// over the depth block of `len` groups from group `g0`.
    #[allow(clippy::too_many_arguments)]
    fn tile_at(
        &mut self,
        ic: usize,
        mc: usize,
        jc: usize,
        nc: usize,
        panels: &[i8],
        (g0, len): (usize, usize),
        (jr, ir): (usize, usize),
    ) {
        let (mr, nr, group) = (K::MR, K::NR, K::GROUP);
        let kg = self.kg;
        let (first, last) = (g0 == 0, g0 + len == kg);
        let deferred = K::EPILOGUE == arch::Epilogue::Deferred;
        let row0 = self.c.row0();
        let npanels = nc.div_ceil(nr);
        let panel_bytes = kg * nr * group;
        let panel = |jr: usize| &panels[jr * panel_bytes..(jr + 1) * panel_bytes];
        let cols = nr.min(nc - jr * nr);
        let cj = jc + jr * nr;
        let mut bpanel = &panel(jr)[g0 * nr * group..];
        if self.quads {
            // This depth block of the panel regrouped once for the row block's tiles.
            if ir == 0 {
                quads_from_pairs(bpanel, len, &mut self.bquads);
            }
            bpanel = &self.bquads;
        }
        // The first tile of each panel prefetches the next panel's depth block.
        let ahead = if ir == 0 && jr + 1 < npanels { &panel(jr + 1)[g0 * nr * group..] } else { &[][..] };
        let rows = mr.min(mc - ir * mr);
        // This tile's rows among the packed ones (panels of MR from the first row).
        let (apanel_at, at) = ((ic - row0) / mr + ir, ic - row0 + ir * mr);
        let (ptr, ld) = self.c.tile_ptr(ic + ir * mr, cj, rows, cols);
        let start = if !first {
            Start { load: Some((ptr.cast_const().cast(), ld)), terms: None }
        } else if !self.starts.is_empty() {
            Start { load: Some((self.starts[jr * mr * nr..].as_ptr(), nr)), terms: None }
        } else {
            let terms = self.correction.terms(&self.cols, jr * nr, &self.rows, at);
            Start { load: None, terms: Some(terms) }
        };
        let finish = if last && !deferred { self.finish(ptr, ld, jr) } else { Finish::I32 { dst: ptr.cast(), ld } };
        let io = TileIo { rows, cols, start, finish };
        let apanel = &self.apack[apanel_at * self.a_panel..(apanel_at + 1) * self.a_panel];
        if self.quads {
            let ahead = ahead.get(..len * nr * 2).unwrap_or(&[]);
            self.session.tile_u7(len.div_ceil(2), &apanel[g0 / 2 * mr..], bpanel, ahead, &io);
        } else {
            self.session.tile(len, &apanel[g0 * mr..], bpanel, ahead, &io);
        }
    }

    /// The deferred `f32` stage of row tile `ir` of the block at rows `[ic, ic + mc)`, columns
    /// `[jc, jc + nc)`: every panel's corrected `i32` sums in those rows converted in place.
    fn convert_rows(&mut self, ic: usize, mc: usize, jc: usize, nc: usize, ir: usize) {
        let r0 = ic + ir * K::MR;
        let rows = K::MR.min(mc - ir * K::MR);
        for jr in 0..nc.div_ceil(K::NR) {
            self.convert(r0, rows, jc, nc, jr);
        }
    }

    /// The deferred `f32` stage of panel `jr` of the block at rows `[ic, ic + mc)`, columns
    /// `[jc, jc + nc)`: its corrected `i32` sums in C converted in place.
    fn convert(&mut self, ic: usize, mc: usize, jc: usize, nc: usize, jr: usize) {
        let nr = K::NR;
        let cols = nr.min(nc - jr * nr);
        let (ptr, ld) = self.c.tile_ptr(ic, jc + jr * nr, mc, cols);
        let io = TileIo {
            rows: mc,
            cols,
            start: Start { load: Some((ptr.cast_const().cast(), ld)), terms: None },
            finish: self.finish(ptr, ld, jr),
        };
        self.session.epilogue(&io);
    }
}

/// The `M = 1`, wide and requantizing paths (module docs) over one thread's block.
#[expect(clippy::as_conversions, reason = "the chunk bound's i32::MAX as usize")]
fn drive_memory<K: MicroKernel, A: Operand, S: Stage>(
    session: &Session<K>,
    seven_bit: bool,
    path: Path,
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
    let quads = seven_bit && pair_kernel && path != Path::Row;
    // What packing adds to A, corrected as a zero point by the epilogue.
    let shift = i32::from(crate::gemm::pack::a_shift::<K, A>());
    let kg = groups(k, group);
    // The whole depth in one run when the corrected results fit i32 (exact modulo 2^32, see
    // the kernel contract); otherwise runs within the kernel's bound for its A values, summed
    // in i64 (on the 7-bit path in pairs, even, so runs start on whole quads). The row kernel
    // always runs within the bound for full-range bytes, and its sums are carried in i64.
    let chunk = match path {
        Path::Row => K::chunk_groups(255),
        Path::Wide if quads => (i32::MAX as usize / (127 * 128) / 2) & !1,
        Path::Wide => K::chunk_groups(if pair_kernel { A::MAX.unsigned_abs().max(A::MIN.unsigned_abs()) } else { 255 }),
        Path::Memory | Path::Registers => kg.max(1),
    };
    let a_panel = if quads { kg.div_ceil(2) * mr } else { kg * mr };
    // One raw tile over groups `g0 .. g0 + len` into `tile` (g0 even on the 7-bit path, where
    // `bpanel` is the quad panel).
    let run = |g0: usize,
               len: usize,
               rows: usize,
               cols: usize,
               apanel: &[i32],
               bpanel: &[i8],
               ahead: &[i8],
               tile: &mut [i32]| {
        let io = TileIo { rows, cols, start: Start::ZERO, finish: Finish::I32 { dst: tile.as_mut_ptr(), ld: nr } };
        assert!(tile.len() >= rows * nr, "tile buffer");
        if quads {
            let ahead = ahead.get(g0 * nr * 2..).unwrap_or(&[]);
            session.tile_u7(len.div_ceil(2), &apanel[g0 / 2 * mr..], &bpanel[g0 / 2 * nr * 4..], ahead, &io);
        } else {
            let ahead = ahead.get(g0 * nr * group..).unwrap_or(&[]);
            session.tile(len, &apanel[g0 * mr..], &bpanel[g0 * nr * group..], ahead, &io);
        }
    };
    let narrow = path != Path::Wide;
    let (col0, ncols) = (c.col0(), c.cols());
    let epi = Epilogue { ops, row_sums, stage, k, shift };
    let mut apack = Aligned::new();
    let mut bquads = Aligned::new();
    let mc_block = if quads { MC_QUADS } else { K::MC };
    let (mut bdata, mut bsums) = (Aligned::new(), Vec::new());
    // Cache-line aligned: the AMX kernel stores 64-byte tile rows here.
    let mut tile_buf = TileBuf([0i32; MAX_MR * MAX_NR]);
    let tile = &mut tile_buf.0;
    let mut wide = [0i64; MAX_MR * MAX_NR];
    let mut row = [0i32; MAX_NR];
    let block_cols = match ops.b {
        Weights::Packed(_) => ncols,
        Weights::Matrix(_) => K::NC,
    };
    let panel_bytes = kg * nr * group;
    for jc in (0..ncols).step_by(block_cols) {
        let nc = block_cols.min(ncols - jc);
        let npanels = nc.div_ceil(nr);
        let (panels, col_sums) = weights_block::<K>(ops.b, col0 + jc, nc, &mut bdata, &mut bsums);
        let panel = |jr: usize| &panels[jr * panel_bytes..(jr + 1) * panel_bytes];
        if path == Path::Row {
            pack_a::<K, A>(&ops.a, row0, 1, 1, &mut apack);
            for jr in 0..npanels {
                let bpanel = panel(jr);
                wide[..nr].fill(0);
                for g0 in (0..kg).step_by(chunk) {
                    let len = chunk.min(kg - g0);
                    session.row(len, &apack[g0..], &bpanel[g0 * nr * group..], &mut row);
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
                let next = if m <= mc_block && jr + 1 < npanels { panel(jr + 1) } else { &[][..] };
                for ir in 0..mc.div_ceil(mr) {
                    let ahead = if ir == 0 { next } else { &[][..] };
                    let apanel = &apack[ir * a_panel..(ir + 1) * a_panel];
                    let rows = mr.min(mc - ir * mr);
                    if narrow {
                        run(0, kg, rows, cols, apanel, bpanel, ahead, tile);
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
                        run(g0, len, rows, cols, apanel, bpanel, ahead, tile);
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
