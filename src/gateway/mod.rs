//! The HTTP gateway (`echelon serve`, `Router.serve`): OpenAI- and Anthropic-compatible
//! endpoints in front of a [`Router`], served from the Rust core with no Python on the request
//! path, so remote callers share the pools, groups, breakers and budgets of embedded ones.
//!
//! # Endpoints
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI chat completions, streaming (SSE, `data: [DONE]`) and not |
//! | `POST /v1/messages` | Anthropic Messages, streaming (typed events) and not |
//! | `GET /v1/models` | the routes (groups, `group.echelon`s, pools, wrappers, models) a key may use, in a shape both SDKs read |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once every group and pool has an instance that is not failed; 503 with the ones that have none, or while draining |
//! | `GET /metrics` | Prometheus text: the series of `Router.metrics()` plus `echelon_gateway_*` |
//! | `GET /status` | a page that follows every pool and group live (breakers, in-flight, queues, p50/p99, recent events); it reads `GET /status.json` and loads nothing from elsewhere |
//!
//! The request's `model` names the route, resolved by [`crate::config::resolve_route`]: an
//! explicit route string (`pool:p`, `group:g.e`, `direct:openai:gpt-4o`, …), else a group,
//! `group.echelon`, pool, wrapper, logical model, or `provider:model`, in that order; a name
//! that resolves nowhere is a 404 with a "did you mean". A `x-echelon-timeout` header (seconds)
//! sets the call's deadline.
//!
//! The API endpoints need a key once `[[gateway.keys]]` exist; the health, metrics and status
//! endpoints never do (they show no secret, only the names of routes and instances).
//!
//! Every answer carries `x-request-id` and `request-id`, and answers to calls carry
//! `x-echelon-instance` (the instance that served, or the last one tried) and
//! `x-echelon-attempts` (attempts made). Errors come in the caller's API shape with the status
//! of [`errors`]; a stream that fails after its first token ends with that API's error event.
//!
//! # Safety and lifecycle
//!
//! Loopback is the default address, and a non-loopback one is refused while no
//! `[[gateway.keys]]` exist unless `allow_unauthenticated` says so. Bodies over
//! `max_body_bytes` get 413; a client has `header_timeout` to send its headers; a connection
//! with nothing in flight and no bytes moving for `idle_timeout` is closed; past
//! `max_connections` a new connection is answered 503 and closed. A drain (SIGTERM or SIGINT
//! with signals on, [`Gateway::drain`], `close()` from Python) stops accepting, lets requests
//! and streams finish for `drain_grace`, then ends the streams still open with an error event
//! and the calls still waiting with a 503. SIGHUP, or a change to a file of the configuration
//! directory when watching, reloads: in-flight calls finish on the engine they started on, and
//! a configuration that does not load is logged and rejected while the old one keeps serving.

pub mod anthropic;
mod body;
pub mod errors;
mod handler;
pub mod keys;
pub mod openai;
mod reload;
mod server;
mod status;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::router::Router;
use crate::error::ConfigError;
use crate::observe::events::Event;
use crate::types::ChatRequest;

/// A request body read in either API shape.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The `model` field: the route name.
    pub model: String,
    /// The provider-neutral request.
    pub request: ChatRequest,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// OpenAI `stream_options.include_usage` (Anthropic streams always carry usage).
    pub include_usage: bool,
}

/// Port used when neither the caller nor `[gateway]` names one.
pub const DEFAULT_PORT: u16 = 8080;

/// How to start a [`Gateway`]. `None` fields take the `[gateway]` settings of the router's
/// configuration, then the defaults.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Address to bind (an IP, or `localhost`); default `127.0.0.1`.
    pub host: Option<String>,
    /// Port to bind (0 picks a free one); default [`DEFAULT_PORT`].
    pub port: Option<u16>,
    /// Bind a non-loopback address although no key is configured.
    pub allow_unauthenticated: Option<bool>,
    /// Reload when a file of the configuration directory changes (only for a router loaded
    /// from a directory). `None` follows `[gateway] watch` of the configuration running, which
    /// a reload may change.
    pub watch: Option<bool>,
    /// Handle SIGTERM/SIGINT (drain) and SIGHUP (reload). For a process that is the gateway
    /// (`echelon serve`), not for one embedding it.
    pub signals: bool,
}

