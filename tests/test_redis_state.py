"""Shared state through Redis, in one process: the ``[state]`` config, several routers sharing
one budget and one breaker (each router is its own store, as another process would be), and
the fault model (Redis down at start, stopped and restarted mid-run, slow).

The multi-process checks of the issue are in test_redis_multiprocess.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import echelon
from echelon import Router, _core
from conftest import RedisServer, mock_config

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-PASSWORD-9"


def shared_config(mock, redis_url: str, prefix: str, *, model: Dict[str, Any] | None = None, state: Dict[str, Any] | None = None, **overrides: Any) -> Dict[str, Any]:
    """The mock config with group ``solo`` over model ``m-a`` (no retries), state in Redis."""
    cfg = mock_config(mock.openai_base_url, **overrides)
    cfg["providers"]["mock"]["m-a"].update(model or {})
    cfg["providers"]["mock"]["common"]["max_retries"] = 0
    cfg["global"] = {"state": {"backend": "redis", "url": redis_url, "key_prefix": prefix, **(state or {})}}
    return cfg


async def outcomes(calls) -> List[Any]:
    """Every call's response or exception; anything but a response or an EchelonError fails."""
    res = await asyncio.gather(*calls, return_exceptions=True)
    for r in res:
        assert isinstance(r, (echelon.Response, echelon.EchelonError)), f"untyped outcome {type(r).__name__}: {r!r}"
    return res


def served(res: List[Any]) -> int:
    return sum(isinstance(r, echelon.Response) for r in res)


async def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def procs_alive(server: RedisServer, prefix: str) -> int:
    return int(server.cmd("ZCARD", f"{{{prefix}:v1}}:procs"))


# ---- config ----


