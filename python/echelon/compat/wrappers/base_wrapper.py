"""``BaseLLMWrapper``: the common base of the original wrappers (stats, metadata, prompt and
response helpers, a synchronous ``generate``)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional

from ..models import LLMResponse, TokenUsage, make_message

__all__ = ["BaseLLMWrapper", "ChunkStream", "run_sync", "estimated_usage"]

log = logging.getLogger(__name__)


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


def estimated_usage(content: str) -> TokenUsage:
    """The original's estimate when a provider reports no usage: completion ``max(1, len//4)``
    tokens, prompt ``max(completion, 10)``."""
    completion = max(1, len(content or "") // 4)
    prompt = max(completion, 10)
    return TokenUsage(prompt, completion, prompt + completion)


def bump(obj: Any, attr: str, by: int = 1) -> None:
    """``obj.attr += by`` for bookkeeping that must never cost the caller its result: an
    attribute that is not a number (a test double, a user object) is left alone."""
    try:
        setattr(obj, attr, getattr(obj, attr) + by)
    except Exception as e:  # noqa: BLE001 - counters are best effort by design
        log.debug("cannot update %s.%s: %s", type(obj).__name__, attr, e)


_DONE = object()  # end-of-stream marker on the thread hand-over queue


class ChunkStream:
    """Text chunks of one streamed call, usable both ways the original's ``stream_generate``
    was: ``async for`` (HEAD, an async generator) and ``for`` (the older synchronous
    generator). Nothing starts until iteration does.

    Plain ``for`` outside an event loop drives the stream on a private loop in the calling
    thread, chunk by chunk. Inside a running loop (synchronous code called from async code)
    it runs the stream on a worker thread and hands chunks over as they arrive; the calling
    thread blocks meanwhile, so prefer ``async for`` there."""

    def __init__(self, make: Callable[[], AsyncIterator[str]]) -> None:
        self._make = make
        self._agen: Optional[AsyncIterator[str]] = None

    # -- async ----------------------------------------------------------------------------
    def __aiter__(self) -> "ChunkStream":
        return self

    async def __anext__(self) -> str:
        if self._agen is None:
            self._agen = self._make()
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the stream (releases the instance and the connection)."""
        agen, self._agen = self._agen, None
        close = getattr(agen, "aclose", None)
        if close is not None:
            await close()

    # -- sync -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._iter_here()
        return self._iter_threaded()

    def _iter_here(self) -> Iterator[str]:
        loop = asyncio.new_event_loop()
        agen = self._make()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            try:
                close = getattr(agen, "aclose", None)
                if close is not None:
                    loop.run_until_complete(close())
            finally:
                loop.close()

    def _iter_threaded(self) -> Iterator[str]:
        q: "queue.Queue[Any]" = queue.Queue()
        box: Dict[str, Any] = {}
        ready = threading.Event()

        async def pump() -> None:
            agen = self._make()
            try:
                async for chunk in agen:
                    q.put(chunk)
            finally:
                close = getattr(agen, "aclose", None)
                if close is not None:
                    await close()

        def worker() -> None:
            loop = asyncio.new_event_loop()
            try:
                task = loop.create_task(pump())
                box["loop"], box["task"] = loop, task
                ready.set()
                loop.run_until_complete(task)
                q.put(_DONE)
            except asyncio.CancelledError:
                q.put(_DONE)
            except BaseException as e:  # re-raised in the consumer's thread
                q.put(e)
            finally:
                ready.set()
                loop.close()

        t = threading.Thread(target=worker, name="echelon-compat-stream", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Stopped early (break, error in the consumer): cancel the stream, which closes it.
            ready.wait()
            loop, task = box.get("loop"), box.get("task")
            if loop is not None and task is not None and not task.done():
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:  # the loop already finished
                    pass
            t.join()


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

    def stream_generate(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> ChunkStream:
        """Text chunks as a :class:`ChunkStream` (``async for`` or ``for``). The pool, group and
        direct wrappers stream the provider's deltas; this base version (for custom
        subclasses) waits for :meth:`generate_async` and yields 10-character slices, as the
        original did. Subclasses provide chunks by overriding :meth:`_stream_chunks`."""
        return ChunkStream(lambda: self._stream_chunks(messages, parameters, **kwargs))

    def stream_generate_async(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> ChunkStream:
        """Old name of :meth:`stream_generate` (same object, iterate it with ``async for``)."""
        return self.stream_generate(messages, parameters, **kwargs)

    async def _stream_chunks(self, messages: List[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        resp = await self.generate_async(messages, parameters, **kwargs)
        content = resp.content or ""
        for i in range(0, len(content), 10):
            yield content[i : i + 10]

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
