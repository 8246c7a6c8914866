//! `[gateway]` of `global.toml`: reading, the key secrets, and the route names a request's
//! `model` field (or a key's `routes` entry) may use.
//!
//! A key's secret is never kept: `api_key = "${VAR}"` is hashed (SHA-256) as it is read and
//! `api_key_sha256` is the digest itself, so a config dump, `echelon check` or a status page
//! has nothing to leak. A literal key in a file is refused: files get committed.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::*;
use super::providers::secret_from;
use super::reader::{did_you_mean, show, type_name, Loc, Sink, Tbl};
use super::source::EnvLookup;

/// SHA-256 of a presented or configured key.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Read `[gateway]` into `g`.
pub(crate) fn read_gateway(mut t: Tbl<'_>, g: &mut GatewayConfig, env: EnvLookup<'_>) {
    if let Some(h) = t.str("host") {
        if h.trim().is_empty() {
            t.err("host", Some(&Value::String(h)), "must not be empty");
        } else {
            g.host = Some(h);
        }
    }
    if let Some(p) = t.uint("port", 0, u16::MAX as u64) {
        g.port = Some(p as u16);
    }
    if let Some(b) = t.bool("allow_unauthenticated") {
        g.allow_unauthenticated = b;
    }
    if let Some(n) = t.uint("max_body_bytes", 1024, 1 << 30) {
        g.max_body_bytes = n as usize;
    }
    if let Some(s) = t.secs("header_timeout", 0.0, 3600.0, true) {
        g.header_timeout = s;
    }
    if let Some(s) = t.secs("idle_timeout", 0.0, 86400.0, true) {
        g.idle_timeout = s;
    }
    if let Some(n) = t.uint("max_connections", 1, 1_000_000) {
        g.max_connections = n;
    }
    if let Some(s) = t.secs("drain_grace", 0.0, 3600.0, false) {
        g.drain_grace = s;
    }
    if let Some(b) = t.bool("watch") {
        g.watch = b;
    }
    if let Some(s) = t.secs("watch_interval", 0.0, 3600.0, true) {
        g.watch_interval = s;
    }
    if let Some(v) = t.get("keys") {
        match v.as_array() {
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    if let Some(k) = Tbl::of(t.sink(), t.loc.child(&format!("keys[{i}]")), it).and_then(|k| read_key(k, env, i)) {
                        if g.keys.iter().any(|o| o.name == k.name) {
                            t.err(&format!("keys[{i}].name"), Some(&Value::String(k.name.clone())), format!("duplicate gateway key name `{}`", k.name));
                        }
                        g.keys.push(k);
                    }
                }
            }
            None => t.err("keys", Some(v), format!("expected array of tables ([[gateway.keys]]), found {}", type_name(v))),
        }
    }
    t.done();
}

fn read_key(mut k: Tbl<'_>, env: EnvLookup<'_>, index: usize) -> Option<GatewayKey> {
    let name = k.str("name");
    if name.is_none() && !k.has("name") {
        k.err("name", None, "missing required key `name` (shown in logs and metrics instead of the key)");
    }
    let plain = k.str("api_key");
    let hashed = k.str("api_key_sha256");
    let secret = match (plain, hashed) {
        (Some(_), Some(_)) => {
            k.err("api_key_sha256", None, "give either `api_key` (\"${VAR}\") or `api_key_sha256`, not both");
            None
        }
        (Some(p), None) => {
            let s = secret_from(&p, env);
            match s.var() {
                Some(var) => Some(KeySecret::Env { var: var.to_string(), digest: s.expose().map(key_digest) }),
                None => {
                    // Never echo the value: it is a key.
                    k.err(
                        "api_key",
                        None,
                        "a gateway key must come from the environment (`api_key = \"${VAR}\"`) or be stored as `api_key_sha256`, never written in a file",
                    );
                    None
                }
            }
        }
        (None, Some(h)) => match parse_hex32(&h) {
            Some(d) => Some(KeySecret::Sha256(d)),
            None => {
                k.err("api_key_sha256", Some(&Value::String(h)), "expected 64 hex digits (the SHA-256 of the key, e.g. `printf %s \"$KEY\" | sha256sum`)");
                None
            }
        },
        (None, None) => {
            k.err("api_key", None, "missing `api_key` (\"${VAR}\") or `api_key_sha256`");
            None
        }
    };
    let routes = k.str_list("routes").unwrap_or_default();
    let rpm = k.uint("rpm", 0, u32::MAX as u64).unwrap_or(0);
    let tpm = k.uint("tpm", 0, u32::MAX as u64).unwrap_or(0);
    k.done();
    Some(GatewayKey { name: name?, secret: secret?, routes, rpm, tpm, at: format!("keys[{index}]") })
}

