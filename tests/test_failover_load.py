"""Failover under contention: the scenarios of the "failover that holds under load" issue, each
through real HTTP to the mock provider, most with tens of concurrent calls.

No timing assertions: waits are bounded (``asyncio.wait_for``), and a call that hangs fails
the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, Callable, Dict, List

import pytest

import echelon
from echelon import Router
from conftest import mock_config, model_counters

BOUND = 10.0  # seconds any single await below may take before the test fails


def requests(mock: Any, model: str) -> int:
    return int(model_counters(mock, model)["requests"])


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


def base(mock: Any, groups: Dict[str, Any], pools: Dict[str, Any] | None = None, **model_keys: Dict[str, Any]) -> Dict[str, Any]:
    cfg = mock_config(mock.openai_base_url)
    cfg["groups"] = groups
    cfg["pools"] = pools or {}
    for model, keys in model_keys.items():
        cfg["providers"]["mock"][model.replace("_", "-")].update(keys)
    return cfg


def breaker(router: Router, group: str, instance: str) -> Dict[str, Any]:
    return router.group(group).breaker_status()[instance]


def queued(router: Router, group: str) -> int:
    """Callers waiting at the group's echelons."""
    return sum(int(e["queue_length"]) for e in router.group(group).status()["echelons"])


def instance(router: Router, group: str, instance_id: str) -> Dict[str, Any]:
    for e in router.group(group).status()["echelons"]:
        for i in e["instances"]:
            if i["instance_id"] == instance_id:
                return i
    raise KeyError(instance_id)


# -- 1. An open primary and a busy fallback ----------------------------------------------------

async def test_an_open_primary_and_a_busy_fallback_serve_every_call_through_the_fallback(mock):
    mock.script("m-a", {"fault": "server_error", "status": 500})
    mock.script("m-b", {"latency_ms": 30})
    cfg = base(
        mock,
        {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
               "echelon2": {"models": ["m-b"], "priority": 2},
               "circuit_breaker": {"failure_threshold": 2, "recovery_time": 60}}},
        m_a={"max_concurrency": 2},
        m_b={"max_concurrency": 2},
    )
    async with Router.from_dict(cfg) as router:
        results = await asyncio.wait_for(
            asyncio.gather(*(router.chat("hi", group="g", timeout=10) for _ in range(60)), return_exceptions=True), 30
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        assert {r.served_by for r in results} == {"g.echelon2_m-b"}
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "OPEN"
    assert mock.counters("m-b")["max_in_flight"] <= 2, "the fallback's limit held"
    assert requests(mock, "m-a") <= 4, "the open primary got no traffic once open"


# -- 2. Lost wake-ups ------------------------------------------------------------------------

async def test_a_model_slot_freed_in_one_group_wakes_a_caller_waiting_in_another(mock):
    mock.script("m-a", {"steps": [{"fault": "ok", "latency_ms": 300}], "then": "ok"})
    cfg = base(
        mock,
        {"g1": {"echelon1": {"models": ["m-a"], "priority": 1}},
         "g2": {"echelon1": {"models": ["m-a"], "priority": 1}}},
        m_a={"max_concurrency": 1},
    )
    async with Router.from_dict(cfg) as router:
        first = asyncio.ensure_future(router.chat("hi", group="g1"))
        assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 1)
        # No deadline: only the release of g1's call can wake this one.
        second = asyncio.ensure_future(router.chat("hi", group="g2"))
        r2 = await asyncio.wait_for(second, BOUND)
        r1 = await asyncio.wait_for(first, BOUND)
        assert (r1.served_by, r2.served_by) == ("g1.echelon1_m-a", "g2.echelon1_m-a")
    assert mock.counters("m-a")["max_in_flight"] == 1


async def test_a_call_in_flight_across_a_reload_wakes_the_caller_queued_on_the_new_engine(mock):
    mock.script("m-a", {"steps": [{"fault": "ok", "latency_ms": 300}], "then": "ok"})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 1}}})
    async with Router.from_dict(cfg) as router:
        first = asyncio.ensure_future(router.chat("hi", group="g"))
        assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 1)
        router.reload(cfg)
        second = asyncio.ensure_future(router.chat("hi", group="g"))
        assert await eventually(lambda: instance(router, "g", "g.echelon1_m-a")["waiting"] == 1)
        assert not first.done(), "the first call must still be in flight on the old engine"
        await asyncio.wait_for(second, BOUND)
        await asyncio.wait_for(first, BOUND)
    assert mock.counters("m-a")["max_in_flight"] == 1


