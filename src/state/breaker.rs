//! Circuit breaker: closed → open after consecutive failures → half-open probes → closed.
//!
//! Time is passed in by the caller (`now: Instant`) so the breaker is testable without sleeping
//! and costs no clock read of its own. All state sits behind one `parking_lot::Mutex`: every
//! operation is a handful of comparisons, so an uncontended lock (~10–20 ns) is cheaper and far
//! easier to keep exact than a lock-free multi-word state machine.
//!
//! The breaker is the one state machine that decides whether an instance gets traffic. Passive
//! health (call outcomes), active health probes and "this instance is misconfigured" errors
//! (authentication, unknown model) all drive it; the health status shown to users
//! (`crate::state::health`) is read from it rather than kept beside it.
//!
//! It also owns the line of callers waiting for a half-open probe slot: a probe that ends wakes
//! the next caller, and a change of phase wakes them all to look again.
//!
//! # Shared by several processes
//!
//! With a [`BreakerLink`] (the Redis store) the breaker keeps deciding locally, but its phase
//! is the cluster's: a local opening or closing is published through the link, remote ones
//! arrive through [`Breaker::apply_remote`], and once its rest is over it admits only the
//! probe slots the cluster grants it, so `half_open_requests` probes run across every process,
//! not per process. Consecutive failures are counted per process; the first process to
//! reach the threshold opens the breaker everywhere. While the link is down the breaker is
//! this process's alone again.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::BreakerConfig;
use crate::error::ErrorKind;
use crate::state::sync::Mutex;
use crate::state::wait::{Queue, WaitCtx, WaitList, Waiter};

/// Longest a breaker stays open on one decision (a Retry-After or a trip), whatever it is
/// asked: keeps `now + duration` far from overflow and an instance from being lost for longer
/// than a day by one odd answer.
pub const MAX_OPEN: Duration = Duration::from_secs(24 * 3600);

/// Why a breaker refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerBlock {
    /// Open; probes are admitted from `until` on.
    Open {
        /// When the recovery time ends.
        until: Instant,
    },
    /// Half-open and every probe slot is taken; a waiting caller is queued for the next one.
    ProbesBusy,
}

/// Why a breaker is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenCause {
    /// Consecutive failures (or the failure ratio) reached the threshold.
    Failures,
    /// An error saying the instance cannot serve as configured (bad key, unknown model).
    Misconfigured,
    /// Active health probes failed.
    Probes,
}

/// Breaker state, spelled as the original API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    #[serde(rename = "CLOSED")]
    Closed,
    /// Requests are refused until the recovery time has passed.
    #[serde(rename = "OPEN")]
    Open,
    /// A limited number of probes decide whether it closes or opens again.
    #[serde(rename = "HALF_OPEN")]
    HalfOpen,
}

impl BreakerState {
    /// `"CLOSED"`, `"OPEN"`, `"HALF_OPEN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF_OPEN",
        }
    }
}

/// How a request was let through; hand it back with the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Normal traffic through a closed breaker.
    Normal,
    /// One of the `half_open_requests` probes.
    Probe,
}

/// What the breaker shows to status output.
#[derive(Clone, Debug, Serialize)]
pub struct BreakerSnapshot {
    /// The phase now.
    pub state: BreakerState,
    /// Consecutive counted failures (while open: the run that opened it, plus failed probes).
    pub failure_count: u32,
    /// Consecutive failures that open it (from the config).
    pub failure_threshold: u32,
    /// Wall-clock time of the last counted failure.
    pub last_failure_time: Option<SystemTime>,
    /// While open: time left until probes are admitted.
    pub open_for: Option<Duration>,
    /// Probes currently in flight (half-open).
    pub probes_in_flight: u32,
    /// While open: why (`failures`, `misconfigured`, `probes`).
    pub open_cause: Option<OpenCause>,
}

/// A phase change of a linked breaker, for the other processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the variants' docs name their fields
pub enum BreakerChange {
    /// It opened here for `rest` (`epoch`: the cluster period it opened from).
    Opened { epoch: u64, rest: Duration, cause: OpenCause },
    /// It closed here (a reset, or a good health probe of a breaker the probes opened).
    Closed { epoch: u64 },
}

/// A phase change decided elsewhere in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the variants' docs name their fields
pub enum RemoteBreaker {
    /// Open for `rest` from now, as of cluster period `epoch`.
    Open { epoch: u64, rest: Duration, cause: OpenCause },
    /// Closed as of period `epoch`.
    Closed { epoch: u64 },
    /// `granted` more probe slots of period `epoch` for this process (0: all are out
    /// elsewhere; ask again later).
    Probes { epoch: u64, granted: u32 },
}

