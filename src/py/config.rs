//! TEMPORARY placeholders until the config loader lands (replaced by the wip-config branch).
use pyo3::prelude::*;
pub fn config_error_to_py(_e: crate::error::ConfigError) -> PyErr { unimplemented!() }
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> { Ok(()) }
