//! An instance: one model in one echelon of one group, with its client, limits, breaker,
//! health and statistics. Pools and echelons select among instances and take a
//! [`Lease`](super::lease::Lease) on the chosen one.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::lease::Lease;
use crate::config::{RetryConfig, Timeouts};
use crate::engine::schedule::Candidate;
use crate::error::Error;
use crate::observe::events::{EventBus, EventKind};
use crate::provider::ProviderClient;
use crate::state::breaker::{Breaker, BreakerBlock, BreakerState};
use crate::state::health::{Health, InstanceStatus, Transition};
use crate::state::limit::{ConcurrencyLimit, RateBlock, RateGate};
use crate::state::stats::{InstanceStats, StatsSnapshot};
use crate::state::wait::{WaitCtx, Waiter};

/// Why an instance cannot take a request right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Capacity someone else holds: a concurrency slot, a half-open probe slot, or a place an
    /// older waiter has in a rate limit's line. The limit wakes its waiters when it frees.
    Busy,
    /// Our own RPM/TPM budget fits again at this instant.
    Rate(Instant),
    /// The provider asked for a pause (a 429, a Retry-After, an exhausted quota) until then.
    Cooling(Instant),
    /// The breaker is open until then: not worth waiting for (fail fast, fall back), but worth
    /// a look then.
    Down(Instant),
}

/// Where an instance reports its health transitions (the router logs and publishes them).
pub type TransitionSink = Box<dyn Fn(&Instance, Transition) + Send + Sync>;

/// Everything needed to build an [`Instance`].
pub struct InstanceParts {
    /// Stable id: `"<group>.<echelon>_<model>"`.
    pub id: String,
    /// The group it belongs to (`"direct"` for a direct model route).
    pub group: String,
    /// The echelon it belongs to.
    pub echelon: String,
    /// Logical model name.
    pub model_name: String,
    /// Provider name.
    pub provider: String,
    /// The HTTP client for its provider and model.
    pub client: ProviderClient,
    /// Per-attempt timeouts.
    pub timeouts: Timeouts,
    /// Retry settings on its target.
    pub retry: RetryConfig,
    /// Selection weight.
    pub weight: f64,
    /// Context window in tokens.
    pub context_window: u32,
    /// Shortest pause after a 429.
    pub rate_limit_cooldown: Duration,
    /// Pause after a quota/billing error (at least; a longer Retry-After wins).
    pub quota_cooldown: Duration,
    /// Its own concurrency limit (the echelon's `concurrency_limit`).
    pub concurrency: Arc<ConcurrencyLimit>,
    /// The model's `max_concurrency`, shared by every instance of the model.
    pub model_concurrency: Option<Arc<ConcurrencyLimit>>,
    /// The echelon's `rpm_limit`.
    pub rpm: Option<Arc<RateGate>>,
    /// The model's RPM, shared by every instance of the model.
    pub model_rpm: Option<Arc<RateGate>>,
    /// The model's TPM, shared by every instance of the model.
    pub model_tpm: Option<Arc<RateGate>>,
    /// Its circuit breaker.
    pub breaker: Arc<Breaker>,
    /// Its health view and probe settings.
    pub health: Arc<Health>,
    /// Its call statistics and cooldown.
    pub stats: Arc<InstanceStats>,
}

/// One (group, echelon, model) endpoint. Shared (`Arc`) by every pool and echelon that uses it.
pub struct Instance {
    /// Stable id: `"<group>.<echelon>_<model>"`.
    pub id: String,
    /// The group it belongs to.
    pub group: String,
    /// The echelon it belongs to.
    pub echelon: String,
    /// Logical model name.
    pub model_name: String,
    /// Provider name (for provider failover).
    pub provider: String,
    /// The HTTP client.
    pub client: ProviderClient,
    /// Per-attempt timeouts.
    pub timeouts: Timeouts,
    /// Retry settings on its target.
    pub retry: RetryConfig,
    /// Selection weight.
    pub weight: f64,
    /// Context window in tokens.
    pub context_window: u32,
    pub(super) rate_limit_cooldown: Duration,
    pub(super) quota_cooldown: Duration,
    pub(super) concurrency: Arc<ConcurrencyLimit>,
    pub(super) model_concurrency: Option<Arc<ConcurrencyLimit>>,
    pub(super) rpm: Option<Arc<RateGate>>,
    pub(super) model_rpm: Option<Arc<RateGate>>,
    pub(super) model_tpm: Option<Arc<RateGate>>,
    /// Its circuit breaker: the one state machine that decides whether it gets traffic.
    pub breaker: Arc<Breaker>,
    /// What its health shows (read from the breaker) and its active-probe settings.
    pub health: Arc<Health>,
    /// Call statistics and cooldown.
    pub stats: Arc<InstanceStats>,
    /// Sink for health transitions (set by the router).
    on_transition: OnceLock<TransitionSink>,
    /// The router's event bus (set by the router; absent in bare unit tests).
    events: OnceLock<Arc<EventBus>>,
}

