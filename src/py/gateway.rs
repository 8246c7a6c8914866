//! `_core.Gateway` and `Router.serve`/`Router.metrics`: converts arguments and errors for the
//! gateway of `crate::gateway`; the serving itself never touches Python.

use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use super::completer::{Completer, Outcome};
use super::convert::duration_from;
use super::router::PyRouter;
use crate::error::ConfigError;
use crate::gateway::{Gateway, ServeError, ServeOptions};
use crate::runtime;

fn serve_error(e: ServeError) -> PyErr {
    match e {
        ServeError::BadHost(_) => PyValueError::new_err(e.to_string()),
        ServeError::Refused(m) => super::config::config_error_to_py(ConfigError::one(None, "gateway", None, m)),
        ServeError::Bind(..) => PyOSError::new_err(e.to_string()),
    }
}

/// A running gateway (see `echelon.Gateway` for the documented Python face).
#[pyclass(frozen, name = "Gateway", module = "echelon._core")]
pub struct PyGateway {
    inner: Arc<Gateway>,
}

#[pymethods]
impl PyGateway {
    /// The bound host (IP address).
    #[getter]
    fn host(&self) -> String {
        self.inner.addr().ip().to_string()
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.inner.addr().port()
    }

    /// Whether a drain has begun.
    #[getter]
    fn draining(&self) -> bool {
        self.inner.is_draining()
    }

    /// Begin draining (`grace` seconds, default the configured one) and return once the port
    /// is closed; in-flight requests finish in the background.
    #[pyo3(signature = (grace=None))]
    fn close(&self, py: Python<'_>, grace: Option<f64>) -> PyResult<()> {
        let grace = match grace {
            Some(0.0) => Some(std::time::Duration::ZERO),
            g => duration_from("grace", g)?,
        };
        self.inner.drain(grace);
        let gw = self.inner.clone();
        py.detach(|| runtime::get().block_on(async move { gw.unbound().await }));
        Ok(())
    }

    /// Resolves (through `completer`) once the gateway has stopped. Returns `(future, id)`.
    fn wait_via(&self, py: Python<'_>, completer: &Bound<'_, Completer>) -> PyResult<(Py<PyAny>, u64)> {
        let closed = self.inner.closed_owned();
        completer.get().spawn(py, async move {
            closed.await;
            Outcome::convert(|py| Ok(py.None()))
        })
    }

    /// Reload the configuration from its directory now. False when the router was not loaded
    /// from a directory; raises `ConfigError` (and keeps the old configuration) when it does
    /// not load.
    fn reload(&self, py: Python<'_>) -> PyResult<bool> {
        let gw = self.inner.clone();
        py.detach(|| gw.reload()).map_err(super::config::config_error_to_py)
    }

    fn __repr__(&self) -> String {
        format!("Gateway(http://{})", self.inner.addr())
    }
}

/// `Router.serve`: start a gateway serving `router` (binds before returning).
pub fn serve(py: Python<'_>, router: &PyRouter, opts: ServeOptions) -> PyResult<PyGateway> {
    let router = router.inner.clone();
    let gw = py.detach(|| runtime::get().block_on(Gateway::start(router, opts))).map_err(serve_error)?;
    Ok(PyGateway { inner: Arc::new(gw) })
}

/// Register the gateway class.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyGateway>()
}
