//! A rate budget (RPM, TPM, a pool's rate) shared by every process: the authoritative budget
//! is in Redis, and each process leases *slices* of it, spends them from local state, and
//! refills ahead of need, so a request within budget never waits on Redis.
//!
//! Why this keeps the aggregate within the limit: a slice granted at server time `a` may be
//! spent only until `a + V` (its validity, a few seconds) and counts in the cluster's window
//! until `a + V + W` (W the window), or until its last spend + W once it is settled. Any window
//! the provider sees holds units of slices that were all alive in the cluster's account when
//! the latest of them was granted, so they sum to at most the limit. Unspent units go back when
//! the slice is settled (it expired, or the next lease carries it).
//!
//! TPM estimates are corrected locally first (a correction lands in a slice still valid);
//! what remains is flushed in batches every 100 ms ([`scripts::ADJUST`]).
//!
//! While the server is out of reach, the limiter is a local one of this process's share of
//! the limit. When it is back, what that local limiter let through is added to the cluster's
//! window, and, if the server lost its data (restarted empty), so is what this process spent
//! from its slices in the window.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::link::Link;
use super::scripts;
use crate::state::limit::{RateLimiter, RateStatus, RateWaker, SlidingWindow, TokenBucket};
use crate::state::store::RateSpec;

/// How soon a caller looks again while the shared budget is being fetched (the answer
/// also wakes it): short enough that no deadline is given up on for it.
const LOOK_AGAIN: Duration = Duration::from_millis(20);

/// How long after the last one a batch of TPM corrections is flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How far ahead a slice is sized from recent demand.
const HORIZON: f64 = 0.5;

struct Slice {
    id: u64,
    left: u64,
    spent: u64,
    /// Leased at (local send time: never later than the server's grant).
    issued: Instant,
    /// May be spent until then.
    until: Instant,
    last_spend: Option<Instant>,
}

/// What a finished slice spent, kept one window for a resync after the server lost its data.
struct Spent {
    last: Instant,
    units: u64,
}

#[derive(Default)]
struct State {
    slices: VecDeque<Slice>,
    refilling: bool,
    /// The cluster said nothing more fits before then.
    blocked_until: Option<Instant>,
    /// Slices to settle with the next lease: (id, unused, ms since last spent or -1).
    settles: Vec<(u64, u64, i64)>,
    ledger: VecDeque<Spent>,
    /// TPM corrections not flushed yet.
    pending: i64,
    flushing: bool,
    /// While the server is out of reach: this process's share of the limit.
    fallback: Option<Arc<dyn RateLimiter>>,
    /// Units asked for recently, for sizing slices: (bucket start, units this bucket, rate).
    demand_at: Option<Instant>,
    demand_units: u64,
    rate: f64,
    /// Units in use cluster-wide at the last exchange.
    cluster_used: u64,
}

/// One shared rate budget (a [`RateLimiter`] behind the usual [`crate::state::limit::RateGate`]).
pub struct SharedRate {
    link: Arc<Link>,
    spec: RateSpec,
    keys: [String; 2],
    st: Mutex<State>,
    waker: OnceLock<RateWaker>,
    me: Weak<SharedRate>,
}

impl SharedRate {
    /// The shared budget `name` of `spec`.
    pub fn new(link: &Arc<Link>, name: &str, spec: RateSpec) -> Arc<SharedRate> {
        let base = link.key("r", name);
        Arc::new_cyclic(|me| SharedRate {
            link: link.clone(),
            spec,
            keys: [format!("{base}:z"), format!("{base}:h")],
            st: Mutex::new(State::default()),
            waker: OnceLock::new(),
            me: me.clone(),
        })
    }

    fn limit(&self) -> u64 {
        match self.spec {
            RateSpec::Window { limit, .. } => limit,
            RateSpec::Bucket { bucket_size, .. } => bucket_size as u64,
        }
    }

    /// The window a spent unit counts in (a bucket: none).
    fn window(&self) -> Duration {
        match self.spec {
            RateSpec::Window { window, .. } => window,
            RateSpec::Bucket { .. } => Duration::ZERO,
        }
    }

    /// How long a slice may be spent: a twentieth of the window, 0.2–3 s.
    fn validity(&self) -> Duration {
        match self.spec {
            RateSpec::Window { window, .. } => (window / 20).clamp(Duration::from_millis(200), Duration::from_secs(3)),
            RateSpec::Bucket { .. } => Duration::from_secs(1),
        }
    }

