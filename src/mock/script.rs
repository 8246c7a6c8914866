//! Behaviour scripts: what the mock does for each request to a model, parsed from JSON.
//!
//! The JSON shape is documented on [`crate::mock`]. Parsing walks the JSON by hand (rather than
//! derive) so an unknown key is reported with its path and a "did you mean" hint, and so the
//! flat step form (`{"fault": "server_error", "status": 503, "times": 3}`) stays flat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

/// Default length of the generated content, in characters.
pub const DEFAULT_CONTENT_CHARS: usize = 200;
/// Default number of streamed content chunks.
pub const DEFAULT_CHUNKS: usize = 8;

/// Timing and shape of a successful answer. Every field has a default, so `{}` is a valid script.
#[derive(Clone, Debug, PartialEq)]
pub struct Behaviour {
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Streaming: delay between the headers and the first chunk.
    pub ttft_ms: u64,
    /// Streaming: delay between two chunks (ignored when `tokens_per_second` is set).
    pub chunk_delay_ms: u64,
    /// Streaming: pace chunks so the words arrive at this rate.
    pub tokens_per_second: Option<f64>,
    /// Length of the generated content in characters.
    pub content_chars: usize,
    /// Number of streamed content chunks.
    pub chunks: usize,
    /// Answer with a call of the request's first tool (when the request has tools).
    pub tool_call: bool,
    /// Gemini: put a `thoughtSignature` on the first function call of an answer, and refuse
    /// requests whose current turn sends a function call back without it (as Gemini 3 does).
    pub thought_signature: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            ttft_ms: 0,
            chunk_delay_ms: 0,
            tokens_per_second: None,
            content_chars: DEFAULT_CONTENT_CHARS,
            chunks: DEFAULT_CHUNKS,
            tool_call: false,
            thought_signature: false,
        }
    }
}

impl Behaviour {
    /// Delay between chunks for an answer of `words` words split in `chunks` pieces.
    pub fn chunk_delay(&self, words: usize, chunks: usize) -> Duration {
        match self.tokens_per_second {
            Some(tps) if tps > 0.0 => {
                let per_chunk = words.max(1) as f64 / chunks.max(1) as f64;
                Duration::from_secs_f64((per_chunk / tps).min(3600.0))
            }
            _ => Duration::from_millis(self.chunk_delay_ms),
        }
    }

    /// True when a stream has no delay at all and can be sent as one pre-rendered body.
    pub fn is_instant(&self) -> bool {
        self.ttft_ms == 0 && self.chunk_delay_ms == 0 && self.tokens_per_second.is_none()
    }
}

/// Overrides of [`Behaviour`] carried by a step (unset fields keep the script's value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BehaviourPatch {
    pub latency_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub chunk_delay_ms: Option<u64>,
    pub tokens_per_second: Option<f64>,
    pub content_chars: Option<usize>,
    pub chunks: Option<usize>,
    pub tool_call: Option<bool>,
    pub thought_signature: Option<bool>,
}

impl BehaviourPatch {
    fn apply(&self, b: &Behaviour) -> Behaviour {
        Behaviour {
            latency_ms: self.latency_ms.unwrap_or(b.latency_ms),
            ttft_ms: self.ttft_ms.unwrap_or(b.ttft_ms),
            chunk_delay_ms: self.chunk_delay_ms.unwrap_or(b.chunk_delay_ms),
            tokens_per_second: self.tokens_per_second.or(b.tokens_per_second),
            content_chars: self.content_chars.unwrap_or(b.content_chars),
            chunks: self.chunks.unwrap_or(b.chunks),
            tool_call: self.tool_call.unwrap_or(b.tool_call),
            thought_signature: self.thought_signature.unwrap_or(b.thought_signature),
        }
    }
    fn is_empty(&self) -> bool {
        *self == BehaviourPatch::default()
    }
}

