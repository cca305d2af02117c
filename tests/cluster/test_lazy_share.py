"""The lazy share (method 1) on the real test cluster, through `womm setup` + `womm parallel`.

A lazy share mounts the user's directory in each worker pod with sshfs in passive mode over an
exec stream whose other end is a local sftp-server (womm_jupyter/share/lazy.py). The
worker needs FUSE: on this cluster (containerd 1.6 + runc, cgroup v1) an unprivileged pod
cannot open /dev/fuse, even with CAP_SYS_ADMIN and a hostPath /dev/fuse (the device cgroup
allows only containerd's default devices), so the user opts into privileged worker pods with
`--privileged-fuse`. These tests record that fact, run lazy shares end to end (read, new local
files seen by later jobs with the latency measured, files written by jobs appear here), check
the cleanup on Ctrl-C and when the coordinator is killed, and that lazy without the opt-in (and
with `--async`) is refused with the reason. The last test shows the same tunnel into the
in-cluster file server (sshfs on this machine, `womm-fsserver sftp` in the pod).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
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
CPU = "0.2"  # the node has 2 CPUs, shared with other tests


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
    """The least a pod could be given for FUSE (CAP_SYS_ADMIN + hostPath /dev/fuse, not
    privileged) is not enough on containerd + runc: the device cgroup has no rule for 10:229.
    Hence `--privileged-fuse` makes the worker pods privileged."""
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


def test_lazy_without_the_opt_in_is_refused_with_the_reason_and_async_lazy_too(
        cluster, namespace, tmp_path):
    base = ["womm", "parallel", "--backend", "kubernetes", "--namespace", namespace,
            "--image", cluster.base_image, "--kube-pods", "1", "--share", "lazy"]
    run = subprocess.run([*base, "--", "true", ":::", "1"], cwd=tmp_path, env=_env(cluster),
                         text=True, capture_output=True, timeout=120)
    print(run.stderr)
    assert run.returncode != 0
    assert "womm: error: a lazy share on Kubernetes needs --privileged-fuse" in run.stderr
    assert "/dev/fuse" in run.stderr and "Operation not permitted" in run.stderr, run.stderr
    assert "runs the worker pods privileged (every capability and device of the node)" \
        in run.stderr, run.stderr
    assert "--share eager" in run.stderr, run.stderr
    run = subprocess.run([*base, "--privileged-fuse", "--async", "--", "true", ":::", "1"],
                         cwd=tmp_path, env=_env(cluster), text=True, capture_output=True,
                         timeout=120)
    assert run.returncode != 0
    assert "--async cannot be used with a lazy share" in run.stderr, run.stderr
    api = cluster.api_client()
    assert client.AppsV1Api(api).list_namespaced_deployment(namespace).items == []
    assert client.BatchV1Api(api).list_namespaced_job(namespace).items == []


def test_lazy_with_an_image_without_sshfs_is_a_clear_error(cluster, namespace, tmp_path):
    run = subprocess.run(["womm", "parallel", "--backend", "kubernetes", "--namespace",
                          namespace, "--image", cluster.base_image, "--kube-pods", "1",
                          "--kube-cpu", CPU, "--kube-mem", "128Mi", "--start-timeout", "180",
                          "--share", "lazy", "--privileged-fuse", "--", "true", ":::", "1"],
                         cwd=tmp_path, env=_env(cluster), text=True, capture_output=True,
                         timeout=400)
    print(run.stderr)
    assert run.returncode == 1
    assert "womm: error: the workers cannot start: pod " in run.stderr
    assert f"mounting {tmp_path} in pod " in run.stderr
    assert "with sshfs failed: the worker image has no sshfs. Add it in `womm setup`" \
        in run.stderr
    assert "sshfs: not found" in run.stderr and "ended (exit status 127)" in run.stderr
    assert _sftp_servers(tmp_path) == []


def test_lazy_in_a_namespace_that_forbids_privileged_pods_says_so(cluster, namespace,
                                                                 tmp_path):
    core = client.CoreV1Api(cluster.api_client())
    core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "baseline"}}})
    run = subprocess.run(["womm", "parallel", "--backend", "kubernetes", "--namespace",
                          namespace, "--image", cluster.base_image, "--kube-pods", "1",
                          "--kube-cpu", CPU, "--share", "lazy", "--privileged-fuse", "--",
                          "true", ":::", "1"], cwd=tmp_path, env=_env(cluster), text=True,
                         capture_output=True, timeout=300)
    print(run.stderr)
    assert run.returncode == 1
    assert 'violates PodSecurity "baseline:latest": privileged' in run.stderr
    assert "--privileged-fuse needs privileged pods, which this namespace's Pod Security " \
        "level forbids" in run.stderr
    assert client.AppsV1Api(cluster.api_client()).list_namespaced_deployment(
        namespace).items == []


# Job 1 reads a file, lists the directory (sshfs caches listings), writes a file, then lists
# the directory until a file this machine creates during the run shows up; job 2 (a later job
# on the same pod) reads that file.
JOB = r"""case $1 in
1)
  sha256sum data.bin
  ls -la . >/dev/null
  test -e later.txt && echo "later.txt was there before it was created"
  # Written aside and renamed: the test reads the file as soon as its name appears.
  mkdir -p out && echo "written by job 1 on $WOMM_WORKER" > out/.job1 && mv out/.job1 out/job1.txt
  i=0
  until ls | grep -qx later.txt; do
    i=$((i + 1)); if [ $i -gt 1200 ]; then echo "later.txt not seen in 60 s"; exit 1; fi
    sleep 0.05
  done
  echo seen > out/seen.txt
  grep -c fuse.sshfs /proc/mounts
  ;;
