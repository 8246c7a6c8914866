"""Clients backed by the echelon engine: :class:`EngineClient` (an ``ILLMClient`` for one
model) and :class:`EngineClientFactory` (an ``IClientFactory``). The fallback managers and
``FallbackClientWrapper`` use them when no ``client_factory`` is given, so their calls reach
real models through the engine (its retries, timeouts, breakers, limits, connection pool)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Dict, List, Optional, Sequence

from .exceptions import LLMConfigurationError, from_echelon_error
from .interfaces import IClientFactory, ILLMClient
from .models import LLMResponse
from .wrappers.base_wrapper import ChunkStream, run_sync

__all__ = ["EngineClient", "EngineClientFactory", "engine_router"]


def engine_router(task_group_manager: Any) -> Any:
    """The :class:`echelon.Router` of a compat ``TaskGroupManager`` (raises
    ``LLMConfigurationError`` saying what is missing when there is none)."""
    if task_group_manager is None or not hasattr(task_group_manager, "get_router"):
        raise LLMConfigurationError(
            "no engine to call: pass a task_group_manager (echelon.compat.TaskGroupManager) or a client_factory"
        )
    return task_group_manager.get_router()


class EngineClient(ILLMClient):
    """Calls one model reference (a logical model name or ``provider:model``) through the
    engine's direct route. ``generate`` is a coroutine (the HEAD interface); the older
    synchronous form is :meth:`generate_sync`."""

    def __init__(self, model_name: str, task_group_manager: Any) -> None:
        super().__init__({"model_name": model_name})
        self.model_name = model_name
        self.task_group_manager = task_group_manager

    async def generate(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        from ..errors import EchelonError

        router = engine_router(self.task_group_manager)
        try:
            resp = await router.chat(list(messages), model=self.model_name, **{**(parameters or {}), **kwargs})
        except EchelonError as e:
            raise from_echelon_error(e, self.model_name) from e
        return LLMResponse.from_echelon(resp, model=self.model_name)

    async def generate_async(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        return await self.generate(messages, parameters, **kwargs)

    def generate_sync(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        return run_sync(lambda: self.generate(messages, parameters, **kwargs))

    def stream_generate(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> ChunkStream:
        """Text deltas as the provider sends them (``async for`` or ``for``)."""

        async def chunks() -> AsyncIterator[str]:
            from ..errors import EchelonError

            router = engine_router(self.task_group_manager)
            try:
                async with router.stream(list(messages), model=self.model_name, **{**(parameters or {}), **kwargs}) as stream:
                    async for chunk in stream:
                        if chunk.text:
                            yield chunk.text
            except EchelonError as e:
                raise from_echelon_error(e, self.model_name) from e

        return ChunkStream(chunks)

    def supports_function_calling(self) -> bool:
        return True

    def get_model_info(self) -> Dict[str, Any]:
        return {"model_name": self.model_name, "backend": "echelon"}


class EngineClientFactory(IClientFactory):
    """``create_client(model)`` → an :class:`EngineClient` (cached per model).
    ``get_available_models()`` lists the models the task groups reference."""

    def __init__(self, task_group_manager: Any) -> None:
        self.task_group_manager = task_group_manager
        self._clients: Dict[str, EngineClient] = {}

    def create_client(self, model_name: str) -> EngineClient:
        if not isinstance(model_name, str) or not model_name:
            raise LLMConfigurationError(f"model name must be a non-empty string, got {model_name!r}")
        c = self._clients.get(model_name)
        if c is None:
            c = self._clients[model_name] = EngineClient(model_name, self.task_group_manager)
        return c

    def get_available_models(self) -> List[str]:
        tgm = self.task_group_manager
        out: List[str] = []
        try:
            for g in tgm.list_task_groups():
                for m in tgm.get_models_for_group(g):
                    if m not in out:
                        out.append(m)
        except Exception:  # noqa: BLE001 - a manager without groups lists nothing
            return out
        return out
