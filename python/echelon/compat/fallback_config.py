"""Model-level fallback settings and records (``fallback_system/fallback_config.py`` of the
original, and its HEAD successor ``src/infrastructure/llm/fallback/``): :class:`FallbackConfig`,
:class:`FallbackAttempt`, :class:`FallbackSession`, :class:`FallbackStats`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

__all__ = ["FallbackStrategy", "FallbackConfig", "FallbackAttempt", "FallbackSession", "FallbackStats"]

_STATUS_CODES = [429, 500, 502, 503, 504]
_ERRORS = ["timeout", "rate_limit", "service_unavailable", "overloaded_error"]


class FallbackStrategy(str, Enum):
    """The HEAD enum of model-level strategies (``strategy=``); ``strategy_type`` strings also
    accept ``error_type`` and ``conditional``."""

    SEQUENTIAL = "sequential"
    PRIORITY = "priority"
    RANDOM = "random"
    PARALLEL = "parallel"


def _number(name: str, value: Any, lo: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise TypeError(f"FallbackConfig.{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if value < lo:
        raise ValueError(f"FallbackConfig.{name}: must be at least {lo}, got {value!r}")
    return value


class FallbackConfig:
    """Which models to fall back to and how long to wait in between.

    Accepts both spellings of the strategy: ``strategy_type="sequential"`` (the versions the
    original's tests use) and ``strategy=FallbackStrategy.SEQUENTIAL`` (HEAD). Numbers are
    checked when set: a wrong type raises ``TypeError``, an out-of-range value ``ValueError``,
    naming the field."""

    def __init__(
        self,
        enabled: bool = True,
        max_attempts: int = 3,
        fallback_models: Optional[List[str]] = None,
        strategy_type: str = "sequential",
        error_mappings: Optional[Dict[str, List[str]]] = None,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        exponential_base: float = 2.0,
        jitter: bool = True,
        fallback_on_status_codes: Optional[List[int]] = None,
        fallback_on_errors: Optional[List[str]] = None,
        provider_config: Optional[Dict[str, Any]] = None,
        parallel_timeout: Optional[float] = None,
        parallel_success_threshold: int = 1,
        strategy: Any = None,
    ) -> None:
        self.enabled = bool(enabled)
        self.max_attempts = _number("max_attempts", max_attempts, 1, integer=True)
        if fallback_models is not None and (isinstance(fallback_models, str) or not all(isinstance(m, str) for m in fallback_models)):
            raise TypeError(f"FallbackConfig.fallback_models: expected a list of model names, got {fallback_models!r}")
        self.fallback_models: List[str] = list(fallback_models or [])
        if strategy is not None:
            strategy_type = getattr(strategy, "value", strategy)
        if not isinstance(strategy_type, str):
            raise TypeError(f"FallbackConfig.strategy_type: expected a string, got {strategy_type!r}")
        self.strategy_type = strategy_type
        self.error_mappings: Dict[str, List[str]] = dict(error_mappings or {})
        self.base_delay = _number("base_delay", base_delay, 0)
        self.max_delay = _number("max_delay", max_delay, 0)
        self.exponential_base = _number("exponential_base", exponential_base, 1)
        self.jitter = bool(jitter)
        self.fallback_on_status_codes: List[int] = list(_STATUS_CODES if fallback_on_status_codes is None else fallback_on_status_codes)
        self.fallback_on_errors: List[str] = list(_ERRORS if fallback_on_errors is None else fallback_on_errors)
        self.provider_config: Dict[str, Any] = dict(provider_config or {})
        self.parallel_timeout = None if parallel_timeout is None else _number("parallel_timeout", parallel_timeout, 0)
        self.parallel_success_threshold = _number("parallel_success_threshold", parallel_success_threshold, 1, integer=True)

    # HEAD name of the strategy field.
    @property
    def strategy(self) -> Any:
        try:
            return FallbackStrategy(self.strategy_type)
        except ValueError:
            return self.strategy_type

    @strategy.setter
    def strategy(self, value: Any) -> None:
        self.strategy_type = getattr(value, "value", value)

    def is_enabled(self) -> bool:
        """Enabled and at least one fallback model."""
        return self.enabled and len(self.fallback_models) > 0

    def get_max_attempts(self) -> int:
        return self.max_attempts

    def get_fallback_models(self) -> List[str]:
        return list(self.fallback_models)

    def should_fallback_on_error(self, error: BaseException) -> bool:
        """Whether ``error`` is one to fall back on. As in the original, every error qualifies
        (the lists only name the common cases); kept so subclasses can narrow it."""
        return True

    def calculate_delay(self, attempt: int) -> float:
        """``min(base · exp^(attempt−1), max_delay)``, times U[0.5, 1) with jitter."""
        delay = min(self.base_delay * self.exponential_base ** max(0, attempt - 1), self.max_delay)
        if self.jitter:
            delay *= 0.5 + random.random() * 0.5
        return delay

    def get_fallback_target(self, error: Any, attempt: int) -> Optional[str]:
        """``None`` at attempt 0 (the primary), then the fallback model for that attempt
        (the original's HEAD version returned the *last* model at attempt 0, §5.23)."""
        if attempt <= 0 or not self.fallback_models:
            return None
        if self.strategy_type == "priority":
            msg = str(error).lower()
            for pattern, models in self.error_mappings.items():
                if pattern.lower() in msg and models:
                    return models[min(attempt - 1, len(models) - 1)]
        if self.strategy_type == "random":
            return random.choice(self.fallback_models)
        if self.strategy_type == "parallel":
            return "parallel_fallback"
        i = attempt - 1
        return self.fallback_models[i] if i < len(self.fallback_models) else None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "enabled": self.enabled,
            "max_attempts": self.max_attempts,
            "fallback_models": list(self.fallback_models),
            "strategy_type": self.strategy_type,
            "error_mappings": dict(self.error_mappings),
            "base_delay": self.base_delay,
            "max_delay": self.max_delay,
            "exponential_base": self.exponential_base,
            "jitter": self.jitter,
            "fallback_on_status_codes": list(self.fallback_on_status_codes),
            "fallback_on_errors": list(self.fallback_on_errors),
            "provider_config": dict(self.provider_config),
            "parallel_timeout": self.parallel_timeout,
            "parallel_success_threshold": self.parallel_success_threshold,
        }

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any]) -> "FallbackConfig":
        """Build from a dict (``strategy`` is accepted for ``strategy_type``); an unknown key
        raises ``ValueError`` naming it."""
        d = dict(config_dict or {})
        strategy = d.pop("strategy", None)
        if strategy is not None and "strategy_type" not in d:
            d["strategy_type"] = getattr(strategy, "value", strategy)
        known = set(cls().to_dict())
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FallbackConfig: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FallbackConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"FallbackConfig(enabled={self.enabled}, max_attempts={self.max_attempts}, fallback_models={self.fallback_models!r}, strategy_type={self.strategy_type!r})"


