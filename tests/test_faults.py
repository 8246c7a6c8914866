"""Error-class and limit tests that are not among the numbered reliability scenarios (those
are in test_reliability.py): 5xx retry-then-fallback, bad requests, limits under load."""

from __future__ import annotations

import asyncio

import pytest

import echelon
from echelon import Router
from conftest import mock_config, model_counters


def router_for(mock, **overrides):
    return Router.from_dict(mock_config(mock.openai_base_url, **overrides))


async def test_5xx_retries_then_falls_back_down_the_echelons(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    mock.script("m-b", {"fault": "server_error", "status": 500})
    async with router_for(mock) as router:
        r = await router.chat("hi", group="g")
        assert r.served_by == "g.echelon2_m-c"
        targets = [(a.target, a.error) for a in r.attempts]
        assert targets[-1] == ("g.echelon2", None)
        assert {a.instance for a in r.attempts[:-1]} == {"g.echelon1_m-a", "g.echelon1_m-b"}
        assert all(a.error == "server_error" for a in r.attempts[:-1])
        assert r.attempts[-1].role == "fallback"
    assert model_counters(mock, "m-c")["requests"] == 1


async def test_bad_request_is_neither_retried_nor_fallen_back(mock):
    mock.script("m-a", {"fault": "status", "status": 400})
    async with router_for(mock) as router:
        with pytest.raises(echelon.BadRequest) as ei:
            await router.chat("hi", group="solo")
        assert len(ei.value.attempts) == 1 and ei.value.status == 400
        assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["failure_count"] == 0
    assert model_counters(mock, "m-a")["requests"] == 1


async def test_limits_hold_under_1000_concurrent_tasks(mock):
    mock.script("m-a", {"latency_ms": 2})
    mock.script("m-b", {"latency_ms": 2})
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1, "concurrency_limit": 5}}}
    pools = {"p": {"task_groups": ["g.echelon1"], "rotation_strategy": "least_busy", "performance": {"queue_size": 2000}}}
    async with router_for(mock, groups=cfg, pools=pools) as router:
        results = await asyncio.gather(*(router.chat("hi", pool="p", timeout=30) for _ in range(1000)))
        assert len(results) == 1000
        for m in ("m-a", "m-b"):
            assert model_counters(mock, m)["max_in_flight"] <= 5
        st = router.pool("p").status()
        assert st["in_flight"] == 0 and st["queue_length"] == 0
