//! What the real APIs refuse, refused here too: every chat request is checked against the
//! request shape its provider documents (field lists taken from the official SDKs' request
//! types: `openai`'s `CompletionCreateParams`, `anthropic`'s `MessageCreateParams`,
//! `google-genai`'s `GenerateContentParameters` as sent on the wire), so a client that sends what
//! a provider would reject fails against the mock as it would in production, with the
//! provider's 400 wording.
//!
//! The lists are kept here on purpose, apart from the client's own: sharing them would share
//! their blind spots.

use serde_json::{Map, Value};

use super::wire::Format;

/// What the validation needs besides the body.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// Gemini: function calls of the current turn must carry a `thoughtSignature` (the script
    /// option `thought_signature`, as Gemini 3 models require).
    pub thought_signatures: bool,
}

/// `Err(message)` in the provider's wording when the real API would refuse `body`.
pub fn check(format: Format, body: &Value, rules: Rules) -> Result<(), String> {
    let Value::Object(o) = body else { return Err("the request body must be a JSON object".into()) };
    match format {
        Format::OpenAi => openai(o),
        Format::Anthropic => anthropic(o),
        Format::Gemini => gemini(o, rules),
    }
}

fn unknown_keys<'a>(o: &'a Map<String, Value>, allowed: &[&str]) -> Option<&'a str> {
    o.keys().map(String::as_str).find(|k| !allowed.contains(k))
}

// ---------------------------------------------------------------------------------------------
// OpenAI chat completions

const OPENAI_TOP: [&str; 37] = [
    "model",
    "messages",
    "stream",
    "stream_options",
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
];

