//! Limits: in-flight concurrency, and request/token rates over time.
//!
//! INTERFACE (implementation pending in this file): see the doc on each item.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A cap on requests in flight. `limit == 0` means unlimited. Lock-free.
pub struct ConcurrencyLimit {
    limit: u32,
}

impl ConcurrencyLimit {
    pub fn new(limit: u32) -> Self {
        Self { limit }
    }
    /// Take a slot if one is free.
    pub fn try_acquire(&self) -> bool {
        unimplemented!()
    }
    /// Give a slot back (never below zero).
    pub fn release(&self) {
        unimplemented!()
    }
    /// Whether a slot is free now.
    pub fn has_room(&self) -> bool {
        unimplemented!()
    }
    pub fn in_flight(&self) -> u32 {
        unimplemented!()
    }
    /// 0 = unlimited.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// What a rate limiter shows to status output.
#[derive(Clone, Debug, Serialize)]
pub struct RateStatus {
    /// `"sliding_window"` or `"token_bucket"`.
    pub algorithm: &'static str,
    /// Capacity per window (sliding window) or bucket size (token bucket).
    pub limit: u64,
    /// Units left that could be taken now.
    pub remaining: u64,
    /// Window length, or time to refill one unit.
    pub period: Duration,
}

/// A rate limit over time, in abstract units (requests, or tokens).
///
/// This is the seam a cross-process (Redis) store will implement; callers only use this trait.
pub trait RateLimiter: Send + Sync {
    /// Take `cost` units now, or say how long until they would be available.
    /// A cost larger than the whole capacity is admitted when the limiter is empty
    /// (so one huge request is never refused forever).
    fn try_acquire(&self, cost: u64, now: Instant) -> Result<(), Duration>;
    /// Like `try_acquire` without taking anything.
    fn check(&self, cost: u64, now: Instant) -> Result<(), Duration>;
    /// Correct a previous acquisition by `delta` units (positive: more were used than
    /// estimated; negative: fewer). Used for TPM once the real usage is known.
    fn adjust(&self, delta: i64, now: Instant);
    fn status(&self, now: Instant) -> RateStatus;
}

/// At most `limit` units in any window of `window` (exact: a log of timestamped costs).
/// Use for RPM/TPM, where "never more than N in any minute" is the promise.
pub struct SlidingWindow {
    limit: u64,
    window: Duration,
}

impl SlidingWindow {
    pub fn new(limit: u64, window: Duration) -> Self {
        Self { limit, window }
    }
}

impl RateLimiter for SlidingWindow {
    fn try_acquire(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let _ = (cost, now, self.limit, self.window);
        unimplemented!()
    }
    fn check(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let _ = (cost, now);
        unimplemented!()
    }
    fn adjust(&self, delta: i64, now: Instant) {
        let _ = (delta, now);
        unimplemented!()
    }
    fn status(&self, now: Instant) -> RateStatus {
        let _ = now;
        unimplemented!()
    }
}

/// A token bucket of `bucket_size` refilled at `refill_rate` units per second, starting full.
/// Use for the pool-level `rate_limiting.token_bucket` table (bursty but bounded on average).
pub struct TokenBucket {
    bucket_size: u32,
    refill_rate: f64,
}

impl TokenBucket {
    pub fn new(bucket_size: u32, refill_rate: f64) -> Self {
        Self { bucket_size, refill_rate }
    }
}

impl RateLimiter for TokenBucket {
    fn try_acquire(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let _ = (cost, now, self.bucket_size, self.refill_rate);
        unimplemented!()
    }
    fn check(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let _ = (cost, now);
        unimplemented!()
    }
    fn adjust(&self, delta: i64, now: Instant) {
        let _ = (delta, now);
        unimplemented!()
    }
    fn status(&self, now: Instant) -> RateStatus {
        let _ = now;
        unimplemented!()
    }
}
