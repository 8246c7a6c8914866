"""``DirectWrapper``: a wrapper over one model reference (``config["target"]``: a logical model
name or ``provider:model``), the ``type = "direct"`` of named wrappers. The original had no such
wrapper; it exists so ``create_wrappers_from_config`` accepts every definition the router's
``wrappers/<name>.toml`` accepts."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Dict, List, Optional

from ..exceptions import WrapperExecutionError, from_echelon_error
from ..models import LLMResponse
from .base_wrapper import BaseLLMWrapper, run_sync
from .polling_pool_wrapper import _content_and_usage

__all__ = ["DirectWrapper"]


class DirectWrapper(BaseLLMWrapper):
    """Calls one model through the engine's direct route, with ``config["parameters"]`` as
    defaults under the caller's parameters."""

    def __init__(self, name: str, task_group_manager: Any, config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(name, config)
        self.task_group_manager = task_group_manager
        self._metadata.update({"task_group_manager": task_group_manager is not None, "wrapper_type": "direct"})

    @property
    def target(self) -> str:
        return str(self.config.get("target") or self.name)

    def _params(self, parameters: Optional[Dict[str, Any]], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        return {**(self.config.get("parameters") or {}), **(parameters or {}), **kwargs}

    async def generate_async(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        from ...errors import EchelonError

        start = time.perf_counter()
        ok = False
        try:
            prompt = self._messages_to_prompt(messages)
            try:
                result = await self.task_group_manager.get_router().chat(prompt, model=self.target, **self._params(parameters, kwargs))
            except EchelonError as e:
                raise from_echelon_error(e, self.target) from e
            content, usage = _content_and_usage(result)
            ok = True
            return self._create_llm_response(content=content, model=self.target, token_usage=usage)
        except Exception as e:
            raise WrapperExecutionError(f"直连包装器生成失败: {e}") from e
        finally:
            self._update_stats(ok, time.perf_counter() - start)

    def generate(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        return run_sync(lambda: self.generate_async(messages, parameters, **kwargs))

    async def _stream_chunks(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        """Real streaming from the model."""
        prompt = self._messages_to_prompt(messages)
        stream = self.task_group_manager.get_router().stream(prompt, model=self.target, **self._params(parameters, kwargs))
        async with stream:
            async for chunk in stream:
                if chunk.text:
                    yield chunk.text

    def get_model_info(self) -> Dict[str, Any]:
        return {"name": self.name, "type": "direct", "target": self.target, "parameters": dict(self.config.get("parameters") or {})}
