//! The Anthropic Messages shape: request → [`ChatRequest`] (content blocks become the neutral,
//! OpenAI-shaped messages every provider translates from), [`ChatResponse`] → message body,
//! and the event stream (`message_start`, content blocks, `message_delta`, `message_stop`; an
//! `error` event when a stream fails after its first token).
//!
//! Request keys only Anthropic knows (`thinking`, `service_tier`, …) travel as the
//! `anthropic`-scoped extra: they reach Anthropic targets unchanged and no other provider, so
//! a group mixing providers keeps falling back.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::errors::{Api, Failure};
use super::Parsed;
use crate::types::{ChatRequest, ChatResponse, Message, Params};

const ENVELOPE: [&str; 4] = ["model", "messages", "stream", "system"];

fn bad(msg: impl Into<String>) -> Failure {
    Failure::new(400, msg).should_retry(false)
}

/// Read a Messages request body.
pub fn parse_request(body: &Value) -> Result<Parsed, Failure> {
    let obj = body.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("model: must be a string naming a route")),
        None => return Err(bad("model: Field required (name a group, `group.echelon`, pool, wrapper or `provider:model`)")),
    };
    let max_tokens = match obj.get("max_tokens") {
        Some(v) => v.as_u64().filter(|n| *n >= 1 && *n <= u32::MAX as u64).ok_or_else(|| bad("max_tokens: must be a positive integer"))? as u32,
        None => return Err(bad("max_tokens: Field required")),
    };
    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message::text("system", s.clone())),
        Some(Value::Array(blocks)) => {
            let text = blocks
                .iter()
                .map(|b| b.get("text").and_then(Value::as_str).ok_or_else(|| bad("system: blocks must be text blocks")))
                .collect::<Result<Vec<_>, _>>()?;
            messages.push(Message::text("system", text.join("\n")));
        }
        Some(_) => return Err(bad("system: must be a string or an array of text blocks")),
    }
    match obj.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, m) in items.iter().enumerate() {
                convert_message(i, m, &mut messages)?;
            }
        }
        Some(Value::Array(_)) => return Err(bad("messages: at least one message is required")),
        Some(_) => return Err(bad("messages: must be an array")),
        None => return Err(bad("messages: Field required")),
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream: must be a boolean")),
    };
    let mut params = Params { max_tokens: Some(max_tokens), ..Default::default() };
    let mut scoped = Map::new();
    for (k, v) in obj {
        if ENVELOPE.contains(&k.as_str()) || k == "max_tokens" || v.is_null() {
            continue;
        }
        match k.as_str() {
            "temperature" => params.temperature = Some(v.as_f64().ok_or_else(|| bad("temperature: must be a number"))?),
            "top_p" => params.top_p = Some(v.as_f64().ok_or_else(|| bad("top_p: must be a number"))?),
            "top_k" => {
                params.extra.insert("top_k".into(), v.clone());
            }
            "stop_sequences" => {
                params.stop = v
                    .as_array()
                    .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| bad("stop_sequences: must be an array of strings"))?;
            }
            "tools" => params.tools = Some(tools(v)?),
            "tool_choice" => tool_choice(v, &mut params)?,
            "metadata" => {
                if let Some(u) = v.get("user_id").and_then(Value::as_str) {
                    params.extra.insert("user".into(), Value::String(u.to_string()));
                }
            }
            _ => {
                scoped.insert(k.clone(), v.clone());
            }
        }
    }
    if !scoped.is_empty() {
        params.extra.insert("anthropic".into(), Value::Object(scoped));
    }
    Ok(Parsed { model, request: ChatRequest { messages, params }, stream, include_usage: true })
}

fn tools(v: &Value) -> Result<Value, Failure> {
    let items = v.as_array().ok_or_else(|| bad("tools: must be an array"))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, t) in items.iter().enumerate() {
        if let Some(kind) = t.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
            return Err(bad(format!("tools.{i}: tool type `{kind}` is not supported by the gateway (only client tools with an input_schema)")));
        }
        let name = t.get("name").and_then(Value::as_str).ok_or_else(|| bad(format!("tools.{i}.name: Field required")))?;
        let schema = t.get("input_schema").cloned().ok_or_else(|| bad(format!("tools.{i}.input_schema: Field required")))?;
        let mut f = json!({"name": name, "parameters": schema});
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f["description"] = d.into();
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

