//! Provider clients: OpenAI chat completions (and OpenAI-compatible hosts), Anthropic messages,
//! Gemini generateContent; non-streaming and SSE streaming; error classification.
//!
//! INTERFACE (implementation pending): see the doc on each item.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;

use crate::config::{ModelConfig, ProbeMode, Timeouts};
use crate::error::Error;
use crate::types::{ChatRequest, ChatResponse, StreamEvent};

/// A stream of deltas then exactly one `Done`, or an error item (after which it ends).
/// Dropping it aborts the upstream HTTP request.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, Error>> + Send>>;

/// Shared HTTP connection pools, one `reqwest::Client` per (origin, connect timeout).
/// One per router; cheap to clone.
#[derive(Clone, Default)]
pub struct HttpPool {}

impl HttpPool {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A client for one logical model. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct ProviderClient {
    model: Arc<ModelConfig>,
}

impl ProviderClient {
    /// Build a client for `model`, reusing `pool`'s connections to the same host.
    pub fn new(model: ModelConfig, pool: &HttpPool) -> Self {
        let _ = pool;
        Self { model: Arc::new(model) }
    }

    /// The model this client calls.
    pub fn model(&self) -> &ModelConfig {
        &self.model
    }

    /// One non-streaming call. `timeouts` are the effective ones for this attempt (the caller
    /// has already merged echelon overrides and clamped `total` to the call's deadline).
    /// The response's `served_by` and `attempts` are left empty for the caller to fill.
    pub async fn chat(&self, req: &ChatRequest, timeouts: &Timeouts) -> Result<ChatResponse, Error> {
        let _ = (req, timeouts);
        unimplemented!()
    }

    /// Open a stream. Returns once the response headers are in (errors before that, including
    /// HTTP error statuses, come back here). The stream enforces `first_token` until the first
    /// delta and `idle` between chunks; after the first delta any cut/stall/garbage becomes
    /// `StreamInterrupted` carrying the partial text.
    pub async fn stream(&self, req: &ChatRequest, timeouts: &Timeouts) -> Result<EventStream, Error> {
        let _ = (req, timeouts);
        unimplemented!()
    }

    /// An active health probe that costs no tokens unless `mode` is `Completion`.
    pub async fn probe(&self, mode: ProbeMode, timeouts: &Timeouts) -> Result<(), Error> {
        let _ = (mode, timeouts);
        unimplemented!()
    }
}