/// How a breaker shared by several processes talks to them (the Redis store).
///
/// Called under the breaker's lock: implementations only queue work for a task, never block
/// and never call back into the breaker.
pub trait BreakerLink: Send + Sync {
    /// Whether the cluster can be reached: while not, the breaker is this process's alone.
    fn shared(&self) -> bool;
    /// Publish a local phase change.
    fn changed(&self, change: BreakerChange);
    /// The breaker's rest is over: ask the cluster for probe slots of period `epoch`.
    fn want_probes(&self, epoch: u64);
    /// A probe of period `epoch` succeeded here (the cluster closes the breaker once
    /// `half_open_requests` have).
    fn probe_ok(&self, epoch: u64);
}

/// How long a linked breaker waits before asking again for probe slots the cluster had none
/// of (their holders may have died; the cluster hands them out again after the lease time).
pub(crate) const PROBE_ASK_AGAIN: Duration = Duration::from_millis(500);

/// A circuit breaker for one instance or target. Thread-safe; all methods take `&self`.
///
/// Rules: `failure_threshold` consecutive failures (or, when `failure_ratio` is set, that ratio
/// over `window` with at least `min_requests`) open it. It stays open for
/// `max(recovery_time, retry_after)`. Then it is half-open: exactly `half_open_requests` probes
/// are admitted at once; when that many succeed it closes; any probe failure reopens it.
/// Neutral outcomes (cancellation, caller deadline, request-shaped 4xx) free the admission
/// without counting either way.
///
/// Outcomes of `Normal` admissions that arrive after the breaker left `Closed` (requests that
/// were in flight when it opened) do not change the state: only probes decide how it closes.
/// A Retry-After carried by such a late failure still extends an open period.
pub struct Breaker {
    inner: Mutex<Inner>,
    link: OnceLock<Arc<dyn BreakerLink>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open,
    HalfOpen,
}

struct Inner {
    /// The settings now (a reload may change them in place: see [`Breaker::reconfigure`]).
    cfg: BreakerConfig,
    phase: Phase,
    /// Consecutive counted failures.
    failures: u32,
    last_failure: Option<SystemTime>,
    /// While `Open`: when probes may start.
    open_until: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Probes admitted in an earlier half-open period that have not reported back yet. Their
    /// outcomes are swallowed so they cannot close (or reopen) a later half-open period.
    stale_probes: u32,
    /// Present only when `failure_ratio` is configured.
    ratio: Option<RatioWindow>,
    /// Why it last opened.
    cause: OpenCause,
    /// Consecutive failed active probes.
    probe_failures: u32,
    /// Callers waiting for a probe slot.
    waiters: WaitList,
    /// Linked: the cluster period last seen (it changes with every opening and closing).
    epoch: u64,
    /// Linked: probe slots the cluster granted this process in the current period.
    granted: u32,
    /// Linked: when probe slots were last asked for (asked once per [`PROBE_ASK_AGAIN`]).
    asked_at: Option<Instant>,
}

impl Breaker {
    /// A closed breaker with the given settings.
    pub fn new(cfg: BreakerConfig) -> Self {
        let ratio = cfg.failure_ratio.map(|_| RatioWindow::new(cfg.window));
        Self {
            inner: Mutex::new(Inner {
                cfg,
                phase: Phase::Closed,
                failures: 0,
                last_failure: None,
                open_until: Instant::now(),
                probes_in_flight: 0,
                probe_successes: 0,
                stale_probes: 0,
                ratio,
                cause: OpenCause::Failures,
                probe_failures: 0,
                waiters: WaitList::default(),
                epoch: 0,
                granted: 0,
                asked_at: None,
            }),
            link: OnceLock::new(),
        }
    }

    /// Share this breaker with other processes through `link` (once, right after creation).
    pub fn set_link(&self, link: Arc<dyn BreakerLink>) {
        let _ = self.link.set(link);
    }

    /// The link, when there is one and the cluster can be reached.
    fn live_link(&self) -> Option<&Arc<dyn BreakerLink>> {
        self.link.get().filter(|l| l.shared())
    }
    /// The settings now.
    pub fn config(&self) -> BreakerConfig {
        self.inner.lock().cfg
    }

    /// New settings from a reload, keeping the phase, the counts and the callers waiting:
    /// replacing the breaker instead would close an open one, and leave calls of the replaced
    /// engine waiting for probe slots of a breaker nothing reports to any more. Waiters look
    /// again (the number of probe slots may have changed).
    pub fn reconfigure(&self, cfg: BreakerConfig) {
        let mut g = self.inner.lock();
        if g.cfg.failure_ratio.is_some() != cfg.failure_ratio.is_some() || g.cfg.window != cfg.window {
            g.ratio = cfg.failure_ratio.map(|_| RatioWindow::new(cfg.window));
        }
        g.cfg = cfg;
        g.waiters.wake_all();
    }

    /// Probe slots this process may use now: the configured number (a config of 0 would
    /// wedge the breaker open forever, so it means 1), or, when shared, what the cluster
    /// granted this process of them.
    fn probe_slots(&self, g: &Inner) -> u32 {
        if self.live_link().is_some() {
            g.granted
        } else {
            g.cfg.half_open_requests.max(1)
        }
    }

