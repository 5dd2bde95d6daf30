//! The error type of every quant crate.

/// What went wrong, with the facts needed to find it (which element, which shapes).
///
/// Every fallible function of the quant crates validates its input up front and returns one of
/// these instead of panicking or producing NaN/inf. Values are carried as `f64` so the message
/// shows them whatever the element type was. `PartialEq` compares fields as they are, so an
/// error carrying a NaN value is not equal to itself: match on the variant in that case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The bit width is outside `2..=32`.
    #[error("bit width {bits} is not supported: use 2..=32")]
    InvalidBits {
        /// The width that was asked for.
        bits: u32,
    },

    /// The codes of a scheme do not fit the chosen storage type.
    #[error(
        "{scheme} {bits}-bit codes span {min}..={max}, which {storage} \
         (holding {storage_min}..={storage_max}) cannot store"
    )]
    StorageTooNarrow {
        /// `"symmetric"` or `"asymmetric"`.
        scheme: &'static str,
        /// The scheme's width.
        bits: u32,
        /// The scheme's smallest code.
        min: i64,
        /// The scheme's largest code.
        max: i64,
        /// The storage type's name.
        storage: &'static str,
        /// Smallest code the storage holds.
        storage_min: i64,
        /// Largest code the storage holds.
        storage_max: i64,
    },

    /// An input element is NaN or infinite.
    #[error("element {index} is {value}: quantization needs finite values")]
    NonFinite {
        /// Position in the flat (row-major) input.
        index: usize,
        /// The offending value, widened to `f64`.
        value: f64,
    },

    /// A reconstructed (dequantized) value handed to the error analysis is NaN or infinite.
    #[error("reconstructed element {index} is {value}: error analysis needs finite values")]
    NonFiniteReconstruction {
        /// Position in the reconstructed tensor.
        index: usize,
        /// The offending value, widened to `f64`.
        value: f64,
    },

    /// A matrix element is NaN or infinite.
    #[error("element at row {row}, column {col} is {value}: quantization needs finite values")]
    NonFiniteInMatrix {
        /// Row of the offending element.
        row: usize,
        /// Column of the offending element.
        col: usize,
        /// The offending value, widened to `f64`.
        value: f64,
    },

    /// The rows of a matrix given as `&[Vec<_>]` have different lengths.
    #[error("ragged matrix {matrix}: row {row} has {found} columns but row 0 has {expected}")]
    RaggedMatrix {
        /// Which matrix (`"input"`, `"A"`, `"B"`).
        matrix: &'static str,
        /// The first row whose length differs from row 0.
        row: usize,
        /// Row 0's length.
        expected: usize,
        /// This row's length.
        found: usize,
    },

    /// A scheme a convention does not define.
    #[error("the {convention} convention has no {what}")]
    UnsupportedByConvention {
        /// The convention, e.g. `"ggml"`.
        convention: &'static str,
        /// What it lacks, with the alternative.
        what: &'static str,
    },

    /// A percentile outside `(0, 100]`.
    #[error("percentile {percentile} is outside (0, 100]")]
    InvalidPercentile {
        /// The percentile asked for.
        percentile: f64,
    },

    /// A moving-average constant outside `(0, 1]`.
    #[error("averaging constant {constant} is outside (0, 1]")]
    InvalidAveragingConstant {
        /// The constant asked for.
        constant: f64,
    },

    /// Parameters asked of an observer that has seen no value.
    #[error("the observer has seen no values: call observe() with data before asking for a range")]
    NothingObserved,

    /// A group (block) size of zero.
    #[error("group size 0: a group must hold at least one value (typical sizes are 32, 64, 128)")]
    InvalidGroupSize,

    /// A length that a block format needs to be a multiple of its block size.
    #[error("{what} has length {len}, which is not a multiple of {format}'s block size {block}")]
    NotABlockMultiple {
        /// What was measured, e.g. `"row"`.
        what: &'static str,
        /// The format, e.g. `"Q4_0"`.
        format: &'static str,
        /// The length found.
        len: usize,
        /// The block size it must be a multiple of.
        block: usize,
    },

    /// A channel axis other than 0 (rows) or 1 (columns).
    #[error("axis {axis} is not a matrix axis: use 0 (one scale per row) or 1 (one per column)")]
    InvalidAxis {
        /// The axis that was asked for.
        axis: usize,
    },

    /// A buffer's length disagrees with the shape or with another buffer.
    #[error("{what}: expected {expected} elements, found {found}")]
    LengthMismatch {
        /// Which buffer, e.g. `"output codes"` or `"quantized vs original"`.
        what: &'static str,
        /// The length the shape or the other buffer implies.
        expected: usize,
        /// The length given.
        found: usize,
    },

    /// A matrix view whose row stride is shorter than its rows.
    #[error("{what}: row stride {row_stride} is smaller than the {cols} columns of a row")]
    InvalidStride {
        /// Which view.
        what: &'static str,
        /// The stride given, in elements.
        row_stride: usize,
        /// Columns per row.
        cols: usize,
    },

    /// A depth so large that an `i32` result could overflow for these operand ranges.
    #[error(
        "depth {k} could overflow an i32 result for these operand ranges (at most {max_k} \
         is safe): use a float output, or split the depth"
    )]
    DepthTooLarge {
        /// The depth (inner dimension) given.
        k: usize,
        /// The largest depth that provably fits.
        max_k: usize,
    },

    /// An activation outside `0..=127` given to the 7-bit (`vpmaddubsw`) path.
    #[error("activation at row {row}, column {col} is {value}: the 7-bit path takes 0..=127")]
    ActivationOutOfRange {
        /// Row of A.
        row: usize,
        /// Column of A.
        col: usize,
        /// The value.
        value: i32,
    },

    /// A zero point outside the range of its operand type.
    #[error("zero point {zero_point} at index {index} is outside {min}..={max}, the range of {operand}")]
    ZeroPointOutOfRange {
        /// The zero point.
        zero_point: i32,
        /// Which row (A) or column (B); 0 for a per-tensor zero point.
        index: usize,
        /// The operand type's name.
        operand: &'static str,
        /// Smallest allowed value.
        min: i32,
        /// Largest allowed value.
        max: i32,
    },

    /// A kernel tier was asked for (by [`crate::cpu::KernelChoice`] or the `QUANT_KERNEL`
    /// variable) that this CPU cannot run. Nothing falls back silently.
    #[error("kernel {kernel} needs the CPU feature {missing}, which this CPU lacks (run with QUANT_KERNEL unset to take the best this CPU has)")]
    KernelUnavailable {
        /// The tier asked for (`"avx2"`, `"avxvnni"`, `"avx512vnni"`).
        kernel: &'static str,
        /// The first feature it needs that the CPU lacks (as Linux's `/proc/cpuinfo` names it).
        missing: &'static str,
    },

    /// `QUANT_KERNEL` holds a name that is no kernel tier.
    #[error("QUANT_KERNEL names no kernel: use one of portable, avx2, avxvnni, avx512vnni (or leave it unset)")]
    UnknownKernel,

    /// Weights packed for one kernel's layout handed to a kernel with another layout.
    #[error(
        "weights packed for the {packed} layout cannot run on the {kernel} kernel, which needs \
         its own layout: pack them with that kernel's settings (Gemm::pack_b)"
    )]
    PackedForOtherKernel {
        /// The layout the weights were packed in, e.g. `"quads x32 (avx512vnni)"`.
        packed: &'static str,
        /// The kernel that was asked to run them.
        kernel: &'static str,
    },

    /// A group size the group-quantized weight kernels cannot take.
    #[error("group size {size} is not supported here: use a multiple of 16 from 16 to 256")]
    GroupSizeUnsupported {
        /// The group size given.
        size: usize,
    },

    /// A weight format a kernel does not take, with why.
    #[error("{format} is not supported here: {reason}")]
    FormatUnsupported {
        /// The format, e.g. `"levels5"`.
        format: &'static str,
        /// Why, with the alternative.
        reason: &'static str,
    },

    /// A parameter (a scale, a minimum) that is NaN or infinite.
    #[error("{what} {index} is {value}: it must be finite")]
    NonFiniteParameter {
        /// Which parameters, e.g. `"scale of group"`.
        what: &'static str,
        /// Its index (row-major over output channels, then groups).
        index: usize,
        /// The value, widened to `f64`.
        value: f64,
    },

    /// An N-D tensor's quantization axis outside `-rank..rank`.
    #[error("axis {axis} does not exist in a tensor of rank {rank}: use -{rank} up to {rank} (excluded)")]
    InvalidTensorAxis {
        /// The axis asked for (negative counts from the end, as in ONNX).
        axis: isize,
        /// The tensor's number of dimensions.
        rank: usize,
    },

    /// Batched matrix-multiply operands whose batch dimensions do not broadcast.
    #[error("batch dimensions clash: {a} against {b} at batch axis {axis}: each pair must be equal or one of them 1")]
    BatchMismatch {
        /// A's size along that axis.
        a: usize,
        /// B's size along that axis.
        b: usize,
        /// The batch axis, counted from the left of the broadcast batch shape.
        axis: usize,
    },

    /// An N-D shape whose element count does not fit in `usize`.
    #[error("a tensor with dimension {dim} after {before} elements has more elements than fit in memory")]
    TensorTooLarge {
        /// The product of the dimensions before it.
        before: usize,
        /// The dimension whose product overflows.
        dim: usize,
    },

    /// A shape whose element count does not fit in `usize`.
    #[error("shape {rows}x{cols} has more elements than fit in memory")]
    ShapeOverflow {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },

    /// Matrix multiply operands whose inner dimensions disagree.
    #[error(
        "matrix shapes clash: A is {a_rows}x{a_cols} and B is {b_rows}x{b_cols}, \
         but A's column count must equal B's row count"
    )]
    InnerDimensionMismatch {
        /// Rows of A.
        a_rows: usize,
        /// Columns of A.
        a_cols: usize,
        /// Rows of B.
        b_rows: usize,
        /// Columns of B.
        b_cols: usize,
    },

    /// A scale that is not finite and positive.
    #[error("scale {value} is invalid: a scale must be finite and greater than zero")]
    InvalidScale {
        /// The scale given, widened to `f64`.
        value: f64,
    },

    /// A zero point outside the scheme's code range (or nonzero for a symmetric scheme).
    #[error("zero point {zero_point} is invalid here: it must lie in {min}..={max}")]
    InvalidZeroPoint {
        /// The zero point given.
        zero_point: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },

    /// A calibration range with `lo > hi` or a non-finite end.
    #[error("range [{lo}, {hi}] is invalid: it needs finite ends with lo <= hi")]
    InvalidRange {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
    },

    /// A range so wide that its scale does not fit the float type.
    #[error("range [{lo}, {hi}] needs a scale beyond the finite range of {float}")]
    ScaleOverflow {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
        /// The float type of the scale.
        float: &'static str,
    },

    /// A TFLite fixed-point multiplier outside its contract.
    #[error(
        "fixed-point requantization (multiplier {multiplier}, shift {shift}): the multiplier must be 0 or \
         a Q31 value in [2^30, 2^31) and the shift in -31..=30"
    )]
    InvalidFixedPoint {
        /// The Q31 multiplier given.
        multiplier: i32,
        /// The shift given.
        shift: i32,
    },

    /// A two-level (super-block) weight format that cannot be built as asked.
    #[error("super-block format: {reason}")]
    InvalidSuperSpec {
        /// What is wrong, e.g. `"the levels grid has 4-bit codes only"`.
        reason: &'static str,
    },

    /// An importance weight that is negative or not finite.
    #[error("importance of column {index} is {value}: importance weights must be finite and >= 0")]
    InvalidImportance {
        /// The column.
        index: usize,
        /// The weight given, widened to `f64`.
        value: f64,
    },

    /// A result that does not fit the output float type.
    #[error("result at row {row}, column {col} is {value}, beyond the finite range of {float}")]
    OutputOverflow {
        /// Row of the result.
        row: usize,
        /// Column of the result.
        col: usize,
        /// The exact result, rounded to `f64` (may itself be infinite).
        value: f64,
        /// The output float type.
        float: &'static str,
    },
}

impl QuantError {
    /// `Ok(())` when `found == expected`, else [`QuantError::LengthMismatch`] naming `what`:
    /// the one length check every buffer of the workspace goes through.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`].
    pub fn check_length(what: &'static str, expected: usize, found: usize) -> Result<(), QuantError> {
        if expected == found {
            Ok(())
        } else {
            Err(QuantError::LengthMismatch { what, expected, found })
        }
    }

    /// `Ok(scale)` when `scale` is finite and greater than zero, else
    /// [`QuantError::InvalidScale`]: the one scale check of the workspace.
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`].
    pub fn check_scale(scale: f64) -> Result<f64, QuantError> {
        if scale.is_finite() && scale > 0.0 {
            Ok(scale)
        } else {
            Err(QuantError::InvalidScale { value: scale })
        }
    }
}
