//! The stream driver: reads body chunks under the first-token / idle / total timers, feeds the
//! SSE parser and a provider decoder, and turns every way a stream can go wrong into the right
//! error: before the first delta a plain (retryable, fall-back-able) error, after it
//! `StreamInterrupted` carrying the partial text. A stream never ends "successfully" without the
//! provider's terminal event.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::Instant;

use super::classify::ErrCtx;
use super::sse::{SseEvent, SseParser};
use super::EventStream;
use crate::config::{ModelConfig, Timeouts};
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::types::StreamEvent;

/// Why a provider decoder rejected an event.
pub enum DecodeError {
    /// The event is not what the protocol allows (bad JSON, …): the stream is broken.
    Garbage(String),
    /// The provider reported an error inside the stream (already classified).
    Provider(Error),
}

/// Provider-specific interpretation of SSE events.
pub trait StreamDecoder: Send {
    /// Handle one event, pushing deltas (and `Done` on the terminal event) to `out`.
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>, ctx: &ErrCtx<'_>) -> Result<(), DecodeError>;
    /// The body ended cleanly without the terminal event: `Done` if the provider had already
    /// signalled completion (a finish reason), else `None` (the stream was cut).
    fn on_eof(&mut self) -> Option<StreamEvent>;
}

/// A response body as chunks; errors are already rendered (source chain, no URL).
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// What the driver needs besides the body and the decoder.
pub struct StreamSetup {
    pub model: Arc<ModelConfig>,
    pub label: Arc<str>,
    /// When the request was started (the first-token and total timers count from here).
    pub started: Instant,
    pub timeouts: Timeouts,
    /// The request id from the response headers (wins over one found in the body).
    pub request_id: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// `Done` is queued or delivered; what is left of the body is drained for connection reuse.
    Finished,
    Dead,
}

struct Driver {
    body: Body,
    parser: SseParser,
    decoder: Box<dyn StreamDecoder>,
    setup: StreamSetup,
    pending: VecDeque<StreamEvent>,
    pending_err: Option<Error>,
    partial: String,
    got_delta: bool,
    last_chunk: Instant,
    state: State,
}

/// Wrap `body` into an [`EventStream`]. Dropping the stream drops the body, which aborts the
/// HTTP request.
pub fn drive(body: Body, decoder: Box<dyn StreamDecoder>, setup: StreamSetup) -> EventStream {
    let d = Driver {
        body,
        parser: SseParser::new(),
        decoder,
        last_chunk: setup.started,
        setup,
        pending: VecDeque::new(),
        pending_err: None,
        partial: String::new(),
        got_delta: false,
        state: State::Reading,
    };
    Box::pin(futures_util::stream::unfold(d, |mut d| async move {
        let item = d.next().await?;
        Some((item, d))
    }))
}

