"""Per-job overhead: local GNU parallel against a womm backend, side by side.

Runs N trivial jobs (`true`) with the same number of slots through (a) GNU parallel alone on
this machine and (b) `womm parallel --backend docker` (or kubernetes), alternating the two
several times in one run, and prints jobs/s of each and their ratio. Job throughput is
measured from GNU parallel's joblog (first start to last end) in both cases, so worker
start-up is reported separately: wall-clock time, the time from starting womm to the
first finished job, and on Kubernetes the time until the first and the last pod were Ready
(watched from here while the run goes on).

    python bench/bench_transport.py [--jobs 1000] [--slots 3] [--rounds 3]
    KUBECONFIG=... python bench/bench_transport.py --backend kubernetes --slots 4 \
        --image 127.0.0.1:5000/womm/base:bookworm --kube-cpu 0.2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from womm_jupyter._paths import vendored_parallel


def _throughput(joblog: Path) -> float:
    rows = [line.split("\t") for line in joblog.read_text().splitlines()[1:]]
    start = min(float(r[2]) for r in rows)
    end = max(float(r[2]) + float(r[3]) for r in rows)
    return len(rows) / (end - start)


def _first_result(joblog: Path, began: float) -> float:
    rows = [line.split("\t") for line in joblog.read_text().splitlines()[1:]]
    return min(float(r[2]) + float(r[3]) for r in rows) - began


class _PodsReady:
    """When womm's pods became Ready, seen by polling the cluster (0.1 s resolution)."""

    def __init__(self, pods: int) -> None:
        from kubernetes import client, config

        config.load_kube_config()
        self._core = client.CoreV1Api()
        self._pods = pods
        self.first = self.last = float("nan")
        self._done = threading.Event()
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            pods = self._core.list_pod_for_all_namespaces(
                label_selector="app.kubernetes.io/managed-by=womm").items
            ready = sum(any(c.type == "Ready" and c.status == "True"
                            for c in pod.status.conditions or []) for pod in pods)
            now = time.monotonic() - self._began
            if ready and self.first != self.first:
                self.first = now
            if ready >= self._pods:
                self.last = now
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _run(argv: list[str], jobs: int, cwd: Path) -> tuple[float, float]:
    began, wall = time.time(), time.monotonic()
    subprocess.run(argv, input="".join(f"{i}\n" for i in range(jobs)).encode(), cwd=cwd,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - wall, began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", default="womm-base:bookworm")
    parser.add_argument("--backend", default="docker", choices=("docker", "kubernetes"))
    parser.add_argument("--kube-cpu", default="1")
    args = parser.parse_args()
    local_rates, womm_rates, local_walls, womm_walls, firsts = [], [], [], [], []
    ready_first: list[float] = []
    ready_all: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for round_ in range(args.rounds):
            log = cwd / f"local-{round_}.log"
            local_walls.append(_run(["perl", str(vendored_parallel()), "-j", str(args.slots),
                                     "--joblog", str(log), "true"], args.jobs, cwd)[0])
            local_rates.append(_throughput(log))
            log = cwd / f"womm-{round_}.log"
            watch = _PodsReady(args.slots) if args.backend == "kubernetes" else None
            wall, began = _run(["womm", "parallel", "--backend", args.backend, "--image",
                                args.image, "--kube-pods", str(args.slots), "--kube-cpu",
                                args.kube_cpu, "--", "--joblog", str(log), "true"],
                               args.jobs, cwd)
            womm_walls.append(wall)
            if watch:
                watch.stop()
                ready_first.append(watch.first)
                ready_all.append(watch.last)
            firsts.append(_first_result(log, began))
            womm_rates.append(_throughput(log))
            print(f"round {round_ + 1}: local {local_rates[-1]:7.1f} jobs/s   "
                  f"{args.backend} {womm_rates[-1]:7.1f} jobs/s   "
                  f"ratio {womm_rates[-1] / local_rates[-1]:.2f}", flush=True)
    local, womm = statistics.median(local_rates), statistics.median(womm_rates)
    print(f"\n{args.jobs} jobs x {args.rounds} rounds, {args.slots} slots (median):")
    wall = statistics.median(local_walls)
    print(f"  local GNU parallel : {local:7.1f} jobs/s  (wall {wall:.2f} s)")
    print(f"  womm {args.backend:10}: {womm:7.1f} jobs/s  (wall "
          f"{statistics.median(womm_walls):.2f} s, including starting and removing workers)")
    print(f"  first result after : {statistics.median(firsts):.2f} s from starting womm")
    if ready_all:
        print(f"  pods Ready after   : first {statistics.median(ready_first):.2f} s, all "
              f"{args.slots} {statistics.median(ready_all):.2f} s from starting womm")
    print(f"  ratio womm/local   : {womm / local:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
