//! Instance selection strategies (round robin, LRU, weighted, least busy, latency/P2C).
//!
//! INTERFACE (implementation pending in this file): see the doc on each item.

use std::time::Instant;

use crate::config::RotationStrategy;

/// What a strategy may read about a candidate instance. Implemented by `instance::Instance`.
pub trait Candidate {
    /// Requests in flight now.
    fn in_flight(&self) -> u32;
    /// In-flight cap (0 = unlimited).
    fn max_concurrency(&self) -> u32;
    /// When the instance was last *selected* (stamped at selection time), if ever.
    fn last_used(&self) -> Option<Instant>;
    /// Static weight from config.
    fn weight(&self) -> f64;
    /// Mean latency of successful calls in seconds (0.0 = none measured yet).
    fn avg_latency(&self) -> f64;
    /// Exponentially weighted moving average of latency in seconds, `None` until measured.
    fn ewma_latency(&self) -> Option<f64>;
    fn success_count(&self) -> u64;
    fn failure_count(&self) -> u64;
}

/// Picks one instance among candidates. One per pool / echelon; cheap to call (sub-µs at 64
/// candidates); holds only the strategy's own cursor/RNG state.
///
/// `select` receives every instance of the pool in stable order plus a predicate telling which
/// can take a request now. Strategy rules:
/// - `RoundRobin`: a cursor over the *full* list; returns the first eligible at or after the
///   cursor and moves the cursor past it, so a change in availability never skips or repeats.
/// - `LeastRecentlyUsed`: oldest `last_used` (never used first); ties broken randomly. The
///   caller stamps `last_used` at selection, so concurrent requests spread.
/// - `Weighted`: the original formula `max(0.1, weight × perf × reliability × load)` with
///   `perf = 1/avg_latency` (1.0 if unmeasured), `reliability = s/(s+f)` (1.0 if none),
///   `load = 1 − in_flight/max_concurrency` (1.0 if unlimited); weighted random draw.
/// - `LeastBusy`: fewest in flight, ties broken randomly.
/// - `Latency`: unmeasured candidates first (random among them); else power of two choices
///   on `ewma_latency`.
pub struct Scheduler {
    strategy: RotationStrategy,
}

impl Scheduler {
    pub fn new(strategy: RotationStrategy) -> Self {
        Self { strategy }
    }
    pub fn strategy(&self) -> RotationStrategy {
        self.strategy
    }
    /// Index into `candidates` of the chosen one, or `None` if none is eligible.
    pub fn select<C: Candidate>(&self, candidates: &[C], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let _ = (candidates.len(), eligible(0));
        unimplemented!()
    }
}

/// The original `WeightedScheduler.calculate_weight` formula (floor 0.1).
pub fn weighted_score<C: Candidate>(c: &C) -> f64 {
    let _ = c;
    unimplemented!()
}
