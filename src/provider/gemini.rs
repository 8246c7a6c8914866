//! Google Gemini `generateContent` / `streamGenerateContent`: request translation, response
//! parsing and the SSE chunk decoder. The key travels in the `x-goog-api-key` header, never in
//! the URL, so it cannot leak through URL-bearing error messages or logs.
//!
//! Request (checked against the official SDK's types): system messages become
//! `systemInstruction`; sampling and length settings, stop sequences and the response format
//! go in `generationConfig` (JSON schemas converted to Gemini's OpenAPI subset); the function
//! responses answering one model turn share one content (the API requires it); a function
//! call's `thoughtSignature` is sent back from `tool_calls[i].extra_content.google`; `https://`
//! images become `fileData`. Native settings pass by their Gemini names, snake_case or
//! camelCase: `generationConfig` (merged), any generationConfig field (`thinkingConfig`,
//! `topK`, `seed`, …), `safetySettings`, `cachedContent`, `toolConfig`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::classify::{classify_json_error, ErrCtx};
use super::format::{self, ImageSource, ResponseFormat, Unsupported, SCOPES};
use super::sse::SseEvent;
use super::stream::{DecodeError, StreamDecoder};
use super::{num_u32, set_opt};
use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, ChatResponse, Message, Params, StreamEvent, ToolCall, Usage};

/// Top-level keys the builder writes itself.
const RESERVED: &[&str] = &["contents", "systemInstruction", "system_instruction", "model", "messages", "stream"];

/// Fields of Gemini's `GenerationConfig` (the SDK's model), accepted at the top level of the
/// parameters too and moved into `generationConfig`.
const GENERATION_KEYS: [&str; 26] = [
    "modelSelectionConfig",
    "responseJsonSchema",
    "audioTimestamp",
    "candidateCount",
    "enableAffectiveDialog",
    "frequencyPenalty",
    "logprobs",
    "maxOutputTokens",
    "mediaResolution",
    "presencePenalty",
    "responseLogprobs",
    "responseMimeType",
    "responseModalities",
    "responseSchema",
    "routingConfig",
    "seed",
    "speechConfig",
    "stopSequences",
    "temperature",
    "thinkingConfig",
    "topK",
    "topP",
    "enableEnhancedCivicAnswers",
    "responseFormat",
    "translationConfig",
    "audioTranscriptionConfig",
];

/// Other top-level request fields the Gemini API takes as they are.
const NATIVE_KEYS: [&str; 3] = ["safetySettings", "cachedContent", "toolConfig"];

fn model_path(model: &str) -> String {
    if model.starts_with("models/") || model.starts_with("tunedModels/") {
        model.to_string()
    } else {
        format!("models/{model}")
    }
}

/// The API root: a base URL with no path gets `/v1beta`; one given down to `/models` is cut
/// back to its version segment.
fn api_base(base: &str) -> String {
    let b = base.trim_end_matches('/');
    let b = match b.find("/models") {
        Some(i) if !super::url_path_is_empty(&b[..i]) => &b[..i],
        _ => b,
    };
    if super::url_path_is_empty(b) {
        format!("{b}/v1beta")
    } else {
        b.to_string()
    }
}

/// `{base}/models/{model}:generateContent` or `:streamGenerateContent?alt=sse`.
pub fn chat_url(base: &str, model: &str, stream: bool) -> String {
    let base = api_base(base);
    if stream {
        format!("{base}/{}:streamGenerateContent?alt=sse", model_path(model))
    } else {
        format!("{base}/{}:generateContent", model_path(model))
    }
}

/// `{base}/models`.
pub fn models_url(base: &str) -> String {
    format!("{}/models", api_base(base))
}

/// Normalise Gemini's finishReason to the OpenAI vocabulary; `None` for blocked content.
fn finish_reason(r: &str) -> Option<String> {
    match r {
        "STOP" => Some("stop".into()),
        "MAX_TOKENS" => Some("length".into()),
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => None,
        other => Some(other.to_ascii_lowercase()),
    }
}

