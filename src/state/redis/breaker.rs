//! Breakers and cooldowns shared by every process.
//!
//! The key is the truth and the message is a hint: each change is written by a script that
//! also publishes it, with the breaker's period (epoch) so stale messages are dropped;
//! reconnections and a poll every second ([`super::RedisStore`]'s ticker) read the keys, so a
//! missed message costs at most that long. A breaker opened in one process reaches the others
//! in one pub/sub hop (well under a millisecond on one host).

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::link::Link;
use super::scripts;
use crate::observe::events::EventKind;
use crate::state::breaker::{Breaker, BreakerChange, BreakerLink, OpenCause, RemoteBreaker, PROBE_ASK_AGAIN};
use crate::state::stats::InstanceStats;

fn cause_str(c: OpenCause) -> &'static str {
    match c {
        OpenCause::Failures => "failures",
        OpenCause::Misconfigured => "misconfigured",
        OpenCause::Probes => "probes",
    }
}

fn cause_of(s: &str) -> OpenCause {
    match s {
        "misconfigured" => OpenCause::Misconfigured,
        "probes" => OpenCause::Probes,
        _ => OpenCause::Failures,
    }
}

/// The cluster side of one instance's breaker.
pub struct BreakerSync {
    link: Arc<Link>,
    /// The instance id (the store's key).
    name: String,
    key: String,
    breaker: Weak<Breaker>,
    /// `half_open_requests` (at least 1): probes per period across the cluster.
    slots: AtomicU32,
    me: Weak<BreakerSync>,
}

impl BreakerSync {
    /// Link `breaker` (of instance `name`) to the cluster.
    pub fn attach(link: &Arc<Link>, name: &str, breaker: &Arc<Breaker>) -> Arc<BreakerSync> {
        let s = Arc::new_cyclic(|me| BreakerSync {
            link: link.clone(),
            name: name.to_string(),
            key: link.key("b", name),
            breaker: Arc::downgrade(breaker),
            slots: AtomicU32::new(breaker.config().half_open_requests.max(1)),
            me: me.clone(),
        });
        breaker.set_link(s.clone());
        s
    }

    /// A reload changed `half_open_requests`: asked for from the next period on.
    pub fn set_slots(&self, half_open_requests: u32) {
        self.slots.store(half_open_requests.max(1), Ordering::Relaxed);
    }

