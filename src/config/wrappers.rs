//! Named wrappers (`wrappers/<name>.toml`, dict key `wrappers`) and `[[alerts]]` rules of
//! `global.toml`: reading and cross-reference checks.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::layout::Doc;
use super::model::*;
use super::reader::{did_you_mean, show, type_name, Loc, Sink, Tbl};
use crate::types::Params;

const PARAM_KEYS: [&str; 7] = ["temperature", "max_tokens", "top_p", "stop", "tools", "tool_choice", "response_format"];

/// Generation parameters of a wrapper: the known keys are checked, anything else passes
/// through to the provider unless it looks like a typo of a known key.
fn read_params(p: &mut Tbl<'_>) -> Params {
    let mut out = Params {
        temperature: p.num("temperature", 0.0, 2.0, false),
        max_tokens: p.uint("max_tokens", 1, u64::MAX),
        top_p: p.num("top_p", 0.0, 1.0, false),
        ..Default::default()
    };
    if let Some(v) = p.get("stop") {
        match v {
            Value::String(s) => out.stop = vec![s.clone()],
            Value::Array(_) => out.stop = p.str_list("stop").unwrap_or_default(),
            other => p.err("stop", Some(other), format!("expected string or array of strings, found {}", type_name(other))),
        }
    }
    out.tools = p.get("tools").cloned();
    out.tool_choice = p.get("tool_choice").cloned();
    out.response_format = p.get("response_format").cloned();
    for (k, v) in p.map() {
        if PARAM_KEYS.contains(&k.as_str()) {
            continue;
        }
        let hint = did_you_mean(k, PARAM_KEYS);
        if hint.is_empty() {
            out.extra.insert(k.clone(), v.clone());
        } else {
            p.err(k, Some(v), format!("unknown parameter `{k}`{hint}"));
        }
        p.mark(k);
    }
    out
}

/// Read one wrapper document.
pub(crate) fn read_wrapper(doc: &Doc, sink: &Sink) -> Option<WrapperConfig> {
    let mut t = Tbl::of(sink, doc.loc.clone(), &doc.value)?;
    if let Some(n) = t.str("name") {
        if n.trim().is_empty() {
            t.err("name", Some(&Value::String(n)), "must not be empty");
        }
    }
    let description = t.str("description").unwrap_or_default();
    let kind = t.choice("type", &WrapperKind::NAMES).and_then(|s| WrapperKind::parse(&s));
    if kind.is_none() && !t.has("type") {
        t.err("type", None, format!("missing required key `type` (one of: {})", WrapperKind::NAMES.join(", ")));
    }
    let target = t.str("target");
    if target.is_none() && !t.has("target") {
        t.err("target", None, "missing required key `target` (a pool name, group reference or provider:model)");
    }
    if let Some(tg) = &target {
        if tg.trim().is_empty() {
            t.err("target", Some(&Value::String(tg.clone())), "must not be empty");
        }
    }
    let parameters = match t.table_any(&["parameters", "default_parameters"]) {
        Some(mut p) => {
            let out = read_params(&mut p);
            p.done();
            out
        }
        None => Params::default(),
    };
    let timeout = t.secs("timeout", 0.0, 86400.0, true);
    let fallback_groups = t.str_list("fallback_groups");
    let max_instance_attempts = t.uint("max_instance_attempts", 1, 10);
    t.done();
    Some(WrapperConfig {
        name: doc.name.clone(),
        description,
        kind: kind?,
        target: target?,
        parameters,
        timeout,
        fallback_groups,
        max_instance_attempts,
        source: doc.loc.file.clone(),
    })
}

