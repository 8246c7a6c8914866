//! Anthropic messages API: request translation from the OpenAI-shaped neutral request,
//! response parsing and the SSE event decoder.
//!
//! Request (checked against the official SDK's `MessageCreateParams`): system messages become
//! the top-level `system`; consecutive tool results share one user turn; `stop` is
//! `stop_sequences`; a JSON schema `response_format` is structured output
//! (`output_config.format`); `user`, `parallel_tool_calls`, `max_completion_tokens` and
//! `reasoning_effort` have counterparts. The current API has no sampling parameters
//! (`temperature`, `top_p`, `top_k`), no seed, penalties or JSON mode without a schema: those are
//! unsupported (dropped or refused per the model's `unsupported_params`; an `anthropic={...}`
//! scoped extra still sends anything as it is, for models that take it).
//!
//! Response: thinking blocks that precede tool calls must go back with them on the next turn;
//! they ride on the first tool call's `extra_content.anthropic.thinking_blocks`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::classify::{classify_json_error, ErrCtx};
use super::format::{self, ImageSource, ResponseFormat, Unsupported, SCOPES};
use super::sse::SseEvent;
use super::stream::{DecodeError, StreamDecoder};
use super::{num_u32, set_opt};
use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, ChatResponse, Message, Params, StreamEvent, ToolCall, Usage};

/// Sent when the model config names no `api_version`.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when neither caller nor config set one.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

const RESERVED: &[&str] = &["model", "messages", "stream", "system", "max_tokens"];

/// Request keys the messages API takes as they are (the SDK's `MessageCreateParams`, less the
/// ones the builder writes itself).
const NATIVE_KEYS: [&str; 13] = [
    "cache_control",
    "container",
    "diagnostics",
    "inference_geo",
    "metadata",
    "output_config",
    "service_tier",
    "speed",
    "stop_sequences",
    "thinking",
    "user_profile_id",
    "workspace_id",
    "tool_choice",
];

/// `{base_url}/v1/messages`; a base URL given with `/v1` (or the whole endpoint) is not doubled.
pub fn chat_url(base: &str) -> String {
    format!("{}/v1/messages", api_base(base))
}

/// `{base_url}/v1/models`.
pub fn models_url(base: &str) -> String {
    format!("{}/v1/models", api_base(base))
}

fn api_base(base: &str) -> &str {
    let b = base.trim_end_matches('/');
    let b = b.strip_suffix("/messages").unwrap_or(b);
    b.strip_suffix("/v1").unwrap_or(b).trim_end_matches('/')
}

/// Normalise Anthropic's stop_reason to the OpenAI vocabulary the neutral response uses.
pub fn finish_reason(r: &str) -> String {
    match r {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_string()
}

fn content_parts(content: &Value) -> Value {
    match content {
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .map(|p| match format::image_of(p) {
                    Some(ImageSource::Inline { mime, data }) => json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}),
                    Some(ImageSource::Url(url)) => json!({"type": "image", "source": {"type": "url", "url": url}}),
                    None => match p.get("type").and_then(Value::as_str) {
                        // OpenAI text parts may carry keys Anthropic does not take.
                        Some("text") => {
                            let mut o = Map::new();
                            o.insert("type".into(), json!("text"));
                            o.insert("text".into(), p.get("text").cloned().unwrap_or(json!("")));
                            set_opt(&mut o, "cache_control", p.get("cache_control").cloned());
                            Value::Object(o)
                        }
                        _ => p.clone(),
                    },
                })
                .collect(),
        ),
        Value::Null => Value::String(String::new()),
        Value::String(_) => content.clone(),
        other => Value::String(other.to_string()),
    }
}

fn assistant_blocks(m: &Message) -> Value {
    let Some(Value::Array(calls)) = &m.tool_calls else { return content_parts(&m.content) };
    let mut blocks = Vec::new();
    // Thinking that preceded the calls goes first, unchanged.
    for c in calls {
        if let Some(Value::Array(tb)) = c.pointer("/extra_content/anthropic/thinking_blocks") {
            blocks.extend(tb.iter().cloned());
        }
    }
    let text = m.text_content();
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for c in calls {
        let f = c.get("function").unwrap_or(&Value::Null);
        let input = f
            .get("arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({"type": "tool_use", "id": c.get("id").cloned().unwrap_or(json!("")),
            "name": f.get("name").cloned().unwrap_or(json!("")), "input": input}));
    }
    Value::Array(blocks)
}

