//! Rate limits over time, in abstract units (requests or tokens), and the gate that queues
//! callers waiting for them.
//!
//! Limiters take the caller's `now` instead of reading a clock, so tests drive time explicitly
//! and one clock read per request serves every limiter it passes through.
//!
//! Why `TokenBucket` is hand-written rather than built on `governor`: governor's limiter owns
//! its clock (`Clock::now()` takes no argument), so feeding it the caller's `Instant` would need
//! a shared mutable fake clock set before each call, which races between threads. It also
//! refuses a cost above the burst size forever (`InsufficientCapacity`), cannot give tokens back
//! (our negative `adjust`) and does not expose the remaining capacity for status output. The
//! bucket below is ~40 lines behind one mutex.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::RateLimitConfig;
use crate::state::sync;
use crate::state::wait::{Queue, WaitCtx, WaitList, Waiter};

/// Longest wait a limiter reports. Keeps `now + wait` far from `Instant` overflow when a bucket
/// never refills (a zero refill rate).
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// Capacity and what is left at `now`, for status output.
    fn status(&self, now: Instant) -> RateStatus;
    /// Remember how to wake the first caller waiting for this limiter. A limiter whose
    /// budget can come back by itself, not through `adjust` (a slice leased from another
    /// process arriving), calls it then; the in-process limiters never need to.
    fn set_waker(&self, _wake: RateWaker) {}
    /// Take a new `limit` for the same `window` in place (a reload), keeping what was spent
    /// in the window. `false` when this limiter cannot (another kind or window): the store
    /// then makes a new one.
    fn set_limit(&self, _limit: u64, _window: Duration) -> bool {
        false
    }
}

/// Wakes the first caller in a [`RateGate`]'s line (see [`RateLimiter::set_waker`]).
pub type RateWaker = Arc<dyn Fn() + Send + Sync>;

/// The limiter a `[rate_limiting]` table asks for.
pub fn limiter_for(spec: &RateLimitConfig) -> Arc<dyn RateLimiter> {
    match *spec {
        RateLimitConfig::TokenBucket { bucket_size, refill_rate } => Arc::new(TokenBucket::new(bucket_size, refill_rate)),
        RateLimitConfig::SlidingWindow { window_size, max_requests } => Arc::new(SlidingWindow::new(max_requests as u64, window_size)),
    }
}

/// At most `limit` units in any window of `window` (exact: a log of timestamped costs).
/// Use for RPM/TPM, where "never more than N in any minute" is the promise.
///
/// An entry taken at `t` counts until `t + window` (exclusive). Memory is one 24-byte entry per
/// acquisition still inside the window (entries taken at the same `Instant` are merged).
pub struct SlidingWindow {
    window: Duration,
    state: Mutex<WindowLog>,
}

struct WindowLog {
    /// Units allowed in any window (a reload may change it: [`RateLimiter::set_limit`]).
    limit: u64,
    /// (when, units), oldest first.
    log: VecDeque<(Instant, u64)>,
    /// Sum of units in `log`.
    used: u64,
    /// Latest `now` that changed the log. Threads may arrive with slightly older instants; they
    /// are treated as this one so the log stays in time order.
    latest: Option<Instant>,
}

impl SlidingWindow {
    /// At most `limit` units in any `window`.
    pub fn new(limit: u64, window: Duration) -> Self {
        Self { window, state: Mutex::new(WindowLog { limit, log: VecDeque::new(), used: 0, latest: None }) }
    }

    /// Drop expired entries and return the effective (never decreasing) time.
    fn advance(&self, s: &mut WindowLog, now: Instant) -> Instant {
        let now = s.latest.map_or(now, |l| l.max(now));
        s.latest = Some(now);
        while let Some(&(t, units)) = s.log.front() {
            if t + self.window > now {
                break;
            }
            s.used -= units;
            s.log.pop_front();
        }
        now
    }

    /// `Ok` if `cost` fits at `now`, else how long until enough of the oldest entries expire.
    /// Read-only: entries already expired at `now` are skipped rather than removed, so `check`
    /// at any instant leaves no trace.
    fn decide(&self, s: &WindowLog, cost: u64, now: Instant) -> Result<(), Duration> {
        let now = s.latest.map_or(now, |l| l.max(now));
        let expired = s.log.iter().take_while(|(t, _)| *t + self.window <= now);
        let (skip, gone) = expired.fold((0usize, 0u64), |(n, u), &(_, units)| (n + 1, u + units));
        let used = s.used - gone;
        let limit = s.limit;
        if used.saturating_add(cost) <= limit || used == 0 {
            return Ok(());
        }
        // Units that must leave the window before `cost` fits (all of them for an oversized cost).
        let must_free = if cost > limit { used } else { used + cost - limit };
        let mut freed = 0u64;
        for &(t, units) in s.log.iter().skip(skip) {
            freed += units;
            if freed >= must_free {
                return Err((t + self.window).saturating_duration_since(now));
            }
        }
        // Unreachable while `used` equals the sum of the log; be safe rather than panic.
        Err(self.window)
    }
}

