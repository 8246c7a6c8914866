"""Client adapters: one class per (library, entry point), all sending the same request.

Every adapter exposes the same small async surface so the figures in ``_worker.py`` never
know which library they drive:

* ``await setup(max_conns)`` builds the client (connection pool sized for the figure),
* ``await call()`` sends one non-streaming chat request and returns the reply text,
* ``await ttft()`` sends one streaming request and returns seconds to the first content
  delta (then drains the stream),
* ``await batch(n, concurrency)`` runs ``n`` requests and returns how many succeeded
  (peers: ``asyncio.gather`` under a semaphore; echelon's batch adapter: ``Router.batch``),
* ``await close()``.

``IMPORTS`` names what P5 imports for each client. Adapters import their library lazily so
a missing peer only disables that adapter (see ``available()``).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional

# run.py gives P3 workers their own model name so the mock can hold (and count) each one's
# requests separately.
MODEL = os.environ.get("BENCH_MODEL", "bench")
POOL = "bench"  # echelon's pool name (fixed; the wire model is MODEL)
# ~130 bytes on the wire as JSON (run.py reports the exact size it measured).
PROMPT = "Summarise the benchmark request in one short sentence, please."
MESSAGES = [{"role": "user", "content": PROMPT}]
MAX_TOKENS = 256
BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}, separators=(",", ":")).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "stream": True}, separators=(",", ":")
).encode()
API_KEY = "sk-bench-not-a-secret"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}


class Unavailable(Exception):
    """This adapter cannot run here (library missing, API not landed yet)."""


class Client:
    name = "base"
    #: what the table calls it
    label = "base"
    #: figures this adapter does not take part in
    skip: frozenset = frozenset()

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")  # http://127.0.0.1:PORT/v1
        self.url = self.base_url + "/chat/completions"

    async def setup(self, max_conns: int) -> None:
        raise NotImplementedError

    async def call(self) -> str:
        raise NotImplementedError

    async def ttft(self) -> float:
        raise NotImplementedError

    async def batch(self, n: int, concurrency: int) -> int:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> bool:
            async with sem:
                await self.call()
                return True

        res = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        return sum(1 for r in res if r is True)

    async def close(self) -> None:
        pass


def _sse_content(line: bytes) -> Optional[str]:
    """The content delta of one SSE ``data:`` line of an OpenAI stream, or None."""
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if not data or data == b"[DONE]":
        return None
    obj = json.loads(data)
    choices = obj.get("choices") or []
    if not choices:
        return None
    return (choices[0].get("delta") or {}).get("content") or None


# ---------------------------------------------------------------------------------------------
class AiohttpClient(Client):
    """The floor: one aiohttp session, body parsed with json.loads."""

    name = label = "aiohttp"

    async def setup(self, max_conns: int) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_conns, limit_per_host=max_conns),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def call(self) -> str:
        async with self._session.post(self.url, data=BODY, headers=HEADERS) as r:
            raw = await r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
        return json.loads(raw)["choices"][0]["message"]["content"]

    async def ttft(self) -> float:
        t0 = time.perf_counter()
        first = None
        async with self._session.post(self.url, data=STREAM_BODY, headers=HEADERS) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            async for line in r.content:
                if first is None and _sse_content(line):
                    first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("stream had no content")
        return first

    async def close(self) -> None:
        await self._session.close()


class HttpxClient(Client):
    name = label = "httpx"

    async def setup(self, max_conns: int) -> None:
        import httpx

        self._c = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_conns, max_keepalive_connections=max_conns),
            timeout=httpx.Timeout(120.0),
        )

    async def call(self) -> str:
        r = await self._c.post(self.url, content=BODY, headers=HEADERS)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        return r.json()["choices"][0]["message"]["content"]

    async def ttft(self) -> float:
        t0 = time.perf_counter()
        first = None
        async with self._c.stream("POST", self.url, content=STREAM_BODY, headers=HEADERS) as r:
            async for line in r.aiter_lines():
                if first is None and _sse_content(line.encode()):
                    first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("stream had no content")
        return first

    async def close(self) -> None:
        await self._c.aclose()


class OpenAIClient(Client):
    """The official SDK, max_retries=0, its own httpx client sized for the figure."""

    name = "openai"
    label = "openai SDK"

    async def setup(self, max_conns: int) -> None:
        import httpx
        import openai

        self._c = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=API_KEY,
            max_retries=0,
            timeout=120.0,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_connections=max_conns, max_keepalive_connections=max_conns)
            ),
        )

    async def call(self) -> str:
        r = await self._c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
        return r.choices[0].message.content or ""

    async def ttft(self) -> float:
        t0 = time.perf_counter()
        first = None
        s = await self._c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True)
        async for ev in s:
            if first is None and ev.choices and ev.choices[0].delta.content:
                first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("stream had no content")
        return first

    async def close(self) -> None:
        await self._c.close()


class LiteLLMClient(Client):
    """LiteLLM Router: two deployments of one model name, simple-shuffle, no retries."""

    name = "litellm"
    label = "LiteLLM Router"

    async def setup(self, max_conns: int) -> None:
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        os.environ.setdefault("LITELLM_TELEMETRY", "False")
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        deployment = {
            "model_name": MODEL,
            "litellm_params": {"model": f"openai/{MODEL}", "api_base": self.base_url, "api_key": API_KEY},
        }
        self._r = litellm.Router(
            model_list=[
                {**deployment, "model_info": {"id": "mock-a"}},
                {**deployment, "model_info": {"id": "mock-b"}},
            ],
            routing_strategy="simple-shuffle",
            num_retries=0,
            allowed_fails=1_000_000,
            timeout=120,
        )

    async def call(self) -> str:
        r = await self._r.acompletion(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
        return r.choices[0].message.content or ""

    async def ttft(self) -> float:
        t0 = time.perf_counter()
        first = None
        s = await self._r.acompletion(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True)
        async for ev in s:
            if first is None and ev.choices and ev.choices[0].delta.content:
                first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("stream had no content")
        return first


TENSORZERO_TOML = """\
[gateway]
disable_pseudonymous_usage_analytics = true
observability.enabled = false

