"""The file server (fsserver/) on the real test cluster: `womm cluster-setup --build` builds and
pushes its image, its manifests applied with the Python client (no kubectl) bring it up Ready
in a fresh namespace, re-applying changes nothing, its pod is unprivileged, and its exec
protocol (alloc, list, rsync, free) works: an rsync upload lands in the share bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.stream import stream

pytestmark = pytest.mark.cluster

CRANE_ENV = "WOMM_CRANE"


def _env(cluster) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=cluster.kubeconfig,
                WOMM_CRANE=os.environ.get(CRANE_ENV) or f"{cluster.bin_dir}/crane")


@pytest.fixture(scope="module")
def setup_docs(cluster, tmp_path_factory) -> list[dict]:
    started = time.monotonic()
    run = subprocess.run(["womm", "cluster-setup", "--build", "--prefix", f"{cluster.registry}/"],
                         text=True, capture_output=True, env=_env(cluster), timeout=900,
                         cwd=tmp_path_factory.mktemp("fsserver"))
    assert run.returncode == 0, run.stderr
    print(f"cluster-setup --build (leader + file server images): "
          f"{time.monotonic() - started:.1f}s")
    docs = list(yaml.safe_load_all(run.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment",
                     "Service", "NetworkPolicy", "ConfigMap"], kinds
    assert "womm-fsserver" in run.stderr
    return docs


def _apply(cluster, docs: list[dict], namespace: str) -> None:
    """Server-side apply, as `kubectl apply --server-side` does, with the Python client."""
    dyn = dynamic.DynamicClient(cluster.api_client())
    # Not the Namespace: it names the namespace the manifests were printed for (the
    # kubeconfig's), and the test's own exists already. tests/cluster/test_pod_security.py
    # applies it as the README says.
    for doc in (d for d in docs if d["kind"] != "Namespace"):
        doc = yaml.safe_load(yaml.safe_dump(doc))
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.server_side_apply(body=doc, name=doc["metadata"]["name"],
                                   namespace=namespace, field_manager="womm-test")


def _ready_pod(cluster, namespace: str, timeout: float = 180) -> client.V1Pod:
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(
            namespace, label_selector="womm/component=womm-fsserver").items
        for pod in pods:
            if any(c.type == "Ready" and c.status == "True"
                   for c in pod.status.conditions or []) and not pod.metadata.deletion_timestamp:
                return pod
        time.sleep(1)
    raise AssertionError(f"file server not Ready after {timeout}s: "
                         f"{[(p.metadata.name, p.status.phase) for p in pods]}")


def _exec(cluster, namespace: str, pod: str, *command: str) -> str:
    core = client.CoreV1Api(cluster.api_client())
    return stream(core.connect_get_namespaced_pod_exec, pod, namespace, command=list(command),
                  stdin=False, stdout=True, stderr=True, tty=False)


def test_cluster_setup_brings_an_unprivileged_file_server_up_and_reapply_is_harmless(
        cluster, namespace, setup_docs):
    started = time.monotonic()
    _apply(cluster, setup_docs, namespace)
    pod = _ready_pod(cluster, namespace)
    print(f"file server Ready {time.monotonic() - started:.1f}s after apply")
    apps = client.AppsV1Api(cluster.api_client())
    before = apps.read_namespaced_deployment("womm-fsserver", namespace)
    assert before.metadata.labels["app.kubernetes.io/managed-by"] == "womm"

    # Unprivileged: not privileged, no escalation, no capabilities, not root, read-only root.
    spec = pod.spec.containers[0].security_context
    assert spec.privileged is False and spec.allow_privilege_escalation is False
    assert spec.capabilities.drop == ["ALL"] and not spec.capabilities.add
    assert spec.run_as_non_root and spec.run_as_user != 0 and spec.read_only_root_filesystem
    assert pod.spec.automount_service_account_token is False
    status = _exec(cluster, namespace, pod.metadata.name, "sh", "-c",
                   "id -u; grep CapEff /proc/1/status; touch /probe 2>&1 || true")
    assert status.splitlines()[0] == "65534", status
    assert "CapEff:\t0000000000000000" in status, status
    assert "Read-only file system" in status, status
    assert [v.name for v in pod.spec.volumes if v.empty_dir] == ["export"]

    # Re-applying the same manifests changes nothing: same generation, same pod.
    _apply(cluster, setup_docs, namespace)
    time.sleep(3)
    after = apps.read_namespaced_deployment("womm-fsserver", namespace)
    assert after.metadata.generation == before.metadata.generation
    assert _ready_pod(cluster, namespace, 30).metadata.uid == pod.metadata.uid


def test_file_server_protocol_alloc_rsync_list_free(cluster, namespace, setup_docs, tmp_path):
    _apply(cluster, setup_docs, namespace)
    pod = _ready_pod(cluster, namespace).metadata.name
    # No fixed limit on shares (the original hung on its twelfth).
    out = _exec(cluster, namespace, pod, "sh", "-c",
                "for i in $(seq 1 40); do womm-fsserver alloc s$i >/dev/null; done; "
                "womm-fsserver list | wc -l; womm-fsserver alloc ../etc 2>&1; echo rc=$?; "
                "womm-fsserver alloc Bad 2>&1; echo rc=$?")
    lines = out.splitlines()
    assert lines[0] == "40", out
    assert "bad share id '../etc'" in out and "bad share id 'Bad'" in out, out
    assert out.count("rc=2") == 2, out

    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "data.bin").write_bytes(os.urandom(200_000))
    (project / "sub" / "a file.txt").write_text("hello\n")
    # The upload: rsync over an exec stream (womm's _kexec) into share s1's directory.
    share_dir = _exec(cluster, namespace, pod, "womm-fsserver", "path", "s1").strip()
    assert share_dir == "/export/shares/s1"
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, WOMM_KEXEC_NAMESPACE=namespace)
    run = subprocess.run(["rsync", "-rlpt", "--blocking-io", "--stats",
                          "-e", f"'{sys.executable}' -m womm_jupyter.share.kexec",
                          f"{project}/", f"{pod}:{share_dir}/"],
                         env=env, text=True, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    sums = _exec(cluster, namespace, pod, "sh", "-c",
                 "cd \"$(womm-fsserver path s1)\" && sha256sum data.bin 'sub/a file.txt' "
                 "&& stat -c %u data.bin")
    local = hashlib.sha256((project / "data.bin").read_bytes()).hexdigest()
    assert f"{local}  data.bin" in sums, sums
    assert hashlib.sha256(b"hello\n").hexdigest() in sums, sums
    assert sums.splitlines()[-1] == "65534", sums  # files belong to the server's uid, not root

    out = _exec(cluster, namespace, pod, "sh", "-c",
                "womm-fsserver free s1; womm-fsserver list | grep -cx s1; "
                "womm-fsserver path s1; echo rc=$?")
    # (stderr and stdout arrive on separate channels: their order is not kept)
    assert "0" in out.splitlines() and "no share 's1'" in out and "rc=2" in out, out


def test_storage_class_gives_a_pvc(cluster, tmp_path):
    run = subprocess.run(["womm", "cluster-setup", "-n", "lab", "--storage-class", "fast",
                          "--storage-size", "50Gi", "--fsserver-image", "r/fs:1"],
                         text=True, capture_output=True, env=_env(cluster), cwd=tmp_path,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(run.stdout)}
    pvc = docs["PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "export",
                               "persistentVolumeClaim": {"claimName": "womm-fsserver"}}]
    assert pod["containers"][0]["image"] == "r/fs:1"
    assert all(d["metadata"].get("namespace", d["metadata"]["name"]) == "lab"
               for d in docs.values())  # the Namespace object is lab itself


def test_recipe_is_standalone():
    recipe = Path(__file__).resolve().parents[2] / "fsserver"
    for path in recipe.glob("*.py"):
        assert "womm_jupyter" not in path.read_text(), path
