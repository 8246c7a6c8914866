//! Provider and model documents → [`ModelConfig`] / [`ProviderConfig`].
//!
//! A model file is layered over its provider's `common` file field by field (tables such as
//! `headers` and `parameters` merge key by key), so each problem is reported in the file that
//! has it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::layout::{Doc, ProviderDocs};
use super::model::{
    HttpVersion, ModelConfig, ProbeMode, ProviderConfig, ProviderKind, RetryConfig, Timeouts, UnsupportedParams, DEFAULT_CONNECTION_IDLE_TIMEOUT,
    DEFAULT_HTTP2_MAX_CONNECTIONS, DEFAULT_QUOTA_COOLDOWN,
};
use super::reader::{did_you_mean, Sink, Tbl};
use super::source::{expand, single_placeholder, EnvLookup};
use crate::secret::Secret;
use crate::types::Params;

/// Spellings accepted for `type` (the original's `model_type`/`provider_type` values included).
pub(crate) const KIND_NAMES: [&str; 7] = ["openai", "openai_compatible", "openai-compatible", "anthropic", "gemini", "siliconflow", "mock"];

/// Keys of the original provider files that carry no meaning here.
const IGNORED: [&str; 12] = [
    "api_format",
    "token_counter",
    "features",
    "cache_config",
    "metadata",
    "fallback_enabled",
    "fallback_models",
    "max_fallback_attempts",
    "backoff_factor",
    "provider",
    "description",
    "inherits_from",
];

/// The default base URL of a provider type ("" when there is none).
pub(crate) fn default_base_url(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "https://api.openai.com/v1",
        ProviderKind::Anthropic => "https://api.anthropic.com",
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com/v1beta",
        ProviderKind::OpenAiCompatible => "",
    }
}

/// A model being built: the kind stays unknown until some layer names it.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    pub kind: Option<ProviderKind>,
    pub m: ModelConfig,
    /// `models = [...]` of this layer (each becomes `<provider>:<model>`).
    pub models_list: Vec<String>,
    /// Whether this layer named a wire model (`model` / `model_name`).
    pub has_wire: bool,
}

impl Draft {
    /// Nothing configured yet, for provider `provider`.
    pub(crate) fn blank(provider: &str) -> Self {
        Draft {
            kind: ProviderKind::parse(provider),
            m: ModelConfig {
                name: String::new(),
                provider: provider.to_string(),
                kind: ProviderKind::OpenAiCompatible,
                base_url: String::new(),
                api_key: Secret::none(),
                model: String::new(),
                headers: BTreeMap::new(),
                parameters: Params::default(),
                timeouts: Timeouts::default(),
                retry: RetryConfig::default(),
                rpm: 0,
                tpm: 0,
                max_concurrency: 0,
                context_window: 0,
                weight: 1.0,
                rate_limit_cooldown: Duration::from_secs(1),
                quota_cooldown: DEFAULT_QUOTA_COOLDOWN,
                api_version: None,
                probe: ProbeMode::Models,
                http_version: Default::default(),
                http2_max_connections: DEFAULT_HTTP2_MAX_CONNECTIONS,
                connection_idle_timeout: DEFAULT_CONNECTION_IDLE_TIMEOUT,
                unsupported_params: UnsupportedParams::Drop,
                source: None,
            },
            models_list: Vec::new(),
            has_wire: false,
        }
    }

    /// The model with its kind and default base URL filled in.
    pub(crate) fn finish(&self) -> ModelConfig {
        let mut m = self.m.clone();
        if let Some(k) = self.kind {
            m.kind = k;
        }
        if m.base_url.is_empty() {
            m.base_url = default_base_url(m.kind).to_string();
        }
        m
    }
}

/// Resolve an `api_key` string: a `${VAR}` placeholder keeps its variable name with the
/// secret; an unset variable gives an unresolved secret (the config still loads).
pub(crate) fn secret_from(s: &str, env: EnvLookup<'_>) -> Secret {
    if s.trim().is_empty() {
        return Secret::none();
    }
    if let Some((var, default)) = single_placeholder(s) {
        let value = env(var).filter(|v| !v.is_empty()).or_else(|| default.map(str::to_string)).filter(|v| !v.is_empty());
        return Secret::from_env(var, value);
    }
    if s.contains("${") {
        let (out, missing) = expand(s, env);
        let var = s.split("${").nth(1).and_then(|r| r.split(['}', ':']).next()).unwrap_or("").trim().to_string();
        return match missing.first() {
            Some(m) => Secret::from_env(m.clone(), None),
            None => Secret::from_env(var, Some(out)),
        };
    }
    Secret::new(s)
}

