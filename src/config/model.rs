//! The resolved configuration model: what the engine consumes after loading and validation.
//!
//! Loaders (TOML directory, original YAML layout, Python dicts) all produce a [`Config`]; the
//! engine never sees raw files. Every field has the default the original system documented,
//! so a minimal file works and an explicit value always wins.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::secret::Secret;
use crate::types::Params;

/// Wire protocol of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI chat completions at `https://api.openai.com/v1` (or a given base_url).
    #[serde(rename = "openai")]
    OpenAi,
    /// Any host speaking the OpenAI chat-completions protocol at its own base_url.
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible,
    /// Anthropic messages API.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
}

impl ProviderKind {
    /// Parse the config spelling (`openai`, `openai_compatible`, `anthropic`, `gemini`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "openai_compatible" | "openai-compatible" | "siliconflow" | "mock" => Some(Self::OpenAiCompatible),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            _ => None,
        }
    }
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai_compatible",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }
}

/// Per-call timeouts. `None` disables that timeout.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "ser_opt_secs")]
    pub connect: Option<Duration>,
    /// Time to first token (streaming) or to response headers (non-streaming).
    #[serde(serialize_with = "ser_opt_secs")]
    pub first_token: Option<Duration>,
    /// Whole request.
    #[serde(serialize_with = "ser_opt_secs")]
    pub total: Option<Duration>,
    /// Silence between two stream chunks.
    #[serde(serialize_with = "ser_opt_secs")]
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Some(Duration::from_secs(10)),
            first_token: Some(Duration::from_secs(30)),
            total: Some(Duration::from_secs(120)),
            idle: Some(Duration::from_secs(30)),
        }
    }
}

/// Retry settings for one target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RetryConfig {
    /// Extra tries on the same target after the first one (0 = no retry).
    pub max_retries: u32,
    #[serde(serialize_with = "ser_secs")]
    pub base_delay: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_retries: 2, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

/// How an active health check probes an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeMode {
    /// GET the provider's model-list endpoint (costs no tokens). Default.
    Models,
    /// HEAD the base URL (costs no tokens).
    Head,
    /// A 1-token completion (costs tokens; the most faithful).
    Completion,
}

/// Which HTTP version the client speaks to a provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum HttpVersion {
    /// HTTP/1.1 only, one connection per in-flight request (what the official SDKs do).
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2 where the provider offers it over TLS (ALPN), HTTP/1.1 elsewhere (plain
    /// `http://`, or a server that picks HTTP/1.1). The default: OpenAI, Anthropic and Gemini
    /// all offer HTTP/2, which needs a fraction of the memory and connections per in-flight
    /// request.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// HTTP/2 only (prior knowledge; h2c on plain `http://`). Requests to an origin share its
    /// connections; another opens when every open one is at the provider's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, up to `http2_max_connections`.
    #[serde(rename = "2")]
    Http2,
}

impl HttpVersion {
    /// The config spelling (`"1.1"`, `"auto"`, `"2"`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http1 => "1.1",
            HttpVersion::Auto => "auto",
            HttpVersion::Http2 => "2",
        }
    }
}

/// What happens to a request parameter the model's provider has no counterpart for
/// (`unsupported_params = "drop" | "error"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedParams {
    /// Leave it out of the request, with one log record per model and parameter (the default).
    #[default]
    Drop,
    /// Refuse the call with a `BadRequest` naming the parameter and the model, before anything
    /// is sent.
    Error,
}

impl UnsupportedParams {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UnsupportedParams::Drop => "drop",
            UnsupportedParams::Error => "error",
        }
    }
}

