//! Python classes for results: `Response`, `Usage`, `Attempt`, `StreamChunk`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::convert::{json_to_py, to_py};
use crate::error::Attempt;
use crate::types::{ChatResponse, ToolCall, Usage};

/// One entry of a call's attempt trace.
#[pyclass(frozen, name = "Attempt", module = "echelon._core")]
pub struct PyAttempt {
    inner: Attempt,
}

impl From<Attempt> for PyAttempt {
    fn from(inner: Attempt) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyAttempt {
    /// Group reference or pool name tried.
    #[getter]
    fn target(&self) -> &str {
        &self.inner.target
    }
    /// Instance id (empty when no instance could be selected).
    #[getter]
    fn instance(&self) -> &str {
        &self.inner.instance
    }
    #[getter]
    fn model(&self) -> &str {
        &self.inner.model
    }
    /// `"primary"`, `"retry"`, `"fallback"` or `"hedge"`.
    #[getter]
    fn role(&self) -> &'static str {
        match self.inner.role {
            crate::error::AttemptRole::Primary => "primary",
            crate::error::AttemptRole::Retry => "retry",
            crate::error::AttemptRole::Fallback => "fallback",
            crate::error::AttemptRole::Hedge => "hedge",
        }
    }
    /// Error kind, or None for the successful attempt.
    #[getter]
    fn error(&self) -> Option<&'static str> {
        self.inner.error.map(|k| k.as_str())
    }
    #[getter]
    fn message(&self) -> Option<&str> {
        self.inner.message.as_deref()
    }
    #[getter]
    fn ok(&self) -> bool {
        self.inner.error.is_none()
    }
    /// Seconds.
    #[getter]
    fn latency(&self) -> f64 {
        self.inner.latency.as_secs_f64()
    }
    /// Seconds from the start of the call.
    #[getter]
    fn started_after(&self) -> f64 {
        self.inner.started_after.as_secs_f64()
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    fn __repr__(&self) -> String {
        format!(
            "Attempt(target={:?}, instance={:?}, role={}, error={}, latency={:.4})",
            self.inner.target,
            self.inner.instance,
            self.role(),
            self.error().unwrap_or("None"),
            self.latency()
        )
    }
}

/// Token usage. `prompt_tokens` counts every input token and `completion_tokens` every output
/// token (reasoning included); `cached_tokens`, `cache_creation_tokens` and `reasoning_tokens`
/// are parts of those (0 when the provider did not report them).
#[pyclass(frozen, name = "Usage", module = "echelon._core")]
pub struct PyUsage {
    #[pyo3(get)]
    prompt_tokens: u32,
    #[pyo3(get)]
    completion_tokens: u32,
    #[pyo3(get)]
    total_tokens: u32,
    #[pyo3(get)]
    cached_tokens: u32,
    #[pyo3(get)]
    cache_creation_tokens: u32,
    #[pyo3(get)]
    reasoning_tokens: u32,
}

impl From<Usage> for PyUsage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_tokens: u.cached_tokens,
            cache_creation_tokens: u.cache_creation_tokens,
            reasoning_tokens: u.reasoning_tokens,
        }
    }
}

#[pymethods]
impl PyUsage {
    fn __repr__(&self) -> String {
        format!(
            "Usage(prompt_tokens={}, completion_tokens={}, total_tokens={}, cached_tokens={}, cache_creation_tokens={}, reasoning_tokens={})",
            self.prompt_tokens, self.completion_tokens, self.total_tokens, self.cached_tokens, self.cache_creation_tokens, self.reasoning_tokens
        )
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("prompt_tokens", self.prompt_tokens)?;
        d.set_item("completion_tokens", self.completion_tokens)?;
        d.set_item("total_tokens", self.total_tokens)?;
        d.set_item("cached_tokens", self.cached_tokens)?;
        d.set_item("cache_creation_tokens", self.cache_creation_tokens)?;
        d.set_item("reasoning_tokens", self.reasoning_tokens)?;
        Ok(d)
    }
}

fn tool_calls_py<'py>(py: Python<'py>, calls: &[ToolCall]) -> PyResult<Bound<'py, PyList>> {
    let items = calls
        .iter()
        .map(|c| {
            let d = PyDict::new(py);
            d.set_item("id", &c.id)?;
            d.set_item("type", "function")?;
            let f = PyDict::new(py);
            f.set_item("name", &c.name)?;
            f.set_item("arguments", &c.arguments)?;
            d.set_item("function", f)?;
            // What the provider needs back with this call next turn (thought signatures,
            // thinking blocks): echo the dict in the assistant message as it is.
            if let Some(x) = &c.extra_content {
                d.set_item("extra_content", json_to_py(py, x)?)?;
            }
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// A completed chat call.
#[pyclass(frozen, name = "Response", module = "echelon._core")]
pub struct PyResponse {
    pub(crate) inner: ChatResponse,
}

impl From<ChatResponse> for PyResponse {
    fn from(inner: ChatResponse) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyResponse {
    #[getter]
    fn content(&self) -> &str {
        &self.inner.content
    }
    /// OpenAI-shape tool calls: `[{"id", "type": "function", "function": {"name", "arguments"}}]`,
    /// plus `"extra_content"` when the provider needs something back with the call on the
    /// next turn (Gemini thought signatures, Anthropic thinking blocks). Put the list in the
    /// assistant message unchanged.
    #[getter]
    fn tool_calls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        tool_calls_py(py, &self.inner.tool_calls)
    }
    /// The wire model name the provider reported.
    #[getter]
    fn model(&self) -> &str {
        &self.inner.model
    }
    #[getter]
    fn finish_reason(&self) -> Option<&str> {
        self.inner.finish_reason.as_deref()
    }
    #[getter]
    fn usage(&self) -> PyUsage {
        self.inner.usage.into()
    }
    /// Seconds, of the successful attempt.
    #[getter]
    fn latency(&self) -> f64 {
        self.inner.latency.as_secs_f64()
    }
    /// Seconds to first token (streaming) or to response headers.
    #[getter]
    fn ttft(&self) -> Option<f64> {
        self.inner.ttft.map(|d| d.as_secs_f64())
    }
    #[getter]
    fn request_id(&self) -> Option<&str> {
        self.inner.request_id.as_deref()
    }
    /// Id of the instance that served the call.
    #[getter]
    fn served_by(&self) -> &str {
        &self.inner.served_by
    }
    /// The attempt trace, the successful attempt last.
    #[getter]
    fn attempts(&self) -> Vec<PyAttempt> {
        self.inner.attempts.iter().cloned().map(PyAttempt::from).collect()
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner)
    }
    fn __str__(&self) -> &str {
        &self.inner.content
    }
    fn __repr__(&self) -> String {
        let mut preview: String = self.inner.content.chars().take(40).collect();
        if self.inner.content.chars().count() > 40 {
            preview.push('…');
        }
        format!(
            "Response(content={:?}, model={:?}, served_by={:?}, attempts={}, latency={:.4})",
            preview,
            self.inner.model,
            self.inner.served_by,
            self.inner.attempts.len(),
            self.latency()
        )
    }
}

/// One item of a stream: a text delta, or the final chunk carrying the whole `Response`.
#[pyclass(frozen, name = "StreamChunk", module = "echelon._core")]
pub struct PyChunk {
    #[pyo3(get)]
    text: String,
    tool_call: Option<serde_json::Value>,
    response: Option<Py<PyResponse>>,
}

impl PyChunk {
    pub fn delta(text: String, tool_call: Option<serde_json::Value>) -> Self {
        Self { text, tool_call, response: None }
    }
    pub fn final_(response: Py<PyResponse>) -> Self {
        Self { text: String::new(), tool_call: None, response: Some(response) }
    }
}

#[pymethods]
impl PyChunk {
    /// True for the last chunk (which carries `response`, usage and the trace).
    #[getter]
    fn is_final(&self) -> bool {
        self.response.is_some()
    }
    /// A tool-call fragment (OpenAI delta shape), if this delta carries one.
    #[getter]
    fn tool_call<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.tool_call.as_ref().map(|v| json_to_py(py, v)).transpose()
    }
    /// The complete response, on the final chunk.
    #[getter]
    fn response(&self, py: Python<'_>) -> Option<Py<PyResponse>> {
        self.response.as_ref().map(|r| r.clone_ref(py))
    }
    #[getter]
    fn usage(&self) -> Option<PyUsage> {
        self.response.as_ref().map(|r| r.get().inner.usage.into())
    }
    fn __repr__(&self) -> String {
        if self.response.is_some() {
            "StreamChunk(final)".to_string()
        } else {
            format!("StreamChunk(text={:?})", self.text)
        }
    }
}
