//! Group, pool and global documents → [`GroupConfig`], [`PoolConfig`], [`GlobalConfig`].

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::layout::{Doc, GlobalKind};
use super::model::*;
use super::reader::{join, Loc, Sink, Tbl};
use crate::secret::Secret;

/// The task-name tiers the original treated as echelons.
pub(crate) const TIERS: [&str; 5] = ["translation", "analysis", "execute", "thinking", "high_payload"];
/// Valid group fallback strategies.
pub(crate) const GROUP_STRATEGIES: [&str; 4] = ["echelon_down", "model_rotate", "provider_failover", "task_group_switch"];
/// Valid pool rotation strategies.
pub(crate) const ROTATIONS: [&str; 5] = ["round_robin", "least_recently_used", "weighted", "least_busy", "latency"];

/// Where the parts of a group came from, for cross-reference errors.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupSrc {
    pub loc: Loc,
    /// Echelon name → key path of its model list (`echelon1.models`, or `echelon1.model`).
    pub models_key: HashMap<String, (String, bool)>,
}

/// Read `[circuit_breaker]`.
pub(crate) fn read_breaker(mut t: Tbl<'_>) -> BreakerConfig {
    let mut b = BreakerConfig::default();
    if let Some(n) = t.uint("failure_threshold", 1, 100) {
        b.failure_threshold = n;
    }
    // Fractions of a second are allowed (the original's minimum was 1 s) so tests can use
    // short real timers.
    if let Some(s) = t.secs_any(&["recovery_time", "reset_timeout"], 0.0, 3600.0, true) {
        b.recovery_time = s;
    }
    if let Some(n) = t.uint("half_open_requests", 1, 10) {
        b.half_open_requests = n;
    }
    if let Some(x) = t.num("failure_ratio", 0.0, 1.0, true) {
        b.failure_ratio = Some(x);
    }
    if let Some(s) = t.secs("window", 0.0, 86400.0, true) {
        b.window = s;
    }
    if let Some(n) = t.uint("min_requests", 1, 1_000_000) {
        b.min_requests = n;
    }
    t.done();
    b
}

