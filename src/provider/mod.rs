//! Provider clients: OpenAI chat completions (and OpenAI-compatible hosts), Anthropic messages,
//! Gemini generateContent; non-streaming and SSE streaming; error classification.
//!
//! Layout: [`openai`], [`anthropic`], [`gemini`] translate requests and responses; [`sse`] parses
//! event streams; [`stream`] drives a streaming body under the timers; [`classify`] turns
//! statuses, bodies and transport failures into [`Error`]s; [`transport`] carries requests
//! (reqwest for HTTP/1.1, hyper directly for HTTP/2). This file builds each call's request and
//! reads its response.
//!
//! Timeouts are enforced here with `tokio::time` (not a client's global timeout) so each kind
//! is distinguishable: connect (the transport's connect timeout), first token (response headers
//! for `chat`, first delta for `stream`), idle (between stream chunks after the first delta)
//! and total (the whole request, body included).

// `Error` is the crate-wide error contract (large by design, returned once per call).
#![allow(clippy::result_large_err)]

pub mod anthropic;
pub mod classify;
pub mod format;
pub mod gemini;
pub mod openai;
pub mod sse;
pub mod stream;
pub mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use futures_util::Stream;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use reqwest::Method;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::{ModelConfig, ProbeMode, ProviderKind, Timeouts, UnsupportedParams};
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::types::{ChatRequest, ChatResponse, Message, Params, StreamEvent};
use classify::{classify_send, classify_status, ErrCtx};
use stream::{StreamDecoder, StreamSetup};
pub use transport::HttpPool;
use transport::{ConnSettings, Headers, Response, Sending, Target};

/// A stream of deltas then exactly one `Done`, or an error item (after which it ends).
/// Dropping it aborts the upstream HTTP request.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, Error>> + Send>>;

/// Largest successful response body accepted (non-streaming).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Largest error body read (only its message is kept).
const MAX_ERROR_BODY: usize = 256 * 1024;

/// A client for one logical model. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct ProviderClient {
    model: Arc<ModelConfig>,
    pool: HttpPool,
    /// `"<provider>/<model>"`, the prefix of every error message.
    label: Arc<str>,
    /// `scheme://host:port` of base_url, or why base_url is unusable.
    origin: Result<Arc<str>, String>,
    /// Auth + configured headers, or why they are unusable (checked at call time).
    headers: Result<HeaderMap, String>,
    /// The pool's client for this model's own connect timeout, looked up once: the common
    /// case then costs no lock and no key allocation per request.
    http: Arc<OnceLock<transport::Client>>,
    /// The chat endpoint parsed once, `[non-streaming, streaming]` (they differ for Gemini).
    chat_urls: Arc<[Result<Arc<Target>, String>; 2]>,
    /// `headers` plus content type and accept, `[non-streaming, streaming]`.
    chat_headers: Result<Arc<[HeaderMap; 2]>, String>,
    /// Whether the model has default parameters to merge into each request.
    has_defaults: bool,
}

impl ProviderClient {
    /// Build a client for `model`, reusing `pool`'s connections to the same host.
    /// A malformed base_url or header is reported by the first call (`ErrorKind::Config`).
    pub fn new(model: ModelConfig, pool: &HttpPool) -> Self {
        let label: Arc<str> = format!("{}/{}", model.provider, model.name).into();
        let origin =
            reqwest::Url::parse(&model.base_url).map_err(|e| format!("base_url {:?} is not a valid URL: {e}", model.base_url)).and_then(|u| match u.scheme() {
                "http" | "https" => Ok(u.origin().ascii_serialization().into()),
                s => Err(format!("base_url {:?} has unsupported scheme {s:?}", model.base_url)),
            });
        let headers = base_headers(&model);
        let chat_url = |stream: bool| {
            let url = chat_endpoint(&model, stream);
            Target::parse(&url).map(Arc::new).map_err(|e| format!("chat endpoint {url:?} is not a valid URL: {e}"))
        };
        let chat_urls = Arc::new([chat_url(false), chat_url(true)]);
        let chat_headers = headers.clone().map(|h| {
            Arc::new([false, true].map(|stream| {
                let mut h = h.clone();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(ACCEPT, HeaderValue::from_static(if stream { "text/event-stream" } else { "application/json" }));
                h
            }))
        });
        let has_defaults = model.parameters != Params::default();
        Self { model: Arc::new(model), pool: pool.clone(), label, origin, headers, http: Arc::default(), chat_urls, chat_headers, has_defaults }
    }