async def test_raising_a_limit_by_reload_admits_a_waiting_caller_at_once(mock):
    mock.script("m-a", {"steps": [{"fault": "ok", "latency_ms": 3000}], "then": "ok"})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 1}}})
    async with Router.from_dict(cfg) as router:
        slow = asyncio.ensure_future(router.chat("hi", group="g"))
        assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 1)
        waiting = asyncio.ensure_future(router.chat("hi", group="g"))
        assert await eventually(lambda: instance(router, "g", "g.echelon1_m-a")["waiting"] == 1)
        cfg["groups"]["g"]["echelon1"]["concurrency_limit"] = 2
        router.reload(cfg)
        await asyncio.wait_for(waiting, BOUND)
        assert not slow.done(), "the waiter went in beside the slow call, not after it"
        await asyncio.wait_for(slow, BOUND)


async def test_cancelling_a_queued_caller_keeps_the_line_moving_in_order(mock):
    mock.script("m-a", {"latency_ms": 100})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}}}, m_a={"max_concurrency": 1})
    done: List[int] = []
    async with Router.from_dict(cfg) as router:
        async def call(n: int) -> None:
            await router.chat(f"hi {n}", group="g")
            done.append(n)

        tasks = []
        for n in range(6):
            tasks.append(asyncio.ensure_future(call(n)))
            # Arrive one after another, so the order in line is known.
            expect = n
            if n == 0:
                assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 1)
            assert await eventually(lambda: queued(router, "g") == expect)
        assert queued(router, "g") == 5
        tasks[2].cancel()
        tasks[4].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND)
        assert done == [0, 1, 3, 5], "first come, first served; the cancelled ones left the line"
        snap = instance(router, "g", "g.echelon1_m-a")
        assert (snap["in_flight"], snap["waiting"], queued(router, "g")) == (0, 0, 0)
    assert requests(mock, "m-a") == 4


async def test_the_queue_bound_is_exact_under_a_burst(mock):
    mock.script("m-a", {"latency_ms": 200})
    cfg = base(
        mock,
        {"q": {"echelon1": {"models": ["m-a"], "priority": 1}}},
        {"qp": {"task_groups": ["q.echelon1"], "performance": {"queue_size": 5}, "health_check": {"enabled": False},
                "fallback_config": {"strategy": "instance_rotation", "max_instance_attempts": 1}}},
        m_a={"max_concurrency": 1},
    )
    async with Router.from_dict(cfg) as router:
        results = await asyncio.wait_for(
            asyncio.gather(*(router.chat("hi", pool="qp", timeout=20) for _ in range(40)), return_exceptions=True), 30
        )
        ok = [r for r in results if isinstance(r, echelon.Response)]
        full = [r for r in results if isinstance(r, echelon.PoolExhausted)]
        assert (len(ok), len(full)) == (6, 34), [type(r).__name__ for r in results]
        assert router.pool("qp").status()["queue_length"] == 0
    assert mock.counters("m-a")["max_in_flight"] == 1


# -- 3. Waiting instead of falling back --------------------------------------------------------

async def test_a_cooling_primary_is_passed_over_while_the_fallback_is_idle(mock):
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "30"}], "then": "ok"})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}, "echelon2": {"models": ["m-b"], "priority": 2}}})
    async with Router.from_dict(cfg) as router:
        r = await asyncio.wait_for(router.chat("hi", group="g", timeout=3), BOUND)
        assert r.served_by == "g.echelon2_m-b"
        for _ in range(20):
            r = await asyncio.wait_for(router.chat("hi", group="g", timeout=3), BOUND)
            assert r.served_by == "g.echelon2_m-b"
            assert [(a.target, a.error) for a in r.attempts] == [("g.echelon1", "rate_limited"), ("g.echelon2", None)]
    assert requests(mock, "m-a") == 1


async def test_an_exhausted_rpm_window_spills_to_the_next_echelon_under_load(mock):
    mock.script("m-b", {"latency_ms": 20})
    cfg = base(
        mock,
        {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "rpm_limit": 5},
               "echelon2": {"models": ["m-b"], "priority": 2}}},
    )
    async with Router.from_dict(cfg) as router:
        results = await asyncio.wait_for(asyncio.gather(*(router.chat("hi", group="g", timeout=5) for _ in range(40))), 30)
        served = [r.served_by for r in results]
        assert served.count("g.echelon1_m-a") == 5
        assert served.count("g.echelon2_m-b") == 35
    assert requests(mock, "m-a") == 5


