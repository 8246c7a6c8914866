//! Loader tests: every input form, every validation class, interpolation, inheritance,
//! conversion round trip, and property tests that nothing panics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::error::ConfigIssue;

fn test_env(var: &str) -> Option<String> {
    match var {
        "OPENAI_API_KEY" => Some("sk-test-SECRET123".into()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-SECRET456".into()),
        "HOST" => Some("127.0.0.1".into()),
        _ => None,
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the system temp dir with the given files.
fn temp_tree(files: &[(&str, &str)]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("echelon-config-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    dir
}

fn load_json(v: Value) -> Result<Config, ConfigError> {
    from_json_with_env(&v, &test_env)
}

fn issues(v: Value) -> Vec<ConfigIssue> {
    match load_json(v) {
        Ok(_) => panic!("expected a ConfigError"),
        Err(e) => e.issues,
    }
}

/// The one issue whose key is `key`.
fn issue_at<'a>(list: &'a [ConfigIssue], key: &str) -> &'a ConfigIssue {
    list.iter().find(|i| i.key == key).unwrap_or_else(|| panic!("no issue at `{key}` in {list:#?}"))
}

/// A minimal valid dict config; tests change one thing at a time.
fn base() -> Value {
    json!({
        "providers": {
            "openai": {"common": {"type": "openai", "api_key": "${OPENAI_API_KEY}"},
                        "gpt4o": {"name": "openai-gpt4o", "model": "gpt-4o", "context_window": 128000}},
            "mock": {"common": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8900/v1"},
                      "mock-a": {"model": "mock-a"}}
        },
        "groups": {
            "fast": {"echelon1": {"models": ["openai-gpt4o", "openai:gpt-4o-mini"]},
                      "echelon2": {"models": ["mock-a"]}},
            "slow": {"echelon1": {"models": ["mock:mock-b"]}}
        },
        "pools": {"p": {"task_groups": ["fast", "slow.echelon1"]}},
        "global": {"default_route": "pool:p"}
    })
}

fn set(v: &mut Value, path: &[&str], new: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        cur = cur.get_mut(*k).unwrap_or_else(|| panic!("no key {k}"));
    }
    cur[path[path.len() - 1]] = new;
}

fn with(path: &[&str], new: Value) -> Value {
    let mut v = base();
    set(&mut v, path, new);
    v
}

#[test]
fn base_dict_loads_and_resolves() {
    let cfg = load_json(base()).expect("valid");
    assert_eq!(cfg.groups["fast"].echelons.len(), 2);
    let m = cfg.resolve_model("openai-gpt4o").expect("logical");
    assert_eq!((m.model.as_str(), m.base_url.as_str(), m.kind), ("gpt-4o", "https://api.openai.com/v1", ProviderKind::OpenAi));
    assert_eq!(m.api_key.expose(), Some("sk-test-SECRET123"));
    assert_eq!(m.api_key.var(), Some("OPENAI_API_KEY"));
    // provider:model with no model file: provider defaults plus the wire model.
    let d = cfg.resolve_model("openai:gpt-4o-mini").expect("provider ref");
    assert_eq!((d.model.as_str(), d.context_window), ("gpt-4o-mini", 0));
    // provider:model naming a configured wire model gets that model's settings.
    let w = cfg.resolve_model("openai:gpt-4o").expect("provider ref");
    assert_eq!((w.name.as_str(), w.context_window), ("openai:gpt-4o", 128000));
    // mock-a: name and wire default to the entry key; type from common.
    assert_eq!(cfg.models["mock-a"].kind, ProviderKind::OpenAiCompatible);
    assert_eq!(cfg.models["mock-a"].base_url, "http://127.0.0.1:8900/v1");
}

#[test]
fn unknown_key_suggests_the_close_one() {
    let list = issues(with(&["groups", "fast", "echelon1", "concurency_limit"], json!(3)));
    let i = issue_at(&list, "groups.fast.echelon1.concurency_limit");
    assert_eq!(i.message, "unknown key `concurency_limit` (did you mean `concurrency_limit`?)");
    assert_eq!(i.value.as_deref(), Some("3"));
    assert_eq!(i.file, None);
}

#[test]
fn wrong_type_says_expected_and_found() {
    let list = issues(with(&["groups", "fast", "echelon1", "priority"], json!("high")));
    let i = issue_at(&list, "groups.fast.echelon1.priority");
    assert_eq!(i.message, "expected integer, found string");
    assert_eq!(i.value.as_deref(), Some("\"high\""));
}

#[test]
fn out_of_range_numbers() {
    let mut v = base();
    set(&mut v, &["groups", "fast", "circuit_breaker"], json!({"failure_threshold": 0, "recovery_time": 7200, "half_open_requests": 11}));
    set(&mut v, &["groups", "fast", "echelon1", "temperature"], json!(2.5));
    set(&mut v, &["groups", "fast", "echelon1", "max_tokens"], json!(0));
    set(&mut v, &["groups", "fast", "fallback_config"], json!({"max_attempts": 11, "retry_delay": 61}));
    set(&mut v, &["pools", "p", "fallback_config"], json!({"max_instance_attempts": 0}));
    let list = issues(v);
    assert_eq!(issue_at(&list, "groups.fast.circuit_breaker.failure_threshold").message, "out of range: must be between 1 and 100");
    assert_eq!(issue_at(&list, "groups.fast.circuit_breaker.recovery_time").message, "out of range: must be greater than 0 and at most 3600");
    assert_eq!(issue_at(&list, "groups.fast.circuit_breaker.half_open_requests").message, "out of range: must be between 1 and 10");
    assert_eq!(issue_at(&list, "groups.fast.echelon1.temperature").message, "out of range: must be between 0 and 2");
    assert_eq!(issue_at(&list, "groups.fast.echelon1.max_tokens").message, "out of range: must be between 1 and 10000000");
    assert_eq!(issue_at(&list, "groups.fast.fallback_config.max_attempts").message, "out of range: must be between 1 and 10");
    assert_eq!(issue_at(&list, "groups.fast.fallback_config.retry_delay").message, "out of range: must be between 0 and 60");
    assert_eq!(issue_at(&list, "pools.p.fallback_config.max_instance_attempts").message, "out of range: must be between 1 and 10");
    // All of them in one error.
    assert_eq!(list.len(), 8, "{list:#?}");
}

#[test]
fn invalid_enum_lists_valid_values() {
    let mut v = base();
    set(&mut v, &["pools", "p", "rotation_strategy"], json!("round_robbin"));
    set(&mut v, &["groups", "fast", "fallback_strategy"], json!("panic"));
    let list = issues(v);
    assert_eq!(
        issue_at(&list, "pools.p.rotation_strategy").message,
        "invalid value (did you mean `round_robin`?); expected one of: round_robin, least_recently_used, weighted, least_busy, latency"
    );
    assert!(issue_at(&list, "groups.fast.fallback_strategy").message.contains("echelon_down, model_rotate, provider_failover, task_group_switch"));
}

#[test]
fn unknown_model_reference_names_model_and_place() {
    let list = issues(with(&["groups", "fast", "echelon1", "models"], json!(["openai-gpt4o", "openai-gpt4"])));
    let i = issue_at(&list, "groups.fast.echelon1.models[1]");
    assert_eq!(i.value.as_deref(), Some("\"openai-gpt4\""));
    assert!(i.message.starts_with("unknown model `openai-gpt4` in group `fast`, echelon `echelon1`"), "{}", i.message);
    assert!(i.message.contains("did you mean `openai-gpt4o`?"), "{}", i.message);
    let list = issues(with(&["groups", "fast", "echelon1", "models"], json!(["opnai:gpt-4o"])));
    assert!(issue_at(&list, "groups.fast.echelon1.models[0]").message.contains("no provider `opnai` (did you mean `openai`?)"));
}

#[test]
fn unknown_group_references_in_pools_and_fallback_groups() {
    let mut v = base();
    set(&mut v, &["pools", "p", "task_groups"], json!(["fats", "fast.echelon9"]));
    set(&mut v, &["groups", "fast", "fallback_config"], json!({"fallback_groups": ["slow.echelon2", "nope"]}));
    let list = issues(v);
    assert_eq!(issue_at(&list, "pools.p.task_groups[0]").message, "unknown group `fats` (did you mean `fast`?)");
    assert!(issue_at(&list, "pools.p.task_groups[1]").message.starts_with("group `fast` has no echelon `echelon9`"));
    assert!(issue_at(&list, "groups.fast.fallback_config.fallback_groups[0]").message.starts_with("group `slow` has no echelon `echelon2`"));
    assert_eq!(issue_at(&list, "groups.fast.fallback_config.fallback_groups[1]").message, "unknown group `nope`");
}

#[test]
fn fallback_cycle_is_reported_with_its_path() {
    let mut v = base();
    set(&mut v, &["groups", "fast", "fallback_config"], json!({"fallback_groups": ["fast.echelon2", "slow"]}));
    set(&mut v, &["groups", "slow", "fallback_config"], json!({"fallback_groups": ["fast.echelon1"]}));
    let list = issues(v);
    let i = issue_at(&list, "groups.fast.fallback_config.fallback_groups");
    assert_eq!(i.message, "fallback cycle: fast → slow → fast");
    assert_eq!(list.len(), 1, "the self reference fast → fast.echelon2 is not a cycle: {list:#?}");
}

#[test]
fn three_group_cycle() {
    let mut v = base();
    set(&mut v, &["groups", "third"], json!({"echelon1": {"models": ["mock-a"]}, "fallback_config": {"fallback_groups": ["fast"]}}));
    set(&mut v, &["groups", "fast", "fallback_config"], json!({"fallback_groups": ["slow"]}));
    set(&mut v, &["groups", "slow", "fallback_config"], json!({"fallback_groups": ["third"]}));
    let list = issues(v);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].message, "fallback cycle: fast → slow → third → fast");
}

