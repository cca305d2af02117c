"""`womm pods ...`, `womm admin ...` on the real cluster, through the CLI as a subprocess.

Pod verbs print names and read names from standard input, so they compose in pipelines; they
see only this owner's womm pods unless told otherwise. The admin kubeconfig is bound to one
namespace with womm's Role, and nothing else.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client, config

from womm_jupyter.naming import owner

pytestmark = pytest.mark.cluster

WOMM = f"{shlex.quote(sys.executable)} -m womm_jupyter"


def sh(cluster, command: str, cwd, kubeconfig: str | None = None,
       timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell pipeline of womm commands (``$WOMM`` is womm)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["KUBECONFIG"] = kubeconfig or cluster.kubeconfig
    env["WOMM"] = WOMM
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def pod(name: str, command: str, *, womm: bool = True, memory: str = "64Mi") -> dict:
    labels = {"app.kubernetes.io/managed-by": "womm", "womm/task": "testtask1",
              "womm/owner": owner()} if womm else {"app": "not-womm"}
    resources = {"cpu": "100m", "memory": memory}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "task", "image": "IMAGE",
                                     "command": ["sh", "-c", command],
                                     "resources": {"requests": resources,
                                                   "limits": resources}}]}}


def wait_for(predicate, what, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_pod_verbs_compose_and_see_only_your_womm_pods(cluster, namespace, tmp_path):
    core = client.CoreV1Api(cluster.api_client())
    bodies = [pod("hello-1", "echo hello-1; echo more"), pod("hello-2", "echo hello-2"),
              pod("broken", "echo about to fail; exit 3"), pod("sleeper", "sleep 300"),
              pod("hungry", "head -c 200m /dev/zero | tail", memory="20Mi"),
              pod("foreign", "echo not mine", womm=False)]
    for body in bodies:
        body["spec"]["containers"][0]["image"] = cluster.base_image
        core.create_namespaced_pod(namespace, body)

    def settled():
        pods = {p.metadata.name: p.status.phase
                for p in core.list_namespaced_pod(namespace).items}
        return all(pods.get(name) in ("Succeeded", "Failed")
                   for name in ("hello-1", "hello-2", "broken", "hungry", "foreign")) \
            and pods.get("sleeper") == "Running"

    wait_for(settled, "the test pods to finish or run")
    ns = f"-n {namespace}"

    names = sh(cluster, f"$WOMM pods names {ns}", tmp_path)
    assert names.returncode == 0, names.stderr
    assert names.stdout.split() == ["broken", "hello-1", "hello-2", "hungry", "sleeper"]
    everything = sh(cluster, f"$WOMM pods names --all-pods {ns}", tmp_path)
    assert "foreign" in everything.stdout.split()

    def names_of(flags: str) -> list[str]:
        result = sh(cluster, f"$WOMM pods names {flags} {ns}", tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert names_of("--completed") == ["hello-1", "hello-2"]
    assert names_of("--errored") == ["broken", "hungry"]
    assert names_of("--oom") == ["hungry"]
    assert names_of("--running") == ["sleeper"]
    assert names_of("--pending") == []
    assert names_of("--completed --running") == ["hello-1", "hello-2", "sleeper"]
    assert names_of("--regex '^hel.*2$'") == ["hello-2"]
    assert names_of("--task testtask1 --completed") == ["hello-1", "hello-2"]
    assert names_of("--task othertask") == []

    states = sh(cluster, f"$WOMM pods states {ns}", tmp_path)
    assert dict(line.split("\t") for line in states.stdout.splitlines()) == {
        "completed": "2", "oom": "1", "errored": "1", "running": "1", "pending": "0",
        "terminating": "0"}
    piped_states = sh(cluster, f"$WOMM pods names --completed {ns} | $WOMM pods states {ns}",
                      tmp_path)
    assert "completed\t2" in piped_states.stdout and "running\t0" in piped_states.stdout

    saved = sh(cluster, f"$WOMM pods names --completed {ns} | $WOMM pods savelog "
                        f"{tmp_path / 'saved'} {ns}", tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.split() == ["hello-1", "hello-2"]
    assert (tmp_path / "saved" / "hello-1.log").read_text() == "hello-1\nmore\n"
    assert (tmp_path / "saved" / "hello-2.log").read_text() == "hello-2\n"
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["hello-1.log",
                                                                     "hello-2.log"]

    grep = sh(cluster, f"$WOMM pods names {ns} | $WOMM pods loggrep 'hello-[0-9]$' {ns}",
              tmp_path)
    assert grep.stdout.split() == ["hello-1", "hello-2"]
    grep = sh(cluster, f"$WOMM pods loggrep 'about to' {ns}", tmp_path)
    assert grep.stdout.split() == ["broken"]

    runtime = sh(cluster, f"$WOMM pods runtime hello-1 sleeper {ns}", tmp_path)
    rows = dict(line.split("\t") for line in runtime.stdout.splitlines())
    assert set(rows) == {"hello-1", "sleeper"}
    assert 0 <= float(rows["hello-1"]) < 60 and float(rows["sleeper"]) >= 0

    logs = sh(cluster, f"$WOMM pods logs hello-2 {ns}", tmp_path)
    assert logs.stdout == "hello-2\n"
    logs = sh(cluster, f"$WOMM pods names --completed {ns} | $WOMM pods logs {ns}", tmp_path)
    assert logs.stdout == "==> hello-1 <==\nhello-1\nmore\n==> hello-2 <==\nhello-2\n"

    described = sh(cluster, f"$WOMM pods describe hungry {ns}", tmp_path)
    assert described.returncode == 0, described.stderr
    assert "State:      oom (phase Failed)" in described.stdout
    assert "OOMKilled exit 137" in described.stdout
    assert "Scheduled" in described.stdout  # its events

    executed = sh(cluster, f"$WOMM pods exec sleeper {ns} -- sh -c 'echo out; echo err >&2; "
                           "exit 4'", tmp_path)
    assert executed.returncode == 4
    assert executed.stdout == "out\n" and executed.stderr == "err\n"

    # Someone else's pod is out of reach, by name too.
    refused = sh(cluster, f"$WOMM pods delete foreign {ns}", tmp_path)
    assert refused.returncode == 2
    assert "no pod foreign among the womm pods of yours" in refused.stderr
    # delete with no names and no filter would delete everything: refused.
    refused = sh(cluster, f"$WOMM pods delete {ns} </dev/null", tmp_path)
    assert refused.returncode == 2 and "choose them with a filter" in refused.stderr

    deleted = sh(cluster, f"$WOMM pods names --errored {ns} | $WOMM pods delete {ns}",
                 tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.split() == ["broken", "hungry"]
    left = {p.metadata.name for p in core.list_namespaced_pod(namespace).items
            if p.metadata.deletion_timestamp is None}
    assert left == {"hello-1", "hello-2", "sleeper", "foreign"}
    # An empty pipe means no pods: nothing is deleted.
    nothing = sh(cluster, f"$WOMM pods names --pending {ns} | $WOMM pods delete {ns}", tmp_path)
    assert nothing.returncode == 0 and nothing.stdout == ""


def test_kubesanitize_names_are_valid_and_distinct(cluster, tmp_path):
    texts = ["python analyse.py sample-001.fastq", "python analyse.py sample_001.fastq",
             "Experiment", "experiment", "x" * 100, "x" * 101, "日本語", "a b", "a_b"]
    result = sh(cluster, "$WOMM kubesanitize " + " ".join(shlex.quote(t) for t in texts),
                tmp_path)
    assert result.returncode == 0, result.stderr
    names = result.stdout.splitlines()
    assert len(names) == len(texts) == len(set(names))
    import re

    valid = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    assert all(valid.match(name) and len(name) <= 63 for name in names), names
    assert names[3] == "experiment"
    # The names are accepted by the API server as pod names.
    piped = sh(cluster, "printf 'Experiment\\nexperiment\\n' | $WOMM kubesanitize", tmp_path)
    assert piped.stdout.splitlines() == names[2:4]


def test_admin_kubeconfig_is_bound_to_its_namespace(cluster, namespace, tmp_path):
    path = tmp_path / "member.kubeconfig"
    made = sh(cluster, f"$WOMM admin kubeconfig {namespace} -o {path} --user lab-member",
              tmp_path)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = yaml.safe_load(path.read_text())
    assert document["contexts"][0]["context"]["namespace"] == namespace
    assert document["users"][0]["user"]["token"]

    # The member runs an experiment in the namespace (no --namespace: the context's).
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("echo member was here\n")
    run = sh(cluster, f"$WOMM experiment run -i {cluster.base_image} --kube-cpu 0.1 "
                      f"--kube-mem 64Mi -f {tasks} -l {tmp_path / 'logs'}", tmp_path,
             kubeconfig=str(path))
    assert run.returncode == 0, run.stderr
    assert [p.read_text() for p in (tmp_path / "logs").glob("*.log")] == ["member was here\n"]
    assert f"pods in namespace {namespace}" in run.stderr

    # ...and is refused elsewhere: another namespace, nodes.
    other = sh(cluster, "$WOMM pods names -n default", tmp_path, kubeconfig=str(path))
    assert other.returncode == 1
    assert "refused to let you list pods in namespace default (Forbidden)" in other.stderr
    nodes = sh(cluster, "$WOMM admin nodes", tmp_path, kubeconfig=str(path))
    assert nodes.returncode == 1 and "Forbidden" in nodes.stderr
    member = config.new_client_from_config(config_file=str(path))
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(member).create_namespaced_pod("default", pod("intruder", "true"))
    assert refused.value.status == 403
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(member).list_node()
    assert refused.value.status == 403

    # Nothing cluster-wide was granted to it.
    rbac = client.RbacAuthorizationV1Api(cluster.api_client())
    for binding in rbac.list_cluster_role_binding().items:
        for subject in binding.subjects or []:
            assert not (subject.kind == "ServiceAccount" and subject.name == "lab-member"
                        and subject.namespace == namespace), binding.metadata.name
    role = rbac.read_namespaced_role("lab-member", namespace)
    assert all("*" not in rule.verbs and "*" not in rule.resources for rule in role.rules)

    # Asking again refreshes it (a new token), without error.
    again = sh(cluster, f"$WOMM admin kubeconfig {namespace} --user lab-member", tmp_path)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout)["users"][0]["user"]["token"] != \
        document["users"][0]["user"]["token"]


def test_admin_nodes_shows_allocatable_and_requested(cluster, namespace, tmp_path):
    core = client.CoreV1Api(cluster.api_client())
    body = pod("holder", "sleep 300")
    body["spec"]["containers"][0]["image"] = cluster.base_image
    core.create_namespaced_pod(namespace, body)
    wait_for(lambda: core.read_namespaced_pod("holder", namespace).spec.node_name,
             "the pod to be scheduled")
    listed = sh(cluster, "$WOMM admin nodes", tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split() for line in listed.stdout.splitlines()]
    assert header[:4] == ["NAME", "READY", "CPU-REQUESTED", "CPU-ALLOCATABLE"]
    row = next(row for row in rows if row[0] == cluster.node_name)
    assert row[1] == "yes" and row[3] == "2"
    assert float(row[2]) >= 0.1  # at least the holder's 100m
    assert int(row[7]) >= 1
    used = sh(cluster, "$WOMM admin nodes --used", tmp_path)
    assert cluster.node_name in used.stdout
    idle = sh(cluster, "$WOMM admin nodes --idle", tmp_path)
    assert cluster.node_name not in idle.stdout
    both = sh(cluster, "$WOMM admin nodes --idle --used", tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr
