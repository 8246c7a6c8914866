//! `_core.Router` and `_core.Stream`: the async entry points. Each call converts its arguments
//! once, crosses into the tokio runtime once, and converts the result once.

use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use tokio::sync::Mutex as AsyncMutex;

use super::completer::{Completer, Outcome};
use super::convert::{duration_from, error_to_py, messages_from, request_from, set_param, to_py};
use super::types::PyResponse;
use crate::config::Config;
use crate::engine::chain::stream::{ChatStream, StreamChunk};
use crate::engine::chain::walk::Walked;
use crate::engine::router::{CallOptions, Route, Router};
use crate::error::Error;
use crate::runtime;
use crate::types::ChatRequest;

/// The route named by the arguments, by precedence: an explicit `route` string, then
/// `pool`, `group`, `model`, then the same keys (or a route string) in `metadata`, where
/// `wrapper`/`wrapperName` take precedence over the others. (`wrapper=` of the Python API
/// arrives here as the route string `wrapper:<name>`.)
pub fn route_from(
    route: Option<&str>,
    pool: Option<String>,
    group: Option<String>,
    model: Option<String>,
    metadata: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Route>> {
    let r = if let Some(s) = route {
        Some(Route::parse(s))
    } else if let Some(p) = pool {
        Some(Ok(Route::Pool(p)))
    } else if let Some(g) = group {
        Some(Ok(Route::Group(g)))
    } else if let Some(m) = model {
        Some(Ok(Route::Model(m)))
    } else if let Some(md) = metadata.filter(|m| !m.is_none()) {
        if let Ok(s) = md.extract::<String>() {
            Some(Route::parse(&s))
        } else if let Ok(d) = md.cast::<PyDict>() {
            let get = |k: &str| -> PyResult<Option<String>> {
                match d.get_item(k)? {
                    Some(v) if !v.is_none() => Ok(Some(v.extract()?)),
                    _ => Ok(None),
                }
            };
            if let Some(w) = get("wrapper")?.or(get("wrapperName")?) {
                Some(Ok(Route::Wrapper(w)))
            } else if let Some(s) = get("route")? {
                Some(Route::parse(&s))
            } else if let Some(p) = get("pool")?.or(get("poolName")?) {
                Some(Ok(Route::Pool(p)))
            } else if let Some(g) = get("group")?.or(get("groupName")?) {
                Some(Ok(Route::Group(g)))
            } else if let Some(m) = get("model")? {
                match get("provider")? {
                    Some(p) => Some(Ok(Route::Model(format!("{p}:{m}")))),
                    None => Some(Ok(Route::Model(m))),
                }
            } else {
                None
            }
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err("metadata must be a dict or a route string"));
        }
    } else {
        None
    };
    match r {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err(e)) => Err(Python::attach(|py| error_to_py(py, e))),
    }
}

