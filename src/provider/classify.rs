//! Turning HTTP statuses, provider error bodies and transport failures into [`Error`]s.
//!
//! Every message built here is short ("<label>: <provider message>"), truncated, and passed
//! through [`redact`] with the model's key, because providers echo keys back in error bodies.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

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
    ["x-request-id", "request-id", "x-goog-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// Retry-After hint: `retry-after-ms` (milliseconds), else `retry-after` as seconds (fractions
/// allowed) or an HTTP date (a past date gives zero). Garbage gives `None`.
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
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(Duration::from_secs(86_400)))
}

fn parse_seconds(v: &str) -> Option<f64> {
    let s: f64 = v.parse().ok()?;
    (s.is_finite() && s >= 0.0).then_some(s)
}

fn to_duration(secs: f64) -> Option<Duration> {
    // Cap absurd hints at a day so `Duration::from_secs_f64` cannot overflow.
    Some(Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The error `type`/`code`/`status` and `message` of a provider error body (OpenAI, Anthropic
/// and Gemini all nest them under `error`). Non-JSON bodies give their text as the message.
pub fn body_error(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => json_error(&v),
        Err(_) => (String::new(), String::from_utf8_lossy(body).split_whitespace().collect::<Vec<_>>().join(" ")),
    }
}

/// Like [`body_error`] for an already parsed value (also used for in-stream error events).
pub fn json_error(v: &Value) -> (String, String) {
    let e = v.get("error").unwrap_or(v);
    let code = ["type", "code", "status"]
        .iter()
        .filter_map(|k| match e.get(*k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ");
    let msg = match e.get("message") {
        Some(Value::String(s)) => s.clone(),
        _ => match e {
            Value::String(s) => s.clone(),
            _ => String::new(),
        },
    };
    (code, msg)
}

fn is_overloaded(t: &str) -> bool {
    t.contains("overloaded")
}

/// Whether an error text says the prompt does not fit the context window.
pub fn is_context_window(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context window",
        "context length",
        "too long",
        "exceeds the maximum number of tokens",
        "reduce the length of the messages",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// Whether an error text says the provider refused the content.
pub fn is_content_filter(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    [
        "content_filter",
        "content_policy",
        "content management policy",
        "content filtering",
        "content policy",
        "responsible ai",
        "prohibited_content",
    ]
    .iter()
    .any(|p| t.contains(p))
        || (t.contains("safety") && t.contains("block"))
}

/// The kind for an HTTP `status` (or an in-stream error event when `None`) with the provider's
/// error `code` (type/code/status words) and `msg`.
pub fn kind_for(status: Option<u16>, code: &str, msg: &str) -> ErrorKind {
    let text = format!("{code} {msg}").to_ascii_lowercase();
    match status {
        Some(429) => ErrorKind::RateLimited,
        Some(529) => ErrorKind::Overloaded,
        Some(s) if s >= 500 => {
            if is_overloaded(&text) {
                ErrorKind::Overloaded
            } else {
                ErrorKind::ServerError
            }
        }
        Some(401 | 403) => ErrorKind::AuthError,
        // Request timeout / conflict / too early: transient, worth another try.
        Some(408 | 409 | 425) => ErrorKind::ServerError,
        Some(s) if (400..500).contains(&s) => {
            if is_context_window(&text) {
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
            } else if ["authentication", "permission", "unauthenticated", "api key", "api_key"].iter().any(|w| text.contains(w)) {
                ErrorKind::AuthError
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

/// The error for a non-2xx response.
pub fn classify_status(status: u16, headers: &HeaderMap, body: &[u8], ctx: &ErrCtx<'_>) -> Error {
    let (code, msg) = body_error(body);
    let kind = kind_for(Some(status), &code, &msg);
    let detail = match (msg.is_empty(), code.is_empty()) {
        (false, _) => msg,
        (true, false) => code,
        (true, true) => reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error response")
            .to_string(),
    };
    let mut e = ctx.error(kind, &detail).with_status(status);
    if kind == ErrorKind::RateLimited || kind == ErrorKind::Overloaded || status == 503 {
        e.retry_after = retry_after(headers, SystemTime::now());
    }
    e.request_id = request_id(headers);
    e
}

/// The error for a provider error object received inside a 2xx body or stream.
pub fn classify_json_error(v: &Value, ctx: &ErrCtx<'_>) -> Error {
    let (code, msg) = json_error(v);
    let kind = kind_for(None, &code, &msg);
    let detail = if msg.is_empty() { format!("error event {code}") } else { msg };
    ctx.error(kind, &detail)
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
/// DNS, TLS, or the connection closing before a response.
pub fn classify_send(err: reqwest::Error, ctx: &ErrCtx<'_>) -> Error {
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
            (404, r#"{"error":{"message":"model not found"}}"#, ErrorKind::BadRequest),
            (422, "unprocessable", ErrorKind::BadRequest),
            (400, r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#, ErrorKind::ContextWindowExceeded),
            (400, r#"{"error":{"code":"context_length_exceeded","message":""}}"#, ErrorKind::ContextWindowExceeded),
            (400, r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#, ErrorKind::ContextWindowExceeded),
            (400, r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#, ErrorKind::ContextWindowExceeded),
            (400, r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","code":"content_filter"}}"#, ErrorKind::ContentFiltered),
            (400, r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#, ErrorKind::ContentFiltered),
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
