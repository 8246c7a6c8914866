//! echelon core: routes LLM API calls through polling pools and task groups.
//!
//! The crate is plain Rust. Everything Python-facing lives in [`py`] (behind the `python`
//! feature) and only converts types and errors; the engine below knows nothing of Python.
//!
//! Layers, bottom to top (each one concept, each testable alone):
//! - [`types`], [`error`], [`secret`]: the request/response vocabulary and error classes.
//! - [`config`]: the configuration model, loader (TOML dir, YAML layout, dicts) and validation.
//! - [`provider`]: HTTP clients for OpenAI(-compatible), Anthropic and Gemini, SSE streaming.
//! - [`state`]: breakers, health, limits with their wait queues, statistics, and the
//!   [`state::store::StateStore`] through which all of it is created and shared.
//! - [`engine`]: instances and leases, selection, pools, groups, the fallback chain
//!   ([`engine::chain`]) and the router.
//! - [`observe`]: the event bus, alerts and the Prometheus rendering.
//! - [`gateway`]: the OpenAI- and Anthropic-compatible HTTP gateway over a router.
//! - [`mock`]: the mock provider server used by tests, the demo and benchmarks.

pub mod config;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod mock;
pub mod observe;
pub mod provider;
pub mod runtime;
pub mod secret;
pub mod state;
pub mod types;

#[cfg(feature = "python")]
mod py;

/// mimalloc instead of the system allocator: the per-request path allocates many small
/// short-lived buffers (HTTP, JSON, traces) across the runtime's threads, where glibc malloc
/// spent a quarter of the engine's time in the batch benchmark.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
