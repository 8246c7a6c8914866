"""The gateway's safety limits and lifecycle over real sockets: header and idle timeouts, the
connection cap, the body limit, loopback by default, readiness, drains (streams finish within
the grace, or end with an error event after it), and ``echelon serve`` as a process: SIGTERM
drains, SIGHUP and a changed config file reload without dropping the call in flight, and a
broken config is rejected while the old one keeps serving."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import echelon
from echelon import Router
from gateway_util import ServeProcess, gateway_config, get, post, raw_request, wait_for, write_config_dir

MSG = [{"role": "user", "content": "hi"}]


async def read_to_eof(reader: asyncio.StreamReader, timeout: float) -> bytes:
    out = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return out
        out += chunk


async def open_stream(port: int, model: str = "solo") -> tuple:
    """Start a streaming chat call; returns the reader/writer after the response head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/v1/chat/completions", {"model": model, "messages": MSG, "stream": True}))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


def sse_text(raw: bytes) -> str:
    """The content of an OpenAI SSE body (chunked transfer framing removed by splitting on data lines)."""
    text = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("data: {"):
            ev = json.loads(line[6:])
            for c in ev.get("choices", []):
                text.append(c["delta"].get("content") or "")
    return "".join(text)


async def test_a_client_slow_to_send_headers_is_cut_off(mock):
    async with Router.from_dict(gateway_config(mock.openai_base_url, {"header_timeout": 0.3})) as router:
        gw = await router.serve(port=0)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        await writer.drain()
        # The rest of the headers never comes: the gateway closes the connection.
        await read_to_eof(reader, 10)
        writer.close()


