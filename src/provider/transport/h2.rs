//! The HTTP/2 transport: hyper's `client::conn::http2` under a pool of connections per origin.
//!
//! # How a request finds a stream
//!
//! 1. The fast path ([`Origin::try_acquire`], one short lock): the first open connection below
//!    its peer's `SETTINGS_MAX_CONCURRENT_STREAMS` takes the request (connections fill in order,
//!    so the last ones fall idle and close when load drops).
//! 2. Otherwise (or while others wait: newcomers do not pass the line) the request waits in the
//!    origin's line ([`Origin::acquire_slow`]). It opens a connection itself when fewer than the
//!    origin's cap are open and the connections already being opened will not serve everyone
//!    waiting (each is expected to take as many streams as the last peer announced); else it
//!    sleeps until a stream is freed (the oldest waiter is woken), a connection comes up or goes
//!    away. A connect failure fails the request that tried it only while no connection is open;
//!    otherwise it waits for a stream like the others, and no connection is tried for
//!    [`CONNECT_BACKOFF`].
//! 3. The stream's slot ([`Slot`]) is held by the response body and given back when the body
//!    ends or is dropped; dropping a body or a response future before the end resets the stream
//!    (hyper sends `RST_STREAM(CANCEL)`).
//!
//! # Connections
//!
//! Each connection reads the peer's frames through [`super::frames::Tapped`], so a new stream
//! limit or a GOAWAY takes effect the moment it arrives. A new connection is used once the
//! peer's first SETTINGS frame is in (its limit is known then), within the connect timeout.
//! After a GOAWAY a connection takes no new stream; the streams it accepted finish. A stream
//! the peer never processed (above the GOAWAY's last stream id, or refused with
//! `REFUSED_STREAM`) and a request that never left (the connection closed first) are sent
//! again, at most [`MAX_RESENDS`] times (after a GOAWAY or a close, on another connection); so
//! is the one request hyper's dispatch task drops when it notices the GOAWAY (it was being
//! handed to h2 at that instant; if its stream had gone out, hyper resets it, so the provider
//! may see that first attempt cancelled). A connection that breaks (reset, broken pipe, end of
//! stream) after its peer's GOAWAY is a server closing once it thinks its accepted streams are
//! done: a stream of it still without a response head either came too late to be accepted or
//! lost its answer to the reset, and is sent again the same way (browsers resend there too).
//! Every other failure is returned, and fails only the streams of that connection. Keep-alive PINGs run on idle connections too, and a connection
//! without streams closes after the origin's idle time.
//!
//! Flow control: each stream may have [`H2Tuning::stream_window`] bytes unread, and the
//! connection window is the protocol's maximum, so one slow reader holds at most its own
//! window and can never stall the other streams of its connection.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frames::{Frame, FrameReader, FrameSink, Tapped};
use super::{Request, Response, SendError};
use crate::provider::classify::error_chain;

/// How often one request is sent again after its stream was refused unprocessed.
pub const MAX_RESENDS: u32 = 5;

/// What SETTINGS_MAX_CONCURRENT_STREAMS is taken to be until the peer says otherwise (hyper's
/// and h2's own assumption, so both count alike).
const DEFAULT_PEER_STREAMS: usize = 100;

/// After a connection failed to open while others are open, no new one is tried for this long
/// (requests wait for a stream on the open ones): a server refusing more connections must not
/// turn every waiting request into a connect loop.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Connection tuning that is not configuration (the same for every origin of a pool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Tuning {
    /// A PING goes out after this long without frames from the peer, idle or not.
    pub keep_alive_interval: Duration,
    /// A PING unanswered for this long closes the connection (its streams fail).
    pub keep_alive_timeout: Duration,
    /// Bytes each stream may have received and not yet read.
    pub stream_window: u32,
    /// Bytes all streams of a connection may have received and not yet read.
    pub connection_window: u32,
}

impl Default for H2Tuning {
    fn default() -> Self {
        H2Tuning {
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
            stream_window: 1024 * 1024,
            // The protocol's maximum: the connection window never binds before the streams' own.
            connection_window: (1u32 << 31) - 1,
        }
    }
}

