"""``PollingPoolWrapper``: a wrapper over one polling pool (the wrapper name is the pool name)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, AsyncIterator, Dict, List, Optional

from ..exceptions import LLMError, PollingPoolWrapperError, from_echelon_error
from ..models import LLMResponse, TokenUsage
from ..polling_pool import engine_route
from .base_wrapper import BaseLLMWrapper, bump, estimated_usage, run_sync

__all__ = ["PollingPoolWrapper"]

HISTORY_CAP = 100

log = logging.getLogger(__name__)


def _content_and_usage(result: Any) -> tuple:
    """Text and usage of whatever a call returned (an echelon Response, an LLMResponse, or
    text): the original used ``str(result)``, which gave a dataclass repr (§5.16)."""
    if isinstance(result, str):
        return result, None
    content = getattr(result, "content", None)
    if content is None:
        return str(result), None
    usage = getattr(result, "token_usage", None)
    if usage is None and getattr(result, "usage", None) is not None:
        u = result.usage
        usage = TokenUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
    return str(content), usage


class PollingPoolWrapper(BaseLLMWrapper):
    """Rotates over the pool's instances, up to ``max_instance_attempts`` per call (the
    wrapper config's key, else the pool's ``fallback_config``, else 2)."""

    def __init__(self, name: str, polling_pool_manager: Any, config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(name, config)
        self.polling_pool_manager = polling_pool_manager
        self._pool: Any = None
        self._attempt_count = 0
        self._rotation_history: List[Dict[str, Any]] = []
        self._client_cache: Dict[str, Any] = {}
        self._metadata.update({"polling_pool_manager": polling_pool_manager is not None, "wrapper_type": "polling_pool"})

    def _get_pool(self) -> Any:
        if self._pool is None and self.polling_pool_manager is not None:
            # `target` (the named-wrapper form) names the pool; the original used the wrapper name.
            self._pool = self.polling_pool_manager.get_pool(self.config.get("target") or self.name)
        return self._pool

    async def generate_async(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        start = time.perf_counter()
        ok = False
        try:
            pool = self._get_pool()
            if not pool:
                raise PollingPoolWrapperError(f"轮询池不可用: {self.name}")
            prompt = self._messages_to_prompt(messages)
            result = await self._call_with_simple_fallback(pool, prompt, parameters, **kwargs)
            content, usage = _content_and_usage(result)
            resp = self._create_llm_response(content=content, model=f"{pool.name}_pool", token_usage=usage)
            ok = True
            return resp
        except Exception as e:
            raise PollingPoolWrapperError(f"轮询池包装器生成失败: {e}") from e
        finally:
            self._update_stats(ok, time.perf_counter() - start)

    def generate(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        try:
            return run_sync(lambda: self.generate_async(messages, parameters, **kwargs))
        except Exception as e:
            raise PollingPoolWrapperError(f"轮询池包装器同步生成失败: {e}") from e

    def _max_attempts(self, pool: Any) -> int:
        n = self.config.get("max_instance_attempts")
        if n is None and isinstance(getattr(pool, "config", None), dict):
            n = (pool.config.get("fallback_config") or {}).get("max_instance_attempts")
        return int(n or 2)

    def _push_history(self, entry: Dict[str, Any]) -> None:
        self._rotation_history.append(entry)
        del self._rotation_history[:-HISTORY_CAP]

    async def _call_with_simple_fallback(self, pool: Any, prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        max_attempts = self._max_attempts(pool)
        last_error: Any = "没有可用的实例"
        for attempt in range(1, max_attempts + 1):
            instance = await pool.get_instance()
            if instance is None:
                continue
            self._push_history({"instance_id": instance.instance_id, "attempt": attempt, "timestamp": datetime.now().isoformat()})
            start = time.perf_counter()
            try:
                result = await self._call_instance(instance, prompt, parameters, **kwargs)
            except Exception as e:
                last_error = e
                self._attempt_count += 1
                bump(instance, "failure_count")
                self._pool_record(pool, instance, 0.0, False)
            else:
                # Bookkeeping after a success is best effort: it never loses the result.
                self._attempt_count += 1
                bump(instance, "success_count")
                self._pool_record(pool, instance, time.perf_counter() - start, True)
                return result
            finally:
                pool.release_instance(instance)
        raise PollingPoolWrapperError(f"轮询池所有实例尝试失败，尝试次数: {max_attempts}。最后错误: {last_error}")

    @staticmethod
    def _pool_record(pool: Any, instance: Any, rt: float, ok: bool) -> None:
        # Wrapper traffic moves the pool's stats and the instance's latency/last_used too (the
        # original bypassed them, §5.16). Counts were already bumped above. Best effort.
        rec = getattr(pool, "_record", None)
        if callable(rec):
            try:
                rec(instance, rt, ok, count_on_instance=False)
            except Exception as e:  # noqa: BLE001
                log.debug("pool statistics not updated: %s", e)

    async def _call_instance(self, instance: Any, prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        """Call exactly this instance: an injected ``instance.client`` (or a cached one), else the
        instance's model through the engine with the echelon's defaults. Returns the response."""
        client = self._client_cache.get(instance.instance_id) or getattr(instance, "client", None)
        if client is not None:
            r = client.generate([{"role": "user", "content": prompt}], parameters or {}, **kwargs)
            if hasattr(r, "__await__"):
                r = await r
            return r
        pool = self._get_pool()
        params = {**(pool.instance_params(instance) if hasattr(pool, "instance_params") else {}), **(parameters or {}), **kwargs}
        from ...errors import EchelonError

        try:
            router = pool.task_group_manager.get_router()
            return await router.chat(prompt, **engine_route(router, instance), **params)
        except EchelonError as e:
            raise from_echelon_error(e, instance.model_name) from e

    async def _stream_chunks(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        """Real streaming: text deltas as the provider sends them, from one pool instance."""
        pool = self._get_pool()
        if not pool:
            raise PollingPoolWrapperError(f"轮询池不可用: {self.name}")
        instance = await pool.get_instance()
        if instance is None:
            raise PollingPoolWrapperError(f"轮询池所有实例尝试失败，尝试次数: 1。最后错误: 没有可用的实例")
        self._push_history({"instance_id": instance.instance_id, "attempt": 1, "timestamp": datetime.now().isoformat()})
        params = {**pool.instance_params(instance), **(parameters or {}), **kwargs}
        start = time.perf_counter()
        ok = False
        from ...errors import EchelonError

        try:
            router = pool.task_group_manager.get_router()
            stream = router.stream(self._messages_to_prompt(messages), **engine_route(router, instance), **params)
            try:
                async for chunk in stream:
                    if chunk.text:
                        yield chunk.text
            finally:
                await stream.aclose()
            ok = True
        except EchelonError as e:
            raise PollingPoolWrapperError(f"轮询池包装器生成失败: {from_echelon_error(e, instance.model_name)}") from e
        finally:
            rt = time.perf_counter() - start
            bump(instance, "success_count" if ok else "failure_count")
            self._attempt_count += 1
            self._pool_record(pool, instance, rt if ok else 0.0, ok)
            pool.release_instance(instance)
            self._update_stats(ok, rt)

    def _create_llm_response(self, content: str, model: str, token_usage: Optional[TokenUsage] = None, message: Any = None, metadata: Optional[Dict[str, Any]] = None) -> LLMResponse:
        if token_usage is None or token_usage.total_tokens == 0:
            token_usage = estimated_usage(content)
        md = dict(metadata or {})
        md.update({"wrapper": "polling_pool", "attempt_count": self._attempt_count, "rotation_history_count": len(self._rotation_history)})
        return super()._create_llm_response(content, model, token_usage, message, md)

    def get_model_info(self) -> Dict[str, Any]:
        pool = self._get_pool()
        info: Dict[str, Any] = {}
        if pool:
            cfg = pool.config if isinstance(getattr(pool, "config", None), dict) else {}
            instances = getattr(pool, "instances", []) or []
            info = {
                "name": getattr(pool, "name", self.name),
                "task_groups": cfg.get("task_groups", []),
                "rotation_strategy": cfg.get("rotation_strategy", "round_robin"),
                "instance_count": len(instances),
                "healthy_instances": sum(1 for i in instances if getattr(getattr(i, "status", None), "value", None) == "healthy"),
                "health_check_interval": cfg.get("health_check_interval", 30),
                "failure_threshold": cfg.get("failure_threshold", 3),
                "recovery_time": cfg.get("recovery_time", 60),
            }
        return {"type": "polling_pool_wrapper", "name": self.name, "pool_info": info, "attempt_count": self._attempt_count, "rotation_history": self.get_rotation_history()}

    def get_rotation_history(self, limit: int = 10) -> List[Dict[str, Any]]:
        return list(self._rotation_history[-limit:]) if limit else []

    def reset_rotation_history(self) -> None:
        self._rotation_history = []
        self._attempt_count = 0

    def get_pool_status(self) -> Optional[Dict[str, Any]]:
        pool = self._get_pool()
        return pool.get_status() if pool else None

    def supports_function_calling(self) -> bool:
        return False

    async def health_check(self) -> Dict[str, Any]:
        """``{"healthy": healthy > total/2, "healthy_instances", "total_instances",
        "health_ratio"}`` over ``pool.instances`` (status ``"healthy"`` counts); no pool →
        ``{"healthy": False, "error": "轮询池不可用"}``; any exception → ``{"healthy": False,
        "error": str(e)}``."""
        try:
            pool = self._get_pool()
            if not pool:
                return {"healthy": False, "error": "轮询池不可用"}
            instances = list(pool.instances or [])
            total = len(instances)
            healthy = sum(1 for i in instances if _status_value(i) == "healthy")
            return {"healthy": healthy > total / 2, "healthy_instances": healthy, "total_instances": total, "health_ratio": healthy / total if total else 0}
        except Exception as e:
            return {"healthy": False, "error": str(e)}


def _status_value(instance: Any) -> Any:
    st = getattr(instance, "status", None)
    return getattr(st, "value", st)
