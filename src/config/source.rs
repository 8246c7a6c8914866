//! Turning files into JSON trees: TOML/YAML parsing with line-numbered syntax errors,
//! `${VAR}` / `${VAR:-default}` interpolation and `inherits_from` deep merges.

use std::path::Path;

use serde_json::{Map, Number, Value};

use super::reader::{join, Sink};

/// Environment lookup; injectable so tests never touch the process environment.
pub type EnvLookup<'e> = &'e dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Which syntax a file is in, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Toml,
    Yaml,
}

impl Format {
    pub(crate) fn of(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Some(Format::Toml),
            Some("yaml") | Some("yml") => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Read and parse one file into JSON. Syntax errors are recorded with their line and `None`
/// is returned.
pub(crate) fn parse_file(path: &Path, sink: &Sink) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            sink.push(Some(path), "", None, format!("cannot read file: {e}"));
            return None;
        }
    };
    match Format::of(path) {
        Some(Format::Toml) => parse_toml(&text, Some(path), sink),
        Some(Format::Yaml) => parse_yaml(&text, Some(path), sink),
        None => {
            sink.push(Some(path), "", None, "unsupported file type (expected .toml, .yaml or .yml)");
            None
        }
    }
}

/// Parse TOML text; a syntax error becomes an issue naming the line.
pub(crate) fn parse_toml(text: &str, file: Option<&Path>, sink: &Sink) -> Option<Value> {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => Some(toml_table_to_json(t)),
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().to_string();
            let msg = match line {
                Some(l) => format!("TOML syntax error at line {l}: {msg}"),
                None => format!("TOML syntax error: {msg}"),
            };
            sink.push(file, "", None, msg);
            None
        }
    }
}

