//! `echelon convert`: write a resolved configuration (typically loaded from the original YAML
//! layout) as the TOML directory layout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::model::*;

fn dur(d: Duration) -> Value {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 && s < 9.0e15 {
        Value::Integer(s as i64)
    } else {
        Value::Float(s)
    }
}

fn int(n: u32) -> Value {
    Value::Integer(i64::from(n))
}

fn strs(v: &[String]) -> Value {
    Value::Array(v.iter().cloned().map(Value::String).collect())
}

fn json_to_toml(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().filter_map(json_to_toml).collect()),
        serde_json::Value::Object(o) => Value::Table(o.iter().filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?))).collect()),
    })
}

/// The secret as it should be written: its `${VAR}` when it came from one.
fn secret_text(s: &crate::secret::Secret) -> Option<String> {
    match (s.var(), s.expose()) {
        (Some(var), _) => Some(format!("${{{var}}}")),
        (None, Some(v)) => Some(v.to_string()),
        (None, None) => None,
    }
}

/// The keys of `m` that differ from `base` (all keys when there is no base).
fn model_table(m: &ModelConfig, base: Option<&ModelConfig>) -> Table {
    let mut t = Table::new();
    let differs = |f: &dyn Fn(&ModelConfig) -> bool| base.is_none_or(|b| !f(b));
    if differs(&|b| b.kind == m.kind) {
        t.insert("type".into(), Value::String(m.kind.as_str().into()));
    }
    if differs(&|b| b.base_url == m.base_url) {
        t.insert("base_url".into(), Value::String(m.base_url.clone()));
    }
    if differs(&|b| b.api_key == m.api_key) {
        if let Some(k) = secret_text(&m.api_key) {
            t.insert("api_key".into(), Value::String(k));
        }
    }
    if differs(&|b| b.rpm == m.rpm) && m.rpm > 0 {
        t.insert("rpm".into(), int(m.rpm));
    }
    if differs(&|b| b.tpm == m.tpm) && m.tpm > 0 {
        t.insert("tpm".into(), int(m.tpm));
    }
    if differs(&|b| b.max_concurrency == m.max_concurrency) && m.max_concurrency > 0 {
        t.insert("max_concurrency".into(), int(m.max_concurrency));
    }
    if differs(&|b| b.context_window == m.context_window) && m.context_window > 0 {
        t.insert("context_window".into(), int(m.context_window));
    }
    if differs(&|b| b.weight == m.weight) {
        t.insert("weight".into(), Value::Float(m.weight));
    }
    if differs(&|b| b.rate_limit_cooldown == m.rate_limit_cooldown) {
        t.insert("rate_limit_cooldown".into(), dur(m.rate_limit_cooldown));
    }
    if differs(&|b| b.quota_cooldown == m.quota_cooldown) {
        t.insert("quota_cooldown".into(), dur(m.quota_cooldown));
    }
    if differs(&|b| b.api_version == m.api_version) {
        if let Some(v) = &m.api_version {
            t.insert("api_version".into(), Value::String(v.clone()));
        }
    }
    if differs(&|b| b.http_version == m.http_version) {
        t.insert("http_version".into(), Value::String(m.http_version.as_str().into()));
    }
    if differs(&|b| b.probe == m.probe) {
        let p = match m.probe {
            ProbeMode::Models => "models",
            ProbeMode::Head => "head",
            ProbeMode::Completion => "completion",
        };
        t.insert("probe".into(), Value::String(p.into()));
    }
    if differs(&|b| b.retry == m.retry) {
        t.insert("max_retries".into(), int(m.retry.max_retries));
        let mut rc = Table::new();
        rc.insert("base_delay".into(), dur(m.retry.base_delay));
        rc.insert("max_delay".into(), dur(m.retry.max_delay));
        t.insert("retry_config".into(), Value::Table(rc));
    }
    let headers: Table =
        m.headers.iter().filter(|(k, v)| base.is_none_or(|b| b.headers.get(*k) != Some(*v))).map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    if !headers.is_empty() {
        t.insert("headers".into(), Value::Table(headers));
    }
    if differs(&|b| b.parameters == m.parameters) {
        let p = &m.parameters;
        let mut pt = Table::new();
        if let Some(x) = p.temperature {
            pt.insert("temperature".into(), Value::Float(x));
        }
        if let Some(x) = p.max_tokens {
            pt.insert("max_tokens".into(), int(x));
        }
        if let Some(x) = p.top_p {
            pt.insert("top_p".into(), Value::Float(x));
        }
        if !p.stop.is_empty() {
            pt.insert("stop".into(), strs(&p.stop));
        }
        for (k, v) in [("tools", &p.tools), ("tool_choice", &p.tool_choice), ("response_format", &p.response_format)] {
            if let Some(v) = v.as_ref().and_then(json_to_toml) {
                pt.insert(k.into(), v);
            }
        }
        for (k, v) in &p.extra {
            if let Some(v) = json_to_toml(v) {
                pt.insert(k.clone(), v);
            }
        }
        if !pt.is_empty() {
            t.insert("parameters".into(), Value::Table(pt));
        }
    }
    if differs(&|b| b.timeouts == m.timeouts) {
        let mut tt = Table::new();
        for (k, v) in [("connect", m.timeouts.connect), ("first_token", m.timeouts.first_token), ("total", m.timeouts.total), ("idle", m.timeouts.idle)] {
            tt.insert(k.into(), v.map(dur).unwrap_or(Value::Integer(0)));
        }
        t.insert("timeouts".into(), Value::Table(tt));
    }
    t
}

