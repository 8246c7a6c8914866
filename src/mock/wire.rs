//! The three wire formats: request parsing, deterministic content, response bodies, SSE frames
//! and provider-shaped error bodies.
//!
//! Bodies on the success path are written straight into one buffer from pre-escaped pieces
//! (no JSON tree per request); rarer shapes (tool calls, errors) go through `serde_json`.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};

/// Which provider's protocol a request spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

// ---------------------------------------------------------------------------------------------
// Request parsing

/// What the mock needs from a chat request body.
#[derive(Debug, Default)]
pub struct ParsedRequest {
    /// Model from the body (OpenAI, Anthropic); Gemini's comes from the path.
    pub model: Option<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Characters of all message contents (and system prompt).
    pub prompt_chars: usize,
    /// Name of the first tool the request offers, if any.
    pub first_tool: Option<String>,
    /// The requested output limit (`max_tokens` / `max_completion_tokens`), if any.
    pub max_tokens: Option<u64>,
    /// Anthropic: extended thinking is on (`thinking.type` `enabled` or `adaptive`).
    pub thinking: bool,
}

impl ParsedRequest {
    /// Prompt tokens as the mock reports them: characters / 4, at least 1.
    pub fn prompt_tokens(&self) -> u64 {
        ((self.prompt_chars / 4).max(1)) as u64
    }
}

/// Counts characters in any JSON value that is a content field: a string, a list of parts with
/// `text`, or a Gemini `{parts: [...]}` object. Counting while deserializing avoids building a
/// JSON tree for every request.
#[derive(Default)]
struct TextChars(usize);

