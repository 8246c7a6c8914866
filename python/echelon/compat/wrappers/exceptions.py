"""Wrapper errors (``src/core/llm/wrappers/exceptions.py``); ``WrapperError`` is
``LLMWrapperError``."""

from ..exceptions import (  # noqa: F401
    LLMError,
    LLMWrapperError,
    PollingPoolWrapperError,
    TaskGroupWrapperError,
    WrapperConfigError,
    WrapperError,
    WrapperExecutionError,
    WrapperFactoryError,
)

__all__ = [
    "LLMWrapperError",
    "WrapperError",
    "TaskGroupWrapperError",
    "PollingPoolWrapperError",
    "WrapperFactoryError",
    "WrapperConfigError",
    "WrapperExecutionError",
]
