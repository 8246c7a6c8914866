//! A polling pool: instances gathered from task-group references, rotated by a strategy,
//! behind pool-wide admission (concurrency, rate, bounded queue) and active health checks.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::PoolConfig;
use crate::error::{Error, ErrorKind};
use crate::engine::chain::walk::{walk, Plan, Target, Walked};
use crate::state::health::InstanceStatus;
use crate::engine::instance::InstanceSnapshot;
use crate::state::limit::RateLimiter;
use crate::engine::selector::Selector;
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
    pub total_requests: u64,
    pub successful_requests: u64,
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
    pub name: String,
    pub rotation_strategy: &'static str,
    pub total_instances: usize,
    pub healthy_instances: usize,
    pub degraded_instances: usize,
    pub unhealthy_instances: usize,
    pub failed_instances: usize,
    pub recovering_instances: usize,
    pub in_flight: u32,
    pub queue_length: u32,
    pub queue_size: u32,
    pub max_concurrent_requests: u32,
    pub stats: PoolStatsSnapshot,
    pub instances: Vec<InstanceSnapshot>,
}

/// A polling pool.
pub struct Pool {
    pub name: String,
    pub config: PoolConfig,
    pub selector: Arc<Selector>,
    admission: Option<Arc<Semaphore>>,
    admission_waiting: AtomicU32,
    rate: Option<Arc<dyn RateLimiter>>,
    rate_gate: Mutex<()>,
    pub stats: PoolStats,
    health_stop: CancellationToken,
}

impl Pool {
    pub fn new(config: PoolConfig, selector: Arc<Selector>, rate: Option<Arc<dyn RateLimiter>>) -> Self {
        let admission = (config.max_concurrent_requests > 0).then(|| Arc::new(Semaphore::new(config.max_concurrent_requests as usize)));
        Self {
            name: config.name.clone(),
            config,
            selector,
            admission,
            admission_waiting: AtomicU32::new(0),
            rate,
            rate_gate: Mutex::new(()),
            stats: PoolStats::default(),
            health_stop: CancellationToken::new(),
        }
    }

    /// The single-target plan of this pool: up to `max_instance_attempts` instances.
    pub fn plan(&self, max_instance_attempts: Option<u32>) -> Plan {
        Plan {
            targets: vec![Target {
                label: self.name.clone(),
                selector: self.selector.clone(),
                max_tries: max_instance_attempts.unwrap_or(self.config.max_instance_attempts).max(1),
            }],
            retry_delay: Duration::ZERO,
            content_filter_fallback: false,
            provider_failover: false,
            hedge_after: None,
        }
    }

    /// Pool-wide admission: the concurrency cap and the rate limit, waiting in the bounded
    /// queue. The returned permit (if any) must be held for the whole call.
    pub async fn admit(&self, deadline: Option<Instant>) -> Result<Option<OwnedSemaphorePermit>, Error> {
        if let Some(rate) = &self.rate {
            loop {
                let now = Instant::now();
                let res = {
                    let _g = self.rate_gate.lock();
                    rate.try_acquire(1, now)
                };
                match res {
                    Ok(()) => break,
                    Err(wait) => {
                        if deadline.is_some_and(|d| now + wait > d) {
                            return Err(Error::new(
                                ErrorKind::QueueTimeout,
                                format!("{}: pool rate limit would delay the request past its deadline", self.name),
                            ));
                        }
                        if self.admission_waiting.load(Ordering::Relaxed) >= self.selector.queue_size() {
                            return Err(Error::new(ErrorKind::PoolExhausted, format!("{}: rate limited and the queue is full", self.name)));
                        }
                        let _waiting = Waiting::enter(&self.admission_waiting);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        let Some(sem) = &self.admission else { return Ok(None) };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        if self.admission_waiting.load(Ordering::Relaxed) >= self.selector.queue_size() {
            return Err(Error::new(
                ErrorKind::PoolExhausted,
                format!("{}: {} requests in flight and the queue is full", self.name, self.config.max_concurrent_requests),
            ));
        }
        let waiting = Waiting::enter(&self.admission_waiting);
        let waited = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), sem.clone().acquire_owned()).await.ok(),
            None => Some(sem.clone().acquire_owned().await),
        };
        drop(waiting);
        match waited {
            Some(Ok(p)) => Ok(Some(p)),
            _ => Err(Error::new(ErrorKind::QueueTimeout, format!("{}: no free slot before the deadline", self.name))),
        }
    }

    /// Route one request through the pool.
    pub async fn run(&self, req: &ChatRequest, start: Instant, deadline: Option<Instant>, stream: bool, max_instance_attempts: Option<u32>) -> Result<Walked, Error> {
        // Only the permit itself is kept across the walk, not the whole admission result (an
        // `Error`-sized value in every in-flight request's future). For streams the permit is
        // released once the first token arrived; from then on the instance slot held by the
        // stream bounds concurrency.
        let _permit = match self.admit(deadline).await {
            Ok(permit) => permit,
            Err(e) => {
                self.stats.record(false, Duration::ZERO);
                return Err(e);
            }
        };
        let result = walk(&self.plan(max_instance_attempts), req, start, deadline, stream).await;
        match &result {
            Ok(Walked::Chat(r)) => self.stats.record(true, r.latency),
            Ok(Walked::Stream(_)) => {}
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
            queue_length: self.selector.queue_len() + self.admission_waiting.load(Ordering::Relaxed),
            queue_size: self.selector.queue_size(),
            max_concurrent_requests: self.config.max_concurrent_requests,
            stats: self.stats.snapshot(),
            instances: self.selector.instances.iter().map(|i| i.snapshot()).collect(),
        }
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
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.health_stop.cancel();
    }
}

/// Counts a request waiting for pool admission for as long as it lives (cancellation-safe).
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
