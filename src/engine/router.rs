//! The router: builds instances, echelons, groups and pools from a [`Config`], routes each
//! request to a pool, a group reference or a model, and swaps configurations atomically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use parking_lot::Mutex;
use serde::Serialize;
use std::panic::AssertUnwindSafe;

use crate::config::StateBackend;
use crate::config::{Config, EchelonConfig, FallbackStrategy, GroupConfig, HealthCheckConfig, ModelConfig, RotationStrategy};
use crate::engine::chain::walk::{walk, Plan, Target, Walked};
use crate::engine::group::{Echelon, Group};
use crate::engine::instance::{Instance, InstanceParts};
use crate::engine::pool::{Pool, PoolStats};
use crate::engine::selector::Selector;
use crate::error::{Error, ErrorKind};
use crate::observe::events::{EventBus, EventKind};
use crate::provider::{HttpPool, ProviderClient};
use crate::state::health::{InstanceStatus, Transition};
use crate::state::redis::RedisStore;
use crate::state::store::{MemoryStore, RateSpec, StateStore};
use crate::types::{ChatRequest, Params};

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A polling pool by name.
    Pool(String),
    /// A group reference: `group`, `group.echelon1`, `group.translation`.
    Group(String),
    /// A model reference: a logical model name or `provider:model`.
    Model(String),
    /// A named wrapper (`wrappers/<name>.toml`): its target with its defaults applied.
    Wrapper(String),
    /// Exactly one instance by id (`"<group>.<echelon>_<model>"`), with its own breaker,
    /// limits and statistics, retried on itself only. Used by the compat layer, whose Python
    /// schedulers pick the instance.
    Instance(String),
    /// Exactly one echelon (`"<group>.<echelon>"`), without walking down to the next ones.
    Echelon(String),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Pool(n) => write!(f, "pool:{n}"),
            Route::Group(n) => write!(f, "group:{n}"),
            Route::Model(n) => write!(f, "model:{n}"),
            Route::Wrapper(n) => write!(f, "wrapper:{n}"),
            Route::Instance(n) => write!(f, "instance:{n}"),
            Route::Echelon(n) => write!(f, "echelon:{n}"),
        }
    }
}

