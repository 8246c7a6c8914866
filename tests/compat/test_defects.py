"""One test per defect of the original (reference §5) that echelon.compat fixes."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import Facade, calls, llm_config
from echelon.compat import (
    ConcurrencyAndRateLimitManager,
    ConcurrencyController,
    ConcurrencyLevel,
    EnhancedFallbackManager,
    FallbackConfig,
    FallbackManager,
    InstanceStatus,
    LLMCallError,
    PollingPool,
    PollingPoolManager,
    TaskGroupManager,
)
from echelon.compat.wrappers import PollingPoolWrapper


def test_d01_every_module_imports_and_exports_what_it_lists() -> None:
    import importlib
    import pkgutil

    import echelon.compat as compat

    names = [m.name for m in pkgutil.walk_packages(compat.__path__, "echelon.compat.")]
    assert "echelon.compat.polling_pool" in names and "echelon.compat.wrappers.task_group_wrapper" in names
    for name in names:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            assert hasattr(module, public), f"{name}.__all__ lists {public!r}, which it does not define"


def test_d02_fallback_manager_constructs_without_arguments() -> None:
    fm = FallbackManager()
    assert fm.get_stats()["total_requests"] == 0


def test_d04_registry_and_top_level_echelons_load(yaml_dir) -> None:
    m = TaskGroupManager(str(yaml_dir))
    assert m.get_models_for_group("fast_small_group.translation") == ["openai-gpt3.5-turbo"]


async def test_d05_d07_pool_wrapper_calls_without_an_injected_client(tgm, mock) -> None:
    pm = PollingPoolManager(tgm)
    await pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon2"], "health_check_interval": 0})
    assert pm.get_pool("fast_pool").instances[0].config["model"] == "openai-gpt3.5-turbo"
    r = await PollingPoolWrapper("fast_pool", pm).generate_async(["hi"])
    assert r.content.startswith("Hello from m-gpt35") and calls(mock, "openai-gpt3.5-turbo") == 1


async def test_d08_probe_failures_do_not_wipe_request_failures(tgm, mock) -> None:
    pool = PollingPool("p", {"task_groups": ["fast_group.echelon2"], "health_check_interval": 0}, tgm)
    await pool.initialize()
    inst = pool.instances[0]
    inst.failure_count = 4
    await pool.health_checker._check_instance_health(inst)
    assert inst.failure_count == 4 and inst.status == InstanceStatus.HEALTHY
    mock.script("_health", fault="down")
    await pool.health_checker._check_instance_health(inst)
    assert inst.status == InstanceStatus.DEGRADED  # a real probe can fail


async def test_d11_pool_rate_limit_and_echelon_limits_are_consulted(tgm) -> None:
    pool = PollingPool("p", {"task_groups": ["fast_group.echelon1"], "health_check_interval": 0,
                             "rate_limiting": {"enabled": True, "algorithm": "token_bucket", "token_bucket": {"bucket_size": 2, "refill_rate": 0.001}}}, tgm)
    await pool.initialize()
    a, b = await pool.get_instance(), await pool.get_instance()
    assert a is not None and b is not None
    assert await pool.get_instance() is None
    assert sum(i.current_load for i in pool.instances) == 2


async def test_d11_wrapper_reads_pool_max_instance_attempts(tgm, mock) -> None:
    for w in ("m-gpt4", "m-opus", "m-gpt4-turbo"):
        mock.script(w, fault="server_error", status=500)
    pm = PollingPoolManager(tgm)
    await pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon1"], "health_check_interval": 0, "fallback_config": {"max_instance_attempts": 3}})
    with pytest.raises(Exception, match="尝试次数: 3"):
        await PollingPoolWrapper("fast_pool", pm).generate_async(["x"])


async def test_d12_configured_levels_apply_and_acquire_waits() -> None:
    cc = ConcurrencyController({"levels": [{"group_level": {"limit": 1, "queue_size": 5}}]})
    assert await cc.acquire_permission(ConcurrencyLevel.GROUP, "g", timeout=0)
    assert not cc.can_execute(ConcurrencyLevel.GROUP, "g")  # the YAML level matched "g"
    m = ConcurrencyAndRateLimitManager({}, {"enabled": False})
    m.concurrency_controller = cc

    async def release_soon():
        await asyncio.sleep(0.03)
        cc.release_permission(ConcurrencyLevel.GROUP, "g")

    t = asyncio.create_task(release_soon())
    assert await m.check_and_acquire(ConcurrencyLevel.GROUP, "g", timeout=2.0)  # waited, not refused
    await t


def test_d13_breaker_settings_from_config(tgm) -> None:
    assert EnhancedFallbackManager(tgm).get_circuit_breaker("fast_group.echelon1").failure_threshold == 2


async def test_d14_fallback_groups_argument_is_honoured(tgm, mock) -> None:
    mock.script("m-gpt35", fault="server_error", status=500)
    fm = FallbackManager(task_group_manager=tgm)
    r = await fm.execute_with_fallback(primary_target="backup_group.echelon1", fallback_groups=["fast_group.echelon1"], prompt="x")
    assert r.model in ("openai-gpt4", "anthropic-claude-3-opus", "openai-gpt4-turbo")


async def test_d15_lru_stamps_at_selection(tgm) -> None:
    pool = PollingPool("p", {"task_groups": ["fast_group.echelon1"], "rotation_strategy": "least_recently_used", "health_check_interval": 0}, tgm)
    await pool.initialize()
    first = await pool.get_instance()
    second = await pool.get_instance()
    assert first is not second


async def test_d16_wrapper_traffic_updates_pool_stats(tgm) -> None:
    pm = PollingPoolManager(tgm)
    await pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon2"], "health_check_interval": 0})
    r = await PollingPoolWrapper("fast_pool", pm).generate_async(["x"])
    pool = pm.get_pool("fast_pool")
    assert pool.stats["successful_requests"] == 1 and pool.instances[0].last_used is not None
    assert not r.content.startswith("Response(") and not r.content.startswith("LLMResponse(")


def test_d17_fallback_groups_exclude_self_and_any_echelon_name(mock) -> None:
    cfg = llm_config(mock)
    cfg["task_groups"]["fast_group"]["fallback_config"] = {"fallback_groups": ["fast_group.echelon1", "fast_group.echelon2", "backup_group"]}
    cfg["task_groups"]["odd"] = {"echelon_1": {"models": ["openai-gpt4"], "priority": 1}, "echelon_2": {"models": ["openai-gpt4"], "priority": 2}}
    m = TaskGroupManager(Facade(cfg))
    assert m.get_fallback_groups("fast_group.echelon2") == ["backup_group"]
    assert m.get_fallback_groups("odd.echelon_1") == ["odd.echelon_2"]  # the original raised ValueError


async def test_d19_bare_group_ids_do_not_collide(mock) -> None:
    cfg = llm_config(mock)
    cfg["task_groups"]["dup"] = {"translation": {"models": ["openai-gpt4"]}, "analysis": {"models": ["openai-gpt4"]}}
    m = TaskGroupManager(Facade(cfg))
    pool = PollingPool("p", {"task_groups": ["dup"], "health_check_interval": 0}, m)
    await pool.initialize()
    assert [(i.instance_id, i.echelon) for i in pool.instances] == [("dup.translation_openai-gpt4", "translation"), ("dup.analysis_openai-gpt4", "analysis")]
    m.close()


async def test_d20_replacing_and_shutting_down_cancels_health_task(tgm) -> None:
    pm = PollingPoolManager(tgm)
    old = await pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon2"], "health_check_interval": 30})
    old_task = old._health_task
    await pm.create_pool("fast_pool", {"task_groups": ["fast_group.echelon2"], "health_check_interval": 30})
    assert old_task.done()
    new_task = pm.get_pool("fast_pool")._health_task
    await pm.shutdown_all()
    assert new_task.done()


async def test_d21_successes_count_in_statistics(tgm) -> None:
    efm = EnhancedFallbackManager(tgm)
    await efm.execute_with_fallback("backup_group.echelon1", [], "x")
    assert efm.get_statistics()["success_rate"] == 1.0


async def test_d22_errors_wrapped_once(tgm, mock) -> None:
    mock.script("m-gpt35", fault="server_error", status=500)
    fm = FallbackManager(task_group_manager=tgm)
    with pytest.raises(LLMCallError) as ei:
        await fm.execute_with_fallback(primary_target="backup_group.echelon1", fallback_groups=[], prompt="x")
    assert str(ei.value).count("降级执行失败") == 1
    assert fm.get_services_stats()["group_fallbacks"] == 0


def test_d23_sequential_attempt_zero_is_primary() -> None:
    c = FallbackConfig(fallback_models=["a", "b"])
    assert c.get_fallback_target(None, 0) is None and c.get_fallback_target(None, 1) == "a" and c.get_fallback_target(None, 2) == "b"
