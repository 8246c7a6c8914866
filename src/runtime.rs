//! The one tokio runtime of the process, started lazily and shared by everything.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared multi-thread runtime. Two worker threads on small machines (at most 4), and a
/// small blocking pool: the Python bridge parks one blocking thread per completion hand-off, and
/// a large pool only adds threads fighting for the GIL (see the toolchain notes).
pub fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
        Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(4)
            .thread_name("echelon-rt")
            .enable_all()
            .build()
            .expect("failed to start the tokio runtime")
    })
}
