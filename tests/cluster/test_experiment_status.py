"""Experiments in `womm status` / `womm finish`, on the real cluster, through the CLI.

An experiment's pods and its Lease hang off a root ConfigMap ``womm-task-<id>``; the running
client renews the Lease. SIGKILL the client: `womm status` says ORPHANED; `womm finish ID`
leaves nothing labelled with the id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster


def _env(cluster) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = cluster.kubeconfig
    return env


def womm(cluster, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "womm_jupyter", *args], cwd=cwd,
                          env=_env(cluster), capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


def status_of(cluster, namespace, task_id, cwd) -> str:
    done = womm(cluster, "status", "--namespace", namespace, cwd=cwd)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(task_id)]
    return rows[0][2] if rows else ""


def wait_for(predicate, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def labelled(cluster, namespace, task_id) -> list[str]:
    api = cluster.api_client()
    core, coordination = client.CoreV1Api(api), client.CoordinationV1Api(api)
    selector = f"womm/task={task_id}"
    return ([f"pod/{p.metadata.name}" for p in
             core.list_namespaced_pod(namespace, label_selector=selector).items]
            + [f"configmap/{c.metadata.name}" for c in
               core.list_namespaced_config_map(namespace, label_selector=selector).items]
            + [f"lease/{le.metadata.name}" for le in
               coordination.list_namespaced_lease(namespace, label_selector=selector).items])


def test_killed_client_shows_orphaned_and_finish_leaves_nothing(cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("sleep 300\nsleep 301\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "womm_jupyter", "experiment", "run", "-i",
         cluster.base_image, "--kube-cpu", "0.05", "--kube-mem", "32Mi", "--namespace",
         namespace, "-f", str(tasks), "-l", str(tmp_path / "logs")],
        cwd=tmp_path, env=_env(cluster), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # "womm: experiment <id>: tasks from ..."
        match = re.search(r"experiment (\w+):", first)
        assert match, first
        task_id = match.group(1)
        api = cluster.api_client()
        core = client.CoreV1Api(api)
        root = core.read_namespaced_config_map(f"womm-task-{task_id}", namespace)
        assert root.metadata.labels["womm/role"] == "experiment"
        pods = wait_for(lambda: [p for p in core.list_namespaced_pod(
            namespace, label_selector=f"womm/task={task_id}").items], "the task pods")
        for pod in pods:  # every pod hangs off the root
            assert [(o.kind, o.name, o.uid) for o in pod.metadata.owner_references] == [
                ("ConfigMap", root.metadata.name, root.metadata.uid)]
        lease = client.CoordinationV1Api(api).read_namespaced_lease(root.metadata.name,
                                                                    namespace)
        assert lease.metadata.owner_references[0].uid == root.metadata.uid
        assert status_of(cluster, namespace, task_id, tmp_path) == "RUNNING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    # The Lease goes stale: the experiment is ORPHANED, its pods still there.
    wait_for(lambda: status_of(cluster, namespace, task_id, tmp_path) == "ORPHANED",
             "status ORPHANED", timeout=60)
    assert any(name.startswith("pod/") for name in labelled(cluster, namespace, task_id))

    done = womm(cluster, "finish", "--namespace", namespace, task_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"configmap/womm-task-{task_id} deleted" in done.stdout, done.stdout
    assert labelled(cluster, namespace, task_id) == []
    assert status_of(cluster, namespace, task_id, tmp_path) == ""


def test_a_finished_experiment_leaves_no_root_and_finish_of_a_live_one_stops_it(
        cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("echo one\n")
    done = womm(cluster, "experiment", "run", "-i", cluster.base_image, "--kube-cpu", "0.05",
                "--kube-mem", "32Mi", "--namespace", namespace, "-f", str(tasks), "-l",
                str(tmp_path / "logs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    task_id = re.search(r"experiment (\w+):", done.stderr).group(1)
    assert labelled(cluster, namespace, task_id) == []

    # `womm finish` of an experiment whose client still runs: the client stops too.
    tasks.write_text("sleep 300\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "womm_jupyter", "experiment", "run", "-i",
         cluster.base_image, "--kube-cpu", "0.05", "--kube-mem", "32Mi", "--namespace",
         namespace, "-f", str(tasks), "-l", str(tmp_path / "logs2")],
        cwd=tmp_path, env=_env(cluster), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        task_id = re.search(r"experiment (\w+):", proc.stderr.readline()).group(1)
        wait_for(lambda: status_of(cluster, namespace, task_id, tmp_path) == "RUNNING",
                 "status RUNNING")
        done = womm(cluster, "finish", "--namespace", namespace, task_id, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert labelled(cluster, namespace, task_id) == []