fn openai(o: &Map<String, Value>) -> Result<(), String> {
    if let Some(k) = unknown_keys(o, &OPENAI_TOP) {
        return Err(format!("Unrecognized request argument supplied: {k}"));
    }
    if o.get("stream_options").is_some_and(|v| !v.is_null()) && o.get("stream").and_then(Value::as_bool) != Some(true) {
        return Err("The 'stream_options' parameter is only allowed when 'stream' is enabled.".into());
    }
    let Some(Value::Array(msgs)) = o.get("messages") else { return Err("Missing required parameter: 'messages'.".into()) };
    if msgs.is_empty() {
        return Err("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into());
    }
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let Value::Object(m) = m else { return Err(format!("Invalid type for 'messages[{i}]': expected an object.")) };
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let allowed: &[&str] = match role {
            "system" | "developer" | "user" => &["role", "content", "name"],
            "assistant" => &["role", "content", "name", "tool_calls", "refusal", "audio", "function_call"],
            "tool" => &["role", "content", "tool_call_id"],
            "function" => &["role", "content", "name"],
            other => {
                return Err(format!("Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."))
            }
        };
        if let Some(k) = unknown_keys(m, allowed) {
            return Err(format!("Additional properties are not allowed ('{k}' was unexpected) - 'messages.{i}'"));
        }
        match role {
            "assistant" => {
                open_calls.clear();
                for (j, c) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let Value::Object(c) = c else { return Err(format!("Invalid type for 'messages[{i}].tool_calls[{j}]'")) };
                    if let Some(k) = unknown_keys(c, &["id", "type", "function", "custom"]) {
                        return Err(format!("Additional properties are not allowed ('{k}' was unexpected) - 'messages.{i}.tool_calls.{j}'"));
                    }
                    if let Some(Value::Object(f)) = c.get("function") {
                        if let Some(k) = unknown_keys(f, &["name", "arguments"]) {
                            return Err(format!("Additional properties are not allowed ('{k}' was unexpected) - 'messages.{i}.tool_calls.{j}.function'"));
                        }
                        if !f.get("arguments").is_some_and(Value::is_string) {
                            return Err(format!("Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments': expected a string."));
                        }
                    }
                    open_calls.push(c.get("id").and_then(Value::as_str).unwrap_or_default().to_string());
                }
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                if !open_calls.iter().any(|c| c == id) {
                    return Err(format!("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls' (tool_call_id {id:?} at messages[{i}])."));
                }
            }
            _ => open_calls.clear(),
        }
    }
    if let Some(rf) = o.get("response_format").filter(|v| !v.is_null()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("text" | "json_object") => {}
            Some("json_schema") => match rf.get("json_schema") {
                Some(Value::Object(js)) => {
                    if !js.get("name").is_some_and(Value::is_string) {
                        return Err("Missing required parameter: 'response_format.json_schema.name'.".into());
                    }
                    if let Some(k) = unknown_keys(js, &["name", "description", "schema", "strict"]) {
                        return Err(format!("Unknown parameter: 'response_format.json_schema.{k}'."));
                    }
                }
                _ => return Err("Missing required parameter: 'response_format.json_schema'.".into()),
            },
            _ => return Err("Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'.".into()),
        }
        if let Some(k) = rf.as_object().and_then(|r| unknown_keys(r, &["type", "json_schema"])) {
            return Err(format!("Unknown parameter: 'response_format.{k}'."));
        }
    }
    for (i, t) in o.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let Some(Value::Object(f)) = t.get("function") else { return Err(format!("Missing required parameter: 'tools[{i}].function'.")) };
                if let Some(k) = unknown_keys(f, &["name", "description", "parameters", "strict"]) {
                    return Err(format!("Unknown parameter: 'tools[{i}].function.{k}'."));
                }
            }
            Some("custom") => {}
            _ => return Err(format!("Invalid value for 'tools[{i}].type': expected 'function' or 'custom'.")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Anthropic messages

const ANTHROPIC_TOP: [&str; 19] = [
    "model",
    "messages",
    "max_tokens",
    "stream",
    "system",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "output_config",
    "cache_control",
    "container",
    "diagnostics",
    "inference_geo",
    "service_tier",
    "speed",
    "user_profile_id",
    "workspace_id",
];

fn extra_inputs(path: &str) -> String {
    format!("{path}: Extra inputs are not permitted")
}

fn block_keys(ty: &str) -> Option<&'static [&'static str]> {
    Some(match ty {
        "text" => &["type", "text", "cache_control", "citations"],
        "image" => &["type", "source", "cache_control", "transformations"],
        "tool_use" => &["type", "id", "name", "input", "cache_control", "caller", "toolset_name"],
        "tool_result" => &["type", "tool_use_id", "content", "is_error", "cache_control", "toolset_name"],
        "thinking" => &["type", "thinking", "signature"],
        "redacted_thinking" => &["type", "data"],
        "document" => &["type", "source", "cache_control", "citations", "context", "title"],
        "search_result" | "server_tool_use" | "web_search_tool_result" | "web_fetch_tool_result" | "code_execution_tool_result" | "container_upload" => {
            return None
        }
        _ => return Some(&[]),
    })
}

