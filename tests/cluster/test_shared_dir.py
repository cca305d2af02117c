"""/shared on the real cluster: an admin names a PersistentVolumeClaim with `womm cluster-setup
--shared-pvc`, and every pod womm creates in the namespace mounts it at /shared.

The storage is a hostPath PersistentVolume made by the test (the cluster has one node, so a
directory of this machine is shared storage here), bound to a claim in the test's namespace.
A file a `womm parallel` job writes to /shared is read by an experiment's pod and by a
`womm shell` pod, and is in the volume's directory on this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from support.leader import apply_docs

pytestmark = pytest.mark.cluster

CPU = "0.2"



def _womm(cluster, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = cluster.kubeconfig
    return subprocess.run([sys.executable, "-m", "womm_jupyter", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def shared_claim(cluster, namespace, tmp_path_factory):
    """A claim bound to a hostPath PersistentVolume of a fresh directory: (claim, directory)."""
    core = client.CoreV1Api(cluster.api_client())
    directory = Path(f"/tmp/womm-shared-{uuid.uuid4().hex[:10]}")
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    pv_name = f"womm-test-{namespace}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"womm-test": namespace}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "hostPath": {"path": str(directory), "type": "Directory"},
                 "claimRef": {"namespace": namespace, "name": "lab-data"}}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "lab-data"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}}}})
    try:
        # As an admin's claim would be: bound before anything uses it (the PV controller
        # binds it on its next pass).
        deadline = time.monotonic() + 120
        while core.read_namespaced_persistent_volume_claim(
                "lab-data", namespace).status.phase != "Bound":
            assert time.monotonic() < deadline, "the claim was never bound"
            time.sleep(0.5)
        yield "lab-data", directory
    finally:
        try:
            core.delete_persistent_volume(pv_name)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def test_every_womm_pod_of_the_namespace_sees_slash_shared(cluster, namespace, shared_claim,
                                                           tmp_path):
    claim, directory = shared_claim
    setup = _womm(cluster, "cluster-setup", "--namespace", namespace, "--shared-pvc", claim,
                  cwd=tmp_path)
    assert setup.returncode == 0, setup.stderr
    settings = [doc for doc in yaml.safe_load_all(setup.stdout)
                if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "womm-settings"]
    assert settings and settings[0]["data"] == {"shared-pvc": claim}, setup.stdout
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_config_map(namespace, settings[0])

    run = _womm(cluster, "parallel", "--backend", "kubernetes", "--namespace", namespace,
                "--image", cluster.base_image, "--kube-pods", "1", "--kube-cpu", CPU,
                "--kube-mem", "128Mi", "--", "echo written by {} > /shared/note-{}; ls /shared",
                ":::", "parallel", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "note-parallel" in run.stdout
    assert (directory / "note-parallel").read_text() == "written by parallel\n"

    tasks = tmp_path / "tasks.txt"
    tasks.write_text("cat /shared/note-parallel; echo from experiment > /shared/note-exp\n")
    logs = tmp_path / "logs"
    experiment = _womm(cluster, "experiment", "run", "-i", cluster.base_image, "--kube-cpu",
                       "0.1", "--kube-mem", "64Mi", "--namespace", namespace, "-f", str(tasks),
                       "-l", str(logs), cwd=tmp_path)
    assert experiment.returncode == 0, experiment.stderr
    assert [p.read_text() for p in logs.glob("*.log")] == ["written by parallel\n"]
    assert (directory / "note-exp").read_text() == "from experiment\n"

    shell = _womm(cluster, "shell", "--backend", "kubernetes", "--namespace", namespace,
                  "--image", cluster.base_image, "--kube-cpu", CPU, "--", "cat",
                  "/shared/note-exp", cwd=tmp_path)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == "from experiment\n"


def test_an_async_runs_leader_and_workers_see_slash_shared(cluster, namespace, shared_claim,
                                                          leader_setup, tmp_path):
    claim, directory = shared_claim
    apply_docs(cluster, [dict(d) for d in yaml.safe_load_all(yaml.safe_dump_all(
        leader_setup))], namespace)
    setup = _womm(cluster, "cluster-setup", "--namespace", namespace, "--shared-pvc", claim,
                  cwd=tmp_path)
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_config_map(namespace, list(yaml.safe_load_all(setup.stdout))[-1])
    run = _womm(cluster, "parallel", "--async", "--namespace", namespace, "--image",
                cluster.base_image, "--kube-pods", "1", "--kube-cpu", CPU, "--kube-mem",
                "128Mi", "--", "echo {} > /shared/async-{}; ls /shared", ":::", "a", "b",
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    task_id = run.stdout.strip()
    job = client.BatchV1Api(cluster.api_client()).read_namespaced_job(
        f"womm-task-{task_id}", namespace)
    leader = job.spec.template.spec
    assert [v.persistent_volume_claim.claim_name for v in leader.volumes
            if v.persistent_volume_claim] == [claim]
    assert "/shared" in [m.mount_path for m in leader.containers[0].volume_mounts]
    logs = _womm(cluster, "logs", task_id, "--namespace", namespace, "-f", cwd=tmp_path,
                 timeout=420)
    assert logs.returncode == 0, logs.stderr
    done = _womm(cluster, "finish", task_id, "--namespace", namespace, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (directory / "async-a").read_text() == "a\n"
    assert (directory / "async-b").read_text() == "b\n"


def test_without_settings_pods_have_no_slash_shared(cluster, namespace, tmp_path):
    run = _womm(cluster, "parallel", "--backend", "kubernetes", "--namespace", namespace,
                "--image", cluster.base_image, "--kube-pods", "1", "--kube-cpu", CPU,
                "--kube-mem", "128Mi", "--", "test ! -e /shared && echo none {}", ":::", "x",
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "none x\n"


def test_a_bad_claim_name_is_refused(cluster, namespace, tmp_path):
    run = _womm(cluster, "cluster-setup", "--namespace", namespace, "--shared-pvc",
                "Lab Data", cwd=tmp_path)
    assert run.returncode == 2
    assert "--shared-pvc: 'Lab Data' is not a claim's name" in run.stderr
