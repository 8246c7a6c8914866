//! Hedged requests: when the first attempt has not answered (or, streaming, produced its first
//! token) after a while, start a second one on another instance and keep whichever succeeds
//! first. The loser is dropped, which aborts its HTTP request and releases its slot as neutral
//! (its unused token estimate is given back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attempt::{self, Success};
use super::walk::Target;
use crate::engine::instance::Instance;
use crate::engine::lease::Lease;
use crate::engine::selector::{Filter, Pick};
use crate::error::{Error, ErrorKind};
use crate::state::wait::WaitCtx;
use crate::types::ChatRequest;

/// The attempt that lost a hedge race (cancelled, or failed while the other won).
pub struct Loser {
    /// Its target label.
    pub target: String,
    /// Its instance.
    pub instance: Arc<Instance>,
    /// When it started.
    pub started: Instant,
    /// How it ended.
    pub error: Error,
}

/// How a hedged attempt ended.
pub struct Hedged {
    /// The outcome kept.
    pub result: Result<Success, Error>,
    /// The instance it came from.
    pub winner: Arc<Instance>,
    /// When the winner's attempt started.
    pub started: Instant,
    /// Whether the winner is the hedge (not the first attempt).
    pub hedge_won: bool,
    /// The other attempt, if one was started.
    pub loser: Option<Loser>,
}

/// Run `lease`'s attempt; if it has not succeeded after `after`, also start one on `hedge`
/// (on capacity free at that moment, never queueing for it, and never on `lease`'s own
/// instance) and keep whichever succeeds first.
#[allow(clippy::too_many_arguments)]
pub async fn hedged(
    lease: Lease,
    primary_label: &str,
    hedge: &Target,
    after: Duration,
    req: &ChatRequest,
    deadline: Option<Instant>,
    stream: bool,
    est: u64,
) -> Hedged {
    let a_inst = lease.instance().clone();
    let ta = Instant::now();
    let fut_a = attempt::run(lease, req, deadline, stream);
    tokio::pin!(fut_a);
    tokio::select! {
        r = &mut fut_a => return Hedged { result: r, winner: a_inst, started: ta, hedge_won: false, loser: None },
        _ = tokio::time::sleep(after) => {}
    }
    let avoid: Vec<usize> = hedge.selector.index_of(&a_inst).into_iter().collect();
    let filter = Filter { avoid: &avoid, ..Filter::default() };
    let hedge_lease = match hedge.selector.try_pick(Instant::now(), est, filter, &mut WaitCtx::new()) {
        Pick::Leased { lease, .. } if !Arc::ptr_eq(lease.instance(), &a_inst) => lease,
        _ => return Hedged { result: fut_a.await, winner: a_inst, started: ta, hedge_won: false, loser: None },
    };
    let b_inst = hedge_lease.instance().clone();
    let tb = Instant::now();
    let fut_b = attempt::run(hedge_lease, req, deadline, stream);
    tokio::pin!(fut_b);
    let cancelled = |inst: &Arc<Instance>, target: &str, started: Instant| Loser {
        target: target.to_string(),
        instance: inst.clone(),
        started,
        error: Error::new(ErrorKind::Cancelled, "cancelled: the other hedged attempt answered first"),
    };
    tokio::select! {
        ra = &mut fut_a => match ra {
            Ok(s) => Hedged { result: Ok(s), winner: a_inst, started: ta, hedge_won: false, loser: Some(cancelled(&b_inst, &hedge.label, tb)) },
            Err(ea) => match fut_b.await {
                Ok(s) => Hedged {
                    result: Ok(s),
                    winner: b_inst,
                    started: tb,
                    hedge_won: true,
                    loser: Some(Loser { target: primary_label.to_string(), instance: a_inst, started: ta, error: ea }),
                },
                Err(eb) => Hedged {
                    result: Err(ea),
                    winner: a_inst,
                    started: ta,
                    hedge_won: false,
                    loser: Some(Loser { target: hedge.label.clone(), instance: b_inst, started: tb, error: eb }),
                },
            },
        },
        rb = &mut fut_b => match rb {
            Ok(s) => Hedged { result: Ok(s), winner: b_inst, started: tb, hedge_won: true, loser: Some(cancelled(&a_inst, primary_label, ta)) },
            Err(eb) => Hedged {
                result: fut_a.await,
                winner: a_inst,
                started: ta,
                hedge_won: false,
                loser: Some(Loser { target: hedge.label.clone(), instance: b_inst, started: tb, error: eb }),
            },
        },
    }
}
