//! A concurrency limit shared by every process: the cluster holds who leases how many slots;
//! each process hands its leased slots out locally ([`ConcurrencyLimit`] with a local
//! capacity), so a request that finds a leased slot free never waits on Redis.
//!
//! - **Lease ahead.** When a caller finds no local slot, or takes the last one, the lease task
//!   asks the cluster for the waiting callers plus a few spare (a quarter of those in flight),
//!   never more than the limit allows cluster-wide.
//! - **Hand back idle slots.** Every tick (100 ms) slots idle beyond the spare are given back;
//!   when another process is short (it published so), all idle slots are.
//! - **Bounded leases.** A process's slots are one sorted-set member scored with its lease
//!   expiry, renewed by the heartbeat; a process killed with SIGKILL stops renewing, and its
//!   slots return when the next acquisition purges the expired member, within `lease_time`.
//! - **Out of reach.** The local capacity becomes this process's share of the limit; when the
//!   server is back the slots in flight are registered again (even past the limit: those
//!   requests are running) and leasing resumes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::link::Link;
use super::scripts;
use crate::state::limit::{ConcurrencyLimit, SlotSource};

/// How long a process waits before asking again for slots the cluster had none of (a
/// `freed` message from a holder usually comes first).
const RETRY: Duration = Duration::from_millis(250);

/// The cluster side of one shared concurrency limit.
pub struct SlotLease {
    link: Arc<Link>,
    limit: Weak<ConcurrencyLimit>,
    /// The configured (cluster-wide) limit.
    max: u32,
    keys: [String; 3],
    /// A lease request is in flight.
    leasing: AtomicBool,
    /// Another process said it is short of slots (millis of the link's clock, 0: not).
    contended_until: AtomicU64,
    /// This process was refused slots: retry on a `freed` message or after [`RETRY`].
    starved: AtomicBool,
    /// When it was last refused (millis since `epoch`): callers that find no slot meanwhile
    /// do not ask again.
    refused_at: AtomicU64,
    /// Slots the cluster counts for this process (after a resync it can exceed the local
    /// capacity: the excess goes back as those requests end).
    registered: parking_lot::Mutex<u32>,
    me: Weak<SlotLease>,
    epoch: Instant,
}

