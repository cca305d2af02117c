"""Project and user configuration.

Project config
    ``.womm/config.json`` in the project directory (the directory ``womm setup`` ran in; a
    run in a subdirectory finds the nearest one above it, as git finds ``.git``). Written by
    ``womm setup``; JSON so any tool can read it::

        {
          "version": 1,
          "project_id": "k3xq7a2m",             # names the image repository
          "image": "reg/womm-image-k3xq7a2m@sha256:...",   # what jobs run, by digest
          "tag": "reg/womm-image-k3xq7a2m:20250101-120000", # the pushed tag
          "base": "ubuntu:22.04",               # the first setup's base image
          "share": "lazy",                      # a name of share.METHODS
          "environment": {"GREETING": "..."},   # captured at setup, baked into the image
          "updated": 1735732800.0
        }

User config
    ``$XDG_CONFIG_HOME/womm/config.json`` (default ``~/.config/womm/config.json``):
    ``{"prefix": "registry.example.org/me/"}``, the image prefix offered by the next setup.

Option resolution reads the project config only through :func:`option_defaults`: the keys
it returns are option names (``image``), filled in below ``WOMM_*`` variables and above
built-in defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "PROJECT_FILE",
    "ProjectConfig",
    "find_project",
    "load_project",
    "load_user",
    "option_defaults",
    "save_project",
    "save_user",
    "user_config_path",
]

PROJECT_FILE = Path(".womm") / "config.json"


@dataclasses.dataclass(frozen=True)
class ProjectConfig:
    """What ``womm setup`` recorded for a project directory."""

    project_id: str
    image: str  # repository@sha256:... (what workers run)
    tag: str = ""  # repository:tag as pushed
    base: str = ""
    share: str = "none"
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    updated: float = 0.0
    version: int = 1


def find_project(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` (default: cwd) holding a project config."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    return None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}; check its "
                          "permissions.") from exc
    except ValueError as exc:
        raise ConfigError(f"the {what} {path} is not valid JSON ({exc}): fix it, or delete it "
                          "and run `womm setup` again.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the {what} {path} must hold a JSON object: fix it, or delete it "
                          "and run `womm setup` again.")
    return data


def _write_json(path: Path, data: dict[str, Any], what: str) -> None:
    # Write beside and rename: a reader (a run starting now) sees the old or the new file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the {what} {path}: {exc.strerror}; check the "
                          "directory's permissions.") from exc


def load_project(start: Path | None = None) -> tuple[Path, ProjectConfig] | None:
    """(project directory, its config) for ``start`` or above; None when there is none."""
    directory = find_project(start)
    if directory is None:
        return None
    path = directory / PROJECT_FILE
    data = _read_json(path, "project config")
    known = {field.name for field in dataclasses.fields(ProjectConfig)}
    try:
        config = ProjectConfig(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"the project config {path} is incomplete ({exc}): run `womm setup` "
                          "again.") from exc
    if not isinstance(config.environment, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in config.environment.items()):
        raise ConfigError(f"the project config {path}: \"environment\" must map names to "
                          "strings; fix it or run `womm setup` again.")
    return directory, config


def save_project(directory: Path, config: ProjectConfig) -> Path:
    """Write ``directory/.womm/config.json``; return its path."""
    path = directory / PROJECT_FILE
    data = dataclasses.asdict(dataclasses.replace(config, updated=config.updated or time.time()))
    _write_json(path, data, "project config")
    return path


def option_defaults(start: Path | None = None) -> dict[str, Any]:
    """Option values the project config supplies (below ``WOMM_*``, above built-ins)."""
    found = load_project(start)
    if found is None:
        return {}
    return {"image": found[1].image} if found[1].image else {}


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/womm/config.json``, by default ``~/.config/womm/config.json``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "womm" / "config.json"


def load_user() -> dict[str, Any]:
    """The user config (``{}`` when there is none)."""
    path = user_config_path()
    return _read_json(path, "user config") if path.is_file() else {}


def save_user(**values: Any) -> Path:
    """Update keys of the user config (e.g. ``prefix``); return its path."""
    data = load_user()
    data.update(values)
    path = user_config_path()
    _write_json(path, data, "user config")
    return path
