//! The fallback chain: walk an ordered list of targets (echelons, pools), retrying within a
//! target and moving down the chain by the error-class rules of [`crate::engine::chain::attempt::next_step`].
//!
//! The chain is bounded by the number of targets in the plan (the group's `max_attempts`), the
//! tries allowed per target, and the call's deadline; it never sleeps past the deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::chain::attempt::{self, next_step, sleep_within, ChatStream, Next, Success, Trace};
use crate::engine::chain::backoff;
use crate::error::{AttemptRole, Error, ErrorKind};
use crate::observe::events::EventKind;
use crate::engine::instance::Instance;
use crate::engine::selector::{Filter, Selector};
use crate::types::{ChatRequest, ChatResponse};

/// One step of the chain: a set of instances and how many tries it gets.
#[derive(Clone)]
pub struct Target {
    /// `"group.echelon"` or the pool name.
    pub label: String,
    pub selector: Arc<Selector>,
    /// Tries on this target (first try + retries).
    pub max_tries: u32,
}

/// A whole chain and its rules.
#[derive(Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// Waited before moving to the next target.
    pub retry_delay: Duration,
    /// Route around `ContentFiltered` instead of surfacing it.
    pub content_filter_fallback: bool,
    /// After a failure on a provider, prefer instances of other providers.
    pub provider_failover: bool,
    /// Start a second attempt on the next target when the first has not answered (or, when
    /// streaming, produced its first token) after this long; keep the first to succeed.
    pub hedge_after: Option<Duration>,
}

/// What a successful walk produced.
pub enum Walked {
    Chat(ChatResponse),
    Stream(ChatStream),
}

/// Estimated token cost of a request for TPM admission (prompt estimate + expected output).
pub fn estimate_tokens(req: &ChatRequest) -> u64 {
    req.estimate_prompt_tokens() as u64 + req.params.max_tokens.unwrap_or(256) as u64
}

fn untried(target: &Target, tried: &[Arc<Instance>]) -> bool {
    target.selector.instances.iter().any(|i| !tried.iter().any(|t| Arc::ptr_eq(t, i)))
}

