//! Configuration: the resolved model ([`model`]) and the loaders that produce it.

pub mod model;

pub use model::*;
