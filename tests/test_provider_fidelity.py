"""Real-provider fidelity, checked against the official SDKs (test-only dependencies).

* Every request echelon builds, over a matrix of features x stream/non-stream x provider, is
  recorded by the mock and validated with the SDK's own request types (``openai``'s
  ``CompletionCreateParams``, ``anthropic``'s ``MessageCreateParams``, ``google-genai``'s wire
  models), made strict about unknown keys as the real APIs are.
* Answers are built from the SDKs' response models (and the documented error bodies), fed
  through the mock over loopback, and must come out as the right response fields or error kind.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Tuple

import pytest
from pydantic import ConfigDict, TypeAdapter
from typing_extensions import get_args, get_type_hints, is_typeddict

import anthropic.types as an
import openai.types.chat as oac
from anthropic.types import message_create_params as an_params
from google.genai import types as ge
from openai.types import CompletionUsage
from openai.types.chat import completion_create_params as oa_params

import echelon
from echelon import Router
from echelon.testing import MockProvider

pytestmark = pytest.mark.timeout(120)

FAST = {"connect": 2, "first_token": 5, "total": 10, "idle": 5}
MODELS = {"openai": "oa-m", "anthropic": "an-m", "gemini": "ge-m"}


# -------------------------------------------------------------------------------------------------
# Strict SDK request types


def _forbid_extra(tp: Any, seen: set) -> None:
    """Make every TypedDict reachable from ``tp`` refuse unknown keys, as the APIs do (pydantic
    ignores them by default). Types that already say what to do with extras keep it."""
    if id(tp) in seen:
        return
    seen.add(id(tp))
    if is_typeddict(tp):
        if "__pydantic_config__" not in tp.__dict__:
            tp.__pydantic_config__ = ConfigDict(extra="forbid")
        for hint in get_type_hints(tp, include_extras=True).values():
            _forbid_extra(hint, seen)
    for arg in get_args(tp):
        _forbid_extra(arg, seen)


def _consume(value: Any) -> None:
    """Pydantic validates ``Iterable`` fields lazily: walk everything so errors surface."""
    if isinstance(value, dict):
        for v in value.values():
            _consume(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _consume(v)
    elif hasattr(value, "__next__") or type(value).__name__ == "ValidatorIterator":
        for v in value:
            _consume(v)


_SEEN: set = set()
for _root in (
    oa_params.CompletionCreateParamsNonStreaming,
    oa_params.CompletionCreateParamsStreaming,
    an_params.MessageCreateParamsNonStreaming,
    an_params.MessageCreateParamsStreaming,
):
    _forbid_extra(_root, _SEEN)

_OA = {False: TypeAdapter(oa_params.CompletionCreateParamsNonStreaming), True: TypeAdapter(oa_params.CompletionCreateParamsStreaming)}
_AN = {False: TypeAdapter(an_params.MessageCreateParamsNonStreaming), True: TypeAdapter(an_params.MessageCreateParamsStreaming)}

# The Gemini API's request fields (``GenerateContentRequest`` on the wire, as the SDK sends it).
_GE_TOP = {
    "contents": lambda v: [ge.Content.model_validate(c) for c in v],
    "systemInstruction": ge.Content.model_validate,
    "generationConfig": ge.GenerationConfig.model_validate,
    "tools": lambda v: [ge.Tool.model_validate(t) for t in v],
    "toolConfig": ge.ToolConfig.model_validate,
    "safetySettings": lambda v: [ge.SafetySetting.model_validate(s) for s in v],
    "cachedContent": str,
}


def _no_key(value: Any, key: str, where: str) -> None:
    if isinstance(value, dict):
        assert key not in value, f"{where}: the Gemini API refuses {key!r}"
        for k, v in value.items():
            _no_key(v, key, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_key(v, key, f"{where}[{i}]")


def validate_request(provider: str, body: Dict[str, Any]) -> None:
    """Raise unless ``body`` is a request the provider's SDK types accept."""
    stream = bool(body.get("stream"))
    if provider == "openai":
        _consume(_OA[stream].validate_python(body))
    elif provider == "anthropic":
        _consume(_AN[stream].validate_python(body))
    else:
        unknown = set(body) - set(_GE_TOP)
        assert not unknown, f"unknown Gemini request fields {unknown}"
        for k, check in _GE_TOP.items():
            if k in body:
                check(body[k])
        # The SDK itself refuses additionalProperties in Gemini API (not Vertex) schemas.
        _no_key(body.get("generationConfig", {}).get("responseSchema"), "additionalProperties", "responseSchema")
        _no_key(body.get("tools"), "additionalProperties", "tools")