impl Route {
    /// Parse the string forms `pool:<name>`, `group:<ref>`, `direct:<provider>:<model>`,
    /// `model:<ref>`, `wrapper:<name>`.
    pub fn parse(s: &str) -> Result<Route, Error> {
        let bad =
            || Error::routing(format!("malformed route '{s}': expected pool:<name>, group:<ref>, direct:<provider>:<model>, model:<name> or wrapper:<name>"));
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match kind {
            "pool" => Ok(Route::Pool(rest.to_string())),
            "group" => Ok(Route::Group(rest.to_string())),
            "model" => Ok(Route::Model(rest.to_string())),
            "wrapper" => Ok(Route::Wrapper(rest.to_string())),
            "instance" => Ok(Route::Instance(rest.to_string())),
            "echelon" if rest.contains('.') => Ok(Route::Echelon(rest.to_string())),
            "direct" => {
                if rest.split_once(':').is_some_and(|(p, m)| !p.is_empty() && !m.is_empty()) {
                    Ok(Route::Model(rest.to_string()))
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Deadline for the whole call (all attempts, queueing included).
    pub timeout: Option<Duration>,
    /// Group references that replace the configured `fallback_groups`.
    pub fallback_groups: Option<Vec<String>>,
    /// Overrides a pool's `max_instance_attempts`.
    pub max_instance_attempts: Option<u32>,
}

/// The built engine for one configuration. Immutable; a reload builds a new one.
pub struct Engine {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Every instance of every group, by id.
    pub instances: BTreeMap<String, Arc<Instance>>,
    /// Every group, by name.
    pub groups: BTreeMap<String, Arc<Group>>,
    /// Every pool, by name.
    pub pools: BTreeMap<String, Arc<Pool>>,
    direct: Mutex<HashMap<String, Arc<Selector>>>,
    direct_stats: Arc<PoolStats>,
    /// One single-instance selector per instance, for `Route::Instance`.
    instance_selectors: BTreeMap<String, Arc<Selector>>,
    store: Arc<dyn StateStore>,
    http: HttpPool,
    /// The router's event bus (shared by every engine of one router).
    pub events: Arc<EventBus>,
}

/// Callers that may wait at one echelon (or at a direct model / instance route).
const ECHELON_QUEUE: u32 = 1000;

/// Direct `provider:model` routes kept built at once. The strings come from callers, so the
/// cache is bounded: past this, an idle route is dropped (with its state) to make room.
pub const DIRECT_ROUTES_MAX: usize = 256;

fn instance_params(model: &ModelConfig, e: &EchelonConfig) -> Params {
    let mut p = Params { temperature: e.temperature, max_tokens: e.max_tokens, ..Default::default() };
    if let Some(fmt) = &e.response_format {
        p.response_format = Some(serde_json::Value::String(fmt.clone()));
    }
    if let Some(fc) = &e.function_calling {
        p.tool_choice = Some(serde_json::Value::String(fc.clone()));
    }
    p.or(&model.parameters)
}

struct Builder<'a> {
    cfg: &'a Config,
    store: &'a Arc<dyn StateStore>,
    http: &'a HttpPool,
    events: &'a Arc<EventBus>,
    live: HashSet<String>,
}

/// Why an instance's health changed, from the transition alone.
fn transition_reason(t: Transition) -> &'static str {
    match (t.from, t.to) {
        (_, InstanceStatus::Failed) => "the provider refused its key or does not serve its model",
        (_, InstanceStatus::Unhealthy) => "its circuit breaker opened (failures or failed health probes)",
        (_, InstanceStatus::Degraded) => "failure",
        (_, InstanceStatus::Recovering) => "recovery time elapsed or health probe succeeded: admitting probes",
        (_, InstanceStatus::Healthy) => "success",
    }
}

impl Builder<'_> {
    fn key(&mut self, k: String) -> String {
        self.live.insert(k.clone());
        k
    }

    fn instance(&mut self, id: String, group: &GroupConfig, e: Option<&EchelonConfig>, model: ModelConfig, health: &HealthCheckConfig) -> Arc<Instance> {
        let store = self.store.clone();
        let breaker_cfg = group.fallback.as_ref().and_then(|f| f.circuit_breaker).unwrap_or(group.circuit_breaker);
        let echelon_default;
        let e = match e {
            Some(e) => e,
            None => {
                echelon_default = EchelonConfig {
                    name: "direct".into(),
                    models: vec![],
                    priority: 0,
                    concurrency_limit: 0,
                    rpm_limit: 0,
                    timeout: None,
                    max_retries: None,
                    temperature: None,
                    max_tokens: None,
                    function_calling: None,
                    response_format: None,
                    thinking_config: None,
                };
                &echelon_default
            }
        };
        let mut timeouts = model.timeouts;
        if let Some(t) = e.timeout {
            timeouts.total = Some(t);
        }
        let mut retry = model.retry;
        if let Some(r) = e.max_retries {
            retry.max_retries = r;
        }
        // The echelon's generation settings become the client's defaults, which the provider
        // merges under the caller's parameters (once, without copying the messages).
        let mut model = model;
        model.parameters = instance_params(&model, e);
        let model_key = format!("model:{}", model.name);
        let parts = InstanceParts {
            group: group.name.clone(),
            echelon: e.name.clone(),
            model_name: model.name.clone(),
            provider: model.provider.clone(),
            timeouts,
            retry,
            weight: model.weight,
            context_window: model.context_window,
            rate_limit_cooldown: model.rate_limit_cooldown,
            quota_cooldown: model.quota_cooldown,
            concurrency: store.concurrency(&self.key(id.clone()), e.concurrency_limit),
            model_concurrency: (model.max_concurrency > 0).then(|| store.concurrency(&self.key(model_key.clone()), model.max_concurrency)),
            rpm: (e.rpm_limit > 0)
                .then(|| store.rate(&self.key(format!("{id}:rpm")), RateSpec::Window { limit: e.rpm_limit as u64, window: Duration::from_secs(60) })),
            model_rpm: (model.rpm > 0)
                .then(|| store.rate(&self.key(format!("{model_key}:rpm")), RateSpec::Window { limit: model.rpm as u64, window: Duration::from_secs(60) })),
            model_tpm: (model.tpm > 0)
                .then(|| store.rate(&self.key(format!("{model_key}:tpm")), RateSpec::Window { limit: model.tpm as u64, window: Duration::from_secs(60) })),
            breaker: store.breaker(&self.key(id.clone()), &breaker_cfg),
            health: store.health(&self.key(id.clone()), health),
            stats: store.stats(&self.key(id.clone())),
            client: ProviderClient::new(model, self.http),
            id,
        };
        let inst = Arc::new(Instance::new(parts));
        let bus = self.events.clone();
        inst.set_event_bus(bus.clone());
        inst.set_transition_sink(Box::new(move |inst, t| {
            log::info!("instance {} is now {} (was {})", inst.id, t.to.as_str(), t.from.as_str());
            if bus.active() {
                bus.publish(EventKind::InstanceState { instance: inst.id.clone(), from: t.from, to: t.to, reason: transition_reason(t).to_string() });
            }
        }));
        inst
    }
}

impl Engine {
    /// Build everything for `cfg`, reusing state from `store` for instances that still exist.
    pub fn build(cfg: Config, store: Arc<dyn StateStore>, http: HttpPool) -> Engine {
        Self::build_with_events(cfg, store, http, Arc::new(EventBus::new()))
    }