/// Translate OpenAI-shape tools to Anthropic's `{name, description, input_schema, strict}`;
/// tools already in Anthropic's shape (server tools, `input_schema`) pass unchanged.
pub fn tools(v: &Value) -> Option<Value> {
    let Value::Array(list) = v else { return None };
    Some(Value::Array(
        list.iter()
            .map(|t| {
                let Some(f) = t.get("function") else { return t.clone() };
                let mut o = Map::new();
                o.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
                set_opt(&mut o, "description", f.get("description").cloned());
                o.insert("input_schema".into(), f.get("parameters").cloned().unwrap_or(json!({"type": "object"})));
                set_opt(&mut o, "strict", f.get("strict").filter(|s| s.is_boolean()).cloned());
                Value::Object(o)
            })
            .collect(),
    ))
}

/// Translate an OpenAI `tool_choice`.
pub fn tool_choice(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
        Value::String(s) if s == "required" || s == "any" => Some(json!({"type": "any"})),
        Value::String(s) if s == "none" => Some(json!({"type": "none"})),
        Value::Object(o) => match o.get("function").and_then(|f| f.get("name")) {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => Some(v.clone()),
        },
        _ => None,
    }
}

/// The request body. System messages (wherever they are) become the top-level `system`.
/// Parameters without a counterpart land in `unsupported`; `Err` is a request that cannot be
/// sent as given (a malformed `response_format`).
pub fn build_body(wire_model: &str, req: &ChatRequest, params: &Params, stream: bool, unsupported: &mut Unsupported) -> Result<Value, String> {
    let mut b = Map::new();
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        match m.role.as_str() {
            "system" | "developer" => system.push(m.text_content()),
            "tool" => {
                let block = json!({"type": "tool_result", "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.text_content()});
                // Consecutive tool results answer one assistant turn: keep them in one user turn.
                let merged = messages.last_mut().and_then(|last| {
                    let is_results = last["role"] == "user" && last["content"].as_array().is_some_and(|a| a.iter().all(|p| p["type"] == "tool_result"));
                    if is_results {
                        last["content"].as_array_mut()
                    } else {
                        None
                    }
                });
                match merged {
                    Some(arr) => arr.push(block),
                    None => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
            "assistant" => messages.push(json!({"role": "assistant", "content": assistant_blocks(m)})),
            _ => messages.push(json!({"role": "user", "content": content_parts(&m.content)})),
        }
    }
    b.insert("model".into(), json!(wire_model));
    if !system.is_empty() {
        b.insert("system".into(), json!(system.join("\n\n")));
    }
    b.insert("messages".into(), Value::Array(messages));
    if params.temperature.is_some() {
        unsupported.push("temperature");
    }
    if params.top_p.is_some() {
        unsupported.push("top_p");
    }
    if !params.stop.is_empty() {
        b.insert("stop_sequences".into(), json!(params.stop));
    }
    set_opt(&mut b, "tools", params.tools.as_ref().and_then(tools));
    set_opt(&mut b, "tool_choice", params.tool_choice.as_ref().and_then(tool_choice));
    let mut output_config = Map::new();
    if let Some(rf) = &params.response_format {
        match format::response_format(rf)? {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => unsupported.push("response_format"),
            ResponseFormat::JsonSchema { schema, .. } => {
                output_config.insert("format".into(), json!({"type": "json_schema", "schema": format::anthropic_schema(&schema)}));
            }
        }
    }
    let mut max_tokens = params.max_tokens;
    for (k, v) in &params.extra {
        let k = k.as_str();
        if RESERVED.contains(&k) || SCOPES.contains(&k) {
            continue;
        }
        match k {
            "tool_choice" | "stop_sequences" if b.contains_key(k) => {}
            "output_config" => match v {
                Value::Object(o) => {
                    for (ok, ov) in o {
                        output_config.entry(ok.clone()).or_insert_with(|| ov.clone());
                    }
                }
                _ => unsupported.push(k),
            },
            "metadata" => match v.as_object() {
                // OpenAI's metadata is free-form; Anthropic's has only `user_id`.
                Some(o) if o.keys().all(|mk| mk == "user_id") => {
                    b.insert(k.into(), v.clone());
                }
                _ => unsupported.push(k),
            },
            "service_tier" => match v.as_str() {
                Some("auto" | "standard_only") => {
                    b.insert(k.into(), v.clone());
                }
                _ => unsupported.push(k),
            },
            _ if NATIVE_KEYS.contains(&k) => {
                b.insert(k.into(), v.clone());
            }
            "max_completion_tokens" => match v.as_u64() {
                Some(n) if max_tokens.is_none() => max_tokens = Some(n.min(u32::MAX as u64) as u32),
                Some(_) => {}
                None => unsupported.push(k),
            },
            "user" => match v {
                Value::String(_) => {
                    let meta = b.entry("metadata").or_insert_with(|| json!({}));
                    if let Value::Object(mo) = meta {
                        mo.entry("user_id").or_insert_with(|| v.clone());
                    }
                }
                _ => unsupported.push(k),
            },
            "reasoning_effort" => match v.as_str() {
                Some(e @ ("low" | "medium" | "high" | "xhigh" | "max")) => {
                    output_config.entry("effort").or_insert_with(|| json!(e));
                }
                _ => unsupported.push(k),
            },
            "parallel_tool_calls" => {}
            _ => unsupported.push(k),
        }
    }
    // `parallel_tool_calls: false` is a flag on the tool choice.
    if let Some(p) = params.extra.get("parallel_tool_calls") {
        match p.as_bool() {
            Some(false) => {
                if let Value::Object(tc) = b.entry("tool_choice").or_insert_with(|| json!({"type": "auto"})) {
                    if tc.get("type").and_then(Value::as_str) != Some("none") {
                        tc.insert("disable_parallel_tool_use".into(), json!(true));
                    }
                }
            }
            Some(true) => {}
            None => unsupported.push("parallel_tool_calls"),
        }
    }
    if !output_config.is_empty() {
        b.insert("output_config".into(), Value::Object(output_config));
    }
    // Thinking tokens count toward max_tokens, which must exceed the thinking budget.
    let budget = b.get("thinking").and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64);
    let max_tokens = match (max_tokens, budget) {
        (Some(n), _) => n,
        (None, Some(budget)) => (budget.min(u32::MAX as u64) as u32).saturating_add(DEFAULT_MAX_TOKENS),
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    b.insert("max_tokens".into(), json!(max_tokens));
    for scope in format::scoped(&params.extra, &["anthropic"], unsupported) {
        for (k, v) in scope {
            if !["model", "messages", "stream"].contains(&k.as_str()) {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    if stream {
        b.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(b))
}

/// Usage from a `usage` object: cache reads and writes are input tokens too.
fn usage(u: &Value) -> Usage {
    let input = num_u32(u.get("input_tokens"));
    let cache_read = num_u32(u.get("cache_read_input_tokens"));
    let cache_write = num_u32(u.get("cache_creation_input_tokens"));
    let p = input.saturating_add(cache_read).saturating_add(cache_write);
    let c = num_u32(u.get("output_tokens"));
    Usage {
        cached_tokens: cache_read,
        cache_creation_tokens: cache_write,
        reasoning_tokens: num_u32(u.pointer("/output_tokens_details/thinking_tokens")),
        ..Usage::new(p, c)
    }
}

/// The error for `stop_reason: refusal`, with the provider's explanation when it gave one.
fn refusal_error(details: Option<&Value>, ctx: &ErrCtx<'_>) -> Error {
    let category = details.and_then(|d| d.get("category")).and_then(Value::as_str);
    let explanation = details.and_then(|d| d.get("explanation")).and_then(Value::as_str);
    let mut msg = "the model refused (stop_reason refusal)".to_string();
    if let Some(c) = category {
        msg.push_str(&format!(", category {c}"));
    }
    if let Some(e) = explanation {
        msg.push_str(&format!(": {e}"));
    }
    ctx.error(ErrorKind::ContentFiltered, &msg)
}

/// Parse a non-streaming response body.
pub fn parse_response(v: &Value, ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if v.get("type").and_then(Value::as_str) == Some("error") || v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_json_error(v, ctx));
    }
    let Some(Value::Array(blocks)) = v.get("content") else {
        return Err(ctx.error(ErrorKind::InvalidResponse, "response has no content array"));
    };
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let mut thinking = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => content.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                extra_content: None,
            }),
            Some("thinking" | "redacted_thinking") => thinking.push(b.clone()),
            _ => {}
        }
    }
    if let (Some(first), false) = (tool_calls.first_mut(), thinking.is_empty()) {
        first.extra_content = Some(json!({"anthropic": {"thinking_blocks": thinking}}));
    }
    let stop = v.get("stop_reason").and_then(Value::as_str);
    if stop == Some("refusal") {
        let mut e = refusal_error(v.get("stop_details"), ctx);
        if !content.is_empty() {
            e.partial = Some(content);
        }
        return Err(e);
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        finish_reason: stop.map(finish_reason),
        usage: v.get("usage").map(usage).unwrap_or_default(),
        request_id: v.get("id").and_then(Value::as_str).map(str::to_string),
        ..Default::default()
    })
}

