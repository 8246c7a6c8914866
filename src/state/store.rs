//! Where shared mutable state lives: breakers, limiters, health and statistics, keyed by a
//! stable id (an instance id, or `model:<name>` for limits shared by every instance of a model).
//!
//! The engine asks a [`StateStore`] for each piece of state instead of constructing it, so
//! that (a) a config reload that keeps an instance keeps its state, and (b) a store backed by
//! Redis can later replace [`MemoryStore`] without touching the callers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::state::breaker::Breaker;
use crate::config::{BreakerConfig, HealthCheckConfig, RateLimitConfig};
use crate::state::health::Health;
use crate::engine::instance::InstanceStats;
use crate::state::limit::{ConcurrencyLimit, RateLimiter, SlidingWindow, TokenBucket};

/// Rate limit spec a store is asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
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
            RateLimitConfig::SlidingWindow { window_size, max_requests } => {
                RateSpec::Window { limit: max_requests as u64, window: window_size }
            }
        }
    }
}

/// Creates (or returns the existing) state object for a key. Implementations must return the
/// same object for the same key and equal settings; when the settings changed, a fresh object
/// with the new settings replaces the old one.
pub trait StateStore: Send + Sync {
    fn breaker(&self, key: &str, cfg: &BreakerConfig) -> Arc<Breaker>;
    fn health(&self, key: &str, cfg: &HealthCheckConfig) -> Arc<Health>;
    fn concurrency(&self, key: &str, limit: u32) -> Arc<ConcurrencyLimit>;
    fn rate(&self, key: &str, spec: RateSpec) -> Arc<dyn RateLimiter>;
    /// Call statistics of an instance (latency EWMA, counts, cooldown): kept across reloads.
    fn stats(&self, key: &str) -> Arc<InstanceStats>;
    /// Drop state whose key is not in `live` (after a reload removed instances).
    fn retain(&self, live: &HashSet<String>);
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
    concurrency: Mutex<HashMap<String, Entry<ConcurrencyLimit, u32>>>,
    rates: Mutex<HashMap<String, Entry<dyn RateLimiter, RateSpec>>>,
    stats: Mutex<HashMap<String, Entry<InstanceStats, ()>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn get_or_make<T: ?Sized, S: PartialEq + Copy>(
    map: &Mutex<HashMap<String, Entry<T, S>>>,
    key: &str,
    settings: S,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
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
        get_or_make(&self.breakers, key, *cfg, || Arc::new(Breaker::new(*cfg)))
    }
    fn health(&self, key: &str, cfg: &HealthCheckConfig) -> Arc<Health> {
        get_or_make(&self.health, key, *cfg, || Arc::new(Health::new(*cfg)))
    }
    fn concurrency(&self, key: &str, limit: u32) -> Arc<ConcurrencyLimit> {
        get_or_make(&self.concurrency, key, limit, || Arc::new(ConcurrencyLimit::new(limit)))
    }
    fn rate(&self, key: &str, spec: RateSpec) -> Arc<dyn RateLimiter> {
        get_or_make(&self.rates, key, spec, || -> Arc<dyn RateLimiter> {
            match spec {
                RateSpec::Window { limit, window } => Arc::new(SlidingWindow::new(limit, window)),
                RateSpec::Bucket { bucket_size, refill_rate } => Arc::new(TokenBucket::new(bucket_size, refill_rate)),
            }
        })
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
}
