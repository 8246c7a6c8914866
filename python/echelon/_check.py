"""``echelon check`` and ``echelon convert``: validate a config directory, show what it
resolves to, and write the TOML layout from the original YAML layout.

API keys are never printed: the rendering shows only ``${VAR} (set)`` / ``(unset)`` / ``***``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, TextIO

from . import _core
from .errors import ConfigError


@contextlib.contextmanager
def _quiet_config_log() -> Iterator[None]:
    """The loader also logs each warning; the command prints them itself, so keep them off
    stderr while it runs (the engine's own logger levels are untouched)."""
    logger = logging.getLogger("_core.config")
    saved = logger.propagate
    handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def _print_issues(err: ConfigError, out: TextIO) -> None:
    issues = err.issues or [{"file": None, "key": "", "value": None, "message": err.message}]
    print(f"configuration invalid: {len(issues)} problem(s)", file=out)
    for issue in issues:
        where = issue.get("file") or "<config>"
        key = issue.get("key") or ""
        value = issue.get("value")
        line = f"  {where}"
        if key:
            line += f": {key}"
        if value is not None:
            line += f" = {value}"
        line += f": {issue.get('message')}"
        print(line, file=out)


def main_check(directory: str) -> int:
    """Validate ``directory`` (holding ``llms/``, or the ``llms/`` dir itself) and print what it
    resolves to. Returns 0 when valid; prints every problem and returns 1 when not."""
    try:
        with _quiet_config_log():
            text = _core.check_config(directory)
    except ConfigError as err:
        _print_issues(err, sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def main_convert(src: str, dst: str) -> int:
    """Load ``src`` (the original YAML layout, or any supported layout) and write the TOML layout
    under ``dst``. Returns 0 on success, 1 when ``src`` is invalid or cannot be written."""
    try:
        with _quiet_config_log():
            written, todo = _core.convert_yaml_layout(src, dst)
    except ConfigError as err:
        _print_issues(err, sys.stderr)
        return 1
    except OSError as err:
        print(f"cannot write {dst}: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"wrote {len(written)} files; check them with: echelon check {dst}", file=sys.stderr)
    if todo:
        print(f"\nstill to define ({len(todo)}; until then `echelon check {dst}` reports exactly these):", file=sys.stderr)
        for item in todo:
            print(f"  - {item}", file=sys.stderr)
        print("(run `echelon check` on the source directory to see the keys that were ignored)", file=sys.stderr)
    return 0