impl SlotLease {
    /// The shared limit `name` of `max` slots, with its cluster lease.
    pub fn limit(link: &Arc<Link>, name: &str, max: u32) -> (Arc<ConcurrencyLimit>, Arc<SlotLease>) {
        let base = link.key("c", name);
        let keys = [format!("{base}:z"), format!("{base}:h"), format!("{base}:w")];
        let mut lease = None;
        let limit = Arc::new_cyclic(|weak: &Weak<ConcurrencyLimit>| {
            let l = Arc::new_cyclic(|me| SlotLease {
                link: link.clone(),
                limit: weak.clone(),
                max,
                keys,
                leasing: AtomicBool::new(false),
                contended_until: AtomicU64::new(0),
                starved: AtomicBool::new(false),
                refused_at: AtomicU64::new(0),
                registered: parking_lot::Mutex::new(0),
                me: me.clone(),
                epoch: Instant::now(),
            });
            lease = Some(l.clone());
            ConcurrencyLimit::shared(max, l)
        });
        let lease = lease.expect("built above");
        if link.is_known() && !link.is_up() {
            limit.cluster_set(lease.share());
        }
        (limit, lease)
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// This process's share of the limit while the cluster is out of reach.
    pub fn share(&self) -> u32 {
        ((self.max as f64 * self.link.local_share()).floor() as u32).max(1)
    }

    fn msg(&self, kind: char) -> String {
        format!("{kind}|{}|{}", self.link.proc_id, self.keys[0])
    }

    /// Whether `msg` (a `w`/`f` message's key) is about this limit.
    pub fn is_key(&self, zkey: &str) -> bool {
        self.keys[0] == zkey
    }

    /// Another process is short of slots: hand back idle ones at the next tick.
    pub fn on_wanted(&self) {
        self.contended_until.store(self.millis() + 2 * RETRY.as_millis() as u64 + 100, Ordering::Relaxed);
    }

    /// A holder gave slots back: try again if this process is short.
    pub fn on_freed(&self) {
        if self.starved.load(Ordering::Relaxed) {
            self.ask();
        }
    }

    /// Lease more now (one request at a time).
    fn ask(&self) {
        if !self.link.is_up() || self.leasing.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.me.upgrade() {
            Some(me) => me.spawn_lease(),
            None => self.leasing.store(false, Ordering::Release),
        }
    }

    fn spawn_lease(self: Arc<Self>) {
        let rt = self.link.rt.clone();
        rt.spawn(async move { self.lease_once().await });
    }

    async fn lease_once(self: Arc<Self>) {
        let Some(limit) = self.limit.upgrade() else { return };
        if !self.link.is_up() {
            self.leasing.store(false, Ordering::Release);
            return;
        }
        let (cap, in_flight, waiting) = limit.cluster_view();
        let want = (waiting as u32 + 1 + in_flight / 4).min(self.max.saturating_sub(cap));
        if want == 0 {
            self.leasing.store(false, Ordering::Release);
            return;
        }
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]).key(&self.keys[2]);
        inv.arg(&self.link.proc_id).arg(want).arg(self.max).arg(self.link.cfg.lease_time.as_millis() as u64).arg("0");
        inv.arg(&self.link.channel).arg(self.msg('w'));
        let res: Result<(u32, u32), _> = self.link.run(&inv).await;
        self.leasing.store(false, Ordering::Release);
        match res {
            Ok((granted, _total)) => {
                if granted > 0 && self.link.is_up() {
                    *self.registered.lock() += granted;
                    limit.cluster_grant(granted);
                }
                let short = granted < want && limit.cluster_view().2 > 0;
                self.starved.store(short, Ordering::Relaxed);
                if short {
                    self.refused_at.store(self.millis(), Ordering::Relaxed);
                    // Holders were told; ask again after a while in case no `freed` comes.
                    let me = self.clone();
                    self.link.rt.spawn(async move {
                        tokio::time::sleep(RETRY).await;
                        if me.starved.load(Ordering::Relaxed) {
                            me.ask();
                        }
                    });
                }
            }
            Err(_) => {
                // The link is down now; the store set the local share and woke the waiters.
            }
        }
    }

    /// The periodic tick: give idle slots back (all of them when someone is short).
    pub async fn trim(&self) {
        let Some(limit) = self.limit.upgrade() else { return };
        if !self.link.is_up() || self.leasing.load(Ordering::Acquire) {
            return;
        }
        let (cap, _, _) = limit.cluster_view();
        let contended = self.contended_until.load(Ordering::Relaxed) > self.millis();
        let spare = if contended { 0 } else { (limit.in_flight() / 4).max(1) };
        limit.cluster_trim(cap, spare);
        // Whatever the cluster counts beyond what is kept (the capacity, or more requests in
        // flight than that after a resync) goes back.
        let (cap, in_flight, _) = limit.cluster_view();
        let n = {
            let mut reg = self.registered.lock();
            let n = reg.saturating_sub(cap.max(in_flight));
            *reg -= n;
            n
        };
        if n > 0 {
            self.release(n).await;
        }
    }

    async fn release(&self, n: u32) {
        let mut inv = scripts::RELEASE.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]).key(&self.keys[2]);
        inv.arg(&self.link.proc_id).arg(n).arg(&self.link.channel).arg(self.msg('f'));
        let _: Result<i64, _> = self.link.run(&inv).await;
    }

    /// Extend this process's lease (the heartbeat); re-register if the cluster lost it.
    pub async fn renew(&self) {
        let Some(limit) = self.limit.upgrade() else { return };
        let (cap, in_flight, _) = limit.cluster_view();
        if cap == 0 && in_flight == 0 {
            return;
        }
        let mut inv = scripts::RENEW.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]).arg(&self.link.proc_id).arg(self.link.cfg.lease_time.as_millis() as u64);
        if let Ok(-1) = self.link.run::<i64>(&inv).await {
            log::warn!("redis state: the slot lease of {} had expired; registering the {in_flight} requests in flight again", self.keys[0]);
            self.resync().await;
        }
    }

    /// After a reconnection: register exactly the slots in flight here (the cluster may have
    /// lost or expired them), make that the local capacity, and lease more if callers wait.
    pub async fn resync(&self) {
        let Some(limit) = self.limit.upgrade() else { return };
        let (_, in_flight, waiting) = limit.cluster_view();
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]).key(&self.keys[2]);
        inv.arg(&self.link.proc_id).arg(in_flight).arg(self.max).arg(self.link.cfg.lease_time.as_millis() as u64).arg("1");
        inv.arg(&self.link.channel).arg(self.msg('w'));
        if let Ok((_, total)) = self.link.run::<(u32, u32)>(&inv).await {
            // The requests in flight are registered whatever the limit (they are running);
            // the local capacity is only what the limit leaves beside the others' slots.
            let others = total.saturating_sub(in_flight);
            *self.registered.lock() = in_flight;
            limit.cluster_set(in_flight.min(self.max.saturating_sub(others)));
        }
        let _ = waiting;
    }

    /// The cluster is in use again: lease for whoever waits.
    pub fn back_up(&self) {
        if let Some(limit) = self.limit.upgrade() {
            if limit.cluster_view().2 > 0 {
                self.starved.store(false, Ordering::Relaxed);
                self.ask();
            }
        }
    }

    /// The cluster went out of reach: use this process's share.
    pub fn go_local(&self) {
        if let Some(limit) = self.limit.upgrade() {
            limit.cluster_set(self.share());
        }
    }

    /// Dropped from the store (a reload removed it): give every leased slot back.
    pub fn close(&self) {
        let n = std::mem::take(&mut *self.registered.lock());
        if n == 0 || !self.link.is_up() {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        self.link.rt.spawn(async move { me.release(n).await });
    }
}

impl SlotSource for SlotLease {
    fn demand(&self) {
        // Refused a moment ago: the retry timer or a `freed` message asks again.
        if self.starved.load(Ordering::Relaxed) && self.millis().saturating_sub(self.refused_at.load(Ordering::Relaxed)) < RETRY.as_millis() as u64 {
            return;
        }
        self.ask();
    }
}
