"""``FallbackManager``: the original's fallback manager, model level and group level at once
(``src/services/llm/fallback_system`` and ``src/infrastructure/llm/fallback_system``), with the
components the original split it into (configuration, sessions, statistics, strategies,
executor, orchestrator), the core ``DefaultFallbackLogger`` and the group strategies of
``src/core/llm/wrappers/fallback_manager.py``.

Calls go through the given ``client_factory`` (honoured, as the original promised) or, without
one, through the echelon engine of the ``task_group_manager``. Fixed against the original
(docs/migration.md): it constructs with any of its five optional arguments; group-level
``execute_with_fallback`` tries the given ``fallback_groups``; a fallback is counted only when
one happened; errors are wrapped once; the ``logger`` hears about every fallback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from .clients import EngineClientFactory, engine_router
from .exceptions import LLMCallError, LLMConfigurationError, LLMError, from_echelon_error
from .fallback_config import FallbackAttempt, FallbackConfig, FallbackSession, FallbackStats, FallbackStrategy
from .fallback_strategies import (
    ConditionalFallback,
    ConditionalFallbackStrategy,
    ErrorTypeBasedStrategy,
    ParallelFallbackStrategy,
    PriorityFallbackStrategy,
    RandomFallbackStrategy,
    SequentialFallbackStrategy,
    create_fallback_strategy,
)
from .interfaces import IClientFactory, IFallbackLogger, IFallbackManager, IFallbackStrategy
from .models import LLMResponse, make_message
from .wrappers.base_wrapper import run_sync

__all__ = [
    "FallbackManager",
    "create_fallback_manager",
    "DefaultFallbackLogger",
    "LoggerAdapter",
    "FallbackConfigurationManager",
    "FallbackSessionManager",
    "FallbackStatistics",
    "FallbackStrategyManager",
    "FallbackExecutor",
    "FallbackOrchestrator",
    "FallbackTracker",
    "FallbackEngine",
    "GroupBasedFallbackStrategy",
    "PollingPoolFallbackStrategy",
    # re-exported for the original package paths
    "FallbackConfig",
    "FallbackAttempt",
    "FallbackSession",
    "FallbackStats",
    "FallbackStrategy",
    "IFallbackStrategy",
    "IClientFactory",
    "IFallbackLogger",
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

SESSION_CAP = 1000


async def _maybe_await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


# -- loggers --------------------------------------------------------------------------------


class DefaultFallbackLogger(IFallbackLogger):
    """Prints one ``[Fallback] …`` line per event (``enabled=False`` silences it) and keeps the
    sessions it is given."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._sessions: List[FallbackSession] = []

    def log_fallback_attempt(self, primary_model: str, fallback_model: str, error: Exception, attempt: int) -> None:
        if self.enabled:
            print(f"[Fallback] attempt {attempt}: {primary_model} -> {fallback_model} after error: {error}")

    def log_fallback_success(self, primary_model: str, fallback_model: str, response: Any, attempt: int) -> None:
        if self.enabled:
            print(f"[Fallback] 成功 (succeeded): {primary_model} -> {fallback_model} on attempt {attempt}")

    def log_fallback_failure(self, primary_model: str, error: Exception, total_attempts: int) -> None:
        if self.enabled:
            print(f"[Fallback] 失败 (failed): {primary_model} after {total_attempts} attempts: {error}")

    def add_session(self, session: FallbackSession) -> None:
        self._sessions.append(session)
        del self._sessions[:-SESSION_CAP]

    def get_sessions(self) -> List[FallbackSession]:
        return list(self._sessions)

    def clear_sessions(self) -> None:
        self._sessions.clear()


class LoggerAdapter(IFallbackLogger):
    """Presents a core logger (anything with the three ``log_fallback_*`` methods) as an
    ``IFallbackLogger``."""

    def __init__(self, core_logger: Any) -> None:
        self._core_logger = core_logger

    def log_fallback_attempt(self, primary_model: str, fallback_model: str, error: Exception, attempt: int) -> None:
        self._core_logger.log_fallback_attempt(primary_model, fallback_model, error, attempt)

    def log_fallback_success(self, primary_model: str, fallback_model: str, response: Any, attempt: int) -> None:
        self._core_logger.log_fallback_success(primary_model, fallback_model, response, attempt)

    def log_fallback_failure(self, primary_model: str, error: Exception, total_attempts: int) -> None:
        self._core_logger.log_fallback_failure(primary_model, error, total_attempts)


def _tell(logger: Any, method: str, *args: Any) -> None:
    """Call a logger method; a logger that raises must not change the call's outcome."""
    f = getattr(logger, method, None)
    if f is None:
        return
    try:
        f(*args)
    except Exception as e:  # noqa: BLE001
        log.warning("fallback logger %s.%s raised: %s", type(logger).__name__, method, e)


# -- components -----------------------------------------------------------------------------


