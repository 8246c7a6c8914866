//! Engine tests without HTTP: engines built from real configurations, leases taken and released
//! by hand, and the chain's acquisition driven directly, so the waiting rules (who is woken,
//! in which order, how many may wait) are checked apart from any provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::chain::acquire::{acquire, Acquired};
use super::chain::policy::ChainState;
use super::chain::walk::Plan;
use super::router::{CallOptions, Engine, Route, DIRECT_ROUTES_MAX};
use super::selector::{Filter, Pick};
use crate::error::ErrorKind;
use crate::provider::HttpPool;
use crate::state::store::{MemoryStore, StateStore};
use crate::state::wait::WaitCtx;
use crate::types::{ChatRequest, Message};

const BOUND: Duration = Duration::from_secs(5);

/// A provider no test ever reaches (leases are taken without calling it), except the direct
/// route test, whose calls are refused by the closed port.
fn config(groups: Value, pools: Value, models: Value) -> crate::config::Config {
    let mut provider = json!({"common": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": "k", "max_retries": 0,
                               "timeouts": {"connect": 1, "first_token": 1, "total": 1, "idle": 1}}});
    for (name, extra) in models.as_object().cloned().unwrap_or_default() {
        let mut m = json!({"model": name});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            m[k] = v;
        }
        provider[name] = m;
    }
    crate::config::from_json(&json!({"providers": {"p": provider}, "groups": groups, "pools": pools})).expect("valid test config")
}

fn engine_with(cfg: crate::config::Config, store: Arc<dyn StateStore>) -> Engine {
    Engine::build(cfg, store, HttpPool::new())
}

fn plan(engine: &Engine, reference: &str) -> Plan {
    engine.group_plan(reference, None).expect("group").1
}

/// Lease now on the first target of `plan` that can serve (no waiting).
fn lease_now(plan: &Plan) -> crate::engine::lease::Lease {
    for t in &plan.targets {
        if let Pick::Leased { lease, .. } = t.selector.try_pick(Instant::now(), 10, Filter::default(), &mut WaitCtx::new()) {
            return lease;
        }
    }
    panic!("nothing could serve");
}

async fn acquire_owned(plan: Plan, deadline: Option<Instant>) -> Result<Acquired, ErrorKind> {
    let chain = ChainState::new();
    acquire(&plan, &chain, 10, deadline, &mut None).await.map_err(|na| na.error.kind)
}

async fn eventually(mut pred: impl FnMut() -> bool) {
    let end = Instant::now() + BOUND;
    while !pred() {
        assert!(Instant::now() < end, "condition not reached within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_model_slot_freed_through_one_group_wakes_a_waiter_of_another() {
    let cfg = config(
        json!({"g1": {"echelon1": {"models": ["m"], "priority": 1}}, "g2": {"echelon1": {"models": ["m"], "priority": 1}}}),
        json!({}),
        json!({"m": {"max_concurrency": 1}}),
    );
    let engine = engine_with(cfg, Arc::new(MemoryStore::new()));
    let held = lease_now(&plan(&engine, "g1"));
    let p2 = plan(&engine, "g2");
    let sel = p2.targets[0].selector.clone();
    let waiter = tokio::spawn(acquire_owned(p2, None));
    eventually(|| sel.queue_len() == 1).await;
    assert!(!waiter.is_finished());
    drop(held);
    let got = tokio::time::timeout(BOUND, waiter).await.expect("woken by g1's release").unwrap().expect("leased");
    assert_eq!(got.lease.instance().id, "g2.echelon1_m");
    assert_eq!(sel.queue_len(), 0);
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served_and_a_cancelled_one_leaves_the_line() {
    let cfg = config(json!({"g": {"echelon1": {"models": ["m"], "priority": 1, "concurrency_limit": 1}}}), json!({}), json!({"m": {}}));
    let engine = Arc::new(engine_with(cfg, Arc::new(MemoryStore::new())));
    let p = plan(&engine, "g");
    let sel = p.targets[0].selector.clone();
    let held = lease_now(&p);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let (p, tx) = (p.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let a = acquire_owned(p, None).await.expect("leased");
            tx.send(n).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(a);
        }));
        eventually(|| sel.queue_len() == n + 1).await;
    }
    tasks[1].abort();
    eventually(|| sel.queue_len() == 3).await;
    drop(held);
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(tokio::time::timeout(BOUND, rx.recv()).await.expect("served").unwrap());
    }
    assert_eq!(order, [0, 2, 3]);
    let inst = &sel.instances[0];
    eventually(|| inst.in_flight() == 0 && inst.waiting() == 0 && sel.queue_len() == 0).await;
}

