//! A polling pool: instances gathered from task-group references, rotated by a strategy,
//! behind pool-wide admission (concurrency, rate, bounded queue) and active health checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::PoolConfig;
use crate::engine::chain::walk::{walk, Plan, Walked};
use crate::engine::instance::InstanceSnapshot;
use crate::engine::selector::{QueueSlot, Selector};
use crate::error::{Error, ErrorKind};
use crate::state::health::InstanceStatus;
use crate::state::limit::{RateBlock, RateGate};
use crate::state::wait::WaitCtx;
use crate::types::ChatRequest;

/// Pool-wide request statistics (the original's `stats` dict).
#[derive(Default)]
pub struct PoolStats {
    total: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Sum of successful latencies in microseconds.
    ok_latency_us: AtomicU64,
}

/// Snapshot of [`PoolStats`].
#[derive(Clone, Debug, Serialize)]
pub struct PoolStatsSnapshot {
    /// Calls counted (streams when they end).
    pub total_requests: u64,
    /// Of those, successes.
    pub successful_requests: u64,
    /// Of those, failures.
    pub failed_requests: u64,
    /// Mean latency of successful requests, seconds.
    pub avg_response_time: f64,
}

impl PoolStats {
    /// Count a finished call.
    pub fn record(&self, ok: bool, latency: Duration) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
            self.ok_latency_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// The counts and the mean latency now.
    pub fn snapshot(&self) -> PoolStatsSnapshot {
        let ok = self.ok.load(Ordering::Relaxed);
        PoolStatsSnapshot {
            total_requests: self.total.load(Ordering::Relaxed),
            successful_requests: ok,
            failed_requests: self.failed.load(Ordering::Relaxed),
            avg_response_time: if ok > 0 { self.ok_latency_us.load(Ordering::Relaxed) as f64 / ok as f64 / 1e6 } else { 0.0 },
        }
    }
}

/// Pool status (the original keys plus per-instance detail).
#[derive(Clone, Debug, Serialize)]
pub struct PoolStatus {
    /// The pool's name.
    pub name: String,
    /// Its rotation strategy.
    pub rotation_strategy: &'static str,
    /// Instances in the pool.
    pub total_instances: usize,
    /// Of those, healthy.
    pub healthy_instances: usize,
    /// Of those, degraded (closed breaker, recent failures).
    pub degraded_instances: usize,
    /// Of those, unhealthy (breaker open).
    pub unhealthy_instances: usize,
    /// Of those, failed (rejected key or unknown model).
    pub failed_instances: usize,
    /// Of those, recovering (half-open: probes only).
    pub recovering_instances: usize,
    /// Requests in flight on its instances.
    pub in_flight: u32,
    /// Calls waiting in the pool (for admission or for an instance).
    pub queue_length: u32,
    /// How many calls may wait.
    pub queue_size: u32,
    /// The pool-wide concurrency cap (0: none).
    pub max_concurrent_requests: u32,
    /// Calls through the pool.
    pub stats: PoolStatsSnapshot,
    /// The original's `concurrency_status`: the pool-wide concurrency cap and rate limit.
    pub concurrency_status: ConcurrencyStatus,
    /// Every instance.
    pub instances: Vec<InstanceSnapshot>,
}

/// The pool's concurrency cap and rate limit, with the original's keys.
#[derive(Clone, Debug, Serialize)]
pub struct ConcurrencyStatus {
    /// `{limit, current, available, queue_size}` (limit 0: no cap).
    pub concurrency: ConcurrencyCap,
    /// `{enabled, algorithm, ...}` as the original reported its rate limiter.
    pub rate_limit: serde_json::Value,
}

/// The pool-wide concurrency cap now.
#[derive(Clone, Debug, Serialize)]
pub struct ConcurrencyCap {
    /// `max_concurrent_requests` (0: no cap).
    pub limit: u32,
    /// Requests holding a place under the cap.
    pub current: u32,
    /// Places free.
    pub available: u32,
    /// Callers waiting in the pool's queue.
    pub queue_size: u32,
}

/// A polling pool.
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: PoolConfig,
    /// Selection among its instances; also counts the callers waiting in the pool (one place
    /// per call, whether it waits for admission or for an instance).
    pub selector: Arc<Selector>,
    admission: Option<Arc<Semaphore>>,
    rate: Option<Arc<RateGate>>,
    /// Calls through the pool (streams counted when they end).
    pub stats: Arc<PoolStats>,
    health_stop: CancellationToken,
}

impl Pool {
    /// A pool selecting over `selector`, behind `rate` if configured.
    pub fn new(config: PoolConfig, selector: Arc<Selector>, rate: Option<Arc<RateGate>>) -> Self {
        let admission = (config.max_concurrent_requests > 0).then(|| Arc::new(Semaphore::new(config.max_concurrent_requests as usize)));
        Self { name: config.name.clone(), config, selector, admission, rate, stats: Arc::new(PoolStats::default()), health_stop: CancellationToken::new() }
    }

