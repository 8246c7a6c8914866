//! The fallback chain's effects: lease, attempt, record, sleep, as [`super::policy`] decides.
//!
//! The chain is bounded by the number of targets in the plan (the group's `max_attempts`), the
//! tries allowed per target, and the call's deadline; it never sleeps past the deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acquire::{acquire, remaining, Acquired};
use super::attempt::{self, Success};
use super::hedge::hedged;
use super::policy::{ChainState, ChainView, Failure, Rules, Step};
use super::stream::ChatStream;
use super::trace::Trace;
use crate::engine::selector::{QueueSlot, Selector};
use crate::error::{AttemptRole, Error};
use crate::observe::events::EventKind;
use crate::types::{ChatRequest, ChatResponse};

/// One step of the chain: a set of instances and how many tries it gets.
#[derive(Clone)]
pub struct Target {
    /// `"group.echelon"` or the pool name.
    pub label: String,
    /// The instances and their selection.
    pub selector: Arc<Selector>,
    /// Tries on this target (first try + retries).
    pub max_tries: u32,
}

/// A whole chain and its rules.
#[derive(Clone)]
pub struct Plan {
    /// The targets, in trial order.
    pub targets: Vec<Target>,
    /// Waited before moving to the next target (only when configured; zero by default).
    pub retry_delay: Duration,
    /// Route around `ContentFiltered` instead of surfacing it.
    pub content_filter_fallback: bool,
    /// After a failure on a provider, prefer instances of other providers.
    pub provider_failover: bool,
    /// Start a second attempt on the next target when the first has not answered (or, when
    /// streaming, produced its first token) after this long; keep the first to succeed.
    pub hedge_after: Option<Duration>,
}

impl Plan {
    /// A one-target plan with no chain rules (a pool, a model, an instance, an echelon).
    pub fn single(label: String, selector: Arc<Selector>, max_tries: u32) -> Plan {
        Plan {
            targets: vec![Target { label, selector, max_tries }],
            retry_delay: Duration::ZERO,
            content_filter_fallback: false,
            provider_failover: false,
            hedge_after: None,
        }
    }

    fn rules(&self) -> Rules {
        Rules { retry_delay: self.retry_delay, content_filter_fallback: self.content_filter_fallback, provider_failover: self.provider_failover }
    }
}

impl ChainView for Plan {
    fn targets(&self) -> usize {
        self.targets.len()
    }
    fn max_tries(&self, target: usize) -> u32 {
        self.targets[target].max_tries
    }
    fn instances(&self, target: usize) -> usize {
        self.targets[target].selector.instances.len()
    }
    fn context_window(&self, target: usize, index: usize) -> u32 {
        self.targets[target].selector.instances[index].context_window
    }
}

/// What a successful walk produced.
pub enum Walked {
    /// A whole response.
    Chat(ChatResponse),
    /// A stream past its first token.
    Stream(ChatStream),
}

/// Estimated token cost of a request for TPM admission (prompt estimate + expected output).
pub fn estimate_tokens(req: &ChatRequest) -> u64 {
    req.estimate_prompt_tokens() as u64 + req.params.max_tokens.unwrap_or(256) as u64
}

