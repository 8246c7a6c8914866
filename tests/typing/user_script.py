"""A typical user script; `mypy --strict` must accept it (checked by tests/test_typing.py)."""

from __future__ import annotations

import asyncio
from typing import List, Union

import echelon
from echelon.testing import MockProvider


async def main() -> None:
    with MockProvider() as mock:
        config = {
            "providers": {"mock": {"common": {"type": "openai_compatible", "base_url": mock.openai_base_url, "api_key": "k"},
                                   "m": {"model": "m"}}},
            "groups": {"g": {"echelon1": {"models": ["m"], "priority": 1}}},
            "pools": {"p": {"task_groups": ["g"]}},
        }
        async with echelon.Router.from_dict(config) as router:
            r: echelon.Response = await router.chat([{"role": "user", "content": "hi"}], pool="p", temperature=0.2)
            text: str = r.content
            tokens: int = r.usage.total_tokens
            tried: List[str] = [a.instance for a in r.attempts]
            async for chunk in router.stream("hi", group="g"):
                if chunk.is_final and chunk.response is not None:
                    print(chunk.response.served_by)
                else:
                    print(chunk.text, end="")
            results: List[Union[echelon.Response, BaseException]] = await router.batch([{"messages": "a", "pool": "p"}])
            pool: echelon.PollingPool = router.pool("p")
            total: int = pool.status()["total_instances"]
            try:
                await router.chat("x", pool="missing")
            except echelon.RoutingError as e:
                attempts: List[echelon.Attempt] = e.attempts
            print(text, tokens, tried, results, total)


if __name__ == "__main__":
    asyncio.run(main())
