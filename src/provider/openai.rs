//! OpenAI chat completions (and every OpenAI-compatible host): request body, response parsing
//! and the SSE chunk decoder.
//!
//! Request: `max_tokens` goes out as `max_completion_tokens` to OpenAI (the older key is
//! deprecated there and refused by reasoning models) and as `max_tokens` to compatible hosts;
//! `response_format` is normalised (a plain JSON schema is wrapped as `{"type": "json_schema",
//! "json_schema": {name, schema}}`). Other keys reach OpenAI only when its chat-completions API
//! has them (it rejects unknown ones); compatible hosts get every key, since each has its own.
//! `tool_calls[].extra_content` (what Gemini needs back) is kept for compatible hosts only.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::classify::{classify_json_error, ErrCtx};
use super::format::{self, ResponseFormat, Unsupported, SCOPES};
use super::sse::SseEvent;
use super::stream::{DecodeError, StreamDecoder};
use super::{json_body, num_u32};
use crate::config::ProviderKind;
use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, ChatResponse, Message, Params, StreamEvent, ToolCall, Usage};

/// Keys the body builder owns; neither `params.extra` nor scoped extras can override them.
const RESERVED: &[&str] = &["model", "messages", "stream", "stream_options"];

/// The chat-completions request keys OpenAI documents besides the reserved ones (the official
/// SDK's `CompletionCreateParams`); anything else is refused by the API.
pub const OPENAI_KEYS: [&str; 34] = [
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "moderation",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
    "stream_options",
];

/// `{base_url}/chat/completions`. A base URL with no path gets `/v1` (OpenAI's own and most
/// hosts' version segment), and one given with `/chat/completions` already is not doubled.
pub fn chat_url(base: &str) -> String {
    format!("{}/chat/completions", api_base(base))
}

/// `{base_url}/models` (with the same normalisation as [`chat_url`]).
pub fn models_url(base: &str) -> String {
    format!("{}/models", api_base(base))
}

fn api_base(base: &str) -> String {
    let b = base.trim_end_matches('/');
    let b = b.strip_suffix("/chat/completions").unwrap_or(b).trim_end_matches('/');
    if super::url_path_is_empty(b) {
        format!("{b}/v1")
    } else {
        b.to_string()
    }
}

/// The OpenAI `response_format` for a neutral one.
pub fn response_format(rf: &ResponseFormat) -> Value {
    match rf {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema { name, schema, strict, description } => {
            let mut js = Map::new();
            js.insert("name".into(), json!(name));
            if let Some(d) = description {
                js.insert("description".into(), json!(d));
            }
            js.insert("schema".into(), schema.clone());
            if let Some(s) = strict {
                js.insert("strict".into(), json!(s));
            }
            json!({"type": "json_schema", "json_schema": js})
        }
    }
}

/// One value of the body, borrowed where it can be.
enum Field<'a> {
    Str(&'a str),
    Json(&'a Value),
    Owned(Value),
    F64(f64),
    U32(u32),
    Stop(&'a [String]),
    /// Messages; `compat` keeps Gemini's part of `tool_calls[].extra_content`, else none.
    Messages {
        messages: &'a [Message],
        compat: bool,
    },
    True,
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::Json(v) => v.serialize(s),
            Field::Owned(v) => v.serialize(s),
            Field::F64(v) => s.serialize_f64(*v),
            Field::U32(v) => s.serialize_u32(*v),
            Field::Stop(v) => v.serialize(s),
            Field::Messages { messages, compat } => {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(messages.len()))?;
                for m in messages.iter() {
                    // Tool messages have no `name` in the chat-completions protocol (Gemini's
                    // function responses use it).
                    let tool_name = m.role == "tool" && m.name.is_some();
                    if carries_extra_content(m) || tool_name {
                        let mut clean = without_extra_content(m, *compat);
                        if tool_name {
                            clean.name = None;
                        }
                        seq.serialize_element(&clean)?;
                    } else {
                        seq.serialize_element(m)?;
                    }
                }
                seq.end()
            }
            Field::True => s.serialize_bool(true),
        }
    }
}