fn tool_choice(v: &Value, p: &mut Params) -> Result<(), Failure> {
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| bad("tool_choice.type: Field required"))?;
    p.tool_choice = Some(match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = v.get("name").and_then(Value::as_str).ok_or_else(|| bad("tool_choice.name: Field required"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => return Err(bad(format!("tool_choice.type: `{other}` is not one of auto, any, tool, none"))),
    });
    if v.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        p.extra.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

fn image_part(i: usize, b: &Value) -> Result<Value, Failure> {
    let src = b.get("source").ok_or_else(|| bad(format!("messages.{i}: image.source: Field required")))?;
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = src.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            let data = src.get("data").and_then(Value::as_str).ok_or_else(|| bad(format!("messages.{i}: image.source.data: Field required")))?;
            format!("data:{mt};base64,{data}")
        }
        Some("url") => src.get("url").and_then(Value::as_str).ok_or_else(|| bad(format!("messages.{i}: image.source.url: Field required")))?.to_string(),
        _ => return Err(bad(format!("messages.{i}: image.source.type must be base64 or url"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn block_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// One Anthropic message as neutral messages: a user turn's tool results become `tool`
/// messages (first, as the protocol orders them), an assistant turn's `tool_use` blocks its
/// `tool_calls`, and its thinking blocks ride on the first call (`extra_content`) so an
/// Anthropic target gets them back.
fn convert_message(i: usize, m: &Value, out: &mut Vec<Message>) -> Result<(), Failure> {
    let role = m.get("role").and_then(Value::as_str).ok_or_else(|| bad(format!("messages.{i}.role: Field required")))?;
    if role != "user" && role != "assistant" {
        return Err(bad(format!("messages.{i}.role: Input should be 'user' or 'assistant'")));
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(Message::text(role, s.clone()));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => return Err(bad(format!("messages.{i}.content: must be a string or an array of content blocks"))),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b.get("text").and_then(Value::as_str).unwrap_or("")})),
            Some("image") => parts.push(image_part(i, b)?),
            Some("tool_result") if role == "user" => {
                let id = b.get("tool_use_id").and_then(Value::as_str).ok_or_else(|| bad(format!("messages.{i}: tool_result.tool_use_id: Field required")))?;
                let mut text = b.get("content").map(block_text).unwrap_or_default();
                if b.get("is_error").and_then(Value::as_bool) == Some(true) && text.is_empty() {
                    text = "error".into();
                }
                out.push(Message { role: "tool".into(), content: Value::String(text), tool_call_id: Some(id.to_string()), ..Default::default() });
            }
            Some("tool_use") if role == "assistant" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = b.get("name").and_then(Value::as_str).ok_or_else(|| bad(format!("messages.{i}: tool_use.name: Field required")))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("thinking") | Some("redacted_thinking") if role == "assistant" => thinking.push(b.clone()),
            Some(other) => return Err(bad(format!("messages.{i}: content block type `{other}` is not supported in a {role} message by the gateway"))),
            None => return Err(bad(format!("messages.{i}: every content block needs a `type`"))),
        }
    }
    if !thinking.is_empty() {
        if let Some(first) = calls.first_mut() {
            first["extra_content"] = json!({"anthropic": {"thinking_blocks": thinking}});
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let only_text = parts.iter().all(|p| p["type"] == "text");
    let content = if parts.is_empty() {
        Value::Null
    } else if only_text {
        Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""))
    } else {
        Value::Array(parts)
    };
    out.push(Message { role: role.to_string(), content, tool_calls: (!calls.is_empty()).then_some(Value::Array(calls)), ..Default::default() });
    Ok(())
}