    fn kind_args(&self) -> (&'static str, String) {
        match self.spec {
            RateSpec::Window { window, .. } => ("w", (window.as_millis() as u64).to_string()),
            RateSpec::Bucket { refill_rate, .. } => ("b", if refill_rate.is_finite() && refill_rate > 0.0 { refill_rate.to_string() } else { "0".into() }),
        }
    }

    /// This process's own limiter while the server is out of reach.
    fn local_limiter(&self) -> Arc<dyn RateLimiter> {
        let share = self.link.local_share();
        match self.spec {
            RateSpec::Window { limit, window } => Arc::new(SlidingWindow::new(((limit as f64 * share).floor() as u64).max(1), window)),
            RateSpec::Bucket { bucket_size, refill_rate } => {
                Arc::new(TokenBucket::new(((bucket_size as f64 * share).floor() as u32).max(1), refill_rate * share))
            }
        }
    }

    /// Slice size for a need of `need` units: recent demand over [`HORIZON`], at least the
    /// need, at most an eighth of the limit (so slices held elsewhere never strand much).
    fn chunk(&self, st: &State, need: u64) -> u64 {
        let cap = (self.limit() / 8).max(1);
        // Before demand is measured, a sixty-fourth of the limit (a first burst then costs a
        // handful of leases, not one per request).
        let by_demand = if st.rate > 0.0 { (st.rate * HORIZON).ceil() as u64 } else { self.limit() / 64 };
        by_demand.clamp(1, cap).max(need)
    }

    fn note_demand(st: &mut State, units: u64, now: Instant) {
        match st.demand_at {
            Some(t) if now.saturating_duration_since(t) < Duration::from_millis(100) => st.demand_units += units,
            Some(t) => {
                let dt = now.saturating_duration_since(t).as_secs_f64().max(0.1);
                let r = st.demand_units as f64 / dt;
                st.rate = if st.rate == 0.0 { r } else { 0.5 * st.rate + 0.5 * r };
                st.demand_at = Some(now);
                st.demand_units = units;
            }
            None => {
                st.demand_at = Some(now);
                st.demand_units = units;
            }
        }
    }

    /// Drop slices whose time is up, to be settled with the next exchange.
    fn expire(&self, st: &mut State, now: Instant) {
        while st.slices.front().is_some_and(|s| s.until <= now) {
            let s = st.slices.pop_front().expect("checked");
            self.retire(st, s, now);
        }
    }

    fn retire(&self, st: &mut State, s: Slice, now: Instant) {
        let age = s.last_spend.map_or(-1, |t| now.saturating_duration_since(t).as_millis() as i64);
        st.settles.push((s.id, s.left, age));
        if s.spent > 0 {
            st.ledger.push_back(Spent { last: s.last_spend.unwrap_or(s.issued), units: s.spent });
        }
        let w = self.window();
        while st.ledger.front().is_some_and(|x| x.last + w <= now) {
            st.ledger.pop_front();
        }
    }

    fn available(st: &State) -> u64 {
        st.slices.iter().map(|s| s.left).sum()
    }

    /// Decide for `cost` at `now`; takes it when `take`. Starts a refill when the slices run
    /// low or short.
    fn decide(&self, cost: u64, now: Instant, take: bool) -> Result<(), Duration> {
        if cost == 0 {
            return Ok(());
        }
        let mut st = self.st.lock();
        if !self.link.is_known() {
            // The first connection attempt is under way (bounded by connect_timeout): its
            // outcome wakes the line. The wait reported is a look-again time, not when the
            // budget fits (which is unknown): it must be short, or a caller whose deadline is
            // nearer than connect_timeout would give up on a budget that may be there at once.
            return Err(LOOK_AGAIN.min(self.link.cfg.connect_timeout));
        }
        if !self.link.is_up() {
            let f = st.fallback.get_or_insert_with(|| self.local_limiter()).clone();
            drop(st);
            return if take { f.try_acquire(cost, now) } else { f.check(cost, now) };
        }
        self.expire(&mut st, now);
        let avail = Self::available(&st);
        if take {
            Self::note_demand(&mut st, cost, now);
        }
        if avail >= cost {
            if take {
                let mut rest = cost;
                for s in st.slices.iter_mut() {
                    let t = s.left.min(rest);
                    if t > 0 {
                        s.left -= t;
                        s.spent += t;
                        s.last_spend = Some(now);
                        rest -= t;
                    }
                    if rest == 0 {
                        break;
                    }
                }
                let chunk = self.chunk(&st, 1);
                if (avail - cost) * 5 < chunk {
                    self.refill(&mut st, 1, now);
                }
            }
            return Ok(());
        }
        if let Some(t) = st.blocked_until.filter(|t| *t > now) {
            return Err(t - now);
        }
        self.refill(&mut st, cost - avail, now);
        // Likewise a look-again time: the lease's answer (within `timeout`) wakes the line.
        Err(LOOK_AGAIN.min(self.link.cfg.timeout))
    }