/// One way of (mis)behaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    Ok,
    /// Answer with this HTTP status and the provider-appropriate error body.
    Status(u16),
    /// 429 in the provider's shape.
    RateLimit,
    /// 5xx (500 unless a status is given) in the provider's shape.
    ServerError(u16),
    /// Anthropic 529 `overloaded_error`; OpenAI and Gemini 503 "overloaded".
    Overloaded,
    /// Read the request and never answer, until the client goes away.
    Hang,
    /// Close the connection (TCP RST) without answering; over HTTP/2 every other stream on
    /// that connection ends with it.
    Reset,
    /// Answer normally, and send GOAWAY on this request's connection: the streams it accepted
    /// (this one included) finish, new ones must go elsewhere.
    GoAway,
    /// Stream: send N content chunks then cut the connection. Non-stream: announce the full
    /// Content-Length, send part of the body, cut.
    CutAfter(u32),
    /// Stream: send N content chunks then go silent until the client goes away.
    StallAfter(u32),
    /// 200 whose body (or whose SSE data after N good chunks) is not valid JSON.
    Malformed(u32),
    /// Stream: send N content chunks, then end as the provider ends a response its content
    /// filter stopped (OpenAI `finish_reason: content_filter`, Anthropic `stop_reason:
    /// refusal`, Gemini `finishReason: SAFETY`). Non-stream: the content-filter refusal.
    FilterAfter(u32),
    /// The provider's context-length error.
    ContextWindow,
    /// The provider's content-filter refusal.
    ContentFilter,
    /// 401 in the provider's shape (Gemini: its 400 `API_KEY_INVALID`).
    Auth,
    /// The account is out of quota or credit: OpenAI 429 `insufficient_quota`, Anthropic 402
    /// `billing_error`, Gemini 429 `RESOURCE_EXHAUSTED` with a daily `QuotaFailure`.
    Quota,
    /// The provider does not serve the model: 404 in the provider's shape.
    ModelNotFound,
    /// 200, N content chunks (stream) or the text (non-stream), then a refusal: OpenAI
    /// `message.refusal`, Anthropic `stop_reason: refusal`, Gemini `finishReason: SAFETY`.
    Refusal(u32),
}

impl Fault {
    /// Stable name used in counters (`faults` map) and accepted in scripts.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Status(_) => "status",
            Fault::RateLimit => "rate_limit",
            Fault::ServerError(_) => "server_error",
            Fault::Overloaded => "overloaded",
            Fault::Hang => "hang",
            Fault::Reset => "reset",
            Fault::GoAway => "goaway",
            Fault::CutAfter(_) => "cut_after",
            Fault::StallAfter(_) => "stall_after",
            Fault::Malformed(_) => "malformed",
            Fault::FilterAfter(_) => "filter_after",
            Fault::ContextWindow => "context_window",
            Fault::ContentFilter => "content_filter",
            Fault::Auth => "auth",
            Fault::Quota => "quota",
            Fault::ModelNotFound => "model_not_found",
            Fault::Refusal(_) => "refusal",
        }
    }
}

const FAULT_NAMES: &[&str] = &[
    "ok",
    "status",
    "rate_limit",
    "server_error",
    "overloaded",
    "hang",
    "reset",
    "goaway",
    "cut_after",
    "stall_after",
    "malformed",
    "filter_after",
    "context_window",
    "content_filter",
    "auth",
    "down",
    "quota",
    "model_not_found",
    "refusal",
];

/// A fault plus the knobs of its error response.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    pub fault: Fault,
    /// Replaces the provider-appropriate error body.
    pub body: Option<Bytes>,
    /// `retry-after` header value (seconds or an HTTP date), sent as given.
    pub retry_after: Option<String>,
    /// `retry-after-ms` header value.
    pub retry_after_ms: Option<u64>,
    /// Gemini: `RetryInfo.retryDelay` in the error details (`"12s"`; a number is seconds).
    pub retry_delay: Option<String>,
    /// Content type of an overriding `body` (`text/event-stream` sends it as a stream).
    pub content_type: Option<String>,
}

