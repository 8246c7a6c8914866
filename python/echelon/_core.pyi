"""Type stubs for the Rust extension module ``echelon._core``.

Users normally use the wrappers in :mod:`echelon` (``Router``, ``PollingPool``, ``TaskGroup``);
the result classes below are what those return.
"""

import asyncio
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__version__: str

def error_kinds() -> List[Tuple[str, str]]:
    """``(kind, class name)`` of every error kind the engine can raise; each class is in
    :mod:`echelon.errors`."""
    ...

def runtime_workers() -> int:
    """Worker threads of the engine's tokio runtime (``ECHELON_WORKER_THREADS``, default 2-4)."""

class Attempt:
    """One entry of a call's attempt trace."""

    @property
    def target(self) -> str:
        """Group reference or pool name tried."""
    @property
    def instance(self) -> str:
        """Instance id (empty when no instance could be selected)."""
    @property
    def model(self) -> str:
        """Logical model name."""
    @property
    def role(self) -> str:
        """``"primary"``, ``"retry"``, ``"fallback"`` or ``"hedge"``."""
    @property
    def error(self) -> Optional[str]:
        """Error kind (``"rate_limited"``, ``"timeout"``, …), ``None`` for success."""
    @property
    def message(self) -> Optional[str]:
        """Error detail (never contains a secret)."""
    @property
    def ok(self) -> bool:
        """True for the successful attempt."""
    @property
    def latency(self) -> float:
        """Seconds this attempt took."""
    @property
    def started_after(self) -> float:
        """Seconds from the start of the call to the start of this attempt."""
    def to_dict(self) -> Dict[str, Any]:
        """The attempt as a plain dict."""

class Usage:
    """Token usage reported by the provider.

    ``prompt_tokens`` counts every input token (Anthropic's cache reads and writes included) and
    ``completion_tokens`` every output token (reasoning included); the three detail counts are
    parts of those totals, 0 when the provider did not report them.
    """

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def total_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int:
        """Prompt tokens read from the provider's prompt cache."""
    @property
    def cache_creation_tokens(self) -> int:
        """Prompt tokens written to the prompt cache (Anthropic, OpenAI)."""
    @property
    def reasoning_tokens(self) -> int:
        """Completion tokens spent on reasoning / thinking."""
    def to_dict(self) -> Dict[str, int]: ...

class Response:
    """A completed chat call. ``str(response)`` is the content."""

    @property
    def content(self) -> str:
        """The generated text."""
    @property
    def tool_calls(self) -> List[Dict[str, Any]]:
        """OpenAI-shape tool calls: ``[{"id", "type": "function", "function": {"name", "arguments"}}]``.

        A call may also carry ``"extra_content"``: what its provider needs back with it on the
        next turn (``{"google": {"thought_signature": ...}}`` for Gemini,
        ``{"anthropic": {"thinking_blocks": [...]}}`` for Anthropic thinking). Put the list in the
        assistant message of the next request unchanged; OpenAI never receives it.
        """
    @property
    def model(self) -> str:
        """Wire model name reported by the provider."""
    @property
    def finish_reason(self) -> Optional[str]: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def latency(self) -> float:
        """Seconds, of the successful attempt."""
    @property
    def ttft(self) -> Optional[float]:
        """Seconds to first token (streaming) or to response headers."""
    @property
    def request_id(self) -> Optional[str]:
        """The provider's request id."""
    @property
    def served_by(self) -> str:
        """Id of the instance that served the call (``"<group>.<echelon>_<model>"``)."""
    @property
    def attempts(self) -> List[Attempt]:
        """The attempt trace, the successful attempt last."""
    def to_dict(self) -> Dict[str, Any]: ...

class StreamChunk:
    """One item of a stream: a text delta, or the final chunk carrying the whole response."""

    @property
    def text(self) -> str:
        """The delta text (empty on the final chunk)."""
    @property
    def is_final(self) -> bool: ...
    @property
    def tool_call(self) -> Optional[Dict[str, Any]]:
        """A tool-call fragment (OpenAI delta shape), if any."""
    @property
    def response(self) -> Optional[Response]:
        """The complete response, on the final chunk."""
    @property
    def usage(self) -> Optional[Usage]:
        """Usage, on the final chunk."""

class Stream:
    """Low-level stream; use :class:`echelon.Stream`."""

    def next_via(self, completer: "Completer") -> "tuple[asyncio.Future[StreamChunk], int]": ...
    def aclose_via(self, completer: "Completer") -> "tuple[asyncio.Future[None], int]": ...
    def close(self) -> None: ...

