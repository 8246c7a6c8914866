"""Polling pools of the original (``polling_pool.py``): instances, schedulers, health checks.

The classes keep the original names, fields, formulas and status dicts, and now do real work:
``PollingPool.call_llm`` calls the selected instance's model through the echelon engine (the
router owned by the task group manager), ``get_instance`` honours the pool's concurrency and
rate limits and the echelon's ``concurrency_limit``/``rpm_limit``, and ``HealthChecker`` probes
the provider's model-list endpoint. See docs/migration.md for every behaviour change.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Callable, Dict, List, Optional

from ._probe import probe_endpoint, resolve_endpoint
from .concurrency_controller import ConcurrencyAndRateLimitManager, ConcurrencyLevel, RateLimiter
from .exceptions import LLMError, from_echelon_error
from .interfaces import IPollingPoolManager

__all__ = [
    "InstanceStatus",
    "RotationStrategy",
    "LLMInstance",
    "Scheduler",
    "RoundRobinScheduler",
    "LeastRecentlyUsedScheduler",
    "WeightedScheduler",
    "HealthChecker",
    "PollingPool",
    "PollingPoolManager",
]

log = logging.getLogger(__name__)


class InstanceStatus(Enum):
    """Health of an instance."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    RECOVERING = "recovering"


class RotationStrategy(Enum):
    """How a pool picks an instance."""

    ROUND_ROBIN = "round_robin"
    LEAST_RECENTLY_USED = "least_recently_used"
    WEIGHTED = "weighted"


@dataclass(eq=False)
class LLMInstance:
    """One model of one echelon, as a pool member. Every attribute is assignable.

    Added fields: ``config`` (the echelon settings and the model, which the original wrapper
    looked for), ``health_failures`` (consecutive failed probes; the original reused
    ``failure_count`` and wiped the request-failure count every cycle) and ``failed_at``."""

    instance_id: str
    model_name: str
    group_name: str
    echelon: str
    client: Any = None
    status: InstanceStatus = InstanceStatus.HEALTHY
    last_health_check: datetime = field(default_factory=datetime.now)
    failure_count: int = 0
    success_count: int = 0
    avg_response_time: float = 0.0
    current_load: int = 0
    max_concurrency: int = 10
    weight: float = 1.0
    last_used: Optional[datetime] = None
    config: Dict[str, Any] = field(default_factory=dict)
    health_failures: int = 0
    failed_at: Optional[float] = None
    #: Why the engine cannot call this instance's model (``None`` when it can).
    unavailable_reason: Optional[str] = None

    def is_available(self) -> bool:
        """HEALTHY or DEGRADED."""
        return self.status in (InstanceStatus.HEALTHY, InstanceStatus.DEGRADED)

    def can_accept_request(self) -> bool:
        """Available and below ``max_concurrency``."""
        return self.is_available() and self.current_load < self.max_concurrency

    def update_performance(self, response_time: float, success: bool) -> None:
        """Record one call: the running average is over all calls, failures add no time."""
        if success:
            self.success_count += 1
            total = self.success_count + self.failure_count
            if total == 1:
                self.avg_response_time = response_time
            else:
                self.avg_response_time = (self.avg_response_time * (total - 1) + response_time) / total
        else:
            self.failure_count += 1
        self.last_used = datetime.now()


class Scheduler:
    """Picks one instance among those that can accept a request (``None`` if none)."""

    def select_instance(self, instances: List[LLMInstance]) -> Optional[LLMInstance]:
        raise NotImplementedError

    @staticmethod
    def _available(instances: List[LLMInstance]) -> List[LLMInstance]:
        return [i for i in instances if i.can_accept_request()]


class RoundRobinScheduler(Scheduler):
    """``available[current_index % len(available)]``, then the index moves on."""

    def __init__(self) -> None:
        self.current_index = 0

    def select_instance(self, instances: List[LLMInstance]) -> Optional[LLMInstance]:
        available = self._available(instances)
        if not available:
            return None
        inst = available[self.current_index % len(available)]
        self.current_index += 1
        return inst