/// The kinds a route string may name explicitly (`pool:p`, `direct:openai:gpt-4o`, …).
const ROUTE_KINDS: [&str; 7] = ["pool", "group", "model", "wrapper", "direct", "echelon", "instance"];

/// Resolve a route name as the gateway's `model` field gives it, to its canonical route string
/// (`pool:p`, `group:g` / `group:g.e`, `wrapper:w`, `model:m`, `model:provider:model`,
/// `echelon:g.e`, `instance:i`).
///
/// Order for a bare name: a route string with an explicit kind; a group; `group.echelon`; a
/// pool; a wrapper; a logical model; `provider:model` of a configured provider. The error
/// names what was looked for, with a "did you mean" when a known name is close.
pub fn resolve_route(cfg: &Config, name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("`model` is empty: name a group, `group.echelon`, pool, wrapper or `provider:model`".into());
    }
    if let Some((kind, rest)) = name.split_once(':') {
        if ROUTE_KINDS.contains(&kind) {
            return explicit(cfg, kind, rest).map_err(|m| format!("{m} (in route `{name}`)"));
        }
    }
    if cfg.groups.contains_key(name) {
        return Ok(format!("group:{name}"));
    }
    if let (g, Some(e)) = Config::parse_group_reference(name) {
        if let Some(group) = cfg.groups.get(g) {
            if group.echelon(e).is_some() {
                return Ok(format!("group:{name}"));
            }
            let hint = did_you_mean(e, group.echelons.iter().map(|x| x.name.as_str()));
            return Err(format!("group `{g}` has no echelon `{e}`{hint}"));
        }
    }
    if cfg.pools.contains_key(name) {
        return Ok(format!("pool:{name}"));
    }
    if cfg.wrappers.contains_key(name) {
        return Ok(format!("wrapper:{name}"));
    }
    if cfg.models.contains_key(name) {
        return Ok(format!("model:{name}"));
    }
    if let Some((p, m)) = name.split_once(':') {
        if !m.is_empty() && cfg.providers.contains_key(p) {
            return Ok(format!("model:{name}"));
        }
        let hint = did_you_mean(p, cfg.providers.keys().map(String::as_str));
        return Err(format!("unknown provider `{p}` in `{name}`{hint}"));
    }
    let known = route_names(cfg);
    let hint = did_you_mean(name, known.iter().map(String::as_str));
    Err(format!("unknown route `{name}`{hint}: not a group, `group.echelon`, pool, wrapper, model or `provider:model`"))
}

