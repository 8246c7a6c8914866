//! Google Gemini `generateContent` / `streamGenerateContent`: request translation, response
//! parsing and the SSE chunk decoder. The key travels in the `x-goog-api-key` header, never in
//! the URL, so it cannot leak through URL-bearing error messages or logs.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::classify::{classify_json_error, ErrCtx};
use super::sse::SseEvent;
use super::stream::{DecodeError, StreamDecoder};
use super::{num_u32, set_opt};
use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, ChatResponse, Message, Params, StreamEvent, ToolCall, Usage};

const RESERVED: &[&str] = &["contents", "systemInstruction", "generationConfig", "tools", "toolConfig"];

fn model_path(model: &str) -> String {
    if model.starts_with("models/") || model.starts_with("tunedModels/") {
        model.to_string()
    } else {
        format!("models/{model}")
    }
}

/// `{base}/models/{model}:generateContent` or `:streamGenerateContent?alt=sse`.
pub fn chat_url(base: &str, model: &str, stream: bool) -> String {
    let base = base.trim_end_matches('/');
    if stream {
        format!("{base}/{}:streamGenerateContent?alt=sse", model_path(model))
    } else {
        format!("{base}/{}:generateContent", model_path(model))
    }
}

/// `{base}/models`.
pub fn models_url(base: &str) -> String {
    format!("{}/models", base.trim_end_matches('/'))
}

/// Normalise Gemini's finishReason to the OpenAI vocabulary; `None` for blocked content.
fn finish_reason(r: &str) -> Option<String> {
    match r {
        "STOP" => Some("stop".into()),
        "MAX_TOKENS" => Some("length".into()),
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => None,
        other => Some(other.to_ascii_lowercase()),
    }
}

fn text_parts(m: &Message) -> Vec<Value> {
    match &m.content {
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                let url = p.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
                match (p.get("type").and_then(Value::as_str), url.and_then(|u| u.strip_prefix("data:"))) {
                    (Some("image_url"), Some(rest)) => {
                        let (mime, data) = rest.split_once(";base64,").unwrap_or(("image/png", rest));
                        Some(json!({"inlineData": {"mimeType": mime, "data": data}}))
                    }
                    _ => p.get("text").and_then(Value::as_str).map(|t| json!({"text": t})),
                }
            })
            .collect(),
        _ => {
            let t = m.text_content();
            if t.is_empty() {
                vec![]
            } else {
                vec![json!({"text": t})]
            }
        }
    }
}

/// Translate OpenAI-shape tools to one `functionDeclarations` tool.
pub fn tools(v: &Value) -> Option<Value> {
    let Value::Array(list) = v else { return None };
    let decls: Vec<Value> = list
        .iter()
        .map(|t| {
            let f = t.get("function").unwrap_or(t);
            let mut o = Map::new();
            o.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
            set_opt(&mut o, "description", f.get("description").cloned());
            set_opt(&mut o, "parameters", f.get("parameters").cloned());
            Value::Object(o)
        })
        .collect();
    Some(json!([{"functionDeclarations": decls}]))
}

fn tool_config(v: &Value) -> Option<Value> {
    let mode = |m: &str| json!({"functionCallingConfig": {"mode": m}});
    match v {
        Value::String(s) if s == "auto" => Some(mode("AUTO")),
        Value::String(s) if s == "required" || s == "any" => Some(mode("ANY")),
        Value::String(s) if s == "none" => Some(mode("NONE")),
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|n| json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [n]}})),
        _ => None,
    }
}

