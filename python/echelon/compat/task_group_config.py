"""The original config models (``task_group_config.py``) as dataclasses with ``from_dict``.

Objects also answer ``obj["key"]`` / ``obj.get("key")`` / ``"key" in obj`` so code written
for the HEAD generation (plain dicts) and for the old one (typed objects) both work. Each
parsed object remembers the mapping it came from (``raw``), which is what the engine receives,
so engine errors point at the user's own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

__all__ = [
    "FallbackStrategy",
    "RotationStrategy",
    "RateLimitingAlgorithm",
    "CircuitBreakerConfig",
    "ThinkingConfig",
    "EchelonConfig",
    "FallbackConfig",
    "TaskGroupConfig",
    "RateLimitingConfig",
    "PollingPoolFallbackConfig",
    "PollingPoolConfig",
    "ConcurrencyControlConfig",
    "GlobalFallbackConfig",
    "TaskGroupsConfig",
    "TASK_TIERS",
]

#: Task-name tiers the old parser treats as echelons.
TASK_TIERS = ("translation", "analysis", "execute", "thinking", "high_payload")


class FallbackStrategy(str, Enum):
    """Group fallback strategy."""

    ECHELON_DOWN = "echelon_down"
    MODEL_ROTATE = "model_rotate"
    PROVIDER_FAILOVER = "provider_failover"
    TASK_GROUP_SWITCH = "task_group_switch"


class RotationStrategy(str, Enum):
    """Pool rotation strategy."""

    ROUND_ROBIN = "round_robin"
    LEAST_RECENTLY_USED = "least_recently_used"
    WEIGHTED = "weighted"


class RateLimitingAlgorithm(str, Enum):
    """Rate limiting algorithm."""

    TOKEN_BUCKET = "token_bucket"
    SLIDING_WINDOW = "sliding_window"


class _DictLike:
    """Mapping-style read access on a dataclass (HEAD code used dicts)."""

    raw: Optional[Dict[str, Any]]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __getitem__(self, key: str) -> Any:
        if key != "raw" and key in {f.name for f in fields(self)}:  # type: ignore[arg-type]
            v = getattr(self, key)
            return v.value if isinstance(v, Enum) else v
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def keys(self) -> List[str]:
        return [f.name for f in fields(self) if f.name != "raw"]  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        """The mapping this object came from, or its fields (for objects built in code)."""
        if getattr(self, "raw", None) is not None:
            return dict(self.raw)  # type: ignore[arg-type]
        out: Dict[str, Any] = {}
        for k in self.keys():
            v = getattr(self, k)
            if v is None:
                continue
            out[k] = _plain(v)
        return out


_MISSING = object()


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, _DictLike):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _enum(cls: Any, value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, cls):
        return value
    return cls(value)


@dataclass
class CircuitBreakerConfig(_DictLike):
    """``circuit_breaker``: ``failure_threshold`` 5, ``recovery_time`` 60 s (``reset_timeout`` is
    an alias), ``half_open_requests`` 1."""

    failure_threshold: int = 5
    recovery_time: float = 60
    half_open_requests: int = 1
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CircuitBreakerConfig":
        return cls(
            failure_threshold=int(data.get("failure_threshold", 5)),
            recovery_time=data.get("recovery_time", data.get("reset_timeout", 60)),
            half_open_requests=int(data.get("half_open_requests", 1)),
            raw=dict(data),
        )


@dataclass
class ThinkingConfig(_DictLike):
    """``thinking_config`` of an echelon."""

    enabled: bool = True
    budget_tokens: int = 2000
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ThinkingConfig":
        return cls(enabled=bool(data.get("enabled", True)), budget_tokens=int(data.get("budget_tokens", 2000)), raw=dict(data))


@dataclass
class EchelonConfig(_DictLike):
    """One echelon (or task-name tier). ``priority``: lower is tried first."""

    models: List[str] = field(default_factory=list)
    concurrency_limit: int = 0
    rpm_limit: int = 0
    priority: int = 0
    timeout: float = 0
    max_retries: int = 0
    temperature: float = 0.7
    max_tokens: int = 2000
    function_calling: Optional[str] = None
    response_format: Optional[str] = None
    thinking_config: Optional[ThinkingConfig] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EchelonConfig":
        models = data.get("models")
        if models is None and data.get("model"):
            # TS generation 2: one model per echelon, optionally with its provider.
            models = [f"{data['provider']}:{data['model']}" if data.get("provider") else data["model"]]
        tc = data.get("thinking_config")
        return cls(
            models=list(models or []),
            concurrency_limit=int(data.get("concurrency_limit", 0) or 0),
            rpm_limit=int(data.get("rpm_limit", 0) or 0),
            priority=int(data.get("priority", 0) or 0),
            timeout=data.get("timeout", 0) or 0,
            max_retries=int(data.get("max_retries", 0) or 0),
            temperature=data.get("temperature", 0.7),
            max_tokens=data.get("max_tokens", 2000),
            function_calling=data.get("function_calling"),
            response_format=data.get("response_format"),
            thinking_config=ThinkingConfig.from_dict(tc) if isinstance(tc, Mapping) else None,
            raw=dict(data),
        )


@dataclass
class FallbackConfig(_DictLike):
    """``fallback_config`` of a group."""

    strategy: FallbackStrategy = FallbackStrategy.ECHELON_DOWN
    fallback_groups: List[str] = field(default_factory=list)
    max_attempts: int = 3
    retry_delay: float = 1.0
    circuit_breaker: Optional[CircuitBreakerConfig] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FallbackConfig":
        cb = data.get("circuit_breaker")
        return cls(
            strategy=_enum(FallbackStrategy, data.get("strategy"), FallbackStrategy.ECHELON_DOWN),
            fallback_groups=list(data.get("fallback_groups") or []),
            max_attempts=int(data.get("max_attempts", 3)),
            retry_delay=float(data.get("retry_delay", 1.0)),
            circuit_breaker=CircuitBreakerConfig.from_dict(cb) if isinstance(cb, Mapping) else None,
            raw=dict(data),
        )


@dataclass
class TaskGroupConfig(_DictLike):
    """One task group: its echelons (``echelon*`` keys and task-name tiers) and fallback settings."""

    name: str = ""
    description: str = ""
    echelons: Dict[str, EchelonConfig] = field(default_factory=dict)
    fallback_strategy: FallbackStrategy = FallbackStrategy.ECHELON_DOWN
    circuit_breaker: Optional[CircuitBreakerConfig] = None
    fallback_config: Optional[FallbackConfig] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: Optional[str] = None) -> "TaskGroupConfig":
        echelons: Dict[str, EchelonConfig] = {}
        nested = data.get("echelons")
        if isinstance(nested, Mapping):  # HEAD dict shape
            for k, v in nested.items():
                if isinstance(v, Mapping):
                    echelons[k] = EchelonConfig.from_dict(v)
        for k, v in data.items():
            if isinstance(v, Mapping) and (k.startswith("echelon") and k != "echelons" or k in TASK_TIERS):
                echelons[k] = EchelonConfig.from_dict(v)
        cb = data.get("circuit_breaker")
        fc = data.get("fallback_config")
        return cls(
            name=str(data.get("name") or name or ""),
            description=str(data.get("description", "") or ""),
            echelons=echelons,
            fallback_strategy=_enum(FallbackStrategy, data.get("fallback_strategy"), FallbackStrategy.ECHELON_DOWN),
            circuit_breaker=CircuitBreakerConfig.from_dict(cb) if isinstance(cb, Mapping) else None,
            fallback_config=FallbackConfig.from_dict(fc) if isinstance(fc, Mapping) and fc else None,
            raw=dict(data),
        )

    def __getitem__(self, key: str) -> Any:
        if key in self.echelons:
            return self.echelons[key]
        return super().__getitem__(key)

    def get_echelon(self, name: str) -> Optional[EchelonConfig]:
        """The echelon ``name`` or ``None``."""
        return self.echelons.get(name)

    def get_sorted_echelons(self) -> List[Tuple[str, EchelonConfig]]:
        """Echelons by ascending ``priority`` (lower = preferred; ties keep file order). The
        original pydantic model sorted descending, contradicting the manager (§5.17)."""
        return sorted(self.echelons.items(), key=lambda kv: kv[1].priority)

    def to_dict(self) -> Dict[str, Any]:
        if self.raw is not None:
            return dict(self.raw)
        out: Dict[str, Any] = {"name": self.name, "fallback_strategy": self.fallback_strategy.value}
        if self.description:
            out["description"] = self.description
        for en, e in self.echelons.items():
            out[en] = _engine_echelon(e)
        if self.circuit_breaker is not None:
            out["circuit_breaker"] = _breaker_dict(self.circuit_breaker)
        if self.fallback_config is not None:
            fc = self.fallback_config
            d: Dict[str, Any] = {"strategy": fc.strategy.value, "fallback_groups": list(fc.fallback_groups), "max_attempts": fc.max_attempts, "retry_delay": fc.retry_delay}
            if fc.circuit_breaker is not None:
                d["circuit_breaker"] = _breaker_dict(fc.circuit_breaker)
            out["fallback_config"] = d
        return out


def _breaker_dict(cb: CircuitBreakerConfig) -> Dict[str, Any]:
    return {"failure_threshold": cb.failure_threshold, "recovery_time": cb.recovery_time, "half_open_requests": cb.half_open_requests}


def _engine_echelon(e: EchelonConfig) -> Dict[str, Any]:
    """An echelon built in code, as the engine reads it (zero means "not set")."""
    if e.raw is not None:
        return dict(e.raw)
    d: Dict[str, Any] = {"models": list(e.models)}
    for k in ("concurrency_limit", "rpm_limit", "priority", "timeout", "max_retries"):
        v = getattr(e, k)
        if v:
            d[k] = v
    if e.temperature is not None:
        d["temperature"] = e.temperature
    if e.max_tokens:
        d["max_tokens"] = e.max_tokens
    for k in ("function_calling", "response_format"):
        if getattr(e, k) is not None:
            d[k] = getattr(e, k)
    if e.thinking_config is not None:
        d["thinking_config"] = {"enabled": e.thinking_config.enabled, "budget_tokens": e.thinking_config.budget_tokens}
    return d


@dataclass
class RateLimitingConfig(_DictLike):
    """``rate_limiting``: token bucket (``bucket_size`` 1000, ``refill_rate`` 16.67/s) or sliding
    window (``window_size`` 60 s, ``max_requests`` 1000)."""

    enabled: bool = True
    algorithm: RateLimitingAlgorithm = RateLimitingAlgorithm.TOKEN_BUCKET
    token_bucket: Dict[str, Any] = field(default_factory=lambda: {"bucket_size": 1000, "refill_rate": 16.67})
    sliding_window: Dict[str, Any] = field(default_factory=lambda: {"window_size": 60, "max_requests": 1000})
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RateLimitingConfig":
        return cls(
            enabled=bool(data.get("enabled", True)),
            algorithm=_enum(RateLimitingAlgorithm, data.get("algorithm"), RateLimitingAlgorithm.TOKEN_BUCKET),
            token_bucket={"bucket_size": 1000, "refill_rate": 16.67, **dict(data.get("token_bucket") or {})},
            sliding_window={"window_size": 60, "max_requests": 1000, **dict(data.get("sliding_window") or {})},
            raw=dict(data),
        )


@dataclass
class PollingPoolFallbackConfig(_DictLike):
    """A pool's ``fallback_config``."""

    strategy: str = "instance_rotation"
    max_instance_attempts: int = 2
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PollingPoolFallbackConfig":
        return cls(strategy=str(data.get("strategy") or "instance_rotation"), max_instance_attempts=int(data.get("max_instance_attempts") or 2), raw=dict(data))


