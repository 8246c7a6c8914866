//! What the mock saw: per-model and total counters, the last request of each model, and the
//! per-model state the hot path needs (step cursors, rendered content).
//!
//! Success-path counting is lock-free (atomics); error outcomes take a small mutex.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use hyper::HeaderMap;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};

use super::script::Script;
use super::wire::Content;

/// Largest request body kept as "last request" per model.
const LAST_BODY_MAX: usize = 64 * 1024;

/// Headers never kept (they carry keys).
pub const AUTH_HEADERS: &[&str] = &["authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key"];

/// One set of counters (a model's, or the totals).
#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    status_200: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    client_disconnects: AtomicU64,
    probes: AtomicU64,
    /// Requests that arrived over HTTP/2 (the rest came over HTTP/1.1).
    http2_requests: AtomicU64,
    /// Outcomes other than `ok`, by name.
    faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Statuses other than 200.
    statuses: Mutex<BTreeMap<u16, u64>>,
}

impl Stats {
    fn outcome(&self, name: &'static str) {
        if name == "ok" {
            self.ok.fetch_add(1, Relaxed);
        } else {
            *self.faults.lock().entry(name).or_insert(0) += 1;
        }
    }
    fn status(&self, code: u16) {
        if code == 200 {
            self.status_200.fetch_add(1, Relaxed);
        } else {
            *self.statuses.lock().entry(code).or_insert(0) += 1;
        }
    }
    fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
    }
    fn leave(&self) {
        // Saturating: never wraps even if a reset raced with an in-flight request.
        let _ = self.in_flight.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
    fn clear(&self) {
        for a in [
            &self.requests,
            &self.ok,
            &self.status_200,
            &self.streams_started,
            &self.streams_completed,
            &self.client_disconnects,
            &self.probes,
            &self.http2_requests,
        ] {
            a.store(0, Relaxed);
        }
        self.max_in_flight.store(self.in_flight.load(Relaxed), Relaxed);
        self.faults.lock().clear();
        self.statuses.lock().clear();
    }
    fn snapshot(&self) -> Map<String, Value> {
        let mut faults: Map<String, Value> = Map::new();
        let ok = self.ok.load(Relaxed);
        if ok > 0 {
            faults.insert("ok".into(), ok.into());
        }
        for (k, v) in self.faults.lock().iter() {
            faults.insert((*k).into(), (*v).into());
        }
        let mut statuses: Map<String, Value> = Map::new();
        let s200 = self.status_200.load(Relaxed);
        if s200 > 0 {
            statuses.insert("200".into(), s200.into());
        }
        for (k, v) in self.statuses.lock().iter() {
            statuses.insert(k.to_string(), (*v).into());
        }
        let mut m = Map::new();
        m.insert("requests".into(), self.requests.load(Relaxed).into());
        m.insert("ok".into(), ok.into());
        m.insert("faults".into(), Value::Object(faults));
        m.insert("statuses".into(), Value::Object(statuses));
        m.insert("streams_started".into(), self.streams_started.load(Relaxed).into());
        m.insert("streams_completed".into(), self.streams_completed.load(Relaxed).into());
        m.insert("in_flight".into(), self.in_flight.load(Relaxed).into());
        m.insert("max_in_flight".into(), self.max_in_flight.load(Relaxed).into());
        m.insert("client_disconnects".into(), self.client_disconnects.load(Relaxed).into());
        m.insert("probes".into(), self.probes.load(Relaxed).into());
        m
    }
}

/// A step cursor: which script it counts for, and how many requests it has seen.
#[derive(Default)]
struct Cursor {
    script: u64,
    next: u64,
}

impl Cursor {
    fn take(&mut self, script: &Script) -> u64 {
        if self.script != script.id() {
            self.script = script.id();
            self.next = 0;
        }
        let n = self.next;
        self.next += 1;
        n
    }
}

/// Everything the mock keeps per model name.
pub struct ModelState {
    pub name: String,
    /// The name JSON-escaped with quotes, spliced into bodies.
    pub name_json: String,
    pub stats: Stats,
    cursor: Mutex<Cursor>,
    health_cursor: Mutex<Cursor>,
    content: Mutex<Option<Arc<Content>>>,
    last_body: Mutex<Option<Bytes>>,
    last_headers: Mutex<Option<HeaderMap>>,
}

