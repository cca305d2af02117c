"""Kubernetes objects womm creates or asks an admin to create, as plain dicts.

Pure functions: easy to test, and `womm cluster-setup` prints the same objects.
"""

from __future__ import annotations

from typing import Any

from .backends.base import LABEL_OWNER, LABEL_TASK, MANAGED_BY, LaunchPlan
from .naming import task_object_name

__all__ = ["LEADER", "ROLE_RULES", "cluster_setup", "experiment_pod", "lease",
           "namespace_access", "task_labels", "worker_deployment"]

LEADER = "womm-leader"
AGENT_SOCKET_DIR = "/run/womm"


def task_labels(plan: LaunchPlan) -> dict[str, str]:
    return {MANAGED_BY: "womm", LABEL_TASK: plan.task_id, LABEL_OWNER: plan.owner}


def _annotations(plan: LaunchPlan) -> dict[str, str]:
    return {"womm/cwd": str(plan.cwd), "womm/command": plan.command,
            "womm/cpu": f"{plan.options.kube_cpu:g}", "womm/mem": plan.options.kube_mem,
            "womm/host": plan.host, "womm/pid": str(plan.coordinator_pid)}


def worker_deployment(plan: LaunchPlan, agent_source: str) -> dict[str, Any]:
    """The task's root object: ``womm-task-<id>``, one pod per worker running the agent."""
    labels = task_labels(plan)
    resources = {"cpu": f"{plan.options.kube_cpu:g}", "memory": plan.options.kube_mem}
    container = {
        "name": "worker",
        "image": plan.image,
        # The agent travels inline: any image with perl serves, nothing is baked in.
        "command": ["perl", "-e", agent_source, "--", "--listen",
                    f"{AGENT_SOCKET_DIR}/agent.sock", "--name", "", "--cwd", str(plan.cwd),
                    "--shell", plan.shell, "--alias", plan.client_path],
        "workingDir": str(plan.cwd),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": resources, "limits": resources},
        "volumeMounts": [{"name": "womm-run", "mountPath": AGENT_SOCKET_DIR}],
        "readinessProbe": {"exec": {"command": ["test", "-S", f"{AGENT_SOCKET_DIR}/agent.sock"]},
                           "periodSeconds": 1, "failureThreshold": 1},
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": task_object_name(plan.task_id), "labels": labels,
                     "annotations": _annotations(plan)},
        "spec": {
            "replicas": plan.options.kube_pods,
            "selector": {"matchLabels": {LABEL_TASK: plan.task_id}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container],
                         "volumes": [{"name": "womm-run", "emptyDir": {}}],
                         "automountServiceAccountToken": False,
                         "terminationGracePeriodSeconds": 2,
                         "enableServiceLinks": False},
            },
        },
    }


def lease(plan: LaunchPlan, owner_uid: str, now: str) -> dict[str, Any]:
    """The coordinator's heartbeat, owned by the Deployment (deleted with it)."""
    name = task_object_name(plan.task_id)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": task_labels(plan),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": name, "uid": owner_uid}]},
        "spec": {"holderIdentity": f"{plan.host}:{plan.coordinator_pid}",
                 "leaseDurationSeconds": 10, "acquireTime": now, "renewTime": now},
    }


# Exactly the verbs womm uses in a namespace (parallel, status, finish, experiments, pod
# verbs); nothing cluster-wide.
ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "delete", "patch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "list", "create", "update", "patch", "delete"]},
]


def namespace_access(name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """A ServiceAccount ``name`` bound by a Role + RoleBinding of the same name to
    :data:`ROLE_RULES` in ``namespace``: womm's least privilege, nothing cluster-wide."""
    meta: dict[str, Any] = {"labels": {MANAGED_BY: "womm"}}
    if namespace:
        meta["namespace"] = namespace
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, **meta},
         "rules": [{**rule, "verbs": list(rule["verbs"])} for rule in ROLE_RULES]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name,
                       **({"namespace": namespace} if namespace else {})}]},
    ]


def cluster_setup(namespace: str | None = None) -> list[dict[str, Any]]:
    """What an admin applies once per namespace: the leader ServiceAccount and a Role with
    exactly the verbs womm uses, nothing cluster-wide."""
    return namespace_access(LEADER, namespace)


def experiment_pod(*, name: str, image: str, command: str, labels: dict[str, str],
                   annotations: dict[str, str], cpu: str, memory: str) -> dict[str, Any]:
    """One task of an experiment: ``sh -c COMMAND`` in ``image``, run once (never restarted
    by the kubelet: the experiment decides about retries)."""
    resources = {"cpu": cpu, "memory": memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "task",
                "image": image,
                "command": ["sh", "-c", command],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "resources": {"requests": resources, "limits": resources},
                "securityContext": {"allowPrivilegeEscalation": False, "privileged": False},
            }],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 2,
        },
    }
