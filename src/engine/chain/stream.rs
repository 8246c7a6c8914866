//! A routed stream: deltas, then one final chunk with the whole response, or a typed error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::attempt::OpenStream;
use super::trace::Trace;
use crate::engine::instance::Instance;
use crate::engine::lease::{mark_deadline, Lease};
use crate::error::{AttemptRole, Error, ErrorKind, TimeoutKind};
use crate::provider::EventStream;
use crate::types::{ChatResponse, StreamEvent, ToolCall, Usage};

/// Called once when a routed stream ends, with its response or its error (statistics and
/// history of the pool or group it went through). Not called for a stream dropped unfinished.
pub type FinishHook = Box<dyn FnOnce(Result<&ChatResponse, &Error>) + Send>;

/// One item of a routed stream.
#[derive(Clone, Debug)]
pub enum StreamChunk {
    /// Incremental text (and/or a tool-call fragment).
    Delta {
        /// The text of this delta (may be empty for a tool-call fragment).
        text: String,
        /// An OpenAI-shape tool-call fragment, when the delta carries one.
        tool_call: Option<serde_json::Value>,
    },
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
    deadline: Option<Instant>,
    clamped: bool,
    finished: bool,
    on_finish: Vec<FinishHook>,
}

impl ChatStream {
    /// The stream of `open`, served through `target` after the attempts in `trace`.
    pub fn new(open: OpenStream, trace: Trace, target: String, role: AttemptRole) -> Self {
        Self {
            attempt_start: open.started,
            ttft: open.ttft,
            deadline: open.deadline,
            clamped: open.clamped,
            on_finish: Vec::new(),
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

    /// Run `hook` when the stream ends (after hooks added earlier).
    pub fn on_finish(&mut self, hook: FinishHook) {
        self.on_finish.push(hook);
    }

    fn finish(&mut self, result: Result<&ChatResponse, &Error>) {
        for hook in self.on_finish.drain(..) {
            hook(result);
        }
    }

    /// Attempts made for this call so far, the one streaming now included (targets skipped
    /// without an attempt are not counted). The gateway reports it before the final chunk.
    pub fn attempts_made(&self) -> usize {
        self.trace.attempts.iter().filter(|a| !a.instance.is_empty()).count() + usize::from(self.lease.is_some())
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
                let resp = ChatResponse {
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
                };
                self.finish(Ok(&resp));
                Some(Ok(StreamChunk::Final(resp)))
            }
            Some(Err(e)) => Some(Err(self.fail(e))),
            None => {
                let e = Error::new(ErrorKind::StreamInterrupted, "stream ended without a terminal event").with_partial(self.text.clone());
                Some(Err(self.fail(e)))
            }
        }
    }

    /// End the stream with `e`: after the first token a provider fault is a
    /// `StreamInterrupted` carrying the partial text; the caller's own deadline stays a
    /// deadline `Timeout` and a content filter stays `ContentFiltered` (both with the partial
    /// text, neither held against the instance).
    fn fail(&mut self, e: Error) -> Error {
        self.finished = true;
        let mut e = mark_deadline(e, self.clamped, self.deadline);
        let kept = e.timeout == Some(TimeoutKind::Deadline) || e.kind == ErrorKind::ContentFiltered;
        if !kept && e.kind != ErrorKind::StreamInterrupted && !self.text.is_empty() {
            e.kind = ErrorKind::StreamInterrupted;
        }
        if (kept || e.kind == ErrorKind::StreamInterrupted) && e.partial.is_none() {
            e.partial = Some(self.text.clone());
        }
        if let Some(lease) = self.lease.take() {
            let inst = lease.instance().clone();
            e.instance = Some(inst.id.clone());
            self.trace.push(&self.target, Some(&inst), self.role, self.attempt_start, Some(&e));
            lease.fail(&e);
        }
        let trace = std::mem::replace(&mut self.trace, Trace::new(Instant::now()));
        let e = e.with_attempts(trace.attempts);
        self.finish(Err(&e));
        e
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
    // What the provider needs back with this call next turn (a thought signature, thinking
    // blocks): kept whole, merged per provider key if it comes in several fragments.
    if let Some(extra) = delta.get("extra_content").filter(|v| !v.is_null()) {
        match (&mut call.extra_content, extra) {
            (Some(serde_json::Value::Object(have)), serde_json::Value::Object(more)) => {
                for (k, v) in more {
                    have.insert(k.clone(), v.clone());
                }
            }
            (slot, v) => *slot = Some(v.clone()),
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

    #[test]
    fn what_a_call_must_send_back_is_kept_from_its_fragments() {
        let mut calls = Vec::new();
        merge_tool_call(&mut calls, &json!({"index": 0, "id": "c1", "function": {"name": "f"}, "extra_content": {"google": {"thought_signature": "sig"}}}));
        merge_tool_call(&mut calls, &json!({"index": 0, "function": {"arguments": "{}"}}));
        merge_tool_call(&mut calls, &json!({"index": 0, "extra_content": {"anthropic": {"thinking_blocks": []}}}));
        assert_eq!(calls[0].extra_content, Some(json!({"google": {"thought_signature": "sig"}, "anthropic": {"thinking_blocks": []}})));
    }
}
