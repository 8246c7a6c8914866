"""Wrappers and the factory, with real calls and real streaming."""

from __future__ import annotations

import asyncio

import pytest

from echelon.compat import (
    EnhancedFallbackManager,
    LLMResponse,
    PollingPoolManager,
)
from echelon.compat.wrappers import (
    BaseLLMWrapper,
    LLMWrapperFactory,
    PollingPoolWrapper,
    PollingPoolWrapperError,
    TaskGroupWrapper,
    TaskGroupWrapperError,
    WrapperFactoryError,
)


@pytest.fixture
async def pm(tgm):
    m = PollingPoolManager(tgm)
    await m.create_pool("fast_pool", tgm.get_polling_pool("fast_pool"))
    yield m
    await m.shutdown_all()


class Msg:
    def __init__(self, content: str) -> None:
        self.content = content
        self.type = "human"


async def test_pool_wrapper_async_real_content(pm, mock) -> None:
    w = PollingPoolWrapper("fast_pool", pm)
    r = await w.generate_async([Msg("Hello"), Msg("World")])
    assert isinstance(r, LLMResponse) and r.content.startswith("Hello from m-") and r.model == "fast_pool_pool"
    assert r.token_usage.total_tokens > 0 and {"wrapper", "attempt_count", "rotation_history_count"} <= set(r.metadata)
    assert w.get_stats()["successful_requests"] == 1
    assert pm.get_pool("fast_pool").stats["successful_requests"] == 1  # wrapper traffic is counted (§5.16)
    assert w.get_rotation_history()[0]["attempt"] == 1
    info = w.get_model_info()
    assert info["type"] == "polling_pool_wrapper" and info["pool_info"]["instance_count"] == 3
    hc = await w.health_check()
    assert hc == {"healthy": True, "healthy_instances": 3, "total_instances": 3, "health_ratio": 1.0}


async def test_pool_wrapper_rotates_on_failure(pm, mock) -> None:
    mock.script("m-gpt4", fault="server_error", status=500)
    w = PollingPoolWrapper("fast_pool", pm, {"max_instance_attempts": 2})
    r = await w.generate_async([Msg("x")])
    assert r.content.startswith("Hello from m-opus")
    assert [h["attempt"] for h in w.get_rotation_history()] == [1, 2]
    mock.script("m-opus", fault="server_error", status=500)
    mock.script("m-gpt4-turbo", fault="server_error", status=500)
    with pytest.raises(PollingPoolWrapperError, match="轮询池所有实例尝试失败"):
        await w.generate_async([Msg("x")])
    assert all(i.current_load == 0 for i in pm.get_pool("fast_pool").instances)


