"""The original's retry module (``src/infrastructure/llm/retry``, ``src/services/llm/retry``):
:class:`RetryConfig`, sessions and statistics, the strategies (exponential, linear, fixed,
adaptive, conditional) and :class:`RetryManager` with its decorator.

It retries *your* callables (sync or async). Calls that go through echelon are already retried
by the engine (per error class, with backoff and Retry-After); wrapping them again multiplies
the attempts, so use this for your own functions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import random
import threading
import time
from concurrent.futures import TimeoutError
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, List, Optional

from .interfaces import IRetryCondition, IRetryContext, IRetryDelayCalculator, IRetryLogger, IRetryStrategy

__all__ = [
    "RetryStrategy",
    "RetryConfig",
    "RetryAttempt",
    "RetrySession",
    "RetryStats",
    "IRetryStrategy",
    "IRetryLogger",
    "IRetryCondition",
    "IRetryDelayCalculator",
    "IRetryContext",
    "DefaultRetryLogger",
    "ExponentialBackoffStrategy",
    "LinearBackoffStrategy",
    "FixedDelayStrategy",
    "AdaptiveRetryStrategy",
    "ConditionalRetryStrategy",
    "StatusCodeRetryCondition",
    "ErrorTypeRetryCondition",
    "create_retry_strategy",
    "RetryManager",
    "RetryExecutor",
    "create_retry_manager",
    "get_global_retry_manager",
    "set_global_retry_manager",
    "retry",
]

_STATUS_CODES = [429, 500, 502, 503, 504]
_ERRORS = ["timeout", "rate_limit", "service_unavailable", "overloaded_error", "connection_error", "read_timeout", "write_timeout"]
_KINDS = {"exponential_backoff": "exponential_backoff", "linear": "linear", "linear_backoff": "linear", "fixed": "fixed", "fixed_delay": "fixed", "adaptive": "adaptive", "conditional": "conditional"}


class RetryStrategy(str, Enum):
    """The HEAD enum of strategies (``strategy=``); ``strategy_type`` strings are the same
    names (``linear``/``fixed`` also spelt ``linear_backoff``/``fixed_delay``)."""

    EXPONENTIAL_BACKOFF = "exponential_backoff"
    LINEAR_BACKOFF = "linear_backoff"
    FIXED_DELAY = "fixed_delay"
    ADAPTIVE = "adaptive"


def _check(name: str, value: Any, lo: float, integer: bool = False, optional: bool = False) -> Any:
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise TypeError(f"RetryConfig.{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if value < lo:
        raise ValueError(f"RetryConfig.{name}: must be at least {lo}, got {value!r}")
    return value


class RetryConfig:
    """How often to retry and how long to wait. Numbers are checked when the config is built
    (``TypeError`` / ``ValueError`` naming the field)."""

    def __init__(
        self,
        enabled: bool = True,
        max_attempts: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        exponential_base: float = 2.0,
        jitter: bool = True,
        retry_on_status_codes: Optional[List[int]] = None,
        retry_on_errors: Optional[List[str]] = None,
        strategy_type: str = "exponential_backoff",
        total_timeout: Optional[float] = None,
        per_attempt_timeout: Optional[float] = None,
        provider_config: Optional[Dict[str, Any]] = None,
        retryable_exceptions: Optional[List[type]] = None,
        strategy: Any = None,
    ) -> None:
        self.enabled = bool(enabled)
        self.max_attempts = _check("max_attempts", max_attempts, 1, integer=True)
        self.base_delay = _check("base_delay", base_delay, 0)
        self.max_delay = _check("max_delay", max_delay, 0)
        self.exponential_base = _check("exponential_base", exponential_base, 1)
        self.jitter = bool(jitter)
        self.retry_on_status_codes: List[int] = list(_STATUS_CODES if retry_on_status_codes is None else retry_on_status_codes)
        self.retry_on_errors: List[str] = list(_ERRORS if retry_on_errors is None else retry_on_errors)
        if strategy is not None:
            strategy_type = getattr(strategy, "value", strategy)
        if not isinstance(strategy_type, str):
            raise TypeError(f"RetryConfig.strategy_type: expected a string, got {strategy_type!r}")
        self.strategy_type = strategy_type
        self.total_timeout = _check("total_timeout", total_timeout, 0, optional=True)
        self.per_attempt_timeout = _check("per_attempt_timeout", per_attempt_timeout, 0, optional=True)
        self.provider_config: Dict[str, Any] = dict(provider_config or {})
        self.retryable_exceptions: List[type] = list(retryable_exceptions or [])

    @property
    def strategy(self) -> Any:
        kind = _KINDS.get(self.strategy_type.lower(), self.strategy_type)
        return {"exponential_backoff": RetryStrategy.EXPONENTIAL_BACKOFF, "linear": RetryStrategy.LINEAR_BACKOFF, "fixed": RetryStrategy.FIXED_DELAY, "adaptive": RetryStrategy.ADAPTIVE}.get(kind, self.strategy_type)

    @strategy.setter
    def strategy(self, value: Any) -> None:
        self.strategy_type = getattr(value, "value", value)

    def is_enabled(self) -> bool:
        return self.enabled

    def get_max_attempts(self) -> int:
        return self.max_attempts

    def should_retry_on_error(self, error: BaseException) -> bool:
        """Every error is retried (the lists name the common cases, as in the original);
        ``retryable_exceptions``, when given, narrows it to those classes."""
        if self.retryable_exceptions:
            return isinstance(error, tuple(self.retryable_exceptions))
        return True

    def calculate_delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1``: exponential ``base·exp^(n−1)``, linear
        ``base·n``, fixed ``base`` (adaptive = exponential), capped at ``max_delay``, times
        U[0.5, 1) with jitter."""
        kind = _KINDS.get(self.strategy_type.lower(), "fixed")
        if kind in ("exponential_backoff", "adaptive", "conditional"):
            delay = self.base_delay * self.exponential_base ** max(0, attempt - 1)
        elif kind == "linear":
            delay = self.base_delay * attempt
        else:
            delay = self.base_delay
        delay = min(delay, self.max_delay)
        if self.jitter:
            delay *= 0.5 + random.random() * 0.5
        return delay

    def should_continue_retry(self, attempt: int, start_time: float) -> bool:
        if attempt >= self.max_attempts:
            return False
        return self.total_timeout is None or time.time() - start_time < self.total_timeout

    def to_dict(self) -> Dict[str, Any]:
        return {
            "enabled": self.enabled,
            "max_attempts": self.max_attempts,
            "base_delay": self.base_delay,
            "max_delay": self.max_delay,
            "exponential_base": self.exponential_base,
            "jitter": self.jitter,
            "retry_on_status_codes": list(self.retry_on_status_codes),
            "retry_on_errors": list(self.retry_on_errors),
            "strategy_type": self.strategy_type,
            "total_timeout": self.total_timeout,
            "per_attempt_timeout": self.per_attempt_timeout,
            "provider_config": dict(self.provider_config),
        }

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any]) -> "RetryConfig":
        """Build from a dict (``strategy`` accepted for ``strategy_type``); an unknown key raises
        ``ValueError`` naming it."""
        d = dict(config_dict or {})
        strategy = d.pop("strategy", None)
        if strategy is not None and "strategy_type" not in d:
            d["strategy_type"] = getattr(strategy, "value", strategy)
        known = set(cls().to_dict()) | {"retryable_exceptions"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"RetryConfig: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"RetryConfig(enabled={self.enabled}, max_attempts={self.max_attempts}, strategy_type={self.strategy_type!r}, base_delay={self.base_delay})"


@dataclass
class RetryAttempt:
    attempt_number: int
    error: Optional[BaseException]
    timestamp: float
    delay: float = 0.0
    success: bool = False
    result: Optional[Any] = None
    duration: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "attempt_number": self.attempt_number,
            "error": str(self.error) if self.error else None,
            "error_type": type(self.error).__name__ if self.error else None,
            "timestamp": self.timestamp,
            "delay": self.delay,
            "success": self.success,
            "duration": self.duration,
        }


