//! The attempt trace of one call, and the error a failed call ends with.

use std::time::Instant;

use crate::engine::instance::Instance;
use crate::error::{Attempt, AttemptRole, Error, ErrorKind, TimeoutKind};

/// The attempt trace of one call.
pub struct Trace {
    /// When the call started.
    pub start: Instant,
    /// Every attempt so far, including targets skipped because they could not serve.
    pub attempts: Vec<Attempt>,
}

impl Trace {
    /// An empty trace for a call that started at `start`.
    pub fn new(start: Instant) -> Self {
        Self { start, attempts: Vec::new() }
    }

    /// Append an entry for an attempt that started at `t0` on `inst` (None: the target was
    /// skipped or nothing could be selected) and ended now with `error` (None: success).
    pub fn push(&mut self, target: &str, inst: Option<&Instance>, role: AttemptRole, t0: Instant, error: Option<&Error>) {
        self.attempts.push(Attempt {
            target: target.to_string(),
            instance: inst.map(|i| i.id.clone()).unwrap_or_default(),
            model: inst.map(|i| i.model_name.clone()).unwrap_or_default(),
            role,
            error: error.map(|e| e.kind),
            message: error.map(|e| e.to_string()),
            latency: t0.elapsed(),
            started_after: t0.saturating_duration_since(self.start),
        });
    }

    /// The role of the next attempt on `target`: the first entry is the primary, another try
    /// on the target of the previous entry a retry, anything else a fallback.
    pub fn role_for(&self, target: &str) -> AttemptRole {
        match self.attempts.last() {
            None => AttemptRole::Primary,
            Some(a) if a.target == target && !a.instance.is_empty() => AttemptRole::Retry,
            Some(_) => AttemptRole::Fallback,
        }
    }

    /// The error a failed call ends with: the request's own fault (bad request, content
    /// filter, context window, caller deadline) or a single failed entry is returned as itself;
    /// a chain whose every target was skipped for open breakers is `CircuitOpen`; any other
    /// chain of several failed entries becomes `AllTargetsFailed` carrying the last error's
    /// details.
    pub fn into_error(self, last: Error) -> Error {
        let failed = self.attempts.iter().filter(|a| a.error.is_some()).count();
        let own_fault =
            matches!(last.kind, ErrorKind::BadRequest | ErrorKind::ContentFiltered | ErrorKind::Internal) || last.timeout == Some(TimeoutKind::Deadline);
        let all_open = self.attempts.iter().all(|a| a.error == Some(ErrorKind::CircuitOpen));
        if failed > 1 && !own_fault && !all_open {
            let mut e = last.clone();
            e.kind = ErrorKind::AllTargetsFailed;
            e.message = format!("all {} attempts failed; last: {}: {}", self.attempts.len(), last.kind.as_str(), last);
            e.with_attempts(self.attempts)
        } else {
            last.with_attempts(self.attempts)
        }
    }
}
