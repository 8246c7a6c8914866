"""``TaskGroupWrapper``: a wrapper over one task-group reference (``config["target"]`` or the
wrapper name), with or without a fallback manager."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, AsyncIterator, Dict, List, Optional

from ..exceptions import TaskGroupWrapperError, from_echelon_error
from ..models import LLMResponse, TokenUsage
from .base_wrapper import BaseLLMWrapper, estimated_usage, run_sync
from .polling_pool_wrapper import _content_and_usage

__all__ = ["TaskGroupWrapper"]

HISTORY_CAP = 100


class TaskGroupWrapper(BaseLLMWrapper):
    """Generates through a group reference: via ``fallback_manager.execute_with_fallback`` when
    one is set, else directly through the engine's group route."""

    def __init__(self, name: str, task_group_manager: Any, fallback_manager: Any = None, config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(name, config)
        self.task_group_manager = task_group_manager
        self.fallback_manager = fallback_manager
        self._current_target: Optional[str] = None
        self._attempt_count = 0
        self._fallback_history: List[Dict[str, Any]] = []
        self._client_cache: Dict[str, Any] = {}
        self._metadata.update({"task_group_manager": task_group_manager is not None, "fallback_manager": fallback_manager is not None, "wrapper_type": "task_group"})

    def _get_target(self) -> str:
        self._current_target = self.config.get("target", self.name)
        return self._current_target

    async def generate_async(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        start = time.perf_counter()
        ok = False
        try:
            self._get_target()
            if self.fallback_manager:
                resp = await self._generate_with_fallback(messages, parameters, **kwargs)
            else:
                resp = await self._generate_direct(messages, parameters, **kwargs)
            ok = True
            return resp
        except Exception as e:
            raise TaskGroupWrapperError(f"任务组包装器生成失败: {e}") from e
        finally:
            self._update_stats(ok, time.perf_counter() - start)

    def generate(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        try:
            return run_sync(lambda: self.generate_async(messages, parameters, **kwargs))
        except Exception as e:
            raise TaskGroupWrapperError(f"任务组包装器同步生成失败: {e}") from e

    async def _generate_with_fallback(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        target = self._current_target or self._get_target()
        fallback_groups = self._get_fallback_groups(target)
        if not self.fallback_manager:
            raise TaskGroupWrapperError("降级管理器未初始化")
        prompt = self._messages_to_prompt(messages)
        try:
            result = await self.fallback_manager.execute_with_fallback(primary_target=target, fallback_groups=fallback_groups, prompt=prompt, parameters=parameters, **kwargs)
        except Exception as e:
            self._record_failure(target, str(e))
            raise
        self._record_success(target)
        content, usage = _content_and_usage(result)  # unwrap responses (§5.16)
        return self._create_llm_response(content=content, model=target, token_usage=usage)

    async def _generate_direct(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        target = self._current_target or self._get_target()
        models = self.task_group_manager.get_models_for_group(target)
        if not models:
            raise TaskGroupWrapperError(f"没有找到模型: {target}")
        from ...errors import EchelonError

        try:
            resp = await self.task_group_manager.get_router().chat(messages, group=target, **{**(parameters or {}), **kwargs})
        except EchelonError as e:
            raise from_echelon_error(e) from e
        model = resp.attempts[-1].model if resp.attempts else models[0]
        u = resp.usage
        return self._create_llm_response(content=resp.content, model=model, token_usage=TokenUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens), metadata={"served_by": resp.served_by})

    async def _stream_chunks(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        """Real streaming through the engine's group route (retries and fallback happen before
        the first token; configured or given ``fallback_groups`` apply)."""
        target = self._get_target()
        if not self.task_group_manager.get_models_for_group(target):
            raise TaskGroupWrapperError(f"没有找到模型: {target}")
        fb = self._get_fallback_groups(target)
        start = time.perf_counter()
        ok = False
        from ...errors import EchelonError

        try:
            stream = self.task_group_manager.get_router().stream(messages, group=target, fallback_groups=fb or None, **{**(parameters or {}), **kwargs})
            try:
                async for chunk in stream:
                    if chunk.text:
                        yield chunk.text
            finally:
                await stream.aclose()
            ok = True
        except EchelonError as e:
            self._record_failure(target, str(e))
            raise TaskGroupWrapperError(f"任务组包装器生成失败: {from_echelon_error(e)}") from e
        finally:
            self._update_stats(ok, time.perf_counter() - start)
        self._record_success(target)

    def _get_fallback_groups(self, target: str) -> List[str]:
        configured = self.config.get("fallback_groups")
        if configured:
            return list(configured)
        try:
            group, _ = self.task_group_manager.parse_group_reference(target)
            if group:
                return list(self.task_group_manager.get_fallback_groups(target))
        except Exception:
            pass
        return []

    def _push(self, entry: Dict[str, Any]) -> None:
        self._attempt_count += 1
        self._fallback_history.append(entry)
        del self._fallback_history[:-HISTORY_CAP]

    def _record_success(self, target: str) -> None:
        self._push({"target": target, "success": True, "timestamp": datetime.now().isoformat()})

    def _record_failure(self, target: str, error: str) -> None:
        self._push({"target": target, "success": False, "error": error, "timestamp": datetime.now().isoformat()})

    def _create_llm_response(self, content: str, model: str, token_usage: Optional[TokenUsage] = None, message: Any = None, metadata: Optional[Dict[str, Any]] = None) -> LLMResponse:
        if token_usage is None or token_usage.total_tokens == 0:
            token_usage = estimated_usage(content)  # as the pool wrapper does
        md = dict(metadata or {})
        md.update({"wrapper": "task_group", "target": self._current_target, "attempt_count": self._attempt_count})
        return super()._create_llm_response(content, model, token_usage, message, md)

    def get_model_info(self) -> Dict[str, Any]:
        return {
            "type": "task_group_wrapper",
            "name": self.name,
            "current_target": self._current_target,
            "fallback_history": self.get_fallback_history(),
            "task_group_manager": self.task_group_manager is not None,
            "fallback_manager": self.fallback_manager is not None,
            "attempt_count": self._attempt_count,
        }

    def get_fallback_history(self, limit: int = 10) -> List[Dict[str, Any]]:
        return list(self._fallback_history[-limit:]) if limit else []

    def reset_fallback_history(self) -> None:
        self._fallback_history = []
        self._attempt_count = 0

    def supports_function_calling(self) -> bool:
        """True iff the current target names an echelon whose ``function_calling`` is set."""
        target = self._current_target or self.config.get("target", self.name)
        if not target:
            return False
        try:
            group, echelon = self.task_group_manager.parse_group_reference(target)
            if not echelon:
                return False
            e = self.task_group_manager.get_echelon_config(group, echelon)
            if e is None:
                return False
            fc = e.get("function_calling") if isinstance(e, dict) else getattr(e, "function_calling", None)
            return fc is not None
        except Exception:
            return False