2)
  sha256sum later.txt
  ;;
esac
"""


@pytest.fixture(scope="module")
def lazy_project(cluster, sshfs_image, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A project set up by `womm setup --share 1` on the sshfs base image, pushed to the
    cluster's registry: `womm parallel` then needs neither --image nor --share."""
    pulled = subprocess.run(["docker", "pull", sshfs_image], capture_output=True, text=True,
                            timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    root = tmp_path_factory.mktemp("lazy")
    project = root / "project"
    project.mkdir()
    (project / "data.bin").write_bytes(os.urandom(2_000_000))
    (project / "job.sh").write_text(JOB)
    script = root / "setup.sh"
    script.write_text("command -v sshfs\n")
    env = dict(_env(cluster), XDG_CONFIG_HOME=str(root / "xdg"))
    setup = subprocess.run(["womm", "setup", "--script", str(script), "--yes", "--share", "1",
                            "--base", sshfs_image, "--prefix", f"{cluster.registry}/womm-test/"],
                           cwd=project, env=env, text=True, capture_output=True, timeout=600)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "run `womm parallel --privileged-fuse ...` to allow that" in setup.stdout, \
        setup.stdout
    config = json.loads((project / ".womm" / "config.json").read_text())
    assert config["share"] == "lazy" and "@sha256:" in config["image"], config
    return project, env


def _lazy_run(namespace: str, *args: str) -> list[str]:
    return ["womm", "parallel", "--backend", "kubernetes", "--namespace", namespace,
            "--kube-pods", "1", "--kube-cpu", CPU, "--kube-mem", "128Mi", "--start-timeout",
            "180", "--privileged-fuse", "--", *args]


def _sftp_servers(project: Path) -> list[int]:
    """Local sftp-server processes serving ``project``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"sftp-server") and str(project).encode() in argv:
            found.append(int(proc.name))
    return found


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds:g} s"
        time.sleep(0.01)


def test_lazy_share_reads_sees_new_local_files_and_writes_back(cluster, namespace,
                                                               lazy_project):
    project, env = lazy_project
    for name in ("later.txt", "out/job1.txt", "out/seen.txt"):
        (project / name).unlink(missing_ok=True)
    proc = subprocess.Popen(_lazy_run(namespace, "sh job.sh {}", ":::", "1", "2"), cwd=project,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # (c) a file a job writes appears here: job 1 wrote it through the mount.
        _wait_for(project / "out" / "job1.txt", proc, 400)
        assert (project / "out" / "job1.txt").read_text().startswith("written by job 1 on womm-")
        # (b) a file created here after the share was set up, while job 1 (which listed the
        # directory, so sshfs has it cached) polls for it; job 2 starts after and reads it.
        later = os.urandom(100_000).hex()
        time.sleep(1)  # job 1 is listing the directory: sshfs now holds a listing without it
        created = time.monotonic()
        (project / "later.txt").write_text(later)
        _wait_for(project / "out" / "seen.txt", proc, 70)
        latency = time.monotonic() - created
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(err)
    print(f"lazy share: a file created here appeared in `ls` of a job in the pod "
          f"{latency:.2f} s later (sshfs dcache_timeout=1; includes the job's 0.05 s poll and "
          f"its reply travelling back through the mount)")
    assert proc.returncode == 0, err
    mounted = re.search(r"womm: share: pod \S+: (.+) mounted lazily \(sshfs\) in ([\d.]+) s", err)
    assert mounted and mounted.group(1) == str(project), err
    print(f"mount time (exec stream + sshfs + first answer): {mounted.group(2)} s")
    # (a) the job read the project's file through the mount: the same bytes.
    data_sha = hashlib.sha256((project / "data.bin").read_bytes()).hexdigest()
    later_sha = hashlib.sha256(later.encode()).hexdigest()
    assert out.splitlines() == [f"{data_sha}  data.bin", "1", f"{later_sha}  later.txt"], out
    assert (project / "out" / "seen.txt").read_text() == "seen\n"
    assert _sftp_servers(project) == [], "sftp-server outlived the run"
    deadline = time.monotonic() + 30
    apps = client.AppsV1Api(cluster.api_client())
    while apps.list_namespaced_deployment(namespace).items and time.monotonic() < deadline:
        time.sleep(0.5)
    assert apps.list_namespaced_deployment(namespace).items == []


def test_a_pod_whose_mount_ends_is_replaced_and_no_job_runs_unmounted(cluster, namespace,
                                                                     lazy_project):
    project, env = lazy_project
    argv = _lazy_run(namespace, "--retries", "3", "sleep 1; sha256sum data.bin; "
                     "echo worker $WOMM_WORKER", ":::", *map(str, range(10)))
    proc = subprocess.Popen(argv, cwd=project, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines, mounted = _stderr_lines(proc)
    try:
        assert mounted.wait(400), "".join(lines)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # a job has run: the mount ends while the next runs
        task_id = re.search(r"deployment\.apps/womm-task-(\w+) created",
                            "".join(lines)).group(1)
        core = client.CoreV1Api(cluster.api_client())
        pod = next(p for p in core.list_namespaced_pod(
            namespace, label_selector=f"womm/task={task_id}").items
            if p.metadata.deletion_timestamp is None)
        # sshfs ends (as when it crashes or its stream breaks on the pod's side): it unmounts.
        _exec(cluster, namespace, pod.metadata.name,
              'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sshfs ] && '
              'kill ${p#/proc/}; done; true')
        out = proc.stdout.read()  # stderr is _stderr_lines' to read
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines)
    print(err)
    out = first + out
    assert proc.returncode == 0, err
    assert f"womm: share: pod {pod.metadata.name}: its sshfs mount ended" in err, err
    assert "; it is replaced" in err
    data_sha = hashlib.sha256((project / "data.bin").read_bytes()).hexdigest()
    shas = [line for line in out.splitlines() if not line.startswith("worker ")]
    assert shas == [f"{data_sha}  data.bin"] * 10, out  # every job saw the project
    workers = {line.split()[1] for line in out.splitlines() if line.startswith("worker ")}
    assert pod.metadata.name in workers and len(workers) >= 2, out  # and a replacement ran
    assert _sftp_servers(project) == []


def _stderr_lines(proc: subprocess.Popen[str]) -> tuple[list[str], threading.Event]:
    lines: list[str] = []
    mounted = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "mounted lazily" in line:
                mounted.set()

    threading.Thread(target=read, daemon=True).start()
    return lines, mounted


def test_lazy_mount_ends_with_the_coordinator(cluster, namespace, lazy_project):
    """Ctrl-C: everything goes (pods, sftp-server). Killed: the pods stay (ORPHANED in `womm
    status`, privileged and saying why) but the mount in them ends with the stream, and
    `womm finish` removes them."""
    project, env = lazy_project
    argv = _lazy_run(namespace, "sleep 300", ":::", "1")
    proc = subprocess.Popen(argv, cwd=project, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines, mounted = _stderr_lines(proc)
    assert mounted.wait(400), "".join(lines)
    assert len(_sftp_servers(project)) == 1
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130, "".join(lines)
    assert _sftp_servers(project) == []

    proc = subprocess.Popen(argv, cwd=project, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines, mounted = _stderr_lines(proc)
    assert mounted.wait(400), "".join(lines)
    task_id = re.search(r"deployment\.apps/womm-task-(\w+) created", "".join(lines)).group(1)
    core = client.CoreV1Api(cluster.api_client())
    pod = next(p for p in core.list_namespaced_pod(namespace, label_selector=f"womm/task={task_id}")
               .items if p.metadata.deletion_timestamp is None)
    assert pod.spec.containers[0].security_context.privileged is True
    assert "--privileged-fuse" in pod.metadata.annotations["womm/privileged"]
    count = "grep -c ' fuse.sshfs ' /proc/mounts || true"
    assert _exec(cluster, namespace, pod.metadata.name, count).strip() == "1"
    proc.kill()
    proc.wait()
    killed = time.monotonic()
    while _exec(cluster, namespace, pod.metadata.name, count).strip() != "0":
        assert time.monotonic() - killed < 60, "the mount outlived its coordinator"
        time.sleep(0.5)
    print(f"mount gone {time.monotonic() - killed:.1f} s after the coordinator was killed")
    while _sftp_servers(project):
        assert time.monotonic() - killed < 30, "sftp-server outlived its coordinator"
        time.sleep(0.2)
    status = subprocess.run(["womm", "status", "--namespace", namespace], cwd=project, env=env,
                            text=True, capture_output=True, timeout=60)
    assert task_id in status.stdout, status.stdout
    done = subprocess.run(["womm", "finish", task_id, "--namespace", namespace], cwd=project,
                          env=env, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"deployment.apps/womm-task-{task_id}" in done.stdout


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
    kexec = subprocess.Popen([sys.executable, "-m", "womm_jupyter.share.kexec", pod,
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
