//! Schemes as the command line names them, and quantizing one 2-D tensor with one (in parallel,
//! row block by row block).

use std::fmt;

use quant_core::superblock::{quantize_super, Fit, Grid, SubScale, SuperMatrix, SuperSpec};
use quant_core::{
    dequantize_matrix_into, matrix_params, quantize_matrix_into, Axis, Granularity, MatrixShape, QuantError,
    QuantFloat, QuantParams, QuantSpec, Scheme, Storage,
};
use quant_traits::{I2x4, I4x2, U2x4, U4x2};
use rayon::prelude::*;

/// Per tensor, per output channel (row), or per group of `g` inputs along each row.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gran {
    /// One scale for the tensor.
    Tensor,
    /// One per row (output channel of a `[out, in]` weight).
    Channel,
    /// One per group of `g` consecutive values of a row.
    Group(usize),
}

impl Gran {
    /// The engine's granularity for a row-major matrix.
    pub fn granularity(self) -> Granularity {
        match self {
            Gran::Tensor => Granularity::PerTensor,
            Gran::Channel => Granularity::PerChannel(Axis::Rows),
            Gran::Group(size) => Granularity::PerGroup { axis: Axis::Cols, size },
        }
    }

    /// Parses `tensor`, `channel` or `group:G`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "tensor" => Ok(Gran::Tensor),
            "channel" => Ok(Gran::Channel),
            _ => match s.strip_prefix("group:").map(str::parse::<usize>) {
                Some(Ok(g)) if g > 0 => Ok(Gran::Group(g)),
                _ => Err(format!("granularity {s:?}: use tensor, channel or group:G with G >= 1 (e.g. group:128)")),
            },
        }
    }
}

impl fmt::Display for Gran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gran::Tensor => write!(f, "tensor"),
            Gran::Channel => write!(f, "channel"),
            Gran::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// One scheme: symmetric or asymmetric, a width, a granularity.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Scheme and width.
    pub spec: QuantSpec,
    /// Granularity.
    pub gran: Gran,
}

impl Plan {
    /// `sym` / `asym`.
    pub fn scheme_name(&self) -> &'static str {
        match self.spec.scheme() {
            Scheme::Symmetric => "sym",
            Scheme::Asymmetric => "asym",
        }
    }

    /// The storage the codes take in a file: packed 2- and 4-bit, else one byte; `None` past 8
    /// bits (reports only).
    pub fn file_storage(&self) -> Option<&'static str> {
        let sym = self.spec.scheme() == Scheme::Symmetric;
        Some(match self.spec.bits() {
            2 => ["u2x4", "i2x4"][usize::from(sym)],
            3 | 4 => ["u4x2", "i4x2"][usize::from(sym)],
            5..=8 => ["u8", "i8"][usize::from(sym)],
            _ => return None,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} int{} {}", self.scheme_name(), self.spec.bits(), self.gran)
    }
}

/// Storage units as bytes, for the types a file holds.
pub trait Bytes: Storage {
    /// The unit's byte.
    fn byte(self) -> u8;
    /// The unit of a byte.
    fn from_byte(b: u8) -> Self;
}

macro_rules! packed_bytes {
    ($($t:ident),*) => {$(
        impl Bytes for $t {
            fn byte(self) -> u8 {
                self.0
            }
            fn from_byte(b: u8) -> Self {
                $t(b)
            }
        }
    )*};
}
packed_bytes!(I4x2, U4x2, I2x4, U2x4);

impl Bytes for u8 {
    fn byte(self) -> u8 {
        self
    }
    fn from_byte(b: u8) -> Self {
        b
    }
}

impl Bytes for i8 {
    fn byte(self) -> u8 {
        self.to_le_bytes()[0]
    }
    fn from_byte(b: u8) -> Self {
        i8::from_le_bytes([b])
    }
}

/// Runs `$body` with `$q` the storage type named `$name` (one of [`Plan::file_storage`]).
#[macro_export]
macro_rules! with_storage {
    ($name:expr, $q:ident => $body:expr) => {
        match $name {
            "i8" => {
                type $q = i8;
                $body
            }
            "u8" => {
                type $q = u8;
                $body
            }
            "i4x2" => {
                type $q = quant_traits::I4x2;
                $body
            }
            "u4x2" => {
                type $q = quant_traits::U4x2;
                $body
            }
            "i2x4" => {
                type $q = quant_traits::I2x4;
                $body
            }
            _ => {
                type $q = quant_traits::U2x4;
                $body
            }
        }
    };
}

