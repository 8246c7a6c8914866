//! One request: dispatch by path, authenticate, read and translate the body, route it through
//! the engine, and answer in the caller's API shape (a whole body, or a stream fed by a task
//! that reads the engine's stream).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::body::{Activity, Busy, GwBody};
use super::errors::{self, Api, Failure};
use super::keys::{self, KeyLease};
use super::{anthropic, openai, status, Parsed, Shared};
use crate::config::{resolve_route, route_allowed, Config, GatewayKey};
use crate::engine::chain::stream::StreamChunk;
use crate::engine::chain::walk::{estimate_tokens, Walked};
use crate::engine::router::{CallOptions, Route};
use crate::error::Error;
use crate::types::ChatResponse;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SSE: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Frames buffered between a stream's task and the connection.
const STREAM_BUFFER: usize = 32;

type Resp = Response<GwBody>;

fn label(api: Api) -> &'static str {
    match api {
        Api::OpenAi => "openai",
        Api::Anthropic => "anthropic",
    }
}

fn record(shared: &Shared, api: &'static str, status: u16) {
    *shared.stats.responses.lock().entry((api, status)).or_insert(0) += 1;
}

fn with_id(mut r: Resp, rid: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(rid) {
        r.headers_mut().insert("x-request-id", v.clone());
        r.headers_mut().insert("request-id", v);
    }
    r
}

fn json_response(status: u16, body: &Value, busy: Option<Busy>) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(GwBody::full(bytes, busy));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    r
}

fn failure_response(f: &Failure, api: Api, rid: &str, busy: Option<Busy>) -> Resp {
    let mut r = json_response(f.status, &f.body(api, rid), busy);
    let h = r.headers_mut();
    if let Some(d) = f.retry_after {
        let secs = errors::retry_after_secs(d);
        h.insert("retry-after", HeaderValue::from(secs));
        h.insert("retry-after-ms", HeaderValue::from(d.as_millis().max(1) as u64));
    }
    if let Some(yes) = f.should_retry {
        h.insert("x-should-retry", HeaderValue::from_static(if yes { "true" } else { "false" }));
    }
    r
}

/// Headers naming who served (or was tried last) and how many attempts it took.
fn trace_headers(h: &mut HeaderMap, instance: Option<&str>, attempts: usize) {
    if let Some(v) = instance.filter(|i| !i.is_empty()).and_then(|i| HeaderValue::from_str(i).ok()) {
        h.insert("x-echelon-instance", v);
    }
    h.insert("x-echelon-attempts", HeaderValue::from(attempts as u64));
}

fn attempts_of(e: &Error) -> usize {
    e.attempts.iter().filter(|a| !a.instance.is_empty()).count()
}

fn api_for(path: &str) -> Api {
    if path.ends_with("/messages") {
        Api::Anthropic
    } else {
        Api::OpenAi
    }
}

/// Serve one request. Never fails: every problem is an answer.
pub(crate) async fn handle(shared: Arc<Shared>, activity: Arc<Activity>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let rid = shared.request_id();
    let busy = Busy::new(activity, shared.clone());
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() { "/".to_string() } else { path };
    let method = req.method().clone();
    let resp = match (&method, path.as_str()) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => chat(shared.clone(), req, Api::OpenAi, &rid, busy).await,
        (&Method::POST, "/v1/messages" | "/messages") => chat(shared.clone(), req, Api::Anthropic, &rid, busy).await,
        (&Method::GET, "/v1/models" | "/models") => models(&shared, req.headers(), &rid, busy),
        (&Method::GET | &Method::HEAD, "/healthz") => {
            let r = json_response(200, &json!({"status": "ok"}), Some(busy));
            record(&shared, "health", 200);
            r
        }
        (&Method::GET, "/readyz") => {
            let (ok, body) = status::readiness(&shared);
            let code = if ok { 200 } else { 503 };
            record(&shared, "health", code);
            json_response(code, &body, Some(busy))
        }
        (&Method::GET, "/metrics") => {
            let text = status::metrics_text(&shared);
            record(&shared, "admin", 200);
            let mut r = Response::new(GwBody::full(text, Some(busy)));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        }
        (&Method::GET, "/status" | "/") => {
            record(&shared, "admin", 200);
            let mut r = Response::new(GwBody::full(Bytes::from_static(status::PAGE.as_bytes()), Some(busy)));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            // The page loads nothing from elsewhere, and says so to the browser.
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'"),
            );
            r
        }
        (&Method::GET, "/status.json") => {
            record(&shared, "admin", 200);
            let mut r = json_response(200, &status::snapshot(&shared), Some(busy));
            r.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
            r
        }
        (
            _,
            p @ ("/v1/chat/completions"
            | "/chat/completions"
            | "/v1/messages"
            | "/messages"
            | "/v1/models"
            | "/models"
            | "/healthz"
            | "/readyz"
            | "/metrics"
            | "/status"
            | "/status.json"),
        ) => {
            let f = Failure::new(405, format!("{method} is not allowed on {p}")).should_retry(false);
            record(&shared, "other", 405);
            failure_response(&f, api_for(p), &rid, Some(busy))
        }
        (_, p) => {
            let f = Failure::new(404, format!("no endpoint {method} {p}: the gateway serves POST /v1/chat/completions, POST /v1/messages, GET /v1/models, /healthz, /readyz, /metrics, /status")).should_retry(false);
            record(&shared, "other", 404);
            failure_response(&f, api_for(p), &rid, Some(busy))
        }
    };
    Ok(with_id(resp, &rid))
}

