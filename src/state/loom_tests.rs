//! Loom models of the state layer's concurrency primitives: every interleaving of two or three
//! threads, checked for the properties the engine relies on.
//!
//! Run with `RUSTFLAGS="--cfg echelon_loom" cargo test --lib loom_` (scripts/test-all does, in
//! its own target directory, with a preemption bound of 2).

use std::time::{Duration, Instant};

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::config::BreakerConfig;
use crate::state::breaker::{Admission, Breaker};
use crate::state::limit::ConcurrencyLimit;
use crate::state::wait::WaitCtx;

/// Take a slot of `limit` the way the engine does: look, and if refused, queue and sleep until
/// woken, then look again.
fn acquire(limit: &std::sync::Arc<ConcurrencyLimit>) -> WaitCtx {
    let mut ctx = WaitCtx::new();
    if limit.try_acquire(&mut ctx) {
        return ctx;
    }
    let waiter = ctx.start_waiting().clone();
    loop {
        if limit.try_acquire(&mut ctx) {
            return ctx;
        }
        ctx.retain_latest();
        waiter.block();
    }
}

#[test]
fn loom_a_released_slot_always_reaches_the_waiter() {
    loom::model(|| {
        let limit = std::sync::Arc::new(ConcurrencyLimit::new(1));
        assert!(limit.try_acquire(&mut WaitCtx::new()));
        let l2 = limit.clone();
        let waiter = thread::spawn(move || {
            let _ctx = acquire(&l2);
            // Holding the slot now.
        });
        limit.release();
        waiter.join().unwrap();
        assert_eq!(limit.in_flight(), 1, "the waiter holds the one slot");
        assert_eq!(limit.waiting(), 0);
    });
}

#[test]
fn loom_two_waiters_never_overshoot_and_both_get_through() {
    loom::model(|| {
        let limit = std::sync::Arc::new(ConcurrencyLimit::new(1));
        let holders = Arc::new(AtomicU32::new(0));
        assert!(limit.try_acquire(&mut WaitCtx::new()));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (l, h) = (limit.clone(), holders.clone());
            threads.push(thread::spawn(move || {
                let ctx = acquire(&l);
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(n <= 1, "{n} holders of one slot");
                h.fetch_sub(1, Ordering::SeqCst);
                drop(ctx);
                l.release();
            }));
        }
        limit.release();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
    });
}

#[test]
fn loom_a_waiter_that_gives_up_passes_its_wake_up_on() {
    loom::model(|| {
        let limit = std::sync::Arc::new(ConcurrencyLimit::new(1));
        assert!(limit.try_acquire(&mut WaitCtx::new()));
        // The first in line, about to be cancelled.
        let mut quitter = WaitCtx::new();
        quitter.start_waiting();
        assert!(!limit.try_acquire(&mut quitter));
        let l2 = limit.clone();
        let patient = thread::spawn(move || {
            let _ctx = acquire(&l2);
        });
        let l3 = limit.clone();
        let releaser = thread::spawn(move || l3.release());
        drop(quitter);
        releaser.join().unwrap();
        patient.join().unwrap();
        assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));
    });
}