    /// Lease a slice of at least `need` units in the background (one lease at a time).
    fn refill(&self, st: &mut State, need: u64, now: Instant) {
        if st.refilling || st.blocked_until.is_some_and(|t| t > now) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        st.refilling = true;
        let want = self.chunk(st, need);
        let settles = std::mem::take(&mut st.settles);
        self.link.rt.spawn(async move { me.lease(need, want, settles).await });
    }

    async fn lease(self: Arc<Self>, need: u64, want: u64, settles: Vec<(u64, u64, i64)>) {
        let sent = Instant::now();
        let (kind, per) = self.kind_args();
        let valid = self.validity();
        let mut inv = scripts::TAKE.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]);
        inv.arg(kind).arg(self.limit()).arg(&per).arg(want).arg(need).arg(valid.as_millis() as u64);
        for (id, unused, age) in &settles {
            inv.arg(*id).arg(*unused).arg(*age);
        }
        let res: Result<(u64, u64, u64, u64), _> = self.link.run(&inv).await;
        {
            let mut st = self.st.lock();
            st.refilling = false;
            match res {
                Ok((granted, id, wait_ms, used)) => {
                    st.cluster_used = used;
                    if granted > 0 {
                        st.blocked_until = None;
                        st.slices.push_back(Slice { id, left: granted, spent: 0, issued: sent, until: sent + valid, last_spend: None });
                    } else if wait_ms > 0 {
                        st.blocked_until = Some(sent + Duration::from_millis(wait_ms));
                    }
                }
                Err(_) => {
                    // Down now: settles are lost with the connection (their grants expire on
                    // their own); the fallback takes over at the next look.
                }
            }
        }
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.get() {
            w();
        }
    }

    fn schedule_flush(&self, st: &mut State) {
        if st.flushing {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        st.flushing = true;
        self.link.rt.spawn(async move {
            tokio::time::sleep(FLUSH_EVERY).await;
            me.flush().await;
        });
    }

    /// Send the batched corrections (and settle finished slices when nothing else will).
    pub async fn flush(&self) {
        let (delta, settles) = {
            let mut st = self.st.lock();
            st.flushing = false;
            if !self.link.is_up() {
                return;
            }
            let now = Instant::now();
            self.expire(&mut st, now);
            let settles = if st.refilling { Vec::new() } else { std::mem::take(&mut st.settles) };
            (std::mem::take(&mut st.pending), settles)
        };
        if delta != 0 {
            self.adjust_cluster(delta).await;
        }
        if !settles.is_empty() {
            let (kind, per) = self.kind_args();
            let mut inv = scripts::TAKE.prepare_invoke();
            inv.key(&self.keys[0]).key(&self.keys[1]);
            inv.arg(kind).arg(self.limit()).arg(&per).arg(0u64).arg(0u64).arg(self.validity().as_millis() as u64);
            for (id, unused, age) in &settles {
                inv.arg(*id).arg(*unused).arg(*age);
            }
            let _: Result<(u64, u64, u64, u64), _> = self.link.run(&inv).await;
            self.wake();
        }
    }

    async fn adjust_cluster(&self, delta: i64) {
        let (kind, per) = self.kind_args();
        let mut inv = scripts::ADJUST.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]).arg(kind).arg(self.limit()).arg(&per).arg(delta);
        let _: Result<i64, _> = self.link.run(&inv).await;
    }

    /// The periodic tick: settle expired slices when no lease will carry them soon.
    pub async fn tick(&self) {
        let due = {
            let mut st = self.st.lock();
            self.expire(&mut st, Instant::now());
            !st.settles.is_empty() && !st.refilling && !st.flushing
        };
        if due {
            self.flush().await;
        }
    }

    /// The server went out of reach: waiters look again (and find the local share).
    pub fn go_local(&self) {
        self.wake();
    }

    /// The server is back: hand the cluster what this process let through on its own, and,
    /// when the server lost its data (`lost`), what it spent from its slices in the window.
    pub async fn resync(&self, lost: bool) {
        let (absorb, now) = {
            let mut st = self.st.lock();
            let now = Instant::now();
            let mut absorb = 0u64;
            if let Some(f) = st.fallback.clone() {
                // What the local limiter holds as used: the window's units, or what a bucket
                // has not refilled yet.
                let s = f.status(now);
                absorb += s.limit.saturating_sub(s.remaining);
            }
            if lost {
                let slices: Vec<Slice> = st.slices.drain(..).collect();
                for s in slices {
                    self.retire(&mut st, s, now);
                }
                st.settles.clear();
                absorb += st.ledger.iter().map(|x| x.units).sum::<u64>();
            }
            st.blocked_until = None;
            (absorb, now)
        };
        let _ = now;
        if absorb > 0 {
            self.adjust_cluster(absorb.min(i64::MAX as u64) as i64).await;
        }
        self.wake();
    }

    /// The cluster is in use again: the local limiter goes (its usage was handed over by
    /// [`SharedRate::resync`]), waiters look again.
    pub fn back_up(&self) {
        self.st.lock().fallback = None;
        self.wake();
    }

    /// Dropped from the store: give unspent units back.
    pub fn close(&self) {
        let mut st = self.st.lock();
        let now = Instant::now();
        let slices: Vec<Slice> = st.slices.drain(..).collect();
        for s in slices {
            self.retire(&mut st, s, now);
        }
        if !st.settles.is_empty() {
            self.schedule_flush(&mut st);
        }
    }
}

