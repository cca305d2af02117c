"""Where workers live. ``select_backend`` implements ``--backend auto``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingToolError
from .base import Backend, LaunchPlan, TaskInfo, WorkerPlan
from .local import LocalBackend

__all__ = ["Backend", "LaunchPlan", "LocalBackend", "TaskInfo", "WorkerPlan", "select_backend"]


def _kubernetes_configured() -> bool:
    kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    return in_cluster or any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)


def select_backend(name: str) -> tuple[Backend, str]:
    """The backend to use and a one-line reason to show the user.

    ``auto`` picks Kubernetes when a kubeconfig or in-cluster config is found, else Docker
    when an engine answers, else local processes.
    """
    if name == "kubernetes" or (name == "auto" and _kubernetes_configured()):
        raise MissingToolError(
            "the Kubernetes backend is not available in this version of womm: "
            "use --backend docker or --backend local"
            + (" (a kubeconfig was found, so auto chose kubernetes)" if name == "auto" else "."))
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
