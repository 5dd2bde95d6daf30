//! What the kernel test files share (each uses part of it).
#![allow(dead_code)]

use quant_matmul::{Gemm, KernelChoice, Tier};

/// The tiers under test: portable and `QUANT_KERNEL`'s tier (`cargo xtask test` runs the
/// suites once per tier this CPU has), or, unset, every tier this CPU has.
pub fn tiers() -> Vec<Tier> {
    let requested = quant_traits::cpu::requested_tier().expect("QUANT_KERNEL names a tier");
    let mut v = vec![Tier::Portable];
    match requested {
        Some(t) if t != Tier::Portable => v.push(t),
        Some(_) => {}
        None => v.extend(Tier::ALL.into_iter().filter(|&t| t != Tier::Portable && t.is_available())),
    }
    v
}

/// Every tier under test with 1 and 2 threads.
pub fn settings() -> Vec<Gemm> {
    tiers().into_iter().flat_map(|t| [1, 2].map(|th| Gemm::new().kernel(KernelChoice::of(t)).threads(th))).collect()
}
