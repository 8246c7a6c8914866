"""The original abstract interfaces (``src/interfaces/llm/{polling,task_group,fallback}``), so
``isinstance`` checks and subclasses written against them keep working."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["IPollingPoolManager", "ITaskGroupManager", "IFallbackManager"]


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