impl ModelState {
    fn new(name: &str) -> Self {
        ModelState {
            name: name.to_string(),
            name_json: serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into()),
            stats: Stats::default(),
            cursor: Mutex::new(Cursor::default()),
            health_cursor: Mutex::new(Cursor::default()),
            content: Mutex::new(None),
            last_body: Mutex::new(None),
            last_headers: Mutex::new(None),
        }
    }

    /// The request index within `script`'s steps (restarts when the script changes).
    pub fn next_index(&self, script: &Script) -> u64 {
        if script.steps.is_empty() {
            return u64::MAX;
        }
        self.cursor.lock().take(script)
    }

    /// The probe index within a health script's steps.
    pub fn next_health_index(&self, script: &Script) -> u64 {
        if script.steps.is_empty() {
            return u64::MAX;
        }
        self.health_cursor.lock().take(script)
    }

    /// The rendered content for this model at this size, built once per (chars, chunks).
    pub fn content(&self, chars: usize, chunks: usize) -> Arc<Content> {
        let mut slot = self.content.lock();
        if let Some(c) = slot.as_ref() {
            if c.content_chars == chars && c.chunks_requested == chunks {
                return c.clone();
            }
        }
        let c = Arc::new(Content::new(&self.name, chars, chunks));
        *slot = Some(c.clone());
        c
    }

    /// Keep this request as the model's last one (headers must already be stripped of keys).
    pub fn remember(&self, body: &Bytes, headers: HeaderMap) {
        let kept = if body.len() > LAST_BODY_MAX { body.slice(..LAST_BODY_MAX) } else { body.clone() };
        *self.last_body.lock() = Some(kept);
        *self.last_headers.lock() = Some(headers);
    }

    fn reset(&self) {
        self.stats.clear();
        *self.cursor.lock() = Cursor::default();
        *self.health_cursor.lock() = Cursor::default();
        *self.last_body.lock() = None;
        *self.last_headers.lock() = None;
    }

    fn snapshot(&self) -> Value {
        let mut m = self.stats.snapshot();
        let body = self
            .last_body
            .lock()
            .as_ref()
            .map(|b| serde_json::from_slice::<Value>(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())));
        let headers = self.last_headers.lock().as_ref().map(|h| {
            let mut o = Map::new();
            for (k, v) in h {
                o.insert(k.as_str().to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
            }
            Value::Object(o)
        });
        m.insert("last_request".into(), json!({"body": body, "headers": headers}));
        Value::Object(m)
    }
}

/// What the mock saw of connections (totals only).
#[derive(Default)]
pub struct ConnStats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Connections open now (never reset).
    pub open_connections: AtomicU64,
    /// Connections whose client spoke HTTP/2 (h2c or TLS).
    pub http2_connections: AtomicU64,
    /// Connections that completed a TLS handshake.
    pub tls_connections: AtomicU64,
    /// Connections the mock told to go away (GOAWAY; HTTP/1.1: closed after the response).
    pub goaways: AtomicU64,
    /// RST_STREAM frames received from clients.
    pub rst_streams: AtomicU64,
    /// PING frames (not acknowledgements) received from clients.
    pub pings: AtomicU64,
    /// Connections the mock reset (the `reset` fault).
    pub connection_resets: AtomicU64,
    /// The most requests in flight at once on one connection.
    pub max_streams_per_connection: AtomicU64,
}

impl ConnStats {
    fn clear(&self) {
        for a in [
            &self.connections,
            &self.http2_connections,
            &self.tls_connections,
            &self.goaways,
            &self.rst_streams,
            &self.pings,
            &self.connection_resets,
            &self.max_streams_per_connection,
        ] {
            a.store(0, Relaxed);
        }
    }

    fn snapshot(&self, m: &mut Map<String, Value>) {
        for (k, a) in [
            ("connections", &self.connections),
            ("open_connections", &self.open_connections),
            ("http2_connections", &self.http2_connections),
            ("tls_connections", &self.tls_connections),
            ("goaways", &self.goaways),
            ("rst_streams", &self.rst_streams),
            ("pings", &self.pings),
            ("connection_resets", &self.connection_resets),
            ("max_streams_per_connection", &self.max_streams_per_connection),
        ] {
            m.insert(k.into(), a.load(Relaxed).into());
        }
    }
}

/// All counters of one server.
#[derive(Default)]
pub struct Counters {
    pub total: Stats,
    /// Connection-level counters.
    pub conns: ConnStats,
    models: RwLock<HashMap<String, Arc<ModelState>>>,
    global_health_cursor: Mutex<Cursor>,
    /// Set while shutting down: connections dropped by the server are not client disconnects.
    pub shutting_down: AtomicBool,
    /// When each chat request arrived (Unix seconds) and for which model, oldest first, at
    /// most [`LOG_MAX`]: what tests measure rates and reaction times against.
    log: Mutex<VecDeque<(f64, Arc<ModelState>)>>,
}

/// Chat requests kept in the request log (the oldest go first).
pub const LOG_MAX: usize = 100_000;

impl Counters {
    /// The state of `model`, created on first use.
    pub fn model(&self, model: &str) -> Arc<ModelState> {
        if let Some(m) = self.models.read().get(model) {
            return m.clone();
        }
        self.models.write().entry(model.to_string()).or_insert_with(|| Arc::new(ModelState::new(model))).clone()
    }

