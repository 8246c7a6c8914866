"""Wrappers of the original (``src.core.llm.wrappers``)."""

from .base_wrapper import BaseLLMWrapper
from .exceptions import (
    LLMWrapperError,
    PollingPoolWrapperError,
    TaskGroupWrapperError,
    WrapperConfigError,
    WrapperError,
    WrapperExecutionError,
    WrapperFactoryError,
)
from .polling_pool_wrapper import PollingPoolWrapper
from .task_group_wrapper import TaskGroupWrapper
from .wrapper_factory import LLMWrapperFactory

__all__ = [
    "BaseLLMWrapper",
    "PollingPoolWrapper",
    "TaskGroupWrapper",
    "LLMWrapperFactory",
    "LLMWrapperError",
    "WrapperError",
    "TaskGroupWrapperError",
    "PollingPoolWrapperError",
    "WrapperFactoryError",
    "WrapperConfigError",
    "WrapperExecutionError",
]
