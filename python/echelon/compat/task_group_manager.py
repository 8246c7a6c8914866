"""``TaskGroupManager``: reads task groups and polling pools (original YAML registry layout, a
config facade's dict, or an assigned ``TaskGroupsConfig``) and answers the original queries.

It also owns the echelon :class:`~echelon.Router` that pools, wrappers and fallback managers
built on it call through (:meth:`TaskGroupManager.get_router`), so breakers, limits and
connection pools are shared, as they would be with the modern API.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .config_loader import FileConfigLoader
from .exceptions import LLMConfigurationError, register_unavailable
from .task_group_config import (
    EchelonConfig,
    FallbackStrategy,
    GlobalFallbackConfig,
    PollingPoolConfig,
    TaskGroupConfig,
    TaskGroupsConfig,
)

__all__ = ["TaskGroupManager", "ITaskGroupManager"]

log = logging.getLogger(__name__)

# Used when the registry itself cannot be read (what the original hard-coded).
_DEFAULT_GROUPS = ["fast", "plan", "thinking", "execute", "review", "high_payload", "fast_small"]
_DEFAULT_POOLS = ["single_turn", "multi_turn", "high_concurrency"]
_GLOBAL_KEYS = ("global_fallback", "concurrency_control", "rate_limiting")
# Provider types of the original the engine cannot call (the loader skips them with a warning).
_UNCALLABLE = {"human_relay"}

try:  # the original interface, for isinstance checks in user code
    from .interfaces import ITaskGroupManager
except Exception:  # pragma: no cover - interfaces is part of this package
    ITaskGroupManager = object  # type: ignore[misc,assignment]


class TaskGroupManager(ITaskGroupManager):  # type: ignore[misc,valid-type]
    """Task groups and pools: reference parsing, models per group, fallback targets.

    ``config_loader`` may be: an object with ``load(path)`` (old style: the YAML registry
    ``llms/groups/_task_groups.yaml`` is read through it), an object with
    ``get_llm_config()`` (HEAD style: a dict with ``task_groups``/``polling_pools``/…, re-read
    on every call), a directory path (a :class:`FileConfigLoader` over it), a dict (the LLM
    config itself), or ``None`` (assign ``_task_groups_config`` yourself).
    """

    def __init__(self, config_loader: Any = None) -> None:
        if isinstance(config_loader, (str, os.PathLike)):
            config_loader = FileConfigLoader(config_loader)
        elif not (config_loader is None or isinstance(config_loader, Mapping) or hasattr(config_loader, "load") or hasattr(config_loader, "get_llm_config")):
            raise LLMConfigurationError(
                f"TaskGroupManager: expected a config loader (with load(path)), a config facade (with get_llm_config()), a directory path, a dict or None; got {type(config_loader).__name__}",
                config_key="config_loader",
            )
        self.config_loader = config_loader
        self.config_facade = config_loader if hasattr(config_loader, "get_llm_config") else None
        self._static: Optional[Mapping[str, Any]] = config_loader if isinstance(config_loader, Mapping) else None
        self._task_groups_config: Optional[TaskGroupsConfig] = None
        self._config_base_path = "llms"
        self._provider_config: Optional[Dict[str, Any]] = None
        self._router: Any = None
        self._router_lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------
    def _llm_dict(self) -> Optional[Mapping[str, Any]]:
        if self.config_facade is not None:
            return self.config_facade.get_llm_config() or {}
        return self._static

    def _cfg(self) -> TaskGroupsConfig:
        if self._task_groups_config is not None:
            return self._task_groups_config
        d = self._llm_dict()
        if d is not None:
            cfg = TaskGroupsConfig.from_dict(d)
            if self.config_facade is None:
                self._task_groups_config = cfg
            return cfg
        if self.config_loader is not None and hasattr(self.config_loader, "load"):
            self._task_groups_config = self._load_registry()
            return self._task_groups_config
        self._task_groups_config = TaskGroupsConfig()
        return self._task_groups_config

    def _path(self, rel: str) -> str:
        return f"{self._config_base_path}/{rel}" if self._config_base_path else rel

    def _load_registry(self) -> TaskGroupsConfig:
        """The original registry algorithm (§2.7 of the reference): registry entries with
        ``enabled`` and ``file``, keyed by the registry name; failed files are skipped with a
        warning; global files fall back to ``llms/<key>.yaml``; no registry → fixed lists."""
        loader = self.config_loader
        data: Dict[str, Any] = {"task_groups": {}, "polling_pools": {}}
        base = getattr(loader, "base_path", None)
        if isinstance(loader, FileConfigLoader) and not Path(str(base)).is_dir():
            raise LLMConfigurationError(
                f"任务组配置加载失败: config root not found: {base} (from the working directory {os.getcwd()})",
                config_key="base_path",
                config_value=str(base),
            )
        try:
            registry = loader.load(self._path("groups/_task_groups.yaml"))
        except Exception as e:
            log.warning("task group registry not readable (%s); using the built-in list", e)
            registry = None
        if registry is not None:
            for section in ("task_groups", "polling_pools"):
                for name, entry in (registry.get(section) or {}).items():
                    if not isinstance(entry, Mapping) or not entry.get("enabled", True) or not entry.get("file"):
                        continue
                    try:
                        doc = loader.load(self._path(entry["file"]))
                    except Exception as e:
                        log.warning("%s '%s': %s (skipped)", section, name, e)
                        continue
                    if doc.get("name") not in (None, name):
                        log.warning("%s '%s': file says name '%s'; using the registry name", section, name, doc.get("name"))
                    data[section][name] = doc
            globals_ = registry.get("global_configs") or {}
            for key in _GLOBAL_KEYS:
                entry = globals_.get(key)
                if isinstance(entry, Mapping) and not entry.get("enabled", True):
                    data[key] = {}
                    continue
                doc: Dict[str, Any] = {}
                try:
                    doc = loader.load(self._path(entry["file"]))  # type: ignore[index]
                except Exception:
                    try:
                        doc = loader.load(self._path(f"{key}.yaml"))
                    except Exception:
                        doc = {}
                data[key] = doc
        else:
            for section, names, sub, suffix in (("task_groups", _DEFAULT_GROUPS, "groups", "_group"), ("polling_pools", _DEFAULT_POOLS, "polling_pools", "_pool")):
                for n in names:
                    try:
                        doc = loader.load(self._path(f"{sub}/{n}{suffix}.yaml"))
                    except Exception:
                        continue
                    data[section][doc.get("name") or f"{n}{suffix}"] = doc
        try:
            return TaskGroupsConfig.from_dict(data)
        except Exception as e:
            raise LLMConfigurationError(f"任务组配置加载失败: {e}") from e

    def load_config(self) -> TaskGroupsConfig:
        """Load (or re-read) the configuration. The result answers both ``cfg.task_groups``
        and ``cfg["task_groups"]``."""
        if self.config_facade is None and self._static is None:
            self._task_groups_config = None
        return self._cfg()

    def get_config(self) -> TaskGroupsConfig:
        """The configuration (cached; loaded on first use)."""
        return self._cfg()

    def reload_config(self) -> TaskGroupsConfig:
        """Drop caches, re-read, and swap the router's configuration (in-flight calls finish on
        the old one; instances that remain keep their breakers and statistics)."""
        if self.config_facade is not None and hasattr(self.config_facade, "reload_config"):
            self.config_facade.reload_config("llm")
        if self.config_loader is not None and hasattr(self.config_loader, "load"):
            self._task_groups_config = None
        cfg = self._cfg()
        if self._router is not None and getattr(self, "_router_owned", False):
            self._router.reload(self.to_engine_config())
        return cfg

    # -- references -------------------------------------------------------------------
    def parse_group_reference(self, reference: str) -> Tuple[str, Optional[str]]:
        """``"a.b.c"`` → ``("a", "b.c")``; ``"a"`` → ``("a", None)``."""
        if "." in reference:
            g, e = reference.split(".", 1)
            return g, e
        return reference, None

    def get_task_group(self, name: str) -> Optional[TaskGroupConfig]:
        """The group config, or ``None``."""
        return self._cfg().task_groups.get(name)

    def get_polling_pool(self, name: str) -> Optional[PollingPoolConfig]:
        """The pool config, or ``None`` (usable as ``create_pool``'s config)."""
        return self._cfg().polling_pools.get(name)

    def get_echelon_config(self, group_name: str, echelon_name: str) -> Optional[EchelonConfig]:
        """The echelon (or task tier) config, or ``None``."""
        g = self.get_task_group(group_name)
        return g.echelons.get(echelon_name) if g else None

    def get_models_for_group(self, group_reference: str) -> List[str]:
        """Models of ``group.echelon``, or of every echelon of ``group`` concatenated in file
        order; ``[]`` when unknown."""
        gname, ech = self.parse_group_reference(group_reference)
        g = self.get_task_group(gname)
        if g is None:
            return []
        if ech is not None:
            e = g.echelons.get(ech)
            return list(e.models) if e else []
        out: List[str] = []
        for e in g.echelons.values():
            out.extend(e.models)
        return out

    def _priority(self, e: EchelonConfig) -> int:
        if e.raw is not None and "priority" not in e.raw:
            return 999
        return int(e.priority)

    def get_group_models_by_priority(self, group_name: str) -> List[Tuple[str, int, List[str]]]:
        """``[(echelon, priority, models)]`` by ascending priority (lower = preferred; a missing
        priority counts as 999)."""
        g = self.get_task_group(group_name)
        if g is None:
            return []
        items = [(n, self._priority(e), list(e.models)) for n, e in g.echelons.items()]
        return sorted(items, key=lambda t: t[1])

    def get_fallback_groups(self, group_reference: str) -> List[str]:
        """Fallback targets for a reference.

        With a ``fallback_config``: its ``fallback_groups`` without the reference itself and
        without echelons of the same group that are not below it (the original returned the
        list as-is, including itself, §5.17). Otherwise, for ``echelon_down``: the next echelon
        by priority (any echelon name works; the original parsed ``int()`` of the suffix and
        raised on ``echelon_1``)."""
        gname, ech = self.parse_group_reference(group_reference)
        g = self.get_task_group(gname)
        if g is None:
            return []
        order = [n for n, _, _ in self.get_group_models_by_priority(gname)]
        if g.fallback_config:
            out = []
            for r in g.fallback_config.fallback_groups:
                if r == group_reference:
                    continue
                rg, re_ = self.parse_group_reference(r)
                if ech is not None and rg == gname and re_ in order and ech in order and order.index(re_) <= order.index(ech):
                    continue
                out.append(r)
            return out
        if g.fallback_strategy != FallbackStrategy.ECHELON_DOWN or ech is None or ech not in order:
            return []
        i = order.index(ech)
        return [f"{gname}.{order[i + 1]}"] if i + 1 < len(order) else []

    def get_fallback_config(self, group_name: str) -> Dict[str, Any]:
        """``{"strategy", "fallback_groups", "max_attempts", "retry_delay", "circuit_breaker"}``
        (``{}`` for an unknown group). The breaker dict has the configured overrides; without
        a ``fallback_config`` the group's own ``circuit_breaker`` (or the defaults) is used."""
        g = self.get_task_group(group_name)
        if g is None:
            return {}
        default_cb = {"failure_threshold": 5, "recovery_time": 60, "half_open_requests": 1}
        group_cb = {**default_cb, **_cb_dict(g.circuit_breaker)} if g.circuit_breaker else dict(default_cb)
        fc = g.fallback_config
        if fc:
            cb = {**default_cb, **_cb_dict(fc.circuit_breaker)} if fc.circuit_breaker else (group_cb if g.circuit_breaker else None)
            return {"strategy": fc.strategy.value, "fallback_groups": list(fc.fallback_groups), "max_attempts": fc.max_attempts, "retry_delay": fc.retry_delay, "circuit_breaker": cb}
        first = self.get_group_models_by_priority(group_name)
        ref = f"{group_name}.{first[0][0]}" if first else f"{group_name}.echelon1"
        return {"strategy": g.fallback_strategy.value, "fallback_groups": self.get_fallback_groups(ref), "max_attempts": 3, "retry_delay": 1.0, "circuit_breaker": group_cb}

    def get_polling_pool_fallback_config(self, pool_name: str) -> Dict[str, Any]:
        """``{"strategy", "max_instance_attempts"}`` (``{}`` for an unknown pool)."""
        p = self.get_polling_pool(pool_name)
        if p is None:
            return {}
        fc = p.fallback_config
        return {"strategy": (fc.strategy if fc else None) or "instance_rotation", "max_instance_attempts": (fc.max_instance_attempts if fc else None) or 2}

    def validate_group_reference(self, reference: str) -> bool:
        """The group exists and so does the echelon, if one is named."""
        gname, ech = self.parse_group_reference(reference)
        g = self.get_task_group(gname)
        return g is not None and (ech is None or ech in g.echelons)

    def list_task_groups(self) -> List[str]:
        return list(self._cfg().task_groups)

    def list_polling_pools(self) -> List[str]:
        return list(self._cfg().polling_pools)

    def get_global_fallback_config(self) -> GlobalFallbackConfig:
        """The global fallback settings (also readable as a dict)."""
        return self._cfg().global_fallback

    def get_config_status(self) -> Dict[str, Any]:
        """The old 8 keys for a ``config_loader`` manager, the HEAD 6 keys for a facade one."""
        c = self._cfg()
        if self.config_facade is not None:
            return {
                "loaded": True,
                "task_groups_count": len(c.task_groups),
                "polling_pools_count": len(c.polling_pools),
                "has_global_fallback": bool(c.global_fallback.raw),
                "has_concurrency_control": bool(c.concurrency_control.raw),
                "has_rate_limiting": bool(c.rate_limiting.raw),
            }
        return {
            "config_loaded": True,
            "task_groups_count": len(c.task_groups),
            "polling_pools_count": len(c.polling_pools),
            "task_groups": list(c.task_groups),
            "polling_pools": list(c.polling_pools),
            "global_fallback_enabled": c.global_fallback.enabled,
            "concurrency_control_enabled": c.concurrency_control.enabled,
            "rate_limiting_enabled": c.rate_limiting.enabled,
        }

    # -- engine -----------------------------------------------------------------------
    def set_provider_config(self, providers: Mapping[str, Any], models: Optional[Mapping[str, Any]] = None) -> None:
        """Provider definitions for the engine: ``{"<provider>": {"common": {type, base_url,
        api_key, …}, "<model>": {…}}}`` (and optional flat logical ``models``). Only needed when
        they are not next to the groups (``llms/provider/``) or in the facade dict."""
        self._provider_config = {"providers": dict(providers), "models": dict(models or {})}

    def _discover_providers(self) -> Dict[str, Any]:
        if self._provider_config is not None:
            return self._provider_config
        out: Dict[str, Any] = {"providers": {}, "models": {}}
        d = self._llm_dict()
        if d is not None:
            out["providers"] = dict(d.get("providers") or d.get("provider") or {})
            out["models"] = dict(d.get("models") or {})
            return out
        loader = self.config_loader
        base = getattr(loader, "base_path", None)
        if base is None:
            return out
        base = Path(base)
        pdir = base / self._config_base_path / "provider"  # an absolute _config_base_path wins
        if not pdir.is_dir():
            return out
        for p in sorted(x for x in pdir.iterdir() if x.is_dir()):
            docs: Dict[str, Any] = {}
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml", ".toml", ".json") and not f.name.startswith(("_", ".")))
            for f in files:
                # Relative to the loader's root when under it (the loader joins its root again),
                # else absolute; a relative root is never applied twice.
                try:
                    rel: Any = f.relative_to(base)
                except ValueError:
                    rel = f.resolve()
                try:
                    docs[f.stem] = loader.load(str(rel))
                except LLMConfigurationError:
                    raise
                except Exception as e:
                    raise LLMConfigurationError(f"provider file {f}: {e}", config_key=str(f)) from e
            if docs:
                out["providers"][p.name] = docs
        return out

    def to_engine_config(self) -> Dict[str, Any]:
        """The configuration as :meth:`echelon.Router.from_dict` takes it: providers (from
        ``llms/provider/``, the facade dict's ``providers``, or :meth:`set_provider_config`),
        the groups (their original keys), and the global fallback settings. Pools are not
        included: compat pools select their instances in Python and call them directly."""
        c = self._cfg()
        prov = self._discover_providers()
        groups: Dict[str, Any] = {}
        for name, g in c.task_groups.items():
            d = g.to_dict()
            if isinstance(d.get("echelons"), Mapping):  # HEAD dict shape → top-level echelons
                for k, v in d.pop("echelons").items():
                    d.setdefault(k, v)
            d["name"] = name
            groups[name] = d
        # The documents are the original layout's: read as leniently as its YAML files.
        cfg: Dict[str, Any] = {"layout": "original", "providers": prov["providers"], "groups": groups}
        if prov.get("models"):
            cfg["models"] = prov["models"]
        if c.global_fallback.raw:
            cfg["global_fallback"] = dict(c.global_fallback.raw)
        return cfg

    def get_router(self) -> Any:
        """The shared :class:`echelon.Router` for this configuration (built on first use).

        A model that resolves nowhere is an :class:`LLMConfigurationError` naming the model
        and the group/echelon that references it."""
        with self._router_lock:
            if self._router is None:
                from ..errors import ConfigError
                from ..router import Router

                try:
                    self._router = Router.from_dict(self.to_engine_config())
                except ConfigError as e:
                    raise LLMConfigurationError(f"任务组配置无法构建路由 (cannot build the router): {e}", details={"issues": list(getattr(e, "issues", []))}) from e
                except LLMConfigurationError:
                    raise
                except Exception as e:  # a loader's own error (file missing, parse error, …)
                    raise LLMConfigurationError(f"任务组配置无法构建路由 (cannot build the router): {e}") from e
                self._router_owned = True
                register_unavailable(self.unavailable_models())
            return self._router

    def unavailable_models(self) -> Dict[str, str]:
        """Models that provider files define but the engine cannot call (a ``human_relay``
        provider), with why. Calls routed to them fail with an error saying so."""
        out: Dict[str, str] = {}
        try:
            providers = self._discover_providers().get("providers") or {}
        except Exception:  # noqa: BLE001 - nothing to explain without provider files
            return out
        for pname, docs in providers.items():
            if not isinstance(docs, Mapping):
                continue
            kinds = {str(d.get(k)) for d in docs.values() if isinstance(d, Mapping) for k in ("type", "model_type", "provider_type") if d.get(k)}
            for kind in kinds & _UNCALLABLE:
                for key, d in docs.items():
                    if key != "common" and isinstance(d, Mapping):
                        out[str(d.get("name") or key)] = f"its provider '{pname}' is of type '{kind}', which the engine cannot call (a person relays the prompt)"
        return out

    def set_router(self, router: Any) -> None:
        """Use an existing :class:`echelon.Router` (it must define the groups referenced)."""
        with self._router_lock:
            self._router = router
            self._router_owned = False

    @property
    def router(self) -> Any:
        """Same as :meth:`get_router`."""
        return self.get_router()

    @router.setter
    def router(self, value: Any) -> None:
        self.set_router(value)

    def close(self) -> None:
        """Close the router this manager built (idempotent)."""
        with self._router_lock:
            if self._router is not None and getattr(self, "_router_owned", False):
                self._router.close()
            self._router = None


def _cb_dict(cb: Any) -> Dict[str, Any]:
    if cb is None:
        return {}
    raw = getattr(cb, "raw", None)
    if raw:
        out = {k: v for k, v in raw.items() if k in ("failure_threshold", "recovery_time", "half_open_requests")}
        if "reset_timeout" in raw and "recovery_time" not in out:
            out["recovery_time"] = raw["reset_timeout"]
        return out
    return {"failure_threshold": cb.failure_threshold, "recovery_time": cb.recovery_time, "half_open_requests": cb.half_open_requests}
