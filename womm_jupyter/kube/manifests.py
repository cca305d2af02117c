"""Kubernetes objects womm creates or asks an admin to create, as plain dicts.

Pure functions: easy to test, and `womm cluster-setup` prints the same objects.
"""

from __future__ import annotations

from typing import Any

from ..backends.base import LaunchPlan
from ..labels import (
    LABEL_KIND,
    LABEL_LEADER,
    LABEL_OWNER,
    LABEL_PART,
    LABEL_ROLE,
    LABEL_TASK,
    MANAGED_BY,
    NOTE_PRIVILEGED,
    describe,
)
from ..naming import task_object_name
from . import shared_volume as shared

__all__ = ["LEADER", "POD_SECURITY_ENFORCE", "ROLE_RULES", "cluster_setup", "detached_part",
           "detached_root", "experiment_lease", "experiment_pod", "experiment_root",
           "leader_image_record", "leader_job", "lease", "namespace_access",
           "namespace_pod_security", "role_effects", "selector", "task_labels",
           "worker_deployment"]

LEADER = "womm-leader"
AGENT_SOCKET_DIR = "/run/womm"


def task_labels(plan: LaunchPlan) -> dict[str, str]:
    return {MANAGED_BY: "womm", LABEL_TASK: plan.task_id, LABEL_OWNER: plan.owner}


def _annotations(plan: LaunchPlan) -> dict[str, str]:
    return {**describe(str(plan.cwd), plan.command, plan.cpu, plan.memory, host=plan.host,
                       pid=plan.coordinator_pid),
            **({NOTE_PRIVILEGED: FUSE_REASON} if plan.fuse else {})}


FUSE_REASON = "--privileged-fuse: the lazy share mounts the project with sshfs (FUSE)"


def _security_context(plan: LaunchPlan) -> dict[str, Any]:
    if plan.fuse:
        # The user opted in (--privileged-fuse). Less is not enough here: CAP_SYS_ADMIN and a
        # hostPath /dev/fuse still fail with EPERM, because containerd's CRI gives the
        # container a device cgroup of its default devices only (not 10:229) unless it is
        # privileged (tests/cluster/test_lazy_share.py records it).
        return {"privileged": True}
    return {"allowPrivilegeEscalation": False, "privileged": False}


def _worker_container(plan: LaunchPlan, agent_source: str) -> dict[str, Any]:
    resources = {"cpu": f"{plan.cpu:g}", "memory": plan.memory}
    return {
        "name": "worker",
        "image": plan.image,
        # The agent travels inline: any image with perl serves, nothing is baked in.
        "command": ["perl", "-e", agent_source, "--", "--listen",
                    f"{AGENT_SOCKET_DIR}/agent.sock", "--name", "", "--cwd", str(plan.cwd),
                    "--shell", plan.shell, "--alias", plan.client_path,
                    # Jobs of a lazy share refuse to run unless the project is mounted.
                    *(["--mounted", "1"] if plan.fuse else [])],
        "workingDir": str(plan.cwd),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": resources, "limits": resources},
        "volumeMounts": [{"name": "womm-run", "mountPath": AGENT_SOCKET_DIR}]
        + ([shared.mount()] if plan.shared_claim else []),
        "readinessProbe": {"exec": {"command": ["test", "-S", f"{AGENT_SOCKET_DIR}/agent.sock"]},
                           "periodSeconds": 1, "failureThreshold": 1},
        "securityContext": _security_context(plan),
    }


def _volumes(shared_claim: str) -> list[dict[str, Any]]:
    """A worker's volumes: the agent's socket directory, and /shared when there is one."""
    return [{"name": "womm-run", "emptyDir": {}}] + (
        [shared.volume(shared_claim)] if shared_claim else [])


def worker_deployment(plan: LaunchPlan, agent_source: str) -> dict[str, Any]:
    """The task's root object: ``womm-task-<id>``, one pod per worker running the agent."""
    labels = task_labels(plan)
    container = _worker_container(plan, agent_source)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": task_object_name(plan.task_id), "labels": labels,
                     "annotations": _annotations(plan)},
        "spec": {
            "replicas": len(plan.workers),
            "selector": {"matchLabels": {LABEL_TASK: plan.task_id}},
            "template": {
                "metadata": {"labels": labels, **(
                    {"annotations": {NOTE_PRIVILEGED: FUSE_REASON}} if plan.fuse else {})},
                "spec": {"containers": [container],
                         "volumes": _volumes(plan.shared_claim),
                         "automountServiceAccountToken": False,
                         "terminationGracePeriodSeconds": 2,
                         "enableServiceLinks": False},
            },
        },
    }


