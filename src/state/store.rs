//! Where shared mutable state lives: breakers, limiters, health and statistics, keyed by a
//! stable id (an instance id, or `model:<name>` for limits shared by every instance of a model).
//!
//! The engine asks a [`StateStore`] for each piece of state instead of constructing it, so
//! that (a) a config reload that keeps an instance keeps its state (and the callers queued for
//! its limits: a limit owns its wait queue, so a release on the old engine wakes a caller
//! queued through the new one), and (b) a store backed by Redis
//! ([`crate::state::redis::RedisStore`], `[state] backend = "redis"`) replaces [`MemoryStore`]
//! without touching the callers.
//!
//! Contract for implementations:
//! - The same key with equal settings returns the same object. A concurrency limit whose
//!   limit changed is the same object with the new limit (its in-flight count and its waiters
//!   carry over); other state whose settings changed is replaced by a fresh object.
//! - Waiting is local: a store shared between processes keeps the shared *budget* (counts,
//!   windows, breaker phase) and still hands out local objects whose queues wake this process's
//!   callers; it must re-check the shared budget when a local waiter is woken or its time
//!   comes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::{BreakerConfig, HealthCheckConfig, RateLimitConfig};
use crate::state::breaker::Breaker;
use crate::state::health::Health;
use crate::state::limit::{ConcurrencyLimit, RateGate, SlidingWindow, TokenBucket};
use crate::state::stats::InstanceStats;

/// Rate limit spec a store is asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)] // the variants' docs name their fields
pub enum RateSpec {
    /// At most `limit` units in any `window`.
    Window { limit: u64, window: Duration },
    /// `bucket_size` units refilled at `refill_rate`/s.
    Bucket { bucket_size: u32, refill_rate: f64 },
}

impl From<RateLimitConfig> for RateSpec {
    fn from(c: RateLimitConfig) -> Self {
        match c {
            RateLimitConfig::TokenBucket { bucket_size, refill_rate } => RateSpec::Bucket { bucket_size, refill_rate },
            RateLimitConfig::SlidingWindow { window_size, max_requests } => RateSpec::Window { limit: max_requests as u64, window: window_size },
        }
    }
}

/// Creates (or returns the existing) state object for a key. Implementations must return the
/// same object for the same key and equal settings; when the settings changed, a fresh object
/// with the new settings replaces the old one.
pub trait StateStore: Send + Sync {
    /// The circuit breaker of an instance.
    fn breaker(&self, key: &str, cfg: &BreakerConfig) -> Arc<Breaker>;
    /// The health view and active-probe settings of an instance.
    fn health(&self, key: &str, cfg: &HealthCheckConfig) -> Arc<Health>;
    /// A concurrency limit (an instance's, or a model's shared by all its instances).
    fn concurrency(&self, key: &str, limit: u32) -> Arc<ConcurrencyLimit>;
    /// A rate limit with its wait queue (RPM/TPM of an instance or model, a pool's rate).
    fn rate(&self, key: &str, spec: RateSpec) -> Arc<RateGate>;
    /// Call statistics of an instance (latency EWMA, counts, cooldown): kept across reloads.
    fn stats(&self, key: &str) -> Arc<InstanceStats>;
    /// Drop state whose key is not in `live` (after a reload removed instances).
    fn retain(&self, live: &HashSet<String>);
    /// Drop the state of these keys (a direct route evicted from the engine's cache).
    fn forget(&self, keys: &[String]);
}

struct Entry<T: ?Sized, S> {
    settings: S,
    value: Arc<T>,
}

/// In-process state store (the default).
#[derive(Default)]
pub struct MemoryStore {
    breakers: Mutex<HashMap<String, Entry<Breaker, BreakerConfig>>>,
    health: Mutex<HashMap<String, Entry<Health, HealthCheckConfig>>>,
    concurrency: Mutex<HashMap<String, Arc<ConcurrencyLimit>>>,
    rates: Mutex<HashMap<String, Entry<RateGate, RateSpec>>>,
    stats: Mutex<HashMap<String, Entry<InstanceStats, ()>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn get_or_make<T: ?Sized, S: PartialEq + Copy>(map: &Mutex<HashMap<String, Entry<T, S>>>, key: &str, settings: S, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
    let mut m = map.lock();
    if let Some(e) = m.get(key) {
        if e.settings == settings {
            return e.value.clone();
        }
    }
    let value = make();
    m.insert(key.to_string(), Entry { settings, value: value.clone() });
    value
}

impl StateStore for MemoryStore {
    fn breaker(&self, key: &str, cfg: &BreakerConfig) -> Arc<Breaker> {
        // One breaker per key for good: new settings change it in place (phase, counts and
        // waiters carry over a reload).
        let mut m = self.breakers.lock();
        if let Some(e) = m.get_mut(key) {
            if e.settings != *cfg {
                e.value.reconfigure(*cfg);
                e.settings = *cfg;
            }
            return e.value.clone();
        }
        let b = Arc::new(Breaker::new(*cfg));
        m.insert(key.to_string(), Entry { settings: *cfg, value: b.clone() });
        b
    }
    fn health(&self, key: &str, cfg: &HealthCheckConfig) -> Arc<Health> {
        get_or_make(&self.health, key, *cfg, || Arc::new(Health::new(*cfg)))
    }
    fn concurrency(&self, key: &str, limit: u32) -> Arc<ConcurrencyLimit> {
        let mut m = self.concurrency.lock();
        if let Some(c) = m.get(key) {
            if c.limit() != limit {
                c.set_limit(limit);
            }
            return c.clone();
        }
        let c = Arc::new(ConcurrencyLimit::new(limit));
        m.insert(key.to_string(), c.clone());
        c
    }
    fn rate(&self, key: &str, spec: RateSpec) -> Arc<RateGate> {
        let mut m = self.rates.lock();
        if let Some(e) = m.get_mut(key) {
            // A new limit over the same window changes it in place: what the window already
            // spent still counts, and calls queued on the old engine stay in the same line.
            let in_place = match spec {
                RateSpec::Window { limit, window } => e.settings == spec || e.value.set_limit(limit, window),
                RateSpec::Bucket { .. } => e.settings == spec,
            };
            if in_place {
                e.settings = spec;
                return e.value.clone();
            }
        }
        let gate = Arc::new(RateGate::new(match spec {
            RateSpec::Window { limit, window } => Arc::new(SlidingWindow::new(limit, window)),
            RateSpec::Bucket { bucket_size, refill_rate } => Arc::new(TokenBucket::new(bucket_size, refill_rate)),
        }));
        m.insert(key.to_string(), Entry { settings: spec, value: gate.clone() });
        gate
    }
    fn stats(&self, key: &str) -> Arc<InstanceStats> {
        get_or_make(&self.stats, key, (), || Arc::new(InstanceStats::default()))
    }
    fn retain(&self, live: &HashSet<String>) {
        self.stats.lock().retain(|k, _| live.contains(k));
        self.breakers.lock().retain(|k, _| live.contains(k));
        self.health.lock().retain(|k, _| live.contains(k));
        self.concurrency.lock().retain(|k, _| live.contains(k));
        self.rates.lock().retain(|k, _| live.contains(k));
    }
    fn forget(&self, keys: &[String]) {
        for k in keys {
            self.stats.lock().remove(k);
            self.breakers.lock().remove(k);
            self.health.lock().remove(k);
            self.concurrency.lock().remove(k);
            self.rates.lock().remove(k);
        }
    }
}
