//! The health an instance shows (the original system's five states), read from its circuit
//! breaker, plus what active health probes record.
//!
//! Health used to be a second state machine beside the breaker, with its own threshold and
//! rest: with pool health checks on, it ejected an instance after 3 failures while the breaker
//! opened after 5, and its "recovering" state then let unlimited traffic through instead of a
//! probe's worth. Now the breaker alone decides who gets traffic, and the status is a view of
//! it:
//!
//! | breaker | status |
//! |---|---|
//! | open because a key was rejected or the model is unknown | `failed` |
//! | open (failures, or failed health probes) | `unhealthy` |
//! | half-open, or open with its rest over | `recovering` |
//! | closed, with consecutive failures or a failure ratio above 50% recently | `degraded` |
//! | closed | `healthy` |
//!
//! Active probes feed the breaker: `failure_threshold` consecutive failed probes open it for
//! `recovery_time` (the pool's `health_check` settings), and a successful probe of an open
//! breaker lets its half-open probes through at once.
//!
//! Time is passed in by the caller, so transitions are testable without sleeping.

use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::HealthCheckConfig;
use crate::state::breaker::{Breaker, BreakerState, OpenCause};

/// How many recent outcomes the error-ratio rule looks at.
pub const OUTCOME_WINDOW: u32 = 20;
/// The error-ratio rule needs at least this many outcomes before it applies.
pub const MIN_RATIO_SAMPLES: u32 = 10;

/// The original system's instance states (same string values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Closed breaker, no recent failures.
    Healthy,
    /// Closed breaker with recent failures: still gets traffic.
    Degraded,
    /// Open breaker: no traffic until its rest is over.
    Unhealthy,
    /// Open because the instance cannot serve as configured (rejected key, unknown model).
    Failed,
    /// Half-open: probes only.
    Recovering,
}

impl InstanceStatus {
    /// `"healthy"`, `"degraded"`, `"unhealthy"`, `"failed"`, `"recovering"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Healthy => "healthy",
            InstanceStatus::Degraded => "degraded",
            InstanceStatus::Unhealthy => "unhealthy",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Recovering => "recovering",
        }
    }
    /// Whether an instance in this state may get requests (a recovering one only as the
    /// breaker's probes).
    pub fn is_available(self) -> bool {
        matches!(self, InstanceStatus::Healthy | InstanceStatus::Degraded | InstanceStatus::Recovering)
    }
}

/// A status change, returned so the caller can emit an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The status shown before.
    pub from: InstanceStatus,
    /// The status shown now.
    pub to: InstanceStatus,
}

/// What one instance's health shows, and its active-probe settings. Thread-safe.
pub struct Health {
    cfg: HealthCheckConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The status last reported (transitions are changes of it).
    shown: InstanceStatus,
    last_check: Option<SystemTime>,
    /// Ring of the last outcomes: bit set = failure.
    ring: u32,
    ring_len: u32,
    ring_pos: u32,
}

impl Inner {
    fn record(&mut self, failed: bool) {
        let bit = 1u32 << self.ring_pos;
        if failed {
            self.ring |= bit;
        } else {
            self.ring &= !bit;
        }
        self.ring_pos = (self.ring_pos + 1) % OUTCOME_WINDOW;
        self.ring_len = (self.ring_len + 1).min(OUTCOME_WINDOW);
    }

    fn clear_ring(&mut self) {
        self.ring = 0;
        self.ring_len = 0;
        self.ring_pos = 0;
    }

    /// More than half of at least `MIN_RATIO_SAMPLES` recent outcomes failed.
    fn ratio_degraded(&self) -> bool {
        self.ring_len >= MIN_RATIO_SAMPLES && self.ring.count_ones() * 2 > self.ring_len
    }
}