fn read_echelon(t: &mut Tbl<'_>, name: &str, src: &mut GroupSrc) -> EchelonConfig {
    let default_priority = name.strip_prefix("echelon").and_then(|n| n.parse::<u32>().ok()).filter(|n| *n <= 1000).unwrap_or(999);
    let mut e = EchelonConfig {
        name: name.to_string(),
        models: Vec::new(),
        priority: default_priority,
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
    t.ignore(&["description"]);
    let has_models = t.has("models");
    let single = t.str("model");
    let provider = t.str("provider");
    if has_models {
        if let Some(m) = t.str_list("models") {
            e.models = m;
        }
        src.models_key.insert(name.to_string(), (t.loc.key("models"), true));
        if single.is_some() {
            t.err("model", None, "use either `models` or `model`, not both");
        }
    } else if let Some(m) = single {
        // TS generation 2: one model (and its provider) per echelon.
        e.models = vec![match &provider {
            Some(p) if !m.contains(':') => format!("{p}:{m}"),
            _ => m,
        }];
        src.models_key.insert(name.to_string(), (t.loc.key("model"), false));
    } else {
        t.err("models", None, "echelon has no models (set `models = [\"...\"]`)");
    }
    if provider.is_some() && has_models {
        t.err("provider", None, "`provider` only applies with a single `model`; write `provider:model` in `models`");
    }
    for (i, m) in e.models.iter().enumerate() {
        if m.trim().is_empty() {
            t.err(&format!("models[{i}]"), Some(&Value::String(m.clone())), "model reference must not be empty");
        }
    }
    if has_models && e.models.is_empty() && t.get("models").is_some_and(|v| v.as_array().is_some_and(Vec::is_empty)) {
        t.err("models", Some(&Value::Array(vec![])), "echelon has no models");
    }
    if let Some(p) = t.uint("priority", 0, 1000) {
        e.priority = p;
    }
    if let Some(n) = t.uint("concurrency_limit", 0, 100_000) {
        e.concurrency_limit = n;
    }
    if let Some(n) = t.uint("rpm_limit", 0, 1_000_000) {
        e.rpm_limit = n;
    }
    if let Some(s) = t.secs("timeout", 0.0, 3600.0, false) {
        e.timeout = (!s.is_zero()).then_some(s);
    }
    e.max_retries = t.uint("max_retries", 0, 10);
    e.temperature = t.num("temperature", 0.0, 2.0, false);
    e.max_tokens = t.uint("max_tokens", 1, 10_000_000);
    e.function_calling = t.str("function_calling");
    e.response_format = t.str("response_format");
    if let Some(mut tc) = t.table("thinking_config") {
        let enabled = tc.bool("enabled").unwrap_or(true);
        let budget_tokens = tc.uint("budget_tokens", 100, 1_000_000).unwrap_or(2000);
        tc.done();
        e.thinking_config = Some(ThinkingConfig { enabled, budget_tokens });
    }
    e
}

/// Read one group document. Echelons are the `echelonN` tables and the task-name tiers, in
/// file order (plus an `echelons` table, the dict form of the original HEAD).
pub(crate) fn read_group(doc: &Doc, sink: &Sink) -> Option<(GroupConfig, GroupSrc)> {
    let mut t = Tbl::of(sink, doc.loc.clone(), &doc.value)?;
    let mut src = GroupSrc { loc: doc.loc.clone(), ..Default::default() };
    let mut g = GroupConfig {
        name: doc.name.clone(),
        description: String::new(),
        echelons: Vec::new(),
        fallback_strategy: FallbackStrategy::EchelonDown,
        circuit_breaker: BreakerConfig::default(),
        fallback: None,
        source: doc.loc.file.clone(),
    };
    t.ignore(&["inherits_from", "provider"]);
    if let Some(n) = t.str("name") {
        if n.trim().is_empty() {
            t.err("name", Some(&Value::String(n)), "must not be empty");
        }
    }
    g.description = t.str("description").unwrap_or_default();
    if let Some(s) = t.choice("fallback_strategy", &GROUP_STRATEGIES) {
        g.fallback_strategy = FallbackStrategy::parse(&s).unwrap_or(FallbackStrategy::EchelonDown);
    }
    if let Some(b) = t.table("circuit_breaker") {
        g.circuit_breaker = read_breaker(b);
    }
    if let Some(mut f) = t.table("fallback_config") {
        g.fallback = Some(read_fallback(&mut f, g.fallback_strategy));
        f.done();
    }
    if sink.is_original(&doc.loc) {
        // The original never slept between fallback targets, whatever `retry_delay` said: a
        // migrated user gets that behaviour (the TOML layout applies `retry_delay`).
        let fc = g.fallback.get_or_insert_with(|| FallbackConfig { strategy: g.fallback_strategy, ..Default::default() });
        if !fc.retry_delay.is_zero() && doc.value.get("fallback_config").and_then(|f| f.get("retry_delay")).is_some() {
            sink.note(
                doc.loc.file.as_deref(),
                &doc.loc.key("fallback_config.retry_delay"),
                Some(format!("{}", fc.retry_delay.as_secs_f64())),
                "loaded as 0: the original never waited between fallback targets (set `retry_delay` in the TOML layout to wait)",
            );
        }
        fc.retry_delay = Duration::ZERO;
    }
    // Known for "did you mean" even when absent (typos of echelon keys are common).
    for k in ["echelon1", "echelon2", "echelon3"].iter().chain(TIERS.iter()) {
        t.mark(k);
    }
    let map = t.map();
    for (k, v) in map {
        let nested = k == "echelons";
        let is_echelon = !nested && (k.starts_with("echelon") || TIERS.contains(&k.as_str()));
        if !nested && !is_echelon {
            continue;
        }
        t.mark(k);
        let Some(tbl) = Tbl::of(sink, t.loc.child(k), v) else {
            continue;
        };
        if nested {
            for (ename, ev) in tbl.map() {
                if let Some(mut et) = Tbl::of(sink, tbl.loc.child(ename), ev) {
                    push_echelon(&mut g, read_echelon(&mut et, ename, &mut src), &et);
                    et.done();
                }
            }
        } else {
            let mut et = tbl;
            push_echelon(&mut g, read_echelon(&mut et, k, &mut src), &et);
            et.done();
        }
    }
    if g.echelons.is_empty() {
        sink.push(doc.loc.file.as_deref(), &doc.loc.path, None, format!("group `{}` has no echelons (add an [echelon1] table with `models`)", g.name));
    }
    t.done();
    Some((g, src))
}

fn push_echelon(g: &mut GroupConfig, e: EchelonConfig, t: &Tbl<'_>) {
    if g.echelons.iter().any(|x| x.name == e.name) {
        t.err("", None, format!("duplicate echelon `{}`", e.name));
        return;
    }
    g.echelons.push(e);
}

fn read_fallback(f: &mut Tbl<'_>, group_strategy: FallbackStrategy) -> FallbackConfig {
    let mut fc = FallbackConfig { strategy: group_strategy, ..Default::default() };
    if let Some(s) = f.choice("strategy", &GROUP_STRATEGIES) {
        fc.strategy = FallbackStrategy::parse(&s).unwrap_or(group_strategy);
    }
    if let Some(l) = f.str_list("fallback_groups") {
        fc.fallback_groups = l;
    }
    if let Some(n) = f.uint("max_attempts", 1, 10) {
        fc.max_attempts = n;
    }
    // 0 is allowed (the original's minimum was 0.1 s) so tests need not sleep.
    if let Some(s) = f.secs("retry_delay", 0.0, 60.0, false) {
        fc.retry_delay = s;
    }
    if let Some(b) = f.table("circuit_breaker") {
        fc.circuit_breaker = Some(read_breaker(b));
    }
    if let Some(v) = f.get("on_content_filter") {
        match v {
            Value::Bool(b) => fc.on_content_filter = *b,
            Value::String(s) if s == "surface" => fc.on_content_filter = false,
            Value::String(s) if s == "fallback" => fc.on_content_filter = true,
            other => f.err("on_content_filter", Some(other), "invalid value; expected one of: surface, fallback (or a boolean)"),
        }
    }
    if let Some(ms) = f.num("hedge_after_ms", 0.0, 600_000.0, false) {
        fc.hedge_after = (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    fc
}

/// `[rate_limiting]`: `Some(None)` when present but disabled.
pub(crate) fn read_rate_limit(mut t: Tbl<'_>) -> Option<RateLimitConfig> {
    let enabled = t.bool("enabled").unwrap_or(true);
    let algorithm = t.choice("algorithm", &["token_bucket", "sliding_window"]);
    let mut tb = (1000u32, 16.67f64);
    if let Some(mut b) = t.table("token_bucket") {
        if let Some(n) = b.uint("bucket_size", 1, u64::MAX) {
            tb.0 = n;
        }
        if let Some(x) = b.num("refill_rate", 0.0, 1e9, true) {
            tb.1 = x;
        }
        b.done();
    }
    let mut sw = (Duration::from_secs(60), 1000u32);
    if let Some(mut w) = t.table("sliding_window") {
        if let Some(s) = w.secs("window_size", 0.0, 86400.0, true) {
            sw.0 = s;
        }
        if let Some(n) = w.uint("max_requests", 1, u64::MAX) {
            sw.1 = n;
        }
        w.done();
    }
    // TS generation 2: `requests_per_minute` = a 60 s sliding window.
    let rpm = t.uint("requests_per_minute", 1, u64::MAX);
    t.done();
    if !enabled {
        return None;
    }
    match (algorithm.as_deref(), rpm) {
        (Some("sliding_window"), _) => Some(RateLimitConfig::SlidingWindow { window_size: sw.0, max_requests: sw.1 }),
        (None, Some(n)) => Some(RateLimitConfig::SlidingWindow { window_size: Duration::from_secs(60), max_requests: n }),
        _ => Some(RateLimitConfig::TokenBucket { bucket_size: tb.0, refill_rate: tb.1 }),
    }
}

/// Read one pool document.
pub(crate) fn read_pool(doc: &Doc, sink: &Sink) -> Option<PoolConfig> {
    let mut t = Tbl::of(sink, doc.loc.clone(), &doc.value)?;
    t.ignore(&["inherits_from", "monitoring"]);
    let mut p = PoolConfig {
        name: doc.name.clone(),
        description: String::new(),
        task_groups: Vec::new(),
        rotation_strategy: RotationStrategy::RoundRobin,
        health_check: HealthCheckConfig::default(),
        max_instance_attempts: 2,
        rate_limit: None,
        max_concurrent_requests: 0,
        queue_size: 1000,
        request_timeout: None,
        source: doc.loc.file.clone(),
    };
    if let Some(n) = t.str("name") {
        if n.trim().is_empty() {
            t.err("name", Some(&Value::String(n)), "must not be empty");
        }
    }
    p.description = t.str("description").unwrap_or_default();
    match t.str_list("task_groups") {
        Some(l) if l.is_empty() => t.err("task_groups", Some(&Value::Array(vec![])), "pool has no task groups"),
        Some(l) => p.task_groups = l,
        None if !t.has("task_groups") => t.err("task_groups", None, "missing required key `task_groups` (the groups whose models this pool serves)"),
        None => {}
    }
    if let Some(s) = t.choice("rotation_strategy", &ROTATIONS) {
        p.rotation_strategy = RotationStrategy::parse(&s).unwrap_or(RotationStrategy::RoundRobin);
    }
    if let Some(mut r) = t.table("rotation") {
        r.ignore(&["current_index"]);
        if let Some(s) = r.choice("strategy", &ROTATIONS) {
            p.rotation_strategy = RotationStrategy::parse(&s).unwrap_or(RotationStrategy::RoundRobin);
        }
        r.done();
    }
    // The original's flat keys first, so the `[health_check]` table wins.
    if let Some(s) = t.secs("health_check_interval", 0.0, 86400.0, true) {
        p.health_check.interval = s;
    }
    if let Some(n) = t.uint("failure_threshold", 1, 100) {
        p.health_check.failure_threshold = n;
    }
    if let Some(s) = t.secs("recovery_time", 0.0, 3600.0, true) {
        p.health_check.recovery_time = s;
    }
    if let Some(mut h) = t.table("health_check") {
        if let Some(b) = h.bool("enabled") {
            p.health_check.enabled = b;
        }
        if let Some(s) = h.secs("interval", 0.0, 86400.0, true) {
            p.health_check.interval = s;
        }
        if let Some(n) = h.uint("failure_threshold", 1, 100) {
            p.health_check.failure_threshold = n;
        }
        if let Some(s) = h.secs("recovery_time", 0.0, 3600.0, true) {
            p.health_check.recovery_time = s;
        }
        if let Some(pr) = h.choice("probe", &["models", "head", "completion"]) {
            p.health_check.probe = Some(match pr.as_str() {
                "head" => ProbeMode::Head,
                "completion" => ProbeMode::Completion,
                _ => ProbeMode::Models,
            });
        }
        h.done();
    }
    if let Some(mut f) = t.table("fallback_config") {
        // `simple_retry` had no implementation in the original; both are accepted and the pool
        // rotates instances either way.
        f.choice("strategy", &["instance_rotation", "simple_retry"]);
        if let Some(n) = f.uint("max_instance_attempts", 1, 10) {
            p.max_instance_attempts = n;
        }
        f.done();
    }
    if let Some(rl) = t.table("rate_limiting") {
        p.rate_limit = read_rate_limit(rl);
    }
    if let Some(mut perf) = t.table("performance") {
        if let Some(s) = perf.secs("request_timeout", 0.0, 86400.0, true) {
            p.request_timeout = Some(s);
        }
        if let Some(n) = perf.uint("max_concurrent_requests", 0, u64::MAX) {
            p.max_concurrent_requests = n;
        }
        if let Some(n) = perf.uint("queue_size", 0, 10_000_000) {
            p.queue_size = n;
        }
        perf.done();
    }
    if let Some(mut cc) = t.table("concurrency_control") {
        let enabled = cc.bool("enabled").unwrap_or(true);
        let max = cc.uint("max_concurrency", 0, u64::MAX);
        cc.ignore(&["levels"]);
        cc.done();
        if let (true, Some(n)) = (enabled, max) {
            p.max_concurrent_requests = n;
        }
    }
    if let Some(v) = t.get("instances") {
        read_instances(&t, v);
    }
    t.done();
    Some(p)
}

/// TS generation 2 `[[instances]]`: checked for shape, then ignored: a pool's instances are
/// always derived from its task groups' models, so one list of truth exists.
fn read_instances(t: &Tbl<'_>, v: &Value) {
    let Some(items) = v.as_array() else {
        t.err("instances", Some(v), format!("expected array of tables, found {}", super::reader::type_name(v)));
        return;
    };
    for (i, it) in items.iter().enumerate() {
        if let Some(mut it) = Tbl::of(t.sink(), t.loc.child(&format!("instances[{i}]")), it) {
            it.str("name");
            it.str("provider");
            it.str("model");
            it.num("weight", 0.0, 1e6, false);
            it.done();
        }
    }
    log::info!(
        "{}: `instances` is ignored; pool instances come from its task groups",
        t.loc.file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| join(&t.loc.path, "instances"))
    );
}

/// Apply one global document onto `g`.
pub(crate) fn read_global(kind: GlobalKind, doc: &Doc, g: &mut GlobalConfig, env: super::source::EnvLookup<'_>, sink: &Sink) {
    let Some(mut t) = Tbl::of(sink, doc.loc.clone(), &doc.value) else {
        return;
    };
    match kind {
        GlobalKind::Global | GlobalKind::Fallback => {
            t.ignore(&["name", "description"]);
            read_fallback_flat(&mut t, g);
            if let Some(mut f) = t.table("fallback") {
                read_fallback_flat(&mut f, g);
                f.done();
            }
            if let Some(b) = t.table("circuit_breaker") {
                g.circuit_breaker = read_breaker(b);
            }
            if kind == GlobalKind::Global {
                if let Some(r) = t.str("default_route") {
                    g.default_route = Some(r);
                }
                if let Some(s) = t.secs("request_timeout", 0.0, 86400.0, true) {
                    g.request_timeout = Some(s);
                }
                if let Some(rl) = t.table("rate_limiting") {
                    g.rate_limit = read_rate_limit(rl);
                }
                if let Some(cc) = t.table("concurrency_control") {
                    read_concurrency(cc);
                }
                super::wrappers::read_alerts(&mut t, g);
                if let Some(st) = t.table("state") {
                    g.state = read_state(st);
                }
                if let Some(gw) = t.table("gateway") {
                    super::gateway::read_gateway(gw, &mut g.gateway, env);
                }
            }
            t.done();
        }
        GlobalKind::Concurrency => read_concurrency(t),
        GlobalKind::RateLimiting => g.rate_limit = read_rate_limit(t),
    }
}

/// `[state]`: the backend of shared state. The URL is a secret (it carries the password), so
/// errors about it never show its value.
fn read_state(mut t: Tbl<'_>) -> StateConfig {
    let mut s = StateConfig::default();
    if let Some(b) = t.choice("backend", &StateBackend::NAMES) {
        s.backend = if b == "redis" { StateBackend::Redis } else { StateBackend::Memory };
    }
    let url = t.str("url");
    if let Some(p) = t.str("key_prefix") {
        if p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) {
            t.err(
                "key_prefix",
                Some(&Value::String(p)),
                "must be 1-64 characters of letters, digits, `-`, `_`, `.` or `:` (braces would break the keys' hash tags)",
            );
        } else {
            s.key_prefix = p;
        }
    }
    if let Some(d) = t.secs("timeout", 0.001, 60.0, false) {
        s.timeout = d;
    }
    if let Some(d) = t.secs("connect_timeout", 0.001, 60.0, false) {
        s.connect_timeout = d;
    }
    if let Some(d) = t.secs("lease_time", 0.5, 3600.0, false) {
        s.lease_time = d;
    }
    if let Some(x) = t.num("local_share", 0.0, 1.0, true) {
        s.local_share = Some(x);
    }
    if let Some(f) = t.str("tls_ca_file") {
        // Relative to the file that names it (so a config tree can carry its CA), else to
        // the working directory (the dict form).
        let path = match t.file().and_then(|p| p.parent()) {
            Some(dir) if std::path::Path::new(&f).is_relative() => dir.join(&f),
            _ => std::path::PathBuf::from(&f),
        };
        let shown = Value::String(f.clone());
        match std::fs::read(&path) {
            Err(e) => t.err("tls_ca_file", Some(&shown), format!("cannot be read ({}): {e}", path.display())),
            Ok(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                t.err("tls_ca_file", Some(&shown), format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()))
            }
            Ok(pem) => {
                s.tls_ca_file = Some(f);
                s.tls_ca_pem = Some(pem);
            }
        }
    }
    match (s.backend, url) {
        (StateBackend::Redis, None) => t.err("url", None, "required with backend = \"redis\" (redis://host:port or rediss://… for TLS)"),
        (_, Some(u)) => {
            let u = u.trim().to_string();
            let shown = Value::String(mask_url_password(&u));
            if u.is_empty() {
                t.err("url", Some(&shown), "must not be empty (is an environment variable it uses unset?)");
            } else if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                t.err("url", Some(&shown), "must start with redis:// or rediss:// (TLS)");
            } else if let Err(e) = crate::state::redis::check_url(&u) {
                t.err("url", Some(&shown), e);
            } else if s.tls_ca_pem.is_some() && !u.starts_with("rediss://") {
                t.err("tls_ca_file", s.tls_ca_file.clone().map(Value::String).as_ref(), "is only used with a rediss:// url (TLS); this url is plain redis://");
            } else {
                s.url = Secret::new(u);
            }
        }
        (StateBackend::Memory, None) => {}
    }
    t.done();
    s
}

