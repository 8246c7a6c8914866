"""Configuration loading through the Python surface: shipped configs, every validation error
class, dict configs, the original YAML layout, env interpolation, inheritance, ``echelon check``
and ``echelon convert``."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import echelon
from echelon import _core

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
YAML_LAYOUT = ROOT / "tests" / "fixtures" / "yaml_layout"
SECRET = "sk-test-SECRET123"


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("ECHELON_MOCK_URL", raising=False)
    monkeypatch.delenv("ECHELON_MOCK_KEY", raising=False)


def write_tree(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


def base_dict() -> dict:
    return {
        "providers": {
            "openai": {
                "common": {"type": "openai", "api_key": "${OPENAI_API_KEY}"},
                "gpt4o": {"name": "openai-gpt4o", "model": "gpt-4o"},
            },
            "mock": {"common": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8900/v1"}, "mock-a": {}},
        },
        "groups": {
            "fast": {"echelon1": {"models": ["openai-gpt4o"]}, "echelon2": {"models": ["mock-a", "mock:mock-b"]}},
            "slow": {"echelon1": {"models": ["mock-a"]}},
        },
        "pools": {"p": {"task_groups": ["fast", "slow.echelon1"]}},
    }


def raises_config(obj) -> echelon.ConfigError:
    with pytest.raises(echelon.ConfigError) as info:
        _core.config_from_dict(obj)
    assert info.value.issues, "a ConfigError always lists its issues"
    return info.value


def issue(err: echelon.ConfigError, key: str) -> dict:
    for i in err.issues:
        if i["key"] == key:
            return i
    raise AssertionError(f"no issue at {key!r}: {err.issues}")


# ---- shipped and fixture configs ----


@pytest.mark.parametrize("path", [CONFIGS, CONFIGS / "llms"])
def test_shipped_configs_load(path):
    cfg = _core.load_config_dir(str(path))
    assert set(cfg["groups"]) == {"fast_group", "thinking_group", "demo_group"}
    assert set(cfg["pools"]) == {"fast_pool", "thinking_pool", "demo_pool"}
    demo = cfg["groups"]["demo_group"]
    assert [e["name"] for e in demo["echelons"]] == ["echelon1", "echelon2", "echelon3"]
    assert [e["priority"] for e in demo["echelons"]] == [1, 2, 3]
    long, fast = cfg["models"]["mock-long"], cfg["models"]["mock-fast-a"]
    assert long["context_window"] > fast["context_window"]
    assert long["base_url"] == "http://127.0.0.1:8900/v1"
    # Keys are masked in the dict; durations are float seconds.
    assert cfg["models"]["openai-gpt4o"]["api_key"] == "${OPENAI_API_KEY} (set)"
    assert SECRET not in repr(cfg)
    assert cfg["models"]["openai-gpt4o"]["timeouts"]["total"] == 120.0
    assert cfg["pools"]["fast_pool"]["rate_limit"] == {"algorithm": "token_bucket", "bucket_size": 1000, "refill_rate": 16.67}
    assert any("GEMINI_API_KEY" in w["message"] for w in cfg["warnings"])


def test_mock_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ECHELON_MOCK_URL", "http://127.0.0.1:9999/v1")
    cfg = _core.load_config_dir(str(CONFIGS))
    assert cfg["models"]["mock-smart"]["base_url"] == "http://127.0.0.1:9999/v1"


def test_yaml_layout_fixture():
    cfg = _core.load_config_dir(str(YAML_LAYOUT))
    assert set(cfg["groups"]) == {"fast_group", "fast_small_group"}
    small = cfg["groups"]["fast_small_group"]
    assert [e["name"] for e in small["echelons"]] == ["translation", "analysis", "execute", "thinking", "high_payload"]
    assert small["fallback_strategy"] == "model_rotate"
    assert cfg["pools"]["fast_pool"]["task_groups"] == ["fast_group", "fast_small_group.high_payload"]
    assert cfg["models"]["openai-gpt4"]["model"] == "gpt-4"
    assert cfg["models"]["siliconflow-qwen-7b"]["kind"] == "openai_compatible"
    assert cfg["models"]["openai-gpt4"]["kind"] == "openai"
    assert cfg["global"]["rate_limit"] == {"algorithm": "sliding_window", "window_size": 60.0, "max_requests": 10000}


def test_dict_config_and_generation_two_shapes():
    cfg = _core.config_from_dict(base_dict())
    assert cfg["groups"]["fast"]["echelons"][1]["models"] == ["mock-a", "mock:mock-b"]
    cfg = _core.config_from_dict(
        {
            "providers": {"openai": {"type": "openai", "api_key": "literal-key"}},
            "task_groups": {"g": {"echelon1": {"priority": 1, "model": "gpt-4o", "provider": "openai"}}},
            "pools": {"pp": {"task_groups": ["g"], "rotation": {"strategy": "least_recently_used"}}},
        }
    )
    assert cfg["groups"]["g"]["echelons"][0]["models"] == ["openai:gpt-4o"]
    assert cfg["pools"]["pp"]["rotation_strategy"] == "least_recently_used"
    assert cfg["providers"]["openai"]["defaults"]["api_key"] == "***"


# ---- each validation error class ----


def test_unknown_key_with_suggestion():
    d = base_dict()
    d["groups"]["fast"]["echelon1"]["concurency_limit"] = 5
    err = raises_config(d)
    i = issue(err, "groups.fast.echelon1.concurency_limit")
    assert i["message"] == "unknown key `concurency_limit` (did you mean `concurrency_limit`?)"
    assert i["value"] == "5"
    assert i["file"] is None
    assert err.key == "groups.fast.echelon1.concurency_limit"


def test_wrong_type():
    d = base_dict()
    d["pools"]["p"]["task_groups"] = "fast"
    i = issue(raises_config(d), "pools.p.task_groups")
    assert i["message"] == "expected array of strings, found string"
    assert i["value"] == '"fast"'


def test_out_of_range():
    d = base_dict()
    d["groups"]["fast"]["circuit_breaker"] = {"failure_threshold": 500}
    d["groups"]["fast"]["echelon1"]["temperature"] = 3
    err = raises_config(d)
    assert issue(err, "groups.fast.circuit_breaker.failure_threshold")["message"] == "out of range: must be between 1 and 100"
    assert issue(err, "groups.fast.echelon1.temperature")["message"] == "out of range: must be between 0 and 2"
    assert len(err.issues) == 2


def test_invalid_enum():
    d = base_dict()
    d["pools"]["p"]["rotation_strategy"] = "random"
    i = issue(raises_config(d), "pools.p.rotation_strategy")
    assert "expected one of: round_robin, least_recently_used, weighted, least_busy, latency" in i["message"]


def test_http_version():
    d = base_dict()
    cfg = _core.config_from_dict(d)
    assert cfg["models"]["openai-gpt4o"]["http_version"] == "auto"  # the default
    d["providers"]["openai"]["common"]["http_version"] = "2"
    d["providers"]["mock"]["mock-a"] = {"http_version": "auto"}
    cfg = _core.config_from_dict(d)
    assert cfg["models"]["openai-gpt4o"]["http_version"] == "2"
    assert cfg["models"]["mock-a"]["http_version"] == "auto"
    d["providers"]["mock"]["mock-a"] = {"http_version": "3"}
    i = issue(raises_config(d), "providers.mock.mock-a.http_version")
    assert i["value"] == '"3"'
    assert "expected one of: 1.1, auto, 2" in i["message"]


def test_unknown_model_reference():
    d = base_dict()
    d["groups"]["fast"]["echelon1"]["models"] = ["openai-gpt4o", "openai-gpt-4o"]
    i = issue(raises_config(d), "groups.fast.echelon1.models[1]")
    assert i["value"] == '"openai-gpt-4o"'
    assert i["message"].startswith("unknown model `openai-gpt-4o` in group `fast`, echelon `echelon1`")
    assert "did you mean `openai-gpt4o`?" in i["message"]


def test_unknown_group_references():
    d = base_dict()
    d["pools"]["p"]["task_groups"] = ["fast", "slow.echelon7", "nope"]
    d["groups"]["fast"]["fallback_config"] = {"fallback_groups": ["slo"]}
    err = raises_config(d)
    assert issue(err, "pools.p.task_groups[1]")["message"].startswith("group `slow` has no echelon `echelon7`")
    assert issue(err, "pools.p.task_groups[2]")["message"] == "unknown group `nope`"
    assert issue(err, "groups.fast.fallback_config.fallback_groups[0]")["message"] == "unknown group `slo` (did you mean `slow`?)"


def test_fallback_cycle():
    d = base_dict()
    d["groups"]["fast"]["fallback_config"] = {"fallback_groups": ["slow"]}
    d["groups"]["slow"]["fallback_config"] = {"fallback_groups": ["fast.echelon2"]}
    i = issue(raises_config(d), "groups.fast.fallback_config.fallback_groups")
    assert i["message"] == "fallback cycle: fast → slow → fast"


def test_group_without_echelons_and_echelon_without_models():
    d = base_dict()
    d["groups"]["hollow"] = {"description": "no echelons"}
    d["groups"]["slow"]["echelon1"]["models"] = []
    err = raises_config(d)
    assert issue(err, "groups.hollow")["message"].startswith("group `hollow` has no echelons")
    assert issue(err, "groups.slow.echelon1.models")["message"] == "echelon has no models"


def test_duplicate_names(tmp_path):
    write_tree(
        tmp_path,
        {
            "llms/provider/mock/common.toml": 'type = "mock"\nbase_url = "http://127.0.0.1:1/v1"\n',
            "llms/provider/mock/a.toml": 'name = "m"\n',
            "llms/provider/mock/b.toml": 'name = "m"\n',
            "llms/groups/g.toml": '[echelon1]\nmodels = ["m"]\n',
            "llms/groups/g2.toml": 'name = "g"\n[echelon1]\nmodels = ["m"]\n',
        },
    )
    with pytest.raises(echelon.ConfigError) as info:
        _core.load_config_dir(str(tmp_path))
    msgs = {(Path(i["file"]).name, i["key"]): i["message"] for i in info.value.issues}
    assert msgs[("b.toml", "name")].startswith("duplicate model `m`")
    assert msgs[("g2.toml", "name")].startswith("duplicate group `g`")


def test_syntax_error_has_file_and_line(tmp_path):
    write_tree(tmp_path, {"llms/groups/g.toml": "[echelon1]\nmodels = [\n", "llms/polling_pools/p.yaml": "a: [1\n"})
    with pytest.raises(echelon.ConfigError) as info:
        _core.load_config_dir(str(tmp_path))
    by_file = {Path(i["file"]).name: i["message"] for i in info.value.issues}
    assert by_file["g.toml"].startswith("TOML syntax error at line")
    assert by_file["p.yaml"].startswith("YAML syntax error at line")


def test_file_issues_carry_the_path(tmp_path):
    write_tree(
        tmp_path,
        {
            "llms/provider/openai/common.toml": 'type = "openai"\napi_key = 42\n',
            "llms/groups/g.toml": '[echelon1]\nmodels = ["openai:gpt-4o"]\npriority = "first"\n',
        },
    )
    with pytest.raises(echelon.ConfigError) as info:
        _core.load_config_dir(str(tmp_path))
    err = info.value
    key_issue = next(i for i in err.issues if i["key"] == "api_key")
    assert key_issue["file"].endswith("common.toml")
    assert key_issue["value"] == "***"
    prio = next(i for i in err.issues if i["key"] == "echelon1.priority")
    assert prio["file"].endswith(os.path.join("groups", "g.toml"))
    assert (prio["value"], prio["message"]) == ('"first"', "expected integer, found string")


# ---- env interpolation and inheritance ----


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("MOCK_HOST", "127.0.0.1")
    monkeypatch.delenv("MOCK_PORT", raising=False)
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    d = base_dict()
    d["providers"]["mock"]["common"]["base_url"] = "http://${MOCK_HOST}:${MOCK_PORT:-8900}/v1"
    d["providers"]["mock"]["common"]["api_key"] = "${NOT_SET_KEY}"
    cfg = _core.config_from_dict(d)
    assert cfg["models"]["mock-a"]["base_url"] == "http://127.0.0.1:8900/v1"
    assert cfg["models"]["mock-a"]["api_key"] == "${NOT_SET_KEY} (unset)"
    assert any(w["value"] == "${NOT_SET_KEY}" and "not set" in w["message"] for w in cfg["warnings"])
    assert cfg["models"]["openai-gpt4o"]["api_key"] == "${OPENAI_API_KEY} (set)"


def test_inherits_from_deep_merge(tmp_path):
    write_tree(
        tmp_path,
        {
            "llms/provider/acme/base.yaml": """\
                model_type: openai_compatible
                base_url: http://127.0.0.1:9/v1
                default_parameters: {temperature: 0.2, max_tokens: 100}
                timeout_config: {request_timeout: 50, connect_timeout: 5}
                """,
            "llms/provider/acme/big.yaml": """\
                inherits_from: base.yaml
                model_name: big-1
                default_parameters: {max_tokens: 900}
                """,
            "llms/groups/g.yaml": "echelon1: {models: [big]}\n",
        },
    )
    cfg = _core.load_config_dir(str(tmp_path))
    big = cfg["models"]["big"]
    assert big["model"] == "big-1"
    assert big["parameters"]["temperature"] == 0.2
    assert big["parameters"]["max_tokens"] == 900
    assert big["timeouts"]["total"] == 50.0 and big["timeouts"]["connect"] == 5.0


# ---- echelon check / convert ----


def run_cli(*args, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "echelon.cli", *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=60)


def test_check_shipped_configs_never_prints_a_key():
    r = run_cli("check", "configs", env={"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": "sk-ant-OTHERSECRET"})
    assert r.returncode == 0, r.stderr
    for name in ["fast_pool", "thinking_pool", "demo_pool", "fast_group", "thinking_group", "demo_group", "mock-long"]:
        assert name in r.stdout
    assert "${OPENAI_API_KEY} (set)" in r.stdout
    assert SECRET not in r.stdout + r.stderr
    assert "OTHERSECRET" not in r.stdout + r.stderr


def test_check_invalid_dir_lists_every_issue(tmp_path):
    write_tree(
        tmp_path,
        {
            "llms/provider/openai/common.toml": 'type = "openai"\napi_key = "${OPENAI_API_KEY}"\n',
            "llms/groups/g.toml": '[echelon1]\nmodels = ["ghost"]\ntemprature = 1\n',
            "llms/polling_pools/p.toml": 'task_groups = ["gg"]\n',
        },
    )
    r = run_cli("check", str(tmp_path), env={"OPENAI_API_KEY": SECRET})
    assert r.returncode == 1
    assert "configuration invalid: 3 problem(s)" in r.stderr
    assert "unknown model `ghost`" in r.stderr
    assert "unknown key `temprature` (did you mean `temperature`?)" in r.stderr
    assert "unknown group `gg` (did you mean `g`?)" in r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_check_missing_dir_exits_1(tmp_path):
    r = run_cli("check", str(tmp_path / "nope"))
    assert r.returncode == 1
    assert "config directory not found" in r.stderr


def test_convert_yaml_layout_round_trip(tmp_path):
    r = run_cli("convert", str(YAML_LAYOUT), str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    written = r.stdout.split()
    assert any(p.endswith(os.path.join("groups", "fast_small_group.toml")) for p in written)
    for p in written:
        assert SECRET not in Path(p).read_text()
    src = _core.load_config_dir(str(YAML_LAYOUT))
    back = _core.load_config_dir(str(tmp_path / "out"))
    strip = lambda groups: {k: {kk: vv for kk, vv in g.items() if kk != "source"} for k, g in groups.items()}  # noqa: E731
    assert strip(back["groups"]) == strip(src["groups"])
    assert back["global"] == src["global"]
    assert set(back["models"]) == set(src["models"])
    assert _core.check_config(str(tmp_path / "out"))


# ---- properties: random dicts give a config or a ConfigError, nothing else ----

keys = st.sampled_from(
    ["providers", "groups", "pools", "global", "models", "common", "type", "echelon1", "models", "task_groups",
     "fallback_config", "fallback_groups", "priority", "api_key", "base_url", "openai", "fast", "x"]
)
leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12) | st.sampled_from(
    ["openai", "openai_compatible", "${X:-y}", "fast.echelon1", "openai:gpt-4o", "round_robin"]
)
trees = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys | st.text(max_size=6), inner, max_size=5), max_leaves=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_random_dicts_only_raise_config_error(obj):
    try:
        cfg = _core.config_from_dict(obj)
    except echelon.ConfigError as err:
        assert err.issues
        for i in err.issues:
            assert set(i) == {"file", "key", "value", "message"}
    else:
        assert isinstance(cfg, dict)


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({"groups": st.dictionaries(st.text(min_size=1, max_size=5), st.dictionaries(keys, leaves, max_size=4), max_size=3)}))
def test_random_groups_only_raise_config_error(obj):
    base = copy.deepcopy(base_dict())
    base["groups"].update(obj["groups"])
    try:
        _core.config_from_dict(base)
    except echelon.ConfigError as err:
        assert err.issues
