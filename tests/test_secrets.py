"""Secret hygiene: recognisable API keys (from `${VAR}` references in a config directory and a
literal key in a dict config) never appear in exceptions, status/stats/metrics output,
`echelon check` output or DEBUG logs, across a run with auth errors (including provider error
bodies that echo the key), streams and successes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, List

import pytest

import echelon
from echelon import Router
from echelon.testing import MockProvider
from conftest import mock_config

KEY_GOOD = "sk-envgood-SECRET-4f1c9a7e2b"
KEY_BAD = "sk-envbad-SECRET-77aa31c0de"
KEY_LITERAL = "sk-literal-SECRET-5d2e8b1190"
SECRETS = [KEY_GOOD, KEY_BAD, KEY_LITERAL]
# A distinctive core of each key: catches partial echoes too.
FRAGMENTS = [k.split("-SECRET-")[1] for k in SECRETS] + [k.split("-SECRET-")[0] for k in SECRETS]


def assert_clean(texts: Iterable[str], where: str) -> None:
    for t in texts:
        for s in SECRETS + FRAGMENTS:
            assert s not in t, f"{where}: {s!r} leaked in {t[:300]!r}"


def check_log_records(caplog: Any) -> None:
    """In a fresh interpreter (see the last test) the core's DEBUG records must have reached
    Python logging, so the secret check over them means something. In a long test session an
    earlier test may have left the engine's level filter at WARNING (it is re-read when a
    router is built and by refresh_log_levels)."""
    if os.environ.get("ECHELON_SECRETS_FRESH") == "1":
        core = [r for r in caplog.records if r.name.startswith("_core") and r.levelno <= logging.DEBUG]
        assert core, sorted({r.name for r in caplog.records})


def write_config_dir(root: Path) -> None:
    llms = root / "llms"
    for d in ("provider/mock", "provider/badmock", "groups", "polling_pools"):
        (llms / d).mkdir(parents=True, exist_ok=True)
    common = """type = "openai_compatible"
base_url = "${ECHELON_SECRETS_URL}"
api_key = "${%s}"
max_retries = 1
rate_limit_cooldown = 0.1

[timeouts]
connect = 1
first_token = 2
total = 5
idle = 1

[retry_config]
base_delay = 0.01
max_delay = 0.05
"""
    (llms / "provider/mock/common.toml").write_text(common % "ECHELON_SECRET_GOOD")
    (llms / "provider/badmock/common.toml").write_text(common % "ECHELON_SECRET_BAD")
    for provider, name in (("mock", "sec-a"), ("mock", "sec-echo"), ("badmock", "sec-bad")):
        (llms / f"provider/{provider}/{name}.toml").write_text(f'name = "{name}"\nmodel = "{name}"\n')
    (llms / "groups/sg.toml").write_text(
        """name = "sg"