fn user_parts(m: &Message, unsupported: &mut Unsupported) -> Vec<Value> {
    match &m.content {
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match format::image_of(p) {
                Some(ImageSource::Inline { mime, data }) => Some(json!({"inlineData": {"mimeType": mime, "data": data}})),
                Some(ImageSource::Url(url)) => {
                    let mut fd = Map::new();
                    fd.insert("fileUri".into(), json!(url));
                    set_opt(&mut fd, "mimeType", format::mime_from_url(url).map(Value::from));
                    Some(json!({"fileData": fd}))
                }
                None => match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (_, Some(t)) => Some(json!({"text": t})),
                    (Some(t), None) => {
                        unsupported.push(&format!("content part type {t:?}"));
                        None
                    }
                    // A part already in Gemini's shape passes as it is.
                    (None, None) => p.is_object().then(|| p.clone()),
                },
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

/// Translate OpenAI-shape tools: function tools become one `functionDeclarations` tool (their
/// parameter schemas in Gemini's subset); Gemini-native tools (`googleSearch`, …) pass as
/// they are.
pub fn tools(v: &Value) -> Option<Value> {
    let Value::Array(list) = v else { return None };
    let mut decls = Vec::new();
    let mut native = Vec::new();
    for t in list {
        let Some(f) = t.get("function") else {
            native.push(t.clone());
            continue;
        };
        let mut o = Map::new();
        o.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
        set_opt(&mut o, "description", f.get("description").cloned());
        if let Some(p) = f.get("parameters") {
            // An object without properties is refused as parameters: a function that takes
            // nothing has none.
            let empty = p.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty) && p.get("type").and_then(Value::as_str) == Some("object");
            if !empty {
                o.insert("parameters".into(), format::gemini_schema(p));
            }
        }
        decls.push(Value::Object(o));
    }
    let mut out = Vec::new();
    if !decls.is_empty() {
        out.push(json!({"functionDeclarations": decls}));
    }
    out.extend(native);
    Some(Value::Array(out))
}

fn tool_config(v: &Value) -> Option<Value> {
    let mode = |m: &str| json!({"functionCallingConfig": {"mode": m}});
    match v {
        Value::String(s) if s == "auto" => Some(mode("AUTO")),
        Value::String(s) if s == "required" || s == "any" => Some(mode("ANY")),
        Value::String(s) if s == "none" => Some(mode("NONE")),
        Value::Object(o) => {
            o.get("function").and_then(|f| f.get("name")).map(|n| json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [n]}}))
        }
        _ => None,
    }
}

/// Whether a content holds only function responses (the turn answering a model's calls).
fn is_responses(c: &Value) -> bool {
    c["role"] == "user" && c["parts"].as_array().is_some_and(|ps| !ps.is_empty() && ps.iter().all(|p| p.get("functionResponse").is_some()))
}