class Router:
    """Low-level router; use :class:`echelon.Router`."""

    @staticmethod
    def from_dir(path: str) -> "Router": ...
    @staticmethod
    def from_dict(obj: Dict[str, Any]) -> "Router": ...
    def reload(self, source: Union[str, Dict[str, Any]]) -> None: ...
    def submit_chat(
        self,
        completer: Completer,
        messages: Any,
        route: Optional[str] = None,
        pool: Optional[str] = None,
        group: Optional[str] = None,
        model: Optional[str] = None,
        metadata: Any = None,
        fallback_groups: Optional[List[str]] = None,
        timeout: Optional[float] = None,
        max_instance_attempts: Optional[int] = None,
        params: Optional[Dict[str, Any]] = None,
    ) -> "tuple[asyncio.Future[Response], int]": ...
    def stream(
        self,
        messages: Any,
        route: Optional[str] = None,
        pool: Optional[str] = None,
        group: Optional[str] = None,
        model: Optional[str] = None,
        metadata: Any = None,
        fallback_groups: Optional[List[str]] = None,
        timeout: Optional[float] = None,
        max_instance_attempts: Optional[int] = None,
        params: Optional[Dict[str, Any]] = None,
    ) -> Stream: ...
    def submit_batch(
        self, completer: Completer, requests: Sequence[Dict[str, Any]], concurrency: int = 64
    ) -> "tuple[asyncio.Future[List[Union[Response, BaseException]]], int]": ...
    def status(self) -> Dict[str, Any]: ...
    def pool_status(self, name: str) -> Dict[str, Any]: ...
    def breaker_status(self, group: str) -> List[Dict[str, Any]]: ...
    def reset_breakers(self, group: str, instance: Optional[str] = None) -> int: ...
    def fallback_history(self, group: str, limit: int = 10) -> List[Dict[str, Any]]: ...
    def pool_names(self) -> List[str]: ...
    def group_names(self) -> List[str]: ...
    def instance_ids(self) -> List[str]: ...
    def close(self) -> None: ...
    def serve(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        allow_unauthenticated: Optional[bool] = None,
        watch: Optional[bool] = None,
        signals: bool = False,
    ) -> "Gateway":
        """Bind and start a gateway serving this router (use :meth:`echelon.Router.serve`).

        Raises:
            ConfigError: a non-loopback host while no ``[[gateway.keys]]`` exist and
                ``allow_unauthenticated`` is not set.
            ValueError: ``host`` is not an IP address or ``"localhost"``.
            OSError: the address could not be bound.
        """
    def metrics(self) -> str:
        """Prometheus text exposition of the router's counters and gauges."""

class Gateway:
    """A running gateway (use :class:`echelon.Gateway`)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def draining(self) -> bool: ...
    def close(self, grace: Optional[float] = None) -> None:
        """Begin draining and return once the port is closed."""
    def wait_via(self, completer: Completer) -> "tuple[asyncio.Future[None], int]": ...
    def reload(self) -> bool:
        """Reload from the config directory (False without one). Raises ConfigError."""

class MockServer:
    """The mock provider server (use :class:`echelon.testing.MockProvider`)."""

    @staticmethod
    def start(
        host: str = "127.0.0.1",
        port: int = 0,
        scripts: Optional[Dict[str, Any]] = None,
        require_key: Optional[str] = None,
    ) -> "MockServer":
        """Start on ``host:port`` (0 = an ephemeral port) with optional per-model scripts."""
    @property
    def port(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def base_url(self) -> str:
        """``http://host:port`` (OpenAI clients use ``base_url + "/v1"``)."""
    def script(self, model: str, script: Any) -> None:
        """Install one model's behaviour script (JSON-shaped; see ``echelon.testing``)."""
    def scripts(self, scripts: Dict[str, Any]) -> None:
        """Install several scripts at once (all or nothing)."""
    def counters(self) -> Dict[str, Any]:
        """Totals and per-model counters (requests, faults, statuses, disconnects, …)."""
    def request_log(self) -> List[List[Any]]:
        """``[[unix_seconds, model], ...]``: when each chat request arrived, oldest first."""
    def reset(self, scripts: bool = False) -> None:
        """Zero the counters (and drop the scripts when ``scripts`` is true)."""
    def stop(self) -> None:
        """Stop the server and free the port."""

def load_config_dir(path: str) -> Dict[str, Any]:
    """Load a config directory and return the resolved configuration (secrets masked)."""

def config_from_dict(obj: Dict[str, Any]) -> Dict[str, Any]:
    """Validate a dict config and return the resolved configuration (secrets masked)."""

def check_config(path: str) -> str:
    """The ``echelon check`` rendering of a config directory."""

def convert_yaml_layout(src: str, dst: str) -> Tuple[List[str], List[str]]:
    """Write the TOML layout of the YAML config at ``src`` into ``dst``; returns the files
    written and what must still be defined (models no provider defines, parameters the TOML
    layout would reject)."""

class Completer:
    """Per-event-loop completion queue (internal; used by :class:`echelon.Router`)."""

    def __init__(self, loop_ref: Any) -> None: ...
    def fileno(self) -> int: ...
    def pending_count(self) -> int: ...
    def drain(self) -> None: ...
    def cancel(self, id: int) -> None: ...
# -- events and wrappers (src/py/events.rs) ------------------------------------------------

class EventStream:
    """Low-level event subscription; use :meth:`echelon.Router.events` / :meth:`echelon.Router.on`."""

    def next_batch_via(self, completer: "Completer", max: int = 256) -> "tuple[asyncio.Future[List[Dict[str, Any]]], int]":
        """Wait for at least one event, then up to ``max`` event dicts; empty once closed."""
    @property
    def dropped(self) -> int:
        """Events this subscription lost because its buffer was full."""
    def close(self) -> None:
        """Unsubscribe (idempotent)."""

def events_subscribe(router: Router, capacity: int = 1024) -> EventStream:
    """Subscribe to ``router``'s events with a buffer of ``capacity`` events."""

def events_status(router: Router) -> Dict[str, int]:
    """``{"subscribers": n, "dropped": n}`` of ``router``'s event bus."""

def wrapper_config(router: Router, name: str) -> Dict[str, Any]:
    """The resolved definition of wrapper ``name``; raises ``RoutingError`` if unknown."""

def wrapper_names(router: Router) -> List[str]:
    """Names of ``router``'s wrappers."""

def refresh_log_levels() -> None:
    """Re-read the Python logger levels the engine filters its records by (after changing
    them at runtime)."""

def flush_logs() -> None:
    """Hand the engine's queued log records to ``logging`` now (registered with ``atexit``)."""
