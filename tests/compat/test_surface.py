"""Every contract name importable from its module; signatures and dict keys as in the contract."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = {
    "echelon.compat.polling_pool": ["InstanceStatus", "RotationStrategy", "LLMInstance", "Scheduler", "RoundRobinScheduler", "LeastRecentlyUsedScheduler", "WeightedScheduler", "HealthChecker", "PollingPool", "PollingPoolManager"],
    "echelon.compat.task_group_manager": ["TaskGroupManager"],
    "echelon.compat.concurrency_controller": ["ConcurrencyLevel", "ConcurrencyLimit", "ConcurrencyController", "RateLimiter", "ConcurrencyAndRateLimitManager"],
    "echelon.compat.enhanced_fallback_manager": ["CircuitBreaker", "FallbackStrategy", "FallbackAttempt", "EnhancedFallbackManager", "FallbackConfigManager"],
    "echelon.compat.wrappers": ["BaseLLMWrapper", "PollingPoolWrapper", "TaskGroupWrapper", "LLMWrapperFactory", "WrapperError", "LLMWrapperError", "TaskGroupWrapperError", "PollingPoolWrapperError", "WrapperFactoryError", "WrapperConfigError", "WrapperExecutionError"],
    "echelon.compat.wrappers.base_wrapper": ["BaseLLMWrapper"],
    "echelon.compat.wrappers.polling_pool_wrapper": ["PollingPoolWrapper"],
    "echelon.compat.wrappers.task_group_wrapper": ["TaskGroupWrapper"],
    "echelon.compat.wrappers.wrapper_factory": ["LLMWrapperFactory"],
    "echelon.compat.wrappers.exceptions": ["WrapperError", "TaskGroupWrapperError", "PollingPoolWrapperError", "WrapperFactoryError", "WrapperConfigError", "WrapperExecutionError"],
    "echelon.compat.exceptions": ["LLMError", "LLMCallError", "LLMTimeoutError", "LLMRateLimitError", "LLMAuthenticationError", "LLMModelNotFoundError", "LLMTokenLimitError", "LLMContentFilterError", "LLMInvalidRequestError", "LLMServiceUnavailableError", "LLMClientCreationError", "UnsupportedModelTypeError", "LLMConfigurationError", "LLMFallbackError", "LLMWrapperError"],
    "echelon.compat.models": ["LLMResponse", "TokenUsage"],
    "echelon.compat.task_group_config": ["TaskGroupsConfig", "TaskGroupConfig", "EchelonConfig", "FallbackStrategy", "RotationStrategy", "RateLimitingAlgorithm", "CircuitBreakerConfig", "ThinkingConfig", "FallbackConfig", "RateLimitingConfig", "PollingPoolFallbackConfig", "PollingPoolConfig", "ConcurrencyControlConfig", "GlobalFallbackConfig"],
    "echelon.compat.interfaces": ["IPollingPoolManager", "ITaskGroupManager", "IFallbackManager", "ILLMClient", "ILLMClientFactory", "IClientFactory", "IFallbackStrategy", "IFallbackLogger", "IRetryStrategy", "IRetryLogger", "IRetryCondition", "IRetryDelayCalculator", "IRetryContext"],
    "echelon.compat.fallback_manager": ["FallbackManager", "FallbackConfig", "create_fallback_manager", "DefaultFallbackLogger", "LoggerAdapter", "FallbackConfigurationManager", "FallbackSessionManager", "FallbackStatistics", "FallbackStrategyManager", "FallbackExecutor", "FallbackOrchestrator", "FallbackTracker", "FallbackEngine", "GroupBasedFallbackStrategy", "PollingPoolFallbackStrategy", "FallbackSession", "FallbackAttempt", "IClientFactory", "IFallbackLogger"],
    "echelon.compat.fallback_config": ["FallbackConfig", "FallbackAttempt", "FallbackSession", "FallbackStats", "FallbackStrategy"],
    "echelon.compat.fallback_strategies": ["SequentialFallbackStrategy", "PriorityFallbackStrategy", "RandomFallbackStrategy", "ErrorTypeBasedStrategy", "ParallelFallbackStrategy", "ConditionalFallbackStrategy", "ConditionalFallback", "create_fallback_strategy"],
    "echelon.compat.retry": ["RetryManager", "RetryConfig", "RetryAttempt", "RetrySession", "RetryStats", "RetryStrategy", "DefaultRetryLogger", "ExponentialBackoffStrategy", "LinearBackoffStrategy", "FixedDelayStrategy", "AdaptiveRetryStrategy", "ConditionalRetryStrategy", "StatusCodeRetryCondition", "ErrorTypeRetryCondition", "create_retry_strategy", "get_global_retry_manager", "set_global_retry_manager", "retry", "RetryExecutor", "IRetryLogger", "IRetryCondition"],
    "echelon.compat.connection_pool": ["HTTPConnectionPool", "ConnectionPoolFactory", "ConnectionPoolManager", "IConnectionPool", "connection_pool_manager"],
    "echelon.compat.fallback_client": ["FallbackClientWrapper"],
    "echelon.compat.config_loader": ["FileConfigLoader", "IConfigLoader"],
    "echelon.compat.clients": ["EngineClient", "EngineClientFactory"],
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_names_importable(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in MODULES[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_package_reexports_everything() -> None:
    import echelon.compat as c

    for n in c.__all__:
        assert hasattr(c, n), n
    assert c.WrapperError is c.LLMWrapperError


def sig(obj: object) -> str:
    """The signature without annotations: names, kinds and defaults are the contract."""
    s = inspect.signature(obj)  # type: ignore[arg-type]
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in s.parameters.values()]
    return str(s.replace(parameters=bare, return_annotation=inspect.Signature.empty))


def test_signatures_match_contract() -> None:
    from echelon.compat import concurrency_controller as cc
    from echelon.compat import enhanced_fallback_manager as efm
    from echelon.compat import fallback_manager as fm
    from echelon.compat import polling_pool as pp
    from echelon.compat import wrappers as w

    assert sig(pp.PollingPool) == "(name, config, task_group_manager)"
    assert sig(pp.PollingPool.call_llm) == "(self, prompt, **kwargs)"
    assert sig(pp.PollingPool.release_instance) == "(self, instance)"
    assert sig(pp.PollingPoolManager) == "(task_group_manager)"
    assert sig(pp.PollingPoolManager.create_pool) == "(self, name, config)"
    assert sig(pp.HealthChecker) == "(check_interval=30)"
    assert list(inspect.signature(pp.LLMInstance).parameters)[:14] == [
        "instance_id", "model_name", "group_name", "echelon", "client", "status", "last_health_check", "failure_count",
        "success_count", "avg_response_time", "current_load", "max_concurrency", "weight", "last_used"]
    assert sig(pp.LLMInstance.update_performance) == "(self, response_time, success)"
    assert sig(efm.CircuitBreaker) == "(failure_threshold=5, recovery_time=60, half_open_requests=1)"
    assert sig(efm.EnhancedFallbackManager) == "(task_group_manager, polling_pool_manager=None)"
    assert sig(efm.EnhancedFallbackManager.execute_with_fallback) == "(self, primary_target, fallback_groups, prompt, **kwargs)"
    assert sig(efm.EnhancedFallbackManager.get_fallback_history).startswith("(self, limit=10)")
    assert sig(fm.FallbackManager) == "(config=None, client_factory=None, logger=None, task_group_manager=None, polling_pool_manager=None)"
    assert sig(fm.FallbackManager.execute_with_fallback) == "(self, primary_target, fallback_groups, prompt, parameters=None, **kwargs)"
    assert sig(cc.ConcurrencyAndRateLimitManager.check_and_acquire) == "(self, level, identifier, timeout=30.0)"
    assert sig(cc.ConcurrencyController.acquire_permission) == "(self, level, identifier, timeout=30.0)"
    assert sig(w.BaseLLMWrapper) == "(name, config=None)"
    assert sig(w.PollingPoolWrapper) == "(name, polling_pool_manager, config=None)"
    assert sig(w.TaskGroupWrapper) == "(name, task_group_manager, fallback_manager=None, config=None)"
    assert sig(w.LLMWrapperFactory) == "(task_group_manager, polling_pool_manager=None, fallback_manager=None)"
    for cls in (w.PollingPoolWrapper, w.TaskGroupWrapper):
        assert sig(cls.generate_async) == "(self, messages, parameters=None, **kwargs)"
        assert not inspect.iscoroutinefunction(cls.generate)
        # A ChunkStream: `async for` (HEAD) and `for` (the older sync generator) both work.
        assert sig(cls.stream_generate) == "(self, messages, parameters=None, **kwargs)"
        assert not inspect.iscoroutinefunction(cls.stream_generate)
    for name in ("_get_pool", "_call_with_simple_fallback", "_call_instance", "get_rotation_history", "reset_rotation_history", "get_pool_status", "health_check"):
        assert hasattr(w.PollingPoolWrapper, name), name
    for name in ("_get_target", "_generate_with_fallback", "_generate_direct", "_get_fallback_groups", "_record_success", "_record_failure", "get_fallback_history", "reset_fallback_history"):
        assert hasattr(w.TaskGroupWrapper, name), name


def test_enum_values() -> None:
    from echelon.compat import ConcurrencyLevel, InstanceStatus, RotationStrategy
    from echelon.compat.enhanced_fallback_manager import FallbackStrategy as EFS

    assert [s.value for s in InstanceStatus] == ["healthy", "degraded", "unhealthy", "failed", "recovering"]
    assert [s.value for s in RotationStrategy] == ["round_robin", "least_recently_used", "weighted"]
    assert [s.value for s in ConcurrencyLevel] == ["group", "echelon", "model", "node"]
    assert [s.value for s in EFS] == ["echelon_down", "model_rotate", "provider_failover", "task_group_switch", "polling_pool_switch"]


def test_exceptions_keep_positional_args_and_codes() -> None:
    from echelon.compat import LLMError
    from echelon.compat.wrappers import PollingPoolWrapperError, TaskGroupWrapperError, WrapperError

    e = TaskGroupWrapperError("boom", "extra", 3)
    assert e.args == ("boom", "extra", 3) and str(e) == "boom" and "boom" in repr(e)
    assert isinstance(e, WrapperError) and isinstance(e, LLMError)
    assert e.error_code == "TASK_GROUP_WRAPPER_ERROR"
    p = PollingPoolWrapperError("x", "y", pool_id="p")
    assert p.args == ("x", "y") and p.error_code == "POLLING_POOL_WRAPPER_ERROR" and p.details["pool_id"] == "p"
    assert WrapperError("m").error_code == "LLM_WRAPPER_ERROR"


def test_response_has_both_shapes() -> None:
    from echelon.compat import LLMResponse, TokenUsage

    r = LLMResponse("hi", None, TokenUsage(1, 2, 3), "m")
    assert r.tokens_used == 3 and r.token_usage.total_tokens == 3 and r.model == "m" and r.message.content == "hi"
    h = LLMResponse("hi", "model-x", tokens_used=7)  # HEAD positional form
    assert h.model == "model-x" and h.token_usage.total_tokens == 7 and h.metadata == {}
    assert TokenUsage(1, 2, 3) + TokenUsage(1, 1, 2) == TokenUsage(2, 3, 5)
    assert set(r.to_dict()) >= {"content", "token_usage", "model", "metadata", "timestamp"}


def test_issue_20_signatures() -> None:
    from echelon.compat import fallback_client as fc
    from echelon.compat import fallback_manager as fm
    from echelon.compat import retry as r
    from echelon.compat.connection_pool import HTTPConnectionPool

    assert sig(fm.FallbackManager.generate_with_fallback) == "(self, messages, parameters=None, primary_model=None, **kwargs)"
    assert sig(fm.FallbackManager.generate_with_fallback_async) == "(self, messages, parameters=None, primary_model=None, **kwargs)"
    assert sig(fm.FallbackManager.get_most_used_models) == "(self, limit=10)"
    assert sig(fm.FallbackManager.get_error_summary) == "(self, limit=10)"
    assert sig(fm.FallbackManager.get_successful_sessions) == "(self, limit=None)"
    assert sig(fm.DefaultFallbackLogger) == "(enabled=True)"
    assert sig(r.RetryManager.execute_with_retry) == "(self, func, *args, **kwargs)"
    assert sig(r.RetryManager.retry) == "(self, func=None, *, config=None)"
    assert sig(HTTPConnectionPool).startswith("(max_connections=10, max_keepalive=10, timeout=30.0")
    assert sig(fc.FallbackClientWrapper) == "(primary_client, fallback_models, strategy_type='sequential', max_attempts=3, use_enhanced_fallback=False, task_group_manager=None, polling_pool_manager=None, **config_kwargs)"