#[tokio::test]
async fn the_queue_bound_is_exact_under_a_burst() {
    let cfg = config(
        json!({"g": {"echelon1": {"models": ["m"], "priority": 1, "concurrency_limit": 1}}}),
        json!({"pl": {"task_groups": ["g.echelon1"], "performance": {"queue_size": 3}, "health_check": {"enabled": false}}}),
        json!({"m": {}}),
    );
    let engine = engine_with(cfg, Arc::new(MemoryStore::new()));
    let pool = engine.pools["pl"].clone();
    let p = pool.plan(None);
    let held = lease_now(&p);
    let results: Vec<_> = futures_util::future::join_all((0..10).map(|_| {
        let p = p.clone();
        async move { tokio::time::timeout(Duration::from_millis(200), acquire_owned(p, None)).await }
    }))
    .await;
    let full = results.iter().filter(|r| matches!(r, Ok(Err(ErrorKind::PoolExhausted)))).count();
    let waited = results.iter().filter(|r| r.is_err()).count();
    assert_eq!((full, waited), (7, 3), "exactly queue_size callers wait, the rest are refused at once");
    drop(held);
    assert_eq!(pool.selector.queue_len(), 0, "cancelled waiters gave their places back");
}

#[tokio::test]
async fn a_reload_keeps_the_limits_and_a_release_on_the_old_engine_wakes_the_new_ones_waiter() {
    let groups = json!({"g": {"echelon1": {"models": ["m"], "priority": 1, "concurrency_limit": 1}}});
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let old = engine_with(config(groups.clone(), json!({}), json!({"m": {}})), store.clone());
    let held = lease_now(&plan(&old, "g"));
    let new = engine_with(config(groups, json!({}), json!({"m": {}})), store);
    let p = plan(&new, "g");
    let sel = p.targets[0].selector.clone();
    let waiter = tokio::spawn(acquire_owned(p, None));
    eventually(|| sel.queue_len() == 1).await;
    drop(held);
    tokio::time::timeout(BOUND, waiter).await.expect("woken by the old engine's release").unwrap().expect("leased");
}

#[tokio::test]
async fn a_blocked_first_target_is_passed_over_and_recorded_while_a_later_one_serves() {
    let cfg = config(
        json!({"g": {"echelon1": {"models": ["a"], "priority": 1, "concurrency_limit": 1},
                     "echelon2": {"models": ["b"], "priority": 2}}}),
        json!({}),
        json!({"a": {}, "b": {}}),
    );
    let engine = engine_with(cfg, Arc::new(MemoryStore::new()));
    let p = plan(&engine, "g");
    let _held = lease_now(&p);
    let got = tokio::time::timeout(BOUND, acquire_owned(p, Some(Instant::now() + BOUND))).await.unwrap().expect("leased");
    assert_eq!(got.target, 1);
    assert_eq!(got.lease.instance().id, "g.echelon2_b");
    assert_eq!(got.skipped.len(), 1);
    assert_eq!(got.skipped[0].1.kind, ErrorKind::PoolExhausted, "echelon1 was busy");
}

#[tokio::test]
async fn a_deadline_ends_a_wait_with_queue_timeout_and_leaves_no_trace() {
    let cfg = config(json!({"g": {"echelon1": {"models": ["m"], "priority": 1, "concurrency_limit": 1}}}), json!({}), json!({"m": {}}));
    let engine = engine_with(cfg, Arc::new(MemoryStore::new()));
    let p = plan(&engine, "g");
    let sel = p.targets[0].selector.clone();
    let _held = lease_now(&p);
    let r = tokio::time::timeout(BOUND, acquire_owned(p, Some(Instant::now() + Duration::from_millis(50)))).await.unwrap();
    assert_eq!(r.err(), Some(ErrorKind::QueueTimeout));
    assert_eq!((sel.queue_len(), sel.instances[0].waiting()), (0, 0));
}

#[tokio::test]
async fn direct_routes_stay_bounded() {
    let cfg = config(json!({}), json!({}), json!({}));
    let engine = engine_with(cfg, Arc::new(MemoryStore::new()));
    let req = ChatRequest { messages: vec![Message::text("user", "hi")], params: Default::default() };
    let opts = CallOptions { timeout: Some(Duration::from_secs(2)), ..Default::default() };
    // Refused by the closed port at once; what matters is the route cache.
    let routes: Vec<Route> = (0..DIRECT_ROUTES_MAX + 40).map(|i| Route::Model(format!("p:m-{i}"))).collect();
    for chunk in routes.chunks(32) {
        futures_util::future::join_all(chunk.iter().map(|r| engine.run(r, &req, &opts, false))).await;
    }
    assert!(engine.direct_routes() <= DIRECT_ROUTES_MAX, "{} routes kept", engine.direct_routes());
}