    /// [`Engine::build`] publishing its events on `events`.
    pub fn build_with_events(cfg: Config, store: Arc<dyn StateStore>, http: HttpPool, events: Arc<EventBus>) -> Engine {
        let mut b = Builder { cfg: &cfg, store: &store, http: &http, events: &events, live: HashSet::new() };
        // The health settings of an instance come from the first pool that uses its group.
        let mut health_of: HashMap<&str, HealthCheckConfig> = HashMap::new();
        for p in b.cfg.pools.values() {
            for r in &p.task_groups {
                let (g, _) = Config::parse_group_reference(r);
                health_of.entry(g).or_insert(p.health_check);
            }
        }
        let mut instances = BTreeMap::new();
        let mut groups = BTreeMap::new();
        for g in b.cfg.groups.values() {
            let health = health_of.get(g.name.as_str()).copied().unwrap_or_default();
            let mut echelons = Vec::new();
            for e in g.echelons_by_priority() {
                let mut members = Vec::new();
                let mut unresolved = Vec::new();
                for m in &e.models {
                    let Some(model) = b.cfg.resolve_model(m) else {
                        unresolved.push(m.clone());
                        continue;
                    };
                    let mut id = format!("{}.{}_{}", g.name, e.name, m);
                    let mut n = 2;
                    while instances.contains_key(&id) {
                        id = format!("{}.{}_{}#{}", g.name, e.name, m, n);
                        n += 1;
                    }
                    let inst = b.instance(id.clone(), g, Some(e), model, &health);
                    instances.insert(id, inst.clone());
                    members.push(inst);
                }
                let selector = Arc::new(Selector::new(format!("{}.{}", g.name, e.name), members, RotationStrategy::RoundRobin, ECHELON_QUEUE));
                selector.set_event_bus(events.clone());
                echelons.push(Arc::new(Echelon { group: g.name.clone(), config: e.clone(), selector, unresolved }));
            }
            groups.insert(g.name.clone(), Arc::new(Group::new(g.clone(), echelons)));
        }
        let mut pools = BTreeMap::new();
        for p in b.cfg.pools.values() {
            let mut members: Vec<Arc<Instance>> = Vec::new();
            for r in &p.task_groups {
                let (gname, ech) = Config::parse_group_reference(r);
                let Some(g) = groups.get(gname) else { continue };
                for e in g.echelons.iter().filter(|e| ech.is_none_or(|n| n == e.config.name)) {
                    for i in &e.selector.instances {
                        if !members.iter().any(|m| Arc::ptr_eq(m, i)) {
                            members.push(i.clone());
                        }
                    }
                }
            }
            let selector = Arc::new(Selector::new(p.name.clone(), members, p.rotation_strategy, p.queue_size));
            selector.set_event_bus(events.clone());
            let rate = p.rate_limit.map(|r| store.rate(&b.key(format!("pool:{}:rate", p.name)), RateSpec::from(r)));
            pools.insert(p.name.clone(), Arc::new(Pool::new(p.clone(), selector, rate)));
        }
        // Waiters are woken by the limits they queue in, not by the routes they came through:
        // nothing to wire between instances and selectors.
        let mut instance_selectors = BTreeMap::new();
        for (id, i) in &instances {
            let sel = Arc::new(Selector::new(id.clone(), vec![i.clone()], RotationStrategy::RoundRobin, ECHELON_QUEUE));
            sel.set_event_bus(events.clone());
            instance_selectors.insert(id.clone(), sel);
        }
        let live = b.live;
        store.retain(&live);
        Engine {
            config: Arc::new(cfg),
            instances,
            groups,
            pools,
            direct: Mutex::new(HashMap::new()),
            direct_stats: Arc::new(PoolStats::default()),
            instance_selectors,
            store,
            http,
            events,
        }
    }