/// One logical model: a provider endpoint plus a wire model and its defaults.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    /// Logical name used in groups (`"openai-gpt4o"`, or `"openai:gpt-4o"` for a direct ref).
    pub name: String,
    /// Provider directory name (`"openai"`, `"mock"`, …).
    pub provider: String,
    pub kind: ProviderKind,
    pub base_url: String,
    #[serde(serialize_with = "ser_secret")]
    pub api_key: Secret,
    /// Model name sent on the wire.
    pub model: String,
    pub headers: BTreeMap<String, String>,
    /// Default generation parameters (group/echelon and caller values override them).
    pub parameters: Params,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    /// Requests per minute for this model across every instance that uses it (0 = unlimited).
    pub rpm: u32,
    /// Tokens per minute, shared the same way (0 = unlimited).
    pub tpm: u32,
    /// In-flight requests for this model across all its instances (0 = unlimited).
    pub max_concurrency: u32,
    /// Context window in tokens (0 = unknown).
    pub context_window: u32,
    /// Static weight for the weighted strategy.
    pub weight: f64,
    /// Minimum cooldown after a 429 (the Retry-After hint is used when longer).
    #[serde(serialize_with = "ser_secs")]
    pub rate_limit_cooldown: Duration,
    /// How long an exhausted quota or a billing error takes the instance out (a longer
    /// Retry-After wins): such errors do not clear in seconds, and every call sent meanwhile
    /// would fail the same way.
    #[serde(serialize_with = "ser_secs")]
    pub quota_cooldown: Duration,
    /// `anthropic-version` header value (Anthropic only).
    pub api_version: Option<String>,
    pub probe: ProbeMode,
    /// HTTP version spoken to the provider (`http_version = "1.1" | "auto" | "2"`).
    pub http_version: HttpVersion,
    /// HTTP/2 connections open to one origin at most (`http2_max_connections`); beyond
    /// `this × the provider's stream limit`, requests wait for a free stream.
    pub http2_max_connections: u32,
    /// How long a connection without requests stays open (`connection_idle_timeout`, both
    /// HTTP versions).
    #[serde(serialize_with = "ser_secs")]
    pub connection_idle_timeout: Duration,
    /// Parameters the provider cannot take: dropped (default) or refused.
    pub unsupported_params: UnsupportedParams,
    /// Where this model was defined.
    pub source: Option<PathBuf>,
}

/// Default of [`ModelConfig::http2_max_connections`].
pub const DEFAULT_HTTP2_MAX_CONNECTIONS: u32 = 256;

/// `quota_cooldown` when not set: an exhausted quota or billing error takes the instance out
/// for ten minutes (a longer Retry-After wins).
pub const DEFAULT_QUOTA_COOLDOWN: Duration = Duration::from_secs(600);
/// Default of [`ModelConfig::connection_idle_timeout`].
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Durations serialize as float seconds (the unit every config file uses).
fn ser_secs<S: serde::Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser.serialize_some(&d.as_secs_f64()),
        None => ser.serialize_none(),
    }
}

fn ser_secret<S: serde::Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&s.describe())
}

/// Circuit breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before admitting probes (`reset_timeout` is an alias).
    #[serde(serialize_with = "ser_secs")]
    pub recovery_time: Duration,
    /// Probes admitted at once in half-open; that many successes close it.
    pub half_open_requests: u32,
    /// Optional: open when the failure ratio over `window` reaches this (with `min_requests`).
    pub failure_ratio: Option<f64>,
    #[serde(serialize_with = "ser_secs")]
    pub window: Duration,
    pub min_requests: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_time: Duration::from_secs(60),
            half_open_requests: 1,
            failure_ratio: None,
            window: Duration::from_secs(60),
            min_requests: 10,
        }
    }
}

/// Fallback strategy of a task group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackStrategy {
    /// Next echelons by priority.
    EchelonDown,
    /// Other models of the same echelon first, then down.
    ModelRotate,
    /// A model of another provider in the same or next echelon first.
    ProviderFailover,
    /// The configured `fallback_groups`, in order.
    TaskGroupSwitch,
}

impl FallbackStrategy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "echelon_down" => Some(Self::EchelonDown),
            "model_rotate" => Some(Self::ModelRotate),
            "provider_failover" => Some(Self::ProviderFailover),
            "task_group_switch" => Some(Self::TaskGroupSwitch),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EchelonDown => "echelon_down",
            Self::ModelRotate => "model_rotate",
            Self::ProviderFailover => "provider_failover",
            Self::TaskGroupSwitch => "task_group_switch",
        }
    }
}

/// `[fallback_config]` of a task group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FallbackConfig {
    pub strategy: FallbackStrategy,
    /// Group references tried (in order) after this group's own echelons.
    pub fallback_groups: Vec<String>,
    /// Bounds the number of attempts of the whole chain (retries included).
    pub max_attempts: u32,
    /// Waited between two targets.
    #[serde(serialize_with = "ser_secs")]
    pub retry_delay: Duration,
    /// Per-target breaker override; `None` uses the group's `[circuit_breaker]`.
    pub circuit_breaker: Option<BreakerConfig>,
    /// Route around `ContentFiltered` instead of surfacing it (default false).
    pub on_content_filter: bool,
    /// Start the next target if the first has no first token after this long (streaming and not).
    #[serde(serialize_with = "ser_opt_secs")]
    pub hedge_after: Option<Duration>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            strategy: FallbackStrategy::EchelonDown,
            fallback_groups: Vec::new(),
            max_attempts: 3,
            retry_delay: Duration::ZERO,
            circuit_breaker: None,
            on_content_filter: false,
            hedge_after: None,
        }
    }
}

