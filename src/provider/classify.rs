//! Turning HTTP statuses, provider error bodies and transport failures into [`Error`]s.
//!
//! Every message built here is short ("<label>: <provider message>"), truncated, and passed
//! through [`redact`] with the model's key, because providers echo keys back in error bodies.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::transport::SendError;
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::secret::{redact, Secret};

/// Longest provider message kept in an error.
pub const MAX_MESSAGE: usize = 300;

/// Who an error is about (for messages) and the key that must never appear in them.
#[derive(Clone, Copy, Debug)]
pub struct ErrCtx<'a> {
    /// `"<provider>/<model>"`.
    pub label: &'a str,
    pub secret: &'a Secret,
}

impl ErrCtx<'_> {
    /// An error of `kind` whose message is `"<label>: <detail>"`, truncated and redacted.
    pub fn error(&self, kind: ErrorKind, detail: &str) -> Error {
        Error::new(kind, self.message(detail))
    }

    /// `"<label>: <detail>"`, truncated and redacted.
    pub fn message(&self, detail: &str) -> String {
        // Redact before truncating so a key cut in half by the truncation cannot survive.
        let clean = redact(detail, &[self.secret]);
        redact(&format!("{}: {}", self.label, truncate(&clean, MAX_MESSAGE)), &[self.secret])
    }
}

