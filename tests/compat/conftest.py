"""Fixtures: a real mock provider on 127.0.0.1 and task group managers pointing at it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from echelon.compat import TaskGroupManager
from echelon.testing import MockProvider

from .helpers import FIXTURES, Facade, llm_config


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch):
    with MockProvider({"*": {"content_chars": 60, "chunks": 4}}) as m:
        monkeypatch.setenv("ECHELON_MOCK_URL", m.openai_base_url)
        yield m


@pytest.fixture
def tgm(mock: MockProvider):
    m = TaskGroupManager(Facade(llm_config(mock)))
    yield m
    m.close()


@pytest.fixture
def yaml_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "configs"
    shutil.copytree(FIXTURES, dst)
    return dst
