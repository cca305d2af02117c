"""A user with no permissions in the namespace (a ServiceAccount bound to nothing, through a
kubeconfig holding its token): each command that talks to Kubernetes ends in one clear line
naming what was refused and who can grant it, exit status 1, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from kubernetes import client

pytestmark = pytest.mark.cluster

ACCOUNT = "nobody"


@pytest.fixture
def nobody(cluster, namespace, tmp_path, request) -> dict[str, str]:
    """The environment of a user whose token may do nothing in ``namespace``."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": ACCOUNT}})
    token = core.create_namespaced_service_account_token(
        ACCOUNT, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
              "users": [{"name": ACCOUNT, "user": {"token": token}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": ACCOUNT,
                                                    "namespace": namespace}}],
              "current-context": "c"}
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    # womm's state (task directories) in a runtime directory of this test's: a short path
    # (sockets live there; a long XDG_RUNTIME_DIR is ignored for /tmp/womm-UID, shared with
    # every other womm of this user), private as womm requires.
    state = Path(tempfile.mkdtemp(prefix="womm-t-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(state, ignore_errors=True))
    return dict(os.environ, KUBECONFIG=str(kubeconfig), XDG_RUNTIME_DIR=str(state))


def _womm(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["womm", *args], text=True, capture_output=True, cwd=cwd, env=env,
                          timeout=300)


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("womm: error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0], stderr
    return errors[0]


def _says_forbidden(line: str, namespace: str, missing: str) -> None:
    assert f"in namespace {namespace} (Forbidden): no permission to {missing};" in line, line
    assert f"`womm cluster-setup --namespace {namespace}`" in line, line
    assert "`womm doctor`" in line, line


def test_status_names_the_refused_verb_and_the_fix(nobody, namespace, tmp_path):
    result = _womm(nobody, tmp_path, "status")
    assert result.returncode == 1, result.stdout + result.stderr
    line = _one_error_line(result.stderr)
    assert line.startswith("womm: error: Kubernetes refused to let you list "), line
    _says_forbidden(line, namespace, "list deployments.apps")


def test_parallel_names_the_refused_verb_and_leaves_nothing(nobody, namespace, tmp_path,
                                                            cluster):
    result = _womm(nobody, tmp_path, "parallel", "--kube-pods", "1", "--backend",
                   "kubernetes", "--image", cluster.base_image, "--", "echo", "{}", ":::", "a")
    assert result.returncode == 1, result.stdout + result.stderr
    line = _one_error_line(result.stderr)
    _says_forbidden(line, namespace, "create deployments.apps")
    assert "deleted" not in result.stderr
    state = Path(nobody["XDG_RUNTIME_DIR"]) / "womm"
    assert not state.exists() or list(state.iterdir()) == [], "a task directory was left behind"


def test_experiment_run_names_the_refused_verb(nobody, namespace, tmp_path, cluster):
    (tmp_path / "tasks.txt").write_text("echo one\n")
    result = _womm(nobody, tmp_path, "experiment", "run", "-i", cluster.base_image, "-f",
                   "tasks.txt", "--log-dir", "logs")
    assert result.returncode == 1, result.stdout + result.stderr
    line = _one_error_line(result.stderr)
    _says_forbidden(line, namespace, "create configmaps")


def test_doctor_lists_every_missing_permission(nobody, namespace, tmp_path, cluster):
    result = _womm(nobody, tmp_path, "doctor", "--image", cluster.base_image)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    missing = next(line for line in result.stdout.splitlines() if "permissions" in line)
    assert missing.startswith("MISSING") and f"missing in namespace {namespace}" in missing
    assert "create pods" in missing and "create pods/exec" in missing, missing
    assert f"womm cluster-setup --namespace {namespace}" in result.stdout
