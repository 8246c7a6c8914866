"""Fault scenarios against the mock provider: each asserts the outcome, the attempts taken
(from the trace and the mock's counters) and, where the spec demands "no hang", a generous
time bound."""

from __future__ import annotations

import asyncio
import time

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


async def test_rate_limit_moves_to_another_instance_and_honours_retry_after(mock):
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "1", "times": 1}]})
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                 "fallback_config": {"max_attempts": 2, "retry_delay": 0.01}}}
    async with router_for(mock, groups=cfg) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="g")
        # m-a (first in round robin) said 429: m-b served at once.
        assert [a.error for a in r.attempts] == ["rate_limited", None]
        assert r.served_by == "g.echelon1_m-b"
        # While m-a cools down (Retry-After 1 s), every request goes to m-b.
        for _ in range(6):
            r = await router.chat("hi", group="g")
            assert r.served_by == "g.echelon1_m-b"
        assert time.monotonic() - t0 < 1.0 or model_counters(mock, "m-a")["requests"] >= 1
        assert model_counters(mock, "m-a")["requests"] == 1
        inst = router.group("g").status()["echelons"][0]["instances"][0]
        assert inst["cooldown_remaining"] is None or inst["cooldown_remaining"] > 0
        await asyncio.sleep(1.05)
        served = {(await router.chat("hi", group="g")).served_by for _ in range(4)}
        assert "g.echelon1_m-a" in served


async def test_breaker_opens_after_threshold_and_later_calls_skip_it(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    cfg = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                    "echelon2": {"models": ["m-b"], "priority": 2},
                    "circuit_breaker": {"failure_threshold": 3, "recovery_time": 30},
                    "fallback_config": {"max_attempts": 3, "retry_delay": 0.0}}}
    async with router_for(mock, groups=cfg) as router:
        for _ in range(3):
            r = await router.chat("hi", group="solo")
            assert r.served_by == "solo.echelon2_m-b"
        assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["state"] == "OPEN"
        seen = model_counters(mock, "m-a")["requests"]
        assert seen == 3
        for _ in range(5):
            r = await router.chat("hi", group="solo")
            assert r.served_by == "solo.echelon2_m-b"
            assert r.attempts[0].error == "circuit_open"
        assert model_counters(mock, "m-a")["requests"] == seen
        assert router.group("solo").reset_breakers() >= 1
        assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["state"] == "CLOSED"


async def test_half_open_admits_exactly_n_probes_under_100_callers(mock):
    cfg = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                    "echelon2": {"models": ["m-b"], "priority": 2},
                    "circuit_breaker": {"failure_threshold": 2, "recovery_time": 0.3, "half_open_requests": 2},
                    "fallback_config": {"max_attempts": 2, "retry_delay": 0.0}}}
    mock.script("m-a", {"fault": "server_error", "status": 503})
    async with router_for(mock, groups=cfg) as router:
        for _ in range(2):
            await router.chat("hi", group="solo")
        assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["state"] == "OPEN"
        # The primary recovers but answers slowly, so the probes are all in flight together.
        mock.script("m-a", {"latency_ms": 200})
        mock.reset()
        await asyncio.sleep(0.35)
        results = await asyncio.gather(*(router.chat("hi", group="solo") for _ in range(100)))
        assert model_counters(mock, "m-a")["requests"] == 2
        assert sum(r.served_by == "solo.echelon1_m-a" for r in results) == 2
        assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["state"] == "CLOSED"


async def test_bad_request_is_neither_retried_nor_fallen_back(mock):
    mock.script("m-a", {"fault": "status", "status": 400})
    async with router_for(mock) as router:
        with pytest.raises(echelon.BadRequest) as ei:
            await router.chat("hi", group="solo")
        assert len(ei.value.attempts) == 1 and ei.value.status == 400
        assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["failure_count"] == 0
    assert model_counters(mock, "m-a")["requests"] == 1