/// Where and how an origin connects.
pub(crate) struct Spec {
    /// `scheme://host:port`, for messages and status.
    pub label: String,
    pub host: String,
    pub port: u16,
    /// TLS settings (ALPN included) for `https://`; `None` speaks h2c with prior knowledge.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// `http_version = "auto"`: ALPN may choose HTTP/1.1, and then every request goes to
    /// `http1` instead.
    pub http1: Option<reqwest::Client>,
    pub max_connections: usize,
    pub idle: Duration,
    pub connect_timeout: Option<Duration>,
    pub tuning: H2Tuning,
}

/// The HTTP/2 connections to one origin and the requests waiting for a stream on them.
pub struct Origin {
    spec: Spec,
    state: Mutex<State>,
    /// Woken when a stream is freed (one waiter) or when connections change (every waiter).
    notify: Notify,
    /// Requests in [`Origin::acquire_slow`]; releases only wake someone when it is non-zero.
    waiting: AtomicUsize,
    /// Set once ALPN chose HTTP/1.1 (`auto` only): read without the lock on every request.
    http1: AtomicBool,
    /// Cancelled when the origin goes away: its idle connections close at once.
    closing: CancellationToken,
    /// What `Conn::last_used` counts from.
    epoch: Instant,
}

struct State {
    conns: Vec<Arc<Conn>>,
    connecting: usize,
    /// The stream limit the last connection's peer announced.
    last_limit: usize,
    next_id: u64,
    /// No new connection before this (see [`CONNECT_BACKOFF`]).
    connect_after: Option<Instant>,
}

/// One HTTP/2 connection.
struct Conn {
    id: u64,
    sender: SendRequest<Full<Bytes>>,
    peer: Arc<Peer>,
    /// Streams taken; increments under the origin's lock, decrements without it.
    active: AtomicUsize,
    /// When the last stream was given back, in nanoseconds since the origin's epoch (for the
    /// idle timer).
    last_used: AtomicU64,
}

/// What the peer said, as read by the connection's frame tap.
struct Peer {
    max_streams: AtomicUsize,
    settings: AtomicBool,
    /// Takes no new streams: the peer sent GOAWAY, or a request found it unable to send.
    goaway: AtomicBool,
    /// The peer itself sent GOAWAY (a server closing on purpose, not a broken connection).
    peer_goaway: AtomicBool,
    closed: AtomicBool,
    /// For the request opening the connection: the first SETTINGS arrived, or the connection
    /// closed.
    changed: Notify,
    origin: Weak<Origin>,
}

impl FrameSink for Peer {
    fn frame(&self, frame: Frame) {
        match frame {
            Frame::Settings { max_concurrent_streams } => {
                if let Some(n) = max_concurrent_streams {
                    let before = self.max_streams.swap(n as usize, SeqCst);
                    if n as usize > before {
                        self.wake_origin();
                    }
                }
                if !self.settings.swap(true, SeqCst) {
                    self.changed.notify_waiters();
                }
            }
            Frame::GoAway { .. } if !self.peer_goaway.swap(true, SeqCst) => {
                self.goaway.store(true, SeqCst);
                log::debug!("HTTP/2: the peer sent GOAWAY; new streams go to another connection");
                self.wake_origin();
            }
            _ => {}
        }
    }
}

impl Peer {
    fn wake_origin(&self) {
        if let Some(o) = self.origin.upgrade() {
            o.notify.notify_waiters();
        }
    }
}

impl Conn {
    fn usable(&self) -> bool {
        !self.peer.goaway.load(SeqCst) && !self.peer.closed.load(SeqCst) && !self.sender.is_closed()
    }

    /// Take no more streams on this connection (it could not send).
    fn retire(&self) {
        self.peer.goaway.store(true, SeqCst);
    }
}

/// A stream on a connection, held until the response body ends or is dropped.
pub struct Slot {
    origin: Arc<Origin>,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The idle clock only matters once the connection has no stream left (and reading the
        // clock on every release is measurable at tens of thousands of requests a second).
        if self.conn.active.fetch_sub(1, SeqCst) == 1 {
            self.conn.last_used.store(self.origin.since_epoch(Instant::now()), Relaxed);
        }
        if self.origin.waiting.load(SeqCst) > 0 {
            self.origin.notify.notify_one();
        }
    }
}

