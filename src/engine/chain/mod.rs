//! The fallback chain of one call: walking the targets of a plan, one attempt at a time, with
//! retries, backoff and hedging.

pub mod attempt;
pub mod backoff;
pub mod walk;