def test_the_strict_validators_really_refuse() -> None:
    """The checks above are not vacuous: each refuses what its API refuses."""
    with pytest.raises(Exception, match="Extra inputs"):
        validate_request("openai", {"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": {}})
    with pytest.raises(Exception, match="extra_content"):
        validate_request("openai", {"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra_content": {}}]}]})
    with pytest.raises(Exception, match="temperature"):
        validate_request("anthropic", {"model": "m", "max_tokens": 1, "temperature": 0.5, "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(Exception):
        validate_request("anthropic", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(Exception):
        validate_request("gemini", {"contents": [{"role": "user", "parts": [{"text": "x", "bogus": 1}]}]})
    with pytest.raises(AssertionError):
        validate_request("gemini", {"contents": [], "seed": 1})


# -------------------------------------------------------------------------------------------------
# Router on the mock


def config(mock: MockProvider) -> Dict[str, Any]:
    common = {"api_key": "sk-test", "timeouts": dict(FAST), "max_retries": 0}
    bases = {"openai": mock.openai_base_url, "anthropic": mock.anthropic_base_url, "gemini": mock.gemini_base_url}
    providers = {
        p: {"common": {"type": p, "base_url": bases[p], **common}, MODELS[p]: {"model": MODELS[p]}}
        for p in MODELS
    }
    return {
        "providers": providers,
        "groups": {
            "mixed": {
                "echelon1": {"models": [MODELS["anthropic"]], "priority": 1},
                "echelon2": {"models": [MODELS["gemini"]], "priority": 2},
                "echelon3": {"models": [MODELS["openai"]], "priority": 3},
                "fallback_config": {"strategy": "echelon_down", "max_attempts": 3, "retry_delay": 0.01},
            }
        },
    }


@pytest.fixture
def mock():
    with MockProvider() as m:
        yield m


def last_body(mock: MockProvider, model: str) -> Dict[str, Any]:
    body = mock.counters(model)["last_request"]["body"]
    assert body is not None, f"{model} received nothing"
    return body


async def call(router: Router, model: str, messages: Any, stream: bool, **params: Any) -> Any:
    if stream:
        s = router.stream(messages, model=model, **params)
        last = None
        async for chunk in s:
            last = chunk
        assert last is not None and last.is_final
        return last.response
    return await router.chat(messages, model=model, **params)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
SCHEMA = {
    "type": "object",
    "title": "Weather report",
    "properties": {"city": {"type": "string"}, "temp": {"type": ["number", "null"]}, "kind": {"enum": ["sun", "rain"]},
                   "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
    "required": ["city"],
    "additionalProperties": False,
}
USER = [{"role": "user", "content": "What's the weather in Oslo?"}]
PARALLEL = USER + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}"},
    {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "noon"},
]

MATRIX: List[Tuple[str, Any, Dict[str, Any]]] = [
    ("system prompt", [{"role": "system", "content": "Be brief."}] + USER, {}),
    ("multi-turn", USER + [{"role": "assistant", "content": "Cold."}, {"role": "user", "content": "And tomorrow?"}], {}),
    ("tools", USER, {"tools": [WEATHER, TIME]}),
    ("tool_choice required", USER, {"tools": [WEATHER], "tool_choice": "required"}),
    ("tool_choice named", USER, {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ("parallel tool results", PARALLEL, {"tools": [WEATHER, TIME]}),
    ("json mode", USER, {"response_format": "json"}),
    ("json schema (plain)", USER, {"response_format": SCHEMA}),
    ("json schema (openai form)", USER, {"response_format": {"type": "json_schema", "json_schema": {"name": "report", "schema": SCHEMA, "strict": True}}}),
    ("stop", USER, {"stop": ["END", "STOP"]}),
    ("images", [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}]}], {}),
    ("max tokens", USER, {"max_tokens": 64}),
    ("sampling params", USER, {"temperature": 0.2, "top_p": 0.9}),
    ("extras", USER, {"tools": [WEATHER], "seed": 7, "user": "user-1", "parallel_tool_calls": False, "reasoning_effort": "low",
                      "presence_penalty": 0.1, "top_k": 3, "safety_settings": [],
                      "openai": {"store": False},
                      "anthropic": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
                      "gemini": {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}}),
]


@pytest.mark.parametrize("provider", list(MODELS))
async def test_every_request_shape_validates_against_the_sdk_types(mock: MockProvider, provider: str) -> None:
    model = MODELS[provider]
    validated = 0
    async with Router.from_dict(config(mock)) as router:
        for name, messages, params in MATRIX:
            for stream in (False, True):
                await call(router, model, messages, stream, **params)
                body = last_body(mock, model)
                try:
                    validate_request(provider, body)
                except Exception as e:  # noqa: BLE001 - report which shape
                    raise AssertionError(f"{provider} {name} stream={stream}: {e}\n{json.dumps(body)[:2000]}") from e
                validated += 1
    assert validated == 2 * len(MATRIX)
    assert mock.counters(model)["faults"].get("bad_request", 0) == 0


async def test_translations_land_where_each_provider_takes_them(mock: MockProvider) -> None:
    async with Router.from_dict(config(mock)) as router:
        await router.chat(USER, model=MODELS["openai"], max_tokens=50, response_format=SCHEMA)
        oa = last_body(mock, MODELS["openai"])
        assert oa["max_completion_tokens"] == 50 and "max_tokens" not in oa
        assert oa["response_format"]["type"] == "json_schema" and oa["response_format"]["json_schema"]["schema"] == SCHEMA

        await router.chat(USER, model=MODELS["anthropic"], stop=["END"], response_format=SCHEMA, temperature=0.5)
        a = last_body(mock, MODELS["anthropic"])
        assert a["stop_sequences"] == ["END"] and "temperature" not in a
        assert a["output_config"]["format"]["type"] == "json_schema"

        await router.chat(PARALLEL, model=MODELS["gemini"], tools=[WEATHER, TIME], max_tokens=9, response_format=SCHEMA, seed=4)
        g = last_body(mock, MODELS["gemini"])
        assert g["generationConfig"]["maxOutputTokens"] == 9 and g["generationConfig"]["seed"] == 4
        assert g["generationConfig"]["responseSchema"]["type"] == "OBJECT"
        responses = [c for c in g["contents"] if any("functionResponse" in p for p in c["parts"])]
        assert len(responses) == 1 and len(responses[0]["parts"]) == 2, "parallel results share one content"


async def test_mixed_group_sends_each_provider_only_its_own_keys(mock: MockProvider) -> None:
    """A fallback chain over three providers: OpenAI-only and Gemini-only keys never reach the
    others, so the chain is not stopped by a BadRequest of its own making."""
    mock.script(MODELS["anthropic"], "server_error")
    mock.script(MODELS["gemini"], "server_error")
    async with Router.from_dict(config(mock)) as router:
        r = await router.chat(USER, group="mixed", seed=3, logit_bias={"1": 2}, top_k=2, store=False,
                              gemini={"safetySettings": []}, anthropic={"service_tier": "auto"})
        assert r.served_by.endswith(MODELS["openai"])
    for provider in MODELS:
        validate_request(provider, last_body(mock, MODELS[provider]))
    assert "logit_bias" not in last_body(mock, MODELS["anthropic"]) and "seed" not in last_body(mock, MODELS["anthropic"])
    assert "store" not in last_body(mock, MODELS["gemini"])
    assert last_body(mock, MODELS["openai"])["logit_bias"] == {"1": 2}
    assert all(mock.counters(m)["faults"].get("bad_request", 0) == 0 for m in MODELS.values())


async def test_unsupported_params_error_is_a_typed_error_naming_key_and_model(mock: MockProvider) -> None:
    cfg = config(mock)
    cfg["providers"]["anthropic"]["common"]["unsupported_params"] = "error"
    async with Router.from_dict(cfg) as router:
        with pytest.raises(echelon.EchelonError) as info:
            await router.chat(USER, model=MODELS["anthropic"], temperature=0.3)
        e = info.value
        kinds = [a.error for a in e.attempts] or [e.kind]
        assert "bad_request" in kinds
        assert "temperature" in str(e) or any("temperature" in (a.message or "") for a in e.attempts)
    assert mock.counters(MODELS["anthropic"])["requests"] == 0


@pytest.mark.parametrize("bad, exc", [({"response_format": "yaml"}, ValueError), ({"response_format": 3}, TypeError),
                                      ({"anthropic": "x"}, TypeError), ({"gemini": [1]}, TypeError)])
async def test_bad_parameters_are_typed_errors_before_sending(mock: MockProvider, bad: Dict[str, Any], exc: type) -> None:
    async with Router.from_dict(config(mock)) as router:
        with pytest.raises(exc) as info:
            await router.chat(USER, model=MODELS["openai"], **bad)
        assert next(iter(bad)) in str(info.value)
    assert mock.counters()["requests"] == 0


# -------------------------------------------------------------------------------------------------
# Answers built from the SDKs' response models


def dump(model: Any) -> Dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def sse(events: List[Tuple[str, Dict[str, Any]]], crlf: bool = False) -> str:
    sep = "\r\n\r\n" if crlf else "\n\n"
    return "".join((f"event: {e}\n" if e else "") + f"data: {json.dumps(d)}{sep}" for e, d in events)


def oa_completion(**message: Any) -> Dict[str, Any]:
    usage = CompletionUsage(prompt_tokens=100, completion_tokens=40, total_tokens=140,
                            prompt_tokens_details={"cached_tokens": 64, "cache_write_tokens": 8},
                            completion_tokens_details={"reasoning_tokens": 30})
    msg = oac.ChatCompletionMessage(role="assistant", **message)
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return dump(oac.ChatCompletion(id="chatcmpl-1", object="chat.completion", created=0, model="gpt-x",
                                   choices=[{"index": 0, "finish_reason": finish, "message": msg}], usage=usage))


def an_message(content: List[Dict[str, Any]], stop: str, **extra: Any) -> Dict[str, Any]:
    usage = an.Usage(input_tokens=10, output_tokens=20, cache_read_input_tokens=90, cache_creation_input_tokens=5,
                     output_tokens_details={"thinking_tokens": 12})
    return dump(an.Message(id="msg_1", type="message", role="assistant", model="claude-x", content=content,
                           stop_reason=stop, usage=usage, **extra))


def ge_response(parts: List[Dict[str, Any]], finish: str = "STOP") -> Dict[str, Any]:
    return dump(ge.GenerateContentResponse.model_validate({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10, "thoughtsTokenCount": 25,
                          "cachedContentTokenCount": 20, "totalTokenCount": 65},
        "modelVersion": "gemini-x", "responseId": "r1"}))