impl RateLimiter for SlidingWindow {
    fn try_acquire(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock();
        let now = self.advance(&mut s, now);
        self.decide(&s, cost, now)?;
        if cost > 0 {
            match s.log.back_mut() {
                Some((t, units)) if *t == now => *units += cost,
                _ => s.log.push_back((now, cost)),
            }
            s.used += cost;
        }
        Ok(())
    }
    fn check(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let s = self.state.lock();
        self.decide(&s, cost, now)
    }
    /// Positive: recorded as used now (the usage happened, even past the limit). Negative:
    /// taken off the *oldest* entries still in the window. That is the conservative choice:
    /// every future window that contains an older entry also contains the newer acquisition
    /// being corrected, so window sums never drop below the true usage.
    fn adjust(&self, delta: i64, now: Instant) {
        let mut s = self.state.lock();
        let now = self.advance(&mut s, now);
        if delta > 0 {
            let d = delta as u64;
            match s.log.back_mut() {
                Some((t, units)) if *t == now => *units += d,
                _ => s.log.push_back((now, d)),
            }
            s.used += d;
        } else {
            let mut give_back = delta.unsigned_abs();
            while give_back > 0 {
                let Some(front) = s.log.front_mut() else { break };
                let take = front.1.min(give_back);
                front.1 -= take;
                give_back -= take;
                if front.1 == 0 {
                    s.log.pop_front();
                }
                s.used -= take;
            }
        }
    }
    fn status(&self, now: Instant) -> RateStatus {
        let mut s = self.state.lock();
        self.advance(&mut s, now);
        RateStatus { algorithm: "sliding_window", limit: s.limit, remaining: s.limit.saturating_sub(s.used), period: self.window }
    }
    fn set_limit(&self, limit: u64, window: Duration) -> bool {
        if window != self.window {
            return false;
        }
        self.state.lock().limit = limit;
        true
    }
}

/// A token bucket of `bucket_size` refilled at `refill_rate` units per second, starting full.
/// Use for the pool-level `rate_limiting.token_bucket` table (bursty but bounded on average).
///
/// A cost above `bucket_size` is admitted when the bucket is full and drives it negative (a debt
/// repaid by refill). A non-positive or non-finite `refill_rate` never refills.
pub struct TokenBucket {
    bucket_size: u32,
    refill_rate: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    /// May be negative (debt after an oversized cost or a positive `adjust`).
    tokens: f64,
    last: Option<Instant>,
}

/// Float slack so a wait computed as `need / rate` is enough when the caller comes back exactly
/// at `now + wait` (rounding must never make that retry fail).
const EPS: f64 = 1e-9;

impl TokenBucket {
    /// A full bucket of `bucket_size`, refilled at `refill_rate` per second.
    pub fn new(bucket_size: u32, refill_rate: f64) -> Self {
        Self { bucket_size, refill_rate, state: Mutex::new(Bucket { tokens: bucket_size as f64, last: None }) }
    }

    fn rate(&self) -> f64 {
        if self.refill_rate.is_finite() && self.refill_rate > 0.0 {
            self.refill_rate
        } else {
            0.0
        }
    }

    /// Tokens available at `now`, without storing anything.
    fn tokens_at(&self, b: &Bucket, now: Instant) -> f64 {
        match b.last {
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                (b.tokens + dt * self.rate()).min(self.bucket_size as f64)
            }
            None => b.tokens,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        b.tokens = self.tokens_at(b, now);
        // Time never runs backwards for the bucket (callers may pass slightly older instants).
        b.last = Some(b.last.map_or(now, |l| l.max(now)));
    }

    fn decide(&self, tokens: f64, cost: u64) -> Result<(), Duration> {
        let size = self.bucket_size as f64;
        // An oversized cost needs a full bucket rather than an impossible amount.
        let need = (cost as f64).min(size);
        if tokens + EPS >= need {
            return Ok(());
        }
        let rate = self.rate();
        if rate == 0.0 {
            return Err(MAX_WAIT);
        }
        let secs = (need - tokens) / rate;
        Err(Duration::try_from_secs_f64(secs).unwrap_or(MAX_WAIT).min(MAX_WAIT))
    }
}

