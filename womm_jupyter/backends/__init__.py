"""Where workers live. ``select_backend`` implements ``--backend auto``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingToolError
from .base import Backend, LaunchPlan, TaskInfo, WorkerPlan
from .local import LocalBackend

__all__ = ["Backend", "LaunchPlan", "LocalBackend", "TaskInfo", "WorkerPlan",
           "kubernetes_configured", "select_backend"]


def _kubernetes_configured() -> bool:
    kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    return in_cluster or any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)


def kubernetes_configured() -> bool:
    """Whether a kubeconfig file or an in-cluster configuration exists."""
    return _kubernetes_configured()


def select_backend(name: str, context: str = "", namespace: str = "") -> tuple[Backend, str]:
    """The backend to use and a one-line reason to show the user.

    ``auto`` picks Kubernetes when a kubeconfig or in-cluster config is found, else Docker
    when an engine answers, else local processes.
    """
    if name == "kubernetes" or (name == "auto" and _kubernetes_configured()):
        from .kubernetes import KubernetesBackend

        backend = KubernetesBackend(context, namespace)
        why = "you asked for it" if name == "kubernetes" else "a Kubernetes configuration is found"
        return backend, f"womm: backend kubernetes, namespace {backend.namespace} ({why})"
    if name == "local":
        return LocalBackend(), "womm: backend local (you asked for it)"
    from .docker import DockerBackend, connect

    if name == "docker":
        return DockerBackend(connect()), "womm: backend docker (you asked for it)"
    try:
        client = connect(timeout=3.0)
    except MissingToolError:
        return LocalBackend(), ("womm: backend local (no Kubernetes configuration and no Docker "
                                "engine answers)")
    return DockerBackend(client), ("womm: backend docker (no Kubernetes configuration; a "
                                   "Docker engine answers)")