/// One `Router.batch` request dict: routing keys are read, every other key is a generation
/// parameter. One read-only pass, so the caller's dict is neither copied nor changed.
fn batch_request(item: &Bound<'_, PyAny>) -> PyResult<(Option<Route>, ChatRequest, CallOptions)> {
    let d = item.cast::<PyDict>().map_err(|_| PyTypeError::new_err("each batch request must be a dict"))?;
    let mut messages = None;
    let (mut route, mut wrapper, mut pool, mut group, mut model, mut metadata) = (None, None, None, None, None, None);
    let (mut fallback_groups, mut timeout, mut max_instance_attempts) = (None, None, None);
    let mut params = crate::types::Params::default();
    for (k, v) in d.iter() {
        let k = k.cast::<PyString>().map_err(|_| PyTypeError::new_err("batch request keys must be strings"))?;
        let key = k.to_cow()?;
        if v.is_none() {
            continue;
        }
        let text = || v.extract::<String>().map_err(|_| PyTypeError::new_err(format!("batch request '{key}' must be a string")));
        match &*key {
            "messages" => messages = Some(v),
            "route" => route = Some(text()?),
            "wrapper" => wrapper = Some(text()?),
            "pool" => pool = Some(text()?),
            "group" => group = Some(text()?),
            "model" => model = Some(text()?),
            "metadata" => metadata = Some(v),
            "fallback_groups" => {
                fallback_groups = Some(v.extract().map_err(|_| PyTypeError::new_err("batch request 'fallback_groups' must be a list of strings"))?)
            }
            "timeout" => timeout = Some(v.extract().map_err(|_| PyTypeError::new_err("batch request 'timeout' must be a number of seconds"))?),
            "max_instance_attempts" => {
                max_instance_attempts =
                    Some(v.extract().map_err(|_| PyTypeError::new_err("batch request 'max_instance_attempts' must be a non-negative integer"))?)
            }
            _ => set_param(&mut params, &key, &v)?,
        }
    }
    let messages = messages.ok_or_else(|| PyValueError::new_err("batch request has no 'messages'"))?;
    let req = ChatRequest { messages: messages_from(&messages)?, params };
    let route = route_from(wrapper.map(|w| format!("wrapper:{w}")).or(route).as_deref(), pool, group, model, metadata.as_ref())?;
    Ok((route, req, options(timeout, fallback_groups, max_instance_attempts)?))
}

fn options(timeout: Option<f64>, fallback_groups: Option<Vec<String>>, max_instance_attempts: Option<u32>) -> PyResult<CallOptions> {
    Ok(CallOptions { timeout: duration_from("timeout", timeout)?, fallback_groups, max_instance_attempts })
}

fn err_py(e: Error) -> PyErr {
    Python::attach(|py| error_to_py(py, e))
}

/// The routing engine (see `echelon.Router` for the documented Python face).
#[pyclass(frozen, name = "Router", module = "echelon._core")]
pub struct PyRouter {
    pub(crate) inner: Arc<Router>,
}

impl PyRouter {
    pub fn from_config(cfg: Config) -> Self {
        let rt = runtime::get();
        Self { inner: Arc::new(Router::new(cfg, rt.handle().clone())) }
    }
}

#[pymethods]
impl PyRouter {
    /// Build from a config directory (TOML layout or the original YAML layout).
    #[staticmethod]
    fn from_dir(py: Python<'_>, path: &str) -> PyResult<Self> {
        // Logging is usually configured after `import echelon` and before a router is built.
        super::logs::refresh_log_levels(py)?;
        let cfg = py.detach(|| crate::config::load_dir(std::path::Path::new(path))).map_err(super::config::config_error_to_py)?;
        Ok(Self::from_config(cfg))
    }

    /// Build from a dict shaped like the config directory.
    #[staticmethod]
    fn from_dict(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        super::logs::refresh_log_levels(obj.py())?;
        let v = super::convert::py_to_json(obj)?;
        let cfg = crate::config::from_json(&v).map_err(super::config::config_error_to_py)?;
        Ok(Self::from_config(cfg))
    }

    /// Swap in a new configuration (a directory path or a dict). In-flight calls finish on the
    /// old one; surviving instances keep their state.
    fn reload(&self, py: Python<'_>, source: &Bound<'_, PyAny>) -> PyResult<()> {
        let cfg = if let Ok(path) = source.extract::<String>() {
            py.detach(|| crate::config::load_dir(std::path::Path::new(&path)))
        } else {
            crate::config::from_json(&super::convert::py_to_json(source)?)
        }
        .map_err(super::config::config_error_to_py)?;
        self.inner.reload(cfg);
        Ok(())
    }

