//! A cap on requests in flight, with the line of callers waiting for a slot.
//!
//! A limit shared by several processes (the Redis store) keeps the same local rules: its
//! local capacity is the slots this process currently leases from the cluster
//! ([`ConcurrencyLimit::cluster_grant`] and friends), and a caller refused for want of one
//! tells the [`SlotSource`] so it leases more in the background. Waiting stays local: the
//! source's grant wakes this process's waiters like any release does.

use std::sync::{Arc, OnceLock};

use crate::state::sync::Mutex;
use crate::state::wait::{Queue, WaitCtx, WaitList, Waiter};

/// A cap on requests in flight (`limit == 0`: unlimited, in-flight still counted) that owns the
/// queue of callers waiting for a slot.
///
/// One lock covers the count and the line, so "is there room for me, else queue me" is one
/// step: a release can never fall between a caller's look and its queueing. A freed slot goes
/// to the oldest waiter (newcomers queue behind waiters, see [`crate::state::wait`]).
///
/// The same limit is shared by every instance it covers (a model's `max_concurrency` spans
/// groups and pools) and survives reloads through the state store, so its waiters are woken
/// whoever releases.
pub struct ConcurrencyLimit {
    slots: Mutex<Slots>,
    /// Where more capacity comes from when the limit is shared by several processes.
    source: OnceLock<Arc<dyn SlotSource>>,
}

/// Where a shared limit's local capacity comes from (the cluster's slot leases).
///
/// Called with no lock held; implementations must not block (they hand the work to a task).
pub trait SlotSource: Send + Sync {
    /// A caller found no free local slot while the configured limit may still have room
    /// elsewhere in the cluster (or the last free one was just taken): lease more.
    fn demand(&self);
}

struct Slots {
    limit: u32,
    in_flight: u32,
    waiters: WaitList,
    /// `Some`: shared by several processes; this process may hold this many slots now (those
    /// it leases from the cluster, or its share of the limit while the cluster is out of
    /// reach). `None`: the limit is this process's alone.
    cap: Option<u32>,
}

impl Slots {
    fn room(&self) -> u32 {
        if let Some(cap) = self.cap {
            if self.limit != 0 {
                return cap.saturating_sub(self.in_flight);
            }
        }
        if self.limit == 0 {
            u32::MAX
        } else {
            self.limit.saturating_sub(self.in_flight)
        }
    }

    /// Whether a refusal for want of room is one the cluster may be able to lift.
    fn short_locally(&self) -> bool {
        self.cap.is_some() && self.limit != 0 && self.room() == 0
    }

    /// Wake as many of the oldest waiters as there are free slots.
    fn wake_for_room(&self) {
        let room = self.room();
        if room > 0 && !self.waiters.is_empty() {
            self.waiters.wake_oldest(room.min(self.waiters.len() as u32) as usize);
        }
    }
}

impl ConcurrencyLimit {
    /// A limit of `limit` requests in flight (0 = unlimited).
    pub fn new(limit: u32) -> Self {
        Self { slots: Mutex::new(Slots { limit, in_flight: 0, waiters: WaitList::default(), cap: None }), source: OnceLock::new() }
    }

    /// A limit shared with other processes: it starts with no local capacity and asks
    /// `source` for slots whenever a caller finds none.
    pub fn shared(limit: u32, source: Arc<dyn SlotSource>) -> Self {
        let c = Self::new(limit);
        c.slots.lock().cap = Some(0);
        let _ = c.source.set(source);
        c
    }

    fn ask_source(&self, short: bool) {
        if short {
            if let Some(s) = self.source.get() {
                s.demand();
            }
        }
    }