def test_state_section_is_read_and_checked_with_the_password_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_PW", PASSWORD)
    llms = tmp_path / "llms"
    (llms / "provider" / "mock").mkdir(parents=True)
    (llms / "groups").mkdir()
    (llms / "provider" / "mock" / "common.toml").write_text('type = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n')
    (llms / "provider" / "mock" / "m.toml").write_text('model = "m"\n')
    (llms / "groups" / "g.toml").write_text('[echelon1]\nmodels = ["m"]\n')
    (llms / "global.toml").write_text(
        '[state]\nbackend = "redis"\nurl = "redis://app:${REDIS_PW}@127.0.0.1:6390/2"\nkey_prefix = "prod-eu"\n'
        "timeout = 0.05\nlease_time = 5\nlocal_share = 0.25\n"
    )
    r = subprocess.run([sys.executable, "-m", "echelon.cli", "check", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "State: backend=redis url=redis://app:***@127.0.0.1:6390/2 key_prefix=prod-eu timeout=0.05s" in r.stdout
    assert "lease_time=5s local_share=0.25" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    cfg = _core.load_config_dir(str(tmp_path))
    st = cfg["global"]["state"]
    assert (st["backend"], st["key_prefix"], st["timeout"], st["lease_time"], st["local_share"]) == ("redis", "prod-eu", 0.05, 5.0, 0.25)
    assert PASSWORD not in repr(cfg)


def test_memory_stays_the_default(tmp_path):
    cfg = _core.config_from_dict(mock_config("http://127.0.0.1:9/v1"))
    assert cfg["global"]["state"]["backend"] == "memory"


@pytest.mark.parametrize(
    "state, key, words",
    [
        ({"backend": "redis"}, "url", "required"),
        ({"backend": "redis", "url": f"http://:{PASSWORD}@h:1"}, "url", "redis://"),
        ({"backend": "redis", "url": f"redis://:{PASSWORD}@h:notaport"}, "url", "not a valid Redis URL"),
        ({"backend": "valkey", "url": "redis://h:1"}, "backend", "memory, redis"),
        ({"backend": "redis", "url": "redis://h:1", "key_prefix": "a{b}"}, "key_prefix", "hash tags"),
        ({"backend": "redis", "url": "redis://h:1", "local_share": 0}, "local_share", "range"),
        ({"backend": "redis", "url": "redis://h:1", "lease_time": 0.1}, "lease_time", "range"),
        ({"backend": "redis", "url": "redis://h:1", "password": PASSWORD}, "password", "unknown"),
        ({"backend": "redis", "url": "rediss://h:1", "tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file", "cannot be read"),
        ({"backend": "redis", "url": "rediss://h:1", "tls_ca_file": str(ROOT / "pyproject.toml")}, "tls_ca_file", "no PEM certificate"),
    ],
)
def test_bad_state_settings_are_named_and_never_show_the_password(state, key, words):
    cfg = mock_config("http://127.0.0.1:9/v1")
    cfg["global"] = {"state": state}
    with pytest.raises(echelon.ConfigError) as info:
        Router.from_dict(cfg)
    text = str(info.value) + repr(info.value.issues)
    assert PASSWORD not in text
    hits = [i for i in info.value.issues if i["key"].endswith(key)]
    assert hits, info.value.issues
    assert any(words in i["message"] for i in hits), hits


# ---- several routers, one Redis ----


async def test_two_routers_share_one_rpm_budget(mock, redis_server):
    cfg = shared_config(mock, redis_server.url, "t-rpm", model={"rpm": 20})
    async with Router.from_dict(cfg) as a, Router.from_dict(cfg) as b:
        await wait_until(lambda: procs_alive(redis_server, "t-rpm") == 2, 10, "both routers registered")
        res = await outcomes([r.chat("hi", group="solo", timeout=0.5) for r in (a, b) for _ in range(30)])
    assert 18 <= served(res) <= 21, f"{served(res)} served of a shared budget of 20"
    assert all(isinstance(r, (echelon.Response, echelon.RateLimited, echelon.QueueTimeout)) for r in res)
    assert mock.counters("m-a")["requests"] == served(res)


async def test_half_open_admits_one_probe_across_every_router(mock, redis_server):
    cfg = shared_config(mock, redis_server.url, "t-probe")
    cfg["groups"]["solo"]["circuit_breaker"] = {"failure_threshold": 2, "recovery_time": 0.3, "half_open_requests": 1}
    mock.script("m-a", {"steps": [{"fault": "server_error", "status": 503, "times": 2}, "hang"], "then": "ok"})
    routers = [Router.from_dict(cfg) for _ in range(3)]
    try:
        await wait_until(lambda: procs_alive(redis_server, "t-probe") == 3, 10, "three routers registered")
        events = routers[2].events(types=["breaker_state"])
        for _ in range(2):
            with pytest.raises(echelon.ServerError):
                await routers[0].chat("hi", group="solo", timeout=1)
        ev = await asyncio.wait_for(events.__anext__(), 5)
        assert (ev["instance"], ev["to"]) == ("solo.echelon1_m-a", "OPEN"), ev
        assert "another process" in ev["reason"]
        await asyncio.sleep(0.4)  # the rest is over: half-open everywhere
        start = time.time()
        calls = [asyncio.ensure_future(r.chat("hi", group="solo", timeout=2.5)) for r in routers for _ in range(5)]
        await asyncio.sleep(1.5)
        log = [t for t, m in mock.request_log() if m == "m-a" and start <= t < start + 1.5]
        assert len(log) == 1, f"{len(log)} probes reached the provider while one was out (half_open_requests = 1)"
        await outcomes(calls)
        await events.aclose()
    finally:
        for r in routers:
            r.close()


async def test_cooldown_from_one_router_applies_to_the_other(mock, redis_server):
    cfg = shared_config(mock, redis_server.url, "t-cool")
    cfg["groups"]["solo"]["echelon1"]["models"] = ["m-a", "m-b"]
    cfg["providers"]["mock"]["common"]["max_retries"] = 1
    mock.script("m-a", {"steps": [{"fault": "rate_limit", "retry_after": "30"}], "then": "ok"})
    async with Router.from_dict(cfg) as a, Router.from_dict(cfg) as b:
        await wait_until(lambda: procs_alive(redis_server, "t-cool") == 2, 10, "both routers registered")
        for _ in range(3):  # round robin: m-a answers 429 on its first call
            r = await a.chat("hi", group="solo", timeout=2)
            if r.attempts[0].error == "rate_limited":
                break
        assert r.served_by == "solo.echelon1_m-b" and r.attempts[0].error == "rate_limited", r.attempts
        await wait_until(
            lambda: b.group("solo").status()["echelons"][0]["instances"][0]["cooldown_remaining"] is not None, 5, "the cooldown reached the other router"
        )
        res = await outcomes([b.chat("hi", group="solo", timeout=2) for _ in range(20)])
        assert {x.served_by for x in res} == {"solo.echelon1_m-b"}
    assert mock.counters("m-a")["requests"] == 1


async def test_rediss_with_a_private_ca_shares_state_over_tls(mock, tls_redis, tmp_path):
    """rediss:// against a server whose certificate a private CA signed: trusted through
    tls_ca_file, two routers share one budget over TLS; without it the certificate is refused
    (the system store does not know that CA) and the router serves on its local share,
    saying why."""
    cfg = shared_config(mock, tls_redis.tls_url, "t-tls", model={"rpm": 20}, state={"tls_ca_file": tls_redis.ca_file})
    async with Router.from_dict(cfg) as a, Router.from_dict(cfg) as b:
        await wait_until(lambda: procs_alive(tls_redis, "t-tls") == 2, 10, "both routers registered over TLS")
        res = await outcomes([r.chat("hi", group="solo", timeout=0.5) for r in (a, b) for _ in range(30)])
    assert 18 <= served(res) <= 21, f"{served(res)} served of a shared budget of 20"

    untrusted = shared_config(mock, tls_redis.tls_url, "t-tls-untrusted", model={"rpm": 10}, state={"local_share": 0.5, "timeout": 0.05, "connect_timeout": 0.5})
    async with Router.from_dict(untrusted) as router:
        events = router.events(types=["state_backend"])
        res = await outcomes([router.chat("hi", group="solo", timeout=0.5) for _ in range(12)])
        assert served(res) == 5, "half of rpm 10 while the server's certificate is refused"
        ev = await asyncio.wait_for(events.__anext__(), 5)
        assert ev["state"] == "down" and "certificate" in json.dumps(ev), ev
        await events.aclose()
    assert procs_alive(tls_redis, "t-tls-untrusted") == 0


def test_tls_ca_file_is_relative_to_global_toml_and_shown_by_check(tmp_path):
    llms = tmp_path / "llms"
    (llms / "provider" / "mock").mkdir(parents=True)
    (llms / "groups").mkdir()
    (llms / "provider" / "mock" / "common.toml").write_text('type = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n')
    (llms / "provider" / "mock" / "m.toml").write_text('model = "m"\n')
    (llms / "groups" / "g.toml").write_text('[echelon1]\nmodels = ["m"]\n')
    (llms / "redis-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (llms / "global.toml").write_text('[state]\nbackend = "redis"\nurl = "rediss://127.0.0.1:6390"\ntls_ca_file = "redis-ca.pem"\n')
    r = subprocess.run([sys.executable, "-m", "echelon.cli", "check", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "TLS: server certificate checked against redis-ca.pem" in r.stdout
    (llms / "global.toml").write_text('[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:6390"\ntls_ca_file = "redis-ca.pem"\n')
    with pytest.raises(echelon.ConfigError) as info:
        _core.load_config_dir(str(tmp_path))
    assert any(i["key"].endswith("tls_ca_file") and "rediss://" in i["message"] for i in info.value.issues), info.value.issues


# ---- faults ----


async def test_redis_down_at_start_serves_on_the_local_share(mock, caplog):
    blocker = socket.socket()  # bound, never listening: connections are refused
    blocker.bind(("127.0.0.1", 0))
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{blocker.getsockname()[1]}"
        cfg = shared_config(mock, url, "t-down", model={"rpm": 10}, state={"local_share": 0.5, "timeout": 0.05})
        caplog.set_level(logging.WARNING)
        async with Router.from_dict(cfg) as router:
            res = await outcomes([router.chat("hi", group="solo", timeout=0.5) for _ in range(12)])
            assert served(res) == 5, "half of rpm 10 while Redis is out of reach"
            await asyncio.sleep(0.1)
        text = caplog.text
        assert "out of reach" in text and "state backend redis down" in text
        assert PASSWORD not in text
    finally:
        blocker.close()


async def test_redis_stopped_and_restarted_mid_run(mock, own_redis):
    """Every call ends in one response or one typed error while Redis goes away and comes back
    empty; meanwhile each router runs on its share; afterwards the budget holds again."""
    cfg = shared_config(mock, own_redis.url, "t-restart", model={"rpm": 40}, state={"local_share": 0.25, "timeout": 0.1})
    mock.script("m-a", {"latency_ms": 5})
    a, b = Router.from_dict(cfg), Router.from_dict(cfg)
    try:
        await wait_until(lambda: procs_alive(own_redis, "t-restart") == 2, 10, "both routers registered")
        streams = [r.events(types=["state_backend"]) for r in (a, b)]
        stop = asyncio.Event()
        results: List[Any] = []

        async def load(r: Router) -> None:
            while not stop.is_set():
                results.extend(await outcomes([r.chat("hi", group="solo", timeout=0.3) for _ in range(4)]))
                await asyncio.sleep(0.02)

        loops = [asyncio.ensure_future(load(r)) for r in (a, b) for _ in range(2)]
        await asyncio.sleep(0.5)
        before = served(results)
        assert before <= 42, f"{before} served before the outage (rpm 40)"
        own_redis.stop(kill=True)
        for s in streams:
            ev = await asyncio.wait_for(s.__anext__(), 10)
            if ev["state"] == "up":  # the first connection's, if it came after subscribing
                ev = await asyncio.wait_for(s.__anext__(), 10)
            assert ev["state"] == "down", ev
        await asyncio.sleep(0.6)
        during = served(results) - before
        # Each router may let its share (a quarter of 40) through on its own.
        assert during <= 2 * 10, f"{during} served while Redis was down"
        own_redis.start(own_redis.port)
        ups = []
        for s in streams:
            ev = await asyncio.wait_for(s.__anext__(), 15)
            assert ev["state"] == "up", ev
            ups.append(ev["timestamp"])
        await asyncio.sleep(0.8)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 15)
        after = [t for t, m in mock.request_log() if m == "m-a" and t > max(ups) + 0.05]
        # The restarted server learnt what each router spent in the window: the window is full.
        assert len(after) <= 2, f"{len(after)} requests after the restart with the window already spent"
        assert len(results) > 0 and all(isinstance(x, (echelon.Response, echelon.EchelonError)) for x in results)
        for s in streams:
            await s.aclose()
    finally:
        a.close()
        b.close()


async def test_a_slow_redis_never_holds_a_call_longer_than_its_timeout(mock, own_redis):
    cfg = shared_config(mock, own_redis.url, "t-slow", model={"rpm": 1000}, state={"timeout": 0.05})
    async with Router.from_dict(cfg) as router:
        await wait_until(lambda: procs_alive(own_redis, "t-slow") == 1, 10, "router registered")
        events = router.events(types=["state_backend"])
        await router.chat("hi", group="solo", timeout=1)
        sleeper = subprocess.Popen(
            [sys.executable, "-c", f"import socket,sys; s=socket.create_connection(('127.0.0.1',{own_redis.port})); s.sendall(b'*3\\r\\n$5\\r\\nDEBUG\\r\\n$5\\r\\nSLEEP\\r\\n$1\\r\\n2\\r\\n'); s.recv(10)"],
        )
        try:
            await asyncio.sleep(0.1)
            # Redis answers nothing for 2 s; every call must still end well within its own
            # 0.5 s deadline (200 calls need more budget than one slice holds).
            res = await outcomes([router.chat("hi", group="solo", timeout=0.5) for _ in range(200)])
            assert served(res) == 200, [type(r).__name__ for r in res if not isinstance(r, echelon.Response)][:5]
            ev = await asyncio.wait_for(events.__anext__(), 5)
            if ev["state"] == "up":  # the first connection's, if it came after subscribing
                ev = await asyncio.wait_for(events.__anext__(), 5)
            assert ev["state"] == "down"
        finally:
            sleeper.wait(timeout=10)
            await events.aclose()


async def test_a_probe_slot_left_unused_elsewhere_does_not_strand_waiters(mock, redis_server):
    """Half-open with one probe slot for the cluster: router b's probe is cancelled by its
    caller while the provider hangs, so no verdict ever comes for that slot. A call on router
    a without a deadline asks for a slot, is refused, asks again, and gets the slot once the
    probe lease (lease_time) has run out; it used to wait forever for a grant nobody sent."""
    cfg = shared_config(mock, redis_server.url, "t-unused-probe", state={"lease_time": 1})
    cfg["groups"]["solo"]["circuit_breaker"] = {"failure_threshold": 1, "recovery_time": 0.3, "half_open_requests": 1}
    mock.script("m-a", {"steps": [{"fault": "server_error", "status": 503}, "hang"], "then": "ok"})
    async with Router.from_dict(cfg) as a, Router.from_dict(cfg) as b:
        await wait_until(lambda: procs_alive(redis_server, "t-unused-probe") == 2, 10, "both routers registered")
        with pytest.raises(echelon.ServerError):
            await b.chat("hi", group="solo", timeout=2)
        await wait_until(lambda: a.group("solo").breaker_status()["solo.echelon1_m-a"]["state"] != "CLOSED", 5, "the breaker opened everywhere")
        await asyncio.sleep(0.4)  # the rest is over
        probe = asyncio.ensure_future(b.chat("hi", group="solo"))
        await wait_until(lambda: mock.counters("m-a")["requests"] == 2, 5, "b's probe reached the provider")
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        r = await asyncio.wait_for(a.chat("hi", group="solo"), 10)
        assert r.served_by == "solo.echelon1_m-a"
    assert mock.counters("m-a")["requests"] == 3
