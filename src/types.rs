//! The one request type and one response type every provider translates to and from.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Attempt;

/// One chat message in the OpenAI shape. `content` is a string, or a list of content parts kept
/// as JSON (images, etc.) that providers translate where they can.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `"system"`, `"user"`, `"assistant"` or `"tool"`.
    pub role: String,
    #[serde(default)]
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assistant tool calls, OpenAI shape (`[{id, type, function: {name, arguments}}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    /// For `role == "tool"`: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with plain text content.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: Value::String(content.into()), ..Default::default() }
    }

    /// The text of the content: the string itself, or the concatenated `text` parts.
    pub fn text_content(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// `text_content().len()` without building the string: the TPM estimate runs on every
    /// call, and a long prompt would otherwise be copied once just to be measured.
    pub fn text_len(&self) -> usize {
        match &self.content {
            Value::String(s) => s.len(),
            Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(str::len).sum(),
            Value::Null => 0,
            other => other.to_string().len(),
        }
    }
}

/// Generation parameters. `None` means "use the configured default, else the provider's".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// OpenAI-shape tool definitions (`[{type: "function", function: {name, description, parameters}}]`).
    pub tools: Option<Value>,
    /// `"auto"`, `"required"`, `"none"` or `{type: "function", function: {name}}`.
    pub tool_choice: Option<Value>,
    /// `"text"`, `"json"` / `"json_object"`, an OpenAI `{"type": ...}` object, or a plain JSON
    /// schema object (see `provider::format`).
    pub response_format: Option<Value>,
    /// Other keys. Each provider translates those it has a counterpart for, sends its own
    /// native ones, and drops or refuses the rest (the model's `unsupported_params`). The keys
    /// `openai`, `openai_compatible`, `anthropic` and `gemini` hold objects merged unchanged
    /// into the body of that provider only (`openai` also reaches OpenAI-compatible hosts).
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl Params {
    /// Fill every unset field of `self` from `defaults` (caller values win).
    pub fn or(mut self, defaults: &Params) -> Params {
        if self.temperature.is_none() {
            self.temperature = defaults.temperature;
        }
        if self.max_tokens.is_none() {
            self.max_tokens = defaults.max_tokens;
        }
        if self.top_p.is_none() {
            self.top_p = defaults.top_p;
        }
        if self.stop.is_empty() {
            self.stop = defaults.stop.clone();
        }
        if self.tools.is_none() {
            self.tools = defaults.tools.clone();
        }
        if self.tool_choice.is_none() {
            self.tool_choice = defaults.tool_choice.clone();
        }
        if self.response_format.is_none() {
            self.response_format = defaults.response_format.clone();
        }
        for (k, v) in &defaults.extra {
            self.extra.entry(k.clone()).or_insert_with(|| v.clone());
        }
        self
    }
}

/// A chat request, provider-neutral. The system prompt is the leading `system` message(s).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub params: Params,
}

impl ChatRequest {
    /// Rough token estimate of the prompt (chars / 4, at least 1), used for TPM admission
    /// before the real usage is known.
    pub fn estimate_prompt_tokens(&self) -> u32 {
        let chars: usize = self.messages.iter().map(|m| m.text_len() + 4).sum();
        ((chars / 4).max(1)) as u32
    }
}

/// A tool call returned by the model (OpenAI shape; arguments as a JSON string).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    /// What the provider needs back with this call on the next turn, keyed by provider (the
    /// layout Gemini's OpenAI-compatible endpoint uses): `{"google": {"thought_signature"}}`
    /// for a Gemini function call, `{"anthropic": {"thinking_blocks": [...]}}` on the first
    /// call of an Anthropic turn that thought before calling. Sent back inside the assistant
    /// message's `tool_calls[i].extra_content`; OpenAI itself never receives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<Value>,
}

/// Token usage as reported by the provider. `prompt_tokens` counts every input token (for
/// Anthropic the cache reads and writes are added to its `input_tokens`), `completion_tokens`
/// every output token including reasoning (for Gemini its thoughts are added to the candidates),
/// and the three detail counts are parts of those totals (0 when the provider did not say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Prompt tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cached_tokens: u32,
    /// Prompt tokens written to the prompt cache (Anthropic `cache_creation_input_tokens`,
    /// OpenAI `cache_write_tokens`).
    #[serde(default)]
    pub cache_creation_tokens: u32,
    /// Completion tokens spent on reasoning / thinking.
    #[serde(default)]
    pub reasoning_tokens: u32,
}

impl Usage {
    /// Usage with only the three totals known (`total` = prompt + completion).
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens.saturating_add(completion_tokens), ..Default::default() }
    }
}

/// A completed chat call.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatResponse {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// The wire model name the provider reports.
    pub model: String,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// Wall time of the successful attempt.
    pub latency: Duration,
    /// Time to first token (streaming) or to response headers (non-streaming).
    pub ttft: Option<Duration>,
    /// The provider's request id header/field, when present.
    pub request_id: Option<String>,
    /// The instance id that served the call.
    pub served_by: String,
    /// Every attempt made for the call, the successful one last.
    pub attempts: Vec<Attempt>,
}

/// One item of a streamed response.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Incremental text (and/or a tool-call fragment, OpenAI delta shape).
    Delta { text: String, tool_call: Option<Value> },
    /// The stream ended normally. Carries whatever the provider reported at the end.
    Done { finish_reason: Option<String>, usage: Option<Usage>, model: Option<String>, request_id: Option<String> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_len_is_the_length_of_text_content_for_every_content_shape() {
        let shapes = [
            json!("héllo wörld"),
            json!([{"type": "text", "text": "ab"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "çd"}]),
            Value::Null,
            json!(42),
            json!({"odd": "shape"}),
        ];
        for content in shapes {
            let m = Message { role: "user".into(), content, ..Default::default() };
            assert_eq!(m.text_len(), m.text_content().len(), "{:?}", m.content);
        }
    }

    #[test]
    fn prompt_estimate_counts_chars_over_four_plus_per_message_overhead() {
        let req = ChatRequest { messages: vec![Message::text("system", "x".repeat(36)), Message::text("user", "y".repeat(396))], ..Default::default() };
        assert_eq!(req.estimate_prompt_tokens(), (36 + 4 + 396 + 4) / 4);
        assert_eq!(ChatRequest::default().estimate_prompt_tokens(), 1);
    }
}
