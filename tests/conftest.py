"""Shared fixtures: the mock provider (real HTTP on loopback) and router configs built on it."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator

import pytest

from echelon.testing import MockProvider

FAST_TIMEOUTS = {"connect": 1, "first_token": 2, "total": 5, "idle": 1}


def mock_config(base_url: str, **overrides: Any) -> Dict[str, Any]:
    """A router config on the mock: group ``g`` with echelons of mock models, pool ``p`` over
    echelon1, and group ``solo`` with one model. Tests tweak it with ``overrides`` (merged
    one level deep into ``groups``/``pools``/``global``)."""
    cfg: Dict[str, Any] = {
        "providers": {
            "mock": {
                "common": {
                    "type": "openai_compatible",
                    "base_url": base_url,
                    "api_key": "mock-key",
                    "timeouts": dict(FAST_TIMEOUTS),
                    "max_retries": 1,
                    "retry_config": {"base_delay": 0.01, "max_delay": 0.05},
                    "rate_limit_cooldown": 0.2,
                },
                "m-a": {"model": "m-a", "context_window": 1000},
                "m-b": {"model": "m-b", "context_window": 1000},
                "m-c": {"model": "m-c", "context_window": 1000},
                "m-big": {"model": "m-big", "context_window": 100000},
            }
        },
        "groups": {
            "g": {
                "echelon1": {"models": ["m-a", "m-b"], "priority": 1, "concurrency_limit": 50},
                "echelon2": {"models": ["m-c"], "priority": 2},
                "echelon3": {"models": ["m-big"], "priority": 3},
                "circuit_breaker": {"failure_threshold": 3, "recovery_time": 1, "half_open_requests": 1},
                "fallback_config": {"strategy": "echelon_down", "max_attempts": 5, "retry_delay": 0.01},
            },
            "solo": {
                "echelon1": {"models": ["m-a"], "priority": 1},
                "fallback_config": {"strategy": "echelon_down", "max_attempts": 3, "retry_delay": 0.01},
            },
        },
        "pools": {
            "p": {
                "task_groups": ["g.echelon1"],
                "rotation_strategy": "round_robin",
                "health_check": {"interval": 60, "failure_threshold": 3, "recovery_time": 1},
                "fallback_config": {"strategy": "instance_rotation", "max_instance_attempts": 2},
            }
        },
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            for k, v in value.items():
                cfg[section][k] = copy.deepcopy(v)
        else:
            cfg[section] = copy.deepcopy(value)
    return cfg


def model_counters(mock: MockProvider, model: str) -> Dict[str, Any]:
    """The mock's counters for one model (zeros if it saw nothing)."""
    return mock.counters().get("models", {}).get(model, {"requests": 0, "faults": {}, "client_disconnects": 0})


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    with MockProvider() as m:
        yield m


# ---- a real redis-server for the shared-state tests (tests/test_redis_*.py) ----

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from typing import List, Optional


def resp(port: int, *args: str, timeout: float = 5.0) -> Any:
    """Send one command to the Redis on ``127.0.0.1:port`` (plain RESP) and return the reply:
    str, int, None or a list."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(out.encode())
        f = s.makefile("rb")

        def read() -> Any:
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:].decode()
            if kind == b"+":
                return rest
            if kind == b"-":
                raise RuntimeError(rest)
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data.decode()
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise RuntimeError(f"unexpected reply {line!r}")

        return read()


class RedisServer:
    """``redis-server`` (the Debian package) on a loopback port, in a scratch directory, with
    nothing persisted. The port is chosen by trying to start on it: a port that is taken
    makes the server exit at once, and another is tried, so no port is ever probed and left
    for someone else to take."""

    def __init__(self, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            # Never a skip: CI installs it (.ci/run); locally, `apt-get install redis-server`.
            pytest.fail("redis-server is not installed: run `apt-get install -y redis-server` (.ci/run installs it)")
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="echelon-redis-")
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        # With tls, the server also listens with TLS on port + 1, its certificate signed by a
        # CA made here (ca.pem), for localhost and 127.0.0.1; the plain port stays for the
        # tests' own commands.
        self.ca_file: Optional[str] = _make_tls_files(self.dir) if tls else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"rediss://localhost:{self.port + 1}"

    def _spawn(self, port: int) -> bool:
        args = [
            self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--enable-debug-command", "yes", "--protected-mode", "yes",
            "--logfile", os.path.join(self.dir, f"redis-{port}.log"),
        ]
        if self.ca_file:
            args += [
                "--tls-port", str(port + 1), "--tls-cert-file", os.path.join(self.dir, "server.pem"),
                "--tls-key-file", os.path.join(self.dir, "server.key"), "--tls-ca-cert-file", self.ca_file,
                "--tls-auth-clients", "no",
            ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # could not bind (taken): try another port
            try:
                if resp(port, "PING", timeout=0.5) == "PONG":
                    self.proc, self.port = proc, port
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=10)
        return False

    def start(self, port: Optional[int] = None) -> "RedisServer":
        """Start on ``port`` (a restart on the same port: retried for a few seconds), or on a
        random free loopback port."""
        if port is not None:
            for _ in range(50):
                if self._spawn(port):
                    return self
                time.sleep(0.1)
            pytest.fail(f"redis-server could not be restarted on port {port}")
        for _ in range(30):
            if self._spawn(random.randint(20000, 60000)):
                return self
        pytest.fail("redis-server did not start on any of 30 loopback ports")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        port = self.port
        self.stop()
        self.start(port)

    def cmd(self, *args: str) -> Any:
        return resp(self.port, *args)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _make_tls_files(d: str) -> str:
    """A CA and a server certificate it signs (localhost, 127.0.0.1), with the openssl CLI;
    returns the CA's path."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: run `apt-get install -y openssl` (.ci/run installs it)")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=echelon test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
         "-days", "2", "-extfile", "ext.cnf"],
    ]
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    for step in steps:
        r = subprocess.run(["openssl", *step], cwd=d, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"openssl {step[0]} failed: {r.stderr[-500:]}")
    return os.path.join(d, "ca.pem")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole test session (tests use distinct key prefixes)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def tls_redis() -> Iterator[RedisServer]:
    """A redis-server that also speaks TLS (``tls_url``, CA in ``ca_file``)."""
    server = RedisServer(tls=True).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop or restart it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()
