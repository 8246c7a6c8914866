//! Selection with backpressure: pick an instance among a set with a strategy, and when every
//! instance is saturated wait in a bounded queue until a slot frees or the deadline passes.
//!
//! Used by pools (over the pool's instances) and by task-group echelons (over the echelon's).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::RotationStrategy;
use crate::error::{Error, ErrorKind};
use crate::observe::events::{EventBus, QueueWatch};
use crate::engine::instance::{Block, Instance, Lease};
use crate::engine::schedule::Scheduler;

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
    /// The router's event bus and the 50%/90%/drained watcher of the wait queue.
    events: OnceLock<Arc<EventBus>>,
    queue_watch: QueueWatch,
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
            events: OnceLock::new(),
            queue_watch: QueueWatch::default(),
        }
    }

    /// Register the router's event bus (queue threshold events). Called once while building.
    pub fn set_event_bus(&self, bus: Arc<EventBus>) {
        let _ = self.events.set(bus);
    }

    fn queue_changed(&self, len: u32) {
        self.queue_watch.update(self.events.get().map(|b| b.as_ref()), &self.name, len, self.queue_size);
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
        // Per-instance verdicts; on the stack for the usual pool sizes (this runs per request).
        let n = self.instances.len();
        let mut stack = [None::<Block>; 64];
        let mut heap = Vec::new();
        let blocks: &mut [Option<Block>] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap.resize(n, None);
            &mut heap
        };
        for (slot, inst) in blocks.iter_mut().zip(&self.instances) {
            *slot = if filter.allows(inst) {
                any_allowed = true;
                inst.check(now, est_tokens).err()
            } else {
                Some(Block::Down)
            };
        }
        for b in blocks.iter() {
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
        let mut slot: Option<QueueSlot<'_>> = None;
        loop {
            // Register as a waiter *before* looking: a slot released between the look and the
            // wait must still wake us (Notify keeps at most one stored permit).
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let outcome = match self.try_once(now, est_tokens, filter) {
                // Avoiding tried instances is a preference, not a rule.
                Outcome::Never if matches!(filter, Filter::Avoid(_)) => self.try_once(now, est_tokens, Filter::Any),
                o => o,
            };
            let (until, busy) = match outcome {
                Outcome::Leased(lease) => return Ok(lease),
                Outcome::Never | Outcome::Wait { until: None, busy: false } => return Err(self.never_error(now)),
                Outcome::Wait { until, busy } => (until, busy),
            };
            if deadline.is_some_and(|d| d <= now) {
                return Err(Error::new(ErrorKind::QueueTimeout, format!("{}: no free slot before the deadline", self.name)));
            }
            if slot.is_none() {
                if self.waiting.load(Ordering::Relaxed) >= self.queue_size {
                    return Err(Error::new(
                        ErrorKind::PoolExhausted,
                        format!("{}: every instance is saturated and the queue is full ({} waiting)", self.name, self.queue_size),
                    ));
                }
                slot = Some(QueueSlot::enter(self));
            }
            let wake_at = match (until, deadline) {
                (Some(u), Some(d)) => Some(u.min(d)),
                (u, d) => u.or(d),
            };
            match (busy, wake_at) {
                (true, Some(t)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(t.into()) => {}
                    }
                }
                (true, None) => notified.await,
                (false, Some(t)) => tokio::time::sleep_until(t.into()).await,
                (false, None) => unreachable!("handled above"),
            }
        }
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

/// A place in a selector's wait queue; leaving it (on success, error or cancellation) is
/// counted when it is dropped, so a cancelled waiter never leaks a place.
struct QueueSlot<'a> {
    sel: &'a Selector,
}

impl<'a> QueueSlot<'a> {
    fn enter(sel: &'a Selector) -> Self {
        let len = sel.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        sel.queue_changed(len);
        Self { sel }
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        let len = self.sel.waiting.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.sel.queue_changed(len);
    }
}
