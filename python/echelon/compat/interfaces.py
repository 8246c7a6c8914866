"""The original abstract interfaces (``src/interfaces/llm/*``, ``src/infrastructure/llm/interfaces``,
the fallback and retry ``interfaces`` modules), so ``isinstance`` checks and subclasses written
against them keep working.

Where the original changed an interface between versions, the abstract methods here are the
ones every version had, and the rest have working defaults, so a subclass written against
either version instantiates.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "IPollingPoolManager",
    "ITaskGroupManager",
    "IFallbackManager",
    "ILLMClient",
    "ILLMCallHook",
    "ILLMClientFactory",
    "IClientFactory",
    "IFallbackStrategy",
    "IFallbackLogger",
    "IRetryStrategy",
    "IRetryLogger",
    "IRetryCondition",
    "IRetryDelayCalculator",
    "IRetryContext",
]


class IPollingPoolManager(ABC):
    """A registry of polling pools."""

    @abstractmethod
    def get_pool(self, name: str) -> Any: ...

    @abstractmethod
    def list_all_status(self) -> Dict[str, Any]: ...

    @abstractmethod
    async def shutdown_all(self) -> None: ...


class ITaskGroupManager(ABC):
    """Task-group queries."""

    @abstractmethod
    def get_models_for_group(self, group_reference: str) -> List[str]: ...

    @abstractmethod
    def parse_group_reference(self, reference: str) -> Tuple[str, Optional[str]]: ...

    @abstractmethod
    def get_fallback_groups(self, group_reference: str) -> List[str]: ...

    @abstractmethod
    def get_echelon_config(self, group_name: str, echelon_name: str) -> Any: ...

    @abstractmethod
    def get_group_models_by_priority(self, group_name: str) -> List[Tuple[str, int, List[str]]]: ...

    @abstractmethod
    def list_task_groups(self) -> List[str]: ...


class IFallbackManager(ABC):
    """Group-level fallback execution."""

    @abstractmethod
    async def execute_with_fallback(self, primary_target: str, fallback_groups: List[str], prompt: str, parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any: ...

    @abstractmethod
    def get_stats(self) -> Dict[str, Any]: ...

    @abstractmethod
    def reset_stats(self) -> None: ...


# -- clients --------------------------------------------------------------------------------


class ILLMClient(ABC):
    """An LLM client. Abstract: ``generate``, ``stream_generate``, ``supports_function_calling``,
    ``get_model_info`` (every version had them; ``generate`` was synchronous before the
    original's 2025-11-28 change and a coroutine after it, and both are accepted). The other
    methods default to working implementations built on those."""

    def __init__(self, config: Any = None) -> None:
        self.config = config

    @abstractmethod
    def generate(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        """A response (or, HEAD style, a coroutine resolving to one)."""

    async def generate_async(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        """Awaitable form of :meth:`generate`."""
        r = self.generate(messages, parameters, **kwargs)
        return await r if inspect.isawaitable(r) else r

    @abstractmethod
    def stream_generate(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
        """Text chunks (a generator or an async generator)."""

    async def stream_generate_async(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> AsyncIterator[str]:
        """Async iteration over :meth:`stream_generate`, whichever kind it returns."""
        it = self.stream_generate(messages, parameters, **kwargs)
        if hasattr(it, "__aiter__"):
            async for chunk in it:
                yield chunk
        else:
            for chunk in it:
                yield chunk

    def get_token_count(self, text: str) -> int:
        """Rough estimate: ``max(1, len(text) // 4)``."""
        return max(1, len(text or "") // 4)

    def get_messages_token_count(self, messages: Sequence[Any]) -> int:
        return sum(self.get_token_count(str(getattr(m, "content", m))) for m in messages or [])

    @abstractmethod
    def supports_function_calling(self) -> bool: ...

    def supports_jsonl(self) -> bool:
        return False

    @abstractmethod
    def get_model_info(self) -> Dict[str, Any]: ...

    def set_http_client(self, http_client: Any) -> None:
        """Accepted for compatibility; echelon's clients use the engine's connection pool."""
        self._http_client = http_client


class ILLMCallHook(ABC):
    """Hooks around a client call."""

    @abstractmethod
    def before_call(self, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None: ...

    @abstractmethod
    def after_call(self, response: Any, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None: ...

    @abstractmethod
    def on_error(self, error: Exception, messages: Sequence[Any], parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Optional[Any]: ...


class ILLMClientFactory(ABC):
    """Creates clients from config dicts (with a per-model cache)."""

    @abstractmethod
    def create_client(self, config: Dict[str, Any]) -> ILLMClient: ...

    def get_cached_client(self, model_name: str) -> Optional[ILLMClient]:
        return getattr(self, "_cache", {}).get(model_name)

    def cache_client(self, model_name: str, client: ILLMClient) -> None:
        self.__dict__.setdefault("_cache", {})[model_name] = client

    def clear_cache(self) -> None:
        self.__dict__.setdefault("_cache", {}).clear()


class IClientFactory(ABC):
    """Creates a client for a model name (what the fallback managers call)."""

    @abstractmethod
    def create_client(self, model_name: str) -> Any: ...

    @abstractmethod
    def get_available_models(self) -> List[str]: ...


# -- fallback -------------------------------------------------------------------------------


class IFallbackStrategy(ABC):
    """Model-level fallback decisions: whether to fall back, to which model, after how long."""

    @abstractmethod
    def should_fallback(self, error: Exception, attempt: int) -> bool: ...

    @abstractmethod
    def get_fallback_target(self, error: Exception, attempt: int) -> Optional[str]: ...

    @abstractmethod
    def get_fallback_delay(self, error: Exception, attempt: int) -> float: ...


class IFallbackLogger(ABC):
    """Told about fallback attempts, successes and final failures."""

    @abstractmethod
    def log_fallback_attempt(self, primary_model: str, fallback_model: str, error: Exception, attempt: int) -> None: ...

    @abstractmethod
    def log_fallback_success(self, primary_model: str, fallback_model: str, response: Any, attempt: int) -> None: ...

    @abstractmethod
    def log_fallback_failure(self, primary_model: str, error: Exception, total_attempts: int) -> None: ...


# -- retry ----------------------------------------------------------------------------------


class IRetryStrategy(ABC):
    """Retry decisions and callbacks."""

    @abstractmethod
    def should_retry(self, error: Exception, attempt: int) -> bool: ...

    @abstractmethod
    def get_retry_delay(self, error: Exception, attempt: int) -> float: ...

    @abstractmethod
    def on_retry_attempt(self, error: Exception, attempt: int, delay: float) -> None: ...

    @abstractmethod
    def on_retry_success(self, result: Any, attempt: int) -> None: ...

    @abstractmethod
    def on_retry_failure(self, error: Exception, total_attempts: int) -> None: ...


class IRetryLogger(ABC):
    """Told about retry attempts, successes and final failures."""

    @abstractmethod
    def log_retry_attempt(self, func_name: str, error: Exception, attempt: int, delay: float) -> None: ...

    @abstractmethod
    def log_retry_success(self, func_name: str, result: Any, attempt: int) -> None: ...

    @abstractmethod
    def log_retry_failure(self, func_name: str, error: Exception, total_attempts: int) -> None: ...


class IRetryCondition(ABC):
    """One condition a retry must meet."""

    @abstractmethod
    def should_retry(self, error: Exception, attempt: int) -> bool: ...


class IRetryDelayCalculator(ABC):
    """Computes the delay before an attempt."""

    @abstractmethod
    def calculate_delay(self, attempt: int, base_delay: float, **kwargs: Any) -> float: ...


class IRetryContext(ABC):
    """State of one retried call."""

    @abstractmethod
    def get_attempt_count(self) -> int: ...

    @abstractmethod
    def get_total_attempts(self) -> int: ...

    @abstractmethod
    def get_start_time(self) -> datetime: ...

    @abstractmethod
    def get_last_error(self) -> Optional[Exception]: ...

    @abstractmethod
    def get_elapsed_time(self) -> float: ...
