//! Completion hand-off from tokio to an asyncio loop, batched per loop wake-up.
//!
//! `pyo3_async_runtimes::future_into_py` hands every completed future to a blocking thread
//! that takes the GIL and calls `call_soon_threadsafe`: one thread hop, one GIL acquisition
//! and one loop wake-up per call. Under load that hand-off dominates the cost of a routed call.
//!
//! A [`Completer`] instead keeps, per event loop, a queue of finished results and a socket
//! pair whose read end the loop watches (`loop.add_reader`). A tokio task that finishes pushes
//! its result and writes one byte only if no wake-up is pending; the loop thread then drains
//! every queued result in one callback, converting and setting them while it holds the GIL
//! anyway. Tokio threads never take the GIL on this path.
//!
//! Every call that crosses into the engine returns through here, not only for speed: a tokio
//! thread that takes the GIL while the interpreter shuts down is terminated by CPython
//! (`PyThread_exit_thread`), and unwinding that through Rust frames aborts the process. With
//! `future_into_py` that happened when a script's last `await` resolved just before exit.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use parking_lot::Mutex;
use pyo3::prelude::*;
use tokio::task::AbortHandle;

use super::convert::error_to_py;
use super::types::{PyChunk, PyResponse};
use crate::error::Error;
use crate::types::ChatResponse;

/// What a finished task hands back.
pub enum Outcome {
    Chat(Result<ChatResponse, Error>),
    /// The next item of a stream (`None`: the stream is over).
    Chunk(Result<Option<crate::engine::chain::stream::StreamChunk>, Error>),
    /// An internal error (a bug) described on the Rust side without the GIL; raised as
    /// `echelon.InternalError`.
    Failure(String),
    /// Anything else (a batch's list, a batch of events, `None`): the conversion runs on the
    /// loop thread, which holds the GIL anyway, so the tokio thread never has to take it.
    Convert(Conversion),
}

/// Builds a result's Python value; runs on the loop thread with the GIL held.
pub type Conversion = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

impl Outcome {
    /// An outcome that `convert`s its value on the loop thread.
    pub fn convert(convert: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static) -> Self {
        Outcome::Convert(Box::new(convert))
    }
}

struct Shared {
    queue: Mutex<Vec<(u64, Outcome)>>,
    signalled: AtomicBool,
    writer: UnixStream,
}

impl Shared {
    fn push(&self, id: u64, outcome: Outcome) {
        self.queue.lock().push((id, outcome));
        self.signal();
    }

    fn signal(&self) {
        if !self.signalled.swap(true, Ordering::AcqRel) {
            // A full socket buffer means a wake-up is already pending: nothing to do.
            let _ = (&self.writer).write(&[1u8]);
        }
    }
}

/// Engine log records wake the loop the same way results do (see `logs.rs`).
impl super::logs::Wake for Shared {
    fn wake(&self) {
        self.signal();
    }
}

/// Per-event-loop completion queue. Create one per loop (see `echelon.router`), register
/// `fileno()` with `loop.add_reader(fd, completer.drain)`.
#[pyclass(frozen, name = "Completer", module = "echelon._core")]
pub struct Completer {
    shared: Arc<Shared>,
    reader: UnixStream,
    /// A weak reference to the event loop (the loop owns this completer through its reader
    /// callback; a strong reference back would keep both alive forever).
    loop_ref: Py<PyAny>,
    pending: Mutex<HashMap<u64, (Py<PyAny>, AbortHandle)>>,
    next_id: AtomicU64,
}

