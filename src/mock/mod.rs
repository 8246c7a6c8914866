//! The mock provider server: speaks the OpenAI, Anthropic and Gemini wire formats on loopback,
//! streaming and not, and misbehaves on demand (scripted per model). Used by the tests, the
//! demo and the benchmarks.
//!
//! # Routes
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI chat (model in body; `stream`, `stream_options.include_usage`); header `x-request-id` |
//! | `POST /v1/messages` | Anthropic messages (model in body; `stream`); header `request-id` |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini |
//! | `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` | Gemini streaming |
//! | `GET /v1/models`, `GET /v1beta/models`, `HEAD /` (`/v1`, `/v1beta`), `GET /health` | health probes, counted globally |
//! | `GET /v1/models/{m}`, `GET /v1beta/models/{m}` | health probes counted for model `m` |
//! | `POST /_mock/script` | install scripts: body `{model: script, ...}` |
//! | `GET /_mock/counters` | the counters as JSON (see [`MockServer::counters`]) |
//! | `GET /_mock/log` | when each chat request arrived, and for which model (see [`MockServer::request_log`]) |
//! | `POST /_mock/reset` | zero the counters; `?scripts=1` or body `{"scripts": true}` also drops the scripts |
//! | `POST /_mock/goaway` | GOAWAY on every open connection (see [`MockServer::goaway`]); answers `{"ok": true, "connections": n}` |
//! | `POST /_mock/h2` | body `{"max_concurrent_streams": n}`: the stream limit of HTTP/2 connections opened from now on |
//!
//! When started with `require_key`, chat requests and the model-list probes must carry that key
//! (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`), else they get the
//! provider's answer to a bad key (401; Gemini: 400 `API_KEY_INVALID`). `HEAD` probes,
//! `/health` and `/_mock/*` never need a key.
//!
//! # Validation
//!
//! Every chat request is checked against the request shape its provider documents (field lists
//! from the official SDKs' request types, kept in `validate.rs` apart from the clients' own) and
//! refused with that provider's 400 wording, before any scripted step is used (counted as the
//! fault `bad_request`):
//!
//! - OpenAI: only documented top-level keys ("Unrecognized request argument supplied"),
//!   `stream_options` only when streaming, message keys per role (no `extra_content` in tool
//!   calls), tool messages answering a preceding call, `response_format` shapes.
//! - Anthropic: only documented top-level keys (so no `temperature`/`top_p`/`top_k`: "Extra
//!   inputs are not permitted"), `max_tokens` required, block keys per type, every `tool_use`
//!   answered by a `tool_result` in the next message and no stray results, with `thinking` on the
//!   last tool-using assistant turn opening with its thinking block, structured-output schemas
//!   closed (`additionalProperties: false`), `metadata` only `user_id`.
//! - Gemini: only documented names ("Unknown name … Cannot find field", camelCase or
//!   snake_case), non-empty `parts` with one data field each, the function responses answering
//!   a model turn all in the next content and as many as its calls, `responseSchema` and function
//!   `parameters` in the OpenAPI subset (no `additionalProperties`, `$ref`, string enums only, no
//!   empty OBJECT parameters), and with `thought_signature` on, the first function call of each
//!   model step of the current turn carrying its `thoughtSignature`.
//!
//! # Content
//!
//! `"Hello from <model>. "` then deterministic filler words (some non-ASCII, e.g. "café") up to
//! exactly `content_chars` characters, streamed in `chunks` pieces split on char boundaries.
//! Usage: prompt tokens = characters of all message contents / 4 (at least 1); completion
//! tokens = words of the content (1 for a tool call).
//!
//! # Scripts (JSON)
//!
//! Scripts are keyed by model name; `"*"` applies to models without their own script, and
//! `"_health"` is the server-wide health script (probes that name no model). A script is a fault
//! name string (`"hang"`) or an object:
//!
//! ```json
//! {
//!   "latency_ms": 0,          "ttft_ms": 0,        "chunk_delay_ms": 0,
//!   "tokens_per_second": null, "content_chars": 200, "chunks": 8,  "tool_call": false,
//!   "thought_signature": false,
//!   "fault": "ok",            // plus the fault's knobs, see below (used when steps run out)
//!   "steps": [                // consumed in order, one request each, `times` times
//!     {"fault": "server_error", "status": 503, "times": 3},
//!     {"fault": "rate_limit", "retry_after": "1"},
//!     {"fault": "cut_after", "after": 2, "chunk_delay_ms": 5},
//!     "hang"
//!   ],
//!   "then": "ok",             // after the steps (default: the script's own `fault`)
//!   "max_prompt_tokens": 100, // longer prompts get the context-window error (no step used)
//!   "health": {"fault": "server_error", "status": 503}  // probes naming this model
//! }
//! ```
//!
//! Behaviour key `thought_signature` (Gemini): the first function call of a tool-call answer
//! carries a `thoughtSignature`, and requests whose current turn sends a function call back
//! without it are refused as Gemini 3 refuses them. Anthropic tool-call answers open with a
//! thinking block (with signature) whenever the request has `thinking` enabled.
//!
//! A step (and `then`) is a fault name or an object with `fault` plus knobs and any behaviour
//! key above as an override for that step. Faults and their knobs:
//!
//! - `ok`; `status` (`status` or `code` = the HTTP code, required); `rate_limit` (429);
//!   `server_error` (`status`, default 500); `down` (= server_error 503); `overloaded`
//!   (Anthropic 529 `overloaded_error`, others 503); `auth` (401; Gemini 400 `API_KEY_INVALID`);
//!   `context_window` (400, the provider's exact context-length error; Anthropic says "input
//!   length and `max_tokens` exceed context limit" when the prompt alone fits);
//!   `content_filter` (OpenAI/Anthropic 400, Gemini 200 with `promptFeedback.blockReason` and
//!   `finishReason` `"SAFETY"`); `quota` (OpenAI 429 `insufficient_quota`, Anthropic 402
//!   `billing_error`, Gemini 429 `RESOURCE_EXHAUSTED` with a daily `QuotaFailure`);
//!   `model_not_found` (404 in the provider's shape). Each error fault takes `body` (string sent
//!   as-is, or JSON) to replace the provider body, `content_type` for that body
//!   (`"text/event-stream"` plays it as a stream: with `{"fault": "status", "status": 200}` any
//!   response, streamed or not, can be fed through the mock), `retry_after` (header value,
//!   string or number), `retry_after_ms` and `retry_delay` (Gemini `RetryInfo.retryDelay` in the
//!   error details: `"12s"`, or a number of seconds).
//! - `refusal` (`after` = N, default 1): 200 and a refusal: OpenAI `message.refusal` (streamed
//!   as `delta.refusal`, no content), Anthropic N text chunks then `stop_reason: "refusal"`,
//!   Gemini N text chunks then `finishReason: "SAFETY"`.
//! - `hang`: read the request, never answer (until the client disconnects).
//! - `reset`: close the connection with a TCP RST, no answer. Over HTTP/2 every other stream on
//!   that connection ends with it, wherever it was (the connection reset mid-stream); their
//!   requests are not counted as client disconnects.
//! - `goaway`: answer normally, and send GOAWAY on the request's connection: the streams it
//!   accepted finish, new ones must go to another connection (HTTP/1.1: the connection closes
//!   after this response).
//! - `cut_after` (`after` = N): stream N content chunks then cut the connection without the
//!   terminal event; non-stream: announce the full Content-Length, send half, cut.
//!   Shorthand: `{"cut_after": 2}`.
//! - `stall_after` (`after` = N): like `cut_after` but go silent until the client disconnects.
//! - `malformed` (`after` = N): 200 with invalid JSON; streaming: N good chunks then one event
//!   whose data is invalid JSON, then the stream ends.
//! - `filter_after` (`after` = N): streaming: N content chunks, then the provider's ending for a
//!   response its content filter stopped (OpenAI `finish_reason: "content_filter"`, Anthropic
//!   `stop_reason: "refusal"`, Gemini `finishReason: "SAFETY"`); non-streaming: the
//!   `content_filter` refusal.
//!
//! Installing a script (even an identical one) restarts its steps for every model.
//!
//! # Counters
//!
//! [`MockServer::counters`] returns the totals at the top level and per model under `models`:
//! `requests`, `ok`, `faults` (`{name: n}`, including `bad_request` and `auth_rejected`),
//! `statuses` (`{"503": n}`), `streams_started`, `streams_completed`, `in_flight`,
//! `max_in_flight`, `client_disconnects` (the client went away before the mock finished:
//! during latency, a hang, a stall or a paced stream), `probes`; per model also `last_request`
//! `{body, headers}` (headers without any key); at the top level only, `http2_requests`
//! (requests that arrived over HTTP/2) and the connection counters: `connections` (accepted),
//! `open_connections` (now; never reset), `http2_connections`, `tls_connections`, `goaways`
//! (connections told to go away), `rst_streams` (RST_STREAM frames received: a client
//! cancelling a stream), `pings` (PING frames received, not acknowledgements: keep-alive),
//! `connection_resets` (`reset` faults), `max_streams_per_connection` (the most requests in
//! flight at once on one connection).
//!
//! # Connections, HTTP/2 and TLS
//!
//! Connections speak HTTP/1.1, or HTTP/2 when the client opens with the h2 preface (h2c with
//! prior knowledge, or over TLS). Each HTTP/2 connection announces
//! [`MockConfig::h2_max_streams`] concurrent streams (default [`MAX_H2_STREAMS`], so the mock
//! is never the limit unless a test asks); [`MockServer::set_h2_max_streams`] or `POST
//! /_mock/h2` changes it for connections opened afterwards. [`MockServer::goaway`] (or `POST
//! /_mock/goaway`, or the `goaway` fault for one request's connection) sends GOAWAY as a server
//! shutting down gracefully does. With [`MockConfig::tls`] the mock serves HTTPS with the given
//! certificate and ALPN list (`MockTls::alpn = [b"http/1.1"]` is a server that never picks
//! HTTP/2); `base_url()` then starts with `https://`.