impl Instance {
    /// An instance from its parts.
    pub fn new(p: InstanceParts) -> Self {
        Self {
            id: p.id,
            group: p.group,
            echelon: p.echelon,
            model_name: p.model_name,
            provider: p.provider,
            client: p.client,
            timeouts: p.timeouts,
            retry: p.retry,
            weight: p.weight,
            context_window: p.context_window,
            rate_limit_cooldown: p.rate_limit_cooldown,
            quota_cooldown: p.quota_cooldown,
            concurrency: p.concurrency,
            model_concurrency: p.model_concurrency,
            rpm: p.rpm,
            model_rpm: p.model_rpm,
            model_tpm: p.model_tpm,
            breaker: p.breaker,
            health: p.health,
            stats: p.stats,
            on_transition: OnceLock::new(),
            events: OnceLock::new(),
        }
    }

    /// Register a callback for health transitions. Called once while building.
    pub fn set_transition_sink(&self, sink: TransitionSink) {
        let _ = self.on_transition.set(sink);
    }

    /// Register the router's event bus (breaker, rate-limit and retry events). Called once
    /// while building.
    pub fn set_event_bus(&self, bus: Arc<EventBus>) {
        let _ = self.events.set(bus);
    }

    /// The router's event bus, if one was registered.
    pub fn event_bus(&self) -> Option<&Arc<EventBus>> {
        self.events.get()
    }

    /// The breaker's phase before an outcome, when someone listens for breaker events (so the
    /// extra lock is only paid then).
    #[inline]
    pub(super) fn breaker_watch(&self) -> Option<BreakerState> {
        self.events.get().filter(|b| b.active()).map(|_| self.breaker.phase())
    }

    /// Emit a breaker event if the phase changed since `before`.
    pub(super) fn breaker_changed(&self, before: Option<BreakerState>, err: Option<&Error>) {
        let (Some(from), Some(bus)) = (before, self.events.get()) else { return };
        let to = self.breaker.phase();
        if from == to {
            return;
        }
        bus.emit(log::Level::Info, || {
            let snap = self.breaker.snapshot(Instant::now());
            let class = err.map(|e| e.kind.as_str()).unwrap_or("");
            let reason = match (from, to) {
                (_, BreakerState::Open) if snap.open_cause == Some(crate::state::breaker::OpenCause::Misconfigured) => {
                    format!("the provider refused the instance's configuration ({class})")
                }
                (BreakerState::Closed, BreakerState::Open) if snap.failure_count >= snap.failure_threshold.max(1) => {
                    format!("{} consecutive failures (last: {class})", snap.failure_count)
                }
                (BreakerState::Closed, BreakerState::Open) => format!("failure ratio over the window (last: {class})"),
                (BreakerState::HalfOpen, BreakerState::Open) => format!("probe failed ({class})"),
                (BreakerState::HalfOpen, BreakerState::Closed) => "probe succeeded".to_string(),
                (BreakerState::Open, BreakerState::HalfOpen) => "recovery time elapsed; admitting probes".to_string(),
                _ => "reset".to_string(),
            };
            EventKind::BreakerState { instance: self.id.clone(), from, to, reason }
        });
    }

    /// Report a health transition (if any) to the router's sink.
    pub(super) fn transitioned(&self, t: Option<Transition>) {
        if let (Some(t), Some(sink)) = (t, self.on_transition.get()) {
            sink(self, t);
        }
    }

    /// Look at the health again (time-based recovery) and report a change.
    pub fn refresh_health(&self, now: Instant) {
        let t = self.health.observe(&self.breaker, now, None);
        self.transitioned(t);
    }

    /// Health status now.
    pub fn status(&self, now: Instant) -> InstanceStatus {
        self.health.status(&self.breaker, now)
    }

    /// Requests in flight on this instance.
    pub fn in_flight(&self) -> u32 {
        self.concurrency.in_flight()
    }