/// Apply one layer (a provider/model table) onto `d`.
pub(crate) fn apply_layer(t: &mut Tbl<'_>, d: &mut Draft, env: EnvLookup<'_>) {
    t.ignore(&IGNORED);
    if let Some(k) = t.choice_any(&["type", "model_type", "provider_type"], &KIND_NAMES) {
        d.kind = ProviderKind::parse(&k);
    }
    if let Some(u) = t.str("base_url") {
        let u = u.trim().trim_end_matches('/').to_string();
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            let hint = if u.is_empty() { " (empty: is an environment variable it uses unset?)" } else { "" };
            t.err("base_url", Some(&Value::String(u.clone())), format!("must start with http:// or https://{hint}"));
        } else {
            d.m.base_url = u;
        }
    }
    if let Some(v) = t.get("api_key") {
        match v {
            Value::String(s) => d.m.api_key = secret_from(s, env),
            other => t.err("api_key", Some(other), format!("expected string, found {}", super::reader::type_name(other))),
        }
    }
    if let Some(n) = t.str("name") {
        if n.trim().is_empty() {
            t.err("name", Some(&Value::String(n)), "must not be empty");
        } else {
            d.m.name = n;
        }
    }
    if let Some(w) = t.str_any(&["model", "model_name"]) {
        if w.trim().is_empty() {
            t.err("model", Some(&Value::String(w)), "must not be empty");
        } else {
            d.m.model = w;
            d.has_wire = true;
        }
    }
    if let Some(list) = t.str_list("models") {
        d.models_list = list;
    }
    if let Some(h) = t.table_any(&["headers", "default_headers"]) {
        for (k, v) in h.map() {
            match v {
                Value::String(s) => {
                    d.m.headers.insert(k.clone(), s.clone());
                }
                other => h.err(k, Some(other), format!("expected string, found {}", super::reader::type_name(other))),
            }
        }
    }
    if let Some(mut p) = t.table_any(&["parameters", "default_parameters"]) {
        read_params(&mut p, d);
    }
    // Timeouts: the flat original keys first, so the `[timeouts]` table wins.
    if let Some(s) = t.secs("timeout", 0.0, 86400.0, true) {
        d.m.timeouts.total = Some(s);
    }
    if let Some(mut tc) = t.table("timeout_config") {
        tc.ignore(&["write_timeout", "pool_timeout"]);
        if let Some(s) = tc.secs("request_timeout", 0.0, 86400.0, true) {
            d.m.timeouts.total = Some(s);
        }
        if let Some(s) = tc.secs("connect_timeout", 0.0, 86400.0, true) {
            d.m.timeouts.connect = Some(s);
        }
        if let Some(s) = tc.secs("read_timeout", 0.0, 86400.0, true) {
            d.m.timeouts.idle = Some(s);
        }
        tc.done();
    }
    if let Some(mut tt) = t.table("timeouts") {
        // 0 disables that timeout.
        let mut set = |key: &'static str, slot: &mut Option<Duration>| {
            if let Some(s) = tt.secs(key, 0.0, 86400.0, false) {
                *slot = (!s.is_zero()).then_some(s);
            }
        };
        set("connect", &mut d.m.timeouts.connect);
        set("first_token", &mut d.m.timeouts.first_token);
        set("total", &mut d.m.timeouts.total);
        set("idle", &mut d.m.timeouts.idle);
        tt.done();
    }
    if let Some(n) = t.uint("max_retries", 0, 10) {
        d.m.retry.max_retries = n;
    }
    if let Some(s) = t.secs("retry_delay", 0.0, 60.0, false) {
        d.m.retry.base_delay = s;
    }
    if let Some(mut rc) = t.table("retry_config") {
        rc.ignore(&["jitter", "exponential_base", "retry_on_status_codes", "retry_on_errors", "retry_errors", "backoff_factor"]);
        if let Some(n) = rc.uint("max_retries", 0, 10) {
            d.m.retry.max_retries = n;
        }
        if let Some(s) = rc.secs("base_delay", 0.0, 60.0, false) {
            d.m.retry.base_delay = s;
        }
        if let Some(s) = rc.secs("max_delay", 0.0, 3600.0, false) {
            d.m.retry.max_delay = s;
        }
        rc.done();
    }
    if let Some(n) = t.uint("rpm", 0, u64::MAX) {
        d.m.rpm = n;
    }
    if let Some(n) = t.uint("tpm", 0, u64::MAX) {
        d.m.tpm = n;
    }
    if let Some(n) = t.uint("max_concurrency", 0, u64::MAX) {
        d.m.max_concurrency = n;
    }
    if let Some(mut rl) = t.table("rate_limiting") {
        rl.ignore(&["enabled"]);
        if let Some(n) = rl.uint("requests_per_minute", 0, u64::MAX) {
            d.m.rpm = n;
        }
        if let Some(n) = rl.uint("tokens_per_minute", 0, u64::MAX) {
            d.m.tpm = n;
        }
        rl.done();
    }
    if let Some(n) = t.uint("context_window", 0, u64::MAX) {
        d.m.context_window = n;
    }
    if let Some(w) = t.num("weight", 0.0, 1e6, false) {
        d.m.weight = w;
    }
    if let Some(s) = t.secs("rate_limit_cooldown", 0.0, 3600.0, false) {
        d.m.rate_limit_cooldown = s;
    }
    if let Some(s) = t.secs("quota_cooldown", 0.0, 86400.0, false) {
        d.m.quota_cooldown = s;
    }
    if let Some(v) = t.str("api_version") {
        d.m.api_version = Some(v);
    }
    if let Some(v) = t.choice("http_version", &["1.1", "auto", "2"]) {
        d.m.http_version = match v.as_str() {
            "auto" => HttpVersion::Auto,
            "2" => HttpVersion::Http2,
            _ => HttpVersion::Http1,
        };
    }
    if let Some(n) = t.uint("http2_max_connections", 1, 4096) {
        d.m.http2_max_connections = n;
    }
    if let Some(s) = t.secs("connection_idle_timeout", 0.0, 86400.0, true) {
        d.m.connection_idle_timeout = s;
    }
    if let Some(v) = t.choice("unsupported_params", &["drop", "error"]) {
        d.m.unsupported_params = if v == "error" { UnsupportedParams::Error } else { UnsupportedParams::Drop };
    }
    if let Some(p) = t.choice("probe", &["models", "head", "completion"]) {
        d.m.probe = match p.as_str() {
            "head" => ProbeMode::Head,
            "completion" => ProbeMode::Completion,
            _ => ProbeMode::Models,
        };
    }
}