    /// The model this client calls.
    pub fn model(&self) -> &ModelConfig {
        &self.model
    }

    fn ctx(&self) -> ErrCtx<'_> {
        ErrCtx { label: &self.label, secret: &self.model.api_key }
    }

    fn client(&self, timeouts: &Timeouts) -> Result<transport::Client, Error> {
        let ctx = self.ctx();
        if self.model.api_key.is_missing() {
            let var = self.model.api_key.var().unwrap_or("?");
            return Err(ctx.error(ErrorKind::AuthError, &format!("API key variable ${{{var}}} is not set")));
        }
        let own = timeouts.connect == self.model.timeouts.connect;
        if own {
            if let Some(c) = self.http.get() {
                return Ok(c.clone());
            }
        }
        let origin = self.origin.as_ref().map_err(|m| ctx.error(ErrorKind::Config, m))?;
        let m = &self.model;
        let settings =
            ConnSettings { connect: timeouts.connect, version: m.http_version, max_connections: m.http2_max_connections, idle: m.connection_idle_timeout };
        let client = self.pool.client(origin, &settings).map_err(|m| ctx.error(ErrorKind::Config, &format!("HTTP client: {m}")))?;
        if own {
            let _ = self.http.set(client.clone());
        }
        Ok(client)
    }

    /// Build the chat request (URL, headers, serialized body) and start sending it. A plain
    /// fn, so nothing of the build is left in the caller's future across its awaits.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        req: &ChatRequest,
        stream: bool,
        timeouts: &Timeouts,
    ) -> Result<
        Sending<impl Future<Output = reqwest::Result<reqwest::Response>> + Send + Unpin, impl Future<Output = Result<Response, transport::SendError>> + Send>,
        Error,
    > {
        let client = self.client(timeouts)?;
        let ctx = self.ctx();
        let headers = match &self.chat_headers {
            Ok(h) => Headers::Shared(h.clone(), usize::from(stream)),
            Err(m) => return Err(ctx.error(ErrorKind::Config, m)),
        };
        // Merging copies the caller's parameters; a model without defaults of its own needs none.
        let params =
            if self.has_defaults { std::borrow::Cow::Owned(req.params.clone().or(&self.model.parameters)) } else { std::borrow::Cow::Borrowed(&req.params) };
        let m = &self.model;
        let url = self.chat_urls[usize::from(stream)].clone().map_err(|m| ctx.error(ErrorKind::Config, &m))?;
        let (body, unsupported) = request_body(m, req, &params, stream).map_err(|e| ctx.error(ErrorKind::BadRequest, &e))?;
        if !unsupported.is_empty() {
            match m.unsupported_params {
                UnsupportedParams::Error => {
                    let keys = unsupported.0.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                    let detail = format!(
                        "{} does not support {keys} (model `{}`, unsupported_params = \"error\"); pass it scoped as {}={{...}} to send it anyway, or set unsupported_params = \"drop\"",
                        m.kind.as_str(),
                        m.name,
                        scope_name(m.kind)
                    );
                    return Err(ctx.error(ErrorKind::BadRequest, &detail));
                }
                UnsupportedParams::Drop => log_dropped(&self.label, m, &unsupported),
            }
        }
        // The request is built whole (the shared headers are cloned once, by the transport)
        // rather than through reqwest's RequestBuilder, whose `headers()` re-inserts every
        // header one by one into a fresh map.
        Ok(client.send(transport::Request { method: Method::POST, target: url, headers, body: body.into() }))
    }

    /// Send and wait for the response headers under min(first_token, total).
    ///
    /// Takes the already started request ([`transport::Client::send`]), not a builder: an
    /// async fn keeps its arguments for its whole life, and a builder is ~280 bytes of every
    /// in-flight request's future.
    async fn send<F, G>(&self, fut: Sending<F, G>, timeouts: &Timeouts, started: Instant) -> Result<Response, Error>
    where
        F: Future<Output = reqwest::Result<reqwest::Response>> + Unpin,
        G: Future<Output = Result<Response, transport::SendError>>,
    {
        let ctx = self.ctx();
        let (deadline, which) = header_deadline(timeouts, started);
        let res = match deadline {
            Some(d) => match tokio::time::timeout_at(d, fut).await {
                Ok(r) => r,
                Err(_) => {
                    let limit = if which == TimeoutKind::FirstToken { timeouts.first_token } else { timeouts.total };
                    let mut e = ctx.error(ErrorKind::Timeout, &format!("no response headers within {:?}", limit.unwrap_or_default()));
                    e.timeout = Some(which);
                    return Err(e);
                }
            },
            None => fut.await,
        };
        res.map_err(|e| classify_send(e, &ctx))
    }

    /// Read and classify a non-2xx response. Callers box it: it is the largest state of the
    /// call futures and only needed on the error path.
    async fn error_response(&self, resp: Response, timeouts: &Timeouts, started: Instant) -> Error {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, total_deadline(timeouts, started), MAX_ERROR_BODY).await.unwrap_or_else(|b| b.partial);
        classify_status(status, &headers, &body, &self.ctx())
    }

    /// One non-streaming call. `timeouts` are the effective ones for this attempt (the caller
    /// has already merged echelon overrides and clamped `total` to the call's deadline).
    /// The response's `served_by` and `attempts` are left empty for the caller to fill;
    /// `ttft` is the time to response headers and `latency` the whole call.
    pub async fn chat(&self, req: &ChatRequest, timeouts: &Timeouts) -> Result<ChatResponse, Error> {
        let started = Instant::now();
        let sent = self.start(req, false, timeouts)?;
        // The response lives in this block only: once borrowed, a local keeps its room in the
        // future until its scope ends, and the body read below must not carry it twice.
        let (ttft, status, header_rid, reading) = {
            let resp = self.send(sent, timeouts, started).await?;
            let ttft = started.elapsed();
            let status = resp.status().as_u16();
            let header_rid = classify::request_id(resp.headers());
            if !resp.status().is_success() {
                return Err(Box::pin(self.error_response(resp, timeouts, started)).await);
            }
            (ttft, status, header_rid, read_body(resp, total_deadline(timeouts, started), MAX_BODY))
        };
        let ctx = self.ctx();
        let with_meta = |mut e: Error| {
            e.status = Some(status);
            if e.request_id.is_none() {
                e.request_id = header_rid.clone();
            }
            e
        };
        let body = match reading.await {
            Ok(b) => b,
            Err(BodyError { timed_out: true, .. }) => {
                let mut e = ctx.error(ErrorKind::Timeout, &format!("body not complete within the total timeout of {:?}", timeouts.total.unwrap_or_default()));
                e.timeout = Some(TimeoutKind::Total);
                return Err(with_meta(e));
            }
            Err(BodyError { reason, partial, .. }) => {
                return Err(with_meta(ctx.error(ErrorKind::InvalidResponse, &format!("truncated body after {} bytes: {reason}", partial.len()))));
            }
        };
        let parsed = match self.model.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => openai::parse_body(&body, &ctx),
            ProviderKind::Anthropic => json_body(&body, &ctx).and_then(|v| anthropic::parse_response(&v, &ctx)),
            ProviderKind::Gemini => json_body(&body, &ctx).and_then(|v| gemini::parse_response(&v, &ctx)),
        };
        let mut r = parsed.map_err(with_meta)?;
        if header_rid.is_some() {
            r.request_id = header_rid;
        }
        r.ttft = Some(ttft);
        r.latency = started.elapsed();
        Ok(r)
    }

    /// Open a stream. Returns once the response headers are in (errors before that, including
    /// HTTP error statuses, come back here). The stream enforces `first_token` until the first
    /// delta and `idle` between chunks; after the first delta any cut/stall/garbage becomes
    /// `StreamInterrupted` carrying the partial text.
    pub async fn stream(&self, req: &ChatRequest, timeouts: &Timeouts) -> Result<EventStream, Error> {
        let started = Instant::now();
        let sent = self.start(req, true, timeouts)?;
        let resp = self.send(sent, timeouts, started).await?;
        if !resp.status().is_success() {
            return Err(Box::pin(self.error_response(resp, timeouts, started)).await);
        }
        let header_rid = classify::request_id(resp.headers());
        let is_json = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
        if is_json {
            // Some hosts answer a streaming request with a plain JSON (error) body and a 200.
            return Err(self.json_instead_of_stream(resp, timeouts, started, header_rid).await);
        }
        let decoder: Box<dyn StreamDecoder> = match self.model.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => Box::<openai::Decoder>::default(),
            ProviderKind::Anthropic => Box::<anthropic::Decoder>::default(),
            ProviderKind::Gemini => Box::<gemini::Decoder>::default(),
        };
        let setup = StreamSetup { model: self.model.clone(), label: self.label.clone(), started, timeouts: *timeouts, request_id: header_rid };
        Ok(stream::drive(resp.into_body(), decoder, setup))
    }

    async fn json_instead_of_stream(&self, resp: Response, timeouts: &Timeouts, started: Instant, rid: Option<String>) -> Error {
        let status = resp.status().as_u16();
        let ctx = self.ctx();
        let body = read_body(resp, total_deadline(timeouts, started), MAX_ERROR_BODY).await.unwrap_or_else(|b| b.partial);
        let mut e = match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.get("error").is_some_and(|e| !e.is_null()) => classify::classify_json_error(&v, &ctx),
            _ => ctx.error(ErrorKind::InvalidResponse, "expected an event stream, got a JSON body"),
        };
        e.status = Some(status);
        e.request_id = e.request_id.or(rid);
        e
    }

    /// An active health probe that costs no tokens unless `mode` is `Completion`.
    /// `Models` GETs the model list (2xx = alive), `Head` HEADs base_url (any status < 500 =
    /// alive), `Completion` makes a 1-token chat. Failures are classified like calls.
    pub async fn probe(&self, mode: ProbeMode, timeouts: &Timeouts) -> Result<(), Error> {
        if mode == ProbeMode::Completion {
            let req = ChatRequest { messages: vec![Message::text("user", "ping")], params: Params { max_tokens: Some(1), ..Default::default() } };
            return self.chat(&req, timeouts).await.map(|_| ());
        }
        let started = Instant::now();
        let client = self.client(timeouts)?;
        let headers = self.headers.clone().map_err(|m| self.ctx().error(ErrorKind::Config, &m))?;
        let m = &self.model;
        let (method, url) = match (mode, m.kind) {
            (ProbeMode::Head, _) => (Method::HEAD, m.base_url.clone()),
            (_, ProviderKind::Anthropic) => (Method::GET, anthropic::models_url(&m.base_url)),
            (_, ProviderKind::Gemini) => (Method::GET, gemini::models_url(&m.base_url)),
            _ => (Method::GET, openai::models_url(&m.base_url)),
        };
        let target =
            Target::parse(&url).map(Arc::new).map_err(|e| self.ctx().error(ErrorKind::Config, &format!("probe URL {url:?} is not a valid URL: {e}")))?;
        let request = transport::Request { method, target, headers: Headers::Owned(headers), body: Default::default() };
        let resp = self.send(client.send(request), timeouts, started).await?;
        let status = resp.status();
        let alive = if mode == ProbeMode::Head { status.as_u16() < 500 } else { status.is_success() };
        if !alive {
            return Err(Box::pin(self.error_response(resp, timeouts, started)).await);
        }
        // Read the (small) body so the connection can be reused; its content does not matter.
        let _ = read_body(resp, total_deadline(timeouts, started), MAX_ERROR_BODY).await;
        Ok(())
    }
}