mod counters;
mod script;
mod server;
mod validate;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use script::{Behaviour, BehaviourPatch, Fault, FaultSpec, Script, Step, DEFAULT_CHUNKS, DEFAULT_CONTENT_CHARS};
pub use wire::{content_text, split_chars};

pub use server::MAX_H2_STREAMS;

use crate::secret::Secret;

/// How to start a [`MockServer`].
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// When set, requests must carry this key (see the module doc).
    pub require_key: Option<Secret>,
    /// Scripts installed before the first request (`{model: script}` JSON, or `Null`).
    pub scripts: Value,
    /// How long [`MockServer::shutdown`] lets in-flight requests finish before dropping them.
    pub shutdown_grace: Duration,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection (default [`MAX_H2_STREAMS`]).
    pub h2_max_streams: u32,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<MockTls>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self { require_key: None, scripts: Value::Null, shutdown_grace: Duration::from_millis(500), h2_max_streams: MAX_H2_STREAMS, tls: None }
    }
}

/// The mock's TLS identity and the protocols it offers through ALPN.
pub struct MockTls {
    /// The leaf certificate first, then any intermediates (DER).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (DER).
    pub key: PrivateKeyDer<'static>,
    /// ALPN protocols in the server's order of preference (`[b"h2", b"http/1.1"]` by
    /// default; `[b"http/1.1"]` makes a server that never picks HTTP/2; empty: no ALPN).
    pub alpn: Vec<Vec<u8>>,
}

