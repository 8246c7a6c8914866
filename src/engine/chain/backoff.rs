//! Retry delays: the exponential ceiling of full-jitter backoff (the jitter itself and the
//! Retry-After floor are applied by `super::policy`, which is given a random sample).
//!
//! Hand-written (a few lines) rather than taken from `backon`: backon's jitter adds a random
//! amount *on top of* the exponential delay (`[d, 2d]`), which is not full jitter (`[0, d]`),
//! and its builder is shaped around driving the retry loop itself, which the engine does.

use std::time::Duration;

/// The exponential ceiling `min(cap, base × 2^retry)`, without overflow for any `retry`.
pub fn backoff_ceiling(retry: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

#[cfg(all(test, not(echelon_loom)))]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_up_to_the_cap_without_overflow() {
        let base = 100 * MS;
        let cap = Duration::from_secs(2);
        for (retry, ceiling) in [(0, 100 * MS), (1, 200 * MS), (3, 800 * MS), (4, 1600 * MS), (5, cap), (60, cap)] {
            assert_eq!(backoff_ceiling(retry, base, cap), ceiling);
        }
        assert_eq!(backoff_ceiling(u32::MAX, Duration::MAX, Duration::MAX), Duration::MAX);
        assert_eq!(backoff_ceiling(3, Duration::ZERO, cap), Duration::ZERO);
    }
}
