//! OpenAI chat completions (and every OpenAI-compatible host): request body, response parsing
//! and the SSE chunk decoder.

use serde_json::{json, Map, Value};

use super::classify::{classify_json_error, ErrCtx};
use super::sse::SseEvent;
use super::stream::{DecodeError, StreamDecoder};
use super::{json_body, num_u32, set_opt};
use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, ChatResponse, Params, StreamEvent, ToolCall, Usage};

/// Keys the body builder owns; `params.extra` cannot override them.
const RESERVED: &[&str] = &["model", "messages", "stream", "stream_options"];

/// `{base_url}/chat/completions`.
pub fn chat_url(base: &str) -> String {
    format!("{}/chat/completions", base.trim_end_matches('/'))
}

/// `{base_url}/models`.
pub fn models_url(base: &str) -> String {
    format!("{}/models", base.trim_end_matches('/'))
}

/// The OpenAI `response_format` for our neutral value: `"json"` → `{"type":"json_object"}`,
/// `"text"` → `{"type":"text"}`, an object with `type` as is, any other object is taken as a
/// JSON schema.
pub fn response_format(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if s == "json" || s == "json_object" => Some(json!({"type": "json_object"})),
        Value::String(s) => Some(json!({"type": s})),
        Value::Object(o) if o.contains_key("type") => Some(v.clone()),
        Value::Object(_) => Some(json!({"type": "json_schema", "json_schema": {"name": "response", "schema": v}})),
        _ => None,
    }
}

/// The request body serialized straight to bytes: the same JSON as [`build_body`] without
/// building a JSON tree first (messages are written from the request as they are).
pub fn write_body(wire_model: &str, req: &ChatRequest, params: &Params, stream: bool) -> serde_json::Result<Vec<u8>> {
    let body = Body { model: wire_model, req, params, stream, response_format: params.response_format.as_ref().and_then(response_format) };
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, &body)?;
    Ok(out)
}

struct Body<'a> {
    model: &'a str,
    req: &'a ChatRequest,
    params: &'a Params,
    stream: bool,
    response_format: Option<Value>,
}

impl serde::Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let p = self.params;
        // A typed parameter that is set replaces a pass-through key of the same name.
        let typed = |k: &str| match k {
            "temperature" => p.temperature.is_some(),
            "max_tokens" => p.max_tokens.is_some(),
            "top_p" => p.top_p.is_some(),
            "stop" => !p.stop.is_empty(),
            "tools" => p.tools.is_some(),
            "tool_choice" => p.tool_choice.is_some(),
            "response_format" => self.response_format.is_some(),
            _ => false,
        };
        let mut m = s.serialize_map(None)?;
        for (k, v) in &p.extra {
            if !RESERVED.contains(&k.as_str()) && !typed(k) {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("model", self.model)?;
        m.serialize_entry("messages", &self.req.messages)?;
        if let Some(t) = p.temperature {
            m.serialize_entry("temperature", &t)?;
        }
        if let Some(n) = p.max_tokens {
            m.serialize_entry("max_tokens", &n)?;
        }
        if let Some(t) = p.top_p {
            m.serialize_entry("top_p", &t)?;
        }
        if !p.stop.is_empty() {
            m.serialize_entry("stop", &p.stop)?;
        }
        if let Some(t) = &p.tools {
            m.serialize_entry("tools", t)?;
        }
        if let Some(t) = &p.tool_choice {
            m.serialize_entry("tool_choice", t)?;
        }
        if let Some(r) = &self.response_format {
            m.serialize_entry("response_format", r)?;
        }
        if self.stream {
            m.serialize_entry("stream", &true)?;
            m.serialize_entry("stream_options", &json!({"include_usage": true}))?;
        }
        m.end()
    }
}

