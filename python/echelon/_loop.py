"""How results come back from the engine: one :class:`_core.Completer` per event loop.

Every call into the engine returns ``(future, id)``; the engine queues the finished result and
wakes the loop once per batch of results, and the loop thread converts and delivers them (see
``src/py/completer.rs``). Engine threads never take the GIL, which is also what keeps a script
from aborting when its last call finishes while the interpreter shuts down.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Optional

from . import _core

_COMPLETERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _core.Completer]" = weakref.WeakKeyDictionary()
_last_loop: Optional[asyncio.AbstractEventLoop] = None
_last_completer: Optional["_core.Completer"] = None


def _completer() -> "_core.Completer":
    """The completion queue of the running loop, created and registered on first use."""
    global _last_loop, _last_completer
    loop = asyncio.get_running_loop()
    if loop is _last_loop and _last_completer is not None:
        return _last_completer
    c = _COMPLETERS.get(loop)
    if c is None:
        c = _core.Completer(weakref.ref(loop))
        loop.add_reader(c.fileno(), c.drain)
        _COMPLETERS[loop] = c
    _last_loop, _last_completer = loop, c
    return c


async def _deliver(completer: "_core.Completer", fut: "asyncio.Future[Any]", rid: int) -> Any:
    """Await an engine result; cancelling the await aborts the engine task behind it."""
    try:
        return await fut
    except asyncio.CancelledError:
        completer.cancel(rid)
        raise