impl RateLimiter for TokenBucket {
    fn try_acquire(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let mut b = self.state.lock();
        self.refill(&mut b, now);
        self.decide(b.tokens, cost)?;
        b.tokens -= cost as f64;
        Ok(())
    }
    fn check(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        let b = self.state.lock();
        self.decide(self.tokens_at(&b, now), cost)
    }
    /// Positive: taken from the bucket (possibly into debt). Negative: given back, up to full.
    fn adjust(&self, delta: i64, now: Instant) {
        let mut b = self.state.lock();
        self.refill(&mut b, now);
        b.tokens = (b.tokens - delta as f64).min(self.bucket_size as f64);
    }
    fn status(&self, now: Instant) -> RateStatus {
        let mut b = self.state.lock();
        self.refill(&mut b, now);
        let rate = self.rate();
        RateStatus {
            algorithm: "token_bucket",
            limit: self.bucket_size as u64,
            remaining: (b.tokens + EPS).max(0.0).floor() as u64,
            period: if rate > 0.0 { Duration::try_from_secs_f64(1.0 / rate).unwrap_or(MAX_WAIT).min(MAX_WAIT) } else { MAX_WAIT },
        }
    }
}

/// Why a [`RateGate`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateBlock {
    /// First in line: the budget fits at this instant.
    Until(Instant),
    /// Behind older waiters: woken when the one in front is served or leaves.
    Queued,
}

/// A rate limiter and the line of callers waiting for its budget.
///
/// Only the first in line waits for a time (the instant its cost fits); the others wait for
/// it to be served, so a budget that refills wakes one caller, not all of them. Refunds (a
/// failed or cancelled request's estimate, a TPM estimate corrected downwards) wake the first
/// in line at once.
pub struct RateGate {
    limiter: Arc<dyn RateLimiter>,
    waiters: Arc<sync::Mutex<WaitList>>,
}

impl RateGate {
    /// A gate in front of `limiter`.
    pub fn new(limiter: Arc<dyn RateLimiter>) -> Self {
        let waiters = Arc::new(sync::Mutex::new(WaitList::default()));
        let line = Arc::downgrade(&waiters);
        limiter.set_waker(Arc::new(move || {
            if let Some(l) = line.upgrade() {
                l.lock().wake_oldest(1);
            }
        }));
        Self { limiter, waiters }
    }

    /// The limiter behind the gate.
    pub fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// Take `cost` units for the caller of `ctx`, or say when to come back. A waiting caller
    /// (see [`WaitCtx::start_waiting`]) is queued when refused.
    pub fn try_take(self: &Arc<Self>, cost: u64, now: Instant, ctx: &mut WaitCtx) -> Result<(), RateBlock> {
        let mut q = self.waiters.lock();
        let who = ctx.waiter().cloned();
        let refused = if !q.may_take(who.as_deref()) {
            RateBlock::Queued
        } else {
            match self.limiter.try_acquire(cost, now) {
                Ok(()) => {
                    if let Some(w) = &who {
                        if q.remove(w.ticket()) {
                            // Served: the next in line computes its own time.
                            q.wake_oldest(1);
                        }
                    }
                    return Ok(());
                }
                Err(wait) => RateBlock::Until(now + wait),
            }
        };
        if let Some(w) = &who {
            q.enqueue(w);
            drop(q);
            ctx.joined(self.clone());
        }
        Err(refused)
    }

    /// Whether `who` could take `cost` now, without taking or queueing anything.
    pub fn check(&self, cost: u64, now: Instant, who: Option<&Waiter>) -> Result<(), RateBlock> {
        let q = self.waiters.lock();
        if !q.may_take(who) {
            return Err(RateBlock::Queued);
        }
        self.limiter.check(cost, now).map_err(|wait| RateBlock::Until(now + wait))
    }

    /// Give `units` back (they were not used) and wake the first in line.
    pub fn give_back(&self, units: u64, now: Instant) {
        if units == 0 {
            return;
        }
        self.limiter.adjust(-(units.min(i64::MAX as u64) as i64), now);
        self.waiters.lock().wake_oldest(1);
    }

    /// Correct an earlier take by `delta` units (real usage minus the estimate).
    pub fn correct(&self, delta: i64, now: Instant) {
        if delta < 0 {
            self.give_back(delta.unsigned_abs(), now);
        } else if delta > 0 {
            self.limiter.adjust(delta, now);
        }
    }

    /// A reload's new limit, in place (see [`RateLimiter::set_limit`]); the first in line
    /// looks again (more may fit now). `false` when the limiter cannot change in place.
    pub fn set_limit(&self, limit: u64, window: Duration) -> bool {
        let changed = self.limiter.set_limit(limit, window);
        if changed {
            self.waiters.lock().wake_oldest(1);
        }
        changed
    }

