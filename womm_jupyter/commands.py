"""`womm status` and `womm finish` over every backend that has tasks on this machine."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from . import tasks
from .backends import Backend, LocalBackend, TaskInfo, kubernetes_configured
from .errors import MissingToolError, TaskNotFoundError
from .kube import manifests

__all__ = ["cluster_setup", "collect", "finish", "status"]


def _backends(context: str = "", namespace: str = "") -> list[Backend]:
    found: list[Backend] = [LocalBackend()]
    try:
        from .backends.docker import DockerBackend, connect

        found.append(DockerBackend(connect(timeout=3.0)))
    except MissingToolError:
        pass  # no engine: it can hold no tasks
    if kubernetes_configured() or context:
        from .backends.kubernetes import KubernetesBackend

        found.append(KubernetesBackend(context, namespace))
    return found


def status(all_owners: bool = False, *, context: str = "",
           namespace: str = "") -> list[TaskInfo]:
    """Every task of this owner (or all owners), oldest first: local processes, the Docker
    engine, and the Kubernetes namespace when a configuration is found."""
    rows = [row for backend in _backends(context, namespace) for row in backend.tasks(all_owners)]
    if kubernetes_configured() or context:
        from .run import detached

        found = detached.tasks(all_owners, context=context, namespace=namespace)
        ids = {row.task_id for row in found}  # their workers' Deployment is the same task
        rows = [row for row in rows if row.task_id not in ids] + found
        from .kuboid import experiment as experiments

        rows += experiments.tasks(all_owners, context=context, namespace=namespace)
    return sorted(rows, key=lambda row: row.created)


def collect(task_id: str, into: Path, *, context: str = "", namespace: str = "") -> Path | None:
    """Download an --async task's records and output under ``into``; None for other tasks."""
    if not (kubernetes_configured() or context):
        return None
    from .run import detached

    return detached.download(task_id, into, context=context, namespace=namespace)


def cluster_setup(context: str = "", namespace: str = "", *, pod_security: str = "baseline",
                  **fsserver: str) -> list[dict[str, Any]]:
    """The manifests an admin applies once per namespace (`womm cluster-setup`): first the
    Namespace with its Pod Security labels (``pod_security`` enforced), so that `kubectl apply`
    creates a new namespace before what goes in it; ``fsserver``:
    :func:`manifests.cluster_setup`'s file-server arguments."""
    if not namespace:
        try:
            from .backends.kubernetes import load_config

            namespace = load_config(context)[1]
        except MissingToolError:
            namespace = "default"
    return [manifests.namespace_pod_security(namespace, pod_security),
            *manifests.cluster_setup(namespace, **fsserver)]


def finish(task_id: str, *, context: str = "", namespace: str = "") -> list[str]:
    """Stop a task's coordinator if it still runs, delete every object of the task.

    Returns what was deleted, e.g. ``['containers/womm-task-k3xq9m2a']``.
    """
    meta = tasks.read_task(task_id)
    if meta and tasks.coordinator_alive(task_id, meta.get("pid"), meta.get("host")):
        os.kill(int(meta["pid"]), signal.SIGTERM)  # it cleans up after itself
    deleted: list[str] = []
    if kubernetes_configured() or context:
        from .run import detached

        deleted += detached.finish(task_id, context=context, namespace=namespace)
        from .kuboid import experiment as experiments

        deleted += experiments.finish(task_id, context=context, namespace=namespace)
    deleted += [name for backend in _backends(context, namespace)
                for name in backend.finish(task_id) if name not in deleted]
    if not deleted and meta is None:
        raise TaskNotFoundError(f"no task {task_id} on this machine or its Docker engine: "
                                "`womm status` lists the tasks you can finish.")
    tasks.remove(task_id)
    return deleted
