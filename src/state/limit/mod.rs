//! Limits: requests in flight ([`ConcurrencyLimit`]) and request/token rates over time
//! ([`RateLimiter`] behind a [`RateGate`]). Each limit owns the queue of callers waiting for it
//! (see [`crate::state::wait`]).
//!
//! The path of a request through its limits:
//! 1. Selection asks each candidate instance whether it can take the request now (cheap checks,
//!    no side effects); the strategy picks one of those that can.
//! 2. The lease on the picked instance takes, all or nothing and in this order: the instance's
//!    concurrency slot, the model's (`max_concurrency`, shared by every group and pool using
//!    the model), the echelon RPM and the model RPM and TPM budgets (TPM by an estimate:
//!    prompt length plus `max_tokens`), then a breaker admission. Whatever was taken is given
//!    back if a later step refuses.
//! 3. When every candidate is refused the call waits: it is queued in the line of each limit
//!    that refused it and sleeps until one of them wakes it, until the earliest instant a
//!    time-based block (a rate window, a cooldown) lifts, or until its deadline.
//! 4. When the call ends, slots are released (waking the oldest waiter), and the TPM estimate is
//!    corrected to the real usage, or given back whole when the request failed or was
//!    abandoned before using any tokens.

mod concurrency;
mod rate;

pub use concurrency::{ConcurrencyLimit, SlotSource};
pub use rate::{limiter_for, RateBlock, RateGate, RateLimiter, RateStatus, RateWaker, SlidingWindow, TokenBucket, MAX_WAIT};