/// Walk `plan` for `req`. `stream` selects streaming attempts (the walk commits to a target
/// once its first token arrived; before that, failures fall back like any other).
pub async fn walk(plan: &Plan, req: &ChatRequest, start: Instant, deadline: Option<Instant>, stream: bool) -> Result<Walked, Error> {
    let est = estimate_tokens(req);
    let mut trace = Trace::new(start);
    let mut last_err: Option<Error> = None;
    let mut min_context: Option<u32> = None;
    let mut failed_providers: Vec<String> = Vec::new();
    let mut prev_label: Option<&str> = None;

    for target in &plan.targets {
        if let Some(n) = min_context {
            if !target.selector.instances.iter().any(|i| i.context_window > n) {
                continue;
            }
        }
        if last_err.is_some() && !sleep_within(plan.retry_delay, deadline).await {
            break;
        }
        if let (Some(from), Some(bus)) = (prev_label, target.selector.instances.first().and_then(|i| i.event_bus())) {
            bus.emit(log::Level::Debug, || EventKind::Fallback {
                from: from.to_string(),
                to: target.label.clone(),
                error: last_err.as_ref().map(|e| e.kind),
            });
        }
        prev_label = Some(&target.label);
        let mut tried: Vec<Arc<Instance>> = Vec::new();
        let mut tries = 0u32;
        let mut role = if trace.attempts.is_empty() { AttemptRole::Primary } else { AttemptRole::Fallback };
        while tries < target.max_tries.max(1) {
            tries += 1;
            let avoid_providers = plan.provider_failover
                && !failed_providers.is_empty()
                && target.selector.instances.iter().any(|i| !failed_providers.contains(&i.provider));
            let filter = match min_context {
                Some(n) => Filter::ContextAbove(n),
                None if avoid_providers => Filter::OtherProviders(&failed_providers),
                None => Filter::Avoid(&tried),
            };
            let t0 = Instant::now();
            let lease = match target.selector.acquire(est, deadline, filter).await {
                Ok(l) => l,
                Err(e) => {
                    trace.push(&target.label, None, role, t0, Some(&e));
                    let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
                    last_err = Some(e);
                    if out_of_time {
                        return Err(trace.into_error(last_err.unwrap_or_else(|| Error::new(ErrorKind::QueueTimeout, "deadline"))));
                    }
                    break;
                }
            };
            let inst = lease.instance().clone();
            // Set by a retry that must wait. The wait happens outside the block that owns the
            // attempt's outcome, so the outcome is not kept alive across it: a value alive at
            // a suspension point takes room in every in-flight request's future.
            let mut pause: Option<Duration> = None;
            {
                let outcome = match plan.hedge_after {
                    Some(h) if trace.attempts.is_empty() && tries == 1 => {
                        let hedge_target = plan.targets.get(1).unwrap_or(target);
                        // Boxed: the two-attempt race is rare and would otherwise double every walk's size.
                        let (res, winner, winner_started, loser) = Box::pin(hedged(lease, hedge_target, h, req, deadline, stream, est)).await;
                        if let Some(l) = loser {
                            trace.push(&l.target, Some(&l.instance), AttemptRole::Hedge, l.started, Some(&l.error));
                        }
                        if !Arc::ptr_eq(&winner, &inst) {
                            // The hedge won: report it under its own target.
                            match res {
                                Ok(Success::Chat(mut resp)) => {
                                    trace.push(&hedge_target.label, Some(&winner), AttemptRole::Hedge, winner_started, None);
                                    resp.attempts = trace.attempts;
                                    return Ok(Walked::Chat(resp));
                                }
                                Ok(Success::Stream(open)) => {
                                    return Ok(Walked::Stream(ChatStream::new(open, trace, hedge_target.label.clone(), AttemptRole::Hedge)));
                                }
                                Err(e) => Err(e),
                            }
                        } else {
                            res
                        }
                    }
                    _ => attempt::run(lease, req, deadline, stream).await,
                };
                match outcome {
                    Ok(Success::Chat(mut resp)) => {
                        trace.push(&target.label, Some(&inst), role, t0, None);
                        resp.attempts = trace.attempts;
                        return Ok(Walked::Chat(resp));
                    }
                    Ok(Success::Stream(open)) => {
                        return Ok(Walked::Stream(ChatStream::new(open, trace, target.label.clone(), role)));
                    }
                    Err(mut e) => {
                        e.instance.get_or_insert_with(|| inst.id.clone());
                        trace.push(&target.label, Some(&inst), role, t0, Some(&e));
                        tried.push(inst.clone());
                        let step = next_step(&e, &inst, plan.content_filter_fallback);
                        let retry_after = e.retry_after;
                        let error_kind = e.kind;
                        let retry_event = |delay: Duration| {
                            if let Some(bus) = inst.event_bus() {
                                bus.emit(log::Level::Debug, || EventKind::Retry {
                                    target: target.label.clone(),
                                    instance: inst.id.clone(),
                                    attempt: tries + 1,
                                    delay: delay.as_secs_f64(),
                                    error: error_kind,
                                });
                            }
                        };
                        last_err = Some(e);
                        role = AttemptRole::Retry;
                        // Whether the next try goes to the instance that just failed, which
                        // then waits out a backoff first; a different instance is tried at once.
                        let same_instance_again = match step {
                            Next::Stop | Next::NextTarget => break,
                            Next::LargerContext(n) => {
                                min_context = Some(min_context.map_or(n, |m| m.max(n)));
                                if !target.selector.instances.iter().any(|i| i.context_window > n) {
                                    break;
                                }
                                false
                            }
                            Next::OtherInstance => {
                                // A 429 without Retry-After on the target's last instance: back
                                // off (full jitter; the selector also waits out the 429
                                // cooldown) and retry it, budget permitting, then fall back.
                                // With a Retry-After, fall back at once instead.
                                let last = !untried(target, &tried);
                                if last && (error_kind != ErrorKind::RateLimited || retry_after.is_some()) {
                                    break;
                                }
                                last
                            }
                            Next::Retry => {
                                if plan.provider_failover && !failed_providers.contains(&inst.provider) {
                                    failed_providers.push(inst.provider.clone());
                                }
                                !untried(target, &tried)
                            }
                        };
                        if same_instance_again {
                            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                            match backoff::retry_delay(tries - 1, inst.retry.base_delay, inst.retry.max_delay, retry_after, remaining) {
                                Some(d) if tries < target.max_tries => {
                                    retry_event(d);
                                    pause = Some(d);
                                }
                                _ => break,
                            }
                        }
                        if pause.is_none() && tries < target.max_tries.max(1) {
                            retry_event(Duration::ZERO);
                        }
                    }
                }
            }
            if let Some(d) = pause {
                tokio::time::sleep(d).await;
            }
        }
        if let Some(e) = &last_err {
            if matches!(next_step_of(e, plan), Some(Next::Stop)) {
                break;
            }
        }
    }
    let last = last_err.unwrap_or_else(|| Error::new(ErrorKind::PoolExhausted, "no target can serve this request"));
    Err(trace.into_error(last))
}

