"""Share throughput on Kubernetes beside a plain local copy of the same data.

Makes a project holding one file of --mb MB (random bytes) and measures, in one run:

- local: ``cp`` of the file on this machine, and ``cat`` of it to /dev/null (page cache warm);
- lazy: a job in a worker pod (``--share lazy --privileged-fuse``) reads the file through its
  sshfs mount; the job times its own ``cat`` (the pod's mount time is printed by womm);
- eager (with --eager-image, an image with rsync): the upload of the same project into a pod
  (womm's ``share: pod ...: sent ... in S s`` line); and womm's eager sync (``share.push``,
  what `womm parallel` runs for each pod) of a tree of --tree-files files holding --mb MB in
  all, into one pod twice: cold, then unchanged, beside ``cp -r`` of the tree here.

    KUBECONFIG=... python bench/bench_shares.py --image REG/womm/base-sshfs:TAG \
        [--eager-image REG/womm/base-rsync:bookworm] [--mb 200] [--namespace NS]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _womm(args: argparse.Namespace, cwd: Path, image: str, share: str, *extra: str,
          command: str) -> subprocess.CompletedProcess[str]:
    argv = ["womm", "parallel", "--backend", "kubernetes", "--image", image, "--kube-pods", "1",
            "--kube-cpu", args.kube_cpu, "--kube-mem", "256Mi", "--share", share,
            "--start-timeout", "300", *extra]
    if args.namespace:
        argv += ["--namespace", args.namespace]
    run = subprocess.run([*argv, "--", command, ":::", "1"], cwd=cwd, text=True,
                         capture_output=True)
    if run.returncode != 0:
        raise SystemExit(f"womm failed ({run.returncode}):\n{run.stderr}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="worker image with sshfs")
    parser.add_argument("--eager-image", default="", help="worker image with rsync")
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--tree-files", type=int, default=10_000)
    parser.add_argument("--namespace", default="")
    parser.add_argument("--kube-cpu", default="0.5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        with (project / "big.bin").open("wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(1_000_000))
        t = time.monotonic()
        subprocess.run(["cp", str(project / "big.bin"), str(Path(tmp) / "copy.bin")],
                       check=True)
        copy = time.monotonic() - t
        t = time.monotonic()
        subprocess.run(["cat", str(project / "big.bin")], stdout=subprocess.DEVNULL, check=True)
        cat = time.monotonic() - t
        (Path(tmp) / "copy.bin").unlink()
        print(f"{args.mb} MB file; local cp {copy:.2f} s ({args.mb / copy:.0f} MB/s), "
              f"local cat {cat:.2f} s ({args.mb / cat:.0f} MB/s)")

        timed = ('s=$(date +%s.%N); cat big.bin >/dev/null; e=$(date +%s.%N); '
                 'echo "$s $e"')
        run = _womm(args, project, args.image, "lazy", "--privileged-fuse", command=timed)
        start, end = map(float, run.stdout.split()[:2])
        mounted = re.search(r"mounted lazily \(sshfs\) in ([\d.]+) s", run.stderr)
        lazy = end - start
        print(f"lazy (sshfs over an exec stream): read in the pod {lazy:.2f} s "
              f"({args.mb / lazy:.0f} MB/s, {lazy / copy:.1f}x the local cp); mount "
              f"{mounted.group(1) if mounted else '?'} s")

        if args.eager_image:
            run = _womm(args, project, args.eager_image, "eager", command="true")
            sent = re.search(r"sent \d+ files, .* of file data in ([\d.]+) s", run.stderr)
            if sent:
                eager = float(sent.group(1))
                print(f"eager (rsync over an exec stream): upload {eager:.2f} s "
                      f"({args.mb / eager:.0f} MB/s, {eager / copy:.1f}x the local cp)")
            _tree(args, Path(tmp))


def _tree(args: argparse.Namespace, tmp: Path) -> None:
    from kubernetes import client, config

    from womm_jupyter.share import eager as share

    tree = tmp / "tree"
    per_dir = 100
    size = args.mb * 1_000_000 // args.tree_files
    for i in range(args.tree_files):
        path = tree / f"d{i // per_dir:04}" / f"f{i % per_dir:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    t = time.monotonic()
    subprocess.run(["cp", "-r", str(tree), str(tmp / "tree-copy")], check=True)
    copy = time.monotonic() - t
    config.load_kube_config()
    core = client.CoreV1Api()
    namespace = args.namespace or "default"
    pod = f"womm-bench-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "labels": {"app.kubernetes.io/managed-by": "womm-bench"}},
        "spec": {"containers": [{"name": "w", "image": args.eager_image,
                                 "command": ["sleep", "3600"], "workingDir": str(tree),
                                 "resources": {"limits": {"cpu": args.kube_cpu,
                                                          "memory": "256Mi"}}}],
                 "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False}})
    try:
        while core.read_namespaced_pod(pod, namespace).status.phase != "Running":
            time.sleep(0.5)
        cold = share.push(tree, pod, namespace=namespace)
        again = share.push(tree, pod, namespace=namespace)
    finally:
        core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    print(f"{args.tree_files} files, {args.mb} MB: local cp -r {copy:.2f} s; eager sync cold "
          f"{cold.seconds:.2f} s ({cold.transferred_files} files sent, "
          f"{cold.seconds / copy:.1f}x the cp), unchanged {again.seconds:.2f} s "
          f"({again.transferred_files} files, {again.transferred_bytes} bytes of file data "
          "sent)")


if __name__ == "__main__":
    main()
