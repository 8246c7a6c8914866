"""Concurrency levels and rate limiting of the original (``concurrency_controller.py``).

Same names, defaults and status dicts. Fixed (see docs/migration.md): configured levels
(``group_level: {limit, queue_size}``) apply to every identifier of that level; a saturated
limit makes ``check_and_acquire``/``acquire_permission`` wait (up to ``queue_size`` waiters)
until a slot is released or the timeout passes, woken by the release instead of polling;
token-bucket keys written at the top level are read too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

__all__ = ["ConcurrencyLevel", "ConcurrencyLimit", "ConcurrencyController", "RateLimiter", "ConcurrencyAndRateLimitManager"]


class ConcurrencyLevel(Enum):
    """Where a concurrency limit applies."""

    GROUP = "group"
    ECHELON = "echelon"
    MODEL = "model"
    NODE = "node"


@dataclass
class ConcurrencyLimit:
    """An in-flight counter with a limit. ``waiting_queue`` holds the coroutines waiting for a
    slot (at most ``queue_size``)."""

    limit: int
    queue_size: int
    current_count: int = 0
    waiting_queue: List[Any] = field(default_factory=list)
    lock: Any = field(default_factory=threading.Lock)

    def can_acquire(self) -> bool:
        """Whether a slot is free now."""
        return self.current_count < self.limit

    def acquire(self) -> bool:
        """Take a slot if one is free (atomic)."""
        with self.lock:
            if self.current_count < self.limit:
                self.current_count += 1
                return True
            return False

    def release(self) -> None:
        """Return a slot (never below 0) and wake one waiter."""
        with self.lock:
            if self.current_count > 0:
                self.current_count -= 1
            waiters = list(self.waiting_queue)
        for loop, fut in waiters:
            if not fut.done():
                loop.call_soon_threadsafe(_wake, fut)
                break

    def get_status(self) -> Dict[str, int]:
        """``{"limit", "current", "available", "queue_size"}`` (``queue_size`` = waiters now)."""
        return {"limit": self.limit, "current": self.current_count, "available": max(0, self.limit - self.current_count), "queue_size": len(self.waiting_queue)}

    async def acquire_wait(self, timeout: float) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds; False when the wait queue is full or
        the time is up."""
        if self.acquire():
            return True
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.lock:
            if len(self.waiting_queue) >= self.queue_size:
                return False
        while True:
            fut = loop.create_future()
            entry = (loop, fut)
            with self.lock:
                self.waiting_queue.append(entry)
            try:
                if self.acquire():
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(fut, left)
                except asyncio.TimeoutError:
                    return self.acquire()
            finally:
                with self.lock:
                    if entry in self.waiting_queue:
                        self.waiting_queue.remove(entry)
            if self.acquire():
                return True


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


