"""Engine events for Python: :class:`EventStream` (``async for ev in router.events()``) and the
callback dispatcher behind ``router.on(event_type, callback)``.

Events are plain dicts with ``type`` and ``timestamp`` (Unix seconds) plus the fields of their
type:

- ``instance_state``: ``instance``, ``from``, ``to``, ``reason``
- ``breaker_state``: ``instance``, ``from``, ``to`` (``"CLOSED"``/``"OPEN"``/``"HALF_OPEN"``), ``reason``
- ``fallback``: ``from``, ``to`` (targets), ``error`` (error class)
- ``retry``: ``target``, ``instance``, ``attempt``, ``delay`` (s), ``error``
- ``rate_limited``: ``instance``, ``retry_after`` (s or None), ``cooldown`` (s)
- ``queue``: ``name``, ``level`` (``"50%"``/``"90%"``/``"drained"``), ``length``, ``size``
- ``request_failed``: ``route``, ``error``, ``message``, ``attempts``
- ``config_reloaded``: ``pools``, ``groups``, ``wrappers``
- ``alert``: ``rule``, ``kind``, ``state`` (``"firing"``/``"resolved"``), ``value``, ``threshold``, ``scope``
- ``events_dropped``: ``dropped`` (this subscriber's buffer was full; sent when space frees)
- ``state_backend``: ``backend`` (``"redis"``), ``state`` (``"down"``: each process now uses its
  own share of every limit; ``"up"``: reconnected and resynchronised), ``detail``

Delivery never blocks a request: each subscriber has a bounded buffer, and events that do not
fit are counted (``EventStream.dropped``, ``Router.events_dropped()``) instead of waited for.
Events cross into Python a batch at a time.

Every event is also logged to the ``echelon.events`` logger (state changes at INFO/WARNING,
retries, fallbacks and rate limits at DEBUG). The engine caches Python logger levels; after
changing them at runtime call :func:`refresh_log_levels`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Collection, Dict, List, Optional, Union

from . import _core
from ._loop import _completer, _deliver

__all__ = ["EventStream", "Subscription", "EVENT_TYPES", "refresh_log_levels"]

EVENT_TYPES = (
    "instance_state",
    "breaker_state",
    "fallback",
    "retry",
    "rate_limited",
    "queue",
    "request_failed",
    "config_reloaded",
    "alert",
    "events_dropped",
    "state_backend",
)

Event = Dict[str, Any]
Callback = Callable[[Event], Union[None, Awaitable[None]]]

_log = logging.getLogger("echelon.events")


def refresh_log_levels() -> None:
    """Make the engine re-read Python logger levels (it caches them for speed)."""
    _core.refresh_log_levels()


def _check_type(event_type: str) -> None:
    if event_type != "*" and event_type not in EVENT_TYPES:
        import difflib

        close = difflib.get_close_matches(event_type, EVENT_TYPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown event type {event_type!r}{hint}; known: '*', {', '.join(EVENT_TYPES)}")


class EventStream:
    """An async iterator of events: ``async for ev in router.events(): ...``.

    Events are fetched from the engine in batches (one crossing per batch). ``types`` keeps
    only those event types (``events_dropped`` always passes). Close it with :meth:`aclose`
    (or ``async with``) to unsubscribe.
    """

    def __init__(self, core_router: "_core.Router", types: Optional[Collection[str]] = None, buffer: int = 1024) -> None:
        for t in types or ():
            _check_type(t)
        self._types = None if not types or "*" in types else frozenset(types) | {"events_dropped"}
        self._inner = _core.events_subscribe(core_router, buffer)
        self._pending: List[Event] = []
        self._closed = False

    @property
    def dropped(self) -> int:
        """Events this stream lost because its buffer was full."""
        return int(self._inner.dropped)

    def __aiter__(self) -> "EventStream":
        return self

    async def next_batch(self, max: int = 256) -> List[Event]:
        """Every buffered event (at least one, waiting if none), up to ``max``. Empty once
        closed."""
        if self._pending:
            out, self._pending = self._pending[:max], self._pending[max:]
            return out
        while not self._closed:
            completer = _completer()
            batch = await _deliver(completer, *self._inner.next_batch_via(completer, max))
            if not batch:
                self._closed = True
                break
            if self._types is not None:
                batch = [e for e in batch if e["type"] in self._types]
            if batch:
                return batch
        return []

    async def __anext__(self) -> Event:
        if not self._pending:
            self._pending = await self.next_batch()
            if not self._pending:
                raise StopAsyncIteration
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Unsubscribe (idempotent)."""
        self.close()

    def close(self) -> None:
        """Unsubscribe without awaiting (idempotent)."""
        self._closed = True
        self._inner.close()

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._inner.close()
        except Exception:
            pass


class Subscription:
    """Handle returned by ``router.on(...)``; call :meth:`unsubscribe` (or use it as a context
    manager) to stop the callback."""

    def __init__(self, dispatcher: "Dispatcher", event_type: str, callback: Callback) -> None:
        self._dispatcher = dispatcher
        self.event_type = event_type
        self.callback = callback
        self.active = True

    def unsubscribe(self) -> None:
        """Stop calling the callback (idempotent)."""
        if self.active:
            self.active = False
            self._dispatcher.remove(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        return f"Subscription({self.event_type!r}, active={self.active})"


class Dispatcher:
    """One engine subscription and one asyncio task per router, fanning batches out to the
    callbacks registered with ``router.on``. Sync callbacks are called in the loop; async ones
    are awaited in order. A failing callback is logged, never propagated."""

    def __init__(self, core_router: "_core.Router", buffer: int = 1024) -> None:
        self._core = core_router
        self._buffer = buffer
        self._subs: List[Subscription] = []
        self._stream: Optional[EventStream] = None
        self._task: Optional["asyncio.Task[None]"] = None

    @property
    def dropped(self) -> int:
        return self._stream.dropped if self._stream is not None else 0

    def add(self, event_type: str, callback: Callback) -> Subscription:
        _check_type(event_type)
        if not callable(callback):
            raise TypeError("callback must be callable")
        sub = Subscription(self, event_type, callback)
        self._subs.append(sub)
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._subs.remove(sub)
                raise RuntimeError("router.on() needs a running event loop (call it from async code)") from None
            self._stream = EventStream(self._core, buffer=self._buffer)
            self._task = loop.create_task(self._run(self._stream), name="echelon-event-dispatch")
        return sub

    def remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if not self._subs:
            self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._task = None

    async def _run(self, stream: EventStream) -> None:
        while True:
            batch = await stream.next_batch()
            if not batch:
                return
            for ev in batch:
                for sub in list(self._subs):
                    if sub.active and (sub.event_type == "*" or sub.event_type == ev["type"]):
                        try:
                            r = sub.callback(ev)
                            if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                                await r
                        except Exception:
                            _log.exception("event callback %r failed on a %s event", sub.callback, ev["type"])
