//! echelon core: routes LLM API calls through polling pools and task groups.
//!
//! The crate is plain Rust. Everything Python-facing lives in [`py`] (behind the `python`
//! feature) and only converts types and errors; the engine below knows nothing of Python.
//!
//! Layers, bottom to top (each one concept, each testable alone):
//! - [`types`], [`error`], [`secret`]: the request/response vocabulary and error classes.
//! - [`config`]: the configuration model, loader (TOML dir, YAML layout, dicts) and validation.
//! - [`provider`]: HTTP clients for OpenAI(-compatible), Anthropic and Gemini, SSE streaming.
//! - [`breaker`], [`limit`], [`schedule`], [`backoff`], [`health`]: resilience primitives.
//! - [`store`]: the interface through which shared mutable state is created (in memory today).
//! - [`instance`], [`pool`], [`group`], [`router`]: the engine composed from the above.
//! - [`mock`]: the mock provider server used by tests, the demo and benchmarks.

pub mod attempt;
pub mod backoff;
pub mod breaker;
pub mod config;
pub mod error;
pub mod events;
pub mod alerts;
pub mod fallback;
pub mod group;
pub mod health;
pub mod instance;
pub mod limit;
pub mod mock;
pub mod pool;
pub mod provider;
pub mod router;
pub mod runtime;
pub mod schedule;
pub mod selector;
pub mod secret;
pub mod store;
pub mod types;

#[cfg(feature = "python")]
mod py;

/// mimalloc instead of the system allocator: the per-request path allocates many small
/// short-lived buffers (HTTP, JSON, traces) across the runtime's threads, where glibc malloc
/// spent a quarter of the engine's time in the batch benchmark.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
