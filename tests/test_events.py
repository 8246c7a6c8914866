"""Engine events and alerts against the mock provider: each event type is produced by a scripted
fault and seen by a sync callback (``router.on``) and an async iterator (``router.events()``);
the overflow path counts drops without failing requests; each alert rule fires and resolves
exactly once over a scripted episode."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

from echelon import Router
from echelon.events import refresh_log_levels
from conftest import mock_config

Event = Dict[str, Any]


def router_for(mock, **overrides) -> Router:
    return Router.from_dict(mock_config(mock.openai_base_url, **overrides))


class Both:
    """A sync callback subscriber and an async-iterator subscriber on one router."""

    def __init__(self, router: Router) -> None:
        self.sync: List[Event] = []
        self.aio: List[Event] = []
        self.async_cb: List[Event] = []
        self.handle = router.on("*", self.sync.append)

        async def acb(ev: Event) -> None:
            await asyncio.sleep(0)
            self.async_cb.append(ev)

        self.ahandle = router.on("*", acb)
        self.stream = router.events()
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        async for ev in self.stream:
            self.aio.append(ev)

    async def wait_for(self, pred: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [e for e in self.sync if pred(e)]
            if hits and any(pred(e) for e in self.aio) and any(pred(e) for e in self.async_cb):
                return hits[0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"event not seen by every subscriber; sync={self.sync} aio={self.aio}")

    async def close(self) -> None:
        self.handle.unsubscribe()
        self.ahandle.unsubscribe()
        await self.stream.aclose()
        await asyncio.wait_for(self.task, 5)


def of(t: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda e: e["type"] == t and all(e.get(k) == v for k, v in fields.items())


async def test_breaker_health_retry_fallback_and_failure_events(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    mock.script("m-b", {"fault": "server_error", "status": 503})
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                 "echelon2": {"models": ["m-c"], "priority": 2},
                 "circuit_breaker": {"failure_threshold": 2, "recovery_time": 0.3, "half_open_requests": 1},
                 "fallback_config": {"strategy": "echelon_down", "max_attempts": 3, "retry_delay": 0.01}}}
    async with router_for(mock, groups=cfg) as router:
        subs = Both(router)
        for _ in range(2):
            r = await router.chat("hi", group="g")
            assert r.served_by == "g.echelon2_m-c"
        ev = await subs.wait_for(of("breaker_state", instance="g.echelon1_m-a", to="OPEN"))
        assert ev["from"] == "CLOSED" and ev["reason"].startswith("2 consecutive failures")
        ev = await subs.wait_for(of("retry", target="g.echelon1"))
        assert ev["error"] == "server_error" and ev["attempt"] == 2 and ev["delay"] >= 0
        ev = await subs.wait_for(of("fallback", **{"from": "g.echelon1", "to": "g.echelon2"}))
        assert ev["error"] == "server_error"
        ev = await subs.wait_for(of("instance_state", instance="g.echelon1_m-a", to="degraded"))
        assert ev["from"] == "healthy" and ev["reason"]
        # Every instance of the pool is now open: the call fails and says so.
        with pytest.raises(Exception):
            await router.chat("hi", pool="p")
        ev = await subs.wait_for(of("request_failed", route="pool:p"))
        assert ev["error"] == "circuit_open" and isinstance(ev["timestamp"], float)
        # Recovery: after recovery_time a probe is admitted and succeeds.
        mock.script("m-a", "ok")
        mock.script("m-b", "ok")
        await asyncio.sleep(0.35)
        await router.chat("hi", pool="p")
        await subs.wait_for(of("breaker_state", to="HALF_OPEN", reason="recovery time elapsed; admitting probes"))
        await subs.wait_for(of("breaker_state", **{"from": "HALF_OPEN", "to": "CLOSED", "reason": "probe succeeded"}))
        await subs.close()
        assert all(e["type"] != "events_dropped" for e in subs.sync)


async def test_rate_limited_event_carries_retry_after(mock):
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "1", "times": 1}]})
    async with router_for(mock) as router:
        subs = Both(router)
        r = await router.chat("hi", group="g")
        assert r.served_by == "g.echelon1_m-b"
        ev = await subs.wait_for(of("rate_limited", instance="g.echelon1_m-a"))
        assert ev["retry_after"] == 1.0 and ev["cooldown"] >= 1.0
        await subs.close()


async def test_queue_crossings_fire_once_each_and_once_when_drained(mock):
    mock.script("*", {"latency_ms": 150})
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1, "concurrency_limit": 1},
                 "echelon2": {"models": ["m-c"], "priority": 2}}}
    pools = {"p": {"task_groups": ["g.echelon1"], "performance": {"queue_size": 4},
                   "health_check": {"enabled": False}}}
    async with router_for(mock, groups=cfg, pools=pools) as router:
        subs = Both(router)
        results = await asyncio.gather(*(router.chat("hi", pool="p", timeout=10) for _ in range(6)))
        assert len(results) == 6
        await subs.wait_for(of("queue", name="p", level="50%"))
        await subs.wait_for(of("queue", name="p", level="90%"))
        ev = await subs.wait_for(of("queue", name="p", level="drained"))
        assert ev["length"] == 0 and ev["size"] == 4
        await asyncio.sleep(0.1)
        levels = [e["level"] for e in subs.sync if e["type"] == "queue" and e["name"] == "p"]
        assert levels == ["50%", "90%", "drained"]
        await subs.close()


async def test_config_reloaded_event(mock):
    cfg = mock_config(mock.openai_base_url)
    async with Router.from_dict(cfg) as router:
        subs = Both(router)
        router.reload(cfg)
        ev = await subs.wait_for(of("config_reloaded"))
        assert ev["pools"] == 1 and ev["groups"] == 2 and ev["wrappers"] == 0
        await subs.close()


async def test_overflow_counts_drops_and_never_fails_requests(mock):
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                 "echelon2": {"models": ["m-c"], "priority": 2},
                 "fallback_config": {"strategy": "echelon_down", "max_attempts": 3, "retry_delay": 0}}}
    mock.script("m-a", {"fault": "server_error", "status": 503})
    mock.script("m-b", {"fault": "server_error", "status": 503})
    async with router_for(mock, groups=cfg) as router:
        slow = router.events(buffer=2)  # nobody reads it while the requests run
        seen: List[Event] = []
        handle = router.on("*", seen.append)
        results = await asyncio.gather(*(router.chat("hi", group="g") for _ in range(40)), return_exceptions=True)
        assert all(not isinstance(r, BaseException) for r in results), results
        assert all(r.served_by == "g.echelon2_m-c" for r in results)
        assert slow.dropped > 0
        assert router.events_dropped() >= slow.dropped
        assert router.status()["events"]["dropped"] >= slow.dropped
        # The slow subscriber first gets what fitted, then (once space frees) the drop report.
        first = await asyncio.wait_for(slow.next_batch(), 5)
        assert len(first) == 2
        router.reload(mock_config(mock.openai_base_url, groups=cfg))
        later = await asyncio.wait_for(slow.next_batch(), 5)
        assert later[0]["type"] == "events_dropped" and later[0]["dropped"] == slow.dropped
        assert later[1]["type"] == "config_reloaded"
        await slow.aclose()
        handle.unsubscribe()
        # A pending next_batch lets go of its subscription once it sees the close.
        for _ in range(100):
            if router.status()["events"]["subscribers"] == 0:
                break
            await asyncio.sleep(0.01)
        assert router.status()["events"]["subscribers"] == 0


async def test_events_go_to_the_echelon_logger(mock, caplog):
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "1", "times": 1}]})
    caplog.set_level(logging.DEBUG, logger="echelon")
    refresh_log_levels()
    async with router_for(mock) as router:
        await router.chat("hi", group="g")
        router.reload(mock_config(mock.openai_base_url))
    names = {(r.name, r.levelno) for r in caplog.records}
    assert ("echelon.events", logging.INFO) in names
    assert any(r.name == "echelon.events" and "rate limited" in r.getMessage() for r in caplog.records)


async def test_engine_log_records_arrive_on_the_loop_thread(mock, caplog):
    # The record is logged on an engine thread; the loop thread hands it to logging, so
    # handlers never run on (and engine threads never wait for the GIL in) the engine.
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "1", "times": 1}]})
    caplog.set_level(logging.DEBUG, logger="echelon")
    refresh_log_levels()
    before = time.time()
    async with router_for(mock) as router:
        await router.chat("hi", group="g")
        for _ in range(100):
            hits = [r for r in caplog.records if "rate limited" in r.getMessage()]
            if hits:
                break
            await asyncio.sleep(0.01)
    assert hits, [r.getMessage() for r in caplog.records]
    rec = hits[0]
    assert rec.threadName == threading.current_thread().name
    # Stamped when the engine logged it, not when the loop delivered it.
    assert before - 1 <= rec.created <= time.time()
    assert rec.pathname.endswith(".rs")


# A pool whose health check marks an instance unhealthy after one failed probe (50 ms apart).
FAST_HEALTH_POOL = {"p": {"task_groups": ["g.echelon1"],
                          "health_check": {"interval": 0.05, "failure_threshold": 1, "recovery_time": 60}}}


async def fail_probes_and_wait_for_transition_log(mock, caplog, model: str) -> logging.LogRecord:
    """Make ``model``'s health probes fail, then only sleep until the engine's record of the
    instance's transition reaches ``logging`` (5 s at most)."""
    mock.script("_health", {"fault": "server_error", "status": 503})
    mock.script(model, {"health": {"fault": "server_error", "status": 503}})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        hits = [r for r in caplog.records if r.name == "_core.engine.router" and f"g.echelon1_{model} is now" in r.getMessage()]
        if hits:
            return hits[0]
    raise AssertionError([(r.name, r.getMessage()) for r in caplog.records])


