//! The connection to Redis: one multiplexed command connection and one pub/sub connection,
//! watched by a supervisor task that reconnects with backoff, beats the process's heartbeat,
//! and tells the store when the server goes out of reach and when it is back.
//!
//! No call waits on Redis: every command runs in a task, bounded by the configured timeout;
//! a command that fails or times out marks the link down at once, and from then on nothing is
//! sent until the supervisor has reconnected (each limit uses its local share meanwhile).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, ScriptInvocation};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::config::StateConfig;
use crate::observe::events::{EventBus, EventKind};
use crate::secret::{redact, Secret};

/// Longest pause between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First pause after a failed attempt (doubled each time, with jitter).
const BACKOFF_BASE: Duration = Duration::from_millis(100);

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// What went wrong talking to Redis, in words safe to log (the password is masked).
#[derive(Clone, Debug)]
pub struct LinkError(pub String);

/// The connection side of the Redis store.
pub struct Link {
    pub(crate) cfg: StateConfig,
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// [`UNKNOWN`] until the first connection attempt ends, then [`UP`] or [`DOWN`].
    state: AtomicU8,
    /// This process's id in the registry and in slot leases: host, pid and a random part.
    pub(crate) proc_id: String,
    /// `<key_prefix>:v<VERSION>`: the start of every key.
    pub(crate) prefix: String,
    /// The pub/sub channel of state changes.
    pub(crate) channel: String,
    pub(crate) rt: Handle,
    events: Arc<EventBus>,
    /// Processes seen alive at the last heartbeat (at least 1).
    live: AtomicU32,
    /// Commands sent, for "Redis operations per request".
    ops: AtomicU64,
    /// Wakes the supervisor (a command failed: reconnect now).
    pub(crate) kick: Notify,
    /// The password, for masking error messages.
    password: Secret,
    /// Set when the store is dropped: background tasks end.
    pub(crate) closed: AtomicBool,
    /// Why the link went down last (for the event when it comes back).
    down_reason: Mutex<String>,
}