#[test]
fn empty_group_and_empty_echelon() {
    let mut v = base();
    set(&mut v, &["groups", "empty"], json!({"description": "nothing"}));
    set(&mut v, &["groups", "slow", "echelon1", "models"], json!([]));
    let list = issues(v);
    assert_eq!(issue_at(&list, "groups.empty").message, "group `empty` has no echelons (add an [echelon1] table with `models`)");
    assert_eq!(issue_at(&list, "groups.slow.echelon1.models").message, "echelon has no models");
}

#[test]
fn duplicate_names_are_reported() {
    // The same logical model name in two providers, and one group under two keys.
    let mut v = base();
    set(&mut v, &["providers", "mock", "dup"], json!({"name": "openai-gpt4o", "model": "x"}));
    set(&mut v, &["task_groups"], json!({"fast": {"echelon1": {"models": ["mock-a"]}}}));
    let list = issues(v);
    assert!(issue_at(&list, "providers.mock.dup.name").message.starts_with("duplicate model `openai-gpt4o` (also defined in providers.openai.gpt4o)"));
    assert!(issue_at(&list, "task_groups.fast.name").message.starts_with("duplicate group `fast`"));
}

#[test]
fn every_issue_of_every_document_is_collected() {
    let mut v = base();
    set(&mut v, &["groups", "fast", "echelon1", "temprature"], json!(1));
    set(&mut v, &["groups", "fast", "echelon2", "priority"], json!(-1));
    set(&mut v, &["pools", "p", "queue"], json!(1));
    set(&mut v, &["providers", "openai", "common", "timeouts"], json!({"total": "long"}));
    let list = issues(v);
    assert_eq!(list.len(), 4, "{list:#?}");
}