    fn spawn<F>(&self, f: impl FnOnce(Arc<BreakerSync>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(me) = self.me.upgrade() {
            let fut = f(me);
            self.link.rt.spawn(fut);
        }
    }

    /// Apply a cluster state, emitting a `breaker_state` event when the phase changed here.
    pub fn apply(&self, r: RemoteBreaker, why: &str) {
        let Some(b) = self.breaker.upgrade() else { return };
        if let Some((from, to)) = b.apply_remote(r, Instant::now()) {
            log::info!("breaker of {} {} -> {} ({why})", self.name, from.as_str(), to.as_str());
            let bus = self.link.events();
            if bus.active() {
                bus.publish(EventKind::BreakerState { instance: self.name.clone(), from, to, reason: why.to_string() });
            }
        }
    }

    async fn open(self: Arc<Self>, rest: Duration, cause: OpenCause) {
        let mut inv = scripts::BOPEN.prepare_invoke();
        inv.key(&self.key).arg(rest.as_millis() as u64).arg(cause_str(cause)).arg(&self.link.channel).arg(&self.link.proc_id).arg(&self.name);
        if let Ok((epoch, left)) = self.link.run::<(u64, u64)>(&inv).await {
            let Some(b) = self.breaker.upgrade() else { return };
            b.adopt_epoch(epoch);
            // Already open longer in the cluster: hold on as long here too.
            if Duration::from_millis(left) > rest {
                self.apply(RemoteBreaker::Open { epoch, rest: Duration::from_millis(left), cause }, "open longer in the cluster");
            }
        }
    }

    async fn close(self: Arc<Self>) {
        let mut inv = scripts::BCLOSE.prepare_invoke();
        inv.key(&self.key).arg(&self.link.channel).arg(&self.link.proc_id).arg(&self.name);
        if let Ok(epoch) = self.link.run::<u64>(&inv).await {
            if let Some(b) = self.breaker.upgrade() {
                b.adopt_epoch(epoch);
            }
        }
    }

    async fn probes(self: Arc<Self>, _epoch: u64) {
        let mut inv = scripts::BPROBE.prepare_invoke();
        let slots = self.slots.load(Ordering::Relaxed);
        inv.key(&self.key).arg(slots).arg(slots).arg(self.link.cfg.lease_time.as_millis() as u64);
        match self.link.run::<(u8, u64, u64)>(&inv).await {
            Ok((0, epoch, _)) => self.apply(RemoteBreaker::Closed { epoch }, "closed in the cluster"),
            Ok((1, epoch, rest)) => {
                self.apply(RemoteBreaker::Open { epoch, rest: Duration::from_millis(rest), cause: OpenCause::Failures }, "open in the cluster")
            }
            Ok((_, epoch, granted)) => {
                self.apply(RemoteBreaker::Probes { epoch, granted: granted as u32 }, "probe slots granted");
                if granted == 0 {
                    // Every slot of the period is out elsewhere. Its verdict wakes the callers
                    // waiting here, but a slot whose verdict never comes (its caller went
                    // elsewhere, its process died) is only handed out again once its lease
                    // ends: have them look (and ask) again, rather than wait for a message
                    // nobody will send.
                    let weak = self.breaker.clone();
                    self.link.rt.spawn(async move {
                        tokio::time::sleep(PROBE_ASK_AGAIN).await;
                        if let Some(b) = weak.upgrade() {
                            b.nudge();
                        }
                    });
                }
            }
            Err(_) => {
                // Down: the breaker decides alone again; let its waiters look.
                if let Some(b) = self.breaker.upgrade() {
                    b.nudge();
                }
            }
        }
    }

    async fn probe_ok(self: Arc<Self>, epoch: u64) {
        let mut inv = scripts::BOK.prepare_invoke();
        inv.key(&self.key).arg(epoch).arg(self.slots.load(Ordering::Relaxed)).arg(&self.link.channel).arg(&self.link.proc_id).arg(&self.name);
        if let Ok((0, e)) = self.link.run::<(u8, u64)>(&inv).await {
            self.apply(RemoteBreaker::Closed { epoch: e }, "probes succeeded");
        }
    }

    /// Read the cluster's state and apply it (resync, backstop poll); publish this process's
    /// open breaker when the cluster does not know it (it lost its data).
    pub async fn sync(self: Arc<Self>) {
        let Some(b) = self.breaker.upgrade() else { return };
        let mut inv = scripts::BREAD.prepare_invoke();
        inv.key(&self.key);
        let Ok((ph, epoch, rest, cause)) = self.link.run::<(u8, u64, u64, String)>(&inv).await else { return };
        let local = b.open_rest(Instant::now());
        match (ph, local) {
            (1, _) => self.apply(RemoteBreaker::Open { epoch, rest: Duration::from_millis(rest), cause: cause_of(&cause) }, "open in the cluster"),
            (0, Some((left, c))) if epoch < b.epoch() || epoch == 0 => {
                // The cluster forgot (restarted empty): it is open here, so say so again.
                self.clone().open(left, c).await;
            }
            (0, _) if epoch >= b.epoch() => self.apply(RemoteBreaker::Closed { epoch }, "closed in the cluster"),
            _ => {}
        }
    }

    /// A breaker message: `b|process|period|phase|rest ms|cause|key` (already split).
    pub fn on_message(&self, epoch: u64, phase: u8, rest_ms: u64, cause: &str) {
        match phase {
            1 => self.apply(RemoteBreaker::Open { epoch, rest: Duration::from_millis(rest_ms), cause: cause_of(cause) }, "opened in another process"),
            _ => self.apply(RemoteBreaker::Closed { epoch }, "closed in another process"),
        }
    }
}

impl BreakerLink for BreakerSync {
    fn shared(&self) -> bool {
        self.link.is_up()
    }

    fn changed(&self, change: BreakerChange) {
        match change {
            BreakerChange::Opened { rest, cause, .. } => self.spawn(move |me| me.open(rest, cause)),
            BreakerChange::Closed { .. } => self.spawn(|me| me.close()),
        }
    }

    fn want_probes(&self, epoch: u64) {
        self.spawn(move |me| me.probes(epoch));
    }