/// Decodes the messages event stream; `message_stop` is the terminal event.
#[derive(Default)]
pub struct Decoder {
    /// The latest cumulative usage object (`message_start`, then each `message_delta`).
    usage: Map<String, Value>,
    stop_reason: Option<String>,
    model: Option<String>,
    id: Option<String>,
    /// Content block index → tool-call ordinal (the OpenAI delta `index`).
    tool_index: HashMap<u64, usize>,
    /// Thinking blocks seen so far (content block index, block), sent with the first call.
    thinking: Vec<(u64, Value)>,
}

impl StreamDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>, ctx: &ErrCtx<'_>) -> Result<(), DecodeError> {
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| DecodeError::Garbage(format!("bad event JSON: {e}")))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(ev.event.as_str()).to_string();
        match kind.as_str() {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                self.model = m.get("model").and_then(Value::as_str).map(str::to_string);
                self.id = m.get("id").and_then(Value::as_str).map(str::to_string);
                self.merge_usage(m.get("usage"));
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let ordinal = self.tool_index.len();
                        self.tool_index.insert(idx, ordinal);
                        let mut call = json!({"index": ordinal, "id": block.get("id"), "type": "function",
                            "function": {"name": block.get("name"), "arguments": ""}});
                        if ordinal == 0 && !self.thinking.is_empty() {
                            let blocks: Vec<Value> = std::mem::take(&mut self.thinking).into_iter().map(|(_, b)| b).collect();
                            call["extra_content"] = json!({"anthropic": {"thinking_blocks": blocks}});
                        }
                        out.push(StreamEvent::Delta { text: String::new(), tool_call: Some(call) });
                    }
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Delta { text: t.to_string(), tool_call: None });
                        }
                    }
                    Some("thinking" | "redacted_thinking") => self.thinking.push((idx, block.clone())),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = d.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Delta { text: t.to_string(), tool_call: None });
                        }
                    }
                    Some("input_json_delta") => {
                        let ordinal = self.tool_index.get(&idx).copied().unwrap_or(0);
                        let part = d.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        out.push(StreamEvent::Delta { text: String::new(), tool_call: Some(json!({"index": ordinal, "function": {"arguments": part}})) });
                    }
                    Some(t @ ("thinking_delta" | "signature_delta")) => {
                        let (field, key) = if t == "thinking_delta" { ("thinking", "thinking") } else { ("signature", "signature") };
                        let piece = d.get(key).and_then(Value::as_str).unwrap_or_default();
                        if let Some((_, b)) = self.thinking.iter_mut().rev().find(|(i, _)| *i == idx) {
                            let cur = b.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
                            b[field] = Value::String(cur + piece);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    if r == "refusal" {
                        let details = v.get("delta").and_then(|d| d.get("stop_details"));
                        return Err(DecodeError::Provider(refusal_error(details, ctx)));
                    }
                    self.stop_reason = Some(finish_reason(r));
                }
                self.merge_usage(v.get("usage"));
            }
            "message_stop" => out.push(self.done()),
            "error" => return Err(DecodeError::Provider(classify_json_error(&v, ctx))),
            _ => {} // ping, content_block_stop, future event types
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Option<StreamEvent> {
        self.stop_reason.is_some().then(|| self.done())
    }
}