@dataclass
class FallbackAttempt:
    """One attempt of a fallback session (``fallback_model`` is ``None`` for the primary)."""

    primary_model: str
    fallback_model: Optional[str]
    error: Optional[BaseException]
    attempt_number: int
    timestamp: float
    success: bool
    response: Optional[Any] = None
    delay: float = 0.0

    def get_duration(self) -> Optional[float]:
        return None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "primary_model": self.primary_model,
            "fallback_model": self.fallback_model,
            "error": str(self.error) if self.error else None,
            "error_type": type(self.error).__name__ if self.error else None,
            "attempt_number": self.attempt_number,
            "timestamp": self.timestamp,
            "success": self.success,
            "delay": self.delay,
        }


@dataclass
class FallbackSession:
    """Every attempt of one call with fallback, and how it ended."""

    primary_model: str
    start_time: float
    end_time: Optional[float] = None
    attempts: List[FallbackAttempt] = field(default_factory=list)
    success: bool = False
    final_response: Optional[Any] = None
    final_error: Optional[BaseException] = None

    def add_attempt(self, attempt: FallbackAttempt) -> None:
        self.attempts.append(attempt)

    def mark_success(self, response: Any) -> None:
        self.success = True
        self.final_response = response
        self.end_time = time.time()

    def mark_failure(self, error: BaseException) -> None:
        self.success = False
        self.final_error = error
        self.end_time = time.time()

    def get_total_duration(self) -> Optional[float]:
        return None if self.end_time is None else self.end_time - self.start_time

    def get_total_attempts(self) -> int:
        return len(self.attempts)

    def get_successful_attempt(self) -> Optional[FallbackAttempt]:
        return next((a for a in self.attempts if a.success), None)

    def get_fallback_usage(self) -> bool:
        """Whether a model other than the primary was tried."""
        return self.get_total_attempts() > 1

    def served_by(self) -> Optional[str]:
        """The model that answered (``None`` when the session failed)."""
        a = self.get_successful_attempt()
        if a is None:
            return None
        return a.fallback_model or a.primary_model

    def to_dict(self) -> Dict[str, Any]:
        return {
            "primary_model": self.primary_model,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "total_duration": self.get_total_duration(),
            "total_attempts": self.get_total_attempts(),
            "success": self.success,
            "final_error": str(self.final_error) if self.final_error else None,
            "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass
class FallbackStats:
    """Running totals over sessions (HEAD ``FallbackStats``)."""

    total_sessions: int = 0
    successful_sessions: int = 0
    failed_sessions: int = 0
    fallback_usage_count: int = 0
    total_attempts: int = 0
    average_attempts: float = 0.0
    fallback_rate: float = 0.0
    success_rate: float = 0.0

    def update(self, session: FallbackSession) -> None:
        self.total_sessions += 1
        if session.success:
            self.successful_sessions += 1
        else:
            self.failed_sessions += 1
        if session.get_fallback_usage():
            self.fallback_usage_count += 1
        self.total_attempts += session.get_total_attempts()
        self.average_attempts = self.total_attempts / self.total_sessions
        self.fallback_rate = self.fallback_usage_count / self.total_sessions
        self.success_rate = self.successful_sessions / self.total_sessions

    def to_dict(self) -> Dict[str, Any]:
        return {
            "total_sessions": self.total_sessions,
            "successful_sessions": self.successful_sessions,
            "failed_sessions": self.failed_sessions,
            "fallback_usage_count": self.fallback_usage_count,
            "total_attempts": self.total_attempts,
            "average_attempts": self.average_attempts,
            "fallback_rate": self.fallback_rate,
            "success_rate": self.success_rate,
        }