    /// Start background work (health checks) on the runtime.
    pub fn start(&self, rt: &tokio::runtime::Handle) {
        for p in self.pools.values() {
            p.spawn_health_checks(rt);
        }
    }

    /// Stop background work.
    pub fn close(&self) {
        for p in self.pools.values() {
            p.close();
        }
    }

    /// Build the fallback plan for a group reference.
    pub fn group_plan(&self, reference: &str, fallback_groups: Option<&[String]>) -> Result<(Arc<Group>, Plan), Error> {
        let (gname, ech) = Config::parse_group_reference(reference);
        let group = self.groups.get(gname).cloned().ok_or_else(|| self.unknown("group", gname, self.groups.keys()))?;
        let fb = group.config.effective_fallback();
        let mut chain = group.own_chain(ech)?;
        let extra: Vec<String> = match fallback_groups {
            Some(list) => list.to_vec(),
            None => fb.fallback_groups.clone(),
        };
        for r in &extra {
            let (g2, e2) = Config::parse_group_reference(r);
            let other = self.groups.get(g2).ok_or_else(|| self.unknown("fallback group", g2, self.groups.keys()))?;
            match e2 {
                Some(en) => {
                    chain.push(other.echelon(en).cloned().ok_or_else(|| Error::routing(format!("fallback target '{r}': group '{g2}' has no echelon '{en}'")))?)
                }
                // `task_group_switch` walks groups, not echelons: each fallback group is tried
                // at its first echelon, so `max_attempts` counts groups.
                None if fb.strategy == FallbackStrategy::TaskGroupSwitch => chain.extend(other.echelons.first().cloned()),
                None => chain.extend(other.echelons.iter().cloned()),
            }
        }
        // A target appears once, at its first position (the original could list itself).
        let mut seen = HashSet::new();
        chain.retain(|e| seen.insert(e.reference()));
        chain.truncate(fb.max_attempts.max(1) as usize);
        if chain.iter().all(|e| e.selector.instances.is_empty()) {
            let uncallable = &self.config.uncallable_models;
            let missing: Vec<String> = chain
                .iter()
                .flat_map(|e| {
                    e.unresolved.iter().map(move |m| match uncallable.get(m) {
                        Some(why) => format!("'{m}' (in {}: {why})", e.reference()),
                        None => format!("'{m}' (in {})", e.reference()),
                    })
                })
                .collect();
            return Err(Error::new(
                ErrorKind::Config,
                if missing.is_empty() {
                    format!("group reference '{reference}' has no models")
                } else {
                    format!("group reference '{reference}': no model resolves: {}", missing.join(", "))
                },
            ));
        }
        let targets = chain
            .iter()
            .map(|e| {
                let retries = e.config.max_retries.unwrap_or_else(|| e.selector.instances.first().map_or(0, |i| i.retry.max_retries));
                let mut tries = 1 + retries;
                if fb.strategy == FallbackStrategy::ModelRotate {
                    tries = tries.max(e.selector.instances.len() as u32);
                }
                Target { label: e.reference(), selector: e.selector.clone(), max_tries: tries }
            })
            .collect();
        let plan = Plan {
            targets,
            retry_delay: fb.retry_delay,
            content_filter_fallback: fb.on_content_filter,
            provider_failover: fb.strategy == FallbackStrategy::ProviderFailover,
            hedge_after: fb.hedge_after,
        };
        Ok((group, plan))
    }