    /// The single-target plan of this pool: up to `max_instance_attempts` instances.
    pub fn plan(&self, max_instance_attempts: Option<u32>) -> Plan {
        Plan::single(self.name.clone(), self.selector.clone(), max_instance_attempts.unwrap_or(self.config.max_instance_attempts).max(1))
    }

    fn queue_full(&self, what: &str) -> Error {
        Error::new(ErrorKind::PoolExhausted, format!("{}: {what} and the queue is full ({} waiting)", self.name, self.selector.queue_size()))
    }

    /// Pool-wide admission: the rate limit, then the concurrency cap, waiting in the pool's
    /// bounded queue (the place taken, if any, is left in `slot` for the rest of the call).
    /// The returned permit (if any) must be held for the whole call.
    ///
    /// # Errors
    /// `PoolExhausted` when the queue is full, `QueueTimeout` when the deadline passes (or the
    /// rate limit frees only after it).
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled caller leaves the rate limit's line and the semaphore's queue
    /// (tokio's semaphore hands a permit it was about to get to the next waiter).
    pub async fn admit(&self, deadline: Option<Instant>, slot: &mut Option<QueueSlot>) -> Result<Option<OwnedSemaphorePermit>, Error> {
        // Fast path without waiting; only a call that must wait pays for the waiting state
        // (boxed, so it is not part of every in-flight request's future).
        let rate_ok = match &self.rate {
            None => true,
            Some(rate) => rate.try_take(1, Instant::now(), &mut WaitCtx::new()).is_ok(),
        };
        if rate_ok {
            match &self.admission {
                None => return Ok(None),
                Some(sem) => {
                    if let Ok(p) = sem.clone().try_acquire_owned() {
                        return Ok(Some(p));
                    }
                }
            }
        }
        Box::pin(self.admit_waiting(rate_ok, deadline, slot)).await
    }

