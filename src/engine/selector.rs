//! Selection among a set of instances (a pool's, or an echelon's): which can take a request
//! now, which one the strategy picks, and, when none can, why not and until when.
//!
//! A selector never sleeps. Waiting is done by the fallback chain (`engine::chain::acquire`),
//! which looks at every remaining target before deciding to wait, and waits on the limits'
//! own queues. What the selector owns is the bounded count of callers waiting at it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

use super::instance::{Block, Instance};
use super::lease::Lease;
use crate::config::RotationStrategy;
use crate::engine::schedule::Scheduler;
use crate::observe::events::{EventBus, QueueWatch};
use crate::state::wait::WaitCtx;

/// Which instances a selection may use.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter<'a> {
    /// Only instances whose context window exceeds this many tokens (a rule).
    pub min_context: Option<u32>,
    /// Instances (indices into the selector's list) to use only if nothing else could ever
    /// serve: the ones that already failed this call.
    pub avoid: &'a [usize],
    /// Providers to use only if nothing else could ever serve (provider failover).
    pub avoid_providers: &'a [String],
}

impl Filter<'_> {
    /// Whether the rule admits `inst`.
    pub fn admits(&self, inst: &Instance) -> bool {
        self.min_context.is_none_or(|n| inst.context_window > n)
    }

    /// Whether the preferences of `tier` would rather not use instance `i` (tier 0: avoid
    /// both the failed instances and the failed providers; 1: only the failed instances;
    /// 2: nothing).
    fn avoids(&self, tier: u8, i: usize, inst: &Instance) -> bool {
        (tier <= 1 && self.avoid.contains(&i)) || (tier == 0 && self.avoid_providers.contains(&inst.provider))
    }

    /// The preference tiers worth trying, strictest first.
    fn tiers(&self) -> &'static [u8] {
        match (self.avoid.is_empty(), self.avoid_providers.is_empty()) {
            (true, true) => &[2],
            (false, true) => &[1, 2],
            (true, false) => &[0, 2],
            (false, false) => &[0, 1, 2],
        }
    }
}

/// Why a selection found nothing, summed over the instances the filter admits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    /// Instances the filter admits.
    pub admitted: u32,
    /// Of those, waiting for capacity someone holds (their limits wake their waiters).
    pub busy: u32,
    /// Of those, breakers open.
    pub down: u32,
    /// Earliest instant our own RPM/TPM budget fits again.
    pub rate_until: Option<Instant>,
    /// Earliest instant a provider-requested cooldown ends, among those worth waiting for
    /// (ending within the instance's `max_delay`).
    pub cool_until: Option<Instant>,
    /// Earliest end of a cooldown longer than the instance's `max_delay`: never waited for,
    /// reported as the Retry-After of the error when nothing else can serve.
    pub cool_beyond: Option<Instant>,
    /// Earliest instant an open breaker admits probes.
    pub down_until: Option<Instant>,
}

impl Blocked {
    /// Count `b`, the block of an instance whose retries wait at most `max_delay`.
    fn add(&mut self, b: Block, max_delay: std::time::Duration, now: Instant) {
        fn earliest(slot: &mut Option<Instant>, t: Instant) {
            *slot = Some(slot.map_or(t, |u| u.min(t)));
        }
        match b {
            Block::Busy => self.busy += 1,
            Block::Rate(t) => earliest(&mut self.rate_until, t),
            // A call never waits longer for a provider's pause than a retry would.
            Block::Cooling(t) if t.saturating_duration_since(now) <= max_delay => earliest(&mut self.cool_until, t),
            Block::Cooling(t) => earliest(&mut self.cool_beyond, t),
            Block::Down(t) => {
                self.down += 1;
                earliest(&mut self.down_until, t)
            }
        }
    }

    /// Whether waiting here could ever help (something is busy, rate-limited or cooling).
    pub fn waitable(&self) -> bool {
        self.busy > 0 || self.rate_until.is_some() || self.cool_until.is_some()
    }
}

/// What a selection produced.
pub enum Pick {
    /// A lease on the instance at `index` of the selector's list.
    Leased {
        /// The lease.
        lease: Lease,
        /// Its instance's index in the selector's list.
        index: usize,
    },
    /// Nothing could take the request now.
    Blocked(Blocked),
}

/// A set of instances, a strategy, and the count of callers waiting at it.
pub struct Selector {
    /// Label for errors and traces (pool name or `group.echelon`).
    pub name: String,
    /// The instances, in stable order.
    pub instances: Vec<Arc<Instance>>,
    scheduler: Scheduler,
    /// Serialises select + lease so that LRU stamps and least-busy counts are exact.
    lock: Mutex<()>,
    waiting: AtomicU32,
    queue_size: u32,
    /// The router's event bus and the 50%/90%/drained watcher of the wait queue.
    events: OnceLock<Arc<EventBus>>,
    queue_watch: QueueWatch,
}