    fn probe_ok(&self, epoch: u64) {
        self.spawn(move |me| BreakerSync::probe_ok(me, epoch));
    }
}

/// The cluster side of one instance's cooldown (a provider's 429 or Retry-After).
pub struct CooldownSync {
    link: Arc<Link>,
    name: String,
    key: String,
    stats: Weak<InstanceStats>,
}

impl CooldownSync {
    /// Publish `stats`' cooldowns (of instance `name`) and apply the cluster's.
    pub fn attach(link: &Arc<Link>, name: &str, stats: &Arc<InstanceStats>) -> Arc<CooldownSync> {
        let s = Arc::new(CooldownSync { link: link.clone(), name: name.to_string(), key: link.key("cd", name), stats: Arc::downgrade(stats) });
        let weak = Arc::downgrade(&s);
        stats.set_cooldown_sink(Arc::new(move |d: Duration| {
            if let Some(s) = weak.upgrade() {
                if s.link.is_up() {
                    let rt = s.link.rt.clone();
                    rt.spawn(async move { s.publish(d).await });
                }
            }
        }));
        s
    }

    async fn publish(&self, d: Duration) {
        let ms = d.as_millis().max(1) as u64;
        let mut inv = scripts::COOL.prepare_invoke();
        inv.key(&self.key).arg(ms).arg(&self.link.channel).arg(&self.link.proc_id).arg(&self.name);
        let _: Result<i64, _> = self.link.run(&inv).await;
    }

    /// A cooldown of `ms` from another process.
    pub fn on_message(&self, ms: u64) {
        if let Some(st) = self.stats.upgrade() {
            st.apply_cooldown(Instant::now(), Duration::from_millis(ms));
        }
    }

    /// Read the cluster's cooldown and apply it; publish this process's when the cluster has
    /// none (it lost its data).
    pub async fn sync(&self) {
        let Some(st) = self.stats.upgrade() else { return };
        let now = Instant::now();
        let mine = st.cooldown_until(now).map(|t| t - now);
        let mut inv = scripts::COOL.prepare_invoke();
        // Setting 1 ms never shortens anything and returns what is left.
        inv.key(&self.key).arg(mine.map_or(1, |d| d.as_millis().max(1) as u64)).arg(&self.link.channel).arg(&self.link.proc_id).arg(&self.name);
        if let Ok(left) = self.link.run::<i64>(&inv).await {
            if left > 1 {
                st.apply_cooldown(Instant::now(), Duration::from_millis(left as u64));
            }
        }
    }
}

/// A message on the state channel, parsed.
pub enum Message<'a> {
    /// A breaker changed: (period, phase, rest ms, cause, instance).
    Breaker(u64, u8, u64, &'a str, &'a str),
    /// A cooldown: (ms, instance).
    Cooldown(u64, &'a str),
    /// Someone is short of slots of this limit (its `z` key).
    Wanted(&'a str),
    /// Slots of this limit were given back.
    Freed(&'a str),
}

/// Parse a message, ignoring this process's own (`me`).
pub fn parse<'a>(payload: &'a str, me: &str) -> Option<Message<'a>> {
    let (kind, rest) = payload.split_once('|')?;
    let (from, rest) = rest.split_once('|')?;
    if from == me {
        return None;
    }
    match kind {
        "b" => {
            let mut it = rest.splitn(5, '|');
            let epoch = u64::from_str(it.next()?).ok()?;
            let phase = u8::from_str(it.next()?).ok()?;
            let ms = u64::from_str(it.next()?).ok()?;
            let cause = it.next()?;
            Some(Message::Breaker(epoch, phase, ms, cause, it.next()?))
        }
        "c" => {
            let (ms, name) = rest.split_once('|')?;
            Some(Message::Cooldown(u64::from_str(ms).ok()?, name))
        }
        "w" => Some(Message::Wanted(rest)),
        "f" => Some(Message::Freed(rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_own_ones_are_dropped() {
        match parse("b|p1|7|1|1500|failures|g.e1_m:x|y", "p2") {
            Some(Message::Breaker(7, 1, 1500, "failures", "g.e1_m:x|y")) => {}
            _ => panic!("breaker message"),
        }
        assert!(parse("b|p1|7|1|1500|failures|k", "p1").is_none(), "own message");
        assert!(matches!(parse("c|p1|250|inst", "p2"), Some(Message::Cooldown(250, "inst"))));
        assert!(matches!(parse("w|p1|{e:v1:c:model:m}:z", "p2"), Some(Message::Wanted("{e:v1:c:model:m}:z"))));
        assert!(matches!(parse("f|p1|k", "p2"), Some(Message::Freed("k"))));
        assert!(parse("b|p1|x|1|0|-|k", "p2").is_none(), "bad number");
        assert!(parse("zz", "p2").is_none());
    }
}