/// The request body for `model` (params already merged with its defaults), with the parameters
/// its provider has no counterpart for. `Err` is a request that cannot be sent as given.
pub fn request_body(model: &ModelConfig, req: &ChatRequest, params: &Params, stream: bool) -> Result<(Vec<u8>, format::Unsupported), String> {
    let mut unsupported = format::Unsupported::default();
    let body = match model.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => openai::write_body(&model.model, req, params, stream, model.kind, &mut unsupported)?,
        ProviderKind::Anthropic => {
            let v = anthropic::build_body(&model.model, req, params, stream, &mut unsupported)?;
            serde_json::to_vec(&v).map_err(|e| format!("cannot serialize the request: {e}"))?
        }
        ProviderKind::Gemini => {
            let v = gemini::build_body(req, params, &mut unsupported)?;
            serde_json::to_vec(&v).map_err(|e| format!("cannot serialize the request: {e}"))?
        }
    };
    Ok((body, unsupported))
}

/// The URL a chat call to `model` goes to (`stream` picks Gemini's streaming method), after
/// base-URL normalisation; what `echelon check` shows.
pub fn chat_endpoint(model: &ModelConfig, stream: bool) -> String {
    match model.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => openai::chat_url(&model.base_url),
        ProviderKind::Anthropic => anthropic::chat_url(&model.base_url),
        ProviderKind::Gemini => gemini::chat_url(&model.base_url, &model.model, stream),
    }
}