/// The request body. System messages become `systemInstruction`; assistant is `model`.
/// Parameters without a counterpart land in `unsupported`; `Err` is a request that cannot be
/// sent as given (a malformed `response_format`).
pub fn build_body(req: &ChatRequest, params: &Params, unsupported: &mut Unsupported) -> Result<Value, String> {
    let mut b = Map::new();
    // Tool results must name the function; remember names by call id from earlier turns.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for m in &req.messages {
        match m.role.as_str() {
            "system" | "developer" => system.push(json!({"text": m.text_content()})),
            "assistant" => {
                let mut parts = user_parts(m, unsupported);
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
                            .filter(Value::is_object)
                            .unwrap_or_else(|| json!({}));
                        let mut part = json!({"functionCall": {"name": name, "args": args}});
                        if let Some(sig) = c.pointer("/extra_content/google/thought_signature").and_then(Value::as_str) {
                            part["thoughtSignature"] = json!(sig);
                        }
                        parts.push(part);
                    }
                }
                if !parts.is_empty() {
                    contents.push(json!({"role": "model", "parts": parts}));
                }
            }
            "tool" => {
                let name = m.name.clone().or_else(|| m.tool_call_id.as_ref().and_then(|id| call_names.get(id).cloned())).unwrap_or_default();
                let text = m.text_content();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(other) => json!({"output": other}),
                    Err(_) => json!({"output": text}),
                };
                let part = json!({"functionResponse": {"name": name, "response": response}});
                // All responses to one model turn go in one content.
                match contents.last_mut().filter(|c| is_responses(c)) {
                    Some(last) => {
                        if let Some(ps) = last["parts"].as_array_mut() {
                            ps.push(part);
                        }
                    }
                    None => contents.push(json!({"role": "user", "parts": [part]})),
                }
            }
            _ => {
                let parts = user_parts(m, unsupported);
                if !parts.is_empty() {
                    contents.push(json!({"role": "user", "parts": parts}));
                }
            }
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
    if let Some(rf) = &params.response_format {
        match format::response_format(rf)? {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            ResponseFormat::JsonSchema { schema, .. } => {
                g.insert("responseMimeType".into(), json!("application/json"));
                g.insert("responseSchema".into(), format::gemini_schema(&schema));
            }
        }
    }
    set_opt(&mut b, "tools", params.tools.as_ref().and_then(tools));
    set_opt(&mut b, "toolConfig", params.tool_choice.as_ref().and_then(tool_config));
    for (k, v) in &params.extra {
        if RESERVED.contains(&k.as_str()) || SCOPES.contains(&k.as_str()) {
            continue;
        }
        let name = format::camel(k);
        let mut gen = |key: &str, v: &Value| {
            g.entry(key.to_string()).or_insert_with(|| v.clone());
        };
        match (name.as_str(), v) {
            ("generationConfig", Value::Object(o)) => {
                for (gk, gv) in o {
                    gen(&format::camel(gk), gv);
                }
            }
            (n, _) if GENERATION_KEYS.contains(&n) && !(n == "logprobs" && v.is_boolean()) => gen(n, v),
            (n, _) if NATIVE_KEYS.contains(&n) => {
                b.entry(n.to_string()).or_insert_with(|| v.clone());
            }
            // OpenAI's names for what generationConfig has.
            ("n", _) => gen("candidateCount", v),
            ("maxCompletionTokens", _) => gen("maxOutputTokens", v),
            ("logprobs", Value::Bool(_)) => gen("responseLogprobs", v),
            ("topLogprobs", _) => gen("logprobs", v),
            _ => unsupported.push(k),
        }
    }
    for scope in format::scoped(&params.extra, &["gemini"], unsupported) {
        for (k, v) in scope {
            match (k.as_str(), v) {
                ("generationConfig" | "generation_config", Value::Object(o)) => {
                    for (gk, gv) in o {
                        g.insert(format::camel(gk), gv.clone());
                    }
                }
                ("contents", _) => {}
                _ => {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if !g.is_empty() {
        b.insert("generationConfig".into(), Value::Object(g));
    }
    Ok(Value::Object(b))
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata").filter(|u| u.is_object())?;
    let p = num_u32(u.get("promptTokenCount"));
    let thoughts = num_u32(u.get("thoughtsTokenCount"));
    // Thoughts are billed as output but not counted in the candidates.
    let c = num_u32(u.get("candidatesTokenCount")).saturating_add(thoughts);
    let t = u.get("totalTokenCount").map(|t| num_u32(Some(t))).unwrap_or(p.saturating_add(c));
    Some(Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: t,
        cached_tokens: num_u32(u.get("cachedContentTokenCount")),
        cache_creation_tokens: 0,
        reasoning_tokens: thoughts,
    })
}

fn blocked(v: &Value, ctx: &ErrCtx<'_>) -> Option<Error> {
    if let Some(r) = v.get("promptFeedback").and_then(|f| f.get("blockReason")).and_then(Value::as_str) {
        return Some(ctx.error(ErrorKind::ContentFiltered, &format!("prompt blocked ({r})")));
    }
    let r = v.get("candidates")?.get(0)?.get("finishReason")?.as_str()?;
    finish_reason(r).is_none().then(|| ctx.error(ErrorKind::ContentFiltered, &format!("response blocked (finishReason {r})")))
}

/// One function call of a response: (id, name, arguments, thought signature).
type Call = (Option<String>, String, String, Option<String>);

/// (text, function calls) of candidate 0; thought parts are skipped.
fn parts(v: &Value) -> (String, Vec<Call>) {
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
                    p.get("thoughtSignature").and_then(Value::as_str).map(str::to_string),
                ));
            }
        }
    }
    (text, calls)
}

fn signature_content(sig: Option<String>) -> Option<Value> {
    sig.map(|s| json!({"google": {"thought_signature": s}}))
}

