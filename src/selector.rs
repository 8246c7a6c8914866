//! Selection with backpressure: pick an instance among a set with a strategy, and when every
//! instance is saturated wait in a bounded queue until a slot frees or the deadline passes.
//!
//! Used by pools (over the pool's instances) and by task-group echelons (over the echelon's).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::RotationStrategy;
use crate::error::{Error, ErrorKind};
use crate::instance::{Block, Instance, Lease};
use crate::schedule::Scheduler;

/// Which instances a selection may use.
#[derive(Clone, Copy)]
pub enum Filter<'a> {
    /// Any instance.
    Any,
    /// Prefer instances not in the list; fall back to them only if nothing else could ever serve.
    Avoid(&'a [Arc<Instance>]),
    /// Only instances whose context window exceeds this many tokens.
    ContextAbove(u32),
    /// Only instances of providers not in the list.
    OtherProviders(&'a [String]),
}

impl Filter<'_> {
    fn allows(&self, inst: &Arc<Instance>) -> bool {
        match self {
            Filter::Any => true,
            Filter::Avoid(list) => !list.iter().any(|i| Arc::ptr_eq(i, inst)),
            Filter::ContextAbove(n) => inst.context_window > *n,
            Filter::OtherProviders(ps) => !ps.contains(&inst.provider),
        }
    }
}

/// A set of instances, a strategy and a bounded wait queue.
pub struct Selector {
    /// Label for errors and traces (pool name or `group.echelon`).
    pub name: String,
    pub instances: Vec<Arc<Instance>>,
    scheduler: Scheduler,
    /// Serialises select + lease so that LRU stamps and least-busy counts are exact.
    lock: Mutex<()>,
    notify: Arc<Notify>,
    waiting: AtomicU32,
    queue_size: u32,
}

enum Outcome {
    Leased(Lease),
    /// Nothing eligible; the earliest time something may become free, and whether a
    /// release could free something (some instance is merely busy).
    Wait { until: Option<Instant>, busy: bool },
    /// Nothing can serve (all down / open / filtered out).
    Never,
}

impl Selector {
    pub fn new(name: String, instances: Vec<Arc<Instance>>, strategy: RotationStrategy, queue_size: u32) -> Self {
        Self {
            name,
            instances,
            scheduler: Scheduler::new(strategy),
            lock: Mutex::new(()),
            notify: Arc::new(Notify::new()),
            waiting: AtomicU32::new(0),
            queue_size,
        }
    }

    /// The queue this selector waits on; instances notify it when a slot frees.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Requests waiting for a slot now.
    pub fn queue_len(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn queue_size(&self) -> u32 {
        self.queue_size
    }

    fn try_once(&self, now: Instant, est_tokens: u64, filter: Filter<'_>) -> Outcome {
        let _g = self.lock.lock();
        let mut until: Option<Instant> = None;
        let mut busy = false;
        let mut any_allowed = false;
        let blocks: Vec<Option<Block>> = self
            .instances
            .iter()
            .map(|inst| {
                if !filter.allows(inst) {
                    return Some(Block::Down);
                }
                any_allowed = true;
                inst.check(now, est_tokens).err()
            })
            .collect();
        for b in &blocks {
            match b {
                Some(Block::Busy) => busy = true,
                Some(Block::Until(t)) => until = Some(until.map_or(*t, |u: Instant| u.min(*t))),
                _ => {}
            }
        }
        if !any_allowed {
            return Outcome::Never;
        }
        // A lease can still fail if another selector (pool vs echelon) raced us on a shared
        // instance; try the next choice then.
        let mut excluded = [false; 64];
        for _ in 0..self.instances.len().min(64) {
            let pick = self
                .scheduler
                .select(&self.instances, |i| blocks[i].is_none() && !excluded.get(i).copied().unwrap_or(false));
            let Some(i) = pick else { break };
            match self.instances[i].try_lease(now, est_tokens) {
                Ok(lease) => return Outcome::Leased(lease),
                Err(Block::Busy) => busy = true,
                Err(Block::Until(t)) => until = Some(until.map_or(t, |u| u.min(t))),
                Err(Block::Down) => {}
            }
            if i < 64 {
                excluded[i] = true;
            }
        }
        if busy || until.is_some() {
            Outcome::Wait { until, busy }
        } else {
            Outcome::Never
        }
    }

    /// Take a lease, waiting (FIFO, bounded by `queue_size`) while everything is saturated.
    ///
    /// Errors: `PoolExhausted` when the queue is full or nothing could ever serve (all
    /// instances down or open — `CircuitOpen` when it is breakers), `QueueTimeout` when the
    /// deadline passes while waiting.
    pub async fn acquire(&self, est_tokens: u64, deadline: Option<Instant>, filter: Filter<'_>) -> Result<Lease, Error> {
        let mut queued = false;
        let result = loop {
            let now = Instant::now();
            let outcome = match self.try_once(now, est_tokens, filter) {
                // Avoiding tried instances is a preference, not a rule.
                Outcome::Never if matches!(filter, Filter::Avoid(_)) => self.try_once(now, est_tokens, Filter::Any),
                o => o,
            };
            match outcome {
                Outcome::Leased(lease) => break Ok(lease),
                Outcome::Never => break Err(self.never_error(now)),
                Outcome::Wait { until, busy } => {
                    if deadline.is_some_and(|d| d <= now) {
                        break Err(Error::new(ErrorKind::QueueTimeout, format!("{}: no free slot before the deadline", self.name)));
                    }
                    if !queued {
                        if self.waiting.load(Ordering::Relaxed) >= self.queue_size {
                            break Err(Error::new(
                                ErrorKind::PoolExhausted,
                                format!("{}: every instance is saturated and the queue is full ({} waiting)", self.name, self.queue_size),
                            ));
                        }
                        self.waiting.fetch_add(1, Ordering::Relaxed);
                        queued = true;
                    }
                    let wake_at = match (until, deadline) {
                        (Some(u), Some(d)) => Some(u.min(d)),
                        (u, d) => u.or(d),
                    };
                    let notified = self.notify.notified();
                    match (busy, wake_at) {
                        (true, Some(t)) => {
                            tokio::select! {
                                _ = notified => {}
                                _ = tokio::time::sleep_until(t.into()) => {}
                            }
                        }
                        (true, None) => notified.await,
                        (false, Some(t)) => tokio::time::sleep_until(t.into()).await,
                        (false, None) => unreachable!("Wait without busy or time"),
                    }
                }
            }
        };
        if queued {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        result
    }

    fn never_error(&self, now: Instant) -> Error {
        let all_open = !self.instances.is_empty() && self.instances.iter().all(|i| !i.breaker.would_admit(now));
        if all_open {
            Error::new(ErrorKind::CircuitOpen, format!("{}: every instance's circuit breaker is open", self.name))
        } else {
            Error::new(ErrorKind::PoolExhausted, format!("{}: no instance is available (all unhealthy, failed or open)", self.name))
        }
    }
}
