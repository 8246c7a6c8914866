#![warn(missing_docs)]
//! The state the engine keeps about each instance, model and pool: circuit breakers, health,
//! concurrency and rate limits (each owning the queue of callers waiting for it), call
//! statistics, and the [`store::StateStore`] through which all of it is created and shared.
//!
//! Nothing here but [`redis`] performs I/O or knows about routes: the engine (`crate::engine`)
//! reads and updates this state; the store shared by several processes ([`redis`]) plugs in
//! at [`store::StateStore`] and talks to Redis from its own tasks, never on a caller's path.

pub mod breaker;
pub mod health;
pub mod limit;
pub mod redis;
pub mod stats;
pub mod store;
pub(crate) mod sync;
pub mod wait;

#[cfg(all(test, echelon_loom))]
mod loom_tests;