def shell_pod(plan: LaunchPlan, name: str, agent_source: str) -> dict[str, Any]:
    """``womm shell``'s pod: one worker (the agent as main process) to exec the shell into;
    the task's root object."""
    container = dict(_worker_container(plan, agent_source), name="shell",
                     env=[{"name": "HOME", "value": "/tmp"},
                          {"name": "TERM", "value": "xterm-256color"}])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {**task_labels(plan), LABEL_KIND: "shell"},
                         "annotations": _annotations(plan)},
            "spec": {"containers": [container], "restartPolicy": "Never",
                     "volumes": _volumes(plan.shared_claim),
                     "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 2, "enableServiceLinks": False}}


def lease(plan: LaunchPlan, owner_uid: str, now: str, *, kind: str = "Deployment",
          api_version: str = "apps/v1", name: str = "") -> dict[str, Any]:
    """The coordinator's heartbeat, owned by the task's root object (deleted with it)."""
    owner_name = name or task_object_name(plan.task_id)
    name = task_object_name(plan.task_id)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": task_labels(plan),
                     "ownerReferences": [{"apiVersion": api_version, "kind": kind,
                                          "name": owner_name, "uid": owner_uid}]},
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
    # --async: the leader Job, its inputs and its durable output (ConfigMaps, never Secrets).
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"],
     "verbs": ["get", "list", "create", "update", "patch", "delete"]},
]


POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"


def namespace_pod_security(namespace: str, level: str = "baseline") -> dict[str, Any]:
    """The Namespace, labelled for Pod Security admission: ``level`` enforced, and warnings and
    audit annotations at ``restricted``. Labels only: `kubectl apply` of it creates the
    namespace or adds the labels to an existing one, leaving its other labels alone. Not
    labelled managed-by womm: the namespace is the admin's, not womm's."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {
                POD_SECURITY_ENFORCE: level,
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted"}}}


# What ROLE_RULES let a member do, standard Kubernetes semantics, for whoever grants them.
_ROLE_EFFECTS = [
    "deployments, replicasets, pods (create, delete): start and stop any pod, not only womm's "
    "workers. pods: create lets a member run a pod that mounts every Secret of the namespace "
    "and runs as any of its ServiceAccounts (their tokens, womm-leader's included): the "
    "namespace is one trust domain, so give each person (or team that trusts itself) its own",
    "pods/exec, pods/log: run commands in, and read the output of, every pod of the namespace, "
    "other members' workers included",
    "configmaps (create, update, delete): every ConfigMap of the namespace, womm-leader (the "
    "--async leader image) and womm-settings (/shared) included",
    "jobs: the --async leader; leases: who owns which task; events: why a pod does not start",
]
_LEVEL_EFFECTS = {
    "baseline": "Pod Security baseline (enforced) refuses privileged pods, hostPath volumes, "
                "the host's network, PID and IPC namespaces and added capabilities; lazy "
                "shares with --privileged-fuse need privileged",
    "restricted": "Pod Security restricted (enforced) also refuses pods that may run as root "
                  "or keep capabilities: womm's workers do not meet it yet and are refused",
    "privileged": "Pod Security privileged: any member can start privileged pods, i.e. be "
                  "root on the node; needed only by lazy shares with --privileged-fuse",
}


def role_effects(level: str) -> list[str]:
    """One line per group of :data:`ROLE_RULES` verbs saying what it lets a member do, and one
    for the Pod Security ``level`` :func:`namespace_pod_security` enforces."""
    return [*_ROLE_EFFECTS, _LEVEL_EFFECTS[level]]


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


def cluster_setup(namespace: str | None = None, *, fsserver_image: str = "",
                  storage_class: str = "", storage_size: str = "10Gi") -> list[dict[str, Any]]:
    """What an admin applies once per namespace: the leader ServiceAccount and a Role with
    exactly the verbs womm uses, nothing cluster-wide; with ``fsserver_image``, the file
    server's Deployment, Service and NetworkPolicy (and PVC with ``storage_class``)."""
    docs = namespace_access(LEADER, namespace)
    if fsserver_image:
        from ..cluster.fileserver import fsserver_objects

        docs += fsserver_objects(fsserver_image, namespace, storage_class=storage_class,
                                 storage_size=storage_size)
    return docs


def experiment_pod(*, name: str, image: str, command: str, labels: dict[str, str],
                   annotations: dict[str, str], cpu: str, memory: str,
                   root: tuple[str, str] | None = None,
                   shared_claim: str = "") -> dict[str, Any]:
    """One task of an experiment: ``sh -c COMMAND`` in ``image``, run once (never restarted
    by the kubelet: the experiment decides about retries). ``root`` is the experiment's root
    ConfigMap (name, uid): the pod is owned by it, so deleting the root deletes the pod."""
    resources = {"cpu": cpu, "memory": memory}
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if root is not None:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                        "name": root[0], "uid": root[1]}]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
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
    if shared_claim:
        pod["spec"]["containers"][0]["volumeMounts"] = [shared.mount()]
        pod["spec"]["volumes"] = [shared.volume(shared_claim)]
    return pod


