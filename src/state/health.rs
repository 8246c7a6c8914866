//! Instance health state machine, driven by real call outcomes and active probes.
//!
//! Time is passed in by the caller, so transitions are testable without sleeping.

use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::HealthCheckConfig;
use crate::error::ErrorKind;

/// How many recent outcomes the error-ratio rule looks at.
pub const OUTCOME_WINDOW: u32 = 20;
/// The error-ratio rule needs at least this many outcomes before it applies.
pub const MIN_RATIO_SAMPLES: u32 = 10;

/// The original system's instance states (same string values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Healthy,
    Degraded,
    Unhealthy,
    Failed,
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
    /// Whether requests may be routed to an instance in this state.
    pub fn is_available(self) -> bool {
        matches!(self, InstanceStatus::Healthy | InstanceStatus::Degraded | InstanceStatus::Recovering)
    }
}

/// A state change, returned so the caller can emit an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: InstanceStatus,
    pub to: InstanceStatus,
}

/// Health of one instance. Thread-safe.
///
/// Transitions:
/// - success: Degraded/Recovering → Healthy; resets the consecutive-failure count.
/// - failure that counts (see `ErrorKind::counts_as_instance_failure`): Healthy → Degraded;
///   at `failure_threshold` consecutive → Unhealthy. `AuthError` → Failed at once.
///   A failure while Recovering → Unhealthy again.
/// - time: Unhealthy/Failed for `recovery_time` → Recovering (one probe's worth of traffic).
/// - active probe ok: Unhealthy/Failed → Recovering; Recovering/Degraded → Healthy.
///   Probe failure counts as a failure.
/// - error ratio (optional, over the last outcomes): above 50% with ≥ 10 samples → Degraded.
///
/// How the rules combine (decisions this implementation makes):
/// - The error-ratio rule looks at the last [`OUTCOME_WINDOW`] outcomes (calls and probes). It
///   holds a Degraded instance there: a success (or ok probe) returns Degraded → Healthy only
///   while at most 50% of the last ≥ 10 outcomes failed.
/// - A counted failure while Unhealthy/Failed restarts the `recovery_time` rest.
/// - The outcome history is cleared when an instance leaves Unhealthy/Failed (a recovered
///   instance is judged on fresh evidence).
/// - `status()` reports time-based recovery without recording it; call [`Health::tick`] to
///   record it and get the transition as an event. Outcome methods apply it first, so their
///   `Transition::from` is what `status()` would have said.
/// - A `failure_threshold` of 0 is treated as 1.
pub struct Health {
    cfg: HealthCheckConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    status: InstanceStatus,
    consecutive: u32,
    /// When the instance entered Unhealthy/Failed (or last failed there).
    since: Instant,
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
    /// A healthy instance with no history.
    pub fn new(cfg: HealthCheckConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner {
                status: InstanceStatus::Healthy,
                consecutive: 0,
                since: Instant::now(),
                last_check: None,
                ring: 0,
                ring_len: 0,
                ring_pos: 0,
            }),
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &HealthCheckConfig {
        &self.cfg
    }

    /// What the status is at `now` once time-based recovery is taken into account.
    fn effective(&self, g: &Inner, now: Instant) -> InstanceStatus {
        match g.status {
            InstanceStatus::Unhealthy | InstanceStatus::Failed
                if now.saturating_duration_since(g.since) >= self.cfg.recovery_time =>
            {
                InstanceStatus::Recovering
            }
            s => s,
        }
    }

    /// Record time-based recovery; returns the status before it.
    fn apply_time(&self, g: &mut Inner, now: Instant) -> InstanceStatus {
        let before = g.status;
        let eff = self.effective(g, now);
        if eff != before {
            g.status = eff;
            g.clear_ring();
        }
        eff
    }

    fn goto(g: &mut Inner, from: InstanceStatus, to: InstanceStatus, now: Instant) -> Option<Transition> {
        if matches!(to, InstanceStatus::Unhealthy | InstanceStatus::Failed) {
            g.since = now;
        }
        if from == to {
            return None;
        }
        if matches!(from, InstanceStatus::Unhealthy | InstanceStatus::Failed) {
            g.clear_ring();
        }
        g.status = to;
        log::debug!("instance health {} -> {}", from.as_str(), to.as_str());
        Some(Transition { from, to })
    }

    /// Current status, applying time-based recovery.
    pub fn status(&self, now: Instant) -> InstanceStatus {
        let g = self.inner.lock();
        self.effective(&g, now)
    }

    /// Record time-based recovery (Unhealthy/Failed → Recovering once `recovery_time` has
    /// passed) and return it as a transition. Call from the health loop to get the event.
    pub fn tick(&self, now: Instant) -> Option<Transition> {
        let mut g = self.inner.lock();
        let from = g.status;
        let to = self.apply_time(&mut g, now);
        (from != to).then_some(Transition { from, to })
    }