/// Rows per parallel block: a multiple of 4, so every block starts on a whole storage unit.
fn block_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (rows / (threads * 4)).max(1).next_multiple_of(4)
}

/// Quantizes a `rows x cols` matrix with `plan` into storage `Q`: the units and the parameter
/// sets (in [`Granularity`]'s order). Row blocks run in parallel; the result is the same as one
/// `quantize_matrix` call (every channel and group lies inside one block; per tensor, the
/// parameters come from the whole tensor first).
pub fn quantize_2d<F: QuantFloat, Q: Storage>(
    x: &[F],
    rows: usize,
    cols: usize,
    plan: Plan,
) -> Result<(Vec<Q>, Vec<QuantParams<F>>), QuantError> {
    let shape = MatrixShape::new(rows, cols);
    shape.check_len("tensor", x.len())?;
    let g = plan.gran.granularity();
    if x.is_empty() {
        // No rows to split (or empty rows, which still get their parameter sets).
        let params = matrix_params(x, shape, plan.spec, g)?;
        let mut codes: Vec<Q> = Vec::new();
        quantize_matrix_into(x, shape, plan.spec, g, &params, &mut codes)?;
        return Ok((codes, params));
    }
    let whole = if plan.gran == Gran::Tensor { Some(matrix_params(x, shape, plan.spec, g)?) } else { None };
    let br = block_rows(rows);
    let units_per_block = Q::units_for(br * cols);
    let mut codes = vec![Q::default(); Q::units_for(x.len())];
    let results: Vec<Result<Vec<QuantParams<F>>, QuantError>> = codes
        .par_chunks_mut(units_per_block.max(1))
        .zip(x.par_chunks((br * cols).max(1)))
        .enumerate()
        .map(|(b, (out, xs))| {
            let block = MatrixShape::new(xs.len() / cols.max(1), cols);
            let params = match &whole {
                Some(p) => p.clone(),
                None => matrix_params(xs, block, plan.spec, g)?,
            };
            quantize_matrix_into(xs, block, plan.spec, g, &params, out).map_err(|e| shift_row(e, b * br))?;
            Ok(params)
        })
        .collect();
    let mut params = Vec::new();
    for r in results {
        let p = r?;
        if whole.is_none() {
            params.extend(p);
        }
    }
    Ok((codes, whole.unwrap_or(params)))
}

/// A block's error, with its row numbered in the whole matrix.
fn shift_row(e: QuantError, first_row: usize) -> QuantError {
    match e {
        QuantError::NonFiniteInMatrix { row, col, value } => {
            QuantError::NonFiniteInMatrix { row: row + first_row, col, value }
        }
        other => other,
    }
}

/// The values `codes` stand for (the inverse of [`quantize_2d`]).
pub fn dequantize_2d<F: QuantFloat, Q: Storage>(
    codes: &[Q],
    rows: usize,
    cols: usize,
    gran: Gran,
    params: &[QuantParams<F>],
) -> Result<Vec<F>, QuantError> {
    let mut out = vec![F::zero(); rows * cols];
    dequantize_matrix_into(codes, MatrixShape::new(rows, cols), gran.granularity(), params, &mut out)?;
    Ok(out)
}

/// Bytes of a `rows x cols` tensor as `quant quantize` writes it under `plan`: codes of 2 and 4
/// bits packed, 3 bits in 4, 5 to 8 bits in a byte (wider ones, which files do not hold, counted
/// at their width), plus the parameters ([`param_bytes`]).
pub fn file_bytes(plan: Plan, rows: usize, cols: usize, float_bytes: usize) -> usize {
    let bits = match plan.file_storage() {
        Some(s) if s.ends_with("x4") => 2,
        Some(s) if s.ends_with("x2") => 4,
        Some(_) => 8,
        None => plan.spec.bits() as usize,
    };
    let sets = plan.gran.granularity().channels(quant_core::MatrixShape::new(rows, cols));
    (rows * cols * bits).div_ceil(8) + param_bytes(plan, sets, float_bytes)
}

/// Bytes the parameters take in a file: the scale in the tensor's type, an `i32` zero point
/// when asymmetric.
pub fn param_bytes(plan: Plan, sets: usize, float_bytes: usize) -> usize {
    sets * (float_bytes + if plan.spec.scheme() == Scheme::Asymmetric { 4 } else { 0 })
}

