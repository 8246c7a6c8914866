//! Retry delays: exponential backoff with full jitter, Retry-After floor, deadline-aware.
//!
//! INTERFACE (implementation pending in this file): see the doc on each item.

use std::time::Duration;

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base × 2^retry)]`.
/// `retry` is 0 for the first retry.
pub fn full_jitter(retry: u32, base: Duration, cap: Duration) -> Duration {
    let _ = (retry, base, cap);
    unimplemented!()
}

/// The delay before the next try on the same target: full jitter, raised to `retry_after`
/// when the provider sent one. `None` when waiting would pass `remaining` (the call's deadline):
/// the caller should fall back at once instead of sleeping past its deadline.
pub fn retry_delay(
    retry: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
    remaining: Option<Duration>,
) -> Option<Duration> {
    let _ = (retry, base, cap, retry_after, remaining);
    unimplemented!()
}
