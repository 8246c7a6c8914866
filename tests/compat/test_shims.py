"""``echelon compat write-shims DIR``: modules at the original paths that serve echelon.compat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from echelon.cli import main as cli
from echelon.compat._shims import MARKER, ORIGINAL_MODULES, write_shims

PROBE = r"""
import importlib, sys
checks = {
    "src.services.llm.scheduling.polling_pool": "echelon.compat.polling_pool",
    "src.infrastructure.llm.wrappers.polling_pool_wrapper": "echelon.compat.wrappers.polling_pool_wrapper",
    "infrastructure.llm.exceptions": "echelon.compat.exceptions",
    "src.infrastructure.llm.retry.strategies": "echelon.compat.retry",
}
for shim, real in checks.items():
    assert importlib.import_module(shim) is importlib.import_module(real), shim
from src.core.llm.wrappers import PollingPoolWrapper, WrapperError
from src.services.llm.fallback_system import FallbackManager, FallbackSessionManager
from src.infrastructure.llm.fallback_system.fallback_config import FallbackSession
from core.common.exceptions.llm import LLMCallError
import echelon.compat as c
assert PollingPoolWrapper is c.PollingPoolWrapper and FallbackManager is c.FallbackManager
assert LLMCallError is c.LLMCallError and FallbackSession is c.FallbackSession
print("ok")
"""


def run_probe(root: Path) -> subprocess.CompletedProcess:
    env_path = f"{root}{':' + str(root / 'src')}"
    return subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})


def test_shims_alias_the_compat_modules(tmp_path: Path) -> None:
    report = write_shims(tmp_path)
    assert not report.skipped and not report.kept
    leaves = [n for n in ORIGINAL_MODULES if not any(o.startswith(n + ".") for o in ORIGINAL_MODULES)]
    assert all((tmp_path / Path(*n.split("."))).with_suffix(".py").is_file() for n in leaves)
    r = run_probe(tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_existing_files_are_kept_unless_forced(tmp_path: Path, capsys) -> None:
    own_init = tmp_path / "src" / "__init__.py"
    own_init.parent.mkdir(parents=True)
    own_init.write_text("# the user's package\n")
    user_module = tmp_path / "src" / "infrastructure" / "llm" / "models.py"
    user_module.parent.mkdir(parents=True)
    user_module.write_text("# the original module, still here\n")
    assert cli(["compat", "write-shims", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"skipped (exists and is not a shim; --force overwrites): {user_module}" in err
    assert f"kept (your own package file): {own_init}" in err
    assert user_module.read_text() == "# the original module, still here\n"
    # Re-running rewrites its own shims; --force replaces the user's module, not its package init.
    assert cli(["compat", "write-shims", str(tmp_path), "--force"]) == 0
    assert user_module.read_text().startswith(MARKER)
    assert own_init.read_text() == "# the user's package\n"
    assert run_probe(tmp_path).returncode == 0


def test_bad_target_is_reported(tmp_path: Path, capsys) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    assert cli(["compat", "write-shims", str(f)]) == 1
    assert "is not a directory" in capsys.readouterr().err
