//! The core's `log` records into Python's `logging`, without engine threads taking the GIL.
//!
//! A record's target becomes the logger name (`_core::engine::router` → `_core.router`,
//! `echelon.events` stays). Records logged on a Python thread (config loading, `reload`) are
//! handed to `logging` at once. Records from the engine's threads are queued and handed over by
//! a loop thread: the queue wakes the [`super::completer::Completer`] that was created or
//! drained last, any completer's `drain` delivers them before its results, and `flush_logs`
//! (registered with `atexit`) delivers what is left when the interpreter exits. With no event
//! loop using echelon, records wait for the next one or for exit.
//!
//! Why not `pyo3-log`: it takes the GIL on whichever thread logs. On an engine thread that
//! costs a GIL hand-off per record under load, and while the interpreter shuts down CPython
//! terminates such a thread, which aborts the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Records waiting beyond this many are counted and reported instead of kept.
const MAX_QUEUED: usize = 10_000;

/// Something that makes a loop thread call [`deliver`] soon.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

struct Queued {
    level: log::Level,
    target: String,
    message: String,
    file: Option<&'static str>,
    line: u32,
    at: SystemTime,
}

static QUEUE: Mutex<Vec<Queued>> = Mutex::new(Vec::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);
static WAKER: Mutex<Option<Weak<dyn Wake>>> = Mutex::new(None);

struct EngineLogger;

impl log::Log for EngineLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let queued = Queued {
            level: record.level(),
            target: record.target().replace("::", "."),
            message: record.args().to_string(),
            file: record.file_static(),
            line: record.line().unwrap_or(0),
            at: SystemTime::now(),
        };
        // SAFETY: only reads this thread's Python thread state pointer (a thread-local); no
        // GIL needed, and it is null on threads Python never ran on, like the engine's.
        let python_thread = !unsafe { pyo3::ffi::PyGILState_GetThisThreadState() }.is_null();
        if python_thread {
            // Same thread that called into the core: Python code could run here anyway.
            Python::attach(|py| {
                deliver(py);
                hand_over(py, &queued);
            });
            return;
        }
        let was_empty = {
            let mut q = QUEUE.lock();
            if q.len() >= MAX_QUEUED {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            q.push(queued);
            q.len() == 1
        };
        if was_empty {
            let waker = WAKER.lock().as_ref().and_then(Weak::upgrade);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: EngineLogger = EngineLogger;

/// Install the logger (once per process) and read the Python levels.
pub fn init(py: Python<'_>) -> PyResult<()> {
    let _ = log::set_logger(&LOGGER);
    refresh_log_levels(py)
}

fn python_level(level: log::Level) -> u32 {
    match level {
        log::Level::Error => 40,
        log::Level::Warn => 30,
        log::Level::Info => 20,
        log::Level::Debug => 10,
        log::Level::Trace => 5,
    }
}

fn level_filter(python_level: u32) -> log::LevelFilter {
    match python_level {
        0..=5 => log::LevelFilter::Trace,
        6..=10 => log::LevelFilter::Debug,
        11..=20 => log::LevelFilter::Info,
        21..=30 => log::LevelFilter::Warn,
        31..=40 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    }
}

fn hand_over(py: Python<'_>, r: &Queued) {
    let result = (|| -> PyResult<()> {
        let logger = py.import(pyo3::intern!(py, "logging"))?.call_method1(pyo3::intern!(py, "getLogger"), (&r.target,))?;
        let level = python_level(r.level);
        if !logger.call_method1(pyo3::intern!(py, "isEnabledFor"), (level,))?.is_truthy()? {
            return Ok(());
        }
        let args = (&r.target, level, r.file.unwrap_or("<unknown>"), r.line, &r.message, PyTuple::empty(py), py.None());
        let record = logger.call_method1(pyo3::intern!(py, "makeRecord"), args)?;
        // Stamp the time the engine logged it, not the time it reached the loop.
        if let Ok(since) = r.at.duration_since(SystemTime::UNIX_EPOCH) {
            record.setattr(pyo3::intern!(py, "created"), since.as_secs_f64())?;
            record.setattr(pyo3::intern!(py, "msecs"), f64::from(since.subsec_millis()))?;
        }
        logger.call_method1(pyo3::intern!(py, "handle"), (record,))?;
        Ok(())
    })();
    if let Err(e) = result {
        e.write_unraisable(py, None);
    }
}

/// Hand every queued engine record to `logging` (on a thread holding the GIL).
pub fn deliver(py: Python<'_>) {
    let records = std::mem::take(&mut *QUEUE.lock());
    for r in &records {
        hand_over(py, r);
    }
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let note = Queued {
            level: log::Level::Warn,
            target: "_core".into(),
            message: format!("{dropped} log records from the engine were dropped: more than {MAX_QUEUED} were waiting for the event loop"),
            file: None,
            line: 0,
            at: SystemTime::now(),
        };
        hand_over(py, &note);
    }
}

/// Deliver the engine's queued log records now (the package registers this with `atexit`).
#[pyfunction]
pub fn flush_logs(py: Python<'_>) {
    deliver(py);
}

/// Re-read the Python logger levels the engine filters by (the most verbose level of the
/// `_core` and `echelon` loggers and their children). Call it after changing levels at runtime.
#[pyfunction]
pub fn refresh_log_levels(py: Python<'_>) -> PyResult<()> {
    let logging = py.import("logging")?;
    let get_logger = logging.getattr("getLogger")?;
    let mut names: Vec<String> = vec!["_core".into(), crate::observe::events::LOG_TARGET.into()];
    let known = logging.getattr("root")?.getattr("manager")?.getattr("loggerDict")?;
    for name in known.call_method0("keys")?.try_iter()? {
        let name: String = name?.extract()?;
        if ["_core", "echelon"].iter().any(|p| name == *p || name.starts_with(&format!("{p}."))) {
            names.push(name);
        }
    }
    let mut most_verbose = u32::MAX;
    for name in names {
        let level: u32 = get_logger.call1((name,))?.call_method0("getEffectiveLevel")?.extract()?;
        most_verbose = most_verbose.min(level);
    }
    log::set_max_level(level_filter(most_verbose));
    Ok(())
}

/// Make `waker` the one engine-thread records wake (a no-op when it already is). Completers
/// call this when created and on every drain, so records wake the loop that was active last.
pub fn register_waker<T: Wake + 'static>(waker: &Arc<T>) {
    let mut current = WAKER.lock();
    if current.as_ref().is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(waker))) {
        return;
    }
    let weak: Weak<T> = Arc::downgrade(waker);
    *current = Some(weak);
}