async def test_idle_connections_close_but_a_quiet_call_in_flight_does_not(mock):
    mock.script("m-a", {"ttft_ms": 1200})
    async with Router.from_dict(gateway_config(mock.openai_base_url, {"idle_timeout": 0.3})) as router:
        gw = await router.serve(port=0)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(get("/healthz"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        rest = await read_to_eof(reader, 10)
        assert rest == b'{"status":"ok"}', rest
        writer.close()
        # A stream whose first token takes four idle timeouts is busy, not idle.
        reader, writer = await open_stream(gw.port)
        body = await read_to_eof(reader, 20)
        assert sse_text(body).startswith("Hello from m-a.") and b"data: [DONE]" in body
        writer.close()


async def test_past_the_connection_cap_a_connection_is_answered_503(mock):
    async with Router.from_dict(gateway_config(mock.openai_base_url, {"max_connections": 2})) as router:
        gw = await router.serve(port=0)
        held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(2)]
        # The two held connections are served (they count against the cap).
        for r, w in held:
            w.write(get("/healthz"))
            await w.drain()
            assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
        status, headers, body = await raw_request(gw.port, get("/healthz"))
        assert status == 503 and headers["retry-after"] == "1" and b"too many connections" in body
        for _, w in held:
            w.close()

        async def served() -> bool:
            s, _, _ = await raw_request(gw.port, get("/healthz"))
            return s == 200

        await wait_for(served)


async def test_body_limit_and_unknown_paths(mock):
    async with Router.from_dict(gateway_config(mock.openai_base_url, {"max_body_bytes": 2048})) as router:
        gw = await router.serve(port=0)
        status, headers, body = await raw_request(gw.port, post("/v1/messages", b"x" * 5000))
        assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"
        # A body that claims to be small and is not: the limit holds while reading (chunked).
        chunked = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        status, _, _ = await raw_request(gw.port, chunked)
        assert status == 413
        status, _, body = await raw_request(gw.port, post("/v1/chat/completions", b"{not json"))
        assert status == 400 and b"not valid JSON" in body
        status, _, body = await raw_request(gw.port, get("/v2/nothing"))
        assert status == 404 and b"/v1/chat/completions" in body
        status, _, _ = await raw_request(gw.port, get("/v1/chat/completions"))
        assert status == 405


async def test_loopback_by_default_and_other_addresses_need_keys(mock):
    async with Router.from_dict(gateway_config(mock.openai_base_url)) as router:
        with pytest.raises(echelon.ConfigError, match="without \\[\\[gateway.keys\\]\\]"):
            await router.serve("0.0.0.0", 0)
        with pytest.raises(ValueError):
            await router.serve("not-an-address", 0)
        gw = await router.serve(port=0)
        assert gw.host == "127.0.0.1"
        other = await router.serve("127.0.0.2", 0)
        status, _, _ = await raw_request(gw.port, get("/healthz"))
        assert status == 200 and other.host == "127.0.0.2"


async def test_readiness_follows_instances_and_drain(mock):
    mock.script("m-a", {"fault": "auth"})
    async with Router.from_dict(gateway_config(mock.openai_base_url)) as router:
        gw = await router.serve(port=0)
        status, _, body = await raw_request(gw.port, get("/readyz"))
        assert status == 200 and json.loads(body)["ready"] is True
        # A rejected key marks solo's only instance failed.
        status, _, _ = await raw_request(gw.port, post("/v1/chat/completions", {"model": "solo", "messages": MSG}))
        assert status == 503
        status, _, body = await raw_request(gw.port, get("/readyz"))
        assert status == 503 and json.loads(body)["routes_without_instances"] == ["group:solo"]


async def test_close_drains_a_stream_to_its_end_and_frees_the_port(mock):
    mock.script("m-a", {"chunk_delay_ms": 150})
    async with Router.from_dict(gateway_config(mock.openai_base_url)) as router:
        gw = await router.serve(port=0)
        port = gw.port
        reader, writer = await open_stream(port)
        await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        gw.close(grace=20)
        assert gw.draining
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        body = await read_to_eof(reader, 20)
        assert b"data: [DONE]" in body and b"error" not in body
        await asyncio.wait_for(gw.wait_closed(), 10)
        writer.close()


async def test_a_drain_past_its_grace_ends_open_streams_with_an_error_event(mock):
    mock.script("m-a", {"chunk_delay_ms": 700})
    async with Router.from_dict(gateway_config(mock.openai_base_url)) as router:
        gw = await router.serve(port=0)
        reader, writer = await open_stream(gw.port)
        await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        gw.close(grace=0.3)
        body = await read_to_eof(reader, 20)
        assert b"shut down before the stream finished" in body and b"data: [DONE]" in body
        await asyncio.wait_for(gw.wait_closed(), 10)
        writer.close()


async def test_router_close_stops_its_gateways(mock):
    router = Router.from_dict(gateway_config(mock.openai_base_url))
    gw = await router.serve(port=0)
    status, _, _ = await raw_request(gw.port, get("/healthz"))
    assert status == 200
    router.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", gw.port)
    await asyncio.wait_for(gw.wait_closed(), 10)
    with pytest.raises(RuntimeError):
        await router.serve(port=0)


def fetch(url: str) -> tuple:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_sigterm_or_ctrl_c_drains_the_stream_in_flight(mock, tmp_path: Path, sig):
    mock.script("m-a", {"chunk_delay_ms": 150})
    cfg = write_config_dir(tmp_path, mock.openai_base_url, {"solo": ["m-a"]})
    proc = ServeProcess(cfg)
    try:
        reader, writer = await open_stream(proc.port)
        await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        proc.signal(sig)
        body = await read_to_eof(reader, 20)
        assert sse_text(b"data: " + body).startswith("Hello from m-a.") and b"data: [DONE]" in body and b"error" not in body
        code, log = await asyncio.to_thread(proc.wait)
        assert code == 0, log
        assert f"{sig.name}: draining" in log and "stopped" in log and "Traceback" not in log
        writer.close()
    finally:
        proc.stop()


async def test_cli_reloads_on_sighup_and_file_changes_and_rejects_a_broken_config(mock, tmp_path: Path):
    mock.script("m-a", {"chunk_delay_ms": 100})
    cfg = write_config_dir(tmp_path, mock.openai_base_url, {"solo": ["m-a"]}, global_toml="[gateway]\nwatch = false\n")
    proc = ServeProcess(cfg)
    try:
        # A call in flight across the reload finishes on the engine it started on.
        reader, writer = await open_stream(proc.port)
        await asyncio.wait_for(reader.readuntil(b"data: "), 10)
        (cfg / "llms" / "groups" / "extra.toml").write_text('[echelon1]\nmodels = ["m-b"]\n')
        proc.signal(signal.SIGHUP)

        def models() -> list:
            return [m["id"] for m in json.loads(fetch(proc.url + "/v1/models")[1])["data"]]

        await wait_for(lambda: "extra" in models())
        body = await read_to_eof(reader, 20)
        assert b"data: [DONE]" in body and b"error" not in body
        writer.close()
        status, body = fetch(proc.url + "/status.json")
        assert json.loads(body)["gateway"]["reloads"] == 1

        # A broken file: rejected, logged, and the old configuration keeps serving.
        (cfg / "llms" / "groups" / "broken.toml").write_text("[echelon1\nmodels = \n")
        proc.signal(signal.SIGHUP)
        await wait_for(lambda: json.loads(fetch(proc.url + "/status.json")[1])["gateway"]["last_reload_error"])
        status, _, body = await raw_request(proc.port, post("/v1/chat/completions", {"model": "extra", "messages": MSG}))
        assert status == 200 and b"Hello from m-b." in body
        (cfg / "llms" / "groups" / "broken.toml").unlink()

        # With watching on, a changed file is enough (the [gateway] change itself is one).
        (cfg / "llms" / "global.toml").write_text("[gateway]\nwatch = true\nwatch_interval = 0.1\n")
        proc.signal(signal.SIGHUP)
        await wait_for(lambda: json.loads(fetch(proc.url + "/status.json")[1])["gateway"]["reloads"] == 2)
        (cfg / "llms" / "groups" / "later.toml").write_text('[echelon1]\nmodels = ["m-c"]\n')
        await wait_for(lambda: "later" in models())
        proc.signal(signal.SIGTERM)
        code, log = await asyncio.to_thread(proc.wait)
        assert code == 0
        assert "rejected, the previous one keeps serving" in log and "broken.toml" in log
        assert "changed; reloading" in log
    finally:
        proc.stop()


async def test_cli_refuses_a_public_address_without_keys(mock, tmp_path: Path):
    cfg = write_config_dir(tmp_path, mock.openai_base_url, {"solo": ["m-a"]})
    import subprocess
    import sys

    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "echelon.cli", "serve", str(cfg), "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "without [[gateway.keys]]" in r.stderr


async def test_no_secret_reaches_a_client_or_the_log(mock, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("GW_SECRET_KEY", "sk-gateway-very-secret-1")
    caplog.set_level(logging.DEBUG)
    cfg = gateway_config(mock.openai_base_url, {"keys": [{"name": "svc", "api_key": "${GW_SECRET_KEY}", "routes": ["solo"], "tpm": 100000}]})
    cfg["providers"]["mock"]["common"]["api_key"] = "sk-provider-very-secret-2"
    mock.script("m-a", {"fault": "auth"})
    echelon.events.refresh_log_levels()
    async with Router.from_dict(cfg) as router:
        gw = await router.serve(port=0)
        seen = []
        for key in ("sk-gateway-very-secret-1", "sk-wrong-key-3"):
            for path in ("/v1/chat/completions", "/v1/messages", "/v1/models"):
                req = post(path, {"model": "solo", "max_tokens": 5, "messages": MSG}, headers={"x-api-key": key}) if path != "/v1/models" else f"GET {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\n\r\n".encode()
                _, headers, body = await raw_request(gw.port, req)
                seen.append(repr(headers) + body.decode())
        for path in ("/status.json", "/metrics", "/status", "/readyz"):
            _, headers, body = await raw_request(gw.port, get(path))
            seen.append(repr(headers) + body.decode())
        seen.append(repr(gw) + repr(router.status()))
        await asyncio.sleep(0.1)
    seen.extend(r.getMessage() for r in caplog.records)
    text = "\n".join(seen)
    assert "sk-gateway-very-secret" not in text and "sk-provider-very-secret" not in text and "sk-wrong-key" not in text
    assert "auth_error" in text  # the provider's rejection did get through (as a failed target)