    fn unknown<'a>(&self, what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> Error {
        let known: Vec<&String> = known.collect();
        let hint = known
            .iter()
            .map(|k| (strsim::jaro_winkler(k, name), k))
            .filter(|(s, _)| *s > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!(" (did you mean '{k}'?)"))
            .unwrap_or_default();
        Error::routing(format!("unknown {what} '{name}'{hint}; known: {}", known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")))
    }

    /// The selector for a direct model route, created on first use. At most
    /// [`DIRECT_ROUTES_MAX`] are kept: past that, the least recently used idle one is dropped
    /// with its state.
    fn direct_selector(&self, reference: &str) -> Result<Arc<Selector>, Error> {
        if let Some(s) = self.direct.lock().get(reference) {
            return Ok(s.clone());
        }
        let model = self.config.resolve_model(reference).ok_or_else(|| match self.config.uncallable_models.get(reference) {
            Some(why) => Error::routing(format!("model '{reference}' cannot be called: {why}")),
            None => Error::routing(format!("model '{reference}' resolves nowhere: not a logical model and not <provider>:<model> with a known provider")),
        })?;
        let group = GroupConfig {
            name: "direct".into(),
            description: String::new(),
            echelons: vec![],
            fallback_strategy: FallbackStrategy::EchelonDown,
            circuit_breaker: self.config.global.circuit_breaker,
            fallback: None,
            source: None,
        };
        let id = format!("direct.{reference}");
        let mut b = Builder { cfg: &self.config, store: &self.store, http: &self.http, events: &self.events, live: HashSet::new() };
        let inst = b.instance(id.clone(), &group, None, model, &HealthCheckConfig::default());
        let sel = Arc::new(Selector::new(id, vec![inst], RotationStrategy::RoundRobin, ECHELON_QUEUE));
        sel.set_event_bus(self.events.clone());
        let mut direct = self.direct.lock();
        if let Some(existing) = direct.get(reference) {
            return Ok(existing.clone());
        }
        if direct.len() >= DIRECT_ROUTES_MAX {
            let idle = |s: &Arc<Selector>| Arc::strong_count(s) == 1 && s.instances.iter().all(|i| i.in_flight() == 0 && i.waiting() == 0);
            let victim =
                direct.iter().filter(|(_, s)| idle(s)).min_by_key(|(_, s)| s.instances.first().and_then(|i| i.stats.last_used())).map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    if let Some(old) = direct.remove(&k) {
                        let keys: Vec<String> = old.instances.iter().map(|i| i.id.clone()).collect();
                        self.store.forget(&keys);
                    }
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::PoolExhausted,
                        format!("{DIRECT_ROUTES_MAX} direct model routes are busy; '{reference}' cannot be added now"),
                    ))
                }
            }
        }
        direct.insert(reference.to_string(), sel.clone());
        Ok(sel)
    }

    /// Direct model routes currently built.
    pub fn direct_routes(&self) -> usize {
        self.direct.lock().len()
    }

    /// The route, request and options a wrapper call resolves to: the wrapper's target, with
    /// its parameters under the caller's and its timeout / fallback groups / attempts where
    /// the caller gave none.
    pub fn resolve_wrapper(&self, name: &str, req: &ChatRequest, opts: &CallOptions) -> Result<(Route, ChatRequest, CallOptions), Error> {
        let w = self.config.wrappers.get(name).ok_or_else(|| self.unknown("wrapper", name, self.config.wrappers.keys()))?;
        let route = match w.kind {
            crate::config::WrapperKind::PollingPool => Route::Pool(w.target.clone()),
            crate::config::WrapperKind::TaskGroup => Route::Group(w.target.clone()),
            crate::config::WrapperKind::Direct => Route::Model(w.target.clone()),
        };
        let req = ChatRequest { messages: req.messages.clone(), params: req.params.clone().or(&w.parameters) };
        let opts = CallOptions {
            timeout: opts.timeout.or(w.timeout),
            fallback_groups: opts.fallback_groups.clone().or_else(|| w.fallback_groups.clone()),
            max_instance_attempts: opts.max_instance_attempts.or(w.max_instance_attempts),
        };
        Ok((route, req, opts))
    }

    /// Route one request.
    pub async fn run(&self, route: &Route, req: &ChatRequest, opts: &CallOptions, stream: bool) -> Result<Walked, Error> {
        if let Route::Wrapper(name) = route {
            let (target, req, opts) = self.resolve_wrapper(name, req, opts)?;
            // A wrapper's target is never itself a wrapper, so this recurses once.
            return Box::pin(self.run(&target, &req, &opts, stream)).await;
        }
        let start = Instant::now();
        let timeout = opts.timeout.or(self.config.global.request_timeout);
        let single = |label: &str, sel: Arc<Selector>| {
            let tries = 1 + sel.instances.first().map_or(0, |i| i.retry.max_retries);
            Plan::single(label.to_string(), sel, tries)
        };
        match route {
            Route::Pool(name) => {
                let pool = self.pools.get(name).cloned().ok_or_else(|| self.unknown("pool", name, self.pools.keys()))?;
                let deadline = timeout.or(pool.config.request_timeout).map(|t| start + t);
                pool.run(req, start, deadline, stream, opts.max_instance_attempts).await
            }
            Route::Group(reference) => {
                let (group, plan) = self.group_plan(reference, opts.fallback_groups.as_deref())?;
                let res = walk(&plan, req, start, timeout.map(|t| start + t), stream, None).await;
                record_in_group(group, reference, res)
            }
            Route::Model(reference) => {
                let plan = single(reference, self.direct_selector(reference)?);
                let mut res = walk(&plan, req, start, timeout.map(|t| start + t), stream, None).await;
                match &mut res {
                    Ok(Walked::Chat(r)) => self.direct_stats.record(true, r.latency),
                    Ok(Walked::Stream(s)) => {
                        let stats = self.direct_stats.clone();
                        s.on_finish(Box::new(move |r| match r {
                            Ok(resp) => stats.record(true, resp.latency),
                            Err(_) => stats.record(false, Duration::ZERO),
                        }));
                    }
                    Err(_) => self.direct_stats.record(false, Duration::ZERO),
                }
                res
            }
            Route::Instance(id) => {
                let sel = self.instance_selectors.get(id).cloned().ok_or_else(|| self.unknown("instance", id, self.instance_selectors.keys()))?;
                walk(&single(id, sel), req, start, timeout.map(|t| start + t), stream, None).await
            }
            Route::Echelon(reference) => {
                let (gname, ename) = Config::parse_group_reference(reference);
                let group = self.groups.get(gname).cloned().ok_or_else(|| self.unknown("group", gname, self.groups.keys()))?;
                let ename = ename.unwrap_or_default();
                let echelon = group.echelon(ename).cloned().ok_or_else(|| Error::routing(format!("group '{gname}' has no echelon '{ename}'")))?;
                let fb = group.config.effective_fallback();
                let retries = echelon.config.max_retries.unwrap_or_else(|| echelon.selector.instances.first().map_or(0, |i| i.retry.max_retries));
                let mut plan = Plan::single(echelon.reference(), echelon.selector.clone(), 1 + retries);
                plan.content_filter_fallback = fb.on_content_filter;
                let res = walk(&plan, req, start, timeout.map(|t| start + t), stream, None).await;
                record_in_group(group, reference, res)
            }
            Route::Wrapper(_) => Err(Error::routing("internal: unresolved wrapper route")),
        }
    }

    /// The route used when a call names nothing: `global.default_route`, else the only pool,
    /// else the only group.
    pub fn default_route(&self) -> Result<Route, Error> {
        if let Some(r) = &self.config.global.default_route {
            return Route::parse(r);
        }
        if self.pools.len() == 1 {
            return Ok(Route::Pool(self.pools.keys().next().cloned().unwrap_or_default()));
        }
        if self.pools.is_empty() && self.groups.len() == 1 {
            return Ok(Route::Group(self.groups.keys().next().cloned().unwrap_or_default()));
        }
        Err(Error::routing("no route given: pass pool=, group= or model= (or set default_route in global.toml)"))
    }
}