fn carries_extra_content(m: &Message) -> bool {
    matches!(&m.tool_calls, Some(Value::Array(calls)) if calls.iter().any(|c| c.get("extra_content").is_some()))
}

/// `m` without what its tool calls carry for other providers: everything for OpenAI, all but
/// `extra_content.google` (Gemini's compatible endpoint wants its thought signatures back) for
/// compatible hosts.
fn without_extra_content(m: &Message, keep_google: bool) -> Message {
    let mut m = m.clone();
    if let Some(Value::Array(calls)) = &mut m.tool_calls {
        for c in calls {
            if let Value::Object(o) = c {
                let google = o.get("extra_content").and_then(|x| x.get("google")).cloned();
                o.remove("extra_content");
                if let (true, Some(g)) = (keep_google, google) {
                    o.insert("extra_content".into(), json!({ "google": g }));
                }
            }
        }
    }
    m
}

/// The body's fields, in order, each key once: model, messages, provider-scoped extras, typed
/// parameters, other extras, stream. Scoped extras win over typed parameters, typed ones over
/// unscoped extras. Keys OpenAI does not take land in `unsupported`.
fn fields<'a>(
    wire_model: &'a str,
    req: &'a ChatRequest,
    params: &'a Params,
    stream: bool,
    kind: ProviderKind,
    unsupported: &mut Unsupported,
) -> Result<Vec<(&'a str, Field<'a>)>, String> {
    let compat = kind == ProviderKind::OpenAiCompatible;
    let mut out: Vec<(&'a str, Field<'a>)> = Vec::with_capacity(8);
    out.push(("model", Field::Str(wire_model)));
    out.push(("messages", Field::Messages { messages: &req.messages, compat }));
    let has = |out: &Vec<(&str, Field<'_>)>, k: &str| out.iter().any(|(n, _)| *n == k);
    if !params.extra.is_empty() {
        let scopes: &[&str] = if compat { &["openai", "openai_compatible"] } else { &["openai"] };
        for scope in format::scoped(&params.extra, scopes, unsupported) {
            for (k, v) in scope {
                if !RESERVED.contains(&k.as_str()) && !has(&out, k) {
                    out.push((k.as_str(), Field::Json(v)));
                }
            }
        }
    }
    let typed = |out: &mut Vec<(&'a str, Field<'a>)>, k: &'a str, f: Field<'a>| {
        if !has(out, k) {
            out.push((k, f));
        }
    };
    if let Some(t) = params.temperature {
        typed(&mut out, "temperature", Field::F64(t));
    }
    if let Some(n) = params.max_tokens {
        typed(&mut out, if compat { "max_tokens" } else { "max_completion_tokens" }, Field::U32(n));
    }
    if let Some(t) = params.top_p {
        typed(&mut out, "top_p", Field::F64(t));
    }
    if !params.stop.is_empty() {
        typed(&mut out, "stop", Field::Stop(&params.stop));
    }
    if let Some(t) = &params.tools {
        typed(&mut out, "tools", Field::Json(t));
    }
    if let Some(t) = &params.tool_choice {
        typed(&mut out, "tool_choice", Field::Json(t));
    }
    if let Some(rf) = &params.response_format {
        let rf = format::response_format(rf)?;
        typed(&mut out, "response_format", Field::Owned(response_format(&rf)));
    }
    for (k, v) in &params.extra {
        let k = k.as_str();
        if RESERVED.contains(&k) || SCOPES.contains(&k) || has(&out, k) {
            continue;
        }
        if !compat && !OPENAI_KEYS.contains(&k) {
            unsupported.push(k);
            continue;
        }
        out.push((k, Field::Json(v)));
    }
    if stream {
        out.push(("stream", Field::True));
        out.push(("stream_options", Field::Owned(json!({"include_usage": true}))));
    }
    Ok(out)
}

/// The request body serialized straight to bytes: the same JSON as [`build_body`] without
/// building a JSON tree first (messages are written from the request as they are). `Err` is a
/// request the provider cannot be sent (a malformed `response_format`).
pub fn write_body(
    wire_model: &str,
    req: &ChatRequest,
    params: &Params,
    stream: bool,
    kind: ProviderKind,
    unsupported: &mut Unsupported,
) -> Result<Vec<u8>, String> {
    let fields = fields(wire_model, req, params, stream, kind, unsupported)?;
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    let mut write = || -> serde_json::Result<()> {
        let mut m = (&mut ser).serialize_map(Some(fields.len()))?;
        for (k, v) in &fields {
            m.serialize_entry(k, v)?;
        }
        m.end()
    };
    write().map_err(|e| format!("cannot serialize the request: {e}"))?;
    Ok(out)
}

/// The request body as a JSON tree. `params` are already merged with the model defaults.
/// Requests are written by [`write_body`]; this is the readable form tests look at.
pub fn build_body(
    wire_model: &str,
    req: &ChatRequest,
    params: &Params,
    stream: bool,
    kind: ProviderKind,
    unsupported: &mut Unsupported,
) -> Result<Value, String> {
    let fields = fields(wire_model, req, params, stream, kind, unsupported)?;
    let mut b = Map::new();
    for (k, v) in &fields {
        b.insert(k.to_string(), serde_json::to_value(v).map_err(|e| format!("cannot serialize the request: {e}"))?);
    }
    Ok(Value::Object(b))
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let p = num_u32(u.get("prompt_tokens"));
    let c = num_u32(u.get("completion_tokens"));
    let t = u.get("total_tokens").filter(|t| !t.is_null()).map(|t| num_u32(Some(t))).unwrap_or(p.saturating_add(c));
    Some(Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: t,
        cached_tokens: num_u32(u.pointer("/prompt_tokens_details/cached_tokens")),
        cache_creation_tokens: num_u32(u.pointer("/prompt_tokens_details/cache_write_tokens")),
        reasoning_tokens: num_u32(u.pointer("/completion_tokens_details/reasoning_tokens")),
    })
}