/// The Anthropic `stop_reason` for a neutral finish reason.
pub fn stop_reason(finish: Option<&str>, has_tools: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        Some("content_filter") => "refusal",
        None if has_tools => "tool_use",
        _ => "end_turn",
    }
}

fn usage_json(r: &ChatResponse) -> Value {
    let u = r.usage;
    // Anthropic counts cache reads and writes apart from `input_tokens`; the neutral usage
    // includes them in `prompt_tokens`.
    let input = u.prompt_tokens.saturating_sub(u.cached_tokens).saturating_sub(u.cache_creation_tokens);
    json!({
        "input_tokens": input,
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cached_tokens,
    })
}

fn tool_input(args: &str) -> Value {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({"value": other}),
        Err(_) if args.trim().is_empty() => json!({}),
        Err(_) => json!({"arguments": args}),
    }
}

/// The `message` body of a whole response.
pub fn response_body(r: &ChatResponse, id: &str) -> Value {
    let mut content = Vec::new();
    for tc in r.tool_calls.iter().take(1) {
        if let Some(blocks) = tc.extra_content.as_ref().and_then(|e| e.get("anthropic")).and_then(|a| a.get("thinking_blocks")).and_then(Value::as_array) {
            content.extend(blocks.iter().cloned());
        }
    }
    if !r.content.is_empty() || r.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": r.content}));
    }
    for tc in &r.tool_calls {
        content.push(json!({"type": "tool_use", "id": tc.id, "name": tc.name, "input": tool_input(&tc.arguments)}));
    }
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": stop_reason(r.finish_reason.as_deref(), !r.tool_calls.is_empty()),
        "stop_sequence": null,
        "usage": usage_json(r),
    })
}

