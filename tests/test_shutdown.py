"""A script whose last engine call finishes right before the interpreter exits must exit cleanly.

CPython terminates any non-main thread that takes the GIL once finalization has begun, and on
an engine (tokio) thread that termination unwinds through Rust frames and aborts the process
(exit status 134, "Aborted"). Results therefore reach Python only through the per-loop
completer, on the loop's own thread. These tests run real scripts in child processes confined
to one CPU, where the engine thread and the exiting main thread interleave most tightly (the
batch case aborted in about half of such runs when results were handed back from an engine
thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import mock_config

CHILD = r"""
import asyncio, json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before the engine's threads start
from echelon import Router

cfg = json.loads(os.environ["ECHELON_TEST_CONFIG"])
mode = sys.argv[1]
messages = [{"role": "user", "content": "hi"}]

async def main():
    if mode == "logging":
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    r = Router.from_dict(cfg)
    if mode in ("batch", "logging"):
        out = await r.batch([{"messages": messages, "pool": "p"}] * 2000, concurrency=256)
        assert all(not isinstance(x, BaseException) for x in out), out[:3]
    elif mode == "stream":
        s = r.stream(messages, pool="p")
        async for chunk in s:
            break
        await s.aclose()
    elif mode == "events":
        events = r.events()
        r.reload(cfg)
        batch = await events.next_batch()
        assert batch and batch[0]["type"] == "config_reloaded", batch
    print("done", flush=True)

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
@pytest.mark.parametrize("mode", ["batch", "stream", "events", "logging"])
def test_exit_right_after_the_last_engine_result_is_clean(mock, mode):
    if mode == "logging":
        # Every call fails over from m-a: engine threads log until the very end.
        mock.script("m-a", {"fault": "server_error", "status": 503})
    env = dict(os.environ, ECHELON_TEST_CONFIG=json.dumps(mock_config(mock.openai_base_url)))
    for run in range(5):
        done = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"run {run}: exit status {done.returncode}\n{done.stderr[-2000:]}"
        assert done.stdout.strip() == "done", done.stdout + done.stderr
        if mode == "logging":
            assert "_core.engine.router INFO instance g.echelon1_m-a is now" in done.stderr, done.stderr[-2000:]