/// `thinking_config` of an echelon.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ThinkingConfig {
    pub enabled: bool,
    pub budget_tokens: u32,
}

/// One echelon (or task-name tier such as `translation`) of a group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EchelonConfig {
    /// `"echelon1"`, `"translation"`, …
    pub name: String,
    /// Model references: logical names or `provider:model`.
    pub models: Vec<String>,
    /// Lower is tried first; ties keep file order.
    pub priority: u32,
    /// Per-instance in-flight limit (0 = model default / unlimited).
    pub concurrency_limit: u32,
    /// Per-instance requests per minute (0 = unlimited).
    pub rpm_limit: u32,
    /// Per-attempt total timeout override.
    #[serde(serialize_with = "ser_opt_secs")]
    pub timeout: Option<Duration>,
    /// Retries on this echelon before falling back (overrides the model's retry setting).
    pub max_retries: Option<u32>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub function_calling: Option<String>,
    pub response_format: Option<String>,
    pub thinking_config: Option<ThinkingConfig>,
}

/// One task group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupConfig {
    pub name: String,
    pub description: String,
    /// In file order; use [`GroupConfig::echelons_by_priority`] for trial order.
    pub echelons: Vec<EchelonConfig>,
    pub fallback_strategy: FallbackStrategy,
    pub circuit_breaker: BreakerConfig,
    /// Present when the file had a `[fallback_config]` table.
    pub fallback: Option<FallbackConfig>,
    pub source: Option<PathBuf>,
}

impl GroupConfig {
    /// Echelons sorted by ascending priority, ties in file order.
    pub fn echelons_by_priority(&self) -> Vec<&EchelonConfig> {
        let mut v: Vec<&EchelonConfig> = self.echelons.iter().collect();
        v.sort_by_key(|e| e.priority);
        v
    }
    /// The echelon named `name`.
    pub fn echelon(&self, name: &str) -> Option<&EchelonConfig> {
        self.echelons.iter().find(|e| e.name == name)
    }
    /// The effective fallback settings (the `[fallback_config]` table, else defaults with the
    /// group's `fallback_strategy`).
    pub fn effective_fallback(&self) -> FallbackConfig {
        self.fallback.clone().unwrap_or_else(|| FallbackConfig { strategy: self.fallback_strategy, ..Default::default() })
    }
}

/// Pool rotation strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationStrategy {
    RoundRobin,
    LeastRecentlyUsed,
    Weighted,
    LeastBusy,
    Latency,
}

impl RotationStrategy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(Self::RoundRobin),
            "least_recently_used" => Some(Self::LeastRecentlyUsed),
            "weighted" => Some(Self::Weighted),
            "least_busy" => Some(Self::LeastBusy),
            "latency" => Some(Self::Latency),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastRecentlyUsed => "least_recently_used",
            Self::Weighted => "weighted",
            Self::LeastBusy => "least_busy",
            Self::Latency => "latency",
        }
    }
}

/// `[health_check]` of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    /// Consecutive failures (passive or active) that make an instance unhealthy.
    pub failure_threshold: u32,
    /// How long an unhealthy/failed instance rests before it is tried again (recovering).
    #[serde(serialize_with = "ser_secs")]
    pub recovery_time: Duration,
    pub probe: Option<ProbeMode>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self { enabled: true, interval: Duration::from_secs(30), failure_threshold: 3, recovery_time: Duration::from_secs(60), probe: None }
    }
}

/// Pool-level rate limiting algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum RateLimitConfig {
    /// `bucket_size` tokens, refilled at `refill_rate` per second; one token per request.
    TokenBucket { bucket_size: u32, refill_rate: f64 },
    /// At most `max_requests` in any `window_size`.
    SlidingWindow {
        #[serde(serialize_with = "ser_secs")]
        window_size: Duration,
        max_requests: u32,
    },
}