class LeastRecentlyUsedScheduler(Scheduler):
    """The available instance with the oldest ``last_used`` (never used first; ties: list order).

    The choice is stamped at selection time, so concurrent requests spread over the instances
    (the original stamped only after the call finished, so they piled onto one, §5.15)."""

    def select_instance(self, instances: List[LLMInstance]) -> Optional[LLMInstance]:
        available = self._available(instances)
        if not available:
            return None
        inst = min(available, key=lambda i: i.last_used or datetime.min)
        inst.last_used = datetime.now()
        return inst


class WeightedScheduler(Scheduler):
    """Random draw on ``max(0.1, weight × perf × reliability × load)``."""

    def calculate_weight(self, instance: LLMInstance) -> float:
        perf = 1.0 / instance.avg_response_time if instance.avg_response_time > 0 else 1.0
        total = instance.success_count + instance.failure_count
        reliability = instance.success_count / total if total > 0 else 1.0
        load = 1 - instance.current_load / instance.max_concurrency if instance.max_concurrency else 0.0
        return max(0.1, instance.weight * perf * reliability * load)

    def select_instance(self, instances: List[LLMInstance]) -> Optional[LLMInstance]:
        available = self._available(instances)
        if not available:
            return None
        weights = [self.calculate_weight(i) for i in available]
        total = sum(weights)
        if total <= 0:
            return available[0]
        r = random.uniform(0, total)
        acc = 0.0
        for inst, w in zip(available, weights):
            acc += w
            if acc >= r:
                return inst
        return available[-1]


class HealthChecker:
    """Periodic active probes. ``failure_threshold`` consecutive failed probes → FAILED; a
    FAILED instance is probed again after ``recovery_time`` seconds and goes RECOVERING, then
    HEALTHY after one more good probe; a DEGRADED instance returns to HEALTHY on a good probe.

    ``probe`` is an async callable ``(instance) -> bool`` (the pool sets one that GETs the
    provider's model list). Without one, :meth:`_perform_health_check` probes
    ``instance.config["base_url"]`` when present and otherwise reports ``None`` (no evidence:
    the instance is left as it is)."""

    def __init__(self, check_interval: int = 30) -> None:
        self.check_interval = check_interval
        self.running = False
        self.failure_threshold = 3
        self.recovery_time: float = 60
        self.probe: Optional[Callable[[LLMInstance], Any]] = None

    async def start(self, instances: List[LLMInstance], health_check_callback: Optional[Callable[[LLMInstance], Any]] = None) -> None:
        """Check every instance, sleep ``check_interval``, repeat until :meth:`stop`."""
        self.running = True
        while self.running:
            await asyncio.gather(*(self._check_instance_health(i, health_check_callback) for i in list(instances)), return_exceptions=True)
            if not self.running:
                break
            await asyncio.sleep(self.check_interval)

    def stop(self) -> None:
        """Stop after the current cycle (the pool also cancels its task)."""
        self.running = False

    async def _check_instance_health(self, instance: LLMInstance, callback: Optional[Callable[[LLMInstance], Any]] = None) -> None:
        if instance.status == InstanceStatus.FAILED and instance.failed_at is not None:
            if time.monotonic() - instance.failed_at < self.recovery_time:
                return
        try:
            healthy = await self._perform_health_check(instance)
        except Exception as e:
            log.debug("health probe of %s raised %s", instance.instance_id, e)
            healthy = False
        if healthy is not None:
            self._apply(instance, bool(healthy))
        instance.last_health_check = datetime.now()
        if callback is not None:
            r = callback(instance)
            if asyncio.iscoroutine(r):
                await r

    def _apply(self, instance: LLMInstance, healthy: bool) -> None:
        if healthy:
            instance.health_failures = 0
            if instance.status == InstanceStatus.FAILED:
                instance.status = InstanceStatus.RECOVERING
            elif instance.status in (InstanceStatus.RECOVERING, InstanceStatus.DEGRADED, InstanceStatus.UNHEALTHY):
                instance.status = InstanceStatus.HEALTHY
            return
        instance.health_failures += 1
        if instance.health_failures >= self.failure_threshold or instance.status == InstanceStatus.RECOVERING:
            if instance.status != InstanceStatus.FAILED:
                log.info("instance %s is now failed (%d failed probes)", instance.instance_id, instance.health_failures)
            instance.status = InstanceStatus.FAILED
            instance.failed_at = time.monotonic()
        elif instance.status == InstanceStatus.HEALTHY:
            instance.status = InstanceStatus.DEGRADED

    async def _perform_health_check(self, instance: LLMInstance) -> Optional[bool]:
        """One probe: True healthy, False unhealthy, None no evidence."""
        if self.probe is not None:
            return await self.probe(instance)
        base = (instance.config or {}).get("base_url")
        if base:
            return await probe_endpoint({"kind": instance.config.get("type", "openai"), "base_url": str(base).rstrip("/"), "api_key": instance.config.get("api_key")})
        return None