    /// Take a slot for the caller of `ctx` if one is free and nobody older waits for it. A
    /// waiting caller (see [`WaitCtx::start_waiting`]) that is refused is queued.
    pub fn try_acquire(self: &Arc<Self>, ctx: &mut WaitCtx) -> bool {
        let mut s = self.slots.lock();
        let who = ctx.waiter().cloned();
        if s.room() > 0 && s.waiters.may_take(who.as_deref()) {
            s.in_flight += 1;
            if let Some(w) = &who {
                if s.waiters.remove(w.ticket()) {
                    // More slots may still be free for the ones behind.
                    s.wake_for_room();
                }
            }
            // The last local slot went: lease the next ones before anyone has to wait.
            let short = s.short_locally();
            drop(s);
            self.ask_source(short);
            return true;
        }
        let short = s.short_locally();
        if let Some(w) = &who {
            s.waiters.enqueue(w);
            drop(s);
            ctx.joined(self.clone());
        } else {
            drop(s);
        }
        self.ask_source(short);
        false
    }

    /// Whether `who` (`None`: a newcomer) could take a slot now.
    pub fn has_room_for(&self, who: Option<&Waiter>) -> bool {
        let s = self.slots.lock();
        let ok = s.room() > 0 && s.waiters.may_take(who);
        let short = !ok && s.short_locally();
        drop(s);
        self.ask_source(short);
        ok
    }

    /// Give a slot back (never below zero) and wake the oldest waiter.
    pub fn release(&self) {
        let mut s = self.slots.lock();
        match s.in_flight.checked_sub(1) {
            Some(n) => s.in_flight = n,
            None => log::warn!("ConcurrencyLimit::release without a matching acquire (ignored)"),
        }
        s.wake_for_room();
    }

    /// Change the limit (a reload); waiters are woken if it grew.
    pub fn set_limit(&self, limit: u32) {
        let mut s = self.slots.lock();
        s.limit = limit;
        s.wake_for_room();
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.slots.lock().in_flight
    }

    /// 0 = unlimited.
    pub fn limit(&self) -> u32 {
        self.slots.lock().limit
    }

    /// Callers waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.slots.lock().waiters.len()
    }

    /// Whether it is shared with other processes (its local capacity is leased).
    pub fn is_shared(&self) -> bool {
        self.slots.lock().cap.is_some()
    }

    /// A shared limit's view for its source: (local capacity, in flight, waiting).
    pub fn cluster_view(&self) -> (u32, u32, usize) {
        let s = self.slots.lock();
        (s.cap.unwrap_or(0), s.in_flight, s.waiters.len())
    }

    /// The cluster granted `n` more slots to this process: they wake as many waiters.
    pub fn cluster_grant(&self, n: u32) {
        let mut s = self.slots.lock();
        if let Some(cap) = s.cap.as_mut() {
            *cap = cap.saturating_add(n);
            s.wake_for_room();
        }
    }

    /// Hand back up to `max` slots that are neither in use nor wanted by a waiter, keeping
    /// `spare` idle ones; returns how many the caller must give back to the cluster.
    pub fn cluster_trim(&self, max: u32, spare: u32) -> u32 {
        let mut s = self.slots.lock();
        let (Some(cap), true) = (s.cap, s.waiters.is_empty()) else { return 0 };
        let idle = cap.saturating_sub(s.in_flight);
        let n = idle.saturating_sub(spare).min(max);
        s.cap = Some(cap - n);
        n
    }

    /// Set the local capacity outright (the cluster was out of reach: this process's share;
    /// or it came back: what it re-registered). Waiters are woken if it grew.
    pub fn cluster_set(&self, cap: u32) {
        let mut s = self.slots.lock();
        if s.cap.is_some() {
            s.cap = Some(cap);
            s.wake_for_room();
        }
    }
}

impl Queue for ConcurrencyLimit {
    fn leave(&self, ticket: u64) {
        let mut s = self.slots.lock();
        if s.waiters.remove(ticket) {
            s.wake_for_room();
        }
    }
}

