"""Drop-in replacement for the original Python polling-pool / task-group subsystem.

Code written against the original runs with only its import lines changed, e.g.
``from src.services.llm.scheduling.polling_pool import PollingPool`` becomes
``from echelon.compat.polling_pool import PollingPool``; calls now go to real models through
the echelon engine. See docs/migration.md.
"""

from .concurrency_controller import ConcurrencyAndRateLimitManager, ConcurrencyController, ConcurrencyLevel, ConcurrencyLimit, RateLimiter
from .config_loader import FileConfigLoader
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
from .fallback_manager import FallbackConfig, FallbackManager, create_fallback_manager
from .interfaces import IFallbackManager, IPollingPoolManager, ITaskGroupManager
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
from .task_group_manager import TaskGroupManager
from .wrappers import BaseLLMWrapper, LLMWrapperFactory, PollingPoolWrapper, TaskGroupWrapper

__all__ = [
    # polling_pool
    "InstanceStatus", "RotationStrategy", "LLMInstance", "Scheduler", "RoundRobinScheduler",
    "LeastRecentlyUsedScheduler", "WeightedScheduler", "HealthChecker", "PollingPool", "PollingPoolManager",
    # task groups
    "TaskGroupManager", "FileConfigLoader",
    # concurrency
    "ConcurrencyLevel", "ConcurrencyLimit", "ConcurrencyController", "RateLimiter", "ConcurrencyAndRateLimitManager",
    # fallback
    "CircuitBreaker", "EnhancedFallbackStrategy", "FallbackAttempt", "EnhancedFallbackManager", "FallbackConfigManager",
    "FallbackManager", "FallbackConfig", "create_fallback_manager",
    # interfaces
    "IPollingPoolManager", "ITaskGroupManager", "IFallbackManager",
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