/// `[parameters]`: known generation keys are checked; anything else passes through to the
/// provider (`Params.extra`) unless it looks like a typo of a known key.
fn read_params(p: &mut Tbl<'_>, d: &mut Draft) {
    const KNOWN: [&str; 9] = ["temperature", "max_tokens", "top_p", "stop", "timeout", "max_retries", "tool_choice", "response_format", "tools"];
    if let Some(x) = p.num("temperature", 0.0, 2.0, false) {
        d.m.parameters.temperature = Some(x);
    }
    if let Some(x) = p.uint("max_tokens", 1, u64::MAX) {
        d.m.parameters.max_tokens = Some(x);
    }
    if let Some(x) = p.num("top_p", 0.0, 1.0, false) {
        d.m.parameters.top_p = Some(x);
    }
    if let Some(v) = p.get("stop") {
        match v {
            Value::String(s) => d.m.parameters.stop = vec![s.clone()],
            Value::Array(_) => {
                if let Some(l) = p.str_list("stop") {
                    d.m.parameters.stop = l;
                }
            }
            other => p.err("stop", Some(other), format!("expected string or array of strings, found {}", super::reader::type_name(other))),
        }
    }
    // The original kept these two inside `parameters`; they are not generation parameters.
    if let Some(s) = p.secs("timeout", 0.0, 86400.0, true) {
        d.m.timeouts.total = Some(s);
    }
    if let Some(n) = p.uint("max_retries", 0, 10) {
        d.m.retry.max_retries = n;
    }
    if let Some(v) = p.get("tools") {
        d.m.parameters.tools = Some(v.clone());
    }
    if let Some(v) = p.get("tool_choice") {
        d.m.parameters.tool_choice = Some(v.clone());
    }
    if let Some(v) = p.get("response_format") {
        match crate::provider::format::response_format(v) {
            Ok(_) => d.m.parameters.response_format = Some(v.clone()),
            Err(e) => p.err("response_format", Some(v), e),
        }
    }
    // Provider-scoped extras (`[parameters.anthropic]`, …) are tables sent to that provider only.
    for scope in crate::provider::format::SCOPES {
        if let Some(v) = p.get(scope) {
            if !v.is_object() {
                let found = super::reader::type_name(v);
                p.err(scope, Some(v), format!("expected a table of {scope} request fields, found {found}"));
            }
        }
    }
    for (k, v) in p.map() {
        if KNOWN.contains(&k.as_str()) {
            continue;
        }
        let hint = did_you_mean(k, KNOWN);
        if !hint.is_empty() {
            p.err(k, Some(v), format!("unknown parameter `{k}`{hint}"));
        } else {
            d.m.parameters.extra.insert(k.clone(), v.clone());
        }
        p.mark(k);
    }
}