/// `alert_interval` and `[[alerts]]` of the global document.
pub(crate) fn read_alerts(t: &mut Tbl<'_>, g: &mut GlobalConfig) {
    if let Some(s) = t.secs("alert_interval", 0.0, 3600.0, true) {
        g.alert_interval = s;
    }
    let Some(v) = t.get("alerts") else { return };
    let Some(items) = v.as_array() else {
        t.err("alerts", Some(v), format!("expected array of tables, found {}", type_name(v)));
        return;
    };
    for (i, it) in items.iter().enumerate() {
        let Some(mut r) = Tbl::of(t.sink(), t.loc.child(&format!("alerts[{i}]")), it) else { continue };
        let kind = r.choice("kind", &AlertKind::NAMES).and_then(|s| AlertKind::parse(&s));
        if kind.is_none() && !r.has("kind") {
            r.err("kind", None, format!("missing required key `kind` (one of: {})", AlertKind::NAMES.join(", ")));
        }
        let scope = r.str("scope");
        let name = r.str("name");
        let window = r.secs("window", 0.0, 86400.0, true).unwrap_or(Duration::from_secs(60));
        let min_requests = r.uint("min_requests", 1, 1_000_000).unwrap_or(10);
        let threshold = match kind {
            Some(AlertKind::ErrorRatio) | Some(AlertKind::Capacity) => {
                require(&mut r, "threshold", |r| r.num("threshold", 0.0, 1.0, true), "a fraction in (0, 1]")
            }
            Some(AlertKind::P99Latency) => require(&mut r, "threshold", |r| r.num("threshold", 0.0, 86400.0, true), "seconds"),
            Some(AlertKind::BreakerOpen) => {
                let v = r.num("for", 0.0, 86400.0, false).unwrap_or(0.0);
                r.get("threshold").is_some().then(|| r.err("threshold", None, "breaker_open takes `for` (seconds open), not `threshold`"));
                Some(v)
            }
            None => {
                r.get("threshold");
                r.get("for");
                None
            }
        };
        if kind != Some(AlertKind::BreakerOpen) && r.get("for").is_some() {
            r.err("for", None, "`for` only applies to breaker_open rules");
        }
        r.done();
        let (Some(kind), Some(threshold)) = (kind, threshold) else { continue };
        let name = name.unwrap_or_else(|| format!("{}:{}", kind.as_str(), scope.as_deref().unwrap_or("all")));
        g.alerts.push(AlertRule { name, kind, scope, threshold, window, min_requests, key: format!("alerts[{i}]") });
    }
}

fn require(r: &mut Tbl<'_>, key: &str, read: impl FnOnce(&mut Tbl<'_>) -> Option<f64>, what: &str) -> Option<f64> {
    let present = r.map().get(key).is_some_and(|v| !v.is_null());
    let v = read(r);
    if !present {
        r.err(key, None, format!("missing required key `{key}` ({what})"));
    }
    v
}

/// Every wrapper target must exist; alert scopes must name a pool, group or instance.
pub(crate) fn check(cfg: &Config, wrapper_locs: &HashMap<String, Loc>, global_loc: Option<&Loc>, sink: &Sink) {
    for (name, w) in &cfg.wrappers {
        let Some(loc) = wrapper_locs.get(name) else { continue };
        let value = Some(show(&Value::String(w.target.clone())));
        let push = |key: &str, msg: String| sink.push(loc.file.as_deref(), &loc.key(key), value.clone(), msg);
        match w.kind {
            WrapperKind::PollingPool => {
                if !cfg.pools.contains_key(&w.target) {
                    let hint = did_you_mean(&w.target, cfg.pools.keys().map(String::as_str));
                    push("target", format!("wrapper `{name}`: unknown pool `{}`{hint}", w.target));
                }
            }
            WrapperKind::TaskGroup => {
                if let Some(msg) = group_ref_problem(cfg, &w.target) {
                    push("target", format!("wrapper `{name}`: {msg}"));
                }
            }
            WrapperKind::Direct => {
                if cfg.resolve_model(&w.target).is_none() {
                    let hint = did_you_mean(&w.target, cfg.models.keys().map(String::as_str));
                    push("target", format!("wrapper `{name}`: model `{}` resolves nowhere{hint} (use a logical model name or `provider:model`)", w.target));
                }
            }
        }
        for (i, r) in w.fallback_groups.iter().flatten().enumerate() {
            if let Some(msg) = group_ref_problem(cfg, r) {
                sink.push(loc.file.as_deref(), &loc.key(&format!("fallback_groups[{i}]")), Some(show(&Value::String(r.clone()))), msg);
            }
        }
    }
    let Some(gloc) = global_loc.cloned().or_else(|| (!cfg.global.alerts.is_empty()).then(|| Loc::new(None, "global"))) else { return };
    for rule in &cfg.global.alerts {
        let Some(scope) = &rule.scope else { continue };
        if !scope_exists(cfg, scope) {
            let mut known: Vec<String> = cfg.pools.keys().chain(cfg.groups.keys()).cloned().collect();
            known.extend(instance_ids(cfg));
            let bare = scope.split_once(':').map_or(scope.as_str(), |(_, n)| n);
            let hint = did_you_mean(bare, known.iter().map(String::as_str));
            sink.push(
                gloc.file.as_deref(),
                &gloc.key(&format!("{}.scope", rule.key)),
                Some(show(&Value::String(scope.clone()))),
                format!("unknown alert scope `{scope}`{hint} (a pool, group or instance name, optionally prefixed pool:/group:/instance:)"),
            );
        }
    }
}