def body_script(body: Any, status: int = 200, stream: bool = False) -> Dict[str, Any]:
    s: Dict[str, Any] = {"fault": "status", "status": status, "body": body}
    if stream:
        s["content_type"] = "text/event-stream"
    return s


async def test_openai_answers_from_sdk_models(mock: MockProvider) -> None:
    m = MODELS["openai"]
    async with Router.from_dict(config(mock)) as router:
        mock.script(m, body_script(oa_completion(content="{\"city\": \"Oslo\"}")))
        r = await router.chat(USER, model=m, response_format=SCHEMA)
        assert json.loads(r.content) == {"city": "Oslo"}
        u = r.usage
        assert (u.prompt_tokens, u.cached_tokens, u.cache_creation_tokens, u.completion_tokens, u.reasoning_tokens) == (100, 64, 8, 40, 30)
        assert r.usage.to_dict()["reasoning_tokens"] == 30

        mock.script(m, body_script(oa_completion(content=None, refusal="I can't help with that.")))
        with pytest.raises(echelon.EchelonError) as info:
            await router.chat(USER, model=m)
        assert _kind_of(info.value) == "content_filtered"

        calls = [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]
        mock.script(m, body_script(oa_completion(content=None, tool_calls=calls)))
        r = await router.chat(USER, model=m, tools=[WEATHER])
        assert r.tool_calls == calls and r.finish_reason == "tool_calls"

        chunks = [oac.ChatCompletionChunk(id="c", object="chat.completion.chunk", created=0, model="gpt-x", choices=[
            {"index": 0, "delta": {"role": "assistant", "content": None, "refusal": d}, "finish_reason": f}]) for d, f in
            [("", None), ("No.", None), (None, "stop")]]
        mock.script(m, body_script(sse([(None, dump(c)) for c in chunks]) + "data: [DONE]\n\n", stream=True))
        with pytest.raises(echelon.EchelonError) as info:
            await call(router, m, USER, True)
        assert _kind_of(info.value) == "content_filtered"