fn breaker_table(b: &BreakerConfig) -> Table {
    let mut t = Table::new();
    t.insert("failure_threshold".into(), int(b.failure_threshold));
    t.insert("recovery_time".into(), dur(b.recovery_time));
    t.insert("half_open_requests".into(), int(b.half_open_requests));
    if let Some(r) = b.failure_ratio {
        t.insert("failure_ratio".into(), Value::Float(r));
        t.insert("window".into(), dur(b.window));
        t.insert("min_requests".into(), int(b.min_requests));
    }
    t
}

fn rate_table(r: &RateLimitConfig) -> Table {
    let mut t = Table::new();
    t.insert("enabled".into(), Value::Boolean(true));
    match r {
        RateLimitConfig::TokenBucket { bucket_size, refill_rate } => {
            t.insert("algorithm".into(), Value::String("token_bucket".into()));
            let mut b = Table::new();
            b.insert("bucket_size".into(), int(*bucket_size));
            b.insert("refill_rate".into(), Value::Float(*refill_rate));
            t.insert("token_bucket".into(), Value::Table(b));
        }
        RateLimitConfig::SlidingWindow { window_size, max_requests } => {
            t.insert("algorithm".into(), Value::String("sliding_window".into()));
            let mut w = Table::new();
            w.insert("window_size".into(), dur(*window_size));
            w.insert("max_requests".into(), int(*max_requests));
            t.insert("sliding_window".into(), Value::Table(w));
        }
    }
    t
}

