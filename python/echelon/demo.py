"""``echelon demo``: the router against the built-in mock provider, with scripted faults.

Starts the mock provider on a loopback port, loads ``configs/`` (its ``mock`` provider points at
the mock through ``ECHELON_MOCK_URL``), sends a few hundred requests through a polling pool and
a task group while the mock misbehaves, and prints what happened.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import EchelonError, StreamInterrupted

# What the mock does per model during the demo.
DEMO_SCRIPTS: Dict[str, Any] = {
    # Healthy and quick.
    "mock-fast-a": {"latency_ms": 4, "chunk_delay_ms": 2},
    # Rate-limited at first (Retry-After: 1 s), then fine: traffic moves to mock-fast-a meanwhile.
    "mock-fast-b": {
        "latency_ms": 6,
        "chunk_delay_ms": 2,
        "steps": [{"fault": "rate_limit", "retry_after": "1", "times": 3}],
    },
    # A burst of 503s opens its breaker; it recovers through half-open probes.
    "mock-smart": {"latency_ms": 10, "steps": [{"fault": "server_error", "status": 503, "times": 6}]},
    # The big-context model in the last echelon.
    "mock-long": {"latency_ms": 15},
}


def _find_configs(explicit: Optional[str]) -> Path:
    if explicit:
        return Path(explicit)
    for base in (Path.cwd(), *Path.cwd().parents):
        if (base / "configs" / "llms").is_dir():
            return base / "configs"
    raise SystemExit("echelon demo: no configs/ directory found (run it from the repository, or pass --configs DIR)")


def _pct(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round((len(s) - 1) * q)))]


async def _run(configs: Path, n_requests: int) -> int:
    from . import Router
    from .testing import MockProvider

    async with MockProvider(DEMO_SCRIPTS) as mock:
        os.environ["ECHELON_MOCK_URL"] = mock.openai_base_url
        router = Router.from_dir(str(configs))
        async with router:
            print(f"mock provider on {mock.base_url}; config from {configs}")
            latencies: List[float] = []
            served: Counter = Counter()
            errors: Counter = Counter()
            fallbacks = 0
            retries = 0
            sem = asyncio.Semaphore(16)

            async def one(i: int, **route: Any) -> None:
                nonlocal fallbacks, retries
                async with sem:
                    t0 = time.perf_counter()
                    try:
                        r = await router.chat(
                            [{"role": "user", "content": f"demo request {i}: say hello"}], timeout=10, **route
                        )
                    except EchelonError as e:
                        errors[type(e).__name__] += 1
                        return
                    latencies.append(time.perf_counter() - t0)
                    served[r.served_by] += 1
                    fallbacks += r.attempts[0].target != r.attempts[-1].target
                    retries += sum(1 for a in r.attempts if a.role == "retry")

            t_start = time.perf_counter()
            third = max(1, n_requests // 3)

            def breakers() -> str:
                st = router.group("demo_group").breaker_status()
                return ", ".join(f"{k[len('demo_group.'):]}={v['state']}" for k, v in st.items())

            print("\nphase 1: pool traffic while mock-fast-b is rate limited and mock-smart fails")
            await asyncio.gather(*(one(i, pool="demo_pool") for i in range(third)))
            print(f"  breakers: {breakers()}")

            print("phase 2: echelon1 goes down (503s): group calls fall back down the echelons")
            for m in ("mock-fast-a", "mock-fast-b"):
                mock.script(m, {"latency_ms": 4, "steps": [{"fault": "server_error", "status": 503, "times": 12}]})
            await asyncio.gather(*(one(i, group="demo_group") for i in range(third, 2 * third)))
            print(f"  breakers: {breakers()}")

            print("phase 3: the providers recover; after recovery_time the breakers half-open, probe, close")
            for m in ("mock-fast-a", "mock-fast-b", "mock-smart"):
                mock.script(m, {"latency_ms": 4, "chunk_delay_ms": 2})
            await asyncio.sleep(2.2)
            await asyncio.gather(*(one(i, group="demo_group") for i in range(2 * third, n_requests)))
            print(f"  breakers: {breakers()}")

            print("phase 4: streams; one is cut mid-way and reported as StreamInterrupted with its partial text")
            mock.script("mock-fast-a", {"chunk_delay_ms": 2, "steps": [{"fault": "cut_after", "after": 3, "times": 1}]})
            stream_ok = stream_cut = 0
            for i in range(10):
                try:
                    text = await router.stream(f"stream {i}", group="demo_group.echelon1").text()
                    stream_ok += bool(text)
                except StreamInterrupted as e:
                    stream_cut += 1
                    print(f"  stream {i}: interrupted after {len(e.partial or '')} chars on {e.instance}")
            elapsed = time.perf_counter() - t_start

            print(f"\n{n_requests} requests + 10 streams in {elapsed:.2f}s")
            print(f"latency p50 {_pct(latencies, .5) * 1e3:.1f} ms, p90 {_pct(latencies, .9) * 1e3:.1f} ms, "
                  f"p99 {_pct(latencies, .99) * 1e3:.1f} ms (mean {statistics.mean(latencies) * 1e3:.1f} ms)"
                  if latencies else "no successful requests")
            print(f"calls served by a fallback target: {fallbacks}, retries: {retries}, errors: {dict(errors) or 'none'}")
            print(f"streams: {stream_ok} complete, {stream_cut} interrupted (reported as errors, never as success)")
            print("\nrequests served per instance:")
            for inst, n in sorted(served.items()):
                print(f"  {inst:40s} {n:5d}")
            print("\ninstances (state, breaker, requests, failures):")
            status = router.status()
            for g in status["groups"]:
                if g["name"] != "demo_group":
                    continue
                for e in g["echelons"]:
                    for inst in e["instances"]:
                        print(f"  {inst['instance_id']:40s} {inst['status']:10s} {inst['breaker']['state']:9s} "
                              f"{inst['stats']['requests']:5d} {inst['stats']['failures']:4d}")
            print("\nmock provider saw (requests / faults):")
            counters = mock.counters()
            for model, c in sorted(counters.get("models", {}).items()):
                print(f"  {model:14s} {c.get('requests', 0):5d}  {c.get('faults', {})}")
    return 0


def run_demo(configs: Optional[str] = None, n_requests: int = 300) -> int:
    """Entry point of ``echelon demo``."""
    return asyncio.run(_run(_find_configs(configs), n_requests))
