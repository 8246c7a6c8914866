"""The HTTP/2 transport through the Python API, against the mock over h2c: more requests in
flight than the mock's stream limit, GOAWAY mid-run, a connection reset mid-stream failing
over, cancellation resetting the stream (the mock counts RST_STREAM) and freeing its slot, the
connection settings' configuration and the default protocol.

The mock's stream limit and GOAWAY are driven through its HTTP control routes
(``/_mock/h2``, ``/_mock/goaway``). No timing assertions: every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any, Callable, Dict

import pytest

import echelon
from echelon import Router
from conftest import mock_config, model_counters

BOUND = 20.0


def control(mock: Any, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
    req = urllib.request.Request(mock.base_url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return dict(json.loads(r.read()))


async def eventually(pred: Callable[[], bool], timeout: float = BOUND) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


def h2_config(mock: Any, groups: Dict[str, Any], **common: Any) -> Dict[str, Any]:
    cfg = mock_config(mock.openai_base_url)
    cfg["providers"]["mock"]["common"].update({"http_version": "2", "max_retries": 0, "timeouts": {"connect": 5, "first_token": 15, "total": 20, "idle": 15}})
    cfg["providers"]["mock"]["common"].update(common)
    cfg["groups"] = groups
    cfg["pools"] = {}
    return cfg


SOLO = {"h": {"echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 1000}}}
FAILOVER = {
    "h": {
        "echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 1000},
        "echelon2": {"models": ["m-c"], "priority": 2, "concurrency_limit": 1000},
        "circuit_breaker": {"failure_threshold": 100, "recovery_time": 1, "half_open_requests": 1},
        "fallback_config": {"strategy": "echelon_down", "max_attempts": 3},
    }
}


async def test_more_requests_than_the_stream_limit_complete_on_more_connections(mock):
    control(mock, "/_mock/h2", {"max_concurrent_streams": 8})
    mock.script("m-a", {"latency_ms": 100})
    async with Router.from_dict(h2_config(mock, SOLO)) as router:
        rs = await asyncio.wait_for(asyncio.gather(*(router.chat("hi", group="h") for _ in range(200))), BOUND)
    assert all(r.content.startswith("Hello from m-a") and len(r.attempts) == 1 for r in rs)
    c = mock.counters()
    assert c["http2_requests"] == 200
    assert c["http2_connections"] > 1, c
    assert c["max_streams_per_connection"] <= 8, c


async def test_the_connection_cap_holds_requests_until_a_stream_is_free(mock):
    control(mock, "/_mock/h2", {"max_concurrent_streams": 4})
    mock.script("m-a", {"latency_ms": 50})
    async with Router.from_dict(h2_config(mock, SOLO, http2_max_connections=2)) as router:
        rs = await asyncio.wait_for(asyncio.gather(*(router.chat("hi", group="h") for _ in range(40))), BOUND)
    assert len(rs) == 40
    c = mock.counters()
    assert c["http2_connections"] == 2, c
    assert c["max_streams_per_connection"] <= 4, c


async def test_goaway_mid_run_loses_no_request(mock):
    control(mock, "/_mock/h2", {"max_concurrent_streams": 16})
    steps = [{"fault": "ok", "times": 50}, "goaway", {"fault": "ok", "times": 50}, "goaway"]
    mock.script("m-a", {"latency_ms": 20, "steps": steps, "then": "ok"})
    gate = asyncio.Semaphore(100)
    done = 0

    async with Router.from_dict(h2_config(mock, SOLO)) as router:

        async def one() -> echelon.Response:
            nonlocal done
            async with gate:
                r = await router.chat("hi", group="h")
            done += 1
            if done == 200:
                assert control(mock, "/_mock/goaway", {})["connections"] >= 1
            return r

        rs = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(400))), BOUND)
    # Every call succeeded at its first attempt: nothing reached the engine's retry rules.
    assert all(len(r.attempts) == 1 and r.attempts[0].error is None for r in rs)
    c = mock.counters()
    m = model_counters(mock, "m-a")
    assert m["requests"] - m["client_disconnects"] == 400, m
    assert c["goaways"] >= 3 and c["http2_connections"] >= 3, c


async def test_a_reset_connection_fails_only_its_own_streams_and_they_fail_over(mock):
    control(mock, "/_mock/h2", {"max_concurrent_streams": 10})
    mock.script("m-a", {"latency_ms": 1500, "steps": [{"fault": "ok", "times": 29}, {"fault": "reset", "latency_ms": 0}], "then": "ok"})
    async with Router.from_dict(h2_config(mock, FAILOVER)) as router:
        first = [asyncio.ensure_future(router.chat("hi", group="h")) for _ in range(29)]
        # Three connections: 10, 10 and 9 streams in flight.
        assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 29)
        last = asyncio.ensure_future(router.chat("hi", group="h"))  # takes the free stream, resets
        rs = await asyncio.wait_for(asyncio.gather(*first, last), BOUND)
    moved = [r for r in rs if len(r.attempts) == 2]
    assert len(moved) == 10, [[(a.model, a.error) for a in r.attempts] for r in rs]
    for r in moved:
        assert (r.attempts[0].model, r.attempts[0].error) == ("m-a", "connection_error")
        assert (r.attempts[1].model, r.attempts[1].error) == ("m-c", None)
        assert "mock-key" not in (r.attempts[0].message or "")
    assert all(len(r.attempts) == 1 and r.served_by.endswith("m-a") for r in rs if r not in moved)
    assert mock.counters()["connection_resets"] == 1
    assert model_counters(mock, "m-c")["requests"] == 10


async def test_cancelling_sends_rst_stream_and_frees_the_slot(mock):
    control(mock, "/_mock/h2", {"max_concurrent_streams": 2})
    mock.script("m-a", "hang")
    async with Router.from_dict(h2_config(mock, SOLO, http2_max_connections=1)) as router:
        tasks = [asyncio.ensure_future(router.chat("hi", group="h")) for _ in range(2)]
        assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 2)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with pytest.raises(asyncio.CancelledError):
                await t
        assert await eventually(lambda: mock.counters()["rst_streams"] == 2), mock.counters()
        assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 2)

        # A stream abandoned after its first delta.
        mock.script("m-a", {"chunks": 50, "chunk_delay_ms": 50})
        first = asyncio.Event()

        async def consume() -> None:
            async for c in router.stream("hi", group="h"):
                if c.text:
                    first.set()

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(first.wait(), BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: mock.counters()["rst_streams"] == 3), mock.counters()

        # Both streams of the one connection are free again.
        mock.script("m-a", {})
        rs = await asyncio.wait_for(asyncio.gather(*(router.chat("hi", group="h") for _ in range(2))), BOUND)
        assert all(r.served_by.endswith("m-a") for r in rs)
    assert mock.counters()["http2_connections"] == 1


async def test_the_default_is_auto_which_stays_on_http1_over_plain_http(mock):
    cfg = mock_config(mock.openai_base_url)
    assert "http_version" not in cfg["providers"]["mock"]["common"]
    async with Router.from_dict(cfg) as router:
        await router.chat("hi", group="solo")
    assert mock.counters()["http2_requests"] == 0
    resolved = echelon._core.config_from_dict(cfg)["models"]["m-a"]
    assert (resolved["http_version"], resolved["http2_max_connections"], resolved["connection_idle_timeout"]) == ("auto", 256, 90.0)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("http2_max_connections", 0, "http2_max_connections"),
        ("http2_max_connections", "many", "http2_max_connections"),
        ("connection_idle_timeout", 0, "connection_idle_timeout"),
        ("connection_idle_timeout", -5, "connection_idle_timeout"),
        ("http_version", "3", "expected one of: 1.1, auto, 2"),
    ],
)
def test_connection_settings_are_checked(mock, key, value, words):
    cfg = mock_config(mock.openai_base_url)
    cfg["providers"]["mock"]["m-b"][key] = value
    with pytest.raises(echelon.ConfigError) as e:
        echelon._core.config_from_dict(cfg)
    assert "providers.mock.m-b." + key in str(e.value) and words in str(e.value)
