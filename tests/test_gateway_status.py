"""What the gateway shows: ``/metrics`` read by ``prometheus_client``'s own parser, and the
``/status`` page in a real headless Chromium (Debian's ``chromium``, driven over the DevTools
protocol): it lists every instance, and a breaker it shows closed turns open after the mock
starts failing, without the page being reloaded. The screenshot is kept in
``tests/artifacts/`` (gitignored)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Dict

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from echelon import Router
from gateway_util import gateway_config, get, post, raw_request, wait_for

MSG = [{"role": "user", "content": "hi"}]
ARTIFACTS = Path(__file__).parent / "artifacts"


def samples(text: str) -> Dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_parse_and_carry_the_routers_series(mock):
    mock.script("m-c", {"fault": "server_error", "status": 500})
    async with Router.from_dict(gateway_config(mock.openai_base_url)) as router:
        gw = await router.serve(port=0)
        for _ in range(3):
            status, _, _ = await raw_request(gw.port, post("/v1/chat/completions", {"model": "p", "messages": MSG}))
            assert status == 200
        status, _, _ = await raw_request(gw.port, post("/v1/messages", {"model": "echelon:g.echelon2", "max_tokens": 5, "messages": MSG}))
        assert status == 503
        status, headers, body = await raw_request(gw.port, get("/metrics"))
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        got = samples(body.decode())
        ours = samples(router.metrics())
        # The gateway serves every series Router.metrics() has, with the same values.
        assert set(ours) <= set(got)
        for k, v in ours.items():
            if not k[0].startswith("echelon_instance_latency"):
                assert got[k] == v, k
        assert got[("echelon_pool_requests_total", (("pool", "p"),))] == 3
        assert got[("echelon_instance_breaker_open", (("instance", "g.echelon2_m-c"),))] == 0
        assert got[("echelon_instance_failures_total", (("instance", "g.echelon2_m-c"),))] == 2
        assert got[("echelon_instance_state", (("instance", "g.echelon1_m-a"), ("state", "healthy")))] == 1
        assert got[("echelon_gateway_responses_total", (("api", "openai"), ("status", "200")))] == 3
        assert got[("echelon_gateway_responses_total", (("api", "anthropic"), ("status", "503")))] == 1
        assert any(k[0] == "echelon_instance_latency_seconds" and ("quantile", "0.99") in k[1] for k in got)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        # Never skipped: a status page nobody opened in a browser is not tested.
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    return path


class Page:
    """One page of a headless Chromium, over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expression: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")


async def test_status_page_follows_a_breaker_opening_live_in_chromium(mock):
    exe = chromium()
    cfg = gateway_config(mock.openai_base_url)
    cfg["groups"]["solo"]["circuit_breaker"] = {"failure_threshold": 2, "recovery_time": 60}
    async with Router.from_dict(cfg) as router:
        gw = await router.serve(port=0)
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.Popen(
                [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                 "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,1100", "about:blank"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stderr is not None

                def devtools_port() -> int:
                    for line in proc.stderr:  # type: ignore[union-attr]
                        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
                        if m:
                            return int(m.group(1))
                    raise AssertionError("chromium exited without opening DevTools")

                port = await asyncio.wait_for(asyncio.to_thread(devtools_port), 60)
                req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{gw.url}/status", method="PUT")
                target = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=20).read()))
                async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
                    page = Page(ws)
                    await wait_for(lambda: page.eval("Number(document.body && document.body.dataset.updates || 0) > 0"), 30)
                    loaded_at = await page.eval("document.body.dataset.loadedAt")
                    rows = "Object.fromEntries([...document.querySelectorAll('#groups tr[data-instance]')].map(r => [r.dataset.instance, r.dataset.breaker]))"
                    shown = await page.eval(rows)
                    assert set(shown) == set(router.instances), shown
                    assert shown["solo.echelon1_m-a"] == "CLOSED"
                    pools = await page.eval("[...document.querySelectorAll('#pools [data-pool-instance]')].map(e => e.dataset.poolInstance)")
                    assert sorted(pools) == ["g.echelon1_m-a", "g.echelon1_m-b"]

                    mock.script("m-a", {"fault": "server_error", "status": 500})
                    status, _, _ = await raw_request(gw.port, post("/v1/chat/completions", {"model": "solo", "messages": MSG}))
                    assert status == 503
                    assert router.group("solo").breaker_status()["solo.echelon1_m-a"]["state"] == "OPEN"

                    async def shown_open() -> bool:
                        return (await page.eval(rows))["solo.echelon1_m-a"] == "OPEN"

                    await wait_for(shown_open, 20)
                    assert await page.eval("document.body.dataset.loadedAt") == loaded_at, "the page was reloaded"
                    events = await page.eval("[...document.querySelectorAll('#events li')].map(e => e.dataset.type + ' ' + e.textContent)")
                    assert any(e.startswith("breaker_state") and "solo.echelon1_m-a" in e and "OPEN" in e for e in events), events
                    # Nothing loaded from elsewhere: every resource the page fetched is the gateway's.
                    origins = await page.eval("[...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
                    assert set(origins) <= {gw.url}, origins
                    shot = await page.call("Page.captureScreenshot", format="png")
                    png = base64.b64decode(shot["data"])
                    assert png[:8] == b"\x89PNG\r\n\x1a\n"
                    ARTIFACTS.mkdir(exist_ok=True)
                    (ARTIFACTS / "status-page.png").write_bytes(png)
            finally:
                proc.kill()
                proc.wait(timeout=20)