    /// Admit the caller of `ctx` now, or say why not. While half-open with every probe slot
    /// taken, a waiting caller is queued for the next slot.
    pub fn admit(self: &Arc<Self>, now: Instant, ctx: &mut WaitCtx) -> Result<Admission, BreakerBlock> {
        let mut g = self.inner.lock();
        let who = ctx.waiter().cloned();
        match self.decide(&mut g, now, who.as_deref(), true) {
            Ok(a) => {
                if let Some(w) = &who {
                    if g.waiters.remove(w.ticket()) {
                        self.wake_for_slots(&g);
                    }
                }
                Ok(a)
            }
            Err(BreakerBlock::ProbesBusy) => {
                if let Some(w) = &who {
                    g.waiters.enqueue(w);
                    drop(g);
                    ctx.joined(self.clone());
                }
                Err(BreakerBlock::ProbesBusy)
            }
            Err(open) => Err(open),
        }
    }

    /// Admit a request now (as a newcomer that never queues), or refuse it (`None`) while open
    /// or while all probe slots are taken.
    pub fn try_admit(&self, now: Instant) -> Option<Admission> {
        let mut g = self.inner.lock();
        self.decide(&mut g, now, None, true).ok()
    }

    /// Whether `who` would be admitted now, without taking a slot (for candidate filtering).
    pub fn check(&self, now: Instant, who: Option<&Waiter>) -> Result<(), BreakerBlock> {
        let mut g = self.inner.lock();
        self.decide(&mut g, now, who, false).map(|_| ())
    }

    /// Whether a newcomer would be admitted now.
    pub fn would_admit(&self, now: Instant) -> bool {
        self.check(now, None).is_ok()
    }

    /// The admission rule; takes a slot only when `take`.
    fn decide(&self, g: &mut Inner, now: Instant, who: Option<&Waiter>, take: bool) -> Result<Admission, BreakerBlock> {
        match g.phase {
            Phase::Closed => Ok(Admission::Normal),
            Phase::Open if now < g.open_until => Err(BreakerBlock::Open { until: g.open_until }),
            Phase::Open => {
                if !g.waiters.may_take(who) {
                    return Err(BreakerBlock::ProbesBusy);
                }
                if let Some(link) = self.live_link() {
                    if g.granted == 0 {
                        if g.asked_at.is_none_or(|t| now.saturating_duration_since(t) >= PROBE_ASK_AGAIN) {
                            g.asked_at = Some(now);
                            link.want_probes(g.epoch);
                        }
                        return Err(BreakerBlock::ProbesBusy);
                    }
                }
                if take {
                    g.phase = Phase::HalfOpen;
                    g.probes_in_flight = 1;
                    g.probe_successes = 0;
                    log::debug!("circuit breaker half-open: admitting probes");
                }
                Ok(Admission::Probe)
            }
            Phase::HalfOpen => {
                // All slots taken, or enough probes already succeeded this period and only
                // in-flight ones remain; admitting more would exceed "exactly N probes".
                if g.probes_in_flight + g.probe_successes >= self.probe_slots(g) || !g.waiters.may_take(who) {
                    return Err(BreakerBlock::ProbesBusy);
                }
                if take {
                    g.probes_in_flight += 1;
                }
                Ok(Admission::Probe)
            }
        }
    }

    /// Wake as many waiters as there are free probe slots (all of them once closed).
    fn wake_for_slots(&self, g: &Inner) {
        match g.phase {
            Phase::Closed => g.waiters.wake_all(),
            Phase::HalfOpen => {
                let free = self.probe_slots(g).saturating_sub(g.probes_in_flight + g.probe_successes);
                g.waiters.wake_oldest(free as usize);
            }
            // Open: they wait for time now, and their next look takes them out of this line.
            Phase::Open => g.waiters.wake_all(),
        }
    }

    /// Record a success of an admitted request.
    pub fn on_success(&self, admission: Admission, now: Instant) {
        let mut g = self.inner.lock();
        let stale = g.take_stale(admission);
        match (g.phase, admission) {
            (Phase::Closed, _) => {
                g.failures = 0;
                if let Some(r) = g.ratio.as_mut() {
                    r.record(now, false);
                }
            }
            (_, Admission::Normal) => {}
            _ if stale => {}
            (Phase::HalfOpen, Admission::Probe) => {
                g.probes_in_flight = g.probes_in_flight.saturating_sub(1);
                g.probe_successes += 1;
                if let Some(link) = self.live_link() {
                    // The cluster closes it once enough probes succeeded anywhere; until
                    // then this slot stays used (exactly N probes per period).
                    link.probe_ok(g.epoch);
                } else if g.probe_successes >= self.probe_slots(&g) {
                    log::debug!("circuit breaker closed after {} successful probes", g.probe_successes);
                    g.close();
                }
                self.wake_for_slots(&g);
            }
            (Phase::Open, Admission::Probe) => {}
        }
    }

