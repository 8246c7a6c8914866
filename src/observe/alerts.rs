//! Alert rules (`[[alerts]]` in `global.toml`) evaluated periodically over instance and pool
//! snapshots; each rule emits one `alert` event when it fires and one when it resolves.
//!
//! Hysteresis: a rule fires when its value goes above the threshold and resolves only when the
//! value falls to [`RESOLVE_FRACTION`] of the threshold or below (or there is no data left in
//! the window), so a value hovering at the threshold does not flap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{AlertKind, AlertRule};
use crate::engine::instance::Instance;
use crate::engine::pool::Pool;
use crate::engine::router::Engine;
use crate::engine::selector::Selector;
use crate::observe::events::{EventBus, EventKind};
use crate::state::breaker::BreakerState;

/// A firing rule resolves once its value is at or below this fraction of the threshold.
pub const RESOLVE_FRACTION: f64 = 0.8;

/// What a rule looks at, resolved against the current engine.
#[derive(Default)]
pub struct ScopeView {
    /// The instances the rule's scope covers (every one for a global rule).
    pub instances: Vec<Arc<Instance>>,
    /// The pool, for a pool-scoped rule.
    pub pool: Option<Arc<Pool>>,
    /// The echelons' selectors in scope (their wait queues feed queue rules).
    pub selectors: Vec<Arc<Selector>>,
}

/// Resolve a rule's scope: `pool:`/`group:`/`instance:` prefixed or a bare name looked up as a
/// pool, then a group, then an instance id; `None` = every instance.
pub fn resolve_scope(engine: &Engine, scope: Option<&str>) -> ScopeView {
    let pool_view = |p: &Arc<Pool>| ScopeView { instances: p.selector.instances.clone(), pool: Some(p.clone()), selectors: vec![p.selector.clone()] };
    let group_view = |name: &str| {
        engine.groups.get(name).map(|g| ScopeView {
            instances: g.echelons.iter().flat_map(|e| e.selector.instances.iter().cloned()).collect(),
            pool: None,
            selectors: g.echelons.iter().map(|e| e.selector.clone()).collect(),
        })
    };
    let inst_view = |id: &str| engine.instances.get(id).map(|i| ScopeView { instances: vec![i.clone()], ..Default::default() });
    let found = match scope {
        None => Some(ScopeView { instances: engine.instances.values().cloned().collect(), ..Default::default() }),
        Some(s) => match s.split_once(':') {
            Some(("pool", n)) => engine.pools.get(n).map(pool_view),
            Some(("group", n)) => group_view(n),
            Some(("instance", n)) => inst_view(n),
            _ => engine.pools.get(s).map(pool_view).or_else(|| group_view(s)).or_else(|| inst_view(s)),
        },
    };
    found.unwrap_or_default()
}

/// Quantile `q` of `v` (nearest rank); `None` when empty.
fn quantile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[((v.len() - 1) as f64 * q).round() as usize])
}

/// Per-rule state between ticks.
#[derive(Default)]
struct RuleState {
    firing: bool,
    last_value: f64,
    /// (time, requests, failures) samples for error ratios.
    samples: VecDeque<(Instant, u64, u64)>,
    /// Instance id → when its breaker was first seen open.
    open_since: HashMap<String, Instant>,
}

/// Evaluates a fixed list of rules; feed it snapshots with [`Evaluator::tick`].
pub struct Evaluator {
    rules: Vec<AlertRule>,
    states: Vec<RuleState>,
}

impl Evaluator {
    /// An evaluator with every rule resolved.
    pub fn new(rules: Vec<AlertRule>) -> Self {
        let states = rules.iter().map(|_| RuleState::default()).collect();
        Self { rules, states }
    }

    /// The rules it evaluates.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Evaluate every rule against `engine` at `now`; returns the alert events to emit.
    pub fn tick(&mut self, engine: &Engine, now: Instant) -> Vec<EventKind> {
        let mut out = Vec::new();
        for (rule, st) in self.rules.iter().zip(self.states.iter_mut()) {
            let view = resolve_scope(engine, rule.scope.as_deref());
            let value = measure(rule, st, &view, now);
            if let Some(ev) = step(rule, st, value) {
                out.push(ev);
            }
        }
        out
    }
}

/// Apply one measurement to a rule's state: the event to emit on a transition.
fn step(rule: &AlertRule, st: &mut RuleState, value: Option<f64>) -> Option<EventKind> {
    let scope = rule.scope.clone().unwrap_or_else(|| "all".into());
    let event = |state: &'static str, value: f64| EventKind::Alert {
        rule: rule.name.clone(),
        kind: rule.kind.as_str().to_string(),
        state,
        value,
        threshold: rule.threshold,
        scope: scope.clone(),
    };
    match (st.firing, value) {
        (false, Some(v)) if v > rule.threshold => {
            st.firing = true;
            st.last_value = v;
            Some(event("firing", v))
        }
        (true, None) => {
            st.firing = false;
            Some(event("resolved", 0.0))
        }
        (true, Some(v)) if v <= rule.threshold * RESOLVE_FRACTION => {
            st.firing = false;
            st.last_value = v;
            Some(event("resolved", v))
        }
        (_, Some(v)) => {
            st.last_value = v;
            None
        }
        (false, None) => None,
    }
}

