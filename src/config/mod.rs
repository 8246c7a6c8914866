//! Configuration: the resolved model ([`model`]) and the loaders that produce it.

pub mod model;

pub use model::*;
pub fn load_dir(_p: &std::path::Path) -> Result<Config, crate::error::ConfigError> { unimplemented!() }
pub fn from_json(_v: &serde_json::Value) -> Result<Config, crate::error::ConfigError> { unimplemented!() }