async def test_engine_log_records_are_delivered_while_the_loop_idles(mock, caplog):
    # Nothing awaits the engine while the health check fails the instance: the log queue
    # itself wakes the loop.
    caplog.set_level(logging.INFO, logger="_core")
    refresh_log_levels()
    async with router_for(mock, pools=FAST_HEALTH_POOL) as router:
        await router.chat("hi", pool="p")  # the loop's completion queue exists from here on
        rec = await fail_probes_and_wait_for_transition_log(mock, caplog, "m-a")
    assert rec.levelno == logging.INFO and rec.threadName == threading.current_thread().name


async def test_engine_log_records_wake_the_loop_that_was_active_last(mock, caplog):
    # A second loop (in another thread) used the engine and is gone; this loop was active
    # after it, so the log queue must wake this one.
    caplog.set_level(logging.INFO, logger="_core")
    refresh_log_levels()
    async with router_for(mock, pools=FAST_HEALTH_POOL) as router:
        await router.chat("hi", pool="p")
        other = threading.Thread(target=lambda: asyncio.run(router.chat("hi", pool="p")))
        other.start()
        other.join()
        await router.chat("hi", pool="p")
        rec = await fail_probes_and_wait_for_transition_log(mock, caplog, "m-b")
    assert rec.threadName == threading.current_thread().name


