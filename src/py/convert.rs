//! Conversions between Python objects and core types (messages, parameters, JSON values,
//! errors). No behaviour lives here.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, Message, Params};

const MAX_DEPTH: usize = 128;

/// Convert a Python object (dict/list/tuple/str/int/float/bool/None, nested) into JSON.
/// Dict keys must be strings. Raises `TypeError` naming the first value that cannot be
/// converted and where it is.
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json(obj, "", 0)
}

/// Like [`py_to_json`], naming `path` as the location in error messages.
pub fn py_to_json_at(obj: &Bound<'_, PyAny>, path: &str) -> PyResult<Value> {
    to_json(obj, path, 0)
}

fn to_json(obj: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<Value> {
    let at = |p: &str| {
        if p.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{p}`")
        }
    };
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!("value nested more than {MAX_DEPTH} levels deep at {}", at(path))));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: Python's bool is an int subclass.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(PyValueError::new_err(format!("integer out of range at {}", at(path))));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        // NaN/inf have no JSON form; keep them visible as strings so validation names them.
        return Ok(Number::from_f64(x).map(Value::Number).unwrap_or_else(|| Value::String(x.to_string())));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = Map::new();
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => s.to_cow()?.into_owned(),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!("dict keys must be strings; found {} key {} at {}", k.get_type().name()?, k.repr()?, at(path))))
                }
            };
            let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            let value = to_json(&v, &child, depth + 1)?;
            m.insert(key, value);
        }
        return Ok(Value::Object(m));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let mut out = Vec::new();
        for (i, it) in obj.try_iter()?.enumerate() {
            out.push(to_json(&it?, &format!("{path}[{i}]"), depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    Err(PyTypeError::new_err(format!("cannot convert a {} to JSON at {}", obj.get_type().name()?, at(path))))
}

/// A JSON value as a Python object.
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let items = a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// Any serialisable core value (status structs) as Python dicts/lists.
pub fn to_py<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let v = serde_json::to_value(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &v)
}

fn role_of_langchain(t: &str) -> &str {
    match t {
        "human" => "user",
        "ai" => "assistant",
        other => other,
    }
}

fn message_from<'py>(item: &Bound<'py, PyAny>, index: usize) -> PyResult<Message> {
    if let Ok(d) = item.cast::<PyDict>() {
        // Interned keys: a lookup then hashes nothing and allocates nothing (a fresh key
        // string per lookup was most of the cost of converting a request).
        let py = item.py();
        let get = |k: &Bound<'py, PyString>| -> PyResult<Option<Bound<'py, PyAny>>> { Ok(d.get_item(k)?.filter(|v| !v.is_none())) };
        let opt_str = |k: &Bound<'py, PyString>| -> PyResult<Option<String>> {
            get(k)?.map(|v| v.extract().map_err(|_| PyTypeError::new_err(format!("messages[{index}]['{k}'] must be a string")))).transpose()
        };
        let role: String = match d.get_item(intern!(py, "role"))? {
            Some(r) => r.extract().map_err(|_| PyTypeError::new_err(format!("messages[{index}]['role'] must be a string")))?,
            None => return Err(PyValueError::new_err(format!("messages[{index}] has no 'role'"))),
        };
        let content = match get(intern!(py, "content"))? {
            Some(c) => match c.cast::<PyString>() {
                Ok(text) => Value::String(text.to_cow()?.into_owned()),
                Err(_) => py_to_json_at(&c, &format!("messages[{index}]['content']"))?,
            },
            None => Value::Null,
        };
        let tool_calls = get(intern!(py, "tool_calls"))?.map(|v| py_to_json_at(&v, &format!("messages[{index}]['tool_calls']"))).transpose()?;
        return Ok(Message { role, content, name: opt_str(intern!(py, "name"))?, tool_calls, tool_call_id: opt_str(intern!(py, "tool_call_id"))? });
    }
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(Message::text("user", s.to_cow()?));
    }
    // Objects with .role/.content (or LangChain's .type/.content).
    let content =
        item.getattr("content").map_err(|_| PyTypeError::new_err(format!("messages[{index}] must be a dict, a string or an object with .role/.content")))?;
    let role: String = match item.getattr("role") {
        Ok(r) if !r.is_none() => r.extract()?,
        _ => match item.getattr("type") {
            Ok(t) => role_of_langchain(&t.extract::<String>()?).to_string(),
            Err(_) => return Err(PyTypeError::new_err(format!("messages[{index}] has .content but no .role or .type"))),
        },
    };
    Ok(Message { role, content: py_to_json(&content)?, ..Default::default() })
}

/// Messages from a bare prompt string, a list of OpenAI-shape dicts, or message objects.
pub fn messages_from(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Message>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![Message::text("user", s.to_cow()?)]);
    }
    let mut out = Vec::new();
    for (i, item) in obj.try_iter().map_err(|_| PyTypeError::new_err("messages must be a string or a list of messages"))?.enumerate() {
        out.push(message_from(&item?, i)?);
    }
    if out.is_empty() {
        return Err(PyValueError::new_err("messages is empty"));
    }
    Ok(out)
}

/// Generation parameters from keyword arguments; unknown keys pass through to the provider.
pub fn params_from(kw: Option<&Bound<'_, PyDict>>) -> PyResult<Params> {
    let mut p = Params::default();
    let Some(kw) = kw else { return Ok(p) };
    for (k, v) in kw.iter() {
        let k = k.cast::<PyString>().map_err(|_| PyTypeError::new_err("parameter names must be strings"))?;
        set_param(&mut p, &k.to_cow()?, &v)?;
    }
    Ok(p)
}

/// Set one generation parameter `key` (None: left unset); unknown keys pass through to the
/// provider.
pub fn set_param(p: &mut Params, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
    if v.is_none() {
        return Ok(());
    }
    let bad = |what: &str| PyTypeError::new_err(format!("parameter '{key}' must be {what}"));
    match key {
        "temperature" => p.temperature = Some(v.extract().map_err(|_| bad("a number"))?),
        "top_p" => p.top_p = Some(v.extract().map_err(|_| bad("a number"))?),
        "max_tokens" => p.max_tokens = Some(v.extract().map_err(|_| bad("a non-negative integer"))?),
        "stop" => {
            p.stop = match v.extract::<String>() {
                Ok(s) => vec![s],
                Err(_) => v.extract().map_err(|_| bad("a string or a list of strings"))?,
            }
        }
        "tools" => p.tools = Some(py_to_json_at(v, key)?),
        "tool_choice" | "function_calling" => p.tool_choice = Some(py_to_json_at(v, key)?),
        "response_format" => {
            let rf = py_to_json_at(v, key)?;
            if !(rf.is_string() || rf.is_object()) {
                return Err(bad("a string (\"text\", \"json\") or a dict (a JSON schema or an OpenAI response_format)"));
            }
            crate::provider::format::response_format(&rf).map_err(PyValueError::new_err)?;
            p.response_format = Some(rf);
        }
        // Provider-scoped extras: sent unchanged to that provider only.
        "openai" | "openai_compatible" | "anthropic" | "gemini" => {
            let scoped = py_to_json_at(v, key)?;
            if !scoped.is_object() {
                return Err(bad(&format!("a dict of {key} request fields (sent to {key} models only)")));
            }
            p.extra.insert(key.to_string(), scoped);
        }
        _ => {
            p.extra.insert(key.to_string(), py_to_json_at(v, key)?);
        }
    }
    Ok(())
}

/// A request from Python arguments.
pub fn request_from(messages: &Bound<'_, PyAny>, params: Option<&Bound<'_, PyDict>>) -> PyResult<ChatRequest> {
    Ok(ChatRequest { messages: messages_from(messages)?, params: params_from(params)? })
}

/// Seconds as a `Duration`, rejecting negatives and NaN.
/// Longest timeout accepted from Python (about 31 years).
pub const MAX_TIMEOUT_SECS: f64 = 1e9;

pub fn duration_from(name: &str, secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        // Bounded so that `now + timeout` cannot overflow an Instant (which would panic).
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_TIMEOUT_SECS => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) if s.is_finite() && s > 0.0 => Err(PyValueError::new_err(format!("{name} must be at most {MAX_TIMEOUT_SECS:e} seconds, got {s}"))),
        Some(s) => Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, got {s}"))),
    }
}

/// The Python exception for a core error, built from `echelon.errors` with the trace attached.
///
/// If the class cannot be built (a broken install), the error still reaches the caller with
/// its message and kind, never the failure of building it.
pub fn error_to_py(py: Python<'_>, e: Error) -> PyErr {
    match build_error(py, &e) {
        Ok(err) => err,
        Err(build_failure) => {
            log::error!("could not build the Python exception for a {} error: {build_failure}", e.kind);
            pyo3::exceptions::PyRuntimeError::new_err(format!("{}: {}", e.kind, e))
        }
    }
}

/// The `echelon.errors` class of each kind. Exhaustive on purpose: a new kind does not compile
/// until it has a class, and `tests/test_errors_binding.py` checks every name exists.
pub fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited => "RateLimited",
        ErrorKind::ServerError => "ServerError",
        ErrorKind::Overloaded => "Overloaded",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::ConnectionError => "ConnectionError",
        ErrorKind::AuthError => "AuthError",
        ErrorKind::BadRequest => "BadRequest",
        ErrorKind::ContextWindowExceeded => "ContextWindowExceeded",
        ErrorKind::ContentFiltered => "ContentFiltered",
        ErrorKind::StreamInterrupted => "StreamInterrupted",
        ErrorKind::InvalidResponse => "InvalidResponse",
        ErrorKind::PoolExhausted => "PoolExhausted",
        ErrorKind::QueueTimeout => "QueueTimeout",
        ErrorKind::CircuitOpen => "CircuitOpen",
        ErrorKind::AllTargetsFailed => "AllTargetsFailed",
        ErrorKind::Routing => "RoutingError",
        ErrorKind::Config => "ConfigError",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::QuotaExceeded => "QuotaExceeded",
        ErrorKind::ModelNotFound => "ModelNotFound",
        ErrorKind::Internal => "InternalError",
    }
}

/// `echelon.errors`, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();
    MODULE.get_or_try_init(py, || Ok(py.import("echelon.errors")?.unbind())).map(|m| m.bind(py))
}

/// `(kind, class name)` of every error kind, for the binding test.
#[pyfunction]
pub fn error_kinds() -> Vec<(&'static str, &'static str)> {
    ErrorKind::ALL.iter().map(|k| (k.as_str(), class_name(*k))).collect()
}

fn build_error(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let cls = errors_module(py)?.getattr(class_name(e.kind))?;
    let kw = PyDict::new(py);
    kw.set_item("status", e.status)?;
    kw.set_item("retry_after", e.retry_after.map(|d| d.as_secs_f64()))?;
    kw.set_item("instance", e.instance.as_deref())?;
    kw.set_item("request_id", e.request_id.as_deref())?;
    let attempts = e.attempts.iter().map(|a| Py::new(py, super::types::PyAttempt::from(a.clone()))).collect::<PyResult<Vec<_>>>()?;
    kw.set_item("attempts", PyList::new(py, attempts)?)?;
    if let Some(t) = e.timeout {
        kw.set_item("timeout_kind", t.as_str())?;
    }
    if let Some(p) = &e.partial {
        kw.set_item("partial", p)?;
    }
    if e.kind == ErrorKind::AllTargetsFailed {
        let last = e.attempts.iter().rev().find_map(|a| a.error).map(|k| k.as_str());
        kw.set_item("last_kind", last)?;
    }
    let exc = cls.call((e.to_string(),), Some(&kw))?;
    Ok(PyErr::from_value(exc))
}