/// Everything the provider documents define.
pub(crate) struct ProviderOut {
    pub provider: Option<ProviderConfig>,
    /// Logical models with the document (for error locations).
    pub models: Vec<(ModelConfig, Doc)>,
}

/// Resolve one provider directory (or dict entry).
pub(crate) fn resolve_provider(pd: &ProviderDocs, env: EnvLookup<'_>, sink: &Sink) -> ProviderOut {
    let mut base = Draft::blank(&pd.name);
    let mut out = ProviderOut { provider: None, models: Vec::new() };
    if let Some(c) = &pd.common {
        if let Some(mut t) = Tbl::of(sink, c.loc.clone(), &c.value) {
            apply_layer(&mut t, &mut base, env);
            t.done();
        }
        base.m.source = c.loc.file.clone();
        for wire in base.models_list.clone() {
            let mut m = base.finish();
            m.name = format!("{}:{wire}", pd.name);
            m.model = wire;
            out.models.push((m, c.clone()));
        }
    }
    if base.kind.is_some() {
        let mut defaults = base.finish();
        defaults.name = pd.name.clone();
        out.provider = Some(ProviderConfig { name: pd.name.clone(), defaults });
    } else if let Some(c) = &pd.common {
        sink.push(
            c.loc.file.as_deref(),
            &c.loc.key("type"),
            None,
            format!("missing `type` (one of: openai, openai_compatible, anthropic, gemini); the provider name `{}` is not a type", pd.name),
        );
    }
    for doc in &pd.models {
        let mut d = base.clone();
        d.models_list.clear();
        d.has_wire = false;
        d.m.name.clear();
        d.m.source = doc.loc.file.clone();
        let Some(mut t) = Tbl::of(sink, doc.loc.clone(), &doc.value) else {
            continue;
        };
        apply_layer(&mut t, &mut d, env);
        t.done();
        if d.kind.is_none() {
            sink.push(doc.loc.file.as_deref(), &doc.loc.key("type"), None, "missing `type` (one of: openai, openai_compatible, anthropic, gemini)");
            continue;
        }
        for wire in &d.models_list {
            let mut m = d.finish();
            m.name = format!("{}:{wire}", pd.name);
            m.model = wire.clone();
            out.models.push((m, doc.clone()));
        }
        // A file with only a `models` list defines those; otherwise it is one logical model.
        if d.has_wire || d.models_list.is_empty() {
            let mut m = d.finish();
            if m.name.is_empty() {
                m.name = doc.name.clone();
            }
            if !d.has_wire {
                m.model = doc.name.clone();
            }
            out.models.push((m, doc.clone()));
        }
    }
    out
}

/// Resolve a flat logical model (dict input `models.<name>`), layered over its `provider`'s
/// defaults when that provider exists.
pub(crate) fn resolve_flat_model(doc: &Doc, providers: &BTreeMap<String, ProviderConfig>, env: EnvLookup<'_>, sink: &Sink) -> Option<ModelConfig> {
    let provider = doc.value.get("provider").and_then(Value::as_str).map(str::to_string);
    let kind_name = ["type", "model_type", "provider_type"].iter().find_map(|k| doc.value.get(*k).and_then(Value::as_str)).map(str::to_string);
    let pname = provider.clone().or(kind_name.clone()).unwrap_or_default();
    let mut d = match providers.get(&pname) {
        Some(p) => Draft { kind: Some(p.defaults.kind), m: p.defaults.clone(), models_list: Vec::new(), has_wire: false },
        None => Draft::blank(&pname),
    };
    d.m.name.clear();
    d.m.model.clear();
    d.m.source = None;
    let mut t = Tbl::of(sink, doc.loc.clone(), &doc.value)?;
    apply_layer(&mut t, &mut d, env);
    t.done();
    if d.kind.is_none() {
        sink.push(None, &doc.loc.key("type"), None, "missing `type` (one of: openai, openai_compatible, anthropic, gemini) and no known `provider`");
        return None;
    }
    let mut m = d.finish();
    if m.name.is_empty() {
        m.name = doc.name.clone();
    }
    if m.model.is_empty() {
        m.model = doc.name.clone();
    }
    Some(m)
}
