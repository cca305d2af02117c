"""`womm pods shell` on the real cluster: a terminal into a running experiment's pod, driven
through a pty like a person at a terminal (the installed `womm`, as a subprocess)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import pytest
from kubernetes import client

from womm_jupyter.naming import owner

pytestmark = pytest.mark.cluster

WOMM = f"{shlex.quote(sys.executable)} -m womm_jupyter"


def _env(cluster) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = cluster.kubeconfig
    return env


def _running_pod(core, namespace) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for pod in core.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/managed-by=womm").items:
            if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None:
                return pod.metadata.name
        time.sleep(0.3)
    pytest.fail("the experiment's pod never ran")


@pytest.fixture
def experiment_pod(cluster, namespace, tmp_path):
    """A running experiment whose one task sleeps; its pod's name. Cancelled afterwards."""
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("echo started; sleep 600\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "womm_jupyter", "experiment", "run", "-i",
         cluster.base_image, "--kube-cpu", "0.05", "--kube-mem", "32Mi", "--namespace",
         namespace, "-f", str(tasks), "-l", str(tmp_path / "logs")],
        cwd=tmp_path, env=_env(cluster), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        yield _running_pod(client.CoreV1Api(cluster.api_client()), namespace)
    finally:
        proc.send_signal(2)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err


def test_a_shell_in_a_running_pod_through_a_pty(cluster, namespace, experiment_pod, tmp_path):
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "womm_jupyter", "pods", "shell",
                                           experiment_pod, "--namespace", namespace],
                          cwd=str(tmp_path), env=_env(cluster), timeout=60, encoding="utf-8",
                          dimensions=(33, 101))
    child.expect(r"[$#] ")
    child.sendline("echo hello-$((6*7)) from $(cat /etc/hostname); stty size")
    child.expect(f"hello-42 from {experiment_pod}")
    child.expect("33 101")  # the window size reached the remote terminal
    child.sendline("sleep 60")
    time.sleep(1)
    child.sendcontrol("c")  # interrupts the remote sleep, not womm
    child.expect(r"[$#] ")
    child.sendline("exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3


def test_the_pod_name_piped_in_and_a_command_on_the_terminal(cluster, namespace,
                                                             experiment_pod, tmp_path):
    import pexpect

    # Standard input is the pipe of names; the terminal is the pty (/dev/tty).
    pipeline = (f"{WOMM} pods names --running --namespace {namespace} | "
                f"{WOMM} pods shell --namespace {namespace} -- sh -c "
                "'tty; read answer; echo got-$answer; exit 4'")
    child = pexpect.spawn("bash", ["-c", pipeline], cwd=str(tmp_path), env=_env(cluster),
                          timeout=60, encoding="utf-8")
    child.expect("/dev/pts/")
    child.sendline("yes")
    child.expect("got-yes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4


def test_shell_refusals_say_what_to_do(cluster, namespace, experiment_pod, tmp_path):
    def womm(*args: str) -> subprocess.CompletedProcess:
        # A new session has no controlling terminal: /dev/tty cannot be opened.
        return subprocess.run([sys.executable, "-m", "womm_jupyter", "pods", "shell",
                               *args, "--namespace", namespace], cwd=tmp_path,
                              env=_env(cluster), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120,
                              start_new_session=True)

    no_tty = womm(experiment_pod)
    assert no_tty.returncode == 2
    assert "womm pods shell needs a terminal" in no_tty.stderr
    assert "womm pods exec NAME -- COMMAND" in no_tty.stderr
    unknown = womm("womm-nosuchpod")
    assert unknown.returncode != 0 and "no pod womm-nosuchpod" in unknown.stderr
    two = womm(experiment_pod, "other")
    assert two.returncode == 2 and "one pod at a time, got 2 names" in two.stderr
    no_name = womm()
    assert no_name.returncode == 2 and "name the pod" in no_name.stderr

    # A pod of yours whose command has ended: nothing to open a shell in.
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "womm-ended", "labels": {
            "app.kubernetes.io/managed-by": "womm", "womm/task": "testtask1",
            "womm/owner": owner()}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "task", "image": cluster.base_image,
                                 "command": ["true"],
                                 "resources": {"limits": {"cpu": "50m", "memory": "32Mi"}}}]}})
    deadline = time.monotonic() + 120
    while core.read_namespaced_pod("womm-ended", namespace).status.phase != "Succeeded":
        assert time.monotonic() < deadline, "the pod never completed"
        time.sleep(0.3)
    ended = womm("womm-ended")
    assert ended.returncode == 2
    assert "pod womm-ended is completed: a shell needs a running pod" in ended.stderr
