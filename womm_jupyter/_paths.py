"""Where womm's shipped files and per-task state live."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import MissingToolError, WommError

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


def local_tool(name: str, missing: str) -> str:
    """The path of command ``name`` on this machine; ``missing`` is the error's advice."""
    found = shutil.which(name)
    if not found:
        raise MissingToolError(missing)
    return found


def perl() -> str:
    """The local perl, which GNU parallel and the job transport need."""
    return local_tool("perl", "perl was not found on this machine: GNU parallel needs it. "
                              "Install it (e.g. apt-get install perl) and try again.")


# The longest socket womm puts under the state root: <root>/<task id>/w/<worker>/agent.sock.tmp
# (a sun_path holds 107 bytes): a root longer than this leaves no room for it.
_ROOT_MAX = 107 - len("/xxxxxxxx/w/local/agent.sock.tmp") - 4  # 4: room for worker numbers


def state_root() -> Path:
    """Per-user directory of task state: ``$XDG_RUNTIME_DIR/womm``, else ``/tmp/womm-<uid>``.

    It holds the workers' agent sockets (whoever can connect runs commands as this user), so
    it must be private: created 0700, and refused when it belongs to someone else or is open
    to group or others (another user may have created it first in the shared /tmp). Short on
    purpose: unix socket paths have a 108-byte limit.
    """
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and _private_runtime_dir(runtime, uid):
        root = Path(runtime) / "womm"
    else:
        root = Path(f"/tmp/womm-{uid}")
    ensure_private_dir(root)
    return root


def _private_runtime_dir(path: str, uid: int) -> bool:
    """Whether $XDG_RUNTIME_DIR is usable as the spec promises: an absolute, short directory
    of this user's that nobody else may enter. Anything else (a shared or foreign directory,
    one that does not exist) falls back to /tmp."""
    if not os.path.isabs(path) or len(path) + len("/womm") > _ROOT_MAX:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or check that the existing one is this user's own
    directory that group and others cannot use; raise :class:`WommError` saying what to do."""
    uid = os.getuid()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise WommError(f"cannot create womm's state directory {path} ({exc.strerror}): "
                        "make its parent writable, or set XDG_RUNTIME_DIR to a private "
                        "directory of yours.") from exc
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise WommError(f"womm's state directory {path} exists but is not a directory (a "
                        "symlink or a file, possibly planted by another user): remove it, or "
                        "set XDG_RUNTIME_DIR to a private directory of yours.")
    if st.st_uid != uid:
        raise WommError(f"womm's state directory {path} belongs to uid {st.st_uid}, not to you "
                        f"(uid {uid}): another user may have created it to read your jobs or "
                        "run commands as you. Have it removed (by its owner or root), or set "
                        "XDG_RUNTIME_DIR to a private directory of yours.")
    if st.st_mode & 0o077:
        raise WommError(f"womm's state directory {path} is open to other users (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}): anything in it may have been "
                        f"replaced. Remove it (rm -rf {path}) and run again, or set "
                        "XDG_RUNTIME_DIR to a private directory of yours.")


def task_dir(task_id: str) -> Path:
    """State of one task: sockets, job outputs, joblog, heartbeat. Always directly under the
    state root: the directory is removed when the task ends, so a path must never get here."""
    if task_id in ("", ".", "..") or "/" in task_id or "\0" in task_id:
        raise WommError(f"{task_id[:40]!r} is not a task id: 'womm status' lists your tasks "
                        "and their ids.")
    return state_root() / task_id
