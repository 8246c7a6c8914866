"""The reliability suite: the issue's 16 fault scenarios, hedging, and one test per fallback
strategy, all against the mock provider on loopback.

Each scenario asserts the outcome, the attempts taken (from the mock's counters AND the
attempt trace) and, where the spec demands "no hang", a generous time bound. Lower timing
bounds ("waited at least Retry-After") are exact; upper bounds are 5-10x what is needed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import echelon
from echelon import Router
from echelon.testing import MockProvider
from conftest import mock_config


def router_for(mock: MockProvider, **overrides: Any) -> Router:
    return Router.from_dict(mock_config(mock.openai_base_url, **overrides))


def with_timeouts(cfg: Dict[str, Any], **t: float) -> Dict[str, Any]:
    cfg["providers"]["mock"]["common"]["timeouts"].update(t)
    return cfg


def trace(attempts: List[Any]) -> List[Tuple[str, Optional[str]]]:
    """(instance, error) of each attempt."""
    return [(a.instance, a.error) for a in attempts]


def model_counters(mock: MockProvider, model: str) -> Dict[str, Any]:
    return mock.counters(model)


def requests(mock: MockProvider, model: str) -> int:
    return int(model_counters(mock, model)["requests"])


async def eventually(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


def instance_status(router: Router, group: str, instance: str) -> Dict[str, Any]:
    for e in router.group(group).status()["echelons"]:
        for i in e["instances"]:
            if i["instance_id"] == instance:
                return i
    raise KeyError(instance)


def two_tier(first: List[str], second: List[str], *, retries: int = 0, **fallback: Any) -> Dict[str, Any]:
    """Groups override: `t` with echelon1 = first, echelon2 = second."""
    fb = {"max_attempts": 3, "retry_delay": 0.0}
    fb.update(fallback)
    return {"t": {"echelon1": {"models": first, "priority": 1, "max_retries": retries},
                  "echelon2": {"models": second, "priority": 2},
                  "circuit_breaker": {"failure_threshold": 50, "recovery_time": 30},
                  "fallback_config": fb}}


# -- 1. 429 with Retry-After ------------------------------------------------------------------

async def test_s01_rate_limit_with_retry_after_is_honoured_and_next_instance_serves(mock):
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "1"}], "then": "ok"})
    groups = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                    "fallback_config": {"max_attempts": 2, "retry_delay": 0.0}}}
    async with router_for(mock, groups=groups) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="g")
        assert trace(r.attempts) == [("g.echelon1_m-a", "rate_limited"), ("g.echelon1_m-b", None)]
        assert r.attempts[0].role == "primary"
        # Keep calling: m-b serves everything until the Retry-After has passed.
        back_at = None
        while time.monotonic() - t0 < 5:
            r = await router.chat("hi", group="g")
            if r.served_by == "g.echelon1_m-a":
                back_at = time.monotonic()
                break
            assert trace(r.attempts) == [("g.echelon1_m-b", None)]
            assert requests(mock, "m-a") == 1, "m-a was retried inside its Retry-After"
            await asyncio.sleep(0.05)
        assert back_at is not None, "m-a never came back after its Retry-After"
        assert back_at - t0 >= 1.0
    assert model_counters(mock, "m-a")["statuses"] == {"429": 1, "200": 1}


# -- 2. 429 without Retry-After ---------------------------------------------------------------

async def test_s02_rate_limit_without_retry_after_falls_back_at_once_while_the_instance_cools(mock):
    # A cooling instance is not waited for while a later target can serve.
    mock.script("m-a", {"fault": "rate_limit"})
    cfg = mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"], retries=2))
    common = cfg["providers"]["mock"]["common"]
    common["rate_limit_cooldown"] = 5
    common["retry_config"] = {"base_delay": 0.02, "max_delay": 0.2}
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="t", timeout=10)
        assert r.served_by == "t.echelon2_m-b"
        assert trace(r.attempts) == [("t.echelon1_m-a", "rate_limited"), ("t.echelon2_m-b", None)]
        assert [a.role for a in r.attempts] == ["primary", "fallback"]
        assert instance_status(router, "t", "t.echelon1_m-a")["cooldown_remaining"] > 4
        # While it cools, later calls skip it without sending anything.
        r = await router.chat("hi", group="t", timeout=10)
        assert [(a.target, a.error) for a in r.attempts] == [("t.echelon1", "rate_limited"), ("t.echelon2", None)]
    assert requests(mock, "m-a") == 1


async def test_s02q_an_exhausted_quota_takes_the_instance_out_for_quota_cooldown(mock):
    # Ten minutes by default (a quota does not come back in seconds); configurable per model.
    mock.script("m-a", {"steps": ["quota"], "then": "ok"})
    cfg = mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"], retries=2))
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="t", timeout=10)
        assert trace(r.attempts) == [("t.echelon1_m-a", "quota_exceeded"), ("t.echelon2_m-b", None)]
        assert 590 < instance_status(router, "t", "t.echelon1_m-a")["cooldown_remaining"] <= 600
    mock.reset()
    mock.script("m-a", {"steps": ["quota"], "then": "ok"})
    cfg["providers"]["mock"]["m-a"]["quota_cooldown"] = 0.3
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="t", timeout=10)
        assert trace(r.attempts) == [("t.echelon1_m-a", "quota_exceeded"), ("t.echelon2_m-b", None)]
        assert 0 < instance_status(router, "t", "t.echelon1_m-a")["cooldown_remaining"] <= 0.3
        r = await router.chat("hi", group="t", timeout=10)
        assert r.served_by == "t.echelon2_m-b", "still cooling"
        assert await eventually(lambda: instance_status(router, "t", "t.echelon1_m-a")["cooldown_remaining"] is None, timeout=5)
        r = await router.chat("hi", group="t", timeout=10)
        assert r.served_by == "t.echelon1_m-a"
    assert requests(mock, "m-a") == 2
    cfg["providers"]["mock"]["m-a"]["quota_cooldown"] = -1
    with pytest.raises(echelon.ConfigError, match="quota_cooldown"):
        Router.from_dict(cfg)


async def test_s02a_rate_limit_without_retry_after_on_the_last_target_backs_off_and_retries(mock):
    mock.script("m-a", {"steps": [{"fault": "rate_limit"}, {"fault": "rate_limit"}], "then": "ok"})
    cfg = mock_config(mock.openai_base_url)
    common = cfg["providers"]["mock"]["common"]
    common["rate_limit_cooldown"] = 0.1
    common["retry_config"] = {"base_delay": 0.02, "max_delay": 0.2}
    common["max_retries"] = 2
    async with Router.from_dict(cfg) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="solo", timeout=10)
        elapsed = time.monotonic() - t0
        assert r.served_by == "solo.echelon1_m-a"
        assert trace(r.attempts) == [("solo.echelon1_m-a", "rate_limited")] * 2 + [("solo.echelon1_m-a", None)]
        assert [a.role for a in r.attempts] == ["primary", "retry", "retry"]
        # Each retry waited out at least the 429 cooldown (an attempt's latency includes
        # its wait for the instance).
        ends = [a.started_after + a.latency for a in r.attempts]
        for prev, nxt in zip(ends, ends[1:]):
            assert nxt - prev >= 0.1 - 0.005
        assert elapsed >= 0.2
    assert requests(mock, "m-a") == 3


async def test_s02b_retry_on_the_same_instance_waits_out_retry_after_then_serves(mock):
    # One instance: the retry after a 503 must go to the same one, after its Retry-After
    # (within max_delay, so it is waited for rather than moved past).
    mock.script("m-a", {"steps": [{"fault": "server_error", "status": 503, "retry_after_ms": 300}], "then": "ok"})
    cfg = mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"], retries=1))
    cfg["providers"]["mock"]["common"]["retry_config"] = {"base_delay": 0.001, "max_delay": 1.0}
    async with Router.from_dict(cfg) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="t", timeout=10)
        elapsed = time.monotonic() - t0
        assert r.served_by == "t.echelon1_m-a"
        assert [a.role for a in r.attempts] == ["primary", "retry"]
        assert r.attempts[1].started_after >= 0.3 - 0.005
        assert elapsed >= 0.3
    assert requests(mock, "m-a") == 2
    assert requests(mock, "m-b") == 0


async def test_s02c_a_retry_after_longer_than_max_delay_moves_on_at_once_and_cools_the_instance(mock):
    # A 503 saying "come back in 10 minutes" with max_retries 2: never slept on, the next
    # target serves at once, and the instance is left alone for the 10 minutes.
    mock.script("m-a", {"fault": "server_error", "status": 503, "retry_after": "600"})
    cfg = mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"], retries=2))
    cfg["providers"]["mock"]["common"]["retry_config"] = {"base_delay": 0.01, "max_delay": 2}
    async with Router.from_dict(cfg) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="t", timeout=30)
        assert time.monotonic() - t0 < 5
        assert trace(r.attempts) == [("t.echelon1_m-a", "server_error"), ("t.echelon2_m-b", None)]
        cooldown = instance_status(router, "t", "t.echelon1_m-a")["cooldown_remaining"]
        assert 590 < cooldown <= 600
    assert requests(mock, "m-a") == 1


@pytest.mark.parametrize("retry_after", ["Fri, 31 Dec 9999 23:59:59 GMT", "99999999999999999999", "86400000"])
async def test_s02d_absurd_retry_after_values_are_capped_at_a_day_and_never_hang(mock, retry_after):
    mock.script("m-a", {"fault": "rate_limit", "retry_after": retry_after})
    cfg = mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"]))
    async with Router.from_dict(cfg) as router:
        r = await asyncio.wait_for(router.chat("hi", group="t", timeout=10), 8)
        assert r.served_by == "t.echelon2_m-b"
        cooldown = instance_status(router, "t", "t.echelon1_m-a")["cooldown_remaining"]
        assert cooldown <= 24 * 3600
        # With nothing else to fall back to, the call ends at once with the provider's hint.
        with pytest.raises(echelon.RateLimited) as ei:
            await asyncio.wait_for(router.chat("hi", route="echelon:t.echelon1", timeout=10), 8)
        assert ei.value.retry_after is not None and ei.value.retry_after <= 24 * 3600


# -- 3. Persistent 503: breaker opens ---------------------------------------------------------

async def test_s03_persistent_503_opens_the_breaker_and_later_calls_skip_it(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    groups = two_tier(["m-a"], ["m-b"])
    groups["t"]["circuit_breaker"] = {"failure_threshold": 3, "recovery_time": 30}
    async with router_for(mock, groups=groups) as router:
        for _ in range(3):
            r = await router.chat("hi", group="t")
            assert trace(r.attempts) == [("t.echelon1_m-a", "server_error"), ("t.echelon2_m-b", None)]
        assert router.group("t").breaker_status()["t.echelon1_m-a"]["state"] == "OPEN"
        assert requests(mock, "m-a") == 3
        for _ in range(5):
            r = await router.chat("hi", group="t")
            assert r.served_by == "t.echelon2_m-b"
            assert [(a.target, a.error) for a in r.attempts] == [("t.echelon1", "circuit_open"), ("t.echelon2", None)]
            # Skipped at once: no time spent on the open instance.
            assert r.attempts[0].latency < 1.0
        assert requests(mock, "m-a") == 3
        assert requests(mock, "m-b") == 8


# -- 4. Flapping primary: half-open probes, no storm ------------------------------------------

async def test_s04_flapping_primary_half_open_admits_exactly_n_probes(mock):
    groups = two_tier(["m-a"], ["m-b"])
    groups["t"]["circuit_breaker"] = {"failure_threshold": 2, "recovery_time": 0.3, "half_open_requests": 2}
    mock.script("m-a", {"fault": "server_error", "status": 503, "latency_ms": 100})
    async with router_for(mock, groups=groups) as router:
        bs = lambda: router.group("t").breaker_status()["t.echelon1_m-a"]  # noqa: E731
        for _ in range(2):
            await router.chat("hi", group="t")
        assert bs()["state"] == "OPEN" and requests(mock, "m-a") == 2
        # Outage: 60 callers while open; none reaches the primary (no probe storm).
        results = await asyncio.gather(*(router.chat("hi", group="t") for _ in range(60)))
        assert all(r.served_by == "t.echelon2_m-b" for r in results)
        assert requests(mock, "m-a") == 2
        assert model_counters(mock, "m-a")["probes"] == 0
        # Still failing when half-open: exactly 2 probes go through, then it reopens.
        await asyncio.sleep(0.35)
        results = await asyncio.gather(*(router.chat("hi", group="t") for _ in range(60)))
        assert all(r.served_by == "t.echelon2_m-b" for r in results)
        assert requests(mock, "m-a") == 4
        assert sum(r.attempts[0].error == "server_error" for r in results) == 2
        assert bs()["state"] == "OPEN"
        # Recovered (and slow, so the probes overlap): exactly 2 probes, then it closes.
        mock.script("m-a", {"latency_ms": 200})
        await asyncio.sleep(0.35)
        results = await asyncio.gather(*(router.chat("hi", group="t") for _ in range(100)))
        assert requests(mock, "m-a") == 4 + 2
        assert sum(r.served_by == "t.echelon1_m-a" for r in results) == 2
        assert bs()["state"] == "CLOSED"
        r = await router.chat("hi", group="t")
        assert trace(r.attempts) == [("t.echelon1_m-a", None)]
    assert model_counters(mock, "m-a")["probes"] == 0


# -- 5. Silent provider ------------------------------------------------------------------------

async def test_s05_silent_provider_first_token_timeout_then_fallback(mock):
    mock.script("m-a", {"fault": "hang"})
    cfg = with_timeouts(mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"])), first_token=0.3)
    async with Router.from_dict(cfg) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="t")
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.3
        # Within the timeout plus one fallback latency (generously: the mock answers in ms).
        assert elapsed < 0.3 + 3.0
        assert r.served_by == "t.echelon2_m-b"
        assert trace(r.attempts) == [("t.echelon1_m-a", "timeout"), ("t.echelon2_m-b", None)]
        assert r.attempts[0].latency >= 0.3
    assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 1)
    assert requests(mock, "m-a") == 1 and requests(mock, "m-b") == 1


# -- 6. Slow first token on a stream -----------------------------------------------------------

async def test_s06_stream_slow_first_token_falls_back_before_any_token(mock):
    mock.script("m-a", {"ttft_ms": 3000})
    cfg = with_timeouts(mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"])), first_token=0.3)
    async with Router.from_dict(cfg) as router:
        t0 = time.monotonic()
        chunks = [c async for c in router.stream("hi", group="t")]
        assert time.monotonic() - t0 < 0.3 + 3.0
        text = "".join(c.text for c in chunks)
        # Every token came from the fallback: nothing of m-a leaked into the stream.
        assert text.startswith("Hello from m-b") and "m-a" not in text
        final = chunks[-1].response
        assert final is not None and final.served_by == "t.echelon2_m-b"
        assert trace(final.attempts) == [("t.echelon1_m-a", "timeout"), ("t.echelon2_m-b", None)]
    assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 1)
    assert model_counters(mock, "m-a")["streams_completed"] == 0
    assert model_counters(mock, "m-b")["streams_completed"] == 1


# -- 7. Stream cut after some tokens -----------------------------------------------------------

async def test_s07_stream_cut_after_tokens_is_interrupted_with_partial_text(mock):
    mock.script("m-a", {"fault": "cut_after", "after": 2, "chunks": 8})
    async with router_for(mock, groups=two_tier(["m-a"], ["m-b"], retries=1)) as router:
        got: List[str] = []
        with pytest.raises(echelon.StreamInterrupted) as ei:
            async for c in router.stream("hi", group="t"):
                assert not c.is_final, "a cut stream must never end as a success"
                got.append(c.text)
        e = ei.value
        assert len(got) == 2 and e.partial == "".join(got)
        assert e.partial.startswith("Hello from m-a")
        # Committed after the first token: no retry, no fallback.
        assert trace(e.attempts) == [("t.echelon1_m-a", "stream_interrupted")]
        assert instance_status(router, "t", "t.echelon1_m-a")["in_flight"] == 0
    assert requests(mock, "m-a") == 1 and requests(mock, "m-b") == 0
    assert model_counters(mock, "m-a")["streams_completed"] == 0


# -- 8. Stream stall ---------------------------------------------------------------------------

async def test_s08_stream_stall_hits_the_idle_timeout(mock):
    mock.script("m-a", {"fault": "stall_after", "after": 2, "chunks": 8})
    cfg = with_timeouts(mock_config(mock.openai_base_url, groups=two_tier(["m-a"], ["m-b"], retries=1)), idle=0.3)
    async with Router.from_dict(cfg) as router:
        got: List[str] = []
        t0 = time.monotonic()
        with pytest.raises(echelon.StreamInterrupted) as ei:
            async for c in router.stream("hi", group="t"):
                got.append(c.text)
        elapsed = time.monotonic() - t0
        assert 0.3 <= elapsed < 0.3 * 10
        e = ei.value
        assert "idle" in str(e)
        assert len(got) == 2 and e.partial == "".join(got)
        assert trace(e.attempts) == [("t.echelon1_m-a", "stream_interrupted")]
    assert requests(mock, "m-a") == 1 and requests(mock, "m-b") == 0
    assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 1)


# -- 9. Connection refused / reset -------------------------------------------------------------

def refusing_port() -> socket.socket:
    """A loopback port that refuses connections: bound but not listening, so nothing else on
    the machine can take it until the test closes the socket to serve on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