/// `s` cut to at most `max` characters (on a char boundary), with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The provider's request id from the response headers (`x-request-id`, `request-id`).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "request-id", "x-goog-request-id"].iter().find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// The longest wait any provider hint is taken at: Retry-After in seconds or as an HTTP date,
/// `retry-after-ms` and Gemini's `RetryInfo.retryDelay` are all capped here, so a hint far in
/// the future (an HTTP date in year 9999) cannot overflow the arithmetic done with it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Retry-After hint: `retry-after-ms` (milliseconds), else `retry-after` as seconds (fractions
/// allowed) or an HTTP date (a past date gives zero). Garbage gives `None`; every form is capped
/// at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()) {
        if let Some(d) = parse_seconds(ms.trim()).map(|s| s / 1000.0).and_then(to_duration) {
            return Some(d);
        }
    }
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Some(d) = parse_seconds(v).and_then(to_duration) {
        return Some(d);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

fn parse_seconds(v: &str) -> Option<f64> {
    let s: f64 = v.parse().ok()?;
    (s.is_finite() && s >= 0.0).then_some(s)
}

fn to_duration(secs: f64) -> Option<Duration> {
    // Capped before converting, so `Duration::from_secs_f64` cannot overflow.
    Some(Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// A protobuf JSON duration (`"38s"`, `"0.250s"`), as Gemini sends `RetryInfo.retryDelay`.
pub fn proto_duration(v: &str) -> Option<Duration> {
    parse_seconds(v.trim().strip_suffix('s')?).and_then(to_duration)
}

/// What a provider error body says, reduced to what classification needs. OpenAI, Anthropic
/// and Gemini all nest their error under `error`:
///
/// - OpenAI: `{"error": {"message", "type", "code", "param"}}`
/// - Anthropic: `{"type": "error", "error": {"type", "message", "details": {"error_code"}}}`
/// - Gemini: `{"error": {"code": 429, "message", "status": "RESOURCE_EXHAUSTED", "details": [
///   {"@type": "…google.rpc.ErrorInfo", "reason"}, {"@type": "…QuotaFailure", "violations"},
///   {"@type": "…google.rpc.RetryInfo", "retryDelay": "38s"}]}}`
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorInfo {
    /// The `type`, `code` and `status` words, space-separated.
    pub code: String,
    pub message: String,
    /// Stable cause codes: Anthropic `details.error_code`, Gemini `ErrorInfo.reason`s.
    pub reasons: Vec<String>,
    /// A numeric `error.code` (Gemini puts the HTTP status there, also inside streams).
    pub numeric: Option<u16>,
    /// Gemini `RetryInfo.retryDelay`.
    pub retry_delay: Option<Duration>,
    /// Gemini `QuotaFailure`: a violated quota that only resets daily, or whose limit is zero
    /// (the model is not available on the account's tier at all).
    pub exhausted_quota: bool,
}

/// The error `type`/`code`/`status` and `message` of a provider error body. Non-JSON bodies
/// give their text as the message.
pub fn body_error(body: &[u8]) -> (String, String) {
    let i = body_info(body);
    (i.code, i.message)
}

/// Like [`body_error`] for an already parsed value (also used for in-stream error events).
pub fn json_error(v: &Value) -> (String, String) {
    let i = error_info(v);
    (i.code, i.message)
}

/// [`ErrorInfo`] of a raw body; a non-JSON body gives its text (whitespace collapsed).
pub fn body_info(body: &[u8]) -> ErrorInfo {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => error_info(&v),
        Err(_) => ErrorInfo { message: String::from_utf8_lossy(body).split_whitespace().collect::<Vec<_>>().join(" "), ..Default::default() },
    }
}

/// [`ErrorInfo`] of a parsed error value (the whole body, or the `error` object itself).
pub fn error_info(v: &Value) -> ErrorInfo {
    // Some gateways wrap the error in a one-element list.
    let v = match v {
        Value::Array(a) if a.len() == 1 => &a[0],
        other => other,
    };
    let e = v.get("error").filter(|e| !e.is_null()).unwrap_or(v);
    let mut info = ErrorInfo::default();
    let mut words = Vec::new();
    for k in ["type", "code", "status"] {
        match e.get(k) {
            Some(Value::String(s)) => words.push(s.clone()),
            Some(Value::Number(n)) => {
                words.push(n.to_string());
                if k == "code" {
                    info.numeric = n.as_u64().and_then(|n| u16::try_from(n).ok());
                }
            }
            _ => {}
        }
    }
    info.code = words.join(" ");
    info.message = match e.get("message") {
        Some(Value::String(s)) => s.clone(),
        _ => match e {
            Value::String(s) => s.clone(),
            _ => String::new(),
        },
    };
    match e.get("details") {
        // Anthropic: one object naming the cause.
        Some(Value::Object(d)) => {
            if let Some(c) = d.get("error_code").and_then(Value::as_str) {
                info.reasons.push(c.to_string());
            }
        }
        // Gemini: a list of typed google.rpc detail messages.
        Some(Value::Array(list)) => {
            for d in list {
                let ty = d.get("@type").and_then(Value::as_str).unwrap_or_default();
                if ty.ends_with("google.rpc.ErrorInfo") {
                    if let Some(r) = d.get("reason").and_then(Value::as_str) {
                        info.reasons.push(r.to_string());
                    }
                    let limit = d.pointer("/metadata/quota_limit").and_then(Value::as_str).unwrap_or_default();
                    info.exhausted_quota |= is_daily_quota(limit);
                } else if ty.ends_with("google.rpc.RetryInfo") {
                    info.retry_delay = d.get("retryDelay").and_then(Value::as_str).and_then(proto_duration);
                } else if ty.ends_with("google.rpc.QuotaFailure") {
                    for q in d.get("violations").and_then(Value::as_array).into_iter().flatten() {
                        let id = q.get("quotaId").and_then(Value::as_str).unwrap_or_default();
                        let zero = matches!(q.get("quotaValue"), Some(Value::String(s)) if s == "0") || q.get("quotaValue").and_then(Value::as_u64) == Some(0);
                        info.exhausted_quota |= is_daily_quota(id) || zero;
                    }
                }
            }
        }
        _ => {}
    }
    info
}

/// Whether a Gemini quota id / limit name is one that resets daily (`…PerDay…`): waiting
/// seconds for it is pointless.
fn is_daily_quota(id: &str) -> bool {
    id.contains("PerDay")
}

fn is_overloaded(t: &str) -> bool {
    t.contains("overloaded")
}

/// Whether an error text says the prompt does not fit the context window.
pub fn is_context_window(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "model_context_window_exceeded",
        "maximum context length",
        "context window",
        "context length",
        "exceed context limit",
        "prompt is too long",
        "input is too long",
        "exceeds the maximum number of tokens",
        "reduce the length of the messages",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// Whether an error text says the provider refused the content.
pub fn is_content_filter(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    ["content_filter", "content_policy", "content management policy", "content filtering", "content policy", "responsible ai", "prohibited_content"]
        .iter()
        .any(|p| t.contains(p))
        || (t.contains("safety") && t.contains("block"))
}

/// Whether the error says the account is out of quota, credit or spend (not a rate limit:
/// waiting seconds does not help).
fn is_quota(text: &str, info: &ErrorInfo) -> bool {
    const CODES: [&str; 6] = [
        // OpenAI
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        // Anthropic
        "billing_error",
        "spend_limit_reached",
        "billing_unavailable",
    ];
    const PHRASES: [&str; 4] = [
        "credit balance is too low",
        "reached your specified api usage limits",
        "credits are depleted",
        "exceeded your current quota, please check your plan and billing details",
    ];
    let gemini_exhausted = text.contains("resource_exhausted") && info.exhausted_quota;
    // Gemini sends the last phrase with per-minute limits too: only a daily or zero quota
    // (or no RESOURCE_EXHAUSTED status at all, i.e. OpenAI's wording) makes it exhaustion.
    let phrase = PHRASES[..3].iter().any(|p| text.contains(p)) || (text.contains(PHRASES[3]) && !text.contains("resource_exhausted"));
    gemini_exhausted || phrase || CODES.iter().any(|c| text.contains(c))
}

/// Whether a 4xx other than 401/403 is really a key/account problem (Gemini answers a bad key
/// with 400 `API_KEY_INVALID`; a region or organisation the account may not use).
fn is_key_problem(text: &str) -> bool {
    [
        "api_key_invalid",
        "api key not valid",
        "api key expired",
        "api_key_expired",
        "api_key_service_blocked",
        "user location is not supported",
        "organization_on_hold",
        "unauthenticated",
        "permission_denied",
    ]
    .iter()
    .any(|p| text.contains(p))
}

fn is_model_not_found(text: &str) -> bool {
    text.contains("not_found")
}

/// The kind for an HTTP `status` (or an error inside a 2xx body or stream when `None`) given
/// what the error body says. Account problems (quota, key) win over the status; a 4xx is
/// `BadRequest` only when nothing says it is about the account, the model or the prompt size,
/// because `BadRequest` stops the whole fallback chain.
pub fn classify(status: Option<u16>, info: &ErrorInfo) -> ErrorKind {
    let mut text = format!("{} {} {}", info.code, info.reasons.join(" "), info.message).to_ascii_lowercase();
    text.push(' ');
    if is_quota(&text, info) {
        return ErrorKind::QuotaExceeded;
    }
    // Inside a body or a stream, a numeric `code` is the status the provider would have sent.
    let status = status.or(info.numeric.filter(|n| (400..600).contains(n)));
    match status {
        Some(402) => ErrorKind::QuotaExceeded,
        Some(401 | 403) => ErrorKind::AuthError,
        Some(404) => ErrorKind::ModelNotFound,
        Some(429) => ErrorKind::RateLimited,
        Some(529) => ErrorKind::Overloaded,
        Some(s) if s >= 500 => {
            if is_overloaded(&text) {
                ErrorKind::Overloaded
            } else {
                ErrorKind::ServerError
            }
        }
        // Request timeout / conflict / too early: transient, worth another try.
        Some(408 | 409 | 425) => ErrorKind::ServerError,
        Some(s) if (400..500).contains(&s) => {
            if is_key_problem(&text) {
                ErrorKind::AuthError
            } else if text.contains("model_not_found") {
                ErrorKind::ModelNotFound
            } else if is_context_window(&text) {
                ErrorKind::ContextWindowExceeded
            } else if is_content_filter(&text) {
                ErrorKind::ContentFiltered
            } else {
                ErrorKind::BadRequest
            }
        }
        Some(_) => ErrorKind::BadRequest,
        None => {
            if is_overloaded(&text) {
                ErrorKind::Overloaded
            } else if text.contains("rate_limit") || text.contains("resource_exhausted") {
                ErrorKind::RateLimited
            } else if is_key_problem(&text) || ["authentication", "permission", "api key", "api_key"].iter().any(|w| text.contains(w)) {
                ErrorKind::AuthError
            } else if is_model_not_found(&text) {
                ErrorKind::ModelNotFound
            } else if is_context_window(&text) {
                ErrorKind::ContextWindowExceeded
            } else if is_content_filter(&text) {
                ErrorKind::ContentFiltered
            } else if text.contains("invalid_request") || text.contains("invalid_argument") {
                ErrorKind::BadRequest
            } else {
                ErrorKind::ServerError
            }
        }
    }
}

/// The kind for an HTTP `status` with the provider's error `code` (type/code/status words) and
/// `msg`; [`classify`] with only those two known.
pub fn kind_for(status: Option<u16>, code: &str, msg: &str) -> ErrorKind {
    classify(status, &ErrorInfo { code: code.to_string(), message: msg.to_string(), ..Default::default() })
}

/// Whether an error of `kind` carries the provider's wait hint.
fn takes_retry_after(kind: ErrorKind, status: Option<u16>) -> bool {
    matches!(kind, ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::QuotaExceeded) || status == Some(503)
}

/// The error for a non-2xx response.
pub fn classify_status(status: u16, headers: &HeaderMap, body: &[u8], ctx: &ErrCtx<'_>) -> Error {
    let info = body_info(body);
    let kind = classify(Some(status), &info);
    let detail = match (info.message.is_empty(), info.code.is_empty()) {
        (false, _) => info.message.clone(),
        (true, false) => info.code.clone(),
        (true, true) => reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("error response").to_string(),
    };
    let mut e = ctx.error(kind, &detail).with_status(status);
    if takes_retry_after(kind, Some(status)) {
        e.retry_after = retry_after(headers, SystemTime::now()).or(info.retry_delay);
    }
    e.request_id = request_id(headers);
    e
}

/// The error for a provider error object received inside a 2xx body or stream.
pub fn classify_json_error(v: &Value, ctx: &ErrCtx<'_>) -> Error {
    let info = error_info(v);
    let kind = classify(None, &info);
    let detail = if info.message.is_empty() { format!("error event {}", info.code) } else { info.message.clone() };
    let mut e = ctx.error(kind, &detail);
    if takes_retry_after(kind, info.numeric) {
        e.retry_after = info.retry_delay;
    }
    e
}

/// Display of `err` and every `source()` below it, joined with ": " (reqwest's own Display
/// stops at "error sending request", hiding "connection refused" and friends).
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The error for a failed `send()` (no response headers): connect timeout, refused, reset,
/// DNS, TLS, or the connection closing before a response. Both transports end the same way: a
/// connect timeout is `Timeout` (`TimeoutKind::Connect`), anything else `ConnectionError`.
pub fn classify_send(err: SendError, ctx: &ErrCtx<'_>) -> Error {
    match err {
        SendError::Reqwest(e) => classify_reqwest(e, ctx),
        SendError::ConnectTimeout(d) => {
            let mut e = ctx.error(ErrorKind::Timeout, &format!("connect timed out ({d})"));
            e.timeout = Some(TimeoutKind::Connect);
            e
        }
        SendError::Connect(d) | SendError::Http(d) => ctx.error(ErrorKind::ConnectionError, &d),
    }
}

fn classify_reqwest(err: reqwest::Error, ctx: &ErrCtx<'_>) -> Error {
    let err = err.without_url();
    let chain = error_chain(&err);
    if err.is_connect() && err.is_timeout() {
        let mut e = ctx.error(ErrorKind::Timeout, &format!("connect timed out ({chain})"));
        e.timeout = Some(TimeoutKind::Connect);
        return e;
    }
    if err.is_timeout() {
        // No reqwest-level request timeout is configured, so this is a socket-level timeout.
        let mut e = ctx.error(ErrorKind::Timeout, &chain);
        e.timeout = Some(TimeoutKind::Total);
        return e;
    }
    if err.is_builder() {
        return ctx.error(ErrorKind::Config, &chain);
    }
    ctx.error(ErrorKind::ConnectionError, &chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn ctx_secret() -> Secret {
        Secret::new("sk-test-LEAKCHECK-123")
    }

    #[test]
    fn status_body_table() {
        let s = ctx_secret();
        let ctx = ErrCtx { label: "p/m", secret: &s };
        let h = HeaderMap::new();
        let cases: &[(u16, &str, ErrorKind)] = &[
            (429, r#"{"error":{"message":"Rate limit reached"}}"#, ErrorKind::RateLimited),
            (500, r#"{"error":{"message":"boom"}}"#, ErrorKind::ServerError),
            (502, "<html>bad gateway</html>", ErrorKind::ServerError),
            (503, r#"{"error":{"message":"The engine is currently overloaded"}}"#, ErrorKind::Overloaded),
            (529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, ErrorKind::Overloaded),
            (500, r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#, ErrorKind::Overloaded),
            (401, r#"{"error":{"message":"Incorrect API key"}}"#, ErrorKind::AuthError),
            (403, "", ErrorKind::AuthError),
            (400, r#"{"error":{"message":"bad param","type":"invalid_request_error"}}"#, ErrorKind::BadRequest),
            (404, r#"{"error":{"message":"model not found"}}"#, ErrorKind::ModelNotFound),
            (422, "unprocessable", ErrorKind::BadRequest),
            (
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#,
                ErrorKind::ContextWindowExceeded,
            ),
            (400, r#"{"error":{"code":"context_length_exceeded","message":""}}"#, ErrorKind::ContextWindowExceeded),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                ErrorKind::ContextWindowExceeded,
            ),
            (
                400,
                r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
                ErrorKind::ContextWindowExceeded,
            ),
            (
                400,
                r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","code":"content_filter"}}"#,
                ErrorKind::ContentFiltered,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#,
                ErrorKind::ContentFiltered,
            ),
            (408, "", ErrorKind::ServerError),
        ];
        for (status, body, want) in cases {
            let e = classify_status(*status, &h, body.as_bytes(), &ctx);
            assert_eq!(e.kind, *want, "status {status} body {body}");
            assert_eq!(e.status, Some(*status));
            assert!(e.message.starts_with("p/m: "), "{}", e.message);
        }
    }

    #[test]
    fn in_stream_error_kinds() {
        let cases: &[(&str, ErrorKind)] = &[
            (r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, ErrorKind::Overloaded),
            (r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#, ErrorKind::RateLimited),
            (r#"{"error":{"type":"api_error","message":"internal"}}"#, ErrorKind::ServerError),
            (r#"{"error":{"type":"invalid_request_error","message":"bad"}}"#, ErrorKind::BadRequest),
            (r#"{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key"}}"#, ErrorKind::AuthError),
        ];
        let s = ctx_secret();
        let ctx = ErrCtx { label: "p/m", secret: &s };
        for (body, want) in cases {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(classify_json_error(&v, &ctx).kind, *want, "{body}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("1.5"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)), "ms wins");
        h.remove("retry-after-ms");
        let future = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&future).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&past).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        for garbage in ["soon", "-3", "NaN", ""] {
            h.insert("retry-after", HeaderValue::from_str(garbage).unwrap());
            assert_eq!(retry_after(&h, now), None, "{garbage:?}");
        }
        h.insert("retry-after-ms", HeaderValue::from_static("junk"));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)), "bad ms falls back");
    }

    #[test]
    fn rate_limit_carries_retry_after_and_request_id() {
        let s = ctx_secret();
        let ctx = ErrCtx { label: "p/m", secret: &s };
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert("x-request-id", HeaderValue::from_static("req_1"));
        let e = classify_status(429, &h, b"{}", &ctx);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(e.request_id.as_deref(), Some("req_1"));
    }

    /// The documented error bodies of each provider map to the kind the engine must react to:
    /// account problems (quota, key, unknown model) never become `BadRequest`, which would stop
    /// the whole fallback chain.
    #[test]
    fn provider_error_bodies_by_documented_type_and_code() {
        let s = ctx_secret();
        let ctx = ErrCtx { label: "p/m", secret: &s };
        let gemini_daily = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"50"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"38s"}]}}"#;
        let gemini_minute = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel","quotaValue":"15"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12.5s"}]}}"#;
        let cases: &[(u16, &str, ErrorKind)] = &[
            // OpenAI
            (
                429,
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                ErrorKind::QuotaExceeded,
            ),
            (
                429,
                r#"{"error":{"message":"Rate limit reached for gpt-x on requests per min (RPM)","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                ErrorKind::RateLimited,
            ),
            (
                404,
                r#"{"error":{"message":"The model `gpt-x` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                ErrorKind::ModelNotFound,
            ),
            (
                401,
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                ErrorKind::AuthError,
            ),
            (
                400,
                r#"{"error":{"message":"Unrecognized request argument supplied: foo","type":"invalid_request_error","param":null,"code":null}}"#,
                ErrorKind::BadRequest,
            ),
            // Anthropic
            (402, r#"{"type":"error","error":{"type":"billing_error","message":"Payment required"}}"#, ErrorKind::QuotaExceeded),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
                ErrorKind::QuotaExceeded,
            ),
            (
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_1"}"#,
                ErrorKind::QuotaExceeded,
            ),
            (
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"ramp","details":{"error_code":"ramp_limit_exceeded"}}}"#,
                ErrorKind::RateLimited,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease input length or `max_tokens` and try again"}}"#,
                ErrorKind::ContextWindowExceeded,
            ),
            (404, r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}"#, ErrorKind::ModelNotFound),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"org","details":{"error_code":"organization_on_hold"}}}"#,
                ErrorKind::AuthError,
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"temperature: Extra inputs are not permitted"}}"#,
                ErrorKind::BadRequest,
            ),
            // Gemini
            (
                400,
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
                ErrorKind::AuthError,
            ),
            (404, r#"{"error":{"code":404,"message":"models/gemini-x is not found for API version v1beta","status":"NOT_FOUND"}}"#, ErrorKind::ModelNotFound),
            (400, r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#, ErrorKind::AuthError),
            (429, gemini_daily, ErrorKind::QuotaExceeded),
            (429, gemini_minute, ErrorKind::RateLimited),
            (
                400,
                r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"seed\": Cannot find field.","status":"INVALID_ARGUMENT"}}"#,
                ErrorKind::BadRequest,
            ),
            (503, r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#, ErrorKind::Overloaded),
        ];
        for (status, body, want) in cases {
            let e = classify_status(*status, &HeaderMap::new(), body.as_bytes(), &ctx);
            assert_eq!(e.kind, *want, "status {status} body {body}");
        }
        // Gemini's RetryInfo is the wait hint when no header gives one; a header wins.
        let e = classify_status(429, &HeaderMap::new(), gemini_minute.as_bytes(), &ctx);
        assert_eq!(e.retry_after, Some(Duration::from_millis(12_500)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(classify_status(429, &h, gemini_minute.as_bytes(), &ctx).retry_after, Some(Duration::from_secs(3)));
        // The same bodies inside a stream (no status) classify alike.
        for (body, want) in [
            (gemini_daily, ErrorKind::QuotaExceeded),
            (gemini_minute, ErrorKind::RateLimited),
            (r#"{"type":"error","error":{"type":"billing_error","message":"x"}}"#, ErrorKind::QuotaExceeded),
            (r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#, ErrorKind::ModelNotFound),
            (r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#, ErrorKind::QuotaExceeded),
        ] {
            let v: Value = serde_json::from_str(body).unwrap();
            let e = classify_json_error(&v, &ctx);
            assert_eq!(e.kind, want, "{body}");
        }
        let v: Value = serde_json::from_str(gemini_minute).unwrap();
        assert_eq!(classify_json_error(&v, &ctx).retry_after, Some(Duration::from_millis(12_500)));
    }

    /// Every hint form is capped at a day and nothing overflows, however far away it points.
    #[test]
    fn retry_hints_are_capped_at_a_day() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        for v in ["Fri, 31 Dec 9999 23:59:59 GMT", "1e300", "18446744073709551616", "9999999999"] {
            h.insert("retry-after", HeaderValue::from_str(v).unwrap());
            assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER), "{v}");
        }
        h.insert("retry-after-ms", HeaderValue::from_static("1e308"));
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&h, SystemTime::UNIX_EPOCH), Some(MAX_RETRY_AFTER));
        for (v, want) in [
            ("38s", Some(Duration::from_secs(38))),
            ("0.25s", Some(Duration::from_millis(250))),
            ("99999999999999999999s", Some(MAX_RETRY_AFTER)),
            ("-1s", None),
            ("38", None),
            ("NaNs", None),
            ("", None),
        ] {
            assert_eq!(proto_duration(v), want, "{v:?}");
        }
    }

    #[test]
    fn messages_are_truncated_and_redacted() {
        let s = ctx_secret();
        let ctx = ErrCtx { label: "p/m", secret: &s };
        let long = format!("Incorrect API key provided: sk-test-LEAKCHECK-123. {}", "x".repeat(1000));
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        let e = classify_status(401, &HeaderMap::new(), body.as_bytes(), &ctx);
        assert!(!format!("{e} {e:?}").contains("LEAKCHECK"));
        assert!(e.message.chars().count() < MAX_MESSAGE + 20);
        // A key straddling the truncation point must not survive either.
        let edge = format!("{}sk-test-LEAKCHECK-123", "y".repeat(MAX_MESSAGE - 5));
        let e = classify_status(400, &HeaderMap::new(), edge.as_bytes(), &ctx);
        assert!(!e.message.contains("sk-te"), "{}", e.message);
    }
}