#[test]
fn api_key_values_are_masked_in_issues() {
    let list = issues(with(&["providers", "openai", "common", "api_key"], json!(12345)));
    let i = issue_at(&list, "providers.openai.common.api_key");
    assert_eq!(i.value.as_deref(), Some("***"));
    let list = issues(with(&["providers", "openai", "common", "apikey"], json!("sk-live-abcdef")));
    let i = issue_at(&list, "providers.openai.common.apikey");
    assert_eq!(i.value.as_deref(), Some("***"));
    assert!(i.message.contains("did you mean `api_key`?"));
    let text = format!("{}", ConfigError { issues: list });
    assert!(!text.contains("sk-live"));
}

#[test]
fn env_interpolation_defaults_and_unset() {
    let mut v = base();
    set(&mut v, &["providers", "mock", "common", "base_url"], json!("http://${HOST}:${PORT:-8900}/v1"));
    set(&mut v, &["providers", "mock", "common", "api_key"], json!("${MOCK_KEY:-mock-key}"));
    set(&mut v, &["providers", "mock", "common", "headers"], json!({"X-Team": "${TEAM}"}));
    set(&mut v, &["providers", "openai", "common", "api_key"], json!("${UNSET_OPENAI_KEY}"));
    let cfg = load_json(v).expect("unset variables do not stop a load");
    let mock = &cfg.models["mock-a"];
    assert_eq!(mock.base_url, "http://127.0.0.1:8900/v1");
    assert_eq!(mock.api_key.expose(), Some("mock-key"));
    assert_eq!(mock.api_key.var(), Some("MOCK_KEY"));
    assert_eq!(mock.headers["X-Team"], "");
    let key = &cfg.models["openai-gpt4o"].api_key;
    assert!(key.is_missing());
    assert_eq!(key.describe(), "${UNSET_OPENAI_KEY} (unset)");
    let w = warnings(&cfg);
    assert!(w.iter().any(|i| i.key == "providers.mock.common.headers.X-Team" && i.message.contains("`TEAM` is not set")), "{w:#?}");
    let k = w.iter().find(|i| i.value.as_deref() == Some("${UNSET_OPENAI_KEY}")).expect("api key warning");
    assert!(k.message.contains("calls to openai-gpt4o will fail with AuthError"), "{}", k.message);
}

#[test]
fn echelon_order_and_default_priorities() {
    let v = with(
        &["groups", "fast"],
        json!({"translation": {"models": ["mock-a"]}, "echelon2": {"models": ["mock-a"]},
               "analysis": {"models": ["mock-a"]}, "echelon1": {"models": ["mock-a"], "priority": 5}}),
    );
    let cfg = load_json(v).expect("valid");
    let g = &cfg.groups["fast"];
    let file_order: Vec<&str> = g.echelons.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(file_order, ["translation", "echelon2", "analysis", "echelon1"]);
    let by_priority: Vec<(&str, u32)> = g.echelons_by_priority().iter().map(|e| (e.name.as_str(), e.priority)).collect();
    assert_eq!(by_priority, [("echelon2", 2), ("echelon1", 5), ("translation", 999), ("analysis", 999)]);
}

#[test]
fn generation_two_shapes() {
    let v = json!({
        "providers": {"openai": {"type": "openai", "api_key": "k"}},
        "task_groups": {"g": {"name": "g", "echelon1": {"priority": 1, "model": "gpt-4o", "provider": "openai"}}},
        "pools": {"fast_pool": {"task_groups": ["g"], "rotation": {"strategy": "weighted"},
                                 "health_check": {"interval": 30, "failure_threshold": 3},
                                 "instances": [{"name": "a", "provider": "openai", "model": "gpt-4o", "weight": 1}]}}
    });
    let cfg = load_json(v).expect("valid");
    assert_eq!(cfg.groups["g"].echelons[0].models, ["openai:gpt-4o"]);
    assert_eq!(cfg.pools["fast_pool"].rotation_strategy, RotationStrategy::Weighted);
    assert_eq!(cfg.providers["openai"].defaults.api_key.expose(), Some("k"));
}

