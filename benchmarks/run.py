#!/usr/bin/env python3
"""echelon vs its peers, one command: ``python benchmarks/run.py`` (see benchmarks/README.md).

Creates/uses ``benchmarks/.venv`` (peers pinned in requirements.txt, echelon installed from
this checkout), starts the project's Rust mock once as a separate process pinned to its own
core, runs every (client × event loop × figure) in a fresh pinned subprocess with rounds
interleaved across clients, prints a Markdown table, and writes ``results/latest.json`` and
``results/latest.png``. ``--quick`` is a ~2 minute smoke run; ``--only`` selects figures
and/or clients.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")
VPY = os.path.join(VENV, "bin", "python")
RESULTS = os.path.join(HERE, "results")
UNAVAILABLE_FILE = os.path.join(VENV, "bench-unavailable.json")
STAMP_FILE = os.path.join(VENV, "echelon-installed.stamp")

FIGURES = ["p5", "p1", "ttft", "p2", "p4", "p6", "p3"]
PEERS = ["aiohttp", "httpx", "openai", "litellm", "tensorzero"]
ECHELON = [
    "echelon_chat",
    "echelon_pool",
    "echelon_compat",
    "echelon_batch",
    "echelon_batch_1core",
    "echelon_batch_1core_reqwest",
    "echelon_batch_1core_h1",
    "echelon_chat_h2",
    "echelon_chat_h2_reqwest",
    "echelon_chat_1w",
]
# Variants measured only where they compare protocols or HTTP/2 paths.
H2_ONLY = ("echelon_batch_1core", "echelon_batch_1core_reqwest", "echelon_batch_1core_h1", "echelon_chat_h2", "echelon_chat_h2_reqwest")
# Not a client: the P4 open loop with a call that sends nothing, i.e. what the measurement
# itself costs per request (its timer wake-ups and task creation).
HARNESS = ["open_loop"]
ALL_CLIENTS = PEERS + ECHELON + HARNESS
LABELS = {
    "aiohttp": "raw aiohttp (floor)",
    "httpx": "httpx",
    "openai": "openai SDK",
    "litellm": "LiteLLM Router",
    "tensorzero": "TensorZero embedded",
    "echelon_chat": "echelon Router.chat",
    "echelon_pool": "echelon PollingPool.call",
    "echelon_compat": "echelon compat call_llm",
    "echelon_batch": "echelon Router.batch",
    "echelon_chat_h2": "echelon Router.chat, http_version=\"2\"",
    "echelon_chat_h2_reqwest": "echelon Router.chat, http_version=\"2\", previous path (reqwest)",
    "echelon_batch_1core": "echelon Router.batch, 1 worker, http_version=\"2\"",
    "echelon_batch_1core_reqwest": "echelon Router.batch, 1 worker, http_version=\"2\", previous path (reqwest)",
    "echelon_batch_1core_h1": "echelon Router.batch, 1 worker, http_version=\"1.1\"",
    "echelon_chat_1w": "echelon Router.chat, 1 worker",
    "open_loop": "open loop alone (no request)",
}
# Which clients take part in which figure (P5 times imports, so the echelon variants that share
# one import are measured once, plus the compat module).
FIG_CLIENTS = {
    "p5": ["aiohttp", "httpx", "openai", "litellm", "tensorzero", "echelon_chat", "echelon_compat"],
    "p1": [c for c in PEERS + ECHELON if c not in H2_ONLY + ("echelon_batch", "echelon_chat_1w")],
    "ttft": PEERS + ["echelon_chat"],
    "p2": [c for c in PEERS + ECHELON if c not in ("echelon_batch_1core", "echelon_batch_1core_reqwest", "echelon_batch_1core_h1", "echelon_chat_1w")],
    "p4": [c for c in ALL_CLIENTS if c not in H2_ONLY + ("echelon_batch",)],
    "p6": PEERS + ["echelon_chat", "echelon_batch", "echelon_batch_1core", "echelon_batch_1core_reqwest", "echelon_batch_1core_h1"],
    "p3": [c for c in PEERS + ECHELON if c not in ("echelon_batch_1core", "echelon_batch_1core_reqwest", "echelon_batch_1core_h1", "echelon_chat_1w")],
}
TITLES = {
    "p1": "P1 added latency at concurrency 1",
    "p2": "P2 max sustained throughput (closed loop)",
    "p3": "P3 memory per in-flight request",
    "p4": "P4 CPU time per request at a fixed offered load",
    "p5": "P5 import time and idle RSS",
    "p6": "P6 batch throughput",
    "ttft": "Streaming: time to first token",
}


# =============================================================================================
# virtualenv bootstrap


def _sh(cmd: List[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, **kw)


def _echelon_stamp() -> str:
    """Changes whenever the sources that go into the echelon wheel change."""
    paths = ["src", "python", "Cargo.toml", "Cargo.lock", "pyproject.toml"]
    h = hashlib.sha256()
    try:
        for args in (["git", "log", "-1", "--format=%H", "--"] + paths, ["git", "status", "--porcelain", "--"] + paths):
            h.update(_sh(args, cwd=ROOT, capture_output=True, check=True).stdout.encode())
        diff = _sh(["git", "diff", "--"] + paths, cwd=ROOT, capture_output=True, check=True).stdout
        h.update(diff.encode())
    except (OSError, subprocess.CalledProcessError):
        h.update(str(time.time()).encode())  # not a git checkout: always reinstall
    return h.hexdigest()


def bootstrap(args: argparse.Namespace) -> None:
    """Make sure we run inside benchmarks/.venv with the pinned peers and this checkout's
    echelon, then re-exec inside it."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    t0 = time.time()
    if not os.path.exists(VPY):
        print(f"[setup] creating {VENV}", flush=True)
        _sh([sys.executable, "-m", "venv", VENV], check=True)
        _sh([VPY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False)
    unavailable: Dict[str, str] = {}
    if not args.no_install:
        req = os.path.join(HERE, "requirements.txt")
        r = _sh([VPY, "-m", "pip", "install", "-q", "-r", req], capture_output=True)
        if r.returncode != 0:
            # One pin that cannot be had must not sink the run: install them one by one and
            # name what failed in the table.
            for line in open(req):
                spec = line.split("#", 1)[0].strip()
                if not spec:
                    continue
                one = _sh([VPY, "-m", "pip", "install", "-q", spec], capture_output=True)
                if one.returncode != 0:
                    name = spec.split("==")[0].lower()
                    last = (one.stderr.strip().splitlines() or ["pip failed"])[-1]
                    unavailable[name] = f"{spec} not obtainable: {last[:160]}"
                    print(f"[setup] {spec}: NOT OBTAINABLE ({last[:160]})", flush=True)
        stamp = _echelon_stamp()
        old = open(STAMP_FILE).read() if os.path.exists(STAMP_FILE) else ""
        if args.reinstall or stamp != old:
            print("[setup] installing echelon from this checkout (release build, ~1.5 min the first time)", flush=True)
            r = _sh([VPY, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", ROOT], capture_output=True)
            if r.returncode != 0:
                print(r.stdout[-2000:], r.stderr[-4000:], sep="\n")
                unavailable["echelon"] = "pip install of this checkout failed (see above)"
            else:
                with open(STAMP_FILE, "w") as f:
                    f.write(stamp)
        with open(UNAVAILABLE_FILE, "w") as f:
            json.dump(unavailable, f)
    print(f"[setup] venv ready in {time.time() - t0:.0f} s", flush=True)
    env = dict(os.environ, BENCH_SETUP_S=f"{time.time() - t0:.1f}")
    os.execve(VPY, [VPY, os.path.abspath(__file__)] + sys.argv[1:], env)


# =============================================================================================
# pinning and the mock


class Pinning:
    """Mock on one core, every client on another, when the box allows it."""

    def __init__(self, enabled: bool) -> None:
        self.active = False
        self.note = "off (--no-pin)"
        self.client_cpu: Optional[int] = None
        self.mock_cpu: Optional[int] = None
        self.tool = shutil.which("taskset")
        if not enabled:
            return
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:
            self.note = "off (no sched_setaffinity on this platform)"
            return
        if len(cpus) < 2:
            self.note = f"off (only {len(cpus)} CPU available)"
            return
        self.client_cpu, self.mock_cpu = cpus[0], cpus[-1]
        try:
            if self.tool:
                _sh([self.tool, "-c", str(self.client_cpu), "true"], check=True, capture_output=True)
            else:
                os.sched_setaffinity(0, {self.mock_cpu})
                os.sched_setaffinity(0, set(cpus))
        except (OSError, subprocess.CalledProcessError) as e:
            self.note = f"off (pinning refused: {e})"
            return
        self.active = True
        how = "taskset" if self.tool else "sched_setaffinity"
        self.note = (
            f"on via {how}: mock on CPU {self.mock_cpu}; each client process (all its threads) on CPU "
            f"{self.client_cpu} from the end of its start-up; orchestrator on CPU {self.mock_cpu}"
        )
        os.sched_setaffinity(0, {self.mock_cpu})  # the orchestrator only waits on pipes

    def pin_all_threads(self, pid: int, cpu: Optional[int]) -> None:
        """Move a running process, every thread of it, onto `cpu` (threads it starts later
        inherit the affinity)."""
        if not self.active or cpu is None:
            return
        if self.tool:
            _sh([self.tool, "-a", "-p", "-c", str(cpu), str(pid)], capture_output=True)
            return
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), {cpu})
            except OSError:
                pass

    def prefix(self, cpu: Optional[int]) -> List[str]:
        if not self.active or cpu is None:
            return []
        return [self.tool, "-c", str(cpu)] if self.tool else []

    def preexec(self, cpu: Optional[int]):
        if not self.active or cpu is None or self.tool:
            return None
        return lambda: os.sched_setaffinity(0, {cpu})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mock:
    """The project's mock provider, one process for the whole run."""

    def __init__(self, pin: Pinning, cmd: Optional[str], log_dir: str) -> None:
        self.port = _free_port()
        self.admin = f"http://127.0.0.1:{self.port}"
        self.base_url = self.admin + "/v1"
        if cmd:
            argv = cmd.format(port=self.port, python=sys.executable).split()
            self.kind = f"custom: {cmd}"
        else:
            exe = os.path.join(os.path.dirname(sys.executable), "echelon")
            argv = [exe, "mock-server", "--host", "127.0.0.1", "--port", str(self.port)]
            self.kind = "echelon mock-server (project's Rust mock)"
        self.log = open(os.path.join(log_dir, "mock.log"), "w")
        self.proc = subprocess.Popen(
            pin.prefix(pin.mock_cpu) + argv, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=pin.preexec(pin.mock_cpu)
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(self.admin + "/_mock/counters", timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"mock did not start ({' '.join(argv)}); see {self.log.name}")
                time.sleep(0.1)

    def _post(self, path: str, obj: Any) -> Any:
        req = urllib.request.Request(self.admin + path, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def script(self, behaviour: Dict[str, Any]) -> None:
        """The behaviour of every model without a script of its own."""
        self._post("/_mock/script", {"*": behaviour})

    def set_model(self, model: str, behaviour: Dict[str, Any]) -> None:
        self._post("/_mock/script", {model: behaviour})

    def reset(self) -> None:
        self._post("/_mock/reset", {})

    def counters(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.admin + "/_mock/counters", timeout=10) as r:
            return json.loads(r.read())

    def response_bytes(self, content_chars: int) -> int:
        sys.path.insert(0, HERE)
        from _clients import BODY, HEADERS

        self.script({"content_chars": content_chars, "chunks": 8, "latency_ms": 0})
        req = urllib.request.Request(self.base_url + "/chat/completions", data=BODY, headers=HEADERS)
        with urllib.request.urlopen(req, timeout=10) as r:
            return len(r.read())

    def calibrate(self, target: int = 1400) -> Tuple[int, int]:
        """content_chars that makes the non-streaming response ~target bytes."""
        a, b = self.response_bytes(200), self.response_bytes(1200)
        per_char = (b - a) / 1000
        chars = max(1, int(200 + (target - a) / per_char))
        return chars, self.response_bytes(chars)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# =============================================================================================
# worker processes


class Worker:
    """One fresh process: one client on one loop for one figure."""

    def __init__(
        self, ctx: "Ctx", client: str, loop: str, figure: str, max_conns: int, cpu: Optional[int] = None, model: str = "bench"
    ) -> None:
        self.ctx = ctx
        self.client, self.loop, self.figure, self.model = client, loop, figure, model
        self.unavailable: Optional[str] = None
        self.buf = b""
        self.errlog = open(os.path.join(ctx.log_dir, f"{figure}-{client}-{loop}.log"), "ab")
        argv = [
            sys.executable, os.path.join(HERE, "_worker.py"), "--client", client, "--loop", loop,
            "--figure", figure, "--base-url", ctx.mock.base_url, "--max-conns", str(max_conns),
        ]  # fmt: skip
        # Start-up (imports, LiteLLM's seconds of it) runs on any core; measuring workers are
        # pinned to the client core (every thread) once ready, see pin().
        self.proc = subprocess.Popen(
            ctx.pin.prefix(cpu) + argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errlog,
            env=dict(ctx.env, BENCH_MODEL=model),
            preexec_fn=ctx.pin.preexec(cpu),
        )

    def pin(self) -> None:
        self.ctx.pin.pin_all_threads(self.proc.pid, self.ctx.pin.client_cpu)

    def read(self, timeout: float) -> Dict[str, Any]:
        deadline = time.time() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                self.kill()
                return {"error": f"timed out after {timeout:.0f} s"}
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return {"error": f"worker exited (code {self.proc.poll()}); see {self.errlog.name}"}
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"error": f"bad worker output: {line[:200]!r}"}

    def ready(self, timeout: float = 240) -> bool:
        r = self.read(timeout)
        if "unavailable" in r:
            self.unavailable = r["unavailable"]
        elif "error" in r:
            self.unavailable = r["error"]
        return self.unavailable is None

    def ask(self, op: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        try:
            self.proc.stdin.write((json.dumps(op) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            return {"error": f"worker gone: {e}"}
        return self.read(timeout)

    def quit(self) -> None:
        try:
            self.proc.stdin.write(b'{"op": "quit"}\n')
            self.proc.stdin.close()
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self.errlog.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Ctx:
    def __init__(self, args: argparse.Namespace, pin: Pinning, mock: Mock, log_dir: str) -> None:
        self.args, self.pin, self.mock, self.log_dir = args, pin, mock, log_dir
        self.env = dict(
            os.environ,
            PYTHONDONTWRITEBYTECODE="0",
            TENSORZERO_DISABLE_PSEUDONYMOUS_USAGE_ANALYTICS="true",
            TENSORZERO_HOWDY_URL="http://127.0.0.1:9/",
            LITELLM_LOG="ERROR",
            LITELLM_TELEMETRY="False",
            NO_PROXY="127.0.0.1,localhost",
            RUST_LOG="error",
        )
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            self.env.pop(k, None)
        self.results: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.notes: List[str] = []
        self.unavailable: Dict[str, str] = {}

    def put(self, fig: str, loop: str, client: str, value: Dict[str, Any]) -> None:
        self.results.setdefault(fig, {}).setdefault(loop, {})[client] = value


# =============================================================================================
# figures


def _median(rounds: List[Dict[str, Any]], key: str) -> Optional[float]:
    vals = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def run_interleaved(ctx: Ctx, fig: str, clients: List[str], loops: List[str], plan, rounds: int, max_conns: int) -> None:
    """Start one process per (client × loop), warm each up, then run `rounds` rounds, each
    round visiting every process in turn (rotated so no client always goes first).
    `plan(client, loop, warm)` gives the ops to run: warm-up ops, or (key, op) pairs."""
    workers: List[Worker] = []
    for loop in loops:
        for c in clients:
            if c in ctx.unavailable:
                ctx.put(fig, loop, c, {"unavailable": ctx.unavailable[c]})
                continue
            workers.append(Worker(ctx, c, loop, fig, max_conns))
    live = []
    for w in workers:
        if w.ready():
            w.pin()
            live.append(w)
        else:
            ctx.put(fig, w.loop, w.client, {"unavailable": w.unavailable})
            if w.unavailable and ("not landed" in w.unavailable or "import failed" in w.unavailable):
                ctx.unavailable[w.client] = w.unavailable
            w.kill()
    per: Dict[Tuple[str, str], Dict[str, List[Dict[str, Any]]]] = {(w.client, w.loop): {} for w in live}
    for w in live:
        for op in plan(w.client, w.loop, warm=True):
            w.ask(op, timeout=120)
    for r in range(rounds):
        order = live[r % max(len(live), 1):] + live[: r % max(len(live), 1)]
        for w in order:
            for key, op in plan(w.client, w.loop, warm=False):
                res = w.ask(op, timeout=300)
                per[(w.client, w.loop)].setdefault(key, []).append(res)
    for w in live:
        w.quit()
        out: Dict[str, Any] = {}
        for key, rs in per[(w.client, w.loop)].items():
            good = [x for x in rs if "error" not in x]
            errs = [x["error"] for x in rs if "error" in x]
            summary = {k: _median(good, k) for k in (good[0].keys() if good else []) if k not in ("trace",)}
            summary["rounds"] = len(good)
            if errs:
                summary["round_errors"] = errs[:3]
            out[key] = summary
        ctx.put(fig, w.loop, w.client, out)


def fig_p1(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    def plan(client: str, loop: str, warm: bool):
        n = cfg["p1_n"] if client != "litellm" else max(30, cfg["p1_n"] // 4)
        if warm:
            return [{"op": "p1", "n": 50}]
        return [("c1", {"op": "p1", "n": n})]

    run_interleaved(ctx, "p1", clients, loops, plan, cfg["rounds"], 16)


def fig_ttft(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    def plan(client: str, loop: str, warm: bool):
        n = cfg["ttft_n"] if client != "litellm" else max(20, cfg["ttft_n"] // 4)
        if warm:
            return [{"op": "ttft", "n": 20}]
        return [("c1", {"op": "ttft", "n": n})]

    run_interleaved(ctx, "ttft", clients, loops, plan, cfg["rounds"], 16)


def fig_p2(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    d = cfg["p2_s"]

    def plan(client: str, loop: str, warm: bool):
        if warm:
            return [{"op": "warmup", "concurrency": 256, "duration": cfg["warm_s"]}]
        return [(f"c{c}", {"op": "p2", "concurrency": c, "duration": d, "ramp_max": cfg["p2_ramp_max"]}) for c in (64, 256)]

    run_interleaved(ctx, "p2", clients, loops, plan, cfg["rounds"], 256)


def busy_p4_clients(ctx: Ctx, clients: List[str], loop: str, busy_rate: float) -> List[str]:
    """Who takes part in P4's busy load: every client whose P2 rate (c64) is at least half of
    it. A slower one would spend seconds per round draining its queue, which says nothing
    new (P2 already shows it saturated) and breaks the run's time budget. Without P2 results
    the pure-Python HTTP clients, which manage a few hundred req/s here, are left out."""
    out = []
    for c in clients:
        rps = _get(ctx, "p2", loop, c, "c64", "rps")
        if c == "litellm" or (rps is None and c in ("httpx", "openai")) or (rps is not None and rps < busy_rate / 2):
            continue
        out.append(c)
    return out


def fig_p4(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    busy = {loop: busy_p4_clients(ctx, clients, loop, cfg["p4_rate_busy"]) for loop in loops}

    def plan(client: str, loop: str, warm: bool):
        rate = cfg["p4_rate"] if client != "litellm" else cfg["p4_rate_slow"]
        dur = cfg["p4_s"] if client != "litellm" else cfg["p4_s"] * 2
        if warm:
            return [{"op": "p4", "rate": rate, "duration": 0.3}]
        ops = [("fixed", {"op": "p4", "rate": rate, "duration": dur})]
        # A second, busy load: CPU per request falls with load as wake-ups are shared by
        # overlapping requests.
        if client in busy[loop]:
            ops.append(("busy", {"op": "p4", "rate": cfg["p4_rate_busy"], "duration": cfg["p4_s"]}))
        return ops

    run_interleaved(ctx, "p4", clients, loops, plan, cfg["rounds"], 256)


def fig_p6(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    sizes: Dict[Tuple[str, str], int] = {}
    for loop in loops:
        for c in clients:
            if c.startswith("echelon"):
                sizes[(c, loop)] = cfg["p6_n"]
            else:
                # Peers: about p6_peer_s seconds of work at their P2 rate (10,000 LiteLLM
                # requests alone would take minutes); the table says how many were sent.
                p2 = ctx.results.get("p2", {}).get(loop, {}).get(c, {}).get("c256", {})
                rps = p2.get("rps") or 1000
                sizes[(c, loop)] = int(min(cfg["p6_n"], max(100, rps * cfg["p6_peer_s"])))

    def plan(client: str, loop: str, warm: bool):
        if warm:
            return [{"op": "p6", "n": 512, "concurrency": 256}]
        return [("batch", {"op": "p6", "n": sizes[(client, loop)], "concurrency": 256})]

    run_interleaved(ctx, "p6", clients, loops, plan, cfg["rounds"], 256)
    for (c, loop), n in sizes.items():
        v = ctx.results.get("p6", {}).get(loop, {}).get(c)
        if isinstance(v, dict) and "batch" in v:
            v["batch"]["requests_per_call"] = n


def fig_p5(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    """Import time and idle RSS: one fresh process per measurement, rounds interleaved.
    Import cost does not depend on the loop; measured on the first selected loop. The mock
    is nearly idle here (one request per process), so two processes run at a time, one
    pinned to each core."""
    loop = loops[0]
    per: Dict[str, List[Dict[str, Any]]] = {c: [] for c in clients}
    queue: List[str] = []
    for r in range(cfg["rounds"]):
        queue += clients[r % len(clients):] + clients[: r % len(clients)]
    cpus = [ctx.pin.client_cpu, ctx.pin.mock_cpu] if ctx.pin.active else [None, None]
    running: Dict[Any, Tuple[str, Worker]] = {}  # cpu -> (client, worker)
    while queue or running:
        for cpu in cpus:
            if cpu in running:
                continue
            while queue and queue[0] in ctx.unavailable:
                queue.pop(0)
            if queue:
                c = queue.pop(0)
                running[cpu] = (c, Worker(ctx, c, loop, "p5", 16, cpu=cpu))
        if not running:
            break
        fds = {w.proc.stdout.fileno(): cpu for cpu, (_, w) in running.items()}
        ready, _, _ = select.select(list(fds), [], [], 120)
        for fd in ready or list(fds):  # nothing in 120 s: read() reports the time-out
            cpu = fds[fd]
            c, w = running.pop(cpu)
            res = w.read(120)
            w.quit()
            if "unavailable" in res:
                ctx.unavailable.setdefault(c, res["unavailable"])
            per[c].append(res)
    for c in clients:
        good = [x for x in per[c] if "import_ms" in x]
        if c in ctx.unavailable:
            ctx.put("p5", "any", c, {"unavailable": ctx.unavailable[c]})
        elif not good:
            ctx.put("p5", "any", c, {"error": (per[c] or [{}])[0].get("error", "no result")})
        else:
            ctx.put("p5", "any", c, {"import": {"import_ms": _median(good, "import_ms"), "idle_rss_mb": _median(good, "idle_rss_mb"), "rounds": len(good)}})


def fig_p3(ctx: Ctx, clients: List[str], loops: List[str], cfg: Dict[str, Any]) -> None:
    """Memory per in-flight request: the mock holds every response for hold_ms; RSS growth
    over the warmed-up baseline divided by the requests the mock reports in flight for that
    worker's own model. RSS is clean only once per process, so every round is a fresh
    process. All workers start and warm up together (on their own model names, not held),
    then are measured one at a time (10,000 held connections each: the fd limit allows one)."""
    hold = cfg["p3_hold_ms"]
    beh = {"content_chars": ctx.content_chars, "chunks": 8}
    for loop in cfg["p3_loops"]:
        if loop not in loops:
            continue
        per: Dict[str, List[Dict[str, Any]]] = {c: [] for c in clients}
        for r in range(cfg["p3_rounds"]):
            ws = []
            for c in clients:
                if c in ctx.unavailable:
                    continue
                n = min(cfg["p3_n"], cfg["p3_caps"].get(c, cfg["p3_n"]))
                ws.append((c, n, Worker(ctx, c, loop, "p3", n, model=f"p3-{c}-{loop}-{r}")))
            ready = []
            for c, n, w in ws:
                if w.ready():
                    w.pin()
                    ready.append((c, n, w))
                else:
                    per[c].append({"error": w.unavailable})
                    w.kill()
            for c, n, w in ready:
                ctx.mock.set_model(w.model, dict(beh, latency_ms=hold))
                t0 = time.time()
                res = w.ask({"op": "p3", "n": n, "hold_s": hold / 1000, "admin": ctx.mock.admin}, timeout=hold / 1000 + 120)
                t1 = time.time()
                w.quit()
                _wait_idle(ctx.mock, 30)
                res["wall_s"] = {"measure": round(t1 - t0, 1), "quit_and_idle": round(time.time() - t1, 1)}
                per[c].append(res)
        for c in clients:
            good = [x for x in per[c] if "kb_per_req" in x]
            if c in ctx.unavailable:
                ctx.put("p3", loop, c, {"unavailable": ctx.unavailable[c]})
                continue
            if not good:
                ctx.put("p3", loop, c, {"error": (per[c] or [{}])[0].get("error", "no result")})
                continue
            summary = {k: _median(good, k) for k in ("kb_per_req", "in_flight", "requested", "rss_base_mb", "rss_peak_mb", "launch_s", "peak_at_s", "total_s", "errors")}
            summary["rounds"] = len(good)
            summary["wall_s"] = [x.get("wall_s") for x in good]
            ctx.put("p3", loop, c, {"held": summary})


def _wait_idle(mock: Mock, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if int(mock.counters().get("in_flight", 0)) == 0:
                return
        except OSError:
            pass
        time.sleep(0.1)


# =============================================================================================
# report


def _get(ctx: Ctx, fig: str, loop: str, client: str, key: str, field: str) -> Optional[float]:
    v = ctx.results.get(fig, {}).get(loop, {}).get(client, {})
    x = v.get(key, {}) if isinstance(v, dict) else {}
    y = x.get(field) if isinstance(x, dict) else None
    return y if isinstance(y, (int, float)) else None


def _status(ctx: Ctx, fig: str, loop: str, client: str) -> Optional[str]:
    v = ctx.results.get(fig, {}).get(loop, {}).get(client)
    if v is None:
        return None
    if "unavailable" in v:
        return "n/a: " + str(v["unavailable"])[:90]
    if "error" in v:
        return "error: " + str(v["error"])[:90]
    return None


def _fmt(x: Optional[float], digits: int = 0, unit: str = "") -> str:
    if x is None:
        return "—"
    if abs(x) >= 100 or digits == 0:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{digits}f}{unit}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:,.0f}×"


def build_targets(ctx: Ctx, loops: List[str]) -> List[Dict[str, Any]]:
    """Each target of the issue, evaluated for every echelon entry point it applies to."""
    t: List[Dict[str, Any]] = []

    def add(name: str, client: str, loop: str, value: Optional[float], ok: Optional[bool], shown: str) -> None:
        t.append({"target": name, "client": client, "loop": loop, "value": value, "pass": ok, "shown": shown})

    for loop in loops:
        for c in ("echelon_chat", "echelon_pool", "echelon_compat"):
            p50 = _get(ctx, "p1", loop, c, "c1", "p50_us")
            base = _get(ctx, "p1", loop, "aiohttp", "c1", "p50_us")
            if p50 is not None and base is not None:
                d = (p50 - base) / 1000
                add("P1 Δp50 ≤ 0.1 ms", c, loop, d, d <= 0.1, f"{d:+.3f} ms")
        need = 1.5 if loop == "asyncio" else 2.5
        for c in ("echelon_chat", "echelon_pool", "echelon_compat", "echelon_batch"):
            for conc in (64, 256):
                v = _get(ctx, "p2", loop, c, f"c{conc}", "rps")
                if v is None:
                    continue
                for peer, want in (("aiohttp", need), ("litellm", 100.0), ("tensorzero", 4.0)):
                    b = _get(ctx, "p2", loop, peer, f"c{conc}", "rps")
                    if b:
                        add(f"P2 c{conc} ≥ {want:g}× {LABELS[peer]}", c, loop, v / b, v / b >= want, f"{v / b:.2f}× ({v:,.0f} vs {b:,.0f} req/s)")
        for c in ("echelon_chat", "echelon_pool", "echelon_compat", "echelon_chat_1w"):
            for key in ("fixed", "busy"):
                v = _get(ctx, "p4", loop, c, key, "cpu_us_per_req")
                if v is not None:
                    offered = _get(ctx, "p4", loop, c, key, "offered_rps") or 0
                    achieved = _get(ctx, "p4", loop, c, key, "achieved_rps") or 0
                    add(f"P4 CPU ≤ 0.1 ms/request at {offered:,.0f} req/s", c, loop, v / 1000, v <= 100, f"{v / 1000:.3f} ms ({achieved:,.0f} req/s achieved)")
        for c in ("echelon_batch", "echelon_batch_1core"):
            v = _get(ctx, "p6", loop, c, "batch", "rps")
            if v is not None:
                add("P6 batch ≥ 50,000 req/s", c, loop, v, v >= 50000, f"{v:,.0f} req/s")
        # HTTP/2 on hyper against the previous HTTP/2 path (reqwest's), same run.
        for new, old, fig, key in (("echelon_chat_h2", "echelon_chat_h2_reqwest", "p2", "c64"), ("echelon_chat_h2", "echelon_chat_h2_reqwest", "p2", "c256"),
                                   ("echelon_batch_1core", "echelon_batch_1core_reqwest", "p6", "batch")):
            v, b = _get(ctx, fig, loop, new, key, "rps"), _get(ctx, fig, loop, old, key, "rps")
            if v is not None and b:
                add(f"{fig.upper()} {key} HTTP/2 ≥ previous HTTP/2 path", new, loop, v / b, v >= b, f"{v / b:.2f}× ({v:,.0f} vs {b:,.0f} req/s)")
    for loop in ctx.results.get("p3", {}):
        for c in ECHELON:
            v = _get(ctx, "p3", loop, c, "held", "kb_per_req")
            if v is not None:
                add("P3 ≤ 10 KB per in-flight request", c, loop, v, v <= 10, f"{v:.1f} KB")
        v = _get(ctx, "p3", loop, "echelon_chat_h2", "held", "kb_per_req")
        if v is not None:
            add("P3 over HTTP/2 ≤ 12 KB per in-flight request", "echelon_chat_h2", loop, v, v <= 12, f"{v:.1f} KB")
    for c in ("echelon_chat", "echelon_compat"):
        v = _get(ctx, "p5", "any", c, "import", "import_ms")
        if v is not None:
            add("P5 import ≤ 100 ms", c, "-", v, v <= 100, f"{v:.0f} ms")
    return t


def render(ctx: Ctx, loops: List[str], meta: Dict[str, Any], targets: List[Dict[str, Any]]) -> str:
    L: List[str] = []
    L.append("# echelon vs peers")
    L.append("")
    L.append(
        f"{meta['date']} · {meta['machine']} · Python {meta['python']} · mock: {meta['mock']} · "
        f"request {meta['request_bytes']} B, response {meta['response_bytes']} B · pinning: {meta['pinning']} · "
        f"mode: {meta['mode']} · {meta['rounds']} interleaved rounds per figure (median) after warm-up"
    )
    L.append("")
    if ctx.unavailable:
        L.append("Not measured: " + "; ".join(f"**{k}**: {v}" for k, v in sorted(ctx.unavailable.items())))
        L.append("")

    def rows(fig: str, key: str, field: str, clients: List[str], fmt, higher_better: bool, extra=None) -> None:
        head = "| client |"
        sep = "|---|"
        for loop in loops:
            head += f" {loop} | ×aiohttp | ×LiteLLM |"
            sep += "---:|---:|---:|"
        if extra:
            head += f" {extra[0]} |"
            sep += "---|"
        L.append(head)
        L.append(sep)
        for c in clients:
            line = f"| {LABELS[c]} |"
            any_val = False
            for loop in loops:
                st = _status(ctx, fig, loop, c)
                v = _get(ctx, fig, loop, c, key, field)
                a = _get(ctx, fig, loop, "aiohttp", key, field)
                l = _get(ctx, fig, loop, "litellm", key, field)
                if st:
                    line += f" {st} | | |"
                    continue
                any_val = any_val or v is not None
                if higher_better:
                    line += f" {fmt(v)} | {_ratio(v, a)} | {_ratio(v, l)} |"
                else:
                    line += f" {fmt(v)} | {_ratio(v, a)} | {_ratio(v, l)} |"
            if extra:
                line += f" {extra[1](c)} |"
            if any_val or _status(ctx, fig, loops[0], c):
                L.append(line)
        L.append("")

    figs = ctx.results
    if "p1" in figs:
        L.append(f"## {TITLES['p1']}")
        L.append("p50 / p99 latency per request in µs; Δ = minus raw aiohttp on the same loop (target: echelon Δp50 ≤ 0.1 ms).")
        L.append("")
        head, sep = "| client |", "|---|"
        for loop in loops:
            head += f" {loop} p50 | p99 | Δp50 | Δp99 |"
            sep += "---:|---:|---:|---:|"
        L += [head, sep]
        for c in FIG_CLIENTS["p1"]:
            if not any(ctx.results["p1"].get(lp, {}).get(c) for lp in loops):
                continue
            line = f"| {LABELS[c]} |"
            for loop in loops:
                st = _status(ctx, "p1", loop, c)
                if st:
                    line += f" {st} | | | |"
                    continue
                p50, p99 = _get(ctx, "p1", loop, c, "c1", "p50_us"), _get(ctx, "p1", loop, c, "c1", "p99_us")
                a50, a99 = _get(ctx, "p1", loop, "aiohttp", "c1", "p50_us"), _get(ctx, "p1", loop, "aiohttp", "c1", "p99_us")
                d50 = f"{(p50 - a50):+,.0f}" if p50 is not None and a50 is not None else "—"
                d99 = f"{(p99 - a99):+,.0f}" if p99 is not None and a99 is not None else "—"
                line += f" {_fmt(p50)} | {_fmt(p99)} | {d50} | {d99} |"
            L.append(line)
        L.append("")
    if "ttft" in figs:
        L.append(f"## {TITLES['ttft']}")
        L.append("Streaming at concurrency 1: µs from sending the request to the first content delta (raw aiohttp reads the SSE lines itself).")
        L.append("")
        head, sep = "| client |", "|---|"
        for loop in loops:
            head += f" {loop} p50 | p99 | Δp50 vs aiohttp |"
            sep += "---:|---:|---:|"
        L += [head, sep]
        for c in FIG_CLIENTS["ttft"]:
            if not any(ctx.results["ttft"].get(lp, {}).get(c) for lp in loops):
                continue
            line = f"| {LABELS[c]} |"
            for loop in loops:
                st = _status(ctx, "ttft", loop, c)
                if st:
                    line += f" {st} | | |"
                    continue
                p50, p99 = _get(ctx, "ttft", loop, c, "c1", "p50_us"), _get(ctx, "ttft", loop, c, "c1", "p99_us")
                a50 = _get(ctx, "ttft", loop, "aiohttp", "c1", "p50_us")
                d = f"{(p50 - a50):+,.0f}" if p50 is not None and a50 is not None else "—"
                line += f" {_fmt(p50)} | {_fmt(p99)} | {d} |"
            L.append(line)
        L.append("")
    if "p2" in figs:
        for conc in (64, 256):
            L.append(f"## {TITLES['p2']}, concurrency {conc}")
            L.append(f"req/s (median of {meta['rounds']} rounds of {meta['p2_s']} s), with p50/p99 latency in ms.")
            L.append("")

            def lat(c: str, conc: int = conc) -> str:
                parts = []
                for loop in loops:
                    p50 = _get(ctx, "p2", loop, c, f"c{conc}", "p50_us")
                    p99 = _get(ctx, "p2", loop, c, f"c{conc}", "p99_us")
                    parts.append(f"{p50 / 1000:.1f}/{p99 / 1000:.1f}" if p50 is not None and p99 is not None else "—")
                return " · ".join(parts)

            rows("p2", f"c{conc}", "rps", FIG_CLIENTS["p2"], lambda v: _fmt(v), True, ("p50/p99 ms (" + " · ".join(loops) + ")", lat))
    if "p3" in figs:
        p3loops = [lp for lp in loops if lp in figs["p3"]]
        L.append(f"## {TITLES['p3']}")
        L.append(
            f"KB of RSS growth per request held open by the mock (latency_ms={meta['p3_hold_ms']}), "
            f"{meta['p3_n']:,} concurrent unless capped (caps: {meta['p3_caps'] or 'none'}); fresh process per round, "
            f"median of {meta['p3_rounds']} round(s); loops: {', '.join(p3loops)}."
        )
        L.append("")
        saved = loops
        loops = p3loops
        rows("p3", "held", "kb_per_req", FIG_CLIENTS["p3"], lambda v: _fmt(v, 1), False,
             ("in flight", lambda c: " · ".join(_fmt(_get(ctx, "p3", lp, c, "held", "in_flight")) for lp in p3loops)))  # fmt: skip
        loops = saved
    if "p4" in figs:
        L.append(f"## {TITLES['p4']}")
        L.append(
            f"Process CPU time (all threads) per request in µs over an open loop at {meta['p4_rate']} req/s "
            f"(LiteLLM at {meta['p4_rate_slow']} req/s: it cannot sustain more on one core)."
        )
        L.append("")
        rows("p4", "fixed", "cpu_us_per_req", FIG_CLIENTS["p4"], lambda v: _fmt(v), False)
        L.append("")
        busy = [c for c in FIG_CLIENTS["p4"] if any(_get(ctx, "p4", lp, c, "busy", "cpu_us_per_req") is not None for lp in loops)]
        left_out = [LABELS[c] for c in FIG_CLIENTS["p4"] if c not in busy and any(_get(ctx, "p4", lp, c, "fixed", "cpu_us_per_req") is not None for lp in loops)]
        L.append(
            f"The same at a busy {meta['p4_rate_busy']:,} req/s, with the rate each client really achieved. "
            "At 400 req/s every request pays its own thread and timer wake-ups (tens of µs each on this VM); "
            "under load they are shared by overlapping requests."
            + (f" Not run at this load (P2 rate below half of it): {', '.join(left_out)}." if left_out else "")
        )
        L.append("")
        rows("p4", "busy", "cpu_us_per_req", busy, lambda v: _fmt(v), False,
             ("achieved req/s", lambda c: " · ".join(_fmt(_get(ctx, "p4", lp, c, "busy", "achieved_rps")) for lp in loops)))  # fmt: skip
    if "p6" in figs:
        L.append(f"## {TITLES['p6']}")
        L.append(
            f"One call of {meta['p6_n']:,} requests (echelon: `Router.batch`; others: `asyncio.gather` under a semaphore), "
            f"concurrency 256, req/s. Peers get ~{meta['p6_peer_s']} s of work at their P2 rate (requests per call shown)."
        )
        L.append("")
        rows("p6", "batch", "rps", FIG_CLIENTS["p6"], lambda v: _fmt(v), True,
             ("requests/call", lambda c: " · ".join(_fmt(_get(ctx, "p6", lp, c, "batch", "requests_per_call")) for lp in loops)))  # fmt: skip
    if "p5" in figs:
        L.append(f"## {TITLES['p5']}")
        L.append("Fresh process per round: time to import the client's modules, and RSS once the client is built and has served one request.")
        L.append("")
        L += ["| client | import ms | ×aiohttp | ×LiteLLM | idle RSS MB |", "|---|---:|---:|---:|---:|"]
        for c in FIG_CLIENTS["p5"]:
            st = _status(ctx, "p5", "any", c)
            if st:
                L.append(f"| {LABELS[c]} | {st} | | | |")
                continue
            v = _get(ctx, "p5", "any", c, "import", "import_ms")
            if v is None:
                continue
            a = _get(ctx, "p5", "any", "aiohttp", "import", "import_ms")
            l = _get(ctx, "p5", "any", "litellm", "import", "import_ms")
            rss = _get(ctx, "p5", "any", c, "import", "idle_rss_mb")
            L.append(f"| {LABELS[c]} | {_fmt(v, 1)} | {_ratio(v, a)} | {_ratio(v, l)} | {_fmt(rss, 1)} |")
        L.append("")
    L.append("## Targets")
    L.append("")
    L += ["| target | echelon entry point | loop | measured | result |", "|---|---|---|---|---|"]
    for t in targets:
        L.append(f"| {t['target']} | {LABELS[t['client']]} | {t['loop']} | {t['shown']} | {'PASS' if t['pass'] else 'FAIL'} |")
    if not targets:
        L.append("| (no echelon figure measured) | | | | |")
    L.append("")
    for n in ctx.notes:
        L.append(f"- {n}")
    return "\n".join(L) + "\n"


def chart(ctx: Ctx, loops: List[str], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no chart: {e}"
    panels = [
        ("p1", "c1", "p50_us", "P1 p50 latency, c=1 (µs)", False),
        ("p2", "c256", "rps", "P2 req/s, c=256 (log)", True),
        ("p3", "held", "kb_per_req", "P3 KB per in-flight request (log)", True),
        ("p4", "fixed", "cpu_us_per_req", "P4 CPU µs per request (log)", True),
        ("p5", "import", "import_ms", "P5 import ms (log)", True),
        ("p6", "batch", "rps", "P6 batch req/s (log)", True),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    colors = {"asyncio": "#4C72B0", "uvloop": "#DD8452", "any": "#55A868"}
    for ax, (f, key, field, title, log) in zip(axes.flat, panels):
        data = ctx.results.get(f, {})
        fl = [lp for lp in (loops + ["any"]) if lp in data]
        clients = [c for c in FIG_CLIENTS[f] if any(_get(ctx, f, lp, c, key, field) is not None for lp in fl)]
        ax.set_title(title, fontsize=10)
        if not clients:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        w = 0.8 / max(len(fl), 1)
        for i, lp in enumerate(fl):
            vals = [(_get(ctx, f, lp, c, key, field) or 0) for c in clients]
            ax.bar([j + i * w for j in range(len(clients))], vals, w, label=lp, color=colors.get(lp))
        ax.set_xticks([j + w * (len(fl) - 1) / 2 for j in range(len(clients))])
        ax.set_xticklabels([LABELS[c].replace("echelon ", "echelon\n") for c in clients], rotation=45, ha="right", fontsize=7)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("echelon vs peers (loopback Rust mock; lower is better except req/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# =============================================================================================


def config(args: argparse.Namespace) -> Dict[str, Any]:
    if args.quick:
        cfg = dict(
            rounds=3, warm_s=0.3, p2_ramp_max=1.5, p1_n=120, ttft_n=40, p2_s=0.4, p4_rate=400, p4_rate_slow=40, p4_rate_busy=4_000, p4_s=0.3,
            p6_n=10_000, p6_peer_s=0.4, p3_n=2_000, p3_hold_ms=2_000, p3_rounds=1, p3_loops=["uvloop"],
            p3_caps={"litellm": 300, "httpx": 1_000, "openai": 1_000},
        )  # fmt: skip
    else:
        cfg = dict(
            rounds=5, warm_s=0.5, p2_ramp_max=3.0, p1_n=300, ttft_n=150, p2_s=0.5, p4_rate=400, p4_rate_slow=40, p4_rate_busy=4_000, p4_s=0.4,
            p6_n=10_000, p6_peer_s=0.5, p3_n=10_000, p3_hold_ms=5_000, p3_rounds=1, p3_loops=["uvloop"],
            p3_caps={"litellm": 1_000, "httpx": 2_000, "openai": 2_000},
        )  # fmt: skip
    if args.rounds:
        cfg["rounds"] = args.rounds
    if args.p2_seconds:
        cfg["p2_s"] = args.p2_seconds
    if args.p3_rounds:
        cfg["p3_rounds"] = args.p3_rounds
    if args.p3_loops:
        cfg["p3_loops"] = args.p3_loops.split(",")
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~2 minute smoke run (fewer rounds, shorter rounds, P3 at 2,000)")
    ap.add_argument("--only", default="", help="comma list of figures (p1,p2,p3,p4,p5,p6,ttft) and/or clients (" + ",".join(ALL_CLIENTS) + ")")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds per figure (default 5; quick 3)")
    ap.add_argument("--p2-seconds", type=float, default=0.0, help="length of one P2 round (default 1.0 s)")
    ap.add_argument("--p3-rounds", type=int, default=0, help="fresh-process rounds for P3 (default 1)")
    ap.add_argument("--p3-loops", default="", help="loops for P3 (default uvloop)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin mock and clients to separate cores")
    ap.add_argument("--no-install", action="store_true", help="use benchmarks/.venv as it is")
    ap.add_argument("--reinstall", action="store_true", help="reinstall echelon into the venv even if unchanged")
    ap.add_argument("--mock-cmd", default="", help="run this instead of `echelon mock-server` ({port}, {python} substituted); for debugging the harness only")
    ap.add_argument("--out", default=RESULTS, help="results directory")
    args = ap.parse_args()

    bootstrap(args)
    t_start = time.time()
    loops = [x for x in args.loops.split(",") if x]
    toks = [x.strip().lower() for x in args.only.split(",") if x.strip()]
    bad = [x for x in toks if x not in FIGURES and x not in ALL_CLIENTS]
    if bad:
        ap.error(f"--only: unknown {', '.join(bad)}; figures {FIGURES}, clients {ALL_CLIENTS}")
    figs = [f for f in FIGURES if f in toks] or FIGURES
    chosen = [c for c in ALL_CLIENTS if c in toks] or ALL_CLIENTS
    if "aiohttp" not in chosen:
        chosen = ["aiohttp"] + chosen  # every ratio is against it
    cfg = config(args)

    os.makedirs(args.out, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="echelon-bench-")
    pin = Pinning(not args.no_pin)
    mock = Mock(pin, args.mock_cmd or None, log_dir)
    ctx = Ctx(args, pin, mock, log_dir)
    try:
        with open(UNAVAILABLE_FILE) as f:
            for name, why in json.load(f).items():
                for c in ALL_CLIENTS:
                    if c == name or (name == "echelon" and c.startswith("echelon")):
                        ctx.unavailable[c] = why
    except (OSError, ValueError):
        pass
    try:
        chars, resp = mock.calibrate(1400)
        ctx.content_chars = chars
        mock.script({"content_chars": chars, "chunks": 8, "latency_ms": 0})
        sys.path.insert(0, HERE)
        from _clients import BODY

        timings: Dict[str, float] = {}
        runners = {"p1": fig_p1, "ttft": fig_ttft, "p2": fig_p2, "p4": fig_p4, "p6": fig_p6, "p5": fig_p5, "p3": fig_p3}
        for f in figs:
            t0 = time.time()
            clients = [c for c in FIG_CLIENTS[f] if c in chosen]
            print(f"[run] {f}: {len(clients)} clients × {len(loops) if f != 'p5' else 1} loops ...", flush=True)
            runners[f](ctx, clients, loops, cfg)
            timings[f] = round(time.time() - t0, 1)
            print(f"[run] {f} done in {timings[f]:.0f} s", flush=True)
        counters = mock.counters()
    finally:
        mock.stop()
    if cfg["p3_caps"] and "p3" in figs:
        ctx.notes.append(f"P3 caps: {', '.join(f'{LABELS[k]} {v:,} concurrent' for k, v in cfg['p3_caps'].items())} (LiteLLM spends ~10 ms of CPU per request and httpx's pool slows down with thousands of connections: 10,000 would not all be in flight within the hold).")
    ctx.notes.append(f"Each (client × loop × figure) ran in a fresh process; logs of this run: {log_dir}")
    ctx.notes.append(f"Phase times (s): {timings}; total {time.time() - t_start:.0f} s (+ {os.environ.get('BENCH_SETUP_S', '0')} s venv setup).")

    try:
        import importlib.metadata as md

        versions = {}
        for pkg in ("aiohttp", "httpx", "openai", "litellm", "tensorzero", "uvloop", "echelon-llm"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                versions[pkg] = None
    except ImportError:
        versions = {}
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mock": mock.kind,
        "request_bytes": len(BODY),
        "response_bytes": resp,
        "content_chars": chars,
        "pinning": pin.note,
        "pinning_active": pin.active,
        "mode": "quick" if args.quick else "full",
        "versions": versions,
        "timings_s": timings,
        "total_s": round(time.time() - t_start, 1),
        "mock_counters_at_end": {k: counters.get(k) for k in ("requests", "ok", "faults", "max_in_flight")},
        **{k: v for k, v in cfg.items()},
    }
    targets = build_targets(ctx, loops)
    md_text = render(ctx, loops, meta, targets)
    print()
    print(md_text)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"meta": meta, "results": ctx.results, "targets": targets, "unavailable": ctx.unavailable, "notes": ctx.notes}, f, indent=1, default=str)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md_text)
    err = chart(ctx, loops, os.path.join(args.out, "latest.png"))
    print(err or f"wrote {os.path.join(args.out, 'latest.json')}, latest.md and latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
