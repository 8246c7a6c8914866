//! Getting a lease somewhere down the chain: the current target if it can serve now, else the
//! first later target that can, else waiting on every remaining target at once.
//!
//! A blocked target (open breakers, a cooldown, an exhausted RPM/TPM window, every instance
//! busy, a full queue) is a reason to look further down the chain, never an error by itself:
//! the call is served by the first target that can serve *now*. Only when none can does it
//! wait, queued in the line of every limit that holds back an instance it could use on any
//! remaining target, so the first slot freed anywhere in its chain wakes it (and it then takes
//! the highest target that can serve). Whether to wait, until when, or to give up is
//! [`super::policy::when_blocked`]'s decision: a busy target is waited for (a release will
//! come), a rate window or a provider's pause only if it ends before the deadline and, for a
//! provider's pause, within the instance's `max_delay` (the longest a retry waits); an open
//! breaker never is (fail fast).

use std::time::{Duration, Instant};

use super::policy::{when_blocked, ChainState, GiveUp, Wait};
use super::walk::Plan;
use crate::engine::lease::Lease;
use crate::engine::selector::{Blocked, Pick, QueueSlot};
use crate::error::{Error, ErrorKind};
use crate::state::wait::WaitCtx;

/// A lease and where it came from.
pub struct Acquired {
    /// Index of the target that served.
    pub target: usize,
    /// Index of the instance within that target.
    pub index: usize,
    /// The lease.
    pub lease: Lease,
    /// Targets passed over on the way (blocked), with why.
    pub skipped: Vec<(usize, Error)>,
}

/// Nothing could be leased.
pub struct NotAcquired {
    /// Why the call ends.
    pub error: Error,
    /// The target it gave up at (the first one it waited at or looked at).
    pub target: usize,
    /// Targets passed over before it, with why.
    pub skipped: Vec<(usize, Error)>,
}

/// Why a blocked target could not serve, as an error for the trace.
pub fn blocked_error(label: &str, b: &Blocked, now: Instant) -> Error {
    if b.admitted == 0 {
        Error::new(ErrorKind::PoolExhausted, format!("{label}: no instance this call may use (context window or filters)"))
    } else if b.down == b.admitted {
        let probes = b.down_until.map(|t| t.saturating_duration_since(now).as_secs_f64()).unwrap_or_default();
        Error::new(ErrorKind::CircuitOpen, format!("{label}: every instance's circuit breaker is open (probes in {probes:.1} s)"))
    } else if b.busy == 0 && (b.cool_until.is_some() || b.cool_beyond.is_some() || b.rate_until.is_some()) {
        let until = [b.cool_until, b.cool_beyond, b.rate_until].into_iter().flatten().min().unwrap_or(now);
        let cooling = b.cool_until.is_some() || b.cool_beyond.is_some();
        let what = if cooling { "cooling down (the provider asked for a pause)" } else { "at its RPM/TPM limit" };
        Error::new(ErrorKind::RateLimited, format!("{label}: every instance is {what}")).with_retry_after(Some(until.saturating_duration_since(now)))
    } else {
        Error::new(ErrorKind::PoolExhausted, format!("{label}: every instance is busy"))
    }
}

/// Lease an instance for the next attempt of the walk in `chain`, waiting (within `deadline`)
/// only when no remaining target can serve now. `slot` is the caller's place in a wait queue:
/// held over from pool admission (a pool counts one place per waiting call), or taken here at
/// the first target with room when the call has to wait.
///
/// # Errors
/// `CircuitOpen` when every instance left has its breaker open; `RateLimited` when the
/// rate limits or cooldowns lift only after the deadline; `PoolExhausted` when nothing may
/// serve or every queue is full; `QueueTimeout` when the deadline passes while waiting.
///
/// # Cancel safety
/// Cancel-safe: dropping the future leaves every limit's queue it joined (passing any wake-up
/// it got to the next waiter) and gives its queue place back.
pub async fn acquire(
    plan: &Plan,
    chain: &ChainState,
    est_tokens: u64,
    deadline: Option<Instant>,
    slot: &mut Option<QueueSlot>,
) -> Result<Acquired, NotAcquired> {
    // The common case, a target that can serve now, is decided here without waiting; only a
    // call that must wait pays for the waiting state (boxed, so it is not part of every
    // in-flight request's future).
    if let Look::Leased(a) = look(plan, chain, chain.pos, est_tokens, Instant::now(), &mut WaitCtx::new()) {
        return Ok(a);
    }
    Box::pin(acquire_waiting(plan, chain, est_tokens, deadline, slot)).await
}

/// What one look down the chain found.
enum Look {
    Leased(Acquired),
    /// Every target from the start of the look was blocked: each with why.
    Blocked(Vec<(usize, Blocked)>),
}

