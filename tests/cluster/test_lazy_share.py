"""The lazy share (method 1) on the real test cluster.

A lazy share mounts the user's directory in each worker with sshfs in passive mode over an
exec stream whose other end is a local sftp-server. The worker needs FUSE, and this cluster
(containerd 1.6 + runc, cgroup v1) cannot give an unprivileged pod /dev/fuse: even with
CAP_SYS_ADMIN and a hostPath /dev/fuse, the device cgroup allows only containerd's default
devices, so opening it fails with EPERM. These tests record that fact exactly, check that
womm refuses lazy with that explanation (and `--async` with lazy), and show that the tunnel
itself works over exec streams here: sshfs in passive mode on this machine (where FUSE is
available) mounts a share of the in-cluster file server through `womm-fsserver sftp`, with
no keys and nothing listening, and the mount goes away when the stream's client dies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.stream import stream

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SSHFS_PACKAGES = "sshfs,fuse3,libfuse3-3,libglib2.0-0,libffi8"
FUSE_EPERM = "fuse: failed to open /dev/fuse: Operation not permitted"


def _env(cluster) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=cluster.kubeconfig,
                WOMM_CRANE=os.environ.get("WOMM_CRANE") or f"{cluster.bin_dir}/crane")


@pytest.fixture(scope="module")
def sshfs_image(cluster) -> str:
    """The base image + Debian's sshfs and fuse3 (fsserver/build.py's recipe)."""
    run = subprocess.run([sys.executable, str(ROOT / "fsserver" / "build.py"), "--prefix",
                          f"{cluster.registry}/womm/", "--base", cluster.base_image,
                          "--crane", f"{cluster.bin_dir}/crane", "--packages", SSHFS_PACKAGES,
                          "--name", "base-sshfs", "--no-entrypoint"],
                         text=True, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def _exec(cluster, namespace: str, pod: str, command: str) -> str:
    core = client.CoreV1Api(cluster.api_client())
    return stream(core.connect_get_namespaced_pod_exec, pod, namespace,
                  command=["sh", "-c", command], stdin=False, stdout=True, stderr=True,
                  tty=False)


def _wait_ready(cluster, namespace: str, name: str, timeout: float = 120) -> None:
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            return
        time.sleep(1)
    raise AssertionError(f"pod {name} not Ready: {pod.status}")


def test_an_unprivileged_pod_cannot_open_dev_fuse_here(cluster, namespace, sshfs_image):
    """What `--allow-fuse` would add (CAP_SYS_ADMIN + hostPath /dev/fuse, never privileged)
    is not enough on containerd + runc: the device cgroup has no rule for 10:229."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fuse-probe"},
           "spec": {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
                    "containers": [{
                        "name": "worker", "image": sshfs_image, "command": ["sleep", "600"],
                        "securityContext": {"privileged": False,
                                            "capabilities": {"add": ["SYS_ADMIN"]}},
                        "volumeMounts": [{"name": "fuse", "mountPath": "/dev/fuse"}]}],
                    "volumes": [{"name": "fuse", "hostPath": {"path": "/dev/fuse",
                                                              "type": "CharDevice"}}]}}
    client.CoreV1Api(cluster.api_client()).create_namespaced_pod(namespace, pod)
    _wait_ready(cluster, namespace, "fuse-probe")
    out = _exec(cluster, namespace, "fuse-probe",
                "grep CapEff /proc/self/status; ls -l /dev/fuse; "
                "grep -c '^c 10:229' /sys/fs/cgroup/devices/devices.list; "
                "mkdir -p /mnt/p; sshfs -o passive :/ /mnt/p </dev/null; echo rc=$?")
    print(out)
    assert "CapEff:\t00000000a82425fb" in out, out  # CAP_SYS_ADMIN (bit 21) is granted
    assert "crw-rw-rw- 1 root root 10, 229" in out, out  # the device node is there
    assert "\n0\n" in out, out  # no device-cgroup rule lets the container open it
    assert FUSE_EPERM in out and "rc=1" in out, out


def test_lazy_is_refused_with_the_reason_and_async_lazy_too(cluster, namespace, tmp_path):
    base = ["womm", "parallel", "--backend", "kubernetes", "--namespace", namespace,
            "--image", cluster.base_image, "--kube-pods", "1", "--share", "lazy"]
    run = subprocess.run([*base, "--", "true", ":::", "1"], cwd=tmp_path, env=_env(cluster),
                         text=True, capture_output=True, timeout=120)
    assert run.returncode != 0
    assert "lazy shares are not available on Kubernetes" in run.stderr, run.stderr
    assert "/dev/fuse" in run.stderr and "Operation not permitted" in run.stderr, run.stderr
    run = subprocess.run([*base, "--async", "--", "true", ":::", "1"], cwd=tmp_path,
                         env=_env(cluster), text=True, capture_output=True, timeout=120)
    assert run.returncode != 0
    assert "--async cannot be used with a lazy share" in run.stderr, run.stderr
    api = cluster.api_client()
    assert client.AppsV1Api(api).list_namespaced_deployment(namespace).items == []
    assert client.BatchV1Api(api).list_namespaced_job(namespace).items == []


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text()
               .splitlines())