impl Health {
    /// A healthy instance with no history; `cfg` holds its active-probe settings.
    pub fn new(cfg: HealthCheckConfig) -> Self {
        Self { cfg, inner: Mutex::new(Inner { shown: InstanceStatus::Healthy, last_check: None, ring: 0, ring_len: 0, ring_pos: 0 }) }
    }

    /// The active-probe settings.
    pub fn config(&self) -> &HealthCheckConfig {
        &self.cfg
    }

    fn derive(g: &Inner, breaker: &Breaker, now: Instant) -> InstanceStatus {
        let (state, cause, failures) = breaker.health_view(now);
        match state {
            BreakerState::Open if cause == OpenCause::Misconfigured => InstanceStatus::Failed,
            BreakerState::Open => InstanceStatus::Unhealthy,
            BreakerState::HalfOpen => InstanceStatus::Recovering,
            BreakerState::Closed if failures > 0 || g.ratio_degraded() => InstanceStatus::Degraded,
            BreakerState::Closed => InstanceStatus::Healthy,
        }
    }

    /// The status now.
    pub fn status(&self, breaker: &Breaker, now: Instant) -> InstanceStatus {
        let g = self.inner.lock();
        Self::derive(&g, breaker, now)
    }

    /// Record a call outcome that says something about the instance (`failed`), or nothing
    /// (`None`: just look again), and return the status change since last reported, if any.
    /// Call after the breaker has seen the outcome.
    pub fn observe(&self, breaker: &Breaker, now: Instant, failed: Option<bool>) -> Option<Transition> {
        let mut g = self.inner.lock();
        if let Some(f) = failed {
            g.record(f);
        }
        let to = Self::derive(&g, breaker, now);
        let from = g.shown;
        if from == to {
            return None;
        }
        if matches!(from, InstanceStatus::Unhealthy | InstanceStatus::Failed) {
            // A recovered instance is judged on fresh evidence.
            g.clear_ring();
        }
        g.shown = to;
        log::debug!("instance health {} -> {}", from.as_str(), to.as_str());
        Some(Transition { from, to })
    }

    /// Record an active health probe: it drives `breaker` (see the module docs); returns the
    /// status change.
    pub fn on_probe(&self, ok: bool, breaker: &Breaker, now: Instant) -> Option<Transition> {
        self.inner.lock().last_check = Some(SystemTime::now());
        breaker.on_health_probe(ok, now, self.cfg.failure_threshold, self.cfg.recovery_time);
        self.observe(breaker, now, Some(!ok))
    }

    /// Fraction of failures among the last [`OUTCOME_WINDOW`] outcomes (0.0 with no history).
    pub fn error_ratio(&self) -> f64 {
        let g = self.inner.lock();
        if g.ring_len == 0 {
            0.0
        } else {
            g.ring.count_ones() as f64 / g.ring_len as f64
        }
    }

    /// Wall-clock time of the last active probe.
    pub fn last_check(&self) -> Option<SystemTime> {
        self.inner.lock().last_check
    }
}

#[cfg(all(test, not(echelon_loom)))]
mod tests {
    use super::*;
    use crate::config::BreakerConfig;
    use std::time::Duration;
    use InstanceStatus::*;

    fn pair(threshold: u32, recovery_ms: u64) -> (Breaker, Health) {
        let b = Breaker::new(BreakerConfig { failure_threshold: threshold, recovery_time: Duration::from_millis(recovery_ms), ..Default::default() });
        let h = Health::new(HealthCheckConfig { failure_threshold: 2, recovery_time: Duration::from_millis(recovery_ms), ..Default::default() });
        (b, h)
    }

    fn fail(b: &Breaker, h: &Health, t: Instant) -> Option<Transition> {
        if let Some(a) = b.try_admit(t) {
            b.on_failure(a, t, None);
        }
        h.observe(b, t, Some(true))
    }

    fn ok(b: &Breaker, h: &Health, t: Instant) -> Option<Transition> {
        if let Some(a) = b.try_admit(t) {
            b.on_success(a, t);
        }
        h.observe(b, t, Some(false))
    }