#[test]
fn group_and_pool_settings_are_read() {
    let mut v = base();
    set(
        &mut v,
        &["groups", "fast", "fallback_config"],
        json!({"strategy": "task_group_switch", "fallback_groups": ["slow"], "max_attempts": 5, "retry_delay": 0,
               "on_content_filter": "fallback", "hedge_after_ms": 250, "circuit_breaker": {"reset_timeout": 0.05}}),
    );
    set(&mut v, &["groups", "fast", "echelon1", "thinking_config"], json!({"budget_tokens": 4000}));
    set(
        &mut v,
        &["pools", "p"],
        json!({"task_groups": ["fast"], "health_check_interval": 10, "health_check": {"failure_threshold": 4, "recovery_time": 0.5},
               "rate_limiting": {"algorithm": "sliding_window", "sliding_window": {"window_size": 1, "max_requests": 5}},
               "concurrency_control": {"enabled": true, "max_concurrency": 7}, "performance": {"queue_size": 0, "request_timeout": 9},
               "monitoring": {"metrics_enabled": true}}),
    );
    let cfg = load_json(v).expect("valid");
    let fb = cfg.groups["fast"].fallback.clone().expect("fallback");
    assert_eq!(fb.strategy, FallbackStrategy::TaskGroupSwitch);
    assert_eq!((fb.max_attempts, fb.retry_delay, fb.on_content_filter), (5, Duration::ZERO, true));
    assert_eq!(fb.hedge_after, Some(Duration::from_millis(250)));
    assert_eq!(fb.circuit_breaker.expect("breaker").recovery_time, Duration::from_millis(50));
    assert_eq!(cfg.groups["fast"].echelons[0].thinking_config, Some(ThinkingConfig { enabled: true, budget_tokens: 4000 }));
    let p = &cfg.pools["p"];
    assert_eq!(p.health_check.interval, Duration::from_secs(10));
    assert_eq!((p.health_check.failure_threshold, p.health_check.recovery_time), (4, Duration::from_millis(500)));
    assert_eq!(p.rate_limit, Some(RateLimitConfig::SlidingWindow { window_size: Duration::from_secs(1), max_requests: 5 }));
    assert_eq!((p.max_concurrent_requests, p.queue_size, p.request_timeout), (7, 0, Some(Duration::from_secs(9))));
    assert_eq!(p.max_instance_attempts, 2);
}

#[test]
fn default_route_is_checked() {
    let list = issues(with(&["global", "default_route"], json!("pool:nope")));
    assert_eq!(issue_at(&list, "global.default_route").message, "unknown pool `nope`");
    let list = issues(with(&["global", "default_route"], json!("somewhere")));
    assert!(issue_at(&list, "global.default_route").message.starts_with("expected `pool:<name>`"));
    assert!(load_json(with(&["global", "default_route"], json!("group:fast.echelon2"))).is_ok());
    assert!(load_json(with(&["global", "default_route"], json!("direct:openai:gpt-4o"))).is_ok());
}

#[test]
fn compatible_provider_without_base_url_is_an_error() {
    let list = issues(with(&["providers", "mock", "common"], json!({"type": "openai_compatible"})));
    assert!(list.iter().any(|i| i.message.contains("base_url is required for type openai_compatible")), "{list:#?}");
}

#[test]
fn unknown_parameter_typo_is_caught_but_extras_pass_through() {
    let list = issues(with(&["providers", "openai", "common", "parameters"], json!({"temprature": 0.1})));
    assert_eq!(issue_at(&list, "providers.openai.common.parameters.temprature").message, "unknown parameter `temprature` (did you mean `temperature`?)");
    let cfg = load_json(with(&["providers", "openai", "common", "parameters"], json!({"seed": 7, "stop": "END"}))).expect("valid");
    let p = &cfg.models["openai-gpt4o"].parameters;
    assert_eq!(p.extra["seed"], json!(7));
    assert_eq!(p.stop, ["END"]);
}

// ---- directories ----

#[test]
fn shipped_configs_load_and_every_reference_resolves() {
    let cfg = load_dir_with_env(crate_dir().join("configs"), &test_env).unwrap_or_else(|e| panic!("{e}"));
    for name in ["fast_group", "thinking_group", "demo_group"] {
        assert!(cfg.groups.contains_key(name), "{name}");
    }
    for name in ["fast_pool", "thinking_pool", "demo_pool"] {
        assert!(cfg.pools.contains_key(name), "{name}");
    }
    for g in cfg.groups.values() {
        for e in &g.echelons {
            for m in &e.models {
                assert!(cfg.resolve_model(m).is_some(), "{m}");
            }
        }
    }
    let long = &cfg.models["mock-long"];
    assert!(long.context_window > cfg.models["mock-fast-a"].context_window);
    assert_eq!(long.base_url, "http://127.0.0.1:8900/v1");
    assert_eq!(long.api_key.expose(), Some("mock-key"));
    // Also accepted: the llms/ directory itself.
    let again = load_dir_with_env(crate_dir().join("configs/llms"), &test_env).expect("llms dir");
    assert_eq!(again.groups.len(), cfg.groups.len());
    let text = render_check(&cfg);
    assert!(text.contains("demo_pool") && text.contains("thinking_group") && text.contains("mock-long"));
    assert!(text.contains("${OPENAI_API_KEY} (set)"));
    assert!(!text.contains("SECRET"), "{text}");
    assert!(text.contains("GEMINI_API_KEY"), "unset key shows up as a warning: {text}");
}

