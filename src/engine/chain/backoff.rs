//! Retry delays: exponential backoff with full jitter, Retry-After floor, deadline-aware.
//!
//! Hand-written (a few lines) rather than taken from `backon`: backon's jitter adds a random
//! amount *on top of* the exponential delay (`[d, 2d]`), which is not full jitter (`[0, d]`),
//! and its builder is shaped around driving the retry loop itself, which the engine does.

use std::time::Duration;

use rand::Rng;

/// The exponential ceiling `min(cap, base × 2^retry)`, without overflow for any `retry`.
pub fn backoff_ceiling(retry: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base × 2^retry)]`.
/// `retry` is 0 for the first retry.
pub fn full_jitter(retry: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = backoff_ceiling(retry, base, cap);
    let max_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=max_nanos))
}

/// The delay before the next try on the same target: full jitter, raised to `retry_after`
/// when the provider sent one. `None` when waiting would pass `remaining` (the call's deadline):
/// the caller should fall back at once instead of sleeping past its deadline.
///
/// A delay that would use up *all* of `remaining` also gives `None`: after it there would be no
/// time left for the attempt itself.
pub fn retry_delay(
    retry: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
    remaining: Option<Duration>,
) -> Option<Duration> {
    let mut delay = full_jitter(retry, base, cap);
    if let Some(ra) = retry_after {
        delay = delay.max(ra);
    }
    match remaining {
        Some(rem) if delay >= rem => None,
        _ => Some(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_jitter_stays_within_exponential_ceiling_and_spreads() {
        let base = 100 * MS;
        let cap = Duration::from_secs(2);
        for (retry, ceiling) in [(0, 100 * MS), (1, 200 * MS), (3, 800 * MS), (4, 1600 * MS), (5, cap), (60, cap)] {
            assert_eq!(backoff_ceiling(retry, base, cap), ceiling);
            let samples: Vec<Duration> = (0..2000).map(|_| full_jitter(retry, base, cap)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Uniform on [0, ceiling]: both halves are hit (each miss has probability 2^-2000).
            assert!(samples.iter().any(|d| *d < ceiling / 2), "retry {retry}");
            assert!(samples.iter().any(|d| *d > ceiling / 2), "retry {retry}");
        }
        assert_eq!(full_jitter(3, Duration::ZERO, cap), Duration::ZERO);
        assert!(full_jitter(u32::MAX, Duration::MAX, Duration::MAX) <= Duration::MAX);
    }

    #[test]
    fn retry_after_is_a_floor() {
        for _ in 0..200 {
            let d = retry_delay(0, 10 * MS, 20 * MS, Some(300 * MS), None).unwrap();
            assert_eq!(d, 300 * MS, "jitter ≤ 10 ms never beats a 300 ms Retry-After");
            let d = retry_delay(2, 100 * MS, Duration::from_secs(1), Some(5 * MS), None).unwrap();
            assert!(d <= 400 * MS && d >= 5 * MS);
        }
    }

    #[test]
    fn deadline_clamp_gives_up_instead_of_oversleeping() {
        // A Retry-After beyond the remaining budget: fall back now.
        assert_eq!(retry_delay(0, 10 * MS, 20 * MS, Some(Duration::from_secs(5)), Some(Duration::from_secs(1))), None);
        // Waiting exactly the whole remaining budget leaves nothing for the attempt.
        assert_eq!(retry_delay(0, 10 * MS, 20 * MS, Some(100 * MS), Some(100 * MS)), None);
        assert_eq!(retry_delay(0, 10 * MS, 20 * MS, None, Some(Duration::ZERO)), None);
        // Enough budget: a delay within bounds.
        for _ in 0..200 {
            let d = retry_delay(1, 10 * MS, 20 * MS, None, Some(Duration::from_secs(1))).unwrap();
            assert!(d <= 20 * MS);
        }
    }
}
