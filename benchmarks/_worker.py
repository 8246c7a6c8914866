"""One benchmark process: one client on one event loop for one figure.

Started by ``run.py`` (fresh process per client × loop × figure, so imports and RSS are
clean). Protocol: the worker prints one JSON line ``{"ready": ...}`` (or ``{"unavailable":
reason}``) and then answers each JSON command read from stdin with one JSON line, so the
orchestrator can interleave rounds of every client while the idle ones wait on stdin with
their loop stopped. P3 and P5 are one-shot (RSS and import time are only clean once).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
import traceback
import urllib.request
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _pct(sorted_vals: List[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# ---------------------------------------------------------------------------------------------
# figures (each returns a JSON-able dict)


async def warmup(c: Any, concurrency: int, duration: float) -> Dict[str, Any]:
    r = await p2(c, concurrency, duration)
    return {"warm": True, "rps": r["rps"], "errors": r["errors"]}


async def p1(c: Any, n: int) -> Dict[str, Any]:
    lat: List[float] = []
    errors = 0
    for _ in range(n):
        t0 = time.perf_counter_ns()
        try:
            await c.call()
        except Exception:
            errors += 1
            continue
        lat.append((time.perf_counter_ns() - t0) / 1e3)
    lat.sort()
    return {"p50_us": _pct(lat, 0.5), "p99_us": _pct(lat, 0.99), "n": len(lat), "errors": errors}


async def p2(c: Any, concurrency: int, duration: float, ramp_max: float = 3.0) -> Dict[str, Any]:
    """Closed loop: `concurrency` workers back to back. The window of `duration` seconds starts
    once the loop is in steady state (min(concurrency, 20) completions, or `ramp_max` seconds
    for a client so slow that a request takes longer than that); requests still running when
    the window closes are cancelled and not counted (a slow peer's queue would otherwise add
    seconds to every round)."""
    lat: List[float] = []
    errors = 0
    done = 0
    if getattr(c, "name", "").startswith("echelon_batch"):
        # Closed loop of batches: each batch keeps `concurrency` requests in flight.
        deadline = time.perf_counter() + duration
        t0 = time.perf_counter()
        while time.perf_counter() < deadline:
            n = concurrency * 8
            ok = await c.batch(n, concurrency)
            done += ok
            errors += n - ok
        el = time.perf_counter() - t0
        return {"rps": done / el, "p50_us": None, "p99_us": None, "n": done, "errors": errors, "elapsed": el}

    state = {"start": None, "end": None}
    warm_done = 0
    steady = asyncio.Event()
    need = min(concurrency, 20)

    async def worker() -> None:
        nonlocal errors, done, warm_done
        while True:
            t = time.perf_counter_ns()
            try:
                await c.call()
                ok = True
            except Exception:
                ok = False
            now = time.perf_counter()
            start, end = state["start"], state["end"]
            if start is None:
                warm_done += 1
                if warm_done >= need:
                    steady.set()
                continue
            if end is not None and now > end:
                return
            if ok:
                lat.append((time.perf_counter_ns() - t) / 1e3)
                done += 1
            else:
                errors += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    t_ramp = time.perf_counter()
    try:
        await asyncio.wait_for(steady.wait(), ramp_max)
    except asyncio.TimeoutError:
        pass
    ramp = time.perf_counter() - t_ramp
    state["start"] = time.perf_counter()
    state["end"] = state["start"] + duration
    await asyncio.sleep(duration)
    el = time.perf_counter() - state["start"]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat.sort()
    return {"rps": done / el, "p50_us": _pct(lat, 0.5), "p99_us": _pct(lat, 0.99), "n": done, "errors": errors, "elapsed": el, "ramp_s": ramp}


async def p4(c: Any, rate: float, duration: float) -> Dict[str, Any]:
    """Open loop at a fixed rate; process CPU time (all threads) per completed request."""
    n = max(1, int(rate * duration))
    results: List[bool] = []

    async def one() -> None:
        try:
            await c.call()
            results.append(True)
        except Exception:
            results.append(False)

    tasks = []
    gc.collect()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    max_lag = 0.0
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    el = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ok = sum(results)
    return {
        "cpu_us_per_req": cpu / max(ok, 1) * 1e6,
        "cpu_s": cpu,
        "n": ok,
        "errors": n - ok,
        "offered_rps": rate,
        "achieved_rps": ok / el,
        "max_send_lag_ms": max_lag * 1e3,
    }


async def p6(c: Any, n: int, concurrency: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    ok = await c.batch(n, concurrency)
    el = time.perf_counter() - t0
    return {"rps": ok / el, "n": ok, "errors": n - ok, "elapsed": el}


async def ttft(c: Any, n: int) -> Dict[str, Any]:
    vals: List[float] = []
    errors = 0
    for _ in range(n):
        try:
            vals.append(await c.ttft() * 1e6)
        except Exception:
            errors += 1
    vals.sort()
    return {"p50_us": _pct(vals, 0.5), "p99_us": _pct(vals, 0.99), "n": len(vals), "errors": errors}


def _mock_in_flight(admin: str) -> int:
    """Requests of this worker's model that the mock is holding right now."""
    from _clients import MODEL

    with urllib.request.urlopen(admin + "/_mock/counters", timeout=2) as r:
        obj = json.loads(r.read())
    per = (obj.get("models") or {}).get(MODEL)
    return int((per if per is not None else obj).get("in_flight", 0))