#[test]
fn yaml_layout_loads_like_the_original() {
    let cfg = load_dir_with_env(crate_dir().join("tests/fixtures/yaml_layout"), &test_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.groups.keys().collect::<Vec<_>>(), ["fast_group", "fast_small_group"]);
    assert_eq!(cfg.pools.keys().collect::<Vec<_>>(), ["fast_pool"]);
    let small = &cfg.groups["fast_small_group"];
    let names: Vec<&str> = small.echelons.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["translation", "analysis", "execute", "thinking", "high_payload"]);
    assert!(small.echelons.iter().all(|e| e.priority == 999));
    assert_eq!(small.fallback_strategy, FallbackStrategy::ModelRotate);
    let exec = small.echelon("execute").expect("execute");
    assert_eq!((exec.response_format.as_deref(), exec.function_calling.as_deref()), (Some("json"), Some("required")));
    let fast = &cfg.groups["fast_group"];
    assert_eq!(fast.effective_fallback().fallback_groups, ["fast_group.echelon2", "fast_group.echelon3"]);
    let gpt4 = &cfg.models["openai-gpt4"];
    assert_eq!(gpt4.model, "gpt-4");
    assert_eq!(gpt4.timeouts.total, Some(Duration::from_secs(30)));
    assert_eq!(gpt4.timeouts.connect, Some(Duration::from_secs(10)));
    assert_eq!(gpt4.retry.max_retries, 3);
    assert_eq!(gpt4.parameters.max_tokens, Some(2000));
    assert_eq!(cfg.models["openai-gpt3.5-turbo"].parameters.max_tokens, Some(1000));
    assert_eq!(cfg.models["openai-gpt3.5-turbo"].parameters.temperature, Some(0.7));
    let haiku = &cfg.models["anthropic-claude-3-haiku"];
    assert_eq!((haiku.kind, haiku.rpm, haiku.tpm), (ProviderKind::Anthropic, 50, 40000));
    assert_eq!(haiku.headers["anthropic-beta"], "tools-2024-04-04");
    let qwen = &cfg.models["siliconflow-qwen-7b"];
    assert_eq!((qwen.kind, qwen.model.as_str()), (ProviderKind::OpenAiCompatible, "Qwen/Qwen2.5-7B-Instruct"));
    assert_eq!(qwen.parameters.top_p, Some(0.9));
    assert_eq!(qwen.timeouts.connect, Some(Duration::from_secs(15)));
    assert_eq!(cfg.pools["fast_pool"].task_groups, ["fast_group", "fast_small_group.high_payload"]);
    assert_eq!(cfg.pools["fast_pool"].rate_limit, Some(RateLimitConfig::TokenBucket { bucket_size: 1000, refill_rate: 16.67 }));
    assert_eq!(cfg.global.rate_limit, Some(RateLimitConfig::SlidingWindow { window_size: Duration::from_secs(60), max_requests: 10000 }));
}