/// Try each target from `from` on, in order, leasing from the first that can serve now.
fn look(plan: &Plan, chain: &ChainState, from: usize, est_tokens: u64, now: Instant, ctx: &mut WaitCtx) -> Look {
    let mut blocked: Vec<(usize, Blocked)> = Vec::new();
    for t in from..plan.targets.len() {
        if !chain.eligible(plan, t) {
            continue;
        }
        match plan.targets[t].selector.try_pick(now, est_tokens, chain.filter(t), ctx) {
            Pick::Leased { lease, index } => {
                let skipped = blocked.iter().map(|(bt, b)| (*bt, blocked_error(&plan.targets[*bt].label, b, now))).collect();
                return Look::Leased(Acquired { target: t, index, lease, skipped });
            }
            Pick::Blocked(b) => blocked.push((t, b)),
        }
    }
    Look::Blocked(blocked)
}

async fn acquire_waiting(
    plan: &Plan,
    chain: &ChainState,
    est_tokens: u64,
    deadline: Option<Instant>,
    slot: &mut Option<QueueSlot>,
) -> Result<Acquired, NotAcquired> {
    let mut ctx = WaitCtx::new();
    let mut from = chain.pos;
    loop {
        let now = Instant::now();
        let blocked = match look(plan, chain, from, est_tokens, now, &mut ctx) {
            Look::Leased(a) => return Ok(a),
            Look::Blocked(b) => b,
        };
        // The queues a waiter joined are exactly those of its latest look: it leaves the ones
        // that no longer hold it back (passing their wake-ups on).
        ctx.retain_latest();
        let give_up = |error: Error, blocked: &[(usize, Blocked)]| {
            let target = blocked.first().map_or(from, |(t, _)| *t);
            let skipped = blocked.iter().skip(1).map(|(bt, b)| (*bt, blocked_error(&plan.targets[*bt].label, b, now))).collect();
            NotAcquired { error, target, skipped }
        };
        let summary: Vec<Blocked> = blocked.iter().map(|(_, b)| *b).collect();
        let wake_at = match when_blocked(&summary, now, deadline) {
            Wait::Until(t) => t,
            Wait::GiveUp(why) => {
                let first = blocked.first().map(|(t, b)| blocked_error(&plan.targets[*t].label, b, now));
                let error = match (why, first) {
                    (GiveUp::RateLimited { retry_after }, _) => {
                        let label = plan.targets.get(from).map_or("", |t| t.label.as_str());
                        Error::new(ErrorKind::RateLimited, format!("{label}: every target is rate limited or cooling down past the call's deadline"))
                            .with_retry_after(Some(retry_after))
                    }
                    (GiveUp::CircuitOpen, Some(e)) if e.kind == ErrorKind::CircuitOpen => e,
                    (GiveUp::CircuitOpen, _) => Error::new(ErrorKind::CircuitOpen, "every instance's circuit breaker is open"),
                    (GiveUp::NoInstance, Some(e)) => e,
                    (GiveUp::NoInstance, None) => Error::new(ErrorKind::PoolExhausted, "no target can serve this request"),
                };
                return Err(give_up(error, &blocked));
            }
        };
        if deadline.is_some_and(|d| now >= d) {
            let label = plan.targets.get(from).map_or("", |t| t.label.as_str());
            return Err(give_up(Error::new(ErrorKind::QueueTimeout, format!("{label}: no free slot before the deadline")), &blocked));
        }
        if !ctx.is_waiting() {
            // Take a place in line at the first blocked target with room; a full queue is a
            // reason to move further down.
            if slot.is_none() {
                let mut placed = None;
                for (t, _) in &blocked {
                    if let Some(s) = plan.targets[*t].selector.enter_queue() {
                        placed = Some((*t, s));
                        break;
                    }
                }
                let Some((t, s)) = placed else {
                    let label = plan.targets.get(from).map_or("", |t| t.label.as_str());
                    let e = Error::new(ErrorKind::PoolExhausted, format!("{label}: every instance is saturated and the wait queue is full"));
                    return Err(give_up(e, &blocked));
                };
                from = t;
                *slot = Some(s);
            }
            // Look again, this time joining the lines of whatever holds the call back: no
            // release can fall between that look and the sleep.
            ctx.start_waiting();
            continue;
        }
        let waiter = ctx.waiter().cloned().expect("waiting");
        match wake_at {
            Some(t) => {
                tokio::select! {
                    _ = waiter.wait() => {}
                    _ = tokio::time::sleep_until(t.into()) => {}
                }
            }
            None => waiter.wait().await,
        }
    }
}

/// How long until `deadline` (`None`: no deadline).
pub fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
