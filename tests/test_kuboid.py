"""Pure parts of the kuboid verbs: names, manifests, pod states, option parsing, usage errors."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pytest
from kubernetes import client

from womm_jupyter.cli import build_parser, main
from womm_jupyter.kube import manifests
from womm_jupyter.kuboid.ledger import Progress
from womm_jupyter.kuboid.pods import PodFilter, Pods, pod_state
from womm_jupyter.naming import experiment_pod_name, experiment_task_key
from womm_jupyter.options import PodSaveLogOptions, resolve

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def test_experiment_pod_names_are_unique_valid_labels_even_with_the_same_last_word():
    commands = ["python run.py --seed 1 done", "python run.py --seed 2 done", "done", "",
                "日本語", "x" * 300, "--", "A" * 80 + " done"]
    names = {experiment_pod_name("k3xq9m2a", index, attempt, command)
             for index, command in enumerate(commands, start=1) for attempt in range(3)}
    assert len(names) == len(commands) * 3
    assert all(DNS_LABEL.match(name) and len(name) <= 63 for name in names), names
    assert experiment_pod_name("k3xq9m2a", 12345, 10, "x" * 300).startswith(
        "womm-k3xq9m2a-12345-10-")


def test_task_keys_distinguish_line_numbers_and_commands():
    keys = {experiment_task_key(index, command) for index in (1, 2)
            for command in ("echo a", "echo A", "echo  a", "true")}
    assert len(keys) == 8
    assert experiment_task_key(7, "true") == "00007-true"
    assert "/" not in experiment_task_key(1, "cat /etc/passwd")


def test_namespace_access_is_namespaced_least_privilege():
    objects = manifests.namespace_access("lab-member", "lab")
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding"]
    assert all(o["metadata"]["namespace"] == "lab" for o in objects)
    role = objects[1]
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"]
               for rule in role["rules"])
    assert objects[2]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                     "name": "lab-member"}
    # cluster-setup grants the leader the same rules.
    assert manifests.cluster_setup("lab")[1]["rules"] == role["rules"]


def test_experiment_pod_runs_the_line_with_sh_once():
    body = manifests.experiment_pod(name="p", image="img", command="echo a | wc -c",
                                    labels={"a": "b"}, annotations={}, cpu="0.1",
                                    memory="64Mi")
    container = body["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", "echo a | wc -c"]
    assert body["spec"]["restartPolicy"] == "Never"
    assert container["resources"]["limits"] == {"cpu": "0.1", "memory": "64Mi"}
    assert body["spec"]["automountServiceAccountToken"] is False


def _pod(phase, terminated_reason=None, waiting_reason=None, deleting=False):
    state = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(exit_code=137, reason=terminated_reason)
        if terminated_reason else None,
        waiting=client.V1ContainerStateWaiting(reason=waiting_reason)
        if waiting_reason else None)
    status = client.V1ContainerStatus(name="task", image="i", image_id="", ready=False,
                                      restart_count=0, state=state)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="p", deletion_timestamp=dt.datetime.now(dt.UTC) if deleting else None),
        status=client.V1PodStatus(phase=phase, container_statuses=[status]))


@pytest.mark.parametrize(("pod", "state"), [
    (_pod("Succeeded", "Completed"), "completed"),
    (_pod("Failed", "OOMKilled"), "oom"),
    (_pod("Failed", "Error"), "errored"),
    (_pod("Pending", waiting_reason="ImagePullBackOff"), "errored"),
    (_pod("Pending", waiting_reason="ContainerCreating"), "pending"),
    (_pod("Running"), "running"),
    (_pod("Running", deleting=True), "terminating"),
])
def test_pod_state(pod, state):
    assert pod_state(pod) == state


def test_errored_filter_includes_oom_killed_pods():
    oom = _pod("Failed", "OOMKilled")
    assert PodFilter(frozenset({"errored"})).keeps(oom)
    assert not PodFilter(frozenset({"completed"})).keeps(oom)
    assert PodFilter(regex="^p$").keeps(oom) and not PodFilter(regex="q").keeps(oom)
    assert Pods.states([oom, _pod("Running")]) == {
        "completed": 0, "oom": 1, "errored": 0, "running": 1, "pending": 0, "terminating": 0}


def test_pod_verbs_parse_positionals_and_filters():
    parsed = build_parser().parse_args(["pods", "savelog", "out", "a", "b", "--completed"])
    explicit = {k: v for k, v in vars(parsed).items() if k not in ("verb", "pods_verb")}
    options = resolve(PodSaveLogOptions, explicit, config={})
    assert (options.directory, options.names, options.completed) == ("out", ("a", "b"), True)


def test_progress_line():
    assert Progress(total=5, done=2, running=1, pending=2, rescheduled=1).line() == (
        "5 tasks: 2 done, 1 running, 2 pending, 0 failed, 1 rescheduled, 0 retried")


def test_usage_errors_exit_2_with_a_message(capsys):
    assert main(["pods"]) == 2
    assert "choose a command" in capsys.readouterr().err
    assert main(["admin", "nodes", "--idle", "--used"]) == 2
    assert "choose --idle or --used, not both" in capsys.readouterr().err
    assert main(["pods", "savelog"]) == 2
    assert "the following arguments are required: DIR" in capsys.readouterr().err
    assert main(["pods", "loggrep", "("]) == 2
    assert "is not a regular expression" in capsys.readouterr().err


def test_kubesanitize_from_arguments_and_standard_input():
    run = subprocess.run([sys.executable, "-m", "womm_jupyter", "kubesanitize", "A b",
                          "a-b"], capture_output=True, text=True, check=True)
    first, second = run.stdout.splitlines()
    assert second == "a-b" and first.startswith("a-b-") and len(first) == len("a-b-") + 8
    piped = subprocess.run([sys.executable, "-m", "womm_jupyter", "kubesanitize"],
                           input="A b\na-b\n", capture_output=True, text=True, check=True)
    assert piped.stdout == run.stdout
    none = subprocess.run([sys.executable, "-m", "womm_jupyter", "kubesanitize"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert none.returncode == 2 and "give texts" in none.stderr
