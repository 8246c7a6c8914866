"""echelon.testing.MockProvider against stdlib HTTP (urllib) on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

import pytest

from echelon.testing import MockProvider

OPENAI_BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello there!"}]}


def post(url: str, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None, timeout: float = 10) -> Tuple[int, Dict[str, str], bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def sse_data(raw: bytes) -> List[str]:
    text = raw.decode("utf-8").replace("\r\n", "\n")
    out = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out


def wait_for(pred: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_sync_context_manager_and_each_format() -> None:
    with MockProvider({"*": {"content_chars": 120, "chunks": 4}}) as mock:
        assert mock.port > 0
        assert mock.base_url == f"http://127.0.0.1:{mock.port}"
        assert mock.openai_base_url == mock.base_url + "/v1"
        assert mock.anthropic_base_url == mock.base_url
        assert mock.gemini_base_url == mock.base_url + "/v1beta"
        assert mock.url_env() == {"ECHELON_MOCK_URL": mock.openai_base_url}

        status, headers, body = post(mock.openai_base_url + "/chat/completions", OPENAI_BODY)
        assert status == 200
        assert "x-request-id" in {k.lower() for k in headers}
        v = json.loads(body)
        content = v["choices"][0]["message"]["content"]
        assert content.startswith("Hello from gpt-x. ")
        assert len(content) == 120
        assert v["usage"]["prompt_tokens"] == 3

        status, _, raw = post(mock.openai_base_url + "/chat/completions", {**OPENAI_BODY, "stream": True})
        assert status == 200
        data = sse_data(raw)
        assert data[-1] == "[DONE]"
        streamed = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])
        assert streamed == content

        anthropic = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        status, headers, body = post(mock.anthropic_base_url + "/v1/messages", anthropic)
        assert status == 200
        assert json.loads(body)["content"][0]["text"].startswith("Hello from claude-x. ")
        _, _, raw = post(mock.anthropic_base_url + "/v1/messages", {**anthropic, "stream": True})
        events = [json.loads(d) for d in sse_data(raw)]
        assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"

        gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        status, _, body = post(mock.gemini_base_url + "/models/gem:generateContent", gemini)
        text = json.loads(body)["candidates"][0]["content"]["parts"][0]["text"]
        assert status == 200 and text.startswith("Hello from gem. ")
        _, _, raw = post(mock.gemini_base_url + "/models/gem:streamGenerateContent?alt=sse", gemini)
        chunks = [json.loads(d) for d in sse_data(raw)]
        assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == text
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"

        c = mock.counters()
        assert c["requests"] == 6
        assert c["streams_started"] == 3 and c["streams_completed"] == 3
        assert set(c["models"]) == {"gpt-x", "claude-x", "gem"}


async def test_async_context_manager() -> None:
    async with MockProvider() as mock:
        status, _, body = post(mock.openai_base_url + "/chat/completions", OPENAI_BODY)
        assert status == 200
        assert json.loads(body)["model"] == "gpt-x"
        port = mock.port
    with pytest.raises(RuntimeError):
        mock.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_script_changes_and_counters() -> None:
    with MockProvider() as mock:
        url = mock.openai_base_url + "/chat/completions"
        assert post(url, OPENAI_BODY)[0] == 200
        mock.script("gpt-x", fault="rate_limit", retry_after="1")
        status, headers, body = post(url, OPENAI_BODY)
        assert status == 429
        assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        mock.script("gpt-x", {"steps": [{"fault": "server_error", "status": 503, "times": 2}], "then": "ok"})
        assert [post(url, OPENAI_BODY)[0] for _ in range(3)] == [503, 503, 200]
        c = mock.counters("gpt-x")
        assert c["requests"] == 5
        assert c["statuses"] == {"200": 2, "429": 1, "503": 2}
        assert c["faults"]["server_error"] == 2
        assert c["last_request"]["body"]["model"] == "gpt-x"
        assert mock.counters("never-called")["requests"] == 0
        mock.scripts({"*": "auth"})
        assert post(url, {**OPENAI_BODY, "model": "other"})[0] == 401
        mock.reset(scripts=True)
        assert mock.counters()["requests"] == 0
        assert post(url, {**OPENAI_BODY, "model": "other"})[0] == 200


def test_bad_scripts_raise_value_error() -> None:
    with pytest.raises(ValueError, match="latency_ms"):
        MockProvider({"m": {"latncy_ms": 3}}).start()
    with MockProvider() as mock:
        with pytest.raises(ValueError, match="unknown fault"):
            mock.script("m", fault="explode")
        with pytest.raises(TypeError):
            mock.script("m", {"fault": "ok"}, latency_ms=1)
        with pytest.raises(TypeError):
            mock.scripts({"m": {"body": object()}})


def test_hang_until_client_timeout_counts_disconnect() -> None:
    with MockProvider({"h": "hang"}) as mock:
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            post(mock.openai_base_url + "/chat/completions", {**OPENAI_BODY, "model": "h"}, timeout=0.2)
        wait_for(lambda: mock.counters("h")["client_disconnects"] == 1, "the disconnect")


def test_require_key() -> None:
    with MockProvider(require_key="sk-test") as mock:
        url = mock.openai_base_url + "/chat/completions"
        assert post(url, OPENAI_BODY, {"authorization": "Bearer wrong"})[0] == 401
        assert post(url, OPENAI_BODY, {"authorization": "Bearer sk-test"})[0] == 200
        assert "sk-test" not in json.dumps(mock.counters())


def test_stop_frees_the_port() -> None:
    mock = MockProvider().start()
    port = mock.port
    assert post(mock.openai_base_url + "/chat/completions", OPENAI_BODY)[0] == 200
    mock.stop()
    mock.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with MockProvider(port=port) as again:
        assert again.port == port
        assert post(again.openai_base_url + "/chat/completions", OPENAI_BODY)[0] == 200


def test_cli_mock_server_serves_until_sigterm(tmp_path: Any) -> None:
    script = tmp_path / "scripts.json"
    script.write_text(json.dumps({"down": {"fault": "server_error", "status": 503}}))
    # Port 0: the server binds a free port itself and prints it (picking one here and closing
    # it first would race with anything else on the machine).
    proc = subprocess.Popen(
        [sys.executable, "-m", "echelon.cli", "mock-server", "--port", "0", "--script", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found and int(found.group(1)) > 0, line
        base = f"http://127.0.0.1:{found.group(1)}"
        assert post(base + "/v1/chat/completions", OPENAI_BODY)[0] == 200
        assert post(base + "/v1/chat/completions", {**OPENAI_BODY, "model": "down"})[0] == 503
        with urllib.request.urlopen(base + "/_mock/counters", timeout=5) as r:
            assert json.loads(r.read())["requests"] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