    /// A call succeeded.
    pub fn on_success(&self, now: Instant) -> Option<Transition> {
        let mut g = self.inner.lock();
        let from = self.apply_time(&mut g, now);
        g.consecutive = 0;
        g.record(false);
        let to = match from {
            InstanceStatus::Recovering => InstanceStatus::Healthy,
            InstanceStatus::Degraded if !g.ratio_degraded() => InstanceStatus::Healthy,
            s => s,
        };
        Self::goto(&mut g, from, to, now)
    }

    /// `kind`s that do not count (see `counts_as_instance_failure`) change nothing.
    pub fn on_failure(&self, kind: ErrorKind, now: Instant) -> Option<Transition> {
        if !kind.counts_as_instance_failure() {
            return None;
        }
        let mut g = self.inner.lock();
        let from = self.apply_time(&mut g, now);
        if kind == ErrorKind::AuthError {
            g.consecutive = g.consecutive.saturating_add(1);
            g.record(true);
            return Self::goto(&mut g, from, InstanceStatus::Failed, now);
        }
        self.counted_failure(&mut g, from, now)
    }

    fn counted_failure(&self, g: &mut Inner, from: InstanceStatus, now: Instant) -> Option<Transition> {
        g.consecutive = g.consecutive.saturating_add(1);
        g.record(true);
        let threshold = self.cfg.failure_threshold.max(1);
        let to = match from {
            InstanceStatus::Recovering => InstanceStatus::Unhealthy,
            InstanceStatus::Healthy | InstanceStatus::Degraded if g.consecutive >= threshold => {
                InstanceStatus::Unhealthy
            }
            InstanceStatus::Healthy | InstanceStatus::Degraded => InstanceStatus::Degraded,
            s => s, // Unhealthy/Failed stay, with the rest restarted by `goto`.
        };
        Self::goto(g, from, to, now)
    }

    /// An active health probe finished.
    pub fn on_probe(&self, ok: bool, now: Instant) -> Option<Transition> {
        let mut g = self.inner.lock();
        g.last_check = Some(SystemTime::now());
        let from = self.apply_time(&mut g, now);
        if !ok {
            return self.counted_failure(&mut g, from, now);
        }
        g.consecutive = 0;
        g.record(false);
        let to = match from {
            InstanceStatus::Unhealthy | InstanceStatus::Failed => InstanceStatus::Recovering,
            InstanceStatus::Recovering => InstanceStatus::Healthy,
            InstanceStatus::Degraded if !g.ratio_degraded() => InstanceStatus::Healthy,
            s => s,
        };
        Self::goto(&mut g, from, to, now)
    }

    /// Consecutive counted failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.lock().consecutive
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