#[pymethods]
impl Completer {
    #[new]
    fn new(loop_ref: Py<PyAny>) -> PyResult<Self> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let shared = Arc::new(Shared { queue: Mutex::new(Vec::new()), signalled: AtomicBool::new(false), writer });
        super::logs::register_waker(&shared);
        Ok(Self { shared, reader, loop_ref, pending: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) })
    }

    /// The file descriptor the loop must watch.
    fn fileno(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    /// Requests started and not yet delivered.
    fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// Deliver every finished result to its future. Called by the loop when `fileno()` is
    /// readable.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        // Order matters: consume the wake-up bytes first, then re-arm, then take the queue.
        // Re-arming before reading could swallow the byte of a push that lands in between and
        // leave the flag set with nothing to wake the loop.
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.reader).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        self.shared.signalled.store(false, Ordering::Release);
        // Log records first: those of a call were logged before its result was queued.
        super::logs::register_waker(&self.shared);
        super::logs::deliver(py);
        let items = std::mem::take(&mut *self.shared.queue.lock());
        let mut first_err: Option<PyErr> = None;
        for (id, outcome) in items {
            let Some((fut, _)) = self.pending.lock().remove(&id) else { continue };
            if let Err(e) = Self::deliver(py, fut.bind(py), outcome) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Abort the task behind request `id` (its future was cancelled).
    fn cancel(&self, id: u64) {
        if let Some((_, abort)) = self.pending.lock().remove(&id) {
            abort.abort();
        }
    }
}

impl Completer {
    fn deliver(py: Python<'_>, fut: &Bound<'_, PyAny>, outcome: Outcome) -> PyResult<()> {
        if fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
            return Ok(()); // cancelled by the caller meanwhile
        }
        let result: Result<Bound<'_, PyAny>, PyErr> = match outcome {
            Outcome::Chat(Ok(r)) => Ok(Bound::new(py, PyResponse::from(r))?.into_any()),
            Outcome::Chat(Err(e)) | Outcome::Chunk(Err(e)) => Err(error_to_py(py, e)),
            Outcome::Chunk(Ok(Some(crate::engine::chain::stream::StreamChunk::Delta { text, tool_call }))) => {
                Ok(Bound::new(py, PyChunk::delta(text, tool_call))?.into_any())
            }
            Outcome::Chunk(Ok(Some(crate::engine::chain::stream::StreamChunk::Final(resp)))) => {
                Ok(Bound::new(py, PyChunk::final_(Py::new(py, PyResponse::from(resp))?))?.into_any())
            }
            Outcome::Chunk(Ok(None)) => Err(pyo3::exceptions::PyStopAsyncIteration::new_err(())),
            Outcome::Failure(msg) => Err(error_to_py(py, Error::new(crate::error::ErrorKind::Internal, msg))),
            Outcome::Convert(convert) => convert(py).map(|v| v.into_bound(py)),
        };
        match result {
            Ok(value) => fut.call_method1(pyo3::intern!(py, "set_result"), (value,))?,
            Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        Ok(())
    }

    /// Start `work` on the runtime; its outcome will be delivered to the returned future.
    /// Returns `(future, id)`; pass `id` to [`Completer::cancel`] if the future is cancelled.
    pub fn spawn<F>(&self, py: Python<'_>, work: F) -> PyResult<(Py<PyAny>, u64)>
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let event_loop = self.loop_ref.bind(py).call0()?;
        if event_loop.is_none() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("the event loop of this completer is gone"));
        }
        let fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?.unbind();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        // Hold the pending lock across spawn so a task that finishes at once cannot be
        // drained before its future is registered.
        let mut pending = self.pending.lock();
        // A combinator, not `async move { work.await }`: an async block stores its captured
        // future and the awaited one separately, doubling every in-flight call's task.
        // A panic in the work still completes the future (as `InternalError`), never leaves it
        // pending.
        let handle = crate::runtime::get().spawn(AssertUnwindSafe(work).catch_unwind().map(move |outcome| {
            let outcome = outcome.unwrap_or_else(|panic| {
                let e = crate::engine::router::internal_error(&"a call from Python", panic.as_ref());
                Outcome::Failure(e.message)
            });
            shared.push(id, outcome)
        }));
        pending.insert(id, (fut.clone_ref(py), handle.abort_handle()));
        Ok((fut, id))
    }
}