    /// Record a failure; `min_open` (a Retry-After) extends the open period if longer.
    pub fn on_failure(&self, admission: Admission, now: Instant, min_open: Option<Duration>) {
        let mut g = self.inner.lock();
        let stale = g.take_stale(admission);
        let cfg = g.cfg;
        match (g.phase, admission) {
            (Phase::Closed, _) => {
                g.failures = g.failures.saturating_add(1);
                g.last_failure = Some(SystemTime::now());
                let ratio_trips = match (g.ratio.as_mut(), cfg.failure_ratio) {
                    (Some(r), Some(limit)) => {
                        r.record(now, true);
                        r.trips(now, limit, cfg.min_requests)
                    }
                    _ => false,
                };
                if g.failures >= cfg.failure_threshold.max(1) || ratio_trips {
                    log::debug!("circuit breaker opened after {} consecutive failures", g.failures);
                    self.open(&mut g, now, min_open, OpenCause::Failures);
                }
            }
            (Phase::Open, Admission::Normal) | (Phase::HalfOpen, Admission::Normal) => {
                // A straggler from before the breaker opened: its Retry-After is still news.
                if let (Phase::Open, Some(d)) = (g.phase, min_open) {
                    g.open_until = g.open_until.max(later(now, d));
                }
            }
            _ if stale => {}
            (Phase::HalfOpen, Admission::Probe) => {
                g.probes_in_flight = g.probes_in_flight.saturating_sub(1);
                g.failures = g.failures.saturating_add(1);
                g.last_failure = Some(SystemTime::now());
                log::debug!("circuit breaker probe failed: reopening");
                self.open(&mut g, now, min_open, OpenCause::Failures);
            }
            (Phase::Open, Admission::Probe) => {}
        }
    }

    /// Release an admission whose outcome says nothing about health.
    pub fn on_neutral(&self, admission: Admission) {
        let mut g = self.inner.lock();
        if !g.take_stale(admission) && admission == Admission::Probe && g.phase == Phase::HalfOpen {
            g.probes_in_flight = g.probes_in_flight.saturating_sub(1);
            self.wake_for_slots(&g);
        }
    }

    /// Open at once for `rest` (at least `recovery_time`): an error that says the instance
    /// cannot serve as configured (a rejected key, a model the provider does not have).
    pub fn trip(&self, now: Instant, rest: Duration) {
        let mut g = self.inner.lock();
        g.failures = g.failures.saturating_add(1);
        g.last_failure = Some(SystemTime::now());
        self.open(&mut g, now, Some(rest), OpenCause::Misconfigured);
    }

    /// Record an active health probe. `threshold` consecutive failed probes open the breaker
    /// for `rest`; a successful probe closes a breaker the probes opened, and lets call
    /// probes through at once when calls opened it.
    pub fn on_health_probe(&self, ok: bool, now: Instant, threshold: u32, rest: Duration) {
        let mut g = self.inner.lock();
        if ok {
            g.probe_failures = 0;
            if g.phase != Phase::Closed && g.cause == OpenCause::Probes {
                // Probes opened it; the evidence is gone.
                log::debug!("health probe succeeded: closing the breaker the probes opened");
                g.stale_probes = g.stale_probes.saturating_add(g.probes_in_flight);
                g.close();
                self.publish(&g, BreakerChange::Closed { epoch: g.epoch });
                self.wake_for_slots(&g);
            } else if g.phase == Phase::Open && now < g.open_until {
                log::debug!("health probe succeeded: the open breaker admits probes now");
                g.open_until = now;
                self.publish(&g, BreakerChange::Opened { epoch: g.epoch, rest: Duration::ZERO, cause: g.cause });
                self.wake_for_slots(&g);
            }
            return;
        }
        g.probe_failures = g.probe_failures.saturating_add(1);
        if g.probe_failures < threshold.max(1) {
            return;
        }
        match g.phase {
            Phase::Open => g.open_until = g.open_until.max(later(now, rest)),
            Phase::Closed | Phase::HalfOpen => {
                g.last_failure = Some(SystemTime::now());
                let d = rest.max(g.cfg.recovery_time);
                g.phase = Phase::Open;
                g.open_until = later(now, d);
                g.stale_probes = g.stale_probes.saturating_add(g.probes_in_flight);
                g.probes_in_flight = 0;
                g.probe_successes = 0;
                g.cause = OpenCause::Probes;
                g.granted = 0;
                g.asked_at = None;
                self.publish(&g, BreakerChange::Opened { epoch: g.epoch, rest: d, cause: OpenCause::Probes });
                self.wake_for_slots(&g);
            }
        }
    }

    /// What the health view needs: the visible state, why it opened, consecutive failures.
    pub fn health_view(&self, now: Instant) -> (BreakerState, OpenCause, u32) {
        let g = self.inner.lock();
        (g.visible_state(now), g.cause, g.failures)
    }