/// Parse a non-streaming response body.
pub fn parse_response(v: &Value, ctx: &ErrCtx<'_>) -> Result<ChatResponse, Error> {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_json_error(v, ctx));
    }
    if let Some(mut e) = blocked(v, ctx) {
        let (text, _) = parts(v);
        if !text.is_empty() {
            e.partial = Some(text);
        }
        return Err(e);
    }
    let cand = v.get("candidates").and_then(|c| c.get(0)).ok_or_else(|| ctx.error(ErrorKind::InvalidResponse, "response has no candidates[0]"))?;
    let (content, calls) = parts(v);
    let tool_calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, (id, name, arguments, sig))| ToolCall {
            id: id.unwrap_or_else(|| format!("call_{i}")),
            name,
            arguments,
            extra_content: signature_content(sig),
        })
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
/// A safety block after some text ends the stream with `ContentFiltered` (the stream driver
/// attaches the text so far).
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
        // Text that arrived with the block is part of what the caller saw before it.
        if let Some(e) = blocked(&v, ctx) {
            return Err(DecodeError::Provider(e));
        }
        for (id, name, args, sig) in calls {
            let index = self.calls;
            self.calls += 1;
            let mut call = json!({"index": index, "id": id.unwrap_or_else(|| format!("call_{index}")), "type": "function",
                "function": {"name": name, "arguments": args}});
            if let Some(x) = signature_content(sig) {
                call["extra_content"] = x;
            }
            out.push(StreamEvent::Delta { text: String::new(), tool_call: Some(call) });
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

    fn build(req: &ChatRequest, params: &Params) -> (Value, Vec<String>) {
        let mut u = Unsupported::default();
        let b = build_body(req, params, &mut u).expect("builds");
        (b, u.0)
    }

    #[test]
    fn urls_never_carry_a_key_and_get_a_version_segment() {
        assert_eq!(chat_url("http://h/v1beta/", "gemini-x", false), "http://h/v1beta/models/gemini-x:generateContent");
        assert_eq!(chat_url("http://h/v1beta", "models/gemini-x", true), "http://h/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
        assert_eq!(chat_url("http://h", "m", false), "http://h/v1beta/models/m:generateContent");
        assert_eq!(chat_url("http://h/", "m", false), "http://h/v1beta/models/m:generateContent");
        assert_eq!(chat_url("http://h/v1", "m", false), "http://h/v1/models/m:generateContent");
        assert_eq!(chat_url("http://h/v1beta/models", "m", false), "http://h/v1beta/models/m:generateContent");
        assert_eq!(models_url("https://generativelanguage.googleapis.com"), "https://generativelanguage.googleapis.com/v1beta/models");
        assert!(!chat_url("http://h", "m", true).contains("key="));
    }

    #[test]
    fn body_translation() {
        let asst = Message {
            role: "assistant".into(),
            content: json!("calling"),
            tool_calls: Some(json!([
                {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\":1}"}, "extra_content": {"google": {"thought_signature": "SIG"}}},
                {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}
            ])),
            ..Default::default()
        };
        let mut tool = Message::text("tool", "{\"r\":2}");
        tool.tool_call_id = Some("c1".into());
        let mut tool2 = Message::text("tool", "noon");
        tool2.tool_call_id = Some("c2".into());
        let user_img = Message {
            role: "user".into(),
            content: json!([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}}]),
            ..Default::default()
        };
        let req = ChatRequest {
            messages: vec![Message::text("system", "be brief"), Message::text("user", "hi"), asst, tool, tool2, user_img],
            params: Params::default(),
        };
        let mut params = Params {
            temperature: Some(0.1),
            max_tokens: Some(20),
            top_p: Some(0.5),
            stop: vec!["Z".into()],
            tools: Some(json!([
                {"type": "function", "function": {"name": "calc", "description": "d", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": false}}},
                {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}},
                {"googleSearch": {}}
            ])),
            tool_choice: Some(json!("auto")),
            response_format: Some(json!("json")),
            ..Default::default()
        };
        params.extra.insert("safety_settings".into(), json!([]));
        params.extra.insert("seed".into(), json!(3));
        params.extra.insert("thinking_config".into(), json!({"thinkingBudget": 0}));
        params.extra.insert("generationConfig".into(), json!({"top_k": 4}));
        params.extra.insert("n".into(), json!(1));
        params.extra.insert("parallel_tool_calls".into(), json!(true));
        params.extra.insert("openai".into(), json!({"store": true}));
        let (b, unsupported) = build(&req, &params);
        assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
        assert_eq!(b["contents"][0], json!({"role": "user", "parts": [{"text": "hi"}]}));
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(b["contents"][1]["parts"][1], json!({"functionCall": {"name": "calc", "args": {"x": 1}}, "thoughtSignature": "SIG"}));
        assert_eq!(b["contents"][1]["parts"][2], json!({"functionCall": {"name": "time", "args": {}}}));
        // Both answers in one content.
        assert_eq!(
            b["contents"][2],
            json!({"role": "user", "parts": [
            {"functionResponse": {"name": "calc", "response": {"r": 2}}},
            {"functionResponse": {"name": "time", "response": {"output": "noon"}}}]})
        );
        assert_eq!(b["contents"][3]["parts"][1], json!({"fileData": {"fileUri": "https://x/cat.png", "mimeType": "image/png"}}));
        assert_eq!(b["contents"][3]["parts"][2], json!({"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}}));
        assert_eq!(
            b["generationConfig"],
            json!({"temperature": 0.1, "maxOutputTokens": 20, "topP": 0.5, "stopSequences": ["Z"], "responseMimeType": "application/json",
                "seed": 3, "thinkingConfig": {"thinkingBudget": 0}, "topK": 4, "candidateCount": 1})
        );
        assert_eq!(b["tools"][0]["functionDeclarations"][0]["parameters"], json!({"type": "OBJECT", "properties": {"x": {"type": "INTEGER"}}}));
        assert!(b["tools"][0]["functionDeclarations"][1].get("parameters").is_none(), "no-argument function");
        assert_eq!(b["tools"][1], json!({"googleSearch": {}}));
        assert_eq!(b["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
        assert_eq!(b["safetySettings"], json!([]));
        assert!(b.get("store").is_none() && b.get("openai").is_none());
        assert_eq!(unsupported, ["parallel_tool_calls"]);
        let schema = Params {
            response_format: Some(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": ["string", "null"]}}}}}),
            ),
            ..Default::default()
        };
        let (b, _) = build(&req, &schema);
        assert_eq!(b["generationConfig"]["responseSchema"], json!({"type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": true}}}));
    }

    #[test]
    fn parse_and_block() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "gemini/m", secret: &s };
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "think", "thought": true}, {"text": "a"},
            {"functionCall": {"name": "f", "args": {"k": "v"}}, "thoughtSignature": "SIG"}]},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 4, "cachedContentTokenCount": 1, "totalTokenCount": 9},
            "modelVersion": "gemini-x", "responseId": "r1"});
        let r = parse_response(&v, &ctx).unwrap();
        assert_eq!(r.content, "a");
        assert_eq!(r.tool_calls[0].name, "f");
        assert_eq!(r.tool_calls[0].extra_content, Some(json!({"google": {"thought_signature": "SIG"}})));
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.usage, Usage { prompt_tokens: 3, completion_tokens: 6, total_tokens: 9, cached_tokens: 1, cache_creation_tokens: 0, reasoning_tokens: 4 });
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        assert_eq!(parse_response(&blocked, &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        let unsafe_ = json!({"candidates": [{"finishReason": "SAFETY"}]});
        assert_eq!(parse_response(&unsafe_, &ctx).unwrap_err().kind, ErrorKind::ContentFiltered);
        // A 1-token probe may come back with no parts at all; that is still a valid answer.
        let empty = json!({"candidates": [{"finishReason": "MAX_TOKENS"}]});
        assert_eq!(parse_response(&empty, &ctx).unwrap().finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn safety_block_mid_stream_is_content_filtered_after_the_text() {
        let s = Secret::none();
        let ctx = ErrCtx { label: "gemini/m", secret: &s };
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let first = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Once"}]}}]}"#;
        d.on_event(SseEvent { event: "message".into(), data: first.into() }, &mut out, &ctx).map_err(|_| ()).unwrap();
        let blocked = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":" upon"}]},"finishReason":"SAFETY"}]}"#;
        let r = d.on_event(SseEvent { event: "message".into(), data: blocked.into() }, &mut out, &ctx);
        assert!(matches!(r, Err(DecodeError::Provider(ref e)) if e.kind == ErrorKind::ContentFiltered));
        assert_eq!(out.len(), 2, "the text of the blocked chunk is delivered before the error");
    }
}