/// Authenticate against the current configuration.
fn auth<'a>(cfg: &'a Config, headers: &HeaderMap) -> Result<Option<&'a GatewayKey>, Failure> {
    keys::authenticate(&cfg.global.gateway, keys::presented(headers))
}

fn models(shared: &Shared, headers: &HeaderMap, rid: &str, busy: Busy) -> Resp {
    let cfg = shared.config();
    let key = match auth(&cfg, headers) {
        Ok(k) => k,
        Err(f) => {
            record(shared, "models", f.status);
            return failure_response(&f, Api::OpenAi, rid, Some(busy));
        }
    };
    let data: Vec<Value> = crate::config::route_names(&cfg)
        .into_iter()
        .filter(|n| key.is_none_or(|k| resolve_route(&cfg, n).is_ok_and(|c| route_allowed(&k.routes, &c))))
        // One entry both SDKs read: OpenAI's `object`/`owned_by`, Anthropic's `type`/`display_name`.
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "echelon", "type": "model", "display_name": id, "created_at": "1970-01-01T00:00:00Z"}))
        .collect();
    let first = data.first().map(|d| d["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|d| d["id"].clone()).unwrap_or(Value::Null);
    record(shared, "models", 200);
    json_response(200, &json!({"object": "list", "data": data, "has_more": false, "first_id": first, "last_id": last}), Some(busy))
}

/// Read the body within the size limit.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Failure> {
    let too_large = || Failure::new(413, format!("request body larger than {max} bytes (the gateway's max_body_bytes)")).should_retry(false);
    if let Some(len) = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Failure::new(400, format!("could not read the request body: {e}")).should_retry(false)),
    }
}

/// `x-echelon-timeout: <seconds>`: the call's deadline.
fn timeout_header(headers: &HeaderMap) -> Result<Option<Duration>, Failure> {
    let Some(v) = headers.get("x-echelon-timeout") else { return Ok(None) };
    let secs = v.to_str().ok().and_then(|s| s.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s > 0.0 && *s <= 1e9);
    match secs {
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
        None => Err(Failure::new(400, "x-echelon-timeout must be a positive number of seconds").should_retry(false)),
    }
}

/// Everything checked before the engine runs.
struct Admitted {
    parsed: Parsed,
    route: Route,
    opts: CallOptions,
    lease: KeyLease,
}

async fn admit(shared: &Shared, req: Request<Incoming>, api: Api) -> Result<Admitted, Failure> {
    if shared.draining.load(Ordering::SeqCst) {
        return Err(Failure::new(503, "the gateway is shutting down; retry on another instance").retry_after(Some(Duration::from_secs(1))).should_retry(true));
    }
    let cfg = shared.config();
    let key = auth(&cfg, req.headers())?.cloned();
    let timeout = timeout_header(req.headers())?;
    let body = read_body(req, cfg.global.gateway.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| Failure::new(400, format!("the request body is not valid JSON: {e}")).should_retry(false))?;
    let parsed = match api {
        Api::OpenAi => openai::parse_request(&value)?,
        Api::Anthropic => anthropic::parse_request(&value)?,
    };
    let canonical = resolve_route(&cfg, &parsed.model).map_err(|m| Failure::new(404, m).code("model_not_found").should_retry(false))?;
    if let Some(k) = &key {
        if !route_allowed(&k.routes, &canonical) {
            return Err(Failure::new(403, format!("key `{}` may not use `{}`", k.name, parsed.model)).code("route_not_allowed").should_retry(false));
        }
    }
    let route = Route::parse(&canonical).map_err(|e| Failure::new(404, e.message).code("model_not_found").should_retry(false))?;
    let lease = match &key {
        Some(k) => shared.budgets.admit(shared.router.store(), k, estimate_tokens(&parsed.request))?,
        None => KeyLease::none(),
    };
    Ok(Admitted { parsed, route, opts: CallOptions { timeout, ..Default::default() }, lease })
}

