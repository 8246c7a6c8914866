"""Circuit breaker, EnhancedFallbackManager and the services FallbackManager (real calls)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from .helpers import calls
from echelon.compat import (
    CircuitBreaker,
    ConcurrencyAndRateLimitManager,
    ConcurrencyLevel,
    EnhancedFallbackManager,
    FallbackManager,
    LLMCallError,
    LLMError,
    LLMResponse,
    PollingPoolManager,
)

STATS_KEYS = {"total_attempts", "successful_attempts", "success_rate", "avg_response_time", "most_used_strategy", "strategy_distribution", "circuit_breakers"}
BREAKER_KEYS = {"state", "failure_count", "failure_threshold", "last_failure_time"}


def test_breaker_default_threshold() -> None:
    cb = CircuitBreaker()
    assert cb.can_execute() and cb.state == "CLOSED"
    cb.record_success()
    assert cb.state == "CLOSED"
    for _ in range(6):
        cb.record_failure()
    assert cb.state == "OPEN" and not cb.can_execute()


def test_breaker_half_open_admits_configured_probes() -> None:
    cb = CircuitBreaker(failure_threshold=2, recovery_time=0.0, half_open_requests=2)
    cb.record_failure()
    assert cb.state == "CLOSED"
    cb.record_failure()
    assert cb.state == "OPEN"
    assert cb.can_execute() and cb.state == "HALF_OPEN"
    assert cb.can_execute() and not cb.can_execute()  # only 2 probes at once
    cb.record_success()
    assert cb.state == "HALF_OPEN"
    cb.record_success()
    assert cb.state == "CLOSED" and cb.failure_count == 0


def test_breaker_half_open_failure_reopens() -> None:
    cb = CircuitBreaker(failure_threshold=3, recovery_time=60)
    for _ in range(3):
        cb.record_failure()
    assert not cb.can_execute()
    cb.last_failure_time = datetime.now() - timedelta(seconds=61)
    assert cb.can_execute() and cb.state == "HALF_OPEN"
    cb.record_failure()
    assert cb.state == "OPEN" and not cb.can_execute()


async def test_efm_walks_targets_with_real_calls(tgm, mock) -> None:
    mock.script("m-gpt4", fault="server_error", status=500)
    mock.script("m-opus", fault="server_error", status=500)
    mock.script("m-gpt4-turbo", fault="server_error", status=500)
    mock.script("m-gpt35", fault="server_error", status=500)
    efm = EnhancedFallbackManager(tgm)
    efm.retry_delay = 0.01
    # fast_group.echelon1 walks down to echelon2 inside the engine; backup_group is the next target.
    with pytest.raises(LLMError, match="所有降级尝试都失败了"):
        await efm.execute_with_fallback("fast_group.echelon1", ["backup_group.echelon1"], "hi")
    hist = efm.get_fallback_history()
    assert [a.target for a in hist] == ["fast_group.echelon1", "backup_group.echelon1"] and not any(a.success for a in hist)
    mock.script("m-gpt35", fault="ok")
    text = await efm.execute_with_fallback("backup_group.echelon1", [], "hi")
    assert text.startswith("Hello from m-gpt35")
    hist = efm.get_fallback_history()
    assert hist[-1].success  # successes are recorded too (§5.21)
    st = efm.get_statistics()
    assert set(st) == STATS_KEYS and st["success_rate"] == pytest.approx(1 / 3) and st["circuit_breakers"] == 2
    status = efm.get_circuit_breaker_status()
    assert set(status["fast_group.echelon1"]) == BREAKER_KEYS


async def test_efm_uses_configured_breaker_and_monkeypatched_target(tgm) -> None:
    efm = EnhancedFallbackManager(tgm)
    efm.retry_delay = 0
    cb = efm.get_circuit_breaker("fast_group.echelon1")
    assert (cb.failure_threshold, cb.recovery_time) == (2, 60)  # the group's config, not 5/60

    async def boom(target, prompt, **kw):
        raise RuntimeError(f"down: {target}")

    efm._execute_target = boom
    for _ in range(2):
        with pytest.raises(LLMError, match="降级尝试都失败了"):
            await efm.execute_with_fallback("fast_group.echelon1", [], "x")
    assert efm.get_circuit_breaker("fast_group.echelon1").state == "OPEN"
    with pytest.raises(LLMError, match="所有降级尝试都失败了"):  # skipped by the breaker: same message
        await efm.execute_with_fallback("fast_group.echelon1", [], "x")
    efm.reset_circuit_breaker("fast_group.echelon1")
    assert efm.get_circuit_breaker("fast_group.echelon1").state == "CLOSED"


async def test_efm_sleeps_retry_delay(tgm) -> None:
    import time

    efm = EnhancedFallbackManager(tgm)
    efm.retry_delay = 0.05
    seen = []

    async def target(t, prompt, **kw):
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise RuntimeError("first fails")
        return "ok"

    efm._execute_target = target
    assert await efm.execute_with_fallback("a", ["b"], "x") == "ok"
    assert seen[1] - seen[0] >= 0.05


async def test_efm_task_group_fallback_and_pool_target(tgm, mock) -> None:
    pm = PollingPoolManager(tgm)
    await pm.create_pool("fast_pool", tgm.get_polling_pool("fast_pool"))
    efm = EnhancedFallbackManager(tgm, pm)
    assert (await efm.execute_with_fallback("fast_pool", [], "x")).startswith("Hello from")
    assert pm.get_pool("fast_pool").stats["successful_requests"] == 1
    assert (await efm.execute_with_task_group_fallback("fast_group.echelon1", "x")).startswith("Hello from")
    await pm.shutdown_all()


async def test_services_fallback_manager(tgm, mock) -> None:
    mock.script("m-gpt35", fault="server_error", status=500)
    fm = FallbackManager(task_group_manager=tgm)
    r = await fm.execute_with_fallback(primary_target="backup_group.echelon1", fallback_groups=["fast_group.echelon1"], prompt="p", parameters={"max_tokens": 5})
    assert isinstance(r, LLMResponse) and r.content.startswith("Hello from") and r.token_usage.total_tokens > 0
    s = fm.get_services_stats()
    assert s["total_requests"] == 1 and s["successful_requests"] == 1 and s["group_fallbacks"] == 1
    mock.script("m-gpt35", fault="ok")
    await fm.execute_with_fallback(primary_target="backup_group.echelon1", fallback_groups=[], prompt="p")
    assert fm.get_services_stats()["group_fallbacks"] == 1  # no fallback happened: not counted (§5.22)
    stats = fm.get_stats()
    assert stats["total_sessions"] == 2 and stats["successful_sessions"] == 2 and "success_rate" in stats
    fm.reset_stats()
    assert fm.get_stats()["total_requests"] == 0


async def test_concurrency_manager_check_and_acquire() -> None:
    m = ConcurrencyAndRateLimitManager({"enabled": True, "levels": [{"group_level": {"limit": 1, "queue_size": 10}}]}, {"enabled": False})
    assert await m.check_and_acquire(ConcurrencyLevel.GROUP, "test_group", timeout=1.0)
    assert not await m.check_and_acquire(ConcurrencyLevel.GROUP, "test_group", timeout=0.02)
    m.release(ConcurrencyLevel.GROUP, "test_group")
    assert set(m.get_status()) == {"concurrency", "rate_limit"}
