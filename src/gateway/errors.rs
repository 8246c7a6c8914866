//! What the gateway answers when a request fails: the status, the error body in the client's
//! own API shape, and the retry headers. Pure functions of the error, table-tested.
//!
//! Status by cause:
//!
//! | cause | status |
//! |---|---|
//! | malformed body, a request the provider refused as sent, context window, content filter | 400 |
//! | no key or an unknown key | 401 |
//! | a key not allowed on the route | 403 |
//! | unknown route or path | 404 |
//! | body over `max_body_bytes` | 413 |
//! | every target rate limited (provider 429s, our RPM/TPM budgets, cooling instances), a key's budget spent | 429 + `Retry-After` |
//! | every target failed (5xx, timeouts of an attempt, open breakers, rejected upstream keys, full queues) | 503 |
//! | the call's deadline (waiting in a queue included) | 504 |
//! | a bug in the engine or a configuration that names nothing callable | 500 |
//!
//! A 503 or 504 comes after the engine already retried and fell back as configured, so it
//! says `x-should-retry: false` (the SDKs would otherwise send it again up to twice); a 429
//! leaves the decision to the client, with `Retry-After`. Upstream keys are never the caller's
//! business: a provider's 401 is a failed target (503), not a 401.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, TimeoutKind};

/// Which API shape a request came in (and its errors go out) in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`, `/v1/models` and the gateway's own endpoints.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
}

/// A failed request, ready to be written in either shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// Shown to the client (never a secret: engine messages are redacted at the source).
    pub message: String,
    /// OpenAI `error.code` (`rate_limit_exceeded`, `model_not_found`, …), when there is one.
    pub code: Option<&'static str>,
    /// `Retry-After`, for 429 and for a draining gateway.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`: `Some(false)` where the gateway already retried.
    pub should_retry: Option<bool>,
}

impl Failure {
    /// A failure with `status` and `message` and nothing else.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Failure { status, message: message.into(), code: None, retry_after: None, should_retry: None }
    }

    /// With an OpenAI `code`.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// With `Retry-After`.
    pub fn retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }

    /// With `x-should-retry`.
    pub fn should_retry(mut self, yes: bool) -> Self {
        self.should_retry = Some(yes);
        self
    }

    /// The OpenAI `error.type` for this status.
    pub fn openai_type(&self) -> &'static str {
        match self.status {
            400 | 404 | 413 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            503 => "service_unavailable",
            504 => "timeout",
            _ => "server_error",
        }
    }

    /// The Anthropic `error.type` for this status (their documented list).
    pub fn anthropic_type(&self) -> &'static str {
        match self.status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// The error body in `api`'s shape.
    pub fn body(&self, api: Api, request_id: &str) -> Value {
        match api {
            Api::OpenAi => json!({"error": {"message": self.message, "type": self.openai_type(), "param": null, "code": self.code}}),
            Api::Anthropic => json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.message}, "request_id": request_id}),
        }
    }

    /// The payload of a mid-stream error event (after the 200 went out).
    pub fn stream_event(&self, api: Api, request_id: &str) -> Value {
        self.body(api, request_id)
    }
}

/// Whether every failed attempt of `e` was a rate limit (a provider 429, our own budget, a
/// cooling instance) or a quota: then the call failed for want of budget, and a client should
/// come back later rather than hear that everything is broken.
fn all_rate_limited(e: &Error) -> bool {
    let mut failed = e.attempts.iter().filter_map(|a| a.error).peekable();
    if failed.peek().is_none() {
        return matches!(e.kind, ErrorKind::RateLimited | ErrorKind::QuotaExceeded);
    }
    failed.all(|k| matches!(k, ErrorKind::RateLimited | ErrorKind::QuotaExceeded))
}

