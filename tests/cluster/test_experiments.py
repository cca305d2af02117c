"""`womm experiment run` on the real cluster, through the CLI as a subprocess.

One pod per task line; LOGDIR is the ledger (a log only on success; never run twice); vanished
pods are rescheduled; failures and OOM kills are retried, then reported; appended lines run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster

SELECTOR = "app.kubernetes.io/managed-by=womm"


def womm(cluster, *args, cwd, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = cluster.kubeconfig
    return subprocess.run([sys.executable, "-m", "womm_jupyter", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=kwargs.pop("stdin", subprocess.DEVNULL), **kwargs)


def start(cluster, *args, cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = cluster.kubeconfig
    return subprocess.Popen([sys.executable, "-m", "womm_jupyter", *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def experiment_args(cluster, namespace, *extra):
    return ["experiment", "run", "-i", cluster.base_image, "--kube-cpu", "0.1",
            "--kube-mem", "64Mi", "--namespace", namespace, *extra]


def live_pods(core, namespace):
    """womm pods of the namespace not already being deleted."""
    return [pod for pod in core.list_namespaced_pod(namespace, label_selector=SELECTOR).items
            if pod.metadata.deletion_timestamp is None]


def wait_for(predicate, what, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def scheduled_pods(core, namespace) -> set[str]:
    events = core.list_namespaced_event(namespace, field_selector="reason=Scheduled").items
    return {event.involved_object.name for event in events}


def test_four_tasks_with_the_same_last_word_all_run_and_a_rerun_runs_nothing(
        cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    commands = ["echo alpha; echo done", "echo beta; echo done", "printf 'gamma\\n'; echo done",
                "echo delta && echo done"]
    tasks.write_text("".join(f"{command}\n" for command in commands))
    logs = tmp_path / "logs"

    run = womm(cluster, *experiment_args(cluster, namespace, "-f", str(tasks), "-l", str(logs)),
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    written = sorted(logs.glob("*.log"))
    assert len(written) == 4, (written, run.stderr)
    words = ["alpha", "beta", "gamma", "delta"]
    for index, (path, word) in enumerate(zip(written, words, strict=True), start=1):
        assert path.name.startswith(f"{index:05d}-")
        assert path.read_text() == f"{word}\ndone\n"
    assert "4 of 4 tasks done, 0 failed" in run.stderr
    assert "4 tasks: 4 done, 0 running, 0 pending, 0 failed" in run.stderr
    assert not list(logs.glob("*.failed"))
    assert not list(logs.glob(".*tmp"))
    core = client.CoreV1Api(cluster.api_client())
    assert live_pods(core, namespace) == [], "the experiment left pods behind"
    # Four distinct pods ran: names carry the line number, never only the last word.
    ran = wait_for(lambda: (lambda s: s if len(s) >= 4 else None)(
        scheduled_pods(core, namespace)), "4 Scheduled events")
    assert len(ran) == 4 and all(name.startswith("womm-") for name in ran)

    mtimes = {path: path.stat().st_mtime_ns for path in written}
    again = womm(cluster, *experiment_args(cluster, namespace, "-f", str(tasks), "-l",
                                           str(logs)), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 tasks done (4 already had logs), 0 failed" in again.stderr
    assert {path: path.stat().st_mtime_ns for path in written} == mtimes
    time.sleep(2)  # a pod it created would have been scheduled by now
    assert scheduled_pods(core, namespace) == ran, "the re-run started pods"


def test_a_deleted_pod_is_rescheduled_and_its_task_completes_once(cluster, namespace,
                                                                   tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("sleep 6; echo slow one\nsleep 6; echo slow two\n")
    logs = tmp_path / "logs"
    core = client.CoreV1Api(cluster.api_client())
    proc = start(cluster, *experiment_args(cluster, namespace, "-f", str(tasks), "-l",
                                           str(logs)), cwd=tmp_path)
    try:
        def running_pod_of_line_1():
            for pod in live_pods(core, namespace):
                if (pod.metadata.labels.get("womm/experiment-task") == "1"
                        and pod.status.phase == "Running"):
                    return pod.metadata.name
            return None

        victim = wait_for(running_pod_of_line_1, "task 1's pod to run")
        core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"({victim}); rescheduled" in err, err
    written = sorted(logs.glob("*.log"))
    assert [path.read_text() for path in written] == ["slow one\n", "slow two\n"]
    assert "1 rescheduled" in err
    assert live_pods(core, namespace) == []


def test_failed_and_oom_killed_tasks_are_retried_then_reported(cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("echo fine\n"
                     "echo trying; exit 7\n"
                     "head -c 200m /dev/zero | tail\n")
    logs = tmp_path / "logs"
    args = ["experiment", "run", "-i", cluster.base_image, "--kube-cpu", "0.1",
            "--kube-mem", "20Mi", "--namespace", namespace, "-f", str(tasks), "-l", str(logs),
            "--max-retries", "2"]
    run = womm(cluster, *args, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert [path.read_text() for path in logs.glob("*.log")] == ["fine\n"]

    failed = {path.name.split("-")[0]: path.read_text() for path in logs.glob("*.failed")}
    assert set(failed) == {"00002", "00003"}
    exit7 = failed["00002"]
    assert "command: echo trying; exit 7\nattempts: 3\n" in exit7
    assert exit7.count("exited with status 7") == 3
    # Three different pods: attempts 0, 1 and 2 of line 2.
    pods = [line.split(": ")[1] for line in exit7.splitlines() if line.startswith("failure:")]
    assert len(set(pods)) == 3
    assert sorted(pod.split("-")[3] for pod in pods) == ["0", "1", "2"]
    assert all(pod.startswith("womm-") and pod.split("-")[2] == "2" for pod in pods)
    assert exit7.rstrip().endswith("trying")
    oom = failed["00003"]
    assert "attempts: 3\n" in oom and "oom-killed: yes" in oom
    assert oom.count("OOM-killed (over --kube-mem 20Mi)") == 3

    assert "womm: failed: line 2: echo trying; exit 7" in run.stderr
    assert "womm: OOM-killed: line 3: head -c 200m /dev/zero | tail" in run.stderr
    assert "1 of 3 tasks done, 2 failed" in run.stderr
    assert "retry 2 of 2" in run.stderr
    core = client.CoreV1Api(cluster.api_client())
    assert live_pods(core, namespace) == []

    # Failed tasks are tried again by a later run (a .failed marker is a report, not a
    # ledger entry); the completed one is not.
    tasks.write_text("echo fine\necho trying; exit 7\n")
    again = womm(cluster, *args[:-2], "--max-retries", "0", cwd=tmp_path)
    assert again.returncode == 1
    assert "1 of 2 tasks done (1 already had logs), 1 failed" in again.stderr
    assert "attempts: 1\n" in (logs / next(iter(
        p.name for p in logs.glob("00002-*.failed")))).read_text()


def test_a_line_appended_while_running_is_picked_up(cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("sleep 8; echo first\n")
    logs = tmp_path / "logs"
    core = client.CoreV1Api(cluster.api_client())
    proc = start(cluster, *experiment_args(cluster, namespace, "-f", str(tasks), "-l",
                                           str(logs)), cwd=tmp_path)
    try:
        wait_for(lambda: live_pods(core, namespace), "the first task's pod")
        with tasks.open("a") as handle:
            handle.write("echo second\n")
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    contents = {path.name[:5]: path.read_text() for path in logs.glob("*.log")}
    assert contents == {"00001": "first\n", "00002": "second\n"}
    assert "2 of 2 tasks done" in err


def test_tasks_from_standard_input(cluster, namespace, tmp_path):
    logs = tmp_path / "logs"
    run = womm(cluster, *experiment_args(cluster, namespace, "-l", str(logs)), cwd=tmp_path,
               stdin=None, input="echo from stdin\n\n# a comment\necho last line")
    assert run.returncode == 0, run.stderr
    contents = {path.name[:5]: path.read_text() for path in logs.glob("*.log")}
    assert contents == {"00001": "from stdin\n", "00004": "last line\n"}


def test_ctrl_c_deletes_the_experiments_pods(cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("sleep 300\nsleep 301\n")
    logs = tmp_path / "logs"
    core = client.CoreV1Api(cluster.api_client())
    proc = start(cluster, *experiment_args(cluster, namespace, "-f", str(tasks), "-l",
                                           str(logs)), cwd=tmp_path)
    try:
        wait_for(lambda: len(live_pods(core, namespace)) == 2, "both pods")
        proc.send_signal(2)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelled; its pods were deleted" in err
    assert live_pods(core, namespace) == []
    assert not list(logs.glob("*.log"))


def test_an_image_that_cannot_be_pulled_stops_the_experiment_with_a_clear_error(
        cluster, namespace, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("true\n")
    run = womm(cluster, "experiment", "run", "-i", f"{cluster.registry}/womm/no-such:image",
               "--kube-cpu", "0.1", "--namespace", namespace, "-f", str(tasks), "-l",
               str(tmp_path / "logs"), cwd=tmp_path)
    assert run.returncode == 1
    assert "cannot get image" in run.stderr, run.stderr
    assert "ErrImagePull" in run.stderr or "ImagePullBackOff" in run.stderr, run.stderr
    core = client.CoreV1Api(cluster.api_client())
    assert live_pods(core, namespace) == []


def test_bad_input_is_refused_before_anything_starts(cluster, namespace, tmp_path):
    run = womm(cluster, *experiment_args(cluster, namespace, "-f", str(tmp_path / "missing")),
               cwd=tmp_path)
    assert run.returncode == 2
    assert "--task-file" in run.stderr and "is not a file" in run.stderr
    assert not (tmp_path / "womm-logs").exists()
    no_image = womm(cluster, "experiment", "run", "-f", str(tmp_path), cwd=tmp_path)
    assert no_image.returncode == 2 and "--image is required" in no_image.stderr
    no_tasks = womm(cluster, *experiment_args(cluster, namespace), cwd=tmp_path)
    assert no_tasks.returncode == 2
    assert "give the tasks with -f TASKFILE or on standard input" in no_tasks.stderr