fn explicit(cfg: &Config, kind: &str, rest: &str) -> Result<String, String> {
    let unknown = |what: &str, keys: &mut dyn Iterator<Item = &String>| {
        let keys: Vec<&String> = keys.collect();
        format!("unknown {what} `{rest}`{}", did_you_mean(rest, keys.iter().map(|s| s.as_str())))
    };
    match kind {
        "pool" if cfg.pools.contains_key(rest) => Ok(format!("pool:{rest}")),
        "pool" => Err(unknown("pool", &mut cfg.pools.keys())),
        "wrapper" if cfg.wrappers.contains_key(rest) => Ok(format!("wrapper:{rest}")),
        "wrapper" => Err(unknown("wrapper", &mut cfg.wrappers.keys())),
        "group" | "echelon" => {
            let (g, e) = Config::parse_group_reference(rest);
            let group = cfg.groups.get(g).ok_or_else(|| format!("unknown group `{g}`{}", did_you_mean(g, cfg.groups.keys().map(String::as_str))))?;
            match e {
                Some(e) if group.echelon(e).is_none() => {
                    Err(format!("group `{g}` has no echelon `{e}`{}", did_you_mean(e, group.echelons.iter().map(|x| x.name.as_str()))))
                }
                None if kind == "echelon" => Err(format!("`echelon:` needs `group.echelon`, got `{rest}`")),
                _ => Ok(format!("{kind}:{rest}")),
            }
        }
        "model" | "direct" => {
            if cfg.resolve_model(rest).is_some() {
                Ok(format!("model:{rest}"))
            } else {
                Err(format!("model `{rest}` resolves nowhere{}", did_you_mean(rest, cfg.models.keys().map(String::as_str))))
            }
        }
        // Instance ids are only known to the built engine; the router checks them.
        "instance" => Ok(format!("instance:{rest}")),
        _ => Err(format!("unknown route kind `{kind}`")),
    }
}

/// Every name a route can be given by, for hints and for `GET /v1/models`: groups, their
/// `group.echelon`s, pools, wrappers and logical models.
pub fn route_names(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in cfg.groups.values() {
        out.push(g.name.clone());
        for e in g.echelons_by_priority() {
            out.push(format!("{}.{}", g.name, e.name));
        }
    }
    out.extend(cfg.pools.keys().cloned());
    out.extend(cfg.wrappers.keys().cloned());
    out.extend(cfg.models.keys().cloned());
    out
}

/// Whether a key whose allow-list is `allowed` (canonical entries, `*` wildcards) may use the
/// canonical route `route`. An empty list allows everything; `group:g` also allows `group:g.e`.
pub fn route_allowed(allowed: &[String], route: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => route.starts_with(prefix),
        None => a == route || (a.starts_with("group:") && route.starts_with(a.as_str()) && route[a.len()..].starts_with('.')),
    })
}

