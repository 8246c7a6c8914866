//! Cross-document checks: model references, group references, fallback cycles, default route.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::groups::GroupSrc;
use super::layout::Unavailable;
use super::model::{Config, ProviderKind};
use super::reader::{did_you_mean, join, show, Loc, Sink};

/// Check every reference in `cfg`; `srcs` says where each group was defined.
pub(crate) fn check_references(
    cfg: &Config,
    srcs: &HashMap<String, GroupSrc>,
    pool_locs: &HashMap<String, Loc>,
    global_loc: Option<&Loc>,
    unavailable: &[Unavailable],
    sink: &Sink,
) {
    check_models(cfg, srcs, unavailable, sink);
    for (name, g) in &cfg.groups {
        let Some(src) = srcs.get(name) else { continue };
        if let Some(fb) = &g.fallback {
            let base = src.loc.child("fallback_config");
            for (i, r) in fb.fallback_groups.iter().enumerate() {
                check_group_ref(cfg, r, &base, &format!("fallback_groups[{i}]"), sink);
            }
        }
    }
    for (name, p) in &cfg.pools {
        let Some(loc) = pool_locs.get(name) else {
            continue;
        };
        for (i, r) in p.task_groups.iter().enumerate() {
            check_group_ref(cfg, r, loc, &format!("task_groups[{i}]"), sink);
        }
    }
    check_cycles(cfg, srcs, sink);
    if let (Some(route), Some(loc)) = (&cfg.global.default_route, global_loc) {
        check_route(cfg, route, loc, sink);
    }
}

fn check_models(cfg: &Config, srcs: &HashMap<String, GroupSrc>, unavailable: &[Unavailable], sink: &Sink) {
    // Every logical model must be callable.
    for m in cfg.models.values() {
        if m.base_url.is_empty() {
            sink.push(m.source.as_deref(), "base_url", None, format!("model `{}`: base_url is required for type {}", m.name, m.kind.as_str()));
        }
    }
    let mut candidates: Vec<String> = cfg.models.keys().cloned().collect();
    for p in cfg.providers.keys() {
        candidates.push(format!("{p}:"));
    }
    for (gname, g) in &cfg.groups {
        let Some(src) = srcs.get(gname) else { continue };
        for e in &g.echelons {
            let Some((key, is_list)) = src.models_key.get(&e.name) else {
                continue;
            };
            for (i, r) in e.models.iter().enumerate() {
                if r.trim().is_empty() {
                    continue;
                }
                let path = if *is_list { format!("{key}[{i}]") } else { key.clone() };
                match cfg.resolve_model(r) {
                    Some(m) if m.base_url.is_empty() => {
                        sink.push(
                            src.loc.file.as_deref(),
                            &path,
                            Some(show(&Value::String(r.clone()))),
                            format!(
                                "model `{r}` (group `{gname}`, echelon `{}`): provider `{}` is {} and has no base_url",
                                e.name,
                                m.provider,
                                m.kind.as_str()
                            ),
                        );
                    }
                    Some(_) => {}
                    None if sink.is_original(&src.loc) => {
                        // The original's groups name models its provider files never define:
                        // left out of the echelon (the engine names them if a call finds the
                        // echelon empty).
                        let why = match unavailable.iter().find(|u| u.model == *r) {
                            Some(u) => u.reason(),
                            None => format!(
                                "no provider file defines it{} (define llms/provider/<provider>/{r}.yaml with a `model_name`, or write `provider:model`)",
                                did_you_mean(r, candidates.iter().map(String::as_str))
                            ),
                        };
                        sink.note(
                            src.loc.file.as_deref(),
                            &path,
                            Some(show(&Value::String(r.clone()))),
                            format!("model `{r}` of group `{gname}`, echelon `{}` is left out: {why}", e.name),
                        );
                    }
                    None => {
                        let why = match r.split_once(':') {
                            Some((p, _)) if !cfg.providers.contains_key(p) => {
                                format!(": no provider `{p}`{}", did_you_mean(p, cfg.providers.keys().map(String::as_str)))
                            }
                            Some(_) => String::new(),
                            None => did_you_mean(r, candidates.iter().map(String::as_str)),
                        };
                        sink.push(
                            src.loc.file.as_deref(),
                            &path,
                            Some(show(&Value::String(r.clone()))),
                            format!("unknown model `{r}` in group `{gname}`, echelon `{}`{why} (use a logical model name or `provider:model`)", e.name),
                        );
                    }
                }
            }
        }
    }
}

/// A group reference `group` or `group.echelon` must name an existing group (and echelon).
fn check_group_ref(cfg: &Config, r: &str, loc: &Loc, key: &str, sink: &Sink) {
    let (g, e) = Config::parse_group_reference(r);
    let value = Some(show(&Value::String(r.to_string())));
    match cfg.groups.get(g) {
        None => {
            let hint = did_you_mean(g, cfg.groups.keys().map(String::as_str));
            sink.push(loc.file.as_deref(), &loc.key(key), value, format!("unknown group `{g}`{hint}"));
        }
        Some(group) => {
            if let Some(e) = e {
                if group.echelon(e).is_none() {
                    let hint = did_you_mean(e, group.echelons.iter().map(|x| x.name.as_str()));
                    sink.push(loc.file.as_deref(), &loc.key(key), value, format!("group `{g}` has no echelon `{e}`{hint}"));
                }
            }
        }
    }
}

