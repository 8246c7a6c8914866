"""The exception hierarchy. Every error echelon raises is an :class:`EchelonError`.

Errors that come from a call carry the attempt trace (``attempts``): which targets and
instances were tried, what each one did, and how long it took. Messages never contain secrets.
"""

from __future__ import annotations

import builtins
from typing import Any, List, Optional, Sequence

__all__ = [
    "EchelonError",
    "ConfigError",
    "RoutingError",
    "ProviderError",
    "RateLimited",
    "ServerError",
    "Overloaded",
    "Timeout",
    "ConnectionError",
    "AuthError",
    "BadRequest",
    "ContextWindowExceeded",
    "ContentFiltered",
    "StreamInterrupted",
    "InvalidResponse",
    "CapacityError",
    "PoolExhausted",
    "QueueTimeout",
    "CircuitOpen",
    "AllTargetsFailed",
    "QuotaExceeded",
    "ModelNotFound",
    "Cancelled",
    "InternalError",
]


class EchelonError(Exception):
    """Base class of every echelon error.

    Attributes:
        kind: stable snake_case error class name (``"rate_limited"``, ``"timeout"``, …).
        message: human-readable description (no secrets).
        status: HTTP status from the provider, if any.
        retry_after: provider's Retry-After hint in seconds, if any.
        instance: id of the instance the error came from, if any.
        request_id: provider request id, if any.
        attempts: the attempt trace of the call (list of :class:`echelon.Attempt`).
        retryable: whether sending the same request again may succeed.
    """

    kind: str = "echelon_error"
    retryable: bool = False

    def __init__(
        self,
        message: str = "",
        *,
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
        instance: Optional[str] = None,
        request_id: Optional[str] = None,
        attempts: Optional[Sequence[Any]] = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.instance = instance
        self.request_id = request_id
        self.attempts: List[Any] = list(attempts or [])
        for key, value in extra.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(EchelonError, ValueError):
    """The configuration is invalid.

    Attributes:
        issues: every problem found, each a dict with ``file``, ``key``, ``value``, ``message``.
        file, key, value: those of the first issue, for the common single-problem case.
    """

    kind = "config"

    def __init__(self, message: str = "", *, issues: Optional[Sequence[dict]] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.issues: List[dict] = list(issues or [])
        first = self.issues[0] if self.issues else {}
        self.file: Optional[str] = first.get("file")
        self.key: Optional[str] = first.get("key")
        self.value: Optional[str] = first.get("value")


class RoutingError(EchelonError, LookupError):
    """The request names a pool, group, wrapper or model that does not exist, or is malformed."""

    kind = "routing"


class ProviderError(EchelonError):
    """A provider call failed. Subclasses say how."""

    kind = "provider_error"


class RateLimited(ProviderError):
    """HTTP 429. ``retry_after`` holds the provider's hint (seconds) when it sent one."""

    kind = "rate_limited"
    retryable = True


class QuotaExceeded(RateLimited):
    """The account behind the key is out of quota or credit (OpenAI ``insufficient_quota``,
    Anthropic billing errors, Gemini quota exhaustion). Sending again does not help: the instance
    is taken out for a long cooldown and the call falls back at once."""

    kind = "quota_exceeded"
    retryable = False


class ModelNotFound(ProviderError):
    """The provider does not serve the configured model (HTTP 404, ``model_not_found``). Not the
    request's fault: the instance is marked failed and the call falls back."""

    kind = "model_not_found"


class ServerError(ProviderError):
    """HTTP 5xx."""

    kind = "server_error"
    retryable = True


class Overloaded(ServerError):
    """HTTP 529 or an "overloaded" body."""

    kind = "overloaded"
    retryable = True


class Timeout(ProviderError, builtins.TimeoutError):
    """A timeout. ``timeout_kind`` is ``"connect"``, ``"first_token"``, ``"total"``, ``"idle"``
    or ``"deadline"`` (the caller's deadline for the whole call)."""

    kind = "timeout"
    retryable = True
    timeout_kind: Optional[str] = None


class ConnectionError(ProviderError, builtins.ConnectionError):  # noqa: A001 - deliberate name
    """Connection refused, reset, DNS or TLS failure."""

    kind = "connection_error"
    retryable = True


class AuthError(ProviderError):
    """HTTP 401/403, or an API key variable that is not set."""

    kind = "auth_error"


class BadRequest(ProviderError):
    """HTTP 400/404/422: the provider will not accept this request as sent."""

    kind = "bad_request"


class ContextWindowExceeded(BadRequest):
    """The prompt does not fit the model's context window."""

    kind = "context_window_exceeded"


class ContentFiltered(BadRequest):
    """The provider refused the content."""

    kind = "content_filtered"


class StreamInterrupted(ProviderError):
    """A stream was cut or stalled after its first token. ``partial`` holds the text received;
    it is never reported as a complete answer."""

    kind = "stream_interrupted"
    partial: str = ""


class InvalidResponse(ProviderError):
    """The provider answered 2xx with a body that could not be parsed."""

    kind = "invalid_response"
    retryable = True


class CapacityError(EchelonError):
    """Local capacity limits refused the request."""

    kind = "capacity"


class PoolExhausted(CapacityError):
    """Every instance is saturated and the wait queue is full (or nothing can serve)."""

    kind = "pool_exhausted"


class QueueTimeout(CapacityError, builtins.TimeoutError):
    """The request waited for a free slot until its deadline passed."""

    kind = "queue_timeout"


class CircuitOpen(EchelonError):
    """The only targets left were refused by open circuit breakers."""

    kind = "circuit_open"


class AllTargetsFailed(EchelonError):
    """Fallback tried every target and none succeeded. ``attempts`` says what each one did;
    ``last_kind`` is the error class of the last attempt."""

    kind = "all_targets_failed"
    last_kind: Optional[str] = None


class Cancelled(EchelonError):
    """The request was cancelled (it appears in traces, for example the losing attempt of a
    hedge; a call cancelled by its caller raises ``asyncio.CancelledError`` as usual)."""

    kind = "cancelled"


class InternalError(EchelonError):
    """A bug inside echelon's engine. The call ends with this instead of hanging; the message
    names the route, and the engine logged the details."""

    kind = "internal"


_BY_KIND = {
    cls.kind: cls
    for cls in (
        ConfigError,
        RoutingError,
        RateLimited,
        ServerError,
        Overloaded,
        Timeout,
        ConnectionError,
        AuthError,
        BadRequest,
        ContextWindowExceeded,
        ContentFiltered,
        StreamInterrupted,
        InvalidResponse,
        PoolExhausted,
        QueueTimeout,
        CircuitOpen,
        AllTargetsFailed,
        QuotaExceeded,
        ModelNotFound,
        Cancelled,
        InternalError,
    )
}


def _class_for(kind: str) -> type:
    """The exception class for a core error kind (used by the Rust binding)."""
    return _BY_KIND.get(kind, EchelonError)