/// Status of one origin (for tests and diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginStatus {
    /// `scheme://host:port`.
    pub origin: String,
    /// Open connections that take new streams.
    pub connections: Vec<ConnStatus>,
    /// Connections being opened.
    pub connecting: usize,
    /// Requests waiting for a stream.
    pub waiting: usize,
    /// ALPN chose HTTP/1.1 (`auto`): requests go to the HTTP/1.1 client.
    pub http1: bool,
}

/// Status of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnStatus {
    /// Its number within the origin (1, 2, …; never reused).
    pub id: u64,
    /// Streams in use.
    pub active: usize,
    /// The peer's stream limit.
    pub max_streams: usize,
}

enum Plan {
    Got(Slot),
    Http1,
    Connect(Connecting),
    Wait,
}

/// Why no slot came.
pub(crate) enum NoSlot {
    /// ALPN chose HTTP/1.1 (`auto`).
    Http1,
    Failed(SendError),
}

/// Counts a connection being opened; dropping it (failure, cancellation) gives the count back
/// and wakes the line, whose next request may try in its place.
struct Connecting {
    origin: Arc<Origin>,
    armed: bool,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if self.armed {
            self.origin.state.lock().connecting -= 1;
            self.origin.notify.notify_waiters();
        }
    }
}

/// Counts a request in the line.
struct Waiting<'a>(&'a Origin);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.closing.cancel();
    }
}

impl Origin {
    pub(crate) fn new(spec: Spec) -> Arc<Origin> {
        Arc::new(Origin {
            spec,
            state: Mutex::new(State { conns: Vec::new(), connecting: 0, last_limit: DEFAULT_PEER_STREAMS, next_id: 1, connect_after: None }),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            http1: AtomicBool::new(false),
            closing: CancellationToken::new(),
            epoch: Instant::now(),
        })
    }