/// Record a finished call in the group's history (a stream when it ends).
fn record_in_group(group: Arc<Group>, reference: &str, mut res: Result<Walked, Error>) -> Result<Walked, Error> {
    match &mut res {
        Ok(Walked::Chat(r)) => group.record(reference, &r.attempts, None),
        Ok(Walked::Stream(s)) => {
            let reference = reference.to_string();
            s.on_finish(Box::new(move |r| match r {
                Ok(resp) => group.record(&reference, &resp.attempts, None),
                Err(e) => group.record(&reference, &e.attempts, Some(e)),
            }));
        }
        Err(e) => group.record(reference, &e.attempts, Some(e)),
    }
    res
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for Router {
    /// Stops the alert task, which may be asleep until the next reload and would not notice
    /// the engine going away on its own.
    fn drop(&mut self) {
        self.alerts_stop.cancel();
    }
}

/// Run `fut`; if it panics, end with [`internal_error`] for `route` instead of unwinding into
/// the caller (which would leave a Python awaitable pending forever).
///
/// A combinator rather than an `async fn`: an `async fn` would keep its argument and the
/// future built from it side by side, doubling every in-flight call's state.
pub fn guard_panics<'a, T, F>(route: &'a (impl std::fmt::Display + Sync + ?Sized), fut: F) -> impl std::future::Future<Output = Result<T, Error>> + 'a
where
    F: std::future::Future<Output = Result<T, Error>> + 'a,
{
    AssertUnwindSafe(fut).catch_unwind().map(move |r| match r {
        Ok(res) => res,
        Err(panic) => Err(internal_error(route, panic.as_ref())),
    })
}