    /// Callers waiting for a probe slot.
    pub fn waiting(&self) -> usize {
        self.inner.lock().waiters.len()
    }

    /// Current state (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let g = self.inner.lock();
        g.visible_state(now)
    }

    /// The recorded phase, without the time-based reading of [`Breaker::state`] (an open
    /// breaker stays `Open` here until a probe is admitted). Used to detect transitions.
    pub fn phase(&self) -> BreakerState {
        match self.inner.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open => BreakerState::Open,
            Phase::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// State and counters for status output.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let g = self.inner.lock();
        let state = g.visible_state(now);
        BreakerSnapshot {
            state,
            failure_count: g.failures,
            failure_threshold: g.cfg.failure_threshold,
            last_failure_time: g.last_failure,
            open_for: (state == BreakerState::Open).then(|| g.open_until.saturating_duration_since(now)),
            probes_in_flight: if g.phase == Phase::HalfOpen { g.probes_in_flight } else { 0 },
            open_cause: (state == BreakerState::Open).then_some(g.cause),
        }
    }

    /// Back to closed with zero counts.
    pub fn reset(&self) {
        let mut g = self.inner.lock();
        g.close();
        g.last_failure = None;
        g.stale_probes = 0;
        g.probe_failures = 0;
        self.publish(&g, BreakerChange::Closed { epoch: g.epoch });
        self.wake_for_slots(&g);
    }

    fn open(&self, g: &mut Inner, now: Instant, min_open: Option<Duration>, cause: OpenCause) {
        let dur = g.cfg.recovery_time.max(min_open.unwrap_or(Duration::ZERO)).min(MAX_OPEN);
        g.phase = Phase::Open;
        g.open_until = later(now, dur);
        g.cause = cause;
        g.stale_probes = g.stale_probes.saturating_add(g.probes_in_flight);
        g.probes_in_flight = 0;
        g.probe_successes = 0;
        g.granted = 0;
        g.asked_at = None;
        if let Some(r) = g.ratio.as_mut() {
            r.clear();
        }
        self.publish(g, BreakerChange::Opened { epoch: g.epoch, rest: dur, cause });
        self.wake_for_slots(g);
    }

    /// Tell the other processes about a local phase change (when linked).
    fn publish(&self, g: &Inner, change: BreakerChange) {
        let _ = g;
        if let Some(link) = self.live_link() {
            link.changed(change);
        }
    }

    /// Apply a phase change decided elsewhere in the cluster (never published back).
    /// Messages of an older period than the one already seen are dropped. Returns the phase
    /// before and after when it changed.
    pub fn apply_remote(&self, r: RemoteBreaker, now: Instant) -> Option<(BreakerState, BreakerState)> {
        let before = self.phase();
        self.apply_remote_inner(r, now);
        let after = self.phase();
        (before != after).then_some((before, after))
    }

    fn apply_remote_inner(&self, r: RemoteBreaker, now: Instant) {
        let mut g = self.inner.lock();
        match r {
            RemoteBreaker::Open { epoch, rest, cause } => {
                if epoch < g.epoch {
                    return;
                }
                let until = later(now, rest);
                let newer = epoch > g.epoch;
                g.epoch = epoch;
                if g.phase == Phase::Open && !newer {
                    g.open_until = g.open_until.max(until);
                    self.wake_for_slots(&g);
                    return;
                }
                g.stale_probes = g.stale_probes.saturating_add(g.probes_in_flight);
                g.phase = Phase::Open;
                g.open_until = until;
                g.cause = cause;
                g.probes_in_flight = 0;
                g.probe_successes = 0;
                g.granted = 0;
                g.asked_at = None;
                if g.failures == 0 {
                    g.last_failure = Some(SystemTime::now());
                }
                if let Some(ratio) = g.ratio.as_mut() {
                    ratio.clear();
                }
                self.wake_for_slots(&g);
            }
            RemoteBreaker::Closed { epoch } => {
                if epoch < g.epoch {
                    return;
                }
                g.epoch = epoch;
                if g.phase != Phase::Closed {
                    g.stale_probes = g.stale_probes.saturating_add(g.probes_in_flight);
                    g.close();
                }
                g.granted = 0;
                g.asked_at = None;
                self.wake_for_slots(&g);
            }
            RemoteBreaker::Probes { epoch, granted } => {
                if epoch < g.epoch || g.phase == Phase::Closed {
                    return;
                }
                g.epoch = epoch;
                g.granted = g.granted.saturating_add(granted);
                if granted > 0 {
                    g.asked_at = None;
                }
                self.wake_for_slots(&g);
            }
        }
    }

    /// Adopt a cluster period learnt from a reply (the change itself already happened here).
    pub fn adopt_epoch(&self, epoch: u64) {
        let mut g = self.inner.lock();
        g.epoch = g.epoch.max(epoch);
    }

    /// The cluster period last seen, when linked (0 before any).
    pub fn epoch(&self) -> u64 {
        self.inner.lock().epoch
    }

    /// Wake every caller queued here to look again (the link went down or came back, which
    /// changes who decides the probe slots).
    pub fn nudge(&self) {
        let g = self.inner.lock();
        g.waiters.wake_all();
    }

    /// What a resync publishes: open with the rest left and why, if it is open here now.
    pub fn open_rest(&self, now: Instant) -> Option<(Duration, OpenCause)> {
        let g = self.inner.lock();
        (g.phase == Phase::Open && g.open_until > now).then(|| (g.open_until - now, g.cause))
    }
}

