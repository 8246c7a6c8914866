"""The stubs are complete enough for `mypy --strict` on a typical user script."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")


def test_mypy_strict_accepts_a_user_script():
    script = Path(__file__).parent / "typing" / "user_script.py"
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_user_script_runs():
    script = Path(__file__).parent / "typing" / "user_script.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Hello from m" in out.stdout