impl Decoder {
    /// Usage counts are cumulative: later values replace earlier ones, nulls are ignored.
    fn merge_usage(&mut self, u: Option<&Value>) {
        if let Some(Value::Object(u)) = u {
            for (k, v) in u {
                if !v.is_null() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn done(&mut self) -> StreamEvent {
        let usage = (!self.usage.is_empty()).then(|| usage(&Value::Object(std::mem::take(&mut self.usage))));
        StreamEvent::Done { finish_reason: self.stop_reason.take(), usage, model: self.model.take(), request_id: self.id.take() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn build(req: &ChatRequest, params: &Params, stream: bool) -> (Value, Vec<String>) {
        let mut u = Unsupported::default();
        let b = build_body("claude-x", req, params, stream, &mut u).expect("builds");
        (b, u.0)
    }

    #[test]
    fn urls_with_or_without_the_version_segment() {
        for base in [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "https://api.anthropic.com/v1",
            "https://api.anthropic.com/v1/",
            "https://api.anthropic.com/v1/messages",
        ] {
            assert_eq!(chat_url(base), "https://api.anthropic.com/v1/messages", "{base}");
            assert_eq!(models_url(base), "https://api.anthropic.com/v1/models", "{base}");
        }
        assert_eq!(chat_url("http://gw.local/anthropic"), "http://gw.local/anthropic/v1/messages");
    }

    #[test]
    fn body_translation() {
        let mut tool_msg = Message::text("tool", "42");
        tool_msg.tool_call_id = Some("toolu_1".into());
        let mut tool_msg2 = Message::text("tool", "43");
        tool_msg2.tool_call_id = Some("toolu_2".into());
        let thinking = json!([{"type": "thinking", "thinking": "hmm", "signature": "sig"}]);
        let asst = Message {
            role: "assistant".into(),
            content: Value::Null,
            tool_calls: Some(json!([{"id": "toolu_1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\":1}"},
                "extra_content": {"anthropic": {"thinking_blocks": thinking}}}])),
            ..Default::default()
        };
        let req = ChatRequest {
            messages: vec![Message::text("system", "be brief"), Message::text("user", "hi"), asst, tool_msg, tool_msg2],
            params: Params::default(),
        };
        let mut params = Params {
            temperature: Some(0.5),
            top_p: Some(0.9),
            stop: vec!["X".into()],
            tools: Some(
                json!([{"type": "function", "function": {"name": "calc", "description": "d", "parameters": {"type": "object"}, "strict": true}}, {"type": "web_search_20250305", "name": "web_search"}]),
            ),
            tool_choice: Some(json!("required")),
            response_format: Some(json!({"type": "object", "properties": {"a": {"type": "string"}}})),
            ..Default::default()
        };
        params.extra.insert("user".into(), json!("u"));
        params.extra.insert("parallel_tool_calls".into(), json!(false));
        params.extra.insert("seed".into(), json!(7));
        params.extra.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": 2048}));
        params.extra.insert("gemini".into(), json!({"safetySettings": []}));
        params.extra.insert("anthropic".into(), json!({"top_k": 5}));
        let (b, unsupported) = build(&req, &params, true);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["max_tokens"], 2048 + DEFAULT_MAX_TOKENS, "thinking budget + default");
        assert_eq!(b["messages"].as_array().unwrap().len(), 3, "{b}");
        assert_eq!(b["messages"][0], json!({"role": "user", "content": "hi"}));
        assert_eq!(b["messages"][1]["content"][0], thinking[0], "thinking goes back first");
        assert_eq!(b["messages"][1]["content"][1], json!({"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"x": 1}}));
        assert_eq!(b["messages"][2]["content"][1]["tool_use_id"], "toolu_2");
        assert_eq!(b["stop_sequences"], json!(["X"]));
        assert_eq!(b["tools"][0], json!({"name": "calc", "description": "d", "input_schema": {"type": "object"}, "strict": true}));
        assert_eq!(b["tools"][1], json!({"type": "web_search_20250305", "name": "web_search"}));
        assert_eq!(b["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(b["metadata"], json!({"user_id": "u"}));
        assert_eq!(b["output_config"]["format"]["type"], "json_schema");
        assert_eq!(b["output_config"]["format"]["schema"]["additionalProperties"], false);
        assert_eq!(b["top_k"], 5, "scoped extras pass unchanged");
        assert_eq!(b["stream"], true);
        assert!(b.get("temperature").is_none() && b.get("top_p").is_none() && b.get("seed").is_none() && b.get("safetySettings").is_none());
        assert_eq!(unsupported, ["temperature", "top_p", "seed"]);
        let (b, u) = build(&req, &Params { max_tokens: Some(7), response_format: Some(json!("json")), ..Default::default() }, false);
        assert_eq!(b["max_tokens"], 7);
        assert!(b.get("stream").is_none() && b.get("output_config").is_none());
        assert_eq!(u, ["response_format"]);
        let mut bad = Params::default();
        bad.extra.insert("metadata".into(), json!({"trace": "x"}));
        bad.extra.insert("service_tier".into(), json!("flex"));
        bad.extra.insert("max_completion_tokens".into(), json!(99));
        let (b, u) = build(&req, &bad, false);
        assert_eq!(b["max_tokens"], 99);
        assert_eq!(u, ["metadata", "service_tier"]);
        let mut u = Unsupported::default();
        assert!(build_body("claude-x", &req, &Params { response_format: Some(json!(1)), ..Default::default() }, false, &mut u).is_err());
    }

    #[test]
    fn parse_with_tool_use_thinking_usage_and_refusal() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "anthropic/m", secret: &s };
        let v = json!({"id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "plan", "signature": "s1"}, {"type": "redacted_thinking", "data": "d"},
                {"type": "text", "text": "let me"}, {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"x": 1}},
                {"type": "tool_use", "id": "toolu_2", "name": "calc", "input": {}}],
            "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
                "output_tokens_details": {"thinking_tokens": 3}}});
        let r = parse_response(&v, &ctx).unwrap();
        assert_eq!(r.content, "let me");
        assert_eq!(r.tool_calls[0].name, "calc");
        assert_eq!(serde_json::from_str::<Value>(&r.tool_calls[0].arguments).unwrap(), json!({"x": 1}));
        assert_eq!(
            r.tool_calls[0].extra_content,
            Some(json!({"anthropic": {"thinking_blocks": [
            {"type": "thinking", "thinking": "plan", "signature": "s1"}, {"type": "redacted_thinking", "data": "d"}]}}))
        );
        assert_eq!(r.tool_calls[1].extra_content, None);
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            r.usage,
            Usage { prompt_tokens: 130, completion_tokens: 4, total_tokens: 134, cached_tokens: 100, cache_creation_tokens: 20, reasoning_tokens: 3 }
        );
        let refused = json!({"id": "m", "type": "message", "content": [{"type": "text", "text": "I"}], "stop_reason": "refusal",
            "stop_details": {"type": "refusal", "category": "cyber", "explanation": "no"}, "usage": {"input_tokens": 1, "output_tokens": 1}});
        let e = parse_response(&refused, &ctx).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ContentFiltered);
        assert!(e.message.contains("cyber") && e.message.contains("no"), "{}", e.message);
        assert_eq!(e.partial.as_deref(), Some("I"));
        let window = json!({"id": "m", "type": "message", "content": [{"type": "text", "text": "x"}], "stop_reason": "model_context_window_exceeded"});
        assert_eq!(parse_response(&window, &ctx).unwrap().finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn decoder_sequence() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "anthropic/m", secret: &s };
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for (event, data) in [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":9,"output_tokens":1,"cache_read_input_tokens":4}}}"#,
            ),
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"pl"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"an"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#),
            ("ping", r#"{"type":"ping"}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"calc","input":{}}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}}"#),
            ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ] {
            d.on_event(SseEvent { event: event.into(), data: data.into() }, &mut out, &ctx).map_err(|_| ()).unwrap();
        }
        assert_eq!(out[0], StreamEvent::Delta { text: "Hi".into(), tool_call: None });
        assert_eq!(
            out[1],
            StreamEvent::Delta {
                text: String::new(),
                tool_call: Some(json!({"index": 0, "id": "toolu_1", "type": "function",
            "function": {"name": "calc", "arguments": ""},
            "extra_content": {"anthropic": {"thinking_blocks": [{"type": "thinking", "thinking": "plan", "signature": "sig"}]}}}))
            }
        );
        assert_eq!(out[2], StreamEvent::Delta { text: String::new(), tool_call: Some(json!({"index": 0, "function": {"arguments": "{\"x\":"}})) });
        assert_eq!(
            out[3],
            StreamEvent::Done {
                finish_reason: Some("stop".into()),
                usage: Some(Usage { prompt_tokens: 13, completion_tokens: 5, total_tokens: 18, cached_tokens: 4, ..Default::default() }),
                model: Some("claude-x".into()),
                request_id: Some("msg_1".into()),
            }
        );
        let err = d
            .on_event(
                SseEvent { event: "error".into(), data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into() },
                &mut out,
                &ctx,
            )
            .err();
        assert!(matches!(err, Some(DecodeError::Provider(e)) if e.kind == ErrorKind::Overloaded));
        let mut d = Decoder::default();
        let err = d
            .on_event(
                SseEvent {
                    event: "message_delta".into(),
                    data: r#"{"type":"message_delta","delta":{"stop_reason":"refusal"},"usage":{"output_tokens":2}}"#.into(),
                },
                &mut out,
                &ctx,
            )
            .err();
        assert!(matches!(err, Some(DecodeError::Provider(e)) if e.kind == ErrorKind::ContentFiltered));
    }
}
