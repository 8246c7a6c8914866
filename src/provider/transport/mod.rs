//! The HTTP transports behind one interface: [`HttpPool`] hands out a [`Client`] per origin and
//! connection settings, a [`Request`] goes out through [`Client::send`], and a [`Response`] is
//! read the same way whichever transport carried it.
//!
//! - HTTP/1.1 (`http_version = "1.1"`, and `"auto"` wherever HTTP/2 is not offered): reqwest,
//!   one connection per in-flight request, like the official SDKs ([`h1`]).
//! - HTTP/2 (`"2"`, and `"auto"` when TLS's ALPN picks h2): hyper's `client::conn::http2`
//!   directly, under this module's own pool: several connections per origin when the peer's
//!   stream limit is reached, GOAWAY handled without losing requests, keep-alive PINGs, idle
//!   connections closed ([`h2`]). reqwest's own HTTP/2 costs ~6 µs of CPU and ~3 KB per
//!   in-flight request in its layers, and puts every request to a host on one connection.
//!
//! Both use one TLS verifier per pool ([`tls`]): the platform's roots, as reqwest uses.
//! `ECHELON_HTTP2_CLIENT=reqwest` (read when a pool is created) sends HTTP/2 through reqwest as
//! before this module existed; it is there so benchmarks can compare the two in one run.

pub mod frames;
pub mod h1;
pub mod h2;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::config::HttpVersion;
use crate::provider::classify::error_chain;
pub use h2::{ConnStatus, H2Tuning, OriginStatus};

/// The `user-agent` every request carries.
pub const USER_AGENT: &str = concat!("echelon/", env!("CARGO_PKG_VERSION"));

/// The environment variable choosing the HTTP/2 client (see the module doc).
pub const HTTP2_CLIENT_VAR: &str = "ECHELON_HTTP2_CLIENT";

/// Which client carries HTTP/2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Http2Client {
    /// This module's transport on hyper (the default).
    #[default]
    Hyper,
    /// reqwest's own HTTP/2, one connection per host: the previous path, for comparisons.
    Reqwest,
}

impl Http2Client {
    /// From `ECHELON_HTTP2_CLIENT` (`hyper` or `reqwest`; unset or empty = `hyper`).
    pub fn from_env() -> Result<Http2Client, String> {
        match std::env::var(HTTP2_CLIENT_VAR) {
            Err(_) => Ok(Http2Client::Hyper),
            Ok(v) => match v.trim() {
                "" | "hyper" => Ok(Http2Client::Hyper),
                "reqwest" => Ok(Http2Client::Reqwest),
                other => Err(format!("{HTTP2_CLIENT_VAR}={other:?} is not one of: hyper, reqwest")),
            },
        }
    }
}

/// How a pool builds its clients.
#[derive(Clone, Debug, Default)]
pub struct PoolOptions {
    /// Roots trusted besides the platform's (both transports).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// HTTP/2 connection tuning.
    pub h2: H2Tuning,
    /// Which client carries HTTP/2.
    pub http2_client: Http2Client,
}

/// What a connection to an origin is opened with (from the model's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnSettings {
    /// TCP (and TLS, and HTTP/2 handshake) time limit.
    pub connect: Option<Duration>,
    /// The protocol (`http_version`).
    pub version: HttpVersion,
    /// HTTP/2 connections per origin at most.
    pub max_connections: u32,
    /// How long a connection without requests stays open.
    pub idle: Duration,
}

type PoolKey = (String, ConnSettings);

struct PoolInner {
    clients: Mutex<HashMap<PoolKey, Client>>,
    options: PoolOptions,
    /// Why the environment's choice of HTTP/2 client is unusable.
    env_error: Option<String>,
    tls: OnceLock<Result<Arc<tls::Tls>, String>>,
}

/// Shared HTTP connection pools: one client per (origin, connection settings). One per router
/// (it outlives reloads); cheap to clone.
#[derive(Clone)]
pub struct HttpPool {
    inner: Arc<PoolInner>,
}