class FallbackConfigurationManager:
    """Holds the :class:`FallbackConfig` and answers questions about it."""

    def __init__(self, config: Optional[FallbackConfig] = None, client_factory: Any = None) -> None:
        self.config = config
        self.client_factory = client_factory

    def update_config(self, config: FallbackConfig) -> None:
        """Replace the config after checking it (``TypeError`` when it is not a
        ``FallbackConfig``)."""
        self._validate_config(config)
        self.config = config

    def get_config(self) -> Optional[FallbackConfig]:
        return self.config

    def is_enabled(self) -> bool:
        """Whether fallback is switched on (``enabled``); with no fallback models a call simply
        has nothing to fall back to."""
        return self.config is not None and bool(self.config.enabled)

    def get_available_models(self) -> List[str]:
        if self.client_factory is None:
            return []
        return list(self.client_factory.get_available_models())

    def get_fallback_models(self) -> List[str]:
        return self.config.get_fallback_models() if self.config else []

    def get_max_attempts(self) -> int:
        return self.config.get_max_attempts() if self.config else 1

    def get_strategy_type(self) -> str:
        return self.config.strategy_type if self.config else "sequential"

    def should_fallback_on_error(self, error: Exception) -> bool:
        return bool(self.config and self.config.should_fallback_on_error(error))

    def calculate_delay(self, attempt: int) -> float:
        return self.config.calculate_delay(attempt) if self.config else 0.0

    def get_error_mappings(self) -> Dict[str, List[str]]:
        return dict(self.config.error_mappings) if self.config else {}

    def get_provider_config(self) -> Dict[str, Any]:
        return dict(self.config.provider_config) if self.config else {}

    def export_config(self) -> Dict[str, Any]:
        return self.config.to_dict() if self.config else {}

    def import_config(self, config_dict: Dict[str, Any]) -> None:
        self.update_config(FallbackConfig.from_dict(config_dict))

    def _validate_config(self, config: Any) -> None:
        if not isinstance(config, FallbackConfig):
            raise TypeError(f"expected a FallbackConfig, got {type(config).__name__}")
        # The numbers were checked when the FallbackConfig was built. Fallback models the
        # factory does not list are allowed (the engine may still resolve them) but noted.
        if self.client_factory is not None and config.fallback_models:
            try:
                available = set(self.client_factory.get_available_models())
            except Exception:  # noqa: BLE001
                return
            missing = [m for m in config.fallback_models if m not in available]
            if available and missing:
                log.warning("fallback models not listed by the client factory: %s", ", ".join(missing))

    def get_config_summary(self) -> Dict[str, Any]:
        c = self.config
        if c is None:
            return {"enabled": False, "max_attempts": 1, "fallback_models_count": 0, "strategy_type": "sequential", "base_delay": 0.0, "max_delay": 0.0}
        return {
            "enabled": c.enabled,
            "max_attempts": c.max_attempts,
            "fallback_models_count": len(c.fallback_models),
            "strategy_type": c.strategy_type,
            "base_delay": c.base_delay,
            "max_delay": c.max_delay,
            "exponential_base": c.exponential_base,
            "jitter": c.jitter,
            "error_mappings_count": len(c.error_mappings),
            "provider_config_keys": list(c.provider_config),
        }


class FallbackSessionManager:
    """The sessions of past calls (at most ``max_sessions``, oldest dropped first)."""

    def __init__(self, max_sessions: int = SESSION_CAP) -> None:
        self._sessions: List[FallbackSession] = []
        self._max_sessions = max_sessions

    def add_session(self, session: FallbackSession) -> None:
        self._sessions.append(session)
        if len(self._sessions) > self._max_sessions:
            del self._sessions[: len(self._sessions) - self._max_sessions]

    @staticmethod
    def _tail(items: List[FallbackSession], limit: Optional[int]) -> List[FallbackSession]:
        return items[-limit:] if limit else list(items)

    def get_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._tail(self._sessions, limit)

    def get_successful_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._tail([s for s in self._sessions if s.success], limit)

    def get_failed_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._tail([s for s in self._sessions if not s.success], limit)

    def get_sessions_by_model(self, model_name: str, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._tail([s for s in self._sessions if s.primary_model == model_name], limit)

    def get_fallback_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._tail([s for s in self._sessions if s.get_total_attempts() > 1], limit)

    def get_session_count(self) -> int:
        return len(self._sessions)

    def get_successful_session_count(self) -> int:
        return sum(1 for s in self._sessions if s.success)

    def get_failed_session_count(self) -> int:
        return sum(1 for s in self._sessions if not s.success)

    def clear_sessions(self) -> None:
        self._sessions.clear()

    def clear_old_sessions(self, keep_count: int) -> None:
        if keep_count >= 0 and len(self._sessions) > keep_count:
            del self._sessions[: len(self._sessions) - keep_count]

    def get_average_attempts(self) -> float:
        n = len(self._sessions)
        return sum(s.get_total_attempts() for s in self._sessions) / n if n else 0.0

    def get_fallback_rate(self) -> float:
        n = len(self._sessions)
        return sum(1 for s in self._sessions if s.get_total_attempts() > 1) / n if n else 0.0

    def get_most_used_models(self, limit: int = 10) -> List[Tuple[str, int]]:
        """``(model, sessions)`` by the model that answered (the primary for failed sessions),
        most used first."""
        counts: Dict[str, int] = {}
        for s in self._sessions:
            name = s.served_by() or s.primary_model
            counts[name] = counts.get(name, 0) + 1
        return sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]

    def get_error_summary(self, limit: int = 10) -> List[Tuple[str, int]]:
        """``(error class, count)`` over every failed attempt, most frequent first."""
        counts: Dict[str, int] = {}
        for s in self._sessions:
            errors = [a.error for a in s.attempts if a.error is not None and not a.success]
            if not errors and not s.success and s.final_error is not None:
                errors = [s.final_error]
            for e in errors:
                name = type(e).__name__
                counts[name] = counts.get(name, 0) + 1
        return sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]