    /// Callers waiting for this budget.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().len()
    }

    /// Capacity and what is left at `now`.
    pub fn status(&self, now: Instant) -> RateStatus {
        self.limiter.status(now)
    }
}

impl Queue for RateGate {
    fn leave(&self, ticket: u64) {
        let mut q = self.waiters.lock();
        let was_front = q.is_front(ticket);
        if q.remove(ticket) && was_front {
            q.wake_oldest(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_reload_changes_a_window_limit_in_place_and_what_was_spent_still_counts() {
        use crate::state::store::{MemoryStore, RateSpec, StateStore};
        let store = MemoryStore::new();
        let minute = Duration::from_secs(60);
        let gate = store.rate("i:rpm", RateSpec::Window { limit: 3, window: minute });
        let t = Instant::now();
        for _ in 0..3 {
            assert!(gate.limiter().try_acquire(1, t).is_ok());
        }
        assert!(gate.limiter().try_acquire(1, t).is_err());
        // Raised to 4: the same gate, one more fits, the three spent still count.
        let again = store.rate("i:rpm", RateSpec::Window { limit: 4, window: minute });
        assert!(Arc::ptr_eq(&gate, &again));
        assert!(again.limiter().try_acquire(1, t).is_ok());
        assert!(again.limiter().try_acquire(1, t).is_err());
        assert_eq!(again.status(t).limit, 4);
        // Lowered to 2: still the same gate, and nothing fits until the window moves on.
        let lower = store.rate("i:rpm", RateSpec::Window { limit: 2, window: minute });
        assert!(Arc::ptr_eq(&gate, &lower));
        assert!(lower.limiter().try_acquire(1, t + Duration::from_secs(59)).is_err());
        // Another window length is another limiter.
        let other = store.rate("i:rpm", RateSpec::Window { limit: 2, window: Duration::from_secs(1) });
        assert!(!Arc::ptr_eq(&gate, &other));
    }

    #[test]
    fn sliding_window_refuses_then_reports_exact_wait() {
        let w = SlidingWindow::new(3, Duration::from_secs(1));
        let t = Instant::now();
        assert!(w.try_acquire(1, t).is_ok());
        assert!(w.try_acquire(1, t + 100 * MS).is_ok());
        assert!(w.try_acquire(1, t + 200 * MS).is_ok());
        assert_eq!(w.try_acquire(1, t + 300 * MS), Err(700 * MS));
        assert_eq!(w.check(2, t + 300 * MS), Err(800 * MS));
        assert!(w.try_acquire(1, t + 1000 * MS).is_ok(), "first entry expired at t+1s");
        assert_eq!(w.status(t + 1000 * MS).remaining, 0);
        assert_eq!(w.status(t + 1100 * MS).remaining, 1);
    }

    #[test]
    fn sliding_window_oversized_cost_only_when_empty() {
        let w = SlidingWindow::new(10, Duration::from_secs(1));
        let t = Instant::now();
        assert!(w.try_acquire(1, t).is_ok());
        assert_eq!(w.try_acquire(50, t + 100 * MS), Err(900 * MS), "waits for the window to empty");
        assert!(w.try_acquire(50, t + 1000 * MS).is_ok());
        assert_eq!(w.try_acquire(1, t + 1500 * MS), Err(500 * MS));
        assert_eq!(w.status(t + 1500 * MS).remaining, 0);
    }

    #[test]
    fn sliding_window_tpm_adjust() {
        let w = SlidingWindow::new(1000, Duration::from_secs(60));
        let t = Instant::now();
        // Estimated 400 tokens per request; two fit, the third does not.
        assert!(w.try_acquire(400, t).is_ok());
        assert!(w.try_acquire(400, t + MS).is_ok());
        assert!(w.check(400, t + 2 * MS).is_err());
        // Real usage of the first was 100: give 300 back, and now the third fits.
        w.adjust(-300, t + 2 * MS);
        assert_eq!(w.status(t + 2 * MS).remaining, 500);
        assert!(w.try_acquire(400, t + 2 * MS).is_ok());
        // Under-estimated by 250: the window is now over the limit until entries expire.
        w.adjust(250, t + 3 * MS);
        assert_eq!(w.status(t + 3 * MS).remaining, 0);
        assert!(w.check(1, t + 4 * MS).is_err());
        // Giving back more than was used never goes below empty.
        w.adjust(-1_000_000, t + 5 * MS);
        assert_eq!(w.status(t + 5 * MS).remaining, 1000);
    }

    proptest! {
        /// Over a long random sequence of acquisitions (with gaps, bursts, and costs larger than
        /// the limit), no window of length `window` ever holds more than `limit` units, except
        /// a window holding a single oversized acquisition. Every refusal's wait is exact:
        /// the same cost fits at `now + wait` and not a nanosecond earlier.
        #[test]
        fn sliding_window_never_exceeds_limit(
            limit in 1u64..20,
            window_ms in 1u64..200,
            ops in prop::collection::vec((0u64..60, 1u64..25), 1..400),
        ) {
            let window = Duration::from_millis(window_ms);
            let w = SlidingWindow::new(limit, window);
            let base = Instant::now();
            let mut now = base;
            let mut admitted: Vec<(Instant, u64)> = Vec::new();
            for (dt, cost) in ops {
                now += Duration::from_millis(dt) / 3;
                match w.try_acquire(cost, now) {
                    Ok(()) => admitted.push((now, cost)),
                    Err(wait) => {
                        prop_assert!(wait > Duration::ZERO && wait <= window);
                        prop_assert!(w.check(cost, now + wait).is_ok());
                        prop_assert!(w.check(cost, now + wait - Duration::from_nanos(1)).is_err());
                    }
                }
            }
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let inside: Vec<u64> =
                    admitted[i..].iter().take_while(|(t, _)| *t < start + window).map(|&(_, c)| c).collect();
                let sum: u64 = inside.iter().sum();
                prop_assert!(
                    sum <= limit || inside.len() == 1,
                    "window at {:?} holds {} > {} in {:?}", start - base, sum, limit, inside
                );
            }
        }
    }

    #[test]
    fn token_bucket_starts_full_and_refills() {
        let b = TokenBucket::new(10, 5.0); // 5 tokens/s
        let t = Instant::now();
        for _ in 0..10 {
            assert!(b.try_acquire(1, t).is_ok());
        }
        assert_eq!(b.try_acquire(1, t), Err(200 * MS));
        assert_eq!(b.check(3, t), Err(600 * MS));
        assert!(b.try_acquire(1, t + 199 * MS).is_err());
        assert!(b.try_acquire(1, t + 200 * MS).is_ok());
        assert_eq!(b.status(t + 200 * MS).remaining, 0);
        // Refill is capped at the bucket size.
        let s = b.status(t + Duration::from_secs(100));
        assert_eq!((s.remaining, s.limit, s.period, s.algorithm), (10, 10, 200 * MS, "token_bucket"));
    }

    #[test]
    fn token_bucket_oversized_cost_and_adjust() {
        let b = TokenBucket::new(10, 10.0);
        let t = Instant::now();
        assert!(b.try_acquire(25, t).is_ok(), "a full bucket admits an oversized cost");
        // 15 tokens of debt + 10 to be full again = 2.5 s.
        assert_eq!(b.check(25, t), Err(2500 * MS));
        assert!(b.check(1, t + 1500 * MS).is_err());
        assert!(b.check(1, t + 1600 * MS).is_ok());
        b.adjust(-100, t + 3 * Duration::from_secs(1));
        assert_eq!(b.status(t + 3 * Duration::from_secs(1)).remaining, 10, "give back is capped at full");
        b.adjust(4, t + 3 * Duration::from_secs(1));
        assert_eq!(b.status(t + 3 * Duration::from_secs(1)).remaining, 6);
    }

    #[test]
    fn token_bucket_without_refill_never_hangs_callers_forever() {
        let b = TokenBucket::new(1, 0.0);
        let t = Instant::now();
        assert!(b.try_acquire(1, t).is_ok());
        assert_eq!(b.try_acquire(1, t + Duration::from_secs(1000)), Err(MAX_WAIT));
        assert_eq!(b.status(t).period, MAX_WAIT);
    }

    #[test]
    fn limiter_for_builds_the_configured_algorithm() {
        let t = Instant::now();
        let l = limiter_for(&RateLimitConfig::SlidingWindow { window_size: Duration::from_secs(60), max_requests: 2 });
        assert!(l.try_acquire(1, t).is_ok() && l.try_acquire(1, t).is_ok());
        assert!(l.try_acquire(1, t).is_err());
        let s = l.status(t);
        assert_eq!((s.algorithm, s.limit, s.period), ("sliding_window", 2, Duration::from_secs(60)));
        let l = limiter_for(&RateLimitConfig::TokenBucket { bucket_size: 3, refill_rate: 1.0 });
        assert_eq!(l.status(t).algorithm, "token_bucket");
        assert_eq!(l.status(t).remaining, 3);
    }
}