    /// The concurrency limit (0 = unlimited).
    pub fn concurrency_limit(&self) -> u32 {
        self.concurrency.limit()
    }

    /// Callers queued for this instance's own concurrency slot.
    pub fn waiting(&self) -> usize {
        self.concurrency.waiting()
    }

    /// When a cooldown (429, Retry-After, quota) ends, if one is running.
    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        self.stats.cooldown_until(now)
    }

    fn rate_gates(&self, est_tokens: u64) -> [(Option<&Arc<RateGate>>, u64); 3] {
        [(self.rpm.as_ref(), 1), (self.model_rpm.as_ref(), 1), (self.model_tpm.as_ref(), est_tokens)]
    }

    /// Whether `who` (`None`: a caller that has not waited) could take a request now, without
    /// taking or queueing anything.
    pub fn check(&self, now: Instant, est_tokens: u64, who: Option<&Waiter>) -> Result<(), Block> {
        match self.breaker.check(now, who) {
            Err(BreakerBlock::Open { until }) => return Err(Block::Down(until)),
            Err(BreakerBlock::ProbesBusy) => return Err(Block::Busy),
            Ok(()) => {}
        }
        if let Some(t) = self.cooldown_until(now) {
            return Err(Block::Cooling(t));
        }
        if !self.concurrency.has_room_for(who) || self.model_concurrency.as_ref().is_some_and(|c| !c.has_room_for(who)) {
            return Err(Block::Busy);
        }
        for (gate, cost) in self.rate_gates(est_tokens) {
            if let Some(g) = gate {
                match g.check(cost, now, who) {
                    Ok(()) => {}
                    Err(RateBlock::Until(t)) => return Err(Block::Rate(t)),
                    Err(RateBlock::Queued) => return Err(Block::Busy),
                }
            }
        }
        Ok(())
    }

    /// Take a slot for the caller of `ctx`: concurrency (instance, then model), rate budgets and
    /// a breaker admission, all or nothing. A waiting caller is queued in the limit that
    /// refused it.
    pub fn try_lease(self: &Arc<Self>, now: Instant, est_tokens: u64, ctx: &mut WaitCtx) -> Result<Lease, Block> {
        // Time-based blocks first: they take nothing and queue nobody.
        if let Err(BreakerBlock::Open { until }) = self.breaker.check(now, None) {
            return Err(Block::Down(until));
        }
        if let Some(t) = self.cooldown_until(now) {
            return Err(Block::Cooling(t));
        }
        if !self.concurrency.try_acquire(ctx) {
            return Err(Block::Busy);
        }
        if let Some(mc) = &self.model_concurrency {
            if !mc.try_acquire(ctx) {
                self.concurrency.release();
                return Err(Block::Busy);
            }
        }
        let release_slots = |inst: &Instance| {
            inst.concurrency.release();
            if let Some(mc) = &inst.model_concurrency {
                mc.release();
            }
        };
        let gates = self.rate_gates(est_tokens);
        for (i, (gate, cost)) in gates.iter().enumerate() {
            let Some(g) = gate else { continue };
            if let Err(b) = g.try_take(*cost, now, ctx) {
                for (taken, c) in gates[..i].iter() {
                    if let Some(t) = taken {
                        t.give_back(*c, now);
                    }
                }
                release_slots(self);
                return Err(match b {
                    RateBlock::Until(t) => Block::Rate(t),
                    RateBlock::Queued => Block::Busy,
                });
            }
        }
        let watch = self.breaker_watch();
        let admission = match self.breaker.admit(now, ctx) {
            Ok(a) => a,
            Err(b) => {
                for (taken, c) in gates.iter() {
                    if let Some(t) = taken {
                        t.give_back(*c, now);
                    }
                }
                release_slots(self);
                return Err(match b {
                    BreakerBlock::Open { until } => Block::Down(until),
                    BreakerBlock::ProbesBusy => Block::Busy,
                });
            }
        };
        self.breaker_changed(watch, None);
        self.stats.record_lease(now);
        Ok(Lease::new(self.clone(), admission, est_tokens, now))
    }

    /// Give back the slots a lease held (concurrency, model concurrency).
    pub(super) fn release_slots(&self) {
        self.concurrency.release();
        if let Some(mc) = &self.model_concurrency {
            mc.release();
        }
    }

    /// Give back rate budget a request did not use.
    pub(super) fn give_back(&self, rpm: bool, tokens: u64, now: Instant) {
        if rpm {
            for g in [&self.rpm, &self.model_rpm].into_iter().flatten() {
                g.give_back(1, now);
            }
        }
        if let Some(tpm) = &self.model_tpm {
            tpm.give_back(tokens, now);
        }
    }

    /// Correct the TPM estimate to the real usage.
    pub(super) fn correct_tokens(&self, delta: i64, now: Instant) {
        if let Some(tpm) = &self.model_tpm {
            tpm.correct(delta, now);
        }
    }

    /// Record an active health probe result.
    pub fn on_probe(&self, ok: bool) {
        let watch = self.breaker_watch();
        let t = self.health.on_probe(ok, &self.breaker, Instant::now());
        self.breaker_changed(watch, None);
        self.transitioned(t);
    }

    /// Effective timeouts for an attempt that must end by `deadline`, and whether the deadline
    /// shortened them.
    pub fn timeouts_until(&self, deadline: Option<Instant>, now: Instant) -> (Timeouts, bool) {
        let mut t = self.timeouts;
        let mut clamped = false;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(now);
            if t.total.is_none_or(|x| x > left) {
                t.total = Some(left);
                clamped = true;
            }
            if t.first_token.is_some_and(|x| x > left) {
                t.first_token = Some(left);
            }
        }
        (t, clamped)
    }
}

