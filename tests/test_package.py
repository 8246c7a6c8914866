import os
import subprocess
import sys

import echelon


def test_version_and_hierarchy():
    assert isinstance(echelon.__version__, str)
    assert issubclass(echelon.ConfigError, echelon.EchelonError)
    assert issubclass(echelon.RateLimited, echelon.ProviderError)
    assert issubclass(echelon.Timeout, TimeoutError)


def _import_with_env(value: str) -> subprocess.CompletedProcess:
    code = (
        "import echelon\n"
        "from echelon import _core\n"
        "print(_core.runtime_workers())\n"
    )
    env = dict(os.environ, ECHELON_WORKER_THREADS=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_worker_threads_come_from_the_environment():
    done = _import_with_env("1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    done = _import_with_env("3")
    assert done.stdout.strip() == "3", done.stderr


def test_a_bad_worker_thread_count_fails_the_import_with_a_config_error():
    code = (
        "import os, sys\n"
        "try:\n"
        "    import echelon\n"
        "except Exception as e:\n"
        "    from echelon.errors import ConfigError\n"
        "    print(type(e).__name__, isinstance(e, ConfigError), e.key, e.value, '|', e)\n"
        "    sys.exit(0)\n"
        "sys.exit('imported despite a bad ECHELON_WORKER_THREADS')\n"
    )
    for bad in ("0", "many", "65"):
        env = dict(os.environ, ECHELON_WORKER_THREADS=bad)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr + done.stdout
        name, is_config, key, value, _, *message = done.stdout.split()
        assert (name, is_config, key, value) == ("ConfigError", "True", "ECHELON_WORKER_THREADS", bad)
        assert "from 1 to 64" in " ".join(message)