/// The request body as a JSON tree. `params` are already merged with the model defaults.
/// Requests are written by [`write_body`]; this is the readable reference it is tested against.
pub fn build_body(wire_model: &str, req: &ChatRequest, params: &Params, stream: bool) -> Value {
    let mut b = Map::new();
    for (k, v) in &params.extra {
        if !RESERVED.contains(&k.as_str()) {
            b.insert(k.clone(), v.clone());
        }
    }
    b.insert("model".into(), json!(wire_model));
    b.insert("messages".into(), serde_json::to_value(&req.messages).unwrap_or(Value::Array(vec![])));
    set_opt(&mut b, "temperature", params.temperature.map(Value::from));
    set_opt(&mut b, "max_tokens", params.max_tokens.map(Value::from));
    set_opt(&mut b, "top_p", params.top_p.map(Value::from));
    if !params.stop.is_empty() {
        b.insert("stop".into(), json!(params.stop));
    }
    set_opt(&mut b, "tools", params.tools.clone());
    set_opt(&mut b, "tool_choice", params.tool_choice.clone());
    set_opt(&mut b, "response_format", params.response_format.as_ref().and_then(response_format));
    if stream {
        b.insert("stream".into(), json!(true));
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(b)
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let p = num_u32(u.get("prompt_tokens"));
    let c = num_u32(u.get("completion_tokens"));
    let t = u.get("total_tokens").filter(|t| !t.is_null()).map(|t| num_u32(Some(t))).unwrap_or(p + c);
    Some(Usage { prompt_tokens: p, completion_tokens: c, total_tokens: t })
}

/// The common response shape (text content, no tool calls, no error), read straight into
/// borrowed fields. Anything else fails to match and is read through [`parse_response`].
#[derive(serde::Deserialize)]
struct Plain<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    choices: Vec<PlainChoice<'a>>,
    usage: Option<PlainUsage>,
    /// Present and not null: an error body, which only the general path classifies.
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PlainChoice<'a> {
    #[serde(borrow)]
    message: PlainMessage<'a>,
    #[serde(borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct PlainMessage<'a> {
    #[serde(borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    tool_calls: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PlainUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

/// Parse a non-streaming response body: the common shape directly (no JSON tree is built),
/// everything else (tool calls, errors, unusual types) through [`parse_response`].
pub fn parse_body(body: &[u8], ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if let Some(Ok(p)) = super::utf8(body).map(serde_json::from_str::<Plain<'_>>) {
        if let (None, Some(choice)) = (&p.error, p.choices.first()) {
            if choice.message.tool_calls.is_none() && choice.finish_reason.as_deref() != Some("content_filter") {
                let clamp = |n: Option<u64>| n.map_or(0, |n| n.min(u32::MAX as u64) as u32);
                let usage = p.usage.map(|u| {
                    let (pt, ct) = (clamp(u.prompt_tokens), clamp(u.completion_tokens));
                    Usage { prompt_tokens: pt, completion_tokens: ct, total_tokens: u.total_tokens.map_or(pt + ct, |t| clamp(Some(t))) }
                });
                return Ok(ChatResponse {
                    content: choice.message.content.as_deref().unwrap_or_default().to_string(),
                    tool_calls: Vec::new(),
                    model: p.model.as_deref().unwrap_or_default().to_string(),
                    finish_reason: choice.finish_reason.as_deref().map(str::to_string),
                    usage: usage.unwrap_or_default(),
                    request_id: p.id.as_deref().map(str::to_string),
                    ..Default::default()
                });
            }
        }
    }
    parse_response(&json_body(body, ctx)?, ctx)
}

/// Parse a non-streaming response body.
pub fn parse_response(v: &Value, ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_json_error(v, ctx));
    }
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| ctx.error(ErrorKind::InvalidResponse, "response has no choices[0]"))?;
    let msg = choice.get("message").ok_or_else(|| ctx.error(ErrorKind::InvalidResponse, "choices[0] has no message"))?;
    let finish_reason = choice.get("finish_reason").and_then(Value::as_str).map(str::to_string);
    if finish_reason.as_deref() == Some("content_filter") {
        return Err(ctx.error(ErrorKind::ContentFiltered, "response stopped by the provider's content filter"));
    }
    let content = match msg.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let mut tool_calls = Vec::new();
    if let Some(Value::Array(calls)) = msg.get("tool_calls") {
        for c in calls {
            let f = c.get("function").unwrap_or(&Value::Null);
            tool_calls.push(ToolCall {
                id: c.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                },
            });
        }
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        finish_reason,
        usage: usage(v).unwrap_or_default(),
        request_id: v.get("id").and_then(Value::as_str).map(str::to_string),
        ..Default::default()
    })
}

/// Decodes `chat.completion.chunk` events; `[DONE]` is the terminal event.
#[derive(Default)]
pub struct Decoder {
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    id: Option<String>,
}