impl FaultSpec {
    /// A fault with no body override and no retry headers.
    pub fn new(fault: Fault) -> Self {
        Self { fault, body: None, retry_after: None, retry_after_ms: None, retry_delay: None, content_type: None }
    }
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self::new(Fault::Ok)
    }
}

/// One step of a script: a fault and behaviour overrides, used for `times` requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub fault: FaultSpec,
    pub patch: BehaviourPatch,
    /// How many requests this step answers (at least 1).
    pub times: u64,
}

static NEXT_SCRIPT_ID: AtomicU64 = AtomicU64::new(1);

/// What the mock does for requests to one model (or, as `"*"`, to every unscripted model).
///
/// Build one with [`Script::from_json`] (the documented JSON shape) or the small constructors.
/// Each script value has its own identity: installing a script restarts its steps.
#[derive(Debug)]
pub struct Script {
    /// Behaviour for every request unless a step overrides it.
    pub behaviour: Behaviour,
    /// Steps consumed in order, one request each `times`.
    pub steps: Vec<Step>,
    /// What happens once the steps are used up (the script's own `fault` when not given).
    pub then: Step,
    /// Requests whose estimated prompt tokens exceed this get the context-window error.
    pub max_prompt_tokens: Option<u64>,
    /// What health probes naming this model get (steps work the same way).
    pub health: Option<Box<Script>>,
    id: u64,
}

