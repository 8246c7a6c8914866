//! Events and wrappers for Python: module functions over a `_core.Router` (kept out of the
//! router's `#[pymethods]` block so this file stands alone) and `_core.EventStream`, a
//! subscription that hands events to Python a batch at a time (one crossing and one asyncio
//! wakeup per batch, never one per event, never on the request path).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyList;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::completer::{Completer, Outcome};
use super::convert::{error_to_py, to_py};
use super::router::PyRouter;
use crate::error::Error;
use crate::observe::events::{DropCounter, Subscription};

/// A subscription to a router's events (see `echelon.Router.events`).
#[pyclass(frozen, name = "EventStream", module = "echelon._core")]
pub struct PyEventStream {
    sub: Arc<AsyncMutex<Option<Subscription>>>,
    dropped: DropCounter,
    stop: CancellationToken,
}

#[pymethods]
impl PyEventStream {
    /// Wait for at least one event, then deliver up to `max` as a list of dicts (each with
    /// `type` and `timestamp`) through `completer`. An empty list means the subscription is
    /// closed. Returns `(future, id)` like `Router.submit_chat`.
    #[pyo3(signature = (completer, max=256))]
    fn next_batch_via(&self, py: Python<'_>, completer: &Bound<'_, Completer>, max: usize) -> PyResult<(Py<PyAny>, u64)> {
        let sub = self.sub.clone();
        let stop = self.stop.clone();
        completer.get().spawn(py, async move {
            let mut guard = sub.lock().await;
            let batch = match guard.as_mut() {
                None => Vec::new(),
                Some(s) => tokio::select! {
                    b = s.recv_batch(max) => b,
                    _ = stop.cancelled() => Vec::new(),
                },
            };
            if stop.is_cancelled() {
                *guard = None;
            }
            Outcome::convert(move |py| {
                let items = batch.iter().map(|e| to_py(py, e.as_ref())).collect::<PyResult<Vec<_>>>()?;
                Ok(PyList::new(py, items)?.into_any().unbind())
            })
        })
    }

    /// Events this subscription lost because its buffer was full.
    #[getter]
    fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Unsubscribe (idempotent); a pending `next_batch` returns an empty list.
    fn close(&self) {
        self.stop.cancel();
        if let Ok(mut g) = self.sub.try_lock() {
            *g = None;
        }
    }
}

/// Subscribe to `router`'s events with a buffer of `capacity` events.
#[pyfunction]
#[pyo3(signature = (router, capacity=crate::observe::events::DEFAULT_CAPACITY))]
fn events_subscribe(router: &PyRouter, capacity: usize) -> PyEventStream {
    let sub = router.inner.events().subscribe(capacity);
    PyEventStream { dropped: sub.drop_counter(), sub: Arc::new(AsyncMutex::new(Some(sub))), stop: CancellationToken::new() }
}

/// `{"subscribers": n, "dropped": n}` of `router`'s event bus.
#[pyfunction]
fn events_status<'py>(py: Python<'py>, router: &PyRouter) -> PyResult<Bound<'py, PyAny>> {
    let bus = router.inner.events();
    to_py(py, &serde_json::json!({"subscribers": bus.subscribers(), "dropped": bus.dropped()}))
}

/// The resolved configuration of wrapper `name` (a dict); `RoutingError` with a did-you-mean
/// hint when there is none.
#[pyfunction]
fn wrapper_config<'py>(py: Python<'py>, router: &PyRouter, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let engine = router.inner.engine();
    match engine.config.wrappers.get(name) {
        Some(w) => to_py(py, w),
        None => {
            let known: Vec<&str> = engine.config.wrappers.keys().map(String::as_str).collect();
            let hint = known
                .iter()
                .map(|k| (strsim::jaro_winkler(k, name), *k))
                .filter(|(s, _)| *s > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!(" (did you mean '{k}'?)"))
                .unwrap_or_default();
            Err(error_to_py(py, Error::routing(format!("unknown wrapper '{name}'{hint}; known: {}", known.join(", ")))))
        }
    }
}

/// Names of `router`'s wrappers.
#[pyfunction]
fn wrapper_names(router: &PyRouter) -> Vec<String> {
    router.inner.engine().config.wrappers.keys().cloned().collect()
}

/// Register the classes and functions of this file.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEventStream>()?;
    m.add_function(wrap_pyfunction!(events_subscribe, m)?)?;
    m.add_function(wrap_pyfunction!(events_status, m)?)?;
    m.add_function(wrap_pyfunction!(wrapper_config, m)?)?;
    m.add_function(wrap_pyfunction!(wrapper_names, m)?)?;
    Ok(())
}
