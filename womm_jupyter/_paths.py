"""Where womm's shipped files and per-task state live."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import MissingToolError

_PACKAGE = Path(__file__).resolve().parent


def vendored_parallel() -> Path:
    """GNU parallel as shipped: inside the wheel, or ``vendor/parallel`` in a source tree."""
    for candidate in (_PACKAGE / "_vendor" / "parallel" / "parallel",
                      _PACKAGE.parent / "vendor" / "parallel" / "parallel"):
        if candidate.is_file():
            return candidate
    raise MissingToolError("womm's copy of GNU parallel is missing from this installation: "
                           "reinstall womm_jupyter (pip install --force-reinstall womm_jupyter).")


def transport_file(name: str) -> Path:
    """``agent.pl`` or ``womm_sh.pl``."""
    return _PACKAGE / "transport" / name


def perl() -> str:
    """The local perl, which GNU parallel and the job transport need."""
    found = shutil.which("perl")
    if not found:
        raise MissingToolError("perl was not found on this machine: GNU parallel needs it. "
                               "Install it (e.g. apt-get install perl) and try again.")
    return found


def state_root() -> Path:
    """Per-user directory of task state. Short on purpose: it holds unix sockets (108 bytes)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(runtime) / "womm" if runtime else Path(f"/tmp/womm-{os.getuid()}")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def task_dir(task_id: str) -> Path:
    """State of one task: sockets, job outputs, joblog, heartbeat."""
    return state_root() / task_id
