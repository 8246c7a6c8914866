//! Connections: the accept loop with its cap, per-connection header and idle timeouts, and the
//! drain (stop accepting, let connections finish, then end what is left).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::body::Activity;
use super::Shared;

/// After the drain's grace, how long connections get to write the final events out.
const FLUSH: Duration = Duration::from_secs(1);
/// Concurrent HTTP/2 streams per connection.
const MAX_H2_STREAMS: u32 = 1024;

fn now_ms(shared: &Shared) -> u64 {
    shared.started.elapsed().as_millis() as u64
}

/// Accept until a drain begins, then wait for the connections as the drain says.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shared.stop_accept.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let cap = shared.config().global.gateway.max_connections as usize;
                    if shared.stats.connections.load(Ordering::Relaxed) >= cap {
                        shared.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(refuse(stream));
                        continue;
                    }
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(serve_connection(stream, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("gateway: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    shared.unbound.cancel();
    let grace = (*shared.grace.lock()).unwrap_or_else(|| shared.config().global.gateway.drain_grace);
    let finished = {
        let all = async { while conns.join_next().await.is_some() {} };
        tokio::select! {
            _ = all => true,
            _ = tokio::time::sleep(grace) => false,
            _ = shared.hard_stop.cancelled() => false,
        }
    };
    if !finished {
        let left = conns.len();
        log::warn!("gateway: drain grace over with {left} connections open; ending their streams");
        shared.hard_stop.cancel();
        let all = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(FLUSH, all).await.is_err() {
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }
    shared.hard_stop.cancel();
    log::info!("gateway on http://{}: stopped", shared.addr);
    shared.closed.cancel();
}

/// A connection over the cap: answer 503 (after reading what the client sent, so closing does
/// not reset the connection under the answer) and close.
async fn refuse(mut stream: TcpStream) {
    let body = br#"{"error":{"message":"too many connections to the gateway; retry shortly","type":"service_unavailable","param":null,"code":"too_many_connections"}}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nx-should-retry: true\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} }).await;
}

/// A TCP stream that notes when bytes last moved.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
}

impl Tracked {
    fn touch(&self) {
        self.activity.last_ms.store(now_ms(&self.shared), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let gw = shared.config().global.gateway.clone();
    let activity = Arc::new(Activity::default());
    activity.last_ms.store(now_ms(&shared), Ordering::Relaxed);
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone(), shared: shared.clone() });
    let svc = {
        let (shared, activity) = (shared.clone(), activity.clone());
        hyper::service::service_fn(move |req| super::handler::handle(shared.clone(), activity.clone(), req))
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(gw.header_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_H2_STREAMS);
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let idle_ms = gw.idle_timeout.as_millis() as u64;
    let tick = (gw.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::trace!("gateway: connection ended: {e}");
                }
                break;
            }
            _ = shared.stop_accept.cancelled(), if !closing => {
                // Finish what is in flight; idle keep-alive connections close now.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shared.hard_stop.cancelled() => {
                // Streams are writing their final events; give them a moment, then drop.
                let _ = tokio::time::timeout(FLUSH, conn.as_mut()).await;
                break;
            }
            _ = tokio::time::sleep(tick), if !closing => {
                let quiet = now_ms(&shared).saturating_sub(activity.last_ms.load(Ordering::Relaxed));
                if activity.busy.load(Ordering::Relaxed) == 0 && quiet >= idle_ms {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
}
