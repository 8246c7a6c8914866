//! Circuit breaker: closed → open after consecutive failures → half-open probes → closed.
//!
//! INTERFACE (implementation pending in this file): see the doc on each item.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::BreakerConfig;

/// Breaker state, spelled as the original API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BreakerState {
    #[serde(rename = "CLOSED")]
    Closed,
    #[serde(rename = "OPEN")]
    Open,
    #[serde(rename = "HALF_OPEN")]
    HalfOpen,
}

impl BreakerState {
    /// `"CLOSED"`, `"OPEN"`, `"HALF_OPEN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF_OPEN",
        }
    }
}

/// How a request was let through; hand it back with the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Normal traffic through a closed breaker.
    Normal,
    /// One of the `half_open_requests` probes.
    Probe,
}

/// What the breaker shows to status output.
#[derive(Clone, Debug, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub failure_count: u32,
    pub failure_threshold: u32,
    /// Wall-clock time of the last counted failure.
    pub last_failure_time: Option<SystemTime>,
    /// While open: time left until probes are admitted.
    pub open_for: Option<Duration>,
    /// Probes currently in flight (half-open).
    pub probes_in_flight: u32,
}

/// A circuit breaker for one instance or target. Thread-safe; all methods take `&self`.
///
/// Rules: `failure_threshold` consecutive failures (or, when `failure_ratio` is set, that ratio
/// over `window` with at least `min_requests`) open it. It stays open for
/// `max(recovery_time, retry_after)`. Then it is half-open: exactly `half_open_requests` probes
/// are admitted at once; when that many succeed it closes; any probe failure reopens it.
/// Neutral outcomes (cancellation, caller deadline, request-shaped 4xx) free the admission
/// without counting either way.
pub struct Breaker {
    cfg: BreakerConfig,
}

impl Breaker {
    /// A closed breaker with the given settings.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self { cfg }
    }
    /// The settings it was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }
    /// Admit a request now, or refuse it (`None`) while open or while all probe slots are taken.
    pub fn try_admit(&self, now: Instant) -> Option<Admission> {
        let _ = now;
        unimplemented!()
    }
    /// Whether `try_admit` would admit now, without taking a slot (for candidate filtering).
    pub fn would_admit(&self, now: Instant) -> bool {
        let _ = now;
        unimplemented!()
    }
    /// Record a success of an admitted request.
    pub fn on_success(&self, admission: Admission, now: Instant) {
        let _ = (admission, now);
        unimplemented!()
    }
    /// Record a failure; `min_open` (a Retry-After) extends the open period if longer.
    pub fn on_failure(&self, admission: Admission, now: Instant, min_open: Option<Duration>) {
        let _ = (admission, now, min_open);
        unimplemented!()
    }
    /// Release an admission whose outcome says nothing about health.
    pub fn on_neutral(&self, admission: Admission) {
        let _ = admission;
        unimplemented!()
    }
    /// Current state (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let _ = now;
        unimplemented!()
    }
    /// State and counters for status output.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let _ = now;
        unimplemented!()
    }
    /// Back to closed with zero counts.
    pub fn reset(&self) {
        unimplemented!()
    }
}