async def test_on_validates_event_type_and_unsubscribes(mock):
    async with router_for(mock) as router:
        with pytest.raises(ValueError, match="did you mean 'breaker_state'"):
            router.on("breaker_sate", print)
        got: List[Event] = []
        h = router.on("config_reloaded", got.append)
        router.reload(mock_config(mock.openai_base_url))
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert len(got) == 1
        h.unsubscribe()
        router.reload(mock_config(mock.openai_base_url))
        await asyncio.sleep(0.1)
        assert len(got) == 1


# -- alerts -------------------------------------------------------------------------------


def alerts(router_events: List[Event], rule: str) -> List[str]:
    return [e["state"] for e in router_events if e["type"] == "alert" and e["rule"] == rule]


async def wait_states(events: List[Event], rule: str, want: List[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alerts(events, rule) != want:
        await asyncio.sleep(0.02)
    assert alerts(events, rule) == want


def with_alerts(mock, rules, **overrides):
    glob = {"alert_interval": 0.03, "alerts": rules}
    return Router.from_dict(mock_config(mock.openai_base_url, **{"global": glob}, **overrides))


async def test_error_ratio_alert_fires_and_resolves_once(mock):
    mock.script("m-a", {"fault": "server_error", "status": 500})
    mock.script("m-b", {"fault": "server_error", "status": 500})
    rule = {"name": "pool-errors", "kind": "error_ratio", "scope": "p", "threshold": 0.5, "window": 0.4, "min_requests": 4}
    # Breakers and health stay out of the way: every call really reaches the mock.
    groups = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1},
                    "circuit_breaker": {"failure_threshold": 100}}}
    pools = {"p": {"task_groups": ["g.echelon1"], "health_check": {"interval": 60, "failure_threshold": 100}}}
    async with with_alerts(mock, [rule], groups=groups, pools=pools) as router:
        got: List[Event] = []
        router.on("alert", got.append)
        for _ in range(6):
            with pytest.raises(Exception):
                await router.chat("hi", pool="p")
        await wait_states(got, "pool-errors", ["firing"])
        ev = got[0]
        assert ev["value"] > 0.5 and ev["threshold"] == 0.5 and ev["scope"] == "p" and ev["kind"] == "error_ratio"
        mock.script("m-a", "ok")
        mock.script("m-b", "ok")
        for _ in range(3):
            for _ in range(6):
                await router.chat("hi", pool="p")
            await asyncio.sleep(0.2)
        await wait_states(got, "pool-errors", ["firing", "resolved"])
        await asyncio.sleep(0.2)
        assert alerts(got, "pool-errors") == ["firing", "resolved"]


async def test_alert_rules_added_by_a_reload_start_evaluating(mock):
    # Without rules the alert task sleeps until a reload instead of ticking; the reload must
    # wake it.
    mock.script("m-a", {"fault": "server_error", "status": 500})
    mock.script("m-b", {"fault": "server_error", "status": 500})
    groups = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1}, "circuit_breaker": {"failure_threshold": 100}}}
    pools = {"p": {"task_groups": ["g.echelon1"], "health_check": {"interval": 60, "failure_threshold": 100}}}
    async with Router.from_dict(mock_config(mock.openai_base_url, groups=groups, pools=pools)) as router:
        got: List[Event] = []
        router.on("alert", got.append)
        await asyncio.sleep(0.1)
        rule = {"name": "late", "kind": "error_ratio", "scope": "p", "threshold": 0.5, "window": 0.4, "min_requests": 4}
        glob = {"alert_interval": 0.03, "alerts": [rule]}
        router.reload(mock_config(mock.openai_base_url, groups=groups, pools=pools, **{"global": glob}))
        for _ in range(6):
            with pytest.raises(Exception):
                await router.chat("hi", pool="p")
        await wait_states(got, "late", ["firing"])


