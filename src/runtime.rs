//! The one tokio runtime of the process, started lazily and shared by everything.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::ConfigError;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The environment variable that sets the number of runtime worker threads.
pub const WORKER_THREADS_VAR: &str = "ECHELON_WORKER_THREADS";

/// Most worker threads accepted from [`WORKER_THREADS_VAR`].
pub const MAX_WORKER_THREADS: usize = 64;

/// The worker-thread count for a process whose `ECHELON_WORKER_THREADS` is `setting`.
///
/// Unset: the CPUs this process may use, at least 2 and at most 4. Two on one CPU because
/// a Python thread shares that CPU with the runtime: under the scheduler's per-thread
/// fairness, a second worker keeps the I/O side from starving behind the interpreter
/// (measured ~10% more `Router.chat` throughput on one pinned core). One is better when
/// Python is mostly idle, as during `Router.batch` (+22% over HTTP/2 there): set it to 1
/// then. More than 4 only pays when several Python processes do not already share the
/// machine.
pub fn worker_threads(setting: Option<&str>) -> Result<usize, ConfigError> {
    let Some(raw) = setting else {
        return Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4));
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(n),
        _ => Err(ConfigError::one(
            None,
            WORKER_THREADS_VAR,
            Some(raw.chars().take(40).collect()),
            format!("environment variable {WORKER_THREADS_VAR} must be a whole number from 1 to {MAX_WORKER_THREADS}"),
        )),
    }
}

/// The shared multi-thread runtime, started on first use with [`worker_threads`] workers
/// from the environment, and a small blocking pool (a large one only adds threads that
/// fight for the GIL, see the toolchain notes). Fails only when `ECHELON_WORKER_THREADS` is
/// invalid; nothing is started then, so a corrected value can be tried again.
pub fn try_get() -> Result<&'static Runtime, ConfigError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let workers = worker_threads(std::env::var(WORKER_THREADS_VAR).ok().as_deref())?;
    Ok(RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(4)
            .thread_name("echelon-rt")
            .enable_all()
            .build()
            .expect("failed to start the tokio runtime")
    }))
}

/// The shared runtime (see [`try_get`]). The Python module checks the environment when it
/// loads, so on that path this never fails.
///
/// # Panics
/// If `ECHELON_WORKER_THREADS` is invalid and the runtime was not started yet; use
/// [`try_get`] to handle that.
pub fn get() -> &'static Runtime {
    try_get().unwrap_or_else(|e| panic!("{e}"))
}

/// Worker threads of the running runtime, or `None` before it starts.
pub fn workers() -> Option<usize> {
    RUNTIME.get().map(|rt| rt.metrics().num_workers())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_default_and_setting() {
        let default = worker_threads(None).unwrap();
        assert!((2..=4).contains(&default));
        assert_eq!(worker_threads(Some("1")).unwrap(), 1);
        assert_eq!(worker_threads(Some(" 8 ")).unwrap(), 8);
        for bad in ["0", "-1", "two", "", "1.5", "65"] {
            let e = worker_threads(Some(bad)).unwrap_err();
            let issue = &e.issues[0];
            assert_eq!(issue.key, WORKER_THREADS_VAR);
            assert_eq!(issue.value.as_deref(), Some(bad));
            assert!(e.to_string().contains("from 1 to 64"), "{e}");
        }
    }
}