fn measure(rule: &AlertRule, st: &mut RuleState, view: &ScopeView, now: Instant) -> Option<f64> {
    match rule.kind {
        AlertKind::ErrorRatio => {
            let (total, failed) = match &view.pool {
                Some(p) => {
                    let s = p.stats.snapshot();
                    (s.total_requests, s.failed_requests)
                }
                None => view.instances.iter().map(|i| i.stats.counts()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            };
            st.samples.push_back((now, total, failed));
            // Keep one sample at or before the window start as the baseline.
            let start = now.checked_sub(rule.window).unwrap_or(now);
            while st.samples.len() > 1 && st.samples.get(1).is_some_and(|s| s.0 <= start) {
                st.samples.pop_front();
            }
            let (_, t0, f0) = *st.samples.front()?;
            let (dt, df) = (total.saturating_sub(t0), failed.saturating_sub(f0));
            (dt >= rule.min_requests as u64 && dt > 0).then(|| df as f64 / dt as f64)
        }
        AlertKind::P99Latency => {
            let since = now.checked_sub(rule.window).unwrap_or(now);
            quantile(view.instances.iter().flat_map(|i| i.stats.latencies_since(since)).collect(), 0.99)
        }
        AlertKind::Capacity => {
            let mut fill: f64 = 0.0;
            for i in &view.instances {
                if i.concurrency_limit() > 0 {
                    fill = fill.max(i.in_flight() as f64 / i.concurrency_limit() as f64);
                }
            }
            if let Some(p) = &view.pool {
                let st = p.status();
                if st.max_concurrent_requests > 0 {
                    fill = fill.max(st.in_flight as f64 / st.max_concurrent_requests as f64);
                }
                if st.queue_size > 0 {
                    fill = fill.max(st.queue_length as f64 / st.queue_size as f64);
                }
            }
            for s in &view.selectors {
                if s.queue_size() > 0 {
                    fill = fill.max(s.queue_len() as f64 / s.queue_size() as f64);
                }
            }
            Some(fill)
        }
        AlertKind::BreakerOpen => {
            let mut longest: Option<f64> = None;
            for i in &view.instances {
                if i.breaker.phase() == BreakerState::Open {
                    let since = *st.open_since.entry(i.id.clone()).or_insert(now);
                    let open = now.saturating_duration_since(since).as_secs_f64();
                    longest = Some(longest.map_or(open, |l: f64| l.max(open)));
                } else {
                    st.open_since.remove(&i.id);
                }
            }
            longest
        }
    }
}

/// Run the rules of whatever engine is current every `alert_interval`, publishing alert events
/// on `bus`. With no rules configured the task sleeps until `config_changed` is notified (a
/// reload) instead of waking every interval. Ends when the router is dropped or `stop` is
/// cancelled. Rules are re-read after a reload (a changed rule list starts from "resolved").
pub fn spawn(rt: &tokio::runtime::Handle, engine: Weak<ArcSwap<Engine>>, bus: Arc<EventBus>, config_changed: Arc<Notify>, stop: CancellationToken) {
    rt.spawn(async move {
        let mut eval: Option<Evaluator> = None;
        loop {
            let interval = {
                let Some(swap) = engine.upgrade() else { return };
                let e = swap.load_full();
                let rules = &e.config.global.alerts;
                if eval.as_ref().is_none_or(|ev| ev.rules() != rules.as_slice()) {
                    eval = Some(Evaluator::new(rules.clone()));
                }
                if let Some(ev) = eval.as_mut() {
                    for a in ev.tick(&e, Instant::now()) {
                        bus.publish(a);
                    }
                }
                (!rules.is_empty()).then(|| e.config.global.alert_interval.max(Duration::from_millis(10)))
            };
            match interval {
                Some(interval) => tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                },
                // `notify_one` keeps a permit when nobody waits yet, so a reload that lands
                // before this await is not missed.
                None => tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = config_changed.notified() => {}
                },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: AlertKind, threshold: f64) -> AlertRule {
        AlertRule { name: "r".into(), kind, scope: None, threshold, window: Duration::from_secs(1), min_requests: 1, key: "alerts[0]".into() }
    }

    fn states(rule: &AlertRule, values: &[Option<f64>]) -> Vec<&'static str> {
        let mut st = RuleState::default();
        values
            .iter()
            .filter_map(|v| match step(rule, &mut st, *v) {
                Some(EventKind::Alert { state, .. }) => Some(state),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fires_once_and_resolves_once_despite_hovering() {
        let r = rule(AlertKind::ErrorRatio, 0.5);
        let got = states(&r, &[Some(0.1), Some(0.6), Some(0.55), Some(0.45), Some(0.6), Some(0.41), Some(0.3), Some(0.2)]);
        assert_eq!(got, vec!["firing", "resolved"]);
    }

    #[test]
    fn missing_data_resolves_a_firing_rule_and_never_fires() {
        let r = rule(AlertKind::P99Latency, 0.1);
        assert_eq!(states(&r, &[None, None, Some(0.5), Some(0.5), None, None]), vec!["firing", "resolved"]);
    }

    #[test]
    fn refires_after_a_full_resolve() {
        let r = rule(AlertKind::Capacity, 0.5);
        assert_eq!(states(&r, &[Some(0.9), Some(0.1), Some(0.9)]), vec!["firing", "resolved", "firing"]);
    }

    #[test]
    fn quantile_nearest_rank() {
        assert_eq!(quantile(vec![], 0.99), None);
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(quantile(v, 0.99), Some(99.0));
    }
}
