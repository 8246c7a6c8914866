"""Named wrappers from config: routing (checked with the mock's counters), defaults under the
caller's values, precedence over pool/group/model, validation errors naming file and key, the
shipped examples, and the compat factory accepting the same definitions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import echelon
from echelon import ConfigError, Router, RoutingError
from conftest import mock_config, model_counters

REPO = Path(__file__).resolve().parent.parent

WRAPPERS = {
    "w_pool": {"type": "polling_pool", "target": "p"},
    "w_group": {"type": "task_group", "target": "g.echelon2", "description": "second echelon"},
    "w_direct": {"type": "direct", "target": "mock:m-big", "parameters": {"max_tokens": 7, "temperature": 0.1}},
    "w_tight": {"type": "polling_pool", "target": "p", "timeout": 0.3, "max_instance_attempts": 1},
}


def router_for(mock, **overrides) -> Router:
    return Router.from_dict(mock_config(mock.openai_base_url, wrappers=WRAPPERS, **overrides))


def last_body(mock, model: str) -> dict:
    body = mock.counters(model)["last_request"]["body"]
    return json.loads(body) if isinstance(body, (str, bytes)) else body


def requests(mock, model: str) -> int:
    return int(model_counters(mock, model)["requests"])


async def test_wrappers_route_to_their_targets(mock):
    async with router_for(mock) as router:
        assert router.wrappers == ["w_direct", "w_group", "w_pool", "w_tight"]
        r = await router.chat("hi", wrapper="w_group")
        assert r.served_by == "g.echelon2_m-c" and requests(mock, "m-c") == 1
        r = await router.wrapper("w_direct").chat("hi")
        assert r.served_by == "direct.mock:m-big" and requests(mock, "m-big") == 1
        served = {(await router.chat("hi", wrapper="w_pool")).served_by for _ in range(4)}
        assert served == {"g.echelon1_m-a", "g.echelon1_m-b"}
        assert requests(mock, "m-a") + requests(mock, "m-b") == 4
        r = await router.chat("hi", route="wrapper:w_group")
        assert r.served_by == "g.echelon2_m-c"
        w = router.wrapper("w_direct")
        assert w.name == "w_direct" and w.config["kind"] == "direct" and w.config["target"] == "mock:m-big"
        assert w.config["parameters"]["max_tokens"] == 7
        chunks = [c async for c in w.stream("hi")]
        assert chunks[-1].is_final and chunks[-1].response.served_by == "direct.mock:m-big"


async def test_wrapper_defaults_apply_and_caller_values_win(mock):
    async with router_for(mock) as router:
        # The wrapper's parameters reach the provider, under the caller's own.
        await router.chat("hi", wrapper="w_direct")
        body = last_body(mock, "m-big")
        assert body["max_tokens"] == 7 and body["temperature"] == 0.1
        await router.chat("hi", wrapper="w_direct", max_tokens=200)
        body = last_body(mock, "m-big")
        assert body["max_tokens"] == 200 and body["temperature"] == 0.1
        # The wrapper's timeout (0.3 s) and single attempt apply...
        mock.script("m-a", {"latency_ms": 1000})
        mock.script("m-b", {"latency_ms": 1000})
        with pytest.raises(echelon.Timeout):
            await router.chat("hi", wrapper="w_tight")
        # ...unless the caller gives their own (a 500 then comes back at once, not a timeout).
        mock.script("m-a", {"fault": "server_error", "status": 500})
        mock.script("m-b", {"fault": "server_error", "status": 500})
        with pytest.raises(echelon.ServerError) as ei:
            await router.chat("hi", wrapper="w_tight", timeout=5)
        assert len(ei.value.attempts) == 1
        with pytest.raises(echelon.EchelonError) as ei:
            await router.chat("hi", wrapper="w_tight", timeout=5, max_instance_attempts=2)
        assert len(ei.value.attempts) == 2


async def test_wrapper_takes_precedence_in_kwargs_and_metadata(mock):
    async with router_for(mock) as router:
        r = await router.chat("hi", wrapper="w_group", pool="p", group="solo", model="m-a")
        assert r.served_by == "g.echelon2_m-c"
        r = await router.chat("hi", metadata={"wrapper": "w_group", "pool": "p"})
        assert r.served_by == "g.echelon2_m-c"
        r = await router.chat("hi", metadata={"wrapperName": "w_direct", "group": "solo"})
        assert r.served_by == "direct.mock:m-big"
        out = await router.batch([{"messages": "hi", "wrapper": "w_group", "pool": "p"}])
        assert out[0].served_by == "g.echelon2_m-c"


async def test_unknown_wrapper_is_a_routing_error_with_a_hint(mock):
    async with router_for(mock) as router:
        with pytest.raises(RoutingError, match="did you mean 'w_pool'"):
            router.wrapper("w_pol")
        with pytest.raises(RoutingError, match="unknown wrapper 'w_gruop'.*did you mean 'w_group'"):
            await router.chat("hi", wrapper="w_gruop")
        with pytest.raises(RoutingError, match="unknown wrapper"):
            await router.chat("hi", metadata={"wrapper": "nope"})


def test_dict_wrapper_validation_names_key_and_suggests(mock):
    bad = {
        "a": {"type": "polling_pol", "target": "p"},
        "b": {"type": "polling_pool", "target": "pp"},
        "c": {"type": "task_group", "target": "g.echelon9"},
        "d": {"type": "direct", "target": "nowhere:model"},
        "e": {"type": "task_group", "targte": "g"},
        "f": {"type": "polling_pool", "target": "p", "timeout": "soon", "parameters": {"temprature": 1}},
    }
    with pytest.raises(ConfigError) as ei:
        Router.from_dict(mock_config(mock.openai_base_url, wrappers=bad))
    by_key = {i["key"]: i["message"] for i in ei.value.issues}
    text = "\n".join(f"{k}: {m}" for k, m in by_key.items())
    assert "did you mean `polling_pool`" in by_key["wrappers.a.type"], text
    assert "unknown pool `pp` (did you mean `p`?)" in by_key["wrappers.b.target"], text
    assert "group `g` has no echelon `echelon9`" in by_key["wrappers.c.target"], text
    assert "resolves nowhere" in by_key["wrappers.d.target"], text
    assert "did you mean `target`" in by_key["wrappers.e.targte"], text
    assert "missing required key `target`" in by_key["wrappers.e.target"], text
    assert "expected number, found string" in by_key["wrappers.f.timeout"], text
    assert "did you mean `temperature`" in by_key["wrappers.f.parameters.temprature"], text


def test_toml_wrapper_errors_name_the_file(tmp_path):
    root = tmp_path / "configs"
    shutil.copytree(REPO / "configs", root)
    wdir = root / "llms" / "wrappers"
    (wdir / "broken.toml").write_text('type = "task_grop"\ntarget = "demo_group"\nmax_instance_attempts = 0\n')
    (wdir / "lost.toml").write_text('type = "polling_pool"\ntarget = "demo_pol"\n')
    with pytest.raises(ConfigError) as ei:
        Router.from_dir(root)
    issues = [(Path(i["file"]).name, i["key"], i["message"]) for i in ei.value.issues]
    assert any(f == "broken.toml" and k == "type" and "did you mean `task_group`" in m for f, k, m in issues), issues
    assert any(f == "broken.toml" and k == "max_instance_attempts" and "out of range" in m for f, k, m in issues), issues
    assert any(f == "lost.toml" and k == "target" and "did you mean `demo_pool`" in m for f, k, m in issues), issues


def test_shipped_example_wrappers_load_and_render(mock):
    root = REPO / "configs"
    text = echelon._core.check_config(str(root))
    assert "Wrappers:" in text and "demo_wrapper -> polling_pool demo_pool" in text
    assert "Alerts (every" in text
    cfg = echelon._core.load_config_dir(str(root))
    assert cfg["wrappers"]["demo_wrapper"]["target"] == "demo_pool"
    assert cfg["wrappers"]["demo_careful"]["kind"] == "task_group"


async def test_compat_factory_accepts_named_wrapper_definitions(mock):
    from compat.helpers import Facade, calls, llm_config
    from echelon.compat import PollingPoolManager, TaskGroupManager
    from echelon.compat.wrappers import DirectWrapper, LLMWrapperFactory, PollingPoolWrapper, TaskGroupWrapper

    tgm = TaskGroupManager(Facade(llm_config(mock)))
    pm = PollingPoolManager(tgm)
    try:
        await pm.create_pool("fast_pool", tgm.get_polling_pool("fast_pool"))
        f = LLMWrapperFactory(tgm, pm)
        made = f.create_wrappers_from_config({
            "my_pool": {"type": "polling_pool", "target": "fast_pool"},
            "my_group": {"type": "task_group", "target": "backup_group"},
            "my_model": {"type": "direct", "target": "openai-gpt3.5-turbo", "parameters": {"max_tokens": 5}},
            "untyped": {"target": "x"},
        })
        assert list(made) == ["my_pool", "my_group", "my_model"]
        assert isinstance(made["my_pool"], PollingPoolWrapper) and isinstance(made["my_group"], TaskGroupWrapper)
        assert isinstance(made["my_model"], DirectWrapper)
        before = calls(mock, "openai-gpt3.5-turbo")
        r = await made["my_model"].generate_async(["hi"])
        assert r.content and calls(mock, "openai-gpt3.5-turbo") == before + 1
        assert last_body(mock, "m-gpt35")["max_tokens"] == 5
        r = await made["my_group"].generate_async(["hi"])
        assert r.content and calls(mock, "openai-gpt3.5-turbo") == before + 2
        r = await made["my_pool"].generate_async(["hi"])
        assert r.content and r.model == "fast_pool_pool"
        assert "".join([c async for c in made["my_model"].stream_generate(["hi"])])
    finally:
        await pm.shutdown_all()
        tgm.close()
