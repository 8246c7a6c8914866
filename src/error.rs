//! Error classes of a call, the attempt trace, and configuration errors.
//!
//! Every call ends in exactly one `ChatResponse` or one [`Error`]. An `Error` carries its
//! [`ErrorKind`] (what the Python layer maps to an exception class), the details needed to act on
//! it (status, Retry-After, which timeout, partial text) and the full [`Attempt`] trace.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// What went wrong, as a class a caller can act on. Maps 1:1 to a Python exception class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// HTTP 429; `retry_after` holds the provider's hint when it sent one.
    RateLimited,
    /// HTTP 5xx other than overload.
    ServerError,
    /// HTTP 529 or an "overloaded" body.
    Overloaded,
    /// A timeout; `timeout` says which one.
    Timeout,
    /// Connection refused / reset / DNS / TLS: the request may not have reached the provider.
    ConnectionError,
    /// HTTP 401/403 (bad or missing key, or a key variable that is unset).
    AuthError,
    /// HTTP 400/404/422 and other requests the provider will never accept as sent.
    BadRequest,
    /// The prompt does not fit the model's context window.
    ContextWindowExceeded,
    /// The provider refused the content.
    ContentFiltered,
    /// A stream was cut or stalled after the first token; `partial` has the text received.
    StreamInterrupted,
    /// The provider answered 2xx with a body that could not be parsed.
    InvalidResponse,
    /// Every instance is saturated and the wait queue is full (or nothing can ever serve).
    PoolExhausted,
    /// The request waited in the queue until its deadline passed.
    QueueTimeout,
    /// The only targets left were refused by open circuit breakers.
    CircuitOpen,
    /// Fallback walked every target and none succeeded; `attempts` says what each one did.
    AllTargetsFailed,
    /// The request names a pool, group, wrapper or model that does not exist, or is malformed.
    Routing,
    /// The configuration is invalid (only raised at call time for lazily resolved references).
    Config,
    /// The caller cancelled the request.
    Cancelled,
    /// The account behind the key is out of quota or credit (OpenAI `insufficient_quota`,
    /// Anthropic billing, Gemini quota exhaustion). Retrying does not help: the instance is
    /// taken out for a long cooldown and the call falls back at once.
    QuotaExceeded,
    /// The provider does not serve the configured model (HTTP 404, `model_not_found`): the
    /// instance is marked failed and the call falls back.
    ModelNotFound,
    /// A bug inside the engine (a panic), reported with the route instead of leaving the call
    /// pending. Always logged.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order (the Python binding checks it has a class for each).
    pub const ALL: [ErrorKind; 21] = [
        ErrorKind::RateLimited,
        ErrorKind::ServerError,
        ErrorKind::Overloaded,
        ErrorKind::Timeout,
        ErrorKind::ConnectionError,
        ErrorKind::AuthError,
        ErrorKind::BadRequest,
        ErrorKind::ContextWindowExceeded,
        ErrorKind::ContentFiltered,
        ErrorKind::StreamInterrupted,
        ErrorKind::InvalidResponse,
        ErrorKind::PoolExhausted,
        ErrorKind::QueueTimeout,
        ErrorKind::CircuitOpen,
        ErrorKind::AllTargetsFailed,
        ErrorKind::Routing,
        ErrorKind::Config,
        ErrorKind::Cancelled,
        ErrorKind::QuotaExceeded,
        ErrorKind::ModelNotFound,
        ErrorKind::Internal,
    ];
}

impl ErrorKind {
    /// Stable snake_case name, used in traces, metrics and Python attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionError => "connection_error",
            ErrorKind::AuthError => "auth_error",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::ContextWindowExceeded => "context_window_exceeded",
            ErrorKind::ContentFiltered => "content_filtered",
            ErrorKind::StreamInterrupted => "stream_interrupted",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::QueueTimeout => "queue_timeout",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::AllTargetsFailed => "all_targets_failed",
            ErrorKind::Routing => "routing",
            ErrorKind::Config => "config",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether the same request may succeed if sent again (to this or another instance).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::ServerError
                | ErrorKind::Overloaded
                | ErrorKind::Timeout
                | ErrorKind::ConnectionError
                | ErrorKind::InvalidResponse
        )
    }

    /// Whether this outcome says something about the instance's health (counts toward breakers
    /// and passive health). Caller cancellations, caller deadlines and request-shaped 4xx do not.
    pub fn counts_as_instance_failure(self) -> bool {
        matches!(
            self,
            ErrorKind::ServerError
                | ErrorKind::Overloaded
                | ErrorKind::Timeout
                | ErrorKind::ConnectionError
                | ErrorKind::InvalidResponse
                | ErrorKind::StreamInterrupted
                | ErrorKind::AuthError
                | ErrorKind::ModelNotFound
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which timeout fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    /// TCP/TLS connect took too long.
    Connect,
    /// No first token (streaming) or no response headers (non-streaming) in time.
    FirstToken,
    /// The whole request took too long.
    Total,
    /// A stream went silent between chunks for too long.
    Idle,
    /// The caller's deadline for the whole call (all attempts) passed.
    Deadline,
}

impl TimeoutKind {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::FirstToken => "first_token",
            TimeoutKind::Total => "total",
            TimeoutKind::Idle => "idle",
            TimeoutKind::Deadline => "deadline",
        }
    }
}

