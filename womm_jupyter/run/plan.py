"""A run's plan: resolved options -> what the backends start (:class:`LaunchPlan`).

Pure decisions, made before anything starts: worker names and slots, their size and image,
womm's job client. Backends and ``kube/manifests.py`` read plan fields only, never the
command line's :class:`~womm_jupyter.options.ParallelOptions`.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _paths
from ..backends.base import LaunchPlan, WorkerPlan
from ..errors import OptionError
from ..naming import owner, task_object_name
from ..options import ParallelOptions, resolve

__all__ = ["RunPlan", "plan_run", "shell_plan", "shell_start_timeout", "task_record",
           "write_client"]


@dataclass(frozen=True)
class RunPlan:
    """The workers of one ``womm parallel``: the backend's, and the local ones of
    ``--local-procs``."""

    main: LaunchPlan
    local: LaunchPlan | None

    @property
    def workers(self) -> tuple[WorkerPlan, ...]:
        return self.main.workers + (self.local.workers if self.local else ())


def plan_run(options: ParallelOptions, *, task_id: str, cwd: Path, argv: tuple[str, ...],
             task_dir: Path, backend_name: str) -> RunPlan:
    """Plan task ``task_id``'s workers on ``backend_name``; their sockets go under
    ``task_dir/w``.

    Raises
    ------
    OptionError
        when a container backend has no image to run.
    """
    if backend_name != "local" and not options.image:
        raise OptionError(f"--image is required on the {backend_name} backend until "
                          "`womm setup` has built a project image (e.g. --image "
                          "womm-base:bookworm, made by tools/base-image.sh).")
    name = task_object_name(task_id)
    base: dict[str, Any] = dict(
        task_id=task_id, owner=owner(), cwd=cwd, command=shlex.join(argv),
        shell=os.environ.get("SHELL", "") or "/bin/bash", client_path=str(task_dir / "sh"),
        created=time.time(), coordinator_pid=os.getpid(), host=socket.gethostname(),
        cpu=options.kube_cpu, memory=options.kube_mem, image=options.image)
    main = LaunchPlan(workers=tuple(WorkerPlan(f"{name}-{i}", options.procs_per_pod,
                                               task_dir / "w" / str(i))
                                    for i in range(options.kube_pods)), **base)
    local = None
    if options.local_procs:
        local = LaunchPlan(workers=(WorkerPlan(f"{name}-local", options.local_procs,
                                               task_dir / "w" / "local"),), **base)
    return RunPlan(main, local)


def write_client(task_dir: Path) -> Path:
    """womm's job client (GNU parallel's ``PARALLEL_SHELL``), as ``task_dir/sh``."""
    client = task_dir / "sh"
    client.write_text(f"#!{_paths.perl()}\n" + _paths.transport_file("womm_sh.pl").read_text())
    client.chmod(0o755)
    return client


def task_record(plan: RunPlan, backend_name: str) -> dict[str, Any]:
    """What this machine's task directory records for `womm status` (``tasks.write_task``)."""
    main = plan.main
    return {"task_id": main.task_id, "backend": backend_name, "created": main.created,
            "pid": main.coordinator_pid, "host": main.host, "cpu": f"{main.cpu:g}",
            "mem": main.memory, "cwd": str(main.cwd), "command": main.command,
            "owner": main.owner, "desired": len(plan.workers)}


def shell_plan(*, task_id: str, cwd: Path, command: str | None, cpu: float, memory: str,
               image: str, shared_claim: str) -> LaunchPlan:
    """``womm shell``'s one pod on Kubernetes (it has no job slots: the shell is an exec)."""
    return LaunchPlan(task_id=task_id, owner=owner(), cwd=cwd, command=command or "womm shell",
                      workers=(), shell="/bin/sh", client_path="", created=time.time(),
                      coordinator_pid=os.getpid(), host=socket.gethostname(), cpu=cpu,
                      memory=memory, image=image, shared_claim=shared_claim)


def shell_start_timeout() -> float:
    """How long ``womm shell`` waits for its pod: ``--start-timeout`` as a run resolves it
    without flags or project config ($WOMM_START_TIMEOUT, else its default); the shell has no
    flag of its own for it."""
    return resolve(ParallelOptions, {"kube_pods": 1}, config={}).start_timeout
