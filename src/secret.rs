//! API keys and other values that must never be printed.

use std::fmt;

/// A secret string (an API key). `Debug` and `Display` print a mask, never the value, so a
/// secret can sit inside any struct that derives `Debug` without leaking into logs or reprs.
///
/// A secret may be *unresolved*: the config named `${VAR}` and `VAR` was not set. Such a config
/// still loads; a call that needs the value fails with an error naming the variable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret {
    value: Option<String>,
    /// The environment variable the value came from (or should have), for error messages.
    var: Option<String>,
}

impl Secret {
    /// A secret with a known value.
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: Some(value.into()), var: None }
    }
    /// A secret read from environment variable `var`; `value` is `None` when it was unset.
    pub fn from_env(var: impl Into<String>, value: Option<String>) -> Self {
        Self { value, var: Some(var.into()) }
    }
    /// No secret configured.
    pub fn none() -> Self {
        Self::default()
    }
    /// The value, if resolved. Use only where the value goes on the wire (headers, query).
    pub fn expose(&self) -> Option<&str> {
        self.value.as_deref()
    }
    /// The environment variable name, if the secret came from one.
    pub fn var(&self) -> Option<&str> {
        self.var.as_deref()
    }
    /// True when a variable was named but not set in the environment.
    pub fn is_missing(&self) -> bool {
        self.value.is_none() && self.var.is_some()
    }
    /// A masked description safe for status output: `"${OPENAI_API_KEY} (set)"`, `"***"`, `"(none)"`.
    pub fn describe(&self) -> String {
        match (&self.var, &self.value) {
            (Some(v), Some(_)) => format!("${{{v}}} (set)"),
            (Some(v), None) => format!("${{{v}}} (unset)"),
            (None, Some(_)) => "***".to_string(),
            (None, None) => "(none)".to_string(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Replace every occurrence of any known secret value in `text` by `***`.
///
/// Provider error bodies sometimes echo the key back (e.g. "Incorrect API key provided: sk-…");
/// every message built from a provider body passes through this before it is stored.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if let Some(v) = s.expose() {
            if v.len() >= 4 && out.contains(v) {
                out = out.replace(v, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_value() {
        let s = Secret::from_env("OPENAI_API_KEY", Some("sk-live-123456".into()));
        let shown = format!("{s:?} {s}");
        assert!(!shown.contains("sk-live"));
        assert!(shown.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn redact_replaces_value() {
        let s = Secret::new("sk-abcdef");
        assert_eq!(redact("bad key sk-abcdef!", &[&s]), "bad key ***!");
    }
}
