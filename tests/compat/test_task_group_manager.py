"""TaskGroupManager: reference parsing, models, fallback groups, registry YAML layout, engine."""

from __future__ import annotations

import pytest

from .helpers import Facade, calls, llm_config
from echelon.compat import (
    FileConfigLoader,
    PollingPool,
    TaskGroupManager,
    TaskGroupsConfig,
)
from echelon.compat.task_group_config import FallbackStrategy, RotationStrategy

OLD_STATUS = {"config_loaded", "task_groups_count", "polling_pools_count", "task_groups", "polling_pools", "global_fallback_enabled", "concurrency_control_enabled", "rate_limiting_enabled"}
HEAD_STATUS = {"loaded", "task_groups_count", "polling_pools_count", "has_global_fallback", "has_concurrency_control", "has_rate_limiting"}


def test_parse_group_reference() -> None:
    m = TaskGroupManager()
    assert m.parse_group_reference("a.b.c") == ("a", "b.c")
    assert m.parse_group_reference("fast_group") == ("fast_group", None)
    assert m.parse_group_reference("") == ("", None)


def test_registry_layout(yaml_dir) -> None:
    m = TaskGroupManager(FileConfigLoader(yaml_dir))
    assert m._config_base_path == "llms"
    assert m.list_task_groups() == ["fast_group", "fast_small_group"]  # disabled one skipped
    assert m.list_polling_pools() == ["fast_pool"]
    assert m.get_models_for_group("fast_group.echelon1") == ["openai-gpt4", "anthropic-claude-3-opus"]
    assert m.get_models_for_group("fast_group") == ["openai-gpt4", "anthropic-claude-3-opus", "openai-gpt4-turbo", "openai-gpt3.5-turbo"]
    assert m.get_models_for_group("nope") == [] and m.get_models_for_group("fast_group.nope") == []
    assert m.validate_group_reference("fast_small_group.translation") and not m.validate_group_reference("fast_group.echelon9")
    assert m.get_fallback_groups("fast_group.echelon1") == ["fast_group.echelon2"]
    assert m.get_fallback_groups("fast_group.echelon3") == [] and m.get_fallback_groups("unknown.echelon1") == []
    assert [e for e, _, _ in m.get_group_models_by_priority("fast_group")] == ["echelon1", "echelon2", "echelon3"]
    assert m.get_echelon_config("fast_small_group", "execute").function_calling == "required"
    assert set(m.get_config_status()) == OLD_STATUS
    cfg = m.load_config()
    assert cfg.global_fallback.enabled and cfg.concurrency_control.enabled and cfg["rate_limiting"].raw == {}
    fc = m.get_fallback_config("fast_group")
    assert fc["circuit_breaker"] == {"failure_threshold": 2, "recovery_time": 60, "half_open_requests": 1}
    assert fc["fallback_groups"] == ["fast_group.echelon2"] and fc["max_attempts"] == 3
    assert m.get_polling_pool_fallback_config("fast_pool") == {"strategy": "instance_rotation", "max_instance_attempts": 2}
    assert m.get_polling_pool_fallback_config("nope") == {} and m.get_fallback_config("nope") == {}


async def test_registry_layout_real_calls(yaml_dir, mock) -> None:
    m = TaskGroupManager(str(yaml_dir))  # a path works as well as a loader
    pool = PollingPool("fast_pool", m.get_polling_pool("fast_pool"), m)
    await pool.initialize()
    ids = [i.instance_id for i in pool.instances]
    assert len(ids) == len(set(ids)) == 4
    assert pool.instances[0].max_concurrency == 10  # echelon concurrency_limit applied
    for _ in range(4):
        await pool.call_llm("hi")
    assert calls(mock, "openai-gpt4") == 1 and calls(mock, "openai-gpt3.5-turbo") == 1
    await pool.shutdown()
    m.close()


def test_assigned_dataclass_config() -> None:
    m = TaskGroupManager(None)
    m._task_groups_config = TaskGroupsConfig.from_dict({
        "task_groups": {"g": {"echelon1": {"models": ["a"], "function_calling": "required"}, "description": "d"}},
        "polling_pools": {"p": {"task_groups": ["g"]}},
        "global_fallback": {"enabled": True}, "concurrency_control": {"enabled": False}, "rate_limiting": {"enabled": True},
    })
    g = m.get_task_group("g")
    assert g.description == "d" and g.fallback_strategy == FallbackStrategy.ECHELON_DOWN
    assert m.get_polling_pool("p").rotation_strategy == RotationStrategy.ROUND_ROBIN
    assert m.get_models_for_group("g") == ["a"] and m.get_models_for_group("x") == []
    assert g["echelon1"].function_calling == "required" and g.get("description") == "d"


def test_facade_style_rereads_and_head_status(mock) -> None:
    cfg = llm_config(mock)
    f = Facade(cfg)
    m = TaskGroupManager(f)
    assert set(m.get_config_status()) == HEAD_STATUS
    cfg["task_groups"]["new_group"] = {"echelons": {"echelon1": {"models": ["openai-gpt4"]}}}  # HEAD nested shape
    assert m.get_models_for_group("new_group.echelon1") == ["openai-gpt4"]
    m.reload_config()
    assert f.reloads == 1


async def test_unresolvable_model_is_left_out_and_named_by_the_call(mock) -> None:
    """The original's groups name models no provider defines: the router still builds (a
    warning), the other echelons serve, and a call to the echelon left empty fails with a typed
    error naming the missing model and where it was."""
    from echelon.compat import LLMCallError, TaskGroupWrapper, TaskGroupWrapperError

    cfg = llm_config(mock)
    cfg["task_groups"]["fast_group"]["echelon2"]["models"] = ["openai-gpt9"]
    m = TaskGroupManager(Facade(cfg))
    m.get_router()
    r = await TaskGroupWrapper("fast_group.echelon1", m).generate_async([{"role": "user", "content": "x"}])
    assert r.content.startswith("Hello from m-")
    with pytest.raises(TaskGroupWrapperError) as ei:
        await TaskGroupWrapper("fast_group.echelon2", m).generate_async([{"role": "user", "content": "x"}])
    assert isinstance(ei.value.__cause__, LLMCallError)
    msg = str(ei.value)
    assert "openai-gpt9" in msg and "fast_group.echelon2" in msg
    m.close()


async def test_provider_model_refs_resolve(mock) -> None:
    cfg = llm_config(mock)
    cfg["task_groups"]["direct_group"] = {"echelon1": {"models": ["mock:m-direct"]}}
    m = TaskGroupManager(Facade(cfg))
    pool = PollingPool("d", {"task_groups": ["direct_group.echelon1"], "health_check_interval": 0}, m)
    await pool.initialize()
    assert (await pool.call_llm("x")).startswith("Hello from m-direct")
    m.close()