def test_passive_sshfs_over_an_exec_stream_needs_no_keys_and_dies_with_its_client(
        cluster, namespace, tmp_path):
    """The lazy tunnel, in the direction FUSE allows here: this machine mounts a file-server
    share with `sshfs -o passive`, its SFTP peer being `womm-fsserver sftp` at the other end
    of one exec stream (womm's _kexec): no sshd, no keys, nothing listening."""
    setup = subprocess.run(["womm", "cluster-setup", "-n", namespace, "--prefix",
                            f"{cluster.registry}/"], text=True, capture_output=True,
                           env=_env(cluster), cwd=tmp_path, timeout=60)
    assert setup.returncode == 0, setup.stderr
    docs = [d for d in yaml.safe_load_all(setup.stdout)
            if d["kind"] in ("Deployment", "Service")]
    probe = subprocess.run([f"{cluster.bin_dir}/crane", "--insecure", "digest",
                            docs[0]["spec"]["template"]["spec"]["containers"][0]["image"]],
                           capture_output=True, text=True)
    assert probe.returncode == 0, (  # `womm cluster-setup --build` pushed :latest
        "run tests/cluster/test_fsserver.py first (it builds the file server image): "
        + probe.stderr)
    utils.create_from_yaml(cluster.api_client(), yaml_objects=docs, namespace=namespace)
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + 120
    pod = ""
    while not pod and time.monotonic() < deadline:
        for item in core.list_namespaced_pod(
                namespace, label_selector="womm/component=womm-fsserver").items:
            if any(c.type == "Ready" and c.status == "True"
                   for c in item.status.conditions or []):
                pod = item.metadata.name
        time.sleep(1)
    assert pod, "file server not Ready"
    assert _exec(cluster, namespace, pod, "womm-fsserver alloc lazy1; "
                 "echo from-the-cluster > /export/shares/lazy1/remote.txt").strip() \
        == "/export/shares/lazy1"

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    to_sshfs_r, to_sshfs_w = os.pipe()
    to_kexec_r, to_kexec_w = os.pipe()
    env = dict(_env(cluster), WOMM_KEXEC_NAMESPACE=namespace)
    kexec = subprocess.Popen([sys.executable, "-m", "womm_jupyter._kexec", pod,
                              "womm-fsserver", "sftp", "lazy1"], stdin=to_kexec_r,
                             stdout=to_sshfs_w, env=env)
    started = time.monotonic()
    sshfs = subprocess.Popen(["sshfs", "-f", "-o", "passive,cache=no", ":", str(mnt)],
                             stdin=to_sshfs_r, stdout=to_kexec_w, stderr=subprocess.PIPE)
    for fd in (to_sshfs_r, to_sshfs_w, to_kexec_r, to_kexec_w):
        os.close(fd)
    try:
        deadline = time.monotonic() + 30
        while not (mnt / "remote.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"mounted over the exec stream in {time.monotonic() - started:.2f}s")
        assert (mnt / "remote.txt").read_text() == "from-the-cluster\n"
        # Written here, seen there; written there, seen here (no cache: at once).
        (mnt / "local.txt").write_text("from-this-machine\n")
        assert _exec(cluster, namespace, pod, "cat /export/shares/lazy1/local.txt") \
            == "from-this-machine\n"
        _exec(cluster, namespace, pod, "echo later > /export/shares/lazy1/later.txt")
        assert (mnt / "later.txt").read_text() == "later\n"
        data = os.urandom(20_000_000)
        t = time.monotonic()
        (mnt / "big.bin").write_bytes(data)
        written = time.monotonic() - t
        t = time.monotonic()
        assert (mnt / "big.bin").read_bytes() == data
        print(f"20 MB through sshfs over the exec stream: write {written:.2f}s, "
              f"read {time.monotonic() - t:.2f}s")
        # The client of the stream dies: the mount goes with it.
        kexec.kill()
        deadline = time.monotonic() + 30
        while _mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _mounted(mnt)
        assert sshfs.wait(timeout=30) is not None
    finally:
        kexec.kill()
        if _mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        sshfs.kill()
