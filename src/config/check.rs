//! `echelon check`: a human-readable rendering of what a configuration resolves to.

use std::fmt::Write as _;
use std::time::Duration;

use super::model::{Config, GroupConfig, ModelConfig, RateLimitConfig};
use super::validate::collect_warnings;

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s}s")
    }
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "none".into())
}

fn rate(r: &Option<RateLimitConfig>) -> String {
    match r {
        None => "off".into(),
        Some(RateLimitConfig::TokenBucket { bucket_size, refill_rate }) => format!("token_bucket({bucket_size} tokens, {refill_rate}/s)"),
        Some(RateLimitConfig::SlidingWindow { window_size, max_requests }) => format!("sliding_window({max_requests} per {})", secs(*window_size)),
    }
}

fn limit(n: u32) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

/// One line describing where a model reference goes. Keys are shown masked only.
fn model_line(reference: &str, m: Option<&ModelConfig>) -> String {
    match m {
        Some(m) => format!(
            "{reference} -> {} ({}) model={} base_url={} calls={} key={}{}{}",
            m.provider,
            m.kind.as_str(),
            m.model,
            m.base_url,
            // The endpoint after base-URL normalisation (a missing or doubled version segment).
            crate::provider::chat_endpoint(m, false),
            m.api_key.describe(),
            if m.context_window > 0 { format!(" context={}", m.context_window) } else { String::new() },
            if m.unsupported_params == super::model::UnsupportedParams::Error { " unsupported_params=error" } else { "" }
        ),
        None => format!("{reference} -> UNRESOLVED"),
    }
}

/// The instances a pool serves: every model of every echelon its task groups name, as
/// `(group.echelon, model reference)` pairs in trial order.
pub(crate) fn pool_instances(cfg: &Config, task_groups: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in task_groups {
        let (g, e) = Config::parse_group_reference(r);
        let Some(group) = cfg.groups.get(g) else {
            continue;
        };
        for ech in group.echelons_by_priority() {
            if e.is_some_and(|e| e != ech.name) {
                continue;
            }
            for m in &ech.models {
                out.push((format!("{g}.{}", ech.name), m.clone()));
            }
        }
    }
    out
}

fn render_group(out: &mut String, cfg: &Config, g: &GroupConfig) {
    let b = &g.circuit_breaker;
    let _ = writeln!(
        out,
        "  {}{}  strategy={}  breaker={} failures / {} open / {} half-open",
        g.name,
        if g.description.is_empty() { String::new() } else { format!(" ({})", g.description) },
        g.fallback_strategy.as_str(),
        b.failure_threshold,
        secs(b.recovery_time),
        b.half_open_requests
    );
    for e in g.echelons_by_priority() {
        let mut extra = String::new();
        if e.concurrency_limit > 0 {
            let _ = write!(extra, ", concurrency {}", e.concurrency_limit);
        }
        if e.rpm_limit > 0 {
            let _ = write!(extra, ", rpm {}", e.rpm_limit);
        }
        if let Some(t) = e.timeout {
            let _ = write!(extra, ", timeout {}", secs(t));
        }
        if let Some(r) = e.max_retries {
            let _ = write!(extra, ", retries {r}");
        }
        let _ = writeln!(out, "    {} (priority {}{extra})", e.name, e.priority);
        for m in &e.models {
            let _ = writeln!(out, "      {}", model_line(m, cfg.resolve_model(m).as_ref()));
        }
    }
    let fb = g.effective_fallback();
    let _ = writeln!(
        out,
        "    fallback: {} max_attempts={} retry_delay={}{}{}",
        fb.strategy.as_str(),
        fb.max_attempts,
        secs(fb.retry_delay),
        if fb.fallback_groups.is_empty() { String::new() } else { format!(" then {}", fb.fallback_groups.join(", ")) },
        fb.hedge_after.map(|h| format!(" hedge_after={}", secs(h))).unwrap_or_default()
    );
}