/// One polling pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolConfig {
    pub name: String,
    pub description: String,
    /// Group names or `group.echelon` references.
    pub task_groups: Vec<String>,
    pub rotation_strategy: RotationStrategy,
    pub health_check: HealthCheckConfig,
    /// Instances tried per call before the pool gives up.
    pub max_instance_attempts: u32,
    /// `None` when `[rate_limiting]` is absent or disabled.
    pub rate_limit: Option<RateLimitConfig>,
    /// Pool-wide in-flight limit (`performance.max_concurrent_requests` /
    /// `concurrency_control.max_concurrency`); 0 = unlimited.
    pub max_concurrent_requests: u32,
    /// Requests allowed to wait when everything is saturated.
    pub queue_size: u32,
    /// Default deadline of a call through this pool.
    #[serde(serialize_with = "ser_opt_secs")]
    pub request_timeout: Option<Duration>,
    pub source: Option<PathBuf>,
}

/// `global.toml`: defaults for the whole router.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GlobalConfig {
    pub fallback_enabled: bool,
    pub max_attempts: u32,
    #[serde(serialize_with = "ser_secs")]
    pub retry_delay: Duration,
    pub circuit_breaker: BreakerConfig,
    /// Default route when a call names nothing: `"pool:<name>"`, `"group:<ref>"`, `"direct:p:m"`.
    pub default_route: Option<String>,
    /// Default deadline for a whole call.
    #[serde(serialize_with = "ser_opt_secs")]
    pub request_timeout: Option<Duration>,
    pub rate_limit: Option<RateLimitConfig>,
    /// `[[alerts]]`: rules evaluated periodically over instance and pool snapshots.
    pub alerts: Vec<AlertRule>,
    /// How often alert rules are evaluated (`alert_interval`, default 0.2 s).
    #[serde(serialize_with = "ser_secs")]
    pub alert_interval: Duration,
    /// `[state]`: where breakers, limits and cooldowns live (this process, or Redis).
    pub state: StateConfig,
    /// `[gateway]`: how `echelon serve` listens, who may call it and with what budgets.
    pub gateway: GatewayConfig,
}

/// Where shared mutable state lives (`[state] backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// In this process only (the default).
    Memory,
    /// Shared by every process using the same Redis (or Valkey) and `key_prefix`.
    Redis,
}

impl StateBackend {
    /// The config spellings.
    pub const NAMES: [&'static str; 2] = ["memory", "redis"];

    /// `"memory"` or `"redis"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackend::Memory => "memory",
            StateBackend::Redis => "redis",
        }
    }
}

/// `[state]` of `global.toml`: where breakers, rate and concurrency budgets and cooldowns live.
///
/// With `backend = "redis"` every process that uses the same server and `key_prefix` shares
/// them (see `crate::state::redis`); statistics stay per process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS), `${VAR}` already
    /// expanded: a secret, because the password is part of it. Empty for the memory backend.
    #[serde(serialize_with = "ser_secret")]
    pub url: Secret,
    /// Keeps one deployment's keys apart from another's on the same server.
    pub key_prefix: String,
    /// Longest any call waits on one Redis command before carrying on with local state.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// Longest a (re)connection attempt may take.
    #[serde(serialize_with = "ser_secs")]
    pub connect_timeout: Duration,
    /// How long cluster concurrency slots are leased for (renewed while the process lives):
    /// a killed process's slots come back at most this long after it died.
    #[serde(serialize_with = "ser_secs")]
    pub lease_time: Duration,
    /// Share of every limit a process uses on its own while Redis is unreachable (`None`:
    /// one over the number of processes last seen alive).
    pub local_share: Option<f64>,
    /// `tls_ca_file`: a PEM file of the certificate authorities that a `rediss://` server's
    /// certificate is checked against instead of the system store (a private CA), as given.
    pub tls_ca_file: Option<String>,
    /// That file's contents, read and checked at load so a bad file is a config error and
    /// not a connection that never comes up.
    #[serde(skip)]
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            url: Secret::none(),
            key_prefix: "echelon".to_string(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            lease_time: Duration::from_secs(10),
            local_share: None,
            tls_ca_file: None,
            tls_ca_pem: None,
        }
    }
}

