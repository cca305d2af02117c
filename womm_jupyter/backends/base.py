"""The one small interface every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Labels on every object womm creates, so `womm status` finds it and `womm finish` removes it.


@dataclass(frozen=True)
class WorkerPlan:
    """One worker: its name, how many job slots it serves, where its agent's socket appears."""

    name: str
    slots: int
    socket_dir: Path

    @property
    def socket(self) -> Path:
        return self.socket_dir / "agent.sock"


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a backend needs to start a task's workers (made by ``run/plan.py``)."""

    task_id: str
    owner: str
    cwd: Path
    command: str  # the GNU parallel command line, for labels and `womm status`
    workers: tuple[WorkerPlan, ...]  # one per pod (container, process): the worker count
    shell: str  # shell the agents run jobs with (the user's, when the worker has it)
    client_path: str  # womm's job shell; agents alias it to their shell (see agent.pl)
    created: float
    coordinator_pid: int
    host: str
    cpu: float  # each worker's CPUs (requests = limits)
    memory: str  # each worker's memory, e.g. 512Mi
    image: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    # Called with a worker's name (a pod's, on Kubernetes) from a backend thread once it is
    # running and before it takes jobs (the share's upload or mount, share/session.py); an
    # exception keeps it out.
    prepare: Callable[[str], None] | None = None
    # The namespace's shared PersistentVolumeClaim, mounted at /shared (see shared.py).
    shared_claim: str = ""
    # Workers must be able to mount FUSE (a lazy share with --privileged-fuse): on
    # Kubernetes the pods then run privileged.
    fuse: bool = False


@dataclass(frozen=True)
class TaskInfo:
    """One row of `womm status`."""

    task_id: str
    backend: str
    created: float
    status: str  # RUNNING | COMPLETE | ORPHANED
    cpu: str
    mem: str
    ready: int
    desired: int
    cwd: str
    command: str
    owner: str


GoneCallback = Callable[[str, str], None]
"""Called with (worker name, reason) from a backend thread when a worker stops."""


class Backend(abc.ABC):
    """Where workers live. Implementations never print; they raise WommError subclasses."""

    name: str = ""
    replaces_workers = False  # whether lost workers come back by themselves (Kubernetes)
    # Whether workers have a filesystem of their own (pods), so that a share must carry the
    # project directory there; Docker and local workers use this machine's directory itself.
    own_filesystem = False
    namespace = ""  # where the workers live, when the backend has namespaces (Kubernetes)

    @abc.abstractmethod
    def launch(self, plan: LaunchPlan, on_gone: GoneCallback) -> str:
        """Create the workers and start watching them; return their kind (``containers``)."""

    def heartbeat(self) -> None:  # noqa: B027 - most backends have nothing to renew
        """Tell the cluster the coordinator is alive (Kubernetes: renew the task's Lease)."""

    def share_targets(self) -> list[str]:
        """Workers whose files are not this machine's (pods): syncback pulls from these."""
        return []

    def exec_stream(self, worker: str, command: list[str]) -> Any:
        """A binary exec stream running ``command`` in ``worker`` (the lazy share's sshfs);
        only backends with :attr:`own_filesystem` have one."""
        raise NotImplementedError(f"the {self.name} backend has no exec stream")

    def replace_worker(self, worker: str, why: str) -> None:  # noqa: B027 - optional
        """Take ``worker`` out of the run and have another started in its place (a lazy
        share whose mount broke); backends that do not replace workers ignore it."""

    def fatal(self) -> str:
        """A reason the workers cannot start that waiting will not cure (ImagePullBackOff,
        Unschedulable, quota), or ''."""
        return ""

    @abc.abstractmethod
    def diagnose(self, worker: str) -> str:
        """Why a worker is not serving (exit status, log tail), for error messages."""

    @abc.abstractmethod
    def delete(self) -> str:
        """Remove everything ``launch`` created; return the kind of what was deleted ("" when
        it created nothing)."""

    @abc.abstractmethod
    def tasks(self, all_owners: bool) -> list[TaskInfo]:
        """This backend's tasks (this owner's unless ``all_owners``)."""

    @abc.abstractmethod
    def finish(self, task_id: str) -> list[str]:
        """Delete every object of a task; return display names of what was deleted."""