/// Render a resolved configuration for `echelon check`: pools with their instances, groups
/// with echelons in trial order and where every model goes, providers, global settings and
/// warnings. API keys appear only as [`crate::secret::Secret::describe`] (`${VAR} (set)`).
pub fn render_check(cfg: &Config) -> String {
    let mut out = String::new();
    if let Some(root) = &cfg.root {
        let _ = writeln!(out, "config: {}", root.display());
    }
    let _ = writeln!(out, "{} pools, {} groups, {} models, {} providers", cfg.pools.len(), cfg.groups.len(), cfg.models.len(), cfg.providers.len());

    let _ = writeln!(out, "\nPools:");
    for p in cfg.pools.values() {
        let h = &p.health_check;
        let _ = writeln!(
            out,
            "  {}  rotation={}  health={}  attempts={}  rate_limit={}  concurrency={}  queue={}  timeout={}",
            p.name,
            p.rotation_strategy.as_str(),
            if h.enabled {
                format!("every {}, unhealthy after {} failures, rest {}", secs(h.interval), h.failure_threshold, secs(h.recovery_time))
            } else {
                "off".into()
            },
            p.max_instance_attempts,
            rate(&p.rate_limit),
            limit(p.max_concurrent_requests),
            p.queue_size,
            opt_secs(p.request_timeout)
        );
        let _ = writeln!(out, "    task_groups: {}", p.task_groups.join(", "));
        for (target, m) in pool_instances(cfg, &p.task_groups) {
            let _ = writeln!(out, "    instance {target}/{}", model_line(&m, cfg.resolve_model(&m).as_ref()));
        }
    }

    let _ = writeln!(out, "\nGroups:");
    for g in cfg.groups.values() {
        render_group(&mut out, cfg, g);
    }

    let _ = writeln!(out, "\nProviders:");
    for p in cfg.providers.values() {
        let d = &p.defaults;
        let _ = writeln!(out, "  {}  type={}  base_url={}  key={}", p.name, d.kind.as_str(), d.base_url, d.api_key.describe());
    }
    let _ = writeln!(out, "\nModels:");
    for m in cfg.models.values() {
        let _ = writeln!(out, "  {}", model_line(&m.name, Some(m)));
    }

    if !cfg.wrappers.is_empty() {
        let _ = writeln!(out, "\nWrappers:");
        for w in cfg.wrappers.values() {
            let mut extra = String::new();
            if let Some(t) = w.timeout {
                let _ = write!(extra, "  timeout={}", secs(t));
            }
            if let Some(n) = w.max_instance_attempts {
                let _ = write!(extra, "  attempts={n}");
            }
            if let Some(fb) = &w.fallback_groups {
                let _ = write!(extra, "  fallback_groups={}", fb.join(", "));
            }
            let p = &w.parameters;
            let mut params: Vec<String> = Vec::new();
            if let Some(t) = p.temperature {
                params.push(format!("temperature={t}"));
            }
            if let Some(m) = p.max_tokens {
                params.push(format!("max_tokens={m}"));
            }
            if let Some(t) = p.top_p {
                params.push(format!("top_p={t}"));
            }
            params.extend(p.extra.keys().map(|k| format!("{k}=…")));
            if !params.is_empty() {
                let _ = write!(extra, "  parameters: {}", params.join(" "));
            }
            let _ = writeln!(out, "  {} -> {} {}{extra}", w.name, w.kind.as_str(), w.target);
        }
    }

    let g = &cfg.global;
    let _ = writeln!(
        out,
        "\nGlobal: fallback={} max_attempts={} retry_delay={} breaker={} failures / {} open  default_route={}  request_timeout={}  rate_limit={}",
        if g.fallback_enabled { "on" } else { "off" },
        g.max_attempts,
        secs(g.retry_delay),
        g.circuit_breaker.failure_threshold,
        secs(g.circuit_breaker.recovery_time),
        g.default_route.as_deref().unwrap_or("none"),
        opt_secs(g.request_timeout),
        rate(&g.rate_limit)
    );

    let st = &g.state;
    match st.backend {
        super::model::StateBackend::Memory => {
            let _ = writeln!(out, "State: backend=memory (this process only)");
        }
        super::model::StateBackend::Redis => {
            let _ = writeln!(
                out,
                "State: backend=redis url={} key_prefix={} timeout={} connect_timeout={} lease_time={} local_share={}",
                st.masked_url(),
                st.key_prefix,
                secs(st.timeout),
                secs(st.connect_timeout),
                secs(st.lease_time),
                st.local_share.map_or("auto (1 / processes alive)".to_string(), |x| x.to_string())
            );
            if let Some(f) = &st.tls_ca_file {
                let _ = writeln!(out, "  TLS: server certificate checked against {f} (not the system store)");
            }
        }
    }

    if !g.alerts.is_empty() {
        let _ = writeln!(out, "\nAlerts (every {}):", secs(g.alert_interval));
        for a in &g.alerts {
            let cond = match a.kind {
                super::model::AlertKind::BreakerOpen => format!("open longer than {}s", a.threshold),
                super::model::AlertKind::P99Latency => format!("p99 > {}s over {}", a.threshold, secs(a.window)),
                super::model::AlertKind::ErrorRatio => format!("error ratio > {} over {} (min {} requests)", a.threshold, secs(a.window), a.min_requests),
                super::model::AlertKind::Capacity => format!("fill > {}", a.threshold),
            };
            let _ = writeln!(out, "  {}  {} on {}: {cond}", a.name, a.kind.as_str(), a.scope.as_deref().unwrap_or("all instances"));
        }
    }

    let gw = &g.gateway;
    let _ = writeln!(
        out,
        "\nGateway (echelon serve): {}:{}  keys={}{}  max_body={}B  header_timeout={}  idle_timeout={}  max_connections={}  drain_grace={}  watch={}",
        gw.host.as_deref().unwrap_or("127.0.0.1"),
        gw.port.unwrap_or(8080),
        gw.keys.len(),
        if gw.allow_unauthenticated { " (unauthenticated non-loopback allowed)" } else { "" },
        gw.max_body_bytes,
        secs(gw.header_timeout),
        secs(gw.idle_timeout),
        gw.max_connections,
        secs(gw.drain_grace),
        if gw.watch { format!("every {}", secs(gw.watch_interval)) } else { "off".into() },
    );
    for k in &gw.keys {
        let routes = if k.routes.is_empty() { "every route".to_string() } else { k.routes.join(", ") };
        let _ = writeln!(out, "  key {}: {}  routes: {routes}  rpm={}  tpm={}", k.name, k.secret.describe(), limit(k.rpm), limit(k.tpm));
    }

    let warnings = collect_warnings(cfg);
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}
