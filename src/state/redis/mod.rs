//! The Redis (or Valkey) state store: breakers, rate and concurrency budgets and cooldowns
//! shared by every process that uses the same server and `key_prefix`, behind the same
//! [`StateStore`] seam as the in-memory store.
//!
//! # What is shared, and how
//!
//! | state | in Redis | in each process |
//! |---|---|---|
//! | RPM/TPM (instance, model), pool rates | the budget: grants per window, or a bucket | slices leased ahead of need ([`rate`]) |
//! | concurrency limits | who leases how many slots, with an expiry ([`slots`]) | the leased slots, handed out locally |
//! | breakers | phase, period, open-until, half-open probe slots ([`breaker`]) | the breaker, deciding locally, mirroring the cluster |
//! | cooldowns (429, Retry-After) | a key with the cooldown as its TTL | the cooldown |
//! | process registry | one member per process, renewed by its heartbeat | how many processes are alive |
//!
//! Health statuses are read from the shared breakers; statistics (counts, latency) and the
//! `degraded` error ratio stay per process, so nothing on the request path waits for an
//! aggregate. Every limit keeps its own local wait queue (see `crate::state::store`).
//!
//! # Cost on the request path
//!
//! None for a request within budget: slices and slots are leased in the background, before
//! they run out. Redis sees one script call per slice (sized from the last half second of
//! demand, at most an eighth of the limit) and per block of slots, batched TPM corrections
//! every 100 ms, one heartbeat per process every `lease_time / 3`, and a backstop read of
//! each breaker and cooldown every second.
//!
//! # Faults
//!
//! Redis down at start or mid-run, slow (no answer within `timeout`), or restarted empty: the
//! link goes down on the first failed or late command; each limit becomes a local one of the
//! process's share (`local_share`, or 1 / the processes last seen alive), breakers decide
//! alone, an event (`state_backend`, `"down"`) and a warning are emitted, and the supervisor
//! reconnects with backoff (0.1 s doubling to 5 s, jittered). Once back: slots in flight are
//! registered again, what the local limiters let through is added to the cluster's windows
//! (with what this process spent in the window, when the server lost its data), breakers and
//! cooldowns are read and re-published, then `"up"`. Calls never wait on Redis itself: a
//! caller short of budget waits in its limit's local line, and the refill that wakes it is
//! bounded by `timeout` (failing over to the local share).
//!
//! # Client
//!
//! The `redis` crate (1.x) with its tokio multiplexed connection and `Script` (EVALSHA, loaded
//! again on NOSCRIPT), plus a separate pub/sub connection. Its `ConnectionManager` is not
//! used: it reconnects inside a command, and the store needs the outage as a state of its own
//! (local shares meanwhile, a resync afterwards), so the supervisor here owns reconnection.
//! `fred` offers the same and more, but its last release is from February 2025.

mod breaker;
mod link;
mod rate;
pub mod scripts;
mod slots;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::config::{BreakerConfig, HealthCheckConfig, StateConfig};
use crate::observe::events::EventBus;
use crate::state::breaker::Breaker;
use crate::state::health::Health;
use crate::state::limit::{ConcurrencyLimit, RateGate};
use crate::state::stats::InstanceStats;
use crate::state::store::{RateSpec, StateStore};

use self::breaker::{BreakerSync, CooldownSync, Message};
pub use self::link::{Link, LinkError};
use self::rate::SharedRate;
use self::slots::SlotLease;

/// How often idle slots are handed back and finished slices settled.
const TICK: Duration = Duration::from_millis(100);
/// How often breakers and cooldowns are read back from Redis (the backstop for a missed
/// message).
const POLL: Duration = Duration::from_secs(1);

/// Whether `url` is one the client accepts (checked when the config is read).
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        let pw = url_password(url).map(crate::secret::Secret::new).unwrap_or_default();
        format!("not a valid Redis URL: {}", crate::secret::redact(&e.to_string(), &[&pw]))
    })
}

/// The password part of `scheme://user:password@host…`, if any.
pub(crate) fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let pw = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (!pw.is_empty()).then(|| pw.to_string())
}

struct Entry<T: ?Sized, S> {
    settings: S,
    value: Arc<T>,
}

#[derive(Default)]
struct Maps {
    breakers: HashMap<String, (Entry<Breaker, BreakerConfig>, Arc<BreakerSync>)>,
    health: HashMap<String, Entry<Health, HealthCheckConfig>>,
    concurrency: HashMap<String, (Arc<ConcurrencyLimit>, Option<Arc<SlotLease>>)>,
    rates: HashMap<String, (Entry<RateGate, RateSpec>, Arc<SharedRate>)>,
    stats: HashMap<String, (Arc<InstanceStats>, Arc<CooldownSync>)>,
}