async def test_s09_connection_refused_or_reset_retried_fallback_and_health_check_recovers(mock):
    # Reset: retried on the same target, then the fallback serves.
    mock.script("m-a", {"fault": "reset"})
    async with router_for(mock, groups=two_tier(["m-a"], ["m-b"], retries=1)) as router:
        r = await router.chat("hi", group="t")
        assert trace(r.attempts) == [("t.echelon1_m-a", "connection_error")] * 2 + [("t.echelon2_m-b", None)]
        assert [a.role for a in r.attempts] == ["primary", "retry", "fallback"]
    assert requests(mock, "m-a") == 2 and model_counters(mock, "m-a")["faults"].get("reset") == 2

    # Refused: nothing listens on the port yet. The pool rotates to m-b, the instance goes
    # unhealthy, and the pool's active health check brings it back once a server appears.
    held = refusing_port()
    port = held.getsockname()[1]
    cfg = mock_config(mock.openai_base_url)
    cfg["providers"]["late"] = {
        "common": {"type": "openai_compatible", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k",
                   "timeouts": {"connect": 1, "first_token": 2, "total": 5, "idle": 1}, "max_retries": 0},
        "late-a": {"model": "late-a"},
    }
    cfg["groups"] = {"h": {"echelon1": {"models": ["late-a", "m-b"], "priority": 1},
                           "circuit_breaker": {"failure_threshold": 100, "recovery_time": 30}}}
    cfg["pools"] = {"hp": {"task_groups": ["h.echelon1"], "rotation_strategy": "round_robin",
                           "health_check": {"interval": 0.2, "failure_threshold": 2, "recovery_time": 60},
                           "fallback_config": {"strategy": "instance_rotation", "max_instance_attempts": 2}}}
    mock.reset(scripts=True)
    late_id = "h.echelon1_late-a"
    async with Router.from_dict(cfg) as router:
        saw_refused = False
        for _ in range(4):
            r = await router.chat("hi", pool="hp")
            assert r.served_by == "h.echelon1_m-b"
            if r.attempts[0].error:
                saw_refused = True
                assert trace(r.attempts) == [(late_id, "connection_error"), ("h.echelon1_m-b", None)]
        assert saw_refused

        def status() -> str:
            return {i["instance_id"]: i for i in router.pool("hp").instances()}[late_id]["status"]

        assert await eventually(lambda: status() == "unhealthy", timeout=5)
        # Unhealthy: calls no longer try it.
        r = await router.chat("hi", pool="hp")
        assert trace(r.attempts) == [("h.echelon1_m-b", None)]
        held.close()
        with MockProvider(port=port) as late:
            assert await eventually(lambda: status() == "healthy", timeout=10)
            assert late.counters()["probes"] >= 1
            served = {(await router.chat("hi", pool="hp")).served_by for _ in range(4)}
            assert late_id in served
            assert requests(late, "late-a") >= 1