def core_stats(sessions: Sequence[FallbackSession]) -> Dict[str, Any]:
    n = len(sessions)
    ok = sum(1 for s in sessions if s.success)
    attempts = sum(s.get_total_attempts() for s in sessions)
    fb = sum(1 for s in sessions if s.get_total_attempts() > 1)
    return {
        "total_sessions": n,
        "successful_sessions": ok,
        "failed_sessions": n - ok,
        "success_rate": ok / n if n else 0.0,
        "total_attempts": attempts,
        "average_attempts": attempts / n if n else 0.0,
        "fallback_usage": fb,
        "fallback_rate": fb / n if n else 0.0,
    }


_SERVICES = ("total_requests", "successful_requests", "failed_requests", "group_fallbacks", "pool_fallbacks")


class FallbackStatistics:
    """Session statistics (core) and request counters (services)."""

    def __init__(self) -> None:
        self.reset_stats()

    def reset_stats(self) -> None:
        self._stats: Dict[str, Any] = {**core_stats([]), **{k: 0 for k in _SERVICES}}

    def update_core_stats(self, sessions: Sequence[FallbackSession]) -> None:
        self._stats.update(core_stats(sessions))

    def _inc(self, key: str) -> None:
        self._stats[key] += 1

    def increment_total_requests(self) -> None:
        self._inc("total_requests")

    def increment_successful_requests(self) -> None:
        self._inc("successful_requests")

    def increment_failed_requests(self) -> None:
        self._inc("failed_requests")

    def increment_group_fallbacks(self) -> None:
        self._inc("group_fallbacks")

    def increment_pool_fallbacks(self) -> None:
        self._inc("pool_fallbacks")

    def get_stats(self) -> Dict[str, Any]:
        return dict(self._stats)

    def get_core_stats(self) -> Dict[str, Any]:
        return {k: self._stats[k] for k in core_stats([])}

    def get_services_stats(self) -> Dict[str, Any]:
        return {k: self._stats[k] for k in _SERVICES}


class FallbackTracker(FallbackSessionManager):
    """Sessions plus statistics in one object (the original's later name for the pair)."""

    def __init__(self, max_sessions: int = SESSION_CAP) -> None:
        super().__init__(max_sessions)
        self._statistics = FallbackStatistics()
        self._totals = FallbackStats()

    def add_session(self, session: FallbackSession) -> None:
        super().add_session(session)
        self._totals.update(session)

    def get_stats(self) -> Dict[str, Any]:
        return {**self._statistics.get_services_stats(), **core_stats(self._sessions)}

    def get_fallback_stats(self) -> FallbackStats:
        """Running totals over every session ever added (not trimmed)."""
        return self._totals

    def get_core_stats(self) -> Dict[str, Any]:
        return core_stats(self._sessions)

    def get_services_stats(self) -> Dict[str, Any]:
        return self._statistics.get_services_stats()

    def increment_total_requests(self) -> None:
        self._statistics.increment_total_requests()

    def increment_successful_requests(self) -> None:
        self._statistics.increment_successful_requests()

    def increment_failed_requests(self) -> None:
        self._statistics.increment_failed_requests()

    def increment_group_fallbacks(self) -> None:
        self._statistics.increment_group_fallbacks()

    def increment_pool_fallbacks(self) -> None:
        self._statistics.increment_pool_fallbacks()

    def reset_stats(self) -> None:
        self._statistics.reset_stats()
        self._totals = FallbackStats()
        self.clear_sessions()

    def get_performance_summary(self) -> Dict[str, Any]:
        durations = [d for d in (s.get_total_duration() for s in self._sessions) if d is not None]
        return {**core_stats(self._sessions), "average_duration": sum(durations) / len(durations) if durations else 0.0}

    def get_recent_activity(self, hours: float = 24) -> List[FallbackSession]:
        since = time.time() - hours * 3600
        return [s for s in self._sessions if s.start_time >= since]


class GroupBasedFallbackStrategy:
    """Where a task-group reference falls back to: the group's configured fallback targets (or
    the next echelon by priority), and for ``task_group_switch`` groups with nothing else, the
    first echelon of the other groups. Failures per target are counted."""

    FAILURE_LIMIT = 3

    def __init__(self, task_group_manager: Any) -> None:
        self.task_group_manager = task_group_manager
        self._failure_counts: Dict[str, int] = {}
        self._last_failure_time: Dict[str, float] = {}

    def get_fallback_targets(self, primary_target: str, error: Optional[BaseException] = None) -> List[str]:
        tgm = self.task_group_manager
        targets = list(tgm.get_fallback_groups(primary_target) or [])
        if targets:
            return targets
        group, echelon = tgm.parse_group_reference(primary_target)
        order = [name for name, _, _ in (tgm.get_group_models_by_priority(group) or [])]
        if echelon in order:
            targets = [f"{group}.{name}" for name in order[order.index(echelon) + 1 :]]
        if targets:
            return targets
        g = tgm.get_task_group(group) if hasattr(tgm, "get_task_group") else None
        strategy = getattr(getattr(g, "fallback_strategy", None), "value", None)
        if strategy == "task_group_switch":
            for other in tgm.list_task_groups():
                if other != group:
                    first = tgm.get_group_models_by_priority(other)
                    if first:
                        targets.append(f"{other}.{first[0][0]}")
        return targets

    def record_failure(self, target: str, error: Optional[BaseException] = None) -> None:
        self._failure_counts[target] = self._failure_counts.get(target, 0) + 1
        self._last_failure_time[target] = time.time()

    def record_success(self, target: str) -> None:
        self._failure_counts.pop(target, None)
        self._last_failure_time.pop(target, None)


