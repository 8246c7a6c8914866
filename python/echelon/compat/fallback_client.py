"""``FallbackClientWrapper``: an ``ILLMClient`` that falls back when its primary client fails
(``src/infrastructure/llm/fallback_client.py`` of the original).

* Model fallback (default): the primary client, then ``fallback_models`` in the strategy's
  order, through a :class:`~echelon.compat.fallback_manager.FallbackManager`. Fallback models
  are called through the echelon engine when a ``task_group_manager`` is given, else through
  the primary client with ``model=<name>`` (what the original's self-managing factory did).
* Group fallback (``use_enhanced_fallback=True``): the call goes to ``primary_target`` (a
  group reference or pool) and then ``fallback_groups``, both given per call, through an
  :class:`~echelon.compat.enhanced_fallback_manager.EnhancedFallbackManager` and the engine.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence

from .enhanced_fallback_manager import EnhancedFallbackManager
from .exceptions import LLMConfigurationError, LLMFallbackError
from .fallback_config import FallbackConfig
from .fallback_manager import FallbackManager
from .interfaces import IClientFactory, ILLMClient
from .models import LLMResponse, TokenUsage
from .clients import EngineClientFactory
from .wrappers.base_wrapper import ChunkStream, run_sync

__all__ = ["FallbackClientWrapper"]

log = logging.getLogger(__name__)


async def _await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


class _PrimaryFirstFactory(IClientFactory):
    """The primary client under its own name; any other model through the engine (with a
    task group manager) or through the primary client with ``model=`` set."""

    def __init__(self, wrapper: "FallbackClientWrapper") -> None:
        self.wrapper = wrapper

    def create_client(self, model_name: str) -> Any:
        w = self.wrapper
        if model_name == w._get_primary_model_name():
            return _Calls(w.primary_client, None)
        if w.task_group_manager is not None:
            return EngineClientFactory(w.task_group_manager).create_client(model_name)
        return _Calls(w.primary_client, model_name)

    def get_available_models(self) -> List[str]:
        return [self.wrapper._get_primary_model_name(), *self.wrapper.fallback_models]


class _Calls:
    """Calls a client's async (or sync) ``generate``, optionally for another model."""

    def __init__(self, client: Any, model: Optional[str]) -> None:
        self.client, self.model = client, model

    async def generate_async(self, messages: Any, parameters: Any = None, **kwargs: Any) -> Any:
        if self.model is not None:
            kwargs = {**kwargs, "model": self.model}
        f = getattr(self.client, "generate_async", None) or self.client.generate
        return await _await(f(messages, parameters, **kwargs))