impl<'de> Deserialize<'de> for TextChars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextChars;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("message content")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TextChars, E> {
                Ok(TextChars(s.chars().count()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextChars, A::Error> {
                let mut n = 0;
                while let Some(TextChars(c)) = seq.next_element::<TextChars>()? {
                    n += c;
                }
                Ok(TextChars(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextChars, A::Error> {
                // A content part ({type, text}), a message ({role, content}) or a Gemini
                // content ({role, parts}): count only text-bearing keys.
                let mut n = 0;
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "text" | "content" | "parts" => n += map.next_value::<TextChars>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(TextChars(n))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// `tools` in any of the three shapes, reduced to the first tool's name.
#[derive(Default)]
struct FirstTool(Option<String>);

impl<'de> Deserialize<'de> for FirstTool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let first = v.as_array().and_then(|a| a.first());
        let name = first.and_then(|t| {
            t.pointer("/function/name") // OpenAI
                .or_else(|| t.get("name")) // Anthropic
                .or_else(|| t.pointer("/functionDeclarations/0/name")) // Gemini
                .or_else(|| t.pointer("/function_declarations/0/name"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        Ok(FirstTool(name))
    }
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: TextChars,
    #[serde(default)]
    system: TextChars,
    #[serde(default)]
    contents: TextChars,
    #[serde(default, rename = "systemInstruction", alias = "system_instruction")]
    system_instruction: TextChars,
    #[serde(default)]
    tools: FirstTool,
    #[serde(default)]
    max_tokens: Option<serde_json::Number>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Number>,
    #[serde(default)]
    thinking: Option<Thinking>,
}

#[derive(Deserialize)]
struct Thinking {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Parse a chat request body of any format. Errors say what is wrong, for a 400 body.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest, String> {
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    Ok(ParsedRequest {
        model: raw.model,
        stream: raw.stream.unwrap_or(false),
        include_usage: raw.stream_options.map(|o| o.include_usage).unwrap_or(false),
        prompt_chars: raw.messages.0 + raw.system.0 + raw.contents.0 + raw.system_instruction.0,
        first_tool: raw.tools.0,
        max_tokens: raw.max_tokens.or(raw.max_completion_tokens).and_then(|n| n.as_u64()),
        thinking: raw.thinking.and_then(|t| t.kind).is_some_and(|k| k == "enabled" || k == "adaptive"),
    })
}

// ---------------------------------------------------------------------------------------------
// Content

/// Filler words. Includes non-ASCII so clients' UTF-8 handling across chunk boundaries is
/// exercised (chunks split on char boundaries, so a multi-byte char never straddles two).
const FILLER: &[&str] = &[
    "lorem",
    "ipsum",
    "café",
    "dolor",
    "sit",
    "amet",
    "naïve",
    "stream",
    "token",
    "résumé",
    "delta",
    "echelon",
    "über",
    "pool",
    "group",
    "fallback",
    "breaker",
    "señor",
    "latency",
    "jalapeño",
];

/// The deterministic answer for one (model, content_chars, chunks), rendered once and shared.
#[derive(Debug)]
pub struct Content {
    pub content_chars: usize,
    pub chunks_requested: usize,
    /// The full text.
    #[cfg_attr(not(test), allow(dead_code))]
    pub text: String,
    /// JSON-escaped full text, quotes included.
    pub text_json: String,
    /// JSON-escaped pieces, quotes included, in stream order (never empty pieces).
    pub pieces_json: Vec<String>,
    /// Words in the text (the completion token count).
    pub words: u64,
}

/// The content text for `model` at `content_chars` characters.
pub fn content_text(model: &str, content_chars: usize) -> String {
    let mut s = format!("Hello from {model}. ");
    let mut n = s.chars().count();
    let mut i = 0usize;
    while n < content_chars {
        let w = FILLER[i % FILLER.len()];
        s.push_str(w);
        s.push(' ');
        n += w.chars().count() + 1;
        i += 1;
    }
    if n > content_chars && content_chars > 0 {
        // Cut to exactly content_chars characters (never inside a char).
        let cut = s.char_indices().nth(content_chars).map(|(b, _)| b).unwrap_or(s.len());
        s.truncate(cut);
    }
    if s.ends_with(' ') {
        s.pop();
        s.push('.');
    }
    s
}

/// Split `text` into at most `chunks` non-empty pieces of nearly equal char counts.
pub fn split_chars(text: &str, chunks: usize) -> Vec<&str> {
    let idx: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    let n = idx.len();
    let k = chunks.clamp(1, n.max(1));
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let a = i * n / k;
        let b = (i + 1) * n / k;
        let start = idx.get(a).copied().unwrap_or(text.len());
        let end = idx.get(b).copied().unwrap_or(text.len());
        if end > start {
            out.push(&text[start..end]);
        }
    }
    if out.is_empty() {
        out.push(text);
    }
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

impl Content {
    /// Render the content for `model`.
    pub fn new(model: &str, content_chars: usize, chunks: usize) -> Content {
        let text = content_text(model, content_chars);
        let pieces_json = split_chars(&text, chunks).into_iter().map(json_str).collect();
        Content { content_chars, chunks_requested: chunks, text_json: json_str(&text), words: text.split_whitespace().count() as u64, text, pieces_json }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Per-request values spliced into pre-rendered pieces.
pub struct Ctx<'a> {
    pub format: Format,
    /// JSON-escaped model name, quotes included.
    pub model_json: &'a str,
    pub model: &'a str,
    pub request_no: u64,
    pub prompt_tokens: u64,
    pub created: u64,
}

impl Ctx<'_> {
    fn id(&self, out: &mut BytesMut) {
        let prefix: &[u8] = match self.format {
            Format::OpenAi => b"chatcmpl-mock-",
            Format::Anthropic => b"msg_mock_",
            Format::Gemini => b"resp-mock-",
        };
        out.put_slice(prefix);
        put_u64(out, self.request_no);
    }
    /// The request id header value.
    pub fn request_id(&self) -> String {
        format!("req_mock_{}", self.request_no)
    }
}

fn put_u64(out: &mut BytesMut, n: u64) {
    let buf = itoa_buf(n);
    out.put_slice(buf.as_bytes());
}

struct Itoa {
    buf: [u8; 20],
    start: usize,
}
impl Itoa {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}
fn itoa_buf(mut n: u64) -> Itoa {
    let mut buf = [0u8; 20];
    let mut i = 20;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Itoa { buf, start: i }
}

/// A non-streaming success body with text content.
pub fn text_body(ctx: &Ctx, c: &Content) -> Bytes {
    let mut o = BytesMut::with_capacity(c.text_json.len() + ctx.model_json.len() + 320);
    let p = ctx.prompt_tokens;
    let k = c.words;
    match ctx.format {
        Format::OpenAi => {
            o.put_slice(b"{\"id\":\"");
            ctx.id(&mut o);
            o.put_slice(b"\",\"object\":\"chat.completion\",\"created\":");
            put_u64(&mut o, ctx.created);
            o.put_slice(b",\"model\":");
            o.put_slice(ctx.model_json.as_bytes());
            o.put_slice(b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
            o.put_slice(c.text_json.as_bytes());
            o.put_slice(b"},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":");
            put_u64(&mut o, p);
            o.put_slice(b",\"completion_tokens\":");
            put_u64(&mut o, k);
            o.put_slice(b",\"total_tokens\":");
            put_u64(&mut o, p + k);
            o.put_slice(b"}}");
        }
        Format::Anthropic => {
            o.put_slice(b"{\"id\":\"");
            ctx.id(&mut o);
            o.put_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":");
            o.put_slice(c.text_json.as_bytes());
            o.put_slice(b"}],\"model\":");
            o.put_slice(ctx.model_json.as_bytes());
            o.put_slice(b",\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
            put_u64(&mut o, p);
            o.put_slice(b",\"output_tokens\":");
            put_u64(&mut o, k);
            o.put_slice(b"}}");
        }
        Format::Gemini => {
            o.put_slice(b"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":");
            o.put_slice(c.text_json.as_bytes());
            o.put_slice(b"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],");
            gemini_usage(&mut o, p, k);
            o.put_slice(b",\"modelVersion\":");
            o.put_slice(ctx.model_json.as_bytes());
            o.put_slice(b",\"responseId\":\"");
            ctx.id(&mut o);
            o.put_slice(b"\"}");
        }
    }
    o.freeze()
}

fn gemini_usage(o: &mut BytesMut, p: u64, k: u64) {
    o.put_slice(b"\"usageMetadata\":{\"promptTokenCount\":");
    put_u64(o, p);
    o.put_slice(b",\"candidatesTokenCount\":");
    put_u64(o, k);
    o.put_slice(b",\"totalTokenCount\":");
    put_u64(o, p + k);
    o.put_slice(b"}");
}

/// A streamed answer: content frames (each one complete SSE event(s), with any preamble glued
/// to the first) and the terminal events.
pub struct StreamPlan {
    pub frames: Vec<Bytes>,
    pub tail: Bytes,
}

impl StreamPlan {
    /// The whole stream as one body.
    pub fn concat(&self) -> Bytes {
        let len = self.frames.iter().map(Bytes::len).sum::<usize>() + self.tail.len();
        let mut o = BytesMut::with_capacity(len);
        for f in &self.frames {
            o.put_slice(f);
        }
        o.put_slice(&self.tail);
        o.freeze()
    }
}

fn openai_chunk_head(o: &mut BytesMut, ctx: &Ctx) {
    o.put_slice(b"data: {\"id\":\"");
    ctx.id(o);
    o.put_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
    put_u64(o, ctx.created);
    o.put_slice(b",\"model\":");
    o.put_slice(ctx.model_json.as_bytes());
}

/// The SSE frames of a text answer. All frames share one allocation.
pub fn text_stream(ctx: &Ctx, c: &Content, include_usage: bool) -> StreamPlan {
    let pieces: usize = c.pieces_json.iter().map(String::len).sum();
    let per_frame = 200 + ctx.model_json.len();
    let mut o = BytesMut::with_capacity(pieces + per_frame * (c.pieces_json.len() + 4) + 400);
    let mut frames = Vec::with_capacity(c.pieces_json.len());
    let p = ctx.prompt_tokens;
    let k = c.words;
    let last = c.pieces_json.len().saturating_sub(1);
    for (i, piece) in c.pieces_json.iter().enumerate() {
        match ctx.format {
            Format::OpenAi => {
                openai_chunk_head(&mut o, ctx);
                o.put_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
                if i == 0 {
                    o.put_slice(b"\"role\":\"assistant\",");
                }
                o.put_slice(b"\"content\":");
                o.put_slice(piece.as_bytes());
                o.put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
            }
            Format::Anthropic => {
                if i == 0 {
                    o.put_slice(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"");
                    ctx.id(&mut o);
                    o.put_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":");
                    o.put_slice(ctx.model_json.as_bytes());
                    o.put_slice(b",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
                    put_u64(&mut o, p);
                    o.put_slice(b",\"output_tokens\":1}}}\n\n");
                    o.put_slice(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
                }
                o.put_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
                o.put_slice(piece.as_bytes());
                o.put_slice(b"}}\n\n");
            }
            Format::Gemini => {
                // Real Gemini separates events with CRLF CRLF; the final chunk carries the text,
                // finishReason and usage together.
                o.put_slice(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":");
                o.put_slice(piece.as_bytes());
                o.put_slice(b"}],\"role\":\"model\"},");
                if i == last {
                    o.put_slice(b"\"finishReason\":\"STOP\",");
                }
                o.put_slice(b"\"index\":0}],");
                if i == last {
                    gemini_usage(&mut o, p, k);
                    o.put_slice(b",");
                }
                o.put_slice(b"\"modelVersion\":");
                o.put_slice(ctx.model_json.as_bytes());
                o.put_slice(b",\"responseId\":\"");
                ctx.id(&mut o);
                o.put_slice(b"\"}\r\n\r\n");
            }
        }
        frames.push(o.split().freeze());
    }
    match ctx.format {
        Format::OpenAi => {
            openai_chunk_head(&mut o, ctx);
            o.put_slice(b",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
            if include_usage {
                openai_chunk_head(&mut o, ctx);
                o.put_slice(b",\"choices\":[],\"usage\":{\"prompt_tokens\":");
                put_u64(&mut o, p);
                o.put_slice(b",\"completion_tokens\":");
                put_u64(&mut o, k);
                o.put_slice(b",\"total_tokens\":");
                put_u64(&mut o, p + k);
                o.put_slice(b"}}\n\n");
            }
            o.put_slice(b"data: [DONE]\n\n");
        }
        Format::Anthropic => {
            o.put_slice(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
            o.put_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
            put_u64(&mut o, k);
            o.put_slice(b"}}\n\n");
            o.put_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        }
        Format::Gemini => {}
    }
    StreamPlan { frames, tail: o.split().freeze() }
}

fn sse(event: Option<&str>, data: &Value, format: Format) -> String {
    let mut s = String::new();
    if let Some(e) = event {
        let _ = writeln!(s, "event: {e}");
    }
    let sep = if format == Format::Gemini { "\r\n\r\n" } else { "\n\n" };
    let _ = write!(s, "data: {data}{sep}");
    s
}

/// How a tool-call answer is dressed: Gemini thought signature, Anthropic thinking block.
#[derive(Clone, Copy, Debug, Default)]
pub struct ToolExtras {
    pub thought_signature: bool,
    pub thinking: bool,
}

/// The signature the mock gives a request's function call, checked for nothing but presence.
fn signature(ctx: &Ctx) -> String {
    format!("c2lnLW1vY2st{}", ctx.request_no)
}

fn thinking_block(ctx: &Ctx) -> Value {
    json!({"type": "thinking", "thinking": "The user wants the tool called.", "signature": format!("EqMock{}", ctx.request_no)})
}

/// A non-streaming tool-call answer for tool `name` with arguments `{}`.
pub fn tool_body(ctx: &Ctx, name: &str, x: ToolExtras) -> Bytes {
    let id = ctx.request_no;
    let p = ctx.prompt_tokens;
    let v = match ctx.format {
        Format::OpenAi => json!({
            "id": format!("chatcmpl-mock-{id}"), "object": "chat.completion", "created": ctx.created,
            "model": ctx.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": format!("call_mock_{id}"), "type": "function", "function": {"name": name, "arguments": "{}"}}
            ]}, "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": p, "completion_tokens": 1, "total_tokens": p + 1}
        }),
        Format::Anthropic => {
            let mut content = Vec::new();
            if x.thinking {
                content.push(thinking_block(ctx));
            }
            content.push(json!({"type": "tool_use", "id": format!("toolu_mock_{id}"), "name": name, "input": {}}));
            json!({
                "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant",
                "content": content,
                "model": ctx.model, "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": 1}
            })
        }
        Format::Gemini => json!({
            "candidates": [{"content": {"parts": [gemini_call(ctx, name, x)], "role": "model"},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": 1, "totalTokenCount": p + 1},
            "modelVersion": ctx.model
        }),
    };
    Bytes::from(v.to_string())
}

fn gemini_call(ctx: &Ctx, name: &str, x: ToolExtras) -> Value {
    let mut part = json!({"functionCall": {"name": name, "args": {}}});
    if x.thought_signature {
        part["thoughtSignature"] = json!(signature(ctx));
    }
    part
}

/// The SSE frames of a tool-call answer.
pub fn tool_stream(ctx: &Ctx, name: &str, include_usage: bool, x: ToolExtras) -> StreamPlan {
    let id = ctx.request_no;
    let p = ctx.prompt_tokens;
    let f = ctx.format;
    let (frames, tail): (Vec<String>, String) = match f {
        Format::OpenAi => {
            let head = |choices: Value| {
                json!({"id": format!("chatcmpl-mock-{id}"), "object": "chat.completion.chunk", "created": ctx.created,
                    "model": ctx.model, "choices": choices})
            };
            let first = head(json!([{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": format!("call_mock_{id}"), "type": "function", "function": {"name": name, "arguments": ""}}
            ]}, "finish_reason": null}]));
            let args = head(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                "finish_reason": null}]));
            let mut tail = sse(None, &head(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])), f);
            if include_usage {
                let mut u = head(json!([]));
                u["usage"] = json!({"prompt_tokens": p, "completion_tokens": 1, "total_tokens": p + 1});
                tail.push_str(&sse(None, &u, f));
            }
            tail.push_str("data: [DONE]\n\n");
            (vec![sse(None, &first, f), sse(None, &args, f)], tail)
        }
        Format::Anthropic => {
            let start = json!({"type": "message_start", "message": {"id": format!("msg_mock_{id}"), "type": "message",
                "role": "assistant", "content": [], "model": ctx.model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": 1}}});
            let mut first = sse(Some("message_start"), &start, f);
            let mut at = 0;
            if x.thinking {
                let tb = thinking_block(ctx);
                first += &sse(
                    Some("content_block_start"),
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
                    f,
                );
                first += &sse(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": tb["thinking"]}}),
                    f,
                );
                first += &sse(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": tb["signature"]}}),
                    f,
                );
                first += &sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0}), f);
                at = 1;
            }
            let block = json!({"type": "content_block_start", "index": at,
                "content_block": {"type": "tool_use", "id": format!("toolu_mock_{id}"), "name": name, "input": {}}});
            let delta = json!({"type": "content_block_delta", "index": at,
                "delta": {"type": "input_json_delta", "partial_json": "{}"}});
            let first = first + &sse(Some("content_block_start"), &block, f);
            let tail = sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": at}), f)
                + &sse(
                    Some("message_delta"),
                    &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                        "usage": {"output_tokens": 1}}),
                    f,
                )
                + &sse(Some("message_stop"), &json!({"type": "message_stop"}), f);
            (vec![first + &sse(Some("content_block_delta"), &delta, f)], tail)
        }
        Format::Gemini => {
            let chunk = json!({"candidates": [{"content": {"parts": [gemini_call(ctx, name, x)],
                "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": 1, "totalTokenCount": p + 1},
                "modelVersion": ctx.model});
            (vec![sse(None, &chunk, f)], String::new())
        }
    };
    StreamPlan { frames: frames.into_iter().map(Bytes::from).collect(), tail: Bytes::from(tail) }
}

/// What a refusing model says.
const REFUSAL: &str = "I can't help with that request.";

/// A 200 whose answer is a refusal after `text`: OpenAI `message.refusal` (no content),
/// Anthropic `stop_reason: refusal`, Gemini `finishReason: SAFETY`.
pub fn refusal_body(ctx: &Ctx, text: &str) -> Bytes {
    let id = ctx.request_no;
    let p = ctx.prompt_tokens;
    let v = match ctx.format {
        Format::OpenAi => json!({
            "id": format!("chatcmpl-mock-{id}"), "object": "chat.completion", "created": ctx.created, "model": ctx.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": REFUSAL, "annotations": []},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": 7, "total_tokens": p + 7}
        }),
        Format::Anthropic => json!({
            "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": ctx.model,
            "content": [{"type": "text", "text": text}], "stop_reason": "refusal", "stop_sequence": null,
            "stop_details": {"type": "refusal", "category": "general_harms", "explanation": REFUSAL},
            "usage": {"input_tokens": p, "output_tokens": 3}
        }),
        Format::Gemini => json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "SAFETY", "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}],
            "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": 3, "totalTokenCount": p + 3},
            "modelVersion": ctx.model
        }),
    };
    Bytes::from(v.to_string())
}

/// A streamed answer that starts normally and ends in a refusal: `plan`'s first `after` content
/// frames (OpenAI: none, its refusals carry no content), then the provider's refusal events.
pub fn refusal_stream(ctx: &Ctx, plan: StreamPlan, after: usize) -> StreamPlan {
    let f = ctx.format;
    let id = ctx.request_no;
    let mut frames: Vec<Bytes> = plan.frames.into_iter().take(after).collect();
    let tail = match f {
        Format::OpenAi => {
            frames.clear();
            let head = |choices: Value| json!({"id": format!("chatcmpl-mock-{id}"), "object": "chat.completion.chunk", "created": ctx.created, "model": ctx.model, "choices": choices});
            let mut t = sse(None, &head(json!([{"index": 0, "delta": {"role": "assistant", "content": null, "refusal": ""}, "finish_reason": null}])), f);
            for piece in ["I can't help ", "with that request."] {
                t += &sse(None, &head(json!([{"index": 0, "delta": {"refusal": piece}, "finish_reason": null}])), f);
            }
            t += &sse(None, &head(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])), f);
            t + "data: [DONE]\n\n"
        }
        Format::Anthropic => {
            sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0}), f)
                + &sse(
                    Some("message_delta"),
                    &json!({"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": null,
                        "stop_details": {"type": "refusal", "category": "general_harms", "explanation": REFUSAL}}, "usage": {"output_tokens": 3}}),
                    f,
                )
                + &sse(Some("message_stop"), &json!({"type": "message_stop"}), f)
        }
        Format::Gemini => sse(
            None,
            &json!({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "SAFETY", "index": 0}],
                "modelVersion": ctx.model}),
            f,
        ),
    };
    // Anthropic's stream must open with message_start even when no text came first.
    if f == Format::Anthropic && frames.is_empty() {
        let start = json!({"type": "message_start", "message": {"id": format!("msg_mock_{id}"), "type": "message", "role": "assistant",
            "content": [], "model": ctx.model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": 1}}});
        let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
        frames.push(Bytes::from(sse(Some("message_start"), &start, f) + &sse(Some("content_block_start"), &block, f)));
    }
    StreamPlan { frames, tail: Bytes::from(tail) }
}

/// Invalid JSON for a non-streaming 200 (a body cut mid-object).
pub fn malformed_body(ctx: &Ctx) -> Bytes {
    let s = match ctx.format {
        Format::OpenAi => {
            format!("{{\"id\":\"chatcmpl-mock-{}\",\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,\"message\":{{\"content\":\"Hel", ctx.request_no)
        }
        Format::Anthropic => format!("{{\"id\":\"msg_mock_{}\",\"type\":\"message\",\"content\":[{{\"type\":\"text\",\"text\":\"Hel", ctx.request_no),
        Format::Gemini => "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel".to_string(),
    };
    Bytes::from(s)
}

/// One SSE event whose data is not valid JSON.
pub fn malformed_frame(format: Format) -> Bytes {
    match format {
        Format::OpenAi => Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"oops\n\n"),
        Format::Anthropic => {
            Bytes::from_static(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"oops\n\n")
        }
        Format::Gemini => Bytes::from_static(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"oops\r\n\r\n"),
    }
}

/// The frames that end a stream the provider's content filter stopped midway.
pub fn filter_frame(format: Format, ctx: &Ctx) -> Bytes {
    match format {
        Format::OpenAi => {
            let chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": ctx.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]});
            Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
        }
        Format::Anthropic => {
            let delta = json!({"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": null},
                "usage": {"output_tokens": 1}});
            Bytes::from(format!(
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {delta}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
            ))
        }
        Format::Gemini => {
            let v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "SAFETY", "index": 0}],
                "modelVersion": ctx.model});
            Bytes::from(format!("data: {v}\r\n\r\n"))
        }
    }
}

