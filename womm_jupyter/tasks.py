"""This machine's record of its tasks: metadata, heartbeat, liveness.

A coordinator writes ``task.json`` into its task directory and touches ``heartbeat`` every
few seconds while it runs. A task whose coordinator is gone (its process ended, or the
heartbeat went stale) but whose workers remain is ORPHANED; `womm finish` removes it.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ._paths import state_root, task_dir
from .events import TaskStatus

__all__ = ["HEARTBEAT_SECONDS", "coordinator_alive", "local_tasks", "read_task", "remove",
           "task_dir", "task_info", "touch_heartbeat", "write_task"]

HEARTBEAT_SECONDS = 2.0
_STALE_AFTER = 5 * HEARTBEAT_SECONDS


def write_task(task_id: str, meta: dict[str, Any]) -> None:
    path = task_dir(task_id) / "task.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path)


def read_task(task_id: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((task_dir(task_id) / "task.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def local_tasks() -> list[dict[str, Any]]:
    """Metadata of every task with state on this machine, oldest first."""
    found = [read_task(path.name) for path in state_root().iterdir() if path.is_dir()]
    return sorted((meta for meta in found if meta), key=lambda meta: meta.get("created", 0))


def touch_heartbeat(task_id: str) -> None:
    (task_dir(task_id) / "heartbeat").touch()


def coordinator_alive(task_id: str, pid: int | None, host: str | None) -> bool:
    """Whether the task's coordinator still runs: same host, live process, fresh heartbeat."""
    if host != socket.gethostname() or not pid:
        return False
    try:
        # A killed coordinator stays a zombie until reaped: it is gone all the same.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        beat = (task_dir(task_id) / "heartbeat").stat().st_mtime
    except (OSError, IndexError):
        return False
    return state != "Z" and time.time() - beat < _STALE_AFTER


def task_info(meta: dict[str, Any], *, ready: int, desired: int) -> Any:
    from .backends.base import TaskInfo

    alive = coordinator_alive(meta["task_id"], meta.get("pid"), meta.get("host"))
    return TaskInfo(task_id=meta["task_id"], backend=meta.get("backend", "?"),
                    created=float(meta.get("created", 0)),
                    status=TaskStatus.RUNNING if alive else TaskStatus.ORPHANED,
                    cpu=str(meta.get("cpu", "")), mem=str(meta.get("mem", "")),
                    ready=ready, desired=desired, cwd=meta.get("cwd", ""),
                    command=meta.get("command", ""), owner=meta.get("owner", ""))


def remove(task_id: str) -> None:
    shutil.rmtree(task_dir(task_id), ignore_errors=True)
