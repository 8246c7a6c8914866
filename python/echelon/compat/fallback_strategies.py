"""Model-level fallback strategies (``fallback_system/strategies.py`` of the original):
sequential, priority (by error), random (never the same model twice), error-type based,
parallel (race the models) and conditional, plus :func:`create_fallback_strategy`.

Every strategy answers three questions for attempt ``n`` (0 = the primary model): whether to
fall back after an error, to which model (``None`` at attempt 0 means "the primary"), and how
long to wait first. :class:`~echelon.compat.fallback_manager.FallbackManager` asks them and
makes the calls (through the engine unless a ``client_factory`` is given).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
from typing import Any, Callable, Dict, List, Optional

from .fallback_config import FallbackConfig
from .interfaces import IFallbackStrategy

__all__ = [
    "SequentialFallbackStrategy",
    "PriorityFallbackStrategy",
    "RandomFallbackStrategy",
    "ErrorTypeBasedStrategy",
    "ParallelFallbackStrategy",
    "ConditionalFallbackStrategy",
    "ConditionalFallback",
    "create_fallback_strategy",
]

log = logging.getLogger(__name__)


def _squash(s: str) -> str:
    return re.sub(r"[\s_\-]", "", s.lower())


def _matches(error: BaseException, key: str) -> bool:
    """Whether a mapping key such as ``"TimeoutError"`` / ``"RateLimitError"`` describes
    ``error``: its class name, or the key (without the ``Error`` suffix) in the message
    (``"rate limit exceeded"`` matches ``RateLimitError``)."""
    if type(error).__name__ == key:
        return True
    k = _squash(key)
    stem = k[:-5] if k.endswith("error") and len(k) > 5 else k
    msg = _squash(str(error))
    return bool(stem) and (k in msg or stem in msg)


class _Base(IFallbackStrategy):
    def __init__(self, config: FallbackConfig) -> None:
        self.config = config

    def _within(self, attempt: int) -> bool:
        return attempt < self.config.get_max_attempts()

    def _nth(self, models: List[str], attempt: int) -> Optional[str]:
        i = attempt - 1
        return models[i] if 0 <= i < len(models) else None

    def get_fallback_delay(self, error: Exception, attempt: int) -> float:
        return self.config.calculate_delay(attempt)


class SequentialFallbackStrategy(_Base):
    """The fallback models in order, one per attempt."""

    def should_fallback(self, error: Exception, attempt: int) -> bool:
        if not self._within(attempt) or attempt > len(self.config.get_fallback_models()):
            return False
        return self.config.should_fallback_on_error(error)

    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]:
        if attempt == 0:
            return None
        return self._nth(self.config.get_fallback_models(), attempt)


class PriorityFallbackStrategy(_Base):
    """``priority_map`` (error class name → models; ``config.error_mappings`` when not given)
    first, then the configured fallback models."""

    def __init__(self, config: FallbackConfig, priority_map: Optional[Dict[str, List[str]]] = None) -> None:
        super().__init__(config)
        self.priority_map: Dict[str, List[str]] = dict(priority_map if priority_map is not None else config.error_mappings)

    def should_fallback(self, error: Exception, attempt: int) -> bool:
        if not self._within(attempt) or not self.config.should_fallback_on_error(error):
            return False
        if type(error).__name__ in self.priority_map:
            return True
        return len(self.config.get_fallback_models()) > 0

    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]:
        if attempt == 0:
            return None
        for key, models in self.priority_map.items():
            if _matches(error, key):
                target = self._nth(list(models), attempt)
                if target is not None:
                    return target
        return self._nth(self.config.get_fallback_models(), attempt)


class RandomFallbackStrategy(_Base):
    """A random fallback model not used yet by this strategy."""

    def __init__(self, config: FallbackConfig) -> None:
        super().__init__(config)
        self._used_models: set = set()

    def _unused(self) -> List[str]:
        return [m for m in self.config.get_fallback_models() if m not in self._used_models]

    def should_fallback(self, error: Exception, attempt: int) -> bool:
        if not self._within(attempt) or not self._unused():
            return False
        return self.config.should_fallback_on_error(error)

    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]:
        if attempt == 0:
            return None
        unused = self._unused()
        if not unused:
            return None
        choice = random.choice(unused)
        self._used_models.add(choice)
        return choice

    def reset(self) -> None:
        """Make every model eligible again (the manager does this per call)."""
        self._used_models.clear()


class ErrorTypeBasedStrategy(_Base):
    """``error_model_mapping`` (exact class name → models) first, then the fallback models. The
    wait is doubled after a rate limit and 1.5× after a timeout; its jitter is kept within
    [0.75, 1) of that so the three classes never swap order."""

    def __init__(self, config: FallbackConfig, error_model_mapping: Optional[Dict[str, List[str]]] = None) -> None:
        super().__init__(config)
        self.error_model_mapping: Dict[str, List[str]] = dict(error_model_mapping or {})

    def should_fallback(self, error: Exception, attempt: int) -> bool:
        if not self._within(attempt) or not self.config.should_fallback_on_error(error):
            return False
        name = type(error).__name__
        if name in self.error_model_mapping:
            return attempt - 1 < len(self.error_model_mapping[name])
        return len(self.config.get_fallback_models()) > 0

    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]:
        if attempt == 0:
            return None
        models = self.error_model_mapping.get(type(error).__name__)
        if models:
            target = self._nth(list(models), attempt)
            if target is not None:
                return target
        return self._nth(self.config.get_fallback_models(), attempt)

    def get_fallback_delay(self, error: Exception, attempt: int) -> float:
        c = self.config
        delay = min(c.base_delay * c.exponential_base ** max(0, attempt - 1), c.max_delay)
        name = type(error).__name__
        if name == "RateLimitError" or "rate limit" in str(error).lower():
            delay *= 2
        elif name == "TimeoutError" or isinstance(error, TimeoutError):
            delay *= 1.5
        if c.jitter:
            delay *= 0.75 + random.random() * 0.25
        return delay


class ParallelFallbackStrategy(_Base):
    """Call the primary and every fallback model at once; the first success wins and the rest
    are cancelled (the original let the first *finished* call decide, even a failed one)."""

    def __init__(self, config: FallbackConfig, timeout: float = 30.0) -> None:
        super().__init__(config)
        self.timeout = timeout

    def should_fallback(self, error: Exception, attempt: int) -> bool:
        if not self._within(attempt) or attempt > len(self.config.get_fallback_models()):
            return False
        return self.config.should_fallback_on_error(error)

    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]:
        if attempt == 0:
            return None
        return self._nth(self.config.get_fallback_models(), attempt)

    async def execute_parallel_fallback(self, client_factory: Any, messages: Any, parameters: Any, primary_model: str, **kwargs: Any) -> Any:
        """Race the models through ``client_factory``; returns the first success. Raises the
        last error when all fail, or ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        names = [primary_model] + [m for m in self.config.get_fallback_models() if m != primary_model]

        async def call(name: str) -> Any:
            client = client_factory.create_client(name)
            r = client.generate_async(messages, parameters, **kwargs)
            return await r if inspect.isawaitable(r) else r

        tasks = [asyncio.ensure_future(call(n)) for n in names]
        last: Optional[BaseException] = None
        try:
            for fut in asyncio.as_completed(tasks, timeout=self.timeout):
                try:
                    return await fut
                except asyncio.TimeoutError:
                    raise
                except Exception as e:  # noqa: BLE001 - the next finisher may succeed
                    last = e
            raise last or RuntimeError("no model to call")
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class ConditionalFallbackStrategy(_Base):
    """Sequential, but only for errors one of ``conditions`` accepts (or, with none given,
    the config's own check)."""

    def __init__(self, config: FallbackConfig, conditions: Optional[List[Callable[[Exception], bool]]] = None) -> None:
        super().__init__(config)
        self.conditions = list(conditions or [])

    def should_fallback(self, error: Exception, attempt: int) -> bool:
        if not self._within(attempt) or attempt > len(self.config.get_fallback_models()):
            return False
        if self.conditions:
            return any(c(error) for c in self.conditions)
        return self.config.should_fallback_on_error(error)

    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]:
        if attempt == 0:
            return None
        return self._nth(self.config.get_fallback_models(), attempt)