/// Gemini's 200 answer to a blocked prompt (content filter): no text, SAFETY everywhere.
pub fn gemini_blocked(ctx: &Ctx) -> Bytes {
    let v = json!({
        "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}],
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
        "usageMetadata": {"promptTokenCount": ctx.prompt_tokens, "totalTokenCount": ctx.prompt_tokens},
        "modelVersion": ctx.model
    });
    Bytes::from(v.to_string())
}

/// Wrap a body as one SSE data event (Gemini streaming of a blocked answer).
pub fn as_sse(format: Format, body: &[u8]) -> Bytes {
    let sep: &[u8] = if format == Format::Gemini { b"\r\n\r\n" } else { b"\n\n" };
    let mut o = BytesMut::with_capacity(body.len() + 10);
    o.put_slice(b"data: ");
    o.put_slice(body);
    o.put_slice(sep);
    o.freeze()
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What an error response is about, for picking the provider's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCase {
    RateLimit,
    Server,
    Overloaded,
    Auth,
    /// `got` prompt tokens against a window of `max`; `out` is the requested output limit.
    ContextWindow {
        max: u64,
        got: u64,
        out: u64,
    },
    ContentFilter,
    /// Out of quota / credit.
    Quota,
    BadRequest,
    NotFound,
    Other,
}