impl Clone for Script {
    fn clone(&self) -> Self {
        Script {
            behaviour: self.behaviour.clone(),
            steps: self.steps.clone(),
            then: self.then.clone(),
            max_prompt_tokens: self.max_prompt_tokens,
            health: self.health.clone(),
            id: NEXT_SCRIPT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Default for Script {
    fn default() -> Self {
        Self::with_fault(FaultSpec::default())
    }
}

impl Script {
    /// A script that always answers with `fault` (default behaviour otherwise).
    pub fn with_fault(fault: FaultSpec) -> Self {
        Script {
            behaviour: Behaviour::default(),
            steps: Vec::new(),
            then: Step { fault, patch: BehaviourPatch::default(), times: 1 },
            max_prompt_tokens: None,
            health: None,
            id: NEXT_SCRIPT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A script that always answers normally with `behaviour`.
    pub fn with_behaviour(behaviour: Behaviour) -> Self {
        Script { behaviour, ..Self::default() }
    }

    /// Parse the documented JSON shape. Errors name the offending key path.
    pub fn from_json(v: &Value) -> Result<Script, String> {
        parse_script(v, "script")
    }

    /// Identity of this script value; step cursors restart when it changes.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The step answering request number `index` (0-based) of this script.
    pub fn step_at(&self, index: u64) -> &Step {
        let mut left = index;
        for s in &self.steps {
            if left < s.times {
                return s;
            }
            left -= s.times;
        }
        &self.then
    }

    /// Total number of requests the steps cover.
    pub fn steps_len(&self) -> u64 {
        self.steps.iter().map(|s| s.times).sum()
    }

    /// The behaviour and fault for request number `index`.
    pub fn resolve(&self, index: u64) -> (Behaviour, &FaultSpec) {
        let step = self.step_at(index);
        let b = if step.patch.is_empty() { self.behaviour.clone() } else { step.patch.apply(&self.behaviour) };
        (b, &step.fault)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

const BEHAVIOUR_KEYS: &[&str] = &["latency_ms", "ttft_ms", "chunk_delay_ms", "tokens_per_second", "content_chars", "chunks", "tool_call", "thought_signature"];
const FAULT_KEYS: &[&str] =
    &["fault", "status", "code", "body", "retry_after", "retry_after_ms", "retry_delay", "content_type", "after", "n", "cut_after", "stall_after"];
const SCRIPT_KEYS: &[&str] = &["steps", "then", "max_prompt_tokens", "health"];

fn unknown_key(path: &str, key: &str, allowed: &[&[&str]]) -> String {
    let best = allowed
        .iter()
        .flat_map(|l| l.iter())
        .map(|k| (strsim::jaro_winkler(k, key), *k))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match best {
        Some((_, k)) => format!("{path}.{key}: unknown key (did you mean `{k}`?)"),
        None => format!("{path}.{key}: unknown key"),
    }
}

fn as_u64(v: &Value, path: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
            .ok_or_else(|| format!("{path}: expected a non-negative integer, got {n}")),
        other => Err(format!("{path}: expected a non-negative integer, got {other}")),
    }
}

fn as_u32(v: &Value, path: &str) -> Result<u32, String> {
    let n = as_u64(v, path)?;
    u32::try_from(n).map_err(|_| format!("{path}: {n} is too large"))
}

fn as_f64(v: &Value, path: &str) -> Result<f64, String> {
    v.as_f64().filter(|f| f.is_finite() && *f >= 0.0).ok_or_else(|| format!("{path}: expected a non-negative number, got {v}"))
}

fn as_bool(v: &Value, path: &str) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("{path}: expected true or false, got {v}"))
}

/// Behaviour keys of an object into a patch.
fn parse_patch(m: &Map<String, Value>, path: &str) -> Result<BehaviourPatch, String> {
    let mut p = BehaviourPatch::default();
    for (k, v) in m {
        let kp = format!("{path}.{k}");
        match k.as_str() {
            "latency_ms" => p.latency_ms = Some(as_u64(v, &kp)?),
            "ttft_ms" => p.ttft_ms = Some(as_u64(v, &kp)?),
            "chunk_delay_ms" => p.chunk_delay_ms = Some(as_u64(v, &kp)?),
            "tokens_per_second" if !v.is_null() => p.tokens_per_second = Some(as_f64(v, &kp)?),
            "content_chars" => p.content_chars = Some(as_u64(v, &kp)? as usize),
            "chunks" => {
                let n = as_u64(v, &kp)? as usize;
                if n == 0 {
                    return Err(format!("{kp}: must be at least 1"));
                }
                p.chunks = Some(n)
            }
            "tool_call" => p.tool_call = Some(as_bool(v, &kp)?),
            "thought_signature" => p.thought_signature = Some(as_bool(v, &kp)?),
            _ => {}
        }
    }
    Ok(p)
}

/// Fault keys of an object (the flat form) into a fault spec.
fn parse_fault_obj(m: &Map<String, Value>, path: &str) -> Result<FaultSpec, String> {
    let status = match m.get("status").or_else(|| m.get("code")) {
        Some(v) => {
            let n = as_u64(v, &format!("{path}.status"))?;
            if !(100..=999).contains(&n) {
                return Err(format!("{path}.status: {n} is not an HTTP status code"));
            }
            Some(n as u16)
        }
        None => None,
    };
    let after = match m.get("after").or_else(|| m.get("n")) {
        Some(v) => Some(as_u32(v, &format!("{path}.after"))?),
        None => None,
    };
    let name: Option<&str> = match m.get("fault") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => return Err(format!("{path}.fault: expected a fault name string, got {other}")),
        None => None,
    };
    let fault = match (name, m.get("cut_after"), m.get("stall_after")) {
        (None, Some(v), None) => Fault::CutAfter(as_u32(v, &format!("{path}.cut_after"))?),
        (None, None, Some(v)) => Fault::StallAfter(as_u32(v, &format!("{path}.stall_after"))?),
        (None, None, None) => match status {
            Some(code) => Fault::Status(code),
            None => Fault::Ok,
        },
        (Some(n), None, None) => fault_from_name(n, status, after, path)?,
        _ => return Err(format!("{path}: give one of `fault`, `cut_after`, `stall_after`")),
    };
    let body = match m.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Bytes::from(s.clone())),
        Some(other) => Some(Bytes::from(other.to_string())),
    };
    let retry_after = match m.get("retry_after") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(format!("{path}.retry_after: control characters are not allowed in a header"));
            }
            Some(s.clone())
        }
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(format!("{path}.retry_after: expected a string or number, got {other}")),
    };
    let retry_after_ms = match m.get("retry_after_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_u64(v, &format!("{path}.retry_after_ms"))?),
    };
    let header_text = |key: &str| -> Result<Option<String>, String> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.bytes().any(|b| b < 0x20 || b == 0x7f) => Err(format!("{path}.{key}: control characters are not allowed")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{path}.{key}: expected a string, got {other}")),
        }
    };
    let retry_delay = match m.get("retry_delay") {
        Some(Value::Number(n)) => Some(format!("{}s", n)),
        _ => header_text("retry_delay")?,
    };
    let content_type = header_text("content_type")?;
    Ok(FaultSpec { fault, body, retry_after, retry_after_ms, retry_delay, content_type })
}