    /// Route one chat request; the result is delivered through `completer` (batched loop
    /// wake-ups, see `completer.rs`). Returns `(future, id)`; call `completer.cancel(id)` if
    /// the future is cancelled.
    #[pyo3(signature = (completer, messages, route=None, pool=None, group=None, model=None, metadata=None, fallback_groups=None, timeout=None, max_instance_attempts=None, params=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit_chat(
        &self,
        py: Python<'_>,
        completer: &Bound<'_, Completer>,
        messages: &Bound<'_, PyAny>,
        route: Option<&str>,
        pool: Option<String>,
        group: Option<String>,
        model: Option<String>,
        metadata: Option<&Bound<'_, PyAny>>,
        fallback_groups: Option<Vec<String>>,
        timeout: Option<f64>,
        max_instance_attempts: Option<u32>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(Py<PyAny>, u64)> {
        let req = request_from(messages, params)?;
        let route = route_from(route, pool, group, model, metadata)?;
        let opts = options(timeout, fallback_groups, max_instance_attempts)?;
        let router = self.inner.clone();
        completer.get().spawn(py, async move {
            Outcome::Chat(match router.run(route.as_ref(), &req, &opts, false).await {
                Ok(Walked::Chat(r)) => Ok(r),
                Ok(Walked::Stream(_)) => Err(Error::new(crate::error::ErrorKind::Routing, "internal: stream result for a chat call")),
                Err(e) => Err(e),
            })
        })
    }

