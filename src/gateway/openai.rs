//! The OpenAI chat-completions shape: request → [`ChatRequest`], [`ChatResponse`] → body, and
//! the SSE framing of a stream (`data: {chunk}` lines, `data: [DONE]` at the end, an `error`
//! payload when a stream fails after its first token).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::errors::{Api, Failure};
use super::Parsed;
use crate::types::{ChatRequest, ChatResponse, Message, Params, ToolCall};

/// Keys of the request body that are the gateway's business, not generation parameters.
const ENVELOPE: [&str; 4] = ["model", "messages", "stream", "stream_options"];

fn bad(msg: impl Into<String>) -> Failure {
    Failure::new(400, msg).should_retry(false)
}

/// Read a chat-completions request body.
pub fn parse_request(body: &Value) -> Result<Parsed, Failure> {
    let obj = body.as_object().ok_or_else(|| bad("the request body must be a JSON object"))?;
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("`model` must be a string naming a route")),
        None => return Err(bad("missing `model`: name a group, `group.echelon`, pool, wrapper or `provider:model`")),
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items.iter().enumerate().map(|(i, m)| message(i, m)).collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return Err(bad("`messages` must not be empty")),
        Some(_) => return Err(bad("`messages` must be an array of messages")),
        None => return Err(bad("missing `messages`")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`stream` must be a boolean")),
    };
    let include_usage = obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let mut params = Params::default();
    for (k, v) in obj {
        if ENVELOPE.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        set_param(&mut params, k, v)?;
    }
    Ok(Parsed { model, request: ChatRequest { messages, params }, stream, include_usage })
}

fn message(i: usize, m: &Value) -> Result<Message, Failure> {
    let obj = m.as_object().ok_or_else(|| bad(format!("messages[{i}] must be an object")))?;
    let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| bad(format!("messages[{i}].role must be a string")))?;
    let role = match role {
        // OpenAI's newer name for the system prompt; every provider knows `system`.
        "developer" => "system",
        "system" | "user" | "assistant" | "tool" => role,
        other => return Err(bad(format!("messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"))),
    };
    let mut msg: Message = serde_json::from_value(m.clone()).map_err(|e| bad(format!("messages[{i}]: {e}")))?;
    msg.role = role.to_string();
    if role == "tool" && msg.tool_call_id.is_none() {
        return Err(bad(format!("messages[{i}]: a tool message needs `tool_call_id`")));
    }
    Ok(msg)
}

fn set_param(p: &mut Params, key: &str, v: &Value) -> Result<(), Failure> {
    let num = |what: &str| v.as_f64().ok_or_else(|| bad(format!("`{what}` must be a number")));
    match key {
        "temperature" => p.temperature = Some(num(key)?),
        "top_p" => p.top_p = Some(num(key)?),
        "max_tokens" | "max_completion_tokens" => {
            let n = v.as_u64().filter(|n| *n <= u32::MAX as u64).ok_or_else(|| bad(format!("`{key}` must be a non-negative integer")))?;
            p.max_tokens = Some(n as u32);
        }
        "stop" => {
            p.stop = match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("`stop` must be a string or an array of strings"))?,
                _ => return Err(bad("`stop` must be a string or an array of strings")),
            }
        }
        "tools" => {
            if !v.is_array() {
                return Err(bad("`tools` must be an array"));
            }
            p.tools = Some(v.clone());
        }
        "tool_choice" => p.tool_choice = Some(v.clone()),
        "response_format" => {
            crate::provider::format::response_format(v).map_err(bad)?;
            p.response_format = Some(v.clone());
        }
        "n" if v.as_u64() != Some(1) => return Err(bad("`n` other than 1 is not supported by the gateway")),
        "n" => {}
        _ => {
            p.extra.insert(key.to_string(), v.clone());
        }
    }
    Ok(())
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn tool_call_json(tc: &ToolCall) -> Value {
    let mut v = json!({"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}});
    // What the provider needs back next turn (a thought signature): kept so a client that
    // sends the assistant message back unchanged keeps multi-turn tool use working.
    if let Some(extra) = &tc.extra_content {
        v["extra_content"] = extra.clone();
    }
    v
}

fn usage_json(r: &ChatResponse) -> Value {
    let u = r.usage;
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// The `chat.completion` body of a whole response.
pub fn response_body(r: &ChatResponse, id: &str) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let has_tools = !r.tool_calls.is_empty();
    message.insert("content".into(), if r.content.is_empty() && has_tools { Value::Null } else { Value::String(r.content.clone()) });
    message.insert("refusal".into(), Value::Null);
    if has_tools {
        message.insert("tool_calls".into(), Value::Array(r.tool_calls.iter().map(tool_call_json).collect()));
    }
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "finish_reason": r.finish_reason.clone().unwrap_or_else(|| if has_tools { "tool_calls".into() } else { "stop".into() }),
            "logprobs": null,
        }],
        "usage": usage_json(r),
    })
}