# -- 10. Malformed JSON / truncated body -------------------------------------------------------

@pytest.mark.parametrize("fault", [{"fault": "malformed"}, {"fault": "cut_after", "after": 0}])
async def test_s10_malformed_or_truncated_body_is_invalid_response_retried_once_then_fallback(mock, fault):
    mock.script("m-a", fault)
    async with router_for(mock, groups=two_tier(["m-a"], ["m-b"], retries=1)) as router:
        r = await router.chat("hi", group="t")
        assert trace(r.attempts) == [("t.echelon1_m-a", "invalid_response")] * 2 + [("t.echelon2_m-b", None)]
        assert [a.role for a in r.attempts] == ["primary", "retry", "fallback"]
    assert requests(mock, "m-a") == 2 and requests(mock, "m-b") == 1


# -- 11. Context window exceeded ---------------------------------------------------------------

async def test_s11_context_window_goes_only_to_a_larger_target_without_blind_retry(mock):
    mock.script("m-a", {"fault": "context_window"})
    mock.script("m-b", {"fault": "context_window"})
    async with router_for(mock) as router:
        r = await router.chat("hi", group="g")
        assert r.served_by == "g.echelon3_m-big"
        assert trace(r.attempts) == [("g.echelon1_m-a", "context_window_exceeded"), ("g.echelon3_m-big", None)]
        # With no larger target, the error is surfaced as itself after one attempt.
        with pytest.raises(echelon.ContextWindowExceeded) as ei:
            await router.chat("hi", group="solo")
        assert trace(ei.value.attempts) == [("solo.echelon1_m-a", "context_window_exceeded")]
    # max_retries is 1, yet the same-size instances are not retried.
    assert requests(mock, "m-a") == 2
    assert requests(mock, "m-b") == 0 and requests(mock, "m-c") == 0 and requests(mock, "m-big") == 1


