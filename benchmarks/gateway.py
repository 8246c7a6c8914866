#!/usr/bin/env python3
"""The gateway row, one command: ``python benchmarks/gateway.py`` (see benchmarks/README.md).

In one run, the same load generator (aiohttp on uvloop, a closed loop of N concurrent
requests, pinned to its own core) calls, in interleaved rounds:

* the mock directly (``echelon mock-server``, the floor);
* echelon's gateway (``echelon serve``) in front of that mock;
* LiteLLM's proxy (``litellm --config``, from ``requirements-proxy.txt``) in front of that mock;

with the same 138-byte OpenAI chat request and the same ~1.4 KB response, and reports requests
per second, p50 and p99, and the p50 each gateway adds to the direct call, per concurrency.
Both gateways authenticate every request with the same key (LiteLLM's proxy refuses to start
without a master key; echelon's gets one `[[gateway.keys]]` entry).
The mock and both gateways share the other core (each gateway measured alone). Results go to
``results/gateway.json`` and ``results/gateway.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")
VPY = os.path.join(VENV, "bin", "python")
PROXY_VENV = os.path.join(HERE, ".venv-proxy")
RESULTS = os.path.join(HERE, "results")
TARGETS = ["direct", "echelon", "litellm"]
LABELS = {"direct": "mock directly (floor)", "echelon": "echelon gateway (`echelon serve`)", "litellm": "LiteLLM proxy (`litellm --config`)"}


# =============================================================================================
# the load generator (runs in its own pinned process)


async def _load(url: str, key: str, concurrency: int, seconds: float, warm: float) -> Dict[str, Any]:
    import aiohttp

    sys.path.insert(0, HERE)
    from _clients import BODY, HEADERS

    HEADERS = dict(HEADERS, Authorization=f"Bearer {key}")

    lat: List[int] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        start = time.perf_counter()
        t_measure = start + warm
        t_end = t_measure + seconds
        done_in_window = 0

        async def worker() -> None:
            nonlocal errors, done_in_window
            while True:
                t0 = time.perf_counter_ns()
                if t0 / 1e9 >= t_end:
                    return
                try:
                    async with s.post(url, data=BODY, headers=HEADERS) as r:
                        body = await r.read()
                        ok = r.status == 200 and b'"choices"' in body
                except aiohttp.ClientError:
                    ok = False
                t1 = time.perf_counter_ns()
                if t0 / 1e9 >= t_measure and t1 / 1e9 <= t_end:
                    if ok:
                        lat.append(t1 - t0)
                        done_in_window += 1
                    else:
                        errors += 1

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e3 if lat else None  # noqa: E731
    return {"requests": done_in_window, "errors": errors, "rps": done_in_window / seconds, "p50_us": pct(0.5), "p99_us": pct(0.99)}


def loadgen_main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--warm", type=float, default=0.5)
    a = ap.parse_args(argv)
    import uvloop

    res = uvloop.run(_load(a.url, a.key, a.concurrency, a.seconds, a.warm))
    print(json.dumps(res), flush=True)
    return 0


# =============================================================================================
# set-up


def _sh(cmd: List[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, **kw)


def bootstrap(args: argparse.Namespace) -> None:
    """Both venvs ready (benchmarks/.venv as run.py makes it, benchmarks/.venv-proxy with the
    pinned LiteLLM proxy), then re-exec inside benchmarks/.venv."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not args.no_install:
        if not os.path.exists(VPY):
            _sh([sys.executable, "-m", "venv", VENV], check=True)
        print("[setup] peers of benchmarks/requirements.txt", flush=True)
        _sh([VPY, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)
        sys.path.insert(0, HERE)
        import run

        stamp = run._echelon_stamp()
        old = open(run.STAMP_FILE).read() if os.path.exists(run.STAMP_FILE) else ""
        if stamp != old:
            print("[setup] installing echelon from this checkout (release build)", flush=True)
            _sh([VPY, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", ROOT], check=True)
            with open(run.STAMP_FILE, "w") as f:
                f.write(stamp)
        ppy = os.path.join(PROXY_VENV, "bin", "python")
        if not os.path.exists(ppy):
            _sh([sys.executable, "-m", "venv", PROXY_VENV], check=True)
        print("[setup] LiteLLM proxy of benchmarks/requirements-proxy.txt", flush=True)
        _sh([ppy, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements-proxy.txt")], check=True)
    os.execv(VPY, [VPY, os.path.abspath(__file__)] + sys.argv[1:])


def echelon_dir(tmp: str, mock_url: str, key: str) -> str:
    """A config directory with one group over the mock's `bench` model."""
    llms = os.path.join(tmp, "echelon", "llms")
    os.makedirs(os.path.join(llms, "provider", "mock"))
    os.makedirs(os.path.join(llms, "groups"))
    with open(os.path.join(llms, "provider", "mock", "common.toml"), "w") as f:
        f.write(f'type = "openai_compatible"\nbase_url = "{mock_url}"\napi_key = "mock-key"\n')
    with open(os.path.join(llms, "provider", "mock", "bench.toml"), "w") as f:
        f.write('model = "bench"\n')
    with open(os.path.join(llms, "groups", "bench.toml"), "w") as f:
        f.write('[echelon1]\nmodels = ["bench"]\n')
    with open(os.path.join(llms, "global.toml"), "w") as f:
        digest = hashlib.sha256(key.encode()).hexdigest()
        f.write(f'[gateway]\nwatch = false\nmax_connections = 4096\n[[gateway.keys]]\nname = "bench"\napi_key_sha256 = "{digest}"\n')
    return os.path.dirname(llms)


def litellm_config(tmp: str, mock_url: str, key: str) -> str:
    path = os.path.join(tmp, "litellm.yaml")
    with open(path, "w") as f:
        f.write(
            "model_list:\n"
            "  - model_name: bench\n"
            "    litellm_params:\n"
            "      model: openai/bench\n"
            f"      api_base: {mock_url}\n"
            "      api_key: mock-key\n"
            "litellm_settings:\n"
            "  drop_params: true\n"
            "  telemetry: false\n"
            "general_settings:\n"
            f"  master_key: {key}\n"
        )
    return path


class Server:
    """A gateway process bound to port 0; the port is read from its listening socket (LiteLLM's
    quiet log level hides uvicorn's start-up line)."""

    def __init__(self, name: str, argv: List[str], env: Dict[str, str], log_dir: str, pin: Any) -> None:
        import psutil

        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            pin.prefix(pin.mock_cpu) + argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=pin.preexec(pin.mock_cpu)
        )
        deadline = time.time() + 300
        self.port: Optional[int] = None
        while self.port is None:
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not start; see {self.log_path}")
            try:
                procs = [psutil.Process(self.proc.pid)] + psutil.Process(self.proc.pid).children(recursive=True)
                for p in procs:
                    for c in p.net_connections(kind="tcp"):
                        if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1":
                            self.port = c.laddr.port
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def wait_ready(url: str, key: str, timeout: float = 120) -> None:
    """One successful chat call through `url` (start-up work finished)."""
    sys.path.insert(0, HERE)
    from _clients import BODY, HEADERS

    deadline = time.time() + timeout
    while True:
        req = urllib.request.Request(url, data=BODY, headers=dict(HEADERS, Authorization=f"Bearer {key}"))
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status == 200:
                    return
        except OSError as e:
            if time.time() > deadline:
                raise SystemExit(f"{url} never answered: {e}")
        time.sleep(0.5)


def measure(pin: Any, env: Dict[str, str], url: str, key: str, concurrency: int, seconds: float) -> Dict[str, Any]:
    argv = [sys.executable, os.path.abspath(__file__), "--loadgen", "--url", url, "--key", key, "--concurrency", str(concurrency), "--seconds", str(seconds)]
    r = subprocess.run(pin.prefix(pin.client_cpu) + argv, capture_output=True, text=True, env=env, preexec_fn=pin.preexec(pin.client_cpu), timeout=seconds + 120)
    if r.returncode != 0:
        raise SystemExit(f"load generator failed for {url}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def render(meta: Dict[str, Any], rows: Dict[str, Dict[str, Dict[str, Any]]], concurrencies: List[int]) -> str:
    out = [
        "# Gateway benchmark",
        "",
        f"{meta['when']} · {meta['machine']} · pinning {meta['pinning']} · {meta['rounds']} interleaved rounds of {meta['seconds']} s per cell, median shown · "
        f"LiteLLM proxy {meta['litellm_version']}",
        "",
    ]
    for c in concurrencies:
        direct = rows["direct"][str(c)]
        out += [f"## Concurrency {c}", "", "| target | req/s | p50 µs | p99 µs | added p50 µs | errors |", "|---|---:|---:|---:|---:|---:|"]
        for t in TARGETS:
            cell = rows.get(t, {}).get(str(c))
            if not cell:
                out.append(f"| {LABELS[t]} | — | — | — | — | — |")
                continue
            added = "" if t == "direct" else f"{cell['p50_us'] - direct['p50_us']:,.0f}"
            out.append(f"| {LABELS[t]} | {cell['rps']:,.0f} | {cell['p50_us']:,.0f} | {cell['p99_us']:,.0f} | {added} | {cell['errors']} |")
        e, l = rows["echelon"].get(str(c)), rows.get("litellm", {}).get(str(c))
        if e and l:
            out += ["", f"echelon gateway: {e['rps'] / l['rps']:.1f}× LiteLLM proxy's requests per second, {(l['p50_us'] - direct['p50_us']) / max(1.0, e['p50_us'] - direct['p50_us']):.1f}× less added p50."]
        out.append("")
    return "\n".join(out)


def main() -> int:
    if "--loadgen" in sys.argv:
        return loadgen_main([a for a in sys.argv[1:] if a != "--loadgen"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,64", help="comma list of concurrency levels")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="use the venvs as they are")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    bootstrap(args)
    sys.path.insert(0, HERE)
    import run

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    log_dir = tempfile.mkdtemp(prefix="echelon-gw-bench-")
    pin = run.Pinning(not args.no_pin)
    mock = run.Mock(pin, None, log_dir)
    chars, resp_bytes = mock.calibrate()
    mock.script({"content_chars": chars, "chunks": 8, "latency_ms": 0})
    env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", LITELLM_LOCAL_MODEL_COST_MAP="True", NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    tmp = tempfile.mkdtemp(prefix="echelon-gw-cfg-")
    key = "sk-" + secrets.token_hex(32)
    servers: Dict[str, Server] = {}
    urls = {"direct": mock.base_url + "/chat/completions"}
    try:
        echelon = os.path.join(os.path.dirname(sys.executable), "echelon")
        servers["echelon"] = Server("echelon", [echelon, "serve", echelon_dir(tmp, mock.base_url, key), "--port", "0"], env, log_dir, pin)
        urls["echelon"] = f"http://127.0.0.1:{servers['echelon'].port}/v1/chat/completions"
        lite = os.path.join(PROXY_VENV, "bin", "litellm")
        servers["litellm"] = Server(
            "litellm", [lite, "--config", litellm_config(tmp, mock.base_url, key), "--host", "127.0.0.1", "--port", "0", "--num_workers", "1"],
            env, log_dir, pin,
        )  # fmt: skip
        urls["litellm"] = f"http://127.0.0.1:{servers['litellm'].port}/v1/chat/completions"
        for t in TARGETS:
            wait_ready(urls[t], key)
        # The body names model "bench": the mock's model, echelon's group and LiteLLM's model.
        samples: Dict[str, Dict[str, List[Dict[str, Any]]]] = {t: {str(c): [] for c in concurrencies} for t in TARGETS}
        for rnd in range(args.rounds):
            for c in concurrencies:
                for t in TARGETS:
                    r = measure(pin, env, urls[t], key, c, args.seconds)
                    samples[t][str(c)].append(r)
                    print(f"[round {rnd + 1}/{args.rounds}] c={c:<4} {t:<8} {r['rps']:>9,.0f} req/s  p50 {r['p50_us'] or 0:>9,.0f} µs  errors {r['errors']}", flush=True)
        rows: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for t in TARGETS:
            rows[t] = {}
            for c, runs in samples[t].items():
                ok = [x for x in runs if x["p50_us"] is not None]
                if ok:
                    rows[t][c] = {k: statistics.median(x[k] for x in ok) for k in ("rps", "p50_us", "p99_us")}
                    rows[t][c]["errors"] = sum(x["errors"] for x in runs)
        lite_version = _sh([os.path.join(PROXY_VENV, "bin", "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], capture_output=True).stdout.strip()
        meta = {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{os.cpu_count()} CPUs",
            "pinning": pin.note,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "response_bytes": resp_bytes,
            "litellm_version": lite_version,
            "concurrency": concurrencies,
        }
        md = render(meta, rows, concurrencies)
        print()
        print(md)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gateway.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows, "samples": samples}, f, indent=1)
        with open(os.path.join(args.out, "gateway.md"), "w") as f:
            f.write(md)
    finally:
        for s in servers.values():
            s.stop()
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