impl ErrorCase {
    /// The case an arbitrary status code maps to.
    pub fn for_status(code: u16) -> ErrorCase {
        match code {
            429 => ErrorCase::RateLimit,
            401 | 403 => ErrorCase::Auth,
            400 | 422 => ErrorCase::BadRequest,
            404 => ErrorCase::NotFound,
            529 => ErrorCase::Overloaded,
            500..=599 => ErrorCase::Server,
            _ => ErrorCase::Other,
        }
    }
}

/// The provider-shaped error body for `case` at HTTP `status`. `detail` adds context to
/// bad-request messages (never contains a key).
pub fn error_body(format: Format, case: ErrorCase, status: u16, model: &str, detail: &str) -> Bytes {
    let v = match format {
        Format::OpenAi => {
            let (msg, typ, code): (String, Value, Value) = match case {
                ErrorCase::RateLimit => (
                    format!("Rate limit reached for {model} (mock) on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s."),
                    json!("requests"),
                    json!("rate_limit_exceeded"),
                ),
                ErrorCase::Server => (
                    "The server had an error while processing your request. Sorry about that!".into(),
                    json!("server_error"),
                    Value::Null,
                ),
                ErrorCase::Overloaded => (
                    "The engine is currently overloaded, please try again later.".into(),
                    json!("server_error"),
                    json!("overloaded"),
                ),
                ErrorCase::Auth => (
                    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
                    json!("invalid_request_error"),
                    json!("invalid_api_key"),
                ),
                ErrorCase::ContextWindow { max, got, .. } => (
                    format!("This model's maximum context length is {max} tokens. However, your messages resulted in {got} tokens. Please reduce the length of the messages."),
                    json!("invalid_request_error"),
                    json!("context_length_exceeded"),
                ),
                ErrorCase::ContentFilter => (
                    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.".into(),
                    json!("invalid_request_error"),
                    json!("content_filter"),
                ),
                ErrorCase::Quota => (
                    "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.".into(),
                    json!("insufficient_quota"),
                    json!("insufficient_quota"),
                ),
                ErrorCase::BadRequest => (detail.to_string(), json!("invalid_request_error"), Value::Null),
                ErrorCase::NotFound => (
                    format!("The model `{model}` does not exist or you do not have access to it. {detail}"),
                    json!("invalid_request_error"),
                    json!("model_not_found"),
                ),
                ErrorCase::Other => (format!("Mock error (HTTP {status})"), json!("api_error"), Value::Null),
            };
            json!({"error": {"message": msg, "type": typ, "param": null, "code": code}})
        }
        Format::Anthropic => {
            let (typ, msg): (&str, String) = match case {
                ErrorCase::RateLimit => ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit (mock).".into()),
                ErrorCase::Server => ("api_error", "Internal server error".into()),
                ErrorCase::Overloaded => ("overloaded_error", "Overloaded".into()),
                ErrorCase::Auth => ("authentication_error", "invalid x-api-key".into()),
                ErrorCase::ContextWindow { max, got, .. } if got > max => {
                    ("invalid_request_error", format!("prompt is too long: {got} tokens > {max} maximum"))
                }
                // The prompt fits but not with the requested output.
                ErrorCase::ContextWindow { max, got, out } => (
                    "invalid_request_error",
                    format!(
                        "input length and `max_tokens` exceed context limit: {got} + {} > {max}, decrease input length or `max_tokens` and try again",
                        out.max(max.saturating_sub(got) + 1)
                    ),
                ),
                ErrorCase::Quota => (
                    "billing_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.".into(),
                ),
                ErrorCase::ContentFilter => ("invalid_request_error", "Output blocked by content filtering policy".into()),
                ErrorCase::BadRequest => ("invalid_request_error", detail.to_string()),
                ErrorCase::NotFound => ("not_found_error", format!("model: {model}")),
                ErrorCase::Other => ("api_error", format!("Mock error (HTTP {status})")),
            };
            json!({"type": "error", "error": {"type": typ, "message": msg}})
        }
        Format::Gemini => {
            let (st, msg): (&str, String) = match case {
                ErrorCase::RateLimit => {
                    ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).".into())
                }
                ErrorCase::Server => (
                    if status == 503 { "UNAVAILABLE" } else { "INTERNAL" },
                    if status == 503 {
                        "The service is currently unavailable.".into()
                    } else {
                        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".into()
                    },
                ),
                ErrorCase::Overloaded => ("UNAVAILABLE", "The model is overloaded. Please try again later.".into()),
                // Gemini answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID.
                ErrorCase::Auth => ("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.".into()),
                ErrorCase::Quota => ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.".into()),
                ErrorCase::ContextWindow { max, got, .. } => (
                    "INVALID_ARGUMENT",
                    format!("The input token count ({got}) exceeds the maximum number of tokens allowed ({max})."),
                ),
                ErrorCase::ContentFilter => ("INVALID_ARGUMENT", "The request was blocked for safety reasons.".into()),
                ErrorCase::BadRequest => ("INVALID_ARGUMENT", format!("Invalid JSON payload received. {detail}")),
                ErrorCase::NotFound => (
                    "NOT_FOUND",
                    format!(
                        "models/{model} is not found for API version v1beta, or is not supported for generateContent."
                    ),
                ),
                ErrorCase::Other => ("UNKNOWN", format!("Mock error (HTTP {status})")),
            };
            let mut e = json!({"code": status, "message": msg, "status": st});
            match case {
                ErrorCase::Auth => {
                    e["details"] = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]);
                }
                ErrorCase::Quota => {
                    e["details"] = json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "50"}]},
                        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}]);
                }
                _ => {}
            }
            json!({"error": e})
        }
    };
    Bytes::from(v.to_string())
}