# -- 12. Content filter ------------------------------------------------------------------------

async def test_s12_content_filter_is_surfaced_by_default_and_can_fall_back(mock):
    mock.script("m-a", {"fault": "content_filter"})
    async with router_for(mock, groups=two_tier(["m-a"], ["m-b"], retries=1)) as router:
        with pytest.raises(echelon.ContentFiltered) as ei:
            await router.chat("hi", group="t")
        assert trace(ei.value.attempts) == [("t.echelon1_m-a", "content_filtered")]
        assert instance_status(router, "t", "t.echelon1_m-a")["breaker"]["failure_count"] == 0
    assert requests(mock, "m-a") == 1 and requests(mock, "m-b") == 0
    mock.reset()
    groups = two_tier(["m-a"], ["m-b"], retries=1, on_content_filter="fallback")
    async with router_for(mock, groups=groups) as router:
        r = await router.chat("hi", group="t")
        assert trace(r.attempts) == [("t.echelon1_m-a", "content_filtered"), ("t.echelon2_m-b", None)]
    assert requests(mock, "m-a") == 1 and requests(mock, "m-b") == 1


# -- 13. Auth error on one instance ------------------------------------------------------------

async def test_s13_auth_error_marks_the_instance_failed_others_serve_no_retry_storm(mock):
    mock.script("m-a", {"fault": "auth"})
    groups = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                    "fallback_config": {"max_attempts": 1, "retry_delay": 0.0}}}
    async with router_for(mock, groups=groups) as router:
        r = await router.chat("hi", group="g")
        assert trace(r.attempts) == [("g.echelon1_m-a", "auth_error"), ("g.echelon1_m-b", None)]
        results = await asyncio.gather(*(router.chat("hi", group="g") for _ in range(30)))
        assert all(trace(r.attempts) == [("g.echelon1_m-b", None)] for r in results)
        assert instance_status(router, "g", "g.echelon1_m-a")["status"] == "failed"
    assert requests(mock, "m-a") == 1
    assert requests(mock, "m-b") == 31