async fn chat(shared: Arc<Shared>, req: Request<Incoming>, api: Api, rid: &str, busy: Busy) -> Resp {
    let a = match admit(&shared, req, api).await {
        Ok(a) => a,
        Err(f) => {
            record(&shared, label(api), f.status);
            let mut r = failure_response(&f, api, rid, Some(busy));
            if f.status == 503 {
                r.headers_mut().insert("connection", HeaderValue::from_static("close"));
            }
            return r;
        }
    };
    let Admitted { parsed, route, opts, lease } = a;
    let router = shared.router.clone();
    let run = router.run(Some(&route), &parsed.request, &opts, parsed.stream);
    let res = tokio::select! {
        r = run => r,
        _ = shared.hard_stop.cancelled() => Err(Error::new(crate::error::ErrorKind::Cancelled, "the gateway shut down before the call finished")),
    };
    match res {
        Ok(Walked::Chat(resp)) => {
            lease.used(resp.usage.total_tokens as u64);
            record(&shared, label(api), 200);
            let body = match api {
                Api::OpenAi => openai::response_body(&resp, rid),
                Api::Anthropic => anthropic::response_body(&resp, rid),
            };
            let mut r = json_response(200, &body, Some(busy));
            trace_headers(r.headers_mut(), Some(&resp.served_by), attempts_of_response(&resp));
            r
        }
        Ok(Walked::Stream(stream)) => {
            record(&shared, label(api), 200);
            let instance = stream.served_by();
            let wire_model = instance.as_ref().map(|i| i.client.model().model.clone()).unwrap_or_default();
            let attempts = stream.attempts_made();
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            let enc = match api {
                Api::OpenAi => Encoder::OpenAi(openai::StreamEncoder::new(rid, &wire_model, parsed.include_usage)),
                Api::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new(rid, &wire_model)),
            };
            tokio::spawn(pump(shared.clone(), stream, enc, tx, lease, rid.to_string()));
            let mut r = Response::new(GwBody::Stream { rx, _busy: Some(busy) });
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, SSE.clone());
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            trace_headers(h, instance.as_ref().map(|i| i.id.as_str()), attempts);
            r
        }
        Err(e) => {
            drop(lease);
            let mut f = errors::from_engine(&e);
            if shared.hard_stop.is_cancelled() {
                f = Failure::new(503, e.message.clone()).retry_after(Some(Duration::from_secs(1))).should_retry(true);
            }
            record(&shared, label(api), f.status);
            let mut r = failure_response(&f, api, rid, Some(busy));
            let last = e.instance.clone().or_else(|| e.attempts.iter().rev().find(|a| !a.instance.is_empty()).map(|a| a.instance.clone()));
            trace_headers(r.headers_mut(), last.as_deref(), attempts_of(&e));
            r
        }
    }
}

fn attempts_of_response(r: &ChatResponse) -> usize {
    r.attempts.iter().filter(|a| !a.instance.is_empty()).count().max(1)
}

enum Encoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
}

impl Encoder {
    fn start(&self) -> Bytes {
        match self {
            Encoder::OpenAi(e) => e.start(),
            Encoder::Anthropic(e) => e.start(),
        }
    }
    fn delta(&mut self, text: &str, tc: Option<&Value>) -> Bytes {
        match self {
            Encoder::OpenAi(e) => e.delta(text, tc),
            Encoder::Anthropic(e) => e.delta(text, tc),
        }
    }
    fn finish(&mut self, r: &ChatResponse) -> Bytes {
        match self {
            Encoder::OpenAi(e) => e.finish(r),
            Encoder::Anthropic(e) => e.finish(r),
        }
    }
    fn error(&self, f: &Failure, rid: &str) -> Bytes {
        match self {
            Encoder::OpenAi(e) => e.error(f, rid),
            Encoder::Anthropic(e) => e.error(f, rid),
        }
    }
}

/// Read the engine's stream into frames until it ends, fails, the client goes away (the send
/// fails: the stream is dropped, which aborts the upstream request) or the drain's grace ends.
async fn pump(
    shared: Arc<Shared>,
    mut stream: crate::engine::chain::stream::ChatStream,
    mut enc: Encoder,
    tx: mpsc::Sender<Bytes>,
    lease: KeyLease,
    rid: String,
) {
    if tx.send(enc.start()).await.is_err() {
        return;
    }
    loop {
        let item = tokio::select! {
            biased;
            _ = shared.hard_stop.cancelled() => {
                let f = Failure::new(503, "the gateway shut down before the stream finished").should_retry(true);
                let _ = tx.send(enc.error(&f, &rid)).await;
                return;
            }
            item = stream.next() => item,
        };
        let frame = match item {
            Some(Ok(StreamChunk::Delta { text, tool_call })) => enc.delta(&text, tool_call.as_ref()),
            Some(Ok(StreamChunk::Final(resp))) => {
                lease.used(resp.usage.total_tokens as u64);
                let _ = tx.send(enc.finish(&resp)).await;
                return;
            }
            Some(Err(e)) => {
                let f = errors::from_engine(&e);
                let _ = tx.send(enc.error(&f, &rid)).await;
                return;
            }
            None => return,
        };
        if frame.is_empty() {
            continue;
        }
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}
