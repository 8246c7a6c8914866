"""The gateway through the official OpenAI and Anthropic SDKs, in front of the mock provider:
chat, streaming, tool calls, every error status with the SDKs' own exception types, failover
of a stream before its first token, an error event after it, and hundreds of calls at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Dict, Tuple

import anthropic
import openai
import pytest

from echelon import Router
from echelon.testing import MockProvider
from conftest import model_counters
from gateway_util import gateway_config, raw_request, post

MSG = [{"role": "user", "content": "hi"}]
WEATHER_OPENAI = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather of a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
async def served(mock: MockProvider) -> AsyncIterator[Tuple[Router, Any, MockProvider]]:
    async with Router.from_dict(gateway_config(mock.openai_base_url)) as router:
        gw = await router.serve(port=0)
        yield router, gw, mock


def clients(gw: Any, key: str = "unused", retries: int = 0) -> Tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    return (
        openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=retries),
        anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=retries),
    )


async def test_chat_in_both_shapes_names_the_instance_and_attempts(served):
    _, gw, mock = served
    oa, an = clients(gw)
    raw = await oa.chat.completions.with_raw_response.create(model="solo", messages=MSG, max_tokens=50)
    r = raw.parse()
    assert r.choices[0].message.content.startswith("Hello from m-a.")
    assert r.choices[0].finish_reason == "stop" and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert raw.headers["x-echelon-instance"] == "solo.echelon1_m-a" and raw.headers["x-echelon-attempts"] == "1"
    assert raw.headers["x-request-id"].startswith("req_")
    raw = await an.messages.with_raw_response.create(model="g.echelon2", max_tokens=50, messages=MSG, system="be brief")
    m = await raw.parse()
    assert m.content[0].type == "text" and m.content[0].text.startswith("Hello from m-c.")
    assert m.stop_reason == "end_turn" and m.usage.output_tokens > 0
    assert raw.headers["x-echelon-instance"] == "g.echelon2_m-c" and raw.headers["request-id"].startswith("req_")
    # What reached the provider: the system prompt first, max_tokens passed on.
    sent = model_counters(mock, "m-c")["last_request"]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "be brief"} and sent["max_tokens"] == 50
    # Every route form the Router takes.
    for name in ("g", "pool:p", "p", "mock:m-b", "m-b", "group:g.echelon1"):
        r = await oa.chat.completions.create(model=name, messages=MSG)
        assert r.choices[0].message.content.startswith("Hello from m-"), name


async def test_streams_in_both_shapes(served):
    _, gw, _ = served
    oa, an = clients(gw)
    stream = await oa.chat.completions.create(model="solo", messages=MSG, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from m-a.") and len(text) == 200
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    async with an.messages.stream(model="solo", max_tokens=64, messages=MSG) as s:
        parts = [t async for t in s.text_stream]
        final = await s.get_final_message()
    assert "".join(parts) == final.content[0].text and final.content[0].text.startswith("Hello from m-a.")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("upstream", ["openai_compatible", "anthropic"])
async def test_tool_calls_round_trip_in_both_shapes(upstream):
    scripts = {"*": {"tool_call": True}}
    with MockProvider(scripts) as mock:
        cfg = gateway_config(mock.openai_base_url)
        if upstream == "anthropic":
            common = cfg["providers"]["mock"]["common"]
            common["type"], common["base_url"] = "anthropic", mock.anthropic_base_url
        async with Router.from_dict(cfg) as router:
            gw = await router.serve(port=0)
            oa, an = clients(gw)
            r = await oa.chat.completions.create(model="solo", messages=[{"role": "user", "content": "weather in Paris?"}], tools=WEATHER_OPENAI, max_tokens=100)
            call = r.choices[0].message.tool_calls[0]
            assert call.function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
            json.loads(call.function.arguments)
            follow = [
                {"role": "user", "content": "weather in Paris?"},
                r.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ]
            mock.script("m-a", "ok")
            r2 = await oa.chat.completions.create(model="solo", messages=follow, tools=WEATHER_OPENAI, max_tokens=100)
            assert r2.choices[0].message.content.startswith("Hello from m-a.")
            mock.script("m-a", {"tool_call": True})
            stream = await oa.chat.completions.create(model="solo", messages=MSG, tools=WEATHER_OPENAI, stream=True, max_tokens=100)
            deltas = [c.choices[0].delta for c in [c async for c in stream] if c.choices]
            names = "".join(tc.function.name or "" for d in deltas for tc in (d.tool_calls or []) if tc.function)
            assert names == "get_weather"

            m = await an.messages.create(model="solo", max_tokens=100, tools=WEATHER_ANTHROPIC, messages=[{"role": "user", "content": "weather in Paris?"}])
            use = [b for b in m.content if b.type == "tool_use"][0]
            assert use.name == "get_weather" and isinstance(use.input, dict) and m.stop_reason == "tool_use"
            mock.script("m-a", "ok")
            m2 = await an.messages.create(
                model="solo",
                max_tokens=100,
                tools=WEATHER_ANTHROPIC,
                messages=[
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
                ],
            )
            assert m2.content[0].text.startswith("Hello from m-a.")
            mock.script("m-a", {"tool_call": True})
            async with an.messages.stream(model="solo", max_tokens=100, tools=WEATHER_ANTHROPIC, messages=MSG) as s:
                final = await s.get_final_message()
            streamed = [b for b in final.content if b.type == "tool_use"][0]
            assert streamed.name == "get_weather" and isinstance(streamed.input, dict) and final.stop_reason == "tool_use"


@pytest.mark.parametrize("fault", [{"fault": "server_error", "status": 503}, {"fault": "cut_after", "after": 0}, "reset"])
async def test_a_stream_fails_over_before_its_first_token(served, fault):
    _, gw, mock = served
    mock.script("m-a", fault)
    oa, an = clients(gw)
    raw = await oa.chat.completions.with_raw_response.create(model="fo", messages=MSG, stream=True)
    assert raw.headers["x-echelon-instance"] == "fo.echelon2_m-c"
    # m-a: the first try and its one retry; then m-c.
    assert raw.headers["x-echelon-attempts"] == "3"
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text.startswith("Hello from m-c.")
    async with an.messages.with_streaming_response.create(model="fo", max_tokens=50, messages=MSG, stream=True) as resp:
        assert resp.headers["x-echelon-instance"] == "fo.echelon2_m-c"
        events = [e async for e in await resp.parse()]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta").startswith("Hello from m-c.")


async def test_a_stream_cut_after_its_first_token_ends_with_the_apis_error_event(served):
    _, gw, mock = served
    mock.script("m-a", {"cut_after": 2})
    oa, an = clients(gw)
    got = []
    with pytest.raises(openai.APIError) as err:
        async for c in await oa.chat.completions.create(model="solo", messages=MSG, stream=True):
            got.extend(ch.delta.content or "" for ch in c.choices)
    assert "".join(got).startswith("Hello from m-a.")
    assert "interrupted" in str(err.value).lower() or "stream" in str(err.value).lower()
    with pytest.raises(anthropic.APIStatusError) as aerr:
        async with an.messages.stream(model="solo", max_tokens=50, messages=MSG) as s:
            async for _ in s.text_stream:
                pass
    assert aerr.value.body["error"]["type"] == "api_error"


async def test_every_error_status_in_each_sdks_exception_type(mock, monkeypatch):
    monkeypatch.setenv("GW_TEST_KEY_A", "sk-gateway-a-123456")
    monkeypatch.setenv("GW_TEST_KEY_B", "sk-gateway-b-123456")
    gateway = {
        "max_body_bytes": 4096,
        "keys": [
            {"name": "team-a", "api_key": "${GW_TEST_KEY_A}", "routes": ["solo", "fo"]},
            {"name": "team-b", "api_key": "${GW_TEST_KEY_B}", "rpm": 3},
        ],
    }
    async with Router.from_dict(gateway_config(mock.openai_base_url, gateway)) as router:
        gw = await router.serve(port=0)
        oa, an = clients(gw, "sk-gateway-a-123456")
        assert (await oa.chat.completions.create(model="solo", messages=MSG)).choices[0].message.content

        # 400: a request the gateway cannot read, and one the provider refuses as sent.
        with pytest.raises(openai.BadRequestError):
            await oa.chat.completions.create(model="solo", messages=[])
        with pytest.raises(anthropic.BadRequestError) as e400:
            await an.messages.create(model="solo", max_tokens=0, messages=MSG)
        assert e400.value.body["error"]["type"] == "invalid_request_error"
        mock.script("m-a", {"fault": "context_window"})
        with pytest.raises(openai.BadRequestError) as e400:
            await oa.chat.completions.create(model="solo", messages=MSG)
        assert e400.value.code == "context_length_exceeded"
        mock.script("m-a", "ok")

        # 401: a wrong key, and none (the SDKs refuse to send none, so raw HTTP).
        o, a = clients(gw, "sk-wrong")
        with pytest.raises(openai.AuthenticationError):
            await o.chat.completions.create(model="solo", messages=MSG)
        with pytest.raises(anthropic.AuthenticationError):
            await a.messages.create(model="solo", max_tokens=10, messages=MSG)
        for path in ("/v1/chat/completions", "/v1/messages"):
            status, _, body = await raw_request(gw.port, post(path, {"model": "solo", "max_tokens": 5, "messages": MSG}))
            assert status == 401 and b"missing API key" in body

        # 403: a route the key may not use; 404: a route that does not exist, with a hint.
        with pytest.raises(openai.PermissionDeniedError):
            await oa.chat.completions.create(model="g", messages=MSG)
        with pytest.raises(anthropic.PermissionDeniedError):
            await an.messages.create(model="pool:p", max_tokens=10, messages=MSG)
        with pytest.raises(openai.NotFoundError) as e404:
            await oa.chat.completions.create(model="sollo", messages=MSG)
        assert "did you mean `solo`" in str(e404.value)
        with pytest.raises(anthropic.NotFoundError) as a404:
            await an.messages.create(model="fo.echelon7", max_tokens=10, messages=MSG)
        assert "did you mean" in str(a404.value)

        # 413: a body over max_body_bytes.
        big = [{"role": "user", "content": "x" * 10_000}]
        with pytest.raises(openai.APIStatusError) as e413:
            await oa.chat.completions.create(model="solo", messages=big)
        assert e413.value.status_code == 413
        with pytest.raises(anthropic.ContentTooLargeError):
            await an.messages.create(model="solo", max_tokens=10, messages=big)

        # 429: every target rate limited, with the provider's Retry-After.
        mock.script("m-a", {"fault": "rate_limit", "retry_after": "7"})
        with pytest.raises(openai.RateLimitError) as e429:
            await oa.chat.completions.create(model="solo", messages=MSG)
        assert e429.value.response.headers["retry-after"] in ("6", "7")
        with pytest.raises(anthropic.RateLimitError) as a429:
            await an.messages.create(model="solo", max_tokens=10, messages=MSG)
        assert int(a429.value.response.headers["retry-after"]) >= 1
        mock.script("m-a", "ok")

        # 429: a key's own budget (3 requests a minute).
        ob, _ = clients(gw, "sk-gateway-b-123456")
        for _ in range(3):
            await ob.chat.completions.create(model="g.echelon2", messages=MSG)
        with pytest.raises(openai.RateLimitError) as kb:
            await ob.chat.completions.create(model="g.echelon2", messages=MSG)
        assert "team-b" in str(kb.value) and int(kb.value.response.headers["retry-after"]) >= 1

        # 503: every target failed; the SDK's own retries are told not to repeat it.
        mock.script("m-a", {"fault": "server_error", "status": 500})
        mock.reset()
        o_retrying, a_retrying = clients(gw, "sk-gateway-a-123456", retries=2)
        with pytest.raises(openai.InternalServerError) as e503:
            await o_retrying.chat.completions.create(model="solo", messages=MSG)
        assert e503.value.status_code == 503 and e503.value.response.headers["x-should-retry"] == "false"
        assert model_counters(mock, "m-a")["requests"] == 2, "one try and the engine's one retry; no SDK retries"
        with pytest.raises(anthropic.ServiceUnavailableError):
            await a_retrying.messages.create(model="solo", max_tokens=10, messages=MSG)

        # 504: the call's deadline (x-echelon-timeout) passes first.
        mock.script("m-a", {"latency_ms": 3000})
        with pytest.raises(openai.InternalServerError) as e504:
            await oa.chat.completions.create(model="solo", messages=MSG, extra_headers={"x-echelon-timeout": "0.3"})
        assert e504.value.status_code == 504
        with pytest.raises(anthropic.GatewayTimeoutError):
            await an.messages.create(model="solo", max_tokens=10, messages=MSG, extra_headers={"x-echelon-timeout": "0.3"})
        # Errors name the last instance tried and the attempts, never a key.
        status, headers, body = await raw_request(gw.port, post("/v1/chat/completions", {"model": "solo", "messages": MSG}, headers={"authorization": "Bearer sk-gateway-a-123456", "x-echelon-timeout": "0.2"}))
        assert status == 504 and headers["x-echelon-instance"] == "solo.echelon1_m-a" and headers["x-echelon-attempts"] == "1"
        assert b"sk-gateway" not in body and b"mock-key" not in body


async def test_models_lists_the_routes_a_key_may_use(mock, monkeypatch):
    monkeypatch.setenv("GW_TEST_KEY_A", "sk-gateway-a-123456")
    gateway = {"keys": [{"name": "a", "api_key": "${GW_TEST_KEY_A}", "routes": ["fo", "pool:*"]}]}
    async with Router.from_dict(gateway_config(mock.openai_base_url, gateway)) as router:
        gw = await router.serve(port=0)
        oa, an = clients(gw, "sk-gateway-a-123456")
        ids = [m.id async for m in oa.models.list()]
        assert sorted(ids) == ["fo", "fo.echelon1", "fo.echelon2", "p"]
        assert sorted([m.id async for m in an.models.list()]) == sorted(ids)
        o_bad, _ = clients(gw, "nope")
        with pytest.raises(openai.AuthenticationError):
            await o_bad.models.list()


async def test_hundreds_of_calls_at_once_through_both_shapes(served):
    router, gw, mock = served
    mock.script("*", {"latency_ms": 5, "chunk_delay_ms": 1})
    oa, an = clients(gw)

    async def one(i: int) -> str:
        if i % 4 == 0:
            r = await oa.chat.completions.create(model="g", messages=MSG)
            return r.choices[0].message.content
        if i % 4 == 1:
            s = await oa.chat.completions.create(model="p", messages=MSG, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
        if i % 4 == 2:
            m = await an.messages.create(model="g", max_tokens=50, messages=MSG)
            return m.content[0].text
        async with an.messages.stream(model="p", max_tokens=50, messages=MSG) as s:
            return await s.get_final_text()

    texts = await asyncio.wait_for(asyncio.gather(*[one(i) for i in range(240)]), 120)
    assert all(t.startswith("Hello from m-") and len(t) == 200 for t in texts)
    assert mock.counters()["requests"] == 240
    status, _, body = await raw_request(gw.port, b"GET /status.json HTTP/1.1\r\nhost: x\r\n\r\n")
    snap = json.loads(body)
    # Only the status request itself is in flight; every pool and instance is back to zero.
    assert status == 200 and snap["gateway"]["in_flight"] == 1
    assert all(i["in_flight"] == 0 for g in snap["router"]["groups"] for e in g["echelons"] for i in e["instances"])
