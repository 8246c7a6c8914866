//! Engine events and their delivery: an [`EventBus`] per router with bounded per-subscriber
//! buffers that never block the request path.
//!
//! Why per-subscriber `mpsc` with `try_send` rather than one `tokio::sync::broadcast`: a
//! broadcast ring is shared, so one slow consumer makes every consumer lose the *oldest* events
//! and the loss is only seen on the next `recv`. Per-subscriber buffers let each subscriber pick
//! its own size, keep what it already has, count its own drops exactly at emit time, and get a
//! synthetic [`EventKind::EventsDropped`] as soon as it has room again.
//!
//! Cost with nobody listening: [`EventBus::emit`] takes a closure and only runs it when there is
//! a subscriber (one relaxed atomic load) or the `echelon.events` logger is enabled at the
//! event's level; hot-path watchers (breaker, queue) check [`EventBus::active`] first.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ErrorKind;
use crate::state::breaker::BreakerState;
use crate::state::health::InstanceStatus;

/// Log target of event records (becomes the Python logger `echelon.events`).
pub const LOG_TARGET: &str = "echelon.events";

/// Default buffer of one subscriber (events).
pub const DEFAULT_CAPACITY: usize = 1024;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What happened. Serialized with a `type` tag (`"breaker_state"`, …) next to the fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Each variant's doc says what its fields mean; the field names are the event's keys as
// subscribers (Python dicts, the gateway's stream, log records) receive them.
#[allow(missing_docs)]
pub enum EventKind {
    /// An instance's health status changed (healthy → degraded → unhealthy, …).
    InstanceState { instance: String, from: InstanceStatus, to: InstanceStatus, reason: String },
    /// An instance's circuit breaker changed state.
    BreakerState { instance: String, from: BreakerState, to: BreakerState, reason: String },
    /// A call moved from one target of its fallback chain to the next.
    Fallback { from: String, to: String, error: Option<ErrorKind> },
    /// A call tries its target again (`attempt` is the try about to start, 2 = first retry).
    Retry { target: String, instance: String, attempt: u32, delay: f64, error: ErrorKind },
    /// A provider answered 429; the instance cools down.
    RateLimited { instance: String, retry_after: Option<f64>, cooldown: f64 },
    /// A wait queue crossed 50% or 90% of its size upward (`level` `"50%"`/`"90%"`), or drained
    /// to empty after such a crossing (`level` `"drained"`).
    Queue { name: String, level: &'static str, length: u32, size: u32 },
    /// A call failed after all its attempts.
    RequestFailed { route: String, error: ErrorKind, message: String, attempts: usize },
    /// `Router::reload` swapped in a new configuration.
    ConfigReloaded { pools: usize, groups: usize, wrappers: usize },
    /// An alert rule fired or resolved.
    Alert { rule: String, kind: String, state: &'static str, value: f64, threshold: f64, scope: String },
    /// This subscriber's buffer was full and it lost `dropped` events since the last report.
    EventsDropped { dropped: u64 },
    /// The shared-state backend went out of reach (`state` `"down"`: every limit falls back to
    /// this process's share) or came back (`"up"`: state resynchronised and shared again).
    StateBackend { backend: String, state: &'static str, detail: String },
}

impl EventKind {
    /// The `type` tag: `"instance_state"`, `"breaker_state"`, `"fallback"`, `"retry"`,
    /// `"rate_limited"`, `"queue"`, `"request_failed"`, `"config_reloaded"`, `"alert"`,
    /// `"events_dropped"`, `"state_backend"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::InstanceState { .. } => "instance_state",
            EventKind::BreakerState { .. } => "breaker_state",
            EventKind::Fallback { .. } => "fallback",
            EventKind::Retry { .. } => "retry",
            EventKind::RateLimited { .. } => "rate_limited",
            EventKind::Queue { .. } => "queue",
            EventKind::RequestFailed { .. } => "request_failed",
            EventKind::ConfigReloaded { .. } => "config_reloaded",
            EventKind::Alert { .. } => "alert",
            EventKind::EventsDropped { .. } => "events_dropped",
            EventKind::StateBackend { .. } => "state_backend",
        }
    }

    /// The log level of this event: state changes and failures warn or inform, retries debug.
    pub fn level(&self) -> log::Level {
        match self {
            EventKind::InstanceState { to, .. } if !to.is_available() => log::Level::Warn,
            EventKind::BreakerState { to: BreakerState::Open, .. } => log::Level::Warn,
            EventKind::Alert { state: "firing", .. } => log::Level::Warn,
            EventKind::Queue { level: "90%", .. } => log::Level::Warn,
            EventKind::StateBackend { state: "down", .. } => log::Level::Warn,
            EventKind::Retry { .. } | EventKind::RateLimited { .. } | EventKind::Fallback { .. } => log::Level::Debug,
            EventKind::RequestFailed { .. } => log::Level::Info,
            _ => log::Level::Info,
        }
    }

    fn describe(&self) -> String {
        match self {
            EventKind::InstanceState { instance, from, to, reason } => {
                format!("instance {instance} {} -> {} ({reason})", from.as_str(), to.as_str())
            }
            EventKind::BreakerState { instance, from, to, reason } => {
                format!("breaker of {instance} {} -> {} ({reason})", from.as_str(), to.as_str())
            }
            EventKind::Fallback { from, to, error } => {
                format!("fallback {from} -> {to} after {}", error.map_or("no error", |e| e.as_str()))
            }
            EventKind::Retry { target, instance, attempt, delay, error } => {
                format!("retry #{attempt} on {target} (after {} on {instance}, waiting {delay:.3}s)", error.as_str())
            }
            EventKind::RateLimited { instance, retry_after, cooldown } => {
                format!("{instance} rate limited (retry_after {retry_after:?}, cooling down {cooldown:.3}s)")
            }
            EventKind::Queue { name, level, length, size } => format!("queue {name} {level} ({length}/{size})"),
            EventKind::RequestFailed { route, error, attempts, .. } => {
                format!("request to {route} failed after {attempts} attempts: {}", error.as_str())
            }
            EventKind::ConfigReloaded { pools, groups, wrappers } => {
                format!("configuration reloaded ({pools} pools, {groups} groups, {wrappers} wrappers)")
            }
            EventKind::Alert { rule, state, value, threshold, scope, .. } => {
                format!("alert {rule} {state} on {scope}: {value:.4} vs threshold {threshold}")
            }
            EventKind::EventsDropped { dropped } => format!("{dropped} events dropped"),
            EventKind::StateBackend { backend, state, detail } => format!("state backend {backend} {state} ({detail})"),
        }
    }
}

/// One event with its wall-clock time (seconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// When it happened: seconds since the Unix epoch.
    pub timestamp: f64,
    /// What happened (serialized inline, next to `timestamp`).
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// Stamp `kind` with the current time.
    pub fn now(kind: EventKind) -> Event {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(secs).unwrap_or(0.0);
        Event { timestamp, kind }
    }
}