# -- 14. All targets down ----------------------------------------------------------------------

async def test_s14_all_targets_down_fails_within_the_deadline_with_the_full_trace(mock):
    for m in ("m-a", "m-b", "m-c", "m-big"):
        mock.script(m, {"fault": "server_error", "status": 502})
    async with router_for(mock) as router:
        t0 = time.monotonic()
        with pytest.raises(echelon.AllTargetsFailed) as ei:
            await router.chat("hi", group="g", timeout=3)
        assert time.monotonic() - t0 < 3 * 3
        e = ei.value
        assert e.last_kind == "server_error"
        # echelon1 tries both models (1 + max_retries), then each lower echelon twice.
        assert trace(e.attempts) == [
            ("g.echelon1_m-a", "server_error"), ("g.echelon1_m-b", "server_error"),
            ("g.echelon2_m-c", "server_error"), ("g.echelon2_m-c", "server_error"),
            ("g.echelon3_m-big", "server_error"), ("g.echelon3_m-big", "server_error"),
        ]
        assert [a.target for a in e.attempts] == ["g.echelon1"] * 2 + ["g.echelon2"] * 2 + ["g.echelon3"] * 2
        # Everything hangs: the call deadline ends it, no hang.
        for m in ("m-a", "m-b", "m-c", "m-big"):
            mock.script(m, {"fault": "hang"})
        t0 = time.monotonic()
        with pytest.raises(echelon.EchelonError) as ei:
            await router.chat("hi", group="g", timeout=0.5)
        elapsed = time.monotonic() - t0
        assert 0.5 - 0.01 <= elapsed < 0.5 * 10
        assert ei.value.attempts and ei.value.attempts[-1].error == "timeout"
    got = {m: model_counters(mock, m)["statuses"].get("502", 0) for m in ("m-a", "m-b", "m-c", "m-big")}
    assert got == {"m-a": 1, "m-b": 1, "m-c": 2, "m-big": 2}


