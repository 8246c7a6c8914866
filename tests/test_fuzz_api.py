"""Hypothesis: random message lists and parameters sent to ``router.chat`` against the mock.
Whatever comes in, the outcome is a Response or a typed error: TypeError/ValueError for bad
arguments, EchelonError otherwise. Never a panic, never another exception, never a hang."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Iterator, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import echelon
from echelon import Router
from echelon.testing import MockProvider
from conftest import mock_config

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=10),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


class Obj:
    """A message-like object with arbitrary attributes."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return f"Obj({self.__dict__!r})"


roles = st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "human", "ai", "function"]), json_like)
contents = st.one_of(
    st.text(max_size=80),
    json_like,
    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": st.text(max_size=20)}), max_size=3),
)
message = st.one_of(
    st.fixed_dictionaries({"role": roles, "content": contents}),
    st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "type"]), json_like, max_size=4),
    st.builds(lambda r, c: Obj(role=r, content=c), roles, contents),
    st.builds(lambda t, c: Obj(type=t, content=c), st.sampled_from(["human", "system", "ai", "tool", "nope"]), contents),
    json_like,
)
messages = st.one_of(st.text(max_size=80), st.lists(message, max_size=5), json_like)

param_names = st.sampled_from([
    "temperature", "max_tokens", "top_p", "stop", "tools", "tool_choice", "response_format",
    "presence_penalty", "frequency_penalty", "seed", "user", "n", "logit_bias", "thinking",
    "timeout", "max_instance_attempts", "fallback_groups", "metadata",
])
params = st.dictionaries(st.one_of(param_names, st.from_regex(r"[a-z_]{1,12}", fullmatch=True)), json_like, max_size=5)

RESERVED = {"pool", "group", "model", "route", "messages", "self"}


@pytest.fixture(scope="module")
def env() -> Iterator[Tuple[asyncio.AbstractEventLoop, Router, MockProvider]]:
    loop = asyncio.new_event_loop()
    with MockProvider() as mock:
        router = Router.from_dict(mock_config(mock.openai_base_url))
        try:
            yield loop, router, mock
        finally:
            router.close()
            loop.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(msgs=messages, kwargs=params)
def test_chat_with_random_messages_and_params_gives_only_typed_errors(env, msgs: Any, kwargs: Any) -> None:
    loop, router, _ = env
    kwargs = {k: v for k, v in kwargs.items() if k not in RESERVED}
    # A call may legitimately wait up to its own timeout; keep those short.
    t = kwargs.get("timeout")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 5:
        kwargs["timeout"] = 5

    async def call() -> Any:
        return await asyncio.wait_for(router.chat(msgs, group="solo", **kwargs), 30)

    try:
        r = loop.run_until_complete(call())
    except (TypeError, ValueError, echelon.EchelonError):
        return
    except asyncio.TimeoutError as e:
        if isinstance(e, echelon.EchelonError):
            return
        raise AssertionError(f"router.chat hung on messages={msgs!r} params={kwargs!r}") from e
    except BaseException as e:  # noqa: BLE001 - a panic or any other exception is the finding
        raise AssertionError(f"untyped {type(e).__name__}: {e!r} for messages={msgs!r} params={kwargs!r}") from e
    assert isinstance(r, echelon.Response) and r.served_by == "solo.echelon1_m-a"


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"timeout": 1e300}, ValueError),  # was a Rust panic (Duration overflow)
        ({"timeout": float("nan")}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "3"}, TypeError),
        ({"max_instance_attempts": -1}, ValueError),  # was OverflowError
        ({"max_instance_attempts": 2**40}, ValueError),
        ({"max_instance_attempts": 0}, ValueError),
        ({"max_instance_attempts": 1.5}, TypeError),
        ({"fallback_groups": [1]}, TypeError),
        ({"max_tokens": -5}, TypeError),
        ({"temperature": "hot"}, TypeError),
    ],
)
async def test_bad_call_arguments_are_typed_errors_before_any_request(mock, kwargs, exc):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        with pytest.raises(exc):
            await router.chat("hi", group="solo", **kwargs)
        with pytest.raises(exc):
            async for _ in router.stream("hi", group="solo", **kwargs):
                pass
    assert mock.counters()["requests"] == 0


async def test_a_single_fallback_group_string_is_one_group(mock):
    mock.script("m-a", {"fault": "server_error", "status": 503})
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        r = await router.chat("hi", group="solo", fallback_groups="g.echelon2")
        assert r.served_by == "g.echelon2_m-c"
