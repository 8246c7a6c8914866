//! Call statistics of one instance (counts, latency EWMA and quantiles, last use) and its
//! cooldown. Lock-free counters plus a small latency window; kept across reloads by the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// Longest cooldown one answer can impose (a Retry-After, a quota error): a day.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Process-wide monotonic epoch, so instants fit in atomics as nanoseconds.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn to_nanos(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64 + 1
}

pub(crate) fn from_nanos(n: u64) -> Option<Instant> {
    (n != 0).then(|| epoch() + Duration::from_nanos(n - 1))
}

const LATENCY_RING: usize = 256;
/// Weight of a new sample in the latency EWMA.
const EWMA_ALPHA: f64 = 0.3;

#[derive(Default)]
struct Latency {
    ewma: Option<f64>,
    sum: f64,
    count: u64,
    ring: Vec<f32>,
    /// When each ring sample was taken (`to_nanos`), for time-windowed quantiles (alerts).
    ring_at: Vec<u64>,
    pos: usize,
}

/// Call statistics of one instance. Lock-free counters plus a small latency window.
#[derive(Default)]
pub struct InstanceStats {
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    last_used: AtomicU64,
    cooldown_until: AtomicU64,
    latency: Mutex<Latency>,
    /// Mean latency and EWMA mirrored out of `latency` as they change, so weighted and
    /// latency picks read atomics instead of taking the lock per candidate.
    avg_mirror: F64Mirror,
    ewma_mirror: F64Mirror,
    /// Where a cooldown decided here is published (a store shared by several processes).
    cooldown_sink: OnceLock<CooldownSink>,
}

/// Publishes a cooldown decided in this process (how long it runs from now) to the others.
/// Called on the request path: it only queues work, never blocks.
pub type CooldownSink = Arc<dyn Fn(Duration) + Send + Sync>;

/// An `Option<f64>` of a positive quantity in one atomic (0 bits = `None`).
#[derive(Default)]
struct F64Mirror(AtomicU64);

impl F64Mirror {
    fn set(&self, v: f64) {
        // A measured latency is never exactly 0 s; the floor keeps 0 bits meaning "none".
        self.0.store(v.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> Option<f64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            bits => Some(f64::from_bits(bits)),
        }
    }
}

/// A snapshot of an instance's statistics for status output.
#[derive(Clone, Debug, Serialize)]
pub struct StatsSnapshot {
    /// Calls (and streams) that reached this instance.
    pub requests: u64,
    /// Of those, the ones that succeeded.
    pub successes: u64,
    /// Of those, the ones that failed (each counted once, whatever the retries).
    pub failures: u64,
    /// Mean latency of successful calls, seconds.
    pub avg_latency: f64,
    /// Exponentially weighted latency (seconds) that latency-based selection uses; `None`
    /// before the first success.
    pub ewma_latency: Option<f64>,
    /// Median latency (seconds) over the recent successes kept in the ring.
    pub p50_latency: Option<f64>,
    /// 99th-percentile latency (seconds) over the same ring.
    pub p99_latency: Option<f64>,
}

impl InstanceStats {
    fn record_latency(&self, secs: f64) {
        let mut l = self.latency.lock();
        l.ewma = Some(match l.ewma {
            Some(prev) => prev + EWMA_ALPHA * (secs - prev),
            None => secs,
        });
        l.sum += secs;
        l.count += 1;
        self.avg_mirror.set(l.sum / l.count as f64);
        if let Some(e) = l.ewma {
            self.ewma_mirror.set(e);
        }
        let at = to_nanos(Instant::now());
        if l.ring.len() < LATENCY_RING {
            l.ring.push(secs as f32);
            l.ring_at.push(at);
        } else {
            let pos = l.pos;
            l.ring[pos] = secs as f32;
            if let Some(slot) = l.ring_at.get_mut(pos) {
                *slot = at;
            }
        }
        l.pos = (l.pos + 1) % LATENCY_RING;
    }