@dataclass
class RetrySession:
    """Every attempt of one retried call."""

    func_name: str
    start_time: float
    end_time: Optional[float] = None
    attempts: List[RetryAttempt] = field(default_factory=list)
    success: bool = False
    final_result: Optional[Any] = None
    final_error: Optional[BaseException] = None

    def add_attempt(self, attempt: RetryAttempt) -> None:
        self.attempts.append(attempt)

    def mark_success(self, result: Any) -> None:
        self.success, self.final_result, self.end_time = True, result, time.time()

    def mark_failure(self, error: BaseException) -> None:
        self.success, self.final_error, self.end_time = False, error, time.time()

    def get_total_duration(self) -> Optional[float]:
        return None if self.end_time is None else self.end_time - self.start_time

    def get_total_attempts(self) -> int:
        return len(self.attempts)

    def get_successful_attempt(self) -> Optional[RetryAttempt]:
        return next((a for a in self.attempts if a.success), None)

    def get_total_delay(self) -> float:
        return sum(a.delay for a in self.attempts)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "func_name": self.func_name,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "total_duration": self.get_total_duration(),
            "total_attempts": self.get_total_attempts(),
            "total_delay": self.get_total_delay(),
            "success": self.success,
            "final_error": str(self.final_error) if self.final_error else None,
            "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass
class RetryStats:
    total_sessions: int = 0
    successful_sessions: int = 0
    failed_sessions: int = 0
    total_attempts: int = 0
    total_delay: float = 0.0
    average_attempts: float = 0.0
    success_rate: float = 0.0

    def update(self, session: RetrySession) -> None:
        self.total_sessions += 1
        if session.success:
            self.successful_sessions += 1
        else:
            self.failed_sessions += 1
        self.total_attempts += session.get_total_attempts()
        self.total_delay += session.get_total_delay()
        self.average_attempts = self.total_attempts / self.total_sessions
        self.success_rate = self.successful_sessions / self.total_sessions

    def to_dict(self) -> Dict[str, Any]:
        return {
            "total_sessions": self.total_sessions,
            "successful_sessions": self.successful_sessions,
            "failed_sessions": self.failed_sessions,
            "total_attempts": self.total_attempts,
            "total_delay": self.total_delay,
            "average_attempts": self.average_attempts,
            "success_rate": self.success_rate,
        }


# -- strategies -----------------------------------------------------------------------------


class DefaultRetryLogger(IRetryLogger):
    """Prints one ``[Retry] …`` line per event (``enabled=False`` silences it)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def log_retry_attempt(self, func_name: str, error: Exception, attempt: int, delay: float) -> None:
        if self.enabled:
            print(f"[Retry] {func_name}: attempt {attempt} failed ({error}); next try in {delay:.2f}s")

    def log_retry_success(self, func_name: str, result: Any, attempt: int) -> None:
        if self.enabled:
            print(f"[Retry] {func_name}: 成功 (succeeded) on attempt {attempt}")

    def log_retry_failure(self, func_name: str, error: Exception, total_attempts: int) -> None:
        if self.enabled:
            print(f"[Retry] {func_name}: 失败 (failed) after {total_attempts} attempts: {error}")


class _Strategy(IRetryStrategy):
    #: Name given to the logger (the manager sets the function's name).
    func_name = "function"

    def __init__(self, config: RetryConfig, logger: Optional[IRetryLogger] = None) -> None:
        self.config = config
        self.logger: IRetryLogger = logger or DefaultRetryLogger()

    def should_retry(self, error: Exception, attempt: int) -> bool:
        if attempt >= self.config.get_max_attempts():
            return False
        return self.config.should_retry_on_error(error)

    def get_retry_delay(self, error: Exception, attempt: int) -> float:
        return self.config.calculate_delay(attempt)

    def on_retry_attempt(self, error: Exception, attempt: int, delay: float) -> None:
        self.logger.log_retry_attempt(self.func_name, error, attempt, delay)

    def on_retry_success(self, result: Any, attempt: int) -> None:
        self.logger.log_retry_success(self.func_name, result, attempt)

    def on_retry_failure(self, error: Exception, total_attempts: int) -> None:
        self.logger.log_retry_failure(self.func_name, error, total_attempts)

    def _jittered(self, delay: float) -> float:
        delay = min(delay, self.config.max_delay)
        return delay * (0.5 + random.random() * 0.5) if self.config.jitter else delay


class ExponentialBackoffStrategy(_Strategy):
    """``base · exp^(n−1)``, capped, jittered."""

    def get_retry_delay(self, error: Exception, attempt: int) -> float:
        c = self.config
        return self._jittered(c.base_delay * c.exponential_base ** max(0, attempt - 1))


class LinearBackoffStrategy(_Strategy):
    """``base · n``, capped, jittered."""

    def get_retry_delay(self, error: Exception, attempt: int) -> float:
        return self._jittered(self.config.base_delay * attempt)


class FixedDelayStrategy(_Strategy):
    """``base`` every time (jittered)."""

    def get_retry_delay(self, error: Exception, attempt: int) -> float:
        return self._jittered(self.config.base_delay)


class AdaptiveRetryStrategy(_Strategy):
    """Exponential, lengthened for rate limits (×2), timeouts (×1.5) and connection errors
    (×1.2), and by 1.2 more when the same kind of error repeats. Remembers the errors of the
    current call; a success forgets them."""

    def __init__(self, config: RetryConfig, logger: Optional[IRetryLogger] = None) -> None:
        super().__init__(config, logger)
        self._error_history: List[BaseException] = []

    def should_retry(self, error: Exception, attempt: int) -> bool:
        if attempt >= self.config.get_max_attempts():
            return False
        self._error_history.append(error)
        return self.config.should_retry_on_error(error)

    def get_retry_delay(self, error: Exception, attempt: int) -> float:
        c = self.config
        delay = min(c.base_delay * c.exponential_base ** max(0, attempt - 1), c.max_delay)
        kind, text = type(error).__name__.lower(), str(error).lower()
        if "ratelimit" in kind or "rate limit" in text or "rate_limit" in text:
            delay *= 2
        elif "timeout" in kind or "timeout" in text:
            delay *= 1.5
        elif "connection" in kind or "connection" in text:
            delay *= 1.2
        h = self._error_history
        if len(h) >= 2 and type(h[-1]) is type(h[-2]):
            delay *= 1.2
        return self._jittered(delay)

    def on_retry_success(self, result: Any, attempt: int) -> None:
        self._error_history.clear()
        super().on_retry_success(result, attempt)


class ConditionalRetryStrategy(_Strategy):
    """Retries only when every condition agrees (the attempt limit is checked first)."""

    def __init__(self, config: RetryConfig, conditions: List[IRetryCondition], logger: Optional[IRetryLogger] = None) -> None:
        super().__init__(config, logger)
        self.conditions = conditions

    def should_retry(self, error: Exception, attempt: int) -> bool:
        if attempt >= self.config.get_max_attempts():
            return False
        for c in self.conditions:
            if not c.should_retry(error, attempt):
                return False
        return True if self.conditions else self.config.should_retry_on_error(error)


class StatusCodeRetryCondition(IRetryCondition):
    """Retry when ``error.response.status_code`` is one of ``retry_status_codes``."""

    def __init__(self, retry_status_codes: List[int]) -> None:
        self.retry_status_codes = list(retry_status_codes)

    def should_retry(self, error: Exception, attempt: int) -> bool:
        code = getattr(getattr(error, "response", None), "status_code", None)
        return code is not None and code in self.retry_status_codes


class ErrorTypeRetryCondition(IRetryCondition):
    """Never retry an error naming one of ``block_error_types`` (class name or message); retry
    only those naming one of ``retry_error_types`` (all, when that list is empty)."""

    def __init__(self, retry_error_types: List[str], block_error_types: Optional[List[str]] = None) -> None:
        self.retry_error_types = list(retry_error_types)
        self.block_error_types = list(block_error_types or [])

    @staticmethod
    def _names(error: BaseException, word: str) -> bool:
        w = word.lower()
        return w in type(error).__name__.lower() or w in str(error).lower()

    def should_retry(self, error: Exception, attempt: int) -> bool:
        if any(self._names(error, b) for b in self.block_error_types):
            return False
        if self.retry_error_types:
            return any(self._names(error, r) for r in self.retry_error_types)
        return True


def create_retry_strategy(config: RetryConfig, logger: Optional[IRetryLogger] = None, **kwargs: Any) -> IRetryStrategy:
    """The strategy named by ``config.strategy_type``; an unknown one raises
    ``ValueError("不支持的重试策略类型: …")``."""
    kind = _KINDS.get(str(config.strategy_type).lower())
    if kind == "exponential_backoff":
        return ExponentialBackoffStrategy(config, logger)
    if kind == "linear":
        return LinearBackoffStrategy(config, logger)
    if kind == "fixed":
        return FixedDelayStrategy(config, logger)
    if kind == "adaptive":
        return AdaptiveRetryStrategy(config, logger)
    if kind == "conditional":
        return ConditionalRetryStrategy(config, list(kwargs.get("conditions") or []), logger)
    raise ValueError(f"不支持的重试策略类型: {config.strategy_type} (supported: exponential_backoff, linear, fixed, adaptive, conditional)")


# -- manager --------------------------------------------------------------------------------


class RetryManager:
    """Runs a function with retries per ``config`` and records a :class:`RetrySession` per call.

    ``per_attempt_timeout`` bounds each attempt (``concurrent.futures.TimeoutError``; a
    synchronous function keeps running on its worker thread, as Python cannot stop it);
    ``total_timeout`` stops retrying once that much time has passed."""

    def __init__(self, config: Optional[RetryConfig] = None, logger: Optional[IRetryLogger] = None) -> None:
        self.config = config or RetryConfig()
        self.logger: IRetryLogger = logger or DefaultRetryLogger()
        self._strategy = create_retry_strategy(self.config, self.logger)
        self._sessions: List[RetrySession] = []
        self._stats = RetryStats()
        self._lock = threading.Lock()

    # -- running ---------------------------------------------------------------------------
    def _start(self, func: Callable[..., Any]) -> RetrySession:
        name = getattr(func, "__name__", None) or type(func).__name__
        self._strategy.func_name = name  # type: ignore[attr-defined]
        return RetrySession(func_name=name, start_time=time.time())

    def _finish(self, session: RetrySession) -> None:
        with self._lock:
            self._sessions.append(session)
            del self._sessions[:-1000]
            self._stats.update(session)

    def _after_error(self, session: RetrySession, attempt: RetryAttempt, error: BaseException, n: int) -> bool:
        """Record a failed attempt; whether to try again."""
        attempt.error = error
        session.add_attempt(attempt)
        go_on = isinstance(error, Exception) and self._strategy.should_retry(error, n) and self.config.should_continue_retry(n, session.start_time)
        if go_on:
            self._strategy.on_retry_attempt(error, n, self._strategy.get_retry_delay(error, n))  # type: ignore[arg-type]
        return go_on

    def execute_with_retry(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``func(*args, **kwargs)`` until it succeeds or the attempts run out; raises
        the last error."""
        if not self.config.is_enabled():
            return func(*args, **kwargs)
        session = self._start(func)
        n, last = 0, None
        try:
            while self.config.should_continue_retry(n, session.start_time):
                n += 1
                delay = 0.0
                if n > 1 and last is not None:
                    delay = self._bounded_delay(last, n, session)
                    if delay:
                        time.sleep(delay)
                attempt = RetryAttempt(attempt_number=n, error=None, timestamp=time.time(), delay=delay)
                t0 = time.time()
                try:
                    result = self._call_sync(func, args, kwargs)
                except Exception as e:
                    attempt.duration = time.time() - t0
                    last = e
                    if not self._after_error(session, attempt, e, n):
                        break
                    continue
                attempt.success, attempt.result, attempt.duration = True, result, time.time() - t0
                session.add_attempt(attempt)
                session.mark_success(result)
                self._strategy.on_retry_success(result, n)
                return result
            error = last or RuntimeError("retry stopped before any attempt (total_timeout)")
            session.mark_failure(error)
            self._strategy.on_retry_failure(error, n)  # type: ignore[arg-type]
            raise error
        finally:
            self._finish(session)

    async def execute_with_retry_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Awaitable :meth:`execute_with_retry` for coroutine functions (plain functions work
        too)."""
        if not self.config.is_enabled():
            return await _await(func(*args, **kwargs))
        session = self._start(func)
        n, last = 0, None
        try:
            while self.config.should_continue_retry(n, session.start_time):
                n += 1
                delay = 0.0
                if n > 1 and last is not None:
                    delay = self._bounded_delay(last, n, session)
                    if delay:
                        await asyncio.sleep(delay)
                attempt = RetryAttempt(attempt_number=n, error=None, timestamp=time.time(), delay=delay)
                t0 = time.time()
                try:
                    if self.config.per_attempt_timeout is not None:
                        try:
                            result = await asyncio.wait_for(_await(func(*args, **kwargs)), self.config.per_attempt_timeout)
                        except asyncio.TimeoutError as e:
                            raise TimeoutError(f"attempt {n} of {session.func_name} timed out after {self.config.per_attempt_timeout}s") from e
                    else:
                        result = await _await(func(*args, **kwargs))
                except Exception as e:
                    attempt.duration = time.time() - t0
                    last = e
                    if not self._after_error(session, attempt, e, n):
                        break
                    continue
                attempt.success, attempt.result, attempt.duration = True, result, time.time() - t0
                session.add_attempt(attempt)
                session.mark_success(result)
                self._strategy.on_retry_success(result, n)
                return result
            error = last or RuntimeError("retry stopped before any attempt (total_timeout)")
            session.mark_failure(error)
            self._strategy.on_retry_failure(error, n)  # type: ignore[arg-type]
            raise error
        finally:
            self._finish(session)

    def _bounded_delay(self, error: BaseException, n: int, session: RetrySession) -> float:
        delay = max(0.0, float(self._strategy.get_retry_delay(error, n)))  # type: ignore[arg-type]
        if self.config.total_timeout is not None:
            delay = min(delay, max(0.0, session.start_time + self.config.total_timeout - time.time()))
        return delay

    def _call_sync(self, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        timeout = self.config.per_attempt_timeout
        if timeout is None:
            return func(*args, **kwargs)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="echelon-retry")
        try:
            fut = pool.submit(func, *args, **kwargs)
            try:
                return fut.result(timeout=timeout)
            except concurrent.futures.TimeoutError as e:
                raise TimeoutError(f"attempt of {getattr(func, '__name__', func)} timed out after {timeout}s") from e
        finally:
            pool.shutdown(wait=False)

    # -- decorator -------------------------------------------------------------------------
    def retry(self, func: Optional[Callable[..., Any]] = None, *, config: Optional[RetryConfig] = None) -> Any:
        """Decorator: ``@manager.retry`` or ``@manager.retry(config=...)``; works on plain and
        coroutine functions."""

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            manager = RetryManager(config or self.config, self.logger)
            if inspect.iscoroutinefunction(f) or asyncio.iscoroutinefunction(f):

                @functools.wraps(f)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await manager.execute_with_retry_async(f, *args, **kwargs)

                return async_wrapper

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return manager.execute_with_retry(f, *args, **kwargs)

            return wrapper

        return decorate(func) if func is not None else decorate

    # -- introspection ---------------------------------------------------------------------
    def get_stats(self) -> Dict[str, Any]:
        out = self._stats.to_dict()
        out["config"] = self.config.to_dict()
        out["total_sessions"] = len(self._sessions)
        out["recent_sessions"] = [s.to_dict() for s in self._sessions[-10:]]
        return out

    def get_sessions(self, limit: Optional[int] = None) -> List[RetrySession]:
        return list(self._sessions[-limit:] if limit else self._sessions)

    def clear_sessions(self) -> None:
        self._sessions.clear()
        self._stats = RetryStats()

    def reset_stats(self) -> None:
        self._stats = RetryStats()

    def is_enabled(self) -> bool:
        return self.config.is_enabled()

    def update_config(self, config: RetryConfig) -> None:
        self.config = config
        self._strategy = create_retry_strategy(config, self.logger)


class RetryExecutor(RetryManager):
    """The original's lower-level name: ``execute``/``execute_async`` (``func_name=``
    overrides the recorded name) and ``get_stats()`` returning the :class:`RetryStats`."""

    def execute(self, func: Callable[..., Any], *args: Any, func_name: Optional[str] = None, **kwargs: Any) -> Any:
        return self.execute_with_retry(_named(func, func_name), *args, **kwargs)

    async def execute_async(self, func: Callable[..., Any], *args: Any, func_name: Optional[str] = None, **kwargs: Any) -> Any:
        return await self.execute_with_retry_async(_named(func, func_name), *args, **kwargs)

    def get_stats(self) -> RetryStats:  # type: ignore[override]
        return self._stats


def _named(func: Callable[..., Any], name: Optional[str]) -> Callable[..., Any]:
    if not name:
        return func

    @functools.wraps(func)
    def call(*a: Any, **kw: Any) -> Any:
        return func(*a, **kw)

    call.__name__ = name
    return call


async def _await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


def create_retry_manager(config: Optional[RetryConfig] = None, logger: Optional[IRetryLogger] = None) -> RetryManager:
    return RetryManager(config, logger)


_global_lock = threading.Lock()
_global_manager: Optional[RetryManager] = None


def get_global_retry_manager() -> RetryManager:
    """The process-wide manager (created on first use with the default config)."""
    global _global_manager
    with _global_lock:
        if _global_manager is None:
            _global_manager = RetryManager(RetryConfig())
        return _global_manager


def set_global_retry_manager(manager: RetryManager) -> None:
    global _global_manager
    if not isinstance(manager, RetryManager):
        raise TypeError(f"set_global_retry_manager: expected a RetryManager, got {type(manager).__name__}")
    with _global_lock:
        _global_manager = manager


def retry(config: Optional[RetryConfig] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator using the global manager: ``@retry()`` or ``@retry(RetryConfig(...))``."""
    return get_global_retry_manager().retry(config=config)
