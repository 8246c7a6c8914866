"""The original exception hierarchy (``src/interfaces/llm/exceptions.py``), plus the wrapper
errors, so ``except LLMError`` / ``except PollingPoolWrapperError`` keep working.

Every class accepts extra positional arguments and keeps them in ``args`` (the old wrapper
tests check ``e.args``); ``str(e)`` is the message.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = [
    "LLMError",
    "LLMCallError",
    "LLMTimeoutError",
    "LLMRateLimitError",
    "LLMAuthenticationError",
    "LLMModelNotFoundError",
    "LLMTokenLimitError",
    "LLMContentFilterError",
    "LLMInvalidRequestError",
    "LLMServiceUnavailableError",
    "LLMClientCreationError",
    "UnsupportedModelTypeError",
    "LLMConfigurationError",
    "LLMFallbackError",
    "LLMWrapperError",
    "WrapperError",
    "TaskGroupWrapperError",
    "PollingPoolWrapperError",
    "WrapperFactoryError",
    "WrapperConfigError",
    "WrapperExecutionError",
    "from_echelon_error",
]


class LLMError(Exception):
    """Base of every error of the original subsystem: ``message``, ``error_code``, ``details``."""

    def __init__(self, message: str = "", error_code: Optional[str] = None, details: Optional[Dict[str, Any]] = None, *args: Any) -> None:
        super().__init__(message, *(a for a in (error_code, details) if a is not None), *args)
        self.message = message
        self.error_code = error_code
        self.details: Dict[str, Any] = dict(details) if isinstance(details, dict) else {}

    def __str__(self) -> str:
        return str(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class LLMCallError(LLMError):
    """A model call failed. ``error_type``, ``is_retryable``, ``retry_after``, ``original_error``,
    ``error_context``, ``model_name`` describe how."""

    def __init__(
        self,
        message: str = "",
        error_type: str = "unknown",
        error_code: Optional[str] = None,
        is_retryable: bool = False,
        retry_after: Optional[float] = None,
        original_error: Optional[BaseException] = None,
        error_context: Optional[Dict[str, Any]] = None,
        model_name: Optional[str] = None,
    ) -> None:
        super().__init__(message, error_code)
        self.error_type = error_type
        self.is_retryable = is_retryable
        self.retry_after = retry_after
        self.original_error = original_error
        self.error_context: Dict[str, Any] = dict(error_context or {})
        self.model_name = model_name


class LLMTimeoutError(LLMCallError):
    """The call timed out (retryable)."""

    def __init__(self, message: str = "", timeout: Optional[float] = None, **kw: Any) -> None:
        kw.setdefault("error_type", "timeout")
        kw.setdefault("error_code", "LLM_TIMEOUT_ERROR")
        kw.setdefault("is_retryable", True)
        super().__init__(message, **kw)
        self.timeout = timeout


class LLMRateLimitError(LLMCallError):
    """HTTP 429 (retryable); ``retry_after`` in seconds when the provider said."""

    def __init__(self, message: str = "", retry_after: Optional[float] = None, **kw: Any) -> None:
        kw.setdefault("error_type", "rate_limit_exceeded")
        kw.setdefault("error_code", "LLM_RATE_LIMIT_ERROR")
        kw.setdefault("is_retryable", True)
        super().__init__(message, retry_after=retry_after, **kw)


class LLMAuthenticationError(LLMCallError):
    """Bad or missing API key."""

    def __init__(self, message: str = "", **kw: Any) -> None:
        kw.setdefault("error_type", "authentication")
        kw.setdefault("error_code", "LLM_AUTHENTICATION_ERROR")
        super().__init__(message, **kw)


class LLMModelNotFoundError(LLMCallError):
    """The provider does not know the model."""

    def __init__(self, model_name: str = "", message: Optional[str] = None, **kw: Any) -> None:
        kw.setdefault("error_type", "model_not_found")
        kw.setdefault("error_code", "LLM_MODEL_NOT_FOUND_ERROR")
        super().__init__(message or f"模型未找到: {model_name}", model_name=model_name, **kw)


class LLMTokenLimitError(LLMCallError):
    """The prompt exceeds the context window."""

    def __init__(self, message: str = "", token_count: Optional[int] = None, limit: Optional[int] = None, **kw: Any) -> None:
        kw.setdefault("error_type", "token_limit")
        kw.setdefault("error_code", "LLM_TOKEN_LIMIT_ERROR")
        super().__init__(message, **kw)
        self.token_count = token_count
        self.limit = limit


class LLMContentFilterError(LLMCallError):
    """The provider refused the content."""

    def __init__(self, message: str = "", **kw: Any) -> None:
        kw.setdefault("error_type", "content_filter")
        kw.setdefault("error_code", "LLM_CONTENT_FILTER_ERROR")
        super().__init__(message, **kw)


class LLMInvalidRequestError(LLMCallError):
    """The provider rejected the request as sent (not retryable)."""

    def __init__(self, message: str = "", **kw: Any) -> None:
        kw.setdefault("error_type", "invalid_request")
        kw.setdefault("error_code", "LLM_INVALID_REQUEST_ERROR")
        super().__init__(message, **kw)


class LLMServiceUnavailableError(LLMCallError):
    """5xx / overloaded (retryable)."""

    def __init__(self, message: str = "", **kw: Any) -> None:
        kw.setdefault("error_type", "service_unavailable")
        kw.setdefault("error_code", "LLM_SERVICE_UNAVAILABLE_ERROR")
        kw.setdefault("is_retryable", True)
        super().__init__(message, **kw)


class LLMClientCreationError(LLMError):
    """A client could not be created."""


class UnsupportedModelTypeError(LLMError):
    """Unknown ``model_type``."""


class LLMConfigurationError(LLMError):
    """Invalid configuration; ``config_key``/``config_value`` say where."""

    def __init__(self, message: str = "", config_key: Optional[str] = None, config_value: Any = None, *args: Any, **kw: Any) -> None:
        super().__init__(message, *args, **kw)
        self.config_key = config_key
        self.config_value = config_value


class LLMFallbackError(LLMError):
    """Fallback failed; ``original_error``, ``fallback_model``."""

    def __init__(self, message: str = "", original_error: Optional[BaseException] = None, fallback_model: Optional[str] = None, *args: Any, **kw: Any) -> None:
        super().__init__(message, *args, **kw)
        self.original_error = original_error
        self.fallback_model = fallback_model


class LLMWrapperError(LLMError):
    """Base of the wrapper errors (``error_code`` defaults to ``LLM_WRAPPER_ERROR``)."""

    default_code = "LLM_WRAPPER_ERROR"

    def __init__(self, message: str = "", *args: Any, error_code: Optional[str] = None, details: Optional[Dict[str, Any]] = None, wrapper_type: Optional[str] = None, **extra: Any) -> None:
        Exception.__init__(self, message, *args)
        self.message = message
        self.error_code = error_code or self.default_code
        self.details = dict(details or {})
        self.details.update({k: v for k, v in extra.items() if v is not None})
        self.wrapper_type = wrapper_type
        for k, v in extra.items():
            setattr(self, k, v)


WrapperError = LLMWrapperError


class TaskGroupWrapperError(LLMWrapperError):
    """A task-group wrapper failed (``task_id``, ``group_id``)."""

    default_code = "TASK_GROUP_WRAPPER_ERROR"

    def __init__(self, message: str = "", *args: Any, task_id: Optional[str] = None, group_id: Optional[str] = None, **kw: Any) -> None:
        kw.setdefault("wrapper_type", "task_group")
        super().__init__(message, *args, task_id=task_id, group_id=group_id, **kw)


class PollingPoolWrapperError(LLMWrapperError):
    """A polling-pool wrapper failed (``pool_id``)."""

    default_code = "POLLING_POOL_WRAPPER_ERROR"

    def __init__(self, message: str = "", *args: Any, pool_id: Optional[str] = None, **kw: Any) -> None:
        kw.setdefault("wrapper_type", "polling_pool")
        super().__init__(message, *args, pool_id=pool_id, **kw)


class WrapperFactoryError(LLMWrapperError):
    """The wrapper factory could not do what was asked (``factory_type``)."""

    default_code = "WRAPPER_FACTORY_ERROR"

    def __init__(self, message: str = "", *args: Any, factory_type: Optional[str] = None, **kw: Any) -> None:
        super().__init__(message, *args, factory_type=factory_type, **kw)


class WrapperConfigError(LLMWrapperError):
    """Invalid wrapper configuration (``config_key``, ``config_value``)."""

    default_code = "WRAPPER_CONFIG_ERROR"

    def __init__(self, message: str = "", *args: Any, config_key: Optional[str] = None, config_value: Any = None, **kw: Any) -> None:
        super().__init__(message, *args, config_key=config_key, config_value=config_value, **kw)


class WrapperExecutionError(LLMWrapperError):
    """A wrapper failed while executing (``execution_context``)."""

    default_code = "WRAPPER_EXECUTION_ERROR"

    def __init__(self, message: str = "", *args: Any, execution_context: Optional[Dict[str, Any]] = None, **kw: Any) -> None:
        super().__init__(message, *args, execution_context=execution_context, **kw)


#: Models the engine cannot call, with why (registered by ``TaskGroupManager`` when it builds
#: its router): a call error naming one says why.
_UNAVAILABLE: Dict[str, str] = {}


def register_unavailable(models: Dict[str, str]) -> None:
    """Remember why these models cannot be called (model name → reason)."""
    _UNAVAILABLE.update(models)


def from_echelon_error(err: BaseException, model_name: Optional[str] = None) -> LLMCallError:
    """Map an :class:`echelon.EchelonError` to the matching original ``LLMCallError`` subclass
    (the echelon error stays reachable as ``original_error`` and ``__cause__``). When the error
    names a model the engine cannot call, the message says why."""
    from .. import errors as E

    msg = str(err)
    why = [f"'{m}': {r}" for m, r in list(_UNAVAILABLE.items()) if f"'{m}'" in msg or m == model_name]
    if why:
        msg = f"{msg} ({'; '.join(why)})"
    if isinstance(err, E.RateLimited):
        out: LLMCallError = LLMRateLimitError(msg, retry_after=getattr(err, "retry_after", None), model_name=model_name)
    elif isinstance(err, (E.Timeout, E.QueueTimeout)):
        out = LLMTimeoutError(msg, model_name=model_name)
    elif isinstance(err, E.AuthError):
        out = LLMAuthenticationError(msg, model_name=model_name)
    elif isinstance(err, E.ContextWindowExceeded):
        out = LLMTokenLimitError(msg, model_name=model_name)
    elif isinstance(err, E.ContentFiltered):
        out = LLMContentFilterError(msg, model_name=model_name)
    elif isinstance(err, E.BadRequest):
        out = LLMInvalidRequestError(msg, model_name=model_name)
    elif isinstance(err, (E.ServerError, E.ConnectionError, E.CapacityError, E.CircuitOpen)):
        out = LLMServiceUnavailableError(msg, model_name=model_name)
    else:
        out = LLMCallError(msg, error_type=getattr(err, "kind", "unknown"), is_retryable=bool(getattr(err, "retryable", False)), model_name=model_name)
    out.original_error = err
    out.__cause__ = err
    return out