/// Fallback cycles between groups (A → B → A through `fallback_groups`). References to the
/// group itself (`fast_group.echelon2` inside fast_group) are ordinary echelon steps.
fn check_cycles(cfg: &Config, srcs: &HashMap<String, GroupSrc>, sink: &Sink) {
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, g) in &cfg.groups {
        let out = edges.entry(name.as_str()).or_default();
        if let Some(fb) = &g.fallback {
            for r in &fb.fallback_groups {
                let (target, _) = Config::parse_group_reference(r);
                if target != name && cfg.groups.contains_key(target) && !out.contains(&target) {
                    out.push(target);
                }
            }
        }
    }
    let mut reported: Vec<Vec<&str>> = Vec::new();
    for start in edges.keys().copied() {
        let mut path = vec![start];
        find_cycles(start, &edges, &mut path, &mut reported);
    }
    for cycle in reported {
        let first = cycle[0];
        let mut shown: Vec<&str> = cycle.clone();
        shown.push(first);
        if let Some(src) = srcs.get(first) {
            sink.push(src.loc.file.as_deref(), &join(&src.loc.path, "fallback_config.fallback_groups"), None, format!("fallback cycle: {}", shown.join(" → ")));
        }
    }
}

fn find_cycles<'a>(node: &'a str, edges: &BTreeMap<&'a str, Vec<&'a str>>, path: &mut Vec<&'a str>, reported: &mut Vec<Vec<&'a str>>) {
    if path.len() > edges.len() + 1 {
        return;
    }
    for next in edges.get(node).map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cycle: Vec<&str> = path[pos..].to_vec();
            // Canonical rotation so each cycle is reported once.
            let min = cycle.iter().enumerate().min_by_key(|(_, n)| **n).map(|(i, _)| i).unwrap_or(0);
            cycle.rotate_left(min);
            if !reported.contains(&cycle) {
                reported.push(cycle);
            }
            continue;
        }
        path.push(next);
        find_cycles(next, edges, path, reported);
        path.pop();
    }
}

/// `default_route`: `pool:<name>`, `group:<ref>` or `direct:<provider>:<model>` (a logical
/// model name is accepted as `direct:<name>`).
fn check_route(cfg: &Config, route: &str, loc: &Loc, sink: &Sink) {
    let value = Some(show(&Value::String(route.to_string())));
    let key = loc.key("default_route");
    match route.split_once(':') {
        Some(("pool", name)) => {
            if !cfg.pools.contains_key(name) {
                let hint = did_you_mean(name, cfg.pools.keys().map(String::as_str));
                sink.push(loc.file.as_deref(), &key, value, format!("unknown pool `{name}`{hint}"));
            }
        }
        Some(("group", r)) => check_group_ref(cfg, r, loc, "default_route", sink),
        Some(("direct", m)) => {
            if cfg.resolve_model(m).is_none() {
                sink.push(loc.file.as_deref(), &key, value, format!("unknown model `{m}`"));
            }
        }
        _ => sink.push(loc.file.as_deref(), &key, value, "expected `pool:<name>`, `group:<group>[.<echelon>]` or `direct:<provider>:<model>`"),
    }
}

/// Warnings that do not stop a load: unset variables and missing keys.
pub(crate) fn collect_warnings(cfg: &Config) -> Vec<crate::error::ConfigIssue> {
    let sink = Sink::default();
    for w in &cfg.load_warnings {
        sink.push(w.file.as_deref(), &w.key, w.value.clone(), w.message.clone());
    }
    // One warning per unset variable, naming every model that needs it.
    let mut unset: BTreeMap<String, (Option<std::path::PathBuf>, Vec<String>)> = BTreeMap::new();
    let providers = cfg.providers.values().map(|p| (p.name.as_str(), &p.defaults));
    for (name, m) in providers.chain(cfg.models.values().map(|m| (m.name.as_str(), m))) {
        if let Some(var) = m.api_key.var().filter(|_| m.api_key.is_missing()) {
            let e = unset.entry(var.to_string()).or_insert_with(|| (m.source.clone(), Vec::new()));
            if cfg.models.contains_key(name) {
                e.1.push(name.to_string());
            }
        } else if m.api_key.expose().is_none() && m.kind != ProviderKind::OpenAiCompatible && cfg.models.contains_key(name) {
            sink.push(m.source.as_deref(), "api_key", None, format!("model `{name}` has no api_key; its calls will fail with AuthError"));
        }
    }
    for k in &cfg.global.gateway.keys {
        if let super::model::KeySecret::Env { var, digest: None } = &k.secret {
            sink.push(
                None,
                &format!("global.gateway.{}.api_key", k.at),
                Some(format!("${{{var}}}")),
                format!("environment variable `{var}` is not set; gateway key `{}` matches no request until it is", k.name),
            );
        }
    }
    for (var, (file, names)) in unset {
        let who = if names.is_empty() { "this provider".to_string() } else { names.join(", ") };
        sink.push(
            file.as_deref(),
            "api_key",
            Some(format!("${{{var}}}")),
            format!("environment variable `{var}` is not set; calls to {who} will fail with AuthError until it is"),
        );
    }
    sink.take()
}
