"""A kubeconfig whose API server does not answer (https://127.0.0.1:1: nothing listens there):
each command that talks to Kubernetes ends in one clear line naming the server and what to
do, exit status 1, no traceback, nothing left behind. No cluster is needed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import clean_env

SERVER = "https://127.0.0.1:1"
ADVICE = "check the kubeconfig's server and context (KUBECONFIG, --context) or run `womm doctor`"


@pytest.fixture
def dead(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a user whose kubeconfig points at a server that refuses."""
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "dead", "cluster": {"server": SERVER,
                                                  "insecure-skip-tls-verify": True}}],
        "users": [{"name": "dead", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "dead",
                                                  "namespace": "nowhere"}}],
        "current-context": "dead",
    }
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    # womm's state (task directories) in a runtime directory of this test's: a short path
    # (sockets live there; a long XDG_RUNTIME_DIR is ignored for /tmp/womm-UID, shared with
    # every other womm of this user), private as womm requires.
    state = Path(tempfile.mkdtemp(prefix="womm-t-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(state, ignore_errors=True))
    return clean_env(KUBECONFIG=str(kubeconfig), XDG_RUNTIME_DIR=str(state))


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("womm: error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0], stderr  # the last word
    return errors[0]


def test_status_names_the_server_and_what_to_do(womm, dead, tmp_path):
    result = womm("status", cwd=tmp_path, env=dead, timeout=120)
    assert result.returncode == 1, result.explain()
    line = _one_error_line(result.err)
    assert line.startswith(f"womm: error: cannot reach the Kubernetes API server {SERVER} to "
                           "list "), line
    assert "Connection refused" in line and ADVICE in line, line


def test_parallel_fails_cleanly_and_leaves_no_task_directory(womm, dead, tmp_path):
    result = womm("parallel", "--kube-pods", "1", "--backend", "kubernetes", "--image", "X",
                  "--", "echo", "{}", ":::", "a", cwd=tmp_path, env=dead, timeout=120)
    assert result.returncode == 1, result.explain()
    line = _one_error_line(result.err)
    assert f"cannot reach the Kubernetes API server {SERVER}" in line and ADVICE in line, line
    assert "deleted" not in result.err  # nothing was created, so nothing is said deleted
    assert result.out == ""
    state = Path(dead["XDG_RUNTIME_DIR"]) / "womm"
    assert not state.exists() or list(state.iterdir()) == [], "a task directory was left behind"


def test_experiment_run_fails_at_once_instead_of_hanging(womm, dead, tmp_path):
    (tmp_path / "tasks.txt").write_text("echo one\necho two\n")
    # The timeout only guards the test run; before the fix this hung forever.
    result = womm("experiment", "run", "-i", "X", "-f", "tasks.txt", "--log-dir", "logs",
                  cwd=tmp_path, env=dead, timeout=120)
    assert result.returncode == 1, result.explain()
    line = _one_error_line(result.err)
    assert f"cannot reach the Kubernetes API server {SERVER}" in line and ADVICE in line, line
    assert list((tmp_path / "logs").iterdir()) == []


def test_experiment_run_from_an_open_pipe_ends_too(womm, dead, tmp_path):
    # Task lines on a pipe that stays open: the experiment must still end on the error
    # rather than wait for more input.
    proc = subprocess.Popen(womm.argv("experiment", "run", "-i", "X", "--log-dir", "logs"),
                            cwd=tmp_path, env=dead, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"echo one\n")
        proc.stdin.flush()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr.decode()
    line = _one_error_line(stderr.decode())
    assert f"cannot reach the Kubernetes API server {SERVER}" in line, line


def test_doctor_says_the_server_does_not_answer_and_stops_there(womm, dead, tmp_path):
    result = womm("doctor", cwd=tmp_path, env=dead, timeout=120)
    assert result.returncode == 1, result.explain()
    assert "Traceback" not in result.err, result.explain()
    lines = result.out.splitlines()
    assert lines[0] == f"ok       kubeconfig: API server {SERVER}, namespace nowhere", lines
    assert lines[1].startswith(f"MISSING  API server: {SERVER} did not answer: "), lines
    assert "Connection refused" in lines[1], lines
    assert "permissions" not in result.out