    /// Open a stream (lazily: routing happens on the first `__anext__`).
    #[pyo3(signature = (messages, route=None, pool=None, group=None, model=None, metadata=None, fallback_groups=None, timeout=None, max_instance_attempts=None, params=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        messages: &Bound<'_, PyAny>,
        route: Option<&str>,
        pool: Option<String>,
        group: Option<String>,
        model: Option<String>,
        metadata: Option<&Bound<'_, PyAny>>,
        fallback_groups: Option<Vec<String>>,
        timeout: Option<f64>,
        max_instance_attempts: Option<u32>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyStream> {
        let req = request_from(messages, params)?;
        let route = route_from(route, pool, group, model, metadata)?;
        let opts = options(timeout, fallback_groups, max_instance_attempts)?;
        let label: Arc<str> = route.as_ref().map_or_else(|| "the default route".into(), |r| r.to_string().into());
        Ok(PyStream {
            state: Arc::new(AsyncMutex::new(StreamState::Pending { router: self.inner.clone(), route, req, opts })),
            label,
            closed: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Run many requests with one crossing; the list of results (in order, each a `Response`
    /// or an exception instance, never raised) is delivered through `completer`. Returns
    /// `(future, id)` like `submit_chat`.
    #[pyo3(signature = (completer, requests, concurrency=64))]
    fn submit_batch(&self, py: Python<'_>, completer: &Bound<'_, Completer>, requests: &Bound<'_, PyAny>, concurrency: usize) -> PyResult<(Py<PyAny>, u64)> {
        type Prepared = Result<(Option<Route>, ChatRequest, CallOptions), PyErr>;
        // Sized up front: a batch is often 10,000 requests of a few hundred bytes each, and
        // growing by doubling copies megabytes into freshly faulted pages.
        let mut prepared: Vec<Prepared> = Vec::with_capacity(requests.len().unwrap_or(0));
        for item in requests.try_iter()? {
            let item = item?;
            prepared.push(batch_request(&item));
        }
        let router = self.inner.clone();
        let concurrency = concurrency.max(1);
        completer.get().spawn(py, async move {
            let mut results: Vec<Result<Result<crate::types::ChatResponse, Error>, PyErr>> = Vec::with_capacity(prepared.len());
            let mut calls = futures_util::stream::iter(prepared)
                .map(|p| {
                    let router = router.clone();
                    async move {
                        match p {
                            Err(e) => Err(e),
                            Ok((route, req, opts)) => Ok(match router.run(route.as_ref(), &req, &opts, false).await {
                                Ok(Walked::Chat(r)) => Ok(r),
                                Ok(Walked::Stream(_)) => Err(Error::new(crate::error::ErrorKind::Routing, "internal: stream in batch")),
                                Err(e) => Err(e),
                            }),
                        }
                    }
                })
                .buffered(concurrency);
            while let Some(r) = calls.next().await {
                results.push(r);
            }
            drop(calls);
            Outcome::convert(move |py| {
                let items = results
                    .into_iter()
                    .map(|r| -> PyResult<Py<PyAny>> {
                        Ok(match r {
                            Ok(Ok(resp)) => Py::new(py, PyResponse::from(resp))?.into_any(),
                            Ok(Err(e)) => error_to_py(py, e).into_value(py).into_any(),
                            Err(pe) => pe.into_value(py).into_any(),
                        })
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(PyList::new(py, items)?.into_any().unbind())
            })
        })
    }

    /// Status of every pool and group (plain dicts).
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.status())
    }

    /// Status of one pool.
    fn pool_status<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let e = self.inner.engine();
        let p = e.pools.get(name).ok_or_else(|| err_py(Error::routing(format!("unknown pool '{name}'"))))?;
        to_py(py, &p.status())
    }

    /// Breaker status of a group's instances.
    fn breaker_status<'py>(&self, py: Python<'py>, group: &str) -> PyResult<Bound<'py, PyAny>> {
        let e = self.inner.engine();
        let g = e.groups.get(group).ok_or_else(|| err_py(Error::routing(format!("unknown group '{group}'"))))?;
        to_py(py, &g.breaker_status())
    }

    /// Reset a group's breakers (all, or one instance). Returns how many were reset.
    #[pyo3(signature = (group, instance=None))]
    fn reset_breakers(&self, group: &str, instance: Option<&str>) -> PyResult<usize> {
        let e = self.inner.engine();
        let g = e.groups.get(group).ok_or_else(|| err_py(Error::routing(format!("unknown group '{group}'"))))?;
        Ok(g.reset_breakers(instance))
    }

    /// The group's recent calls (target, success, error, attempts, fell_back, timestamp).
    #[pyo3(signature = (group, limit=10))]
    fn fallback_history<'py>(&self, py: Python<'py>, group: &str, limit: usize) -> PyResult<Bound<'py, PyAny>> {
        let e = self.inner.engine();
        let g = e.groups.get(group).ok_or_else(|| err_py(Error::routing(format!("unknown group '{group}'"))))?;
        to_py(py, &g.history(limit))
    }

    /// Names of pools and groups.
    fn pool_names(&self) -> Vec<String> {
        self.inner.engine().pools.keys().cloned().collect()
    }
    /// Ids of every instance (`"<group>.<echelon>_<model>"`), routable as `instance:<id>`.
    fn instance_ids(&self) -> Vec<String> {
        self.inner.engine().instances.keys().cloned().collect()
    }
    fn group_names(&self) -> Vec<String> {
        self.inner.engine().groups.keys().cloned().collect()
    }

    /// Stop background work (health checks).
    fn close(&self) {
        self.inner.close();
    }

    /// Start a gateway serving this router (binds before returning); see `echelon.Router.serve`.
    #[pyo3(signature = (host=None, port=None, allow_unauthenticated=None, watch=None, signals=false))]
    fn serve(
        &self,
        py: Python<'_>,
        host: Option<String>,
        port: Option<u16>,
        allow_unauthenticated: Option<bool>,
        watch: Option<bool>,
        signals: bool,
    ) -> PyResult<super::gateway::PyGateway> {
        super::gateway::serve(py, self, crate::gateway::ServeOptions { host, port, allow_unauthenticated, watch, signals })
    }

    /// Prometheus text exposition of the router's counters and gauges (the renderer the
    /// gateway's `/metrics` uses).
    fn metrics(&self) -> String {
        crate::observe::metrics::render(&self.inner.status())
    }
}

/// The routing of a stream, kept across reads so a read cancelled while the stream is being
/// opened does not lose it: the next read goes on from where it was.
type Opening = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Walked, Error>> + Send>>;

enum StreamState {
    Pending { router: Arc<Router>, route: Option<Route>, req: ChatRequest, opts: CallOptions },
    Opening(Opening),
    Open(ChatStream),
    Done,
}