# -- 15. Saturation ----------------------------------------------------------------------------

async def test_s15_saturation_pool_exhausted_immediately_and_queue_timeout(mock):
    mock.script("m-a", {"latency_ms": 1500})
    groups = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 2}}}
    pools = {"p": {"task_groups": ["solo"], "performance": {"queue_size": 2}}}
    async with router_for(mock, groups=groups, pools=pools) as router:
        tasks = [asyncio.ensure_future(router.chat("hi", pool="p", timeout=10)) for _ in range(4)]
        assert await eventually(lambda: router.pool("p").status()["queue_length"] == 2)
        with pytest.raises(echelon.PoolExhausted) as ei:
            await router.chat("hi", pool="p")
        # Immediately: it did not wait for a slot (none of the 1.5 s requests has finished).
        assert not any(t.done() for t in tasks)
        assert ei.value.attempts and ei.value.attempts[0].error == "pool_exhausted"
        done = await asyncio.gather(*tasks)
        assert all(r.served_by == "solo.echelon1_m-a" for r in done)
        assert model_counters(mock, "m-a")["max_in_flight"] == 2
        assert requests(mock, "m-a") == 4
        # Queue deadline: a caller whose deadline passes while queued gets QueueTimeout.
        tasks = [asyncio.ensure_future(router.chat("hi", pool="p", timeout=10)) for _ in range(2)]
        assert await eventually(lambda: router.pool("p").status()["in_flight"] == 2)
        t0 = time.monotonic()
        with pytest.raises(echelon.QueueTimeout):
            await router.chat("hi", pool="p", timeout=0.2)
        assert time.monotonic() - t0 >= 0.2 - 0.01
        await asyncio.gather(*tasks)
        st = router.pool("p").status()
        assert st["in_flight"] == 0 and st["queue_length"] == 0
    assert model_counters(mock, "m-a")["max_in_flight"] == 2
    assert requests(mock, "m-a") == 6


# -- 16. Caller cancellation -------------------------------------------------------------------

async def test_s16_caller_cancellation_mid_request_and_mid_stream(mock):
    mock.script("m-a", {"latency_ms": 3000})
    async with router_for(mock) as router:
        task = asyncio.ensure_future(router.chat("hi", group="solo"))
        assert await eventually(lambda: model_counters(mock, "m-a")["in_flight"] == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: instance_status(router, "solo", "solo.echelon1_m-a")["in_flight"] == 0)
        inst = instance_status(router, "solo", "solo.echelon1_m-a")
        assert inst["breaker"]["failure_count"] == 0 and inst["breaker"]["state"] == "CLOSED"
        assert inst["status"] == "healthy"
        assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 1)

        # Mid-stream: the consumer task is cancelled after the first delta.
        mock.script("m-a", {"chunks": 50, "chunk_delay_ms": 100})
        first = asyncio.Event()

        async def consume() -> None:
            async for c in router.stream("hi", group="solo"):
                if c.text:
                    first.set()

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: instance_status(router, "solo", "solo.echelon1_m-a")["in_flight"] == 0)
        inst = instance_status(router, "solo", "solo.echelon1_m-a")
        assert inst["breaker"]["failure_count"] == 0 and inst["status"] == "healthy"
        assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 2)
        assert model_counters(mock, "m-a")["streams_completed"] == 0
        # The slot is usable again.
        mock.script("m-a", {})
        assert (await router.chat("hi", group="solo")).served_by == "solo.echelon1_m-a"
    assert requests(mock, "m-a") == 3