def _has(error: BaseException, phrase: str, cls: str) -> bool:
    return phrase in str(error).lower() or cls in type(error).__name__


class ConditionalFallback:
    """Ready-made conditions for :class:`ConditionalFallbackStrategy`."""

    @staticmethod
    def on_timeout(error: Exception) -> bool:
        return _has(error, "timeout", "TimeoutError")

    @staticmethod
    def on_rate_limit(error: Exception) -> bool:
        return _has(error, "rate limit", "RateLimitError")

    @staticmethod
    def on_service_unavailable(error: Exception) -> bool:
        return _has(error, "service unavailable", "ServiceUnavailableError")

    @staticmethod
    def on_authentication_error(error: Exception) -> bool:
        return _has(error, "authentication", "AuthenticationError")

    @staticmethod
    def on_model_not_found(error: Exception) -> bool:
        return _has(error, "model not found", "ModelNotFoundError")

    @staticmethod
    def on_token_limit(error: Exception) -> bool:
        return _has(error, "token limit", "TokenLimitError")

    @staticmethod
    def on_content_filter(error: Exception) -> bool:
        return _has(error, "content filter", "ContentFilterError")

    @staticmethod
    def on_invalid_request(error: Exception) -> bool:
        return _has(error, "invalid request", "InvalidRequestError")

    @staticmethod
    def on_any_error(error: Exception) -> bool:
        return True

    @staticmethod
    def on_retryable_error(error: Exception) -> bool:
        text = str(error).lower()
        return any(p in text for p in ("timeout", "rate limit", "service unavailable", "overloaded", "connection", "network", "temporary"))


def create_fallback_strategy(config: FallbackConfig, **kwargs: Any) -> IFallbackStrategy:
    """The strategy named by ``config.strategy_type``; strategy-specific arguments come as
    keywords (``priority_map``, ``error_model_mapping``, ``timeout``, ``conditions``). An
    unknown type raises ``ValueError("不支持的降级策略类型: …")``."""
    kind = str(config.strategy_type).lower()
    if kind == "sequential":
        return SequentialFallbackStrategy(config)
    if kind == "priority":
        return PriorityFallbackStrategy(config, kwargs.get("priority_map"))
    if kind == "random":
        return RandomFallbackStrategy(config)
    if kind == "error_type":
        return ErrorTypeBasedStrategy(config, kwargs.get("error_model_mapping"))
    if kind == "parallel":
        return ParallelFallbackStrategy(config, kwargs.get("timeout") or config.parallel_timeout or 30.0)
    if kind == "conditional":
        return ConditionalFallbackStrategy(config, kwargs.get("conditions"))
    raise ValueError(f"不支持的降级策略类型: {config.strategy_type} (supported: sequential, priority, random, error_type, parallel, conditional)")