fn anthropic(o: &Map<String, Value>) -> Result<(), String> {
    if let Some(k) = unknown_keys(o, &ANTHROPIC_TOP) {
        return Err(extra_inputs(k));
    }
    if o.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err("max_tokens: Field required".into());
    }
    if !o.get("model").is_some_and(Value::is_string) {
        return Err("model: Field required".into());
    }
    let Some(Value::Array(msgs)) = o.get("messages") else { return Err("messages: Field required".into()) };
    if msgs.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let thinking_on = o.get("thinking").and_then(|t| t.get("type")).and_then(Value::as_str).is_some_and(|t| t == "enabled" || t == "adaptive");
    let mut prev_tool_uses: Vec<String> = Vec::new();
    let mut last_assistant_with_tools: Option<usize> = None;
    for (i, m) in msgs.iter().enumerate() {
        let Value::Object(m) = m else { return Err(format!("messages.{i}: Input should be a valid dictionary")) };
        if let Some(k) = unknown_keys(m, &["role", "content"]) {
            return Err(extra_inputs(&format!("messages.{i}.{k}")));
        }
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if !["user", "assistant", "system"].contains(&role) {
            return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'"));
        }
        let blocks: &[Value] = match m.get("content") {
            Some(Value::String(_)) => &[],
            Some(Value::Array(b)) => b,
            _ => return Err(format!("messages.{i}.content: Field required")),
        };
        let mut tool_uses = Vec::new();
        let mut results = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let Value::Object(b) = b else { return Err(format!("messages.{i}.content.{j}: Input should be a valid dictionary")) };
            let ty = b.get("type").and_then(Value::as_str).unwrap_or_default();
            match block_keys(ty) {
                Some([]) => return Err(format!("messages.{i}.content.{j}.type: Input tag '{ty}' found using 'type' does not match any of the expected tags")),
                Some(keys) => {
                    if let Some(k) = unknown_keys(b, keys) {
                        return Err(extra_inputs(&format!("messages.{i}.content.{j}.{ty}.{k}")));
                    }
                }
                None => {}
            }
            match ty {
                "tool_use" => {
                    if role != "assistant" {
                        return Err(format!("messages.{i}.content.{j}: tool_use blocks are only allowed in assistant messages"));
                    }
                    if !b.get("input").is_some_and(Value::is_object) {
                        return Err(format!("messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary"));
                    }
                    tool_uses.push(b.get("id").and_then(Value::as_str).unwrap_or_default().to_string());
                }
                "tool_result" => results.push(b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default().to_string()),
                "image" => {
                    let st = b.get("source").and_then(|s| s.get("type")).and_then(Value::as_str);
                    if !matches!(st, Some("base64" | "url" | "file")) {
                        return Err(format!("messages.{i}.content.{j}.image.source: Input tag found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'"));
                    }
                }
                _ => {}
            }
        }
        if let Some(id) = results.iter().find(|r| !prev_tool_uses.contains(r)) {
            return Err(format!("messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."));
        }
        if !prev_tool_uses.is_empty() {
            if let Some(missing) = prev_tool_uses.iter().find(|u| !results.contains(u)) {
                return Err(format!("messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."));
            }
        }
        if !tool_uses.is_empty() {
            last_assistant_with_tools = Some(i);
        }
        prev_tool_uses = tool_uses;
    }
    if let (true, Some(i)) = (thinking_on, last_assistant_with_tools) {
        let first = msgs[i]["content"].get(0).and_then(|b| b.get("type")).and_then(Value::as_str);
        if !matches!(first, Some("thinking" | "redacted_thinking")) {
            return Err(format!("messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns.", first.unwrap_or("text")));
        }
    }
    if let Some(tc) = o.get("tool_choice") {
        match tc.get("type").and_then(Value::as_str) {
            Some("auto" | "any" | "tool" | "none") => {
                if let Some(k) = tc.as_object().and_then(|t| unknown_keys(t, &["type", "name", "disable_parallel_tool_use"])) {
                    return Err(extra_inputs(&format!("tool_choice.{k}")));
                }
            }
            _ => return Err("tool_choice: Input tag found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'".into()),
        }
    }
    if let Some(Value::Object(md)) = o.get("metadata") {
        if let Some(k) = unknown_keys(md, &["user_id"]) {
            return Err(extra_inputs(&format!("metadata.{k}")));
        }
    }
    for (i, t) in o.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let custom = t.get("type").is_none_or(|ty| ty.is_null() || ty == "custom");
        if custom {
            let keys = [
                "name",
                "description",
                "input_schema",
                "cache_control",
                "strict",
                "type",
                "defer_loading",
                "input_examples",
                "allowed_callers",
                "eager_input_streaming",
            ];
            if let Some(k) = t.as_object().and_then(|t| unknown_keys(t, &keys)) {
                return Err(extra_inputs(&format!("tools.{i}.custom.{k}")));
            }
            if t.get("input_schema").and_then(|s| s.get("type")).and_then(Value::as_str) != Some("object") {
                return Err(format!("tools.{i}.custom.input_schema.type: Input should be 'object'"));
            }
        }
    }
    if let Some(oc) = o.get("output_config") {
        if let Some(k) = oc.as_object().and_then(|c| unknown_keys(c, &["effort", "format"])) {
            return Err(extra_inputs(&format!("output_config.{k}")));
        }
        if let Some(f) = oc.get("format").filter(|f| !f.is_null()) {
            if f.get("type").and_then(Value::as_str) != Some("json_schema") || !f.get("schema").is_some_and(Value::is_object) {
                return Err("output_config.format: expected {\"type\": \"json_schema\", \"schema\": {...}}".into());
            }
            closed_objects(&f["schema"], "output_config.format.schema")?;
        }
    }
    Ok(())
}

