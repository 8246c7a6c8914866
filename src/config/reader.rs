//! A strict reader over one JSON table that records every problem instead of stopping at the
//! first one.
//!
//! Why not `#[derive(Deserialize)] #[serde(deny_unknown_fields)]`: serde aborts a whole file at
//! its first error, and `echelon check` must list every problem of every file in one run. The
//! reader remembers which keys the schema asked about, so whatever is left over is an unknown key
//! and can be matched against the known ones for a "did you mean" hint.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::source::Format;
use crate::error::ConfigIssue;

/// Collects issues (errors or warnings) from every reader of one load, plus the notes (warnings)
/// that the lenient reading of the original YAML layout produces instead of errors.
#[derive(Default)]
pub(crate) struct Sink {
    issues: RefCell<Vec<ConfigIssue>>,
    notes: RefCell<Vec<ConfigIssue>>,
    /// Documents without a file (a dict tree) are in the original layout.
    original_dicts: Cell<bool>,
}

impl Sink {
    /// Record one issue.
    pub(crate) fn push(&self, file: Option<&Path>, key: &str, value: Option<String>, message: impl Into<String>) {
        self.issues.borrow_mut().push(ConfigIssue { file: file.map(Path::to_path_buf), key: key.to_string(), value, message: message.into() });
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.issues.borrow().is_empty()
    }
    /// Record a note: something the original layout allowed that the engine does not use or
    /// changes, reported as a warning (`echelon check`), never fatal.
    pub(crate) fn note(&self, file: Option<&Path>, key: &str, value: Option<String>, message: impl Into<String>) {
        let issue = ConfigIssue { file: file.map(Path::to_path_buf), key: key.to_string(), value, message: message.into() };
        let mut notes = self.notes.borrow_mut();
        if !notes.contains(&issue) {
            notes.push(issue);
        }
    }
    /// Every note recorded, in recording order.
    pub(crate) fn take_notes(&self) -> Vec<ConfigIssue> {
        self.notes.borrow_mut().drain(..).collect()
    }
    /// Treat documents that have no file (dict trees) as the original layout.
    pub(crate) fn set_original_dicts(&self, on: bool) {
        self.original_dicts.set(on);
    }
    /// Whether a table at `loc` belongs to the original YAML layout, which is read leniently:
    /// a YAML file, or a dict tree marked `layout = "original"`. TOML files are strict.
    pub(crate) fn is_original(&self, loc: &Loc) -> bool {
        self.is_original_file(loc.file.as_deref())
    }
    /// [`Sink::is_original`] by file.
    pub(crate) fn is_original_file(&self, file: Option<&Path>) -> bool {
        match file {
            Some(f) => Format::of(f) == Some(Format::Yaml),
            None => self.original_dicts.get(),
        }
    }
    /// Everything recorded, duplicates removed, in recording order.
    pub(crate) fn take(&self) -> Vec<ConfigIssue> {
        let mut out: Vec<ConfigIssue> = Vec::new();
        for i in self.issues.borrow_mut().drain(..) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

/// Where a table lives: the file (if any) and the dotted key path of the table in it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Loc {
    pub file: Option<PathBuf>,
    pub path: String,
}

impl Loc {
    pub(crate) fn new(file: Option<PathBuf>, path: impl Into<String>) -> Self {
        Self { file, path: path.into() }
    }
    /// The path of `key` inside this table.
    pub(crate) fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }
    /// The location of sub-table `key`.
    pub(crate) fn child(&self, key: &str) -> Loc {
        Loc { file: self.file.clone(), path: self.key(key) }
    }
}

/// Join a dotted path and a key.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else if key.starts_with('[') {
        format!("{path}{key}")
    } else {
        format!("{path}.{key}")
    }
}

/// The JSON type name used in messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "table",
    }
}

/// A value rendered short for a message (never used for secrets).
pub(crate) fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    };
    shorten(&s)
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Keys whose values are secrets: their values never appear in issues.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    k.contains("key") || k.contains("secret") || k.contains("passw") || k.contains("auth") || k == "token" || (k.ends_with("_token") && k != "first_token")
}

/// The closest known key to `unknown`, if one is close enough to be a plausible typo.
pub(crate) fn suggest<'k>(unknown: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let u = unknown.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for k in known {
        let d = strsim::damerau_levenshtein(&u, &k.to_ascii_lowercase());
        let sim = strsim::normalized_damerau_levenshtein(&u, &k.to_ascii_lowercase());
        let close = d <= 2 || sim >= 0.7 || (u.len() >= 4 && k.contains(u.as_str())) || (k.len() >= 4 && u.contains(k));
        if close && best.is_none_or(|(_, s)| sim > s) {
            best = Some((k, sim));
        }
    }
    best.map(|(k, _)| k)
}

