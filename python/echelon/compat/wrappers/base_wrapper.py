"""``BaseLLMWrapper``: the common base of the original wrappers (stats, metadata, prompt and
response helpers, a synchronous ``generate``)."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

from ..models import LLMResponse, TokenUsage, make_message

__all__ = ["BaseLLMWrapper", "run_sync"]


def run_sync(make_coro: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from synchronous code.

    Outside an event loop it uses ``asyncio.run``. Inside a running loop (the original did
    this too) it runs the coroutine on a fresh loop in a worker thread and waits for it: the
    calling loop's thread is blocked meanwhile, so prefer ``await …_async`` there."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    box: Dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(make_coro())
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=worker, name="echelon-compat-sync", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class BaseLLMWrapper(ABC):
    """Common base: ``name``, ``config``, ``_metadata``, ``_stats`` (5 keys)."""

    def __init__(self, name: str, config: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.config: Dict[str, Any] = config if config is not None else {}
        self._metadata: Dict[str, Any] = {}
        self._stats: Dict[str, Any] = {"total_requests": 0, "successful_requests": 0, "failed_requests": 0, "total_response_time": 0.0, "avg_response_time": 0.0}

    @abstractmethod
    async def generate_async(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        """Generate a response."""

    def generate(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> LLMResponse:
        """Synchronous :meth:`generate_async` (see :func:`run_sync`)."""
        return run_sync(lambda: self.generate_async(messages, parameters, **kwargs))

    @abstractmethod
    def get_model_info(self) -> Dict[str, Any]:
        """Describe the wrapper."""

    async def stream_generate(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        """Text chunks. This base version waits for :meth:`generate_async` and yields
        10-character slices; the pool and group wrappers override it with real streaming."""
        resp = await self.generate_async(messages, parameters, **kwargs)
        content = resp.content or ""
        for i in range(0, len(content), 10):
            yield content[i : i + 10]

    def stream_generate_async(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        """Old name of :meth:`stream_generate`."""
        return self.stream_generate(messages, parameters, **kwargs)

    def supports_function_calling(self) -> bool:
        return False

    def get_token_count(self, text: str) -> int:
        """Rough estimate: ``max(1, len(text) // 4)``."""
        return max(1, len(text or "") // 4)

    def get_messages_token_count(self, messages: List[Any]) -> int:
        """Sum of :meth:`get_token_count` over the messages' text."""
        return sum(self.get_token_count(str(getattr(m, "content", m))) for m in messages or [])

    def get_metadata(self) -> Dict[str, Any]:
        """``{"name", "type", "config", "stats", **_metadata}``."""
        return {"name": self.name, "type": type(self).__name__, "config": self.config, "stats": dict(self._stats), **self._metadata}

    def get_stats(self) -> Dict[str, Any]:
        return dict(self._stats)

    def reset_stats(self) -> None:
        self._stats = {"total_requests": 0, "successful_requests": 0, "failed_requests": 0, "total_response_time": 0.0, "avg_response_time": 0.0}

    def _update_stats(self, success: bool, response_time: float) -> None:
        s = self._stats
        s["total_requests"] += 1
        s["total_response_time"] += response_time
        if success:
            s["successful_requests"] += 1
        else:
            s["failed_requests"] += 1
        s["avg_response_time"] = s["total_response_time"] / s["total_requests"]

    def _messages_to_prompt(self, messages: List[Any]) -> str:
        if not messages:
            return ""
        return "\n".join(str(m.content) if hasattr(m, "content") else str(m) for m in messages)

    def _create_llm_response(self, content: str, model: str, token_usage: Optional[TokenUsage] = None, message: Any = None, metadata: Optional[Dict[str, Any]] = None) -> LLMResponse:
        return LLMResponse(
            content=content,
            message=message if message is not None else make_message(content, "ai"),
            token_usage=token_usage if token_usage is not None else TokenUsage(),
            model=model,
            metadata=metadata if metadata is not None else {},
        )
