//! The HTTP side: accept loop, routing, fault execution and the response body type.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::counters::{Counters, ModelState, RequestGuard, AUTH_HEADERS};
use super::script::{parse_script_map, Fault, FaultSpec, Script};
use super::wire::{self, Ctx, ErrorCase, Format, StreamPlan};
use crate::provider::transport::frames::{Frame as H2Frame, FrameReader, FrameSink, Tapped};
use crate::secret::Secret;

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// After the last bytes of a cut response, how long to let hyper flush them before the cut.
const CUT_FLUSH: Duration = Duration::from_millis(20);
/// Script key of the server-wide health script.
pub const HEALTH_KEY: &str = "_health";

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SSE: HeaderValue = HeaderValue::from_static("text/event-stream");

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub scripts: ArcSwap<HashMap<String, Arc<Script>>>,
    pub counters: Arc<Counters>,
    pub require_key: Option<Secret>,
    next_request: AtomicU64,
    default_script: Arc<Script>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS announced on new HTTP/2 connections.
    pub h2_max_streams: AtomicU32,
    /// Open connections, by number (for GOAWAY on demand).
    conns: parking_lot::Mutex<HashMap<u64, Arc<ConnCtx>>>,
    next_conn: AtomicU64,
}

impl Shared {
    pub fn new(require_key: Option<Secret>, h2_max_streams: u32) -> Self {
        Shared {
            scripts: ArcSwap::from_pointee(HashMap::new()),
            counters: Arc::new(Counters::default()),
            require_key,
            next_request: AtomicU64::new(1),
            default_script: Arc::new(Script::default()),
            h2_max_streams: AtomicU32::new(h2_max_streams),
            conns: parking_lot::Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Tell every open connection to go away (GOAWAY; HTTP/1.1 closes after its response).
    /// Returns how many were told.
    pub fn goaway_all(&self) -> usize {
        let conns: Vec<Arc<ConnCtx>> = self.conns.lock().values().cloned().collect();
        for c in &conns {
            c.goaway.cancel();
        }
        conns.len()
    }

    /// The script for `model`: its own, else `"*"`, else the default (always ok).
    fn script_for(&self, model: &str) -> Arc<Script> {
        let map = self.scripts.load();
        map.get(model).or_else(|| map.get("*")).cloned().unwrap_or_else(|| self.default_script.clone())
    }

    /// Install or replace one script.
    pub fn set_script(&self, model: &str, script: Script) {
        let script = Arc::new(script);
        self.scripts.rcu(|old| {
            let mut m = HashMap::clone(old);
            m.insert(model.to_string(), script.clone());
            m
        });
    }

    /// Install several scripts at once (all or nothing).
    pub fn set_scripts(&self, v: &Value) -> Result<(), String> {
        let parsed = parse_script_map(v)?;
        let parsed: Vec<(String, Arc<Script>)> = parsed.into_iter().map(|(k, s)| (k, Arc::new(s))).collect();
        self.scripts.rcu(|old| {
            let mut m = HashMap::clone(old);
            for (k, s) in &parsed {
                m.insert(k.clone(), s.clone());
            }
            m
        });
        Ok(())
    }

    /// Remove every script.
    pub fn clear_scripts(&self) {
        self.scripts.store(Arc::new(HashMap::new()));
    }
}

// ---------------------------------------------------------------------------------------------
// Accept loop

/// A TCP stream that is closed with RST instead of FIN when its flag is set (the `reset` fault).
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One accepted connection: what its requests and the server need to act on it.
pub(crate) struct ConnCtx {
    id: u64,
    /// Cancelled to send GOAWAY (graceful: accepted streams finish).
    goaway: CancellationToken,
    /// Cancelled to drop the connection at once, with a TCP RST (`reset` set first).
    abort: CancellationToken,
    /// Makes the socket close with RST instead of FIN.
    reset: Arc<AtomicBool>,
    /// Set once the mock dropped the connection itself: its requests' ends are not client
    /// disconnects.
    closed_by_server: Arc<AtomicBool>,
    /// Requests in flight on this connection.
    in_flight: AtomicUsize,
    http2: AtomicBool,
}

impl ConnCtx {
    fn new(id: u64) -> Arc<Self> {
        Arc::new(ConnCtx {
            id,
            goaway: CancellationToken::new(),
            abort: CancellationToken::new(),
            reset: Arc::new(AtomicBool::new(false)),
            closed_by_server: Arc::new(AtomicBool::new(false)),
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
        })
    }

    /// Count a request on this connection until the returned guard drops.
    fn enter(self: &Arc<Self>, counters: &Counters) -> InFlight {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.conns.max_streams_per_connection.fetch_max(n as u64, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Drop the connection now with a TCP RST (every stream on it ends).
    fn reset_now(&self, counters: &Counters) {
        self.reset.store(true, Ordering::Relaxed);
        self.closed_by_server.store(true, Ordering::Relaxed);
        if !self.abort.is_cancelled() {
            counters.conns.connection_resets.fetch_add(1, Ordering::Relaxed);
        }
        self.abort.cancel();
    }
}

struct InFlight(Arc<ConnCtx>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts what clients send on one connection (its frames, read through the tap).
struct ConnTap {
    counters: Arc<Counters>,
    ctx: Arc<ConnCtx>,
}

impl FrameSink for ConnTap {
    fn frame(&self, frame: H2Frame) {
        let c = &self.counters.conns;
        match frame {
            H2Frame::Settings { .. } if !self.ctx.http2.swap(true, Ordering::Relaxed) => {
                c.http2_connections.fetch_add(1, Ordering::Relaxed);
            }
            H2Frame::RstStream { .. } => {
                c.rst_streams.fetch_add(1, Ordering::Relaxed);
            }
            H2Frame::Ping => {
                c.pings.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Accept connections until `stop` fires, then give open connections `grace` to finish.
/// With `tls`, every connection starts with a TLS handshake (ALPN as the acceptor offers).
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken, grace: Duration, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    let ctx = ConnCtx::new(id);
                    let io = ResettableStream { inner: stream, reset: ctx.reset.clone() };
                    let (shared, stop) = (shared.clone(), stop.clone());
                    match tls.clone() {
                        None => {
                            conns.spawn(serve_connection(io, shared, ctx, stop, grace));
                        }
                        Some(acceptor) => {
                            conns.spawn(async move {
                                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(io));
                                match handshake.await {
                                    Ok(Ok(tls)) => {
                                        shared.counters.conns.tls_connections.fetch_add(1, Ordering::Relaxed);
                                        serve_connection(tls, shared, ctx, stop, grace).await;
                                    }
                                    Ok(Err(e)) => log::debug!("mock: TLS handshake failed: {e}"),
                                    Err(_) => log::debug!("mock: TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("mock: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace + Duration::from_millis(100), drain).await.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Default of concurrent HTTP/2 streams the mock accepts on one connection: a mock must never
/// be the limit unless a test asks for one.
pub const MAX_H2_STREAMS: u32 = 65_536;

/// Counts a connection as open while it is registered.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.conns.lock().remove(&self.id);
        self.shared.counters.conns.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, ctx: Arc<ConnCtx>, stop: CancellationToken, grace: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counters = shared.counters.clone();
    counters.conns.connections.fetch_add(1, Ordering::Relaxed);
    counters.conns.open_connections.fetch_add(1, Ordering::Relaxed);
    shared.conns.lock().insert(ctx.id, ctx.clone());
    let _registered = Registered { shared: shared.clone(), id: ctx.id };
    let tap = Arc::new(ConnTap { counters: counters.clone(), ctx: ctx.clone() });
    let io = TokioIo::new(Tapped::new(io, FrameReader::from_client(), tap));
    let svc = {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        hyper::service::service_fn(move |req| handle(shared.clone(), ctx.clone(), req))
    };
    // HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when the client opens with the h2
    // preface (over TLS too, whatever ALPN chose).
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().keep_alive(true);
    builder.http2().max_concurrent_streams(shared.h2_max_streams.load(Ordering::Relaxed));
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut going_away = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::trace!("mock: connection ended: {e}");
                }
                break;
            }
            _ = ctx.abort.cancelled() => {
                // Dropping the connection closes the socket; `reset` makes that an RST.
                log::debug!("mock: resetting connection {}", ctx.id);
                break;
            }
            _ = ctx.goaway.cancelled(), if !going_away => {
                going_away = true;
                counters.conns.goaways.fetch_add(1, Ordering::Relaxed);
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.cancelled() => {
                if !going_away {
                    conn.as_mut().graceful_shutdown();
                }
                let _ = tokio::time::timeout(grace, conn.as_mut()).await;
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Body

/// Error a body reports to hyper to cut the connection mid-response.
#[derive(Debug)]
pub struct Cut;
impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock: connection cut on purpose")
    }
}
impl std::error::Error for Cut {}

/// Error the service reports to hyper to drop the connection without answering.
#[derive(Debug)]
pub struct ResetConnection;
impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock: connection reset on purpose")
    }
}
impl std::error::Error for ResetConnection {}

/// How a scripted body ends after its frames.
enum End {
    /// Send the tail, then end normally.
    Complete,
    /// Let hyper flush, then cut the connection.
    Cut,
    CutNow,
    /// Go silent until the client goes away.
    Stall,
    /// Send this invalid frame, then end.
    Malformed(Bytes),
    /// Nothing more.
    Finished,
}

/// A response body that paces its frames and misbehaves on cue.
pub struct Scripted {
    frames: Vec<Bytes>,
    next: usize,
    /// Frames to send before `end` takes over.
    limit: usize,
    tail: Bytes,
    first_delay: Duration,
    chunk_delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    slept: bool,
    end: End,
    guard: Option<RequestGuard>,
}

/// The mock's response body.
pub enum MockBody {
    Full(Option<Bytes>),
    Scripted(Box<Scripted>),
}

impl MockBody {
    fn full(b: Bytes) -> Self {
        MockBody::Full(Some(b))
    }
    fn empty() -> Self {
        MockBody::Full(None)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Scripted(s) => s.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            // Unknown: hyper then honours an explicit Content-Length header (the cut fault
            // announces more than it sends) and otherwise uses chunked encoding.
            MockBody::Scripted(_) => SizeHint::default(),
        }
    }
}

impl Scripted {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        loop {
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            if self.next < self.limit && self.next < self.frames.len() {
                let delay = if self.next == 0 { self.first_delay } else { self.chunk_delay };
                if !delay.is_zero() && !self.slept {
                    self.slept = true;
                    self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
                    continue;
                }
                self.slept = false;
                let f = std::mem::take(&mut self.frames[self.next]);
                self.next += 1;
                return Poll::Ready(Some(Ok(Frame::data(f))));
            }
            match std::mem::replace(&mut self.end, End::Finished) {
                End::Complete => {
                    let tail = std::mem::take(&mut self.tail);
                    if let Some(g) = self.guard.as_mut() {
                        g.complete_stream();
                    }
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
                End::Cut => {
                    self.end = End::CutNow;
                    self.sleep = Some(Box::pin(tokio::time::sleep(CUT_FLUSH)));
                    continue;
                }
                End::CutNow => {
                    if let Some(g) = self.guard.as_mut() {
                        g.finish();
                    }
                    return Poll::Ready(Some(Err(Cut)));
                }
                End::Stall => {
                    // Never woken: hyper notices the client's EOF and drops this body, and the
                    // guard then counts the disconnect.
                    self.end = End::Stall;
                    return Poll::Pending;
                }
                End::Malformed(b) => {
                    if let Some(g) = self.guard.as_mut() {
                        g.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                End::Finished => {
                    if let Some(g) = self.guard.as_mut() {
                        g.finish();
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

type Resp = Response<MockBody>;

fn respond(status: u16, content_type: &HeaderValue, body: MockBody) -> Resp {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, content_type.clone());
    r
}

fn json_resp(status: u16, body: Bytes) -> Resp {
    respond(status, &JSON, MockBody::full(body))
}

async fn handle(shared: Arc<Shared>, conn: Arc<ConnCtx>, req: Request<Incoming>) -> Result<Resp, ResetConnection> {
    if req.version() == hyper::Version::HTTP_2 {
        shared.counters.http2_request();
    }
    let _in_flight = conn.enter(&shared.counters);
    let c = &*conn;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let p = path.as_str();
    match (&method, p) {
        (&Method::POST, "/v1/chat/completions") => chat(&shared, c, req, Format::OpenAi, None, false).await,
        (&Method::POST, "/v1/messages") => chat(&shared, c, req, Format::Anthropic, None, false).await,
        (&Method::POST, _) if p.starts_with("/v1beta/models/") => {
            let rest = &p["/v1beta/models/".len()..];
            match rest.rsplit_once(':') {
                Some((model, "generateContent")) => {
                    let model = model.to_string();
                    chat(&shared, c, req, Format::Gemini, Some(model), false).await
                }
                Some((model, "streamGenerateContent")) => {
                    let model = model.to_string();
                    chat(&shared, c, req, Format::Gemini, Some(model), true).await
                }
                _ => Ok(not_found(Format::Gemini, p)),
            }
        }
        (&Method::GET | &Method::HEAD, "/v1/models") => probe(&shared, c, &req, Some(Format::OpenAi), None).await,
        (&Method::GET | &Method::HEAD, "/v1beta/models") => probe(&shared, c, &req, Some(Format::Gemini), None).await,
        (&Method::GET, _) if p.starts_with("/v1/models/") => {
            let m = p["/v1/models/".len()..].to_string();
            probe(&shared, c, &req, Some(Format::OpenAi), Some(m)).await
        }
        (&Method::GET, _) if p.starts_with("/v1beta/models/") => {
            let m = p["/v1beta/models/".len()..].to_string();
            probe(&shared, c, &req, Some(Format::Gemini), Some(m)).await
        }
        (&Method::HEAD, "/" | "/v1" | "/v1/" | "/v1beta" | "/v1beta/") | (&Method::GET | &Method::HEAD, "/health") => probe(&shared, c, &req, None, None).await,
        (&Method::POST, "/_mock/script" | "/_mock/scripts") => {
            let body = match read_body(req.into_body()).await {
                Some(b) => b,
                None => return Ok(json_resp(400, Bytes::from_static(b"{\"error\":\"could not read the body\"}"))),
            };
            let res = serde_json::from_slice::<Value>(&body).map_err(|e| format!("invalid JSON: {e}")).and_then(|v| shared.set_scripts(&v));
            Ok(match res {
                Ok(()) => json_resp(200, Bytes::from_static(b"{\"ok\":true}")),
                Err(e) => json_resp(400, Bytes::from(serde_json::json!({"error": e}).to_string())),
            })
        }
        (&Method::GET, "/_mock/counters") => Ok(json_resp(200, Bytes::from(shared.counters.snapshot().to_string()))),
        (&Method::GET, "/_mock/log") => Ok(json_resp(200, Bytes::from(shared.counters.request_log().to_string()))),
        (&Method::POST, "/_mock/goaway") => {
            let n = shared.goaway_all();
            Ok(json_resp(200, Bytes::from(serde_json::json!({"ok": true, "connections": n}).to_string())))
        }
        (&Method::POST, "/_mock/h2") => {
            let body = read_body(req.into_body()).await.unwrap_or_default();
            let parsed = serde_json::from_slice::<Value>(&body).map_err(|e| format!("invalid JSON: {e}")).and_then(|v| h2_settings(&v));
            Ok(match parsed {
                Ok(n) => {
                    shared.h2_max_streams.store(n, Ordering::Relaxed);
                    json_resp(200, Bytes::from_static(b"{\"ok\":true}"))
                }
                Err(e) => json_resp(400, Bytes::from(serde_json::json!({"error": e}).to_string())),
            })
        }
        (&Method::POST, "/_mock/reset") => {
            let q = req.uri().query().unwrap_or("").to_string();
            let body = read_body(req.into_body()).await.unwrap_or_default();
            let body_says = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("scripts").and_then(Value::as_bool)).unwrap_or(false);
            let scripts_too = body_says || q.split('&').any(|kv| kv == "scripts=1" || kv == "scripts=true");
            shared.counters.reset();
            if scripts_too {
                shared.clear_scripts();
            }
            Ok(json_resp(200, Bytes::from_static(b"{\"ok\":true}")))
        }
        _ => Ok(not_found(Format::OpenAi, p)),
    }
}

/// After [`ConnCtx::reset_now`]: the connection is being dropped, which drops this request
/// with it. Answering first would end the stream on its own (HTTP/2 `RST_STREAM`) before the
/// connection goes, which is not what a reset connection looks like to a client; the error
/// is only a backstop should the drop not come.
async fn reset_wait() -> Result<Resp, ResetConnection> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    Err(ResetConnection)
}

/// `{"max_concurrent_streams": n}` (1 ≤ n ≤ 2^31 - 1).
fn h2_settings(v: &Value) -> Result<u32, String> {
    let m = v.as_object().ok_or("expected an object like {\"max_concurrent_streams\": 4}")?;
    if let Some(k) = m.keys().find(|k| k.as_str() != "max_concurrent_streams") {
        return Err(format!("unknown key `{k}`; known: max_concurrent_streams"));
    }
    let n = m.get("max_concurrent_streams").ok_or("max_concurrent_streams: missing")?;
    match n.as_u64() {
        Some(n) if (1..=i32::MAX as u64).contains(&n) => Ok(n as u32),
        _ => Err(format!("max_concurrent_streams: expected an integer from 1 to {}, found {n}", i32::MAX)),
    }
}

fn not_found(format: Format, path: &str) -> Resp {
    json_resp(404, wire::error_body(format, ErrorCase::NotFound, 404, "", &format!("(no route for {path})")))
}

async fn read_body(body: Incoming) -> Option<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    limited.collect().await.ok().map(|c| c.to_bytes())
}

/// Whether the request carries the key the server requires (any of the three providers' ways).
fn key_ok(shared: &Shared, headers: &HeaderMap, query: Option<&str>) -> bool {
    let Some(want) = shared.require_key.as_ref().and_then(Secret::expose) else {
        return true;
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(b) = header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        if b.trim() == want {
            return true;
        }
    }
    for n in ["x-api-key", "x-goog-api-key", "api-key"] {
        if header(n) == Some(want) {
            return true;
        }
    }
    query.map(|q| q.split('&').any(|kv| kv.strip_prefix("key=") == Some(want))).unwrap_or(false)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id_header(format: Format) -> HeaderName {
    match format {
        Format::Anthropic => HeaderName::from_static("request-id"),
        _ => HeaderName::from_static("x-request-id"),
    }
}

/// The status a provider answers a bad key with (Gemini: 400 `API_KEY_INVALID`).
fn auth_status(format: Format) -> u16 {
    if format == Format::Gemini {
        400
    } else {
        401
    }
}

/// An error response in the provider's shape, with the step's body override, retry headers and
/// (Gemini) `RetryInfo`.
fn error_resp(format: Format, status: u16, case: ErrorCase, spec: &FaultSpec, model: &str) -> Resp {
    let body = spec.body.clone().unwrap_or_else(|| {
        let b = wire::error_body(format, case, status, model, "");
        match (&spec.retry_delay, format) {
            (Some(delay), Format::Gemini) => {
                let mut v: Value = serde_json::from_slice(&b).unwrap_or_default();
                let info = serde_json::json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay});
                match v.pointer_mut("/error/details").and_then(Value::as_array_mut) {
                    Some(d) => d.push(info),
                    None => v["error"]["details"] = serde_json::json!([info]),
                }
                Bytes::from(v.to_string())
            }
            _ => b,
        }
    });
    let ct = spec.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok());
    let mut r = match ct {
        Some(ct) => respond(status, &ct, MockBody::full(body)),
        None => json_resp(status, body),
    };
    if let Some(ra) = &spec.retry_after {
        if let Ok(v) = HeaderValue::from_str(ra) {
            r.headers_mut().insert(HeaderName::from_static("retry-after"), v);
        }
    }
    if let Some(ms) = spec.retry_after_ms {
        r.headers_mut().insert(HeaderName::from_static("retry-after-ms"), HeaderValue::from(ms));
    }
    r
}

/// The error status and case of a fault that answers with an HTTP error, if it is one. `max`,
/// `got` and `out` are the context window, the prompt and the requested output, in tokens.
fn error_of(fault: Fault, format: Format, max: u64, got: u64, out: u64) -> Option<(u16, ErrorCase)> {
    Some(match fault {
        Fault::Status(code) => (code, ErrorCase::for_status(code)),
        Fault::RateLimit => (429, ErrorCase::RateLimit),
        Fault::ServerError(code) => (code, ErrorCase::Server),
        Fault::Overloaded => match format {
            Format::Anthropic => (529, ErrorCase::Overloaded),
            _ => (503, ErrorCase::Overloaded),
        },
        Fault::Auth => (auth_status(format), ErrorCase::Auth),
        Fault::ContextWindow => (400, ErrorCase::ContextWindow { max, got, out }),
        Fault::Quota => match format {
            Format::Anthropic => (402, ErrorCase::Quota),
            _ => (429, ErrorCase::Quota),
        },
        Fault::ModelNotFound => (404, ErrorCase::NotFound),
        Fault::ContentFilter if format != Format::Gemini => (400, ErrorCase::ContentFilter),
        _ => return None,
    })
}

async fn chat(
    shared: &Arc<Shared>,
    conn: &ConnCtx,
    req: Request<Incoming>,
    format: Format,
    path_model: Option<String>,
    path_stream: bool,
) -> Result<Resp, ResetConnection> {
    let (mut parts, body) = req.into_parts();
    let Some(body) = read_body(body).await else {
        // The client went away (or sent too much) before the request was complete.
        return Ok(json_resp(400, wire::error_body(format, ErrorCase::BadRequest, 400, "", "request body unreadable")));
    };
    let counters = &shared.counters;
    let parsed = match wire::parse_request(&body) {
        Ok(p) => p,
        Err(e) => {
            counters.request(None);
            counters.outcome(None, "bad_request");
            counters.status(None, 400);
            return Ok(json_resp(400, wire::error_body(format, ErrorCase::BadRequest, 400, "", &e)));
        }
    };
    let model_name = match path_model.as_deref().or(parsed.model.as_deref()) {
        Some(m) if !m.is_empty() => m,
        _ => {
            counters.request(None);
            counters.outcome(None, "bad_request");
            counters.status(None, 400);
            let body = wire::error_body(format, ErrorCase::BadRequest, 400, "", "model: field required");
            return Ok(json_resp(400, body));
        }
    };
    let ms = counters.model(model_name);
    counters.request(Some(&ms));
    let authorized = key_ok(shared, &parts.headers, parts.uri.query());
    for h in AUTH_HEADERS {
        parts.headers.remove(*h);
    }
    ms.remember(&body, parts.headers);
    let model = Some(&*ms);
    if !authorized {
        counters.outcome(model, "auth_rejected");
        counters.status(model, 401);
        let status = auth_status(format);
        return Ok(json_resp(status, wire::error_body(format, ErrorCase::Auth, status, &ms.name, "")));
    }

    let script = shared.script_for(&ms.name);
    // What the real API would refuse, refused here (before any scripted step is used).
    let rules = super::validate::Rules { thought_signatures: script.behaviour.thought_signature };
    let checked = serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()).and_then(|v| super::validate::check(format, &v, rules));
    if let Err(why) = checked {
        counters.outcome(model, "bad_request");
        counters.status(model, 400);
        log::debug!("mock: refused a {format:?} request for {}: {why}", ms.name);
        return Ok(json_resp(400, wire::error_body(format, ErrorCase::BadRequest, 400, &ms.name, &why)));
    }
    let mut guard = RequestGuard::new(counters.clone(), ms.clone());
    guard.server_closed_when(conn.closed_by_server.clone());
    let prompt_tokens = parsed.prompt_tokens();
    let stream = path_stream || parsed.stream;
    let over = script.max_prompt_tokens.filter(|max| prompt_tokens > *max);
    let context_fault;
    let (behaviour, spec) = match over {
        Some(_) => {
            context_fault = FaultSpec::new(Fault::ContextWindow);
            (script.behaviour.clone(), &context_fault)
        }
        None => script.resolve(ms.next_index(&script)),
    };
    counters.outcome(model, spec.fault.name());
    if spec.fault == Fault::GoAway {
        conn.goaway.cancel();
    }
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }

    let max = script.max_prompt_tokens.unwrap_or(match format {
        Format::OpenAi => 8192,
        Format::Anthropic => 200_000,
        Format::Gemini => 1_048_576,
    });
    // A content filter that stops a stream midway refuses a non-streaming request outright.
    let fault = match spec.fault {
        Fault::FilterAfter(_) if !stream => Fault::ContentFilter,
        f => f,
    };
    let out = parsed.max_tokens.unwrap_or(0);
    if let Some((status, case)) = error_of(fault, format, max, prompt_tokens, out) {
        counters.status(model, status);
        guard.finish();
        return Ok(error_resp(format, status, case, spec, &ms.name));
    }

    let ctx = Ctx {
        format,
        model_json: &ms.name_json,
        model: &ms.name,
        request_no: shared.next_request.fetch_add(1, Ordering::Relaxed),
        prompt_tokens,
        created: now_secs(),
    };
    let rid = HeaderValue::from_str(&ctx.request_id()).unwrap_or_else(|_| HeaderValue::from_static("req_mock"));
    let extras = wire::ToolExtras {
        thought_signature: behaviour.thought_signature && format == Format::Gemini,
        thinking: parsed.thinking && format == Format::Anthropic,
    };
    let with_id = |mut r: Resp| {
        r.headers_mut().insert(request_id_header(format), rid.clone());
        r
    };

    match spec.fault {
        Fault::Hang => {
            // The guard stays unfinished: when hyper drops this future because the client
            // closed the connection, the disconnect is counted.
            std::future::pending::<()>().await;
            unreachable!("pending() never completes")
        }
        Fault::Reset => {
            guard.finish();
            conn.reset_now(counters);
            reset_wait().await
        }
        Fault::ContentFilter => {
            // Only Gemini reaches here (the others answered 400 above): 200 with SAFETY.
            counters.status(model, 200);
            let body = wire::gemini_blocked(&ctx);
            guard.finish();
            Ok(with_id(if stream { respond(200, &SSE, MockBody::full(wire::as_sse(format, &body))) } else { json_resp(200, body) }))
        }
        Fault::Malformed(_) if !stream => {
            counters.status(model, 200);
            guard.finish();
            Ok(with_id(json_resp(200, wire::malformed_body(&ctx))))
        }
        Fault::CutAfter(_) | Fault::StallAfter(_) if !stream => {
            // Announce the whole body, send half, then cut or go silent.
            counters.status(model, 200);
            let content = ms.content(behaviour.content_chars, behaviour.chunks);
            let full = wire::text_body(&ctx, &content);
            let len = full.len();
            let half = full.slice(..len / 2);
            let end = if matches!(spec.fault, Fault::CutAfter(_)) { End::Cut } else { End::Stall };
            let body = Scripted {
                frames: vec![half],
                next: 0,
                limit: 1,
                tail: Bytes::new(),
                first_delay: Duration::ZERO,
                chunk_delay: Duration::ZERO,
                sleep: None,
                slept: false,
                end,
                guard: Some(guard),
            };
            let mut r = respond(200, &JSON, MockBody::Scripted(Box::new(body)));
            r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
            Ok(with_id(r))
        }
        Fault::Refusal(after) if !stream => {
            counters.status(model, 200);
            let content = ms.content(behaviour.content_chars, behaviour.chunks);
            let text: String =
                wire::split_chars(&wire::content_text(&ms.name, behaviour.content_chars), content.chunks_requested).into_iter().take(after as usize).collect();
            guard.finish();
            Ok(with_id(json_resp(200, wire::refusal_body(&ctx, &text))))
        }
        _ if !stream => {
            counters.status(model, 200);
            let body = match (&parsed.first_tool, behaviour.tool_call) {
                (Some(tool), true) => wire::tool_body(&ctx, tool, extras),
                _ => wire::text_body(&ctx, &ms.content(behaviour.content_chars, behaviour.chunks)),
            };
            guard.finish();
            Ok(with_id(json_resp(200, body)))
        }
        fault => {
            counters.status(model, 200);
            guard.streaming();
            let (plan, words) = match (&parsed.first_tool, behaviour.tool_call) {
                (Some(tool), true) => (wire::tool_stream(&ctx, tool, parsed.include_usage, extras), 1),
                _ => {
                    let content = ms.content(behaviour.content_chars, behaviour.chunks);
                    (wire::text_stream(&ctx, &content, parsed.include_usage), content.words as usize)
                }
            };
            let plan = match fault {
                Fault::Refusal(after) => wire::refusal_stream(&ctx, plan, after as usize),
                _ => plan,
            };
            let n = plan.frames.len();
            let (limit, end) = match fault {
                Fault::CutAfter(k) => ((k as usize).min(n), End::Cut),
                Fault::StallAfter(k) => ((k as usize).min(n), End::Stall),
                Fault::Malformed(k) => ((k as usize).min(n), End::Malformed(wire::malformed_frame(format))),
                Fault::FilterAfter(k) => ((k as usize).min(n), End::Malformed(wire::filter_frame(format, &ctx))),
                _ => (n, End::Complete),
            };
            if matches!(end, End::Complete) && behaviour.is_instant() {
                guard.complete_stream();
                return Ok(with_id(respond(200, &SSE, MockBody::full(plan.concat()))));
            }
            let StreamPlan { frames, tail } = plan;
            let body = Scripted {
                frames,
                next: 0,
                limit,
                tail,
                first_delay: Duration::from_millis(behaviour.ttft_ms),
                chunk_delay: behaviour.chunk_delay(words, n),
                sleep: None,
                slept: false,
                end,
                guard: Some(guard),
            };
            Ok(with_id(respond(200, &SSE, MockBody::Scripted(Box::new(body)))))
        }
    }
}

/// Health probes: `GET /v1/models[/{m}]`, `GET /v1beta/models[/{m}]`, `HEAD /`, `GET /health`.
async fn probe(shared: &Arc<Shared>, conn: &ConnCtx, req: &Request<Incoming>, format: Option<Format>, model: Option<String>) -> Result<Resp, ResetConnection> {
    let counters = &shared.counters;
    let ms: Option<Arc<ModelState>> = model.as_deref().map(|m| counters.model(m));
    counters.probe(ms.as_deref());
    let scripts = shared.scripts.load();
    let model_health =
        model.as_deref().and_then(|m| scripts.get(m)).and_then(|s| s.health.as_deref()).or_else(|| scripts.get("*").and_then(|s| s.health.as_deref()));
    let script: Option<&Script> = match &ms {
        Some(_) => model_health.or_else(|| scripts.get(HEALTH_KEY).map(|s| &**s)),
        None => scripts.get(HEALTH_KEY).map(|s| &**s).or(model_health),
    };
    let (behaviour, spec) = match script {
        Some(s) => {
            let idx = match &ms {
                Some(m) => m.next_health_index(s),
                None => counters.next_global_health_index(s),
            };
            let (b, f) = s.resolve(idx);
            (b, f.clone())
        }
        None => (Default::default(), FaultSpec::default()),
    };
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    let fmt = format.unwrap_or(Format::OpenAi);
    let name = model.as_deref().unwrap_or("");
    let head = req.method() == Method::HEAD;
    if format.is_some() && !key_ok(shared, req.headers(), req.uri().query()) {
        let status = auth_status(fmt);
        return Ok(json_resp(status, wire::error_body(fmt, ErrorCase::Auth, status, name, "")));
    }
    if let Some((status, case)) = error_of(spec.fault, fmt, 0, 0, 0) {
        return Ok(error_resp(fmt, status, case, &spec, name));
    }
    match spec.fault {
        Fault::Hang | Fault::StallAfter(_) => {
            std::future::pending::<()>().await;
            unreachable!("pending() never completes")
        }
        Fault::Reset | Fault::CutAfter(_) => {
            conn.reset_now(counters);
            reset_wait().await
        }
        Fault::Malformed(_) => Ok(json_resp(200, Bytes::from_static(b"{\"data\":["))),
        _ if head => Ok(respond(200, &JSON, MockBody::empty())),
        _ => {
            let body = match (format, &model) {
                (None, _) => Bytes::from_static(b"{\"status\":\"ok\"}"),
                (Some(f), Some(m)) => wire::model_info(f, m),
                (Some(f), None) => {
                    let mut names: Vec<String> = scripts.keys().filter(|k| !k.starts_with('_') && k.as_str() != "*").cloned().collect();
                    for n in counters.model_names() {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                    if names.is_empty() {
                        names.push("mock-model".into());
                    }
                    names.sort();
                    wire::models_list(f, &names)
                }
            };
            Ok(json_resp(200, body))
        }
    }
}