    fn since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos().min(u64::MAX as u128) as u64
    }

    /// `scheme://host:port`.
    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// The HTTP/1.1 client to use instead, once ALPN chose HTTP/1.1 (`auto` only).
    pub(crate) fn http1(&self) -> Option<&reqwest::Client> {
        if self.http1.load(Relaxed) {
            self.spec.http1.as_ref()
        } else {
            None
        }
    }

    /// The HTTP/1.1 client of an `auto` origin, whether or not ALPN chose it yet.
    pub(crate) fn http1_client(&self) -> Option<&reqwest::Client> {
        self.spec.http1.as_ref()
    }

    /// Connections, streams and waiters right now.
    pub fn status(&self) -> OriginStatus {
        let st = self.state.lock();
        OriginStatus {
            origin: self.spec.label.clone(),
            connections: st
                .conns
                .iter()
                .filter(|c| c.usable())
                .map(|c| ConnStatus { id: c.id, active: c.active.load(SeqCst), max_streams: c.peer.max_streams.load(SeqCst) })
                .collect(),
            connecting: st.connecting,
            waiting: self.waiting.load(SeqCst),
            http1: self.http1.load(SeqCst),
        }
    }

    fn pick(self: &Arc<Self>, st: &State) -> Option<Slot> {
        for c in &st.conns {
            // Increments happen under the lock, so two requests never take the last stream.
            if c.active.load(SeqCst) < c.peer.max_streams.load(SeqCst) && c.usable() {
                c.active.fetch_add(1, SeqCst);
                return Some(Slot { origin: self.clone(), conn: c.clone() });
            }
        }
        None
    }

    /// A stream on an open connection, if one has room now and no request is waiting for one
    /// (a newcomer does not pass the line).
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        if self.waiting.load(SeqCst) > 0 {
            return None;
        }
        let st = self.state.lock();
        self.pick(&st)
    }

    fn plan(self: &Arc<Self>) -> Plan {
        if self.http1.load(SeqCst) {
            return Plan::Http1;
        }
        let mut st = self.state.lock();
        st.conns.retain(|c| c.usable());
        if let Some(s) = self.pick(&st) {
            return Plan::Got(s);
        }
        let backing_off = st.connect_after.is_some_and(|t| Instant::now() < t) && !st.conns.is_empty();
        if st.conns.len() + st.connecting < self.spec.max_connections && !backing_off {
            let expected = st.connecting.saturating_mul(st.last_limit);
            if self.waiting.load(SeqCst) > expected {
                st.connecting += 1;
                return Plan::Connect(Connecting { origin: self.clone(), armed: true });
            }
        }
        Plan::Wait
    }

    /// After a failed connect: whether other connections are open (then no connect is tried
    /// for [`CONNECT_BACKOFF`], and the request waits for a stream on them).
    fn back_off(&self) -> bool {
        let mut st = self.state.lock();
        if !st.conns.iter().any(|c| c.usable()) {
            return false;
        }
        st.connect_after = Some(Instant::now() + CONNECT_BACKOFF);
        true
    }

    /// Wait for a stream (see the module doc).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the line; a stream freed for it is passed to the next
    /// request, and a connection it was opening is abandoned and counted out.
    pub(crate) async fn acquire_slow(self: Arc<Self>) -> Result<Slot, NoSlot> {
        self.waiting.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self);
        loop {
            // In the line before looking, so a stream freed in between is not missed; out of
            // it again before connecting, so a wake-up meant for a waiter is not held here for
            // the length of a handshake.
            let plan = {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.plan() {
                    Plan::Wait => {
                        notified.await;
                        continue;
                    }
                    p => p,
                }
            };
            match plan {
                Plan::Got(s) => return Ok(s),
                Plan::Http1 => return Err(NoSlot::Http1),
                // Waited for above.
                Plan::Wait => continue,
                Plan::Connect(guard) => match self.clone().open(guard).await {
                    Ok(Some(slot)) => return Ok(slot),
                    Ok(None) => continue,
                    Err(NoSlot::Http1) => return Err(NoSlot::Http1),
                    Err(NoSlot::Failed(e)) => {
                        if !self.back_off() {
                            return Err(NoSlot::Failed(e));
                        }
                        log::debug!("HTTP/2: another connection to {} failed ({e:?}); waiting for a stream", self.spec.label);
                        // Woken when a stream is freed (a release while this request was
                        // connecting left a permit, as it counts as waiting); a new connection
                        // is tried again once the back-off is over and someone still waits.
                        self.notify.notified().await;
                    }
                },
            }
        }
    }

    /// Open a connection and take a stream on it (`None` when the peer allows none).
    async fn open(self: Arc<Self>, mut guard: Connecting) -> Result<Option<Slot>, NoSlot> {
        let opening = self.connect();
        let conn = match self.spec.connect_timeout {
            Some(t) => match tokio::time::timeout(t, opening).await {
                Ok(r) => r?,
                Err(_) => return Err(NoSlot::Failed(SendError::ConnectTimeout(format!("no HTTP/2 connection to {} within {t:?}", self.spec.label)))),
            },
            None => opening.await?,
        };
        let mut st = self.state.lock();
        guard.armed = false;
        st.connecting -= 1;
        st.last_limit = conn.peer.max_streams.load(SeqCst);
        st.conns.push(conn.clone());
        let slot = if conn.usable() && conn.peer.max_streams.load(SeqCst) > 0 {
            conn.active.fetch_add(1, SeqCst);
            Some(Slot { origin: self.clone(), conn })
        } else {
            None
        };
        drop(st);
        self.notify.notify_waiters();
        Ok(slot)
    }

    /// TCP (and TLS), the HTTP/2 handshake, and the peer's first SETTINGS.
    async fn connect(self: &Arc<Self>) -> Result<Arc<Conn>, NoSlot> {
        let spec = &self.spec;
        let fail = |what: &str, e: &dyn std::fmt::Display| NoSlot::Failed(SendError::Connect(format!("{what} {}: {e}", spec.label)));
        let tcp = TcpStream::connect((spec.host.as_str(), spec.port)).await.map_err(|e| fail("cannot connect to", &e))?;
        let _ = tcp.set_nodelay(true);
        let io = match &spec.tls {
            None => Io::Plain(tcp),
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp).await.map_err(|e| {
                    let mut why = error_chain(&e);
                    if spec.http1.is_none() && why.contains("NoApplicationProtocol") {
                        why.push_str(" (the server offers no HTTP/2 over TLS, which http_version = \"2\" requires)");
                    }
                    fail("TLS handshake with", &why)
                })?;
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                match alpn.as_deref() {
                    Some(super::tls::ALPN_H2) => {}
                    // The server knows no ALPN: HTTP/2 was asked for by name, so speak it.
                    None if spec.http1.is_none() => {}
                    None | Some(_) if spec.http1.is_some() => {
                        log::debug!("HTTP/2: {} chose {:?} over TLS; using HTTP/1.1 for it", spec.label, alpn.as_deref().map(String::from_utf8_lossy));
                        self.http1.store(true, SeqCst);
                        self.notify.notify_waiters();
                        return Err(NoSlot::Http1);
                    }
                    other => {
                        let other = String::from_utf8_lossy(other.unwrap_or_default()).into_owned();
                        return Err(NoSlot::Failed(SendError::Connect(format!("{} chose {other:?}, not HTTP/2, over TLS (http_version = \"2\")", spec.label))));
                    }
                }
                Io::Tls(Box::new(tls))
            }
        };
        let peer = Arc::new(Peer {
            max_streams: AtomicUsize::new(DEFAULT_PEER_STREAMS),
            settings: AtomicBool::new(false),
            goaway: AtomicBool::new(false),
            peer_goaway: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
            origin: Arc::downgrade(self),
        });
        let io = Tapped::new(io, FrameReader::from_server(), peer.clone());
        let t = &spec.tuning;
        let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .initial_max_send_streams(DEFAULT_PEER_STREAMS)
            .initial_stream_window_size(t.stream_window)
            .initial_connection_window_size(t.connection_window)
            .keep_alive_interval(t.keep_alive_interval)
            .keep_alive_timeout(t.keep_alive_timeout)
            .keep_alive_while_idle(true);
        let (sender, connection) = b.handshake::<_, Full<Bytes>>(TokioIo::new(io)).await.map_err(|e| fail("HTTP/2 handshake with", &error_chain(&e)))?;
        let id = {
            let mut st = self.state.lock();
            st.next_id += 1;
            st.next_id - 1
        };
        let conn = Arc::new(Conn { id, sender, peer: peer.clone(), active: AtomicUsize::new(0), last_used: AtomicU64::new(self.since_epoch(Instant::now())) });
        tokio::spawn(drive(connection, Arc::downgrade(self), conn.clone(), spec.idle, self.closing.clone()));
        // Its stream limit is known once the peer's SETTINGS are in.
        loop {
            let changed = peer.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if peer.settings.load(SeqCst) {
                break;
            }
            if peer.closed.load(SeqCst) {
                return Err(NoSlot::Failed(SendError::Connect(format!(
                    "{} closed the connection before its HTTP/2 settings (does it speak HTTP/2?)",
                    spec.label
                ))));
            }
            changed.await;
        }
        log::debug!("HTTP/2: connection {id} to {} open, {} streams", spec.label, peer.max_streams.load(SeqCst));
        Ok(conn)
    }

    /// When an idle connection should be looked at again, or `None` after taking it out of
    /// the pool because it has been idle long enough.
    fn idle_check(&self, conn: &Arc<Conn>) -> Option<Instant> {
        let mut st = self.state.lock();
        let now = Instant::now();
        if conn.active.load(SeqCst) > 0 {
            return Some(now + self.spec.idle);
        }
        let due = self.epoch + Duration::from_nanos(conn.last_used.load(Relaxed)) + self.spec.idle;
        if due > now {
            return Some(due);
        }
        st.conns.retain(|c| !Arc::ptr_eq(c, conn));
        None
    }

    fn remove(&self, conn: &Arc<Conn>) {
        self.state.lock().conns.retain(|c| !Arc::ptr_eq(c, conn));
        self.notify.notify_waiters();
    }
}