class ConcurrencyController:
    """Limits per ``(level, identifier)``. ``config``: ``{"enabled": bool, "levels": [{"group_level":
    {"limit": 100, "queue_size": 1000}}, …]}``; an empty dict counts as enabled."""

    def __init__(self, config: Dict[str, Any]) -> None:
        self.config = config or {}
        self.enabled = self.config.get("enabled", True)
        self.limits: Dict[str, ConcurrencyLimit] = {}
        self._level_defaults: Dict[str, Tuple[int, int]] = {}
        self._lock = threading.Lock()
        for entry in self.config.get("levels", []) or []:
            if not isinstance(entry, Mapping):
                continue
            for level_name, spec in entry.items():
                spec = spec or {}
                limit, queue = int(spec.get("limit", 100)), int(spec.get("queue_size", 1000))
                self.limits[level_name] = ConcurrencyLimit(limit=limit, queue_size=queue)
                self._level_defaults[level_name.replace("_level", "")] = (limit, queue)

    def _key(self, level: ConcurrencyLevel, identifier: str) -> str:
        return f"{level.value}_{identifier}"

    def _limit(self, level: ConcurrencyLevel, identifier: str) -> Optional[ConcurrencyLimit]:
        key = self._key(level, identifier)
        lim = self.limits.get(key)
        if lim is None and level.value in self._level_defaults:
            with self._lock:
                lim = self.limits.get(key)
                if lim is None:
                    limit, queue = self._level_defaults[level.value]
                    lim = self.limits[key] = ConcurrencyLimit(limit=limit, queue_size=queue)
        return lim

    def can_execute(self, level: ConcurrencyLevel, identifier: str) -> bool:
        """True when disabled, unlimited, or a slot is free."""
        if not self.enabled:
            return True
        lim = self._limit(level, identifier)
        return lim is None or lim.can_acquire()

    async def acquire_permission(self, level: ConcurrencyLevel, identifier: str, timeout: float = 30.0) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds."""
        if not self.enabled:
            return True
        lim = self._limit(level, identifier)
        if lim is None:
            return True
        return await lim.acquire_wait(timeout)

    def release_permission(self, level: ConcurrencyLevel, identifier: str) -> None:
        """Return a slot."""
        if not self.enabled:
            return
        lim = self.limits.get(self._key(level, identifier))
        if lim is not None:
            lim.release()

    def get_status(self) -> Dict[str, Any]:
        """``{"enabled": False}`` or ``{"enabled": True, "limits": {key: status}}``."""
        if not self.enabled:
            return {"enabled": False}
        return {"enabled": True, "limits": {k: v.get_status() for k, v in list(self.limits.items())}}

    def update_limit(self, level: ConcurrencyLevel, identifier: str, limit: int, queue_size: int = 1000) -> None:
        """Set (and reset) the limit of one identifier."""
        self.limits[self._key(level, identifier)] = ConcurrencyLimit(limit=limit, queue_size=queue_size)

    def get_limit(self, level: ConcurrencyLevel, identifier: str) -> Optional[ConcurrencyLimit]:
        """The limit of one identifier, or ``None``."""
        return self.limits.get(self._key(level, identifier))


class RateLimiter:
    """Token bucket (``token_bucket: {bucket_size 1000, refill_rate 16.67/s}``) or sliding window
    (``sliding_window: {window_size 60 s, max_requests 1000}``); ``enabled`` defaults to True."""

    def __init__(self, config: Dict[str, Any]) -> None:
        self.config = config or {}
        self.enabled = self.config.get("enabled", True)
        self.algorithm = self.config.get("algorithm", "token_bucket")
        self.lock = threading.Lock()
        tb = dict(self.config.get("token_bucket") or {})
        self.bucket_size = float(tb.get("bucket_size", self.config.get("bucket_size", 1000)))
        self.refill_rate = float(tb.get("refill_rate", self.config.get("refill_rate", 16.67)))
        self.current_tokens = self.bucket_size
        self.last_refill = time.monotonic()
        sw = dict(self.config.get("sliding_window") or {})
        self.window_size = float(sw.get("window_size", self.config.get("window_size", 60)))
        self.max_requests = int(sw.get("max_requests", self.config.get("max_requests", 1000)))
        self.requests: Deque[float] = deque()

    def _refill(self) -> None:
        now = time.monotonic()
        self.current_tokens = min(self.bucket_size, self.current_tokens + (now - self.last_refill) * self.refill_rate)
        self.last_refill = now

    def _prune(self) -> None:
        cut = time.monotonic() - self.window_size
        while self.requests and self.requests[0] <= cut:
            self.requests.popleft()

    def can_proceed(self) -> bool:
        """Whether one request may go now (nothing is taken)."""
        if not self.enabled:
            return True
        with self.lock:
            if self.algorithm == "token_bucket":
                self._refill()
                return self.current_tokens >= 1
            if self.algorithm == "sliding_window":
                self._prune()
                return len(self.requests) < self.max_requests
            return True

    def consume(self) -> bool:
        """Take one request's worth if allowed."""
        if not self.enabled:
            return True
        with self.lock:
            if self.algorithm == "token_bucket":
                self._refill()
                if self.current_tokens >= 1:
                    self.current_tokens -= 1
                    return True
                return False
            if self.algorithm == "sliding_window":
                self._prune()
                if len(self.requests) < self.max_requests:
                    self.requests.append(time.monotonic())
                    return True
                return False
            return True

    def get_status(self) -> Dict[str, Any]:
        """The original status dict for the configured algorithm."""
        if not self.enabled:
            return {"enabled": False}
        with self.lock:
            if self.algorithm == "token_bucket":
                self._refill()
                return {"enabled": True, "algorithm": "token_bucket", "bucket_size": self.bucket_size, "current_tokens": self.current_tokens, "refill_rate": self.refill_rate}
            if self.algorithm == "sliding_window":
                self._prune()
                return {"enabled": True, "algorithm": "sliding_window", "window_size": self.window_size, "max_requests": self.max_requests, "current_requests": len(self.requests)}
        return {"enabled": True, "algorithm": self.algorithm}


class ConcurrencyAndRateLimitManager:
    """Both checks together: the rate limit, then a concurrency slot."""

    def __init__(self, concurrency_config: Dict[str, Any], rate_limit_config: Dict[str, Any]) -> None:
        self.concurrency_controller = ConcurrencyController(concurrency_config)
        self.rate_limiter = RateLimiter(rate_limit_config)

    async def check_and_acquire(self, level: ConcurrencyLevel, identifier: str, timeout: float = 30.0) -> bool:
        """True when the request may go (a slot is held: call :meth:`release` after). Waits for a
        concurrency slot up to ``timeout``; False when rate-limited or no slot came in time."""
        if not self.rate_limiter.can_proceed():
            return False
        if not await self.concurrency_controller.acquire_permission(level, identifier, timeout):
            return False
        if not self.rate_limiter.consume():
            self.concurrency_controller.release_permission(level, identifier)
            return False
        return True

    def release(self, level: ConcurrencyLevel, identifier: str) -> None:
        """Return the concurrency slot (rate tokens are spent)."""
        self.concurrency_controller.release_permission(level, identifier)

    def get_status(self) -> Dict[str, Any]:
        """``{"concurrency": …, "rate_limit": …}``."""
        return {"concurrency": self.concurrency_controller.get_status(), "rate_limit": self.rate_limiter.get_status()}
