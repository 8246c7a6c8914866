"""Model-level fallback, the services FallbackManager surface, retry, the connection pool and
FallbackClientWrapper: real calls through the engine to the mock provider."""

from __future__ import annotations

from typing import Any, List

import pytest

from echelon.compat import (
    EngineClientFactory,
    FallbackClientWrapper,
    FallbackConfig,
    FallbackManager,
    HTTPConnectionPool,
    IClientFactory,
    IFallbackLogger,
    LLMCallError,
    LLMResponse,
    RetryConfig,
    RetryManager,
)
from echelon.compat.fallback_strategies import (
    ErrorTypeBasedStrategy,
    PriorityFallbackStrategy,
    RandomFallbackStrategy,
    SequentialFallbackStrategy,
    create_fallback_strategy,
)
from echelon.compat.retry import AdaptiveRetryStrategy, ErrorTypeRetryCondition, create_retry_strategy

from .helpers import calls


class Msg:
    def __init__(self, content: str) -> None:
        self.content = content
        self.type = "human"


class Log(IFallbackLogger):
    def __init__(self) -> None:
        self.events: List[tuple] = []

    def log_fallback_attempt(self, primary: str, fallback: str, error: Exception, attempt: int) -> None:
        self.events.append(("attempt", primary, fallback, attempt))

    def log_fallback_success(self, primary: str, fallback: str, response: Any, attempt: int) -> None:
        self.events.append(("success", primary, fallback, attempt))

    def log_fallback_failure(self, primary: str, error: Exception, total: int) -> None:
        self.events.append(("failure", primary, total))


class CountingFactory(IClientFactory):
    """Engine-backed clients, counting which models were asked for."""

    def __init__(self, tgm: Any) -> None:
        self.inner = EngineClientFactory(tgm)
        self.asked: List[str] = []

    def create_client(self, model_name: str) -> Any:
        self.asked.append(model_name)
        return self.inner.create_client(model_name)

    def get_available_models(self) -> List[str]:
        return self.inner.get_available_models()


def quick(**kw: Any) -> FallbackConfig:
    return FallbackConfig(base_delay=0, jitter=False, **kw)


async def test_model_level_fallback_through_the_engine(tgm, mock) -> None:
    mock.script("m-gpt4", fault="server_error", status=500)
    log = Log()
    fm = FallbackManager(quick(fallback_models=["anthropic-claude-3-opus", "openai-gpt3.5-turbo"]), task_group_manager=tgm, logger=log)
    r = await fm.generate_with_fallback([Msg("hi")], primary_model="openai-gpt4")
    assert isinstance(r, LLMResponse) and r.content.startswith("Hello from m-opus") and r.model == "anthropic-claude-3-opus"
    assert calls(mock, "openai-gpt4") == 1 and calls(mock, "anthropic-claude-3-opus") == 1
    s = fm.get_sessions()[-1]
    assert s.success and s.get_total_attempts() == 2 and s.served_by() == "anthropic-claude-3-opus"
    assert log.events == [("success", "openai-gpt4", "anthropic-claude-3-opus", 2)]
    assert fm.get_stats()["fallback_usage"] == 1 and fm.get_most_used_models() == [("anthropic-claude-3-opus", 1)]
    assert fm.get_error_summary() == [("LLMServiceUnavailableError", 1)]

    mock.script("m-opus", fault="server_error", status=500)
    mock.script("m-gpt35", fault="server_error", status=500)
    with pytest.raises(LLMCallError) as ei:
        await fm.generate_with_fallback([Msg("hi")], primary_model="openai-gpt4")
    assert ei.value.__cause__ is not None  # the engine's error
    assert fm.get_failed_sessions()[-1].get_total_attempts() == 3 and log.events[-1] == ("failure", "openai-gpt4", 3)
    assert len(fm.get_successful_sessions()) == 1