impl StateConfig {
    /// The URL with its password replaced by `***`, for `echelon check` and log records.
    pub fn masked_url(&self) -> String {
        match self.url.expose() {
            Some(u) => mask_url_password(u),
            None => "(none)".to_string(),
        }
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…` (a user name alone is kept).
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let (userinfo, host) = authority.split_at(at);
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    format!("{scheme}://{masked}{host}{tail}")
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            fallback_enabled: true,
            max_attempts: 3,
            retry_delay: Duration::ZERO,
            circuit_breaker: BreakerConfig::default(),
            default_route: None,
            request_timeout: None,
            rate_limit: None,
            alerts: Vec::new(),
            alert_interval: Duration::from_millis(200),
            state: StateConfig::default(),
            gateway: GatewayConfig::default(),
        }
    }
}

/// `[gateway]` of `global.toml`: the HTTP gateway (`echelon serve`, `Router.serve`).
///
/// Everything here but `host` and `port` follows a reload (keys, budgets, limits for new
/// connections); an address change needs a restart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayConfig {
    /// Address to bind when the caller names none (default `127.0.0.1`).
    pub host: Option<String>,
    /// Port to bind when the caller names none (default 8080).
    pub port: Option<u16>,
    /// Bind a non-loopback address although no key is configured (default false: refused).
    pub allow_unauthenticated: bool,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers.
    #[serde(serialize_with = "ser_secs")]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(serialize_with = "ser_secs")]
    pub idle_timeout: Duration,
    /// Open connections at once; one more is answered 503 and closed.
    pub max_connections: u32,
    /// How long a drain (SIGTERM, `close()`) lets in-flight requests and streams finish.
    #[serde(serialize_with = "ser_secs")]
    pub drain_grace: Duration,
    /// Reload when a file of the config directory changes (servers started from a directory).
    pub watch: bool,
    /// How often the config directory is looked at for changes.
    #[serde(serialize_with = "ser_secs")]
    pub watch_interval: Duration,
    /// `[[gateway.keys]]`: when any is configured, every API request must carry one.
    pub keys: Vec<GatewayKey>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            allow_unauthenticated: false,
            max_body_bytes: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            drain_grace: Duration::from_secs(30),
            watch: true,
            watch_interval: Duration::from_secs(1),
            keys: Vec::new(),
        }
    }
}

/// How a gateway key's secret is known: only its SHA-256 is kept once loaded.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySecret {
    /// `api_key = "${VAR}"`: the digest of the variable's value (`None` while it is unset, and
    /// then the key matches nothing).
    Env { var: String, digest: Option<[u8; 32]> },
    /// `api_key_sha256 = "<64 hex digits>"`: the digest as stored.
    Sha256([u8; 32]),
}

impl KeySecret {
    /// The digest a presented key must hash to, if known.
    pub fn digest(&self) -> Option<&[u8; 32]> {
        match self {
            KeySecret::Env { digest, .. } => digest.as_ref(),
            KeySecret::Sha256(d) => Some(d),
        }
    }

    /// Safe to print: the variable and whether it is set, or that a hash is stored.
    pub fn describe(&self) -> String {
        match self {
            KeySecret::Env { var, digest: Some(_) } => format!("${{{var}}} (set)"),
            KeySecret::Env { var, digest: None } => format!("${{{var}}} (unset)"),
            KeySecret::Sha256(_) => "sha256 (stored)".to_string(),
        }
    }
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Serialize for KeySecret {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&self.describe())
    }
}

/// One `[[gateway.keys]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayKey {
    /// Shown in logs, metrics and errors instead of the key.
    pub name: String,
    pub secret: KeySecret,
    /// Canonical routes this key may use (`group:g`, `pool:p`, `wrapper:w`, `model:m`, with a
    /// trailing `*` as a wildcard); empty = every route.
    pub routes: Vec<String>,
    /// Requests per minute for this key (0 = unlimited).
    pub rpm: u32,
    /// Tokens per minute for this key, estimated at admission and corrected to the real usage
    /// (0 = unlimited).
    pub tpm: u32,
    /// Where the key was defined (`keys[2]`), for error messages.
    #[serde(skip)]
    pub at: String,
}

/// What an alert rule measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Failed / total requests over `window` (needs `min_requests` in the window).
    ErrorRatio,
    /// 99th percentile latency (seconds) of successful calls in `window`.
    P99Latency,
    /// In-flight / concurrency limit, or queue length / queue size, whichever is fuller.
    Capacity,
    /// Seconds the longest-open breaker in scope has been open (fires after `for`).
    BreakerOpen,
}

impl AlertKind {
    /// The config spellings.
    pub const NAMES: [&'static str; 4] = ["error_ratio", "p99_latency", "capacity", "breaker_open"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "error_ratio" => Some(Self::ErrorRatio),
            "p99_latency" => Some(Self::P99Latency),
            "capacity" => Some(Self::Capacity),
            "breaker_open" => Some(Self::BreakerOpen),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// One `[[alerts]]` rule of `global.toml`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertRule {
    /// Rule name used in alert events (default `"<kind>:<scope>"`).
    pub name: String,
    pub kind: AlertKind,
    /// A pool, group or instance name (`pool:`/`group:`/`instance:` prefixes disambiguate);
    /// `None` = every instance of the router.
    pub scope: Option<String>,
    /// error_ratio and capacity: a fraction in (0, 1]; p99_latency: seconds; breaker_open: the
    /// `for` duration in seconds.
    pub threshold: f64,
    #[serde(serialize_with = "ser_secs")]
    pub window: Duration,
    pub min_requests: u32,
    /// Where the rule was defined (`alerts[2]`), for error messages.
    pub key: String,
}

/// What a named wrapper routes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WrapperKind {
    /// `target` is a pool name.
    PollingPool,
    /// `target` is a group reference (`group` or `group.echelon`).
    TaskGroup,
    /// `target` is a model reference (logical name or `provider:model`).
    Direct,
}

impl WrapperKind {
    /// The config spellings.
    pub const NAMES: [&'static str; 3] = ["polling_pool", "task_group", "direct"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "polling_pool" => Some(Self::PollingPool),
            "task_group" => Some(Self::TaskGroup),
            "direct" => Some(Self::Direct),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A named wrapper (`configs/llms/wrappers/<name>.toml` or the dict key `wrappers`): a target
/// plus call defaults. Values given by the caller win over these.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WrapperConfig {
    pub name: String,
    pub description: String,
    pub kind: WrapperKind,
    pub target: String,
    /// Generation parameters merged under the caller's.
    pub parameters: Params,
    /// Deadline of a whole call.
    #[serde(serialize_with = "ser_opt_secs")]
    pub timeout: Option<Duration>,
    pub fallback_groups: Option<Vec<String>>,
    pub max_instance_attempts: Option<u32>,
    pub source: Option<PathBuf>,
}

/// A provider's defaults (`provider/<name>/common.toml`), used to resolve `provider:model` refs.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    /// A model config holding the provider defaults; `name`/`model` are filled per reference.
    pub defaults: ModelConfig,
}

/// The whole resolved configuration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Config {
    /// Logical models by name.
    pub models: BTreeMap<String, ModelConfig>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub groups: BTreeMap<String, GroupConfig>,
    pub pools: BTreeMap<String, PoolConfig>,
    /// Named wrappers (`wrappers/<name>.toml`).
    pub wrappers: BTreeMap<String, WrapperConfig>,
    pub global: GlobalConfig,
    /// The directory the config was loaded from, if any.
    pub root: Option<PathBuf>,
    /// Non-fatal findings of the load (environment variables that were unset and replaced by
    /// ""). Added by the loader; [`crate::config::warnings`] reports these plus missing keys.
    #[serde(skip)]
    pub load_warnings: Vec<crate::error::ConfigIssue>,
    /// Models that provider files define but the engine cannot call (a `human_relay`
    /// provider of the original layout), with why: a call routed to one says so.
    #[serde(skip)]
    pub uncallable_models: BTreeMap<String, String>,
}

impl Config {
    /// Resolve a model reference: a logical model name, or `provider:model`. A `provider:model`
    /// reference uses the logical model of that provider with that wire model when one is
    /// configured (so its file's context window, limits etc. apply), else the provider defaults
    /// plus that wire model. `None` when it resolves nowhere.
    pub fn resolve_model(&self, reference: &str) -> Option<ModelConfig> {
        if let Some(m) = self.models.get(reference) {
            return Some(m.clone());
        }
        let (provider, wire) = reference.split_once(':')?;
        if let Some(m) = self.models.values().find(|m| m.provider == provider && m.model == wire) {
            let mut m = m.clone();
            m.name = reference.to_string();
            return Some(m);
        }
        let p = self.providers.get(provider)?;
        let mut m = p.defaults.clone();
        m.name = reference.to_string();
        m.model = wire.to_string();
        Some(m)
    }

    /// Split a group reference on the first dot: `"g.e.x"` → `("g", Some("e.x"))`.
    pub fn parse_group_reference(reference: &str) -> (&str, Option<&str>) {
        match reference.split_once('.') {
            Some((g, e)) => (g, Some(e)),
            None => (reference, None),
        }
    }
}
