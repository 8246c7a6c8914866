//! One attempt on a leased instance: non-streaming, or streaming up to the first token.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::engine::lease::{mark_deadline, Lease};
use crate::error::{Error, ErrorKind};
use crate::provider::EventStream;
use crate::types::{ChatRequest, ChatResponse, StreamEvent};

/// A stream that produced its first event, with the lease that must live as long as it.
pub struct OpenStream {
    /// The slot the stream holds until it ends.
    pub lease: Lease,
    /// The provider's event stream after the first event.
    pub stream: EventStream,
    /// The first event.
    pub first: StreamEvent,
    /// When the attempt started.
    pub started: Instant,
    /// Time to the first event.
    pub ttft: Duration,
    /// The call's deadline, and whether it shortened the attempt's timeouts (a timeout it
    /// causes later is the caller's, not the provider's).
    pub deadline: Option<Instant>,
    /// See `deadline`.
    pub clamped: bool,
}

/// Result of a successful attempt.
pub enum Success {
    /// A whole response.
    Chat(ChatResponse),
    /// A stream that produced its first event.
    Stream(OpenStream),
}

/// Run one attempt on `lease`. On error the lease is finished (failure rules applied) here; on
/// success a chat lease is finished too, a stream lease moves into the [`OpenStream`] (the
/// breaker has heard of the success already: the provider answered).
pub async fn run(lease: Lease, req: &ChatRequest, deadline: Option<Instant>, stream: bool) -> Result<Success, Error> {
    if !stream {
        return match lease.chat(req, deadline).await {
            Ok(r) => {
                lease.succeed(Some(r.usage));
                Ok(Success::Chat(r))
            }
            Err(e) => {
                lease.fail(&e);
                Err(e)
            }
        };
    }
    let mut lease = lease;
    let started = Instant::now();
    let inst = lease.instance().clone();
    let (timeouts, clamped) = inst.timeouts_until(deadline, started);
    // Boxed so a non-streaming call does not carry the stream-opening state inline.
    let opened = Box::pin(async {
        let mut s = inst.client.stream(req, &timeouts).await?;
        match s.next().await {
            Some(Ok(ev)) => Ok((s, ev)),
            Some(Err(e)) => Err(e),
            None => Err(Error::new(ErrorKind::InvalidResponse, "stream ended before any event")),
        }
    })
    .await;
    match opened {
        Ok((stream, first)) => {
            lease.first_token();
            Ok(Success::Stream(OpenStream { lease, stream, first, started, ttft: started.elapsed(), deadline, clamped }))
        }
        Err(e) => {
            let e = mark_deadline(e, clamped, deadline);
            lease.fail(&e);
            Err(e)
        }
    }
}