def test_pool_wrapper_sync_outside_loop(tgm, mock) -> None:
    pm = PollingPoolManager(tgm)
    asyncio.run(pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon1"], "health_check_interval": 0}))
    r = PollingPoolWrapper("fast_pool", pm).generate([Msg("hi")])
    assert r.content.startswith("Hello from")


async def test_sync_generate_inside_running_loop(pm) -> None:
    w = PollingPoolWrapper("fast_pool", pm)
    r = w.generate([Msg("hi")])  # runs on a worker thread's loop; must not deadlock
    assert r.content.startswith("Hello from")


async def test_no_pool_errors(pm) -> None:
    w = PollingPoolWrapper("missing", pm)
    with pytest.raises(PollingPoolWrapperError, match="轮询池不可用"):
        await w.generate_async([Msg("x")])
    assert w.get_stats()["failed_requests"] == 1
    with pytest.raises(PollingPoolWrapperError, match="轮询池包装器同步生成失败"):
        w.generate([Msg("x")])
    assert (await w.health_check()) == {"healthy": False, "error": "轮询池不可用"}


async def test_pool_wrapper_real_streaming(pm, mock) -> None:
    w = PollingPoolWrapper("fast_pool", pm)
    chunks = [c async for c in w.stream_generate([Msg("hi")])]
    assert len(chunks) >= 2 and "".join(chunks).startswith("Hello from m-")
    assert mock.counters()["streams_completed"] == 1
    assert all(i.current_load == 0 for i in pm.get_pool("fast_pool").instances)


async def test_task_group_wrapper_direct_and_fallback(tgm, mock) -> None:
    w = TaskGroupWrapper("fast_group.echelon2", tgm)
    r = await w.generate_async([Msg("hi")])
    assert r.content.startswith("Hello from m-gpt35") and r.model == "openai-gpt3.5-turbo"
    mock.script("m-gpt4", fault="server_error", status=500)
    mock.script("m-opus", fault="server_error", status=500)
    mock.script("m-gpt4-turbo", fault="server_error", status=500)
    efm = EnhancedFallbackManager(tgm)
    efm.retry_delay = 0
    w2 = TaskGroupWrapper("w", tgm, efm, {"target": "fast_group.echelon1", "fallback_groups": ["backup_group.echelon1"]})
    r2 = await w2.generate_async([Msg("hi")], {"max_tokens": 10})
    assert r2.content.startswith("Hello from m-gpt35") and r2.model == "fast_group.echelon1"
    assert w2.get_fallback_history()[-1]["success"] and w2.get_model_info()["current_target"] == "fast_group.echelon1"
    with pytest.raises(TaskGroupWrapperError, match="没有找到模型"):
        await TaskGroupWrapper("nope.echelon1", tgm).generate_async([Msg("x")])


async def test_task_group_wrapper_streaming(tgm, mock) -> None:
    w = TaskGroupWrapper("backup_group", tgm)
    chunks = [c async for c in w.stream_generate([Msg("hi")])]
    assert len(chunks) >= 2 and "".join(chunks).startswith("Hello from m-gpt35")


async def test_factory_registry_and_health(tgm, pm) -> None:
    f = LLMWrapperFactory(tgm, pm)
    tg = f.create_task_group_wrapper("fast_group.echelon1")
    pw = f.create_polling_pool_wrapper("fast_pool")
    assert f.get_wrapper("fast_pool") is pw and f.list_wrappers() == {"fast_group.echelon1": "TaskGroupWrapper", "fast_pool": "PollingPoolWrapper"}
    with pytest.raises(WrapperFactoryError, match="不支持的包装器类型"):
        f.create_wrapper_from_config("x", "weird")
    with pytest.raises(WrapperFactoryError, match="包装器类必须继承自BaseLLMWrapper"):
        f.register_wrapper_type("bad", dict)
    with pytest.raises(WrapperFactoryError, match="轮询池管理器未配置"):
        LLMWrapperFactory(tgm).create_polling_pool_wrapper("p")
    made = f.create_wrappers_from_config({"a": {"type": "task_group", "target": "backup_group"}, "b": {}, "c": {"type": "weird"}})
    assert list(made) == ["a"]

    class Boom:
        async def health_check(self):
            raise RuntimeError("Health check error")

    f._wrappers["boom"] = Boom()  # type: ignore[assignment]
    res = f.health_check_all()  # sync, called from inside a running loop
    assert res["fast_pool"]["healthy"] is True and res["boom"] == {"healthy": False, "error": "Health check error"}
    assert res["fast_group.echelon1"]["note"] == "无健康检查方法"
    assert f.get_wrapper_stats()["total_wrappers"] == 4
    assert f.remove_wrapper("boom") and not f.remove_wrapper("boom")
    f.shutdown()
    assert f._wrappers == {}


def test_base_wrapper_helpers() -> None:
    class W(BaseLLMWrapper):
        async def generate_async(self, messages, parameters=None, **kw):
            return self._create_llm_response("x" * 25, "m")

        def get_model_info(self):
            return {}

    w = W("n", None)
    assert w.config == {} and w._metadata == {}
    assert w.get_token_count("hello world") == 2 and w._messages_to_prompt([Msg("Hello"), "World"]) == "Hello\nWorld"
    w._update_stats(True, 1.0)
    w._update_stats(False, 2.0)
    assert w.get_stats()["avg_response_time"] == 1.5
    assert w.generate([]).content == "x" * 25
    r = w._create_llm_response("c", "m")
    assert r.metadata == {} and r.token_usage.total_tokens == 0
    assert asyncio.run(_collect(w)) == ["x" * 10, "x" * 10, "x" * 5]
    # Ordinary objects, as the original's tests expect: a method patched on the instance is
    # the one the wrapper's own code calls.
    async def patched(messages, parameters=None, **kw):
        return w._create_llm_response("patched", "m")

    w.generate_async = patched  # type: ignore[method-assign]
    assert w.generate([]).content == "patched"
    assert asyncio.run(_collect(w)) == ["patched"]


async def _collect(w):
    return [c async for c in w.stream_generate([])]


# -- behaviour the original's tests pin (issue 20, item 4) -------------------------------------


def test_stream_generate_with_plain_for(tgm, mock) -> None:
    """The older synchronous generator form: ``for`` drives the real stream chunk by chunk."""
    pm = PollingPoolManager(tgm)
    asyncio.run(pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon1"], "health_check_interval": 0}))
    chunks = list(PollingPoolWrapper("fast_pool", pm).stream_generate([Msg("hi")]))
    assert len(chunks) >= 2 and "".join(chunks).startswith("Hello from m-")
    group_chunks = list(TaskGroupWrapper("backup_group", tgm).stream_generate([Msg("hi")]))
    assert len(group_chunks) >= 2 and "".join(group_chunks).startswith("Hello from m-gpt35")
    assert mock.counters()["streams_completed"] == 2
    assert all(i.current_load == 0 for i in pm.get_pool("fast_pool").instances)


async def test_stream_generate_plain_for_inside_running_loop(pm, mock) -> None:
    w = PollingPoolWrapper("fast_pool", pm)
    chunks = list(w.stream_generate([Msg("hi")]))  # a worker thread streams; chunks arrive in order
    assert "".join(chunks).startswith("Hello from m-")
    for chunk in w.stream_generate_async([Msg("hi")]):  # stop early: the stream is cancelled
        assert chunk
        break
    assert all(i.current_load == 0 for i in pm.get_pool("fast_pool").instances)


async def test_pool_health_check_counts_instances(pm, mock) -> None:
    from echelon.compat import InstanceStatus

    pool = pm.get_pool("fast_pool")
    pool.instances[0].status = InstanceStatus.FAILED
    pool.instances[1].status = InstanceStatus.DEGRADED
    hc = await PollingPoolWrapper("fast_pool", pm).health_check()
    assert hc == {"healthy": False, "healthy_instances": 1, "total_instances": 3, "health_ratio": 1 / 3}

    class Broken:
        name = "broken"

        @property
        def instances(self):
            raise RuntimeError("pool is gone")

    class Manager:
        def get_pool(self, name):
            return Broken()

    assert (await PollingPoolWrapper("broken", Manager()).health_check()) == {"healthy": False, "error": "pool is gone"}


async def test_pool_counters_never_lose_a_success(pm, mock) -> None:
    """An instance whose counters are not numbers (a user object) still returns the answer."""
    pool = pm.get_pool("fast_pool")
    for inst in pool.instances:
        inst.success_count = None  # type: ignore[assignment]
    w = PollingPoolWrapper("fast_pool", pm)
    r = await w.generate_async([Msg("hi")])
    assert r.content.startswith("Hello from m-") and w._attempt_count == 1


def test_task_group_wrapper_estimates_usage_like_the_pool() -> None:
    w = TaskGroupWrapper("t", None)
    r = w._create_llm_response("x" * 80, "m")
    assert (r.token_usage.prompt_tokens, r.token_usage.completion_tokens, r.token_usage.total_tokens) == (20, 20, 40)
    assert PollingPoolWrapper("p", None)._create_llm_response("x" * 80, "m").token_usage == r.token_usage


def test_reset_all_stats_survives_a_raising_wrapper(tgm) -> None:
    class Bad:
        def reset_stats(self):
            raise RuntimeError("reset failed")

    f = LLMWrapperFactory(tgm)
    f._wrappers["bad"] = Bad()  # type: ignore[assignment]  (reset before the good one)
    good = f.create_task_group_wrapper("fast_group")
    good._update_stats(True, 1.0)
    f.reset_all_stats()
    assert good.get_stats()["total_requests"] == 0