impl Default for HttpPool {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpPool {
    /// An empty pool with default options (`ECHELON_HTTP2_CLIENT` read now); clients are
    /// created on first use of each origin.
    pub fn new() -> Self {
        let (http2_client, env_error) = match Http2Client::from_env() {
            Ok(c) => (c, None),
            Err(e) => (Http2Client::Hyper, Some(e)),
        };
        Self::build(PoolOptions { http2_client, ..Default::default() }, env_error)
    }

    /// An empty pool with `options` (the environment is not read).
    pub fn with_options(options: PoolOptions) -> Self {
        Self::build(options, None)
    }

    fn build(options: PoolOptions, env_error: Option<String>) -> Self {
        HttpPool { inner: Arc::new(PoolInner { clients: Mutex::default(), options, env_error, tls: OnceLock::new() }) }
    }

    fn tls(&self) -> Result<Arc<tls::Tls>, String> {
        self.inner.tls.get_or_init(|| tls::Tls::new(&self.inner.options.extra_roots).map(Arc::new)).clone()
    }

    /// The client for `origin` (`scheme://host[:port]`) with `settings`, created on first use.
    pub fn client(&self, origin: &str, settings: &ConnSettings) -> Result<Client, String> {
        if let Some(e) = &self.inner.env_error {
            return Err(e.clone());
        }
        let key = (origin.to_string(), *settings);
        let mut map = self.inner.clients.lock();
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let client = self.make(origin, settings)?;
        map.insert(key, client.clone());
        Ok(client)
    }