/// Structured outputs need every object schema closed.
fn closed_objects(s: &Value, path: &str) -> Result<(), String> {
    match s {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("object") && o.get("additionalProperties") != Some(&Value::Bool(false)) {
                return Err(format!("{path}: For 'object' type, 'additionalProperties' must be explicitly set to false"));
            }
            for (k, v) in o {
                closed_objects(v, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter().enumerate().try_for_each(|(i, v)| closed_objects(v, &format!("{path}.{i}"))),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Gemini generateContent

/// A field name as the API takes it: lowerCamelCase, or the proto's snake_case.
fn camel(k: &str) -> String {
    crate::provider::format::camel(k)
}

fn unknown_field(o: &Map<String, Value>, allowed: &[&str]) -> Option<String> {
    o.keys().find(|k| !allowed.contains(&camel(k).as_str())).cloned()
}

fn unknown_name(path: &str, k: &str) -> String {
    let at = if path.is_empty() { String::new() } else { format!(" at '{path}'") };
    format!("Invalid JSON payload received. Unknown name \"{k}\"{at}: Cannot find field.")
}

const GEMINI_TOP: [&str; 7] = ["contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings", "cachedContent"];
const GEMINI_GENERATION: [&str; 26] = [
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
const GEMINI_PART: [&str; 12] = [
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "thought",
    "thoughtSignature",
    "videoMetadata",
    "mediaResolution",
    "partMetadata",
];
const GEMINI_PART_DATA: [&str; 7] = ["text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult"];
/// Schema fields the Gemini API (not Vertex) takes.
const GEMINI_SCHEMA: [&str; 22] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];
const GEMINI_TYPES: [&str; 7] = ["STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"];

fn gemini(o: &Map<String, Value>, rules: Rules) -> Result<(), String> {
    if let Some(k) = unknown_field(o, &GEMINI_TOP) {
        return Err(unknown_name("", &k));
    }
    let Some(Value::Array(contents)) = o.get("contents") else { return Err("* GenerateContentRequest.contents: contents is not specified".into()) };
    if contents.is_empty() {
        return Err("* GenerateContentRequest.contents: contents is not specified".into());
    }
    let mut calls_pending: usize = 0;
    let mut current_turn_start = 0;
    for (i, c) in contents.iter().enumerate() {
        let Value::Object(c) = c else { return Err(format!("Invalid value at 'contents[{i}]'")) };
        if let Some(k) = unknown_field(c, &["role", "parts"]) {
            return Err(unknown_name(&format!("contents[{i}]"), &k));
        }
        let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
        if !["user", "model", "function"].contains(&role) {
            return Err(format!("* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."));
        }
        let Some(Value::Array(parts)) = c.get("parts") else {
            return Err(format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."));
        };
        if parts.is_empty() {
            return Err(format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."));
        }
        let (mut calls, mut responses, mut texts) = (0usize, 0usize, 0usize);
        for (j, p) in parts.iter().enumerate() {
            let Value::Object(p) = p else { return Err(format!("Invalid value at 'contents[{i}].parts[{j}]'")) };
            if let Some(k) = unknown_field(p, &GEMINI_PART) {
                return Err(unknown_name(&format!("contents[{i}].parts[{j}]"), &k));
            }
            let data = p.keys().filter(|k| GEMINI_PART_DATA.contains(&camel(k).as_str())).count();
            if data != 1 {
                return Err(format!("* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' must have one initialized field"));
            }
            if p.contains_key("functionCall") || p.contains_key("function_call") {
                calls += 1;
            }
            if p.contains_key("functionResponse") || p.contains_key("function_response") {
                responses += 1;
            }
            if p.contains_key("text") && !p.get("thought").and_then(Value::as_bool).unwrap_or(false) {
                texts += 1;
            }
            if let Some(fd) = p.get("fileData").or_else(|| p.get("file_data")) {
                if !fd.get("fileUri").or_else(|| fd.get("file_uri")).is_some_and(Value::is_string) {
                    return Err(format!("* GenerateContentRequest.contents[{i}].parts[{j}].file_data.file_uri: file_uri is required"));
                }
            }
        }
        if calls_pending > 0 {
            if responses != calls_pending {
                return Err(
                    "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".into(),
                );
            }
        } else if responses > 0 {
            return Err("Please ensure that function response turn comes immediately after a function call turn.".into());
        }
        calls_pending = if role == "model" { calls } else { 0 };
        if role == "user" && texts > 0 && responses == 0 {
            current_turn_start = i;
        }
    }
    if rules.thought_signatures {
        // Every model step of the current turn must send its first function call's signature back.
        for (i, c) in contents.iter().enumerate().skip(current_turn_start) {
            if c.get("role").and_then(Value::as_str) != Some("model") {
                continue;
            }
            let parts = c.get("parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            if let Some((j, p)) = parts.iter().enumerate().find(|(_, p)| p.get("functionCall").is_some() || p.get("function_call").is_some()) {
                if p.get("thoughtSignature").or_else(|| p.get("thought_signature")).is_none() {
                    let name = p.pointer("/functionCall/name").and_then(Value::as_str).unwrap_or_default();
                    return Err(format!("Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.", i + 1 + j));
                }
            }
        }
    }
    if let Some(Value::Object(g)) = o.get("generationConfig").or_else(|| o.get("generation_config")) {
        if let Some(k) = unknown_field(g, &GEMINI_GENERATION) {
            return Err(unknown_name("generation_config", &k));
        }
        if let Some(s) = g.get("responseSchema").or_else(|| g.get("response_schema")) {
            schema(s, "generation_config.response_schema")?;
        }
    }
    if let Some(Value::Object(si)) = o.get("systemInstruction").or_else(|| o.get("system_instruction")) {
        if let Some(k) = unknown_field(si, &["role", "parts"]) {
            return Err(unknown_name("system_instruction", &k));
        }
    }
    for (i, t) in o.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let Value::Object(t) = t else { return Err(format!("Invalid value at 'tools[{i}]'")) };
        let tool_keys = [
            "functionDeclarations",
            "googleSearch",
            "googleSearchRetrieval",
            "codeExecution",
            "urlContext",
            "fileSearch",
            "googleMaps",
            "computerUse",
            "retrieval",
            "enterpriseWebSearch",
            "mcpServers",
        ];
        if let Some(k) = unknown_field(t, &tool_keys) {
            return Err(unknown_name(&format!("tools[{i}]"), &k));
        }
        for (j, d) in t.get("functionDeclarations").or_else(|| t.get("function_declarations")).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let Value::Object(d) = d else { return Err(format!("Invalid value at 'tools[{i}].function_declarations[{j}]'")) };
            if let Some(k) = unknown_field(d, &["name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"]) {
                return Err(unknown_name(&format!("tools[{i}].function_declarations[{j}]"), &k));
            }
            if let Some(p) = d.get("parameters") {
                let path = format!("tools[{i}].function_declarations[{j}].parameters");
                schema(p, &path)?;
                let is_object = p.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("object"));
                if is_object && p.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty) {
                    return Err(format!("* GenerateContentRequest.{path}.properties: should be non-empty for OBJECT type"));
                }
            }
        }
    }
    Ok(())
}

/// A `Schema` (OpenAPI subset) as the Gemini API takes it.
fn schema(s: &Value, path: &str) -> Result<(), String> {
    let Value::Object(o) = s else { return Err(format!("Invalid value at '{path}': expected an object")) };
    for (k, v) in o {
        if !GEMINI_SCHEMA.contains(&camel(k).as_str()) {
            return Err(unknown_name(path, k));
        }
        match camel(k).as_str() {
            "type" if !v.as_str().is_some_and(|t| GEMINI_TYPES.contains(&t.to_ascii_uppercase().as_str())) => {
                return Err(format!("Invalid value at '{path}.type' ({v}): expected one of {}", GEMINI_TYPES.join(", ")));
            }
            "enum" if !v.as_array().is_some_and(|vals| vals.iter().all(Value::is_string)) => {
                return Err(format!("Invalid value at '{path}.enum': enum values must be strings"));
            }
            "properties" => {
                for (name, p) in v.as_object().into_iter().flatten() {
                    schema(p, &format!("{path}.properties[{name}].value"))?;
                }
            }
            "items" => schema(v, &format!("{path}.items"))?,
            "anyOf" => {
                for (i, p) in v.as_array().into_iter().flatten().enumerate() {
                    schema(p, &format!("{path}.any_of[{i}]"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(f: Format, v: Value) {
        assert_eq!(check(f, &v, Rules::default()), Ok(()), "{v}");
    }
    fn bad(f: Format, v: Value, needle: &str) {
        let e = check(f, &v, Rules { thought_signatures: true }).expect_err(&v.to_string());
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn openai_rules() {
        ok(Format::OpenAi, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}));
        bad(
            Format::OpenAi,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "thinking": {}}),
            "Unrecognized request argument supplied: thinking",
        );
        bad(Format::OpenAi, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream_options": {}}), "stream_options");
        let call = json!({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra_content": {}});
        bad(Format::OpenAi, json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]}), "'extra_content' was unexpected");
        bad(Format::OpenAi, json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]}), "preceeding");
        bad(
            Format::OpenAi,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "object", "properties": {}}}),
            "response_format.type",
        );
    }

    #[test]
    fn anthropic_rules() {
        ok(Format::Anthropic, json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}));
        bad(
            Format::Anthropic,
            json!({"model": "m", "max_tokens": 5, "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}),
            "temperature: Extra inputs",
        );
        bad(Format::Anthropic, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}), "max_tokens: Field required");
        let tool_turn = json!([{"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1"}]}]);
        ok(Format::Anthropic, json!({"model": "m", "max_tokens": 5, "messages": tool_turn}));
        bad(
            Format::Anthropic,
            json!({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": tool_turn}),
            "must start with a thinking block",
        );
        bad(
            Format::Anthropic,
            json!({"model": "m", "max_tokens": 5, "output_config": {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {}}}},
            "messages": [{"role": "user", "content": "hi"}]}),
            "additionalProperties",
        );
    }

    #[test]
    fn gemini_rules() {
        ok(Format::Gemini, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"topK": 3}}));
        bad(Format::Gemini, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "seed": 3}), "Unknown name \"seed\"");
        let calls = json!({"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "s"}, {"functionCall": {"name": "b", "args": {}}}]});
        let one = json!({"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]});
        let both = json!({"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}, {"functionResponse": {"name": "b", "response": {}}}]});
        let q = json!({"role": "user", "parts": [{"text": "q"}]});
        ok(Format::Gemini, json!({"contents": [q, calls, both]}));
        bad(Format::Gemini, json!({"contents": [q, calls, one, one]}), "number of function response parts");
        let unsigned = json!({"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}}]});
        bad(Format::Gemini, json!({"contents": [q, unsigned, one]}), "thought_signature");
        bad(
            Format::Gemini,
            json!({"contents": [q], "generationConfig": {"responseSchema": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}}}}),
            "additionalProperties",
        );
        bad(
            Format::Gemini,
            json!({"contents": [q], "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {}}}]}]}),
            "non-empty for OBJECT",
        );
    }
}