class PollingPoolFallbackStrategy:
    """Pools rotate between their own instances; there is no target to fall back to."""

    def __init__(self, polling_pool_manager: Any) -> None:
        self.polling_pool_manager = polling_pool_manager

    def get_fallback_targets(self, primary_target: str, error: Optional[BaseException] = None) -> List[str]:
        return []


class FallbackStrategyManager:
    """Builds the strategies lazily: the model-level one from the config, the group and pool
    ones from the managers."""

    def __init__(self, config: Optional[FallbackConfig] = None, task_group_manager: Any = None, polling_pool_manager: Any = None) -> None:
        self.config = config
        self.task_group_manager = task_group_manager
        self.polling_pool_manager = polling_pool_manager
        self.reset_strategies()

    def reset_strategies(self) -> None:
        self._strategy: Optional[IFallbackStrategy] = None
        self._group_strategy: Optional[GroupBasedFallbackStrategy] = None
        self._pool_strategy: Optional[PollingPoolFallbackStrategy] = None
        self._strategies_initialized = False

    def _initialize_strategies(self) -> None:
        if self._strategies_initialized:
            return
        self._strategy = create_fallback_strategy(self.config) if self.config else None
        self._group_strategy = GroupBasedFallbackStrategy(self.task_group_manager) if self.task_group_manager else None
        self._pool_strategy = PollingPoolFallbackStrategy(self.polling_pool_manager) if self.polling_pool_manager else None
        self._strategies_initialized = True

    def get_core_strategy(self) -> Optional[IFallbackStrategy]:
        self._initialize_strategies()
        return self._strategy

    def get_group_strategy(self) -> Optional[GroupBasedFallbackStrategy]:
        self._initialize_strategies()
        return self._group_strategy

    def get_pool_strategy(self) -> Optional[PollingPoolFallbackStrategy]:
        self._initialize_strategies()
        return self._pool_strategy

    def update_config(self, config: FallbackConfig) -> None:
        self.config = config
        self.reset_strategies()

    def update_task_group_manager(self, task_group_manager: Any) -> None:
        self.task_group_manager = task_group_manager
        self.reset_strategies()

    def update_polling_pool_manager(self, polling_pool_manager: Any) -> None:
        self.polling_pool_manager = polling_pool_manager
        self.reset_strategies()

    def is_parallel_strategy(self) -> bool:
        return isinstance(self.get_core_strategy(), ParallelFallbackStrategy)

    def get_strategy_type(self) -> Optional[str]:
        s = self.get_core_strategy()
        return type(s).__name__ if s is not None else None

    def has_group_strategy(self) -> bool:
        return self.get_group_strategy() is not None

    def has_pool_strategy(self) -> bool:
        return self.get_pool_strategy() is not None


class _Caller:
    """Makes a model call: through ``client_factory`` when one is given, else through the
    engine of ``task_group_manager``."""

    def __init__(self, client_factory: Any, task_group_manager: Any) -> None:
        self.client_factory = client_factory
        self.task_group_manager = task_group_manager

    def factory(self) -> Any:
        if self.client_factory is not None:
            return self.client_factory
        if self.task_group_manager is not None and hasattr(self.task_group_manager, "get_router"):
            return EngineClientFactory(self.task_group_manager)
        raise LLMConfigurationError("no client_factory and no task_group_manager (echelon.compat.TaskGroupManager): nothing can make the call")

    async def call(self, model: str, messages: Any, parameters: Dict[str, Any], **kwargs: Any) -> Any:
        client = self.factory().create_client(model)
        if client is None:
            raise LLMCallError(f"client factory returned no client for model {model!r}", model_name=model)
        if hasattr(client, "generate_async"):
            return await _maybe_await(client.generate_async(messages, parameters, **kwargs))
        return await _maybe_await(client.generate(messages, parameters, **kwargs))