async def test_anthropic_answers_from_sdk_models(mock: MockProvider) -> None:
    m = MODELS["anthropic"]
    thinking = {"type": "thinking", "thinking": "Check the weather tool.", "signature": "EqSig=="}
    async with Router.from_dict(config(mock)) as router:
        tool_use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
        mock.script(m, body_script(an_message([thinking, {"type": "text", "text": "Let me look."}, tool_use], "tool_use")))
        r = await router.chat(USER, model=m, tools=[WEATHER], anthropic={"thinking": {"type": "enabled", "budget_tokens": 1024}})
        assert r.content == "Let me look." and r.tool_calls[0]["function"]["name"] == "get_weather"
        assert r.tool_calls[0]["extra_content"] == {"anthropic": {"thinking_blocks": [thinking]}}
        u = r.usage
        assert (u.prompt_tokens, u.cached_tokens, u.cache_creation_tokens, u.completion_tokens, u.reasoning_tokens) == (105, 90, 5, 20, 12)
        # The next turn sends the thinking back first, as the API requires.
        mock.script(m, "ok")
        follow = USER + [{"role": "assistant", "content": r.content, "tool_calls": r.tool_calls},
                         {"role": "tool", "tool_call_id": "toolu_1", "content": "3 degrees"}]
        await router.chat(follow, model=m, tools=[WEATHER], anthropic={"thinking": {"type": "enabled", "budget_tokens": 1024}})
        sent = last_body(mock, m)
        validate_request("anthropic", sent)
        assert sent["messages"][1]["content"][0] == thinking

        refusal = an_message([{"type": "text", "text": "I"}], "refusal",
                             stop_details={"type": "refusal", "category": "cyber", "explanation": "Not this."})
        mock.script(m, body_script(refusal))
        with pytest.raises(echelon.EchelonError) as info:
            await router.chat(USER, model=m)
        assert _kind_of(info.value) == "content_filtered"

        events = [an.RawMessageStartEvent(type="message_start", message=an.Message.model_validate(
                      {**an_message([], "end_turn"), "stop_reason": None})),
                  an.RawContentBlockStartEvent(type="content_block_start", index=0, content_block={"type": "text", "text": ""}),
                  an.RawContentBlockDeltaEvent(type="content_block_delta", index=0, delta={"type": "text_delta", "text": "Once upon"}),
                  an.RawMessageDeltaEvent(type="message_delta", delta={"stop_reason": "refusal"}, usage={"output_tokens": 3})]
        mock.script(m, body_script(sse([(e.type, dump(e)) for e in events]), stream=True))
        with pytest.raises(echelon.EchelonError) as info:
            await call(router, m, USER, True)
        # The engine may report it as the stream's own kind; the text so far is kept either way.
        assert getattr(info.value, "partial", None) == "Once upon"


