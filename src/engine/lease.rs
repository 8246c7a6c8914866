//! A slot held on an instance for one attempt, and what each way an attempt ends does to the
//! instance's state.
//!
//! | outcome | breaker | cooldown | budgets |
//! |---|---|---|---|
//! | success | success (at the first token for a stream) | — | TPM corrected to the real usage |
//! | 429 / quota | neutral | Retry-After, at least the 429 / quota cooldown | unused tokens given back |
//! | rejected key, unknown model | tripped open (`failed`) | — | unused tokens given back |
//! | 5xx, timeout, connection, bad body, cut stream | failure | the Retry-After, if one came | unused tokens given back (and the RPM unit after a connection error) |
//! | the caller's deadline, cancellation, content filter, request-shaped 4xx | neutral | — | unused tokens given back |
//!
//! "Unused" means no response content arrived: once a stream's first token came, the estimate
//! stays charged (tokens were spent) unless the final usage corrects it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::instance::Instance;
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::observe::events::EventKind;
use crate::state::breaker::{trips_breaker, Admission};
use crate::types::{ChatRequest, ChatResponse, Usage};

/// A slot held on an instance for one attempt. Finish it with the outcome; dropping it
/// unfinished (cancellation, a lost hedge) releases everything and counts as neutral.
pub struct Lease {
    inst: Arc<Instance>,
    /// The breaker admission, until its outcome is reported (for a stream: at the first token).
    admission: Option<Admission>,
    est_tokens: u64,
    started: Instant,
    /// Response content arrived (a stream's first token): the tokens were spent.
    responded: bool,
    done: bool,
}

impl Lease {
    pub(super) fn new(inst: Arc<Instance>, admission: Admission, est_tokens: u64, started: Instant) -> Self {
        Self { inst, admission: Some(admission), est_tokens, started, responded: false, done: false }
    }

    /// The leased instance.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.inst
    }

    /// When the lease was taken.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A stream's first token arrived: the provider is serving, which is what a half-open
    /// probe asks. The breaker hears the success now, not when (or whether) the caller reads
    /// the stream to its end; the slot stays held until the stream ends.
    pub fn first_token(&mut self) {
        self.responded = true;
        if let Some(a) = self.admission.take() {
            let now = Instant::now();
            let inst = &self.inst;
            let watch = inst.breaker_watch();
            inst.breaker.on_success(a, now);
            inst.breaker_changed(watch, None);
            let t = inst.health.observe(&inst.breaker, now, Some(false));
            inst.transitioned(t);
        }
    }

    /// Record a success with the real usage (corrects the TPM estimate).
    pub fn succeed(mut self, usage: Option<Usage>) {
        self.done = true;
        let now = Instant::now();
        let inst = &self.inst;
        inst.stats.record_success(now.duration_since(self.started));
        let mut t = None;
        if let Some(a) = self.admission.take() {
            let watch = inst.breaker_watch();
            inst.breaker.on_success(a, now);
            inst.breaker_changed(watch, None);
            t = inst.health.observe(&inst.breaker, now, Some(false));
        }
        if let Some(u) = usage {
            inst.correct_tokens(u.total_tokens as i64 - self.est_tokens as i64, now);
        }
        inst.release_slots();
        inst.transitioned(t);
    }

    /// Record a failure: applies the rules of the table in the module docs for its class.
    pub fn fail(mut self, err: &Error) {
        self.done = true;
        let now = Instant::now();
        let inst = &self.inst;
        let admission = self.admission.take();
        let neutral = |a: Option<Admission>| {
            if let Some(a) = a {
                inst.breaker.on_neutral(a);
            }
        };
        let mut t = None;
        match err.kind {
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => {
                let floor = if err.kind == ErrorKind::QuotaExceeded { inst.quota_cooldown } else { inst.rate_limit_cooldown };
                let until = inst.stats.cool_down(now, err.retry_after.unwrap_or_default().max(floor));
                neutral(admission);
                if let Some(bus) = inst.event_bus() {
                    bus.emit(log::Level::Debug, || EventKind::RateLimited {
                        instance: inst.id.clone(),
                        retry_after: err.retry_after.map(|d| d.as_secs_f64()),
                        cooldown: until.saturating_duration_since(now).as_secs_f64(),
                    });
                }
            }
            kind if trips_breaker(kind) => {
                inst.stats.record_failure();
                let watch = inst.breaker_watch();
                inst.breaker.trip(now, inst.breaker.config().recovery_time);
                neutral(admission);
                inst.breaker_changed(watch, Some(err));
                t = inst.health.observe(&inst.breaker, now, Some(true));
            }
            kind if kind.counts_as_instance_failure() && err.timeout != Some(TimeoutKind::Deadline) => {
                inst.stats.record_failure();
                let watch = inst.breaker_watch();
                inst.breaker.on_failure(admission.unwrap_or(Admission::Normal), now, err.retry_after);
                inst.breaker_changed(watch, Some(err));
                if let Some(ra) = err.retry_after {
                    inst.stats.cool_down(now, ra);
                }
                t = inst.health.observe(&inst.breaker, now, Some(true));
            }
            _ => neutral(admission),
        }
        if !self.responded {
            inst.give_back(err.kind == ErrorKind::ConnectionError, self.est_tokens, now);
        }
        inst.release_slots();
        inst.transitioned(t);
    }

    /// One non-streaming call on this lease's instance, ending by `deadline`.
    /// Timeouts caused by the caller's deadline come back as `TimeoutKind::Deadline`.
    pub async fn chat(&self, req: &ChatRequest, deadline: Option<Instant>) -> Result<ChatResponse, Error> {
        let inst = &self.inst;
        let (timeouts, clamped) = inst.timeouts_until(deadline, Instant::now());
        let res = inst.client.chat(req, &timeouts).await;
        res.map_err(|e| mark_deadline(e, clamped, deadline)).map(|mut r| {
            r.served_by = inst.id.clone();
            r
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            if let Some(a) = self.admission.take() {
                self.inst.breaker.on_neutral(a);
            }
            if !self.responded {
                self.inst.give_back(false, self.est_tokens, Instant::now());
            }
            self.inst.release_slots();
        }
    }
}

/// Re-label a timeout that fired because the caller's deadline clamped it (before the first
/// token a `Timeout`; after it, a stream the driver reports as interrupted by its timer): it is
/// the caller's deadline, not the provider's fault.
pub fn mark_deadline(mut e: Error, clamped: bool, deadline: Option<Instant>) -> Error {
    let timer = e.kind == ErrorKind::Timeout || (e.kind == ErrorKind::StreamInterrupted && e.timeout.is_some());
    if timer && clamped && deadline.is_some_and(|d| Instant::now() + Duration::from_millis(2) >= d) {
        e.kind = ErrorKind::Timeout;
        e.timeout = Some(TimeoutKind::Deadline);
        e.message = format!("call deadline reached ({})", e.message);
    }
    e
}