    async fn admit_waiting(&self, rate_taken: bool, deadline: Option<Instant>, slot: &mut Option<QueueSlot>) -> Result<Option<OwnedSemaphorePermit>, Error> {
        if let (Some(rate), false) = (&self.rate, rate_taken) {
            let mut ctx = WaitCtx::new();
            loop {
                let now = Instant::now();
                let until = match rate.try_take(1, now, &mut ctx) {
                    Ok(()) => break,
                    Err(RateBlock::Until(t)) => Some(t),
                    Err(RateBlock::Queued) => None,
                };
                if deadline.is_some_and(|d| until.is_some_and(|t| t > d) || now >= d) {
                    return Err(Error::new(ErrorKind::QueueTimeout, format!("{}: pool rate limit would delay the request past its deadline", self.name)));
                }
                if slot.is_none() {
                    *slot = Some(self.selector.enter_queue().ok_or_else(|| self.queue_full("rate limited"))?);
                }
                if !ctx.is_waiting() {
                    ctx.start_waiting();
                    continue;
                }
                let waiter = ctx.waiter().cloned().expect("waiting");
                let wake_at = match (until, deadline) {
                    (Some(u), Some(d)) => Some(u.min(d)),
                    (u, d) => u.or(d),
                };
                match wake_at {
                    Some(t) => {
                        tokio::select! {
                            _ = waiter.wait() => {}
                            _ = tokio::time::sleep_until(t.into()) => {}
                        }
                    }
                    None => waiter.wait().await,
                }
            }
        }
        let Some(sem) = &self.admission else { return Ok(None) };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        if slot.is_none() {
            let what = format!("{} requests in flight", self.config.max_concurrent_requests);
            *slot = Some(self.selector.enter_queue().ok_or_else(|| self.queue_full(&what))?);
        }
        let waited = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), sem.clone().acquire_owned()).await.ok(),
            None => Some(sem.clone().acquire_owned().await),
        };
        match waited {
            Some(Ok(p)) => Ok(Some(p)),
            _ => Err(Error::new(ErrorKind::QueueTimeout, format!("{}: no free slot before the deadline", self.name))),
        }
    }

    /// Route one request through the pool. A stream is counted in the pool's statistics when
    /// it ends.
    pub async fn run(
        &self,
        req: &ChatRequest,
        start: Instant,
        deadline: Option<Instant>,
        stream: bool,
        max_instance_attempts: Option<u32>,
    ) -> Result<Walked, Error> {
        // Only the permit itself is kept across the walk, not the whole admission result (an
        // `Error`-sized value in every in-flight request's future). For streams the permit is
        // released once the first token arrived; from then on the instance slot held by the
        // stream bounds concurrency.
        let mut slot = None;
        let _permit = match self.admit(deadline, &mut slot).await {
            Ok(permit) => permit,
            Err(e) => {
                self.stats.record(false, Duration::ZERO);
                return Err(e);
            }
        };
        let mut result = walk(&self.plan(max_instance_attempts), req, start, deadline, stream, slot).await;
        match &mut result {
            Ok(Walked::Chat(r)) => self.stats.record(true, r.latency),
            Ok(Walked::Stream(s)) => {
                let stats = self.stats.clone();
                s.on_finish(Box::new(move |r| match r {
                    Ok(resp) => stats.record(true, resp.latency),
                    Err(_) => stats.record(false, Duration::ZERO),
                }));
            }
            Err(_) => self.stats.record(false, Duration::ZERO),
        }
        result
    }

    /// Status with the original keys plus per-instance detail.
    pub fn status(&self) -> PoolStatus {
        let now = Instant::now();
        let mut counts = [0usize; 5];
        let mut in_flight = 0;
        for i in &self.selector.instances {
            let idx = match i.status(now) {
                InstanceStatus::Healthy => 0,
                InstanceStatus::Degraded => 1,
                InstanceStatus::Unhealthy => 2,
                InstanceStatus::Failed => 3,
                InstanceStatus::Recovering => 4,
            };
            counts[idx] += 1;
            in_flight += i.in_flight();
        }
        PoolStatus {
            name: self.name.clone(),
            rotation_strategy: self.config.rotation_strategy.as_str(),
            total_instances: self.selector.instances.len(),
            healthy_instances: counts[0],
            degraded_instances: counts[1],
            unhealthy_instances: counts[2],
            failed_instances: counts[3],
            recovering_instances: counts[4],
            in_flight,
            queue_length: self.selector.queue_len(),
            queue_size: self.selector.queue_size(),
            max_concurrent_requests: self.config.max_concurrent_requests,
            stats: self.stats.snapshot(),
            concurrency_status: self.concurrency_status(now),
            instances: self.selector.instances.iter().map(|i| i.snapshot()).collect(),
        }
    }

    fn concurrency_status(&self, now: Instant) -> ConcurrencyStatus {
        let limit = self.config.max_concurrent_requests;
        let available = self.admission.as_ref().map_or(0, |s| s.available_permits() as u32);
        let concurrency = ConcurrencyCap {
            limit,
            current: if limit > 0 { limit.saturating_sub(available) } else { self.selector.instances.iter().map(|i| i.in_flight()).sum() },
            available,
            queue_size: self.selector.queue_len(),
        };
        let rate_limit = match &self.rate {
            None => serde_json::json!({"enabled": false}),
            Some(gate) => {
                let st = gate.status(now);
                if st.algorithm == "token_bucket" {
                    let rate = if st.period.is_zero() { 0.0 } else { 1.0 / st.period.as_secs_f64() };
                    serde_json::json!({"enabled": true, "algorithm": "token_bucket", "bucket_size": st.limit, "current_tokens": st.remaining, "refill_rate": rate})
                } else {
                    serde_json::json!({"enabled": true, "algorithm": "sliding_window", "window_size": st.period.as_secs_f64(), "max_requests": st.limit, "current_requests": st.limit.saturating_sub(st.remaining)})
                }
            }
        };
        ConcurrencyStatus { concurrency, rate_limit }
    }

    /// Stop the background health checks.
    pub fn close(&self) {
        self.health_stop.cancel();
    }

    /// Whether the health task was stopped.
    pub fn is_closed(&self) -> bool {
        self.health_stop.is_cancelled()
    }

    /// Start the active health checks on `rt`: every `interval` (±20% jitter) probe each
    /// instance concurrently. The task holds only a weak reference and ends when the pool is
    /// closed or dropped.
    pub fn spawn_health_checks(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        if !self.config.health_check.enabled || self.selector.instances.is_empty() {
            return;
        }
        let weak: Weak<Pool> = Arc::downgrade(self);
        let stop = self.health_stop.clone();
        let interval = self.config.health_check.interval;
        rt.spawn(async move {
            loop {
                let jitter = 0.8 + rand::random::<f64>() * 0.4;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval.mul_f64(jitter)) => {}
                }
                let Some(pool) = weak.upgrade() else { return };
                pool.probe_all().await;
            }
        });
    }

    /// Probe every instance once (also used by the compat `HealthChecker`).
    pub async fn probe_all(&self) {
        let probes = self.selector.instances.iter().map(|inst| {
            let mode = self.config.health_check.probe.unwrap_or(inst.client.model().probe);
            let mut t = inst.timeouts;
            t.total = Some(t.total.unwrap_or(Duration::from_secs(10)).min(Duration::from_secs(10)));
            async move {
                let ok = inst.client.probe(mode, &t).await;
                if let Err(e) = &ok {
                    log::debug!("health probe of {} failed: {}", inst.id, e);
                }
                inst.on_probe(ok.is_ok());
            }
        });
        futures_util::future::join_all(probes).await;
        // Time-based recovery (an open breaker's rest ending) shows as a transition too.
        let now = Instant::now();
        for inst in &self.selector.instances {
            inst.refresh_health(now);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.health_stop.cancel();
    }
}
