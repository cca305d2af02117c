"""``/shared``: one directory in every pod womm creates in a namespace, when the cluster
provides shared storage.

An admin names a PersistentVolumeClaim (ReadWriteMany, or ReadWriteOnce on a single-node
cluster) with ``womm cluster-setup --shared-pvc NAME``, which adds ConfigMap
:data:`SETTINGS` (``shared-pvc: NAME``) to the namespace's setup. Whenever womm creates a pod
there — workers, ``womm shell``, experiment tasks, the ``--async`` leader — it reads that
ConfigMap once and mounts the claim at :data:`MOUNT`. Without the ConfigMap (or without the
right to read it) pods get no ``/shared`` and nothing else changes.
"""

from __future__ import annotations

from typing import Any

from ..labels import MANAGED_BY
from .client import ApiError

__all__ = ["KEY", "MOUNT", "SETTINGS", "VOLUME", "mount", "settings_record", "shared_claim",
           "volume"]

SETTINGS = "womm-settings"
KEY = "shared-pvc"
MOUNT = "/shared"
VOLUME = "womm-shared"


def settings_record(claim: str, namespace: str | None = None) -> dict[str, Any]:
    """ConfigMap :data:`SETTINGS` naming the claim every womm pod mounts at ``/shared``."""

    meta: dict[str, Any] = {"name": SETTINGS, "labels": {MANAGED_BY: "womm"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {KEY: claim}}


def shared_claim(core: Any, namespace: str) -> str:
    """The claim recorded in the namespace's :data:`SETTINGS` ("" when there is none);
    ``core`` is a :class:`~.client.Clients`' ``core``."""
    try:
        record = core.read_namespaced_config_map(SETTINGS, namespace)
    except ApiError as exc:
        if exc.status in (403, 404):  # not set up, or not ours to read: no /shared
            return ""
        raise
    return str((record.data or {}).get(KEY, "")).strip()


def volume(claim: str) -> dict[str, Any]:
    """The pod volume of the shared claim."""
    return {"name": VOLUME, "persistentVolumeClaim": {"claimName": claim}}


def mount() -> dict[str, Any]:
    """The container's mount of the shared claim at ``/shared``."""
    return {"name": VOLUME, "mountPath": MOUNT}