async def test_s16_cancelling_a_batch_aborts_every_request_in_it(mock):
    mock.script("m-a", {"latency_ms": 3000})
    async with router_for(mock) as router:
        reqs = [{"messages": "hi", "group": "solo"}] * 6
        task = asyncio.ensure_future(router.batch(reqs, concurrency=3))
        assert await eventually(lambda: model_counters(mock, "m-a")["in_flight"] == 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 3)
        assert await eventually(lambda: instance_status(router, "solo", "solo.echelon1_m-a")["in_flight"] == 0)
        inst = instance_status(router, "solo", "solo.echelon1_m-a")
        assert inst["breaker"]["failure_count"] == 0 and inst["status"] == "healthy"
        # The three not yet started never reach the provider.
        await asyncio.sleep(0.2)
        assert requests(mock, "m-a") == 3
        mock.script("m-a", {})
        assert (await router.chat("hi", group="solo")).served_by == "solo.echelon1_m-a"


# -- Hedging -----------------------------------------------------------------------------------

def hedge_groups() -> Dict[str, Any]:
    return two_tier(["m-a"], ["m-b"], hedge_after_ms=150)


async def test_hedge_chat_second_target_wins_and_the_slow_primary_is_cancelled(mock):
    mock.script("m-a", {"latency_ms": 3000})
    async with router_for(mock, groups=hedge_groups()) as router:
        t0 = time.monotonic()
        r = await router.chat("hi", group="t")
        assert time.monotonic() - t0 >= 0.15
        assert r.served_by == "t.echelon2_m-b"
        assert trace(r.attempts) == [("t.echelon1_m-a", "cancelled"), ("t.echelon2_m-b", None)]
        assert [a.role for a in r.attempts] == ["hedge", "hedge"]
        assert r.attempts[1].started_after >= 0.15
        assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 1)
        a = instance_status(router, "t", "t.echelon1_m-a")
        assert a["in_flight"] == 0 and a["breaker"]["failure_count"] == 0 and a["status"] == "healthy"
        # A fast primary is never hedged.
        mock.script("m-a", {})
        r = await router.chat("hi", group="t")
        assert trace(r.attempts) == [("t.echelon1_m-a", None)]
    assert requests(mock, "m-a") == 2 and requests(mock, "m-b") == 1


async def test_hedge_stream_second_target_wins_and_the_slow_primary_is_cancelled(mock):
    mock.script("m-a", {"ttft_ms": 3000})
    async with router_for(mock, groups=hedge_groups()) as router:
        chunks = [c async for c in router.stream("hi", group="t")]
        text = "".join(c.text for c in chunks)
        assert text.startswith("Hello from m-b")
        final = chunks[-1].response
        assert final is not None and final.served_by == "t.echelon2_m-b"
        assert trace(final.attempts) == [("t.echelon1_m-a", "cancelled"), ("t.echelon2_m-b", None)]
        assert "hedge" in [a.role for a in final.attempts]
        assert await eventually(lambda: model_counters(mock, "m-a")["client_disconnects"] == 1)
        for inst in ("t.echelon1_m-a", "t.echelon2_m-b"):
            s = instance_status(router, "t", inst)
            assert s["in_flight"] == 0 and s["breaker"]["failure_count"] == 0
    assert model_counters(mock, "m-a")["streams_completed"] == 0
    assert model_counters(mock, "m-b")["streams_completed"] == 1


# -- Fallback strategies (issue 5) -------------------------------------------------------------

def strategy_config(mock: MockProvider, strategy: str, **fallback: Any) -> Dict[str, Any]:
    fb = {"strategy": strategy, "max_attempts": 5, "retry_delay": 0.0}
    fb.update(fallback)
    groups = {
        "s": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1, "max_retries": 0},
              "echelon2": {"models": ["m-c"], "priority": 2},
              "echelon3": {"models": ["m-big"], "priority": 3},
              "circuit_breaker": {"failure_threshold": 50, "recovery_time": 30},
              "fallback_config": fb},
        "other": {"echelon1": {"models": ["m-d"], "priority": 1}},
        "third": {"echelon1": {"models": ["m-e"], "priority": 1}},
    }
    cfg = mock_config(mock.openai_base_url, groups=groups, pools={})
    cfg["providers"]["mock"]["m-d"] = {"model": "m-d"}
    cfg["providers"]["mock"]["m-e"] = {"model": "m-e"}
    # A second provider on the same mock, for provider failover.
    cfg["providers"]["mock2"] = {
        "common": dict(cfg["providers"]["mock"]["common"]),
        "m2-x": {"model": "m2-x"},
    }
    return cfg