/// Why a gateway did not start.
#[derive(Debug)]
pub enum ServeError {
    /// The host is not an IP address (or `localhost`).
    BadHost(String),
    /// A non-loopback address without keys, not explicitly allowed.
    Refused(String),
    /// The address could not be bound.
    Bind(SocketAddr, std::io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::BadHost(h) => write!(f, "gateway host {h:?} is not an IP address (or \"localhost\")"),
            ServeError::Refused(m) => f.write_str(m),
            ServeError::Bind(a, e) => write!(f, "gateway could not listen on {a}: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Counters of the gateway itself (`echelon_gateway_*` in `/metrics`, and `/status.json`).
#[derive(Default)]
pub(crate) struct GatewayStats {
    /// Answers by (API, status).
    pub responses: Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    /// Calls (and streams) not finished yet.
    pub in_flight: AtomicUsize,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections refused at the cap.
    pub refused_connections: AtomicU64,
    /// Successful reloads, and the message of the last rejected one.
    pub reloads: AtomicU64,
    pub last_reload_error: Mutex<Option<String>>,
}

/// Events kept for the status page.
const RECENT_EVENTS: usize = 200;

/// What every connection and request of one gateway shares.
pub(crate) struct Shared {
    pub router: Arc<Router>,
    /// The configuration directory, when the router was loaded from one (reloads read it).
    pub root: Option<PathBuf>,
    pub addr: SocketAddr,
    pub started: Instant,
    pub budgets: keys::Budgets,
    pub stats: GatewayStats,
    pub recent: Mutex<VecDeque<Arc<Event>>>,
    pub draining: AtomicBool,
    /// Cancelled when a drain begins: stop accepting, finish what is in flight.
    pub stop_accept: CancellationToken,
    /// Cancelled when the drain's grace is over: end open streams and waiting calls now.
    pub hard_stop: CancellationToken,
    /// Cancelled once the listening socket is closed (the port is free).
    pub unbound: CancellationToken,
    /// Cancelled once every connection is gone.
    pub closed: CancellationToken,
    /// The grace of the drain under way (`None`: the configured one).
    pub grace: Mutex<Option<Duration>>,
    /// The configuration directory as it was when last (re)loaded, for the watcher.
    pub loaded: Mutex<Option<reload::Fingerprint>>,
    next_id: AtomicU64,
    id_salt: u32,
}

impl Shared {
    /// The configuration the current engine runs.
    pub fn config(&self) -> Arc<Config> {
        self.router.engine().config.clone()
    }

    /// A fresh request id (unique per gateway, unguessable across restarts).
    pub fn request_id(&self) -> String {
        format!("req_{:08x}{:08x}", self.id_salt, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Start draining with `grace` (or the configured one); idempotent.
    pub fn drain(&self, grace: Option<Duration>) {
        if self.draining.swap(true, Ordering::SeqCst) {
            if grace.is_some_and(|g| g.is_zero()) {
                self.hard_stop.cancel();
            }
            return;
        }
        *self.grace.lock() = grace;
        log::info!("gateway on http://{}: draining (no new connections; in-flight requests may finish)", self.addr);
        self.stop_accept.cancel();
    }
}

/// A running gateway. Dropping it drains it (with the configured grace) in the background.
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("addr", &self.shared.addr).finish()
    }
}

fn parse_host(host: &str) -> Result<IpAddr, ServeError> {
    if host == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse::<IpAddr>().map_err(|_| ServeError::BadHost(host.to_string()))
}

impl Gateway {
    /// Bind and start serving `router` on the current tokio runtime.
    ///
    /// # Errors
    /// [`ServeError`]: a host that is not an address, a non-loopback address without keys (not
    /// allowed explicitly), or a bind failure.
    pub async fn start(router: Arc<Router>, opts: ServeOptions) -> Result<Gateway, ServeError> {
        let cfg = router.engine().config.clone();
        let gw = &cfg.global.gateway;
        let host = opts.host.clone().or_else(|| gw.host.clone()).unwrap_or_else(|| "127.0.0.1".to_string());
        let ip = parse_host(&host)?;
        let port = opts.port.or(gw.port).unwrap_or(DEFAULT_PORT);
        let allow = opts.allow_unauthenticated.unwrap_or(gw.allow_unauthenticated);
        if !ip.is_loopback() && gw.keys.is_empty() && !allow {
            return Err(ServeError::Refused(format!(
                "refusing to serve {ip} (not a loopback address) without [[gateway.keys]]: anyone who can reach it could spend your provider keys; add keys, or set `allow_unauthenticated = true` in [gateway] (--allow-unauthenticated) if something else in front authenticates"
            )));
        }
        let addr = SocketAddr::new(ip, port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Bind(addr, e))?;
        let addr = listener.local_addr().map_err(|e| ServeError::Bind(addr, e))?;
        let shared = Arc::new(Shared {
            router: router.clone(),
            root: cfg.root.clone(),
            addr,
            started: Instant::now(),
            budgets: keys::Budgets::default(),
            stats: GatewayStats::default(),
            recent: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
            stop_accept: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            unbound: CancellationToken::new(),
            closed: CancellationToken::new(),
            grace: Mutex::new(None),
            loaded: Mutex::new(None),
            next_id: AtomicU64::new(1),
            id_salt: rand::random(),
        });
        tokio::spawn(server::accept_loop(listener, shared.clone()));
        tokio::spawn(status::collect_events(shared.clone()));
        let watch = opts.watch.unwrap_or(gw.watch) && shared.root.is_some();
        if shared.root.is_some() && opts.watch != Some(false) {
            tokio::spawn(reload::watch(shared.clone(), opts.watch));
        }
        if opts.signals {
            reload::handle_signals(shared.clone());
        }
        log::info!(
            "gateway listening on http://{addr} ({} keys{}{})",
            gw.keys.len(),
            if watch { ", reloading on config changes" } else { "" },
            if opts.signals { ", SIGTERM drains, SIGHUP reloads" } else { "" }
        );
        Ok(Gateway { shared })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Begin draining: stop accepting at once, let in-flight requests and streams finish for
    /// `grace` (default: `[gateway] drain_grace`), then end the rest. Returns at once; await
    /// [`Gateway::closed`] for the end. A zero grace on a drain already under way ends it now.
    pub fn drain(&self, grace: Option<Duration>) {
        self.shared.drain(grace);
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the listening socket is closed (soon after a drain begins).
    pub async fn unbound(&self) {
        self.shared.unbound.cancelled().await;
    }

    /// Resolves once the gateway has stopped (drained, every connection gone).
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    /// A future for [`Gateway::closed`] that does not borrow the gateway.
    pub fn closed_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.closed.clone().cancelled_owned()
    }

    /// Reload the configuration from its directory now (what SIGHUP does). `Ok(false)` when
    /// the router was not loaded from a directory. Blocking (reads files).
    ///
    /// # Errors
    /// The configuration error; the old configuration keeps serving.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        reload::reload_now(&self.shared)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shared.drain(None);
    }
}

#[cfg(test)]
mod tests;
