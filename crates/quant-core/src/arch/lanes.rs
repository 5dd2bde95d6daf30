//! The eight-lane k-quant search's contract: the lanes, the search parameters and their
//! candidate indices (`crate::ggml::lanes` has the search itself and its portable build; a
//! tier's fast path is `CoreKernels::qkx2_search`).

/// Lanes per call: the sub-blocks searched together.
pub(crate) const LANES: usize = 8;

pub(crate) type V = [f32; LANES];

/// The search parameters of `make_qkx2_quants` (see there).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Search {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

impl Search {
    /// The candidate indices `is` tried after the first guess: `0..=nstep`, none when
    /// `nstep < 1` (ggml returns the first guess then).
    pub(crate) fn candidates(self) -> core::ops::Range<i32> {
        0..if self.nstep < 1 { 0 } else { self.nstep + 1 }
    }
}