#[test]
fn yaml_without_registry_loads_every_file() {
    let dir = temp_tree(&[
        ("llms/provider/mock/common.yaml", "model_type: mock\nbase_url: http://127.0.0.1:1/v1\n"),
        ("llms/provider/mock/m.yaml", "model_name: m\n"),
        ("llms/groups/a.yaml", "name: a\necheLon1: {models: [m]}\nechelon_x: 3\n"),
        ("llms/groups/b.yml", "echelon1: {models: [m]}\n"),
        ("llms/polling_pools/p.yaml", "task_groups: [b]\n"),
    ]);
    let err = load_dir_with_env(&dir, &test_env).expect_err("a wrong type stays an error");
    let a = dir.join("llms/groups/a.yaml");
    // `echelon_x` starts with "echelon" so it is an echelon: and it is not a table.
    assert_eq!(err.issues.iter().find(|i| i.key == "echelon_x").expect("type").message, "expected table, found integer");
    // In the original YAML layout an unknown key is a warning, not an error.
    assert!(err.issues.iter().all(|i| i.key != "echeLon1"), "{err}");
    std::fs::write(&a, "name: a\necheLon1: {models: [m]}\nechelon1: {models: [m]}\n").expect("fix");
    let cfg = load_dir_with_env(&dir, &test_env).expect("valid now");
    let i = cfg.load_warnings.iter().find(|i| i.key == "echeLon1").expect("case typo is reported");
    assert_eq!(i.file.as_deref(), Some(a.as_path()));
    assert_eq!(i.message, "unknown key `echeLon1` (did you mean `echelon1`?): ignored (the engine has no use for it)");
    assert_eq!(cfg.groups.len(), 2);
    assert_eq!(cfg.models["m"].kind, ProviderKind::OpenAiCompatible);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn syntax_errors_carry_file_and_line() {
    let dir = temp_tree(&[
        ("llms/groups/bad.toml", "name = \"bad\"\n[echelon1]\nmodels = [\"a\"\n"),
        ("llms/polling_pools/bad.yaml", "name: p\ntask_groups: [a\n  b: c\n"),
    ]);
    let err = load_dir_with_env(&dir, &test_env).expect_err("syntax");
    let t = err.issues.iter().find(|i| i.file.as_deref() == Some(dir.join("llms/groups/bad.toml").as_path())).expect("toml issue");
    assert!(t.message.starts_with("TOML syntax error at line 3") || t.message.starts_with("TOML syntax error at line 4"), "{}", t.message);
    let y = err.issues.iter().find(|i| i.file.as_deref() == Some(dir.join("llms/polling_pools/bad.yaml").as_path())).expect("yaml issue");
    assert!(y.message.starts_with("YAML syntax error at line"), "{}", y.message);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn inherits_from_deep_merges_and_reports_missing_files() {
    let dir = temp_tree(&[
        (
            "llms/provider/acme/base.toml",
            "type = \"openai_compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[parameters]\ntemperature = 0.2\nmax_tokens = 100\n[timeouts]\ntotal = 50\n",
        ),
        ("llms/provider/acme/big.toml", "inherits_from = \"base.toml\"\nmodel = \"big-1\"\n[parameters]\nmax_tokens = 900\n"),
        ("llms/provider/acme/lost.toml", "inherits_from = \"nowhere.toml\"\nmodel = \"x\"\ntype = \"openai\"\n"),
        ("llms/groups/g.toml", "inherits_from = \"../../global.toml\"\n[echelon1]\nmodels = [\"big\"]\n"),
        ("llms/global.toml", "default_route = \"group:g\"\n"),
    ]);
    let err = load_dir_with_env(&dir, &test_env).expect_err("lost parent");
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].key, "inherits_from");
    assert_eq!(err.issues[0].value.as_deref(), Some("\"nowhere.toml\""));
    std::fs::remove_file(dir.join("llms/provider/acme/lost.toml")).expect("rm");
    let cfg = load_dir_with_env(&dir, &test_env).unwrap_or_else(|e| panic!("{e}"));
    let big = &cfg.models["big"];
    assert_eq!((big.model.as_str(), big.parameters.temperature, big.parameters.max_tokens), ("big-1", Some(0.2), Some(900)));
    assert_eq!(big.timeouts.total, Some(Duration::from_secs(50)));
    assert_eq!(big.timeouts.connect, Timeouts::default().connect);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn toml_issues_name_the_file() {
    let dir = temp_tree(&[
        ("llms/provider/openai/common.toml", "type = \"openai\"\napi_key = \"sk-literal-SECRET\"\nbase_url = \"ftp://x\"\n"),
        ("llms/groups/g.toml", "[echelon1]\nmodels = [\"openai:gpt-4o\", \"ghost\"]\n"),
        ("llms/polling_pools/p.toml", "task_groups = [\"g.echelon2\"]\nrotation_strategy = \"random\"\n"),
    ]);
    let err = load_dir_with_env(&dir, &test_env).expect_err("invalid");
    let f = |rel: &str| Some(dir.join(rel));
    let find = |rel: &str, key: &str| err.issues.iter().find(|i| i.file == f(rel) && i.key == key).unwrap_or_else(|| panic!("{rel} {key}: {err}"));
    assert_eq!(find("llms/provider/openai/common.toml", "base_url").message, "must start with http:// or https://");
    assert!(find("llms/groups/g.toml", "echelon1.models[1]").message.starts_with("unknown model `ghost`"));
    assert!(find("llms/polling_pools/p.toml", "task_groups[0]").message.starts_with("group `g` has no echelon `echelon2`"));
    assert!(find("llms/polling_pools/p.toml", "rotation_strategy").message.contains("expected one of"));
    assert!(!format!("{err}").contains("SECRET"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_directory_is_a_config_error() {
    let err = load_dir_with_env("/nonexistent/echelon/configs", &test_env).expect_err("missing");
    assert_eq!(err.issues[0].message, "config directory not found");
    let empty = temp_tree(&[("README", "nothing")]);
    let err = load_dir_with_env(&empty, &test_env).expect_err("no llms");
    assert!(err.issues[0].message.starts_with("no llms/ directory"));
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn conversion_round_trips() {
    let src = load_dir_with_env(crate_dir().join("tests/fixtures/yaml_layout"), &test_env).expect("yaml");
    let files = to_toml_layout(&src);
    assert!(files.iter().any(|(p, _)| p == Path::new("llms/groups/fast_small_group.toml")));
    let out = temp_tree(&files.iter().map(|(p, t)| (p.to_str().expect("utf8"), t.as_str())).collect::<Vec<_>>());
    for (_, text) in &files {
        assert!(!text.contains("sk-test-SECRET123"), "keys stay placeholders: {text}");
    }
    let back = load_dir_with_env(&out, &test_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.groups, src.groups.iter().map(|(k, g)| (k.clone(), GroupConfig { source: back.groups[k].source.clone(), ..g.clone() })).collect());
    assert_eq!(back.pools.keys().collect::<Vec<_>>(), src.pools.keys().collect::<Vec<_>>());
    assert_eq!(back.pools["fast_pool"].rate_limit, src.pools["fast_pool"].rate_limit);
    assert_eq!(back.global, src.global);
    for (name, m) in &src.models {
        let b = &back.models[name];
        assert_eq!(
            (&b.model, &b.base_url, b.kind, &b.parameters, b.timeouts, b.retry, b.rpm, &b.headers),
            (&m.model, &m.base_url, m.kind, &m.parameters, m.timeouts, m.retry, m.rpm, &m.headers),
            "{name}"
        );
        assert_eq!(b.api_key.var(), m.api_key.var());
    }
    let _ = std::fs::remove_dir_all(out);
}

// ---- properties: no input panics ----

mod props {
    use super::*;
    use proptest::prelude::*;

    fn json_tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-z_${}:.-]{0,12}".prop_map(Value::String),
            prop_oneof![Just("echelon1"), Just("models"), Just("${X:-y}"), Just("openai:gpt-4o"), Just("fast.echelon1")].prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            let key = prop_oneof![
                "[a-z_]{1,10}",
                Just("providers".to_string()),
                Just("groups".to_string()),
                Just("pools".to_string()),
                Just("global".to_string()),
                Just("echelon1".to_string()),
                Just("models".to_string()),
                Just("common".to_string()),
                Just("type".to_string()),
                Just("task_groups".to_string()),
                Just("fallback_config".to_string()),
                Just("fallback_groups".to_string()),
                Just("inherits_from".to_string()),
                Just("api_key".to_string()),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_json_never_panics(v in json_tree()) {
            if let Err(e) = from_json_with_env(&v, &test_env) {
                prop_assert!(!e.issues.is_empty());
            }
        }

        #[test]
        fn random_text_files_never_panic(group in "\\PC{0,200}", pool in "[a-z_=\\[\\]\"{}:,.0-9 \\n-]{0,200}") {
            let dir = temp_tree(&[("llms/groups/g.toml", group.as_str()), ("llms/polling_pools/p.yaml", pool.as_str()), ("llms/global.toml", pool.as_str())]);
            let _ = load_dir_with_env(&dir, &test_env);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn models_list_defines_provider_models() {
    let dir = temp_tree(&[
        ("llms/provider/openai/common.toml", "type = \"openai\"\napi_key = \"${OPENAI_API_KEY}\"\nmodels = [\"gpt-4o\", \"gpt-4o-mini\"]\n"),
        ("llms/provider/openai/legacy.yaml", "model_type: openai\nmodels: [gpt-4, gpt-4-32k]\ntimeout: 60\n"),
        ("llms/groups/g.toml", "[echelon1]\nmodels = [\"openai:gpt-4o-mini\", \"openai:gpt-4-32k\", \"openai:o1\"]\n"),
    ]);
    let cfg = load_dir_with_env(&dir, &test_env).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&String> = cfg.models.keys().collect();
    assert_eq!(names, ["openai:gpt-4", "openai:gpt-4-32k", "openai:gpt-4o", "openai:gpt-4o-mini"]);
    assert_eq!(cfg.models["openai:gpt-4-32k"].timeouts.total, Some(Duration::from_secs(60)));
    assert_eq!(cfg.resolve_model("openai:gpt-4-32k").expect("listed").timeouts.total, Some(Duration::from_secs(60)));
    // Not listed anywhere: provider defaults.
    let o1 = cfg.resolve_model("openai:o1").expect("provider defaults");
    assert_eq!((o1.model.as_str(), o1.timeouts.total), ("o1", Timeouts::default().total));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_keys_that_look_secret_are_masked() {
    let list = issues(with(&["providers", "openai", "common", "key"], json!("sk-live-abcdef")));
    let i = issue_at(&list, "providers.openai.common.key");
    assert_eq!(i.value.as_deref(), Some("***"));
    let list = issues(with(&["providers", "mock", "common", "base_url"], json!("${NOPE}")));
    assert_eq!(
        issue_at(&list, "providers.mock.common.base_url").message,
        "must start with http:// or https:// (empty: is an environment variable it uses unset?)"
    );
}

// ---- the original YAML layout, as it is (issue 20) ----

/// A small tree in the original's shapes: keys the engine does not use, provider-native and
/// null parameters, a human_relay provider inheriting `../common.yaml`, a group model no
/// provider defines and a `retry_delay`.
fn original_tree() -> PathBuf {
    temp_tree(&[
        (
            "llms/provider/openai/common.yaml",
            "provider_type: openai\nbase_url: http://127.0.0.1:1/v1\nfunction_calling_supported: true\nsupports_caching: false\nfallback_config: {enabled: true}\ndefault_parameters: {temperature: 0.7, store: false, stop: null, seed: null}\n",
        ),
        (
            "llms/provider/openai/openai-gpt4.yaml",
            "model_type: openai\nmodel_name: gpt-4\napi_key: \"${OPENAI_API_KEY}\"\nparameters: {top_k: 3, stop_sequences: null, temprature: 0.5}\napi_formats: {chat_completion: {endpoint: /chat/completions}}\n",
        ),
        (
            "llms/provider/human_relay/common.yaml",
            "model_type: human_relay\nbase_url: null\nparameters: {frontend_timeout: 300}\nhuman_relay_config: {prompt_template: x}\n",
        ),
        (
            "llms/provider/human_relay/human-relay-s.yaml",
            "inherits_from: \"../common.yaml\"\nmodel_name: human-relay-s\n",
        ),
        (
            "llms/groups/_task_groups.yaml",
            "task_groups:\n  g: {file: groups/g.yaml, enabled: true}\n  gone: {file: groups/gone.yaml, enabled: true}\npolling_pools:\n  p: {file: polling_pools/p.yaml, enabled: true}\n",
        ),
        (
            "llms/groups/g.yaml",
            "name: g\necheLon9: {models: [x]}\nechelon1: {models: [openai-gpt4, openai-gpt4-turbo], priority: 1}\nechelon2: {models: [human-relay-s], priority: 2}\nfallback_config: {strategy: echelon_down, fallback_groups: [g.echelon2], retry_delay: 1.0}\n",
        ),
        ("llms/polling_pools/p.yaml", "task_groups: [g]\nrotation_strategy: round_robin\n"),
    ])
}

#[test]
fn original_yaml_layout_loads_as_it_is() {
    let dir = original_tree();
    let cfg = load_dir_with_env(&dir, &test_env).expect("loads");
    let warned = |key: &str, text: &str| cfg.load_warnings.iter().any(|w| w.key == key && w.message.contains(text));
    // Keys the engine does not know: warnings with "did you mean".
    assert!(warned("function_calling_supported", "unknown key `function_calling_supported`: ignored"));
    assert!(warned("api_formats", "did you mean `api_format`?"));
    assert!(warned("echeLon9", "did you mean"));
    // The human_relay provider is skipped with a warning; the model it defined is left out
    // of its echelon and the warning says why.
    assert!(warned("model_type", "which the engine cannot call"));
    assert!(!cfg.providers.contains_key("human_relay") && !cfg.models.contains_key("human-relay-s"));
    assert!(warned("echelon2.models[0]", "its provider `human_relay` is of type `human_relay`"));
    assert_eq!(cfg.uncallable_models["human-relay-s"], "its provider `human_relay` is of type `human_relay`, which the engine cannot call");
    assert!(warned("inherits_from", "names no file"));
    // A model no provider defines stays in the echelon's list (the engine names it when a call
    // finds the echelon empty) and is reported.
    let g = &cfg.groups["g"];
    assert_eq!(g.echelon("echelon1").expect("e1").models, ["openai-gpt4", "openai-gpt4-turbo"]);
    assert!(warned("echelon1.models[1]", "no provider file defines it"));
    // A registered file that is missing is skipped, as the original did.
    assert!(warned("task_groups.gone.file", "is skipped"));
    // retry_delay: loaded as 0, with a note.
    assert_eq!(g.effective_fallback().retry_delay, Duration::ZERO);
    assert!(warned("fallback_config.retry_delay", "loaded as 0"));
    // Parameters: nulls dropped, provider-native passed through, typo-like passed through
    // with a warning.
    let p = &cfg.models["openai-gpt4"].parameters;
    assert_eq!(p.extra.get("top_k"), Some(&json!(3)));
    assert_eq!(p.extra.get("store"), Some(&json!(false)));
    assert_eq!(p.extra.get("temprature"), Some(&json!(0.5)));
    assert!(!p.extra.contains_key("stop_sequences") && !p.extra.contains_key("seed"));
    assert!(warned("parameters.temprature", "passed to the provider unchanged"));
    // What the user must still define after `echelon convert`.
    let todo = convert_todo(&cfg);
    assert_eq!(todo.len(), 3, "{todo:#?}");
    assert!(todo.iter().any(|t| t.contains("`openai-gpt4-turbo` (used by g.echelon1)")));
    assert!(todo.iter().any(|t| t.contains("`human-relay-s` (used by g.echelon2)")));
    assert!(todo.iter().any(|t| t.contains("parameter `temprature` of model `openai-gpt4`")));
    // Wrong types stay errors.
    std::fs::write(dir.join("llms/groups/g.yaml"), "echelon1: {models: [openai-gpt4], priority: high}\n").expect("write");
    let err = load_dir_with_env(&dir, &test_env).expect_err("a wrong type");
    assert_eq!(issue_at(&err.issues, "echelon1.priority").message, "expected integer, found string");
}

#[test]
fn toml_layout_stays_strict_but_takes_provider_native_parameters() {
    let dir = temp_tree(&[
        ("llms/provider/mock/common.toml", "type = \"openai_compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\nfunction_calling_supported = true\n"),
        ("llms/provider/mock/m.toml", "model = \"m\"\n[parameters]\ntop_k = 3\nstop_sequences = [\"END\"]\nstore = false\n"),
        ("llms/groups/g.toml", "[echelon1]\nmodels = [\"m\", \"undefined-model\"]\n[fallback_config]\nretry_delay = 1.5\n"),
    ]);
    let err = load_dir_with_env(&dir, &test_env).expect_err("strict");
    assert_eq!(issue_at(&err.issues, "function_calling_supported").message, "unknown key `function_calling_supported`");
    assert!(issue_at(&err.issues, "echelon1.models[1]").message.starts_with("unknown model `undefined-model`"));
    std::fs::write(dir.join("llms/provider/mock/common.toml"), "type = \"openai_compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\n").expect("w");
    std::fs::write(dir.join("llms/groups/g.toml"), "[echelon1]\nmodels = [\"m\"]\n[fallback_config]\nretry_delay = 1.5\n").expect("w");
    let cfg = load_dir_with_env(&dir, &test_env).expect("valid");
    let p = &cfg.models["m"].parameters;
    assert_eq!((p.extra["top_k"].clone(), p.extra["stop_sequences"].clone(), p.extra["store"].clone()), (json!(3), json!(["END"]), json!(false)));
    assert_eq!(cfg.groups["g"].effective_fallback().retry_delay, Duration::from_millis(1500));
    assert!(cfg.load_warnings.is_empty(), "{:?}", cfg.load_warnings);
}

#[test]
fn dict_tree_marked_original_is_read_like_the_yaml_files() {
    let mut v = base();
    set(&mut v, &["providers", "mock", "common", "supports_caching"], json!(true));
    set(&mut v, &["groups", "slow", "echelon1", "models"], json!(["nowhere-model"]));
    let list = issues(v.clone());
    assert_eq!(issue_at(&list, "providers.mock.common.supports_caching").message, "unknown key `supports_caching`");
    v["layout"] = json!("original");
    let cfg = load_json(v.clone()).expect("lenient");
    assert!(cfg.load_warnings.iter().any(|w| w.key == "providers.mock.common.supports_caching"));
    assert!(cfg.load_warnings.iter().any(|w| w.message.contains("model `nowhere-model` of group `slow`")));
    v["layout"] = json!("yaml");
    assert!(issue_at(&issues(v), "layout").message.starts_with("invalid value"));
}