/// Parse YAML text (merge keys `<<` applied); a syntax error becomes an issue naming the line.
/// An empty document is an empty table.
pub(crate) fn parse_yaml(text: &str, file: Option<&Path>, sink: &Sink) -> Option<Value> {
    match serde_norway::from_str::<serde_norway::Value>(text) {
        Ok(mut v) => {
            if let Err(e) = v.apply_merge() {
                sink.push(file, "", None, format!("YAML merge key error: {e}"));
                return None;
            }
            match yaml_to_json(v) {
                Value::Null => Some(Value::Object(Map::new())),
                other => Some(other),
            }
        }
        Err(e) => {
            let msg = match e.location() {
                Some(loc) => format!("YAML syntax error at line {}: {e}", loc.line()),
                None => format!("YAML syntax error: {e}"),
            };
            sink.push(file, "", None, msg);
            None
        }
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    let end = byte.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// A float that JSON cannot hold (NaN, ±inf) is kept as its string so type checks reject it
/// with a readable message instead of silently becoming null.
fn float(x: f64) -> Value {
    Number::from_f64(x).map(Value::Number).unwrap_or_else(|| Value::String(x.to_string()))
}

fn toml_table_to_json(t: toml::Table) -> Value {
    Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::Number(i.into()),
        toml::Value::Float(f) => float(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => toml_table_to_json(t),
    }
}

fn yaml_to_json(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else {
                float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => match yaml_to_json(other) {
                            Value::String(s) => s,
                            j => j.to_string(),
                        },
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Deep-merge `child` over `parent`: tables merge key by key, anything else in the child replaces.
pub(crate) fn deep_merge(parent: Value, child: Value) -> Value {
    match (parent, child) {
        (Value::Object(mut p), Value::Object(c)) => {
            for (k, cv) in c {
                let merged = match p.remove(&k) {
                    Some(pv) => deep_merge(pv, cv),
                    None => cv,
                };
                p.insert(k, merged);
            }
            Value::Object(p)
        }
        (_, c) => c,
    }
}

/// Replace `${VAR}` and `${VAR:-default}` in every string of `v` (keys excepted), except under
/// secret keys (`api_key`), which are resolved later so the variable name is kept with the
/// secret. `$${` is a literal `${`. Unset variables without a default become "" and are
/// recorded in `unset` as warnings.
pub(crate) fn interpolate(v: &mut Value, env: EnvLookup<'_>, file: Option<&Path>, path: &str, unset: &Sink) {
    match v {
        Value::String(s) if s.contains("${") => {
            let (out, missing) = expand(s, env);
            for var in missing {
                unset.push(file, path, Some(format!("${{{var}}}")), format!("environment variable `{var}` is not set (used as empty)"));
            }
            *s = out;
        }
        Value::Array(a) => {
            for (i, it) in a.iter_mut().enumerate() {
                interpolate(it, env, file, &format!("{path}[{i}]"), unset);
            }
        }
        Value::Object(m) => {
            for (k, it) in m.iter_mut() {
                if k == "api_key" {
                    continue;
                }
                interpolate(it, env, file, &join(path, k), unset);
            }
        }
        _ => {}
    }
}

/// Expand one string; returns the result and the variables that were unset without default.
pub(crate) fn expand(s: &str, env: EnvLookup<'_>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(s.len());
    let mut missing = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            // `$${` escapes: emit everything up to the first `$`, then a literal `${`.
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[pos..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner.trim(), None),
        };
        match env(name).filter(|v| !v.is_empty() || default.is_none()) {
            Some(val) => out.push_str(&val),
            None => match default {
                Some(d) => out.push_str(d),
                None => missing.push(name.to_string()),
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

/// If `s` is exactly one placeholder (`${VAR}` or `${VAR:-default}`), its parts.
pub(crate) fn single_placeholder(s: &str) -> Option<(&str, Option<&str>)> {
    let inner = s.trim().strip_prefix("${")?.strip_suffix('}')?;
    if inner.contains("${") || inner.contains('}') {
        return None;
    }
    Some(match inner.split_once(":-") {
        Some((n, d)) => (n.trim(), Some(d)),
        None => (inner.trim(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expand_forms() {
        assert_eq!(expand("x-${A}-y", &env), ("x-alpha-y".into(), vec![]));
        assert_eq!(expand("${B:-dflt}", &env), ("dflt".into(), vec![]));
        assert_eq!(expand("${A:-dflt}", &env), ("alpha".into(), vec![]));
        // `:-` also applies when the variable is set but empty (shell semantics).
        assert_eq!(expand("${EMPTY:-d}", &env), ("d".into(), vec![]));
        assert_eq!(expand("${B}/v1", &env), ("/v1".into(), vec!["B".to_string()]));
        assert_eq!(expand("$${A}", &env), ("${A}".into(), vec![]));
        assert_eq!(expand("${unterminated", &env), ("${unterminated".into(), vec![]));
        assert_eq!(expand("http://h:${PORT:-8900}/v1", &env), ("http://h:8900/v1".into(), vec![]));
    }

    #[test]
    fn placeholder_parts() {
        assert_eq!(single_placeholder("${K}"), Some(("K", None)));
        assert_eq!(single_placeholder("${K:-x}"), Some(("K", Some("x"))));
        assert_eq!(single_placeholder("Bearer ${K}"), None);
    }

    #[test]
    fn merge_is_deep_and_child_wins() {
        let p = serde_json::json!({"a": 1, "t": {"x": 1, "y": 2}, "l": [1, 2]});
        let c = serde_json::json!({"t": {"y": 3}, "l": [9]});
        assert_eq!(deep_merge(p, c), serde_json::json!({"a": 1, "t": {"x": 1, "y": 3}, "l": [9]}));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let sink = Sink::default();
        assert!(parse_toml("a = 1\nb = = 2\n", None, &sink).is_none());
        let issues = sink.take();
        assert!(issues[0].message.contains("line 2"), "{:?}", issues);
        assert!(parse_yaml("a: 1\nb: [1, 2\nc: 3\n", None, &sink).is_none());
        let issues = sink.take();
        assert!(issues[0].message.contains("YAML syntax error at line"), "{:?}", issues);
    }
}
