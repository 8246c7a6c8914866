"""Drop-in replacement for the original Python polling-pool / task-group subsystem.

Code written against the original runs with only its import lines changed, e.g.
``from src.services.llm.scheduling.polling_pool import PollingPool`` becomes
``from echelon.compat.polling_pool import PollingPool``; calls now go to real models through
the echelon engine. See docs/migration.md.
"""

from .concurrency_controller import ConcurrencyAndRateLimitManager, ConcurrencyController, ConcurrencyLevel, ConcurrencyLimit, RateLimiter
from .clients import EngineClient, EngineClientFactory
from .config_loader import FileConfigLoader, IConfigLoader
from .connection_pool import ConnectionPoolFactory, HTTPConnectionPool
from .enhanced_fallback_manager import CircuitBreaker, EnhancedFallbackManager, FallbackAttempt, FallbackConfigManager
from .enhanced_fallback_manager import FallbackStrategy as EnhancedFallbackStrategy
from .exceptions import (
    LLMAuthenticationError,
    LLMCallError,
    LLMClientCreationError,
    LLMConfigurationError,
    LLMContentFilterError,
    LLMError,
    LLMFallbackError,
    LLMInvalidRequestError,
    LLMModelNotFoundError,
    LLMRateLimitError,
    LLMServiceUnavailableError,
    LLMTimeoutError,
    LLMTokenLimitError,
    LLMWrapperError,
    PollingPoolWrapperError,
    TaskGroupWrapperError,
    UnsupportedModelTypeError,
    WrapperConfigError,
    WrapperError,
    WrapperExecutionError,
    WrapperFactoryError,
)
from .fallback_client import FallbackClientWrapper
from .fallback_config import FallbackAttempt as ModelFallbackAttempt
from .fallback_config import FallbackConfig, FallbackSession, FallbackStats
from .fallback_manager import DefaultFallbackLogger, FallbackManager, create_fallback_manager
from .fallback_strategies import (
    ErrorTypeBasedStrategy,
    PriorityFallbackStrategy,
    RandomFallbackStrategy,
    SequentialFallbackStrategy,
    create_fallback_strategy,
)
from .interfaces import (
    IClientFactory,
    IFallbackLogger,
    IFallbackManager,
    IFallbackStrategy,
    ILLMClient,
    IPollingPoolManager,
    IRetryLogger,
    IRetryStrategy,
    ITaskGroupManager,
)
from .models import LLMResponse, TokenUsage
from .polling_pool import (
    HealthChecker,
    InstanceStatus,
    LeastRecentlyUsedScheduler,
    LLMInstance,
    PollingPool,
    PollingPoolManager,
    RotationStrategy,
    RoundRobinScheduler,
    Scheduler,
    WeightedScheduler,
)
from .task_group_config import (
    CircuitBreakerConfig,
    ConcurrencyControlConfig,
    EchelonConfig,
    FallbackStrategy,
    GlobalFallbackConfig,
    PollingPoolConfig,
    PollingPoolFallbackConfig,
    RateLimitingAlgorithm,
    RateLimitingConfig,
    TaskGroupConfig,
    TaskGroupsConfig,
    ThinkingConfig,
)
from .retry import RetryConfig, RetryManager, create_retry_strategy
from .task_group_manager import TaskGroupManager
from .wrappers import BaseLLMWrapper, LLMWrapperFactory, PollingPoolWrapper, TaskGroupWrapper

__all__ = [
    # polling_pool
    "InstanceStatus", "RotationStrategy", "LLMInstance", "Scheduler", "RoundRobinScheduler",
    "LeastRecentlyUsedScheduler", "WeightedScheduler", "HealthChecker", "PollingPool", "PollingPoolManager",
    # task groups
    "TaskGroupManager", "FileConfigLoader", "IConfigLoader",
    # concurrency
    "ConcurrencyLevel", "ConcurrencyLimit", "ConcurrencyController", "RateLimiter", "ConcurrencyAndRateLimitManager",
    # fallback
    "CircuitBreaker", "EnhancedFallbackStrategy", "FallbackAttempt", "EnhancedFallbackManager", "FallbackConfigManager",
    "FallbackManager", "FallbackConfig", "create_fallback_manager", "FallbackSession", "FallbackStats",
    "ModelFallbackAttempt", "DefaultFallbackLogger", "FallbackClientWrapper",
    "SequentialFallbackStrategy", "PriorityFallbackStrategy", "RandomFallbackStrategy", "ErrorTypeBasedStrategy",
    "create_fallback_strategy",
    # retry
    "RetryConfig", "RetryManager", "create_retry_strategy",
    # clients and connection pool
    "EngineClient", "EngineClientFactory", "HTTPConnectionPool", "ConnectionPoolFactory",
    # interfaces
    "IPollingPoolManager", "ITaskGroupManager", "IFallbackManager", "ILLMClient", "IClientFactory",
    "IFallbackLogger", "IFallbackStrategy", "IRetryLogger", "IRetryStrategy",
    # wrappers
    "BaseLLMWrapper", "PollingPoolWrapper", "TaskGroupWrapper", "LLMWrapperFactory",
    # models
    "LLMResponse", "TokenUsage",
    # config models (RotationStrategy above is the pool enum; the config one is task_group_config.RotationStrategy)
    "FallbackStrategy", "RateLimitingAlgorithm", "CircuitBreakerConfig", "ThinkingConfig", "EchelonConfig",
    "TaskGroupConfig", "RateLimitingConfig", "PollingPoolFallbackConfig", "PollingPoolConfig",
    "ConcurrencyControlConfig", "GlobalFallbackConfig", "TaskGroupsConfig",
    # exceptions
    "LLMError", "LLMCallError", "LLMTimeoutError", "LLMRateLimitError", "LLMAuthenticationError",
    "LLMModelNotFoundError", "LLMTokenLimitError", "LLMContentFilterError", "LLMInvalidRequestError",
    "LLMServiceUnavailableError", "LLMClientCreationError", "UnsupportedModelTypeError", "LLMConfigurationError",
    "LLMFallbackError", "LLMWrapperError", "WrapperError", "TaskGroupWrapperError", "PollingPoolWrapperError",
    "WrapperFactoryError", "WrapperConfigError", "WrapperExecutionError",
]