/// The scoped-extras key that reaches `kind` unchanged.
fn scope_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::OpenAiCompatible => "openai_compatible",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
    }
}

/// A (model label, parameter) pair logged as dropped.
type DroppedKey = (Arc<str>, String);
/// Pairs already logged as dropped: one record each per process.
static DROPPED: OnceLock<Mutex<std::collections::HashSet<DroppedKey>>> = OnceLock::new();
/// Bound on [`DROPPED`]: callers can make up parameter names without end.
const MAX_DROPPED_LOGGED: usize = 4096;

fn log_dropped(label: &Arc<str>, m: &ModelConfig, unsupported: &format::Unsupported) {
    let mut seen = DROPPED.get_or_init(Default::default).lock();
    for k in &unsupported.0 {
        if seen.len() >= MAX_DROPPED_LOGGED {
            return;
        }
        if seen.insert((label.clone(), k.clone())) {
            log::warn!(
                "{label}: dropped parameter `{k}`: {} has no counterpart for it (model `{}`; unsupported_params = \"error\" refuses such calls instead, {}={{...}} sends it anyway). Logged once per model and parameter.",
                m.kind.as_str(),
                m.name,
                scope_name(m.kind)
            );
        }
    }
}

/// Whether an absolute URL (`scheme://host[:port][/path]`) has no path beyond `/`.
pub(crate) fn url_path_is_empty(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').is_none_or(|i| rest[i..].trim_end_matches('/').is_empty())
}