impl Queue for Breaker {
    fn leave(&self, ticket: u64) {
        let mut g = self.inner.lock();
        if g.waiters.remove(ticket) {
            self.wake_for_slots(&g);
        }
    }
}

/// `now + d`, with `d` capped at [`MAX_OPEN`] so it cannot overflow.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_OPEN)).unwrap_or(now)
}

/// Whether an error kind says the instance cannot serve as configured (it trips the breaker).
pub fn trips_breaker(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::AuthError | ErrorKind::ModelNotFound)
}

impl Inner {
    /// Whether this outcome belongs to a probe of an earlier half-open period (and forget it).
    /// Which in-flight probe is the stale one cannot be told apart, so the first outcomes to come
    /// back are taken as the stale ones; the accounting stays balanced either way.
    fn take_stale(&mut self, admission: Admission) -> bool {
        if admission == Admission::Probe && self.stale_probes > 0 {
            self.stale_probes -= 1;
            true
        } else {
            false
        }
    }

    fn visible_state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open if now >= self.open_until => BreakerState::HalfOpen,
            Phase::Open => BreakerState::Open,
            Phase::HalfOpen => BreakerState::HalfOpen,
        }
    }

    fn close(&mut self) {
        self.granted = 0;
        self.asked_at = None;
        self.phase = Phase::Closed;
        self.cause = OpenCause::Failures;
        self.failures = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        if let Some(r) = self.ratio.as_mut() {
            r.clear();
        }
    }
}

/// Outcome counts over a sliding window, kept as a ring of fixed-width time buckets so recording
/// is O(1) and never allocates after construction.
struct RatioWindow {
    epoch: Instant,
    width: Duration,
    /// (bucket number since `epoch`, successes, failures)
    buckets: Vec<(u64, u32, u32)>,
}

impl RatioWindow {
    fn new(window: Duration) -> Self {
        // About one bucket per second, at least 10 (so short windows still slide smoothly) and at
        // most 120 (so a long window stays cheap to sum).
        let n = (window.as_secs_f64().ceil() as usize).clamp(10, 120);
        let width = (window / n as u32).max(Duration::from_micros(1));
        Self { epoch: Instant::now(), width, buckets: vec![(u64::MAX, 0, 0); n] }
    }