[models.{model}]
routing = ["mock"]

[models.{model}.providers.mock]
type = "openai"
model_name = "{model}"
api_base = "{base}/"
api_key_location = "none"
"""


class TensorZeroClient(Client):
    """TensorZero's Rust gateway embedded in the process (no ClickHouse, analytics off)."""

    name = "tensorzero"
    label = "TensorZero embedded"

    async def setup(self, max_conns: int) -> None:
        # Analytics off twice over (env and config), and its endpoint pointed at a closed
        # loopback port, so the embedded gateway never leaves the machine.
        os.environ["TENSORZERO_DISABLE_PSEUDONYMOUS_USAGE_ANALYTICS"] = "true"
        os.environ["TENSORZERO_HOWDY_URL"] = "http://127.0.0.1:9/"
        from tensorzero import AsyncTensorZeroGateway

        fd, path = tempfile.mkstemp(prefix="tz-bench-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(TENSORZERO_TOML.format(model=MODEL, base=self.base_url))
        self._cfg = path
        self._gw = await AsyncTensorZeroGateway.build_embedded(config_file=path)

    def _input(self) -> Dict[str, Any]:
        return {"messages": MESSAGES}

    async def call(self) -> str:
        r = await self._gw.inference(model_name=MODEL, input=self._input(), params={"chat_completion": {"max_tokens": MAX_TOKENS}})
        return "".join(getattr(b, "text", "") or "" for b in r.content)

    async def ttft(self) -> float:
        t0 = time.perf_counter()
        first = None
        s = await self._gw.inference(
            model_name=MODEL, input=self._input(), params={"chat_completion": {"max_tokens": MAX_TOKENS}}, stream=True
        )
        async for chunk in s:
            if first is None and any(getattr(b, "text", None) for b in getattr(chunk, "content", []) or []):
                first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("stream had no content")
        return first

    async def close(self) -> None:
        close = getattr(self._gw, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                await res
        try:
            os.unlink(self._cfg)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# echelon


def echelon_config(base_url: str) -> Dict[str, Any]:
    """One pool over one group with two instances of the mock model (like LiteLLM's two
    deployments): no retries, no health checks, no limits, so the figures measure the engine's
    overhead and nothing it is told to do on purpose."""
    return {
        "providers": {
            "mock": {
                "common": {"type": "openai_compatible", "base_url": base_url, "api_key": API_KEY, "max_retries": 0},
                "bench-a": {"model": MODEL},
                "bench-b": {"model": MODEL},
            }
        },
        "groups": {"bench": {"echelon1": {"models": ["bench-a", "bench-b"], "max_retries": 0}}},
        "pools": {"bench": {"task_groups": ["bench"], "health_check": {"enabled": False}}},
        "global": {"default_route": "pool:bench"},
    }


class _EchelonBase(Client):
    #: the provider's ``http_version`` (None: the default, "auto": HTTP/1.1 to the http:// mock)
    http_version: Optional[str] = None
    #: ``ECHELON_HTTP2_CLIENT`` for the router (None: the default, the hyper transport)
    http2_client: Optional[str] = None

    async def setup(self, max_conns: int) -> None:
        try:
            from echelon import Router
        except ImportError as e:  # pragma: no cover - depends on the venv
            raise Unavailable(f"echelon not importable: {e}") from e
        if self.http2_client is not None:
            os.environ["ECHELON_HTTP2_CLIENT"] = self.http2_client  # read when a router is built
        cfg = echelon_config(self.base_url)
        if self.http_version is not None:
            cfg["providers"]["mock"]["common"]["http_version"] = self.http_version
        self._router = Router.from_dict(cfg)

    async def ttft(self) -> float:
        t0 = time.perf_counter()
        first = None
        async for chunk in self._router.stream(MESSAGES, pool=POOL, max_tokens=MAX_TOKENS):
            if first is None and chunk.text:
                first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("stream had no content")
        return first

    async def close(self) -> None:
        self._router.close()


class EchelonChat(_EchelonBase):
    name = "echelon_chat"
    label = "echelon Router.chat"

    async def call(self) -> str:
        r = await self._router.chat(MESSAGES, pool=POOL, max_tokens=MAX_TOKENS)
        return r.content


class EchelonChatH2(EchelonChat):
    """``Router.chat`` with the provider's ``http_version = "2"``: requests multiplexed on
    HTTP/2 connections (h2c to the mock, whose stream limit is never reached here, so one
    connection) by the transport written on hyper, instead of a connection per request."""

    name = "echelon_chat_h2"
    label = 'echelon Router.chat, http_version="2"'
    skip = frozenset({"p1", "p4", "p6", "ttft"})
    http_version = "2"


class EchelonChatH2Reqwest(EchelonChatH2):
    """The same through the previous HTTP/2 path (reqwest's, ``ECHELON_HTTP2_CLIENT=reqwest``),
    to compare the two in one run."""

    name = "echelon_chat_h2_reqwest"
    label = 'echelon Router.chat, http_version="2", previous path (reqwest)'
    http2_client = "reqwest"


class EchelonPool(_EchelonBase):
    name = "echelon_pool"
    label = "echelon PollingPool.call"
    skip = frozenset({"ttft"})

    async def setup(self, max_conns: int) -> None:
        await super().setup(max_conns)
        self._pool = self._router.pool(POOL)

    async def call(self) -> str:
        r = await self._pool.call(MESSAGES, max_tokens=MAX_TOKENS)
        return r.content


class EchelonCompat(_EchelonBase):
    """The drop-in layer for the original system: ``PollingPool.call_llm(prompt)``, wired as
    docs/migration.md says (TaskGroupManager + PollingPoolManager), over our Router."""

    name = "echelon_compat"
    label = "echelon compat call_llm"
    skip = frozenset({"ttft"})

    async def setup(self, max_conns: int) -> None:
        await super().setup(max_conns)
        try:
            from echelon.compat.polling_pool import PollingPoolManager
            from echelon.compat.task_group_manager import TaskGroupManager
        except ImportError as e:
            raise Unavailable(f"echelon.compat.polling_pool not landed: {e}") from e
        # The original pools cap each instance at 10 in flight (LLMInstance.max_concurrency);
        # the echelon's concurrency_limit lifts that so the figure measures overhead, not a cap.
        groups = {"bench": {"echelon1": {"models": ["bench-a", "bench-b"], "priority": 1, "concurrency_limit": 100_000}}}
        pool_cfg = {"task_groups": ["bench"], "rotation_strategy": "round_robin", "health_check_interval": 0}
        self._tgm = TaskGroupManager({"task_groups": groups, "polling_pools": {POOL: pool_cfg}})
        self._tgm.set_router(self._router)
        self._mgr = PollingPoolManager(self._tgm)
        self._pool = await self._mgr.create_pool(POOL, pool_cfg)

    async def call(self) -> str:
        return await self._pool.call_llm(PROMPT, max_tokens=MAX_TOKENS)

    async def close(self) -> None:
        await self._mgr.shutdown_all()
        self._router.close()


class EchelonBatch(_EchelonBase):
    """``Router.batch``: many requests in one crossing into the engine."""

    name = "echelon_batch"
    label = "echelon Router.batch"
    skip = frozenset({"p1", "p4", "ttft"})

    async def call(self) -> str:  # used only for warm-up
        r = await self._router.chat(MESSAGES, pool=POOL, max_tokens=MAX_TOKENS)
        return r.content

    async def batch(self, n: int, concurrency: int) -> int:
        req = {"messages": MESSAGES, "pool": POOL, "max_tokens": MAX_TOKENS}
        res = await self._router.batch([req] * n, concurrency=concurrency)
        return sum(1 for r in res if not isinstance(r, BaseException))



def _one_worker() -> None:
    """Ask for one runtime worker thread; refuse if echelon was already imported with more."""
    os.environ["ECHELON_WORKER_THREADS"] = "1"  # read when the extension loads
    try:
        from echelon import _core
    except ImportError as e:  # pragma: no cover - depends on the venv
        raise Unavailable(f"echelon not importable: {e}") from e
    if _core.runtime_workers() != 1:
        raise Unavailable(f"echelon was imported before ECHELON_WORKER_THREADS=1 could apply ({_core.runtime_workers()} workers)")


class EchelonChatOneWorker(EchelonChat):
    """``Router.chat`` with ``ECHELON_WORKER_THREADS=1``: the runtime sized for the one CPU the
    harness gives each client (P4 only: CPU per request at low load)."""

    name = "echelon_chat_1w"
    label = "echelon Router.chat, 1 worker"
    skip = frozenset({"p1", "p2", "p3", "p5", "p6", "ttft"})

    async def setup(self, max_conns: int) -> None:
        _one_worker()
        await super().setup(max_conns)


class EchelonBatchOneCore(EchelonBatch):
    """``Router.batch`` configured for a process confined to one CPU, as the harness confines
    every client: ``ECHELON_WORKER_THREADS=1`` (the default runs two workers, which suits
    ``Router.chat`` better there) and the provider's ``http_version = "2"`` (one multiplexed
    connection instead of 256)."""

    name = "echelon_batch_1core"
    label = 'echelon Router.batch, 1 worker, http_version="2"'
    skip = frozenset({"p1", "p2", "p4", "ttft", "p3", "p5"})
    http_version = "2"

    async def setup(self, max_conns: int) -> None:
        _one_worker()
        await super().setup(max_conns)


class EchelonBatchOneCoreReqwest(EchelonBatchOneCore):
    """The same through the previous HTTP/2 path (reqwest's)."""

    name = "echelon_batch_1core_reqwest"
    label = 'echelon Router.batch, 1 worker, http_version="2", previous path (reqwest)'
    http2_client = "reqwest"


class EchelonBatchOneCoreH1(EchelonBatchOneCore):
    """The same over HTTP/1.1 (a connection per in-flight request)."""

    name = "echelon_batch_1core_h1"
    label = 'echelon Router.batch, 1 worker, http_version="1.1"'
    http_version = "1.1"


class OpenLoopAlone(Client):
    """Not a client: a call that sends nothing and yields to the loop once, so P4 shows what
    its own open loop (a timer wake-up and a task per request) costs on this machine."""

    name = "open_loop"
    label = "open loop alone (no request)"
    skip = frozenset({"p1", "p2", "p3", "p5", "p6", "ttft"})

    async def setup(self, max_conns: int) -> None:
        return None

    async def call(self) -> str:
        await asyncio.sleep(0)
        return ""

CLIENTS = {
    c.name: c
    for c in (
        AiohttpClient,
        HttpxClient,
        OpenAIClient,
        LiteLLMClient,
        TensorZeroClient,
        EchelonChat,
        EchelonChatH2,
        EchelonChatH2Reqwest,
        EchelonPool,
        EchelonCompat,
        EchelonBatch,
        EchelonBatchOneCore,
        EchelonBatchOneCoreReqwest,
        EchelonBatchOneCoreH1,
        EchelonChatOneWorker,
        OpenLoopAlone,
    )
}

#: What P5 times importing for each client (the variants of echelon share one import).
IMPORTS: Dict[str, List[str]] = {
    "aiohttp": ["aiohttp"],
    "httpx": ["httpx"],
    "openai": ["openai"],
    "litellm": ["litellm"],
    "tensorzero": ["tensorzero"],
    "echelon_chat": ["echelon"],
    "echelon_compat": ["echelon", "echelon.compat.polling_pool"],
}
