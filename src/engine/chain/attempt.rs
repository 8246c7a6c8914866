//! One attempt on a leased instance (non-streaming or streaming up to the first token), the
//! attempt trace, and the rules that decide what to do after an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::error::{Attempt, AttemptRole, Error, ErrorKind, TimeoutKind};
use crate::engine::instance::{mark_deadline, Instance, Lease};
use crate::provider::EventStream;
use crate::types::{ChatRequest, ChatResponse, StreamEvent, ToolCall, Usage};

/// The attempt trace of one call.
pub struct Trace {
    pub start: Instant,
    pub attempts: Vec<Attempt>,
}

impl Trace {
    pub fn new(start: Instant) -> Self {
        Self { start, attempts: Vec::new() }
    }

    /// Append an entry for an attempt that started at `t0` on `inst` (None: no instance could
    /// be selected) and ended now with `error` (None: success).
    pub fn push(&mut self, target: &str, inst: Option<&Instance>, role: AttemptRole, t0: Instant, error: Option<&Error>) {
        self.attempts.push(Attempt {
            target: target.to_string(),
            instance: inst.map(|i| i.id.clone()).unwrap_or_default(),
            model: inst.map(|i| i.model_name.clone()).unwrap_or_default(),
            role,
            error: error.map(|e| e.kind),
            message: error.map(|e| e.to_string()),
            latency: t0.elapsed(),
            started_after: t0.saturating_duration_since(self.start),
        });
    }

    /// The error a failed call ends with: the request's own fault (bad request, content
    /// filter, context window, caller deadline) or a single failed attempt is returned as itself;
    /// a chain of several failed attempts becomes `AllTargetsFailed` carrying the last error's
    /// details.
    pub fn into_error(self, last: Error) -> Error {
        let several = self.attempts.iter().filter(|a| a.error.is_some()).count() > 1;
        let own_fault = matches!(last.kind, ErrorKind::BadRequest | ErrorKind::ContentFiltered)
            || last.timeout == Some(TimeoutKind::Deadline);
        if several && !own_fault {
            let mut e = last.clone();
            e.kind = ErrorKind::AllTargetsFailed;
            e.message = format!(
                "all {} attempts failed; last: {}: {}",
                self.attempts.len(),
                last.kind.as_str(),
                last
            );
            e.with_attempts(self.attempts)
        } else {
            last.with_attempts(self.attempts)
        }
    }
}

/// A stream that produced its first event, with the lease that must live as long as it.
pub struct OpenStream {
    pub lease: Lease,
    pub stream: EventStream,
    pub first: StreamEvent,
    pub started: Instant,
    pub ttft: Duration,
}

/// Result of a successful attempt.
pub enum Success {
    Chat(ChatResponse),
    Stream(OpenStream),
}

/// Run one attempt on `lease`. On error the lease is finished (failure rules applied) here; on
/// success a chat lease is finished too, a stream lease moves into the [`OpenStream`].
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
        Ok((stream, first)) => Ok(Success::Stream(OpenStream { lease, stream, first, started, ttft: started.elapsed() })),
        Err(e) => {
            let e = mark_deadline(e, clamped, deadline);
            lease.fail(&e);
            Err(e)
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Give up: the error is the request's fault, or the deadline passed.
    Stop,
    /// Try another instance of the same target now (429, auth).
    OtherInstance,
    /// Retry on the same target after this delay (budget permitting).
    Retry,
    /// Move on to the next target.
    NextTarget,
    /// Move on, but only to instances with a larger context window than this.
    LargerContext(u32),
}

/// The error-class rules: 429 → another instance now; 5xx/overloaded/timeout/connection/bad
/// body → retry with backoff then fall back; context window → larger targets only; content
/// filter → surfaced unless configured to fall back; auth → another instance; bad request and
/// the caller's deadline → stop.
pub fn next_step(e: &Error, inst: &Instance, content_filter_fallback: bool) -> Next {
    if e.timeout == Some(TimeoutKind::Deadline) {
        return Next::Stop;
    }
    match e.kind {
        ErrorKind::BadRequest | ErrorKind::Cancelled | ErrorKind::Routing | ErrorKind::Config | ErrorKind::Internal => Next::Stop,
        ErrorKind::ContentFiltered => {
            if content_filter_fallback {
                Next::NextTarget
            } else {
                Next::Stop
            }
        }
        ErrorKind::ContextWindowExceeded => Next::LargerContext(inst.context_window),
        ErrorKind::RateLimited | ErrorKind::AuthError | ErrorKind::ModelNotFound => Next::OtherInstance,
        ErrorKind::QuotaExceeded => Next::NextTarget,
        ErrorKind::ServerError
        | ErrorKind::Overloaded
        | ErrorKind::Timeout
        | ErrorKind::ConnectionError
        | ErrorKind::InvalidResponse
        | ErrorKind::StreamInterrupted => Next::Retry,
        ErrorKind::PoolExhausted | ErrorKind::QueueTimeout | ErrorKind::CircuitOpen | ErrorKind::AllTargetsFailed => {
            Next::NextTarget
        }
    }
}

/// Sleep `d`, unless that would pass `deadline`; returns false (without sleeping) then.
pub async fn sleep_within(d: Duration, deadline: Option<Instant>) -> bool {
    if d.is_zero() {
        return true;
    }
    if deadline.is_some_and(|dl| Instant::now() + d >= dl) {
        return false;
    }
    tokio::time::sleep(d).await;
    true
}

/// One item of a routed stream.
#[derive(Clone, Debug)]
pub enum StreamChunk {
    /// Incremental text (and/or a tool-call fragment).
    Delta { text: String, tool_call: Option<serde_json::Value> },
    /// The stream ended normally: the whole response (content, usage, trace).
    Final(ChatResponse),
}