    fn bucket_no(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.width.as_nanos()) as u64
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let no = self.bucket_no(now);
        let n = self.buckets.len();
        let b = &mut self.buckets[(no % n as u64) as usize];
        if b.0 != no {
            *b = (no, 0, 0);
        }
        if failed {
            b.2 = b.2.saturating_add(1);
        } else {
            b.1 = b.1.saturating_add(1);
        }
    }

    fn trips(&self, now: Instant, limit: f64, min_requests: u32) -> bool {
        let cur = self.bucket_no(now);
        let n = self.buckets.len() as u64;
        let (mut ok, mut bad) = (0u64, 0u64);
        for &(no, s, f) in &self.buckets {
            if no != u64::MAX && no <= cur && cur - no < n {
                ok += s as u64;
                bad += f as u64;
            }
        }
        let total = ok + bad;
        total > 0 && total >= min_requests.max(1) as u64 && (bad as f64 / total as f64) >= limit
    }

    fn clear(&mut self) {
        for b in &mut self.buckets {
            *b = (u64::MAX, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Barrier};

    fn cfg(threshold: u32, recovery_ms: u64, probes: u32) -> BreakerConfig {
        BreakerConfig { failure_threshold: threshold, recovery_time: Duration::from_millis(recovery_ms), half_open_requests: probes, ..Default::default() }
    }

    #[test]
    fn new_settings_keep_the_breaker_its_phase_and_its_waiters() {
        use crate::state::store::{MemoryStore, StateStore};
        use crate::state::wait::WaitCtx;
        let store = MemoryStore::new();
        let now = Instant::now();
        let b = store.breaker("i", &cfg(1, 50, 1));
        fail_n(&b, 1, now);
        let later = now + Duration::from_millis(60);
        assert_eq!(b.admit(later, &mut WaitCtx::new()), Ok(Admission::Probe), "half-open: the one probe");
        let mut ctx = WaitCtx::new();
        ctx.start_waiting();
        assert_eq!(b.admit(later, &mut ctx), Err(BreakerBlock::ProbesBusy), "a second caller waits for a slot");
        let woken = ctx.waiter().expect("waiting").clone();
        // A reload with two probe slots: the same breaker, still half-open, and the waiter is
        // told to look again (and now finds the second slot).
        let again = store.breaker("i", &cfg(1, 50, 2));
        assert!(Arc::ptr_eq(&b, &again));
        assert_eq!(again.config().half_open_requests, 2);
        assert_eq!(again.state(later), BreakerState::HalfOpen);
        assert!(woken.is_woken(), "the waiter was woken to look again");
        assert_eq!(b.admit(later, &mut ctx), Ok(Admission::Probe));
        // An open breaker stays open across new settings.
        let c = store.breaker("j", &cfg(1, 60_000, 1));
        fail_n(&c, 1, now);
        let c2 = store.breaker("j", &cfg(5, 60_000, 3));
        assert!(Arc::ptr_eq(&c, &c2));
        assert_eq!(c2.state(now), BreakerState::Open);
    }

    fn fail_n(b: &Breaker, n: u32, now: Instant) {
        for _ in 0..n {
            if let Some(a) = b.try_admit(now) {
                b.on_failure(a, now, None);
            }
        }
    }

    #[test]
    fn opens_at_threshold_from_config() {
        let b = Breaker::new(BreakerConfig::default());
        let t = Instant::now();
        fail_n(&b, 4, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.snapshot(t).failure_count, 4);
        fail_n(&b, 2, t); // the 5th opens it; the 6th is refused
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(b.try_admit(t), None);
        assert!(!b.would_admit(t));
        let s = b.snapshot(t);
        assert_eq!(s.failure_count, 5);
        assert_eq!(s.failure_threshold, 5);
        assert!(s.last_failure_time.is_some());
        assert_eq!(s.open_for, Some(Duration::from_secs(60)));
    }

    #[test]
    fn success_resets_consecutive_count() {
        let b = Breaker::new(cfg(3, 1000, 1));
        let t = Instant::now();
        fail_n(&b, 2, t);
        b.on_success(b.try_admit(t).unwrap(), t);
        fail_n(&b, 2, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        fail_n(&b, 1, t);
        assert_eq!(b.state(t), BreakerState::Open);
    }

    #[test]
    fn open_for_recovery_time_then_half_open_then_closes() {
        let b = Breaker::new(cfg(2, 1000, 2));
        let t = Instant::now();
        fail_n(&b, 2, t);
        let before = t + Duration::from_millis(999);
        assert_eq!(b.state(before), BreakerState::Open);
        assert_eq!(b.try_admit(before), None);
        let after = t + Duration::from_millis(1000);
        assert_eq!(b.state(after), BreakerState::HalfOpen);
        assert!(b.would_admit(after));
        let p1 = b.try_admit(after).unwrap();
        let p2 = b.try_admit(after).unwrap();
        assert_eq!((p1, p2), (Admission::Probe, Admission::Probe));
        assert_eq!(b.try_admit(after), None, "only 2 probes at once");
        assert_eq!(b.snapshot(after).probes_in_flight, 2);
        b.on_success(p1, after);
        assert_eq!(b.state(after), BreakerState::HalfOpen, "one success of two is not enough");
        b.on_success(p2, after);
        assert_eq!(b.state(after), BreakerState::Closed);
        assert_eq!(b.snapshot(after).failure_count, 0);
        assert_eq!(b.try_admit(after), Some(Admission::Normal));
    }

    #[test]
    fn probe_failure_reopens_for_a_fresh_period() {
        let b = Breaker::new(cfg(1, 100, 1));
        let t = Instant::now();
        fail_n(&b, 1, t);
        let t1 = t + Duration::from_millis(150);
        let p = b.try_admit(t1).unwrap();
        assert_eq!(p, Admission::Probe);
        b.on_failure(p, t1, None);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert_eq!(b.state(t1 + Duration::from_millis(99)), BreakerState::Open);
        assert_eq!(b.state(t1 + Duration::from_millis(100)), BreakerState::HalfOpen);
    }

    #[test]
    fn retry_after_extends_open_period() {
        let b = Breaker::new(cfg(1, 100, 1));
        let t = Instant::now();
        let a = b.try_admit(t).unwrap();
        b.on_failure(a, t, Some(Duration::from_secs(5)));
        assert_eq!(b.state(t + Duration::from_millis(200)), BreakerState::Open);
        assert_eq!(b.snapshot(t).open_for, Some(Duration::from_secs(5)));
        assert_eq!(b.state(t + Duration::from_secs(5)), BreakerState::HalfOpen);
        // A shorter hint than recovery_time changes nothing.
        let b = Breaker::new(cfg(1, 100, 1));
        let a = b.try_admit(t).unwrap();
        b.on_failure(a, t, Some(Duration::from_millis(10)));
        assert_eq!(b.state(t + Duration::from_millis(50)), BreakerState::Open);
        // A late straggler's hint extends an already open period.
        let b = Breaker::new(cfg(1, 100, 1));
        let a1 = b.try_admit(t).unwrap();
        let a2 = b.try_admit(t).unwrap();
        b.on_failure(a1, t, None);
        b.on_failure(a2, t, Some(Duration::from_secs(2)));
        assert_eq!(b.state(t + Duration::from_secs(1)), BreakerState::Open);
    }

    #[test]
    fn neutral_outcomes_do_not_count() {
        let b = Breaker::new(cfg(2, 100, 1));
        let t = Instant::now();
        fail_n(&b, 1, t);
        for _ in 0..10 {
            b.on_neutral(b.try_admit(t).unwrap());
        }
        assert_eq!(b.snapshot(t).failure_count, 1, "neutral neither counts nor resets");
        fail_n(&b, 1, t);
        assert_eq!(b.state(t), BreakerState::Open);
        // A neutral probe frees its slot without closing or reopening.
        let t1 = t + Duration::from_millis(100);
        let p = b.try_admit(t1).unwrap();
        assert_eq!(b.try_admit(t1), None);
        b.on_neutral(p);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let p = b.try_admit(t1).unwrap();
        b.on_success(p, t1);
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn reset_closes_with_zero_counts() {
        let b = Breaker::new(cfg(1, 60_000, 1));
        let t = Instant::now();
        fail_n(&b, 1, t);
        assert_eq!(b.state(t), BreakerState::Open);
        b.reset();
        let s = b.snapshot(t);
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(s.failure_count, 0);
        assert!(s.last_failure_time.is_none());
        assert_eq!(b.try_admit(t), Some(Admission::Normal));
    }

    #[test]
    fn late_normal_outcomes_do_not_close_or_reopen() {
        let b = Breaker::new(cfg(1, 100, 1));
        let t = Instant::now();
        let a1 = b.try_admit(t).unwrap();
        let a2 = b.try_admit(t).unwrap();
        b.on_failure(a1, t, None);
        b.on_success(a2, t);
        assert_eq!(b.state(t), BreakerState::Open, "a straggler's success does not close it");
    }

    #[test]
    fn stale_probe_outcome_does_not_affect_next_half_open() {
        let b = Breaker::new(cfg(1, 100, 2));
        let t = Instant::now();
        fail_n(&b, 1, t);
        let t1 = t + Duration::from_millis(100);
        let p1 = b.try_admit(t1).unwrap();
        let p2 = b.try_admit(t1).unwrap();
        b.on_failure(p1, t1, None); // reopens; p2 is now stale
        let t2 = t1 + Duration::from_millis(100);
        let p3 = b.try_admit(t2).unwrap();
        b.on_success(p2, t2); // swallowed
        assert_eq!(b.state(t2), BreakerState::HalfOpen);
        let p4 = b.try_admit(t2).unwrap();
        assert_eq!(b.try_admit(t2), None);
        b.on_success(p3, t2);
        b.on_success(p4, t2);
        assert_eq!(b.state(t2), BreakerState::Closed);
    }

    #[test]
    fn failure_ratio_mode_opens_over_window() {
        let c = BreakerConfig { failure_threshold: 100, failure_ratio: Some(0.5), window: Duration::from_secs(10), min_requests: 10, ..cfg(100, 1000, 1) };
        let b = Breaker::new(c);
        let t = Instant::now();
        // Alternate: never 100 consecutive failures, ratio reaches 0.5 only once 10 samples exist.
        for i in 0..9 {
            let a = b.try_admit(t).unwrap();
            if i % 2 == 0 {
                b.on_failure(a, t, None);
            } else {
                b.on_success(a, t);
            }
        }
        assert_eq!(b.state(t), BreakerState::Closed, "9 samples < min_requests");
        let a = b.try_admit(t).unwrap();
        b.on_failure(a, t, None); // 6 failures / 10
        assert_eq!(b.state(t), BreakerState::Open);

        // Old samples slide out of the window.
        let b = Breaker::new(c);
        for _ in 0..9 {
            let a = b.try_admit(t).unwrap();
            b.on_failure(a, t, None);
        }
        let later = t + Duration::from_secs(11);
        let a = b.try_admit(later).unwrap();
        b.on_success(a, later);
        let a = b.try_admit(later).unwrap();
        b.on_failure(a, later, None);
        assert_eq!(b.state(later), BreakerState::Closed, "old failures expired");
    }

    #[test]
    fn half_open_admits_exactly_n_under_contention() {
        let b = Arc::new(Breaker::new(cfg(1, 10, 3)));
        let t = Instant::now();
        fail_n(&b, 1, t);
        let t1 = t + Duration::from_millis(10);
        let admitted = Arc::new(AtomicU32::new(0));
        let barrier = Arc::new(Barrier::new(100));
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let (b, admitted, barrier) = (b.clone(), admitted.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..10 {
                        if let Some(a) = b.try_admit(t1) {
                            assert_eq!(a, Admission::Probe);
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 3);
        assert_eq!(b.snapshot(t1).probes_in_flight, 3);
    }
}
