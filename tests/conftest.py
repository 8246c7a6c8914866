"""Shared fixtures: the mock provider (real HTTP on loopback) and router configs built on it."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator

import pytest

from echelon.testing import MockProvider

FAST_TIMEOUTS = {"connect": 1, "first_token": 2, "total": 5, "idle": 1}


def mock_config(base_url: str, **overrides: Any) -> Dict[str, Any]:
    """A router config on the mock: group ``g`` with echelons of mock models, pool ``p`` over
    echelon1, and group ``solo`` with one model. Tests tweak it with ``overrides`` (merged
    one level deep into ``groups``/``pools``/``global``)."""
    cfg: Dict[str, Any] = {
        "providers": {
            "mock": {
                "common": {
                    "type": "openai_compatible",
                    "base_url": base_url,
                    "api_key": "mock-key",
                    "timeouts": dict(FAST_TIMEOUTS),
                    "max_retries": 1,
                    "retry_config": {"base_delay": 0.01, "max_delay": 0.05},
                    "rate_limit_cooldown": 0.2,
                },
                "m-a": {"model": "m-a", "context_window": 1000},
                "m-b": {"model": "m-b", "context_window": 1000},
                "m-c": {"model": "m-c", "context_window": 1000},
                "m-big": {"model": "m-big", "context_window": 100000},
            }
        },
        "groups": {
            "g": {
                "echelon1": {"models": ["m-a", "m-b"], "priority": 1, "concurrency_limit": 50},
                "echelon2": {"models": ["m-c"], "priority": 2},
                "echelon3": {"models": ["m-big"], "priority": 3},
                "circuit_breaker": {"failure_threshold": 3, "recovery_time": 1, "half_open_requests": 1},
                "fallback_config": {"strategy": "echelon_down", "max_attempts": 5, "retry_delay": 0.01},
            },
            "solo": {
                "echelon1": {"models": ["m-a"], "priority": 1},
                "fallback_config": {"strategy": "echelon_down", "max_attempts": 3, "retry_delay": 0.01},
            },
        },
        "pools": {
            "p": {
                "task_groups": ["g.echelon1"],
                "rotation_strategy": "round_robin",
                "health_check": {"interval": 60, "failure_threshold": 3, "recovery_time": 1},
                "fallback_config": {"strategy": "instance_rotation", "max_instance_attempts": 2},
            }
        },
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            for k, v in value.items():
                cfg[section][k] = copy.deepcopy(v)
        else:
            cfg[section] = copy.deepcopy(value)
    return cfg


def model_counters(mock: MockProvider, model: str) -> Dict[str, Any]:
    """The mock's counters for one model (zeros if it saw nothing)."""
    return mock.counters().get("models", {}).get(model, {"requests": 0, "faults": {}, "client_disconnects": 0})


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    with MockProvider() as m:
        yield m
