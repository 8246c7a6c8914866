"""Test helpers: a scriptable mock LLM provider on a loopback port.

The server itself runs in Rust (on echelon's runtime thread), so it is fast enough for
benchmarks and keeps answering while the Python thread is busy. It speaks three wire formats on
one port:

* OpenAI: ``POST {openai_base_url}/chat/completions`` (``openai_base_url`` = ``base_url + "/v1"``)
* Anthropic: ``POST {anthropic_base_url}/v1/messages`` (``anthropic_base_url`` = ``base_url``)
* Gemini: ``POST {gemini_base_url}/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (``gemini_base_url`` = ``base_url + "/v1beta"``)
* Health probes: ``GET /v1/models``, ``GET /v1beta/models``, ``HEAD /``, ``GET /health``
  (counted globally), ``GET /v1/models/{m}`` and ``GET /v1beta/models/{m}`` (counted for ``m``).
* Control plane for a mock in another process: ``POST /_mock/script`` (``{model: script}``),
  ``GET /_mock/counters``, ``GET /_mock/log`` (when each chat request arrived),
  ``POST /_mock/reset`` (``?scripts=1`` also drops the scripts).

Answers are deterministic: ``"Hello from <model>. "`` then filler words (some non-ASCII) up to
``content_chars`` characters, streamed in ``chunks`` pieces. Usage: prompt tokens = characters of
the message contents // 4 (at least 1), completion tokens = words of the answer.

Scripts
-------
Scripts are keyed by model name; ``"*"`` is the default for unscripted models and ``"_health"``
the server-wide health script (for probes that name no model). A script is a fault name
(``"hang"``) or a dict::

    {
        # behaviour (all optional)
        "latency_ms": 0,            # before the response headers
        "ttft_ms": 0,               # streaming: before the first chunk
        "chunk_delay_ms": 0,        # streaming: between chunks
        "tokens_per_second": None,  # streaming: pace by words instead of chunk_delay_ms
        "content_chars": 200,
        "chunks": 8,
        "tool_call": False,         # answer with a call of the request's first tool
        "thought_signature": False, # Gemini: sign function calls, refuse unsigned ones sent back
        # faults
        "fault": "ok",              # used once the steps are used up (unless "then" is given)
        "steps": [                  # consumed in order, one request each, `times` times
            {"fault": "server_error", "status": 503, "times": 3},
            {"fault": "rate_limit", "retry_after": "1"},
        ],
        "then": "ok",
        "max_prompt_tokens": None,  # longer prompts get the context-window error
        "health": None,             # a script for probes naming this model
    }

Faults: ``ok``; ``status`` (``status``: the code; ``body``: override, ``content_type``: its
type, ``"text/event-stream"`` to play it as a stream); ``rate_limit`` (429); ``server_error``
(``status``, default 500); ``down`` (503); ``overloaded`` (Anthropic 529, others 503); ``auth``
(401, Gemini 400 ``API_KEY_INVALID``); ``quota`` (OpenAI 429 ``insufficient_quota``, Anthropic
402 ``billing_error``, Gemini 429 daily quota); ``model_not_found`` (404); ``context_window``;
``content_filter``; ``refusal`` (``after``: text chunks first; OpenAI ``message.refusal``,
Anthropic ``stop_reason: refusal``, Gemini ``SAFETY``); ``hang`` (never answer); ``reset`` (TCP
reset); ``cut_after`` / ``stall_after`` / ``malformed`` (``after``: good chunks first). Error
faults take ``retry_after`` (header value), ``retry_after_ms`` and ``retry_delay`` (Gemini
``RetryInfo``). A step may also override any behaviour key. Unknown keys raise ``ValueError``
naming the key.

Every chat request is first checked against the request shape its provider documents and
refused with that provider's 400 when the real API would refuse it (unknown fields, tool results
that answer nothing, Gemini function responses split over contents, …); see ``src/mock/mod.rs``.

Example::

    with MockProvider({"gpt-4o": {"steps": [{"fault": "server_error", "status": 503, "times": 3}]}}) as mock:
        client = make_client(base_url=mock.openai_base_url)
        ...
        assert mock.counters("gpt-4o")["statuses"]["503"] == 3
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

from . import _core

__all__ = ["MockProvider", "serve"]

Script = Union[str, Mapping[str, Any]]

_ZERO_COUNTERS: Dict[str, Any] = {
    "requests": 0,
    "ok": 0,
    "faults": {},
    "statuses": {},
    "streams_started": 0,
    "streams_completed": 0,
    "in_flight": 0,
    "max_in_flight": 0,
    "client_disconnects": 0,
    "probes": 0,
    "last_request": {"body": None, "headers": None},
}


class MockProvider:
    """A mock LLM provider on ``host:port`` (port 0 = a free port), scripted per model.

    Use as ``with MockProvider(...) as mock:`` or ``async with MockProvider(...) as mock:``;
    or call :meth:`start` / :meth:`stop` yourself. ``require_key`` makes the mock reject
    requests that carry another key, with the provider's 401 body.
    """

    def __init__(
        self,
        scripts: Optional[Mapping[str, Script]] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_key: Optional[str] = None,
    ) -> None:
        self._scripts = dict(scripts) if scripts else None
        self._host = host
        self._port = port
        self._require_key = require_key
        self._server: Optional[Any] = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "MockProvider":
        """Start serving (idempotent). Raises ``ValueError`` for bad scripts, ``OSError`` if the
        port is taken."""
        if self._server is None:
            self._server = _core.MockServer.start(self._host, self._port, self._scripts, self._require_key)
        return self

    def stop(self) -> None:
        """Stop serving and free the port. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> "MockProvider":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    async def __aenter__(self) -> "MockProvider":
        return self.start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        # Shutdown waits at most the short grace period for in-flight requests.
        self.stop()

    def _running(self) -> Any:
        if self._server is None:
            raise RuntimeError("MockProvider is not running; use `with MockProvider() as mock:` or call start()")
        return self._server

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._running().port)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return str(self._running().base_url)

    @property
    def openai_base_url(self) -> str:
        """Base URL for OpenAI(-compatible) clients: ``base_url + "/v1"``."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for Anthropic clients (the root; they append ``/v1/messages``)."""
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """Base URL for Gemini clients: ``base_url + "/v1beta"``."""
        return self.base_url + "/v1beta"

    def url_env(self) -> Dict[str, str]:
        """Environment variables the shipped configs read: ``ECHELON_MOCK_URL`` (OpenAI base)."""
        return {"ECHELON_MOCK_URL": self.openai_base_url}

    # -- scripts and counters ----------------------------------------------------------------

    def script(self, model: str, script: Optional[Script] = None, **behaviour: Any) -> None:
        """Install or replace the script of ``model`` (``"*"`` = default).

        Either a dict / fault name (``mock.script("m", {"fault": "hang"})``) or keyword
        arguments (``mock.script("m", fault="server_error", status=503)``). Takes effect for
        the next request and restarts the script's steps.
        """
        if script is not None and behaviour:
            raise TypeError("script(): give a script dict or keyword arguments, not both")
        self._running().script(model, behaviour if script is None else script)

    def scripts(self, scripts: Mapping[str, Script]) -> None:
        """Install several scripts at once (all or nothing)."""
        self._running().scripts(dict(scripts))

    def request_log(self) -> List[Tuple[float, str]]:
        """When each chat request arrived (Unix seconds, as ``time.time()``) and for which
        model, oldest first: the last 100,000 requests since the start or the last
        :meth:`reset`. Multi-process tests measure rates and reaction times against it."""
        return [(float(t), str(m)) for t, m in self._running().request_log()]

    def counters(self, model: Optional[str] = None) -> Dict[str, Any]:
        """What the mock saw: the totals (with per-model counters under ``"models"``), or one
        model's counters (zeros if it was never called).

        Keys: ``requests``, ``ok``, ``faults`` ({name: n}), ``statuses`` ({"503": n}),
        ``streams_started``, ``streams_completed``, ``in_flight``, ``max_in_flight``,
        ``client_disconnects``, ``probes``; per model also ``last_request``
        (``{"body": ..., "headers": ...}``, headers without keys); in the totals only,
        ``http2_requests`` (requests that arrived over HTTP/2: the mock also speaks h2c) and
        the connection counters (``connections``, ``open_connections``,
        ``http2_connections``, ``goaways``, ``rst_streams``, ``pings``,
        ``connection_resets``, ``max_streams_per_connection``; documented with the mock's
        routes in ``src/mock/mod.rs``).
        """
        c: Dict[str, Any] = self._running().counters()
        if model is None:
            return c
        found = c.get("models", {}).get(model)
        return found if found is not None else json.loads(json.dumps(_ZERO_COUNTERS))

    def reset(self, scripts: bool = False) -> None:
        """Zero the counters and restart every script's steps; ``scripts=True`` also removes
        every script."""
        self._running().reset(scripts)

    def __repr__(self) -> str:
        where = self._server.base_url if self._server is not None else "stopped"
        return f"MockProvider({where})"


def serve(host: str = "127.0.0.1", port: int = 8900, script_path: Optional[str] = None) -> None:
    """Run a mock provider until SIGINT or SIGTERM (the ``echelon mock-server`` command).

    ``script_path`` names a JSON file of ``{model: script}``. Prints one line with the URLs.
    """
    scripts = None
    if script_path:
        with open(script_path, encoding="utf-8") as f:
            scripts = json.load(f)
        if not isinstance(scripts, dict):
            raise ValueError(f"{script_path}: expected a JSON object {{model: script}}")
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    mock = MockProvider(scripts, host=host, port=port).start()
    try:
        print(
            f"echelon mock provider on {mock.base_url} (OpenAI base {mock.openai_base_url}, "
            f"Gemini base {mock.gemini_base_url}); Ctrl-C to stop",
            flush=True,
        )
        # Short waits keep the main thread responsive to signals on every platform.
        while not stop.wait(0.2):
            pass
    finally:
        mock.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    print("echelon mock provider stopped", file=sys.stderr, flush=True)