impl Driver {
    async fn next(&mut self) -> Option<Result<StreamEvent, Error>> {
        loop {
            if let Some(mut ev) = self.pending.pop_front() {
                match &mut ev {
                    StreamEvent::Delta { text, .. } => self.partial.push_str(text),
                    StreamEvent::Done { request_id, .. } => {
                        if self.setup.request_id.is_some() {
                            *request_id = self.setup.request_id.clone();
                        }
                    }
                }
                return Some(Ok(ev));
            }
            if let Some(mut e) = self.pending_err.take() {
                self.state = State::Dead;
                // A refusal or safety block mid-stream carries the text delivered before it
                // (empty when it came first), as a cut stream does.
                if e.kind == ErrorKind::StreamInterrupted || e.kind == ErrorKind::ContentFiltered {
                    e.partial = Some(self.partial.clone());
                }
                if e.request_id.is_none() {
                    e.request_id = self.setup.request_id.clone();
                }
                return Some(Err(e));
            }
            match self.state {
                State::Dead => return None,
                State::Finished => {
                    self.drain();
                    self.state = State::Dead;
                    return None;
                }
                State::Reading => {}
            }
            let (deadline, which) = self.deadline();
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.body.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.pending_err = Some(self.timed_out(which));
                        continue;
                    }
                },
                None => self.body.next().await,
            };
            match next {
                None => match self.decoder.on_eof() {
                    Some(done) => {
                        self.pending.push_back(done);
                        self.state = State::Finished;
                    }
                    None => self.pending_err = Some(self.broken(false, "stream ended without a terminal event")),
                },
                Some(Err(msg)) => self.pending_err = Some(self.broken(true, &format!("stream connection failed: {msg}"))),
                Some(Ok(bytes)) => {
                    self.last_chunk = Instant::now();
                    self.on_bytes(&bytes);
                }
            }
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        let mut events = Vec::new();
        let parse_err = self.parser.feed(bytes, &mut events).err();
        let label = self.setup.label.clone();
        let ctx = ErrCtx { label: &label, secret: &self.setup.model.api_key };
        let mut out = Vec::new();
        for ev in events {
            let r = self.decoder.on_event(ev, &mut out, &ctx);
            for e in out.drain(..) {
                match e {
                    StreamEvent::Delta { .. } => self.got_delta = true,
                    StreamEvent::Done { .. } => self.state = State::Finished,
                }
                self.pending.push_back(e);
                if self.state == State::Finished {
                    return;
                }
            }
            match r {
                Ok(()) => {}
                Err(DecodeError::Garbage(msg)) => {
                    self.pending_err = Some(self.broken(false, &msg));
                    self.state = State::Dead;
                    return;
                }
                Err(DecodeError::Provider(e)) => {
                    self.pending_err = Some(self.provider_error(e));
                    self.state = State::Dead;
                    return;
                }
            }
        }
        if let Some(e) = parse_err {
            self.pending_err = Some(self.broken(false, &e.to_string()));
            self.state = State::Dead;
        }
    }

    /// The next timer to enforce: first-token before the first delta, idle after it, total always.
    fn deadline(&self) -> (Option<Instant>, TimeoutKind) {
        let t = &self.setup.timeouts;
        let other = if self.got_delta {
            t.idle.map(|i| (self.last_chunk + i, TimeoutKind::Idle))
        } else {
            t.first_token.map(|f| (self.setup.started + f, TimeoutKind::FirstToken))
        };
        let total = t.total.map(|d| (self.setup.started + d, TimeoutKind::Total));
        match (other, total) {
            (Some(o), Some(t)) if t.0 < o.0 => (Some(t.0), t.1),
            (Some(o), _) => (Some(o.0), o.1),
            (None, Some(t)) => (Some(t.0), t.1),
            (None, None) => (None, TimeoutKind::Total),
        }
    }

    fn ctx_error(&self, kind: ErrorKind, detail: &str) -> Error {
        ErrCtx { label: &self.setup.label, secret: &self.setup.model.api_key }.error(kind, detail)
    }

    fn timed_out(&mut self, which: TimeoutKind) -> Error {
        self.state = State::Dead;
        let t = &self.setup.timeouts;
        let limit = match which {
            TimeoutKind::Idle => t.idle,
            TimeoutKind::FirstToken => t.first_token,
            _ => t.total,
        }
        .unwrap_or(Duration::ZERO);
        let detail = match which {
            TimeoutKind::Idle => format!("stream stalled: no data for {limit:?}"),
            TimeoutKind::FirstToken => format!("no first token within {limit:?}"),
            _ => format!("stream exceeded the total timeout of {limit:?}"),
        };
        let kind = if self.got_delta { ErrorKind::StreamInterrupted } else { ErrorKind::Timeout };
        let mut e = self.ctx_error(kind, &detail);
        e.timeout = Some(which);
        e
    }

    /// A cut (`transport`: body error; else clean EOF or garbage).
    fn broken(&mut self, transport: bool, detail: &str) -> Error {
        self.state = State::Dead;
        let kind = match (self.got_delta, transport) {
            (true, _) => ErrorKind::StreamInterrupted,
            (false, true) => ErrorKind::ConnectionError,
            (false, false) => ErrorKind::InvalidResponse,
        };
        self.ctx_error(kind, detail)
    }

    fn provider_error(&self, e: Error) -> Error {
        if !self.got_delta || e.kind == ErrorKind::ContentFiltered {
            return e;
        }
        let mut out = Error::new(ErrorKind::StreamInterrupted, format!("{} [{} error mid-stream]", e.message, e.kind.as_str()));
        out.retry_after = e.retry_after;
        out
    }

    /// Read what is immediately available of the rest of the body (usually just the end of the
    /// chunked encoding) so the connection goes back to the pool; anything slower is finished
    /// in the background, bounded, so the caller never waits for it.
    fn drain(&mut self) {
        for _ in 0..16 {
            match self.body.next().now_or_never() {
                Some(Some(Ok(_))) => continue,
                Some(_) => return,
                None => break,
            }
        }
        let mut body: Body = std::mem::replace(&mut self.body, Box::pin(futures_util::stream::empty()));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = body.next().await {} }).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProbeMode, ProviderKind, RetryConfig};
    use crate::secret::Secret;
    use crate::types::Params;

    fn setup(timeouts: Timeouts) -> StreamSetup {
        let model = ModelConfig {
            name: "m".into(),
            provider: "openai".into(),
            kind: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:1".into(),
            api_key: Secret::new("sk-test-LEAKCHECK-123"),
            model: "m".into(),
            headers: Default::default(),
            parameters: Params::default(),
            timeouts,
            retry: RetryConfig::default(),
            rpm: 0,
            tpm: 0,
            max_concurrency: 0,
            context_window: 0,
            weight: 1.0,
            rate_limit_cooldown: Duration::ZERO,
            quota_cooldown: crate::config::DEFAULT_QUOTA_COOLDOWN,
            api_version: None,
            probe: ProbeMode::Models,
            http_version: Default::default(),
            http2_max_connections: crate::config::DEFAULT_HTTP2_MAX_CONNECTIONS,
            connection_idle_timeout: crate::config::DEFAULT_CONNECTION_IDLE_TIMEOUT,
            unsupported_params: Default::default(),
            source: None,
        };
        StreamSetup { model: Arc::new(model), label: "openai/m".into(), started: Instant::now(), timeouts, request_id: Some("hdr".into()) }
    }

    fn body(chunks: Vec<Result<&'static [u8], &'static str>>) -> Body {
        Box::pin(futures_util::stream::iter(chunks.into_iter().map(|c| c.map(Bytes::from_static).map_err(str::to_string))))
    }

    async fn collect(s: EventStream) -> Vec<Result<StreamEvent, Error>> {
        s.collect().await
    }

    #[tokio::test]
    async fn garbage_after_delta_is_interrupted_with_partial() {
        let s = drive(
            body(vec![Ok(b"data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\ndata: {oops\n\n")]),
            Box::new(super::super::openai::Decoder::default()),
            setup(Timeouts::default()),
        );
        let items = collect(s).await;
        assert_eq!(items.len(), 2);
        let e = items[1].as_ref().unwrap_err();
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.partial.as_deref(), Some("ab"));
        assert_eq!(e.request_id.as_deref(), Some("hdr"));
    }

    #[tokio::test]
    async fn garbage_before_delta_is_invalid_response() {
        let s = drive(body(vec![Ok(b"data: nope\n\n")]), Box::new(super::super::openai::Decoder::default()), setup(Timeouts::default()));
        let items = collect(s).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap_err().kind, ErrorKind::InvalidResponse);
    }

    #[tokio::test]
    async fn body_error_before_and_after_first_delta() {
        let s = drive(body(vec![Err("reset")]), Box::new(super::super::openai::Decoder::default()), setup(Timeouts::default()));
        assert_eq!(collect(s).await[0].as_ref().unwrap_err().kind, ErrorKind::ConnectionError);
        let s = drive(
            body(vec![Ok(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"), Err("reset")]),
            Box::new(super::super::openai::Decoder::default()),
            setup(Timeouts::default()),
        );
        let items = collect(s).await;
        assert_eq!(items[1].as_ref().unwrap_err().kind, ErrorKind::StreamInterrupted);
    }

    #[tokio::test]
    async fn events_after_done_are_ignored_and_done_is_last() {
        let s = drive(
            body(vec![Ok(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n",
            )]),
            Box::new(super::super::openai::Decoder::default()),
            setup(Timeouts::default()),
        );
        let items = collect(s).await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Ok(StreamEvent::Done { ref request_id, .. }) if request_id.as_deref() == Some("hdr")));
    }
}