struct Shared {
    link: Arc<Link>,
    maps: Mutex<Maps>,
}

impl Shared {
    fn breakers(&self) -> Vec<Arc<BreakerSync>> {
        self.maps.lock().breakers.values().map(|(_, s)| s.clone()).collect()
    }
    fn cooldowns(&self) -> Vec<Arc<CooldownSync>> {
        self.maps.lock().stats.values().map(|(_, s)| s.clone()).collect()
    }
    fn slot_leases(&self) -> Vec<Arc<SlotLease>> {
        self.maps.lock().concurrency.values().filter_map(|(_, s)| s.clone()).collect()
    }
    fn rates(&self) -> Vec<Arc<SharedRate>> {
        self.maps.lock().rates.values().map(|(_, s)| s.clone()).collect()
    }

    /// The server went out of reach: every limit to its local share, every waiter looks again.
    fn go_local(&self) {
        for s in self.slot_leases() {
            s.go_local();
        }
        for r in self.rates() {
            r.go_local();
        }
        for (b, _) in self.maps.lock().breakers.values() {
            b.value.nudge();
        }
    }

    /// The server is back but not in use yet: hand it what it must know (while each limit
    /// still runs on its local share), read what it knows.
    async fn resync(&self, lost: bool) {
        let slots = self.slot_leases();
        let rates = self.rates();
        let breakers = self.breakers();
        let cools = self.cooldowns();
        let a = futures_util::future::join_all(slots.iter().map(|s| s.resync()));
        let b = futures_util::future::join_all(rates.iter().map(|r| r.resync(lost)));
        let c = futures_util::future::join_all(breakers.into_iter().map(|s| s.sync()));
        let d = futures_util::future::join_all(cools.iter().map(|s| s.sync()));
        tokio::join!(a, b, c, d);
    }

    /// The server is in use again: limits drop their local share and lease, waiters look again.
    fn back_up(&self) {
        for s in self.slot_leases() {
            s.back_up();
        }
        for r in self.rates() {
            r.back_up();
        }
        for (b, _) in self.maps.lock().breakers.values() {
            b.value.nudge();
        }
    }

    fn dispatch(&self, payload: &str) {
        let Some(msg) = breaker::parse(payload, &self.link.proc_id) else { return };
        match msg {
            Message::Breaker(epoch, phase, ms, cause, name) => {
                let s = self.maps.lock().breakers.get(name).map(|(_, s)| s.clone());
                if let Some(s) = s {
                    s.on_message(epoch, phase, ms, cause);
                }
            }
            Message::Cooldown(ms, name) => {
                let s = self.maps.lock().stats.get(name).map(|(_, s)| s.clone());
                if let Some(s) = s {
                    s.on_message(ms);
                }
            }
            Message::Wanted(key) => {
                if let Some(s) = self.slot_leases().into_iter().find(|s| s.is_key(key)) {
                    s.on_wanted();
                }
            }
            Message::Freed(key) => {
                if let Some(s) = self.slot_leases().into_iter().find(|s| s.is_key(key)) {
                    s.on_freed();
                }
            }
        }
    }
}

/// State shared through Redis. Built by the router when `[state] backend = "redis"`.
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl RedisStore {
    /// Start the store for `cfg` on `rt`: it connects in the background (nothing here waits
    /// for Redis), publishing `state_backend` events on `events`.
    pub fn start(cfg: &StateConfig, rt: tokio::runtime::Handle, events: Arc<EventBus>) -> Result<RedisStore, LinkError> {
        let link = Arc::new(Link::new(cfg, rt.clone(), events)?);
        let shared = Arc::new(Shared { link, maps: Mutex::new(Maps::default()) });
        rt.spawn(supervise(Arc::downgrade(&shared)));
        rt.spawn(tick(Arc::downgrade(&shared)));
        Ok(RedisStore { shared })
    }

    /// Whether Redis is reachable now.
    pub fn is_up(&self) -> bool {
        self.shared.link.is_up()
    }

    /// Redis commands this process sent so far.
    pub fn ops(&self) -> u64 {
        self.shared.link.ops()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.shared.link.closed.store(true, Ordering::Release);
        self.shared.link.kick.notify_one();
    }
}

