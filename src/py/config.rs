//! Python bindings of the configuration loader, plus the Python⇄JSON conversions and the
//! `ConfigError` mapping that the rest of the binding layer reuses.

use std::path::PathBuf;

use pyo3::exceptions::{PyIOError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::config::{self, Config};
use crate::error::{ConfigError, ConfigIssue};

/// Deepest nesting accepted from Python (guards the recursion against cyclic or absurd input).
const MAX_DEPTH: usize = 128;

/// Convert a Python object (dict/list/tuple/str/int/float/bool/None, nested) into JSON.
/// Dict keys must be strings. Raises `TypeError` naming the first value that cannot be
/// converted and where it is.
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json(obj, "", 0)
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
        return Err(PyValueError::new_err(format!(
            "value nested more than {MAX_DEPTH} levels deep at {}",
            at(path)
        )));
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
        return Err(PyValueError::new_err(format!(
            "integer out of range at {}",
            at(path)
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        // NaN/inf have no JSON form; keep them visible as strings so validation names them.
        return Ok(Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(x.to_string())));
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
                    return Err(PyTypeError::new_err(format!(
                        "dict keys must be strings; found {} key {} at {}",
                        k.get_type().name()?,
                        k.repr()?,
                        at(path)
                    )))
                }
            };
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
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
    Err(PyTypeError::new_err(format!(
        "cannot convert a {} to a config value at {}",
        obj.get_type().name()?,
        at(path)
    )))
}

/// Convert JSON into Python objects (dict/list/str/int/float/bool/None).
pub fn json_to_py(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN))
                    .into_any()
                    .unbind()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| json_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}

fn issue_dict<'py>(py: Python<'py>, i: &ConfigIssue) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("file", i.file.as_ref().map(|f| f.display().to_string()))?;
    d.set_item("key", &i.key)?;
    d.set_item("value", &i.value)?;
    d.set_item("message", &i.message)?;
    Ok(d)
}

/// `ConfigError` → `echelon.errors.ConfigError(message, issues=[{file, key, value, message}])`.
/// Falls back to `ValueError` if the Python package cannot be imported.
pub fn config_error_to_py(err: ConfigError) -> PyErr {
    Python::attach(|py| {
        let build = || -> PyResult<PyErr> {
            let cls = py.import("echelon.errors")?.getattr("ConfigError")?;
            let issues = PyList::empty(py);
            for i in &err.issues {
                issues.append(issue_dict(py, i)?)?;
            }
            let kwargs = PyDict::new(py);
            kwargs.set_item("issues", issues)?;
            let exc = cls.call((err.to_string(),), Some(&kwargs))?;
            Ok(PyErr::from_value(exc))
        };
        build().unwrap_or_else(|_| PyValueError::new_err(err.to_string()))
    })
}

/// The resolved config as a Python dict (keys masked), with a `warnings` list added.
fn config_to_py(py: Python<'_>, cfg: &Config) -> PyResult<Py<PyAny>> {
    let mut v = serde_json::to_value(cfg)
        .map_err(|e| PyValueError::new_err(format!("cannot serialize config: {e}")))?;
    let warnings = serde_json::to_value(config::warnings(cfg))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        m.insert("warnings".into(), warnings);
    }
    json_to_py(py, &v)
}

/// Load a config directory (TOML or the original YAML layout) and return the resolved
/// configuration as a dict. Raises `echelon.ConfigError` listing every problem.
#[pyfunction]
fn load_config_dir(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyAny>> {
    let cfg = py
        .detach(|| config::load_dir(&path))
        .map_err(config_error_to_py)?;
    config_to_py(py, &cfg)
}

/// Validate a config given as a dict shaped like the directory and return it resolved.
#[pyfunction]
fn config_from_dict(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let v = py_to_json(obj).map_err(|e| {
        config_error_to_py(ConfigError::one(None, "", None, e.value(py).to_string()))
    })?;
    let cfg = py
        .detach(|| config::from_json(&v))
        .map_err(config_error_to_py)?;
    config_to_py(py, &cfg)
}

/// The `echelon check` rendering of a config directory.
#[pyfunction]
fn check_config(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let cfg = py
        .detach(|| config::load_dir(&path))
        .map_err(config_error_to_py)?;
    Ok(config::render_check(&cfg))
}

/// Load `src` (any layout) and write it as the TOML layout under `dst`; returns the paths
/// written. Existing files are overwritten.
#[pyfunction]
fn convert_yaml_layout(py: Python<'_>, src: PathBuf, dst: PathBuf) -> PyResult<Vec<String>> {
    let cfg = py
        .detach(|| config::load_dir(&src))
        .map_err(config_error_to_py)?;
    let mut written = Vec::new();
    for (rel, text) in config::to_toml_layout(&cfg) {
        let path = dst.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| PyIOError::new_err(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| PyIOError::new_err(format!("{}: {e}", path.display())))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Add the config functions to `echelon._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_config_dir, m)?)?;
    m.add_function(wrap_pyfunction!(config_from_dict, m)?)?;
    m.add_function(wrap_pyfunction!(check_config, m)?)?;
    m.add_function(wrap_pyfunction!(convert_yaml_layout, m)?)?;
    Ok(())
}
