"""The services ``FallbackManager`` (``IFallbackManager``): group-level fallback through the
engine, plus model-level ``generate_with_fallback``.

Fixed against the original (docs/migration.md): it constructs; ``execute_with_fallback``
honours its ``fallback_groups`` argument; a fallback is counted only when one happened; errors
are wrapped once; the sequential target at attempt 0 is the primary."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .exceptions import LLMCallError, LLMError, from_echelon_error
from .interfaces import IFallbackManager
from .models import LLMResponse, TokenUsage
from .wrappers.base_wrapper import run_sync

__all__ = ["FallbackConfig", "FallbackManager", "create_fallback_manager"]

SESSION_CAP = 1000


@dataclass
class FallbackConfig:
    """Model-level fallback settings (``strategy_type``: ``sequential``, ``priority``,
    ``random``)."""

    enabled: bool = True
    max_attempts: int = 3
    fallback_models: List[str] = field(default_factory=list)
    strategy_type: str = "sequential"
    error_mappings: Dict[str, List[str]] = field(default_factory=dict)
    base_delay: float = 1.0
    max_delay: float = 60.0
    exponential_base: float = 2.0
    jitter: bool = True
    fallback_on_status_codes: List[int] = field(default_factory=lambda: [429, 500, 502, 503, 504])
    fallback_on_errors: List[str] = field(default_factory=lambda: ["timeout", "rate_limit", "service_unavailable", "overloaded_error"])
    provider_config: Dict[str, Any] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        """Alias of ``strategy_type`` (the field was renamed in the original)."""
        return self.strategy_type

    def is_enabled(self) -> bool:
        return self.enabled and bool(self.fallback_models)

    def calculate_delay(self, attempt: int) -> float:
        d = min(self.base_delay * self.exponential_base ** max(0, attempt - 1), self.max_delay)
        return d * (0.5 + 0.5 * random.random()) if self.jitter else d

    def get_fallback_target(self, error: Any, attempt: int) -> Optional[str]:
        """``None`` at attempt 0 (the primary), then the fallback models in order (the
        original returned the last model at attempt 0, §5.23)."""
        if attempt <= 0 or not self.fallback_models:
            return None
        if self.strategy_type == "priority":
            msg = str(error).lower()
            for pattern, models in self.error_mappings.items():
                if pattern.lower() in msg and models:
                    return models[0]
            return self.fallback_models[0]
        if self.strategy_type == "random":
            return random.choice(self.fallback_models)
        return self.fallback_models[min(attempt - 1, len(self.fallback_models) - 1)]

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FallbackConfig":
        d = dict(d)
        if "strategy" in d and "strategy_type" not in d:
            d["strategy_type"] = d.pop("strategy")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class FallbackManager(IFallbackManager):
    """Group-level and model-level fallback with session statistics."""

    def __init__(self, config: Optional[FallbackConfig] = None, client_factory: Any = None, logger: Any = None, task_group_manager: Any = None, polling_pool_manager: Any = None) -> None:
        self.config = config
        self.client_factory = client_factory
        self.logger = logger
        self.task_group_manager = task_group_manager
        self.polling_pool_manager = polling_pool_manager
        self._sessions: List[Dict[str, Any]] = []
        self.reset_stats()

    # -- stats --------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self._services = {"total_requests": 0, "successful_requests": 0, "failed_requests": 0, "group_fallbacks": 0, "pool_fallbacks": 0}
        self._sessions = []

    def _add_session(self, primary: str, attempts: int, success: bool, fell_back: bool, error: Optional[str] = None) -> None:
        self._sessions.append({"primary_target": primary, "attempts": attempts, "success": success, "fallback_used": fell_back, "error": error, "timestamp": time.time()})
        del self._sessions[:-SESSION_CAP]

    def get_core_stats(self) -> Dict[str, Any]:
        s = self._sessions
        n = len(s)
        ok = sum(1 for x in s if x["success"])
        attempts = sum(x["attempts"] for x in s)
        fb = sum(1 for x in s if x["fallback_used"])
        out: Dict[str, Any] = {
            "total_sessions": n,
            "successful_sessions": ok,
            "failed_sessions": n - ok,
            "total_attempts": attempts,
            "average_attempts": attempts / n if n else 0.0,
            "fallback_usage": fb,
            "fallback_rate": fb / n if n else 0.0,
        }
        if n:
            out["success_rate"] = ok / n
        return out

    def get_services_stats(self) -> Dict[str, Any]:
        return dict(self._services)

    def get_stats(self) -> Dict[str, Any]:
        return {**self.get_core_stats(), **self.get_services_stats()}

    def get_sessions(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        return list(self._sessions[-limit:] if limit else self._sessions)

    def clear_sessions(self) -> None:
        self._sessions = []

    def is_enabled(self) -> bool:
        return bool(self.config and self.config.is_enabled())

    def update_config(self, config: FallbackConfig) -> None:
        self.config = config

    def get_available_models(self) -> List[str]:
        if self.client_factory is not None and hasattr(self.client_factory, "get_available_models"):
            return list(self.client_factory.get_available_models())
        return list(self.config.fallback_models) if self.config else []

    # -- group level --------------------------------------------------------------------
    def _router(self) -> Any:
        if self.task_group_manager is None or not hasattr(self.task_group_manager, "get_router"):
            raise LLMError("FallbackManager needs a task_group_manager (echelon.compat.TaskGroupManager) to call models")
        return self.task_group_manager.get_router()

    def _is_pool(self, target: str) -> bool:
        pm = self.polling_pool_manager
        if pm is None:
            return False
        try:
            return target in pm.list_all_status()
        except Exception:
            return False

    async def execute_with_fallback(self, primary_target: str, fallback_groups: List[str], prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        """A pool target → ``pool.call_llm``; a group reference → the engine walks it and then
        ``fallback_groups`` (honoured, unlike the original §5.14). Returns an
        :class:`LLMResponse`; failures raise ``LLMCallError("降级执行失败: …")``."""
        self._services["total_requests"] += 1
        params = {**(parameters or {}), **kwargs}
        if self._is_pool(primary_target):
            pool = self.polling_pool_manager.get_pool(primary_target)
            try:
                text = await pool.call_llm(prompt, **params)
            except Exception as e:
                self._services["failed_requests"] += 1
                self._add_session(primary_target, 1, False, False, str(e))
                raise LLMCallError(f"轮询池执行失败: {e}", original_error=e) from e
            self._services["successful_requests"] += 1
            self._add_session(primary_target, 1, True, False)
            return LLMResponse(content=text, model=f"{primary_target}_pool")
        from ..errors import EchelonError

        try:
            resp = await self._router().chat(prompt, group=primary_target, fallback_groups=list(fallback_groups or []), **params)
        except EchelonError as e:
            self._services["failed_requests"] += 1
            self._add_session(primary_target, len(getattr(e, "attempts", []) or []) or 1, False, False, str(e))
            err = LLMCallError(f"降级执行失败: {e}", error_type=getattr(e, "kind", "unknown"), is_retryable=bool(getattr(e, "retryable", False)), original_error=e)
            raise err from e
        fell_back = any(a.role == "fallback" for a in resp.attempts)
        self._services["successful_requests"] += 1
        if fell_back:
            self._services["group_fallbacks"] += 1
        self._add_session(primary_target, len(resp.attempts), True, fell_back)
        return LLMResponse.from_echelon(resp, model=resp.attempts[-1].model if resp.attempts else None)

    # -- model level --------------------------------------------------------------------
    async def _call_model(self, model: str, messages: Any, parameters: Dict[str, Any], **kw: Any) -> Any:
        if self.client_factory is not None:
            client = self.client_factory.create_client(model)
            r = client.generate_async(messages, parameters, **kw)
            return await r if hasattr(r, "__await__") else r
        from ..errors import EchelonError

        try:
            resp = await self._router().chat(messages, model=model, **{**parameters, **kw})
        except EchelonError as e:
            raise from_echelon_error(e, model) from e
        return LLMResponse.from_echelon(resp, model=model)

    async def generate_with_fallback(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Any:
        """Try ``primary_model``, then the configured ``fallback_models`` (up to
        ``max_attempts`` in all, sleeping ``calculate_delay`` between); raise the last error."""
        params = dict(parameters or {})
        cfg = self.config
        primary = primary_model or (cfg.fallback_models[0] if cfg and cfg.fallback_models else None)
        if primary is None:
            raise LLMCallError("没有可用的模型 (no primary_model and no fallback_models)")
        if not self.is_enabled():
            r = await self._call_model(primary, messages, params, **kwargs)
            self._add_session(primary, 1, True, False)
            return r
        last: Optional[BaseException] = None
        attempts = 0
        for attempt in range(cfg.max_attempts):  # type: ignore[union-attr]
            model = cfg.get_fallback_target(last, attempt) or primary  # type: ignore[union-attr]
            if attempt > 0:
                await asyncio.sleep(cfg.calculate_delay(attempt))  # type: ignore[union-attr]
            attempts += 1
            try:
                r = await self._call_model(model, messages, params, **kwargs)
            except Exception as e:
                last = e
                continue
            self._add_session(primary, attempts, True, attempt > 0)
            return r
        self._add_session(primary, attempts, False, attempts > 1, str(last))
        if isinstance(last, LLMCallError):
            raise last
        raise LLMCallError(f"降级执行失败: {last}", original_error=last) from last

    def generate_with_fallback_sync(self, messages: Any, parameters: Optional[Dict[str, Any]] = None, primary_model: Optional[str] = None, **kwargs: Any) -> Any:
        try:
            return run_sync(lambda: self.generate_with_fallback(messages, parameters, primary_model, **kwargs))
        except LLMCallError:
            raise
        except Exception as e:
            raise LLMCallError(f"同步降级生成失败: {e}", original_error=e) from e


def create_fallback_manager(config: Optional[FallbackConfig] = None, client: Any = None, client_factory: Any = None, logger: Any = None, task_group_manager: Any = None, polling_pool_manager: Any = None) -> FallbackManager:
    """Build a :class:`FallbackManager`; a single ``client`` becomes a one-client factory."""
    if client_factory is None and client is not None:

        class _One:
            def create_client(self, model_name: str) -> Any:
                return client

            def get_available_models(self) -> List[str]:
                return list(config.fallback_models) if config else []

        client_factory = _One()
    return FallbackManager(config, client_factory, logger, task_group_manager, polling_pool_manager)
