"""An experiment of 30 tasks whose pods are deleted at random while it runs (issue 8).

Six task lines, chosen at random, hold their first attempt until the test deletes it: their
command reads the attempt from the pod's name (``womm-<id>-<line>-<attempt>-<hint>``, which is
the pod's hostname) and waits on attempt 0 only. The test deletes those pods in random order
as it sees them, pending or running, so every deletion happens mid-run and nothing depends on
timing. Every task must end with exactly one log in LOGDIR holding one completion, the six
deletions must be reported as rescheduled, and nothing may be left in the namespace.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster

SELECTOR = "app.kubernetes.io/managed-by=womm"
TASKS = 30
VICTIMS = 6


def task_line(line: int, victim: bool) -> str:
    hold = ('if [ "$(cut -d- -f4 /etc/hostname)" = 0 ]; then sleep 600; fi; '
            if victim else "")
    return f"{hold}sleep {1 + line % 3}; echo task {line} completed\n"


def test_thirty_tasks_with_random_pod_deletions_each_log_exactly_once(cluster, namespace,
                                                                        tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    victims = set(rng.sample(range(1, TASKS + 1), VICTIMS))
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(task_line(line, line in victims)
                             for line in range(1, TASKS + 1)))
    logs = tmp_path / "logs"
    core = client.CoreV1Api(cluster.api_client())
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = cluster.kubeconfig
    proc = subprocess.Popen(
        [sys.executable, "-m", "womm_jupyter", "experiment", "run", "-i",
         cluster.base_image, "--kube-cpu", "0.05", "--kube-mem", "32Mi", "--max-pods", "8",
         "--namespace", namespace, "-f", str(tasks), "-l", str(logs)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deleted: list[str] = []
    stop = threading.Event()

    def delete_victims() -> None:
        """Delete each victim line's first pod, a random one of those present each time."""
        while not stop.is_set() and len(deleted) < VICTIMS:
            listed = core.list_namespaced_pod(namespace, label_selector=SELECTOR)
            present = [pod.metadata.name for pod in listed.items
                       if pod.metadata.labels.get("womm/attempt") == "0"
                       and int(pod.metadata.labels["womm/experiment-task"]) in victims
                       and pod.metadata.deletion_timestamp is None
                       and pod.metadata.name not in deleted]
            if present:
                victim = rng.choice(present)
                core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
                deleted.append(victim)
            else:
                stop.wait(0.5)

    deleter = threading.Thread(target=delete_victims, daemon=True)
    deleter.start()
    try:
        _out, err = proc.communicate(timeout=900)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        deleter.join(timeout=30)
    context = f"seed {seed}, victims {sorted(victims)}\n{err}"
    assert proc.returncode == 0, context
    assert len(deleted) == VICTIMS, context

    written = sorted(logs.glob("*.log"))
    assert len(written) == TASKS, context
    by_line = {int(path.name[:5]): path.read_text() for path in written}
    assert by_line == {line: f"task {line} completed\n" for line in range(1, TASKS + 1)}, context
    assert not list(logs.glob("*.failed")) and not list(logs.glob(".*")), context

    for victim in deleted:
        assert f"({victim}); rescheduled" in err, context
    assert err.count("; rescheduled") == VICTIMS, context
    assert (f"{TASKS} tasks: {TASKS} done, 0 running, 0 pending, 0 failed, "
            f"{VICTIMS} rescheduled, 0 retried") in err, context
    assert f"{TASKS} of {TASKS} tasks done, 0 failed" in err, context
    left = [pod.metadata.name for pod in
            core.list_namespaced_pod(namespace, label_selector=SELECTOR).items
            if pod.metadata.deletion_timestamp is None]
    assert left == [], context