[echelon1]
models = ["sec-bad"]
priority = 1
[echelon2]
models = ["sec-a"]
priority = 2
[circuit_breaker]
failure_threshold = 2
recovery_time = 30
[fallback_config]
strategy = "echelon_down"
max_attempts = 3
retry_delay = 0.0
"""
    )
    for g in ("echo", "echo2"):
        (llms / f"groups/{g}.toml").write_text(f'name = "{g}"\n[echelon1]\nmodels = ["sec-echo"]\npriority = 1\n')
    (llms / "polling_pools/sp.toml").write_text(
        'name = "sp"\ntask_groups = ["sg"]\n[health_check]\ninterval = 0.2\nfailure_threshold = 2\nrecovery_time = 30\n'
    )


def error_texts(e: BaseException) -> List[str]:
    out = [str(e), repr(e)]
    if isinstance(e, echelon.EchelonError):
        out.append(str(vars(e)))
        for a in e.attempts:
            out += [repr(a), str(a.to_dict()), str(a.message)]
    return out


def router_texts(router: Router) -> List[str]:
    out = [str(router.status()), str(router.stats()), router.metrics()]
    for p in router.pools:
        out.append(str(router.pool(p).status()))
    for g in router.groups:
        out += [str(router.group(g).breaker_status()), str(router.group(g).fallback_history(100))]
    return out


async def test_secrets_never_leak_from_a_config_dir_run(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="echelon")
    write_config_dir(tmp_path)
    texts: List[str] = []
    echo_body = {"error": {"message": f"Incorrect API key provided: {KEY_GOOD}. (key {KEY_GOOD})", "type": "invalid_request_error", "code": "invalid_api_key"}}
    with MockProvider(require_key=KEY_GOOD) as mock:
        monkeypatch.setenv("ECHELON_SECRETS_URL", mock.openai_base_url)
        monkeypatch.setenv("ECHELON_SECRET_GOOD", KEY_GOOD)
        monkeypatch.setenv("ECHELON_SECRET_BAD", KEY_BAD)
        mock.script("sec-echo", {"fault": "auth", "body": echo_body})
        async with Router.from_dir(tmp_path) as router:
            # Auth error (the mock rejects the bad key) then success on the good one.
            r = await router.chat("hi", group="sg")
            assert [(a.instance, a.error) for a in r.attempts] == [("sg.echelon1_sec-bad", "auth_error"), ("sg.echelon2_sec-a", None)]
            texts += [repr(r), str(r.to_dict())] + [repr(a) for a in r.attempts] + [str(a.message) for a in r.attempts]
            # Through the pool (with its active health checks probing with both keys).
            for _ in range(4):
                r = await router.chat("hi", pool="sp")
                texts.append(str(r.to_dict()))
            # A provider error body that echoes the key, chat and stream.
            with pytest.raises(echelon.AuthError) as ei:
                await router.chat("hi", group="echo")
            texts += error_texts(ei.value)
            with pytest.raises(echelon.AuthError) as ei:
                async for _ in router.stream("hi", group="echo2"):
                    pass
            texts += error_texts(ei.value)
            # The bad key alone, on a direct route: rejected by the mock.
            with pytest.raises(echelon.AuthError) as ei:
                await router.chat("hi", route="direct:badmock:sec-bad")
            texts += error_texts(ei.value)
            chunks = [c async for c in router.stream("hi", group="sg")]
            texts += [str(chunks[-1].response.to_dict())]
            texts += router_texts(router)
        assert mock.counters()["faults"].get("auth_rejected", 0) >= 1
        assert mock.counters("sec-a")["ok"] >= 2
    texts += [rec.getMessage() for rec in caplog.records] + [caplog.text]
    check_log_records(caplog)
    assert_clean(texts, "config-dir run")


async def test_secrets_never_leak_from_a_dict_config_with_a_literal_key(caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="echelon")
    texts: List[str] = []
    with MockProvider() as mock:
        cfg = mock_config(mock.openai_base_url)
        cfg["providers"]["mock"]["common"]["api_key"] = KEY_LITERAL
        mock.script("m-a", {"fault": "auth", "body": {"error": {"message": f"Incorrect API key provided: {KEY_LITERAL}"}}})
        mock.script("m-c", {"fault": "status", "status": 403, "body": f"forbidden for key {KEY_LITERAL}"})
        async with Router.from_dict(cfg) as router:
            r = await router.chat("hi", group="g")
            assert r.served_by == "g.echelon1_m-b"
            texts += [repr(r), str(r.to_dict())] + [str(a.message) for a in r.attempts]
            for route in ("group:solo", "direct:mock:m-c"):
                with pytest.raises(echelon.EchelonError) as ei:
                    await router.chat("hi", route=route)
                texts += error_texts(ei.value)
            with pytest.raises(echelon.EchelonError) as ei:
                async for _ in router.stream("hi", group="solo"):
                    pass
            texts += error_texts(ei.value)
            texts += router_texts(router)
        assert mock.counters("m-a")["faults"].get("auth", 0) >= 1
        assert mock.counters("m-c")["statuses"].get("403", 0) >= 1
    # A key that cannot go into a header: the error says so without echoing it.
    bad = dict(mock_config("http://127.0.0.1:9/v1"))
    bad["providers"]["mock"]["common"]["api_key"] = KEY_LITERAL + "\n"
    try:
        async with Router.from_dict(bad) as router:
            with pytest.raises(echelon.EchelonError) as ei:
                await router.chat("hi", group="solo")
            texts += error_texts(ei.value)
    except echelon.EchelonError as e:
        texts += error_texts(e)
    texts += [rec.getMessage() for rec in caplog.records] + [caplog.text]
    check_log_records(caplog)
    assert_clean(texts, "dict run")


def test_secrets_never_leak_from_echelon_check(tmp_path):
    write_config_dir(tmp_path)
    env = dict(os.environ, ECHELON_SECRETS_URL="http://127.0.0.1:9/v1", ECHELON_SECRET_GOOD=KEY_GOOD, ECHELON_SECRET_BAD=KEY_BAD)
    out = subprocess.run([sys.executable, "-m", "echelon.cli", "check", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sec-bad" in out.stdout and "ECHELON_SECRET_GOOD" in out.stdout
    assert_clean([out.stdout, out.stderr], "echelon check")
    # And with a config error next to the keys.
    (tmp_path / "llms/groups/broken.toml").write_text('name = "broken"\n[echelon1]\nmodels = ["nope"]\n')
    out = subprocess.run([sys.executable, "-m", "echelon.cli", "check", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "nope" in (out.stdout + out.stderr)
    assert_clean([out.stdout, out.stderr], "echelon check (broken)")


def test_secrets_never_leak_into_debug_logs_in_a_fresh_interpreter():
    # A fresh interpreter whose routers are built after caplog set DEBUG really captures the
    # core's DEBUG records.
    here = Path(__file__).resolve().parent
    env = dict(os.environ, ECHELON_SECRETS_FRESH="1")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "test_secrets.py"), "-k", "config_dir_run or literal_key"],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(here.parent),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 passed" in out.stdout