impl Link {
    /// A link that is not connected yet (the supervisor connects it).
    pub fn new(cfg: &StateConfig, rt: Handle, events: Arc<EventBus>) -> Result<Link, LinkError> {
        let url = cfg.url.expose().unwrap_or_default().to_string();
        let password = super::url_password(&url).map(Secret::new).unwrap_or_default();
        let client = match &cfg.tls_ca_pem {
            Some(pem) => redis::Client::build_with_tls(url.as_str(), redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) }),
            None => redis::Client::open(url.as_str()),
        }
        .map_err(|e| LinkError(format!("invalid Redis URL {}: {}", cfg.masked_url(), redact(&e.to_string(), &[&password]))))?;
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".to_string());
        let proc_id = format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>());
        let prefix = format!("{}:v{}", cfg.key_prefix, super::scripts::VERSION);
        Ok(Link {
            cfg: cfg.clone(),
            client,
            conn: ArcSwapOption::empty(),
            state: AtomicU8::new(UNKNOWN),
            proc_id,
            channel: format!("{prefix}:events"),
            prefix,
            rt,
            events,
            live: AtomicU32::new(1),
            ops: AtomicU64::new(0),
            kick: Notify::new(),
            password,
            closed: AtomicBool::new(false),
            down_reason: Mutex::new("not connected yet".to_string()),
        })
    }

    /// Whether commands can be sent now.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Whether the first connection attempt has ended (up or down): before it, limits hold
    /// callers rather than guess a share.
    pub fn is_known(&self) -> bool {
        self.state.load(Ordering::Acquire) != UNKNOWN
    }

    /// Whether a command connection is in place (it may be about to fail).
    pub(crate) fn connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Commands sent so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Processes seen alive at the last heartbeat.
    pub fn live_processes(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    pub(crate) fn set_live(&self, n: u32) {
        self.live.store(n.max(1), Ordering::Relaxed);
    }

    /// The share of a limit this process uses on its own while Redis is out of reach.
    pub fn local_share(&self) -> f64 {
        self.cfg.local_share.unwrap_or_else(|| 1.0 / self.live_processes() as f64)
    }

    /// A key of this deployment: `{<prefix>:<kind>:<name>}` (braces in `name` replaced, so
    /// the hash tag stays whole).
    pub fn key(&self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| match c {
                '{' => '(',
                '}' => ')',
                c => c,
            })
            .collect();
        format!("{{{}:{kind}:{clean}}}", self.prefix)
    }

    fn mask(&self, e: &redis::RedisError) -> String {
        redact(&e.to_string(), &[&self.password])
    }

    /// Run one script, bounded by the configured timeout. Nothing is sent while the link is
    /// down; a failure or timeout takes it down.
    pub async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, LinkError> {
        let Some(conn) = self.conn.load_full() else {
            return Err(LinkError("Redis is not connected".into()));
        };
        let mut c = (*conn).clone();
        self.ops.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || e.is_unrecoverable_error() => {
                let why = self.mask(&e);
                self.fail(&why);
                Err(LinkError(why))
            }
            Ok(Err(e)) => {
                // A script error is a bug here, not an outage: say so, keep the link.
                let why = self.mask(&e);
                log::error!("redis state: script error: {why}");
                Err(LinkError(why))
            }
            Err(_) => {
                let why = format!("no answer within {:?}", self.cfg.timeout);
                self.fail(&why);
                Err(LinkError(why))
            }
        }
    }

    /// The connection broke or answered too late: stop using it, tell the store (through the
    /// supervisor) and reconnect.
    pub fn fail(&self, why: &str) {
        if self.conn.swap(None).is_some() {
            self.set_up(false, why);
            self.kick.notify_one();
        }
    }

    /// Connect (command and pub/sub connections), bounded by `connect_timeout`.
    pub(crate) async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), LinkError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.connect_timeout))
            .set_response_timeout(Some(self.cfg.timeout.max(Duration::from_millis(1))));
        let both = async {
            let c = self.client.get_multiplexed_async_connection_with_config(&cfg).await?;
            let mut ps = self.client.get_async_pubsub().await?;
            ps.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>((c, ps))
        };
        match tokio::time::timeout(self.cfg.connect_timeout + self.cfg.timeout, both).await {
            Ok(Ok(x)) => Ok(x),
            Ok(Err(e)) => Err(LinkError(self.mask(&e))),
            Err(_) => Err(LinkError(format!("no connection within {:?}", self.cfg.connect_timeout))),
        }
    }

    /// Start using a fresh connection.
    pub(crate) fn install(&self, c: MultiplexedConnection) {
        self.conn.store(Some(Arc::new(c)));
    }

    /// Record the link as usable (`true`) or not, with an event and a log record on change.
    pub(crate) fn set_up(&self, up: bool, detail: &str) {
        let to = if up { UP } else { DOWN };
        if self.state.swap(to, Ordering::AcqRel) == to {
            return;
        }
        let url = self.cfg.masked_url();
        if up {
            *self.down_reason.lock() = String::new();
            log::info!("redis state: connected to {url} ({detail}); limits, breakers and cooldowns are shared again");
        } else {
            *self.down_reason.lock() = detail.to_string();
            log::warn!(
                "redis state: {url} is out of reach ({detail}); each process now uses its own share of every limit ({:.3}) until it is back",
                self.local_share()
            );
        }
        let state = if up { "up" } else { "down" };
        self.events.publish(EventKind::StateBackend { backend: "redis".into(), state, detail: detail.to_string() });
    }

    /// The pause before reconnection attempt `n` (0-based): doubling from 100 ms up to 5 s,
    /// with full jitter over its upper half so processes do not reconnect in lockstep.
    pub(crate) fn backoff(n: u32) -> Duration {
        let d = BACKOFF_BASE.saturating_mul(1u32 << n.min(10)).min(BACKOFF_MAX);
        d / 2 + d.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Publish an event about the shared state (remote breaker changes).
    pub(crate) fn events(&self) -> &Arc<EventBus> {
        &self.events
    }
}
