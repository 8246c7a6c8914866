//! Anthropic messages API: request translation from the OpenAI-shaped neutral request,
//! response parsing and the SSE event decoder.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::classify::{classify_json_error, ErrCtx};
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

/// `{base_url}/v1/messages`.
pub fn chat_url(base: &str) -> String {
    format!("{}/v1/messages", base.trim_end_matches('/'))
}

/// `{base_url}/v1/models`.
pub fn models_url(base: &str) -> String {
    format!("{}/v1/models", base.trim_end_matches('/'))
}

/// Normalise Anthropic's stop_reason to the OpenAI vocabulary the neutral response uses.
pub fn finish_reason(r: &str) -> String {
    match r {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" => "length",
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
                .map(|p| {
                    // OpenAI data-URL images become base64 image blocks; other parts pass through.
                    let url = p.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
                    match (p.get("type").and_then(Value::as_str), url.and_then(|u| u.strip_prefix("data:"))) {
                        (Some("image_url"), Some(rest)) => {
                            let (mime, data) = rest.split_once(";base64,").unwrap_or(("image/png", rest));
                            json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
                        }
                        (Some("image_url"), None) => json!({"type": "image", "source": {"type": "url", "url": url.unwrap_or_default()}}),
                        _ => p.clone(),
                    }
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

/// Translate OpenAI-shape tools to Anthropic's `{name, description, input_schema}`.
pub fn tools(v: &Value) -> Option<Value> {
    let Value::Array(list) = v else { return None };
    Some(Value::Array(
        list.iter()
            .map(|t| {
                let f = t.get("function").unwrap_or(t);
                let mut o = Map::new();
                o.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
                set_opt(&mut o, "description", f.get("description").cloned());
                o.insert(
                    "input_schema".into(),
                    f.get("parameters").or_else(|| f.get("input_schema")).cloned().unwrap_or(json!({"type": "object"})),
                );
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
pub fn build_body(wire_model: &str, req: &ChatRequest, params: &Params, stream: bool) -> Value {
    let mut b = Map::new();
    for (k, v) in &params.extra {
        if !RESERVED.contains(&k.as_str()) {
            b.insert(k.clone(), v.clone());
        }
    }
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
                    let is_results = last["role"] == "user"
                        && last["content"].as_array().is_some_and(|a| a.iter().all(|p| p["type"] == "tool_result"));
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
    b.insert("max_tokens".into(), json!(params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)));
    if !system.is_empty() {
        b.insert("system".into(), json!(system.join("\n\n")));
    }
    b.insert("messages".into(), Value::Array(messages));
    set_opt(&mut b, "temperature", params.temperature.map(Value::from));
    set_opt(&mut b, "top_p", params.top_p.map(Value::from));
    if !params.stop.is_empty() {
        b.insert("stop_sequences".into(), json!(params.stop));
    }
    set_opt(&mut b, "tools", params.tools.as_ref().and_then(tools));
    set_opt(&mut b, "tool_choice", params.tool_choice.as_ref().and_then(tool_choice));
    if params.response_format.is_some() {
        log::debug!("anthropic has no response_format; ignoring it (describe the format in the prompt)");
    }
    if stream {
        b.insert("stream".into(), json!(true));
    }
    Value::Object(b)
}

fn usage(u: &Value) -> Usage {
    let p = num_u32(u.get("input_tokens"));
    let c = num_u32(u.get("output_tokens"));
    Usage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c }
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
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => content.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
            }),
            _ => {}
        }
    }
    let finish = v.get("stop_reason").and_then(Value::as_str).map(finish_reason);
    if finish.as_deref() == Some("content_filter") {
        return Err(ctx.error(ErrorKind::ContentFiltered, "the model refused (stop_reason refusal)"));
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        finish_reason: finish,
        usage: v.get("usage").map(usage).unwrap_or_default(),
        request_id: v.get("id").and_then(Value::as_str).map(str::to_string),
        ..Default::default()
    })
}

/// Decodes the messages event stream; `message_stop` is the terminal event.
#[derive(Default)]
pub struct Decoder {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    stop_reason: Option<String>,
    model: Option<String>,
    id: Option<String>,
    /// Content block index → tool-call ordinal (the OpenAI delta `index`).
    tool_index: HashMap<u64, usize>,
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
                if let Some(u) = m.get("usage") {
                    self.input_tokens = u.get("input_tokens").map(|t| num_u32(Some(t)));
                    self.output_tokens = u.get("output_tokens").map(|t| num_u32(Some(t)));
                }
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let ordinal = self.tool_index.len();
                        self.tool_index.insert(idx, ordinal);
                        out.push(StreamEvent::Delta {
                            text: String::new(),
                            tool_call: Some(json!({"index": ordinal, "id": block.get("id"), "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""}})),
                        });
                    }
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Delta { text: t.to_string(), tool_call: None });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = d.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Delta { text: t.to_string(), tool_call: None });
                        }
                    }
                    Some("input_json_delta") => {
                        let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let ordinal = self.tool_index.get(&idx).copied().unwrap_or(0);
                        let part = d.get("partial_json").and_then(Value::as_str).unwrap_or_default();
                        out.push(StreamEvent::Delta {
                            text: String::new(),
                            tool_call: Some(json!({"index": ordinal, "function": {"arguments": part}})),
                        });
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    if r == "refusal" {
                        return Err(DecodeError::Provider(ctx.error(ErrorKind::ContentFiltered, "the model refused (stop_reason refusal)")));
                    }
                    self.stop_reason = Some(finish_reason(r));
                }
                if let Some(u) = v.get("usage") {
                    if let Some(o) = u.get("output_tokens") {
                        self.output_tokens = Some(num_u32(Some(o)));
                    }
                    if let Some(i) = u.get("input_tokens").filter(|i| !i.is_null()) {
                        self.input_tokens = Some(num_u32(Some(i)));
                    }
                }
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
    fn done(&mut self) -> StreamEvent {
        let usage = match (self.input_tokens, self.output_tokens) {
            (None, None) => None,
            (p, c) => {
                let (p, c) = (p.unwrap_or(0), c.unwrap_or(0));
                Some(Usage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c })
            }
        };
        StreamEvent::Done { finish_reason: self.stop_reason.take(), usage, model: self.model.take(), request_id: self.id.take() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn body_translation() {
        let mut tool_msg = Message::text("tool", "42");
        tool_msg.tool_call_id = Some("toolu_1".into());
        let mut tool_msg2 = Message::text("tool", "43");
        tool_msg2.tool_call_id = Some("toolu_2".into());
        let asst = Message {
            role: "assistant".into(),
            content: Value::Null,
            tool_calls: Some(json!([{"id": "toolu_1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\":1}"}}])),
            ..Default::default()
        };
        let req = ChatRequest {
            messages: vec![Message::text("system", "be brief"), Message::text("user", "hi"), asst, tool_msg, tool_msg2],
            params: Params::default(),
        };
        let mut params = Params {
            temperature: Some(0.5),
            stop: vec!["X".into()],
            tools: Some(json!([{"type": "function", "function": {"name": "calc", "description": "d", "parameters": {"type": "object"}}}])),
            tool_choice: Some(json!("required")),
            ..Default::default()
        };
        params.extra.insert("metadata".into(), json!({"user_id": "u"}));
        let b = build_body("claude-x", &req, &params, true);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["messages"].as_array().unwrap().len(), 3, "{b}");
        assert_eq!(b["messages"][0], json!({"role": "user", "content": "hi"}));
        assert_eq!(b["messages"][1]["content"][0], json!({"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"x": 1}}));
        assert_eq!(b["messages"][2]["content"][1]["tool_use_id"], "toolu_2");
        assert_eq!(b["stop_sequences"], json!(["X"]));
        assert_eq!(b["tools"][0], json!({"name": "calc", "description": "d", "input_schema": {"type": "object"}}));
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
        assert_eq!(b["metadata"]["user_id"], "u");
        assert_eq!(b["stream"], true);
        let b = build_body("claude-x", &req, &Params { max_tokens: Some(7), ..Default::default() }, false);
        assert_eq!(b["max_tokens"], 7);
        assert!(b.get("stream").is_none());
    }

    #[test]
    fn parse_with_tool_use() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "anthropic/m", secret: &s };
        let v = json!({"id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "let me"}, {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"x": 1}}],
            "usage": {"input_tokens": 10, "output_tokens": 4}});
        let r = parse_response(&v, &ctx).unwrap();
        assert_eq!(r.content, "let me");
        assert_eq!(r.tool_calls[0].name, "calc");
        assert_eq!(serde_json::from_str::<Value>(&r.tool_calls[0].arguments).unwrap(), json!({"x": 1}));
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.usage.total_tokens, 14);
    }

    #[test]
    fn decoder_sequence() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "anthropic/m", secret: &s };
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for (event, data) in [
            ("message_start", r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":9,"output_tokens":1}}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("ping", r#"{"type":"ping"}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"calc","input":{}}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}}"#),
            ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ] {
            d.on_event(SseEvent { event: event.into(), data: data.into() }, &mut out, &ctx).map_err(|_| ()).unwrap();
        }
        assert_eq!(out[0], StreamEvent::Delta { text: "Hi".into(), tool_call: None });
        assert_eq!(out[1], StreamEvent::Delta { text: String::new(), tool_call: Some(json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "calc", "arguments": ""}})) });
        assert_eq!(out[2], StreamEvent::Delta { text: String::new(), tool_call: Some(json!({"index": 0, "function": {"arguments": "{\"x\":"}})) });
        assert_eq!(
            out[3],
            StreamEvent::Done {
                finish_reason: Some("stop".into()),
                usage: Some(Usage { prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 }),
                model: Some("claude-x".into()),
                request_id: Some("msg_1".into()),
            }
        );
        let err = d
            .on_event(SseEvent { event: "error".into(), data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into() }, &mut out, &ctx)
            .err();
        assert!(matches!(err, Some(DecodeError::Provider(e)) if e.kind == ErrorKind::Overloaded));
    }
}
