"""Shares on the real test cluster, through `womm parallel` as a user runs it: eager,
eager-syncback, none, lazy refused without --privileged-fuse (test_lazy_share.py runs it
with); projects isolated; an unchanged tree re-syncs for free.

The worker image is the cluster's base image plus Debian's rsync (an eager share needs rsync
in the image; `womm setup` checks for it), built here with crane from the .deb files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from womm_jupyter.config import ProjectConfig, save_project
from womm_jupyter.share import eager as share

pytestmark = pytest.mark.cluster

CPU = "0.2"  # the node has 2 CPUs; several pods must fit
DEBS = Path("/var/cache/womm-cluster/images/rsync-debs")


@pytest.fixture(scope="module")
def rsync_image(cluster) -> str:
    """``REGISTRY/womm/base-rsync:bookworm``: the base image + rsync and libpopt0."""
    DEBS.mkdir(parents=True, exist_ok=True)
    if len(list(DEBS.glob("*.deb"))) < 2:
        subprocess.run(["apt-get", "download", "rsync", "libpopt0"], cwd=DEBS, check=True,
                       capture_output=True)
    root = DEBS / "root"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir()
    for deb in sorted(DEBS.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    layer = DEBS / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        # Only usr/ and etc/: a top-level lib/ directory would hide the image's /lib symlink.
        for top in ("usr", "etc"):
            tar.add(root / top, arcname=top,
                    filter=lambda info: (setattr(info, "uid", 0), setattr(info, "gid", 0),
                                         info)[-1])
    image = f"{cluster.registry}/womm/base-rsync:bookworm"
    subprocess.run([f"{cluster.bin_dir}/crane", "--insecure", "append", "-b",
                    cluster.base_image, "-f", str(layer), "-t", image], check=True,
                   capture_output=True)
    return image


def _env(cluster) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=cluster.kubeconfig)


def _parallel(cluster, namespace: str, image: str, *womm_opts: str) -> list[str]:
    return ["womm", "parallel", "--backend", "kubernetes", "--namespace", namespace,
            "--image", image, "--kube-cpu", CPU, "--kube-mem", "128Mi",
            "--start-timeout", "120", *womm_opts, "--"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "data.bin").write_bytes(os.urandom(300_000))
    (path / "sub").mkdir()
    (path / "sub" / "deep file.txt").write_text("deep\n")
    (path / ".gitignore").write_text("ignored.txt\n")
    (path / "ignored.txt").write_text("git ignores me\n")
    (path / ".wommignore").write_text("private/\n")
    (path / "private").mkdir()
    (path / "private" / "secret.txt").write_text("not for the cluster\n")
    return path


def test_eager_share_from_project_config(cluster, namespace, rsync_image, tmp_path):
    project = _project(tmp_path / "proj")
    save_project(project, ProjectConfig(project_id="p1", image="", share="eager"))
    cmd = ("sha256sum {}; for f in ignored.txt private/secret.txt; do "
           "test -e $f && echo LEAKED $f; done; true")
    run = subprocess.run([*_parallel(cluster, namespace, rsync_image, "--kube-pods", "2"),
                          "-k", cmd, ":::", "data.bin", "sub/deep file.txt"],
                         cwd=project, env=_env(cluster), text=True, capture_output=True,
                         timeout=400)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"{_sha(project / 'data.bin')}  data.bin",
                                       f"{_sha(project / 'sub/deep file.txt')}  sub/deep file.txt"]
    # Each pod reports what it received: 4 files (data, deep file, 2 ignore files), 300 kB.
    reports = [line for line in run.stderr.splitlines() if "womm: share: pod " in line]
    assert len(reports) >= 1, run.stderr
    assert all(": 4 files, 300.0 kB; sent 4 files" in line for line in reports), reports


def test_share_none_overrides_the_project_config(cluster, namespace, rsync_image, tmp_path):
    project = _project(tmp_path / "proj")
    save_project(project, ProjectConfig(project_id="p2", image="", share="eager"))
    run = subprocess.run([*_parallel(cluster, namespace, rsync_image, "--kube-pods", "1",
                                     "--share", "none"),
                          "echo job {}: $(ls -A | wc -l) entries; "
                          "test -e data.bin || echo no data.bin",
                          ":::", "1"],
                         cwd=project, env=_env(cluster), text=True, capture_output=True,
                         timeout=400)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "job 1: 0 entries\nno data.bin\n"
    assert "share" not in run.stderr


def test_lazy_share_is_refused_on_kubernetes_before_anything_is_created(
        cluster, namespace, rsync_image, tmp_path):
    project = _project(tmp_path / "proj")
    run = subprocess.run([*_parallel(cluster, namespace, rsync_image, "--kube-pods", "1",
                                     "--share", "lazy"), "true", ":::", "1"],
                         cwd=project, env=_env(cluster), text=True, capture_output=True,
                         timeout=120)
    assert run.returncode != 0
    assert "a lazy share on Kubernetes needs --privileged-fuse" in run.stderr
    assert "--share eager" in run.stderr
    apps = client.AppsV1Api(cluster.api_client())
    assert apps.list_namespaced_deployment(namespace).items == []


def test_eager_share_without_rsync_in_the_image_is_a_clear_error(cluster, namespace, tmp_path):
    project = _project(tmp_path / "proj")
    run = subprocess.run([*_parallel(cluster, namespace, cluster.base_image, "--kube-pods", "1",
                                     "--share", "eager"), "true", ":::", "1"],
                         cwd=project, env=_env(cluster), text=True, capture_output=True,
                         timeout=400)
    assert run.returncode != 0
    assert "the workers cannot start" in run.stderr
    assert "The worker image has no rsync" in run.stderr, run.stderr


def test_syncback_brings_outputs_and_never_loses_local_work(cluster, namespace, rsync_image,
                                                           tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    for name, text in (("keep.txt", "keep\n"), ("edit.txt", "orig\n"),
                       ("victim.txt", "victim\n"), ("changed.txt", "old\n")):
        (project / name).write_text(text)
    cmd = ("echo remote > edit.txt; echo new > changed.txt; rm -f victim.txt; mkdir -p out; "
           "echo result {} > out/{}.txt; sleep 8")
    proc = subprocess.Popen([*_parallel(cluster, namespace, rsync_image, "--kube-pods", "1",
                                        "--procs-per-pod", "2", "--share", "3"),
                             cmd, ":::", "a", "b"],
                            cwd=project, env=_env(cluster), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines: list[str] = []
    uploaded = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "womm: share: pod " in line:
                uploaded.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert uploaded.wait(300), "".join(lines)
    (project / "edit.txt").write_text("local edit\n")  # during the run, after the upload
    proc.wait(timeout=300)
    reader.join(10)
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    assert (project / "out" / "a.txt").read_text() == "result a\n"
    assert (project / "out" / "b.txt").read_text() == "result b\n"
    assert (project / "changed.txt").read_text() == "new\n"  # changed there only: taken
    assert (project / "edit.txt").read_text() == "local edit\n"  # changed on both: yours stays
    assert (project / "edit.txt.womm-remote").read_text() == "remote\n"  # and theirs beside it
    assert "conflict: edit.txt changed here and on pod" in stderr
    assert (project / "victim.txt").read_text() == "victim\n"  # deleted there: kept here
    assert (project / "keep.txt").read_text() == "keep\n"
    assert "3 files new or changed here, 1 conflicts" in stderr  # out/a, out/b, changed.txt
    assert not list((project / ".womm").glob("syncback-*"))


def test_two_projects_never_see_each_others_files(cluster, namespace, rsync_image, tmp_path):
    runs = {}
    for name in ("alpha", "beta"):
        project = tmp_path / name
        project.mkdir()
        (project / f"{name}.txt").write_text(f"{name}\n")
        other = tmp_path / ("beta" if name == "alpha" else "alpha")
        cmd = f"ls -A; test -e {other} && echo SEES {other}; find / -name '*.txt' -path " \
              f"'{tmp_path}/*' 2>/dev/null; sleep 3"
        runs[name] = subprocess.Popen([*_parallel(cluster, namespace, rsync_image,
                                                  "--kube-pods", "1", "--share", "eager"),
                                       cmd, ":::", "1"],
                                      cwd=project, env=_env(cluster), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err
        assert out.splitlines() == [f"{name}.txt", f"{tmp_path}/{name}/{name}.txt"], out


def test_unchanged_tree_resyncs_without_file_data(cluster, namespace, rsync_image, tmp_path,
                                                  monkeypatch):
    """The upload a pod gets (share.push, as `womm parallel` calls it), twice into one pod:
    the second run of an unchanged 10,000-file tree sends no file data (rsync --stats)."""
    project = tmp_path / "tree"
    for d in range(100):
        sub = project / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f:03}.txt").write_text(f"{d} {f}\n" * 10)
    core = client.CoreV1Api(cluster.api_client())
    pod = f"resync-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
        "spec": {"containers": [{"name": "w", "image": rsync_image, "command": ["sleep", "600"],
                                 "workingDir": str(project),
                                 "resources": {"limits": {"cpu": CPU, "memory": "128Mi"}}}],
                 "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False}})
    deadline = time.monotonic() + 180
    while core.read_namespaced_pod(pod, namespace).status.phase != "Running":
        assert time.monotonic() < deadline, "the pod did not start"
        time.sleep(0.5)
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    first = share.push(project, pod, namespace=namespace)
    assert (first.files, first.transferred_files) == (10_000, 10_000)
    assert first.transferred_bytes == first.total_bytes > 0
    second = share.push(project, pod, namespace=namespace)
    assert second.files == 10_000 and second.total_bytes == first.total_bytes
    assert second.transferred_files == 0 and second.transferred_bytes == 0
    assert "Total transferred file size: 0 bytes" in second.stats
    print(f"10,000 files: first upload {first.seconds:.1f} s, unchanged re-sync "
          f"{second.seconds:.1f} s")
