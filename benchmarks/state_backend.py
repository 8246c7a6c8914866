"""The cost of sharing state through Redis: ``Router.chat`` P2 (closed loop, concurrency 64)
with ``[state] backend = "redis"`` against the default memory backend, in the same run, and
the Redis operations per request.

Usage (after ``pip install .`` or ``maturin develop --release``; needs ``redis-server``)::

    python benchmarks/state_backend.py [--rounds 5] [--seconds 2] [--out benchmarks/results]

Both routers use the same config and the same mock (a separate ``echelon mock-server``
process, pinned to CPU 0 when there are two or more; this process to CPU 1), with an RPM, a
TPM and a ``max_concurrency`` on the model far above what the run reaches, so every request
passes through three shared budgets without being held back by them. Rounds alternate between
the backends; each figure is the median. Redis operations are counted by the server
(``INFO stats`` ``total_commands_processed``) over the Redis rounds, background work
(heartbeat, slot trims, the breaker/cooldown read-back) included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Tuple

import echelon

HERE = os.path.dirname(os.path.abspath(__file__))


def resp(port: int, *args: str) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
        f = s.makefile("rb")
        line = f.readline()
        if line[:1] == b"$":
            return f.read(int(line[1:]) + 2)[:-2].decode()
        return line[1:].strip().decode()


def start_redis(tmp: str) -> Tuple[subprocess.Popen, int]:
    exe = shutil.which("redis-server")
    if not exe:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    for _ in range(30):
        port = random.randint(20000, 60000)
        p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin(0))
        for _ in range(200):
            if p.poll() is not None:
                break
            try:
                if resp(port, "PING") == "PONG":
                    return p, port
            except OSError:
                time.sleep(0.02)
        p.kill()
        p.wait()
    raise SystemExit("redis-server did not start")


def _pin(cpu: int):
    if not hasattr(os, "sched_setaffinity") or os.cpu_count() is None or os.cpu_count() < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_mock(tmp: str) -> Tuple[subprocess.Popen, str]:
    exe = os.path.join(os.path.dirname(sys.executable), "echelon")
    for _ in range(30):
        port = random.randint(20000, 60000)
        p = subprocess.Popen([exe, "mock-server", "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin(0))
        for _ in range(300):
            if p.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_mock/counters", timeout=1):
                    return p, f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        p.kill()
        p.wait()
    raise SystemExit("mock did not start")


def config(base: str, state: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "providers": {
            "mock": {
                "common": {"type": "openai_compatible", "base_url": base + "/v1", "api_key": "k", "max_retries": 0},
                "m": {"model": "m", "rpm": 100_000_000, "tpm": 2_000_000_000, "max_concurrency": 10_000},
            }
        },
        "groups": {"g": {"echelon1": {"models": ["m"]}}},
        "pools": {"p": {"task_groups": ["g"]}},
        "global": {"state": state},
    }


async def p2(router: echelon.Router, concurrency: int, seconds: float) -> float:
    msgs = [{"role": "user", "content": "Say hello in one short sentence, please."}]
    done = 0
    stop = time.perf_counter() + seconds
    measure_from = [0.0]

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await router.chat(msgs, pool="p", max_tokens=20)
            done += 1

    # Warm the loop (leases, connections) before the window.
    await asyncio.gather(*(router.chat(msgs, pool="p", max_tokens=20) for _ in range(concurrency)))
    measure_from[0] = time.perf_counter()
    start = done
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (done - start) / (time.perf_counter() - measure_from[0])


async def run(args: argparse.Namespace, base: str, redis_port: int) -> Dict[str, Any]:
    memory = echelon.Router.from_dict(config(base, {"backend": "memory"}))
    shared = echelon.Router.from_dict(config(base, {"backend": "redis", "url": f"redis://127.0.0.1:{redis_port}", "key_prefix": "bench"}))
    await asyncio.sleep(0.5)
    rates: Dict[str, List[float]] = {"memory": [], "redis": []}
    ops = reqs = 0
    for _ in range(args.rounds):
        for name, router in (("memory", memory), ("redis", shared)):
            before = int(resp(redis_port, "INFO", "stats").split("total_commands_processed:")[1].split()[0])
            t0 = time.perf_counter()
            rps = await p2(router, 64, args.seconds)
            elapsed = time.perf_counter() - t0
            after = int(resp(redis_port, "INFO", "stats").split("total_commands_processed:")[1].split()[0])
            rates[name].append(rps)
            if name == "redis":
                ops += after - before - 1  # the INFO itself
                reqs += int(rps * elapsed)
    idle_before = int(resp(redis_port, "INFO", "stats").split("total_commands_processed:")[1].split()[0])
    await asyncio.sleep(3)
    idle_after = int(resp(redis_port, "INFO", "stats").split("total_commands_processed:")[1].split()[0])
    memory.close()
    shared.close()
    return {
        "memory_rps": statistics.median(rates["memory"]),
        "redis_rps": statistics.median(rates["redis"]),
        "rounds": rates,
        "redis_ops_per_request": ops / max(reqs, 1),
        "idle_ops_per_second": (idle_after - idle_before - 1) / 3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="echelon-bench-redis-")
    redis, port = start_redis(tmp)
    mock, base = start_mock(tmp)
    try:
        pin = _pin(1)
        if pin:
            pin()
        r = asyncio.run(run(args, base, port))
    finally:
        mock.terminate()
        redis.terminate()
        mock.wait()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = r["redis_rps"] / r["memory_rps"]
    md = (
        "| `Router.chat` P2, concurrency 64, asyncio | memory | redis | redis / memory |\n|---|---:|---:|---:|\n"
        f"| req/s (median of {args.rounds} interleaved rounds of {args.seconds:g} s) | {r['memory_rps']:,.0f} | {r['redis_rps']:,.0f} | {ratio:.3f} |\n\n"
        f"Redis operations per request: {r['redis_ops_per_request']:.4f} (RPM + TPM + max_concurrency on the model, background work included); "
        f"idle: {r['idle_ops_per_second']:.1f} operations/s per process.\n"
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "state_backend.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "state_backend.json"), "w") as f:
        json.dump(r, f, indent=1)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