/// A routed stream: deltas, then one `Final`. Dropping it aborts the upstream request and
/// frees the instance slot (counted as neither success nor failure).
pub struct ChatStream {
    lease: Option<Lease>,
    stream: EventStream,
    pending: Option<StreamEvent>,
    text: String,
    tool_calls: Vec<ToolCall>,
    trace: Trace,
    target: String,
    role: AttemptRole,
    attempt_start: Instant,
    ttft: Duration,
    finished: bool,
}

impl ChatStream {
    pub fn new(open: OpenStream, trace: Trace, target: String, role: AttemptRole) -> Self {
        Self {
            attempt_start: open.started,
            ttft: open.ttft,
            pending: Some(open.first),
            lease: Some(open.lease),
            stream: open.stream,
            text: String::new(),
            tool_calls: Vec::new(),
            trace,
            target,
            role,
            finished: false,
        }
    }

    /// The instance serving this stream.
    pub fn served_by(&self) -> Option<Arc<Instance>> {
        self.lease.as_ref().map(|l| l.instance().clone())
    }

    /// The next chunk; `None` after the final chunk or an error.
    pub async fn next(&mut self) -> Option<Result<StreamChunk, Error>> {
        if self.finished {
            return None;
        }
        let item = match self.pending.take() {
            Some(ev) => Some(Ok(ev)),
            None => self.stream.next().await,
        };
        match item {
            Some(Ok(StreamEvent::Delta { text, tool_call })) => {
                self.text.push_str(&text);
                if let Some(tc) = &tool_call {
                    merge_tool_call(&mut self.tool_calls, tc);
                }
                Some(Ok(StreamChunk::Delta { text, tool_call }))
            }
            Some(Ok(StreamEvent::Done { finish_reason, usage, model, request_id })) => {
                self.finished = true;
                let lease = self.lease.take()?;
                let inst = lease.instance().clone();
                self.trace.push(&self.target, Some(&inst), self.role, self.attempt_start, None);
                lease.succeed(usage);
                let usage = usage.unwrap_or(Usage::default());
                Some(Ok(StreamChunk::Final(ChatResponse {
                    content: std::mem::take(&mut self.text),
                    tool_calls: std::mem::take(&mut self.tool_calls),
                    model: model.unwrap_or_else(|| inst.client.model().model.clone()),
                    finish_reason,
                    usage,
                    latency: self.attempt_start.elapsed(),
                    ttft: Some(self.ttft),
                    request_id,
                    served_by: inst.id.clone(),
                    attempts: std::mem::take(&mut self.trace.attempts),
                })))
            }
            Some(Err(e)) => Some(Err(self.fail(e))),
            None => {
                let e = Error::new(ErrorKind::StreamInterrupted, "stream ended without a terminal event")
                    .with_partial(self.text.clone());
                Some(Err(self.fail(e)))
            }
        }
    }

    fn fail(&mut self, mut e: Error) -> Error {
        self.finished = true;
        if e.kind != ErrorKind::StreamInterrupted && !self.text.is_empty() {
            e.kind = ErrorKind::StreamInterrupted;
        }
        if e.kind == ErrorKind::StreamInterrupted && e.partial.is_none() {
            e.partial = Some(self.text.clone());
        }
        if let Some(lease) = self.lease.take() {
            let inst = lease.instance().clone();
            e.instance = Some(inst.id.clone());
            self.trace.push(&self.target, Some(&inst), self.role, self.attempt_start, Some(&e));
            lease.fail(&e);
        }
        let trace = std::mem::replace(&mut self.trace, Trace::new(Instant::now()));
        e.with_attempts(trace.attempts)
    }
}

/// Tool calls one streamed response may assemble. The index comes from the provider: a
/// fragment claiming a larger one is dropped rather than allocating that many calls.
const MAX_TOOL_CALLS: u64 = 1024;

/// Fold an OpenAI-shape tool-call delta (`{index, id?, function: {name?, arguments?}}`) into
/// the calls assembled so far.
fn merge_tool_call(calls: &mut Vec<ToolCall>, delta: &serde_json::Value) {
    let index = delta.get("index").and_then(|v| v.as_u64()).unwrap_or(calls.len().saturating_sub(1) as u64);
    if index >= MAX_TOOL_CALLS {
        log::warn!("dropped a streamed tool-call fragment with index {index} (more than {MAX_TOOL_CALLS} calls)");
        return;
    }
    let index = index as usize;
    while calls.len() <= index {
        calls.push(ToolCall::default());
    }
    let call = &mut calls[index];
    if let Some(id) = delta.get("id").and_then(|v| v.as_str()) {
        call.id = id.to_string();
    }
    if let Some(f) = delta.get("function") {
        if let Some(n) = f.get("name").and_then(|v| v.as_str()) {
            call.name.push_str(n);
        }
        if let Some(a) = f.get("arguments").and_then(|v| v.as_str()) {
            call.arguments.push_str(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_call_fragments_merge_and_a_huge_index_allocates_nothing() {
        let mut calls = Vec::new();
        merge_tool_call(&mut calls, &json!({"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}));
        merge_tool_call(&mut calls, &json!({"index": 0, "function": {"arguments": ":1}"}}));
        merge_tool_call(&mut calls, &json!({"index": 1, "id": "c2", "function": {"name": "g"}}));
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].name.as_str(), calls[0].arguments.as_str()), ("c1", "f", "{\"a\":1}"));
        // A provider claiming call number 2^62 must not make us allocate that many.
        merge_tool_call(&mut calls, &json!({"index": 1u64 << 62, "id": "x"}));
        merge_tool_call(&mut calls, &json!({"index": u64::MAX}));
        assert_eq!(calls.len(), 2);
    }
}