/// Seconds for `Retry-After`: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The failure an engine error becomes.
pub fn from_engine(e: &Error) -> Failure {
    let msg = e.message.clone();
    match e.kind {
        ErrorKind::BadRequest => Failure::new(400, msg).should_retry(false),
        ErrorKind::ContextWindowExceeded => Failure::new(400, msg).code("context_length_exceeded").should_retry(false),
        ErrorKind::ContentFiltered => Failure::new(400, msg).code("content_filter").should_retry(false),
        ErrorKind::Routing => Failure::new(404, msg).code("model_not_found"),
        ErrorKind::Timeout if e.timeout == Some(TimeoutKind::Deadline) => Failure::new(504, msg).should_retry(false),
        ErrorKind::QueueTimeout => Failure::new(504, msg).should_retry(false),
        ErrorKind::Config | ErrorKind::Internal | ErrorKind::Cancelled => Failure::new(500, msg).should_retry(false),
        _ if all_rate_limited(e) => {
            let code = if e.attempts.iter().filter_map(|a| a.error).all(|k| k == ErrorKind::QuotaExceeded) && e.kind == ErrorKind::QuotaExceeded {
                "insufficient_quota"
            } else {
                "rate_limit_exceeded"
            };
            Failure::new(429, msg).code(code).retry_after(Some(e.retry_after.unwrap_or(Duration::from_secs(1))))
        }
        // A provider timeout on the last target: the upstream did not answer in time.
        ErrorKind::Timeout => Failure::new(504, msg).should_retry(false),
        _ => Failure::new(503, msg).should_retry(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Attempt, AttemptRole};

    fn attempt(kind: Option<ErrorKind>) -> Attempt {
        Attempt {
            target: "g.echelon1".into(),
            instance: "g.echelon1_m".into(),
            model: "m".into(),
            role: AttemptRole::Primary,
            error: kind,
            message: None,
            latency: Duration::ZERO,
            started_after: Duration::ZERO,
        }
    }

    fn err(kind: ErrorKind, attempts: &[ErrorKind]) -> Error {
        Error::new(kind, "x").with_attempts(attempts.iter().map(|k| attempt(Some(*k))).collect())
    }

    #[test]
    fn statuses_by_cause() {
        use ErrorKind::*;
        let cases: Vec<(Error, u16)> = vec![
            (err(BadRequest, &[BadRequest]), 400),
            (err(ContextWindowExceeded, &[ContextWindowExceeded]), 400),
            (err(ContentFiltered, &[ContentFiltered]), 400),
            (Error::routing("unknown group"), 404),
            (err(RateLimited, &[RateLimited]), 429),
            (err(AllTargetsFailed, &[RateLimited, RateLimited]), 429),
            (err(AllTargetsFailed, &[RateLimited, QuotaExceeded]), 429),
            (err(AllTargetsFailed, &[RateLimited, ServerError]), 503),
            (err(ServerError, &[ServerError]), 503),
            (err(AuthError, &[AuthError]), 503),
            (err(CircuitOpen, &[CircuitOpen, CircuitOpen]), 503),
            (err(PoolExhausted, &[]), 503),
            (Error::timeout(TimeoutKind::Deadline, "deadline"), 504),
            (err(QueueTimeout, &[]), 504),
            (Error::timeout(TimeoutKind::FirstToken, "slow"), 504),
            (err(Internal, &[]), 500),
            (err(Config, &[]), 500),
        ];
        for (e, status) in cases {
            assert_eq!(from_engine(&e).status, status, "{:?} after {:?}", e.kind, e.attempts.iter().map(|a| a.error).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_429_carries_retry_after_rounded_up_and_503s_say_not_to_retry() {
        let e = err(ErrorKind::RateLimited, &[ErrorKind::RateLimited]).with_retry_after(Some(Duration::from_millis(2300)));
        let f = from_engine(&e);
        assert_eq!((f.status, f.retry_after.map(retry_after_secs), f.should_retry), (429, Some(3), None));
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        let quota = from_engine(&err(ErrorKind::QuotaExceeded, &[ErrorKind::QuotaExceeded]));
        assert_eq!(quota.code, Some("insufficient_quota"));
        assert_eq!(from_engine(&err(ErrorKind::ServerError, &[ErrorKind::ServerError])).should_retry, Some(false));
    }

    #[test]
    fn bodies_have_each_apis_shape() {
        let f = Failure::new(404, "unknown route `gg` (did you mean `g`?)").code("model_not_found");
        let o = f.body(Api::OpenAi, "req_1");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["code"], "model_not_found");
        assert!(o["error"]["param"].is_null());
        let a = f.body(Api::Anthropic, "req_1");
        assert_eq!((a["type"].as_str(), a["error"]["type"].as_str(), a["request_id"].as_str()), (Some("error"), Some("not_found_error"), Some("req_1")));
    }
}