/// The error a call ends with when the engine panicked while routing it; logged with the route.
pub fn internal_error(route: &(impl std::fmt::Display + ?Sized), panic: &(dyn std::any::Any + Send)) -> Error {
    let what =
        panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".to_string());
    log::error!("internal error while routing {route}: {what}");
    Error::new(ErrorKind::Internal, format!("internal error while routing {route}: {what} (this is a bug in echelon; it was logged)"))
}

/// Router-wide status.
#[derive(Clone, Debug, Serialize)]
pub struct RouterStatus {
    /// Every pool.
    pub pools: Vec<crate::engine::pool::PoolStatus>,
    /// Every group.
    pub groups: Vec<GroupStatus>,
    /// Direct `provider:model` routes built so far (at most [`DIRECT_ROUTES_MAX`]).
    pub direct_routes: usize,
}

/// Status of one group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// Its fallback strategy.
    pub fallback_strategy: &'static str,
    /// Its echelons in trial order.
    pub echelons: Vec<EchelonStatus>,
}

/// Status of one echelon.
#[derive(Clone, Debug, Serialize)]
pub struct EchelonStatus {
    /// The echelon's name.
    pub name: String,
    /// Its priority (lower first).
    pub priority: u32,
    /// Calls waiting at it.
    pub queue_length: u32,
    /// Its instances.
    pub instances: Vec<crate::engine::instance::InstanceSnapshot>,
    /// Model names it lists that resolved nowhere.
    pub unresolved_models: Vec<String>,
}

/// The router: an atomically swappable [`Engine`] plus the state store and connection pools
/// that outlive reloads.
pub struct Router {
    engine: Arc<ArcSwap<Engine>>,
    store: Arc<dyn StateStore>,
    http: HttpPool,
    rt: tokio::runtime::Handle,
    events: Arc<EventBus>,
    /// Notified on every reload (the alert task sleeps on it while no rules are configured).
    config_changed: Arc<tokio::sync::Notify>,
    alerts_stop: tokio_util::sync::CancellationToken,
    /// The `[state]` the store was built for (a reload cannot change it).
    state_cfg: crate::config::StateConfig,
}