/// Auth headers for the provider plus the configured extra headers (which win).
fn base_headers(m: &ModelConfig) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    let secret = |v: &str| -> Result<HeaderValue, String> {
        let mut v = HeaderValue::from_str(v).map_err(|_| "the API key contains characters not allowed in a header".to_string())?;
        v.set_sensitive(true);
        Ok(v)
    };
    let key = m.api_key.expose();
    match m.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            if let Some(k) = key {
                h.insert(reqwest::header::AUTHORIZATION, secret(&format!("Bearer {k}"))?);
            }
        }
        ProviderKind::Anthropic => {
            if let Some(k) = key {
                h.insert("x-api-key", secret(k)?);
            }
            let version = m.api_version.as_deref().unwrap_or(anthropic::DEFAULT_VERSION);
            h.insert("anthropic-version", HeaderValue::from_str(version).map_err(|_| format!("api_version {version:?} is not a valid header value"))?);
        }
        ProviderKind::Gemini => {
            if let Some(k) = key {
                h.insert("x-goog-api-key", secret(k)?);
            }
        }
    }
    for (name, value) in &m.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header name {name:?} is not valid"))?;
        // The value may be a credential: never echo it.
        let mut v = HeaderValue::from_str(value).map_err(|_| format!("the value of header {name:?} is not valid"))?;
        v.set_sensitive(true);
        h.insert(n, v);
    }
    // Both transports send the same one (reqwest would add its own default otherwise).
    h.entry(USER_AGENT).or_insert(HeaderValue::from_static(transport::USER_AGENT));
    Ok(h)
}