async def test_p99_latency_alert_fires_and_resolves_once(mock):
    mock.script("m-a", {"latency_ms": 150})
    rule = {"name": "slow", "kind": "p99_latency", "scope": "group:solo", "threshold": 0.1, "window": 0.4}
    async with with_alerts(mock, [rule]) as router:
        got: List[Event] = []
        router.on("alert", got.append)
        for _ in range(3):
            await router.chat("hi", group="solo")
        await wait_states(got, "slow", ["firing"])
        assert got[0]["value"] >= 0.15
        mock.script("m-a", "ok")
        await wait_states(got, "slow", ["firing", "resolved"])
        await asyncio.sleep(0.2)
        assert alerts(got, "slow") == ["firing", "resolved"]


async def test_capacity_alert_fires_and_resolves_once(mock):
    mock.script("*", {"latency_ms": 300})
    cfg = {"g": {"echelon1": {"models": ["m-a", "m-b"], "priority": 1, "concurrency_limit": 2},
                 "echelon2": {"models": ["m-c"], "priority": 2}}}
    rule = {"name": "full", "kind": "capacity", "scope": "p", "threshold": 0.8}
    async with with_alerts(mock, [rule], groups=cfg) as router:
        got: List[Event] = []
        router.on("alert", got.append)
        await asyncio.gather(*(router.chat("hi", pool="p") for _ in range(4)))
        await wait_states(got, "full", ["firing", "resolved"])
        assert got[0]["value"] >= 0.8 and got[1]["value"] <= 0.8 * 0.8
        await asyncio.sleep(0.2)
        assert alerts(got, "full") == ["firing", "resolved"]


async def test_breaker_open_alert_fires_after_for_and_resolves_once(mock):
    mock.script("m-a", {"fault": "server_error", "status": 500})
    groups = {"solo": {"echelon1": {"models": ["m-a"], "priority": 1, "max_retries": 0},
                       "circuit_breaker": {"failure_threshold": 1, "recovery_time": 30},
                       "fallback_config": {"max_attempts": 1, "retry_delay": 0}}}
    rule = {"name": "stuck-open", "kind": "breaker_open", "scope": "solo", "for": 0.15}
    async with with_alerts(mock, [rule], groups=groups) as router:
        got: List[Event] = []
        router.on("alert", got.append)
        t0 = time.monotonic()
        with pytest.raises(Exception):
            await router.chat("hi", group="solo")
        await wait_states(got, "stuck-open", ["firing"])
        assert time.monotonic() - t0 >= 0.15 and got[0]["value"] > 0.15
        assert router.group("solo").reset_breakers() == 1
        await wait_states(got, "stuck-open", ["firing", "resolved"])
        await asyncio.sleep(0.2)
        assert alerts(got, "stuck-open") == ["firing", "resolved"]


def test_alert_rules_are_validated(mock):
    from echelon import ConfigError

    bad = [
        {"kind": "error_rate", "scope": "p", "threshold": 0.5},
        {"kind": "error_ratio", "scope": "pp", "threshold": 0.5},
        {"kind": "p99_latency", "scope": "g"},
        {"kind": "breaker_open", "scope": "solo", "for": "long"},
        {"kind": "capacity", "threshold": 0.9, "treshold": 1},
        {"kind": "capacity", "threshold": 1.5},
    ]
    with pytest.raises(ConfigError) as ei:
        Router.from_dict(mock_config(mock.openai_base_url, **{"global": {"alerts": bad}}))
    issues = {(i["key"], i["message"].split(";")[0].split(" (")[0]) for i in ei.value.issues}
    msgs = "\n".join(f"{i['key']}: {i['message']}" for i in ei.value.issues)
    assert "did you mean `error_ratio`" in msgs
    assert ("global.alerts[5].threshold", "out of range: must be greater than 0 and at most 1") in issues, msgs
    assert ("global.alerts[1].scope", "unknown alert scope `pp`") in issues, msgs
    assert "did you mean `p`" in msgs
    assert ("global.alerts[2].threshold", "missing required key `threshold`") in issues, msgs
    assert ("global.alerts[3].for", "expected number, found string") in issues, msgs
    assert any(k == "global.alerts[4].treshold" for k, _ in issues) and "did you mean `threshold`" in msgs
