"""``LLMWrapperFactory``: creates and registers wrappers by name."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Dict, Optional, Type

from ..exceptions import WrapperFactoryError
from .base_wrapper import BaseLLMWrapper, run_sync
from .direct_wrapper import DirectWrapper
from .polling_pool_wrapper import PollingPoolWrapper
from .task_group_wrapper import TaskGroupWrapper

__all__ = ["LLMWrapperFactory"]

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 5.0


class LLMWrapperFactory:
    """Registry of wrappers (``_wrappers``) and wrapper types (``_wrapper_types``)."""

    def __init__(self, task_group_manager: Any, polling_pool_manager: Any = None, fallback_manager: Any = None) -> None:
        self.task_group_manager = task_group_manager
        self.polling_pool_manager = polling_pool_manager
        self.fallback_manager = fallback_manager
        self._wrappers: Dict[str, BaseLLMWrapper] = {}
        self._wrapper_types: Dict[str, Type[BaseLLMWrapper]] = {"task_group": TaskGroupWrapper, "polling_pool": PollingPoolWrapper, "direct": DirectWrapper}

    def create_task_group_wrapper(self, name: str, config: Optional[Dict[str, Any]] = None) -> TaskGroupWrapper:
        try:
            w = TaskGroupWrapper(name=name, task_group_manager=self.task_group_manager, fallback_manager=self.fallback_manager, config=config)
        except Exception as e:
            raise WrapperFactoryError(f"创建任务组包装器失败 {name}: {e}") from e
        self._wrappers[name] = w
        return w

    def create_polling_pool_wrapper(self, name: str, config: Optional[Dict[str, Any]] = None) -> PollingPoolWrapper:
        if self.polling_pool_manager is None:
            raise WrapperFactoryError("轮询池管理器未配置，无法创建轮询池包装器")
        try:
            w = PollingPoolWrapper(name=name, polling_pool_manager=self.polling_pool_manager, config=config)
        except Exception as e:
            raise WrapperFactoryError(f"创建轮询池包装器失败 {name}: {e}") from e
        self._wrappers[name] = w
        return w

    def create_direct_wrapper(self, name: str, config: Optional[Dict[str, Any]] = None) -> DirectWrapper:
        """A wrapper over one model reference (``config["target"]``, else the name)."""
        try:
            w = DirectWrapper(name=name, task_group_manager=self.task_group_manager, config=config)
        except Exception as e:
            raise WrapperFactoryError(f"创建直连包装器失败 {name}: {e}") from e
        self._wrappers[name] = w
        return w

    def create_wrapper_from_config(self, name: str, wrapper_type: str, config: Optional[Dict[str, Any]] = None) -> BaseLLMWrapper:
        """Create a wrapper of ``wrapper_type``: ``task_group`` / ``polling_pool`` / ``direct``
        (``config["target"]`` names the group reference, pool or model, as in the router's
        ``wrappers/<name>.toml``; without it the wrapper name is the target), or a registered
        type."""
        if wrapper_type == "task_group":
            return self.create_task_group_wrapper(name, config)
        if wrapper_type == "polling_pool":
            return self.create_polling_pool_wrapper(name, config)
        if wrapper_type == "direct":
            return self.create_direct_wrapper(name, config)
        cls = self._wrapper_types.get(wrapper_type)
        if cls is None:
            raise WrapperFactoryError(f"不支持的包装器类型: {wrapper_type}")
        try:
            w = cls(name=name, config=config)  # type: ignore[call-arg]
        except Exception as e:
            raise WrapperFactoryError(f"创建包装器失败 {name}: {e}") from e
        self._wrappers[name] = w
        return w

    def create_wrappers_from_config(self, wrappers_config: Dict[str, Dict[str, Any]]) -> Dict[str, BaseLLMWrapper]:
        """Create every ``{name: {"type": …, "target": …, …}}`` entry (the same definitions as
        the router's named wrappers). Entries without a type, or that fail, are skipped (the
        original's contract)."""
        out: Dict[str, BaseLLMWrapper] = {}
        for name, cfg in (wrappers_config or {}).items():
            t = (cfg or {}).get("type")
            if not t:
                continue
            try:
                out[name] = self.create_wrapper_from_config(name, t, cfg)
            except Exception:
                continue
        return out

    def get_wrapper(self, name: str) -> Optional[BaseLLMWrapper]:
        return self._wrappers.get(name)

    def list_wrappers(self) -> Dict[str, str]:
        return {n: type(w).__name__ for n, w in self._wrappers.items()}

    def remove_wrapper(self, name: str) -> bool:
        return self._wrappers.pop(name, None) is not None

    def register_wrapper_type(self, wrapper_type: str, wrapper_class: type) -> None:
        if not (isinstance(wrapper_class, type) and issubclass(wrapper_class, BaseLLMWrapper)):
            raise WrapperFactoryError(f"包装器类必须继承自BaseLLMWrapper: {wrapper_class}")
        self._wrapper_types[wrapper_type] = wrapper_class

    def get_wrapper_stats(self) -> Dict[str, Any]:
        types: Dict[str, int] = {}
        stats: Dict[str, Any] = {}
        for n, w in self._wrappers.items():
            cls = type(w).__name__
            types[cls] = types.get(cls, 0) + 1
            try:
                stats[n] = {"type": cls, "stats": w.get_stats()}
            except Exception as e:
                stats[n] = {"type": cls, "error": str(e)}
        return {"total_wrappers": len(self._wrappers), "wrapper_types": types, "wrapper_stats": stats}

    def health_check_all(self) -> Dict[str, Any]:
        """Run every wrapper's ``health_check`` (sync; safe inside a running event loop: the
        checks then run on a worker thread's loop, each limited to 5 s)."""
        results: Dict[str, Any] = {}
        for n, w in list(self._wrappers.items()):
            check = getattr(w, "health_check", None)
            if check is None or not callable(check):
                results[n] = {"healthy": True, "type": type(w).__name__, "note": "无健康检查方法"}
                continue
            try:
                r = check()
                if asyncio.iscoroutine(r):
                    coro = r

                    async def bounded(c: Any = coro) -> Any:
                        return await asyncio.wait_for(c, HEALTH_TIMEOUT)

                    r = run_sync(bounded)
                results[n] = r
            except (asyncio.TimeoutError, concurrent.futures.TimeoutError):
                results[n] = {"healthy": False, "error": f"health check timed out after {HEALTH_TIMEOUT}s"}
            except Exception as e:
                results[n] = {"healthy": False, "error": str(e)}
        return results

    def reset_all_stats(self) -> None:
        """Reset every wrapper (the first of ``reset_stats``, ``reset_fallback_history``,
        ``reset_rotation_history`` it has); a wrapper whose reset raises is logged and skipped."""
        for name, w in list(self._wrappers.items()):
            for m in ("reset_stats", "reset_fallback_history", "reset_rotation_history"):
                f = getattr(w, m, None)
                if callable(f):
                    try:
                        f()
                    except Exception as e:  # noqa: BLE001 - one wrapper must not stop the rest
                        log.warning("wrapper %s: %s failed: %s", name, m, e)
                    break

    def shutdown(self) -> None:
        self._wrappers.clear()