fn frame(v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    // Serializing a Value cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Writes one stream's frames.
pub struct StreamEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl StreamEncoder {
    /// An encoder for the stream `id` served by wire model `model`.
    pub fn new(id: &str, model: &str, include_usage: bool) -> Self {
        StreamEncoder { id: format!("chatcmpl-{id}"), created: now_secs(), model: model.to_string(), include_usage }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The opening chunk (the assistant role).
    pub fn start(&self) -> Bytes {
        frame(&self.chunk(json!({"role": "assistant", "content": ""}), None))
    }

    /// One delta: text and/or a tool-call fragment (`{index, id?, function: {name?, arguments?}}`).
    pub fn delta(&self, text: &str, tool_call: Option<&Value>) -> Bytes {
        let mut d = Map::new();
        if !text.is_empty() {
            d.insert("content".into(), Value::String(text.to_string()));
        }
        if let Some(tc) = tool_call {
            let mut tc = tc.clone();
            if tc.get("id").is_some() && tc.get("type").is_none() {
                tc["type"] = "function".into();
            }
            if tc.get("index").is_none() {
                tc["index"] = 0.into();
            }
            d.insert("tool_calls".into(), json!([tc]));
        }
        frame(&self.chunk(Value::Object(d), None))
    }

    /// The closing chunks: the finish reason, the usage chunk when asked for, `[DONE]`.
    pub fn finish(&self, r: &ChatResponse) -> Bytes {
        let finish = r.finish_reason.clone().unwrap_or_else(|| if r.tool_calls.is_empty() { "stop".into() } else { "tool_calls".into() });
        let mut out = frame(&self.chunk(json!({}), Some(&finish))).to_vec();
        if self.include_usage {
            let usage =
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [], "usage": usage_json(r)});
            out.extend_from_slice(&frame(&usage));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    /// A failure after the first token: an `error` payload (the SDK raises `APIError` on it),
    /// then `[DONE]`.
    pub fn error(&self, f: &Failure, request_id: &str) -> Bytes {
        let mut out = frame(&f.stream_event(Api::OpenAi, request_id)).to_vec();
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Usage;

    #[test]
    fn a_request_becomes_messages_and_params() {
        let body = json!({
            "model": "fast_group", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_completion_tokens": 7, "stop": "END", "seed": 3, "n": 1, "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        });
        let p = parse_request(&body).expect("valid");
        assert_eq!((p.model.as_str(), p.stream, p.include_usage), ("fast_group", true, true));
        assert_eq!(p.request.messages[0].role, "system");
        assert_eq!(p.request.messages[1].text_content(), "hi");
        assert_eq!((p.request.params.max_tokens, p.request.params.stop.clone(), p.request.params.temperature), (Some(7), vec!["END".to_string()], Some(0.5)));
        assert_eq!(p.request.params.extra.get("seed"), Some(&json!(3)));
        assert!(!p.request.params.extra.contains_key("n") && !p.request.params.extra.contains_key("stream_options"));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        for (body, says) in [
            (json!([]), "JSON object"),
            (json!({"messages": [{"role": "user", "content": "x"}]}), "missing `model`"),
            (json!({"model": "g"}), "missing `messages`"),
            (json!({"model": "g", "messages": []}), "must not be empty"),
            (json!({"model": "g", "messages": [{"role": "robot", "content": "x"}]}), "messages[0].role `robot`"),
            (json!({"model": "g", "messages": [{"role": "tool", "content": "x"}]}), "tool_call_id"),
            (json!({"model": "g", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}), "max_tokens"),
            (json!({"model": "g", "messages": [{"role": "user", "content": "x"}], "n": 2}), "`n`"),
            (json!({"model": "g", "messages": [{"role": "user", "content": "x"}], "response_format": "yaml"}), "response_format"),
        ] {
            let f = parse_request(&body).expect_err("invalid");
            assert_eq!(f.status, 400);
            assert!(f.message.contains(says), "{} does not say {says}", f.message);
        }
    }

    #[test]
    fn responses_and_streams_have_the_chat_completion_shape() {
        let r = ChatResponse {
            content: String::new(),
            tool_calls: vec![ToolCall { id: "c1".into(), name: "f".into(), arguments: "{}".into(), extra_content: None }],
            model: "m-a".into(),
            finish_reason: Some("tool_calls".into()),
            usage: Usage::new(3, 4),
            ..Default::default()
        };
        let b = response_body(&r, "req1");
        assert_eq!(b["object"], "chat.completion");
        assert!(b["choices"][0]["message"]["content"].is_null());
        assert_eq!(b["choices"][0]["message"]["tool_calls"][0]["type"], "function");
        assert_eq!(b["usage"]["total_tokens"], 7);
        let enc = StreamEncoder::new("req1", "m-a", true);
        let text = String::from_utf8(enc.delta("", Some(&json!({"index": 0, "id": "c1", "function": {"name": "f"}}))).to_vec()).unwrap();
        assert!(text.starts_with("data: {") && text.ends_with("\n\n") && text.contains("\"type\":\"function\""), "{text}");
        let end = String::from_utf8(enc.finish(&r).to_vec()).unwrap();
        let frames: Vec<&str> = end.split("\n\n").filter(|s| !s.is_empty()).collect();
        assert_eq!(frames.len(), 3, "{end}");
        assert!(frames[1].contains("\"choices\":[]") && frames[1].contains("\"total_tokens\":7"));
        assert_eq!(frames[2], "data: [DONE]");
    }
}