/// The common response shape (text content, no tool calls, no refusal, no error), read
/// straight into borrowed fields. Anything else fails to match and is read through
/// [`parse_response`].
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
    refusal: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct PlainUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<PlainDetails>,
    completion_tokens_details: Option<PlainDetails>,
}

#[derive(serde::Deserialize)]
struct PlainDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

/// Parse a non-streaming response body: the common shape directly (no JSON tree is built),
/// everything else (tool calls, refusals, errors, unusual types) through [`parse_response`].
pub fn parse_body(body: &[u8], ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if let Some(Ok(p)) = super::utf8(body).map(serde_json::from_str::<Plain<'_>>) {
        if let (None, Some(choice)) = (&p.error, p.choices.first()) {
            if choice.message.tool_calls.is_none() && choice.message.refusal.is_none() && choice.finish_reason.as_deref() != Some("content_filter") {
                let clamp = |n: Option<u64>| n.map_or(0, |n| n.min(u32::MAX as u64) as u32);
                let usage = p.usage.map(|u| {
                    let (pt, ct) = (clamp(u.prompt_tokens), clamp(u.completion_tokens));
                    let pd = u.prompt_tokens_details.as_ref();
                    Usage {
                        prompt_tokens: pt,
                        completion_tokens: ct,
                        total_tokens: u.total_tokens.map_or(pt.saturating_add(ct), |t| clamp(Some(t))),
                        cached_tokens: clamp(pd.and_then(|d| d.cached_tokens)),
                        cache_creation_tokens: clamp(pd.and_then(|d| d.cache_write_tokens)),
                        reasoning_tokens: clamp(u.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens)),
                    }
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

/// The error for a model refusal (`message.refusal`): a refusal must not look like an empty
/// success, so it is `ContentFiltered` carrying the model's explanation.
fn refusal_error(text: &str, ctx: &ErrCtx<'_>) -> Error {
    ctx.error(ErrorKind::ContentFiltered, &format!("the model refused: {text}"))
}

/// Parse a non-streaming response body.
pub fn parse_response(v: &Value, ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_json_error(v, ctx));
    }
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| ctx.error(ErrorKind::InvalidResponse, "response has no choices[0]"))?;
    let msg = choice.get("message").ok_or_else(|| ctx.error(ErrorKind::InvalidResponse, "choices[0] has no message"))?;
    let finish_reason = choice.get("finish_reason").and_then(Value::as_str).map(str::to_string);
    if finish_reason.as_deref() == Some("content_filter") {
        return Err(ctx.error(ErrorKind::ContentFiltered, "response stopped by the provider's content filter"));
    }
    if let Some(r) = msg.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        return Err(refusal_error(r, ctx));
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
                extra_content: c.get("extra_content").filter(|x| x.is_object()).cloned(),
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
    /// `delta.refusal` fragments: a refused stream ends in `ContentFiltered`, not `Done`.
    refusal: String,
}

impl StreamDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>, ctx: &ErrCtx<'_>) -> Result<(), DecodeError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            if !self.refusal.is_empty() {
                return Err(DecodeError::Provider(refusal_error(&self.refusal, ctx)));
            }
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
            if let Some(r) = delta.get("refusal").and_then(Value::as_str) {
                self.refusal.push_str(r);
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
            if !self.refusal.is_empty() {
                return Err(DecodeError::Provider(refusal_error(&self.refusal, ctx)));
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
        StreamEvent::Done { finish_reason: self.finish_reason.take(), usage: self.usage.take(), model: self.model.take(), request_id: self.id.take() }
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
        full.extra.insert("openai".into(), json!({"top_p": 0.3, "logprobs": true, "model": "no"}));
        full.extra.insert("anthropic".into(), json!({"thinking": {}}));
        let tool_turn = Message {
            role: "assistant".into(),
            tool_calls: Some(
                json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra_content": {"google": {"thought_signature": "s"}}}]),
            ),
            ..Default::default()
        };
        let mut req2 = req.clone();
        req2.messages.push(tool_turn);
        req2.messages.push(Message { role: "tool".into(), content: json!("1"), name: Some("f".into()), tool_call_id: Some("c".into()), ..Default::default() });
        for params in [Params::default(), full, extras_only] {
            for stream in [false, true] {
                for kind in [ProviderKind::OpenAi, ProviderKind::OpenAiCompatible] {
                    for req in [&req, &req2] {
                        let (mut u1, mut u2) = (Unsupported::default(), Unsupported::default());
                        let bytes = write_body("gpt-x", req, &params, stream, kind, &mut u1).expect("serializes");
                        let written: Value = serde_json::from_slice(&bytes).expect("valid JSON");
                        assert_eq!(written, build_body("gpt-x", req, &params, stream, kind, &mut u2).unwrap(), "{params:?} stream={stream}");
                        assert_eq!(u1, u2);
                        // Each key once.
                        let text = String::from_utf8(bytes).unwrap();
                        assert_eq!(text.matches("\"model\"").count(), 1, "{text}");
                    }
                }
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
        let req = ChatRequest { messages: vec![Message::text("system", "be brief"), Message::text("user", "hi")], params: Params::default() };
        params.extra.insert("thinking".into(), json!({"type": "enabled"}));
        let mut u = Unsupported::default();
        let b = build_body("gpt-x", &req, &params, true, ProviderKind::OpenAi, &mut u).unwrap();
        assert_eq!(u.0, ["thinking"], "OpenAI refuses unknown keys");
        assert!(b.get("thinking").is_none());
        assert_eq!(b["model"], "gpt-x");
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(b["messages"][1]["content"], "hi");
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["max_completion_tokens"], 50);
        assert!(b.get("max_tokens").is_none());
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["tools"][0]["function"]["name"], "f");
        assert_eq!(b["tool_choice"], "auto");
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        assert_eq!(b["seed"], 7);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"], json!({"include_usage": true}));
        let mut u = Unsupported::default();
        let plain = build_body("gpt-x", &req, &Params::default(), false, ProviderKind::OpenAi, &mut u).unwrap();
        assert!(plain.get("stream").is_none() && plain.get("temperature").is_none() && plain.get("stop").is_none());
        // Compatible hosts: `max_tokens` as is, and their own keys pass.
        let mut u = Unsupported::default();
        let compat = build_body("m", &req, &params, false, ProviderKind::OpenAiCompatible, &mut u).unwrap();
        assert_eq!((compat["max_tokens"].clone(), compat["thinking"].clone()), (json!(50), json!({"type": "enabled"})));
        assert!(u.is_empty());
        let mut u = Unsupported::default();
        let bad = Params { response_format: Some(json!("yaml")), ..Default::default() };
        assert!(build_body("m", &req, &bad, false, ProviderKind::OpenAi, &mut u).is_err());
    }

    #[test]
    fn response_format_shapes_and_urls() {
        let wire = |v: Value| response_format(&format::response_format(&v).unwrap());
        assert_eq!(wire(json!("json")), json!({"type": "json_object"}));
        assert_eq!(wire(json!({"type": "json_object"})), json!({"type": "json_object"}));
        // A plain schema, `type: object` included, is wrapped (the documented form).
        let schema = json!({"type": "object", "properties": {}});
        assert_eq!(wire(schema.clone()), json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}));
        let oa = json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}});
        assert_eq!(wire(oa.clone()), oa);
        for base in ["https://api.openai.com", "https://api.openai.com/", "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"] {
            assert_eq!(chat_url(base), "https://api.openai.com/v1/chat/completions", "{base}");
        }
        assert_eq!(chat_url("https://h/api/v3/"), "https://h/api/v3/chat/completions");
        assert_eq!(models_url("http://127.0.0.1:8000"), "http://127.0.0.1:8000/v1/models");
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
        assert_eq!(r.tool_calls, vec![ToolCall { id: "call_1".into(), name: "get".into(), arguments: "{\"q\":1}".into(), extra_content: None }]);
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.usage, Usage::new(5, 3));
        assert_eq!(r.request_id.as_deref(), Some("chatcmpl-1"));
        let filtered = json!({"choices": [{"finish_reason": "content_filter", "message": {"content": ""}}]});
        assert_eq!(parse_response(&filtered, &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        assert_eq!(parse_response(&json!({"choices": []}), &ctx).unwrap_err().kind, ErrorKind::InvalidResponse);
        // A refusal is not an empty success.
        let refused = json!({"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
        let e = parse_response(&refused, &ctx).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ContentFiltered);
        assert!(e.message.contains("I can't help with that."), "{}", e.message);
        assert_eq!(parse_body(refused.to_string().as_bytes(), &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        // Usage details, on both paths.
        let detailed = json!({"choices": [{"message": {"content": "x", "refusal": null}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 8, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 30, "audio_tokens": null}}});
        let want = Usage { prompt_tokens: 100, completion_tokens: 50, total_tokens: 150, cached_tokens: 64, cache_creation_tokens: 8, reasoning_tokens: 30 };
        assert_eq!(parse_response(&detailed, &ctx).unwrap().usage, want);
        assert_eq!(parse_body(detailed.to_string().as_bytes(), &ctx).unwrap().usage, want);
        // Gemini's compatible endpoint puts thought signatures on tool calls: kept.
        let sig = json!({"choices": [{"message": {"tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": "S"}}}]}}]});
        assert_eq!(parse_response(&sig, &ctx).unwrap().tool_calls[0].extra_content, Some(json!({"google": {"thought_signature": "S"}})));
    }

    #[test]
    fn streamed_refusal_is_content_filtered() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "openai/m", secret: &s };
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut last = Ok(());
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant","content":null,"refusal":""}}]}"#,
            r#"{"choices":[{"delta":{"refusal":"I can't"}}]}"#,
            r#"{"choices":[{"delta":{"refusal":" help."}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
        ] {
            last = d.on_event(SseEvent { event: "message".into(), data: data.into() }, &mut out, &ctx);
        }
        assert!(matches!(last, Err(DecodeError::Provider(ref e)) if e.kind == ErrorKind::ContentFiltered && e.message.contains("I can't help.")));
        assert!(out.is_empty());
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
            StreamEvent::Done { finish_reason: Some("stop".into()), usage: Some(Usage::new(2, 1)), model: Some("gpt-x".into()), request_id: Some("c1".into()) }
        );
    }
}
