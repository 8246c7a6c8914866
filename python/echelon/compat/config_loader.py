"""``FileConfigLoader``: the ``config_loader`` the original ``TaskGroupManager`` took
(``.load(path)`` relative to the configs root), reading YAML, TOML or JSON.

``${VAR}`` placeholders are left as written: the engine resolves them when it builds the
router, so API keys never pass through Python dicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Optional, Union

from .exceptions import LLMConfigurationError

__all__ = ["IConfigLoader", "FileConfigLoader", "ConfigFileError"]

_EXTS = (".yaml", ".yml", ".toml", ".json")


class ConfigFileError(LLMConfigurationError, ValueError):
    """A config file is missing or does not parse; the message names the file. It is the
    original's ``LLMConfigurationError`` (and a ``ValueError``)."""


class IConfigLoader(ABC):
    """What ``TaskGroupManager`` needs from a config loader: ``load(path)`` of a file relative
    to the configs root. The other methods of the original interface have no-op defaults."""

    @abstractmethod
    def load(self, config_path: str) -> Dict[str, Any]: ...

    def reload(self) -> None:
        """Forget cached files (this loader caches nothing)."""

    def watch_for_changes(self, callback: Callable[..., Any]) -> None:
        """Not supported: call ``TaskGroupManager.reload_config()`` after editing files."""

    def stop_watching(self) -> None:
        pass

    def resolve_env_vars(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """Returned unchanged: ``${VAR}`` placeholders are resolved by the engine, so secrets
        never pass through Python dicts."""
        return config

    def get_config(self, config_path: str) -> Dict[str, Any]:
        return self.load(config_path)


class FileConfigLoader(IConfigLoader):
    """Load config files relative to ``base_path`` (the configs root, e.g. ``"configs"``; a
    relative root is taken from the working directory when each file is read, as the
    original did)."""

    def __init__(self, base_path: Optional[Union[str, "os.PathLike[str]"]] = "configs") -> None:
        if base_path is None:
            base_path = "configs"
        if not isinstance(base_path, (str, os.PathLike)):
            raise LLMConfigurationError(f"FileConfigLoader: base_path must be a path, got {type(base_path).__name__}", config_key="base_path")
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
