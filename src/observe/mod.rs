#![warn(missing_docs)]
//! What the engine tells the outside world: the event bus, the alert evaluator and the
//! Prometheus rendering of the router's counters.

pub mod alerts;
pub mod events;
pub mod metrics;