    /// The weighted score's terms for an instance of `weight`.
    pub fn weighted_terms(&self, weight: f64) -> crate::engine::schedule::WeightedTerms {
        let (s, f) = (self.successes.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed));
        crate::engine::schedule::WeightedTerms::new(weight, self.avg_mirror.get().unwrap_or(0.0), s, f)
    }

    /// Latencies (seconds) of the successful calls recorded since `since`, among the last
    /// 256. Used by the alert evaluator's `p99_latency` rule.
    pub fn latencies_since(&self, since: Instant) -> Vec<f64> {
        let cut = to_nanos(since);
        let l = self.latency.lock();
        l.ring.iter().zip(&l.ring_at).filter(|(_, at)| **at >= cut).map(|(v, _)| *v as f64).collect()
    }

    /// Requests leased and counted failures so far (cheap; for windowed error ratios).
    pub fn counts(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed))
    }

    /// The counters and latency figures now, for status output.
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = self.latency.lock();
        let (p50, p99) = if l.ring.is_empty() {
            (None, None)
        } else {
            let mut v = l.ring.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64;
            (Some(at(0.5)), Some(at(0.99)))
        };
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            avg_latency: if l.count > 0 { l.sum / l.count as f64 } else { 0.0 },
            ewma_latency: l.ewma,
            p50_latency: p50,
            p99_latency: p99,
        }
    }
}

impl InstanceStats {
    /// Count a lease taken at `now`.
    pub fn record_lease(&self, now: Instant) {
        self.last_used.store(to_nanos(now), Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a success that took `latency`.
    pub fn record_success(&self, latency: Duration) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.record_latency(latency.as_secs_f64());
    }

    /// Count a failure that says something about the instance.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// When the instance was last leased.
    pub fn last_used(&self) -> Option<Instant> {
        from_nanos(self.last_used.load(Ordering::Relaxed))
    }

    /// Successful calls so far.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Counted failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Mean latency of successful calls (seconds), once measured.
    pub fn avg_latency(&self) -> Option<f64> {
        self.avg_mirror.get()
    }

    /// Latency EWMA (seconds), once measured.
    pub fn ewma_latency(&self) -> Option<f64> {
        self.ewma_mirror.get()
    }

    /// Keep the instance out of selection until `now + d` (capped at [`MAX_COOLDOWN`]). A
    /// cooldown already running longer is kept: a later, shorter hint never shortens it.
    pub fn cool_down(&self, now: Instant, d: Duration) -> Instant {
        let until = self.apply_cooldown(now, d);
        if let Some(sink) = self.cooldown_sink.get() {
            if until > now {
                sink(until - now);
            }
        }
        until
    }

    /// Like [`InstanceStats::cool_down`] for a cooldown decided in another process: applied
    /// here, not published again.
    pub fn apply_cooldown(&self, now: Instant, d: Duration) -> Instant {
        let until = now.checked_add(d.min(MAX_COOLDOWN)).unwrap_or(now);
        let prev = self.cooldown_until.fetch_max(to_nanos(until), Ordering::AcqRel);
        from_nanos(prev).map_or(until, |p| p.max(until))
    }

    /// Publish every cooldown decided here through `sink` (once, right after creation).
    pub fn set_cooldown_sink(&self, sink: CooldownSink) {
        let _ = self.cooldown_sink.set(sink);
    }

    /// When the running cooldown ends, if one runs at `now`.
    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        from_nanos(self.cooldown_until.load(Ordering::Acquire)).filter(|t| *t > now)
    }

    /// End any cooldown (a breaker reset by hand).
    pub fn clear_cooldown(&self) {
        self.cooldown_until.store(0, Ordering::Release);
    }
}

#[cfg(all(test, not(echelon_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_later_cooldown_never_shortens_a_longer_one() {
        let s = InstanceStats::default();
        let t = Instant::now();
        let long = s.cool_down(t, Duration::from_secs(30));
        assert_eq!(s.cool_down(t, Duration::from_secs(1)), long);
        assert_eq!(s.cooldown_until(t), Some(long));
        let longer = s.cool_down(t, Duration::from_secs(60));
        assert!(longer > long);
        assert_eq!(s.cooldown_until(t + Duration::from_secs(61)), None);
    }

    #[test]
    fn cooldowns_are_capped_at_a_day_and_cannot_overflow() {
        let s = InstanceStats::default();
        let t = Instant::now();
        let until = s.cool_down(t, Duration::MAX);
        assert_eq!(until, t + MAX_COOLDOWN);
        assert!(s.cooldown_until(t + MAX_COOLDOWN - Duration::from_secs(1)).is_some());
        s.clear_cooldown();
        assert_eq!(s.cooldown_until(t), None);
    }
}
