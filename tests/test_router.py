"""The asyncio API over the mock provider: calls, routing, streaming, batch, reload."""

from __future__ import annotations

import asyncio
import time
import logging

import pytest

import echelon
from echelon import Router
from conftest import mock_config, model_counters


async def test_chat_through_pool_returns_real_content(mock):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        r = await router.chat([{"role": "user", "content": "hi"}], pool="p")
        assert r.content.startswith("Hello from m-")
        assert r.served_by in {"g.echelon1_m-a", "g.echelon1_m-b"}
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
        assert [a.ok for a in r.attempts] == [True]
        assert r.attempts[0].instance == r.served_by
        assert str(r) == r.content
    assert model_counters(mock, "m-a")["requests"] + model_counters(mock, "m-b")["requests"] == 1


@pytest.mark.parametrize("version, over_h2", [("1.1", False), ("auto", False), ("2", True)])
async def test_http_version_reaches_the_wire(mock, version, over_h2):
    cfg = mock_config(mock.openai_base_url)
    cfg["providers"]["mock"]["common"]["http_version"] = version
    before = mock.counters()["http2_requests"]
    async with Router.from_dict(cfg) as router:
        rs = await asyncio.gather(*[router.chat("hi", pool="p") for _ in range(20)])
        assert all(r.content.startswith("Hello from m-") for r in rs)
        chunks = [c async for c in router.stream("hi", pool="p")]
        assert chunks[-1].response is not None and chunks[-1].response.content
    # "auto" offers HTTP/2 only through TLS (ALPN); plain http:// stays on HTTP/1.1.
    assert mock.counters()["http2_requests"] - before == (21 if over_h2 else 0)


@pytest.mark.parametrize("strategy", ["weighted", "latency"])
async def test_performance_strategies_send_most_traffic_to_the_faster_instance(mock, strategy):
    # Both strategies read each instance's statistics as calls finish; m-b answers 40 ms later.
    mock.script("m-b", {"latency_ms": 40})
    cfg = mock_config(mock.openai_base_url)
    cfg["pools"]["p"]["rotation_strategy"] = strategy
    served = {"g.echelon1_m-a": 0, "g.echelon1_m-b": 0}
    async with Router.from_dict(cfg) as router:
        for _ in range(60):
            served[(await router.chat("hi", pool="p")).served_by] += 1
    # weighted: 1/avg latency makes m-a's score ~20x m-b's; latency: P2C over two picks the
    # faster EWMA every time once both are measured.
    assert served["g.echelon1_m-a"] >= 45, served


async def test_message_forms(mock):
    class LangChainLike:
        def __init__(self, type_: str, content: str) -> None:
            self.type = type_
            self.content = content

    class RoleContent:
        role = "user"
        content = "obj"

    def sent(r: echelon.Response) -> list:
        model = r.served_by.rsplit("_", 1)[-1]
        return mock.counters(model)["last_request"]["body"]["messages"]

    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        r = await router.chat("bare prompt", pool="p")
        assert sent(r) == [{"role": "user", "content": "bare prompt"}]
        r = await router.chat([LangChainLike("system", "be brief"), LangChainLike("human", "hi")], pool="p")
        assert sent(r) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        r = await router.chat([RoleContent()], pool="p")
        assert sent(r) == [{"role": "user", "content": "obj"}]
        with pytest.raises(ValueError):
            await router.chat([], pool="p")
        with pytest.raises(TypeError):
            await router.chat([42], pool="p")


async def test_routing_precedence_and_metadata(mock):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        r = await router.chat("x", pool="p", group="solo")
        assert r.attempts[0].target == "p"
        r = await router.chat("x", group="solo", model="mock:m-c")
        assert r.served_by == "solo.echelon1_m-a"
        r = await router.chat("x", model="mock:m-c")
        assert r.served_by == "direct.mock:m-c"
        r = await router.chat("x", route="group:g.echelon2")
        assert r.served_by == "g.echelon2_m-c"
        r = await router.chat("x", metadata={"group": "solo"})
        assert r.served_by == "solo.echelon1_m-a"
        r = await router.chat("x", metadata="pool:p")
        assert r.attempts[0].target == "p"
        r = await router.chat("x", metadata="direct:mock:m-big")
        assert r.served_by == "direct.mock:m-big"
        r = await router.chat("x", metadata={"provider": "mock", "model": "m-b"})
        assert r.served_by == "direct.mock:m-b"


