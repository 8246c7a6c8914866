"""Response types of the original: :class:`LLMResponse` (both the HEAD and the old shape at
once) and :class:`TokenUsage`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Optional

__all__ = ["TokenUsage", "LLMResponse", "AIMessage", "HumanMessage", "make_message"]


@dataclass
class TokenUsage:
    """Token counts of one call; ``a + b`` adds them field by field."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: "TokenUsage") -> "TokenUsage":
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )

    def to_dict(self) -> Dict[str, int]:
        """The counts as a dict."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens}


@dataclass
class _Message:
    """Minimal stand-in for a langchain message when ``langchain_core`` is not installed."""

    content: Any
    type: str = "human"


def _message_class(kind: str) -> Any:
    try:  # Prefer the real classes: code written against the original used langchain messages.
        from langchain_core import messages as lm  # type: ignore

        return lm.AIMessage if kind == "ai" else lm.HumanMessage
    except Exception:
        return lambda content: _Message(content, kind)


def make_message(content: Any, kind: str = "ai") -> Any:
    """A langchain ``AIMessage``/``HumanMessage`` when langchain is installed, else a small
    object with ``.content`` and ``.type``."""
    return _message_class(kind)(content)


def HumanMessage(content: Any) -> Any:  # noqa: N802 - mirrors the langchain class name
    """A human message (langchain's when installed)."""
    return make_message(content, "human")


def AIMessage(content: Any) -> Any:  # noqa: N802
    """An AI message (langchain's when installed)."""
    return make_message(content, "ai")


@dataclass
class LLMResponse:
    """A model response. Carries the old fields (``message``, ``token_usage``, ``response_time``,
    ``timestamp``, ``to_dict``) and the HEAD field ``tokens_used`` (kept equal to
    ``token_usage.total_tokens``).

    The old positional order is ``(content, message, token_usage, model)``; HEAD code wrote
    ``LLMResponse(content, model)``: a string second argument with no ``model`` is taken as the
    model, so both spellings work.
    """

    content: str
    message: Any = None
    token_usage: Optional[TokenUsage] = None
    model: Optional[str] = None
    finish_reason: Optional[str] = None
    function_call: Optional[Dict[str, Any]] = None
    metadata: Optional[Dict[str, Any]] = None
    response_time: Optional[float] = None
    timestamp: datetime = field(default_factory=datetime.now)
    tokens_used: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.message, str) and self.model is None:
            self.model, self.message = self.message, None
        if self.message is None:
            self.message = make_message(self.content, "ai")
        if self.token_usage is None:
            self.token_usage = TokenUsage(total_tokens=int(self.tokens_used or 0))
        if self.tokens_used is None:
            self.tokens_used = self.token_usage.total_tokens
        if self.metadata is None:
            self.metadata = {}

    def __str__(self) -> str:
        return str(self.content)

    def to_dict(self) -> Dict[str, Any]:
        """The response as a plain dict (the old ``to_dict`` keys plus ``tokens_used``)."""
        return {
            "content": self.content,
            "token_usage": self.token_usage.to_dict() if self.token_usage else None,
            "tokens_used": self.tokens_used,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "function_call": self.function_call,
            "metadata": dict(self.metadata or {}),
            "response_time": self.response_time,
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_echelon(cls, resp: Any, model: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None) -> "LLMResponse":
        """Build from an :class:`echelon.Response` (content, usage, finish reason, latency;
        ``served_by`` and the attempt count go into ``metadata``)."""
        u = resp.usage
        md = {"served_by": resp.served_by, "attempts": len(resp.attempts), "provider_model": resp.model}
        md.update(metadata or {})
        return cls(
            content=resp.content,
            token_usage=TokenUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens),
            model=model or resp.model,
            finish_reason=resp.finish_reason,
            metadata=md,
            response_time=resp.latency,
        )
