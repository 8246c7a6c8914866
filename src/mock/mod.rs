//! The mock provider server: speaks the OpenAI, Anthropic and Gemini wire formats on loopback,
//! streaming and not, and misbehaves on demand (scripted per model). Used by the tests, the
//! demo and the benchmarks.
//!
//! INTERFACE (implementation pending).
