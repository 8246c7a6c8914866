//! The Python binding layer: converts types and errors, nothing else.

use pyo3::prelude::*;

mod mock;

use crate::runtime;

pub mod config;
pub mod convert;
pub mod router;
pub mod types;

/// The extension module `echelon._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Route the core's `log` records into Python's `logging` ("echelon" logger hierarchy).
    let _ = pyo3_log::try_init();
    // One runtime for everything; pyo3-async-runtimes hands futures to it.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime::get());
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<router::PyRouter>()?;
    m.add_class::<router::PyStream>()?;
    m.add_class::<types::PyResponse>()?;
    m.add_class::<types::PyUsage>()?;
    m.add_class::<types::PyAttempt>()?;
    m.add_class::<types::PyChunk>()?;
    config::register(m)?;
    m.add_class::<mock::MockServer>()?;
    Ok(())
}