    fn make(&self, origin: &str, s: &ConnSettings) -> Result<Client, String> {
        use h1::Flavour;
        let tls = self.tls()?;
        let url = reqwest::Url::parse(origin).map_err(|e| format!("origin {origin:?}: {e}"))?;
        let https = url.scheme() == "https";
        let reqwest = |f: Flavour| h1::client(f, s.connect, s.idle, &tls).map(Client::Reqwest);
        let hyper = self.inner.options.http2_client == Http2Client::Hyper;
        match s.version {
            HttpVersion::Http1 => reqwest(Flavour::Http1),
            HttpVersion::Auto if !https => reqwest(Flavour::Http1),
            HttpVersion::Auto if !hyper => reqwest(Flavour::Alpn),
            HttpVersion::Http2 if !hyper => reqwest(Flavour::Http2),
            HttpVersion::Auto | HttpVersion::Http2 => {
                let auto = s.version == HttpVersion::Auto;
                let host = url.host_str().ok_or_else(|| format!("origin {origin:?} has no host"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
                let port = url.port_or_known_default().ok_or_else(|| format!("origin {origin:?} has no port"))?;
                let http1 = if auto { Some(h1::client(Flavour::Http1, s.connect, s.idle, &tls)?) } else { None };
                let tls = if https {
                    let alpn: &[&[u8]] = if auto { &[tls::ALPN_H2, tls::ALPN_HTTP1] } else { &[tls::ALPN_H2] };
                    let name = ServerName::try_from(host.clone()).map_err(|e| format!("origin {origin:?}: {e}"))?;
                    Some((Arc::new(tls.client_config(alpn)?), name))
                } else {
                    None
                };
                let spec = h2::Spec {
                    label: format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
                    host,
                    port,
                    tls,
                    http1,
                    max_connections: s.max_connections.max(1) as usize,
                    idle: s.idle,
                    connect_timeout: s.connect,
                    tuning: self.inner.options.h2.clone(),
                };
                Ok(Client::Http2(h2::Origin::new(spec)))
            }
        }
    }

    /// How many distinct clients (origin × connection settings) exist; for tests and status.
    pub fn len(&self) -> usize {
        self.inner.clients.lock().len()
    }

    /// True when no client has been created yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The HTTP/2 origins of this pool and their connections.
    pub fn http2_status(&self) -> Vec<OriginStatus> {
        let origins: Vec<Arc<h2::Origin>> = self
            .inner
            .clients
            .lock()
            .values()
            .filter_map(|c| match c {
                Client::Http2(o) => Some(o.clone()),
                Client::Reqwest(_) => None,
            })
            .collect();
        origins.iter().map(|o| o.status()).collect()
    }
}

/// A client for one origin. Cheap to clone.
#[derive(Clone)]
pub enum Client {
    /// reqwest (HTTP/1.1, or reqwest's HTTP/2 when chosen by the environment).
    Reqwest(reqwest::Client),
    /// The HTTP/2 transport (falls back to its HTTP/1.1 client when `auto` meets a server that
    /// chose HTTP/1.1 through ALPN).
    Http2(Arc<h2::Origin>),
}

impl Client {
    /// Start sending `req`. The returned future resolves with the response headers; dropping
    /// it cancels the request (on HTTP/2, `RST_STREAM`).
    pub fn send(
        &self,
        req: Request,
    ) -> Sending<impl Future<Output = reqwest::Result<reqwest::Response>> + Send + Unpin, impl Future<Output = Result<Response, SendError>> + Send> {
        match self {
            Client::Reqwest(c) => Sending::Reqwest(c.execute(req.into_reqwest())),
            Client::Http2(o) => match o.http1() {
                Some(c) => Sending::Reqwest(c.execute(req.into_reqwest())),
                None => Sending::Http2(Box::pin(h2::send(o.clone(), req))),
            },
        }
    }
}

/// A request being sent (see [`Client::send`]); `F` is reqwest's own future, `G` the HTTP/2
/// transport's.
pub enum Sending<F, G> {
    /// reqwest's future (kept inline: it is small, and boxed inside reqwest already).
    Reqwest(F),
    /// The HTTP/2 transport's, boxed (a thin pointer): it is larger, and the per-request future
    /// of the engine stays small.
    Http2(Pin<Box<G>>),
}

impl<F: Future<Output = reqwest::Result<reqwest::Response>> + Unpin, G: Future<Output = Result<Response, SendError>>> Future for Sending<F, G> {
    type Output = Result<Response, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Sending::Reqwest(p) => Pin::new(p).poll(cx).map(|r| r.map(Response::H1).map_err(SendError::Reqwest)),
            Sending::Http2(f) => f.as_mut().poll(cx),
        }
    }
}

/// A URL parsed for both transports.
#[derive(Debug)]
pub struct Target {
    url: reqwest::Url,
    uri: hyper::Uri,
}

impl Target {
    /// Parse an absolute `http(s)://` URL.
    pub fn parse(s: &str) -> Result<Target, String> {
        let url = reqwest::Url::parse(s).map_err(|e| e.to_string())?;
        let uri = url.as_str().parse::<hyper::Uri>().map_err(|e| e.to_string())?;
        Ok(Target { url, uri })
    }
}

/// Request headers: the caller's own map, or one of two shared per-model maps (cloned only when
/// a request is built, and again only if it must be sent again).
#[derive(Clone, Debug)]
pub enum Headers {
    /// A map of this request's own.
    Owned(HeaderMap),
    /// Entry `.1` of a pair of maps kept by the model's client.
    Shared(Arc<[HeaderMap; 2]>, usize),
}

impl Headers {
    fn to_map(&self) -> HeaderMap {
        match self {
            Headers::Owned(h) => h.clone(),
            Headers::Shared(h, i) => h[*i].clone(),
        }
    }
    fn into_map(self) -> HeaderMap {
        match self {
            Headers::Owned(h) => h,
            Headers::Shared(h, i) => h[i].clone(),
        }
    }
}

/// An HTTP request for either transport.
pub struct Request {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub target: Arc<Target>,
    /// The headers (auth included, marked sensitive).
    pub headers: Headers,
    /// The body (empty: none).
    pub body: Bytes,
}

impl Request {
    fn into_reqwest(self) -> reqwest::Request {
        let mut r = reqwest::Request::new(self.method, self.target.url.clone());
        *r.headers_mut() = self.headers.into_map();
        if !self.body.is_empty() {
            *r.body_mut() = Some(self.body.into());
        }
        r
    }