def experiment_root(*, task_id: str, owner: str,
                    annotations: dict[str, str]) -> dict[str, Any]:
    """The root of an experiment: ConfigMap ``womm-task-<id>`` (label ``womm/role=experiment``)
    that its pods and its Lease are owned by; `womm finish ID` deletes it and so them."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": task_object_name(task_id),
                         "labels": {MANAGED_BY: "womm", LABEL_TASK: task_id,
                                    LABEL_OWNER: owner, LABEL_ROLE: "experiment"},
                         "annotations": annotations}}


def experiment_lease(*, task_id: str, owner: str, root_uid: str, holder: str,
                     now: str) -> dict[str, Any]:
    """An experiment's heartbeat: Lease ``womm-task-<id>`` renewed by the running client,
    owned by the experiment's root ConfigMap."""
    name = task_object_name(task_id)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name,
                         "labels": {MANAGED_BY: "womm", LABEL_TASK: task_id,
                                    LABEL_OWNER: owner, LABEL_ROLE: "experiment"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                              "name": name, "uid": root_uid}]},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10,
                     "acquireTime": now, "renewTime": now}}


# --async ------------------------------------------------------------------------------------
LEADER_MOUNT = "/womm/in"


def selector(task_id: str = "", role: str = "", owner: str = "") -> str:
    """Label selector of womm's objects: of one task, of one role (LABEL_ROLE), of one owner."""
    parts = [f"{MANAGED_BY}=womm"]
    if task_id:
        parts.append(f"{LABEL_TASK}={task_id}")
    if role:
        parts.append(f"{LABEL_ROLE}={role}")
    if owner:
        parts.append(f"{LABEL_OWNER}={owner}")
    return ",".join(parts)


def _detached_meta(name: str, task_id: str, owner: str, role: str, root: tuple[str, str] | None,
                   annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {MANAGED_BY: "womm", LABEL_TASK: task_id,
                                                     LABEL_OWNER: owner, LABEL_ROLE: role}}
    if annotations:
        meta["annotations"] = annotations
    if root:
        # Everything of the task hangs off its root ConfigMap: deleting it cascades.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                    "name": root[0], "uid": root[1]}]
    return meta


def detached_root(*, task_id: str, owner: str, annotations: dict[str, str],
                  spec: str, stdin_b64: str | None) -> dict[str, Any]:
    """The root of an --async task: ConfigMap ``womm-task-<id>`` holding what the leader runs
    (``spec.json``: options, GNU parallel's arguments, working directory) and its input."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _detached_meta(task_object_name(task_id), task_id, owner, "root", None,
                                   annotations),
        "data": {"spec.json": spec}}
    if stdin_b64 is not None:
        body["binaryData"] = {"stdin": stdin_b64}
    return body


def leader_job(*, task_id: str, owner: str, root_uid: str, image: str,
               annotations: dict[str, str], shared_claim: str = "") -> dict[str, Any]:
    """The --async coordinator: Job ``womm-task-<id>`` of the womm-leader ServiceAccount,
    run once (a second attempt would run the jobs again), owned by the root ConfigMap."""
    name = task_object_name(task_id)
    resources = {"cpu": "250m", "memory": "256Mi"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": _detached_meta(name, task_id, owner, "leader", (name, root_uid),
                                   annotations),
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {MANAGED_BY: "womm", LABEL_LEADER: task_id,
                                        LABEL_OWNER: owner}},
                "spec": {
                    "serviceAccountName": LEADER,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 20,  # time to delete the workers
                    "enableServiceLinks": False,
                    "containers": [{
                        "name": "leader",
                        "image": image,
                        "command": ["python3", "-m", "womm_jupyter.run.leader"],
                        "env": [{"name": "WOMM_TASK_ID", "value": task_id},
                                {"name": "WOMM_ROOT_UID", "value": root_uid},
                                {"name": "WOMM_OWNER", "value": owner},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "PYTHONUNBUFFERED", "value": "1"}],
                        "resources": {"requests": resources, "limits": resources},
                        "volumeMounts": [{"name": "inputs", "mountPath": LEADER_MOUNT,
                                          "readOnly": True}]
                        + ([shared.mount()] if shared_claim else []),
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "privileged": False},
                    }],
                    "volumes": [{"name": "inputs", "configMap": {"name": name}}]
                    + ([shared.volume(shared_claim)] if shared_claim else []),
                },
            },
        },
    }


def detached_part(*, task_id: str, owner: str, root_uid: str, role: str, index: int,
                  data_b64: str) -> dict[str, Any]:
    """One durable piece of an --async task's output (``role`` output: part ``index`` of the
    records stream; result: the run's outcome), owned by the root ConfigMap."""
    name = f"{task_object_name(task_id)}-{role}" + (f"-{index}" if role == "output" else "")
    meta = _detached_meta(name, task_id, owner, role, (task_object_name(task_id), root_uid))
    meta["labels"][LABEL_PART] = str(index)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "binaryData": {"data": data_b64}}


def leader_image_record(image: str, namespace: str | None = None) -> dict[str, Any]:
    """ConfigMap ``womm-leader``: the leader image `womm parallel --async` uses here."""
    meta: dict[str, Any] = {"name": LEADER, "labels": {MANAGED_BY: "womm"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"image": image}}
