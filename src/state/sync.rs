//! The synchronisation primitives the state layer is built on, swappable for `loom`'s.
//!
//! Built with `RUSTFLAGS="--cfg echelon_loom"`, the mutex and atomics below are loom's, so the
//! models in `state/loom_tests.rs` explore every interleaving of the wait queues, concurrency
//! limits and half-open admission (as tokio does for its own primitives). A dedicated cfg name
//! keeps dependencies that react to a plain `--cfg loom` out of it.
//!
//! Only the state that those models check goes through here; everything else uses std,
//! parking_lot and tokio directly.

#[cfg(not(echelon_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(echelon_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};

/// A mutex with parking_lot's shape (`lock()` returns the guard; no poisoning).
#[cfg(not(echelon_loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

/// A mutex with parking_lot's shape (`lock()` returns the guard; no poisoning).
#[cfg(echelon_loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(echelon_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(echelon_loom)]
impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

/// A one-waiter wake-up with a stored permit: a `notify` before the wait is not lost.
///
/// The engine waits on it asynchronously (tokio's `Notify`); loom models wait on it by
/// blocking a model thread.
pub(crate) struct Signal {
    raised: AtomicBool,
    #[cfg(not(echelon_loom))]
    notify: tokio::sync::Notify,
    #[cfg(echelon_loom)]
    notify: loom::sync::Notify,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self {
            raised: AtomicBool::new(false),
            #[cfg(not(echelon_loom))]
            notify: tokio::sync::Notify::new(),
            #[cfg(echelon_loom)]
            notify: loom::sync::Notify::new(),
        }
    }

    /// Raise the signal and wake the waiter (or let its next wait return at once).
    pub(crate) fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            #[cfg(not(echelon_loom))]
            self.notify.notify_one();
            #[cfg(echelon_loom)]
            self.notify.notify();
        }
    }

    /// Whether the signal is raised (without lowering it).
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Lower the signal; returns whether it was raised.
    pub(crate) fn take(&self) -> bool {
        self.raised.swap(false, Ordering::AcqRel)
    }

    /// Wait until raised, then lower it.
    ///
    /// # Cancel safety
    /// Cancel-safe: a `raise` that happens while (or after) the wait is dropped stays raised
    /// and is seen by the next wait or [`Signal::take`].
    #[cfg(not(echelon_loom))]
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.take() {
                return;
            }
            notified.await;
        }
    }

    /// Under loom the engine's async waits are not modelled; models call [`Signal::block`].
    #[cfg(echelon_loom)]
    pub(crate) async fn wait(&self) {
        unreachable!("async waits are not modelled under loom; use Signal::block")
    }

    /// Block the (loom model) thread until raised, then lower it.
    #[cfg(echelon_loom)]
    pub(crate) fn block(&self) {
        while !self.take() {
            self.notify.wait();
        }
    }
}
