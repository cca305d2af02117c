"""`womm parallel`, `status`, `finish` and `cluster-setup` on the real test cluster, through
the CLI as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

pytestmark = pytest.mark.cluster

CPU = "0.2"  # the node has 2 CPUs; several pods must fit


def _womm(cluster, namespace: str, *args: str, cwd: Path,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["womm", *args], text=True, capture_output=True, cwd=cwd,
                          timeout=timeout, env=_env(cluster))


def _env(cluster, extra: dict[str, str] | None = None) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=cluster.kubeconfig, **(extra or {}))


def _parallel(cluster, namespace: str, *womm_opts: str) -> list[str]:
    return ["womm", "parallel", "--backend", "kubernetes", "--namespace", namespace,
            "--image", cluster.base_image, "--kube-cpu", CPU, "--kube-mem", "128Mi",
            "--start-timeout", "90", *womm_opts, "--"]


def _leftovers(cluster, namespace: str, task_id: str | None = None) -> list[str]:
    api = cluster.api_client()
    selector = "app.kubernetes.io/managed-by=womm" + (f",womm/task={task_id}" if task_id else "")
    found = [f"deployment/{d.metadata.name}" for d in client.AppsV1Api(api)
             .list_namespaced_deployment(namespace, label_selector=selector).items]
    found += [f"pod/{p.metadata.name}" for p in client.CoreV1Api(api)
              .list_namespaced_pod(namespace, label_selector=selector).items]
    found += [f"lease/{lease.metadata.name}" for lease in client.CoordinationV1Api(api)
              .list_namespaced_lease(namespace, label_selector=selector).items]
    return found


def _wait_gone(cluster, namespace: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _leftovers(cluster, namespace)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_seed_example_matches_local_gnu_parallel(cluster, namespace, tmp_path):
    for i in range(12):
        (tmp_path / f"file {i}.txt").write_text("line\n" * i)
    files = "".join(f"./file {i}.txt\n" for i in range(12))
    # The pods see an empty project directory until shares exist: count lines of input we
    # pass inline instead, so that the comparison is about GNU parallel's behaviour.
    cmd = "printf '%s\\n' {} | wc -l; echo {}"
    local = subprocess.run(["perl", _vendored(), "-k", cmd], input=files, text=True,
                           capture_output=True, cwd=tmp_path, check=True).stdout
    run = subprocess.run([*_parallel(cluster, namespace, "--kube-pods", "3"), "-k", cmd],
                         input=files, text=True, capture_output=True, cwd=tmp_path,
                         env=_env(cluster), timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == local
    assert "deployment.apps/womm-task-" in run.stderr and " created" in run.stderr
    assert '" deleted' in run.stderr
    assert _wait_gone(cluster, namespace, 30) == []


def _vendored() -> str:
    from womm_jupyter._paths import vendored_parallel

    return str(vendored_parallel())


def test_slots_procs_per_pod_and_local_procs_are_used(cluster, namespace, tmp_path):
    marker = tmp_path / "ran-locally"
    cmd = f"sleep 1; echo $WOMM_WORKER; [ -d /proc/1 ] && test -e {marker} || true"
    run = subprocess.run([*_parallel(cluster, namespace, "--kube-pods", "2", "--procs-per-pod",
                                     "2", "--local-procs", "1"), "--joblog", "jl", cmd],
                         input="".join(f"{i}\n" for i in range(10)), text=True,
                         capture_output=True, cwd=tmp_path, env=_env(cluster), timeout=300)
    assert run.returncode == 0, run.stderr
    workers = run.stdout.split()
    pods = {w for w in workers if w.startswith("womm-task-") and not w.endswith("-local")}
    assert len(pods) == 2, workers
    assert any(w.endswith("-local") for w in workers), workers
    # 10 one-second jobs on 5 slots take about 2 s of job time, not 5 or 10.
    rows = [line.split("\t") for line in (tmp_path / "jl").read_text().splitlines()[1:]]
    starts = sorted(float(r[2]) for r in rows)
    assert starts[4] - starts[0] < 1.0, "five jobs should start together"


def test_thousands_of_short_jobs_all_report_their_exit_status(cluster, namespace, tmp_path):
    # Jobs that end before their client's last frames (stdin EOF) reach the pod, and a pod's
    # stream that goes quiet right after a job's last frame: both once lost exit statuses
    # ("lost the connection to worker") or left jobs hanging.
    run = subprocess.run([*_parallel(cluster, namespace, "--kube-pods", "2"), "--joblog",
                          "jobs.log", "exit $(({} % 3))"], input="".join(
                              f"{i}\n" for i in range(2000)), text=True, capture_output=True,
                         cwd=tmp_path, env=_env(cluster), timeout=600)
    assert "lost the connection" not in run.stderr, run.stderr
    rows = [line.split("\t") for line in (tmp_path / "jobs.log").read_text().splitlines()[1:]]
    assert len(rows) == 2000
    assert all(int(row[6]) == (int(row[0]) - 1) % 3 for row in rows), run.stderr  # Seq is 1-based
    assert run.returncode == 101  # GNU parallel: more than 100 jobs failed


def test_pod_deleted_mid_run_with_retries(cluster, namespace, tmp_path):
    proc = subprocess.Popen([*_parallel(cluster, namespace, "--kube-pods", "2"), "--retries",
                             "3", "sleep 0.5; echo {} $WOMM_WORKER"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env(cluster))
    _feed(proc, range(30))
    core = client.CoreV1Api(cluster.api_client())
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace,
                                        label_selector="app.kubernetes.io/managed-by=womm").items
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                        for c in p.status.conditions or [])]
        if len(ready) == 2:
            time.sleep(2)  # let jobs start on both
            victim = ready[0].metadata.name
            core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    assert victim, "the workers never became ready"
    assert proc.returncode == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert sorted(int(parts[0]) for parts in lines) == list(range(30))
    workers = {parts[1] for parts in lines}
    assert len(workers) == 3, f"a replacement pod should take jobs: {workers}"
    assert f"{victim}" in err


def test_all_pods_gone_is_a_clear_error(cluster, namespace, tmp_path):
    proc = subprocess.Popen([*_parallel(cluster, namespace, "--kube-pods", "2"),
                             "sleep 0.5; echo {}; test -e /run/womm/agent.sock"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env(cluster))
    _feed(proc, range(200))
    apps = client.AppsV1Api(cluster.api_client())
    deadline = time.monotonic() + 120
    scaled = False
    while not scaled and time.monotonic() < deadline:
        for deployment in apps.list_namespaced_deployment(namespace).items:
            if (deployment.status.ready_replicas or 0) == 2:
                time.sleep(2)
                apps.patch_namespaced_deployment_scale(deployment.metadata.name, namespace,
                                                       {"spec": {"replicas": 0}})
                scaled = True
        time.sleep(0.2)
    _, err = proc.communicate(timeout=300)
    assert scaled
    assert proc.returncode != 0
    assert "workers stopped" in err and "scaled to 0" in err, err
    assert "no job ran on this machine" in err
    # Every job that printed ran where the agent socket exists: in a pod, never here.
    assert not Path("/run/womm/agent.sock").exists()
    assert _wait_gone(cluster, namespace, 30) == []


def test_sigint_cleans_up_and_sigkill_leaves_an_orphan_for_finish(cluster, namespace, tmp_path):
    argv = [*_parallel(cluster, namespace, "--kube-pods", "1"), "sleep 2; echo {}", ":::",
            *map(str, range(100))]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env(cluster))
    _await_output(proc)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _wait_gone(cluster, namespace, max(1.0, 10 - (time.monotonic() - sent))) == []

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env(cluster))
    _await_output(proc)
    proc.kill()
    proc.wait()
    created = re.search(r"deployment\.apps/womm-task-(\w+) created", proc.stderr.read())
    assert created, "the killed run never said which Deployment it created"
    task_id = created.group(1)
    _await_orphaned(cluster, namespace, tmp_path, task_id)
    done = _womm(cluster, namespace, "finish", task_id, "--namespace", namespace, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"deployment.apps/womm-task-{task_id}" in done.stdout
    assert _wait_gone(cluster, namespace, 30) == []


def _await_orphaned(cluster, namespace: str, cwd: Path, marker: str) -> str:
    """The id of the task whose `womm status` row (with ``marker`` in it) turns ORPHANED.

    Only that row counts: `womm status` also lists other backends' tasks on this machine,
    e.g. a Docker task left by an earlier run that was killed."""
    deadline = time.monotonic() + 30
    row = status = ""
    while "ORPHANED" not in row and time.monotonic() < deadline:
        status = _womm(cluster, namespace, "status", "--namespace", namespace, cwd=cwd).stdout
        row = next((line for line in status.splitlines() if marker in line), "")
        time.sleep(1)
    assert "ORPHANED" in row, status
    return row.split()[0]


def _feed(proc: subprocess.Popen[str], inputs: range) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(f"{i}\n" for i in inputs))
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again


def _await_output(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first job's output: the run is under way
    assert line, proc.stderr.read() if proc.stderr else ""


def test_missing_image_fails_fast_with_the_pull_error(cluster, namespace, tmp_path):
    started = time.monotonic()
    run = subprocess.run(["womm", "parallel", "--backend", "kubernetes", "--namespace",
                          namespace, "--image", f"{cluster.registry}/womm/no-such-image:1",
                          "--kube-cpu", CPU, "--start-timeout", "120", "--kube-pods", "1", "--",
                          "echo", ":::", "x"], text=True, capture_output=True, cwd=tmp_path,
                         env=_env(cluster), timeout=200)
    assert run.returncode != 0
    assert "ErrImagePull" in run.stderr or "ImagePullBackOff" in run.stderr, run.stderr
    assert time.monotonic() - started < 120
    assert _wait_gone(cluster, namespace, 30) == []


def test_cluster_setup_role_can_run_womm_and_exec_is_needed(cluster, namespace, tmp_path):
    manifests = _womm(cluster, namespace, "cluster-setup", "--namespace", namespace,
                      cwd=tmp_path)
    assert manifests.returncode == 0, manifests.stderr
    api = cluster.api_client()
    from kubernetes import utils

    docs = list(yaml.safe_load_all(manifests.stdout))
    rbac = {"ServiceAccount", "Role", "RoleBinding"}
    assert {d["kind"] for d in docs} == rbac | {"Namespace", "Deployment", "Service",
                                                "NetworkPolicy"}
    docs = [d for d in docs if d["kind"] in rbac]  # the file server: tests/cluster/test_fsserver.py
    for rule in next(d for d in docs if d["kind"] == "Role")["rules"]:
        assert "*" not in rule["verbs"] and "secrets" not in rule["resources"]
    utils.create_from_yaml(api, yaml_objects=docs, namespace=namespace)
    kubeconfig = _token_kubeconfig(cluster, namespace, "womm-leader", tmp_path)
    run = subprocess.run([*_parallel(cluster, namespace, "--kube-pods", "1"), "-k", "echo {}",
                          ":::", "a", "b"], text=True, capture_output=True, cwd=tmp_path,
                         env=dict(_env(cluster), KUBECONFIG=str(kubeconfig)), timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "a\nb\n"
    restricted = dict(_env(cluster), KUBECONFIG=str(kubeconfig))
    doctor = subprocess.run(["womm", "doctor", "--image", cluster.base_image], text=True,
                            capture_output=True, cwd=tmp_path, env=restricted, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"permissions womm uses are granted in namespace {namespace}" in doctor.stdout

    # The same Role without pods/exec: a clear Forbidden message.
    rbac = client.RbacAuthorizationV1Api(api)
    role = rbac.read_namespaced_role("womm-leader", namespace)
    role.rules = [r for r in role.rules if "pods/exec" not in r.resources]
    rbac.replace_namespaced_role("womm-leader", namespace, role)
    run = subprocess.run([*_parallel(cluster, namespace, "--kube-pods", "1"), "echo {}",
                          ":::", "a"], text=True, capture_output=True, cwd=tmp_path,
                         env=dict(_env(cluster), KUBECONFIG=str(kubeconfig)), timeout=300)
    assert run.returncode != 0
    assert "Forbidden" in run.stderr and "cluster-setup" in run.stderr, run.stderr
    assert _wait_gone(cluster, namespace, 30) == []
    # `womm doctor` names exactly what is missing, and who can fix it.
    doctor = subprocess.run(["womm", "doctor", "--image", cluster.base_image], text=True,
                            capture_output=True, cwd=tmp_path, env=restricted, timeout=120)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    missing = next(line for line in doctor.stdout.splitlines() if "permissions" in line)
    assert missing.startswith("MISSING") and missing.endswith(
        "are missing in namespace " + namespace + ": get pods/exec, create pods/exec"), missing
    assert f"womm cluster-setup --namespace {namespace}" in doctor.stdout


def test_doctor_reports_a_missing_image_and_an_unreachable_api(cluster, namespace, tmp_path):
    found = subprocess.run(["womm", "doctor", "--namespace", namespace, "--image",
                            f"{cluster.registry}/womm/no-such-image:1"], text=True,
                           capture_output=True, cwd=tmp_path, env=_env(cluster), timeout=120)
    assert found.returncode == 1, found.stdout + found.stderr
    lines = found.stdout.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == [
        "ok", "ok", "ok", "WARNING", "MISSING"], found.stdout
    assert (f"WARNING  pod security: namespace {namespace} enforces no Pod Security level"
            in found.stdout)  # the fixture's namespace has no label
    assert "no-such-image:1 is not in registry" in found.stdout
    # A kubeconfig whose server does not answer: said plainly, nothing else is tried.
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = "https://127.0.0.1:1"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    found = subprocess.run(["womm", "doctor"], text=True, capture_output=True, cwd=tmp_path,
                           env=dict(_env(cluster), KUBECONFIG=str(dead)), timeout=120)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "MISSING  API server: https://127.0.0.1:1 did not answer" in found.stdout
    assert "permissions" not in found.stdout


def _token_kubeconfig(cluster, namespace: str, account: str, tmp_path: Path) -> Path:
    api = cluster.api_client()
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "c", "cluster": server}],
              "users": [{"name": account, "user": {"token": token}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": account,
                                                    "namespace": namespace}}],
              "current-context": "c"}
    path = tmp_path / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shell_command_returns_its_exit_status(cluster, namespace, tmp_path):
    run = subprocess.run(["womm", "shell", "--backend", "kubernetes", "--namespace", namespace,
                          "--image", cluster.base_image, "--kube-cpu", CPU, "--",
                          "sh", "-c", "echo out; pwd; echo err >&2; exit 7"],
                         text=True, capture_output=True, cwd=tmp_path, env=_env(cluster),
                         timeout=200)
    assert run.returncode == 7, run.stderr
    assert run.stdout == f"out\n{tmp_path}\n"
    assert run.stderr.endswith("err\n")
    assert _wait_gone(cluster, namespace, 30) == []


def test_interactive_shell_through_a_pty(cluster, namespace, tmp_path):
    import pexpect

    child = pexpect.spawn("womm", ["shell", "--backend", "kubernetes", "--namespace", namespace,
                                   "--image", cluster.base_image, "--kube-cpu", CPU],
                          cwd=str(tmp_path), env=_env(cluster), timeout=120, encoding="utf-8",
                          dimensions=(30, 100))
    child.expect(r"[$#] ")
    child.sendline("echo hello-$((6*7)); stty size")
    child.expect("hello-42")
    child.expect("30 100")  # the window size reached the remote terminal
    child.sendline("sleep 60")
    time.sleep(1)
    child.sendcontrol("c")  # goes to the remote process, not to womm
    child.expect(r"[$#] ")
    child.sendline("exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert _wait_gone(cluster, namespace, 30) == []


def test_killed_shell_client_is_orphaned_and_finished(cluster, namespace, tmp_path):
    proc = subprocess.Popen(["womm", "shell", "--backend", "kubernetes", "--namespace",
                             namespace, "--image", cluster.base_image, "--kube-cpu", CPU, "--",
                             "sh", "-c", "echo started; sleep 300"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env(cluster))
    _await_output(proc)
    proc.kill()
    proc.wait()
    task_id = _await_orphaned(cluster, namespace, tmp_path, "echo started; sleep 300")
    done = _womm(cluster, namespace, "finish", task_id, "--namespace", namespace, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _wait_gone(cluster, namespace, 30) == []
