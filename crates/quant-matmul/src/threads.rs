//! How many threads a call uses, and how an output block is split between them: shared by the
//! GEMM engine and the group-quantized multiply.

#[cfg(feature = "parallel")]
use alloc::vec::Vec;

#[cfg(feature = "parallel")]
use crate::view::Block;

/// Threads for `units` independent units of work (panels, row tiles): the requested count
/// (default: rayon's pool), no more than the pool has, at least one unit each, at least one.
/// One thread asked for (or one unit of work) is one thread without asking rayon anything, so
/// such a call never starts or touches its pool.
#[cfg(feature = "parallel")]
pub(crate) fn thread_count(requested: Option<usize>, units: usize) -> usize {
    if requested == Some(1) || units <= 1 {
        return 1;
    }
    let available = rayon::current_num_threads();
    requested.unwrap_or(available).min(available.max(1)).min(units).max(1)
}

/// Without the `parallel` feature: the calling thread only.
#[cfg(not(feature = "parallel"))]
pub(crate) fn thread_count(_requested: Option<usize>, _units: usize) -> usize {
    1
}

/// Splits `block` into `threads` blocks of whole units of `unit` rows (`by_rows`) or columns,
/// as evenly as whole units allow, in order.
#[cfg(feature = "parallel")]
pub(crate) fn split<T: Copy>(block: Block<'_, T>, by_rows: bool, unit: usize, threads: usize) -> Vec<Block<'_, T>> {
    let units = if by_rows { block.rows() } else { block.cols() }.div_ceil(unit);
    let mut blocks = Vec::with_capacity(threads);
    let mut rest = block;
    for t in (1..threads).rev() {
        let take = (units * t / threads) * unit; // left for the remaining t threads
        let (left, right) = if by_rows { rest.split_rows(take) } else { rest.split_cols(take) };
        blocks.push(right);
        rest = left;
    }
    blocks.push(rest);
    blocks.reverse();
    blocks
}