/// Runs one connection: hyper's dispatch task, the idle timer, and the clean-up at the end.
async fn drive<F>(connection: F, origin: Weak<Origin>, conn: Arc<Conn>, idle: Duration, closing: CancellationToken)
where
    F: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(connection);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    log::debug!("HTTP/2: connection {} ended: {}", conn.id, error_chain(&e));
                }
                break;
            }
            _ = timer.as_mut() => {
                let Some(o) = origin.upgrade() else { break };
                match o.idle_check(&conn) {
                    Some(next) => timer.as_mut().reset(next),
                    None => {
                        log::debug!("HTTP/2: connection {} to {} idle for {idle:?}; closing it", conn.id, o.label());
                        break;
                    }
                }
            }
            _ = closing.cancelled() => break,
        }
    }
    // Leaving drops hyper's dispatch task: the connection closes once its open streams (if
    // any) are done.
    conn.peer.closed.store(true, SeqCst);
    conn.peer.changed.notify_waiters();
    if let Some(o) = origin.upgrade() {
        o.remove(&conn);
    }
}

/// Whether hyper's error says the peer never processed the stream (refused, or above the
/// last stream id of a GOAWAY), so it is safe to send the request again.
fn never_processed(e: &hyper::Error) -> bool {
    causes(e).find_map(|s| s.downcast_ref::<h2::Error>()).is_some_and(|h| h.is_remote() && (h.is_go_away() || h.reason() == Some(h2::Reason::REFUSED_STREAM)))
}