fn group_ref_problem(cfg: &Config, r: &str) -> Option<String> {
    let (g, e) = Config::parse_group_reference(r);
    match cfg.groups.get(g) {
        None => Some(format!("unknown group `{g}`{}", did_you_mean(g, cfg.groups.keys().map(String::as_str)))),
        Some(group) => match e {
            Some(e) if group.echelon(e).is_none() => {
                Some(format!("group `{g}` has no echelon `{e}`{}", did_you_mean(e, group.echelons.iter().map(|x| x.name.as_str()))))
            }
            _ => None,
        },
    }
}

/// The instance ids the router will build (`group.echelon_model`), without duplicates' `#n`.
fn instance_ids(cfg: &Config) -> Vec<String> {
    cfg.groups.values().flat_map(|g| g.echelons.iter().flat_map(move |e| e.models.iter().map(move |m| format!("{}.{}_{m}", g.name, e.name)))).collect()
}

fn scope_exists(cfg: &Config, scope: &str) -> bool {
    match scope.split_once(':') {
        Some(("pool", n)) => cfg.pools.contains_key(n),
        Some(("group", n)) => cfg.groups.contains_key(n),
        Some(("instance", n)) => instance_ids(cfg).iter().any(|i| i == n),
        _ => cfg.pools.contains_key(scope) || cfg.groups.contains_key(scope) || instance_ids(cfg).iter().any(|i| i == scope),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{from_json_with_env, WrapperKind};

    fn env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn wrapper_from_dict_with_defaults_and_errors() {
        let base = serde_json::json!({
            "providers": {"mock": {"common": {"type": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}, "m": {"model": "m"}}},
            "groups": {"g": {"echelon1": {"models": ["m"]}}},
            "pools": {"p": {"task_groups": ["g"]}},
            "wrappers": {"w": {"type": "polling_pool", "target": "p", "timeout": 2, "parameters": {"max_tokens": 9, "seed": 1}}},
        });
        let cfg = from_json_with_env(&base, &env).expect("valid");
        let w = &cfg.wrappers["w"];
        assert_eq!((w.kind, w.target.as_str(), w.parameters.max_tokens), (WrapperKind::PollingPool, "p", Some(9)));
        assert_eq!(w.parameters.extra.get("seed"), Some(&serde_json::json!(1)));
        let mut bad = base.clone();
        bad["wrappers"]["w"]["type"] = "pol".into();
        bad["wrappers"]["x"] = serde_json::json!({"type": "direct", "target": "nope"});
        let err = from_json_with_env(&bad, &env).expect_err("invalid");
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"wrappers.w.type") && keys.contains(&"wrappers.x.target"), "{keys:?}");
        assert_eq!(crate::engine::router::Route::parse("wrapper:w").ok(), Some(crate::engine::router::Route::Wrapper("w".into())));
    }
}
