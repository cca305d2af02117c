"""One run's share of the project directory with its workers (the coordinator's side).

The coordinator makes a :class:`ShareSession` before the workers are created (a refused
share then leaves nothing to delete), lets it add its per-worker step to the launch plan
(:meth:`ShareSession.plan`), calls :meth:`~ShareSession.after_run` once GNU parallel has
ended (syncback) and :meth:`~ShareSession.close` in every case. Backends run
:meth:`~ShareSession.prepare` on their own threads, once per worker, before it takes jobs:
the eager share's upload or the lazy share's mount. What the session has to say queues up
and reaches faces through :meth:`~ShareSession.notes`, on the coordinator's thread.

Only workers with a filesystem of their own (pods: :attr:`Backend.own_filesystem`) are
shared with; Docker and local workers use the project directory itself.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from pathlib import Path

from ..backends.base import Backend, LaunchPlan
from ..errors import ShareError
from . import by_name, eager
from . import method as resolve_method
from .lazy import LazyMount, sftp_server

__all__ = ["ShareSession"]

_NEEDS_PRIVILEGED_FUSE = (
    "a lazy share on Kubernetes needs --privileged-fuse: it mounts your directory "
    "in each worker pod with sshfs (FUSE), and on containerd/runc only a privileged "
    "pod may open /dev/fuse (CAP_SYS_ADMIN and a hostPath /dev/fuse are not enough: "
    "'fuse: failed to open /dev/fuse: Operation not permitted'; see README). "
    "--privileged-fuse runs the worker pods privileged (every capability and "
    "device of the node) and lets their jobs read and write this directory as "
    "you. Or run with --share eager (or eager-syncback), or --share none.")


class ShareSession:
    """The share of ``cwd`` with ``backend``'s workers for task ``task_id``.

    Parameters
    ----------
    value:
        ``--share`` as given ("" = the project's, else none).
    privileged_fuse, context, start_timeout:
        the run's ``--privileged-fuse``, ``--context`` and ``--start-timeout``.

    Raises
    ------
    ShareError
        a lazy share on Kubernetes without ``--privileged-fuse``.
    OptionError, MissingToolError
        an unknown method; no ``sftp-server`` here for a lazy share.
    """

    def __init__(self, backend: Backend, cwd: Path, task_id: str, *, value: str,
                 privileged_fuse: bool, context: str, start_timeout: float) -> None:
        self.backend = backend
        self.cwd = cwd
        self.task_id = task_id
        self.context = context
        self.start_timeout = start_timeout
        self._notes: queue.Queue[str] = queue.Queue()  # from backend threads too
        self._uploaded: dict[str, str] | None = None  # path -> sha256 at upload (syncback)
        self._mounts: dict[str, LazyMount] = {}  # pod -> its lazy-share mount
        self._mounts_lock = threading.Lock()
        self._closing = False
        name = resolve_method(value, cwd)
        if not backend.own_filesystem:
            if name != "none":
                self._notes.put(f"womm: share {name}: the {backend.name} workers use {cwd} "
                                "itself")
            name = "none"
        self.method = by_name(name)
        if self.method.privileged_fuse and not privileged_fuse:
            raise ShareError(_NEEDS_PRIVILEGED_FUSE)
        if self.method.privileged_fuse:
            sftp_server()  # missing here: say so before any pod is created
        elif privileged_fuse and backend.own_filesystem:
            self._notes.put(f"womm: --privileged-fuse ignored: it serves --share lazy only "
                            f"(this run's share: {name}); the pods run unprivileged")

    def plan(self, plan: LaunchPlan) -> LaunchPlan:
        """``plan`` with this share's per-worker step (and FUSE, for a lazy share)."""
        if self.method.name == "none":
            return plan
        return dataclasses.replace(plan, prepare=self.prepare, fuse=self.method.privileged_fuse)

    def prepare(self, worker: str) -> None:
        """A worker's prepare step (a backend thread): upload the project into it, or mount
        it there; an exception keeps the worker out of the run."""
        if self.method.uploads:
            self._upload(worker)
        elif self.method.privileged_fuse:
            self._mount(worker)

    def notes(self) -> list[str]:
        """What the share said since the last call (texts for ``share`` events)."""
        said = []
        while True:
            try:
                said.append(self._notes.get_nowait())
            except queue.Empty:
                return said

    def after_run(self) -> None:
        """Once all jobs have ended: pull each live pod's changes back (syncback)."""
        if self.method.syncback:
            self._syncback()

    def close(self) -> None:
        """Unmount every lazy mount (before the workers are deleted)."""
        with self._mounts_lock:
            self._closing = True
            mounts = list(self._mounts.values())
            self._mounts.clear()
        for mount in mounts:
            mount.stop_soon()
        for mount in mounts:
            mount.close()

    # -- eager ------------------------------------------------------------------------------
    def _upload(self, pod: str) -> None:
        note = self._notes.put
        if self.method.syncback and self._uploaded is None:
            # Hashed before the first upload: a file edited during the upload then counts as
            # changed here, which can only keep a local version, never lose one.
            self._uploaded = eager.hash_tree(self.cwd)
        result = eager.push(self.cwd, pod, namespace=self.backend.namespace,
                            context=self.context, report=lambda text: note(f"womm: {text}"))
        note(f"womm: share: pod {pod}: {result.files} files, "
             f"{eager.size_text(result.total_bytes)}; sent {result.transferred_files} files, "
             f"{eager.size_text(result.transferred_bytes)} of file data in "
             f"{result.seconds:.1f} s")

    def _syncback(self) -> None:
        uploaded = self._uploaded or {}
        for pod in self.backend.share_targets():
            staging = self.cwd / ".womm" / f"syncback-{self.task_id}-{pod}"
            result = eager.pull(self.cwd, pod, uploaded, namespace=self.backend.namespace,
                                context=self.context, staging=staging)
            self._notes.put(f"womm: share: syncback from pod {pod}: {len(result.updated)} files "
                            f"new or changed here, {len(result.conflicts)} conflicts "
                            f"({result.seconds:.1f} s)")
            for path, kept in result.conflicts:
                self._notes.put(f"womm: share: conflict: {path} changed here and on pod {pod}; "
                                f"yours stays, the pod's is {kept}")

    # -- lazy -------------------------------------------------------------------------------
    def _mount(self, pod: str) -> None:
        mount = LazyMount(pod, self.cwd,
                          lambda command: self.backend.exec_stream(pod, command),
                          self._mount_lost)
        seconds = mount.start(self.start_timeout)
        with self._mounts_lock:
            if self._closing:  # the run ended while this pod was mounting
                mount.close()
                raise ShareError(f"share: the run ended while pod {pod} was mounting")
            self._mounts[pod] = mount
        self._notes.put(f"womm: share: pod {pod}: {self.cwd} mounted lazily (sshfs) in "
                        f"{seconds:.1f} s")

    def _mount_lost(self, pod: str, why: str) -> None:
        with self._mounts_lock:
            self._mounts.pop(pod, None)
            if self._closing:
                return
        self._notes.put(f"womm: share: pod {pod}: {why}; it is replaced")
        self.backend.replace_worker(pod, why)