/// `e` and every error beneath it.
fn causes<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&s| s.source())
}

/// Whether hyper's error is the connection itself breaking: reset, broken pipe, aborted or an
/// unexpected end of stream.
fn connection_broke(e: &hyper::Error) -> bool {
    causes(e).find_map(|s| s.downcast_ref::<io::Error>().or_else(|| s.downcast_ref::<h2::Error>().and_then(h2::Error::get_io))).is_some_and(|io| {
        matches!(io.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::UnexpectedEof)
    })
}

/// Send `req` on `origin` (or its HTTP/1.1 client once ALPN chose HTTP/1.1).
pub(crate) async fn send(origin: Arc<Origin>, req: Request) -> Result<Response, SendError> {
    let mut tries = 0;
    loop {
        let slot = match origin.try_acquire() {
            Some(s) => s,
            None => match Box::pin(origin.clone().acquire_slow()).await {
                Ok(s) => s,
                Err(NoSlot::Failed(e)) => return Err(e),
                Err(NoSlot::Http1) => {
                    let h1 = origin.http1_client().cloned().ok_or_else(|| SendError::Connect("no HTTP/1.1 client".into()))?;
                    return h1.execute(req.into_reqwest()).await.map(Response::H1).map_err(SendError::Reqwest);
                }
            },
        };
        let mut sender = slot.conn.sender.clone();
        match sender.try_send_request(req.to_hyper()).await {
            Ok(resp) => return Ok(Response::h2(resp, slot)),
            Err(e) => {
                tries += 1;
                let unsent = e.message().is_some();
                if unsent {
                    // The connection closed before the request left: take no more streams
                    // there. (After a GOAWAY the frame tap has already done so; a refused
                    // stream says nothing about the connection.)
                    slot.conn.retire();
                }
                // hyper's dispatch task ends when it sees the GOAWAY, dropping the one request
                // it was handing to h2 at that moment (its stream may have gone out: hyper
                // then cancels it with RST_STREAM) with a "dispatch task is gone" error.
                let dropped_at_goaway = e.error().is_user() && !slot.conn.usable();
                // The peer closed after its GOAWAY while this stream had no response head: a
                // write into the closed socket (broken pipe) or its reset reached us first.
                let closed_after_goaway = slot.conn.peer.peer_goaway.load(SeqCst) && connection_broke(e.error());
                if (unsent || dropped_at_goaway || closed_after_goaway || never_processed(e.error())) && tries <= MAX_RESENDS {
                    log::debug!("HTTP/2: a stream to {} was not processed ({}); sending it again", origin.label(), error_chain(e.error()));
                    continue;
                }
                return Err(SendError::Http(error_chain(&e.into_error())));
            }
        }
    }
}

/// A plain or TLS TCP stream.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}