fn fault_from_name(name: &str, status: Option<u16>, after: Option<u32>, path: &str) -> Result<Fault, String> {
    Ok(match name {
        "ok" => Fault::Ok,
        "status" => Fault::Status(status.ok_or_else(|| format!("{path}: fault `status` needs `status` (the HTTP code)"))?),
        "rate_limit" => Fault::RateLimit,
        "server_error" => Fault::ServerError(status.unwrap_or(500)),
        "down" => Fault::ServerError(status.unwrap_or(503)),
        "overloaded" => Fault::Overloaded,
        "hang" => Fault::Hang,
        "reset" => Fault::Reset,
        "goaway" => Fault::GoAway,
        "cut_after" => Fault::CutAfter(after.unwrap_or(0)),
        "stall_after" => Fault::StallAfter(after.unwrap_or(0)),
        "malformed" => Fault::Malformed(after.unwrap_or(0)),
        "filter_after" => Fault::FilterAfter(after.unwrap_or(0)),
        "context_window" => Fault::ContextWindow,
        "content_filter" => Fault::ContentFilter,
        "auth" => Fault::Auth,
        "quota" => Fault::Quota,
        "model_not_found" => Fault::ModelNotFound,
        "refusal" => Fault::Refusal(after.unwrap_or(1)),
        other => {
            let hint = FAULT_NAMES
                .iter()
                .map(|k| (strsim::jaro_winkler(k, other), *k))
                .filter(|(s, _)| *s > 0.8)
                .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
                .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(format!("{path}.fault: unknown fault `{other}`{hint}; known: {}", FAULT_NAMES.join(", ")));
        }
    })
}

/// A step: a fault name string, or the flat object form.
fn parse_step(v: &Value, path: &str, allow_times: bool) -> Result<Step, String> {
    match v {
        Value::String(name) => Ok(Step { fault: FaultSpec::new(fault_from_name(name, None, None, path)?), patch: BehaviourPatch::default(), times: 1 }),
        Value::Object(m) => {
            for k in m.keys() {
                let known = BEHAVIOUR_KEYS.contains(&k.as_str()) || FAULT_KEYS.contains(&k.as_str()) || (allow_times && k == "times");
                if !known {
                    return Err(unknown_key(path, k, &[BEHAVIOUR_KEYS, FAULT_KEYS, &["times"]]));
                }
            }
            let times = match m.get("times") {
                Some(t) => as_u64(t, &format!("{path}.times"))?,
                None => 1,
            };
            if times == 0 {
                return Err(format!("{path}.times: must be at least 1"));
            }
            Ok(Step { fault: parse_fault_obj(m, path)?, patch: parse_patch(m, path)?, times })
        }
        other => Err(format!("{path}: expected a fault name or an object, got {other}")),
    }
}