async def p3(c: Any, n: int, hold_s: float, admin: str) -> Dict[str, Any]:
    """RSS growth while `n` requests are held open by the mock, per in-flight request.

    A sampler thread (independent of the event loop, which a slow client may keep busy for a
    minute opening thousands of connections) reads this process's RSS and the mock's
    in-flight count for our model every 50 ms until the first response arrives or 1.8 × the
    hold has passed; the sample with the most requests in flight is the measurement. The
    thread then prints the result and ends the process: RSS is clean only once, and draining
    thousands of held requests would only cost time."""
    import threading

    # The worker warmed up (session, pools, lazy imports) before the orchestrator switched the
    # mock to holding responses; that one-time cost is not part of the per-request figure.
    gc.collect()
    await asyncio.sleep(0.2)
    base = _rss()
    state = {"ok": 0, "err": 0, "launch_s": None}
    stop = threading.Event()
    is_batch = getattr(c, "name", "").startswith("echelon_batch")

    def finish(samples: List[tuple]) -> None:
        good = [s for s in samples if s[0] > 0]
        if not good:
            res: Dict[str, Any] = {"error": "no sample with requests in flight", "samples": samples[:5]}
        else:
            peak_if = max(s[0] for s in good)
            at = [s for s in good if s[0] == peak_if][-1]
            res = {
                "kb_per_req": (at[1] - base) / peak_if / 1024,
                "in_flight": peak_if,
                "requested": n,
                "rss_base_mb": base / 2**20,
                "rss_peak_mb": at[1] / 2**20,
                "launch_s": state["launch_s"],
                "peak_at_s": at[2],
                "total_s": samples[-1][2] if samples else None,
                "ok_before_end": state["ok"],
                "errors": state["err"],
            }
        _emit(res)
        os._exit(0)

    def sampler() -> None:
        samples: List[tuple] = []
        t0 = time.perf_counter()
        while not stop.is_set() and time.perf_counter() - t0 < hold_s * 1.8:
            try:
                inflight = _mock_in_flight(admin)
            except Exception:
                inflight = -1
            if not stop.is_set():
                samples.append((inflight, _rss(), time.perf_counter() - t0))
            stop.wait(0.05)
        finish(samples)

    def _done(fut: "asyncio.Future[Any]") -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            state["err"] += 1  # an early failure must not end the sampling window
        else:
            state["ok"] += 1
            stop.set()

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.perf_counter()
    if is_batch:
        futs = [asyncio.ensure_future(c.batch(n, n))]
    else:
        futs = [asyncio.ensure_future(c.call()) for _ in range(n)]
    for f in futs:
        f.add_done_callback(_done)
    state["launch_s"] = time.perf_counter() - t0
    await asyncio.sleep(hold_s * 10)  # the sampler thread ends the process
    return {"error": "sampler did not finish"}


# ---------------------------------------------------------------------------------------------


def run_p5(client: str, base_url: str, loop_kind: str) -> None:
    """Import time and idle RSS. Must be the first thing this process imports."""
    from _clients import IMPORTS  # stdlib-only module body

    t0 = time.perf_counter()
    import importlib

    for mod in IMPORTS[client]:
        importlib.import_module(mod)
    import_ms = (time.perf_counter() - t0) * 1e3
    from _clients import CLIENTS, Unavailable

    c = CLIENTS[client](base_url)
    loop = _new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(c.setup(16))
        loop.run_until_complete(c.call())  # one request: a client that is ready to serve
    except Unavailable as e:
        _emit({"unavailable": str(e)})
        return
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0.2))
    _emit({"import_ms": import_ms, "idle_rss_mb": _rss() / 2**20})
    loop.run_until_complete(c.close())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--figure", required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--max-conns", type=int, default=256)
    a = ap.parse_args()

    if a.figure == "p5":
        try:
            run_p5(a.client, a.base_url, a.loop)
        except ImportError as e:
            _emit({"unavailable": f"import failed: {e}"})
        return

    from _clients import CLIENTS, Unavailable

    loop = _new_loop(a.loop)
    asyncio.set_event_loop(loop)
    c = CLIENTS[a.client](a.base_url)
    try:
        loop.run_until_complete(c.setup(a.max_conns))
        loop.run_until_complete(c.call())
    except Unavailable as e:
        _emit({"unavailable": str(e)})
        return
    except ImportError as e:
        _emit({"unavailable": f"import failed: {e}"})
        return
    except Exception as e:
        _emit({"unavailable": f"setup failed: {type(e).__name__}: {e}"})
        return

    if a.figure == "p3":
        for _ in range(20):
            loop.run_until_complete(c.call())

    _emit({"ready": True, "pid": os.getpid()})
    if a.figure == "p3":
        # One-shot: RSS is clean once. Exit without tearing down 10,000 open requests.
        cmd = json.loads(sys.stdin.readline())
        cmd.pop("op", None)
        try:
            res = loop.run_until_complete(p3(c, **cmd))
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-800:]}
        _emit(res)
        os._exit(0)
    ops = {"warmup": warmup, "p1": p1, "p2": p2, "p4": p4, "p6": p6, "ttft": ttft, "p3": p3}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            res = loop.run_until_complete(ops[op](c, **cmd))
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-800:]}
        _emit(res)
    try:
        loop.run_until_complete(asyncio.wait_for(c.close(), 10))
    except Exception:
        pass


if __name__ == "__main__":
    main()