class FallbackExecutor:
    """Model-level fallback: the primary model, then the strategy's targets, waiting the
    strategy's delay in between. Returns ``(response, session)``."""

    def __init__(self, config: Optional[FallbackConfig] = None, client_factory: Any = None, logger: Optional[IFallbackLogger] = None, task_group_manager: Any = None) -> None:
        self.config = config
        self.logger = logger
        self._caller = _Caller(client_factory, task_group_manager)
        self._strategy = create_fallback_strategy(config) if config else None

    @property
    def client_factory(self) -> Any:
        return self._caller.client_factory

    def update_config(self, config: FallbackConfig) -> None:
        self.config = config
        self._strategy = create_fallback_strategy(config)

    async def generate_with_fallback(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Tuple[Any, FallbackSession]:
        """``(response, session)``; raises the last error when every attempt failed."""
        response, session, error = await self.attempt(messages, parameters, primary_model, **kwargs)
        if error is not None:
            raise error
        return response, session

    async def attempt(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Tuple[Any, FallbackSession, Optional[BaseException]]:
        """Like :meth:`generate_with_fallback` but returns the error instead of raising it, so
        the session is never lost: ``(response or None, session, error or None)``."""
        cfg = self.config
        primary = primary_model or (cfg.fallback_models[0] if cfg and cfg.fallback_models else None)
        if not primary:
            raise LLMConfigurationError("generate_with_fallback: no primary_model given and no fallback_models configured")
        params = dict(parameters or {})
        session = FallbackSession(primary_model=primary, start_time=time.time())
        try:
            if cfg is None or not cfg.is_enabled():
                return await self._single(session, primary, messages, params, **kwargs), session, None
            strategy = self._strategy or create_fallback_strategy(cfg)
            if isinstance(strategy, RandomFallbackStrategy):
                strategy.reset()
            if isinstance(strategy, ParallelFallbackStrategy):
                return await self._parallel(session, strategy, primary, messages, params, **kwargs), session, None
            return await self._sequential(session, strategy, primary, messages, params, **kwargs), session, None
        except Exception as e:
            if session.end_time is None:
                session.mark_failure(e)
            return None, session, e

    async def _single(self, session: FallbackSession, model: str, messages: Any, params: Dict[str, Any], **kwargs: Any) -> Any:
        attempt = FallbackAttempt(model, None, None, 1, time.time(), False)
        session.add_attempt(attempt)
        try:
            response = await self._caller.call(model, messages, params, **kwargs)
        except Exception as e:
            attempt.error = e
            session.mark_failure(e)
            raise
        attempt.success, attempt.response = True, response
        session.mark_success(response)
        return response

    async def _parallel(self, session: FallbackSession, strategy: ParallelFallbackStrategy, primary: str, messages: Any, params: Dict[str, Any], **kwargs: Any) -> Any:
        attempt = FallbackAttempt(primary, "parallel_fallback", None, 1, time.time(), False)
        session.add_attempt(attempt)
        try:
            response = await strategy.execute_parallel_fallback(self._caller.factory(), messages, params, primary, **kwargs)
        except Exception as e:
            attempt.error = e
            session.mark_failure(e)
            _tell(self.logger, "log_fallback_failure", primary, e, 1)
            raise
        attempt.success, attempt.response = True, response
        session.mark_success(response)
        _tell(self.logger, "log_fallback_success", primary, "parallel_fallback", response, 1)
        return response

    async def _sequential(self, session: FallbackSession, strategy: IFallbackStrategy, primary: str, messages: Any, params: Dict[str, Any], **kwargs: Any) -> Any:
        cfg = self.config
        assert cfg is not None
        last: Optional[Exception] = None
        attempt_no = 0
        while attempt_no < cfg.get_max_attempts():
            target = strategy.get_fallback_target(last or LLMError("initial attempt"), attempt_no)
            if target is None and attempt_no == 0:
                target = primary
            if target is None:
                break
            delay = 0.0
            if attempt_no > 0 and last is not None:
                delay = max(0.0, float(strategy.get_fallback_delay(last, attempt_no)))
                if delay:
                    await asyncio.sleep(delay)
            attempt = FallbackAttempt(primary, target if attempt_no > 0 else None, last, attempt_no + 1, time.time(), False, delay=delay)
            session.add_attempt(attempt)
            try:
                response = await self._caller.call(target, messages, params, **kwargs)
            except Exception as e:
                last = e
                attempt.error = e
                if attempt_no > 0:
                    _tell(self.logger, "log_fallback_attempt", primary, target, e, attempt_no + 1)
                if not strategy.should_fallback(e, attempt_no + 1):
                    attempt_no += 1
                    break
                attempt_no += 1
                continue
            attempt.success, attempt.response = True, response
            session.mark_success(response)
            if attempt_no > 0:
                _tell(self.logger, "log_fallback_success", primary, target, response, attempt_no + 1)
            return response
        final = last or LLMCallError(f"降级失败: no model to try for {primary!r}", model_name=primary)
        session.mark_failure(final)
        _tell(self.logger, "log_fallback_failure", primary, final, session.get_total_attempts())
        if isinstance(final, LLMCallError):
            raise final
        raise LLMCallError(f"降级失败 (all {session.get_total_attempts()} attempts failed): {final}", original_error=final, model_name=primary) from final


class FallbackOrchestrator:
    """Group-level fallback: a pool target runs ``pool.call_llm``; a group reference runs its
    models, then the given ``fallback_groups`` in order. With a ``client_factory`` each target's
    models are called through it in order; without one the engine walks the group (echelons,
    breakers, retries) and then the fallback groups."""

    def __init__(self, client_factory: Any = None, logger: Optional[IFallbackLogger] = None, task_group_manager: Any = None, polling_pool_manager: Any = None) -> None:
        self.client_factory = client_factory
        self.logger = logger
        self.task_group_manager = task_group_manager
        self.polling_pool_manager = polling_pool_manager

    def _is_polling_pool_target(self, target: str) -> bool:
        pm = self.polling_pool_manager
        if pm is None:
            return False
        try:
            return target in pm.list_all_status()
        except Exception:  # noqa: BLE001 - an unreadable pool list means "not a pool"
            return False

    async def execute_with_fallback(self, primary_target: str, fallback_groups: List[str], prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        result, _session, _fell_back = await self.run(primary_target, fallback_groups, prompt, parameters, **kwargs)
        return result

    async def run(self, primary_target: str, fallback_groups: Optional[List[str]], prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Tuple[Any, FallbackSession, bool]:
        """``(response, session, fell_back)``; raises the last error when every target failed."""
        if not isinstance(primary_target, str) or not primary_target:
            raise LLMConfigurationError(f"primary_target must be a non-empty string, got {primary_target!r}")
        groups = [g for g in (fallback_groups or []) if g != primary_target]
        params = dict(parameters or {})
        session = FallbackSession(primary_model=primary_target, start_time=time.time())
        if self._is_polling_pool_target(primary_target):
            return await self._pool(session, primary_target, prompt, params, **kwargs), session, False
        if self.client_factory is not None or self.task_group_manager is None or not hasattr(self.task_group_manager, "get_router"):
            result, fell_back = await self._with_clients(session, primary_target, groups, prompt, params, **kwargs)
            return result, session, fell_back
        result, fell_back = await self._with_engine(session, primary_target, groups, prompt, params, **kwargs)
        return result, session, fell_back

    async def _pool(self, session: FallbackSession, name: str, prompt: str, params: Dict[str, Any], **kwargs: Any) -> Any:
        pool = self.polling_pool_manager.get_pool(name)
        attempt = FallbackAttempt(name, None, None, 1, time.time(), False)
        session.add_attempt(attempt)
        try:
            text = await pool.call_llm(prompt, **{**params, **kwargs})
        except Exception as e:
            attempt.error = e
            session.mark_failure(e)
            raise LLMCallError(f"轮询池执行失败: {e}", original_error=e) from e
        response = text if isinstance(text, LLMResponse) else LLMResponse(content=str(text), model=f"{name}_pool")
        attempt.success, attempt.response = True, response
        session.mark_success(response)
        return response

    def _models(self, target: str) -> List[str]:
        tgm = self.task_group_manager
        if tgm is None:
            return [target]  # without task groups a target is a model name
        models = list(tgm.get_models_for_group(target) or [])
        if not models:
            raise LLMConfigurationError(f"没有找到模型: {target} (no models for this group reference)")
        return models

    async def _with_clients(self, session: FallbackSession, primary: str, groups: List[str], prompt: str, params: Dict[str, Any], **kwargs: Any) -> Tuple[Any, bool]:
        caller = _Caller(self.client_factory, self.task_group_manager)
        messages = [make_message(prompt, "human")]
        last: Optional[BaseException] = None
        n = 0
        for target in [primary] + groups:
            try:
                models = self._models(target)
            except LLMConfigurationError as e:
                last = e
                session.add_attempt(FallbackAttempt(primary, target if target != primary else None, e, n + 1, time.time(), False))
                n += 1
                continue
            for model in models:
                n += 1
                attempt = FallbackAttempt(primary, f"{target}:{model}" if n > 1 else None, last, n, time.time(), False)
                session.add_attempt(attempt)
                try:
                    response = await caller.call(model, messages, params, **kwargs)
                except Exception as e:
                    attempt.error = last = e
                    if n > 1:
                        _tell(self.logger, "log_fallback_attempt", primary, target, e, n)
                    continue
                attempt.success, attempt.response = True, response
                session.mark_success(response)
                if n > 1:
                    _tell(self.logger, "log_fallback_success", primary, target, response, n)
                return response, n > 1
        final = last or LLMCallError(f"no target to try for {primary!r}")
        session.mark_failure(final)
        _tell(self.logger, "log_fallback_failure", primary, final, n)
        raise final

    async def _with_engine(self, session: FallbackSession, primary: str, groups: List[str], prompt: str, params: Dict[str, Any], **kwargs: Any) -> Tuple[Any, bool]:
        from ..errors import EchelonError

        router = engine_router(self.task_group_manager)
        try:
            resp = await router.chat(prompt, group=primary, fallback_groups=groups, **{**params, **kwargs})
        except EchelonError as e:
            for i, a in enumerate(getattr(e, "attempts", None) or [], 1):
                session.add_attempt(FallbackAttempt(primary, a.target if i > 1 else None, None, i, time.time(), False))
            err = from_echelon_error(e)
            session.mark_failure(err)
            _tell(self.logger, "log_fallback_failure", primary, err, max(1, session.get_total_attempts()))
            raise err from e
        for i, a in enumerate(resp.attempts, 1):
            session.add_attempt(FallbackAttempt(primary, a.target if i > 1 else None, None, i, time.time(), bool(a.ok)))
        fell_back = any(a.role == "fallback" for a in resp.attempts)
        response = LLMResponse.from_echelon(resp, model=resp.attempts[-1].model if resp.attempts else None)
        session.mark_success(response)
        if fell_back:
            _tell(self.logger, "log_fallback_success", primary, resp.attempts[-1].target, response, len(resp.attempts))
        return response, fell_back


class FallbackEngine:
    """Fallback over plain async callables (the original's HEAD ``FallbackEngine``):
    ``execute_with_fallback(primary_func, {name: func}, *args, **kwargs)`` runs the primary,
    then each configured fallback model that has a function, and returns ``(result, session)``;
    with the ``parallel`` strategy it runs them all at once."""

    def __init__(self, config: Optional[FallbackConfig] = None) -> None:
        self.config = config or FallbackConfig()

    async def execute_with_fallback(self, primary_func: Callable[..., Awaitable[Any]], fallback_funcs: Dict[str, Callable[..., Awaitable[Any]]], *args: Any, **kwargs: Any) -> Tuple[Any, FallbackSession]:
        cfg = self.config
        name = getattr(primary_func, "__name__", "primary")
        session = FallbackSession(primary_model=name, start_time=time.time())
        calls: List[Tuple[Optional[str], Callable[..., Any]]] = [(None, primary_func)]
        if cfg.enabled:
            calls += [(m, fallback_funcs[m]) for m in cfg.fallback_models if m in fallback_funcs][: cfg.max_attempts]
        if cfg.strategy_type == "parallel" and len(calls) > 1:
            return await self._parallel(session, calls, *args, **kwargs), session
        last: Optional[BaseException] = None
        for i, (label, f) in enumerate(calls):
            delay = cfg.calculate_delay(i) if i > 0 else 0.0
            if delay:
                await asyncio.sleep(delay)
            attempt = FallbackAttempt(name, label, last, i + 1, time.time(), False, delay=delay)
            session.add_attempt(attempt)
            try:
                result = await _maybe_await(f(*args, **kwargs))
            except Exception as e:
                attempt.error = last = e
                continue
            attempt.success, attempt.response = True, result
            session.mark_success(result)
            return result, session
        assert last is not None
        session.mark_failure(last)
        raise last

    async def _parallel(self, session: FallbackSession, calls: List[Tuple[Optional[str], Callable[..., Any]]], *args: Any, **kwargs: Any) -> Any:
        cfg = self.config
        results = await asyncio.wait_for(asyncio.gather(*(_maybe_await(f(*args, **kwargs)) for _, f in calls), return_exceptions=True), cfg.parallel_timeout)
        ok: List[Any] = []
        for i, ((label, _), r) in enumerate(zip(calls, results)):
            failed = isinstance(r, BaseException)
            session.add_attempt(FallbackAttempt(session.primary_model, label, r if failed else None, i + 1, time.time(), not failed, None if failed else r))
            if not failed:
                ok.append(r)
        if len(ok) >= cfg.parallel_success_threshold:
            session.mark_success(ok[0])
            return ok[0]
        err = next((r for r in results if isinstance(r, BaseException)), None) or LLMCallError("parallel fallback: too few successes")
        session.mark_failure(err)
        raise err


# -- the manager ----------------------------------------------------------------------------


class FallbackManager(IFallbackManager):
    """Fallback at both levels, with session statistics.

    * model level, :meth:`generate_with_fallback`: the primary model, then ``config``'s
      fallback models by its strategy;
    * group level, :meth:`execute_with_fallback` (``IFallbackManager``): a pool, or a group
      reference and then ``fallback_groups``.

    Calls go through ``client_factory`` when given, else through the engine of
    ``task_group_manager``. ``logger`` (an ``IFallbackLogger``; by default a
    :class:`DefaultFallbackLogger` that prints) hears about every fallback."""

    def __init__(self, config: Optional[FallbackConfig] = None, client_factory: Optional[IClientFactory] = None, logger: Optional[IFallbackLogger] = None, task_group_manager: Any = None, polling_pool_manager: Any = None) -> None:
        if config is not None and not isinstance(config, FallbackConfig):
            raise TypeError(f"FallbackManager: config must be a FallbackConfig, got {type(config).__name__}")
        self.client_factory = client_factory
        self.logger: IFallbackLogger = logger if logger is not None else DefaultFallbackLogger()
        self.task_group_manager = task_group_manager
        self.polling_pool_manager = polling_pool_manager
        self._config_manager = FallbackConfigurationManager(config, client_factory)
        self._session_manager = FallbackSessionManager()
        self._statistics = FallbackStatistics()
        self._strategy_manager = FallbackStrategyManager(config, task_group_manager, polling_pool_manager)
        self._executor = FallbackExecutor(config, client_factory, self.logger, task_group_manager)
        self._orchestrator = FallbackOrchestrator(client_factory, self.logger, task_group_manager, polling_pool_manager)

    # -- configuration ---------------------------------------------------------------------
    @property
    def config(self) -> Optional[FallbackConfig]:
        return self._config_manager.config

    @config.setter
    def config(self, value: FallbackConfig) -> None:
        self.update_config(value)

    def is_enabled(self) -> bool:
        return self._config_manager.is_enabled()

    def update_config(self, config: FallbackConfig) -> None:
        self._config_manager.update_config(config)
        self._executor.update_config(config)
        self._strategy_manager.update_config(config)

    def get_available_models(self) -> List[str]:
        if self.client_factory is not None:
            return list(self.client_factory.get_available_models())
        if self.task_group_manager is not None and hasattr(self.task_group_manager, "get_router"):
            return EngineClientFactory(self.task_group_manager).get_available_models()
        return self._config_manager.get_fallback_models()

    def get_config_summary(self) -> Dict[str, Any]:
        return self._config_manager.get_config_summary()

    def export_config(self) -> Dict[str, Any]:
        return self._config_manager.export_config()

    def import_config(self, config_dict: Dict[str, Any]) -> None:
        self.update_config(FallbackConfig.from_dict(config_dict))

    # -- sessions and statistics -----------------------------------------------------------
    @property
    def _sessions(self) -> List[FallbackSession]:
        return self._session_manager._sessions

    def _record(self, session: FallbackSession) -> None:
        self._session_manager.add_session(session)
        if isinstance(self.logger, DefaultFallbackLogger):
            self.logger.add_session(session)

    def get_stats(self) -> Dict[str, Any]:
        """Session statistics (``total_sessions``, ``successful_sessions``, ``failed_sessions``,
        ``success_rate``, ``total_attempts``, ``average_attempts``, ``fallback_usage``,
        ``fallback_rate``), the request counters and, with a config, ``config``."""
        out = {**self._statistics.get_services_stats(), **core_stats(self._sessions)}
        if self.config is not None:
            out["config"] = self.config.to_dict()
        return out

    def get_core_stats(self) -> Dict[str, Any]:
        return core_stats(self._sessions)

    def get_services_stats(self) -> Dict[str, Any]:
        return self._statistics.get_services_stats()

    def reset_stats(self) -> None:
        self._statistics.reset_stats()
        self.clear_sessions()

    def get_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._session_manager.get_sessions(limit)

    def get_session_count(self) -> int:
        return self._session_manager.get_session_count()

    def clear_sessions(self) -> None:
        self._session_manager.clear_sessions()
        if isinstance(self.logger, DefaultFallbackLogger):
            self.logger.clear_sessions()

    def get_successful_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._session_manager.get_successful_sessions(limit)

    def get_failed_sessions(self, limit: Optional[int] = None) -> List[FallbackSession]:
        return self._session_manager.get_failed_sessions(limit)

    def get_most_used_models(self, limit: int = 10) -> List[Tuple[str, int]]:
        return self._session_manager.get_most_used_models(limit)

    def get_error_summary(self, limit: int = 10) -> List[Tuple[str, int]]:
        return self._session_manager.get_error_summary(limit)

    # -- model level -----------------------------------------------------------------------
    async def generate_with_fallback(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Any:
        """Try ``primary_model`` (default: the first fallback model), then the strategy's
        targets, up to ``max_attempts`` in all, waiting the strategy's delay in between.
        Raises the last error (an ``LLMCallError``; other errors are wrapped once)."""
        response, session, error = await self._executor.attempt(messages, parameters, primary_model, **kwargs)
        self._record(session)
        if error is not None:
            raise error
        return response

    async def generate_with_fallback_async(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Any:
        """Alias of :meth:`generate_with_fallback`."""
        return await self.generate_with_fallback(messages, parameters, primary_model, **kwargs)

    def generate_with_fallback_sync(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Any:
        """Synchronous :meth:`generate_with_fallback` (inside a running loop it runs on a worker
        thread; prefer awaiting there). Errors other than ``LLMCallError`` are wrapped as
        ``LLMCallError("同步降级生成失败: …")``."""
        try:
            return run_sync(lambda: self.generate_with_fallback(messages, parameters, primary_model, **kwargs))
        except LLMError:
            raise
        except Exception as e:
            raise LLMCallError(f"同步降级生成失败: {e}", original_error=e) from e

    # -- group level -----------------------------------------------------------------------
    async def execute_with_fallback(self, primary_target: str, fallback_groups: List[str], prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        """Run ``primary_target`` (a pool name or a group reference), then ``fallback_groups``
        in order. Returns an :class:`LLMResponse` (a client's own response object when a
        ``client_factory`` made the call); failures raise ``LLMCallError("降级执行失败: …")``
        with the last error as ``original_error`` / ``__cause__``."""
        self._statistics.increment_total_requests()
        is_pool = self._orchestrator._is_polling_pool_target(primary_target)
        try:
            result, session, fell_back = await self._orchestrator.run(primary_target, fallback_groups, prompt, parameters, **kwargs)
        except Exception as e:
            self._statistics.increment_failed_requests()
            session = FallbackSession(primary_model=primary_target, start_time=time.time())
            session.mark_failure(e)
            self._record(session)
            if isinstance(e, LLMCallError) and str(e).startswith(("降级执行失败", "轮询池执行失败")):
                raise
            err = LLMCallError(
                f"降级执行失败: {e}",
                error_type=getattr(e, "error_type", "unknown"),
                is_retryable=bool(getattr(e, "is_retryable", False)),
                original_error=e,
                model_name=getattr(e, "model_name", None),
            )
            raise err from e
        self._record(session)
        self._statistics.increment_successful_requests()
        if fell_back:
            self._statistics.increment_pool_fallbacks() if is_pool else self._statistics.increment_group_fallbacks()
        return result


def create_fallback_manager(config: Optional[FallbackConfig] = None, client: Any = None, client_factory: Any = None, logger: Any = None, task_group_manager: Any = None, polling_pool_manager: Any = None) -> FallbackManager:
    """Build a :class:`FallbackManager`; a single ``client`` becomes a one-client factory."""
    if client_factory is None and client is not None:

        class _One(IClientFactory):
            def create_client(self, model_name: str) -> Any:
                return client

            def get_available_models(self) -> List[str]:
                return list(config.fallback_models) if config else []

        client_factory = _One()
    return FallbackManager(config, client_factory, logger, task_group_manager, polling_pool_manager)