impl Router {
    /// Build a router for `cfg` and start its background work on `rt`. Its state store is
    /// the one `[state]` names: this process's memory (the default), or Redis shared with every
    /// process using the same server and `key_prefix` (which connects in the background:
    /// nothing here waits for it).
    pub fn new(cfg: Config, rt: tokio::runtime::Handle) -> Router {
        let events = Arc::new(EventBus::new());
        let store: Arc<dyn StateStore> = match cfg.global.state.backend {
            StateBackend::Memory => Arc::new(MemoryStore::new()),
            StateBackend::Redis => match RedisStore::start(&cfg.global.state, rt.clone(), events.clone()) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    // The URL was checked when the config was read; this is not expected.
                    log::error!("redis state: {}; state stays in this process", e.0);
                    Arc::new(MemoryStore::new())
                }
            },
        };
        Self::build(cfg, store, rt, events)
    }

    /// Like [`Router::new`] with a given state store.
    pub fn with_store(cfg: Config, store: Arc<dyn StateStore>, rt: tokio::runtime::Handle) -> Router {
        Self::build(cfg, store, rt, Arc::new(EventBus::new()))
    }

    fn build(cfg: Config, store: Arc<dyn StateStore>, rt: tokio::runtime::Handle, events: Arc<EventBus>) -> Router {
        let http = HttpPool::new();
        let state_cfg = cfg.global.state.clone();
        let engine = Engine::build_with_events(cfg, store.clone(), http.clone(), events.clone());
        engine.start(&rt);
        let engine = Arc::new(ArcSwap::from_pointee(engine));
        let alerts_stop = tokio_util::sync::CancellationToken::new();
        let config_changed = Arc::new(tokio::sync::Notify::new());
        crate::observe::alerts::spawn(&rt, Arc::downgrade(&engine), events.clone(), config_changed.clone(), alerts_stop.clone());
        Router { engine, store, http, rt, events, config_changed, alerts_stop, state_cfg }
    }

    /// The event bus: subscribe to engine events and alerts.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// The state store behind every breaker, limit and statistic (shared across reloads; the
    /// gateway takes its keys' budgets from it too).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The current engine. Hold the `Arc` for the duration of a request: a reload does not
    /// affect requests already running.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Swap in a new configuration. In-flight requests finish on the old engine; instances that
    /// still exist keep their breakers, limits, health and latency statistics.
    pub fn reload(&self, cfg: Config) {
        if cfg.global.state != self.state_cfg {
            log::warn!("configuration reloaded with a different [state] section: the state store is kept until the router is built again");
        }
        let engine = Engine::build_with_events(cfg, self.store.clone(), self.http.clone(), self.events.clone());
        engine.start(&self.rt);
        let (pools, groups, wrappers) = (engine.pools.len(), engine.groups.len(), engine.config.wrappers.len());
        let old = self.engine.swap(Arc::new(engine));
        old.close();
        self.config_changed.notify_one();
        log::info!("configuration reloaded");
        self.events.publish(EventKind::ConfigReloaded { pools, groups, wrappers });
    }

    /// Stop background work.
    pub fn close(&self) {
        self.alerts_stop.cancel();
        self.engine.load().close();
    }

    /// Route a request.
    pub async fn run(&self, route: Option<&Route>, req: &ChatRequest, opts: &CallOptions, stream: bool) -> Result<Walked, Error> {
        let engine = self.engine();
        let route = match route {
            Some(r) => r.clone(),
            None => engine.default_route()?,
        };
        let res = guard_panics(&route, engine.run(&route, req, opts, stream)).await;
        if let Err(e) = &res {
            self.events.emit(log::Level::Info, || EventKind::RequestFailed {
                route: route.to_string(),
                error: e.kind,
                message: e.message.clone(),
                attempts: e.attempts.len(),
            });
        }
        res
    }

    /// Status of every pool and group.
    pub fn status(&self) -> RouterStatus {
        let e = self.engine();
        RouterStatus {
            direct_routes: e.direct_routes(),
            pools: e.pools.values().map(|p| p.status()).collect(),
            groups: e
                .groups
                .values()
                .map(|g| GroupStatus {
                    name: g.name.clone(),
                    fallback_strategy: g.config.effective_fallback().strategy.as_str(),
                    echelons: g
                        .echelons
                        .iter()
                        .map(|ec| EchelonStatus {
                            name: ec.config.name.clone(),
                            priority: ec.config.priority,
                            queue_length: ec.selector.queue_len(),
                            instances: ec.selector.instances.iter().map(|i| i.snapshot()).collect(),
                            unresolved_models: ec.unresolved.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
