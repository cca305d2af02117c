"""`womm status` and `womm finish` over every backend that has tasks on this machine."""

from __future__ import annotations

import os
import signal

from . import tasks
from .backends import Backend, LocalBackend, TaskInfo
from .errors import MissingToolError, TaskNotFoundError

__all__ = ["finish", "status"]


def _backends() -> list[Backend]:
    found: list[Backend] = [LocalBackend()]
    try:
        from .backends.docker import DockerBackend, connect

        found.append(DockerBackend(connect(timeout=3.0)))
    except MissingToolError:
        pass  # no engine: it can hold no tasks
    return found


def status(all_owners: bool = False) -> list[TaskInfo]:
    """Every task of this owner (or all owners), oldest first."""
    rows = [row for backend in _backends() for row in backend.tasks(all_owners)]
    return sorted(rows, key=lambda row: row.created)


def finish(task_id: str) -> list[str]:
    """Stop a task's coordinator if it still runs, delete every object of the task.

    Returns what was deleted, e.g. ``['containers/womm-task-k3xq9m2a']``.
    """
    meta = tasks.read_task(task_id)
    if meta and tasks.coordinator_alive(task_id, meta.get("pid"), meta.get("host")):
        os.kill(int(meta["pid"]), signal.SIGTERM)  # it cleans up after itself
    deleted = [name for backend in _backends() for name in backend.finish(task_id)]
    if not deleted and meta is None:
        raise TaskNotFoundError(f"no task {task_id} on this machine or its Docker engine: "
                                "`womm status` lists the tasks you can finish.")
    tasks.remove(task_id)
    return deleted