#[cfg(all(test, not(echelon_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn take(c: &Arc<ConcurrencyLimit>) -> bool {
        c.try_acquire(&mut WaitCtx::new())
    }

    #[test]
    fn basics_and_unlimited() {
        let c = Arc::new(ConcurrencyLimit::new(2));
        assert!(take(&c) && take(&c));
        assert!(!take(&c));
        assert!(!c.has_room_for(None));
        assert_eq!(c.in_flight(), 2);
        c.release();
        assert!(c.has_room_for(None));
        c.release();
        c.release(); // extra release never goes below zero
        assert_eq!(c.in_flight(), 0);

        let u = Arc::new(ConcurrencyLimit::new(0));
        for _ in 0..1000 {
            assert!(take(&u));
        }
        assert!(u.has_room_for(None));
        assert_eq!(u.in_flight(), 1000, "unlimited still counts");
    }

    #[test]
    fn a_release_wakes_the_oldest_waiter_and_newcomers_queue_behind_it() {
        let c = Arc::new(ConcurrencyLimit::new(1));
        assert!(take(&c));
        let mut first = WaitCtx::new();
        first.start_waiting();
        let mut second = WaitCtx::new();
        second.start_waiting();
        assert!(!c.try_acquire(&mut second));
        assert!(!c.try_acquire(&mut first), "first (older ticket) queues in front of second");
        assert_eq!(c.waiting(), 2);
        c.release();
        let (w1, w2) = (first.waiter().unwrap().clone(), second.waiter().unwrap().clone());
        assert!(w1.is_woken() && !w2.is_woken(), "only the oldest is woken for one slot");
        assert!(!take(&c), "a newcomer may not take the slot held for the waiter");
        assert!(!c.try_acquire(&mut second), "nor may the younger waiter");
        assert!(c.try_acquire(&mut first));
        assert_eq!((c.in_flight(), c.waiting()), (1, 1));
        drop(first);
        c.release();
        assert!(w2.is_woken());
        assert!(c.try_acquire(&mut second));
    }

    #[test]
    fn a_woken_waiter_that_leaves_passes_the_slot_on() {
        let c = Arc::new(ConcurrencyLimit::new(1));
        assert!(take(&c));
        let mut a = WaitCtx::new();
        a.start_waiting();
        let mut b = WaitCtx::new();
        b.start_waiting();
        assert!(!c.try_acquire(&mut a) && !c.try_acquire(&mut b));
        c.release();
        let wb = b.waiter().unwrap().clone();
        assert!(!wb.is_woken());
        drop(a); // served elsewhere, gave up, or cancelled
        assert!(wb.is_woken(), "the wake-up a turned down went to b");
        assert!(c.try_acquire(&mut b));
    }

    #[test]
    fn raising_the_limit_wakes_as_many_as_it_frees() {
        let c = Arc::new(ConcurrencyLimit::new(1));
        assert!(take(&c));
        let mut ctxs: Vec<WaitCtx> = (0..3).map(|_| WaitCtx::new()).collect();
        for ctx in &mut ctxs {
            ctx.start_waiting();
            assert!(!c.try_acquire(ctx));
        }
        c.set_limit(3);
        let woken: Vec<bool> = ctxs.iter().map(|x| x.waiter().unwrap().is_woken()).collect();
        assert_eq!(woken, [true, true, false]);
    }

    #[test]
    fn never_exceeded_under_threads() {
        let limit = 5;
        let c = Arc::new(ConcurrencyLimit::new(limit));
        let observed_max = Arc::new(AtomicU32::new(0));
        let holders = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (c, observed_max, holders) = (c.clone(), observed_max.clone(), holders.clone());
                std::thread::spawn(move || {
                    let mut got = 0u32;
                    for _ in 0..10_000 {
                        if take(&c) {
                            got += 1;
                            let h = holders.fetch_add(1, Ordering::SeqCst) + 1;
                            observed_max.fetch_max(h, Ordering::SeqCst);
                            assert!(c.in_flight() <= limit);
                            holders.fetch_sub(1, Ordering::SeqCst);
                            c.release();
                        }
                    }
                    got
                })
            })
            .collect();
        let total: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(total > 0);
        let m = observed_max.load(Ordering::SeqCst);
        assert!(m <= limit, "saw {m} holders with limit {limit}");
        assert_eq!(c.in_flight(), 0);
    }
}
