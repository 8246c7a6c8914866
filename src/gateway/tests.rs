//! The gateway over real HTTP, in front of the mock provider.
