"""Experiments as `womm status` and `womm finish` see them, from the cluster alone.

An experiment ``<id>`` is a root ConfigMap ``womm-task-<id>`` (label ``womm/role=experiment``,
annotations for `womm status`), a Lease of the same name its running client renews every
:data:`~womm_jupyter.kube.client.HEARTBEAT_SECONDS`, and its pods (see
:mod:`.experiment`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

from ..backends.base import TaskInfo
from ..kube import manifests
from ..kube.client import (
    ApiError,
    Clients,
    clients,
    delete_each,
    delete_pod,
    lease_alive,
    now,
    see_through,
)
from ..kube.manifests import selector
from ..labels import (
    LABEL_ATTEMPT,
    LABEL_EXPERIMENT_TASK,
    LABEL_OWNER,
    LABEL_ROLE,
    LABEL_TASK,
    described,
)
from ..naming import owner, task_object_name

__all__ = ["LABEL_ATTEMPT", "LABEL_EXPERIMENT_TASK", "ROLE_EXPERIMENT", "create_root",
           "delete_root",
           "finish", "tasks"]

ROLE_EXPERIMENT = "experiment"


def create_root(built: Clients, task_id: str, owner_name: str,
                annotations: dict[str, str]) -> str:
    """Create an experiment's root ConfigMap and the heartbeat Lease it owns, held by this
    process; returns the root's uid (its pods' owner)."""
    root = built.core.create_namespaced_config_map(built.namespace, manifests.experiment_root(
        task_id=task_id, owner=owner_name, annotations=annotations))
    built.coordination.create_namespaced_lease(built.namespace, manifests.experiment_lease(
        task_id=task_id, owner=owner_name, root_uid=root.metadata.uid,
        holder=f"{socket.gethostname()}:{os.getpid()}", now=now()))
    return str(root.metadata.uid)


def delete_root(built: Clients, task_id: str) -> list[str]:
    """Delete an experiment's Lease and root ConfigMap (its pods go with the root)."""
    name = task_object_name(task_id)
    return delete_each(built.namespace, (
        ("lease.coordination.k8s.io", built.coordination.delete_namespaced_lease, name),
        ("configmap", built.core.delete_namespaced_config_map, name)))


def tasks(all_owners: bool = False, *, context: str = "", namespace: str = "") -> list[TaskInfo]:
    """Experiments in the namespace, for `womm status`: RUNNING while their client renews
    their Lease, ORPHANED once it stopped (the client died: `womm finish ID` cleans up).
    HEALTH counts running pods out of the experiment's live pods."""
    built = clients(context, namespace)
    core, namespace = built.core, built.namespace
    owner_name = "" if all_owners else owner()
    roots_selector = selector(role=ROLE_EXPERIMENT, owner=owner_name)
    roots = core.list_namespaced_config_map(namespace, label_selector=roots_selector).items
    if not roots:
        return []
    leases = {lease.metadata.name: lease for lease in built.coordination.list_namespaced_lease(
        namespace, label_selector=roots_selector).items}
    pods: dict[str, list[Any]] = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=selector(
            owner=owner_name)).items:
        if pod.metadata.deletion_timestamp is None:
            pods.setdefault((pod.metadata.labels or {}).get(LABEL_TASK, ""), []).append(pod)
    at = dt.datetime.now(dt.UTC)
    rows = []
    for root in roots:
        meta = root.metadata
        task_id = meta.labels.get(LABEL_TASK, "")
        notes = meta.annotations or {}
        mine = pods.get(task_id, [])
        rows.append(TaskInfo(
            task_id=task_id, backend="kubernetes", created=meta.creation_timestamp.timestamp(),
            status="RUNNING" if lease_alive(leases.get(meta.name), at) else "ORPHANED",
            ready=sum((pod.status.phase if pod.status else "") == "Running" for pod in mine),
            desired=len(mine), owner=meta.labels.get(LABEL_OWNER, ""), **described(notes)))
    return rows


def finish(task_id: str, *, context: str = "", namespace: str = "",
           wait: float = 60.0) -> list[str]:
    """Delete every object of experiment ``task_id`` (pods, Lease, root ConfigMap) and wait
    until none is left; returns what was deleted ([] when it is no experiment). A client
    still running it notices its Lease is gone and stops."""
    built = clients(context, namespace)
    core, namespace = built.core, built.namespace
    try:
        root = core.read_namespaced_config_map(task_object_name(task_id), namespace)
    except ApiError as exc:
        if exc.status != 404:
            raise
        root = None
    pods_selector = selector(task_id=task_id)
    if root is not None and (root.metadata.labels or {}).get(LABEL_ROLE) != ROLE_EXPERIMENT:
        return []  # another kind of task (--async) with the same name scheme
    pods = core.list_namespaced_pod(namespace, label_selector=pods_selector).items
    if root is None and not pods:
        return []
    deleted = delete_root(built, task_id)

    def step() -> list[str]:
        left = [pod.metadata.name for pod in
                core.list_namespaced_pod(namespace, label_selector=pods_selector).items]
        for name in left:
            if delete_pod(core, namespace, name) and f"pod/{name}" not in deleted:
                deleted.append(f"pod/{name}")
        return left

    see_through(step, wait)
    return deleted
