//! Instance health state machine, driven by real call outcomes and active probes.
//!
//! INTERFACE (implementation pending in this file): see the doc on each item.

use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::config::HealthCheckConfig;
use crate::error::ErrorKind;

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
pub struct Health {
    cfg: HealthCheckConfig,
}

impl Health {
    pub fn new(cfg: HealthCheckConfig) -> Self {
        Self { cfg }
    }
    /// Current status, applying time-based recovery.
    pub fn status(&self, now: Instant) -> InstanceStatus {
        let _ = (now, &self.cfg);
        unimplemented!()
    }
    pub fn on_success(&self, now: Instant) -> Option<Transition> {
        let _ = now;
        unimplemented!()
    }
    /// `kind`s that do not count (see `counts_as_instance_failure`) change nothing.
    pub fn on_failure(&self, kind: ErrorKind, now: Instant) -> Option<Transition> {
        let _ = (kind, now);
        unimplemented!()
    }
    pub fn on_probe(&self, ok: bool, now: Instant) -> Option<Transition> {
        let _ = (ok, now);
        unimplemented!()
    }
    /// Consecutive counted failures.
    pub fn consecutive_failures(&self) -> u32 {
        unimplemented!()
    }
    /// Wall-clock time of the last active probe.
    pub fn last_check(&self) -> Option<SystemTime> {
        unimplemented!()
    }
    /// Force a status (compat API, tests).
    pub fn set(&self, status: InstanceStatus, now: Instant) {
        let _ = (status, now);
        unimplemented!()
    }
}
