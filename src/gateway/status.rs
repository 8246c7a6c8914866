//! What the gateway shows about itself: readiness, `/metrics`, the `/status` page and the
//! JSON it polls, and the recent events the page lists.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::Shared;
use crate::observe::events::EventKind;
use crate::observe::metrics::{family, render};
use crate::state::health::InstanceStatus;

/// The status page: one self-contained HTML file (inline script and style, no fonts or
/// scripts from elsewhere), built into the binary.
pub(crate) const PAGE: &str = include_str!("status.html");

/// Ready when not draining and every group and pool has an instance that is not failed.
pub(crate) fn readiness(shared: &Shared) -> (bool, Value) {
    let engine = shared.router.engine();
    let now = std::time::Instant::now();
    let alive = |insts: &mut dyn Iterator<Item = &Arc<crate::engine::instance::Instance>>| {
        let mut any = false;
        for i in insts {
            any |= i.status(now) != InstanceStatus::Failed;
        }
        any
    };
    let mut down = Vec::new();
    for (name, g) in &engine.groups {
        if !alive(&mut g.echelons.iter().flat_map(|e| e.selector.instances.iter())) {
            down.push(format!("group:{name}"));
        }
    }
    for (name, p) in &engine.pools {
        if !alive(&mut p.selector.instances.iter()) {
            down.push(format!("pool:{name}"));
        }
    }
    let draining = shared.draining.load(Ordering::SeqCst);
    let ready = down.is_empty() && !draining;
    (ready, json!({"ready": ready, "draining": draining, "routes_without_instances": down}))
}

/// `/metrics`: the router's series, then the gateway's own.
pub(crate) fn metrics_text(shared: &Shared) -> String {
    let mut out = render(&shared.router.status());
    let s = &shared.stats;
    let responses: Vec<((&'static str, u16), u64)> = s.responses.lock().iter().map(|(k, v)| (*k, *v)).collect();
    family(
        &mut out,
        "echelon_gateway_responses_total",
        "counter",
        "Answers of the gateway by API and HTTP status.",
        responses.into_iter().map(|((api, code), n)| (vec![("api", api.to_string()), ("status", code.to_string())], n)),
    );
    let g = |v: usize| vec![(Vec::new(), v as u64)];
    family(&mut out, "echelon_gateway_in_flight", "gauge", "Calls and streams the gateway has not finished answering.", g(s.in_flight.load(Ordering::Relaxed)));
    family(&mut out, "echelon_gateway_connections", "gauge", "Connections open now.", g(s.connections.load(Ordering::Relaxed)));
    family(
        &mut out,
        "echelon_gateway_refused_connections_total",
        "counter",
        "Connections answered 503 at the connection cap.",
        vec![(Vec::new(), s.refused_connections.load(Ordering::Relaxed))],
    );
    family(
        &mut out,
        "echelon_gateway_reloads_total",
        "counter",
        "Configuration reloads that took effect.",
        vec![(Vec::new(), s.reloads.load(Ordering::Relaxed))],
    );
    out
}

/// What `/status.json` holds: the router's status, the recent events and the gateway's own
/// counters. Never a secret (keys are shown by name only, and not at all here).
pub(crate) fn snapshot(shared: &Shared) -> Value {
    let s = &shared.stats;
    let events: Vec<Value> = shared.recent.lock().iter().rev().map(|e| serde_json::to_value(&**e).unwrap_or(Value::Null)).collect();
    let cfg = shared.config();
    json!({
        "router": shared.router.status(),
        "events": events,
        "gateway": {
            "address": shared.addr.to_string(),
            "uptime": shared.started.elapsed().as_secs_f64(),
            "draining": shared.draining.load(Ordering::SeqCst),
            "in_flight": s.in_flight.load(Ordering::Relaxed),
            "connections": s.connections.load(Ordering::Relaxed),
            "keys": cfg.global.gateway.keys.len(),
            "reloads": s.reloads.load(Ordering::Relaxed),
            "last_reload_error": s.last_reload_error.lock().clone(),
            "config_root": shared.root.as_ref().map(|p| p.display().to_string()),
        },
    })
}

/// Whether the page lists this kind of event (state changes and failures, not every retry).
fn listed(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Retry { .. } | EventKind::EventsDropped { .. })
}

/// Keep the last events for the page until the gateway stops.
pub(crate) async fn collect_events(shared: Arc<Shared>) {
    let mut sub = shared.router.events().subscribe(1024);
    loop {
        let batch = tokio::select! {
            b = sub.recv_batch(256) => b,
            _ = shared.closed.cancelled() => return,
        };
        if batch.is_empty() {
            return;
        }
        let mut recent = shared.recent.lock();
        for ev in batch.into_iter().filter(|e| listed(&e.kind)) {
            if recent.len() >= super::RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(ev);
        }
    }
}