/// Parses one of our two-level formats: `GRID BITS/SUB[:sS|:f16|:bf16][@SUPER]`, e.g. `sym4/16`
/// (6-bit sub-scales, one super-block per row), `levels4/16`, `offset4/32:s6@256`,
/// `sym4/32:f16` (plain groups with `f16` scales). Grids: `sym`, `offset`, `zp`, `levels`.
pub fn parse_super(s: &str, fit: Fit) -> Result<SuperSpec, String> {
    let bad = |why: &str| {
        format!(
            "format {s:?}: {why} (use GRID BITS/SUB[:sS|:f16|:bf16][@SUPER], e.g. sym4/16, levels4/16, offset4/32:s6@256)"
        )
    };
    let (head, sup) = match s.split_once('@') {
        Some((h, n)) => (h, Some(n.parse::<usize>().map_err(|_| bad("the super-block length is not a number"))?)),
        None => (s, None),
    };
    let (head, scale) = match head.split_once(':') {
        Some((h, "f16")) => (h, SubScale::F16),
        Some((h, "bf16")) => (h, SubScale::Bf16),
        Some((h, b)) => match b.strip_prefix('s').map(str::parse::<u32>) {
            Some(Ok(bits)) => (h, SubScale::Bits(bits)),
            _ => return Err(bad("sub-scales are sS (S bits), f16 or bf16")),
        },
        None => (head, SubScale::Bits(6)),
    };
    let (grid_bits, sub) = head.split_once('/').ok_or_else(|| bad("no /SUB"))?;
    let sub: usize = sub.parse().map_err(|_| bad("the sub-block length is not a number"))?;
    let digits = grid_bits.find(|c: char| c.is_ascii_digit()).ok_or_else(|| bad("no code width"))?;
    let grid = match &grid_bits[..digits] {
        "sym" => Grid::Symmetric,
        "offset" => Grid::Offset,
        "zp" => Grid::ZeroPoint,
        "levels" => Grid::Levels,
        _ => return Err(bad("the grid is sym, offset, zp or levels")),
    };
    let bits: u32 = grid_bits[digits..].parse().map_err(|_| bad("the code width is not a number"))?;
    SuperSpec::new(grid, bits, sub)
        .and_then(|s| s.with_sub_scale(scale))
        .and_then(|s| s.with_super_len(sup))
        .map(|s| s.with_fit(fit))
        .map_err(|e| bad(&e.to_string()))
}

/// The name [`parse_super`] reads, with the fit: `sym4/16:s6 search`.
pub fn super_name(spec: SuperSpec) -> String {
    let grid = match spec.grid() {
        Grid::Symmetric => "sym",
        Grid::Offset => "offset",
        Grid::ZeroPoint => "zp",
        Grid::Levels => "levels",
    };
    let scale = match spec.sub_scale() {
        SubScale::F16 => "f16".to_string(),
        SubScale::Bf16 => "bf16".to_string(),
        SubScale::Bits(b) => format!("s{b}"),
    };
    let sup = spec.super_len().map_or(String::new(), |n| format!("@{n}"));
    let fit = match spec.fit() {
        Fit::MinMax => "minmax",
        Fit::Search => "search",
    };
    format!("{grid}{}/{}:{scale}{sup} {fit}", spec.bits(), spec.sub_len())
}

/// Quantizes a `rows x cols` matrix into a two-level format, row blocks in parallel (the same
/// bytes as one [`quantize_super`] call: every row is fitted on its own).
pub fn quantize_super_2d<F: QuantFloat>(
    x: &[F],
    rows: usize,
    cols: usize,
    spec: SuperSpec,
    importance: Option<&[f32]>,
) -> Result<SuperMatrix, QuantError> {
    let shape = MatrixShape::new(rows, cols);
    shape.check_len("tensor", x.len())?;
    if x.is_empty() {
        return quantize_super(x, shape, spec, importance);
    }
    // Blocks of a multiple of 8 rows start on whole bytes of every bit stream.
    let br = (rows / (rayon::current_num_threads().max(1) * 4)).max(1).next_multiple_of(8);
    let parts: Vec<Result<SuperMatrix, QuantError>> = x
        .par_chunks(br * cols)
        .enumerate()
        .map(|(b, xs)| {
            quantize_super(xs, MatrixShape::new(xs.len() / cols, cols), spec, importance)
                .map_err(|e| shift_row(e, b * br))
        })
        .collect();
    let parts: Result<Vec<SuperMatrix>, QuantError> = parts.into_iter().collect();
    SuperMatrix::concat_rows(&parts?)
}
