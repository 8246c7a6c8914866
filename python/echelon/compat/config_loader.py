"""``FileConfigLoader``: the ``config_loader`` the original ``TaskGroupManager`` took
(``.load(path)`` relative to the configs root), reading YAML, TOML or JSON.

``${VAR}`` placeholders are left as written: the engine resolves them when it builds the
router, so API keys never pass through Python dicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

__all__ = ["FileConfigLoader", "ConfigFileError"]

_EXTS = (".yaml", ".yml", ".toml", ".json")


class ConfigFileError(ValueError):
    """A config file is missing or does not parse; the message names the file."""


class FileConfigLoader:
    """Load config files relative to ``base_path`` (the configs root, e.g. ``"configs"``)."""

    def __init__(self, base_path: Union[str, "os.PathLike[str]"] = "configs") -> None:
        self.base_path = Path(base_path)

    def resolve(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """The file ``path`` names (an extension is optional)."""
        p = Path(path)
        full = p if p.is_absolute() else self.base_path / p
        if full.is_file():
            return full
        for ext in _EXTS:
            cand = full.with_name(full.name + ext) if not full.suffix else full.with_suffix(ext)
            if cand.is_file():
                return cand
        raise ConfigFileError(f"config file not found: {full}")

    def load(self, path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
        """Parse one file into a dict."""
        f = self.resolve(path)
        text = f.read_text(encoding="utf-8")
        try:
            if f.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            elif f.suffix == ".toml":
                try:
                    import tomllib  # type: ignore[import-not-found]
                except ImportError:  # Python < 3.11
                    import tomli as tomllib  # type: ignore[no-redef]
                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except Exception as e:  # parse errors of three libraries; all mean "this file is bad"
            raise ConfigFileError(f"{f}: cannot parse: {e}") from e
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigFileError(f"{f}: expected a mapping at the top of the file, found {type(data).__name__}")
        return data

    def exists(self, path: Union[str, "os.PathLike[str]"]) -> bool:
        """Whether ``path`` names a file."""
        try:
            self.resolve(path)
            return True
        except ConfigFileError:
            return False

    def list_dir(self, path: Union[str, "os.PathLike[str]"]) -> List[str]:
        """Entries of a directory under the root (sorted; empty when it does not exist)."""
        d = self.base_path / path
        return sorted(os.listdir(d)) if d.is_dir() else []