/// Model list for the health-probe endpoints. OpenAI and Anthropic share `/v1/models`, so the
/// list carries both shapes' fields.
pub fn models_list(format: Format, names: &[String]) -> Bytes {
    let v = match format {
        Format::Gemini => json!({"models": names.iter().map(|n| json!({
            "name": format!("models/{n}"), "displayName": n,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]})).collect::<Vec<_>>()}),
        _ => json!({"object": "list", "has_more": false, "data": names.iter().map(|n| json!({
            "id": n, "object": "model", "type": "model", "display_name": n, "created": 0, "owned_by": "echelon-mock"}))
            .collect::<Vec<_>>()}),
    };
    Bytes::from(v.to_string())
}

/// One model for `GET /v1/models/{m}` and `GET /v1beta/models/{m}`.
pub fn model_info(format: Format, name: &str) -> Bytes {
    let v = match format {
        Format::Gemini => json!({"name": format!("models/{name}"), "displayName": name,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]}),
        _ => json!({"id": name, "object": "model", "type": "model", "display_name": name, "created": 0,
            "owned_by": "echelon-mock"}),
    };
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_exact_and_deterministic() {
        let t = content_text("m", 200);
        assert_eq!(t.chars().count(), 200);
        assert!(t.starts_with("Hello from m. "));
        assert_eq!(t, content_text("m", 200));
        assert!(!t.is_ascii());
        let short = content_text("gpt-4o", 5);
        assert!(short.starts_with("Hello"));
    }

    #[test]
    fn split_never_breaks_chars() {
        let t = content_text("m", 333);
        for k in [1, 2, 3, 7, 8, 50, 1000] {
            let parts = split_chars(&t, k);
            assert_eq!(parts.concat(), t);
            assert!(parts.len() <= k);
            assert!(parts.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn parses_all_formats() {
        let r = parse_request(
            br#"{"model":"a","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"text","text":"efgh"}]}],
            "tools":[{"type":"function","function":{"name":"f"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("a"));
        assert!(r.stream && r.include_usage);
        assert_eq!(r.prompt_chars, 8);
        assert_eq!(r.first_tool.as_deref(), Some("f"));
        let r = parse_request(br#"{"model":"b","system":"xxxx","messages":[{"role":"user","content":"yy"}],"tools":[{"name":"t"}]}"#).unwrap();
        assert_eq!((r.prompt_chars, r.first_tool.as_deref()), (6, Some("t")));
        let r = parse_request(
            r#"{"contents":[{"role":"user","parts":[{"text":"héllo"}]}],"systemInstruction":{"parts":[{"text":"ab"}]},
            "tools":[{"functionDeclarations":[{"name":"g"}]}]}"#
                .as_bytes(),
        )
        .unwrap();
        assert_eq!((r.prompt_chars, r.first_tool.as_deref()), (7, Some("g")));
        assert!(parse_request(b"{nope").is_err());
    }

    #[test]
    fn bodies_are_valid_json() {
        let c = Content::new("m\"x", 120, 5);
        for f in [Format::OpenAi, Format::Anthropic, Format::Gemini] {
            let ctx = Ctx { format: f, model_json: &json_str("m\"x"), model: "m\"x", request_no: 7, prompt_tokens: 3, created: 1 };
            let b = text_body(&ctx, &c);
            let v: Value = serde_json::from_slice(&b).unwrap();
            let text = match f {
                Format::OpenAi => v.pointer("/choices/0/message/content"),
                Format::Anthropic => v.pointer("/content/0/text"),
                Format::Gemini => v.pointer("/candidates/0/content/parts/0/text"),
            };
            assert_eq!(text.and_then(Value::as_str), Some(c.text.as_str()));
            assert!(serde_json::from_slice::<Value>(&tool_body(&ctx, "f", ToolExtras { thought_signature: true, thinking: true })).is_ok());
            assert!(serde_json::from_slice::<Value>(&refusal_body(&ctx, "x")).is_ok());
            assert!(serde_json::from_slice::<Value>(&malformed_body(&ctx)).is_err());
            for case in [ErrorCase::RateLimit, ErrorCase::ContextWindow { max: 1, got: 2, out: 1 }, ErrorCase::Auth, ErrorCase::Quota] {
                assert!(serde_json::from_slice::<Value>(&error_body(f, case, 400, "m", "")).is_ok());
            }
        }
    }
}
