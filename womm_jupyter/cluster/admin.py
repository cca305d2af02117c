"""Admin helpers: a namespace-bound kubeconfig for a lab member, node usage.

``member_kubeconfig`` applies :func:`~womm_jupyter.kube.manifests.namespace_access` (a
ServiceAccount, a Role with exactly womm's verbs, a RoleBinding — all in one namespace,
nothing cluster-wide, never cluster-admin) and asks the TokenRequest API for a token of that
ServiceAccount; the kubeconfig points at the admin's own API server address and CA.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from ..errors import BackendError
from ..kube import manifests
from ..kube.client import ApiError, Clients, clients
from ..options import parse_memory

__all__ = ["NodeUsage", "member_kubeconfig", "node_usage", "parse_cpu", "write_kubeconfig"]

_SYSTEM_NAMESPACES = {"kube-system"}


def _apply(built: Clients, body: dict[str, Any], namespace: str) -> None:
    """Create ``body``, or replace it when it exists (a repeated kubeconfig)."""
    kind, name = body["kind"], body["metadata"]["name"]
    if kind == "ServiceAccount":
        core = built.core
        create, replace = (core.create_namespaced_service_account,
                           core.replace_namespaced_service_account)
    else:
        rbac = built.rbac
        create, replace = {
            "Role": (rbac.create_namespaced_role, rbac.replace_namespaced_role),
            "RoleBinding": (rbac.create_namespaced_role_binding,
                            rbac.replace_namespaced_role_binding),
        }[kind]
    try:
        create(namespace, body)
    except ApiError as exc:
        if exc.status != 409:
            raise
        if kind != "ServiceAccount":  # a ServiceAccount has nothing to bring up to date
            replace(name, namespace, body)


def member_kubeconfig(namespace: str, user: str = "womm-member", days: int = 30,
                      context: str = "") -> dict[str, Any]:
    """Set up ``user``'s least-privilege access to ``namespace`` and return a kubeconfig
    (as a dict) that uses it, with a token valid for ``days`` days."""
    built = clients(context, namespace)
    core = built.core
    core.read_namespace(namespace)
    for body in manifests.namespace_access(user, namespace):
        _apply(built, body, namespace)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": days * 86400}}
    token = core.create_namespaced_service_account_token(user, namespace, request).status.token
    configuration = built.api_client.configuration
    cluster: dict[str, Any] = {"server": configuration.host}
    if configuration.ssl_ca_cert:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(configuration.ssl_ca_cert).read_bytes()).decode()
    elif not configuration.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    name = f"{user}@{namespace}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name,
                      "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
    }


def write_kubeconfig(config: dict[str, Any], path: Path) -> None:
    """Write a kubeconfig readable by its owner only (it holds a token), whole or not at
    all."""
    import yaml

    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|n|u)?$")


def parse_cpu(text: str) -> float:
    """CPUs in a Kubernetes CPU quantity: ``100m`` -> 0.1, ``2`` -> 2.0."""
    match = _CPU.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a CPU quantity")
    scale = {None: 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}[match.group(2)]
    return float(match.group(1)) * scale


@dataclasses.dataclass(frozen=True)
class NodeUsage:
    """A node's allocatable CPU and memory against what its pods request."""

    name: str
    ready: bool
    cpu_allocatable: float
    cpu_requested: float
    memory_allocatable: int
    memory_requested: int
    pods: int  # pods not yet ended
    user_pods: int  # of which outside kube-system

    @property
    def idle(self) -> bool:
        """No pod outside kube-system runs (or waits to run) on the node."""
        return self.user_pods == 0


def node_usage(context: str = "") -> list[NodeUsage]:
    """Every node with allocatable vs requested CPU and memory, by name."""
    core = clients(context).core
    nodes = core.list_node().items
    pods = core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed").items
    usage = []
    for node in nodes:
        mine = [pod for pod in pods if pod.spec.node_name == node.metadata.name]
        cpu = memory = 0.0
        for pod in mine:
            for container in pod.spec.containers:
                requests = (container.resources.requests if container.resources else None) or {}
                cpu += parse_cpu(requests["cpu"]) if "cpu" in requests else 0.0
                memory += parse_memory(requests["memory"]) if "memory" in requests else 0
        allocatable = node.status.allocatable or {}
        usage.append(NodeUsage(
            name=node.metadata.name,
            ready=any(c.type == "Ready" and c.status == "True"
                      for c in node.status.conditions or []),
            cpu_allocatable=parse_cpu(allocatable.get("cpu", "0")),
            cpu_requested=cpu,
            memory_allocatable=parse_memory(allocatable.get("memory", "0")),
            memory_requested=int(memory),
            pods=len(mine),
            user_pods=sum(pod.metadata.namespace not in _SYSTEM_NAMESPACES for pod in mine)))
    if not nodes:
        raise BackendError("the cluster lists no nodes: is this the right context?")
    return sorted(usage, key=lambda n: n.name)