/// The request body. System messages become `systemInstruction`; assistant is `model`.
pub fn build_body(req: &ChatRequest, params: &Params) -> Value {
    let mut b = Map::new();
    for (k, v) in &params.extra {
        if !RESERVED.contains(&k.as_str()) {
            b.insert(k.clone(), v.clone());
        }
    }
    // Tool results must name the function; remember names by call id from earlier turns.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut system = Vec::new();
    let mut contents = Vec::new();
    for m in &req.messages {
        match m.role.as_str() {
            "system" | "developer" => system.push(json!({"text": m.text_content()})),
            "assistant" => {
                let mut parts = text_parts(m);
                if let Some(Value::Array(calls)) = &m.tool_calls {
                    for c in calls {
                        let f = c.get("function").unwrap_or(&Value::Null);
                        let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                        if let Some(id) = c.get("id").and_then(Value::as_str) {
                            call_names.insert(id.to_string(), name.clone());
                        }
                        let args = f
                            .get("arguments")
                            .and_then(Value::as_str)
                            .and_then(|a| serde_json::from_str::<Value>(a).ok())
                            .unwrap_or_else(|| json!({}));
                        parts.push(json!({"functionCall": {"name": name, "args": args}}));
                    }
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
            "tool" => {
                let name = m
                    .name
                    .clone()
                    .or_else(|| m.tool_call_id.as_ref().and_then(|id| call_names.get(id).cloned()))
                    .unwrap_or_default();
                let text = m.text_content();
                let response = serde_json::from_str::<Value>(&text).ok().filter(Value::is_object).unwrap_or_else(|| json!({"content": text}));
                contents.push(json!({"role": "user", "parts": [{"functionResponse": {"name": name, "response": response}}]}));
            }
            _ => contents.push(json!({"role": "user", "parts": text_parts(m)})),
        }
    }
    b.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        b.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut g = Map::new();
    set_opt(&mut g, "temperature", params.temperature.map(Value::from));
    set_opt(&mut g, "maxOutputTokens", params.max_tokens.map(Value::from));
    set_opt(&mut g, "topP", params.top_p.map(Value::from));
    if !params.stop.is_empty() {
        g.insert("stopSequences".into(), json!(params.stop));
    }
    match &params.response_format {
        None => {}
        Some(Value::String(s)) if s == "text" => {}
        Some(Value::String(_)) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(Value::Object(o)) => {
            let ty = o.get("type").and_then(Value::as_str);
            if ty != Some("text") {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            let schema = match ty {
                Some("json_schema") => o.get("json_schema").and_then(|j| j.get("schema")).cloned(),
                Some("json_object") | Some("text") => None,
                _ => Some(Value::Object(o.clone())),
            };
            set_opt(&mut g, "responseSchema", schema);
        }
        Some(_) => {}
    }
    if !g.is_empty() {
        b.insert("generationConfig".into(), Value::Object(g));
    }
    set_opt(&mut b, "tools", params.tools.as_ref().and_then(tools));
    set_opt(&mut b, "toolConfig", params.tool_choice.as_ref().and_then(tool_config));
    Value::Object(b)
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata").filter(|u| u.is_object())?;
    let p = num_u32(u.get("promptTokenCount"));
    let c = num_u32(u.get("candidatesTokenCount"));
    let t = u.get("totalTokenCount").map(|t| num_u32(Some(t))).unwrap_or(p + c);
    Some(Usage { prompt_tokens: p, completion_tokens: c, total_tokens: t })
}

fn blocked(v: &Value, ctx: &ErrCtx<'_>) -> Option<Error> {
    if let Some(r) = v.get("promptFeedback").and_then(|f| f.get("blockReason")).and_then(Value::as_str) {
        return Some(ctx.error(ErrorKind::ContentFiltered, &format!("prompt blocked ({r})")));
    }
    let r = v.get("candidates")?.get(0)?.get("finishReason")?.as_str()?;
    finish_reason(r).is_none().then(|| ctx.error(ErrorKind::ContentFiltered, &format!("response blocked (finishReason {r})")))
}

/// (text, function calls) of candidate 0; thought parts are skipped.
fn parts(v: &Value) -> (String, Vec<(Option<String>, String, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = v.get("candidates").and_then(|c| c.get(0)).and_then(|c| c.get("content")).and_then(|c| c.get("parts"));
    if let Some(Value::Array(parts)) = parts {
        for p in parts {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
            if let Some(fc) = p.get("functionCall") {
                calls.push((
                    fc.get("id").and_then(Value::as_str).map(str::to_string),
                    fc.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    fc.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                ));
            }
        }
    }
    (text, calls)
}

/// Parse a non-streaming response body.
pub fn parse_response(v: &Value, ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_json_error(v, ctx));
    }
    if let Some(e) = blocked(v, ctx) {
        return Err(e);
    }
    let cand = v
        .get("candidates")
        .and_then(|c| c.get(0))
        .ok_or_else(|| ctx.error(ErrorKind::InvalidResponse, "response has no candidates[0]"))?;
    let (content, calls) = parts(v);
    let tool_calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, (id, name, arguments))| ToolCall { id: id.unwrap_or_else(|| format!("call_{i}")), name, arguments })
        .collect::<Vec<_>>();
    let mut finish = cand.get("finishReason").and_then(Value::as_str).and_then(finish_reason);
    if !tool_calls.is_empty() && finish.as_deref() == Some("stop") {
        finish = Some("tool_calls".into());
    }
    Ok(ChatResponse {
        content,
        tool_calls,
        model: v.get("modelVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
        finish_reason: finish,
        usage: usage(v).unwrap_or_default(),
        request_id: v.get("responseId").and_then(Value::as_str).map(str::to_string),
        ..Default::default()
    })
}

/// Decodes `streamGenerateContent?alt=sse` chunks. There is no end marker: a chunk carrying a
/// finishReason makes the stream complete, and `Done` is sent at EOF (usage may follow it).
#[derive(Default)]
pub struct Decoder {
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    id: Option<String>,
    calls: usize,
}

impl StreamDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>, ctx: &ErrCtx<'_>) -> Result<(), DecodeError> {
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| DecodeError::Garbage(format!("bad chunk JSON: {e}")))?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(DecodeError::Provider(classify_json_error(&v, ctx)));
        }
        if let Some(e) = blocked(&v, ctx) {
            return Err(DecodeError::Provider(e));
        }
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            self.model = Some(m.to_string());
        }
        if self.id.is_none() {
            self.id = v.get("responseId").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(u) = usage(&v) {
            self.usage = Some(u);
        }
        let (text, calls) = parts(&v);
        if !text.is_empty() {
            out.push(StreamEvent::Delta { text, tool_call: None });
        }
        for (id, name, args) in calls {
            let index = self.calls;
            self.calls += 1;
            out.push(StreamEvent::Delta {
                text: String::new(),
                tool_call: Some(json!({"index": index, "id": id.unwrap_or_else(|| format!("call_{index}")), "type": "function",
                    "function": {"name": name, "arguments": args}})),
            });
        }
        if let Some(r) = v.get("candidates").and_then(|c| c.get(0)).and_then(|c| c.get("finishReason")).and_then(Value::as_str) {
            let mut f = finish_reason(r).unwrap_or_default();
            if self.calls > 0 && f == "stop" {
                f = "tool_calls".into();
            }
            self.finish_reason = Some(f);
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Option<StreamEvent> {
        self.finish_reason.is_some().then(|| StreamEvent::Done {
            finish_reason: self.finish_reason.take(),
            usage: self.usage.take(),
            model: self.model.take(),
            request_id: self.id.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn urls_never_carry_a_key() {
        assert_eq!(chat_url("http://h/v1beta/", "gemini-x", false), "http://h/v1beta/models/gemini-x:generateContent");
        assert_eq!(chat_url("http://h/v1beta", "models/gemini-x", true), "http://h/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
        assert!(!chat_url("http://h", "m", true).contains("key="));
    }

    #[test]
    fn body_translation() {
        let asst = Message {
            role: "assistant".into(),
            content: json!("calling"),
            tool_calls: Some(json!([{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\":1}"}}])),
            ..Default::default()
        };
        let mut tool = Message::text("tool", "{\"r\":2}");
        tool.tool_call_id = Some("c1".into());
        let req = ChatRequest {
            messages: vec![Message::text("system", "be brief"), Message::text("user", "hi"), asst, tool],
            params: Params::default(),
        };
        let mut params = Params {
            temperature: Some(0.1),
            max_tokens: Some(20),
            top_p: Some(0.5),
            stop: vec!["Z".into()],
            tools: Some(json!([{"type": "function", "function": {"name": "calc", "description": "d", "parameters": {"type": "object"}}}])),
            tool_choice: Some(json!("auto")),
            response_format: Some(json!("json")),
            ..Default::default()
        };
        params.extra.insert("safetySettings".into(), json!([]));
        let b = build_body(&req, &params);
        assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
        assert_eq!(b["contents"][0], json!({"role": "user", "parts": [{"text": "hi"}]}));
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(b["contents"][1]["parts"][1], json!({"functionCall": {"name": "calc", "args": {"x": 1}}}));
        assert_eq!(b["contents"][2]["parts"][0]["functionResponse"], json!({"name": "calc", "response": {"r": 2}}));
        assert_eq!(
            b["generationConfig"],
            json!({"temperature": 0.1, "maxOutputTokens": 20, "topP": 0.5, "stopSequences": ["Z"], "responseMimeType": "application/json"})
        );
        assert_eq!(b["tools"][0]["functionDeclarations"][0]["name"], "calc");
        assert_eq!(b["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
        assert_eq!(b["safetySettings"], json!([]));
    }

    #[test]
    fn parse_and_block() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "gemini/m", secret: &s };
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "a"}, {"functionCall": {"name": "f", "args": {"k": "v"}}}]},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
            "modelVersion": "gemini-x", "responseId": "r1"});
        let r = parse_response(&v, &ctx).unwrap();
        assert_eq!(r.content, "a");
        assert_eq!(r.tool_calls[0].name, "f");
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.usage.total_tokens, 5);
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        assert_eq!(parse_response(&blocked, &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        let unsafe_ = json!({"candidates": [{"finishReason": "SAFETY"}]});
        assert_eq!(parse_response(&unsafe_, &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        // A 1-token probe may come back with no parts at all; that is still a valid answer.
        let empty = json!({"candidates": [{"finishReason": "MAX_TOKENS"}]});
        assert_eq!(parse_response(&empty, &ctx).unwrap().finish_reason.as_deref(), Some("length"));
    }
}
