"""Shared helpers of the compat tests (config dicts, a facade stand-in, mock counters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from echelon.testing import MockProvider

FIXTURES = Path(__file__).parent / "fixtures" / "configs"

# Logical model → wire model (what the mock counts by).
WIRE = {"openai-gpt4": "m-gpt4", "anthropic-claude-3-opus": "m-opus", "openai-gpt4-turbo": "m-gpt4-turbo", "openai-gpt3.5-turbo": "m-gpt35"}


def llm_config(mock: MockProvider, **overrides: Any) -> Dict[str, Any]:
    """A HEAD-style LLM config dict (what ``ConfigFacade.get_llm_config()`` returned), with the
    providers the engine needs."""
    cfg: Dict[str, Any] = {
        "providers": {
            "mock": {
                "common": {"type": "openai_compatible", "base_url": mock.openai_base_url, "api_key": "k", "max_retries": 0},
                **{logical: {"model_name": wire} for logical, wire in WIRE.items()},
            }
        },
        "task_groups": {
            "fast_group": {
                "name": "fast_group",
                "echelon1": {"models": ["openai-gpt4", "anthropic-claude-3-opus", "openai-gpt4-turbo"], "priority": 1},
                "echelon2": {"models": ["openai-gpt3.5-turbo"], "priority": 2},
                "fallback_strategy": "echelon_down",
                "circuit_breaker": {"failure_threshold": 2, "recovery_time": 60, "half_open_requests": 1},
            },
            "backup_group": {
                "name": "backup_group",
                "echelon1": {"models": ["openai-gpt3.5-turbo"], "priority": 1},
            },
        },
        "polling_pools": {
            "fast_pool": {"name": "fast_pool", "task_groups": ["fast_group.echelon1"], "rotation_strategy": "round_robin", "health_check_interval": 30},
        },
    }
    cfg.update(overrides)
    return cfg


class Facade:
    """A stand-in for the original ConfigFacade."""

    def __init__(self, cfg: Dict[str, Any]) -> None:
        self.cfg = cfg
        self.reloads = 0

    def get_llm_config(self) -> Dict[str, Any]:
        return self.cfg

    def reload_config(self, name: str) -> None:
        self.reloads += 1


def calls(mock: MockProvider, logical: str) -> int:
    """Chat requests the mock received for a logical model."""
    return int(mock.counters(WIRE[logical])["requests"])