@dataclass
class PollingPoolConfig(_DictLike):
    """One polling pool. The TOML ``[health_check]`` table and ``rotation.strategy`` are read as
    aliases of the flat keys."""

    name: str = ""
    task_groups: List[str] = field(default_factory=list)
    description: str = ""
    rotation_strategy: RotationStrategy = RotationStrategy.ROUND_ROBIN
    health_check_interval: float = 30
    failure_threshold: int = 3
    recovery_time: float = 60
    fallback_config: Optional[PollingPoolFallbackConfig] = None
    rate_limiting: Optional[RateLimitingConfig] = None
    concurrency_control: Optional[Dict[str, Any]] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: Optional[str] = None) -> "PollingPoolConfig":
        hc = data.get("health_check") if isinstance(data.get("health_check"), Mapping) else {}
        rot = data.get("rotation") if isinstance(data.get("rotation"), Mapping) else {}
        fc = data.get("fallback_config")
        rl = data.get("rate_limiting")
        return cls(
            name=str(data.get("name") or name or ""),
            task_groups=list(data.get("task_groups") or []),
            description=str(data.get("description", "") or ""),
            rotation_strategy=_enum(RotationStrategy, data.get("rotation_strategy", rot.get("strategy")), RotationStrategy.ROUND_ROBIN),
            health_check_interval=data.get("health_check_interval", hc.get("interval", 30)),
            failure_threshold=int(data.get("failure_threshold", hc.get("failure_threshold", 3))),
            recovery_time=data.get("recovery_time", hc.get("recovery_time", 60)),
            fallback_config=PollingPoolFallbackConfig.from_dict(fc) if isinstance(fc, Mapping) else None,
            rate_limiting=RateLimitingConfig.from_dict(rl) if isinstance(rl, Mapping) else None,
            concurrency_control=dict(data["concurrency_control"]) if isinstance(data.get("concurrency_control"), Mapping) else None,
            raw=dict(data),
        )

    def to_pool_dict(self) -> Dict[str, Any]:
        """The dict :class:`echelon.compat.PollingPool` takes (the original pool file keys)."""
        if self.raw is not None:
            return dict(self.raw)
        return _plain_dict(self)