impl MockTls {
    /// `cert_chain` and `key` offering h2 and http/1.1.
    pub fn new(cert_chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        MockTls { cert_chain, key, alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()] }
    }

    fn acceptor(&self) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .and_then(|b| b.with_no_client_auth().with_single_cert(self.cert_chain.clone(), self.key.clone_key()))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("mock TLS: {e}")))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl Clone for MockTls {
    fn clone(&self) -> Self {
        MockTls { cert_chain: self.cert_chain.clone(), key: self.key.clone_key(), alpn: self.alpn.clone() }
    }
}

impl std::fmt::Debug for MockTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alpn: Vec<String> = self.alpn.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        f.debug_struct("MockTls").field("certificates", &self.cert_chain.len()).field("alpn", &alpn).finish_non_exhaustive()
    }
}

/// A running mock provider server on one TCP port.
///
/// Runs on the tokio runtime that called [`MockServer::start`]. Dropping it stops accepting at
/// once (open connections are closed in the background); [`MockServer::shutdown`] also waits
/// for that.
pub struct MockServer {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<server::Shared>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer").field("addr", &self.addr).finish()
    }
}

impl MockServer {
    /// Bind `addr` (port 0 picks a free port) and start serving. Invalid `config.scripts` give
    /// an `InvalidInput` error naming the offending key.
    pub async fn start(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockServer> {
        if config.h2_max_streams == 0 || config.h2_max_streams > i32::MAX as u32 {
            let e = format!("h2_max_streams must be from 1 to {}, not {}", i32::MAX, config.h2_max_streams);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
        }
        let acceptor = config.tls.as_ref().map(MockTls::acceptor).transpose()?;
        let shared = Arc::new(server::Shared::new(config.require_key.clone(), config.h2_max_streams));
        if !config.scripts.is_null() {
            shared.set_scripts(&config.scripts).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let tls = acceptor.is_some();
        let task = tokio::spawn(server::accept_loop(listener, shared.clone(), stop.clone(), config.shutdown_grace, acceptor));
        log::debug!("mock provider listening on {}://{addr}", if tls { "https" } else { "http" });
        Ok(MockServer { addr, tls, shared, stop, task: Mutex::new(Some(task)) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (`https://` when serving TLS; no trailing slash): the Anthropic base
    /// URL. OpenAI's is `+ "/v1"`, Gemini's `+ "/v1beta"`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Announce `n` concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS) on HTTP/2 connections
    /// opened from now on (open ones keep theirs). `n` is clamped to 1..=2^31-1.
    pub fn set_h2_max_streams(&self, n: u32) {
        self.shared.h2_max_streams.store(n.clamp(1, i32::MAX as u32), Ordering::Relaxed);
    }

    /// Send GOAWAY on every open connection (HTTP/1.1 ones close after their response): the
    /// streams they accepted finish, new requests must open new connections. Returns how many
    /// connections were told.
    pub fn goaway(&self) -> usize {
        self.shared.goaway_all()
    }

    /// Install or replace the script of `model` (`"*"` = default, `"_health"` = server health).
    /// Takes effect for the next request.
    pub fn set_script(&self, model: &str, script: Script) {
        self.shared.set_script(model, script);
    }

    /// Install several scripts from `{model: script}` JSON. All or nothing: on error nothing
    /// changes and the message names the offending key.
    pub fn set_scripts(&self, json: &Value) -> Result<(), String> {
        self.shared.set_scripts(json)
    }

    /// Remove every script (every model answers normally again).
    pub fn clear_scripts(&self) {
        self.shared.clear_scripts();
    }

    /// The counters as JSON (shape in the module doc).
    pub fn counters(&self) -> Value {
        self.shared.counters.snapshot()
    }

    /// The request log: `[[unix_seconds, model], ...]` for the last chat requests (at most
    /// 100,000), in arrival order. Cleared by [`MockServer::reset`].
    pub fn request_log(&self) -> Value {
        self.shared.counters.request_log()
    }

    /// Zero the counters and restart every script's steps (scripts stay installed).
    pub fn reset(&self) {
        self.shared.counters.reset();
    }

    /// Stop accepting, let in-flight requests finish within the grace period, close the rest.
    /// The port is free when this returns. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.counters.shutting_down.store(true, Ordering::Relaxed);
        self.stop.cancel();
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.counters.shutting_down.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }
}