#[test]
fn loom_all_or_nothing_over_two_limits_leaks_nothing() {
    // Two callers each need an instance slot and the model's slot (both of size 1); one may
    // win both, the loser gives back what it took.
    loom::model(|| {
        let inst = std::sync::Arc::new(ConcurrencyLimit::new(1));
        let model = std::sync::Arc::new(ConcurrencyLimit::new(1));
        let winners = Arc::new(AtomicU32::new(0));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (i, m, w) = (inst.clone(), model.clone(), winners.clone());
            threads.push(thread::spawn(move || {
                let mut ctx = WaitCtx::new();
                if !i.try_acquire(&mut ctx) {
                    return;
                }
                if !m.try_acquire(&mut ctx) {
                    i.release();
                    return;
                }
                w.fetch_add(1, Ordering::SeqCst);
                m.release();
                i.release();
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert!(winners.load(Ordering::SeqCst) >= 1);
        assert_eq!((inst.in_flight(), model.in_flight()), (0, 0));
    });
}

#[test]
fn loom_half_open_admits_exactly_its_probes() {
    loom::model(|| {
        let cfg = BreakerConfig { failure_threshold: 1, recovery_time: Duration::ZERO, half_open_requests: 2, ..Default::default() };
        let breaker = std::sync::Arc::new(Breaker::new(cfg));
        let t = Instant::now();
        let a = breaker.try_admit(t).expect("closed");
        breaker.on_failure(a, t, None);
        let probes = Arc::new(AtomicU32::new(0));
        let mut threads = Vec::new();
        for _ in 0..3 {
            let (b, p) = (breaker.clone(), probes.clone());
            threads.push(thread::spawn(move || {
                if let Some(adm) = b.try_admit(t) {
                    assert_eq!(adm, Admission::Probe);
                    p.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn loom_a_probe_slot_freed_reaches_the_caller_waiting_for_it() {
    loom::model(|| {
        let cfg = BreakerConfig { failure_threshold: 1, recovery_time: Duration::ZERO, half_open_requests: 1, ..Default::default() };
        let breaker = std::sync::Arc::new(Breaker::new(cfg));
        let t = Instant::now();
        let a = breaker.try_admit(t).expect("closed");
        breaker.on_failure(a, t, None);
        let probe = breaker.try_admit(t).expect("the one probe");
        let b2 = breaker.clone();
        let waiter = thread::spawn(move || {
            let mut ctx = WaitCtx::new();
            let w = ctx.start_waiting().clone();
            loop {
                match b2.admit(t, &mut ctx) {
                    Ok(adm) => return adm,
                    Err(_) => {
                        ctx.retain_latest();
                        w.block();
                    }
                }
            }
        });
        // The probe ends without a verdict (cancelled): its slot goes to the waiter.
        breaker.on_neutral(probe);
        assert_eq!(waiter.join().unwrap(), Admission::Probe);
    });
}

/// A cluster that answers nothing by itself: the model threads play its grants.
struct Silent;

impl crate::state::limit::SlotSource for Silent {
    fn demand(&self) {}
}

#[test]
fn loom_a_cluster_grant_reaches_the_waiter_of_a_shared_limit() {
    loom::model(|| {
        // A limit shared with other processes, holding no slot yet: the waiter queues; the
        // grant (the lease task's answer) wakes it and it takes the granted slot.
        let limit = std::sync::Arc::new(ConcurrencyLimit::shared(4, std::sync::Arc::new(Silent)));
        let l2 = limit.clone();
        let waiter = thread::spawn(move || {
            let _ctx = acquire(&l2);
        });
        limit.cluster_grant(1);
        waiter.join().unwrap();
        assert_eq!((limit.in_flight(), limit.waiting()), (1, 0));
        assert_eq!(limit.cluster_view().0, 1);
    });
}

#[test]
fn loom_trimming_idle_slots_never_takes_one_in_use_or_promised() {
    loom::model(|| {
        let limit = std::sync::Arc::new(ConcurrencyLimit::shared(4, std::sync::Arc::new(Silent)));
        limit.cluster_grant(2);
        let l2 = limit.clone();
        let user = thread::spawn(move || {
            let mut ctx = WaitCtx::new();
            let got = l2.try_acquire(&mut ctx);
            if got {
                l2.release();
            }
            got
        });
        let trimmed = limit.cluster_trim(2, 0);
        let got = user.join().unwrap();
        let (cap, in_flight, _) = limit.cluster_view();
        assert_eq!(in_flight, 0);
        assert_eq!(cap + trimmed, 2, "every slot is either kept or handed back, once");
        // A caller that looked while both slots were idle may have lost the race to the trim,
        // never to a slot counted twice.
        assert!(got || trimmed == 2);
    });
}

struct Cluster {
    asked: AtomicU32,
}

impl crate::state::breaker::BreakerLink for Cluster {
    fn shared(&self) -> bool {
        true
    }
    fn changed(&self, _change: crate::state::breaker::BreakerChange) {}
    fn want_probes(&self, _epoch: u64) {
        self.asked.fetch_add(1, Ordering::SeqCst);
    }
    fn probe_ok(&self, _epoch: u64) {}
}

#[test]
fn loom_a_linked_breaker_admits_exactly_the_probes_the_cluster_granted() {
    loom::model(|| {
        use crate::state::breaker::RemoteBreaker;
        let cfg = BreakerConfig { failure_threshold: 1, recovery_time: Duration::ZERO, half_open_requests: 3, ..Default::default() };
        let breaker = std::sync::Arc::new(Breaker::new(cfg));
        let cluster = std::sync::Arc::new(Cluster { asked: AtomicU32::new(0) });
        breaker.set_link(cluster.clone());
        let t = Instant::now();
        let a = breaker.try_admit(t).expect("closed");
        breaker.on_failure(a, t, None);
        let probes = Arc::new(AtomicU32::new(0));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (b, p) = (breaker.clone(), probes.clone());
            threads.push(thread::spawn(move || {
                if b.try_admit(t).is_some() {
                    p.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        // The cluster grants this process one of the three probes of the period.
        breaker.apply_remote(RemoteBreaker::Probes { epoch: 0, granted: 1 }, t);
        for th in threads {
            th.join().unwrap();
        }
        assert!(probes.load(Ordering::SeqCst) <= 1, "more probes than the cluster granted");
        assert!(cluster.asked.load(Ordering::SeqCst) <= 1, "asked the cluster more than once in a moment");
    });
}

#[test]
fn loom_a_remote_close_reaches_a_caller_waiting_for_a_probe() {
    loom::model(|| {
        use crate::state::breaker::RemoteBreaker;
        let cfg = BreakerConfig { failure_threshold: 1, recovery_time: Duration::ZERO, half_open_requests: 1, ..Default::default() };
        let breaker = std::sync::Arc::new(Breaker::new(cfg));
        breaker.set_link(std::sync::Arc::new(Cluster { asked: AtomicU32::new(0) }));
        let t = Instant::now();
        let a = breaker.try_admit(t).expect("closed");
        breaker.on_failure(a, t, None);
        let b2 = breaker.clone();
        let waiter = thread::spawn(move || {
            let mut ctx = WaitCtx::new();
            let w = ctx.start_waiting().clone();
            loop {
                match b2.admit(t, &mut ctx) {
                    Ok(adm) => return adm,
                    Err(_) => {
                        ctx.retain_latest();
                        w.block();
                    }
                }
            }
        });
        // Another process's probe succeeded: the cluster closed the breaker.
        breaker.apply_remote(RemoteBreaker::Closed { epoch: 1 }, t);
        assert_eq!(waiter.join().unwrap(), Admission::Normal);
    });
}
