//! `_core.MockServer`: the mock provider server for Python tests, the demo and the CLI.
//!
//! The friendly face is `echelon.testing.MockProvider`; this class only converts arguments and
//! results. Scripts cross as Python dicts, converted to JSON by the small helpers below.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use super::convert::{json_to_py, py_to_json_at};
use serde_json::Value;

use crate::mock::{MockConfig, MockServer as Server, Script};
use crate::runtime;
use crate::secret::Secret;

/// A running mock provider (OpenAI, Anthropic and Gemini wire formats) on a loopback port.
/// Start with `MockServer.start(...)`; see `echelon.testing.MockProvider` for the documented API.
#[pyclass(frozen, module = "echelon._core")]
pub struct MockServer {
    inner: Server,
}

fn parse_host(host: &str) -> PyResult<IpAddr> {
    if host == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse::<IpAddr>().map_err(|_| PyValueError::new_err(format!("host: {host:?} is not an IP address (or \"localhost\")")))
}

#[pymethods]
impl MockServer {
    /// Bind `host:port` (port 0 picks a free port), install `scripts` ({model: script}) and
    /// start serving on the shared runtime. Raises ValueError for bad scripts, OSError when the
    /// port cannot be bound.
    #[staticmethod]
    #[pyo3(signature = (host = "127.0.0.1", port = 0, scripts = None, require_key = None))]
    fn start(py: Python<'_>, host: &str, port: u16, scripts: Option<&Bound<'_, PyAny>>, require_key: Option<String>) -> PyResult<MockServer> {
        let addr = SocketAddr::new(parse_host(host)?, port);
        let scripts = match scripts {
            Some(s) if !s.is_none() => py_to_json_at(s, "scripts")?,
            _ => Value::Null,
        };
        let config = MockConfig { require_key: require_key.map(Secret::new), scripts, ..Default::default() };
        let started = py.detach(|| runtime::get().block_on(Server::start(addr, config)));
        match started {
            Ok(inner) => Ok(MockServer { inner }),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(PyValueError::new_err(e.to_string())),
            Err(e) => Err(PyOSError::new_err(format!("mock server could not listen on {addr}: {e}"))),
        }
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.inner.addr().port()
    }

    /// The bound host (IP address).
    #[getter]
    fn host(&self) -> String {
        self.inner.addr().ip().to_string()
    }

    /// `http://IP:PORT`, no trailing slash.
    #[getter]
    fn base_url(&self) -> String {
        self.inner.base_url()
    }

    /// Install or replace the script of `model` (a dict, or a fault name string).
    fn script(&self, model: &str, script: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = py_to_json_at(script, model)?;
        let s = Script::from_json(&v).map_err(|e| PyValueError::new_err(format!("{model}: {e}")))?;
        self.inner.set_script(model, s);
        Ok(())
    }

    /// Install several scripts at once from `{model: script}` (all or nothing).
    fn scripts(&self, scripts: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = py_to_json_at(scripts, "scripts")?;
        self.inner.set_scripts(&v).map_err(PyValueError::new_err)
    }

    /// The counters as a dict (totals at the top level, per model under "models").
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.counters())
    }

    /// The request log: `[[unix_seconds, model], ...]`, oldest first.
    fn request_log<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.request_log())
    }

    /// Zero the counters and restart the scripts' steps; with `scripts=True` also drop every
    /// script.
    #[pyo3(signature = (scripts = false))]
    fn reset(&self, scripts: bool) {
        self.inner.reset();
        if scripts {
            self.inner.clear_scripts();
        }
    }

    /// Stop serving and free the port (waits briefly for in-flight requests). Idempotent.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| runtime::get().block_on(self.inner.shutdown()));
    }

    fn __repr__(&self) -> String {
        format!("MockServer({})", self.inner.base_url())
    }
}