/// An async iterator of `StreamChunk`s. Dropping it (or `aclose()`) aborts the upstream
/// request and frees the instance slot.
#[pyclass(frozen, name = "Stream", module = "echelon._core")]
pub struct PyStream {
    state: Arc<AsyncMutex<StreamState>>,
    /// The route, for the message of an internal error.
    label: Arc<str>,
    /// Cancelled by `aclose`/`close`: ends a read in progress at once, so closing never waits
    /// for a slow provider's next chunk.
    closed: tokio_util::sync::CancellationToken,
}

#[pymethods]
impl PyStream {
    /// The next chunk, delivered through `completer`. Returns `(future, id)`; the future
    /// resolves to a `StreamChunk` or raises (`StopAsyncIteration` at the end).
    ///
    /// Cancel-safe: a read cancelled while the stream is being routed leaves the routing in
    /// place, and the next read goes on from where it was; a read cancelled while waiting for
    /// a chunk loses nothing (the chunk arrives on the next read).
    fn next_via(&self, py: Python<'_>, completer: &Bound<'_, Completer>) -> PyResult<(Py<PyAny>, u64)> {
        let state = self.state.clone();
        let label = self.label.clone();
        let closed = self.closed.clone();
        completer.get().spawn(py, async move {
            tokio::select! {
                biased;
                _ = closed.cancelled() => Outcome::Chunk(Ok(None)),
                out = Self::read_next(state, label) => out,
            }
        })
    }

    /// Abort the stream: a read in progress ends at once, the upstream request is cancelled
    /// and the slot freed. Delivers `None` through `completer` once done. Closing happens even
    /// if the caller stops awaiting it (it runs as its own task).
    fn aclose_via(&self, py: Python<'_>, completer: &Bound<'_, Completer>) -> PyResult<(Py<PyAny>, u64)> {
        let done = self.shut();
        completer.get().spawn(py, async move {
            let _ = done.await;
            Outcome::convert(|py| Ok(py.None()))
        })
    }

    /// Abort without awaiting (used by `__del__`/sync code).
    fn close(&self) {
        drop(self.shut());
    }
}

impl PyStream {
    /// End a read in progress and drop the stream (aborting the upstream request and freeing
    /// its slot) in a task of its own, so a cancelled `aclose` still closes.
    fn shut(&self) -> tokio::task::JoinHandle<()> {
        self.closed.cancel();
        let state = self.state.clone();
        crate::runtime::get().spawn(async move {
            *state.lock().await = StreamState::Done;
        })
    }

    /// Route (on the first read) and read the next chunk: the body of [`PyStream::next_via`].
    async fn read_next(state: Arc<AsyncMutex<StreamState>>, label: Arc<str>) -> Outcome {
        let mut guard = state.lock().await;
        if let StreamState::Pending { .. } = &*guard {
            let StreamState::Pending { router, route, req, opts } = std::mem::replace(&mut *guard, StreamState::Done) else { unreachable!() };
            *guard = StreamState::Opening(Box::pin(async move { router.run(route.as_ref(), &req, &opts, true).await }));
        }
        if let StreamState::Opening(opening) = &mut *guard {
            match opening.as_mut().await {
                Ok(Walked::Stream(s)) => *guard = StreamState::Open(s),
                Ok(Walked::Chat(_)) => {
                    *guard = StreamState::Done;
                    return Outcome::Failure("internal: chat result for a stream".into());
                }
                Err(e) => {
                    *guard = StreamState::Done;
                    return Outcome::Chunk(Err(e));
                }
            }
        }
        let StreamState::Open(s) = &mut *guard else {
            return Outcome::Chunk(Ok(None));
        };
        let item = match AssertUnwindSafe(s.next()).catch_unwind().await {
            Ok(item) => item,
            Err(panic) => Some(Err(crate::engine::router::internal_error(&label, panic.as_ref()))),
        };
        if !matches!(item, Some(Ok(StreamChunk::Delta { .. }))) {
            *guard = StreamState::Done;
        }
        match item {
            Some(Ok(chunk)) => Outcome::Chunk(Ok(Some(chunk))),
            Some(Err(e)) => Outcome::Chunk(Err(e)),
            None => Outcome::Chunk(Ok(None)),
        }
    }
}