def _plain_dict(obj: _DictLike) -> Dict[str, Any]:
    return {k: _plain(getattr(obj, k)) for k in obj.keys() if getattr(obj, k) is not None}


@dataclass
class ConcurrencyControlConfig(_DictLike):
    """``concurrency_control``: ``enabled`` and ``levels`` (one-key tables)."""

    enabled: bool = True
    levels: List[Dict[str, Any]] = field(default_factory=list)
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConcurrencyControlConfig":
        return cls(enabled=bool(data.get("enabled", True)), levels=list(data.get("levels") or []), raw=dict(data))


@dataclass
class GlobalFallbackConfig(_DictLike):
    """``global_fallback``."""

    enabled: bool = True
    max_attempts: int = 3
    retry_delay: float = 1.0
    circuit_breaker: Optional[CircuitBreakerConfig] = None
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GlobalFallbackConfig":
        cb = data.get("circuit_breaker")
        return cls(
            enabled=bool(data.get("enabled", True)),
            max_attempts=int(data.get("max_attempts", 3)),
            retry_delay=float(data.get("retry_delay", 1.0)),
            circuit_breaker=CircuitBreakerConfig.from_dict(cb) if isinstance(cb, Mapping) else None,
            raw=dict(data),
        )


@dataclass
class TaskGroupsConfig(_DictLike):
    """Everything the task group manager knows: groups, pools and the global settings."""

    task_groups: Dict[str, TaskGroupConfig] = field(default_factory=dict)
    polling_pools: Dict[str, PollingPoolConfig] = field(default_factory=dict)
    global_fallback: GlobalFallbackConfig = field(default_factory=GlobalFallbackConfig)
    concurrency_control: ConcurrencyControlConfig = field(default_factory=ConcurrencyControlConfig)
    rate_limiting: RateLimitingConfig = field(default_factory=RateLimitingConfig)
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskGroupsConfig":
        groups = data.get("task_groups", data.get("groups")) or {}
        pools = data.get("polling_pools", data.get("pools")) or {}
        gf = data.get("global_fallback") or {}
        cc = data.get("concurrency_control") or {}
        rl = data.get("rate_limiting") or {}
        return cls(
            task_groups={k: v if isinstance(v, TaskGroupConfig) else TaskGroupConfig.from_dict(v, k) for k, v in groups.items()},
            polling_pools={k: v if isinstance(v, PollingPoolConfig) else PollingPoolConfig.from_dict(v, k) for k, v in pools.items()},
            global_fallback=GlobalFallbackConfig.from_dict(gf),
            concurrency_control=ConcurrencyControlConfig.from_dict(cc),
            rate_limiting=RateLimitingConfig.from_dict(rl),
            raw=dict(data),
        )

    def get_task_group(self, name: str) -> Optional[TaskGroupConfig]:
        return self.task_groups.get(name)

    def get_polling_pool(self, name: str) -> Optional[PollingPoolConfig]:
        return self.polling_pools.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