    /// Count a chat request to `model` (or to no model when the body named none).
    pub fn request(&self, model: Option<&Arc<ModelState>>) {
        self.total.requests.fetch_add(1, Relaxed);
        if let Some(m) = model {
            m.stats.requests.fetch_add(1, Relaxed);
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let mut log = self.log.lock();
            if log.len() >= LOG_MAX {
                log.pop_front();
            }
            log.push_back((at, m.clone()));
        }
    }

    /// The request log as JSON: `[[unix_seconds, model], ...]`, oldest first.
    pub fn request_log(&self) -> Value {
        Value::Array(self.log.lock().iter().map(|(t, m)| json!([t, m.name])).collect())
    }

    /// Count a request (of any path) that arrived over HTTP/2; totals only.
    pub fn http2_request(&self) {
        self.total.http2_requests.fetch_add(1, Relaxed);
    }

    /// Count an outcome by fault name (`ok`, `server_error`, `hang`, …).
    pub fn outcome(&self, model: Option<&ModelState>, name: &'static str) {
        self.total.outcome(name);
        if let Some(m) = model {
            m.stats.outcome(name);
        }
    }

    /// Count a response status.
    pub fn status(&self, model: Option<&ModelState>, code: u16) {
        self.total.status(code);
        if let Some(m) = model {
            m.stats.status(code);
        }
    }

    /// Count a health probe (per model when the path named one, else only in the totals).
    pub fn probe(&self, model: Option<&ModelState>) {
        self.total.probes.fetch_add(1, Relaxed);
        if let Some(m) = model {
            m.stats.probes.fetch_add(1, Relaxed);
        }
    }

    /// Count a started stream.
    pub fn stream_started(&self, model: &ModelState) {
        self.total.streams_started.fetch_add(1, Relaxed);
        model.stats.streams_started.fetch_add(1, Relaxed);
    }

    /// The probe index within the server-wide health script.
    pub fn next_global_health_index(&self, script: &Script) -> u64 {
        if script.steps.is_empty() {
            return u64::MAX;
        }
        self.global_health_cursor.lock().take(script)
    }

    /// Zero every counter and restart every step cursor. Requests in flight stay counted as
    /// in flight.
    pub fn reset(&self) {
        self.total.clear();
        self.log.lock().clear();
        self.conns.clear();
        *self.global_health_cursor.lock() = Cursor::default();
        for m in self.models.read().values() {
            m.reset();
        }
    }

    /// The counters as JSON: the totals at the top level plus `models: {name: {...}}`.
    pub fn snapshot(&self) -> Value {
        let mut top = self.total.snapshot();
        top.insert("http2_requests".into(), self.total.http2_requests.load(Relaxed).into());
        self.conns.snapshot(&mut top);
        let mut models = Map::new();
        let mut list: Vec<Arc<ModelState>> = self.models.read().values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for m in list {
            models.insert(m.name.clone(), m.snapshot());
        }
        top.insert("models".into(), Value::Object(models));
        Value::Object(top)
    }

    /// Names of every model seen so far.
    pub fn model_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.models.read().keys().cloned().collect();
        v.sort();
        v
    }
}

/// Tracks one chat request while it runs: in-flight counts, and whether it ended because the
/// client went away (dropped before [`RequestGuard::finish`]).
pub struct RequestGuard {
    counters: Arc<Counters>,
    model: Arc<ModelState>,
    finished: bool,
    stream: bool,
    /// Set when the mock itself dropped the request's connection (a `reset` on another
    /// stream of it): then the request did not end because the client went away.
    server_closed: Option<Arc<AtomicBool>>,
}

impl RequestGuard {
    /// Enter a request of `model`.
    pub fn new(counters: Arc<Counters>, model: Arc<ModelState>) -> Self {
        counters.total.enter();
        model.stats.enter();
        RequestGuard { counters, model, finished: false, stream: false, server_closed: None }
    }

    /// Do not count a disconnect once `flag` is set (the mock closed the connection).
    pub fn server_closed_when(&mut self, flag: Arc<AtomicBool>) {
        self.server_closed = Some(flag);
    }

    /// Mark the request as a started stream.
    pub fn streaming(&mut self) {
        if !self.stream {
            self.stream = true;
            self.counters.stream_started(&self.model);
        }
    }

    /// The server answered fully (or cut the connection itself): not a client disconnect.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The stream ran to its terminal event.
    pub fn complete_stream(&mut self) {
        self.finished = true;
        if self.stream {
            self.counters.total.streams_completed.fetch_add(1, Relaxed);
            self.model.stats.streams_completed.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.counters.total.leave();
        self.model.stats.leave();
        let by_server = self.server_closed.as_ref().is_some_and(|f| f.load(Relaxed));
        if !self.finished && !by_server && !self.counters.shutting_down.load(Relaxed) {
            self.counters.total.client_disconnects.fetch_add(1, Relaxed);
            self.model.stats.client_disconnects.fetch_add(1, Relaxed);
            log::debug!("mock: client went away during a request to {}", self.model.name);
        }
    }
}
