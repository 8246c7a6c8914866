"""The asyncio-native API: :class:`Router`, :class:`PollingPool`, :class:`TaskGroup`."""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import _core
from ._core import Response, StreamChunk
from ._loop import _completer, _deliver
from .events import Callback, Dispatcher, EventStream, Subscription

Messages = Union[str, Sequence[Any]]

__all__ = ["Router", "PollingPool", "TaskGroup", "Stream", "Wrapper", "Gateway"]



class Stream:
    """An async iterator of :class:`StreamChunk` (text deltas, then one final chunk carrying the
    complete :class:`Response` with usage and the attempt trace).

    Leaving the loop early (``break``), :meth:`aclose`, or ``async with`` exit aborts the
    upstream request and frees the instance slot at once.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: "_core.Stream") -> None:
        self._inner = inner

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> StreamChunk:
        completer = _completer()
        return await _deliver(completer, *self._inner.next_via(completer))

    async def aclose(self) -> None:
        """Abort the stream (idempotent)."""
        completer = _completer()
        await _deliver(completer, *self._inner.aclose_via(completer))

    async def text(self) -> str:
        """Consume the stream and return the whole text."""
        parts: List[str] = []
        async for chunk in self:
            parts.append(chunk.text)
        return "".join(parts)

    async def __aenter__(self) -> "Stream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        try:
            self._inner.close()
        except Exception:
            pass


def _groups_arg(fallback_groups: Optional[Union[str, Sequence[str]]]) -> Optional[List[str]]:
    """The caller's ``fallback_groups`` as a list (a single reference string is one group, not
    a sequence of one-letter names)."""
    if fallback_groups is None:
        return None
    if isinstance(fallback_groups, str):
        return [fallback_groups]
    return list(fallback_groups)


def _attempts_arg(max_instance_attempts: Optional[int]) -> Optional[int]:
    """Validate ``max_instance_attempts``: a positive int (ValueError/TypeError otherwise, not
    the OverflowError the core's u32 conversion would raise)."""
    if max_instance_attempts is None:
        return None
    if isinstance(max_instance_attempts, bool) or not isinstance(max_instance_attempts, int):
        raise TypeError(f"max_instance_attempts must be an int, got {type(max_instance_attempts).__name__}")
    if not 1 <= max_instance_attempts <= 0xFFFFFFFF:
        raise ValueError(f"max_instance_attempts must be between 1 and 4294967295, got {max_instance_attempts}")
    return max_instance_attempts


class Gateway:
    """An HTTP gateway serving a :class:`Router` (see :meth:`Router.serve`): OpenAI
    ``POST /v1/chat/completions``, Anthropic ``POST /v1/messages``, ``GET /v1/models``,
    ``/healthz``, ``/readyz``, ``/metrics`` and a live ``/status`` page, all served by the Rust
    core (no Python on the request path)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: "_core.Gateway") -> None:
        self._inner = inner

    @property
    def host(self) -> str:
        """The bound IP address."""
        return self._inner.host

    @property
    def port(self) -> int:
        """The bound port (the one picked when 0 was asked for)."""
        return self._inner.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (an OpenAI SDK's ``base_url`` is this plus ``/v1``; an
        Anthropic SDK's is this)."""
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def draining(self) -> bool:
        """Whether a drain has begun."""
        return self._inner.draining

    def close(self, grace: Optional[float] = None) -> None:
        """Stop accepting connections (the port is closed when this returns) and let in-flight
        requests and streams finish for ``grace`` seconds (default ``[gateway] drain_grace``),
        in the background; streams still open then end with an error event. Idempotent;
        ``grace=0`` on a drain under way ends it now."""
        self._inner.close(grace)

    async def wait_closed(self) -> None:
        """Wait until the gateway has stopped (drained, every connection gone)."""
        completer = _completer()
        await _deliver(completer, *self._inner.wait_via(completer))

    def reload(self) -> bool:
        """Reload the configuration from its directory now (what SIGHUP does). Returns False
        for a router not loaded from a directory; raises :class:`echelon.ConfigError` for a
        configuration that does not load, and the old one keeps serving."""
        return self._inner.reload()

    def __repr__(self) -> str:
        return f"Gateway({self.url})"


class Router:
    """Routes chat calls to polling pools, task groups or models.

    Build it with :meth:`from_dir` or :meth:`from_dict`; use it as ``async with`` (or call
    :meth:`close`) so background health checks stop and connections close.
    """

    def __init__(self, core: "_core.Router") -> None:
        self._core = core
        self._closed = False
        self._dispatcher = Dispatcher(core)
        self._gateways: List[Gateway] = []

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: Union[str, "os.PathLike[str]"] = "configs") -> "Router":
        """Load a config directory (TOML layout, or the original YAML layout)."""
        return cls(_core.Router.from_dir(os.fspath(path)))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "Router":
        """Build from a dict shaped like the config directory
        (``{"providers": …, "groups": …, "pools": …, "global": …}``)."""
        return cls(_core.Router.from_dict(dict(config)))

    def reload(self, source: Union[str, "os.PathLike[str]", Mapping[str, Any]]) -> None:
        """Swap the configuration atomically. In-flight calls finish on the old one; instances
        that still exist keep their breakers, limits and latency statistics."""
        if isinstance(source, Mapping):
            self._core.reload(dict(source))
        else:
            self._core.reload(os.fspath(source))

    async def __aenter__(self) -> "Router":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop background work (health checks) and the gateways started with :meth:`serve`
        (their ports close at once; in-flight requests get their drain grace). Idempotent."""
        if not self._closed:
            self._closed = True
            for gw in self._gateways:
                gw.close()
            self._gateways.clear()
            self._dispatcher.close()
            self._core.close()

    async def serve(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        allow_unauthenticated: Optional[bool] = None,
        watch: Optional[bool] = None,
        signals: bool = False,
    ) -> Gateway:
        """Serve this router over HTTP as an OpenAI- and Anthropic-compatible gateway, inside
        this process, and return the running :class:`Gateway` (stopped by :meth:`close`).

        ``host`` and ``port`` default to ``[gateway]`` in ``global.toml``, then
        ``127.0.0.1:8080``; ``port=0`` picks a free port (read it back from
        ``gateway.port``). A non-loopback ``host`` is refused while no ``[[gateway.keys]]``
        are configured unless ``allow_unauthenticated=True``. ``watch`` (default ``[gateway]
        watch``) reloads the configuration when a file of its directory changes (routers
        loaded with :meth:`from_dir` only). ``signals=True`` makes the core handle SIGTERM and
        SIGINT (drain) and SIGHUP (reload) for the whole process: for a process that is the
        gateway (``echelon serve``), not one embedding it. Requests are served by the Rust
        core; the event loop is not involved.

        Raises:
            ConfigError: a non-loopback host without keys.
            ValueError: ``host`` is not an IP address or ``"localhost"``.
            OSError: the address could not be bound.
        """
        if self._closed:
            raise RuntimeError("Router.serve() on a closed router")
        gw = Gateway(self._core.serve(host, port, allow_unauthenticated, watch, signals))
        self._gateways.append(gw)
        return gw

    # -- calls --------------------------------------------------------------------------
    async def chat(
        self,
        messages: Messages,
        *,
        pool: Optional[str] = None,
        group: Optional[str] = None,
        model: Optional[str] = None,
        route: Optional[str] = None,
        metadata: Optional[Union[str, Mapping[str, Any]]] = None,
        fallback_groups: Optional[Union[str, Sequence[str]]] = None,
        timeout: Optional[float] = None,
        max_instance_attempts: Optional[int] = None,
        wrapper: Optional[str] = None,
        **params: Any,
    ) -> Response:
        """Send one chat request and return the :class:`Response`.

        Routing, by precedence: ``wrapper`` (a named wrapper from ``wrappers/<name>.toml``:
        its target with its default parameters, timeout, fallback groups and attempts; your
        own values win), then ``route`` (``"pool:<name>"``, ``"group:<ref>"``,
        ``"direct:<provider>:<model>"``, ``"wrapper:<name>"``), then ``pool``, ``group``,
        ``model``, then ``metadata`` (a route string or ``{"wrapper": …}`` /
        ``{"pool": …}`` / ``{"group": …}`` / ``{"provider": …, "model": …}``), then the
        configured default route.
        ``timeout`` is the deadline of the whole call in seconds (all attempts and queueing).
        Other keyword arguments are generation parameters (``temperature``, ``max_tokens``,
        ``top_p``, ``stop``, ``tools``, ``tool_choice``, ``response_format``, or
        provider-specific keys passed through).
        """
        if wrapper is not None:
            route = f"wrapper:{wrapper}"
        completer = _completer()
        fut, rid = self._core.submit_chat(
            completer,
            messages,
            route,
            pool,
            group,
            model,
            metadata,
            _groups_arg(fallback_groups),
            timeout,
            _attempts_arg(max_instance_attempts),
            params,
        )
        # Inline rather than `_deliver`: one coroutine less on the hottest path.
        try:
            return await fut
        except asyncio.CancelledError:
            completer.cancel(rid)
            raise

    def stream(
        self,
        messages: Messages,
        *,
        pool: Optional[str] = None,
        group: Optional[str] = None,
        model: Optional[str] = None,
        route: Optional[str] = None,
        metadata: Optional[Union[str, Mapping[str, Any]]] = None,
        fallback_groups: Optional[Union[str, Sequence[str]]] = None,
        timeout: Optional[float] = None,
        max_instance_attempts: Optional[int] = None,
        wrapper: Optional[str] = None,
        **params: Any,
    ) -> Stream:
        """Stream one chat request: ``async for chunk in router.stream(...)``.

        Retries and fallback happen until the first token; after it, a cut or stalled stream
        raises :class:`echelon.StreamInterrupted` with the partial text (never a silent
        success). Same routing arguments as :meth:`chat`.
        """
        if wrapper is not None:
            route = f"wrapper:{wrapper}"
        return Stream(
            self._core.stream(
                messages,
                route,
                pool,
                group,
                model,
                metadata,
                _groups_arg(fallback_groups),
                timeout,
                _attempts_arg(max_instance_attempts),
                params,
            )
        )

    async def batch(self, requests: Iterable[Mapping[str, Any]], *, concurrency: int = 64) -> List[Union[Response, BaseException]]:
        """Run many requests inside the engine with one crossing.

        Each request is a dict with ``messages`` and the keyword arguments of :meth:`chat`.
        Returns results in order: a :class:`Response` or the exception instance for that
        request (never raised, so one failure never loses the others).
        """
        # The engine reads each dict without changing it; other mappings are copied to dicts,
        # and anything else comes back as that request's TypeError.
        items = [r if type(r) is dict or not isinstance(r, Mapping) else dict(r) for r in requests]
        completer = _completer()
        return await _deliver(completer, *self._core.submit_batch(completer, items, concurrency))

    def chat_sync(self, messages: Messages, **kwargs: Any) -> Response:
        """Blocking :meth:`chat` for scripts. Refuses to run inside a running event loop
        (it would block the loop): use ``await router.chat(...)`` there."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.chat(messages, **kwargs))
        raise RuntimeError(
            "Router.chat_sync() was called inside a running event loop; it would block the loop. "
            "Use `await router.chat(...)` instead."
        )

    # -- views --------------------------------------------------------------------------
    def pool(self, name: str) -> "PollingPool":
        """The polling pool ``name`` (raises :class:`echelon.RoutingError` if unknown)."""
        if name not in self._core.pool_names():
            from .errors import RoutingError

            raise RoutingError(f"unknown pool '{name}'; known: {', '.join(self._core.pool_names())}")
        return PollingPool(self, name)

    def group(self, name: str) -> "TaskGroup":
        """The task group ``name`` (raises :class:`echelon.RoutingError` if unknown)."""
        group_name = name.split(".", 1)[0]
        if group_name not in self._core.group_names():
            from .errors import RoutingError

            raise RoutingError(f"unknown group '{group_name}'; known: {', '.join(self._core.group_names())}")
        return TaskGroup(self, name)

    def wrapper(self, name: str) -> "Wrapper":
        """The named wrapper ``name`` (``wrappers/<name>.toml``); raises
        :class:`echelon.RoutingError` with a did-you-mean hint if unknown."""
        config = _core.wrapper_config(self._core, name)
        return Wrapper(self, name, config)

    @property
    def wrappers(self) -> List[str]:
        """Names of the configured wrappers."""
        return list(_core.wrapper_names(self._core))

    # -- events -------------------------------------------------------------------------
    def on(self, event_type: str, callback: Callback) -> Subscription:
        """Call ``callback(event)`` for every event of ``event_type`` (``"*"`` for all; see
        :mod:`echelon.events` for the types and their fields). ``callback`` may be a plain
        function or a coroutine function. Returns a handle: ``handle.unsubscribe()``.

        Must be called while an event loop runs: one background task per router receives
        events from the engine in batches and calls the callbacks in order. A slow callback
        never slows requests; events that do not fit the buffer are counted
        (:meth:`events_dropped`) and announced by an ``events_dropped`` event.
        """
        return self._dispatcher.add(event_type, callback)

    def events(self, types: Optional[Collection[str]] = None, *, buffer: int = 1024) -> EventStream:
        """Subscribe to events as an async iterator (``async for ev in router.events():``),
        optionally only ``types``. ``buffer`` is how many events may wait unread before new
        ones are dropped (and counted). Close it with ``aclose()`` or ``async with``."""
        return EventStream(self._core, types, buffer)

    def events_dropped(self) -> int:
        """Events lost to full subscriber buffers, over all subscribers of this router."""
        return int(_core.events_status(self._core)["dropped"])

    @property
    def pools(self) -> List[str]:
        """Names of the configured pools."""
        return list(self._core.pool_names())

    @property
    def instances(self) -> List[str]:
        """Ids of every instance (``"<group>.<echelon>_<model>"``); ``route="instance:<id>"``
        sends a call to exactly that one."""
        return list(self._core.instance_ids())

    @property
    def groups(self) -> List[str]:
        """Names of the configured groups."""
        return list(self._core.group_names())

    def status(self) -> Dict[str, Any]:
        """Status of every pool and group: instance states, in-flight, queues, breakers,
        latency, limits left, and ``events`` (``subscribers``, ``dropped``). Never contains
        secrets."""
        st = self._core.status()
        st["events"] = _core.events_status(self._core)
        return st

    def stats(self) -> Dict[str, Any]:
        """Request counters per pool and per group."""
        st = self._core.status()
        return {
            "pools": {p["name"]: p["stats"] for p in st["pools"]},
            "instances": {
                i["instance_id"]: i["stats"] for g in st["groups"] for e in g["echelons"] for i in e["instances"]
            },
        }

    def metrics(self) -> str:
        """Prometheus text exposition of the router's counters and gauges (the same series a
        gateway's ``/metrics`` serves; see ``src/observe/metrics.rs`` for the list)."""
        return self._core.metrics()


