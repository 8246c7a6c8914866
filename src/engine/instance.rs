//! An instance: one model in one echelon of one group, with its client, limits, breaker,
//! health and statistics. Pools and echelons select among instances and take a [`Lease`] on
//! the chosen one; the lease releases everything on every path (success, error, cancellation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::state::breaker::{Admission, Breaker, BreakerState};
use crate::config::{RetryConfig, Timeouts};
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::observe::events::{EventBus, EventKind};
use crate::state::health::{Health, InstanceStatus, Transition};
use crate::state::limit::{ConcurrencyLimit, RateLimiter};
use crate::provider::ProviderClient;
use crate::engine::schedule::Candidate;
use crate::types::{ChatRequest, ChatResponse, Usage};

/// Process-wide monotonic epoch, so instants fit in atomics as nanoseconds.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn to_nanos(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64 + 1
}

fn from_nanos(n: u64) -> Option<Instant> {
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
}

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
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    /// Mean latency of successful calls, seconds.
    pub avg_latency: f64,
    pub ewma_latency: Option<f64>,
    pub p50_latency: Option<f64>,
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

/// Why an instance cannot take a request right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// At its concurrency limit: a slot frees when a request ends (wait for a release).
    Busy,
    /// Rate-limited or cooling down until this instant.
    Until(Instant),
    /// Unhealthy, failed or its breaker is open: do not wait for it.
    Down,
}

/// Everything needed to build an [`Instance`].
pub struct InstanceParts {
    pub id: String,
    pub group: String,
    pub echelon: String,
    pub model_name: String,
    pub provider: String,
    pub client: ProviderClient,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub weight: f64,
    pub context_window: u32,
    pub rate_limit_cooldown: Duration,
    pub concurrency: Arc<ConcurrencyLimit>,
    pub model_concurrency: Option<Arc<ConcurrencyLimit>>,
    pub rpm: Option<Arc<dyn RateLimiter>>,
    pub model_rpm: Option<Arc<dyn RateLimiter>>,
    pub model_tpm: Option<Arc<dyn RateLimiter>>,
    pub breaker: Arc<Breaker>,
    pub health: Arc<Health>,
    pub stats: Arc<InstanceStats>,
}

/// One (group, echelon, model) endpoint. Shared (`Arc`) by every pool and echelon that uses it.
pub struct Instance {
    /// Stable id: `"<group>.<echelon>_<model>"`.
    pub id: String,
    pub group: String,
    pub echelon: String,
    /// Logical model name.
    pub model_name: String,
    /// Provider name (for provider failover).
    pub provider: String,
    pub client: ProviderClient,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub weight: f64,
    pub context_window: u32,
    rate_limit_cooldown: Duration,
    concurrency: Arc<ConcurrencyLimit>,
    model_concurrency: Option<Arc<ConcurrencyLimit>>,
    rpm: Option<Arc<dyn RateLimiter>>,
    model_rpm: Option<Arc<dyn RateLimiter>>,
    model_tpm: Option<Arc<dyn RateLimiter>>,
    pub breaker: Arc<Breaker>,
    pub health: Arc<Health>,
    pub stats: Arc<InstanceStats>,
    /// Waiters to wake when a slot on this instance frees (its echelon and pools).
    domains: OnceLock<Vec<Arc<Notify>>>,
    /// Sink for state-change events (set by the router).
    on_transition: OnceLock<Box<dyn Fn(&Instance, Transition) + Send + Sync>>,
    /// The router's event bus (set by the router; absent in bare unit tests).
    events: OnceLock<Arc<EventBus>>,
}