fn event(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(v["type"].as_str().unwrap_or("error").as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// A tool_use block for the call with this (neutral) index.
    Tool(u64),
}

/// Writes one stream's events; content blocks are opened and closed as the deltas change
/// between text and tool calls.
pub struct StreamEncoder {
    id: String,
    model: String,
    open: Open,
    /// Index of the next content block.
    next: usize,
    any_block: bool,
}

impl StreamEncoder {
    /// An encoder for the stream `id` served by wire model `model`.
    pub fn new(id: &str, model: &str) -> Self {
        StreamEncoder { id: format!("msg_{id}"), model: model.to_string(), open: Open::None, next: 0, any_block: false }
    }

    /// `message_start`.
    pub fn start(&self) -> Bytes {
        let mut out = Vec::new();
        event(
            &mut out,
            &json!({
                "type": "message_start",
                "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            }),
        );
        Bytes::from(out)
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open != Open::None {
            event(out, &json!({"type": "content_block_stop", "index": self.next - 1}));
            self.open = Open::None;
        }
    }

    fn open(&mut self, out: &mut Vec<u8>, kind: Open, block: Value) {
        self.close(out);
        event(out, &json!({"type": "content_block_start", "index": self.next, "content_block": block}));
        self.next += 1;
        self.open = kind;
        self.any_block = true;
    }

    /// One delta: text and/or a tool-call fragment.
    pub fn delta(&mut self, text: &str, tool_call: Option<&Value>) -> Bytes {
        let mut out = Vec::new();
        if !text.is_empty() {
            if self.open != Open::Text {
                self.open(&mut out, Open::Text, json!({"type": "text", "text": ""}));
            }
            event(&mut out, &json!({"type": "content_block_delta", "index": self.next - 1, "delta": {"type": "text_delta", "text": text}}));
        }
        if let Some(tc) = tool_call {
            let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = tc.get("function");
            if self.open != Open::Tool(index) {
                let id = tc.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
                self.open(&mut out, Open::Tool(index), json!({"type": "tool_use", "id": id, "name": name, "input": {}}));
            }
            if let Some(args) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str).filter(|a| !a.is_empty()) {
                event(&mut out, &json!({"type": "content_block_delta", "index": self.next - 1, "delta": {"type": "input_json_delta", "partial_json": args}}));
            }
        }
        Bytes::from(out)
    }

    /// Close the open block, then `message_delta` (stop reason, usage) and `message_stop`.
    pub fn finish(&mut self, r: &ChatResponse) -> Bytes {
        let mut out = Vec::new();
        if !self.any_block {
            self.open(&mut out, Open::Text, json!({"type": "text", "text": ""}));
        }
        self.close(&mut out);
        event(
            &mut out,
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(r.finish_reason.as_deref(), !r.tool_calls.is_empty()), "stop_sequence": null},
                "usage": usage_json(r),
            }),
        );
        event(&mut out, &json!({"type": "message_stop"}));
        Bytes::from(out)
    }

    /// A failure after the first token: an `error` event (the SDK raises on it).
    pub fn error(&self, f: &Failure, request_id: &str) -> Bytes {
        let mut out = Vec::new();
        event(&mut out, &f.stream_event(Api::Anthropic, request_id));
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ToolCall, Usage};

    #[test]
    fn blocks_become_neutral_messages() {
        let body = json!({
            "model": "g", "max_tokens": 64, "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"], "thinking": {"type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u1"},
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "thanks"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}},
                ]},
            ],
        });
        let p = parse_request(&body).expect("valid");
        let m = &p.request.messages;
        assert_eq!(m.iter().map(|x| x.role.as_str()).collect::<Vec<_>>(), ["system", "user", "assistant", "tool", "user"]);
        let call = &m[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(call["extra_content"]["anthropic"]["thinking_blocks"][0]["signature"], "s");
        assert_eq!((m[3].tool_call_id.as_deref(), m[3].text_content()), (Some("t1"), "sunny".to_string()));
        assert_eq!(m[4].content[1]["image_url"]["url"], "data:image/png;base64,AAA=");
        let params = &p.request.params;
        assert_eq!((params.max_tokens, params.stop.clone()), (Some(64), vec!["END".to_string()]));
        assert_eq!(params.tool_choice, Some(json!("required")));
        assert_eq!(params.tools.as_ref().unwrap()[0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(params.extra["anthropic"]["thinking"]["budget_tokens"], 1024);
        assert_eq!((params.extra["user"].as_str(), params.extra["parallel_tool_calls"].as_bool()), (Some("u1"), Some(false)));
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, says) in [
            (json!({"model": "g", "messages": [{"role": "user", "content": "x"}]}), "max_tokens"),
            (json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}), "model"),
            (json!({"model": "g", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}), "messages.0.role"),
            (json!({"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]}), "`video`"),
            (
                json!({"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "w"}]}),
                "web_search",
            ),
        ] {
            let f = parse_request(&body).expect_err("invalid");
            assert!(f.message.contains(says), "{} does not say {says}", f.message);
        }
    }

    #[test]
    fn streams_open_and_close_blocks_in_order() {
        let mut enc = StreamEncoder::new("r", "m");
        let mut all = String::from_utf8(enc.start().to_vec()).unwrap();
        for (t, tc) in [
            ("Hel", None),
            ("lo", None),
            ("", Some(json!({"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}))),
            ("", Some(json!({"index": 0, "function": {"arguments": ":1}"}}))),
        ] {
            all.push_str(std::str::from_utf8(&enc.delta(t, tc.as_ref())).unwrap());
        }
        let r = ChatResponse {
            tool_calls: vec![ToolCall { id: "c1".into(), name: "f".into(), arguments: "{\"a\":1}".into(), extra_content: None }],
            finish_reason: Some("tool_calls".into()),
            usage: Usage::new(5, 2),
            ..Default::default()
        };
        all.push_str(std::str::from_utf8(&enc.finish(&r)).unwrap());
        let kinds: Vec<&str> = all.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(all.contains("\"stop_reason\":\"tool_use\"") && all.contains("\"input_json_delta\""), "{all}");
        let body = response_body(&r, "r");
        assert_eq!(body["content"][0]["input"], json!({"a": 1}));
        assert_eq!(body["usage"]["input_tokens"], 5);
    }
}
