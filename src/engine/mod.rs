#![warn(missing_docs)]
//! The routing engine, composed from the state layer (`crate::state`) and the providers:
//! instances and the leases taken on them, selection among instances, polling pools, task
//! groups, the fallback chain, and the router that swaps whole engines on reload.

pub mod chain;
pub mod group;
pub mod instance;
pub mod lease;
pub mod pool;
pub mod router;
pub mod schedule;
pub mod selector;

#[cfg(all(test, not(echelon_loom)))]
mod tests;
