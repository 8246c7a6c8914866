"""``echelon compat write-shims DIR``: small modules at the original module paths that hand
out the ``echelon.compat`` modules, so code importing the original paths runs unmodified.

A leaf shim replaces itself in ``sys.modules`` with the compat module (the same module object,
so ``mock.patch`` on either name patches both). A path that is a package in the original (it
has shims below it) is written as a package whose ``__init__.py`` re-exports the compat module
it stands for. Existing files are never overwritten unless they are shims written by this
command (or ``force`` is given); existing ``__init__.py`` files of intermediate packages (the
user's own) are left as they are.

The original kept its code under ``src/`` and ran with ``src/`` on ``sys.path`` as well, so it
imported both ``src.infrastructure.llm.x`` and ``infrastructure.llm.x``: with ``DIR/src`` on
``sys.path`` both spellings resolve to the same compat module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["ORIGINAL_MODULES", "ShimReport", "write_shims", "MARKER"]

MARKER = "# echelon compat shim"

_C = "echelon.compat"

#: Original module path → the ``echelon.compat`` module that serves it. HEAD paths and the
#: older ``src.infrastructure.llm.*`` / ``src.services.llm.*`` paths the original's own tests
#: import.
ORIGINAL_MODULES: Dict[str, str] = {
    # scheduling: pools, task groups, limits
    "src.services.llm.scheduling": _C,
    "src.services.llm.scheduling.polling_pool": f"{_C}.polling_pool",
    "src.services.llm.scheduling.task_group_manager": f"{_C}.task_group_manager",
    "src.services.llm.scheduling.concurrency_controller": f"{_C}.concurrency_controller",
    "src.services.llm.polling_pool": f"{_C}.polling_pool",
    "src.services.llm.task_group_manager": f"{_C}.task_group_manager",
    "src.services.llm.concurrency_controller": f"{_C}.concurrency_controller",
    "src.services.llm.enhanced_fallback_manager": f"{_C}.enhanced_fallback_manager",
    "src.infrastructure.llm.polling_pool": f"{_C}.polling_pool",
    "src.infrastructure.llm.task_group_manager": f"{_C}.task_group_manager",
    "src.infrastructure.llm.concurrency_controller": f"{_C}.concurrency_controller",
    "src.infrastructure.llm.enhanced_fallback_manager": f"{_C}.enhanced_fallback_manager",
    # responses, clients, exceptions, interfaces
    "src.infrastructure.llm.models": f"{_C}.models",
    "src.core.llm.models": f"{_C}.models",
    "src.infrastructure.llm.interfaces": f"{_C}.interfaces",
    "src.core.llm.interfaces": f"{_C}.interfaces",
    "src.infrastructure.llm.exceptions": f"{_C}.exceptions",
    "src.core.llm.exceptions": f"{_C}.exceptions",
    "src.core.common.exceptions.llm": f"{_C}.exceptions",
    "src.core.common.exceptions.llm_wrapper": f"{_C}.wrappers.exceptions",
    "src.interfaces.llm": f"{_C}.interfaces",
    "src.interfaces.llm.base": f"{_C}.interfaces",
    "src.interfaces.llm.factory": f"{_C}.interfaces",
    "src.interfaces.llm.polling": f"{_C}.interfaces",
    "src.interfaces.llm.task_group": f"{_C}.interfaces",
    "src.interfaces.llm.exceptions": f"{_C}.exceptions",
    "src.interfaces.llm.fallback": f"{_C}.interfaces",
    "src.interfaces.llm.fallback.base": f"{_C}.interfaces",
    "src.interfaces.llm.retry": f"{_C}.interfaces",
    "src.interfaces.llm.retry.base": f"{_C}.interfaces",
    # wrappers
    "src.core.llm.wrappers": f"{_C}.wrappers",
    "src.core.llm.wrappers.base_wrapper": f"{_C}.wrappers.base_wrapper",
    "src.core.llm.wrappers.polling_pool_wrapper": f"{_C}.wrappers.polling_pool_wrapper",
    "src.core.llm.wrappers.task_group_wrapper": f"{_C}.wrappers.task_group_wrapper",
    "src.core.llm.wrappers.wrapper_factory": f"{_C}.wrappers.wrapper_factory",
    "src.core.llm.wrappers.fallback_manager": f"{_C}.fallback_manager",
    "src.infrastructure.llm.wrappers": f"{_C}.wrappers",
    "src.infrastructure.llm.wrappers.base_wrapper": f"{_C}.wrappers.base_wrapper",
    "src.infrastructure.llm.wrappers.polling_pool_wrapper": f"{_C}.wrappers.polling_pool_wrapper",
    "src.infrastructure.llm.wrappers.task_group_wrapper": f"{_C}.wrappers.task_group_wrapper",
    "src.infrastructure.llm.wrappers.wrapper_factory": f"{_C}.wrappers.wrapper_factory",
    "src.infrastructure.llm.wrappers.fallback_manager": f"{_C}.fallback_manager",
    "src.infrastructure.llm.wrappers.exceptions": f"{_C}.wrappers.exceptions",
    # fallback: group level (services) and model level (infrastructure)
    "src.services.llm.fallback_system": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_manager": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_config": f"{_C}.fallback_config",
    "src.services.llm.fallback_system.interfaces": f"{_C}.interfaces",
    "src.services.llm.fallback_system.strategies": f"{_C}.fallback_strategies",
    "src.services.llm.fallback_system.fallback_engine": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_tracker": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_factory": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_executor": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_orchestrator": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_statistics": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_session_manager": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_strategy_manager": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.fallback_configuration_manager": f"{_C}.fallback_manager",
    "src.services.llm.fallback_system.logger_adapter": f"{_C}.fallback_manager",
    "src.infrastructure.llm.fallback_system": f"{_C}.fallback_manager",
    "src.infrastructure.llm.fallback_system.fallback_manager": f"{_C}.fallback_manager",
    "src.infrastructure.llm.fallback_system.fallback_config": f"{_C}.fallback_config",
    "src.infrastructure.llm.fallback_system.interfaces": f"{_C}.interfaces",
    "src.infrastructure.llm.fallback_system.strategies": f"{_C}.fallback_strategies",
    "src.infrastructure.llm.fallback": f"{_C}.fallback_manager",
    "src.infrastructure.llm.fallback.fallback_config": f"{_C}.fallback_config",
    "src.infrastructure.llm.fallback.fallback_engine": f"{_C}.fallback_manager",
    "src.infrastructure.llm.fallback.fallback_tracker": f"{_C}.fallback_manager",
    "src.infrastructure.llm.fallback.interfaces": f"{_C}.interfaces",
    "src.infrastructure.llm.fallback.strategies": f"{_C}.fallback_strategies",
    "src.infrastructure.llm.fallback_client": f"{_C}.fallback_client",
    # retry
    "src.infrastructure.llm.retry": f"{_C}.retry",
    "src.infrastructure.llm.retry.retry_manager": f"{_C}.retry",
    "src.infrastructure.llm.retry.retry_config": f"{_C}.retry",
    "src.infrastructure.llm.retry.interfaces": f"{_C}.retry",
    "src.infrastructure.llm.retry.strategies": f"{_C}.retry",
    "src.services.llm.retry": f"{_C}.retry",
    "src.services.llm.retry.retry_manager": f"{_C}.retry",
    "src.services.llm.retry.strategies": f"{_C}.retry",
    # HTTP connection pool
    "src.infrastructure.llm.pool": f"{_C}.connection_pool",
    "src.infrastructure.llm.pool.connection_pool": f"{_C}.connection_pool",
    "src.infrastructure.llm.pool.factory": f"{_C}.connection_pool",
    "src.infrastructure.llm.pool.interfaces": f"{_C}.connection_pool",
    # configuration
    "src.infrastructure.config.models.task_group_config": f"{_C}.task_group_config",
    "src.core.config.models.task_group_config": f"{_C}.task_group_config",
    "src.infrastructure.config.loader.file_config_loader": f"{_C}.config_loader",
    "src.infrastructure.config.interfaces": f"{_C}.config_loader",
}

_LEAF = '''{marker}: `{name}` is served by `{target}`.
# Written by `echelon compat write-shims`; re-run it instead of editing this file.
import importlib as _importlib
import sys as _sys

_sys.modules[__name__] = _importlib.import_module("{target}")
'''

_PACKAGE = '''{marker}: the package `{name}` re-exports `{target}`.
# Written by `echelon compat write-shims`; re-run it instead of editing this file.
import importlib as _importlib

_target = _importlib.import_module("{target}")
globals().update({{_k: _v for _k, _v in vars(_target).items() if not _k.startswith("__")}})
__all__ = list(getattr(_target, "__all__", ()))


def __getattr__(name):
    return getattr(_target, name)
'''

_INTERMEDIATE = '''{marker}: package `{name}` (holds compat shims only).
'''


@dataclass
class ShimReport:
    """What :func:`write_shims` did: files written, files left alone (with why)."""

    written: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def _is_ours(path: Path) -> bool:
    try:
        with path.open("r", encoding="utf-8") as f:
            return f.readline().startswith(MARKER)
    except OSError:
        return False


def write_shims(directory: "os.PathLike[str] | str", force: bool = False, modules: Optional[Dict[str, str]] = None) -> ShimReport:
    """Write the shims under ``directory`` (the root that holds the original ``src/``).

    A file that exists and was not written by this command is left alone and listed in
    ``skipped`` unless ``force``; ``__init__.py`` files of intermediate packages that exist
    are always kept (``kept``). Raises ``NotADirectoryError`` when ``directory`` exists and is
    not a directory.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"write-shims: {root} exists and is not a directory")
    table = dict(ORIGINAL_MODULES if modules is None else modules)
    for name, target in table.items():
        parts = name.split(".")
        if not all(p.isidentifier() for p in parts) or not target.startswith(f"{_C}"):
            raise ValueError(f"write-shims: bad entry {name!r} -> {target!r}")
    packages = {".".join(n.split(".")[:i]) for n in table for i in range(1, len(n.split(".")))}
    report = ShimReport()

    def put(path: Path, text: str, user_file_ok: bool) -> None:
        if path.exists():
            if user_file_ok and not _is_ours(path):
                report.kept.append(str(path))
                return
            if not force and not _is_ours(path):
                report.skipped.append(str(path))
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        report.written.append(str(path))

    for pkg in sorted(packages):
        d = root.joinpath(*pkg.split("."))
        if d.exists() and not d.is_dir():
            report.skipped.append(str(d))
            continue
        init = d / "__init__.py"
        if pkg in table:
            put(init, _PACKAGE.format(marker=MARKER, name=pkg, target=table[pkg]), user_file_ok=False)
        else:
            put(init, _INTERMEDIATE.format(marker=MARKER, name=pkg), user_file_ok=True)
    for name in sorted(n for n in table if n not in packages):
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        put(path, _LEAF.format(marker=MARKER, name=name, target=table[name]), user_file_ok=False)
    return report