impl Instance {
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
            concurrency: p.concurrency,
            model_concurrency: p.model_concurrency,
            rpm: p.rpm,
            model_rpm: p.model_rpm,
            model_tpm: p.model_tpm,
            breaker: p.breaker,
            health: p.health,
            stats: p.stats,
            domains: OnceLock::new(),
            on_transition: OnceLock::new(),
            events: OnceLock::new(),
        }
    }

    /// Register the wait queues to wake when a slot frees. Called once while building.
    pub fn set_domains(&self, domains: Vec<Arc<Notify>>) {
        let _ = self.domains.set(domains);
    }

    /// Register a callback for health transitions. Called once while building.
    pub fn set_transition_sink(&self, sink: Box<dyn Fn(&Instance, Transition) + Send + Sync>) {
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
    fn breaker_watch(&self) -> Option<BreakerState> {
        self.events.get().filter(|b| b.active()).map(|_| self.breaker.phase())
    }

    /// Emit a breaker event if the phase changed since `before`.
    fn breaker_changed(&self, before: Option<BreakerState>, err: Option<&Error>) {
        let (Some(from), Some(bus)) = (before, self.events.get()) else { return };
        let to = self.breaker.phase();
        if from == to {
            return;
        }
        bus.emit(log::Level::Info, || {
            let snap = self.breaker.snapshot(Instant::now());
            let class = err.map(|e| e.kind.as_str()).unwrap_or("");
            let reason = match (from, to) {
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

    fn transitioned(&self, t: Option<Transition>) {
        if let (Some(t), Some(sink)) = (t, self.on_transition.get()) {
            sink(self, t);
        }
    }

    /// Health status now.
    pub fn status(&self, now: Instant) -> InstanceStatus {
        self.health.status(now)
    }

    /// Requests in flight on this instance.
    pub fn in_flight(&self) -> u32 {
        self.concurrency.in_flight()
    }

    /// The concurrency limit (0 = unlimited).
    pub fn concurrency_limit(&self) -> u32 {
        self.concurrency.limit()
    }

    /// When a 429 cooldown ends, if one is running.
    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        from_nanos(self.stats.cooldown_until.load(Ordering::Relaxed)).filter(|t| *t > now)
    }

    /// Whether the instance could take a request now, without taking anything.
    pub fn check(&self, now: Instant, est_tokens: u64) -> Result<(), Block> {
        if !self.health.status(now).is_available() || !self.breaker.would_admit(now) {
            return Err(Block::Down);
        }
        if let Some(t) = self.cooldown_until(now) {
            return Err(Block::Until(t));
        }
        if !self.concurrency.has_room() || self.model_concurrency.as_ref().is_some_and(|c| !c.has_room()) {
            return Err(Block::Busy);
        }
        for (limiter, cost) in [(&self.rpm, 1), (&self.model_rpm, 1), (&self.model_tpm, est_tokens)] {
            if let Some(l) = limiter {
                if let Err(wait) = l.check(cost, now) {
                    return Err(Block::Until(now + wait));
                }
            }
        }
        Ok(())
    }

    /// Take a slot: concurrency, rate budgets and a breaker admission, all or nothing.
    pub fn try_lease(self: &Arc<Self>, now: Instant, est_tokens: u64) -> Result<Lease, Block> {
        self.check(now, est_tokens)?;
        if !self.concurrency.try_acquire() {
            return Err(Block::Busy);
        }
        if let Some(mc) = &self.model_concurrency {
            if !mc.try_acquire() {
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
        let mut taken: Vec<(&Arc<dyn RateLimiter>, u64)> = Vec::with_capacity(3);
        for (limiter, cost) in [(&self.rpm, 1), (&self.model_rpm, 1), (&self.model_tpm, est_tokens)] {
            if let Some(l) = limiter {
                if let Err(wait) = l.try_acquire(cost, now) {
                    for (l, c) in taken {
                        l.adjust(-(c as i64), now);
                    }
                    release_slots(self);
                    return Err(Block::Until(now + wait));
                }
                taken.push((l, cost));
            }
        }
        let watch = self.breaker_watch();
        let Some(admission) = self.breaker.try_admit(now) else {
            for (l, c) in taken {
                l.adjust(-(c as i64), now);
            }
            release_slots(self);
            return Err(Block::Down);
        };
        self.breaker_changed(watch, None);
        self.stats.last_used.store(to_nanos(now), Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { inst: self.clone(), admission, est_tokens, started: now, done: false })
    }

    fn release(&self) {
        self.concurrency.release();
        if let Some(mc) = &self.model_concurrency {
            mc.release();
        }
        if let Some(domains) = self.domains.get() {
            for d in domains {
                d.notify_one();
            }
        }
    }

    /// Record an active health probe result.
    pub fn on_probe(&self, ok: bool) {
        let t = self.health.on_probe(ok, Instant::now());
        self.transitioned(t);
    }

    /// Effective timeouts for an attempt that must end by `deadline`.
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
        from_nanos(self.stats.last_used.load(Ordering::Relaxed))
    }
    fn weight(&self) -> f64 {
        self.weight
    }
    fn avg_latency(&self) -> f64 {
        self.stats.avg_mirror.get().unwrap_or(0.0)
    }
    fn ewma_latency(&self) -> Option<f64> {
        self.stats.ewma_mirror.get()
    }
    fn success_count(&self) -> u64 {
        self.stats.successes.load(Ordering::Relaxed)
    }
    fn failure_count(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }
    fn weighted_terms(&self) -> crate::engine::schedule::WeightedTerms {
        self.stats.weighted_terms(self.weight)
    }
}

/// A slot held on an instance for one attempt. Finish it with the outcome; dropping it
/// unfinished (cancellation) releases everything and counts as neutral.
pub struct Lease {
    inst: Arc<Instance>,
    admission: Admission,
    est_tokens: u64,
    started: Instant,
    done: bool,
}

impl Lease {
    pub fn instance(&self) -> &Arc<Instance> {
        &self.inst
    }
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Record a success with the real usage (corrects the TPM estimate).
    pub fn succeed(mut self, usage: Option<Usage>) {
        self.done = true;
        let now = Instant::now();
        let inst = &self.inst;
        inst.stats.successes.fetch_add(1, Ordering::Relaxed);
        inst.stats.record_latency(now.duration_since(self.started).as_secs_f64());
        let watch = inst.breaker_watch();
        inst.breaker.on_success(self.admission, now);
        inst.breaker_changed(watch, None);
        let t = inst.health.on_success(now);
        if let (Some(tpm), Some(u)) = (&inst.model_tpm, usage) {
            tpm.adjust(u.total_tokens as i64 - self.est_tokens as i64, now);
        }
        inst.release();
        inst.transitioned(t);
    }

    /// Record a failure. Applies the 429 cooldown, breaker and health rules for its class.
    pub fn fail(mut self, err: &Error) {
        self.done = true;
        let now = Instant::now();
        let inst = &self.inst;
        let caller_deadline = err.timeout == Some(TimeoutKind::Deadline);
        let mut t = None;
        if err.kind == ErrorKind::RateLimited {
            let cool = err.retry_after.unwrap_or_default().max(inst.rate_limit_cooldown);
            inst.stats.cooldown_until.store(to_nanos(now + cool), Ordering::Relaxed);
            inst.breaker.on_neutral(self.admission);
            if let Some(bus) = inst.events.get() {
                bus.emit(log::Level::Debug, || EventKind::RateLimited {
                    instance: inst.id.clone(),
                    retry_after: err.retry_after.map(|d| d.as_secs_f64()),
                    cooldown: cool.as_secs_f64(),
                });
            }
        } else if err.kind.counts_as_instance_failure() && !caller_deadline {
            inst.stats.failures.fetch_add(1, Ordering::Relaxed);
            let watch = inst.breaker_watch();
            inst.breaker.on_failure(self.admission, now, err.retry_after);
            inst.breaker_changed(watch, Some(err));
            t = inst.health.on_failure(err.kind, now);
        } else {
            inst.breaker.on_neutral(self.admission);
        }
        inst.release();
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
            self.inst.breaker.on_neutral(self.admission);
            self.inst.release();
        }
    }
}

/// Re-label a timeout that fired because the caller's deadline clamped it.
pub fn mark_deadline(mut e: Error, clamped: bool, deadline: Option<Instant>) -> Error {
    if e.kind == ErrorKind::Timeout && clamped && deadline.is_some_and(|d| Instant::now() + Duration::from_millis(2) >= d) {
        e.timeout = Some(TimeoutKind::Deadline);
        e.message = format!("call deadline reached ({})", e.message);
    }
    e
}

/// Status of one instance for `status()` output.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceSnapshot {
    pub instance_id: String,
    pub group: String,
    pub echelon: String,
    pub model: String,
    pub provider: String,
    pub status: InstanceStatus,
    pub in_flight: u32,
    pub max_concurrency: u32,
    pub weight: f64,
    pub breaker: crate::state::breaker::BreakerSnapshot,
    pub cooldown_remaining: Option<f64>,
    pub consecutive_failures: u32,
    pub last_health_check: Option<SystemTime>,
    pub stats: StatsSnapshot,
    pub rpm_remaining: Option<u64>,
    pub tpm_remaining: Option<u64>,
}

impl Instance {
    /// A status snapshot.
    pub fn snapshot(&self) -> InstanceSnapshot {
        let now = Instant::now();
        let rpm_remaining = [&self.rpm, &self.model_rpm]
            .into_iter()
            .flatten()
            .map(|l| l.status(now).remaining)
            .min();
        InstanceSnapshot {
            instance_id: self.id.clone(),
            group: self.group.clone(),
            echelon: self.echelon.clone(),
            model: self.model_name.clone(),
            provider: self.provider.clone(),
            status: self.health.status(now),
            in_flight: self.concurrency.in_flight(),
            max_concurrency: self.concurrency.limit(),
            weight: self.weight,
            breaker: self.breaker.snapshot(now),
            cooldown_remaining: self.cooldown_until(now).map(|t| (t - now).as_secs_f64()),
            consecutive_failures: self.health.consecutive_failures(),
            last_health_check: self.health.last_check(),
            stats: self.stats.snapshot(),
            rpm_remaining,
            tpm_remaining: self.model_tpm.as_ref().map(|l| l.status(now).remaining),
        }
    }
}
