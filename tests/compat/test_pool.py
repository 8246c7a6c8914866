"""Polling pools against a real mock provider on loopback."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from .helpers import Facade, calls, llm_config
from echelon.compat import (
    InstanceStatus,
    LeastRecentlyUsedScheduler,
    LLMError,
    LLMInstance,
    PollingPool,
    PollingPoolManager,
    RoundRobinScheduler,
    TaskGroupManager,
    WeightedScheduler,
)

STATUS_KEYS = {"name", "total_instances", "healthy_instances", "degraded_instances", "failed_instances", "stats", "concurrency_status"}
STATS_KEYS = {"total_requests", "successful_requests", "failed_requests", "avg_response_time"}


async def make_pool(tgm, **cfg):
    base = {"task_groups": ["fast_group.echelon1"], "rotation_strategy": "round_robin", "health_check_interval": 0}
    base.update(cfg)
    pool = PollingPool("p", base, tgm)
    await pool.initialize()
    return pool


async def test_instances_ids_and_round_robin_calls(tgm, mock) -> None:
    pool = await make_pool(tgm)
    assert [i.instance_id for i in pool.instances] == [
        "fast_group.echelon1_openai-gpt4", "fast_group.echelon1_anthropic-claude-3-opus", "fast_group.echelon1_openai-gpt4-turbo"]
    assert {i.group_name for i in pool.instances} == {"fast_group"} and {i.echelon for i in pool.instances} == {"echelon1"}
    for _ in range(6):
        text = await pool.call_llm("hello")
        assert text.startswith("Hello from m-")
    assert [calls(mock, m) for m in ("openai-gpt4", "anthropic-claude-3-opus", "openai-gpt4-turbo")] == [2, 2, 2]
    st = pool.get_status()
    assert set(st) == STATUS_KEYS and set(st["stats"]) == STATS_KEYS
    assert st["stats"]["total_requests"] == 6 and st["stats"]["successful_requests"] == 6 and st["stats"]["avg_response_time"] > 0
    assert all(i.success_count == 2 and i.last_used is not None and i.avg_response_time > 0 for i in pool.instances)
    assert set(st["concurrency_status"]) == {"concurrency", "rate_limit"}
    await pool.shutdown()


async def test_call_llm_failure_updates_stats_and_raises_llm_error(tgm, mock) -> None:
    mock.script("m-gpt4", fault="server_error", status=500)
    pool = await make_pool(tgm)
    with pytest.raises(LLMError):
        await pool.call_llm("x")  # round robin: the first instance is m-gpt4
    assert pool.stats["failed_requests"] == 1 and pool.instances[0].failure_count == 1
    assert all(i.current_load == 0 for i in pool.instances)


async def test_no_instance_raises(tgm) -> None:
    pool = await make_pool(tgm)
    for i in pool.instances:
        i.status = InstanceStatus.FAILED
    with pytest.raises(LLMError, match="没有可用的LLM实例"):
        await pool.call_llm("x")


async def test_get_and_release_load_accounting(tgm) -> None:
    pool = await make_pool(tgm)
    got = [await pool.get_instance() for _ in range(6)]
    assert [g.current_load for g in pool.instances] == [2, 2, 2]
    for g in got:
        pool.release_instance(g)
    assert [g.current_load for g in pool.instances] == [0, 0, 0]
    pool.release_instance(got[0])
    assert got[0].current_load == 0  # never below zero


async def test_lru_spreads_concurrent_selection(tgm) -> None:
    pool = await make_pool(tgm, rotation_strategy="least_recently_used")
    assert isinstance(pool.scheduler, LeastRecentlyUsedScheduler)
    got = [await pool.get_instance() for _ in range(3)]  # nothing completed yet
    assert len({g.instance_id for g in got}) == 3


async def test_weighted_strategy_and_formula(tgm, mock) -> None:
    pool = await make_pool(tgm, rotation_strategy="weighted")
    assert isinstance(pool.scheduler, WeightedScheduler)
    a = LLMInstance("a", "m", "g", "e", avg_response_time=0.5, success_count=3, failure_count=1, current_load=5, max_concurrency=10, weight=2.0)
    assert pool.scheduler.calculate_weight(a) == pytest.approx(2.0 * 2.0 * 0.75 * 0.5)
    b = LLMInstance("b", "m", "g", "e", current_load=9, max_concurrency=10, success_count=0, failure_count=5)
    assert pool.scheduler.calculate_weight(b) == 0.1
    for _ in range(4):
        await pool.call_llm("w")
    assert pool.stats["successful_requests"] == 4


def test_unknown_rotation_strategy_is_value_error(tgm) -> None:
    with pytest.raises(ValueError):
        PollingPool("p", {"rotation_strategy": "bogus"}, tgm)


def test_round_robin_index_on_filtered_list() -> None:
    s = RoundRobinScheduler()
    xs = [LLMInstance(str(i), "m", "g", "e") for i in range(3)]
    assert [s.select_instance(xs).instance_id for _ in range(4)] == ["0", "1", "2", "0"]
    xs[1].current_load = xs[1].max_concurrency
    assert s.select_instance(xs).instance_id == "0"  # index 4 applied to the 2 available
    assert s.select_instance(xs).instance_id == "2"


def test_update_performance_formula() -> None:
    i = LLMInstance("a", "m", "g", "e")
    i.update_performance(1.0, True)
    i.update_performance(0, False)
    i.update_performance(2.0, True)
    assert i.success_count == 2 and i.failure_count == 1
    assert i.avg_response_time == pytest.approx((1.0 * 2 + 2.0) / 3)


async def test_manager_create_get_status_shutdown(tgm) -> None:
    pm = PollingPoolManager(tgm)
    pool = await pm.create_pool("fast_pool", tgm.get_polling_pool("fast_pool"))
    assert pm.get_pool("fast_pool") is pool and pm.get_pool("nope") is None
    assert set(pm.list_all_status()) == {"fast_pool"} and set(pm.get_all_status()["fast_pool"]) == STATUS_KEYS
    task = pool._health_task
    await pm.shutdown_all()
    assert pm.pools == {} and task.done()


async def test_health_checker_probes_and_recovers(tgm, mock) -> None:
    pool = await make_pool(tgm)
    hc = pool.health_checker
    hc.failure_threshold, hc.recovery_time = 2, 0.05
    inst = pool.instances[0]
    mock.script("_health", fault="down")
    await hc._check_instance_health(inst)
    assert inst.status == InstanceStatus.DEGRADED
    await hc._check_instance_health(inst)
    assert inst.status == InstanceStatus.FAILED
    mock.script("_health", fault="ok")
    await asyncio.sleep(0.06)
    await hc._check_instance_health(inst)
    assert inst.status == InstanceStatus.RECOVERING
    await hc._check_instance_health(inst)
    assert inst.status == InstanceStatus.HEALTHY
    assert mock.counters()["probes"] >= 4
