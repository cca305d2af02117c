"""`womm parallel --async` on the real test cluster, through the installed `womm` CLI: the
leader image is built locally (`womm cluster-setup --build`), the client exits at once, the
run completes without it, `womm status` goes RUNNING -> COMPLETE, `womm finish` brings back
every job's output and leaves nothing of the task behind."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from support.leader import apply_docs as _apply
from support.leader import run_womm as _womm
from support.leader import womm_env as _env

pytestmark = pytest.mark.cluster

CPU = "0.2"

# tests/cluster/test_shares.py's worker image with rsync, loaded by path: the suite runs in
# importlib mode, which cannot import a test module by name.
_spec = importlib.util.spec_from_file_location("womm_test_shares_for_async",
                                               Path(__file__).with_name("test_shares.py"))
assert _spec is not None and _spec.loader is not None
_shares = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shares)
rsync_image = _shares.rsync_image


def _task_objects(cluster, namespace: str, task_id: str) -> list[str]:
    api = cluster.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    apps, coordination = client.AppsV1Api(api), client.CoordinationV1Api(api)
    found = []
    for selector in (f"womm/task={task_id}", f"womm/leader-of={task_id}"):
        for kind, lister in (("configmap", core.list_namespaced_config_map),
                             ("pod", core.list_namespaced_pod),
                             ("job", batch.list_namespaced_job),
                             ("deployment", apps.list_namespaced_deployment),
                             ("lease", coordination.list_namespaced_lease)):
            found += [f"{kind}/{o.metadata.name}" for o in
                      lister(namespace, label_selector=selector).items]
    return found


def _status_of(cluster, namespace: str, task_id: str, cwd: Path) -> str:
    run = _womm(cluster, "status", "--namespace", namespace, cwd=cwd, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()[1:]]
    return next((row[2] for row in rows if row[0] == task_id), "ABSENT")


def test_async_run_outlives_the_client_and_finish_collects_everything(
        cluster, namespace, leader_setup, tmp_path):
    _apply(cluster, [dict(d) for d in yaml.safe_load_all(yaml.safe_dump_all(leader_setup))],
           namespace)
    inputs = "".join(f"{i}\n" for i in range(1, 9))
    argv = ["womm", "parallel", "--async", "--namespace", namespace, "--image",
            cluster.base_image, "--kube-pods", "2", "--kube-cpu", CPU, "--kube-mem", "128Mi",
            "--start-timeout", "120", "--",
            "echo out {}; echo err {} >&2; sleep 2; test {} != 5"]
    started = time.monotonic()
    client_proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                   env=_env(cluster), start_new_session=True)
    out, err = client_proc.communicate(inputs, timeout=120)
    client_seconds = time.monotonic() - started
    # Kill the client's whole session: nothing of it may be needed any more.
    try:
        os.killpg(client_proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert client_proc.returncode == 0, err
    task_id = out.strip()
    assert len(task_id) == 8, out
    assert f"womm logs {task_id}" in err and f"womm finish {task_id}" in err, err
    print(f"client returned in {client_seconds:.1f}s")

    seen = []
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        status = _status_of(cluster, namespace, task_id, tmp_path)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "COMPLETE":
            break
        time.sleep(1)
    assert seen[0] == "RUNNING" and seen[-1] == "COMPLETE" and set(seen) == {"RUNNING",
                                                                          "COMPLETE"}, seen

    logs = _womm(cluster, "logs", task_id, "--namespace", namespace, "-f", cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    for i in range(1, 9):
        assert f"out {i}\n" in logs.stdout and f"err {i}\n" in logs.stdout, logs.stdout

    done = _womm(cluster, "finish", task_id, "--namespace", namespace, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = tmp_path / f"womm-{task_id}"
    assert f"saved in {saved}" in done.stderr, done.stderr
    assert f"configmap/womm-task-{task_id} deleted" in done.stdout, done.stdout
    records = json.loads((saved / "records.json").read_text())
    assert sorted(r["seq"] for r in records) == list(range(1, 9))
    for record in records:
        value = record["inputs"][0]
        assert record["stdout"] == f"out {value}\n" and record["stderr"] == f"err {value}\n"
        assert record["exit_code"] == (1 if value == "5" else 0), record
        assert record["worker"].startswith(f"womm-task-{task_id}-")
        assert (saved / "jobs" / f"{record['seq']}.stdout").read_text() == f"out {value}\n"
    assert json.loads((saved / "result.json").read_text())["exit_code"] == 1  # one job failed
    assert len((saved / "records.csv").read_text().splitlines()) == 9
    assert "out 8" in (saved / "leader.log").read_text()
    assert _task_objects(cluster, namespace, task_id) == []
    assert _status_of(cluster, namespace, task_id, tmp_path) == "ABSENT"


def test_async_refuses_lazy_and_syncback_shares_and_creates_nothing(cluster, namespace,
                                                                   tmp_path):
    (tmp_path / ".womm").mkdir()
    (tmp_path / ".womm" / "config.json").write_text(json.dumps(
        {"version": 1, "project_id": "k3xq7a2m", "image": cluster.base_image,
         "share": "lazy"}))
    run = _womm(cluster, "parallel", "--async", "--namespace", namespace, "--kube-pods", "1",
                "--", "echo {}", ":::", "a", cwd=tmp_path)
    assert run.returncode != 0
    assert "--async cannot be used with a lazy share" in run.stderr, run.stderr
    run = _womm(cluster, "parallel", "--async", "--namespace", namespace, "--kube-pods", "1",
                "--share", "eager-syncback", "--", "echo {}", ":::", "a", cwd=tmp_path)
    assert run.returncode != 0
    assert "--async cannot be used with an eager-syncback share" in run.stderr, run.stderr
    api = cluster.api_client()
    left = client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/managed-by=womm").items
    assert left == [] and client.BatchV1Api(api).list_namespaced_job(namespace).items == []


def test_async_without_a_leader_image_says_how_to_build_one(cluster, namespace, tmp_path):
    run = _womm(cluster, "parallel", "--async", "--namespace", namespace, "--image",
                cluster.base_image, "--kube-pods", "1", "--", "echo {}", ":::", "a",
                cwd=tmp_path)
    assert run.returncode != 0
    assert "womm cluster-setup --build --prefix" in run.stderr, run.stderr


def test_async_with_an_eager_share_the_workers_see_the_project(
        cluster, namespace, leader_setup, rsync_image, tmp_path):
    """The client uploads the project into the leader's pod, then exits; the leader uploads
    it to each worker; the jobs' sha256 of a project file equals the local one."""
    _apply(cluster, [dict(d) for d in yaml.safe_load_all(yaml.safe_dump_all(leader_setup))],
           namespace)
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    payload = os.urandom(300_000)
    (project / "data" / "sample.bin").write_bytes(payload)
    (project / ".gitignore").write_text("scratch/\n")
    (project / "scratch").mkdir()
    (project / "scratch" / "big.tmp").write_bytes(b"x" * 1000)
    expected = hashlib.sha256(payload).hexdigest()
    run = _womm(cluster, "parallel", "--async", "--share", "eager", "--namespace", namespace,
                "--image", rsync_image, "--kube-pods", "2", "--kube-cpu", CPU, "--kube-mem",
                "128Mi", "--start-timeout", "120", "--",
                "sha256sum data/sample.bin; ls scratch 2>&1 | head -1; echo job {}",
                ":::", "1", "2", "3", "4", cwd=project, timeout=400)
    assert run.returncode == 0, run.stderr
    task_id = run.stdout.strip()
    assert "share: the leader holds 2 files" in run.stderr, run.stderr  # .gitignore honoured
    assert f"womm finish {task_id}" in run.stderr

    logs = _womm(cluster, "logs", task_id, "--namespace", namespace, "-f", cwd=project,
                 timeout=420)
    assert logs.returncode == 0, logs.stderr
    assert "womm: the project directory is here" in logs.stdout, logs.stdout
    assert "womm: share: pod womm-task-" in logs.stdout, logs.stdout  # leader -> worker

    done = _womm(cluster, "finish", task_id, "--namespace", namespace, cwd=project)
    assert done.returncode == 0, done.stderr
    records = json.loads((project / f"womm-{task_id}" / "records.json").read_text())
    assert sorted(r["inputs"][0] for r in records) == ["1", "2", "3", "4"]
    for record in records:
        assert record["exit_code"] == 0, record
        lines = record["stdout"].splitlines()
        assert lines[0] == f"{expected}  data/sample.bin", record
        assert "No such file or directory" in lines[1], record  # ignored files stay home
        assert lines[2] == f"job {record['inputs'][0]}"
    assert _task_objects(cluster, namespace, task_id) == []


def test_async_eager_share_with_a_leader_that_cannot_start_fails_fast_and_leaves_nothing(
        cluster, namespace, leader_setup, tmp_path):
    _apply(cluster, [dict(d) for d in yaml.safe_load_all(yaml.safe_dump_all(leader_setup))],
           namespace)
    (tmp_path / "input.txt").write_text("data\n")
    run = _womm(cluster, "parallel", "--async", "--share", "eager", "--namespace", namespace,
                "--image", cluster.base_image, "--kube-pods", "1", "--leader-image",
                f"{cluster.registry}/womm/no-such-leader:missing", "--", "cat {}", ":::",
                "input.txt", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "did not run (pod womm-task-" in run.stderr, run.stderr
    assert "ErrImagePull" in run.stderr or "ImagePullBackOff" in run.stderr, run.stderr
    assert "the task was deleted" in run.stderr
    assert run.stdout == ""
    api = cluster.api_client()
    left = client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/managed-by=womm,womm/role=root").items
    assert left == []
    jobs = [job for job in client.BatchV1Api(api).list_namespaced_job(namespace).items
            if job.metadata.deletion_timestamp is None]
    assert jobs == []