# -- 4. (Retry-After bounds: tests/test_reliability.py s02c, s02d) -----------------------------

# -- 5. The caller's deadline mid-stream -------------------------------------------------------

async def test_the_callers_deadline_mid_stream_is_not_held_against_the_instance(mock):
    mock.script("m-a", {"chunks": 10, "chunk_delay_ms": 200})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1},
                            "circuit_breaker": {"failure_threshold": 1, "recovery_time": 60}}})
    async with Router.from_dict(cfg) as router:
        got: List[str] = []
        with pytest.raises(echelon.Timeout) as ei:
            async for chunk in router.stream("hi", group="g", timeout=0.6):
                got.append(chunk.text)
        assert ei.value.timeout_kind == "deadline"
        assert got and ei.value.partial == "".join(got)
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "CLOSED"
        r = await router.chat("hi", group="g", timeout=10)
        assert r.served_by == "g.echelon1_m-a"


# -- 6. A content filter mid-stream ------------------------------------------------------------

async def test_a_content_filter_mid_stream_raises_content_filtered_with_the_partial_text(mock):
    mock.script("m-a", {"fault": "filter_after", "after": 2, "chunks": 6})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}, "echelon2": {"models": ["m-b"], "priority": 2},
                            "circuit_breaker": {"failure_threshold": 1, "recovery_time": 60}}})
    async with Router.from_dict(cfg) as router:
        got: List[str] = []
        with pytest.raises(echelon.ContentFiltered) as ei:
            async for chunk in router.stream("hi", group="g", timeout=10):
                got.append(chunk.text)
        assert len(got) == 2 and ei.value.partial == "".join(got)
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "CLOSED", "a filter is not a provider fault"
    assert requests(mock, "m-b") == 0, "the answer was refused, not failed: no fallback after the first token"


# -- 7. Cancelling a read ----------------------------------------------------------------------

async def test_a_cancelled_first_read_goes_on_from_where_it_was(mock):
    mock.script("m-a", {"ttft_ms": 300, "chunks": 4})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}}})
    async with Router.from_dict(cfg) as router:
        expected = (await router.chat("hi", group="g")).content
        s = router.stream("hi", group="g")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(s.__anext__(), 0.05)
        text = await asyncio.wait_for(s.text(), BOUND)
        assert text and text.startswith("Hello from m-a")
        assert len(text) == len(expected)
    assert requests(mock, "m-a") == 2, "the stream was not sent twice"


async def test_cancelled_reads_mid_stream_lose_no_chunk(mock):
    mock.script("m-a", {"chunks": 6, "chunk_delay_ms": 80})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}}})
    async with Router.from_dict(cfg) as router:
        expected = (await router.chat("hi", group="g")).content
        s = router.stream("hi", group="g")
        parts: List[str] = []
        final = None
        while final is None:
            try:
                chunk = await asyncio.wait_for(s.__anext__(), 0.03)
            except asyncio.TimeoutError:
                continue
            if chunk.is_final:
                final = chunk.response
            else:
                parts.append(chunk.text)
        assert "".join(parts) == final.content
        assert len(final.content) == len(expected)


# -- 8. Statistics count streams ---------------------------------------------------------------

async def test_pool_and_group_statistics_count_streams_and_the_pool_reports_concurrency_status(mock):
    cfg = mock_config(mock.openai_base_url)
    async with Router.from_dict(cfg) as router:
        for _ in range(3):
            await router.stream("hi", pool="p").text()
        mock.script("m-a", {"fault": "cut_after", "after": 1})
        mock.script("m-b", {"fault": "cut_after", "after": 1})
        with pytest.raises(echelon.StreamInterrupted):
            await router.stream("hi", pool="p").text()
        st = router.pool("p").status()
        assert (st["stats"]["total_requests"], st["stats"]["successful_requests"], st["stats"]["failed_requests"]) == (4, 3, 1)
        cs = st["concurrency_status"]
        assert set(cs) == {"concurrency", "rate_limit"}
        assert set(cs["concurrency"]) == {"limit", "current", "available", "queue_size"}
        assert cs["rate_limit"] == {"enabled": False}
        mock.reset(scripts=True)
        await router.stream("hi", group="solo").text()
        hist = router.group("solo").fallback_history()
        assert hist and hist[-1]["success"] is True


