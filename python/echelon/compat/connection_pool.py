"""The original's HTTP connection pool (``src/infrastructure/llm/pool``): keeps HTTP client
sessions per base URL for code that makes its own HTTP calls.

echelon's own calls never go through it: the engine keeps its own connection pool (reqwest,
HTTP/1.1 keep-alive or HTTP/2). Sessions are ``aiohttp.ClientSession`` objects by default
(``pip install aiohttp``; echelon does not depend on it), or whatever ``session_factory``
makes. ``max_connections`` bounds the sessions handed out at once per base URL (an
``acquire`` beyond it waits up to ``timeout`` seconds for a ``release``, then raises
``TimeoutError``); ``max_keepalive`` bounds the idle sessions kept per base URL.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional

__all__ = ["IConnectionPool", "HTTPConnectionPool", "ConnectionPoolManager", "ConnectionPoolFactory", "connection_pool_manager", "pool_factory"]

MAX_AGE = timedelta(minutes=30)
MAX_IDLE = timedelta(minutes=10)


class IConnectionPool(ABC):
    @abstractmethod
    async def acquire(self, base_url: str) -> Any: ...

    @abstractmethod
    async def release(self, base_url: str, connection: Any) -> None: ...

    @abstractmethod
    def get_stats(self) -> Dict[str, Any]: ...


def _positive(name: str, value: Any, integer: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)) or value <= 0:
        raise ValueError(f"HTTPConnectionPool: {name} must be a positive {'integer' if integer else 'number'}, got {value!r}")
    return value


class HTTPConnectionPool(IConnectionPool):
    """Sessions per base URL, reused while younger than 30 minutes and idle less than 10."""

    def __init__(self, max_connections: int = 10, max_keepalive: int = 10, timeout: float = 30.0, session_factory: Optional[Callable[[str], Any]] = None) -> None:
        self.max_connections = _positive("max_connections", max_connections, True)
        if isinstance(max_keepalive, bool) or not isinstance(max_keepalive, int) or max_keepalive < 0:
            raise ValueError(f"HTTPConnectionPool: max_keepalive must be a non-negative integer, got {max_keepalive!r}")
        self.max_keepalive = max_keepalive
        self.timeout = _positive("timeout", timeout, False)
        self._session_factory = session_factory
        self._pools: Dict[str, List[Dict[str, Any]]] = {}
        self._active_connections: Dict[str, List[Any]] = {}
        self._conditions: Dict[Any, asyncio.Condition] = {}
        self._stats: Dict[str, Any] = {"total_requests": 0, "successful_requests": 0, "connection_reuses": 0, "created_connections": 0}

    def _condition(self, base_url: str) -> asyncio.Condition:
        # One condition per base URL and event loop (asyncio primitives belong to one loop).
        key = (id(asyncio.get_running_loop()), base_url)
        c = self._conditions.get(key)  # type: ignore[call-overload]
        if c is None:
            c = self._conditions[key] = asyncio.Condition()  # type: ignore[index]
        return c

    async def acquire(self, base_url: str) -> Any:
        """A session for ``base_url``: an idle one still valid, else a new one."""
        if not isinstance(base_url, str) or not base_url:
            raise ValueError(f"HTTPConnectionPool.acquire: base_url must be a non-empty string, got {base_url!r}")
        cond = self._condition(base_url)
        async with cond:
            active = self._active_connections.setdefault(base_url, [])
            try:
                await asyncio.wait_for(cond.wait_for(lambda: len(active) < self.max_connections), self.timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"HTTPConnectionPool: no connection to {base_url} freed within {self.timeout}s (max_connections={self.max_connections})") from None
            idle = self._pools.setdefault(base_url, [])
            while idle:
                info = idle.pop()
                if self._is_connection_valid(info):
                    self._stats["connection_reuses"] += 1
                    self._stats["total_requests"] += 1
                    active.append(info["connection"])
                    return info["connection"]
                await self._close(info["connection"])
            conn = await self._create_session(base_url)
            self._stats["created_connections"] += 1
            self._stats["total_requests"] += 1
            active.append(conn)
            return conn

    async def release(self, base_url: str, connection: Any) -> None:
        """Give a session back (kept idle up to ``max_keepalive``, closed beyond)."""
        cond = self._condition(base_url)
        async with cond:
            active = self._active_connections.setdefault(base_url, [])
            if any(c is connection for c in active):
                active[:] = [c for c in active if c is not connection]
                self._stats["successful_requests"] += 1
            idle = self._pools.setdefault(base_url, [])
            if len(idle) < self.max_keepalive and getattr(connection, "closed", False) is not True:
                now = datetime.now()
                created = getattr(connection, "_echelon_created", now)
                idle.append({"connection": connection, "created_at": created, "last_used": now})
            else:
                await self._close(connection)
            cond.notify()

    def get_stats(self) -> Dict[str, Any]:
        out = dict(self._stats)
        out["active_connections"] = sum(len(v) for v in self._pools.values()) + sum(len(v) for v in self._active_connections.values())
        out["pools_count"] = len(self._pools)
        return out

    async def _create_session(self, base_url: str) -> Any:
        if self._session_factory is not None:
            conn = self._session_factory(base_url)
            if inspect.isawaitable(conn):
                conn = await conn
        else:
            try:
                import aiohttp  # type: ignore
            except ImportError as e:
                raise ImportError("HTTPConnectionPool needs aiohttp for its default sessions (pip install aiohttp), or pass session_factory=") from e
            conn = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=30.0),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        try:
            conn._echelon_created = datetime.now()
        except Exception:  # noqa: BLE001 - a session without attribute support is fine
            pass
        return conn

    def _is_connection_valid(self, info: Dict[str, Any]) -> bool:
        now = datetime.now()
        if getattr(info["connection"], "closed", False) is True:
            return False
        return now - info["created_at"] <= MAX_AGE and now - info["last_used"] <= MAX_IDLE

    @staticmethod
    async def _close(conn: Any) -> None:
        close = getattr(conn, "close", None)
        if close is None:
            return
        try:
            r = close()
            if inspect.isawaitable(r):
                await r
        except Exception:  # noqa: BLE001 - closing a broken session is best effort
            pass

    async def close_all(self) -> None:
        """Close every session, idle or handed out."""
        for idle in self._pools.values():
            while idle:
                await self._close(idle.pop()["connection"])
        for active in self._active_connections.values():
            while active:
                await self._close(active.pop())
        self._pools.clear()
        self._active_connections.clear()


class ConnectionPoolManager:
    """Holds the process-wide pool."""

    def __init__(self) -> None:
        self._pool: Optional[HTTPConnectionPool] = None

    def get_pool(self, max_connections: int = 10, max_keepalive: int = 10, timeout: float = 30.0) -> HTTPConnectionPool:
        """The shared pool (created with these settings on first use)."""
        if self._pool is None:
            self._pool = HTTPConnectionPool(max_connections, max_keepalive, timeout)
        return self._pool

    async def close_all(self) -> None:
        if self._pool is not None:
            await self._pool.close_all()
            self._pool = None


connection_pool_manager = ConnectionPoolManager()


class ConnectionPoolFactory:
    @staticmethod
    def create_connection_pool(max_connections: int = 10, max_keepalive: int = 10, timeout: float = 30.0) -> HTTPConnectionPool:
        """The shared pool, as the original's factory returned it."""
        return connection_pool_manager.get_pool(max_connections=max_connections, max_keepalive=max_keepalive, timeout=timeout)

    @staticmethod
    def get_global_connection_pool() -> HTTPConnectionPool:
        return connection_pool_manager.get_pool()


pool_factory = ConnectionPoolFactory()