async def test_client_factory_is_honoured_at_both_levels(tgm, mock) -> None:
    factory = CountingFactory(tgm)
    log = Log()
    fm = FallbackManager(quick(fallback_models=["openai-gpt3.5-turbo"]), client_factory=factory, logger=log, task_group_manager=tgm)
    r = await fm.generate_with_fallback([Msg("hi")], primary_model="openai-gpt4")
    assert r.content.startswith("Hello from m-gpt4") and factory.asked == ["openai-gpt4"]

    for wire in ("m-gpt4", "m-opus", "m-gpt4-turbo"):
        mock.script(wire, fault="server_error", status=500)
    r = await fm.execute_with_fallback(primary_target="fast_group.echelon1", fallback_groups=["backup_group.echelon1"], prompt="hi")
    assert r.content.startswith("Hello from m-gpt35")
    assert factory.asked[1:] == ["openai-gpt4", "anthropic-claude-3-opus", "openai-gpt4-turbo", "openai-gpt3.5-turbo"]
    assert fm.get_services_stats() == {"total_requests": 1, "successful_requests": 1, "failed_requests": 0, "group_fallbacks": 1, "pool_fallbacks": 0}
    assert ("success", "fast_group.echelon1", "backup_group.echelon1", 4) in log.events


def test_config_summary_export_import() -> None:
    fm = FallbackManager(FallbackConfig(max_attempts=3, fallback_models=["a"], error_mappings={"timeout": ["b"]}))
    assert fm.get_config_summary() == {
        "enabled": True, "max_attempts": 3, "fallback_models_count": 1, "strategy_type": "sequential", "base_delay": 1.0,
        "max_delay": 60.0, "exponential_base": 2.0, "jitter": True, "error_mappings_count": 1, "provider_config_keys": [],
    }
    exported = fm.export_config()
    assert exported["fallback_models"] == ["a"]
    fm.import_config({"enabled": False, "max_attempts": 5, "fallback_models": ["c"]})
    assert not fm.is_enabled() and fm.get_config_summary()["max_attempts"] == 5
    with pytest.raises(ValueError, match="unknown key"):
        fm.import_config({"max_tries": 2})
    with pytest.raises(TypeError, match="max_attempts"):
        FallbackConfig(max_attempts="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        FallbackConfig(max_attempts=0)
    assert FallbackManager().get_config_summary()["enabled"] is False  # constructs with no arguments


def test_model_level_strategies() -> None:
    cfg = FallbackConfig(max_attempts=3, fallback_models=["m2", "m3"])
    seq = create_fallback_strategy(cfg)
    assert isinstance(seq, SequentialFallbackStrategy)
    assert [seq.get_fallback_target(Exception(), n) for n in range(4)] == [None, "m2", "m3", None]
    assert seq.should_fallback(Exception(), 2) and not seq.should_fallback(Exception(), 3)
    pri = PriorityFallbackStrategy(cfg, {"RateLimitError": ["fast"]})
    assert pri.get_fallback_target(Exception("rate limit exceeded"), 1) == "fast" and pri.get_fallback_target(ValueError("x"), 1) == "m2"
    rnd = RandomFallbackStrategy(FallbackConfig(max_attempts=4, fallback_models=["a", "b", "c"]))
    assert {rnd.get_fallback_target(Exception(), n) for n in (1, 2, 3)} == {"a", "b", "c"}
    assert not rnd.should_fallback(Exception(), 1)  # every model used
    et = ErrorTypeBasedStrategy(cfg, {"TimeoutError": ["t1"]})
    assert et.get_fallback_target(TimeoutError(), 1) == "t1" and et.get_fallback_target(KeyError(), 1) == "m2"
    assert et.get_fallback_delay(Exception("rate limit"), 1) > et.get_fallback_delay(TimeoutError(), 1) > et.get_fallback_delay(KeyError(), 1)
    with pytest.raises(ValueError, match="不支持的降级策略类型"):
        create_fallback_strategy(FallbackConfig(strategy_type="nope"))


async def test_retry_manager_retries_an_engine_call(tgm, mock) -> None:
    mock.script("m-gpt35", {"steps": [{"fault": "server_error", "status": 500}]})
    client = EngineClientFactory(tgm).create_client("openai-gpt3.5-turbo")
    rm = RetryManager(RetryConfig(max_attempts=3, base_delay=0, jitter=False), logger=None)
    r = await rm.execute_with_retry_async(client.generate, [Msg("hi")])
    assert r.content.startswith("Hello from m-gpt35") and calls(mock, "openai-gpt3.5-turbo") == 2
    s = rm.get_sessions()[-1]
    assert s.success and s.get_total_attempts() == 2 and rm.get_stats()["successful_sessions"] == 1
    with pytest.raises(ValueError, match="不支持的重试策略类型"):
        create_retry_strategy(RetryConfig(strategy_type="nope"))
    ad = AdaptiveRetryStrategy(RetryConfig(jitter=False))
    assert ad.get_retry_delay(Exception("rate limit"), 1) > ad.get_retry_delay(Exception("timeout"), 1) > ad.get_retry_delay(Exception("x"), 1)
    cond = ErrorTypeRetryCondition(["Timeout"], ["auth"])
    assert cond.should_retry(TimeoutError("t"), 1) and not cond.should_retry(Exception("auth failed"), 1)


def test_retry_decorator_sync_and_limits() -> None:
    rm = RetryManager(RetryConfig(max_attempts=2, base_delay=0, jitter=False))
    seen: List[int] = []

    @rm.retry
    def flaky() -> str:
        seen.append(1)
        if len(seen) < 2:
            raise RuntimeError("once")
        return "ok"

    assert flaky() == "ok" and len(seen) == 2
    with pytest.raises(ValueError, match="max_attempts"):
        RetryConfig(max_attempts=0)


async def test_connection_pool_reuses_and_bounds_sessions() -> None:
    made: List[Any] = []

    class Session:
        closed = False

        async def close(self) -> None:
            self.closed = True

    def factory(url: str) -> Session:
        s = Session()
        made.append(s)
        return s

    pool = HTTPConnectionPool(max_connections=1, max_keepalive=1, timeout=0.05, session_factory=factory)
    s1 = await pool.acquire("http://a")
    with pytest.raises(TimeoutError, match="max_connections=1"):
        await pool.acquire("http://a")  # the one connection is out
    await pool.release("http://a", s1)
    assert await pool.acquire("http://a") is s1
    st = pool.get_stats()
    assert (st["created_connections"], st["connection_reuses"], st["total_requests"]) == (1, 1, 2)
    await pool.close_all()
    assert made[0].closed
    with pytest.raises(ValueError, match="max_connections"):
        HTTPConnectionPool(max_connections=0)


async def test_fallback_client_wrapper_model_and_group_modes(tgm, mock) -> None:
    primary = EngineClientFactory(tgm).create_client("openai-gpt4")
    mock.script("m-gpt4", fault="server_error", status=500)
    w = FallbackClientWrapper(primary, ["openai-gpt3.5-turbo"], task_group_manager=tgm, base_delay=0, jitter=False)
    r = await w.generate_async([Msg("hi")])
    assert r.content.startswith("Hello from m-gpt35") and w.get_fallback_stats()["fallback_usage"] == 1
    assert w.get_model_info()["use_enhanced_fallback"] is False and w.is_fallback_enabled()
    g = FallbackClientWrapper(primary, [], use_enhanced_fallback=True, task_group_manager=tgm)
    r = await g.generate_async([Msg("hi")], primary_target="fast_group.echelon1", fallback_groups=["backup_group.echelon1"])
    assert r.content.startswith("Hello from m-") and g.get_fallback_stats()["total_attempts"] >= 1
    chunks = list(w.stream_generate([Msg("hi")]))  # primary stream fails before its first chunk
    assert "".join(chunks).startswith("Hello from m-gpt35")