fn group_table(g: &GroupConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), Value::String(g.name.clone()));
    if !g.description.is_empty() {
        t.insert("description".into(), Value::String(g.description.clone()));
    }
    t.insert("fallback_strategy".into(), Value::String(g.fallback_strategy.as_str().into()));
    for e in &g.echelons {
        let mut et = Table::new();
        et.insert("models".into(), strs(&e.models));
        et.insert("priority".into(), int(e.priority));
        if e.concurrency_limit > 0 {
            et.insert("concurrency_limit".into(), int(e.concurrency_limit));
        }
        if e.rpm_limit > 0 {
            et.insert("rpm_limit".into(), int(e.rpm_limit));
        }
        if let Some(x) = e.timeout {
            et.insert("timeout".into(), dur(x));
        }
        if let Some(x) = e.max_retries {
            et.insert("max_retries".into(), int(x));
        }
        if let Some(x) = e.temperature {
            et.insert("temperature".into(), Value::Float(x));
        }
        if let Some(x) = e.max_tokens {
            et.insert("max_tokens".into(), int(x));
        }
        if let Some(x) = &e.function_calling {
            et.insert("function_calling".into(), Value::String(x.clone()));
        }
        if let Some(x) = &e.response_format {
            et.insert("response_format".into(), Value::String(x.clone()));
        }
        if let Some(tc) = e.thinking_config {
            let mut tt = Table::new();
            tt.insert("enabled".into(), Value::Boolean(tc.enabled));
            tt.insert("budget_tokens".into(), int(tc.budget_tokens));
            et.insert("thinking_config".into(), Value::Table(tt));
        }
        t.insert(e.name.clone(), Value::Table(et));
    }
    t.insert("circuit_breaker".into(), Value::Table(breaker_table(&g.circuit_breaker)));
    if let Some(f) = &g.fallback {
        let mut ft = Table::new();
        ft.insert("strategy".into(), Value::String(f.strategy.as_str().into()));
        ft.insert("fallback_groups".into(), strs(&f.fallback_groups));
        ft.insert("max_attempts".into(), int(f.max_attempts));
        ft.insert("retry_delay".into(), dur(f.retry_delay));
        ft.insert("on_content_filter".into(), Value::String(if f.on_content_filter { "fallback" } else { "surface" }.into()));
        if let Some(h) = f.hedge_after {
            ft.insert("hedge_after_ms".into(), Value::Integer(h.as_millis().min(600_000) as i64));
        }
        if let Some(b) = &f.circuit_breaker {
            ft.insert("circuit_breaker".into(), Value::Table(breaker_table(b)));
        }
        t.insert("fallback_config".into(), Value::Table(ft));
    }
    t
}

fn pool_table(p: &PoolConfig) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), Value::String(p.name.clone()));
    if !p.description.is_empty() {
        t.insert("description".into(), Value::String(p.description.clone()));
    }
    t.insert("task_groups".into(), strs(&p.task_groups));
    t.insert("rotation_strategy".into(), Value::String(p.rotation_strategy.as_str().into()));
    let h = &p.health_check;
    let mut ht = Table::new();
    ht.insert("enabled".into(), Value::Boolean(h.enabled));
    ht.insert("interval".into(), dur(h.interval));
    ht.insert("failure_threshold".into(), int(h.failure_threshold));
    ht.insert("recovery_time".into(), dur(h.recovery_time));
    if let Some(pr) = h.probe {
        let s = match pr {
            ProbeMode::Models => "models",
            ProbeMode::Head => "head",
            ProbeMode::Completion => "completion",
        };
        ht.insert("probe".into(), Value::String(s.into()));
    }
    t.insert("health_check".into(), Value::Table(ht));
    let mut ft = Table::new();
    ft.insert("strategy".into(), Value::String("instance_rotation".into()));
    ft.insert("max_instance_attempts".into(), int(p.max_instance_attempts));
    t.insert("fallback_config".into(), Value::Table(ft));
    if let Some(r) = &p.rate_limit {
        t.insert("rate_limiting".into(), Value::Table(rate_table(r)));
    }
    let mut pt = Table::new();
    if let Some(x) = p.request_timeout {
        pt.insert("request_timeout".into(), dur(x));
    }
    pt.insert("max_concurrent_requests".into(), int(p.max_concurrent_requests));
    pt.insert("queue_size".into(), int(p.queue_size));
    t.insert("performance".into(), Value::Table(pt));
    t
}