async def test_routing_errors_are_typed(mock):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        with pytest.raises(echelon.RoutingError, match="unknown pool 'nope'"):
            await router.chat("x", pool="nope")
        with pytest.raises(echelon.RoutingError, match="did you mean 'solo'"):
            await router.chat("x", group="sol")
        with pytest.raises(echelon.RoutingError, match="no echelon 'echelon9'"):
            await router.chat("x", group="g.echelon9")
        with pytest.raises(echelon.RoutingError, match="malformed route"):
            await router.chat("x", route="nowhere")
        with pytest.raises(echelon.RoutingError, match="resolves nowhere"):
            await router.chat("x", model="nobody:none")
        with pytest.raises(echelon.RoutingError):
            router.pool("nope")
    assert mock.counters().get("requests", 0) == 0


async def test_default_route(mock):
    # One pool: a call that names nothing goes there.
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        assert (await router.chat("x")).attempts[0].target == "p"
    # Two pools and no default_route: a typed error, no request sent.
    cfg = mock_config(mock.openai_base_url, pools={"p2": {"task_groups": ["solo"]}})
    async with Router.from_dict(cfg) as router:
        with pytest.raises(echelon.RoutingError, match="no route given"):
            await router.chat("x")
    cfg["global"] = {"default_route": "group:solo"}
    async with Router.from_dict(cfg) as router:
        assert (await router.chat("x")).served_by == "solo.echelon1_m-a"


async def test_stream_deltas_then_final(mock):
    mock.script("m-a", {"chunks": 5, "chunk_delay_ms": 1})
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        chunks = [c async for c in router.stream("hi", group="solo")]
        assert chunks[-1].is_final and all(not c.is_final for c in chunks[:-1])
        text = "".join(c.text for c in chunks)
        final = chunks[-1].response
        assert final is not None and final.content == text and text.startswith("Hello from m-a")
        assert final.usage.completion_tokens > 0
        assert final.ttft is not None and final.served_by == "solo.echelon1_m-a"


async def test_breaking_out_of_a_stream_frees_the_slot_and_aborts_upstream(mock):
    mock.script("m-a", {"chunks": 50, "chunk_delay_ms": 50})
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        stream = router.stream("hi", group="solo")
        async for chunk in stream:
            assert chunk.text
            break
        del chunk
        await stream.aclose()
        inst = router.group("solo").status()["echelons"][0]["instances"][0]
        assert inst["in_flight"] == 0
        assert inst["breaker"]["failure_count"] == 0
        for _ in range(100):
            if model_counters(mock, "m-a")["client_disconnects"] >= 1:
                break
            await asyncio.sleep(0.02)
        assert model_counters(mock, "m-a")["client_disconnects"] == 1


async def test_batch_preserves_order_and_isolates_failures(mock):
    mock.script("m-c", {"fault": "context_window"})
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        reqs = []
        for i in range(30):
            if i % 10 == 3:
                reqs.append({"messages": f"bad {i}", "model": "mock:m-c"})
            elif i % 10 == 7:
                reqs.append({"messages": f"bad {i}", "pool": "missing"})
            else:
                reqs.append({"messages": f"req {i}", "pool": "p", "max_tokens": 10})
        out = await router.batch(reqs, concurrency=8)
        assert len(out) == 30
        for i, r in enumerate(out):
            if i % 10 == 3:
                assert isinstance(r, echelon.ContextWindowExceeded)
            elif i % 10 == 7:
                assert isinstance(r, echelon.RoutingError)
            else:
                assert isinstance(r, echelon.Response), r
                assert r.content.startswith("Hello from")


async def test_batch_reads_each_request_without_changing_it(mock):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        req = {"messages": [{"role": "user", "content": "hi"}], "pool": "p", "temperature": 0.25, "seed": 7, "stop": "END", "timeout": None}
        before = {k: v for k, v in req.items()}
        out = await router.batch([req, req])
        assert all(isinstance(r, echelon.Response) for r in out), out
        assert req == before  # the caller's dict is neither consumed nor copied into
        body = model_counters(mock, "m-a")["last_request"]["body"] or model_counters(mock, "m-b")["last_request"]["body"]
        assert body["temperature"] == 0.25 and body["seed"] == 7 and body["stop"] == ["END"]
        assert "pool" not in body and "timeout" not in body

        out = await router.batch(
            [
                {"messages": "x", "pool": 3},
                {"messages": "x", "pool": "p", "temperature": "hot"},
                {"messages": [{"content": "no role"}], "pool": "p"},
                {"pool": "p"},
                ["not", "a", "dict"],
            ]
        )
        assert [type(r) for r in out] == [TypeError, TypeError, ValueError, ValueError, TypeError]
        assert "'pool' must be a string" in str(out[0])
        assert "'temperature' must be a number" in str(out[1])
        assert "messages[0] has no 'role'" in str(out[2])
        assert "no 'messages'" in str(out[3])