fn parse_script(v: &Value, path: &str) -> Result<Script, String> {
    let m = match v {
        Value::String(_) => {
            let step = parse_step(v, path, false)?;
            return Ok(Script::with_fault(step.fault));
        }
        Value::Object(m) => m,
        Value::Null => return Ok(Script::default()),
        other => return Err(format!("{path}: expected an object or a fault name, got {other}")),
    };
    for k in m.keys() {
        let k = k.as_str();
        if !(BEHAVIOUR_KEYS.contains(&k) || FAULT_KEYS.contains(&k) || SCRIPT_KEYS.contains(&k)) {
            return Err(unknown_key(path, k, &[BEHAVIOUR_KEYS, FAULT_KEYS, SCRIPT_KEYS]));
        }
    }
    let behaviour = parse_patch(m, path)?.apply(&Behaviour::default());
    let own_fault = parse_fault_obj(m, path)?;
    let steps = match m.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, s)| parse_step(s, &format!("{path}.steps[{i}]"), true)).collect::<Result<Vec<_>, _>>()?
        }
        Some(other) => return Err(format!("{path}.steps: expected a list, got {other}")),
    };
    let then = match m.get("then") {
        None | Some(Value::Null) => Step { fault: own_fault, patch: BehaviourPatch::default(), times: 1 },
        Some(t) => parse_step(t, &format!("{path}.then"), false)?,
    };
    let max_prompt_tokens = match m.get("max_prompt_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_u64(v, &format!("{path}.max_prompt_tokens"))?),
    };
    let health = match m.get("health") {
        None | Some(Value::Null) => None,
        Some(h) => Some(Box::new(parse_script(h, &format!("{path}.health"))?)),
    };
    Ok(Script { behaviour, steps, then, max_prompt_tokens, health, id: NEXT_SCRIPT_ID.fetch_add(1, Ordering::Relaxed) })
}

/// Parse a `{model: script}` map (the control-plane and `set_scripts` shape).
pub fn parse_script_map(v: &Value) -> Result<Vec<(String, Script)>, String> {
    let m = v.as_object().ok_or_else(|| format!("scripts: expected an object {{model: script}}, got {v}"))?;
    m.iter().map(|(model, s)| Ok((model.clone(), parse_script(s, &format!("scripts.{model}"))?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_then_fallback() {
        let s = Script::from_json(&json!({
            "content_chars": 50,
            "steps": [{"fault": "server_error", "status": 503, "times": 2}, "hang"],
            "then": {"fault": "ok", "chunks": 3}
        }))
        .unwrap();
        assert_eq!(s.resolve(0).1.fault, Fault::ServerError(503));
        assert_eq!(s.resolve(1).1.fault, Fault::ServerError(503));
        assert_eq!(s.resolve(2).1.fault, Fault::Hang);
        let (b, f) = s.resolve(3);
        assert_eq!(f.fault, Fault::Ok);
        assert_eq!((b.content_chars, b.chunks), (50, 3));
    }

    #[test]
    fn shorthand_and_errors() {
        let s = Script::from_json(&json!({"cut_after": 2})).unwrap();
        assert_eq!(s.resolve(0).1.fault, Fault::CutAfter(2));
        let s = Script::from_json(&json!("rate_limit")).unwrap();
        assert_eq!(s.resolve(9).1.fault, Fault::RateLimit);
        let e = Script::from_json(&json!({"latncy_ms": 5})).unwrap_err();
        assert!(e.contains("latncy_ms") && e.contains("latency_ms"), "{e}");
        let e = Script::from_json(&json!({"steps": [{"fault": "server_eror"}]})).unwrap_err();
        assert!(e.contains("steps[0]") && e.contains("server_error"), "{e}");
        let e = Script::from_json(&json!({"fault": "status"})).unwrap_err();
        assert!(e.contains("needs `status`"), "{e}");
        assert!(Script::from_json(&json!({"steps": [{"times": 0}]})).is_err());
        assert!(Script::from_json(&json!({"chunks": 0})).is_err());
        assert!(Script::from_json(&json!({"retry_after": "1\r\nx: y", "fault": "rate_limit"})).is_err());
    }

    #[test]
    fn retry_after_forms() {
        let s = Script::from_json(&json!({"fault": "rate_limit", "retry_after": 2, "retry_after_ms": 1500})).unwrap();
        let f = s.resolve(0).1;
        assert_eq!(f.retry_after.as_deref(), Some("2"));
        assert_eq!(f.retry_after_ms, Some(1500));
    }
}