impl RateLimiter for SharedRate {
    fn try_acquire(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        self.decide(cost, now, true)
    }

    fn check(&self, cost: u64, now: Instant) -> Result<(), Duration> {
        self.decide(cost, now, false)
    }

    /// Positive: spent from the slices still valid, the rest flushed to the cluster. Negative:
    /// back into the newest valid slice as far as it spent, the rest flushed.
    fn adjust(&self, delta: i64, now: Instant) {
        if delta == 0 {
            return;
        }
        let mut st = self.st.lock();
        if let Some(f) = st.fallback.clone() {
            drop(st);
            f.adjust(delta, now);
            return;
        }
        self.expire(&mut st, now);
        let mut rest = delta.unsigned_abs();
        if delta > 0 {
            for s in st.slices.iter_mut() {
                let t = s.left.min(rest);
                s.left -= t;
                s.spent += t;
                rest -= t;
                if rest == 0 {
                    break;
                }
            }
            if rest > 0 {
                st.pending = st.pending.saturating_add(rest as i64);
            }
        } else {
            for s in st.slices.iter_mut().rev() {
                let t = s.spent.min(rest);
                s.spent -= t;
                s.left += t;
                rest -= t;
                if rest == 0 {
                    break;
                }
            }
            if rest > 0 {
                st.pending = st.pending.saturating_sub(rest as i64);
            }
        }
        if st.pending != 0 {
            self.schedule_flush(&mut st);
        }
    }

    fn status(&self, now: Instant) -> RateStatus {
        let st = self.st.lock();
        if let Some(f) = &st.fallback {
            return f.status(now);
        }
        let local: u64 = st.slices.iter().filter(|s| s.until > now).map(|s| s.left).sum();
        let (algorithm, period) = match self.spec {
            RateSpec::Window { window, .. } => ("sliding_window", window),
            RateSpec::Bucket { refill_rate, .. } => (
                "token_bucket",
                if refill_rate.is_finite() && refill_rate > 0.0 {
                    Duration::try_from_secs_f64(1.0 / refill_rate).unwrap_or(crate::state::limit::MAX_WAIT)
                } else {
                    crate::state::limit::MAX_WAIT
                },
            ),
        };
        RateStatus { algorithm, limit: self.limit(), remaining: self.limit().saturating_sub(st.cluster_used) + local, period }
    }

    fn set_waker(&self, wake: RateWaker) {
        let _ = self.waker.set(wake);
    }
}