async def test_an_abandoned_stream_counts_as_neither_success_nor_failure(mock):
    cfg = mock_config(mock.openai_base_url)
    mock.script("m-a", {"chunks": 8, "chunk_delay_ms": 50})
    mock.script("m-b", {"chunks": 8, "chunk_delay_ms": 50})
    async with Router.from_dict(cfg) as router:
        async with router.stream("hi", pool="p") as s:
            await s.__anext__()
        st = router.pool("p").status()
        assert st["stats"]["total_requests"] == 0
        assert all(i["in_flight"] == 0 for i in st["instances"])


# -- Breakers, budgets and chains --------------------------------------------------------------

async def test_a_half_open_probe_that_is_a_stream_closes_the_breaker_at_its_first_token(mock):
    mock.script("m-a", {"steps": [{"fault": "server_error", "status": 500}], "then": {"fault": "ok", "chunks": 10, "chunk_delay_ms": 100}})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                            "circuit_breaker": {"failure_threshold": 1, "recovery_time": 0.3}}})
    async with Router.from_dict(cfg) as router:
        with pytest.raises(echelon.ServerError):
            await router.chat("hi", group="g")
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "OPEN"
        assert await eventually(lambda: breaker(router, "g", "g.echelon1_m-a")["state"] == "HALF_OPEN")
        async with router.stream("hi", group="g") as s:
            first = await asyncio.wait_for(s.__anext__(), BOUND)
            assert first.text
        # The client stopped reading after one chunk; the provider did answer.
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "CLOSED"


async def test_unused_token_estimates_are_given_back_when_calls_fail(mock):
    # 600 TPM and ~257 estimated tokens per call: two estimates fit at once. Failed calls
    # spend nothing, so m-a keeps getting tried.
    mock.script("m-a", {"steps": [{"fault": "server_error", "status": 500, "times": 5}], "then": "ok"})
    cfg = base(
        mock,
        {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
               "echelon2": {"models": ["m-b"], "priority": 2},
               "circuit_breaker": {"failure_threshold": 50, "recovery_time": 60}}},
        m_a={"tpm": 600},
    )
    async with Router.from_dict(cfg) as router:
        for _ in range(5):
            r = await router.chat("hi", group="g", timeout=10)
            assert r.served_by == "g.echelon2_m-b"
        r = await router.chat("hi", group="g", timeout=10)
        assert r.served_by == "g.echelon1_m-a"
        left = instance(router, "g", "g.echelon1_m-a")["tpm_remaining"]
        assert left == 600 - r.usage.total_tokens, "charged the real usage of the one success"
    assert requests(mock, "m-a") == 6


async def test_unused_token_estimates_are_given_back_when_calls_are_cancelled(mock):
    mock.script("m-a", {"latency_ms": 2000})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}}}, m_a={"tpm": 10_000})
    async with Router.from_dict(cfg) as router:
        tasks = [asyncio.ensure_future(router.chat("hi", group="g")) for _ in range(20)]
        assert await eventually(lambda: mock.counters("m-a")["in_flight"] == 20)
        assert instance(router, "g", "g.echelon1_m-a")["tpm_remaining"] < 10_000
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The engine tasks are aborted on the runtime right after the Python side cancels.
        assert await eventually(lambda: instance(router, "g", "g.echelon1_m-a")["tpm_remaining"] == 10_000)


async def test_task_group_switch_tries_each_fallback_group_within_max_attempts(mock):
    mock.script("m-a", {"fault": "server_error", "status": 500})
    mock.script("m-b", {"fault": "server_error", "status": 500})
    cfg = base(mock, {
        "a": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
              "fallback_config": {"strategy": "task_group_switch", "fallback_groups": ["b", "c"], "max_attempts": 3}},
        "b": {"echelon1": {"models": ["m-b"], "priority": 1, "max_retries": 0},
              "echelon2": {"models": ["m-b"], "priority": 2, "max_retries": 0},
              "echelon3": {"models": ["m-b"], "priority": 3, "max_retries": 0}},
        "c": {"echelon1": {"models": ["m-c"], "priority": 1}},
    })
    async with Router.from_dict(cfg) as router:
        r = await router.chat("hi", group="a", timeout=10)
        assert r.served_by == "c.echelon1_m-c"
        assert [a.target for a in r.attempts] == ["a.echelon1", "b.echelon1", "c.echelon1"]