class FallbackClientWrapper(ILLMClient):
    """Falls back to other models (or task groups) when the primary client fails."""

    def __init__(
        self,
        primary_client: Any,
        fallback_models: List[str],
        strategy_type: str = "sequential",
        max_attempts: int = 3,
        use_enhanced_fallback: bool = False,
        task_group_manager: Any = None,
        polling_pool_manager: Any = None,
        **config_kwargs: Any,
    ) -> None:
        if primary_client is None:
            raise LLMConfigurationError("FallbackClientWrapper: primary_client is required")
        if fallback_models is None or isinstance(fallback_models, str):
            raise LLMConfigurationError(f"FallbackClientWrapper: fallback_models must be a list of model names, got {fallback_models!r}")
        self.config = {"fallback_models": list(fallback_models), "strategy_type": strategy_type, "max_attempts": max_attempts}
        self.primary_client = primary_client
        self.fallback_models = list(fallback_models)
        self.use_enhanced_fallback = bool(use_enhanced_fallback)
        self.task_group_manager = task_group_manager
        self.polling_pool_manager = polling_pool_manager
        self.enhanced_fallback_manager: Optional[EnhancedFallbackManager] = None
        self.fallback_manager: Optional[FallbackManager] = None
        if self.use_enhanced_fallback:
            if task_group_manager is None:
                raise LLMConfigurationError("FallbackClientWrapper: use_enhanced_fallback=True needs a task_group_manager", config_key="task_group_manager")
            self.enhanced_fallback_manager = EnhancedFallbackManager(task_group_manager, polling_pool_manager)
        else:
            self.fallback_config = FallbackConfig(enabled=bool(self.fallback_models), fallback_models=self.fallback_models, strategy_type=strategy_type, max_attempts=max_attempts, **config_kwargs)
            self.client_factory = _PrimaryFirstFactory(self)
            self.fallback_manager = FallbackManager(self.fallback_config, self.client_factory, task_group_manager=task_group_manager, polling_pool_manager=polling_pool_manager)

    # -- generation ------------------------------------------------------------------------
    async def generate_async(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        """Generate with fallback. Group mode takes ``primary_target=`` and
        ``fallback_groups=`` keywords. Every model failing raises ``LLMFallbackError`` (the
        last error is ``original_error`` / ``__cause__``)."""
        if self.use_enhanced_fallback:
            return await self._generate_enhanced(messages, parameters, **kwargs)
        assert self.fallback_manager is not None
        try:
            return await self.fallback_manager.generate_with_fallback(messages, parameters, self._get_primary_model_name(), **kwargs)
        except Exception as e:
            raise LLMFallbackError(f"所有模型调用都失败: {e}", original_error=e) from e

    async def _generate_enhanced(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]], **kwargs: Any) -> LLMResponse:
        efm = self.enhanced_fallback_manager
        assert efm is not None
        primary_target = kwargs.pop("primary_target", None)
        fallback_groups = list(kwargs.pop("fallback_groups", None) or [])
        prompt = self._messages_to_prompt(messages)
        params = {**(parameters or {}), **kwargs}
        if primary_target is None:
            # No group named: the primary client first, then the given groups.
            try:
                return await _await(self._primary_async(messages, parameters, **kwargs))
            except Exception as e:
                if not fallback_groups:
                    raise LLMFallbackError(f"primary client failed and no fallback_groups were given: {e}", original_error=e) from e
                primary_target, fallback_groups = fallback_groups[0], fallback_groups[1:]
        try:
            result = await efm.execute_with_fallback(primary_target, fallback_groups, prompt, **params)
        except Exception as e:
            raise LLMFallbackError(f"增强降级管理器异步调用失败: {e}", original_error=e) from e
        if isinstance(result, LLMResponse):
            return result
        return LLMResponse(content=str(getattr(result, "content", result)), token_usage=TokenUsage(), model=primary_target)

    def _primary_async(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]], **kwargs: Any) -> Any:
        f = getattr(self.primary_client, "generate_async", None) or self.primary_client.generate
        return f(messages, parameters, **kwargs)

    def generate(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        """Synchronous :meth:`generate_async`."""
        return run_sync(lambda: self.generate_async(messages, parameters, **kwargs))

    def stream_generate(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> ChunkStream:
        """The primary client's stream; if it fails before its first chunk, the whole answer
        of the fallback path in one chunk."""
        return ChunkStream(lambda: self._chunks(messages, parameters, **kwargs))

    async def _chunks(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]], **kwargs: Any) -> AsyncIterator[str]:
        started = False
        try:
            src = self.primary_client.stream_generate(messages, parameters, **kwargs)
            if hasattr(src, "__aiter__"):
                async for chunk in src:
                    started = True
                    yield chunk
            else:
                for chunk in src:
                    started = True
                    yield chunk
            return
        except Exception as e:
            if started:
                raise LLMFallbackError(f"stream cut after its first chunk: {e}", original_error=e) from e
            log.warning("primary stream failed before its first chunk (%s); falling back", e)
        resp = await self.generate_async(messages, parameters, **kwargs)
        yield resp.content

    # -- introspection ---------------------------------------------------------------------
    def get_token_count(self, text: str) -> int:
        f = getattr(self.primary_client, "get_token_count", None)
        return f(text) if f else super().get_token_count(text)

    def get_messages_token_count(self, messages: Sequence[Any]) -> int:
        f = getattr(self.primary_client, "get_messages_token_count", None)
        return f(messages) if f else super().get_messages_token_count(messages)

    def supports_function_calling(self) -> bool:
        f = getattr(self.primary_client, "supports_function_calling", None)
        return bool(f()) if f else False

    def get_model_info(self) -> Dict[str, Any]:
        f = getattr(self.primary_client, "get_model_info", None)
        info = dict(f() or {}) if f else {}
        info.update({"fallback_enabled": self.is_fallback_enabled(), "fallback_models": list(self.fallback_models), "use_enhanced_fallback": self.use_enhanced_fallback})
        if self.fallback_manager is not None and self.fallback_config is not None:
            info.update({"strategy_type": self.fallback_config.strategy_type, "max_attempts": self.fallback_config.max_attempts})
        return info

    def _get_primary_model_name(self) -> str:
        try:
            return str((self.primary_client.get_model_info() or {}).get("model_name") or "primary_model")
        except Exception:  # noqa: BLE001 - a client without model info is "primary_model"
            return "primary_model"

    def _messages_to_prompt(self, messages: Sequence[Any]) -> str:
        return " ".join(str(getattr(m, "content", m)) for m in messages or [])

    def get_fallback_stats(self) -> Dict[str, Any]:
        """Group mode: ``EnhancedFallbackManager.get_statistics()`` (``total_attempts``,
        ``success_rate``, ``avg_response_time``, …); model mode: ``FallbackManager.get_stats()``."""
        if self.enhanced_fallback_manager is not None:
            return self.enhanced_fallback_manager.get_statistics()
        if self.fallback_manager is not None:
            return self.fallback_manager.get_stats()
        return {}

    def reset_fallback_stats(self) -> None:
        if self.fallback_manager is not None:
            self.fallback_manager.reset_stats()
        if self.enhanced_fallback_manager is not None:
            self.enhanced_fallback_manager.fallback_history.clear()

    def update_fallback_config(self, **config_kwargs: Any) -> None:
        """Change the model-fallback settings (``FallbackConfig`` keyword names)."""
        if self.fallback_manager is None:
            raise LLMConfigurationError("update_fallback_config: this wrapper uses group fallback (use_enhanced_fallback=True)")
        merged = {**self.fallback_config.to_dict(), **config_kwargs}
        self.fallback_config = FallbackConfig.from_dict(merged)
        self.fallback_models = list(self.fallback_config.fallback_models)
        self.fallback_manager.update_config(self.fallback_config)

    def get_fallback_sessions(self, limit: Optional[int] = None) -> List[Any]:
        if self.enhanced_fallback_manager is not None:
            return self.enhanced_fallback_manager.get_fallback_history(limit or 10)
        if self.fallback_manager is not None:
            return self.fallback_manager.get_sessions(limit)
        return []

    def is_fallback_enabled(self) -> bool:
        if self.enhanced_fallback_manager is not None:
            return True
        return bool(self.fallback_manager and self.fallback_config.is_enabled())
