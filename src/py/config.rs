//! Python bindings of the configuration loader, plus the Python⇄JSON conversions and the
//! `ConfigError` mapping that the rest of the binding layer reuses.

use std::path::PathBuf;

use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use crate::config::{self, Config};
use crate::error::{ConfigError, ConfigIssue};

/// Deepest nesting accepted from Python (guards the recursion against cyclic or absurd input).
pub use super::convert::{json_to_py, py_to_json};

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
    let mut v = serde_json::to_value(cfg).map_err(|e| PyValueError::new_err(format!("cannot serialize config: {e}")))?;
    let warnings = serde_json::to_value(config::warnings(cfg)).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        m.insert("warnings".into(), warnings);
    }
    json_to_py(py, &v).map(Bound::unbind)
}

/// Load a config directory (TOML or the original YAML layout) and return the resolved
/// configuration as a dict. Raises `echelon.ConfigError` listing every problem.
#[pyfunction]
fn load_config_dir(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyAny>> {
    let cfg = py.detach(|| config::load_dir(&path)).map_err(config_error_to_py)?;
    config_to_py(py, &cfg)
}

/// Validate a config given as a dict shaped like the directory and return it resolved.
#[pyfunction]
fn config_from_dict(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let v = py_to_json(obj).map_err(|e| config_error_to_py(ConfigError::one(None, "", None, e.value(py).to_string())))?;
    let cfg = py.detach(|| config::from_json(&v)).map_err(config_error_to_py)?;
    config_to_py(py, &cfg)
}

/// The `echelon check` rendering of a config directory.
#[pyfunction]
fn check_config(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let cfg = py.detach(|| config::load_dir(&path)).map_err(config_error_to_py)?;
    Ok(config::render_check(&cfg))
}

/// Load `src` (any layout) and write it as the TOML layout under `dst`; returns the paths
/// written and what the user must still define (see [`config::convert_todo`]). Existing
/// files are overwritten.
#[pyfunction]
fn convert_yaml_layout(py: Python<'_>, src: PathBuf, dst: PathBuf) -> PyResult<(Vec<String>, Vec<String>)> {
    let cfg = py.detach(|| config::load_dir(&src)).map_err(config_error_to_py)?;
    let mut written = Vec::new();
    for (rel, text) in config::to_toml_layout(&cfg) {
        let path = dst.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PyIOError::new_err(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| PyIOError::new_err(format!("{}: {e}", path.display())))?;
        written.push(path.display().to_string());
    }
    Ok((written, config::convert_todo(&cfg)))
}

/// Add the config functions to `echelon._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_config_dir, m)?)?;
    m.add_function(wrap_pyfunction!(config_from_dict, m)?)?;
    m.add_function(wrap_pyfunction!(check_config, m)?)?;
    m.add_function(wrap_pyfunction!(convert_yaml_layout, m)?)?;
    Ok(())
}