/// Why an attempt was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptRole {
    /// The first attempt of the call.
    Primary,
    /// Another try on the same target (same echelon / pool) after a retryable error.
    Retry,
    /// A try on a different target after the previous one was given up.
    Fallback,
    /// A hedged duplicate started because the first target was slow to its first token.
    Hedge,
}

/// One entry of the attempt trace.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// The routing target: a group reference (`"fast_group.echelon1"`) or a pool name.
    pub target: String,
    /// The instance id that served (or failed) this attempt; empty if none could be selected.
    pub instance: String,
    /// The logical model name.
    pub model: String,
    pub role: AttemptRole,
    /// `None` when the attempt succeeded.
    pub error: Option<ErrorKind>,
    /// Human-readable error detail (never contains a secret).
    pub message: Option<String>,
    /// Wall time of this attempt.
    pub latency: Duration,
    /// Time from the start of the call to the start of this attempt.
    pub started_after: Duration,
}

/// The error a call ends with.
#[derive(Clone, Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// HTTP status from the provider, when there was one.
    pub status: Option<u16>,
    /// Provider's Retry-After (`retry-after` seconds or HTTP date, or `retry-after-ms`).
    pub retry_after: Option<Duration>,
    /// Set when `kind == Timeout`.
    pub timeout: Option<TimeoutKind>,
    /// Text received before a stream broke (`StreamInterrupted`).
    pub partial: Option<String>,
    /// The instance the error came from, when it came from one.
    pub instance: Option<String>,
    /// The provider's request id, when the response carried one.
    pub request_id: Option<String>,
    /// The trace of every attempt made for the call.
    pub attempts: Vec<Attempt>,
}

impl Error {
    /// An error of `kind` with a message and nothing else.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            timeout: None,
            partial: None,
            instance: None,
            request_id: None,
            attempts: Vec::new(),
        }
    }

    /// A timeout of the given kind.
    pub fn timeout(which: TimeoutKind, message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorKind::Timeout, message);
        e.timeout = Some(which);
        e
    }

    /// A routing error (unknown pool/group/model, malformed reference).
    pub fn routing(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Routing, message)
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }
    pub fn with_partial(mut self, text: impl Into<String>) -> Self {
        self.partial = Some(text.into());
        self
    }
    pub fn with_instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }
    pub fn with_attempts(mut self, attempts: Vec<Attempt>) -> Self {
        self.attempts = attempts;
        self
    }

    /// See [`ErrorKind::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        if let Some(t) = self.timeout {
            write!(f, " [{} timeout]", t.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// One problem in the configuration: where it is (file, key path) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    /// The file the problem is in, when the config came from files.
    pub file: Option<PathBuf>,
    /// Dotted key path inside the file (`"echelon1.models[2]"`), empty for the whole file.
    pub key: String,
    /// The offending value rendered short (never a secret), when there is one.
    pub value: Option<String>,
    /// What is wrong and, where possible, how to fix it ("did you mean …").
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if !self.key.is_empty() {
                write!(f, ": ")?;
            }
        }
        if !self.key.is_empty() {
            write!(f, "{}", self.key)?;
        }
        if let Some(v) = &self.value {
            write!(f, " = {v}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A configuration that failed validation: every problem found, not just the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    /// A config error with a single issue.
    pub fn one(file: Option<PathBuf>, key: impl Into<String>, value: Option<String>, message: impl Into<String>) -> Self {
        Self { issues: vec![ConfigIssue { file, key: key.into(), value, message: message.into() }] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.issues.len() {
            0 => write!(f, "invalid configuration"),
            1 => write!(f, "{}", self.issues[0]),
            n => {
                write!(f, "{n} configuration errors:")?;
                for i in &self.issues {
                    write!(f, "\n  - {i}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}