/// Whether the last error stops the whole chain (independent of the instance).
fn next_step_of(e: &Error, plan: &Plan) -> Option<Next> {
    use crate::error::TimeoutKind;
    if e.timeout == Some(TimeoutKind::Deadline) {
        return Some(Next::Stop);
    }
    match e.kind {
        ErrorKind::BadRequest | ErrorKind::Cancelled | ErrorKind::Routing | ErrorKind::Config => Some(Next::Stop),
        ErrorKind::ContentFiltered if !plan.content_filter_fallback => Some(Next::Stop),
        _ => None,
    }
}

/// The attempt that lost a hedge race (cancelled, or failed while the other won).
struct Loser {
    target: String,
    instance: Arc<Instance>,
    started: Instant,
    error: Error,
}

/// Run `lease`'s attempt; if it has not succeeded after `after`, also start one on `hedge`
/// (another instance) and keep whichever succeeds first. The loser is dropped, which aborts its
/// HTTP request and releases its slot as neutral. Returns the outcome, the instance it came
/// from, when that instance's attempt started, and the loser for the trace.
#[allow(clippy::too_many_arguments)]
async fn hedged(
    lease: crate::engine::instance::Lease,
    hedge: &Target,
    after: Duration,
    req: &ChatRequest,
    deadline: Option<Instant>,
    stream: bool,
    est: u64,
) -> (Result<Success, Error>, Arc<Instance>, Instant, Option<Loser>) {
    let a_inst = lease.instance().clone();
    let ta = Instant::now();
    let fut_a = attempt::run(lease, req, deadline, stream);
    tokio::pin!(fut_a);
    tokio::select! {
        r = &mut fut_a => return (r, a_inst, ta, None),
        _ = tokio::time::sleep(after) => {}
    }
    // Only hedge onto capacity that is free now; never queue for it.
    let avoid = [a_inst.clone()];
    let hedge_lease = match hedge.selector.acquire(est, Some(Instant::now()), Filter::Avoid(&avoid)).await {
        Ok(l) if !Arc::ptr_eq(l.instance(), &a_inst) => l,
        _ => return (fut_a.await, a_inst, ta, None),
    };
    let b_inst = hedge_lease.instance().clone();
    let tb = Instant::now();
    let fut_b = attempt::run(hedge_lease, req, deadline, stream);
    tokio::pin!(fut_b);
    let lost = |inst: &Arc<Instance>, target: &str, started: Instant| Loser {
        target: target.to_string(),
        instance: inst.clone(),
        started,
        error: Error::new(ErrorKind::Cancelled, "cancelled: the other hedged attempt answered first"),
    };
    tokio::select! {
        ra = &mut fut_a => match ra {
            Ok(s) => (Ok(s), a_inst, ta, Some(lost(&b_inst, &hedge.label, tb))),
            Err(ea) => {
                let rb = fut_b.await;
                match rb {
                    Ok(s) => (Ok(s), b_inst, tb, Some(Loser { target: a_inst.group.clone() + "." + &a_inst.echelon, instance: a_inst, started: ta, error: ea })),
                    Err(eb) => (Err(ea), a_inst, ta, Some(Loser { target: hedge.label.clone(), instance: b_inst, started: tb, error: eb })),
                }
            }
        },
        rb = &mut fut_b => match rb {
            Ok(s) => (Ok(s), b_inst, tb, Some(lost(&a_inst, &(a_inst.group.clone() + "." + &a_inst.echelon), ta))),
            Err(eb) => (fut_a.await, a_inst, ta, Some(Loser { target: hedge.label.clone(), instance: b_inst, started: tb, error: eb })),
        },
    }
}
