"""Several Python processes sharing limits, breakers and slot leases through a real
redis-server, measured at the mock provider (its request log): the checks of issue 21.

Each worker process builds its own router from the same config; only the wire model name
differs per process (``m-x-p<i>`` behind the logical model ``m-x``), so the mock can tell the
processes apart while the shared state (keyed by logical names) is one."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

from conftest import RedisServer, mock_config

WORKER = r'''
import asyncio, json, sys, time
import echelon

cfg, mode, arg = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])

def say(kind, **kw):
    print(json.dumps({"kind": kind, **kw}), flush=True)

async def main():
    router = echelon.Router.from_dict(cfg)
    events = router.events(types=["breaker_state"])
    seen = []

    async def watch():
        async for ev in events:
            seen.append(ev)

    watcher = asyncio.ensure_future(watch())
    say("ready")
    if mode == "hold":
        calls = [asyncio.ensure_future(router.chat("hi", group="g", timeout=120)) for _ in range(arg["calls"])]
        await asyncio.sleep(3600)
        return
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "go", line
    counts = {}
    stop_at = time.monotonic() + arg["seconds"]

    async def loop():
        while time.monotonic() < stop_at:
            try:
                await router.chat("hi", group="g", timeout=arg["timeout"])
                name = "ok"
            except echelon.EchelonError as e:
                name = type(e).__name__
                await asyncio.sleep(0.01)
            counts[name] = counts.get(name, 0) + 1

    await asyncio.gather(*(loop() for _ in range(arg["concurrency"])))
    await asyncio.sleep(0.05)
    watcher.cancel()
    say("done", counts=counts, events=seen)
    router.close()

asyncio.run(main())
'''


class Worker:
    """One worker process and the JSON lines it prints."""

    def __init__(self, cfg: Dict[str, Any], mode: str, **arg: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(cfg), mode, json.dumps(arg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.err: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.err.append(line)

    def expect(self, kind: str, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"worker printed no {kind!r} within {timeout}s; stderr: {''.join(self.err)[-2000:]}")
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg["kind"] == kind:
                return msg

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def config(mock, redis: RedisServer, prefix: str, proc: int, model: Dict[str, Any], **state: Any) -> Dict[str, Any]:
    cfg = mock_config(mock.openai_base_url)
    common = cfg["providers"]["mock"]["common"]
    common["max_retries"] = 0
    cfg["providers"]["mock"] = {"common": common, "m-x": {"model": f"m-x-p{proc}", "context_window": 1000, **model}}
    cfg["groups"] = {
        "g": {
            "echelon1": {"models": ["m-x"], "priority": 1},
            "circuit_breaker": {"failure_threshold": 3, "recovery_time": 30, "half_open_requests": 1},
            "fallback_config": {"strategy": "echelon_down", "max_attempts": 1},
        }
    }
    cfg["pools"] = {}
    cfg["global"] = {"state": {"backend": "redis", "url": redis.url, "key_prefix": prefix, **state}}
    return cfg


def start(mock, redis: RedisServer, prefix: str, n: int, mode: str, model: Dict[str, Any], state: Optional[Dict[str, Any]] = None, **arg: Any) -> List[Worker]:
    workers = [Worker(config(mock, redis, prefix, i, model, **(state or {})), mode, **arg) for i in range(n)]
    for w in workers:
        w.expect("ready", 60)
    deadline = time.monotonic() + 20
    while int(redis.cmd("ZCARD", f"{{{prefix}:v1}}:procs")) < n:
        assert time.monotonic() < deadline, "workers did not all register with Redis"
        time.sleep(0.05)
    return workers


def test_four_processes_share_one_rpm_limit(mock, redis_server):
    rpm = 200
    workers = start(mock, redis_server, "mp-rpm", 4, "run", {"rpm": rpm}, seconds=4, concurrency=8, timeout=0.3)
    try:
        mock.reset()
        for w in workers:
            w.go()
        done = [w.expect("done", 60) for w in workers]
    finally:
        for w in workers:
            w.close()
    seen = [t for t, m in mock.request_log() if m.startswith("m-x-p")]
    ok = sum(d["counts"].get("ok", 0) for d in done)
    # The whole run fits in one 60 s window: the provider never sees more than the limit + 5%.
    assert len(seen) <= rpm * 1.05, f"{len(seen)} requests in one window of rpm {rpm}"
    assert ok == len(seen)
    # And the budget is really spent across the processes, not stranded in leases.
    assert len(seen) >= rpm * 0.75, f"only {len(seen)} of {rpm} used"
    assert sum(1 for d in done if d["counts"].get("ok", 0) > 0) >= 2
    for d in done:
        assert set(d["counts"]) <= {"ok", "RateLimited", "QueueTimeout"}, d["counts"]


def test_a_503_storm_seen_by_one_process_opens_the_breaker_in_all(mock, redis_server):
    mock.script("m-x-p0", {"fault": "server_error", "status": 503})
    for i in (1, 2, 3):
        mock.script(f"m-x-p{i}", {"latency_ms": 2})
    workers = start(mock, redis_server, "mp-storm", 4, "run", {}, seconds=2, concurrency=4, timeout=1)
    try:
        for w in workers:
            w.go()
        done = [w.expect("done", 60) for w in workers]
    finally:
        for w in workers:
            w.close()
    opened = [e for e in done[0]["events"] if e["to"] == "OPEN"]
    assert opened, done[0]
    t_open = opened[0]["timestamp"]
    others = [t for t, m in mock.request_log() if m in ("m-x-p1", "m-x-p2", "m-x-p3")]
    assert others, "the other processes were serving before the storm"
    late = max(others) - t_open
    assert late <= 0.1, f"the others sent to the instance {late * 1000:.0f} ms after it opened in process 0"
    for d in done[1:]:
        ev = [e for e in d["events"] if e["to"] == "OPEN"]
        assert ev and "another process" in ev[0]["reason"], d["events"]
        assert d["counts"].get("CircuitOpen", 0) > 0


def test_sigkill_of_a_process_holding_slots_returns_them_within_the_lease_time(mock, redis_server):
    lease = 2.0
    mock.script("m-x-p0", "hang")
    holder = start(mock, redis_server, "mp-kill", 1, "hold", {"max_concurrency": 3}, {"lease_time": lease}, calls=3)[0]
    try:
        deadline = time.monotonic() + 20
        while mock.counters("m-x-p0")["in_flight"] < 3:
            assert time.monotonic() < deadline, "the holder never got its 3 slots"
            time.sleep(0.02)
        cfg = config(mock, redis_server, "mp-kill", 1, {"max_concurrency": 3}, lease_time=lease)
        waiter = Worker(cfg, "run", seconds=6, concurrency=3, timeout=5)
        try:
            waiter.expect("ready", 60)
            deadline = time.monotonic() + 20
            while int(redis_server.cmd("ZCARD", "{mp-kill:v1}:procs")) < 2:
                assert time.monotonic() < deadline, "the second process did not register"
                time.sleep(0.05)
            waiter.go()
            time.sleep(0.5)
            assert mock.counters("m-x-p1")["requests"] == 0, "the cluster limit of 3 was exceeded"
            killed = time.time()
            holder.proc.send_signal(signal.SIGKILL)
            done = waiter.expect("done", 60)
        finally:
            waiter.close()
    finally:
        holder.close()
    first = min(t for t, m in mock.request_log() if m == "m-x-p1")
    assert first - killed <= lease + 1.0, f"slots came back {first - killed:.2f}s after the kill (lease {lease}s)"
    assert done["counts"].get("ok", 0) > 0
    assert mock.counters("m-x-p1")["max_in_flight"] <= 3