async def test_context_window_goes_only_to_a_larger_target(mock):
    mock.script("m-a", {"fault": "context_window"})
    mock.script("m-b", {"fault": "context_window"})
    async with router_for(mock) as router:
        r = await router.chat("hi", group="g")
        assert r.served_by == "g.echelon3_m-big"
        assert [a.error for a in r.attempts] == ["context_window_exceeded", None]
    assert model_counters(mock, "m-c")["requests"] == 0
    assert model_counters(mock, "m-b")["requests"] == 0


async def test_content_filter_is_surfaced_by_default_and_can_fall_back(mock):
    mock.script("m-a", {"fault": "content_filter"})
    async with router_for(mock) as router:
        with pytest.raises(echelon.ContentFiltered):
            await router.chat("hi", group="solo")
    cfg = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1}, "echelon2": {"models": ["m-b"], "priority": 2},
                    "fallback_config": {"max_attempts": 3, "retry_delay": 0.0, "on_content_filter": "fallback"}}}
    async with router_for(mock, groups=cfg) as router:
        r = await router.chat("hi", group="solo")
        assert r.served_by == "solo.echelon2_m-b"


async def test_auth_error_marks_the_instance_failed_and_others_serve(mock):
    mock.script("m-a", {"fault": "auth"})
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                 "fallback_config": {"max_attempts": 1, "retry_delay": 0.0}}}
    async with router_for(mock, groups=cfg) as router:
        for _ in range(10):
            r = await router.chat("hi", group="g")
            assert r.served_by == "g.echelon1_m-b"
        inst = {i["instance_id"]: i for i in router.group("g").status()["echelons"][0]["instances"]}
        assert inst["g.echelon1_m-a"]["status"] == "failed"
    assert model_counters(mock, "m-a")["requests"] == 1


async def test_all_targets_down_fails_within_the_deadline_with_the_full_trace(mock):
    for m in ("m-a", "m-b", "m-c", "m-big"):
        mock.script(m, {"fault": "server_error", "status": 502})
    async with router_for(mock) as router:
        t0 = time.monotonic()
        with pytest.raises(echelon.AllTargetsFailed) as ei:
            await router.chat("hi", group="g", timeout=3)
        assert time.monotonic() - t0 < 3 * 3
        e = ei.value
        assert e.last_kind == "server_error"
        assert {a.target for a in e.attempts} == {"g.echelon1", "g.echelon2", "g.echelon3"}
        assert all(a.error for a in e.attempts)


async def test_silent_provider_first_token_timeout_then_fallback(mock):
    mock.script("m-a", {"fault": "hang"})
    cfg = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                    "echelon2": {"models": ["m-b"], "priority": 2},
                    "fallback_config": {"max_attempts": 2, "retry_delay": 0.0}}}
    mc = mock_config(mock.openai_base_url, groups=cfg)
    mc["providers"]["mock"]["common"]["timeouts"] = {"connect": 1, "first_token": 0.3, "total": 5, "idle": 1}
    async with Router.from_dict(mc) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="solo")
        assert time.monotonic() - t0 >= 0.3
        assert r.served_by == "solo.echelon2_m-b"
        assert r.attempts[0].error == "timeout"
    for _ in range(50):
        if model_counters(mock, "m-a")["client_disconnects"]:
            break
        await asyncio.sleep(0.02)
    assert model_counters(mock, "m-a")["client_disconnects"] == 1


async def test_stream_slow_first_token_falls_back_before_any_token(mock):
    mock.script("m-a", {"ttft_ms": 2000})
    cfg = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                    "echelon2": {"models": ["m-b"], "priority": 2},
                    "fallback_config": {"max_attempts": 2, "retry_delay": 0.0}}}
    mc = mock_config(mock.openai_base_url, groups=cfg)
    mc["providers"]["mock"]["common"]["timeouts"] = {"connect": 1, "first_token": 0.3, "total": 5, "idle": 1}
    async with Router.from_dict(mc) as router:
        chunks = [c async for c in router.stream("hi", group="solo")]
        text = "".join(c.text for c in chunks)
        assert text.startswith("Hello from m-b")
        final = chunks[-1].response
        assert final is not None and [a.error for a in final.attempts] == ["timeout", None]