impl Selector {
    /// A selector over `instances` picking by `strategy`, letting at most `queue_size`
    /// callers wait at it.
    pub fn new(name: String, instances: Vec<Arc<Instance>>, strategy: RotationStrategy, queue_size: u32) -> Self {
        Self {
            name,
            instances,
            scheduler: Scheduler::new(strategy),
            lock: Mutex::new(()),
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

    /// Callers waiting at this selector now.
    pub fn queue_len(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    /// How many callers may wait at this selector.
    pub fn queue_size(&self) -> u32 {
        self.queue_size
    }

    /// Take a place in this selector's wait queue, if one is free. The check and the count
    /// are one atomic step, so the bound is exact.
    pub fn enter_queue(self: &Arc<Self>) -> Option<QueueSlot> {
        let size = self.queue_size;
        let len = self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < size).then_some(n + 1)).ok()? + 1;
        self.queue_changed(len);
        Some(QueueSlot { sel: self.clone() })
    }

    /// The index of `inst` in this selector's list.
    pub fn index_of(&self, inst: &Arc<Instance>) -> Option<usize> {
        self.instances.iter().position(|i| Arc::ptr_eq(i, inst))
    }

    /// Lease an instance the filter admits for the caller of `ctx`, or say why none can
    /// serve now. A waiting caller (see [`WaitCtx::start_waiting`]) ends up queued in the line
    /// of every limit that holds back an instance it could use, so the first release among them
    /// wakes it.
    ///
    /// Preferences are dropped one at a time (failed providers first, then failed instances)
    /// only when the preferred instances could never serve (none left, or all down); busy
    /// preferred instances are waited for.
    pub fn try_pick(&self, now: Instant, est_tokens: u64, filter: Filter<'_>, ctx: &mut WaitCtx) -> Pick {
        let _g = self.lock.lock();
        let tiers = filter.tiers();
        for (n, tier) in tiers.iter().enumerate() {
            match self.pick_with(now, est_tokens, filter, *tier, ctx) {
                Pick::Blocked(b) if n + 1 < tiers.len() && !b.waitable() => continue,
                other => return other,
            }
        }
        Pick::Blocked(Blocked::default())
    }

    fn pick_with(&self, now: Instant, est_tokens: u64, filter: Filter<'_>, tier: u8, ctx: &mut WaitCtx) -> Pick {
        let n = self.instances.len();
        // Per-instance verdicts (`None`: can serve; `Some(None)`: not admitted by the filter);
        // on the stack for the usual pool sizes (this runs per request).
        let mut stack = [None::<Option<Block>>; 64];
        let mut heap = Vec::new();
        let verdicts: &mut [Option<Option<Block>>] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap.resize(n, None);
            &mut heap
        };
        let who = ctx.waiter().cloned();
        for (i, (slot, inst)) in verdicts.iter_mut().zip(&self.instances).enumerate() {
            *slot = if !filter.admits(inst) || filter.avoids(tier, i, inst) { Some(None) } else { inst.check(now, est_tokens, who.as_deref()).err().map(Some) };
        }
        // A lease can still be refused if another selector (pool vs echelon) raced us on a
        // shared instance; try the next choice then.
        loop {
            let pick = self.scheduler.select(&self.instances, |i| verdicts[i].is_none());
            let Some(i) = pick else { break };
            match self.instances[i].try_lease(now, est_tokens, ctx) {
                Ok(lease) => return Pick::Leased { lease, index: i },
                Err(b) => verdicts[i] = Some(Some(b)),
            }
        }
        if ctx.is_waiting() {
            // Join the line of every limit holding back an admitted instance. Doing it through
            // `try_lease` makes the look and the queueing one step under each limit's lock: a
            // slot freed since the look above is taken here instead of missed.
            for (i, verdict) in verdicts.iter_mut().enumerate() {
                if let Some(Some(Block::Busy | Block::Rate(_))) = verdict {
                    match self.instances[i].try_lease(now, est_tokens, ctx) {
                        Ok(lease) => return Pick::Leased { lease, index: i },
                        Err(b) => *verdict = Some(Some(b)),
                    }
                }
            }
        }
        let mut blocked = Blocked::default();
        for (v, inst) in verdicts.iter().zip(&self.instances) {
            if let Some(Some(b)) = v {
                blocked.admitted += 1;
                blocked.add(*b, inst.retry.max_delay, now);
            }
        }
        Pick::Blocked(blocked)
    }
}

/// A place in a selector's wait queue; dropping it (served, failed or cancelled) gives the
/// place back, so a cancelled waiter never leaks one.
pub struct QueueSlot {
    sel: Arc<Selector>,
}

impl QueueSlot {
    /// The selector it is a place at.
    pub fn selector(&self) -> &Arc<Selector> {
        &self.sel
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let len = self.sel.waiting.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.sel.queue_changed(len);
    }
}