/// Resolve every key's `routes` entries to canonical route strings, reporting those that name
/// nothing. Wildcard entries (`*`, `pool:*`, `group:g.*`) are kept as written.
pub(crate) fn canonicalize(cfg: &mut Config, global_loc: Option<&Loc>, sink: &Sink) {
    let loc = global_loc.cloned().unwrap_or_else(|| Loc::new(None, "global"));
    let mut keys = std::mem::take(&mut cfg.global.gateway.keys);
    for k in keys.iter_mut() {
        for (j, r) in k.routes.iter_mut().enumerate() {
            if r.ends_with('*') {
                continue;
            }
            match resolve_route(cfg, r) {
                Ok(c) => *r = c,
                Err(msg) => sink.push(loc.file.as_deref(), &loc.key(&format!("gateway.{}.routes[{j}]", k.at)), Some(show(&Value::String(r.clone()))), msg),
            }
        }
    }
    cfg.global.gateway.keys = keys;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_json_with_env;
    use serde_json::json;

    fn env(v: &str) -> Option<String> {
        (v == "TEAM_KEY").then(|| "sk-team-123456".to_string())
    }

    fn base() -> Value {
        json!({
            "providers": {"mock": {"common": {"type": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}, "m": {"model": "m"}}},
            "groups": {"g": {"echelon1": {"models": ["m"]}, "echelon2": {"models": ["m"]}}},
            "pools": {"p": {"task_groups": ["g"]}},
            "wrappers": {"w": {"type": "polling_pool", "target": "p"}},
        })
    }

    #[test]
    fn names_resolve_in_the_documented_order_with_hints() {
        let cfg = from_json_with_env(&base(), &env).expect("valid");
        let r = |s: &str| resolve_route(&cfg, s);
        assert_eq!(r("g").as_deref(), Ok("group:g"));
        assert_eq!(r("g.echelon2").as_deref(), Ok("group:g.echelon2"));
        assert_eq!(r("p").as_deref(), Ok("pool:p"));
        assert_eq!(r("w").as_deref(), Ok("wrapper:w"));
        assert_eq!(r("m").as_deref(), Ok("model:m"));
        assert_eq!(r("mock:other-model").as_deref(), Ok("model:mock:other-model"));
        assert_eq!(r("pool:p").as_deref(), Ok("pool:p"));
        assert_eq!(r("direct:mock:x").as_deref(), Ok("model:mock:x"));
        assert!(r("g.echelon9").unwrap_err().contains("did you mean `echelon1`"));
        assert!(r("pool:q").unwrap_err().contains("did you mean `p`"));
        assert!(r("mokc:x").unwrap_err().contains("did you mean `mock`"));
        assert!(r("").is_err());
        let e = r("gg").unwrap_err();
        assert!(e.contains("unknown route `gg`") && e.contains("did you mean `g`"), "{e}");
    }

    #[test]
    fn allow_lists_match_canonical_routes_and_wildcards() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(route_allowed(&[], "pool:p"));
        assert!(route_allowed(&a(&["group:g"]), "group:g.echelon1"));
        assert!(!route_allowed(&a(&["group:g"]), "group:gx"));
        assert!(route_allowed(&a(&["pool:*"]), "pool:anything"));
        assert!(!route_allowed(&a(&["pool:*"]), "group:g"));
        assert!(route_allowed(&a(&["*"]), "model:openai:gpt-4o"));
        assert!(!route_allowed(&a(&["pool:p"]), "pool:p2"));
    }

    #[test]
    fn keys_are_hashed_from_the_environment_or_stored_and_never_literal() {
        let mut v = base();
        let hash = "a".repeat(64);
        v["global"] = json!({"gateway": {"port": 9000, "keys": [
            {"name": "team", "api_key": "${TEAM_KEY}", "routes": ["g", "pool:*"], "rpm": 10},
            {"name": "ops", "api_key_sha256": hash},
            {"name": "gone", "api_key": "${UNSET_VAR}"},
        ]}});
        let cfg = from_json_with_env(&v, &env).expect("valid");
        let gw = &cfg.global.gateway;
        assert_eq!(gw.port, Some(9000));
        assert_eq!(gw.keys[0].secret.digest(), Some(&key_digest("sk-team-123456")));
        assert_eq!(gw.keys[0].routes, vec!["group:g".to_string(), "pool:*".to_string()]);
        assert_eq!(gw.keys[1].secret.digest(), Some(&[0xaa; 32]));
        assert_eq!(gw.keys[2].secret.digest(), None);
        let shown = format!("{:?} {}", gw, serde_json::to_string(gw).unwrap());
        assert!(!shown.contains("sk-team") && shown.contains("${TEAM_KEY} (set)"), "{shown}");
        let check = crate::config::render_check(&cfg);
        assert!(check.contains("key team: ${TEAM_KEY} (set)  routes: group:g, pool:*  rpm=10") && !check.contains("sk-team"), "{check}");
        let warnings = crate::config::warnings(&cfg);
        assert!(warnings.iter().any(|w| w.message.contains("`UNSET_VAR`") && w.message.contains("`gone`")), "{warnings:?}");

        let mut bad = base();
        bad["global"] = json!({"gateway": {"keys": [
            {"name": "lit", "api_key": "sk-literal-secret"},
            {"name": "short", "api_key_sha256": "abc"},
            {"name": "r", "api_key": "${TEAM_KEY}", "routes": ["nope"]},
            {"api_key": "${TEAM_KEY}"},
        ], "max_conections": 3}});
        let err = from_json_with_env(&bad, &env).expect_err("invalid");
        let text = err.to_string();
        assert!(!text.contains("sk-literal-secret"), "{text}");
        for key in [
            "global.gateway.keys[0].api_key",
            "global.gateway.keys[1].api_key_sha256",
            "global.gateway.keys[2].routes[0]",
            "global.gateway.keys[3].name",
            "global.gateway.max_conections",
        ] {
            assert!(err.issues.iter().any(|i| i.key == key), "{key} missing in {text}");
        }
        assert!(text.contains("did you mean `max_connections`"), "{text}");
    }
}