_GEN_KEYS = ("temperature", "max_tokens")


class PollingPool:
    """A pool of instances built from task-group references, with rotation, limits, health
    checks and real calls. ``config`` is the original pool dict (or a ``PollingPoolConfig``)."""

    def __init__(self, name: str, config: Dict[str, Any], task_group_manager: Any) -> None:
        if hasattr(config, "to_pool_dict"):
            config = config.to_pool_dict()
        self.name = name
        self.config: Dict[str, Any] = dict(config or {})
        self.task_group_manager = task_group_manager
        self.instances: List[LLMInstance] = []
        self.scheduler = self._create_scheduler()
        hc = self.config.get("health_check") if isinstance(self.config.get("health_check"), dict) else {}
        self.health_checker = HealthChecker(self.config.get("health_check_interval", hc.get("interval", 30)))
        self.health_checker.failure_threshold = int(self.config.get("failure_threshold", hc.get("failure_threshold", 3)))
        self.health_checker.recovery_time = float(self.config.get("recovery_time", hc.get("recovery_time", 60)))
        self.health_checker.probe = self._probe_instance
        self.concurrency_manager = ConcurrencyAndRateLimitManager(
            self.config.get("concurrency_control", {"enabled": False}), self.config.get("rate_limiting", {"enabled": False})
        )
        self.stats: Dict[str, Any] = {"total_requests": 0, "successful_requests": 0, "failed_requests": 0, "avg_response_time": 0.0}
        self.last_response: Any = None
        self._health_task: Optional["asyncio.Task[None]"] = None
        # State is shared with worker threads of the sync wrapper path: one lock (§5.15).
        self._lock = threading.RLock()
        self._rpm: Dict[str, RateLimiter] = {}
        self._held: Dict[str, List[List[Any]]] = {}
        self._endpoints: Dict[str, Any] = {}

    def _create_scheduler(self) -> Scheduler:
        strategy = RotationStrategy(self.config.get("rotation_strategy", (self.config.get("rotation") or {}).get("strategy", "round_robin")))
        if strategy == RotationStrategy.ROUND_ROBIN:
            return RoundRobinScheduler()
        if strategy == RotationStrategy.LEAST_RECENTLY_USED:
            return LeastRecentlyUsedScheduler()
        return WeightedScheduler()

    # -- setup ------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Build the instances of every ``task_groups`` reference and start health checks."""
        for ref in self.config.get("task_groups", []) or []:
            self._create_instances_from_task_group(ref)
        self._mark_unresolved()
        if self.health_checker.check_interval and self.health_checker.check_interval > 0:
            self._health_task = asyncio.get_running_loop().create_task(self.health_checker.start(self.instances), name=f"compat-health-{self.name}")

    def _mark_unresolved(self) -> None:
        """Instances whose model the engine cannot call (no provider defines it, or its
        provider is of a type the engine cannot call: `echelon check` says which) are FAILED,
        with ``unavailable_reason`` saying why, so rotation skips them; the engine leaves them
        out of their echelons the same way. An instance with an injected ``client`` is left as
        it is (set its ``status`` back yourself if you injected one afterwards)."""
        tgm = self.task_group_manager
        if not hasattr(tgm, "to_engine_config") or getattr(tgm, "_router", None) is not None and not getattr(tgm, "_router_owned", False):
            return  # a router injected by the user: its configuration is not known here
        try:
            from .. import _core

            resolved = _core.config_from_dict(tgm.to_engine_config())
        except Exception as e:  # no usable engine configuration: nothing to tell
            log.debug("pool %s: cannot check which models resolve: %s", self.name, e)
            return
        models, providers = resolved.get("models") or {}, resolved.get("providers") or {}
        for inst in self.instances:
            m = inst.model_name
            ok = m in models or (":" in m and m.split(":", 1)[0] in providers)
            if ok or inst.client is not None:
                continue
            inst.status = InstanceStatus.FAILED
            inst.unavailable_reason = f"model '{m}' resolves nowhere: no provider defines it, or its provider cannot be called (see `echelon check`)"
            log.warning("pool %s: instance %s is left out: %s", self.name, inst.instance_id, inst.unavailable_reason)

    def _create_instances_from_task_group(self, ref: str) -> None:
        """Instances ``f"{ref}_{model}"``. For a bare group reference each echelon's models get
        the echelon in the id (``"group.echelon1_model"``, the engine's id) and their real
        echelon label, so ids never collide (the original gave duplicates, §5.19)."""
        try:
            tgm = self.task_group_manager
            gname, ech = tgm.parse_group_reference(ref)
            pairs: List[tuple] = []
            group = tgm.get_task_group(gname) if hasattr(tgm, "get_task_group") else None
            echelons = getattr(group, "echelons", None) if group is not None else None
            if ech is None and isinstance(echelons, dict):
                for en in echelons:
                    for m in tgm.get_models_for_group(f"{gname}.{en}"):
                        pairs.append((f"{gname}.{en}_{m}", m, en))
            else:
                for m in tgm.get_models_for_group(ref):
                    pairs.append((f"{ref}_{m}", m, ech or "default"))
            existing = {i.instance_id for i in self.instances}
            seen_here: Dict[str, int] = {}
            for iid, model, en in pairs:
                n = seen_here.get(iid, 0) + 1
                seen_here[iid] = n
                uid = iid if n == 1 else f"{iid}#{n}"
                if uid in existing:
                    continue  # the same instance reached through two references
                ecfg = tgm.get_echelon_config(gname, en) if en != "default" and hasattr(tgm, "get_echelon_config") else None
                raw = dict(getattr(ecfg, "raw", None) or (ecfg if isinstance(ecfg, dict) else {}) or {})
                inst = LLMInstance(instance_id=uid, model_name=model, group_name=gname, echelon=en, client=None)
                limit = int(raw.get("concurrency_limit") or 0)
                if limit > 0:
                    inst.max_concurrency = limit
                inst.config = {**raw, "model": model, "group": gname, "echelon": en}
                if int(raw.get("rpm_limit") or 0) > 0:
                    self._rpm[uid] = RateLimiter({"algorithm": "sliding_window", "sliding_window": {"window_size": 60, "max_requests": int(raw["rpm_limit"])}})
                self.instances.append(inst)
                existing.add(uid)
        except Exception as e:  # the original logged and carried on with the other references
            log.error("pool %s: cannot create instances for '%s': %s", self.name, ref, e)

    # -- selection --------------------------------------------------------------------
    def _levels(self, inst: LLMInstance) -> List[tuple]:
        return [(ConcurrencyLevel.GROUP, inst.group_name), (ConcurrencyLevel.ECHELON, f"{inst.group_name}.{inst.echelon}"), (ConcurrencyLevel.MODEL, inst.model_name)]

    async def get_instance(self) -> Optional[LLMInstance]:
        """Select an instance and count it as loaded (``current_load += 1``). Honours the
        pool's ``rate_limiting`` and ``concurrency_control`` and each echelon's ``rpm_limit``
        (the original skipped every limit, §5.11): ``None`` when nothing may take a request.
        Pair every returned instance with :meth:`release_instance`."""
        cm = self.concurrency_manager
        cc = cm.concurrency_controller
        rpm = self._rpm
        with self._lock:
            candidates = [i for i in self.instances if i.instance_id not in rpm or rpm[i.instance_id].can_proceed()] if rpm else self.instances
            inst = self.scheduler.select_instance(candidates)
            if inst is None:
                return None
            if not cm.rate_limiter.can_proceed():
                return None
            inst.current_load += 1
        held: List[Any] = []
        for level, ident in self._levels(inst) if cc.enabled else ():
            if not cc.can_execute(level, ident) or not await cc.acquire_permission(level, ident, timeout=0):
                for lv, idt in held:
                    cc.release_permission(lv, idt)
                with self._lock:
                    inst.current_load = max(0, inst.current_load - 1)
                return None
            held.append((level, ident))
        if not cm.rate_limiter.consume() or (inst.instance_id in self._rpm and not self._rpm[inst.instance_id].consume()):
            for lv, idt in held:
                cm.concurrency_controller.release_permission(lv, idt)
            with self._lock:
                inst.current_load = max(0, inst.current_load - 1)
            return None
        with self._lock:
            self._held.setdefault(inst.instance_id, []).append(held)
        return inst

    def release_instance(self, instance: LLMInstance) -> None:
        """Undo one :meth:`get_instance`: load − 1 (never below 0) and its concurrency slots."""
        with self._lock:
            if instance.current_load > 0:
                instance.current_load -= 1
            stack = self._held.get(instance.instance_id)
            held = stack.pop() if stack else []
        for lv, idt in held:
            self.concurrency_manager.concurrency_controller.release_permission(lv, idt)

    # -- calls ------------------------------------------------------------------------
    def _router(self) -> Any:
        return self.task_group_manager.get_router()

    def _record(self, instance: LLMInstance, response_time: float, success: bool, count_on_instance: bool = True) -> None:
        """Pool stats (+ the instance's performance unless the caller counted it already)."""
        with self._lock:
            self.stats["total_requests"] += 1
            if success:
                self.stats["successful_requests"] += 1
                n = self.stats["successful_requests"]
                self.stats["avg_response_time"] = (self.stats["avg_response_time"] * (n - 1) + response_time) / n
            else:
                self.stats["failed_requests"] += 1
            if count_on_instance:
                instance.update_performance(response_time if success else 0, success)
            else:
                total = instance.success_count + instance.failure_count
                if success and total > 0:
                    instance.avg_response_time = (instance.avg_response_time * (total - 1) + response_time) / total
                instance.last_used = datetime.now()

    async def call_llm(self, prompt: str, **kwargs: Any) -> str:
        """Call one instance and return the generated text. Raises :class:`LLMError`
        ``"没有可用的LLM实例"`` when no instance may take the request, and the mapped
        ``LLMCallError`` subclass when the call fails."""
        instance = await self.get_instance()
        if instance is None:
            left_out = [f"{i.instance_id}: {i.unavailable_reason}" for i in self.instances if i.unavailable_reason]
            if left_out and len(left_out) == len(self.instances):
                raise LLMError(f"没有可用的LLM实例 (pool '{self.name}': every instance is left out; " + "; ".join(left_out) + ")")
            raise LLMError("没有可用的LLM实例")
        start = time.perf_counter()
        try:
            result = await self._call_instance(instance, prompt, **kwargs)
        except BaseException:
            self._record(instance, 0.0, False)
            raise
        else:
            self._record(instance, time.perf_counter() - start, True)
            return result
        finally:
            self.release_instance(instance)

    def instance_params(self, instance: LLMInstance) -> Dict[str, Any]:  # noqa: D401
        """Generation defaults of the instance's echelon (``temperature``, ``max_tokens``) and
        its per-call ``timeout``, as keyword arguments for :meth:`echelon.Router.chat`."""
        cfg = instance.config or {}
        out = {k: cfg[k] for k in _GEN_KEYS if cfg.get(k) is not None}
        if cfg.get("timeout"):
            out["timeout"] = float(cfg["timeout"])
        return out

    async def _call_instance(self, instance: LLMInstance, prompt: Any, **kwargs: Any) -> str:
        """Send ``prompt`` to exactly this instance's model through the engine (its retries,
        timeouts, breaker and connection pool) and return the text."""
        params = {**self.instance_params(instance), **kwargs}
        router = self._router()
        try:
            resp = await router.chat(prompt, **engine_route(router, instance), **params)
        except LLMError:
            raise
        except Exception as e:
            from ..errors import EchelonError

            if isinstance(e, EchelonError):
                raise from_echelon_error(e, instance.model_name) from e
            raise
        self.last_response = resp
        return resp.content

    async def _probe_instance(self, instance: LLMInstance) -> Optional[bool]:
        if instance.unavailable_reason and instance.client is None:
            return None  # nothing to probe: the engine cannot call it
        ep = self._endpoints.get(instance.model_name, False)
        if ep is False:
            try:
                ep = resolve_endpoint(self.task_group_manager.to_engine_config(), instance.model_name)
            except Exception:
                ep = None
            self._endpoints[instance.model_name] = ep
        if ep is None:
            return None
        return await probe_endpoint(ep)

    # -- status -----------------------------------------------------------------------
    def get_status(self) -> Dict[str, Any]:
        """Exactly ``name, total_instances, healthy_instances, degraded_instances,
        failed_instances, stats, concurrency_status``."""
        with self._lock:
            return {
                "name": self.name,
                "total_instances": len(self.instances),
                "healthy_instances": sum(1 for i in self.instances if i.status == InstanceStatus.HEALTHY),
                "degraded_instances": sum(1 for i in self.instances if i.status == InstanceStatus.DEGRADED),
                "failed_instances": sum(1 for i in self.instances if i.status == InstanceStatus.FAILED),
                "stats": self.stats,
                "concurrency_status": self.concurrency_manager.get_status(),
            }

    async def shutdown(self) -> None:
        """Stop and cancel the health-check task (the original left it running, §5.20)."""
        self.health_checker.stop()
        task, self._health_task = self._health_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                if task.get_loop() is asyncio.get_running_loop():
                    await task
            except (asyncio.CancelledError, Exception):
                pass
        log.info("polling pool %s shut down", self.name)


