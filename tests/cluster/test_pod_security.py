"""Pod Security on the real test cluster (security issue 12, item 6): `womm cluster-setup |
kubectl apply -f -`, as the README says, labels an existing namespace and creates a new one;
the level is enforced (a privileged or hostPath pod is refused under baseline); `womm doctor`
reports it, for an admin from the labels and for a member (who may not read Namespaces) from a
dry-run privileged pod, and warns when it is privileged or unset."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from support.leader import womm_env
from support.namespaces import delete_namespace

pytestmark = pytest.mark.cluster

ENFORCE = "pod-security.kubernetes.io/enforce"


def _sh(cluster, command: str, cwd: Path, kubeconfig: str = "") -> subprocess.CompletedProcess:
    env = womm_env(cluster)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)


def _setup(cluster, namespace: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    # An image that need not exist: the file server is not what this test is about.
    return _sh(cluster, f"womm cluster-setup --namespace {namespace} --fsserver-image "
               f"{cluster.registry}/womm/absent-fsserver:1 {' '.join(options)} "
               "| kubectl apply -f -", tmp_path)


def _pod(name: str, security: dict | None = None, **spec: object) -> dict:
    container = {"name": "c", "image": "busybox", "securityContext": security or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], **spec}}


def _doctor_line(run: subprocess.CompletedProcess) -> str:
    return next(line for line in run.stdout.splitlines() if "pod security:" in line)


def test_cluster_setup_labels_an_existing_namespace_and_baseline_refuses_privileged_pods(
        cluster, namespace, tmp_path):
    applied = _setup(cluster, namespace, tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert f"namespace/{namespace} configured" in applied.stdout, applied.stdout
    assert "role.rbac.authorization.k8s.io/womm-leader created" in applied.stdout
    assert "pods: create lets a member run a pod that mounts every Secret" in " ".join(
        applied.stderr.split())
    core = client.CoreV1Api(cluster.api_client())
    labels = core.read_namespace(namespace).metadata.labels
    assert labels[ENFORCE] == "baseline", labels
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"

    for name, pod in (("privileged", _pod("privileged", {"privileged": True})),
                      ("hostpath", _pod("hostpath", volumes=[{
                          "name": "root", "hostPath": {"path": "/"}}]))):
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(namespace, pod)
        assert refused.value.status == 403, name
        assert 'violates PodSecurity \\"baseline:latest\\"' in refused.value.body, name
    core.create_namespaced_pod(namespace, _pod("plain"), dry_run="All")  # still admitted

    # An admin reads the label.
    admin = _sh(cluster, f"womm doctor --namespace {namespace} --image {cluster.base_image}",
                tmp_path)
    assert admin.returncode == 0, admin.stdout + admin.stderr
    assert _doctor_line(admin) == (
        f"ok       pod security: namespace {namespace} enforces Pod Security baseline (label "
        f"{ENFORCE}): privileged and hostPath pods are refused")

    # A member may not read Namespaces: admission answers a dry-run privileged pod instead.
    member = tmp_path / "member.kubeconfig"
    made = _sh(cluster, f"womm admin kubeconfig {namespace} -o {member}", tmp_path)
    assert made.returncode == 0, made.stderr
    with pytest.raises(client.ApiException) as forbidden:
        client.CoreV1Api(_api(member)).read_namespace(namespace)
    assert forbidden.value.status == 403
    found = _sh(cluster, f"womm doctor --image {cluster.base_image}", tmp_path, str(member))
    assert found.returncode == 0, found.stdout + found.stderr
    assert _doctor_line(found) == (
        f"ok       pod security: namespace {namespace} enforces Pod Security baseline "
        "(Namespace not readable with these credentials; a privileged pod, dry run, was "
        "refused)")
    assert not [pod for pod in core.list_namespaced_pod(namespace).items
                if pod.metadata.name.startswith("womm-doctor-probe")]  # a dry run creates none

    # womm's own workers run under baseline.
    run = _sh(cluster, f"womm parallel --backend kubernetes --image {cluster.base_image} "
              "--kube-cpu 0.2 --kube-mem 128Mi --kube-pods 1 --start-timeout 90 -- -k echo {} "
              "::: a b", tmp_path, str(member))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "a\nb\n"

    # The lazy share's opt-in needs privileged: re-applying with it relabels, doctor warns.
    again = _setup(cluster, namespace, tmp_path, "--pod-security", "privileged")
    assert again.returncode == 0, again.stderr
    assert core.read_namespace(namespace).metadata.labels[ENFORCE] == "privileged"
    core.create_namespaced_pod(namespace, _pod("privileged", {"privileged": True}),
                               dry_run="All")
    warned = _sh(cluster, f"womm doctor --image {cluster.base_image}", tmp_path, str(member))
    assert warned.returncode == 0, warned.stdout + warned.stderr  # a warning, not a failure
    assert _doctor_line(warned) == (
        f"WARNING  pod security: namespace {namespace} enforces no Pod Security level "
        "(Namespace not readable with these credentials; a privileged pod, dry run, was "
        "admitted): any member can start privileged pods (root on the node)")
    admin = _sh(cluster, f"womm doctor --namespace {namespace} --image {cluster.base_image}",
                tmp_path)
    assert _doctor_line(admin).startswith(
        f"WARNING  pod security: namespace {namespace} enforces Pod Security privileged")


def _api(kubeconfig: Path) -> client.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(str(kubeconfig))


def test_cluster_setup_creates_a_new_namespace_with_its_label(cluster, tmp_path):
    name = f"t-{uuid.uuid4().hex[:12]}"
    core = client.CoreV1Api(cluster.api_client())
    try:
        applied = _setup(cluster, name, tmp_path, "--pod-security", "restricted")
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines()[0] == f"namespace/{name} created", applied.stdout
        assert core.read_namespace(name).metadata.labels[ENFORCE] == "restricted"
        assert client.RbacAuthorizationV1Api(cluster.api_client()).read_namespaced_role(
            "womm-leader", name).rules
    finally:
        delete_namespace(core, name)
