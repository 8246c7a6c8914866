//! criterion micro-benchmarks of the hot paths (selection, limiter checks, breaker transitions).
fn main() {}
