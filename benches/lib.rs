//! Benchmarks live in `benches/`; run them with `cargo xtask bench` (`quant-bench`, against the
//! peers) and `cargo xtask criterion` (the criterion microbenchmarks).