/// Walk `plan` for `req`. `stream` selects streaming attempts (the walk commits to a target
/// once its first token arrived; before that, failures fall back like any other). `slot` is a
/// wait-queue place the caller already holds (pool admission), if any.
///
/// # Errors
/// The error of the last attempt (or of the last target that could not serve), or
/// `AllTargetsFailed` when several attempts failed (see [`Trace::into_error`]).
///
/// # Cancel safety
/// Cancel-safe: dropping the future aborts the attempt in flight (its lease releases
/// everything as neutral) and leaves any wait queue.
pub async fn walk(
    plan: &Plan,
    req: &ChatRequest,
    start: Instant,
    deadline: Option<Instant>,
    stream: bool,
    mut slot: Option<QueueSlot>,
) -> Result<Walked, Error> {
    let est = estimate_tokens(req);
    let rules = plan.rules();
    let mut trace = Trace::new(start);
    let mut chain = ChainState::new();
    let mut hedge_pending = plan.hedge_after.is_some();
    loop {
        let t0 = Instant::now();
        let Acquired { target, index, lease, skipped } = match acquire(plan, &chain, est, deadline, &mut slot).await {
            Ok(a) => a,
            Err(na) => {
                for (t, e) in &na.skipped {
                    let label = &plan.targets[*t].label;
                    trace.push(label, None, trace.role_for(label), t0, Some(e));
                }
                let label = plan.targets.get(na.target).map_or("", |t| t.label.as_str());
                trace.push(label, None, trace.role_for(label), t0, Some(&na.error));
                return Err(trace.into_error(na.error));
            }
        };
        // Out of the wait queue once leased.
        slot = None;
        for (t, e) in &skipped {
            let label = &plan.targets[*t].label;
            trace.push(label, None, trace.role_for(label), t0, Some(e));
        }
        if target != chain.pos {
            fallback_event(plan, chain.pos, target, skipped.last().map(|(_, e)| e));
        }
        chain.moved_to(target);
        chain.started_attempt();
        let inst = lease.instance().clone();
        let label = &plan.targets[target].label;
        let role = trace.role_for(label);
        let t_attempt = Instant::now();
        let outcome = if hedge_pending && trace.attempts.is_empty() {
            hedge_pending = false;
            let hedge_target = plan.targets.get(target + 1).unwrap_or(&plan.targets[target]);
            let after = plan.hedge_after.unwrap_or_default();
            // Boxed: the two-attempt race is rare and would otherwise double every walk's size.
            let h = Box::pin(hedged(lease, label, hedge_target, after, req, deadline, stream, est)).await;
            if let Some(l) = &h.loser {
                trace.push(&l.target, Some(&l.instance), AttemptRole::Hedge, l.started, Some(&l.error));
            }
            if h.hedge_won {
                // The hedge won: report it under its own target.
                match h.result {
                    Ok(Success::Chat(mut resp)) => {
                        trace.push(&hedge_target.label, Some(&h.winner), AttemptRole::Hedge, h.started, None);
                        resp.attempts = trace.attempts;
                        return Ok(Walked::Chat(resp));
                    }
                    Ok(Success::Stream(open)) => {
                        return Ok(Walked::Stream(ChatStream::new(open, trace, hedge_target.label.clone(), AttemptRole::Hedge)));
                    }
                    Err(e) => Err(e),
                }
            } else {
                h.result
            }
        } else {
            attempt::run(lease, req, deadline, stream).await
        };
        let mut e = match outcome {
            Ok(Success::Chat(mut resp)) => {
                trace.push(label, Some(&inst), role, t_attempt, None);
                resp.attempts = trace.attempts;
                return Ok(Walked::Chat(resp));
            }
            Ok(Success::Stream(open)) => return Ok(Walked::Stream(ChatStream::new(open, trace, label.clone(), role))),
            Err(e) => e,
        };
        e.instance.get_or_insert_with(|| inst.id.clone());
        trace.push(label, Some(&inst), role, t_attempt, Some(&e));
        let failure = Failure {
            kind: e.kind,
            timeout: e.timeout,
            retry_after: e.retry_after,
            index,
            provider: &inst.provider,
            retry: inst.retry,
            remaining: remaining(deadline),
            jitter: rand::random::<f64>(),
        };
        let from = chain.pos;
        let step = chain.after_failure(plan, &rules, &failure);
        let pause = match step {
            Step::Stop => return Err(trace.into_error(e)),
            Step::Retry { pause } => {
                retry_event(label, &inst, chain.tries + 1, pause, &e);
                pause
            }
            Step::Next { pause } => {
                fallback_event(plan, from, chain.pos, Some(&e));
                pause
            }
        };
        // The error is not kept across the pause: a value alive at a suspension point takes
        // room in every in-flight request's future.
        drop(e);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn fallback_event(plan: &Plan, from: usize, to: usize, error: Option<&Error>) {
    let Some(bus) = plan.targets.get(to).and_then(|t| t.selector.instances.first()).and_then(|i| i.event_bus()) else { return };
    bus.emit(log::Level::Debug, || EventKind::Fallback {
        from: plan.targets[from].label.clone(),
        to: plan.targets[to].label.clone(),
        error: error.map(|e| e.kind),
    });
}

fn retry_event(target: &str, inst: &crate::engine::instance::Instance, attempt: u32, delay: Duration, e: &Error) {
    if let Some(bus) = inst.event_bus() {
        bus.emit(log::Level::Debug, || EventKind::Retry {
            target: target.to_string(),
            instance: inst.id.clone(),
            attempt,
            delay: delay.as_secs_f64(),
            error: e.kind,
        });
    }
}