async def test_stream_cut_after_tokens_is_interrupted_with_partial_text(mock):
    mock.script("m-a", {"fault": "cut_after", "after": 2, "chunks": 8})
    async with router_for(mock) as router:
        got = []
        with pytest.raises(echelon.StreamInterrupted) as ei:
            async for c in router.stream("hi", group="solo"):
                got.append(c.text)
        assert got and ei.value.partial == "".join(got)
        assert ei.value.partial.startswith("Hello from m-a")
        assert ei.value.attempts[-1].error == "stream_interrupted"


async def test_stream_stall_after_tokens_hits_the_idle_timeout(mock):
    mock.script("m-a", {"fault": "stall_after", "after": 2, "chunks": 8})
    mc = mock_config(mock.openai_base_url)
    mc["providers"]["mock"]["common"]["timeouts"] = {"connect": 1, "first_token": 2, "total": 5, "idle": 0.3}
    async with Router.from_dict(mc) as router:
        with pytest.raises(echelon.StreamInterrupted) as ei:
            async for _ in router.stream("hi", group="solo"):
                pass
        assert ei.value.partial
        assert "idle" in str(ei.value)


async def test_saturation_pool_exhausted_and_queue_timeout(mock):
    mock.script("m-a", {"latency_ms": 300})
    cfg = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 2}}}
    pools = {"p": {"task_groups": ["solo"], "performance": {"queue_size": 2}}}
    async with router_for(mock, groups=cfg, pools=pools) as router:
        tasks = [asyncio.ensure_future(router.chat("hi", pool="p", timeout=5)) for _ in range(4)]
        await asyncio.sleep(0.1)
        with pytest.raises(echelon.PoolExhausted):
            await router.chat("hi", pool="p")
        done = await asyncio.gather(*tasks)
        assert all(r.content for r in done)
        assert model_counters(mock, "m-a")["max_in_flight"] == 2
        tasks = [asyncio.ensure_future(router.chat("hi", pool="p", timeout=5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(echelon.QueueTimeout):
            await router.chat("hi", pool="p", timeout=0.1)
        await asyncio.gather(*tasks)


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


async def test_caller_cancellation_frees_slot_leaves_breaker_and_aborts_upstream(mock):
    mock.script("m-a", {"latency_ms": 2000})
    async with router_for(mock) as router:
        task = asyncio.ensure_future(router.chat("hi", group="solo"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        inst = router.group("solo").status()["echelons"][0]["instances"][0]
        assert inst["in_flight"] == 0
        assert inst["breaker"]["failure_count"] == 0 and inst["status"] == "healthy"
        for _ in range(50):
            if model_counters(mock, "m-a")["client_disconnects"]:
                break
            await asyncio.sleep(0.02)
        assert model_counters(mock, "m-a")["client_disconnects"] == 1


async def test_secrets_never_appear_in_errors_status_or_logs(mock, caplog):
    import logging

    secret = "sk-test-LEAKCHECK-987654321"
    mock.script("m-a", {"fault": "auth", "body": {"error": {"message": f"Incorrect API key provided: {secret}"}}})
    mc = mock_config(mock.openai_base_url)
    mc["providers"]["mock"]["common"]["api_key"] = secret
    caplog.set_level(logging.DEBUG)
    async with Router.from_dict(mc) as router:
        with pytest.raises(echelon.EchelonError) as ei:
            await router.chat("hi", group="solo")
        texts = [str(ei.value), repr(ei.value), str(router.status()), router.metrics(), caplog.text]
        texts += [repr(a) for a in ei.value.attempts] + [str(a.to_dict()) for a in ei.value.attempts]
        for t in texts:
            assert secret not in t