    pub(crate) fn to_hyper(&self) -> hyper::Request<Full<Bytes>> {
        let mut r = hyper::Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.target.uri.clone();
        *r.headers_mut() = self.headers.to_map();
        r
    }
}

/// Why a request got no response headers.
#[derive(Debug)]
pub enum SendError {
    /// From reqwest (classified by its own flags).
    Reqwest(reqwest::Error),
    /// No HTTP/2 connection within the connect timeout.
    ConnectTimeout(String),
    /// No HTTP/2 connection (refused, DNS, TLS, not HTTP/2).
    Connect(String),
    /// The HTTP/2 connection or stream failed.
    Http(String),
}

/// A response whose headers are in; the body is read with [`Response::chunk`] or as a stream.
pub enum Response {
    /// reqwest's (HTTP/1.1, or its HTTP/2 when chosen by the environment).
    H1(reqwest::Response),
    /// Boxed so a response is no larger than reqwest's (it sits in every call's future).
    H2(Box<H2Response>),
}

/// The HTTP/2 transport's response.
pub struct H2Response {
    status: StatusCode,
    headers: HeaderMap,
    body: H2Body,
}

/// An HTTP/2 response body; holds its stream's slot until it ends or is dropped (dropping it
/// before the end resets the stream).
pub struct H2Body {
    body: Incoming,
    slot: Option<h2::Slot>,
}

impl Response {
    pub(crate) fn h2(resp: hyper::Response<Incoming>, slot: h2::Slot) -> Response {
        let (parts, body) = resp.into_parts();
        let slot = (!body.is_end_stream()).then_some(slot);
        Response::H2(Box::new(H2Response { status: parts.status, headers: parts.headers, body: H2Body { body, slot } }))
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        match self {
            Response::H1(r) => r.status(),
            Response::H2(r) => r.status,
        }
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        match self {
            Response::H1(r) => r.headers(),
            Response::H2(r) => &r.headers,
        }
    }

    /// The next piece of the body (`None` at its end); errors come rendered (cause chain, no
    /// URL). A plain future rather than an `async fn`: it sits in every call's future while
    /// the body is read, and wrapping reqwest's would add 16 bytes there.
    pub fn chunk(&mut self) -> Chunk<'_, impl Future<Output = reqwest::Result<Option<Bytes>>> + '_> {
        match self {
            Response::H1(r) => Chunk::H1 { fut: r.chunk() },
            Response::H2(r) => Chunk::H2 { body: &mut r.body },
        }
    }

    /// The body as a stream of chunks (errors rendered as for [`Response::chunk`]).
    pub fn into_body(self) -> super::stream::Body {
        match self {
            Response::H1(r) => Box::pin(r.bytes_stream().map(|r| r.map_err(|e| error_chain(&e.without_url())))),
            Response::H2(r) => Box::pin(r.body),
        }
    }
}

pin_project_lite::pin_project! {
    /// The next chunk of a [`Response`] (see [`Response::chunk`]).
    #[project = ChunkProj]
    #[allow(missing_docs)]
    pub enum Chunk<'a, F> {
        H1 { #[pin] fut: F },
        H2 { body: &'a mut H2Body },
    }
}

impl<F: Future<Output = reqwest::Result<Option<Bytes>>>> Future for Chunk<'_, F> {
    type Output = Result<Option<Bytes>, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ChunkProj::H1 { fut } => fut.poll(cx).map(|r| r.map_err(|e| error_chain(&e.without_url()))),
            ChunkProj::H2 { body } => Pin::new(&mut **body).poll_next(cx).map(Option::transpose),
        }
    }
}

impl Stream for H2Body {
    type Item = Result<Bytes, String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.slot = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.slot = None;
                    return Poll::Ready(Some(Err(error_chain(&e))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) if !d.is_empty() => return Poll::Ready(Some(Ok(d))),
                    // Trailers and empty frames carry nothing for the reader.
                    _ => continue,
                },
            }
        }
    }
}
