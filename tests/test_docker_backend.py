"""Docker workers: what they are, and what happens when they (or womm) die.

Jobs print their mount namespace: a job that ran in a worker container prints another one
than this machine's, so "nothing ran on the local machine" is checked line by line.
"""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = pytest.mark.docker

JOB = "sleep 0.3; echo {} $(readlink /proc/self/ns/mnt)"


def _start(backend, tmp_path, kube_pods, parallel_args, *extra):
    return backend.popen(["parallel", "--kube-pods", str(kube_pods), *backend.backend_args,
                          *extra, "--", *parallel_args], cwd=tmp_path)


def _running(client, tools, tmp_path, count):
    found = [c for c in tools.containers_under(client, tmp_path) if c.status == "running"]
    return found if len(found) >= count else None


def test_workers_are_labelled_limited_and_mounted(docker_womm, docker_client, womm, tools,
                                                  tmp_path):
    # Jobs wait for a file only this test creates, so the workers can be looked at live.
    proc = _start(docker_womm, tmp_path, 2,
                  ["-k", "while [ ! -e go ]; do sleep 0.05; done; pwd; echo $WOMM_WORKER {}",
                   ":::", "1", "2"],
                  "--kube-cpu", "0.5", "--kube-mem", "256Mi")
    try:
        workers = tools.wait_for(lambda: _running(docker_client, tools, tmp_path, 2), 60,
                                 "2 running worker containers")
        inspected = {c.name: c.inspect() for c in workers}
        status = womm("status", cwd=tmp_path)
    finally:
        (tmp_path / "go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    task = workers[0].labels["womm/task"]
    assert sorted(c.name for c in workers) == [f"womm-task-{task}-0", f"womm-task-{task}-1"]
    for container in workers:
        labels = container.labels
        assert labels["app.kubernetes.io/managed-by"] == "womm"
        assert labels["womm/task"] == task
        assert labels["womm/owner"]
        assert "WOMM_WORKER" in labels["womm/command"]
        attrs = inspected[container.name]
        assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert attrs["HostConfig"]["Memory"] == 256 * 2**20
        mounts = {m["Destination"]: m["Source"] for m in attrs["Mounts"]}
        assert mounts[str(tmp_path)] == str(tmp_path)
    # While it ran, `womm status` showed it: ID AGE STATUS CPU MEM HEALTH PWD COMMAND.
    row = next(line.split() for line in status.out.splitlines() if line.startswith(task))
    assert row[2:7] == ["RUNNING", "0.5", "256Mi", "2/2", str(tmp_path)], status.out
    lines = out.decode().splitlines()
    # Jobs ran in the project directory, at the same path, on the named workers.
    assert lines[0::2] == [str(tmp_path)] * 2
    assert {line.split()[0] for line in lines[1::2]} <= {c.name for c in workers}
    assert [line.split()[1] for line in lines[1::2]] == ["1", "2"]
    assert f"containers/womm-task-{task} created" in err.decode()
    assert f'containers "womm-task-{task}" deleted' in err.decode()


def test_missing_image_is_a_clear_error(womm, docker_client, tools, tmp_path):
    result = womm("parallel", "--kube-pods", "2", "--backend", "docker", "--image",
                  "womm-no-such-image:never", "--", "touch ran-{}", ":::", "a", cwd=tmp_path)
    assert result.returncode != 0
    assert result.err.splitlines()[-1].startswith("womm: error: image womm-no-such-image:never")
    assert "Traceback" not in result.err
    assert tools.containers_under(docker_client, tmp_path) == []
    assert not list(tmp_path.glob("ran-*"))


def test_killed_worker_jobs_rerun_elsewhere(docker_womm, docker_client, tools, tmp_path,
                                            host_mnt_ns):
    inputs = [str(i) for i in range(1, 31)]
    proc = _start(docker_womm, tmp_path, 3,
                  ["--retries", "3", "--joblog", "jobs.log", JOB, ":::", *inputs])
    out = tools.LineReader(proc.stdout)
    err = tools.LineReader(proc.stderr)
    tools.wait_for(lambda: len(out.lines) >= 5, 60, "5 finished jobs")
    victim = _running(docker_client, tools, tmp_path, 3)[0]
    victim.kill()
    assert proc.wait(timeout=120) == 0, b"".join(err.join()).decode()
    lines = [line.decode().split() for line in out.join()]
    stderr = b"".join(err.join()).decode()
    # Every input printed exactly once, and every job ran in a container.
    assert sorted(line[0] for line in lines) == sorted(inputs), lines
    assert all(line[1] != host_mnt_ns for line in lines), lines
    assert f"worker {victim.name} stopped" in stderr
    # One successful joblog row per input (failed attempts are not logged).
    rows = [row.split("\t") for row in (tmp_path / "jobs.log").read_text().splitlines()[1:]]
    assert [row[6] for row in rows] == ["0"] * 30
    assert sorted(row[8].split("echo ")[1].split()[0] for row in rows) == sorted(inputs)


def test_all_workers_killed_fails_clearly(docker_womm, docker_client, tools, tmp_path,
                                          host_mnt_ns):
    inputs = [str(i) for i in range(1, 31)]
    proc = _start(docker_womm, tmp_path, 3, [JOB, ":::", *inputs])
    out = tools.LineReader(proc.stdout)
    err = tools.LineReader(proc.stderr)
    tools.wait_for(lambda: len(out.lines) >= 3, 60, "3 finished jobs")
    for container in _running(docker_client, tools, tmp_path, 3):
        container.kill()
    code = proc.wait(timeout=120)
    stderr = b"".join(err.join()).decode()
    lines = [line.decode().split() for line in out.join()]
    assert code not in (0, 2), stderr
    assert "womm: error: all 3 workers stopped" in stderr
    assert "no job ran on this machine" in stderr
    assert "Traceback" not in stderr
    assert 3 <= len(lines) < 30
    assert all(line[1] != host_mnt_ns for line in lines), lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_every_container_quickly(docker_womm, docker_client, tools,
                                                   tmp_path, sig):
    proc = _start(docker_womm, tmp_path, 2,
                  ["touch started-{}; sleep 30; touch finished-{}", ":::", "1", "2", "3"])
    tools.wait_for(lambda: list(tmp_path.glob("started-*")), 60, "a job to start")
    assert tools.containers_under(docker_client, tmp_path)
    proc.send_signal(sig)
    interrupted = time.monotonic()
    tools.wait_for(lambda: not tools.containers_under(docker_client, tmp_path), 10,
                   "the task's containers to be deleted after SIGINT", interval=0.2)
    assert time.monotonic() - interrupted < 10
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err.decode()  # as after Ctrl-C, for SIGTERM too
    assert "cancelled" in err.decode()
    assert not list(tmp_path.glob("finished-*"))


def test_local_procs_add_local_slots_only_when_asked(docker_womm, tools, tmp_path,
                                                     host_mnt_ns):
    args = ["parallel", "--kube-pods", "1", "--local-procs", "1", *docker_womm.backend_args,
            "--", "sleep 0.5; echo {} $(readlink /proc/self/ns/mnt)", ":::", *"abcdef"]
    result = docker_womm(*args, cwd=tmp_path)
    assert result.returncode == 0, result.explain()
    lines = [line.split() for line in result.out.splitlines()]
    assert sorted(line[0] for line in lines) == list("abcdef")
    namespaces = {line[1] for line in lines}
    # Both slots took jobs at once: one on the worker container, one on this machine.
    assert host_mnt_ns in namespaces and len(namespaces) == 2, lines


def test_sigkill_leaves_an_orphan_that_finish_removes(docker_womm, docker_client, womm,
                                                      tools, tmp_path):
    proc = _start(docker_womm, tmp_path, 2,
                  ["touch started-{}; sleep 30; touch finished-{}", ":::", "1", "2", "3"])
    try:
        tools.wait_for(lambda: list(tmp_path.glob("started-*")), 60, "a job to start")
        task = tools.containers_under(docker_client, tmp_path)[0].labels["womm/task"]
    finally:
        proc.kill()
        proc.wait()  # reaped: the coordinator is gone
        proc.stdout.close()
        proc.stderr.close()
    assert tools.containers_under(docker_client, tmp_path), "SIGKILL cannot clean up"
    status = womm("status", cwd=tmp_path)
    assert status.returncode == 0, status.explain()
    header, *rows = status.out.splitlines()
    assert header.split() == ["ID", "AGE", "STATUS", "CPU", "MEM", "HEALTH", "PWD", "COMMAND"]
    row = next((r.split() for r in rows if r.split()[0] == task), None)
    assert row is not None, status.out
    assert row[2] == "ORPHANED", status.out
    assert row[6] == str(tmp_path)

    finish = womm("finish", task, cwd=tmp_path)
    assert finish.returncode == 0, finish.explain()
    assert f"womm-task-{task}" in finish.out
    assert docker_client.containers.list(all=True, filters={"label": f"womm/task={task}"}) == []
    after = womm("status", cwd=tmp_path)
    assert task not in after.out
    # GNU parallel and its job clients died with their coordinator: nothing of the task
    # keeps running on this machine either.
    tools.wait_for(lambda: not _local_processes_of(task), 10, "the task's local processes")
    assert not list(tmp_path.glob("finished-*"))


def _local_processes_of(task):
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"/{task}/".encode() in cmdline or f"womm-task-{task}".encode() in cmdline:
            found.append(int(proc.name))
    return found