class PollingPoolManager(IPollingPoolManager):
    """Named pools over one task group manager."""

    def __init__(self, task_group_manager: Any) -> None:
        self.task_group_manager = task_group_manager
        self.pools: Dict[str, PollingPool] = {}

    async def create_pool(self, name: str, config: Dict[str, Any]) -> PollingPool:
        """Build, initialise and register a pool. An existing pool of that name is shut down
        first (the original leaked its health task, §5.20)."""
        old = self.pools.get(name)
        if old is not None:
            await old.shutdown()
        pool = PollingPool(name, config, self.task_group_manager)
        await pool.initialize()
        self.pools[name] = pool
        return pool

    def get_pool(self, name: str) -> Optional[PollingPool]:
        return self.pools.get(name)

    def get_all_status(self) -> Dict[str, Dict[str, Any]]:
        return {n: p.get_status() for n, p in self.pools.items()}

    def list_all_status(self) -> Dict[str, Dict[str, Any]]:
        """Alias of :meth:`get_all_status` (the interface name)."""
        return self.get_all_status()

    async def shutdown_all(self) -> None:
        for p in list(self.pools.values()):
            await p.shutdown()
        self.pools.clear()


def engine_route(router: Any, instance: Any) -> Dict[str, Any]:
    """Routing keywords that send a call to exactly ``instance`` in the engine: its own
    breaker, limits and statistics (``route="instance:<id>"``), or the model directly when
    the engine has no instance of that id (instances built by hand)."""
    cached = getattr(instance, "_engine_route", None)
    if cached is not None:
        return cached
    ids = getattr(router, "instances", None)
    if ids is not None and instance.instance_id in ids:
        route: Dict[str, Any] = {"route": f"instance:{instance.instance_id}"}
    else:
        route = {"model": instance.model_name}
    try:
        instance._engine_route = route
    except AttributeError:
        pass
    return route