    /// Force a status (compat API, tests). Forcing Healthy also clears the failure history.
    pub fn set(&self, status: InstanceStatus, now: Instant) {
        let mut g = self.inner.lock();
        g.status = status;
        g.since = now;
        if status == InstanceStatus::Healthy {
            g.consecutive = 0;
            g.clear_ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use InstanceStatus::*;

    fn health(threshold: u32, recovery_ms: u64) -> Health {
        Health::new(HealthCheckConfig {
            failure_threshold: threshold,
            recovery_time: Duration::from_millis(recovery_ms),
            ..Default::default()
        })
    }

    fn tr(from: InstanceStatus, to: InstanceStatus) -> Option<Transition> {
        Some(Transition { from, to })
    }

    #[test]
    fn failures_degrade_then_make_unhealthy_at_threshold() {
        let h = health(3, 1000);
        let t = Instant::now();
        assert_eq!(h.on_failure(ErrorKind::ServerError, t), tr(Healthy, Degraded));
        assert_eq!(h.on_failure(ErrorKind::Timeout, t), None, "still degraded: no transition");
        assert_eq!(h.consecutive_failures(), 2);
        assert_eq!(h.on_failure(ErrorKind::ConnectionError, t), tr(Degraded, Unhealthy));
        assert!(!h.status(t).is_available());
    }

    #[test]
    fn success_heals_degraded_and_resets_count() {
        let h = health(3, 1000);
        let t = Instant::now();
        h.on_failure(ErrorKind::ServerError, t);
        h.on_failure(ErrorKind::ServerError, t);
        assert_eq!(h.on_success(t), tr(Degraded, Healthy));
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.on_success(t), None);
        h.on_failure(ErrorKind::ServerError, t);
        h.on_failure(ErrorKind::ServerError, t);
        assert_eq!(h.status(t), Degraded, "the count restarted after the success");
    }

    #[test]
    fn non_counting_errors_change_nothing() {
        let h = health(1, 1000);
        let t = Instant::now();
        for k in [ErrorKind::RateLimited, ErrorKind::BadRequest, ErrorKind::Cancelled, ErrorKind::ContextWindowExceeded] {
            assert_eq!(h.on_failure(k, t), None);
        }
        assert_eq!((h.status(t), h.consecutive_failures()), (Healthy, 0));
    }

    #[test]
    fn auth_error_fails_at_once_and_recovers_after_recovery_time() {
        let h = health(5, 200);
        let t = Instant::now();
        assert_eq!(h.on_failure(ErrorKind::AuthError, t), tr(Healthy, Failed));
        assert_eq!(h.status(t + Duration::from_millis(199)), Failed);
        let t1 = t + Duration::from_millis(200);
        assert_eq!(h.status(t1), Recovering);
        assert!(h.status(t1).is_available());
        assert_eq!(h.tick(t1), tr(Failed, Recovering));
        assert_eq!(h.tick(t1), None);
        assert_eq!(h.on_success(t1), tr(Recovering, Healthy));
    }

    #[test]
    fn time_recovery_then_failure_goes_back_to_unhealthy_for_a_fresh_rest() {
        let h = health(1, 100);
        let t = Instant::now();
        assert_eq!(h.on_failure(ErrorKind::ServerError, t), tr(Healthy, Unhealthy));
        let t1 = t + Duration::from_millis(150);
        // Outcome methods apply time first: `from` is what status() showed.
        assert_eq!(h.on_failure(ErrorKind::ServerError, t1), tr(Recovering, Unhealthy));
        assert_eq!(h.status(t1 + Duration::from_millis(99)), Unhealthy);
        assert_eq!(h.status(t1 + Duration::from_millis(100)), Recovering);
    }

    #[test]
    fn failures_while_unhealthy_restart_the_rest() {
        let h = health(1, 100);
        let t = Instant::now();
        h.on_failure(ErrorKind::ServerError, t);
        assert_eq!(h.on_failure(ErrorKind::Timeout, t + Duration::from_millis(80)), None);
        assert_eq!(h.status(t + Duration::from_millis(150)), Unhealthy);
        assert_eq!(h.status(t + Duration::from_millis(180)), Recovering);
    }

    #[test]
    fn probes_drive_recovery() {
        let h = health(2, 60_000);
        let t = Instant::now();
        h.on_failure(ErrorKind::ServerError, t);
        h.on_failure(ErrorKind::ServerError, t);
        assert_eq!(h.status(t), Unhealthy);
        assert!(h.last_check().is_none());
        assert_eq!(h.on_probe(true, t), tr(Unhealthy, Recovering));
        assert!(h.last_check().is_some());
        assert_eq!(h.on_probe(true, t), tr(Recovering, Healthy));
        // A failed probe counts as a failure.
        assert_eq!(h.on_probe(false, t), tr(Healthy, Degraded));
        assert_eq!(h.on_probe(true, t), tr(Degraded, Healthy));
        // Failed (auth) also recovers through a good probe.
        h.on_failure(ErrorKind::AuthError, t);
        assert_eq!(h.on_probe(true, t), tr(Failed, Recovering));
        assert_eq!(h.on_probe(false, t), tr(Recovering, Unhealthy));
    }

    #[test]
    fn error_ratio_holds_degraded() {
        let h = health(100, 1000);
        let t = Instant::now();
        // Alternate fail, fail, ok: 2/3 failures, never `threshold` in a row.
        for _ in 0..3 {
            h.on_failure(ErrorKind::ServerError, t);
            h.on_failure(ErrorKind::ServerError, t);
            h.on_success(t);
        }
        // 9 samples: too few for the ratio rule, so that success healed it.
        assert_eq!(h.status(t), Healthy);
        h.on_failure(ErrorKind::ServerError, t);
        h.on_failure(ErrorKind::ServerError, t);
        assert_eq!(h.on_success(t), None, "8/12 failed: stays degraded");
        assert!((h.error_ratio() - 8.0 / 12.0).abs() < 1e-9);
        // Enough successes push the ratio to ≤ 50%, and the next success heals.
        let mut healed = None;
        for i in 0..20 {
            if let Some(x) = h.on_success(t) {
                healed = Some((i, x));
                break;
            }
        }
        assert_eq!(healed, Some((3, Transition { from: Degraded, to: Healthy })), "8/16 is not above 50%");
    }

    #[test]
    fn outcome_ring_keeps_only_the_last_20() {
        let h = health(1000, 1000);
        let t = Instant::now();
        for _ in 0..30 {
            h.on_failure(ErrorKind::ServerError, t);
        }
        for _ in 0..10 {
            h.on_success(t);
        }
        assert!((h.error_ratio() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn set_forces_status() {
        let h = health(1, 1000);
        let t = Instant::now();
        h.set(Unhealthy, t);
        assert_eq!(h.status(t), Unhealthy);
        assert_eq!(h.status(t + Duration::from_secs(1)), Recovering);
        h.set(Healthy, t);
        assert_eq!((h.status(t), h.consecutive_failures()), (Healthy, 0));
    }
}