class PollingPool:
    """A view of one polling pool of a :class:`Router`."""

    def __init__(self, router: Router, name: str) -> None:
        self._router = router
        self.name = name

    async def call(self, messages: Messages, **kwargs: Any) -> Response:
        """:meth:`Router.chat` routed to this pool."""
        return await self._router.chat(messages, pool=self.name, **kwargs)

    def stream(self, messages: Messages, **kwargs: Any) -> Stream:
        """:meth:`Router.stream` routed to this pool."""
        return self._router.stream(messages, pool=self.name, **kwargs)

    def status(self) -> Dict[str, Any]:
        """The original status keys (``name``, ``total_instances``, ``healthy_instances``,
        ``degraded_instances``, ``failed_instances``, ``stats``, …) plus per-instance detail."""
        return self._router._core.pool_status(self.name)

    def instances(self) -> List[Dict[str, Any]]:
        """Per-instance status dicts."""
        return list(self.status()["instances"])

    def __repr__(self) -> str:
        return f"PollingPool({self.name!r})"


class TaskGroup:
    """A view of one task group (or group reference such as ``"fast_group.echelon2"``)."""

    def __init__(self, router: Router, reference: str) -> None:
        self._router = router
        self.reference = reference
        self.name = reference.split(".", 1)[0]

    def _ref(self, echelon: Optional[str]) -> str:
        return f"{self.name}.{echelon}" if echelon else self.reference

    async def call(self, messages: Messages, echelon: Optional[str] = None, **kwargs: Any) -> Response:
        """:meth:`Router.chat` routed to this group (optionally starting at ``echelon``)."""
        return await self._router.chat(messages, group=self._ref(echelon), **kwargs)

    def stream(self, messages: Messages, echelon: Optional[str] = None, **kwargs: Any) -> Stream:
        """:meth:`Router.stream` routed to this group."""
        return self._router.stream(messages, group=self._ref(echelon), **kwargs)

    def status(self) -> Dict[str, Any]:
        """Echelons by priority with their instances' status."""
        for g in self._router._core.status()["groups"]:
            if g["name"] == self.name:
                return g
        from .errors import RoutingError

        raise RoutingError(f"unknown group '{self.name}'")

    def breaker_status(self) -> Dict[str, Dict[str, Any]]:
        """``{instance_id: {"state": "CLOSED"|"OPEN"|"HALF_OPEN", "failure_count",
        "failure_threshold", "last_failure_time", …}}``."""
        return {b["instance"]: b for b in self._router._core.breaker_status(self.name)}

    def reset_breakers(self, instance: Optional[str] = None) -> int:
        """Close the group's breakers (or one instance's). Returns how many were reset."""
        return int(self._router._core.reset_breakers(self.name, instance))

    def fallback_history(self, limit: int = 10) -> List[Dict[str, Any]]:
        """The group's recent calls: target, success, error, attempts, fell_back, timestamp."""
        return list(self._router._core.fallback_history(self.name, limit))

    def __repr__(self) -> str:
        return f"TaskGroup({self.reference!r})"


class Wrapper:
    """A named wrapper (``wrappers/<name>.toml``): a pool, group reference or model with call
    defaults. ``chat``/``stream`` take the same arguments as :meth:`Router.chat`; values you
    pass win over the wrapper's defaults."""

    def __init__(self, router: Router, name: str, config: Dict[str, Any]) -> None:
        self._router = router
        self.name = name
        self.config: Dict[str, Any] = config
        """The resolved definition: ``kind``, ``target``, ``parameters``, ``timeout``,
        ``fallback_groups``, ``max_instance_attempts``, ``description``, ``source``."""

    async def chat(self, messages: Messages, **kwargs: Any) -> Response:
        """:meth:`Router.chat` through this wrapper."""
        return await self._router.chat(messages, wrapper=self.name, **kwargs)

    def stream(self, messages: Messages, **kwargs: Any) -> Stream:
        """:meth:`Router.stream` through this wrapper."""
        return self._router.stream(messages, wrapper=self.name, **kwargs)

    def __repr__(self) -> str:
        return f"Wrapper({self.name!r} -> {self.config.get('kind')}:{self.config.get('target')})"
