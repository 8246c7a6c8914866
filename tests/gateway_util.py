"""Helpers for the gateway tests: configs, raw HTTP on loopback, a TOML config directory and the
``echelon serve`` process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from conftest import FAST_TIMEOUTS, mock_config


def gateway_config(base_url: str, gateway: Optional[Dict[str, Any]] = None, **overrides: Any) -> Dict[str, Any]:
    """``mock_config`` plus group ``fo`` (m-a, then m-c in a second echelon) and a ``[gateway]``
    section."""
    cfg = mock_config(base_url, **overrides)
    cfg["groups"]["fo"] = {
        "echelon1": {"models": ["m-a"], "priority": 1},
        "echelon2": {"models": ["m-c"], "priority": 2},
        "circuit_breaker": {"failure_threshold": 50, "recovery_time": 1},
        "fallback_config": {"strategy": "echelon_down", "max_attempts": 5},
    }
    if gateway is not None:
        cfg.setdefault("global", {})["gateway"] = gateway
    return cfg


async def raw_request(port: int, request: bytes, *, timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    """Send raw bytes to the gateway and read one whole HTTP/1.1 answer (the connection is
    closed by us afterwards)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
        else:
            body = await asyncio.wait_for(reader.read(), timeout)
        return status, headers, body
    finally:
        writer.close()


def post(path: str, body: Any, *, headers: Optional[Dict[str, str]] = None) -> bytes:
    """A raw HTTP/1.1 POST of a JSON body."""
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n".encode() + data


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode()


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def write_config_dir(root: Path, mock_url: str, groups: Dict[str, List[str]], *, global_toml: str = "") -> Path:
    """A TOML config directory on the mock: models m-a, m-b, m-c; one group per entry of
    ``groups`` (one echelon with those models) and a pool ``p`` over the first group."""
    llms = root / "llms"
    (llms / "provider" / "mock").mkdir(parents=True, exist_ok=True)
    (llms / "groups").mkdir(parents=True, exist_ok=True)
    (llms / "polling_pools").mkdir(parents=True, exist_ok=True)
    t = FAST_TIMEOUTS
    (llms / "provider" / "mock" / "common.toml").write_text(
        f'type = "openai_compatible"\nbase_url = "{mock_url}"\napi_key = "mock-key"\nmax_retries = 1\n'
        f"[timeouts]\nconnect = {t['connect']}\nfirst_token = {t['first_token']}\ntotal = {t['total']}\nidle = {t['idle']}\n"
        "[retry_config]\nbase_delay = 0.01\nmax_delay = 0.05\n"
    )
    for m in ("m-a", "m-b", "m-c"):
        (llms / "provider" / "mock" / f"{m}.toml").write_text(f'model = "{m}"\n')
    for name, models in groups.items():
        (llms / "groups" / f"{name}.toml").write_text(f"[echelon1]\nmodels = {json.dumps(models)}\npriority = 1\n")
    first = next(iter(groups))
    (llms / "polling_pools" / "p.toml").write_text(f'task_groups = ["{first}"]\n')
    (llms / "global.toml").write_text(global_toml)
    return root


class ServeProcess:
    """``echelon serve DIR --port 0`` in a subprocess; the port is read from its first line."""

    def __init__(self, config_dir: Path, *extra: str) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echelon.cli", "serve", str(config_dir), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"echelon serve did not start: {line!r} {err}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> Tuple[int, str]:
        """Exit code and stderr (the log) once the process ended."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"echelon serve did not exit within {timeout}s; log:\n{err}")
        return self.proc.returncode, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
