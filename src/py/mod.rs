//! The Python binding layer: converts types and errors, nothing else.

use pyo3::prelude::*;

mod mock;

use crate::runtime;

pub mod completer;
pub mod config;
pub mod convert;
pub mod events;
pub mod gateway;
pub mod logs;
pub mod router;
pub mod types;

/// Worker threads of the engine's tokio runtime (set with `ECHELON_WORKER_THREADS`).
#[pyfunction]
fn runtime_workers() -> usize {
    runtime::workers().unwrap_or(0)
}

/// Testing only: a call that panics inside the engine, routed as `label`. Its future must
/// fail with `InternalError` naming `label`, never stay pending.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, completer: &Bound<'_, completer::Completer>, label: String) -> PyResult<(Py<PyAny>, u64)> {
    completer.get().spawn(py, async move {
        let res: Result<crate::types::ChatResponse, crate::error::Error> =
            crate::engine::router::guard_panics(&label, async { panic!("injected by _panic_for_tests") }).await;
        completer::Outcome::Chat(res)
    })
}

/// The extension module `echelon._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The core's `log` records go to Python's `logging` (loggers `_core.*`, `echelon.events`).
    logs::init(m.py())?;
    m.add_function(wrap_pyfunction!(logs::flush_logs, m)?)?;
    m.add_function(wrap_pyfunction!(convert::error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(logs::refresh_log_levels, m)?)?;
    // One runtime for everything, started here so that a bad ECHELON_WORKER_THREADS fails
    // the import with a ConfigError naming it. Results come back through `completer`.
    runtime::try_get().map_err(config::config_error_to_py)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(runtime_workers, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_class::<router::PyRouter>()?;
    m.add_class::<completer::Completer>()?;
    m.add_class::<router::PyStream>()?;
    m.add_class::<types::PyResponse>()?;
    m.add_class::<types::PyUsage>()?;
    m.add_class::<types::PyAttempt>()?;
    m.add_class::<types::PyChunk>()?;
    config::register(m)?;
    events::register(m)?;
    gateway::register(m)?;
    m.add_class::<mock::MockServer>()?;
    Ok(())
}