fn read_fallback_flat(t: &mut Tbl<'_>, g: &mut GlobalConfig) {
    if let Some(b) = t.bool("enabled") {
        g.fallback_enabled = b;
    }
    if let Some(n) = t.uint("max_attempts", 1, 10) {
        g.max_attempts = n;
    }
    if let Some(s) = t.secs("retry_delay", 0.0, 60.0, false) {
        if t.sink().is_original(&t.loc) && !s.is_zero() {
            t.sink().note(
                t.file(),
                &t.loc.key("retry_delay"),
                Some(format!("{}", s.as_secs_f64())),
                "loaded as 0: the original never waited between fallback targets",
            );
            g.retry_delay = Duration::ZERO;
        } else {
            g.retry_delay = s;
        }
    }
}

/// `concurrency_control.yaml`: checked, not used (per-echelon and per-pool limits replace the
/// original's level table, which nothing consulted).
fn read_concurrency(mut t: Tbl<'_>) {
    t.bool("enabled");
    if let Some(levels) = t.get("levels") {
        match levels.as_array() {
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    let Some(lt) = Tbl::of(t.sink(), t.loc.child(&format!("levels[{i}]")), it) else {
                        continue;
                    };
                    for (name, lv) in lt.map() {
                        let Some(mut l) = Tbl::of(t.sink(), lt.loc.child(name), lv) else {
                            continue;
                        };
                        l.uint("limit", 0, u64::MAX);
                        l.uint("queue_size", 0, u64::MAX);
                        l.done();
                    }
                }
            }
            None => t.err("levels", Some(levels), format!("expected array, found {}", super::reader::type_name(levels))),
        }
    }
    t.done();
}
