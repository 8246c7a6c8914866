//! What the engine tells the outside world: the event bus and the alert evaluator.

pub mod alerts;
pub mod events;