/// Connect, keep the heartbeat, reconnect with backoff; resync after every (re)connection.
async fn supervise(weak: Weak<Shared>) {
    let mut attempt = 0u32;
    let mut boot: Option<String> = None;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let link = shared.link.clone();
        if link.closed.load(Ordering::Acquire) {
            return;
        }
        let connected = link.connect().await;
        let (conn, pubsub) = match connected {
            Ok(x) => x,
            Err(e) => {
                link.set_up(false, &e.0);
                if attempt == 0 {
                    shared.go_local();
                }
                drop(shared);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(Link::backoff(attempt)) => {}
                    _ = link.kick.notified() => {}
                }
                continue;
            }
        };
        link.install(conn);
        // The heartbeat tells whether the server still has our data (its boot token).
        let token = format!("{:016x}", rand::random::<u64>());
        let Some(now_boot) = heartbeat(&link, &token).await else {
            link.fail("the first heartbeat failed");
            shared.go_local();
            drop(shared);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(Link::backoff(attempt)).await;
            continue;
        };
        attempt = 0;
        let lost = boot.as_ref().is_some_and(|b| *b != now_boot);
        boot = Some(now_boot);
        shared.resync(lost).await;
        link.set_up(true, if lost { "reconnected; the server had lost its data, this process's state was published again" } else { "connected" });
        shared.back_up();
        let listener = tokio::spawn(listen(Arc::downgrade(&shared), pubsub));
        drop(shared);
        // Heartbeat until the link fails (a command, the pub/sub stream) or the store closes.
        let every = (link.cfg.lease_time / 3).min(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = link.kick.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            if link.closed.load(Ordering::Acquire) {
                listener.abort();
                return;
            }
            if !link.connected() || listener.is_finished() {
                break;
            }
            match heartbeat(&link, &token).await {
                Some(b) if boot.as_ref() != Some(&b) => {
                    // Emptied while connected (FLUSHALL, a failover): say it all again.
                    boot = Some(b);
                    if let Some(s) = weak.upgrade() {
                        log::warn!("redis state: the server lost its data; publishing this process's state again");
                        s.resync(true).await;
                        s.back_up();
                    }
                }
                Some(_) => {
                    let leases = weak.upgrade().map(|s| s.slot_leases()).unwrap_or_default();
                    futures_util::future::join_all(leases.iter().map(|l| l.renew())).await;
                }
                None => break,
            }
        }
        listener.abort();
        link.fail("connection lost");
        if let Some(s) = weak.upgrade() {
            s.go_local();
        }
    }
}

/// One heartbeat: register this process, learn how many are alive and the server's boot
/// token. `None` when it failed (the link is down then).
async fn heartbeat(link: &Link, token: &str) -> Option<String> {
    let base = format!("{{{}}}", link.prefix);
    let mut inv = scripts::BEAT.prepare_invoke();
    inv.key(format!("{base}:procs")).key(format!("{base}:boot"));
    inv.arg(&link.proc_id).arg(link.cfg.lease_time.as_millis() as u64).arg(token);
    let (alive, boot): (u32, String) = link.run(&inv).await.ok()?;
    link.set_live(alive);
    Some(boot)
}

/// Apply the state messages of other processes until the pub/sub connection ends.
async fn listen(weak: Weak<Shared>, pubsub: redis::aio::PubSub) {
    let mut stream = pubsub.into_on_message();
    while let Some(msg) = stream.next().await {
        let Some(shared) = weak.upgrade() else { return };
        if let Ok(payload) = msg.get_payload::<String>() {
            shared.dispatch(&payload);
        }
    }
    if let Some(shared) = weak.upgrade() {
        shared.link.fail("the pub/sub connection closed");
    }
}

/// The periodic work: hand back idle slots, settle slices, and read breakers and cooldowns
/// back every second.
async fn tick(weak: Weak<Shared>) {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(shared) = weak.upgrade() else { return };
        if shared.link.closed.load(Ordering::Acquire) {
            return;
        }
        if !shared.link.is_up() {
            continue;
        }
        n += 1;
        let slots = shared.slot_leases();
        let rates = shared.rates();
        tokio::join!(futures_util::future::join_all(slots.iter().map(|s| s.trim())), futures_util::future::join_all(rates.iter().map(|r| r.tick())),);
        if n % (POLL.as_millis() / TICK.as_millis()) as u64 == 0 {
            let breakers = shared.breakers();
            let cools = shared.cooldowns();
            tokio::join!(
                futures_util::future::join_all(breakers.into_iter().map(|s| s.sync())),
                futures_util::future::join_all(cools.iter().map(|s| s.sync())),
            );
        }
    }
}

