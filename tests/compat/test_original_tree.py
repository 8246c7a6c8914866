"""A config tree in the original system's shapes (tests/fixtures/original_shapes), loaded as it
is through ``Router.from_dir``, ``echelon check``, ``echelon convert`` and ``echelon.compat``,
with real calls to the mock provider for every group, echelon and pool that resolves
(issue 20)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List

import pytest

import echelon
from echelon import _core
from echelon.cli import main as cli
from echelon.compat import (
    EngineClient,
    EnhancedFallbackManager,
    FallbackManager,
    FileConfigLoader,
    LLMCallError,
    LLMError,
    PollingPoolManager,
    TaskGroupManager,
)
from echelon.compat.wrappers import PollingPoolWrapper, TaskGroupWrapper, TaskGroupWrapperError
from echelon.testing import MockProvider

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "original_shapes" / "configs"
SECRETS = ("sk-test-openai", "sk-ant-test", "gm-test", "sf-test")
#: Models the fixture's groups name that resolve nowhere (human-relay-s: its provider cannot be
#: called; the rest: no provider file defines them).
UNRESOLVED = {"anthropic-claude-3-opus", "openai-gpt4-turbo", "anthropic-claude-3-haiku", "openai-gpt5-preview", "anthropic-claude-9", "human-relay-s"}


class Msg:
    def __init__(self, content: str) -> None:
        self.content = content
        self.type = "human"


@pytest.fixture
def env(mock: MockProvider, monkeypatch: pytest.MonkeyPatch) -> MockProvider:
    monkeypatch.setenv("ECHELON_MOCK_ROOT", mock.anthropic_base_url)
    monkeypatch.setenv("ECHELON_MOCK_GEMINI", mock.gemini_base_url)
    return mock


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    dst = tmp_path / "configs"
    shutil.copytree(FIXTURE, dst)
    return dst


def resolved_models(root: Path) -> Dict[str, str]:
    """Logical model → wire model, as the engine resolves the tree."""
    return {name: m["model"] for name, m in _core.load_config_dir(str(root))["models"].items()}


def echelon_refs(tgm: TaskGroupManager) -> Dict[str, List[str]]:
    return {f"{g}.{e}": models for g in tgm.list_task_groups() for e, _, models in tgm.get_group_models_by_priority(g)}


def test_check_loads_the_tree_and_warns(env, tree, capsys) -> None:
    assert cli(["check", str(tree)]) == 0
    out, err = capsys.readouterr()
    assert "configuration invalid" not in out + err
    warnings = out.split("\nWarnings:\n", 1)[1]
    for expected in (
        "unknown key `function_calling_supported`: ignored",
        "unknown key `cache_parameters` (did you mean `parameters`?): ignored",
        "unknown key `api_formats` (did you mean `api_format`?): ignored",
        "provider `human_relay` is of type `human_relay`, which the engine cannot call",
        'inherits_from = "../common.yaml": names no file',
        "fallback_config.retry_delay = 1: loaded as 0",
        "model `human-relay-s` of group `small_group`, echelon `thinking` is left out: its provider `human_relay`",
        "model `openai-gpt5-preview` of group `ghost_group`, echelon `echelon1` is left out: no provider file defines it",
    ):
        assert expected in warnings, expected
    assert sum(line.count(" is left out: ") for line in warnings.splitlines()) == 6
    assert "retry_delay=0s" in out
    for secret in SECRETS:
        assert secret not in out + err


def test_parameters_pass_through_and_nulls_are_dropped(env, tree) -> None:
    models = _core.load_config_dir(str(tree))["models"]
    assert models["gemini-pro"]["parameters"]["extra"]["top_k"] == 40
    sonnet = models["anthropic-claude-3-sonnet"]["parameters"]
    assert sonnet["extra"] == {"top_k": 5}  # stop_sequences / system / thinking_config were null
    assert models["openai-gpt4"]["parameters"]["extra"]["store"] is False
    assert "max_completion_tokens" not in models["openai-gpt4"]["parameters"]["extra"]
    assert "human-relay-s" not in models


async def test_router_from_dir_calls_every_group_echelon_and_pool(env, tree) -> None:
    wire = resolved_models(tree)
    async with echelon.Router.from_dir(tree) as router:
        tgm = TaskGroupManager(str(tree))
        for ref, models in echelon_refs(tgm).items():
            served = [wire[m] for m in models if m in wire]
            if served:
                r = await router.chat("hi", group=ref)
                assert r.content.startswith("Hello from m-") and r.model in served, ref
            else:
                with pytest.raises(echelon.ConfigError) as ei:
                    await router.chat("hi", group=ref)
                assert all(m in str(ei.value) for m in models), str(ei.value)
        for pool in ("quick_pool", "deep_pool"):
            r = await router.chat("hi", pool=pool)
            assert r.content.startswith("Hello from m-")
        with pytest.raises(echelon.RoutingError, match="human-relay-s"):
            await router.chat("hi", model="human-relay-s")
    assert env.counters()["requests"] > 0


@pytest.mark.parametrize("form", ["relative_path", "relative_loader", "default_loader", "absolute_path", "absolute_loader", "pathlib"])
async def test_compat_config_roots(env, tree, monkeypatch, form) -> None:
    """Every constructor form the original had, with a relative or an absolute root."""
    monkeypatch.chdir(tree.parent)
    arg = {
        "relative_path": "configs",
        "relative_loader": FileConfigLoader("configs"),
        "default_loader": FileConfigLoader(),
        "absolute_path": str(tree),
        "absolute_loader": FileConfigLoader(str(tree)),
        "pathlib": tree,
    }[form]
    tgm = TaskGroupManager(arg)
    try:
        assert set(tgm.list_task_groups()) == {"fast_group", "small_group", "deep_group", "ghost_group"}
        assert set(tgm.list_polling_pools()) == {"quick_pool", "deep_pool"}
        r = await TaskGroupWrapper("fast_group", tgm).generate_async([Msg("hi")])
        assert r.content.startswith("Hello from m-")
    finally:
        tgm.close()


async def test_compat_calls_every_echelon_group_and_pool(env, tree) -> None:
    wire = resolved_models(tree)
    tgm = TaskGroupManager(str(tree))
    try:
        for ref, models in echelon_refs(tgm).items():
            ok = [wire[m] for m in models if m in wire]
            w = TaskGroupWrapper(ref, tgm)
            if ok:
                r = await w.generate_async([Msg("hi")])
                assert r.content.startswith("Hello from m-") and r.content.split()[2].rstrip(".") in ok, ref
            else:
                with pytest.raises(TaskGroupWrapperError) as ei:
                    await w.generate_async([Msg("hi")])
                assert isinstance(ei.value.__cause__, LLMCallError)
                assert all(m in str(ei.value) for m in models)
        for g in tgm.list_task_groups():
            if any(m in wire for m in tgm.get_models_for_group(g)):
                assert (await TaskGroupWrapper(g, tgm).generate_async([Msg("hi")])).content.startswith("Hello from m-")

        pm = PollingPoolManager(tgm)
        for name in tgm.list_polling_pools():
            pool = await pm.create_pool(name, tgm.get_polling_pool(name))
            usable = [i for i in pool.instances if i.unavailable_reason is None]
            assert {i.model_name for i in pool.instances if i.unavailable_reason} == {i.model_name for i in pool.instances} - set(wire)
            before = {i.model_name: env.counters(wire[i.model_name])["requests"] for i in usable}
            for _ in usable:  # rotation reaches every usable instance once
                assert (await pool.call_llm("hi")).startswith("Hello from m-")
            assert all(env.counters(wire[m])["requests"] > n for m, n in before.items()), name
            r = await PollingPoolWrapper(name, pm).generate_async([Msg("hi")])
            assert r.content.startswith("Hello from m-") and r.model == f"{name}_pool"
        await pm.shutdown_all()

        efm = EnhancedFallbackManager(tgm)
        text = await efm.execute_with_fallback("ghost_group.echelon1", ["fast_group.echelon3"], "hi")
        assert text.startswith("Hello from m-")
        fm = FallbackManager(task_group_manager=tgm)
        r = await fm.execute_with_fallback(primary_target="ghost_group", fallback_groups=["deep_group.echelon1"], prompt="hi")
        assert r.content.startswith("Hello from m-sonnet")
    finally:
        tgm.close()


async def test_the_engine_says_why_a_human_relay_model_cannot_be_called(env, tree) -> None:
    """Without compat too: Router.from_dir on the original tree names the provider type when
    a call is routed to a model of a provider the engine cannot call."""
    async with echelon.Router.from_dir(str(tree)) as router:
        with pytest.raises(echelon.RoutingError, match="model 'human-relay-s' cannot be called: its provider `human_relay` is of type `human_relay`"):
            await router.chat("hi", model="human-relay-s", timeout=5)
        with pytest.raises(echelon.RoutingError, match="resolves nowhere"):
            await router.chat("hi", model="no-such-model", timeout=5)


async def test_compat_unusable_targets_fail_with_typed_errors(env, tree) -> None:
    tgm = TaskGroupManager(str(tree))
    try:
        assert tgm.unavailable_models() == {"human-relay-s": "its provider 'human_relay' is of type 'human_relay', which the engine cannot call (a person relays the prompt)"}
        with pytest.raises(LLMCallError, match="human-relay-s.*cannot call") as ei:
            await EngineClient("human-relay-s", tgm).generate([Msg("hi")])
        assert isinstance(ei.value.__cause__, echelon.RoutingError)
        pm = PollingPoolManager(tgm)
        pool = await pm.create_pool("ghosts", {"task_groups": ["ghost_group"], "health_check_interval": 0})
        with pytest.raises(LLMError, match="没有可用的LLM实例.*openai-gpt5-preview"):
            await pool.call_llm("hi")
        await pm.shutdown_all()
    finally:
        tgm.close()


def test_convert_lists_what_to_define_and_nothing_else_fails(env, tree, tmp_path, capsys) -> None:
    out_dir = tmp_path / "toml"
    assert cli(["convert", str(tree), str(out_dir)]) == 0
    err = capsys.readouterr().err
    todo = [line[4:] for line in err.splitlines() if line.startswith("  - ")]
    assert sorted(t.split("`")[1] for t in todo) == sorted(UNRESOLVED)
    with pytest.raises(echelon.ConfigError) as ei:
        _core.check_config(str(out_dir))
    issues = ei.value.issues
    assert issues and {i["value"].strip('"') for i in issues} == UNRESOLVED
    assert all(i["message"].startswith("unknown model") for i in issues)
    group = (out_dir / "llms" / "groups" / "fast_group.toml").read_text()
    assert "retry_delay = 0" in group
    # Defining exactly those models makes the converted tree valid.
    for name in UNRESOLVED:
        (out_dir / "llms" / "provider" / "openai" / f"{name}.toml").write_text(f'name = "{name}"\nmodel = "m-{name}"\n')
    text = _core.check_config(str(out_dir))
    assert "UNRESOLVED" not in text
    assert "top_k = 40" in (out_dir / "llms" / "provider" / "gemini" / "common.toml").read_text()


def test_bad_config_roots_are_typed_errors(tmp_path, monkeypatch) -> None:
    from echelon.compat import LLMConfigurationError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LLMConfigurationError, match="config root not found: configs"):
        TaskGroupManager("configs").list_task_groups()
    with pytest.raises(LLMConfigurationError, match="got int"):
        TaskGroupManager(42)