    fn tr(from: InstanceStatus, to: InstanceStatus) -> Option<Transition> {
        Some(Transition { from, to })
    }

    #[test]
    fn one_threshold_decides_ejection_the_breakers() {
        let (b, h) = pair(3, 1000);
        let t = Instant::now();
        assert_eq!(fail(&b, &h, t), tr(Healthy, Degraded));
        assert_eq!(fail(&b, &h, t), None);
        assert_eq!(h.status(&b, t), Degraded, "still gets traffic");
        assert_eq!(fail(&b, &h, t), tr(Degraded, Unhealthy), "ejected exactly when the breaker opens");
        assert!(!b.would_admit(t));
    }

    #[test]
    fn recovering_lets_only_the_breakers_probes_through_then_heals() {
        let (b, h) = pair(1, 100);
        let t = Instant::now();
        fail(&b, &h, t);
        let t1 = t + Duration::from_millis(100);
        assert_eq!(h.status(&b, t1), Recovering);
        assert_eq!(h.observe(&b, t1, None), tr(Unhealthy, Recovering));
        let probe = b.try_admit(t1).expect("one probe");
        assert!(b.try_admit(t1).is_none(), "a recovering instance takes one probe's worth, not unlimited traffic");
        b.on_success(probe, t1);
        assert_eq!(h.observe(&b, t1, Some(false)), tr(Recovering, Healthy));
    }

    #[test]
    fn a_rejected_key_shows_failed_and_recovers_through_probes() {
        let (b, h) = pair(5, 200);
        let t = Instant::now();
        b.trip(t, Duration::from_millis(200));
        assert_eq!(h.observe(&b, t, Some(true)), tr(Healthy, Failed));
        assert_eq!(h.status(&b, t + Duration::from_millis(199)), Failed);
        assert_eq!(h.status(&b, t + Duration::from_millis(200)), Recovering);
    }

    #[test]
    fn active_probes_open_after_their_threshold_and_good_probes_close_what_they_opened() {
        let (b, h) = pair(5, 60_000);
        let t = Instant::now();
        assert!(h.last_check().is_none());
        assert_eq!(h.on_probe(false, &b, t), None, "one failed probe of two: breaker still closed");
        assert!(h.last_check().is_some());
        assert_eq!(h.on_probe(false, &b, t), tr(Healthy, Unhealthy));
        assert!(!b.would_admit(t));
        assert_eq!(h.on_probe(true, &b, t), tr(Unhealthy, Healthy), "the probes opened it; a good probe closes it");
        assert!(b.would_admit(t));
    }

    #[test]
    fn a_good_probe_of_a_breaker_calls_opened_admits_call_probes_at_once() {
        let (b, h) = pair(1, 60_000);
        let t = Instant::now();
        assert_eq!(fail(&b, &h, t), tr(Healthy, Unhealthy));
        assert_eq!(h.on_probe(true, &b, t), tr(Unhealthy, Recovering), "models endpoint up: let a real call probe");
        let p = b.try_admit(t).expect("probe admitted without waiting out the rest");
        assert!(b.try_admit(t).is_none());
        b.on_success(p, t);
        assert_eq!(h.observe(&b, t, Some(false)), tr(Recovering, Healthy));
    }

    #[test]
    fn error_ratio_holds_degraded_while_the_breaker_stays_closed() {
        let (b, h) = pair(100, 1000);
        let t = Instant::now();
        for _ in 0..4 {
            fail(&b, &h, t);
            fail(&b, &h, t);
            ok(&b, &h, t);
        }
        assert!(h.error_ratio() > 0.5);
        assert_eq!(h.status(&b, t), Degraded, "2/3 failures: degraded although the last call succeeded");
        for _ in 0..12 {
            ok(&b, &h, t);
        }
        assert_eq!(h.status(&b, t), Healthy);
    }
}
