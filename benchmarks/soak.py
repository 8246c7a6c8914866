#!/usr/bin/env python3
"""Soak test (issue 9): many requests through echelon against the project's mock with mixed
faults, checking that every request is accounted for and nothing is left running.

Not a CI test by default: ``python benchmarks/soak.py`` sends 1,000,000 requests
(``--requests`` to lower). It reports RSS over time, the outcome of every request
(responses + typed ``echelon.EchelonError``s must equal requests sent), background asyncio
tasks and engine in-flight counts left at the end, and exits non-zero if any request is
unaccounted for.

For CI, the lead can call the short form from pytest (no timing assertions in it)::

    sys.path.insert(0, "benchmarks"); import soak
    r = soak.run(requests=20_000)
    assert r["unaccounted"] == 0 and r["tasks_alive"] == 0 and r["engine_in_flight"] == 0

The mock runs as a separate process (``python -m echelon.cli mock-server``) so the RSS
reported is the client's alone. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from typing import Any, Dict, List, Optional

MODEL = "soak"
MESSAGES = [{"role": "user", "content": "soak test request"}]

# One block of the fault pattern per 100 requests: mostly successes, with every kind of
# misbehaviour the engine must turn into either a response (after a retry or fallback) or a
# typed error. `hang` and `stall_after` are rare because each costs a timeout.
PATTERN: List[Any] = [
    {"fault": "ok", "times": 40},
    {"fault": "server_error", "status": 503},
    {"fault": "ok", "times": 10},
    {"fault": "rate_limit", "retry_after": "0"},
    {"fault": "ok", "times": 10},
    {"fault": "server_error", "status": 500},
    {"fault": "ok", "times": 10},
    "reset",
    {"fault": "ok", "times": 10},
    {"fault": "malformed"},
    {"fault": "ok", "times": 10},
    {"cut_after": 1},
    {"fault": "ok", "times": 3},
    "overloaded",
]
PATTERN_LEN = sum(s.get("times", 1) if isinstance(s, dict) else 1 for s in PATTERN)
RARE = ["hang", {"stall_after": 1}]  # once every RARE_EVERY blocks
RARE_EVERY = 20


def _script(blocks: int, seed: int) -> Dict[str, Any]:
    rng = random.Random(seed)
    steps: List[Any] = []
    for b in range(blocks):
        steps.extend(PATTERN)
        if b % RARE_EVERY == RARE_EVERY - 1:
            steps.append(rng.choice(RARE))
    return {MODEL: {"content_chars": 400, "chunks": 4, "steps": steps, "then": "ok"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Mock:
    def __init__(self) -> None:
        self.port = _free_port()
        self.admin = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echelon.cli", "mock-server", "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(self.admin + "/_mock/counters", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"mock did not start: {err}")
                time.sleep(0.05)

    def post(self, path: str, obj: Any) -> None:
        req = urllib.request.Request(self.admin + path, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def counters(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.admin + "/_mock/counters", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _config(base_url: str) -> Dict[str, Any]:
    """Two instances of the faulty model; one retry with no delay; short timeouts so hangs
    and stalls end as typed Timeouts; breakers, passive health and 429 cooldowns that
    recover quickly (with the defaults, 60 s health recovery and a 1 s minimum 429 cooldown,
    this fault mix idles both instances and most requests end as PoolExhausted)."""
    return {
        "providers": {
            "mock": {
                "common": {
                    "type": "openai_compatible",
                    "base_url": base_url,
                    "api_key": "sk-soak-not-a-secret",
                    "max_retries": 1,
                    "retry_delay": 0,
                    "rate_limit_cooldown": 0.05,
                    "timeouts": {"connect": 2, "first_token": 1, "total": 2, "idle": 1},
                },
                "soak-a": {"model": MODEL},
                "soak-b": {"model": MODEL},
            }
        },
        "groups": {
            "soak": {
                "echelon1": {"models": ["soak-a", "soak-b"]},
                "circuit_breaker": {"failure_threshold": 20, "recovery_time": 1},
            }
        },
        "pools": {"soak": {"task_groups": ["soak"], "health_check": {"enabled": False, "failure_threshold": 10, "recovery_time": 1}}},
        "global": {"default_route": "pool:soak"},
    }


async def _soak(requests: int, concurrency: int, mock: _Mock, seed: int, progress: bool) -> Dict[str, Any]:
    import echelon

    block_reqs = 10_000  # re-install the pattern every this many requests (steps restart)
    blocks = block_reqs // PATTERN_LEN + 1
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, mock.post, "/_mock/script", _script(blocks, seed))
    router = echelon.Router.from_dict(_config(mock.admin + "/v1"))
    outcomes: Counter = Counter()
    unaccounted: List[str] = []
    sent = 0
    rss: List[Dict[str, float]] = [{"t": 0.0, "done": 0, "rss_mb": round(_rss_mb(), 1)}]
    t0 = time.perf_counter()
    next_sample = t0 + 2.0
    next_script = block_reqs

    async def one() -> None:
        try:
            r = await router.chat(MESSAGES, pool="soak", max_tokens=64)
            outcomes["response" if r.content is not None else "response_empty"] += 1
        except echelon.EchelonError as e:  # every typed error counts as accounted
            outcomes[f"error:{type(e).__name__}"] += 1
        except asyncio.CancelledError:
            unaccounted.append("cancelled")
            raise
        except BaseException as e:  # noqa: BLE001 - anything untyped is the failure we look for
            unaccounted.append(f"{type(e).__module__}.{type(e).__name__}: {str(e)[:200]}")

    sem = asyncio.Semaphore(concurrency)
    pending: set = set()

    def _release(t: "asyncio.Task[None]") -> None:
        pending.discard(t)
        sem.release()

    try:
        while sent < requests:
            await sem.acquire()
            t = asyncio.ensure_future(one())
            pending.add(t)
            t.add_done_callback(_release)
            sent += 1
            if sent >= next_script:
                next_script += block_reqs
                await loop.run_in_executor(None, mock.post, "/_mock/script", _script(blocks, seed + sent))
            now = time.perf_counter()
            if now >= next_sample:
                next_sample = now + 2.0
                done = sum(outcomes.values()) + len(unaccounted)
                rss.append({"t": round(now - t0, 1), "done": done, "rss_mb": round(_rss_mb(), 1)})
                if progress:
                    print(f"  {now - t0:6.1f} s  {done:>9,} done  rss {rss[-1]['rss_mb']:.1f} MB", flush=True)
        if pending:
            await asyncio.wait(set(pending), timeout=60)
    finally:
        for t in list(pending):
            t.cancel()
        router_status = router.status()
        router.close()
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.2)  # let callbacks from the engine land
    me = asyncio.current_task()
    alive = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    engine_in_flight = sum(int(p.get("in_flight", 0) or 0) for p in router_status.get("pools", []))
    done = sum(outcomes.values())
    rss.append({"t": round(elapsed, 1), "done": done + len(unaccounted), "rss_mb": round(_rss_mb(), 1)})
    counters = mock.counters()
    return {
        "requests_sent": sent,
        "responses": sum(v for k, v in outcomes.items() if k.startswith("response")),
        "typed_errors": sum(v for k, v in outcomes.items() if k.startswith("error:")),
        "outcomes": dict(sorted(outcomes.items())),
        "unaccounted": sent - done,
        "unaccounted_examples": unaccounted[:10],
        "tasks_alive": len(alive),
        "tasks_alive_examples": [repr(t)[:200] for t in alive[:5]],
        "engine_in_flight": engine_in_flight,
        "elapsed_s": round(elapsed, 2),
        "rate_rps": round(sent / elapsed, 1) if elapsed else None,
        "rss_mb": rss,
        "rss_growth_mb": round(rss[-1]["rss_mb"] - rss[min(1, len(rss) - 1)]["rss_mb"], 1),
        "mock": {k: counters.get(k) for k in ("requests", "ok", "faults", "statuses", "client_disconnects", "in_flight")},
    }


def run(requests: int = 20_000, concurrency: int = 128, seed: int = 1, progress: bool = False) -> Dict[str, Any]:
    """Run a soak of `requests` requests and return the report dict (see module doc).

    Starts and stops its own mock process; safe to call from pytest (asserts nothing itself).
    """
    mock = _Mock()
    try:
        return asyncio.run(_soak(requests, concurrency, mock, seed, progress))
    finally:
        mock.stop()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="echelon soak test against the mock with mixed faults")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="", help="also write the report here")
    a = ap.parse_args(argv)
    print(f"soak: {a.requests:,} requests, concurrency {a.concurrency}, mixed faults on the mock", flush=True)
    r = run(a.requests, a.concurrency, a.seed, progress=True)
    print(json.dumps({k: v for k, v in r.items() if k != "rss_mb"}, indent=1))
    print("RSS over time (s: MB): " + ", ".join(f"{p['t']}: {p['rss_mb']}" for p in r["rss_mb"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    ok = r["unaccounted"] == 0
    print(
        f"{'OK' if ok else 'FAIL'}: {r['requests_sent']:,} sent = {r['responses']:,} responses + "
        f"{r['typed_errors']:,} typed errors + {r['unaccounted']:,} unaccounted; "
        f"{r['tasks_alive']} tasks alive, {r['engine_in_flight']} in flight in the engine at the end"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