fn get_or_make<T: ?Sized, S: PartialEq + Copy, X: Clone>(
    map: &mut HashMap<String, (Entry<T, S>, X)>,
    key: &str,
    settings: S,
    make: impl FnOnce() -> (Arc<T>, X),
) -> Arc<T> {
    if let Some((e, _)) = map.get(key) {
        if e.settings == settings {
            return e.value.clone();
        }
    }
    let (value, x) = make();
    map.insert(key.to_string(), (Entry { settings, value: value.clone() }, x));
    value
}

impl StateStore for RedisStore {
    fn breaker(&self, key: &str, cfg: &BreakerConfig) -> Arc<Breaker> {
        let link = &self.shared.link;
        let mut m = self.shared.maps.lock();
        // New settings change the breaker in place: a replaced one would close if open here,
        // and calls of the replaced engine would wait for probe slots on a breaker the
        // cluster no longer reports to.
        if let Some((e, sync)) = m.breakers.get_mut(key) {
            if e.settings != *cfg {
                e.value.reconfigure(*cfg);
                sync.set_slots(cfg.half_open_requests);
                e.settings = *cfg;
            }
            return e.value.clone();
        }
        let b = Arc::new(Breaker::new(*cfg));
        let s = BreakerSync::attach(link, key, &b);
        m.breakers.insert(key.to_string(), (Entry { settings: *cfg, value: b.clone() }, s));
        b
    }

    fn health(&self, key: &str, cfg: &HealthCheckConfig) -> Arc<Health> {
        let mut m = self.shared.maps.lock();
        if let Some(e) = m.health.get(key) {
            if e.settings == *cfg {
                return e.value.clone();
            }
        }
        let h = Arc::new(Health::new(*cfg));
        m.health.insert(key.to_string(), Entry { settings: *cfg, value: h.clone() });
        h
    }

    fn concurrency(&self, key: &str, limit: u32) -> Arc<ConcurrencyLimit> {
        let mut m = self.shared.maps.lock();
        if let Some((c, lease)) = m.concurrency.get(key) {
            // Same object whatever the limit; a limit that turned on or off changes kind.
            if (limit == 0) == lease.is_none() {
                if c.limit() != limit {
                    c.set_limit(limit);
                }
                return c.clone();
            }
        }
        let (c, lease) = if limit == 0 {
            (Arc::new(ConcurrencyLimit::new(0)), None)
        } else {
            let (c, l) = SlotLease::limit(&self.shared.link, key, limit);
            (c, Some(l))
        };
        if let Some((_, Some(old))) = m.concurrency.insert(key.to_string(), (c.clone(), lease)) {
            old.close();
        }
        c
    }

    fn rate(&self, key: &str, spec: RateSpec) -> Arc<RateGate> {
        let link = &self.shared.link;
        let mut m = self.shared.maps.lock();
        let before = m.rates.get(key).map(|(_, r)| r.clone());
        let gate = get_or_make(&mut m.rates, key, spec, || {
            let r = SharedRate::new(link, key, spec);
            (Arc::new(RateGate::new(r.clone())), r)
        });
        if let (Some(old), Some((_, now))) = (before, m.rates.get(key)) {
            if !Arc::ptr_eq(&old, now) {
                old.close();
            }
        }
        gate
    }

    fn stats(&self, key: &str) -> Arc<InstanceStats> {
        let link = &self.shared.link;
        let mut m = self.shared.maps.lock();
        if let Some((s, _)) = m.stats.get(key) {
            return s.clone();
        }
        let s = Arc::new(InstanceStats::default());
        let sync = CooldownSync::attach(link, key, &s);
        m.stats.insert(key.to_string(), (s.clone(), sync));
        s
    }

    fn retain(&self, live: &HashSet<String>) {
        let mut m = self.shared.maps.lock();
        m.stats.retain(|k, _| live.contains(k));
        m.breakers.retain(|k, _| live.contains(k));
        m.health.retain(|k, _| live.contains(k));
        m.concurrency.retain(|k, (_, l)| {
            let keep = live.contains(k);
            if let (false, Some(l)) = (keep, l) {
                l.close();
            }
            keep
        });
        m.rates.retain(|k, (_, r)| {
            let keep = live.contains(k);
            if !keep {
                r.close();
            }
            keep
        });
    }

    fn forget(&self, keys: &[String]) {
        let mut m = self.shared.maps.lock();
        for k in keys {
            m.stats.remove(k);
            m.breakers.remove(k);
            m.health.remove(k);
            if let Some((_, Some(l))) = m.concurrency.remove(k) {
                l.close();
            }
            if let Some((_, r)) = m.rates.remove(k) {
                r.close();
            }
        }
    }
}