fn global_table(g: &GlobalConfig) -> Table {
    let mut t = Table::new();
    if let Some(r) = &g.default_route {
        t.insert("default_route".into(), Value::String(r.clone()));
    }
    if let Some(x) = g.request_timeout {
        t.insert("request_timeout".into(), dur(x));
    }
    let mut f = Table::new();
    f.insert("enabled".into(), Value::Boolean(g.fallback_enabled));
    f.insert("max_attempts".into(), int(g.max_attempts));
    f.insert("retry_delay".into(), dur(g.retry_delay));
    t.insert("fallback".into(), Value::Table(f));
    t.insert("circuit_breaker".into(), Value::Table(breaker_table(&g.circuit_breaker)));
    if let Some(r) = &g.rate_limit {
        t.insert("rate_limiting".into(), Value::Table(rate_table(r)));
    }
    t
}

fn file_name(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    format!("{s}.toml")
}

fn render(t: &Table) -> String {
    toml::to_string(t).unwrap_or_else(|e| format!("# could not render: {e}\n"))
}

/// The TOML directory layout of `cfg` as `(path relative to the output root, file text)`:
/// `llms/provider/<p>/common.toml`, one file per logical model (only the keys that differ
/// from its provider's defaults), `llms/groups/<g>.toml`, `llms/polling_pools/<p>.toml`,
/// `llms/global.toml`. API keys are written as their `${VAR}` when they came from one.
/// Loading the result gives back an equivalent [`Config`].
pub fn to_toml_layout(cfg: &Config) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let llms = PathBuf::from("llms");
    for p in cfg.providers.values() {
        let mut t = model_table(&p.defaults, None);
        t.remove("weight");
        out.push((llms.join("provider").join(&p.name).join("common.toml"), render(&t)));
    }
    for m in cfg.models.values() {
        let base = cfg.providers.get(&m.provider).map(|p| &p.defaults);
        let mut t = Table::new();
        t.insert("name".into(), Value::String(m.name.clone()));
        t.insert("model".into(), Value::String(m.model.clone()));
        t.extend(model_table(m, base));
        out.push((llms.join("provider").join(&m.provider).join(file_name(&m.name)), render(&t)));
    }
    for g in cfg.groups.values() {
        out.push((llms.join("groups").join(file_name(&g.name)), render(&group_table(g))));
    }
    for p in cfg.pools.values() {
        out.push((llms.join("polling_pools").join(file_name(&p.name)), render(&pool_table(p))));
    }
    out.push((llms.join("global.toml"), render(&global_table(&cfg.global))));
    out
}

/// What the user must still define or fix after converting `cfg` (typically loaded leniently
/// from the original YAML layout): every model reference of a group that resolves nowhere, and
/// every pass-through parameter whose name the strict TOML reader takes for a typo. The
/// converted TOML layout fails `echelon check` on exactly these, and on nothing else.
pub fn convert_todo(cfg: &Config) -> Vec<String> {
    let mut places: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for g in cfg.groups.values() {
        for e in &g.echelons {
            for m in &e.models {
                if cfg.resolve_model(m).is_none() {
                    places.entry(m.as_str()).or_default().push(format!("{}.{}", g.name, e.name));
                }
            }
        }
    }
    let mut out: Vec<String> = places
        .into_iter()
        .map(|(m, at)| {
            format!(
                "define model `{m}` (used by {}): a file llms/provider/<provider>/{} with `name = \"{m}\"` and `model = \"<the provider's model name>\"`, or use `<provider>:<model>` in the groups instead",
                at.join(", "),
                file_name(m)
            )
        })
        .collect();
    let defaults = cfg.providers.values().map(|p| (format!("provider `{}`", p.name), &p.defaults));
    let models = cfg.models.values().map(|m| (format!("model `{}`", m.name), m));
    for (who, m) in defaults.chain(models) {
        for k in m.parameters.extra.keys() {
            if super::layout::NATIVE_PARAMS.contains(&k.as_str()) {
                continue;
            }
            let hint = super::reader::did_you_mean(k, super::layout::KNOWN_PARAMS);
            if !hint.is_empty() {
                out.push(format!("parameter `{k}` of {who}: the TOML layout takes it for a typo{hint}; rename or remove it"));
            }
        }
    }
    out
}