struct Sub {
    tx: mpsc::Sender<Arc<Event>>,
    dropped: AtomicU64,
    /// Drops not yet reported with an `events_dropped` event.
    unreported: AtomicU64,
}

impl Sub {
    fn deliver(&self, ev: &Arc<Event>) {
        let pending = self.unreported.load(Ordering::Relaxed);
        if pending > 0 {
            let note = Arc::new(Event::now(EventKind::EventsDropped { dropped: pending }));
            if self.tx.try_send(note).is_err() {
                self.count_drop();
                return;
            }
            self.unreported.fetch_sub(pending, Ordering::Relaxed);
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(ev.clone()) {
            self.count_drop();
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.unreported.fetch_add(1, Ordering::Relaxed);
    }
}

/// Router-wide fan-out of [`Event`]s. Cheap to share (`Arc`); outlives configuration reloads.
pub struct EventBus {
    count: AtomicUsize,
    subs: ArcSwap<Vec<Arc<Sub>>>,
    edit: Mutex<()>,
    /// Drops of subscribers that already left.
    dropped_gone: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> EventBus {
        EventBus { count: AtomicUsize::new(0), subs: ArcSwap::from_pointee(Vec::new()), edit: Mutex::new(()), dropped_gone: AtomicU64::new(0) }
    }

    /// Whether anyone subscribes. Hot paths check this before doing any work for an event.
    #[inline]
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Events lost because a subscriber's buffer was full, over all subscribers ever.
    pub fn dropped(&self) -> u64 {
        self.dropped_gone.load(Ordering::Relaxed) + self.subs.load().iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum::<u64>()
    }

    /// Subscribe with a buffer of `capacity` events (at least 1). Dropping the
    /// [`Subscription`] unsubscribes.
    pub fn subscribe(self: &Arc<Self>, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sub = Arc::new(Sub { tx, dropped: AtomicU64::new(0), unreported: AtomicU64::new(0) });
        {
            let _g = self.edit.lock();
            let mut v: Vec<Arc<Sub>> = self.subs.load().as_ref().clone();
            v.push(sub.clone());
            self.subs.store(Arc::new(v));
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Subscription { rx, sub, bus: Arc::downgrade(self) }
    }

    fn unsubscribe(&self, sub: &Arc<Sub>) {
        let _g = self.edit.lock();
        let mut v: Vec<Arc<Sub>> = self.subs.load().as_ref().clone();
        let before = v.len();
        v.retain(|s| !Arc::ptr_eq(s, sub));
        if v.len() < before {
            self.dropped_gone.fetch_add(sub.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
            self.subs.store(Arc::new(v));
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Emit the event `make` builds, if anyone listens (subscribers or the log). Never blocks:
    /// a full subscriber buffer counts a drop for that subscriber.
    pub fn emit(&self, level: log::Level, make: impl FnOnce() -> EventKind) {
        let active = self.active();
        if !active && !log::log_enabled!(target: LOG_TARGET, level) {
            return;
        }
        let kind = make();
        log::log!(target: LOG_TARGET, kind.level(), "{}", kind.describe());
        if active {
            let ev = Arc::new(Event::now(kind));
            for s in self.subs.load().iter() {
                s.deliver(&ev);
            }
        }
    }

    /// [`EventBus::emit`] at the event's own level (for events built cheaply or off the hot path).
    pub fn publish(&self, kind: EventKind) {
        let level = kind.level();
        self.emit(level, || kind);
    }
}

/// One subscriber's end: receive events in order; drop it to unsubscribe.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<Event>>,
    sub: Arc<Sub>,
    bus: Weak<EventBus>,
}

impl Subscription {
    /// The next event; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }

    /// Wait for at least one event, then take up to `max` that are ready (one wakeup per batch).
    /// Empty once the bus is gone.
    pub async fn recv_batch(&mut self, max: usize) -> Vec<Arc<Event>> {
        let mut out = Vec::new();
        if self.rx.recv_many(&mut out, max.max(1)).await == 0 {
            return out;
        }
        out
    }

    /// An event if one is ready now.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.try_recv().ok()
    }

    /// Events this subscriber lost to a full buffer.
    pub fn dropped(&self) -> u64 {
        self.sub.dropped.load(Ordering::Relaxed)
    }

    /// A handle that reads [`Subscription::dropped`] without holding the subscription.
    pub fn drop_counter(&self) -> DropCounter {
        DropCounter(self.sub.clone())
    }
}

/// Reads one subscriber's drop count (for status output while the receiver is elsewhere).
#[derive(Clone)]
pub struct DropCounter(Arc<Sub>);

impl DropCounter {
    /// Events lost so far.
    pub fn get(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe(&self.sub);
        }
    }
}

/// Watches a wait queue's length and emits [`EventKind::Queue`] when it crosses 50% or 90% of
/// its size upward, and once when it drains to empty after such a crossing. Oscillating around
/// a threshold therefore emits nothing new until the queue has emptied (no storm).
#[derive(Default)]
pub struct QueueWatch {
    band: AtomicU8,
}

impl QueueWatch {
    fn band_of(len: u32, size: u32) -> u8 {
        let (len, size) = (len as u64 * 100, size.max(1) as u64);
        if len >= 90 * size {
            2
        } else if len >= 50 * size {
            1
        } else {
            0
        }
    }

    /// Report the queue's length after a change.
    #[inline]
    pub fn update(&self, bus: Option<&EventBus>, name: &str, len: u32, size: u32) {
        let Some(bus) = bus.filter(|b| b.active()) else { return };
        let new = Self::band_of(len, size);
        let old = self.band.load(Ordering::Relaxed);
        if new > old {
            if self.band.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                let level = if new == 2 { "90%" } else { "50%" };
                bus.publish(EventKind::Queue { name: name.to_string(), level, length: len, size });
            }
        } else if len == 0 && old > 0 && self.band.compare_exchange(old, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            bus.publish(EventKind::Queue { name: name.to_string(), level: "drained", length: 0, size });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(n: u32) -> EventKind {
        EventKind::ConfigReloaded { pools: n as usize, groups: 0, wrappers: 0 }
    }

    #[test]
    fn no_subscriber_never_builds_the_event() {
        let bus = Arc::new(EventBus::new());
        let mut built = false;
        // Trace is never enabled in unit tests (no logger installed), so only subscribers count.
        bus.emit(log::Level::Trace, || {
            built = true;
            kind(0)
        });
        assert!(!built, "the closure must not run without a subscriber");
        assert!(!bus.active());
        let sub = bus.subscribe(4);
        bus.emit(log::Level::Trace, || {
            built = true;
            kind(0)
        });
        assert!(built);
        drop(sub);
        assert!(!bus.active());
    }

    #[tokio::test]
    async fn full_buffer_counts_drops_and_reports_them_when_space_frees() {
        let bus = Arc::new(EventBus::new());
        let mut sub = bus.subscribe(2);
        for i in 0..5 {
            bus.publish(kind(i));
        }
        assert_eq!(sub.dropped(), 3);
        assert_eq!(bus.dropped(), 3);
        let got = sub.recv_batch(10).await;
        assert_eq!(got.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(), vec![kind(0), kind(1)]);
        bus.publish(kind(9));
        let got = sub.recv_batch(10).await;
        assert_eq!(got[0].kind, EventKind::EventsDropped { dropped: 3 });
        assert_eq!(got[1].kind, kind(9));
        // A second subscriber with room is unaffected by the first one's drops.
        let mut other = bus.subscribe(16);
        bus.publish(kind(10));
        assert_eq!(other.try_recv().map(|e| e.kind.clone()), Some(kind(10)));
        assert_eq!(other.dropped(), 0);
        drop(sub);
        assert_eq!(bus.dropped(), 3, "drops of departed subscribers stay counted");
    }

    #[test]
    fn queue_watch_fires_once_per_crossing_and_once_on_drain() {
        let bus = Arc::new(EventBus::new());
        let mut sub = bus.subscribe(64);
        let w = QueueWatch::default();
        for len in [1, 2, 3, 4, 5, 4, 5, 4, 5, 9, 10, 9, 10, 5, 1, 0, 0, 1] {
            w.update(Some(&bus), "q", len, 10);
        }
        let mut levels = Vec::new();
        while let Some(e) = sub.try_recv() {
            if let EventKind::Queue { level, length, .. } = &e.kind {
                levels.push((*level, *length));
            }
        }
        assert_eq!(levels, vec![("50%", 5), ("90%", 9), ("drained", 0)]);
    }
}