/// " (did you mean `x`?)" or "".
pub(crate) fn did_you_mean<'k>(unknown: &str, known: impl IntoIterator<Item = &'k str>) -> String {
    match suggest(unknown, known) {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

/// A strict reader over one table. Ask for keys with the typed getters, then call [`Tbl::done`]
/// to report every key nobody asked for.
pub(crate) struct Tbl<'a> {
    sink: &'a Sink,
    pub loc: Loc,
    map: &'a Map<String, Value>,
    known: Vec<String>,
}

impl<'a> Tbl<'a> {
    pub(crate) fn new(sink: &'a Sink, loc: Loc, map: &'a Map<String, Value>) -> Self {
        Self { sink, loc, map, known: Vec::new() }
    }

    /// Read `v` as a table, or record a type error and return `None`.
    pub(crate) fn of(sink: &'a Sink, loc: Loc, v: &'a Value) -> Option<Self> {
        match v {
            Value::Object(m) => Some(Self::new(sink, loc, m)),
            other => {
                let key = loc.path.clone();
                sink.push(loc.file.as_deref(), &key, Some(show(other)), format!("expected table, found {}", type_name(other)));
                None
            }
        }
    }

    pub(crate) fn sink(&self) -> &'a Sink {
        self.sink
    }
    pub(crate) fn file(&self) -> Option<&Path> {
        self.loc.file.as_deref()
    }
    /// The raw map (for keys whose names are data, such as echelon names).
    pub(crate) fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// Record an error at `key` of this table.
    pub(crate) fn err(&self, key: &str, value: Option<&Value>, message: impl Into<String>) {
        let path = self.loc.key(key);
        let shown = value.map(|v| if is_secret_key(key) { "***".to_string() } else { show(v) });
        self.sink.push(self.file(), &path, shown, message);
    }

    /// Mark keys as accepted without reading them (keys of the original format that carry no
    /// meaning here).
    pub(crate) fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            if self.map.contains_key(*k) {
                log::debug!("config {}: ignoring key `{}`", self.loc.file.as_deref().map(|p| p.display().to_string()).unwrap_or_default(), self.loc.key(k));
            }
            self.known.push((*k).to_string());
        }
    }

    /// Mark one (data-named) key as known.
    pub(crate) fn mark(&mut self, key: &str) {
        self.known.push(key.to_string());
    }

    /// Whether `key` is present (null counts as absent). Marks it known.
    pub(crate) fn has(&mut self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The raw value at `key` (null counts as absent). Marks it known.
    pub(crate) fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.known.push(key.to_string());
        match self.map.get(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    /// The first present key of `keys` (aliases), with the name that was used.
    pub(crate) fn get_any(&mut self, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        let mut found = None;
        for k in keys {
            if let Some(v) = self.get(k) {
                if found.is_none() {
                    found = Some((*k, v));
                }
            }
        }
        found
    }

    fn type_err(&self, key: &str, v: &Value, expected: &str) {
        self.err(key, Some(v), format!("expected {expected}, found {}", type_name(v)));
    }

    /// A string at `key` (first present alias).
    pub(crate) fn str_any(&mut self, keys: &[&'static str]) -> Option<String> {
        let (k, v) = self.get_any(keys)?;
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.type_err(k, other, "string");
                None
            }
        }
    }
    pub(crate) fn str(&mut self, key: &'static str) -> Option<String> {
        self.str_any(&[key])
    }

    /// A boolean at `key`.
    pub(crate) fn bool(&mut self, key: &'static str) -> Option<bool> {
        let v = self.get(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.type_err(key, other, "boolean");
                None
            }
        }
    }

    /// An integer in `lo..=hi` at the first present alias of `keys`.
    pub(crate) fn uint_any(&mut self, keys: &[&'static str], lo: u64, hi: u64) -> Option<u32> {
        let (k, v) = self.get_any(keys)?;
        let hi = hi.min(u64::from(u32::MAX));
        match v {
            Value::Number(n) => match n.as_u64() {
                Some(x) if x >= lo && x <= hi => u32::try_from(x).ok(),
                Some(_) => {
                    self.err(k, Some(v), range_msg(lo as f64, hi as f64, false));
                    None
                }
                None if n.is_i64() => {
                    self.err(k, Some(v), range_msg(lo as f64, hi as f64, false));
                    None
                }
                None => {
                    self.type_err(k, v, "integer");
                    None
                }
            },
            other => {
                self.type_err(k, other, "integer");
                None
            }
        }
    }
    pub(crate) fn uint(&mut self, key: &'static str, lo: u64, hi: u64) -> Option<u32> {
        self.uint_any(&[key], lo, hi)
    }

    /// A number (integer or float) in the range at the first present alias of `keys`.
    /// `lo_exclusive` makes the lower bound exclusive (`> lo`).
    pub(crate) fn num_any(&mut self, keys: &[&'static str], lo: f64, hi: f64, lo_exclusive: bool) -> Option<f64> {
        let (k, v) = self.get_any(keys)?;
        match v.as_f64() {
            Some(x) if x.is_finite() && (if lo_exclusive { x > lo } else { x >= lo }) && x <= hi => Some(x),
            Some(_) => {
                self.err(k, Some(v), range_msg(lo, hi, lo_exclusive));
                None
            }
            None => {
                self.type_err(k, v, "number");
                None
            }
        }
    }
    pub(crate) fn num(&mut self, key: &'static str, lo: f64, hi: f64, lo_exclusive: bool) -> Option<f64> {
        self.num_any(&[key], lo, hi, lo_exclusive)
    }

    /// A duration in seconds (integer or float) in the range.
    pub(crate) fn secs_any(&mut self, keys: &[&'static str], lo: f64, hi: f64, lo_exclusive: bool) -> Option<Duration> {
        self.num_any(keys, lo, hi, lo_exclusive).and_then(|x| Duration::try_from_secs_f64(x).ok())
    }
    pub(crate) fn secs(&mut self, key: &'static str, lo: f64, hi: f64, lo_exclusive: bool) -> Option<Duration> {
        self.secs_any(&[key], lo, hi, lo_exclusive)
    }

    /// A string that must be one of `valid`.
    pub(crate) fn choice_any(&mut self, keys: &[&'static str], valid: &[&str]) -> Option<String> {
        let (k, v) = self.get_any(keys)?;
        match v {
            Value::String(s) if valid.contains(&s.as_str()) => Some(s.clone()),
            Value::String(s) => {
                let hint = did_you_mean(s, valid.iter().copied());
                self.err(k, Some(v), format!("invalid value{hint}; expected one of: {}", valid.join(", ")));
                None
            }
            other => {
                self.type_err(k, other, "string");
                None
            }
        }
    }
    pub(crate) fn choice(&mut self, key: &'static str, valid: &[&str]) -> Option<String> {
        self.choice_any(&[key], valid)
    }

    /// A list of strings; every bad element is reported with its index.
    pub(crate) fn str_list_any(&mut self, keys: &[&'static str]) -> Option<Vec<String>> {
        let (k, v) = self.get_any(keys)?;
        match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, it) in items.iter().enumerate() {
                    match it {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            ok = false;
                            self.type_err(&format!("{k}[{i}]"), other, "string");
                        }
                    }
                }
                ok.then_some(out)
            }
            other => {
                self.type_err(k, other, "array of strings");
                None
            }
        }
    }
    pub(crate) fn str_list(&mut self, key: &'static str) -> Option<Vec<String>> {
        self.str_list_any(&[key])
    }

    /// A sub-table at the first present alias of `keys`.
    pub(crate) fn table_any(&mut self, keys: &[&'static str]) -> Option<Tbl<'a>> {
        let (k, v) = self.get_any(keys)?;
        Tbl::of(self.sink, self.loc.child(k), v)
    }
    pub(crate) fn table(&mut self, key: &'static str) -> Option<Tbl<'a>> {
        self.table_any(&[key])
    }

    /// Report every key nobody asked for, with a suggestion when one is close: an error, or
    /// in the original YAML layout a warning (the key is ignored).
    pub(crate) fn done(self) {
        let lenient = self.sink.is_original(&self.loc);
        for (k, v) in self.map {
            if self.known.iter().any(|x| x == k) {
                continue;
            }
            let hint = did_you_mean(k, self.known.iter().map(String::as_str));
            if lenient {
                let shown = if is_secret_key(k) { "***".to_string() } else { show(v) };
                self.sink.note(self.file(), &self.loc.key(k), Some(shown), format!("unknown key `{k}`{hint}: ignored (the engine has no use for it)"));
            } else {
                self.err(k, Some(v), format!("unknown key `{k}`{hint}"));
            }
        }
    }
}

/// "must be between a and b" with the bound style.
pub(crate) fn range_msg(lo: f64, hi: f64, lo_exclusive: bool) -> String {
    let f = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    if hi >= u32::MAX as f64 || hi.is_infinite() {
        if lo_exclusive {
            format!("out of range: must be greater than {}", f(lo))
        } else {
            format!("out of range: must be at least {}", f(lo))
        }
    } else if lo_exclusive {
        format!("out of range: must be greater than {} and at most {}", f(lo), f(hi))
    } else {
        format!("out of range: must be between {} and {}", f(lo), f(hi))
    }
}
