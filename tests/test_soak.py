"""Short soak: ~20,000 requests at concurrency ~200 through a pool and a group while the mock
serves a deterministic mix of faults (503, 429 with a small Retry-After, cut streams and
bodies, hangs under a short first-token timeout).

Asserts the accounting only (no timing): every request ends as a Response or a typed
EchelonError, nothing else escapes, and afterwards nothing is in flight, nothing is queued and
no asyncio task is left behind.
"""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any, Dict, List

import echelon
from echelon import Router
from echelon.testing import MockProvider
from conftest import mock_config

TOTAL = int(os.environ.get("ECHELON_SOAK_REQUESTS", "20000"))
CONCURRENCY = 200

# One cycle of 20 requests per model; repeated far beyond what the soak consumes.
CYCLE: List[Any] = (
    [{"fault": "ok", "times": 12}]
    + [{"fault": "server_error", "status": 503, "times": 2}]
    + [{"fault": "rate_limit", "retry_after": "0.05"}]
    + [{"fault": "cut_after", "after": 1}]
    + [{"fault": "ok", "times": 2}]
    + [{"fault": "hang"}]
    + [{"fault": "stall_after", "after": 1}]
)


def soak_config(base_url: str) -> Dict[str, Any]:
    groups = {
        "sk": {
            "echelon1": {"models": ["m-a", "m-b"], "priority": 1, "concurrency_limit": 60},
            "echelon2": {"models": ["m-c"], "priority": 2, "concurrency_limit": 60},
            "echelon3": {"models": ["m-big"], "priority": 3, "concurrency_limit": 60},
            "circuit_breaker": {"failure_threshold": 20, "recovery_time": 0.2, "half_open_requests": 2},
            "fallback_config": {"strategy": "echelon_down", "max_attempts": 3, "retry_delay": 0.0},
        }
    }
    pools = {
        "sp": {
            "task_groups": ["sk.echelon1", "sk.echelon2"],
            "rotation_strategy": "least_busy",
            "health_check": {"interval": 0.5, "failure_threshold": 50, "recovery_time": 0.2},
            "fallback_config": {"strategy": "instance_rotation", "max_instance_attempts": 2},
            "performance": {"queue_size": 5000},
        }
    }
    cfg = mock_config(base_url, groups=groups, pools=pools)
    common = cfg["providers"]["mock"]["common"]
    common["timeouts"] = {"connect": 1, "first_token": 0.2, "total": 1, "idle": 0.2}
    common["rate_limit_cooldown"] = 0.0
    # Bounds a stalled non-streaming body (the idle timeout applies to streams only).
    return cfg


async def test_soak_accounting_under_mixed_faults() -> None:
    repeats = TOTAL // len(CYCLE) + 10
    scripts = {m: {"steps": CYCLE * repeats, "chunks": 4} for m in ("m-a", "m-b", "m-c")}
    with MockProvider(scripts) as mock:
        tasks_before = asyncio.all_tasks()
        outcomes: collections.Counter = collections.Counter()
        unexpected: List[BaseException] = []
        async with Router.from_dict(soak_config(mock.openai_base_url)) as router:
            queue: asyncio.Queue = asyncio.Queue()
            for i in range(TOTAL):
                queue.put_nowait(i)

            async def one(i: int) -> None:
                route = {"pool": "sp"} if i % 2 == 0 else {"group": "sk"}
                try:
                    if i % 4 in (1, 2):
                        chunks = [c async for c in router.stream(f"soak {i}", timeout=10, **route)]
                        final = chunks[-1]
                        assert final.is_final and final.response is not None
                        outcomes["stream_ok"] += 1
                    else:
                        r = await router.chat(f"soak {i}", timeout=10, **route)
                        assert isinstance(r, echelon.Response) and r.content
                        outcomes["chat_ok"] += 1
                except echelon.EchelonError as e:
                    outcomes[type(e).__name__] += 1
                except BaseException as e:  # noqa: BLE001 - anything else is a finding
                    unexpected.append(e)

            async def worker() -> None:
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    await one(i)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

            assert not unexpected, f"{len(unexpected)} non-echelon exceptions, e.g. {unexpected[:3]!r}"
            assert sum(outcomes.values()) == TOTAL, outcomes
            # The faults really happened and were survived: most calls still succeed.
            assert outcomes["chat_ok"] + outcomes["stream_ok"] > TOTAL // 2, outcomes
            assert outcomes["StreamInterrupted"] > 0, outcomes
            faults = mock.counters()["faults"]
            for f in ("server_error", "rate_limit", "cut_after", "hang", "stall_after"):
                assert faults.get(f, 0) > 0, (f, faults)

            # Everything drained: slots, queues, admission.
            async def drained() -> bool:
                st = router.status()
                pools_ok = all(p["in_flight"] == 0 and p["queue_length"] == 0 for p in st["pools"])
                groups_ok = all(
                    e["queue_length"] == 0 and all(i["in_flight"] == 0 for i in e["instances"])
                    for g in st["groups"] for e in g["echelons"]
                )
                return pools_ok and groups_ok

            for _ in range(100):
                if await drained():
                    break
                await asyncio.sleep(0.02)
            assert await drained(), router.status()
        # The router is closed: no stray asyncio task is left behind.
        await asyncio.sleep(0)
        stray = asyncio.all_tasks() - tasks_before
        assert not stray, stray
        # Upstream requests were all finished or aborted: the mock has nothing in flight.
        for _ in range(100):
            if mock.counters()["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
        assert mock.counters()["in_flight"] == 0
    print(dict(outcomes))