async def test_provider_failover_still_tries_the_same_provider_when_the_others_are_down(mock):
    mock.script("m2-x", {"fault": "server_error", "status": 500})
    cfg = base(mock, {"s": {"echelon1": {"models": ["m-a", "m2-x", "m-b"], "priority": 1, "max_retries": 2},
                            "echelon2": {"models": ["m-c"], "priority": 2},
                            "circuit_breaker": {"failure_threshold": 1, "recovery_time": 60},
                            "fallback_config": {"strategy": "provider_failover"}}})
    cfg["providers"]["mock2"] = {"common": dict(cfg["providers"]["mock"]["common"]), "m2-x": {"model": "m2-x"}}
    async with Router.from_dict(cfg) as router:
        # Open m2-x's breaker (the only instance of the other provider).
        with pytest.raises(echelon.EchelonError):
            await router.chat("hi", route="instance:s.echelon1_m2-x")
        assert breaker(router, "s", "s.echelon1_m2-x")["state"] == "OPEN"
        mock.script("m-a", {"fault": "server_error", "status": 500})
        r = await router.chat("hi", group="s", timeout=10)
        # m-a failed; the other provider is down, so the same provider's m-b is tried rather
        # than skipped.
        assert r.served_by == "s.echelon1_m-b"


async def test_pool_health_checks_and_the_breaker_agree_on_when_an_instance_is_out(mock):
    mock.script("m-a", {"fault": "server_error", "status": 500})
    cfg = base(
        mock,
        {"h": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
               "circuit_breaker": {"failure_threshold": 5, "recovery_time": 60}}},
        {"hp": {"task_groups": ["h.echelon1"], "rotation_strategy": "round_robin",
                "health_check": {"interval": 60, "failure_threshold": 3, "recovery_time": 60},
                "fallback_config": {"strategy": "instance_rotation", "max_instance_attempts": 1}}},
    )
    async with Router.from_dict(cfg) as router:
        def status() -> str:
            return {i["instance_id"]: i for i in router.pool("hp").instances()}["h.echelon1_m-a"]["status"]

        failures = 0
        while failures < 4:
            try:
                await router.chat("hi", pool="hp", timeout=10)
            except echelon.ServerError:
                failures += 1
        assert status() == "degraded", "4 failures: under the breaker's 5, still in rotation"
        while failures < 5:
            try:
                await router.chat("hi", pool="hp", timeout=10)
            except echelon.ServerError:
                failures += 1
        assert status() == "unhealthy"
        for _ in range(6):
            r = await router.chat("hi", pool="hp", timeout=10)
            assert r.served_by == "h.echelon1_m-b"


async def test_direct_routes_stay_bounded_however_many_model_strings_callers_send(mock):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        for i in range(300):
            r = await router.chat("hi", model=f"mock:m-{i}")
            assert r.served_by == f"direct.mock:m-{i}"
        assert router.status()["direct_routes"] <= 256


async def test_an_engine_panic_reaches_python_as_internal_error_and_is_logged(caplog):
    from echelon import _core
    from echelon.router import _completer

    completer = _completer()
    fut, _ = _core._panic_for_tests(completer, "route group:g")
    with pytest.raises(echelon.InternalError) as ei:
        await asyncio.wait_for(fut, BOUND)
    assert "group:g" in str(ei.value)
    assert completer.pending_count() == 0


