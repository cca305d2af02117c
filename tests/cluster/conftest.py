"""Fixtures for tests against the real single-node cluster of tests/cluster.

``cluster`` (session): reuses a running, healthy cluster or starts one with
``up.sh`` (which builds the binaries first when they are not cached).
``namespace`` (function): a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.leader import run_womm
from support.namespaces import delete_namespace

HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cluster: needs the real single-node Kubernetes cluster of tests/cluster (root)",
    )


def _env_value(name: str) -> str:
    """A value of env.sh, after the caller's environment overrides."""
    out = subprocess.run(
        ["bash", "-c", f'. "{HERE}/env.sh" >/dev/null && printf %s "${name}"'],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@dataclasses.dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    registry: str  # host:port of the local registry (plain HTTP)
    base_image: str  # Debian minbase + /usr/local/bin/httpserver, in the registry
    bin_dir: str  # kubectl, crane, ... of this cluster's build
    node_name: str
    node_ip: str

    def api_client(self, **kwargs):
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig, **kwargs)


def _healthy(kubeconfig: str, node_name: str, registry: str) -> bool:
    if not os.path.exists(kubeconfig):
        return False
    try:
        import urllib.request

        from kubernetes import client, config

        urllib.request.urlopen(f"http://{registry}/v2/", timeout=3).read()
        api = config.new_client_from_config(config_file=kubeconfig)
        core = client.CoreV1Api(api)
        node = core.read_node(node_name, _request_timeout=5)
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        if not ready or ready[0].status != "True":
            return False
        core.read_namespaced_service_account("default", "default", _request_timeout=5)
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def cluster(request) -> Cluster:
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root (they start kubelet, containerd, ...)")
    kubeconfig = _env_value("KUBECONFIG_ADMIN")
    c = Cluster(
        kubeconfig=kubeconfig,
        registry=_env_value("REGISTRY"),
        base_image=_env_value("BASE_IMAGE"),
        bin_dir=_env_value("BIN"),
        node_name=_env_value("NODE_NAME"),
        node_ip=_env_value("NODE_IP"),
    )
    # Shared lock for the whole session: down.sh (exclusive) waits for us.
    # Starting the cluster happens under the exclusive lock, so that two
    # sessions never run up.sh at once.
    lock = open(_env_value("LOCK"), "a")
    request.addfinalizer(lock.close)
    fcntl.flock(lock, fcntl.LOCK_SH)
    if not _healthy(c.kubeconfig, c.node_name, c.registry):
        fcntl.flock(lock, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _healthy(c.kubeconfig, c.node_name, c.registry):
            t = time.monotonic()
            env = dict(os.environ, WOMM_CLUSTER_LOCKED="1")
            proc = subprocess.run([str(HERE / "up.sh")], stdout=subprocess.PIPE, text=True, env=env)
            if proc.returncode != 0:
                pytest.fail(f"tests/cluster/up.sh failed with exit code {proc.returncode}")
            assert proc.stdout.strip().splitlines()[-1] == c.kubeconfig
            print(f"cluster started in {time.monotonic() - t:.1f}s")
        fcntl.flock(lock, fcntl.LOCK_SH)
    return c


@pytest.fixture
def namespace(cluster):
    from kubernetes import client

    api = cluster.api_client()
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:12]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # The ServiceAccount controller creates "default" asynchronously; pods need it.
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield name
    finally:
        delete_namespace(core, name)


@pytest.fixture
def ip(ip: Any, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The IPython shell of tests/conftest.py, with the test cluster's kubeconfig."""
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    return ip


@pytest.fixture(scope="session")
def leader_setup(cluster, tmp_path_factory) -> list[dict]:
    """`womm cluster-setup --build` once per session (the root filesystem and the
    dependencies are cached on disk, so a rebuild only pushes womm's own layer)."""
    started = time.monotonic()
    run = run_womm(cluster, "cluster-setup", "--build", "--prefix", f"{cluster.registry}/",
                cwd=tmp_path_factory.mktemp("leader"), timeout=900)
    assert run.returncode == 0, run.stderr
    print(f"leader image built and pushed in {time.monotonic() - started:.1f}s")
    docs = list(yaml.safe_load_all(run.stdout))
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "Role", "RoleBinding",
                                         "Deployment", "Service", "NetworkPolicy", "ConfigMap"]
    assert docs[-1]["data"]["image"].startswith(f"{cluster.registry}/womm-leader:")
    return docs