async def test_gemini_answers_from_sdk_models(mock: MockProvider) -> None:
    m = MODELS["gemini"]
    sig = b"\x01signature-bytes"
    async with Router.from_dict(config(mock)) as router:
        call_part = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": sig}
        body = ge_response([{"text": "thinking...", "thought": True}, call_part])
        mock.script(m, body_script(body))
        r = await router.chat(USER, model=m, tools=[WEATHER])
        tc = r.tool_calls[0]
        assert tc["function"]["name"] == "get_weather" and json.loads(tc["function"]["arguments"]) == {"city": "Oslo"}
        wire_sig = body["candidates"][0]["content"]["parts"][1]["thoughtSignature"]
        assert tc["extra_content"] == {"google": {"thought_signature": wire_sig}}
        u = r.usage
        assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens, u.total_tokens) == (30, 20, 35, 25, 65)
        # Sent back: the signature is on the function call part of the model turn.
        mock.script(m, "ok")
        follow = USER + [{"role": "assistant", "content": None, "tool_calls": r.tool_calls},
                         {"role": "tool", "tool_call_id": tc["id"], "content": "{\"temp\": 3}"}]
        await router.chat(follow, model=m, tools=[WEATHER])
        sent = last_body(mock, m)
        validate_request("gemini", sent)
        assert sent["contents"][1]["parts"][0]["thoughtSignature"] == wire_sig

        chunks = [ge_response([{"text": "Once"}], finish="FINISH_REASON_UNSPECIFIED"), ge_response([{"text": " upon"}], finish="SAFETY")]
        for c in chunks:
            c["candidates"][0].pop("finishReason") if c["candidates"][0]["finishReason"] == "FINISH_REASON_UNSPECIFIED" else None
        mock.script(m, body_script(sse([(None, c) for c in chunks], crlf=True), stream=True))
        with pytest.raises(echelon.EchelonError) as info:
            await call(router, m, USER, True)
        assert getattr(info.value, "partial", None) == "Once upon"