async def test_a_pool_rate_limit_admits_callers_in_order_at_its_rate_and_refuses_what_cannot_fit(mock):
    cfg = mock_config(mock.openai_base_url)
    cfg["pools"]["p"]["rate_limiting"] = {"algorithm": "sliding_window", "sliding_window": {"window_size": 0.5, "max_requests": 4}}
    cfg["pools"]["p"]["performance"] = {"queue_size": 6}
    started: Dict[int, float] = {}
    async with Router.from_dict(cfg) as router:
        async def call(n: int) -> Any:
            started[n] = time.monotonic()
            return await router.chat(f"hi {n}", pool="p", timeout=5)

        tasks = []
        for n in range(14):
            tasks.append(asyncio.ensure_future(call(n)))
            # The first four are spread out, so the window frees one place at a time.
            await asyncio.sleep(0.06 if n < 4 else 0.002)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        served = [n for n, r in enumerate(results) if isinstance(r, echelon.Response)]
        full = [n for n, r in enumerate(results) if isinstance(r, echelon.PoolExhausted)]
        # 4 go at once, 6 wait in line (served as the window slides), 4 find the line full.
        assert (len(served), len(full)) == (10, 4), [type(r).__name__ for r in results]
        assert served == list(range(10)) and full == list(range(10, 14))
        # When each waiter got through: its call's start plus the wait before its attempt.
        admitted = {n: started[n] + results[n].attempts[-1].started_after for n in range(4, 10)}
        assert sorted(admitted, key=admitted.__getitem__) == list(range(4, 10)), "first come, first served"
        st = router.pool("p").status()
        assert st["queue_length"] == 0
        assert st["concurrency_status"]["rate_limit"]["algorithm"] == "sliding_window"
    assert requests(mock, "m-a") + requests(mock, "m-b") == 10


async def test_closing_a_stream_ends_a_read_in_progress_and_happens_even_if_the_close_is_cancelled(mock):
    mock.script("m-a", {"chunks": 10, "chunk_delay_ms": 400})
    cfg = base(mock, {"g": {"echelon1": {"models": ["m-a"], "priority": 1}}})
    async with Router.from_dict(cfg) as router:
        s = router.stream("hi", group="g")
        await asyncio.wait_for(s.__anext__(), BOUND)
        reader = asyncio.ensure_future(s.__anext__())  # waits for a slow chunk
        await asyncio.sleep(0.02)
        closing = asyncio.ensure_future(s.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(reader, BOUND)
        assert await eventually(lambda: instance(router, "g", "g.echelon1_m-a")["in_flight"] == 0)
        assert await eventually(lambda: mock.counters("m-a")["client_disconnects"] == 1)
        with pytest.raises(StopAsyncIteration):
            await s.__anext__()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_new_breaker_settings_on_reload_keep_the_breaker_and_its_waiters(mock, backend, request):
    """A reload that changes a group's breaker settings changes the breaker in place: an open
    one stays open (nothing is sent to the failing instance), and a call waiting for a
    half-open probe slot of the replaced engine is served once the probe closes it, with the
    state in memory or in Redis. (It used to get a new, closed breaker, and the waiter was left
    on the old one, which nothing reported to any more: it waited forever without a deadline.)"""
    groups = {"g": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                    "circuit_breaker": {"failure_threshold": 1, "recovery_time": 0.3, "half_open_requests": 1}}}
    cfg = base(mock, groups)
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        cfg["global"] = {"state": {"backend": "redis", "url": server.url, "key_prefix": f"reload-breaker-{time.time_ns()}"}}
    mock.script("m-a", {"steps": [{"fault": "server_error", "status": 500}, {"fault": "ok", "latency_ms": 400}], "then": "ok"})
    async with Router.from_dict(cfg) as router:
        with pytest.raises(echelon.ServerError):
            await asyncio.wait_for(router.chat("hi", group="g"), BOUND)
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "OPEN"
        reopened = copy.deepcopy(cfg)
        reopened["groups"]["g"]["circuit_breaker"]["failure_threshold"] = 2
        router.reload(reopened)
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "OPEN", "new settings do not close an open breaker"
        with pytest.raises(echelon.CircuitOpen):
            await asyncio.wait_for(router.chat("hi", group="g"), BOUND)
        assert requests(mock, "m-a") == 1
        await asyncio.sleep(0.35)
        # Half-open: the probe (slow) goes out; a second call without a deadline waits for it.
        probe = asyncio.ensure_future(router.chat("hi", group="g"))
        assert await eventually(lambda: requests(mock, "m-a") == 2)
        waiter = asyncio.ensure_future(router.chat("hi", group="g"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        # Another reload changes the settings again while both are under way.
        again = copy.deepcopy(reopened)
        again["groups"]["g"]["circuit_breaker"]["half_open_requests"] = 2
        router.reload(again)
        results = await asyncio.wait_for(asyncio.gather(probe, waiter), BOUND)
        assert all(isinstance(r, echelon.Response) for r in results)
        assert breaker(router, "g", "g.echelon1_m-a")["state"] == "CLOSED"