async def test_reload_under_load_loses_nothing_and_keeps_breakers(mock):
    cfg = mock_config(mock.openai_base_url)
    mock.script("m-c", {"fault": "server_error", "status": 503})
    mock.script("m-a", {"latency_ms": 50})
    mock.script("m-b", {"latency_ms": 50})
    async with Router.from_dict(cfg) as router:
        # Open m-c's breaker (threshold 3) by calling echelon2 directly.
        for _ in range(2):
            r = await router.chat("x", group="g.echelon2")
            assert r.served_by == "g.echelon3_m-big"
        before = router.group("g").breaker_status()["g.echelon2_m-c"]
        assert before["state"] == "OPEN"

        async def load(n: int) -> list:
            return await asyncio.gather(*(router.chat(f"r{i}", pool="p") for i in range(n)), return_exceptions=True)

        task = asyncio.ensure_future(load(200))
        deadline = time.monotonic() + 5
        while mock.counters()["in_flight"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        in_flight_at_reload = mock.counters()["in_flight"]
        assert in_flight_at_reload > 0, "the reload must happen with calls in flight"
        cfg2 = mock_config(mock.openai_base_url)
        cfg2["pools"]["p2"] = {"task_groups": ["g.echelon1"]}
        router.reload(cfg2)
        results = await task
        assert all(isinstance(r, echelon.Response) for r in results), [r for r in results if not isinstance(r, echelon.Response)][:3]
        assert not task.done() or len(results) == 200
        assert "p2" in router.pools
        # Every call that was in flight across the reload finished on its old engine, and the
        # slots it held were given back: nothing is left in flight or queued.
        assert all(i["in_flight"] == 0 and i["waiting"] == 0 for i in router.pool("p").instances())
        after = router.group("g").breaker_status()["g.echelon2_m-c"]
        assert after["state"] == "OPEN" and after["failure_count"] == before["failure_count"]


def test_chat_sync_outside_and_inside_a_loop(mock):
    router = Router.from_dict(mock_config(mock.openai_base_url))
    with router:
        assert router.chat_sync("hi", pool="p").content

        async def inside() -> None:
            with pytest.raises(RuntimeError, match="running event loop"):
                router.chat_sync("hi", pool="p")

        asyncio.run(inside())


async def test_views_status_and_metrics(mock):
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        for _ in range(4):
            await router.pool("p").call("hi")
        st = router.pool("p").status()
        for key in ("name", "total_instances", "healthy_instances", "degraded_instances", "failed_instances", "stats"):
            assert key in st
        assert st["stats"]["total_requests"] == 4 and st["stats"]["successful_requests"] == 4
        assert st["total_instances"] == 2 and len(router.pool("p").instances()) == 2
        r = await router.group("g").call("hi", echelon="echelon2")
        assert r.served_by == "g.echelon2_m-c"
        hist = router.group("g").fallback_history()
        assert hist[-1]["success"] is True and hist[-1]["target"] == "g.echelon2"
        text = router.metrics()
        assert 'echelon_pool_requests_total{pool="p"} 4' in text
        assert "echelon_instance_state" in text
        stats = router.stats()
        assert stats["pools"]["p"]["total_requests"] == 4


async def test_logging_goes_through_python_logging_not_print(mock, caplog, capsys):
    mock.script("m-a", {"fault": "auth"})
    caplog.set_level(logging.DEBUG, logger="echelon")
    caplog.set_level(logging.DEBUG, logger="_core")
    echelon.events.refresh_log_levels()
    async with Router.from_dict(mock_config(mock.openai_base_url)) as router:
        with pytest.raises(echelon.EchelonError):
            await router.chat("hi", group="solo")
        await asyncio.sleep(0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    # What was printed nowhere reached logging: the failed request and the instance the
    # rejected key took out.
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert any(name == "echelon.events" and "auth_error" in msg for name, msg in messages), messages
    assert any(name.startswith("_core.") and "solo.echelon1_m-a is now failed" in msg for name, msg in messages), messages