impl StreamDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>, ctx: &ErrCtx<'_>) -> Result<(), DecodeError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            out.push(self.done());
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| DecodeError::Garbage(format!("bad chunk JSON: {e}")))?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(DecodeError::Provider(classify_json_error(&v, ctx)));
        }
        if let Some(m) = v.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model = Some(m.to_string());
        }
        if self.id.is_none() {
            self.id = v.get("id").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(u) = usage(&v) {
            self.usage = Some(u);
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else { return Ok(()) };
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Delta { text: text.to_string(), tool_call: None });
            }
            if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                for c in calls {
                    out.push(StreamEvent::Delta { text: String::new(), tool_call: Some(c.clone()) });
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            if f == "content_filter" {
                return Err(DecodeError::Provider(ctx.error(ErrorKind::ContentFiltered, "stream stopped by the provider's content filter")));
            }
            self.finish_reason = Some(f.to_string());
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Option<StreamEvent> {
        // Hosts that omit `[DONE]` still end with a finish_reason; the content is complete then.
        self.finish_reason.is_some().then(|| self.done())
    }
}

impl Decoder {
    fn done(&mut self) -> StreamEvent {
        StreamEvent::Done {
            finish_reason: self.finish_reason.take(),
            usage: self.usage.take(),
            model: self.model.take(),
            request_id: self.id.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::types::Message;

    /// The bytes written directly are the JSON the tree builder makes, for every parameter,
    /// pass-through keys that collide with typed ones or reserved ones, and both modes.
    #[test]
    fn written_body_equals_built_body() {
        let msgs = vec![
            Message::text("system", "be brief \"now\" é"),
            Message::text("user", "hi"),
            Message { role: "assistant".into(), content: json!([{"type": "text", "text": "parts"}]), ..Default::default() },
        ];
        let req = ChatRequest { messages: msgs, params: Params::default() };
        let mut full = Params {
            temperature: Some(0.2),
            max_tokens: Some(50),
            top_p: Some(f64::NAN),
            stop: vec!["END".into()],
            tools: Some(json!([{"type": "function", "function": {"name": "f", "parameters": {}}}])),
            tool_choice: Some(json!("auto")),
            response_format: Some(json!({"properties": {}})),
            ..Default::default()
        };
        for (k, v) in [("seed", json!(7)), ("model", json!("hijack")), ("stream", json!(false)), ("temperature", json!(9)), ("logit_bias", json!({"1": 2}))] {
            full.extra.insert(k.into(), v);
        }
        let mut extras_only = Params::default();
        for (k, v) in [("temperature", json!(0.5)), ("response_format", json!({"type": "text"})), ("user", json!("u"))] {
            extras_only.extra.insert(k.into(), v);
        }
        for params in [Params::default(), full, extras_only] {
            for stream in [false, true] {
                let written: Value = serde_json::from_slice(&write_body("gpt-x", &req, &params, stream).expect("serializes")).expect("valid JSON");
                assert_eq!(written, build_body("gpt-x", &req, &params, stream), "{params:?} stream={stream}");
            }
        }
    }

    /// The direct path and the JSON-tree path give the same answer (or the same error) for
    /// every shape, common or not.
    #[test]
    fn direct_parse_agrees_with_the_general_path() {
        let s = Secret::new("sk-test");
        let ctx = ErrCtx { label: "openai/m", secret: &s };
        let bodies = [
            r#"{"id":"c1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\" \u00e9"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            r#"{"choices":[{"message":{"content":null},"finish_reason":null}]}"#,
            r#"{"choices":[{"message":{"content":"x","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":null},"system_fingerprint":"fp"}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"parts"}]}}]}"#,
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":"content_filter"}]}"#,
            r#"{"error":{"message":"bad key sk-test","type":"invalid_request_error"}}"#,
            r#"{"error":null,"choices":[{"message":{"content":"ok"}}]}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            r#"{"id":7,"choices":[{"message":{"content":"x"}}]}"#,
            r#"{"choices":[{"message":{"content":"a"}}],"choices":[{"message":{"content":"b"}}]}"#,
            r#"not json"#,
        ];
        // The common shapes really take the direct path.
        for b in &bodies[..3] {
            assert!(serde_json::from_str::<Plain<'_>>(b).is_ok(), "{b}");
        }
        for b in bodies {
            let direct = parse_body(b.as_bytes(), &ctx);
            let general = json_body(b.as_bytes(), &ctx).and_then(|v| parse_response(&v, &ctx));
            match (direct, general) {
                (Ok(d), Ok(g)) => assert_eq!(format!("{d:?}"), format!("{g:?}"), "{b}"),
                (Err(d), Err(g)) => assert_eq!((d.kind, d.message), (g.kind, g.message), "{b}"),
                (d, g) => panic!("paths disagree on {b}: {d:?} vs {g:?}"),
            }
        }
    }

    /// Bodies are validated as UTF-8 once, before parsing: raw multi-byte text comes through
    /// whole, and a body that is not UTF-8 is an InvalidResponse on both paths, never a panic.
    #[test]
    fn body_text_is_validated_once_and_invalid_utf8_is_an_invalid_response() {
        let s = Secret::new("sk-test");
        let ctx = ErrCtx { label: "openai/m", secret: &s };
        let raw = "{\"choices\":[{\"message\":{\"content\":\"café 日本語 🚀\"},\"finish_reason\":\"stop\"}]}";
        assert_eq!(parse_body(raw.as_bytes(), &ctx).expect("valid body").content, "café 日本語 🚀");
        let mut bad = raw.as_bytes().to_vec();
        let at = raw.find("日").expect("marker");
        bad[at + 1] = 0xff; // breaks the three-byte sequence inside the content string
        let e = parse_body(&bad, &ctx).expect_err("not UTF-8");
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(e.message.contains("unparseable JSON body"), "{}", e.message);
        assert!(json_body(&bad, &ctx).is_err());
    }

    #[test]
    fn body_translation() {
        let mut params = Params {
            temperature: Some(0.2),
            max_tokens: Some(50),
            top_p: Some(0.9),
            stop: vec!["END".into()],
            tools: Some(json!([{"type": "function", "function": {"name": "f", "parameters": {}}}])),
            tool_choice: Some(json!("auto")),
            response_format: Some(json!("json")),
            ..Default::default()
        };
        params.extra.insert("seed".into(), json!(7));
        params.extra.insert("model".into(), json!("hijack"));
        let req = ChatRequest {
            messages: vec![Message::text("system", "be brief"), Message::text("user", "hi")],
            params: Params::default(),
        };
        let b = build_body("gpt-x", &req, &params, true);
        assert_eq!(b["model"], "gpt-x");
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(b["messages"][1]["content"], "hi");
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["max_tokens"], 50);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["tools"][0]["function"]["name"], "f");
        assert_eq!(b["tool_choice"], "auto");
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        assert_eq!(b["seed"], 7);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"], json!({"include_usage": true}));
        let plain = build_body("gpt-x", &req, &Params::default(), false);
        assert!(plain.get("stream").is_none() && plain.get("temperature").is_none() && plain.get("stop").is_none());
    }

    #[test]
    fn response_format_shapes() {
        assert_eq!(response_format(&json!("json")), Some(json!({"type": "json_object"})));
        assert_eq!(response_format(&json!({"type": "json_object"})), Some(json!({"type": "json_object"})));
        let schema = json!({"type": "object", "properties": {}});
        // An object with "type" is taken as an OpenAI response_format as is.
        assert_eq!(response_format(&schema), Some(schema.clone()));
        let bare = json!({"properties": {"a": {"type": "string"}}});
        assert_eq!(response_format(&bare).unwrap()["type"], "json_schema");
    }

    #[test]
    fn parse_with_tool_calls() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "openai/m", secret: &s };
        let v = json!({
            "id": "chatcmpl-1", "model": "gpt-x",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        });
        let r = parse_response(&v, &ctx).unwrap();
        assert_eq!(r.content, "");
        assert_eq!(r.tool_calls, vec![ToolCall { id: "call_1".into(), name: "get".into(), arguments: "{\"q\":1}".into() }]);
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.usage, Usage { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
        assert_eq!(r.request_id.as_deref(), Some("chatcmpl-1"));
        let filtered = json!({"choices": [{"finish_reason": "content_filter", "message": {"content": ""}}]});
        assert_eq!(parse_response(&filtered, &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        assert_eq!(parse_response(&json!({"choices": []}), &ctx).unwrap_err().kind, ErrorKind::InvalidResponse);
    }

    #[test]
    fn decoder_sequence() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "openai/m", secret: &s };
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for data in [
            r#"{"id":"c1","model":"gpt-x","choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
            "[DONE]",
        ] {
            d.on_event(SseEvent { event: "message".into(), data: data.into() }, &mut out, &ctx).map_err(|_| ()).unwrap();
        }
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], StreamEvent::Delta { text: "Hel".into(), tool_call: None });
        assert!(matches!(&out[1], StreamEvent::Delta { tool_call: Some(_), .. }));
        assert_eq!(
            out[2],
            StreamEvent::Done {
                finish_reason: Some("stop".into()),
                usage: Some(Usage { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 }),
                model: Some("gpt-x".into()),
                request_id: Some("c1".into()),
            }
        );
    }
}
