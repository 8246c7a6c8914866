//! The fallback chain of one call, decisions apart from effects:
//! - [`policy`]: what to do after a failed attempt and when every target is blocked (pure);
//! - [`acquire`]: getting a lease down the chain, waiting on the limits' queues;
//! - [`attempt`], [`stream`], [`hedge`]: one attempt, a routed stream, a hedged pair;
//! - [`walk`]: the loop that runs them, records the [`trace`] and sleeps as decided;
//! - [`backoff`]: the exponential ceiling of retry delays.

pub mod acquire;
pub mod attempt;
pub mod backoff;
pub mod hedge;
pub mod policy;
pub mod stream;
pub mod trace;
pub mod walk;