def _kind_of(e: echelon.EchelonError) -> str:
    """The provider-side kind: the error's own, or that of its (single) attempt when the engine
    wraps it."""
    kinds = [a.error for a in getattr(e, "attempts", []) if a.error]
    return kinds[-1] if kinds else e.kind


ERROR_BODIES: List[Tuple[str, int, Any, str]] = [
    ("openai", 429, {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                               "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}, "quota_exceeded"),
    ("openai", 404, {"error": {"message": "The model `oa-m` does not exist or you do not have access to it.",
                               "type": "invalid_request_error", "param": None, "code": "model_not_found"}}, "model_not_found"),
    ("openai", 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                               "code": "invalid_api_key"}}, "auth_error"),
    ("openai", 400, {"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error",
                               "param": "messages", "code": "context_length_exceeded"}}, "context_window_exceeded"),
    ("anthropic", 402, {"type": "error", "error": {"type": "billing_error", "message": "Payment required."}, "request_id": "req_1"}, "quota_exceeded"),
    ("anthropic", 400, {"type": "error", "error": {"type": "invalid_request_error", "message":
                        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}, "quota_exceeded"),
    ("anthropic", 429, {"type": "error", "error": {"type": "rate_limit_error", "message": "Spend limit reached.",
                                                   "details": {"error_code": "enforced_spend_limit_reached"}}}, "quota_exceeded"),
    ("anthropic", 404, {"type": "error", "error": {"type": "not_found_error", "message": "model: an-m"}}, "model_not_found"),
    ("anthropic", 400, {"type": "error", "error": {"type": "invalid_request_error", "message":
                        "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease input length or `max_tokens` and try again"}},
     "context_window_exceeded"),
    ("gemini", 400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}},
     "auth_error"),
    ("gemini", 429, {"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details.",
                               "status": "RESOURCE_EXHAUSTED", "details": [
                                   {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                                       {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "50"}]}]}}, "quota_exceeded"),
    ("gemini", 429, {"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details.",
                               "status": "RESOURCE_EXHAUSTED", "details": [
                                   {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                                       {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": "15"}]},
                                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}}, "rate_limited"),
    ("gemini", 404, {"error": {"code": 404, "message": "models/ge-m is not found for API version v1beta.", "status": "NOT_FOUND"}}, "model_not_found"),
]


@pytest.mark.parametrize("provider, status, body, kind", ERROR_BODIES, ids=[f"{p}-{s}-{k}" for p, s, _, k in ERROR_BODIES])
async def test_documented_error_bodies_get_their_kind(mock: MockProvider, provider: str, status: int, body: Any, kind: str) -> None:
    if provider == "anthropic":
        an.ErrorResponse.model_validate(body)  # the body is one the SDK knows
    m = MODELS[provider]
    mock.script(m, body_script(body, status=status))
    for stream in (False, True):
        # A fresh router each time: the engine takes a failed or exhausted instance out.
        async with Router.from_dict(config(mock)) as router:
            with pytest.raises(echelon.EchelonError) as info:
                await call(router, m, USER, stream)
            assert _kind_of(info.value) == kind, f"stream={stream}: {info.value!r}"
            if kind == "rate_limited" and isinstance(info.value, echelon.RateLimited):
                assert info.value.retry_after == 12.0


async def test_mock_faults_match_the_documented_kinds(mock: MockProvider) -> None:
    """The mock's own quota / model / key / refusal faults produce what the real bodies do."""
    for fault, kind in [("quota", "quota_exceeded"), ("model_not_found", "model_not_found"), ("auth", "auth_error"),
                        ("refusal", "content_filtered")]:
        # A fresh router each time: the engine takes a failed or exhausted instance out.
        async with Router.from_dict(config(mock)) as router:
            for m in MODELS.values():
                mock.script(m, fault)
                with pytest.raises(echelon.EchelonError) as info:
                    await router.chat(USER, model=m)
                assert _kind_of(info.value) == kind, (fault, m, info.value)


# -------------------------------------------------------------------------------------------------
# Base URLs and `echelon check`


def test_check_shows_the_endpoint_each_model_calls(tmp_path) -> None:
    """With or without the version segment, each base URL resolves to the provider's endpoint,
    and ``echelon check`` says which."""
    llms = tmp_path / "llms"
    for provider, kind, base in [("an", "anthropic", "https://api.anthropic.com/v1/"), ("ge", "gemini", "https://generativelanguage.googleapis.com"),
                                 ("oa", "openai", "https://api.openai.com")]:
        d = llms / "provider" / provider
        d.mkdir(parents=True)
        (d / "common.toml").write_text(f'type = "{kind}"\nbase_url = "{base}"\napi_key = "k"\n')
        (d / "m.toml").write_text(f'name = "{provider}-m"\nmodel = "{provider}-wire"\nunsupported_params = "error"\n')
    (llms / "groups").mkdir()
    (llms / "groups" / "g.toml").write_text('[echelon1]\nmodels = ["an-m", "ge-m", "oa-m"]\n')
    text = echelon._core.check_config(str(tmp_path))
    assert "calls=https://api.anthropic.com/v1/messages" in text, text
    assert "calls=https://generativelanguage.googleapis.com/v1beta/models/ge-wire:generateContent" in text, text
    assert "calls=https://api.openai.com/v1/chat/completions" in text, text
    assert text.count("unsupported_params=error") == 6, text  # in the group and in the model list
    cfg = echelon._core.load_config_dir(str(tmp_path))
    assert cfg["models"]["an-m"]["unsupported_params"] == "error"


def test_bad_unsupported_params_value_is_a_config_error_naming_file_and_key(tmp_path) -> None:
    d = tmp_path / "llms" / "provider" / "an"
    d.mkdir(parents=True)
    (d / "common.toml").write_text('type = "anthropic"\napi_key = "k"\nunsupported_params = "ignore"\n')
    (d / "m.toml").write_text('model = "w"\n\n[parameters]\nresponse_format = "yaml"\nanthropic = 3\n')
    with pytest.raises(echelon.ConfigError) as info:
        echelon._core.load_config_dir(str(tmp_path))
    issues = {(i["key"], i["file"].split("/")[-1]) for i in info.value.issues}
    assert ("unsupported_params", "common.toml") in issues, info.value.issues
    assert ("parameters.response_format", "m.toml") in issues, info.value.issues
    assert ("parameters.anthropic", "m.toml") in issues, info.value.issues


def test_shipped_configs_name_current_models() -> None:
    """No retired model in the shipped examples, and their endpoints resolve."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    cfg = echelon._core.load_config_dir(str(root))
    wire = {m["model"] for m in cfg["models"].values()}
    retired = {"claude-3-5-sonnet-20241022", "claude-3-haiku-20240307", "gemini-1.5-flash", "gemini-1.5-pro"}
    assert not wire & retired, wire & retired
    text = echelon._core.check_config(str(root))
    assert "calls=https://api.anthropic.com/v1/messages" in text