impl Candidate for Arc<Instance> {
    fn in_flight(&self) -> u32 {
        self.concurrency.in_flight()
    }
    fn max_concurrency(&self) -> u32 {
        self.concurrency.limit()
    }
    fn last_used(&self) -> Option<Instant> {
        self.stats.last_used()
    }
    fn weight(&self) -> f64 {
        self.weight
    }
    fn avg_latency(&self) -> f64 {
        self.stats.avg_latency().unwrap_or(0.0)
    }
    fn ewma_latency(&self) -> Option<f64> {
        self.stats.ewma_latency()
    }
    fn success_count(&self) -> u64 {
        self.stats.successes()
    }
    fn failure_count(&self) -> u64 {
        self.stats.failures()
    }
    fn weighted_terms(&self) -> crate::engine::schedule::WeightedTerms {
        self.stats.weighted_terms(self.weight)
    }
}

/// Status of one instance for `status()` output.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceSnapshot {
    /// `"<group>.<echelon>_<model>"`.
    pub instance_id: String,
    /// Its group.
    pub group: String,
    /// Its echelon.
    pub echelon: String,
    /// Logical model name.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// Health as the original system spelled it.
    pub status: InstanceStatus,
    /// Requests in flight.
    pub in_flight: u32,
    /// Callers queued for its concurrency slot.
    pub waiting: usize,
    /// Its concurrency limit (0 = unlimited).
    pub max_concurrency: u32,
    /// Selection weight.
    pub weight: f64,
    /// Breaker state and counters.
    pub breaker: crate::state::breaker::BreakerSnapshot,
    /// Seconds of cooldown left.
    pub cooldown_remaining: Option<f64>,
    /// Consecutive counted failures.
    pub consecutive_failures: u32,
    /// When an active probe last ran.
    pub last_health_check: Option<SystemTime>,
    /// Call statistics.
    pub stats: StatsSnapshot,
    /// RPM budget left (the tighter of the echelon's and the model's).
    pub rpm_remaining: Option<u64>,
    /// The model's TPM budget left.
    pub tpm_remaining: Option<u64>,
}

impl Instance {
    /// A status snapshot.
    pub fn snapshot(&self) -> InstanceSnapshot {
        let now = Instant::now();
        let rpm_remaining = [&self.rpm, &self.model_rpm].into_iter().flatten().map(|l| l.status(now).remaining).min();
        let breaker = self.breaker.snapshot(now);
        InstanceSnapshot {
            instance_id: self.id.clone(),
            group: self.group.clone(),
            echelon: self.echelon.clone(),
            model: self.model_name.clone(),
            provider: self.provider.clone(),
            status: self.status(now),
            in_flight: self.concurrency.in_flight(),
            waiting: self.concurrency.waiting(),
            max_concurrency: self.concurrency.limit(),
            weight: self.weight,
            consecutive_failures: breaker.failure_count,
            breaker,
            cooldown_remaining: self.cooldown_until(now).map(|t| (t - now).as_secs_f64()),
            last_health_check: self.health.last_check(),
            stats: self.stats.snapshot(),
            rpm_remaining,
            tpm_remaining: self.model_tpm.as_ref().map(|l| l.status(now).remaining),
        }
    }
}