async def test_strategy_echelon_down_walks_the_echelons_in_priority_order(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    mock.script("m-c", {"fault": "server_error", "status": 503})
    async with Router.from_dict(strategy_config(mock, "echelon_down")) as router:
        r = await router.chat("hi", group="s")
        # No retries on echelon1: the first failure moves down, skipping m-b.
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("s.echelon2_m-c", "server_error"),
                                     ("s.echelon2_m-c", "server_error"), ("s.echelon3_m-big", None)]
        assert [a.target for a in r.attempts] == ["s.echelon1", "s.echelon2", "s.echelon2", "s.echelon3"]
        assert [a.role for a in r.attempts] == ["primary", "fallback", "retry", "fallback"]
    assert (requests(mock, "m-a"), requests(mock, "m-b"), requests(mock, "m-c"), requests(mock, "m-big")) == (1, 0, 2, 1)


async def test_strategy_model_rotate_tries_the_other_models_of_the_echelon_first(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    async with Router.from_dict(strategy_config(mock, "model_rotate")) as router:
        r = await router.chat("hi", group="s")
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("s.echelon1_m-b", None)]
        mock.script("m-b", {"fault": "server_error", "status": 503})
        r = await router.chat("hi", group="s")
        assert [a.instance for a in r.attempts[:2]] in (
            ["s.echelon1_m-a", "s.echelon1_m-b"], ["s.echelon1_m-b", "s.echelon1_m-a"])
        assert trace(r.attempts)[2:] == [("s.echelon2_m-c", None)]
    assert (requests(mock, "m-a"), requests(mock, "m-b"), requests(mock, "m-c")) == (2, 2, 1)


async def test_strategy_provider_failover_prefers_another_provider(mock):
    cfg = strategy_config(mock, "provider_failover")
    cfg["groups"]["s"]["echelon1"] = {"models": ["m-a", "m-b", "m2-x"], "priority": 1, "max_retries": 2}
    mock.script("m-a", {"fault": "server_error", "status": 503})
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="s")
        # m-a (provider mock) failed: the next try goes to mock2's model, not to m-b.
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("s.echelon1_m2-x", None)]
        mock.script("m2-x", {"fault": "server_error", "status": 503})
        mock.script("m-b", {"fault": "server_error", "status": 503})
        r = await router.chat("hi", group="s")
        assert r.served_by == "s.echelon2_m-c"
        assert sorted(a.instance for a in r.attempts[:3]) == ["s.echelon1_m-a", "s.echelon1_m-b", "s.echelon1_m2-x"]
    # Control: echelon_down with the same failures retries within the provider.
    mock.reset(scripts=True)
    cfg["groups"]["s"]["fallback_config"]["strategy"] = "echelon_down"
    mock.script("m-a", {"fault": "server_error", "status": 503})
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="s")
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("s.echelon1_m-b", None)]


async def test_strategy_task_group_switch_uses_configured_then_caller_fallback_groups(mock):
    cfg = strategy_config(mock, "task_group_switch", fallback_groups=["other"])
    cfg["groups"]["s"]["echelon1"]["models"] = ["m-a"]
    mock.script("m-a", {"fault": "server_error", "status": 503})
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="s")
        # Only the group's first echelon, then the configured fallback group.
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("other.echelon1_m-d", None)]
        assert [a.target for a in r.attempts] == ["s.echelon1", "other.echelon1"]
        # The caller's fallback_groups take precedence over the configured ones.
        r = await router.chat("hi", group="s", fallback_groups=["third"])
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("third.echelon1_m-e", None)]
    assert (requests(mock, "m-a"), requests(mock, "m-b"), requests(mock, "m-c"), requests(mock, "m-d"), requests(mock, "m-e")) == (2, 0, 0, 1, 1)


async def test_strategy_retry_delay_is_waited_between_targets(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    mock.script("m-b", {"fault": "server_error", "status": 503})
    async with Router.from_dict(strategy_config(mock, "echelon_down", retry_delay=0.3)) as router:
        r = await router.chat("hi", group="s")
        assert trace(r.attempts) == [("s.echelon1_m-a", "server_error"), ("s.echelon2_m-c", None)]
        gap = r.attempts[1].started_after - (r.attempts[0].started_after + r.attempts[0].latency)
        assert gap >= 0.3 - 0.005


async def test_strategy_deadline_is_honoured_across_the_chain(mock):
    for m in ("m-a", "m-b", "m-c", "m-big"):
        mock.script(m, {"fault": "server_error", "status": 503})
    # A retry delay longer than the deadline: the chain stops instead of sleeping past it.
    async with Router.from_dict(strategy_config(mock, "echelon_down", retry_delay=2.0)) as router:
        t0 = time.monotonic()
        with pytest.raises(echelon.EchelonError) as ei:
            await router.chat("hi", group="s", timeout=0.5)
        assert time.monotonic() - t0 < 0.5 * 4
        assert trace(ei.value.attempts) == [("s.echelon1_m-a", "server_error")]
    assert requests(mock, "m-c") == 0