fn header_deadline(t: &Timeouts, started: Instant) -> (Option<Instant>, TimeoutKind) {
    match (t.first_token, t.total) {
        (Some(f), Some(tot)) if tot <= f => (Some(started + tot), TimeoutKind::Total),
        (Some(f), _) => (Some(started + f), TimeoutKind::FirstToken),
        (None, Some(tot)) => (Some(started + tot), TimeoutKind::Total),
        (None, None) => (None, TimeoutKind::Total),
    }
}

fn total_deadline(t: &Timeouts, started: Instant) -> Option<Instant> {
    t.total.map(|d| started + d)
}

/// Why a body could not be read in full, with what was read.
struct BodyError {
    timed_out: bool,
    reason: String,
    partial: Vec<u8>,
}

async fn read_body(mut resp: Response, deadline: Option<Instant>, cap: usize) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::new();
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, resp.chunk()).await {
                Ok(n) => n,
                Err(_) => return Err(BodyError { timed_out: true, reason: "timed out".into(), partial: buf }),
            },
            None => resp.chunk().await,
        };
        match next {
            Ok(Some(c)) => {
                if buf.len() + c.len() > cap {
                    return Err(BodyError { timed_out: false, reason: format!("body larger than {cap} bytes"), partial: buf });
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(buf),
            Err(reason) => return Err(BodyError { timed_out: false, reason, partial: buf }),
        }
    }
}

/// Insert `key` when `value` is present.
pub(crate) fn set_opt(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_string(), v);
    }
}

/// `bytes` as text when they are valid UTF-8.
///
/// Provider bodies are validated once here, SIMD-accelerated, and then parsed with
/// `serde_json::from_str`, which trusts its input: `from_slice` would instead check every JSON
/// string separately with the scalar validator, which is slow on non-ASCII text (CJK, accented
/// words) and was ~3% of a request's CPU on the benchmark's response.
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

/// A response body as JSON, or InvalidResponse quoting its start.
pub(crate) fn json_body(body: &[u8], ctx: &ErrCtx<'_>) -> Result<Value, Error> {
    let parsed = match utf8(body) {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_slice(body), // invalid UTF-8: from_slice says where
    };
    parsed.map_err(|e| {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        ctx.error(ErrorKind::InvalidResponse, &format!("unparseable JSON body ({e}): {snippet}"))
    })
}

/// A token count from JSON (missing, negative or huge values saturate instead of failing).
pub(crate) fn num_u32(v: Option<&Value>) -> u32 {
    v.and_then(Value::as_u64).map(|n| n.min(u32::MAX as u64) as u32).unwrap_or(0)
}
