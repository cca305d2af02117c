"""The in-cluster file server (``fsserver/``): its manifests and its image build.

`womm cluster-setup` prints :func:`fsserver_objects` beside the RBAC objects: a Deployment
``womm-fsserver`` (one unprivileged pod: non-root uid, no capabilities, read-only root
filesystem, no service-account token) whose export directory is an emptyDir, or a PVC when the
admin names a storage class; a Service of the same name for the NFS port; and a NetworkPolicy
that admits only womm's own pods of the namespace to it. The server's verbs (``alloc``,
``free``, ``rsync``, ``sftp``, ...) are run through exec streams; see ``fsserver/README.md``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ImageError, OptionError
from ..labels import LABEL_COMPONENT, MANAGED_BY

__all__ = ["EXPORT", "FSSERVER", "NFS_PORT", "UID", "build_fsserver_image", "default_image",
           "fsserver_objects"]

FSSERVER = "womm-fsserver"
EXPORT = "/export"
NFS_PORT = 2049
UID = 65534  # nobody: never root, and sftp-server needs a passwd entry for its uid


def default_image(prefix: str) -> str:
    """The server image `womm cluster-setup` names without ``--build``: the last one
    ``--build`` pushed under ``prefix`` (it also tags ``latest``)."""
    return f"{prefix}{FSSERVER}:latest"


def _meta(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {MANAGED_BY: "womm", LABEL_COMPONENT: FSSERVER}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def fsserver_objects(image: str, namespace: str | None = None, *, storage_class: str = "",
                     storage_size: str = "10Gi") -> list[dict[str, Any]]:
    """The file server's objects (PVC first when ``storage_class`` is given)."""
    if not image:
        raise OptionError("the file server needs an image: --build --prefix P builds one, or "
                          "--fsserver-image IMAGE names it")
    selector = {MANAGED_BY: "womm", LABEL_COMPONENT: FSSERVER}
    docs: list[dict[str, Any]] = []
    if storage_class:
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": _meta(FSSERVER, namespace),
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "storageClassName": storage_class,
                              "resources": {"requests": {"storage": storage_size}}}})
        volume: dict[str, Any] = {"name": "export",
                                  "persistentVolumeClaim": {"claimName": FSSERVER}}
    else:
        volume = {"name": "export", "emptyDir": {}}
    resources = {"requests": {"cpu": "10m", "memory": "32Mi"},
                 "limits": {"cpu": "1", "memory": "512Mi"}}
    container = {
        "name": "fsserver",
        "image": image,
        "command": [f"/usr/local/bin/{FSSERVER}", "serve"],
        "env": [{"name": "WOMM_EXPORT", "value": EXPORT}, {"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": "nfs", "containerPort": NFS_PORT, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": [{"name": "export", "mountPath": EXPORT}],
        "readinessProbe": {"exec": {"command": ["test", "-e", f"{EXPORT}/.ready"]},
                           "periodSeconds": 2, "failureThreshold": 1},
        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False,
                            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    docs.append({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(FSSERVER, namespace),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one writer of the volume at a time
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [container], "volumes": [volume],
                         "securityContext": {"runAsNonRoot": True, "fsGroup": UID,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "automountServiceAccountToken": False,
                         "enableServiceLinks": False,
                         "terminationGracePeriodSeconds": 5},
            },
        },
    })
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(FSSERVER, namespace),
                 "spec": {"selector": selector,
                          "ports": [{"name": "nfs", "port": NFS_PORT, "targetPort": "nfs",
                                     "protocol": "TCP"}]}})
    # Only womm's pods of this namespace may reach the server (where the network plugin
    # enforces NetworkPolicy); nothing else, from nowhere else.
    docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": _meta(FSSERVER, namespace),
                 "spec": {"podSelector": {"matchLabels": selector},
                          "policyTypes": ["Ingress"],
                          "ingress": [{"from": [{"podSelector": {"matchLabels":
                                                                 {MANAGED_BY: "womm"}}}],
                                       "ports": [{"port": NFS_PORT, "protocol": "TCP"}]}]}})
    return docs


def _recipe() -> ModuleType:
    """``fsserver/build.py``: installed beside womm, or in the source tree."""
    for where in (Path(__file__).resolve().parents[1] / "_fsserver",
                  Path(__file__).resolve().parents[2] / "fsserver"):
        path = where / "build.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("womm_fsserver_build", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return module
    raise ImageError("the file server's recipe (fsserver/build.py) is not installed with womm")


def build_fsserver_image(prefix: str, *, progress: Callable[[str], None] = lambda text: None,
                         insecure: bool | None = None) -> str:
    """Build and push the file server image under ``prefix`` (the leader image's cached
    Debian root filesystem + rsync, openssh-sftp-server, sshfs); return its reference."""
    from .leader_image import _rootfs, _tool

    recipe = _recipe()
    crane = _tool("crane", "install go-containerregistry's crane or set WOMM_CRANE")
    rootfs = _rootfs(progress)
    progress("womm: building the file server image (Debian rsync, openssh-sftp-server, sshfs)")
    try:
        image: str = recipe.build(prefix, rootfs=str(rootfs), crane=crane, insecure=insecure)
        recipe.tag(image, default_image(prefix), crane=crane, insecure=insecure)
    except recipe.BuildError as exc:
        raise ImageError("building the file server image failed", str(exc)) from None
    return image
