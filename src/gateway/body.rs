//! The response body: whole bytes, or a stream fed by the task that reads the engine's
//! stream. Either holds a [`Busy`] guard, so a connection counts as busy (not idle) and the
//! call as in flight until its body is written out or dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// What the idle check of one connection reads: the last time bytes moved (milliseconds since
/// the gateway started) and the requests whose answers are not written yet.
#[derive(Default)]
pub(crate) struct Activity {
    pub last_ms: AtomicU64,
    pub busy: AtomicUsize,
}

/// Marks a request as in flight on its connection and in the gateway until dropped.
pub(crate) struct Busy {
    conn: Arc<Activity>,
    gateway: Arc<super::Shared>,
}

impl Busy {
    pub fn new(conn: Arc<Activity>, gateway: Arc<super::Shared>) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        gateway.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy { conn, gateway }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
        self.gateway.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body.
pub(crate) enum GwBody {
    /// Whole bytes (taken on the first poll).
    Full { data: Option<Bytes>, _busy: Option<Busy> },
    /// Frames as the stream's task sends them; ends when the task drops its sender.
    Stream { rx: mpsc::Receiver<Bytes>, _busy: Option<Busy> },
}

impl GwBody {
    /// Whole bytes.
    pub fn full(data: impl Into<Bytes>, busy: Option<Busy>) -> GwBody {
        GwBody::Full { data: Some(data.into()), _busy: busy }
    }
}

impl Body for GwBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GwBody::Full { data, .. } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            GwBody::Stream { rx, .. } => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, GwBody::Full { data: None, .. })
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GwBody::Full { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            GwBody::Stream { .. } => SizeHint::default(),
        }
    }
}
