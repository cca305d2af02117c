"""The coordinator: start workers, run GNU parallel over them, collect records, clean up.

GNU parallel runs locally with ``-j SLOTS`` and ``PARALLEL_SHELL`` pointing at womm's tiny job
client (``transport/womm_sh.pl``). Job slot *k* is a socket in the task's ``s/`` directory: a
symlink to the agent socket of the worker serving that slot. When a worker stops, its slots
are re-pointed at live workers at once; when none is left the run fails. Nothing ever runs on
this machine unless ``--local-procs`` asked for local slots.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import queue
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import _paths, tasks
from .. import share as share_methods
from ..backends import Backend, LaunchPlan, LocalBackend, WorkerPlan, select_backend
from ..errors import BackendError, ImageError, OptionError, ShareError, WommError, WorkersLostError
from ..naming import new_task_id, owner, task_object_name
from ..options import ParallelOptions
from ..share import eager as share
from ..share.lazy import LazyMount, sftp_server
from . import gnu as _parallel
from .records import JoblogReader, JobRecord

__all__ = ["Dispatch", "Event", "Progress"]


@dataclass(frozen=True)
class Event:
    """Something a face may render.

    kind: ``backend``, ``created``, ``deleted``, ``ready``, ``lost``, ``share`` (text to show);
    ``stdout``/``stderr`` (data: bytes); ``record`` (data: JobRecord);
    ``progress`` (data: Progress).
    """

    kind: str
    text: str = ""
    data: Any = None


@dataclass(frozen=True)
class Progress:
    total: int | None
    done: int
    failed: int
    running: int
    ready_workers: int
    desired_workers: int


_POLL = 0.2  # seconds between joblog reads; records reach faces at least this often


class _Slots:
    """Job slot sockets, kept pointed at live workers."""

    def __init__(self, directory: Path, workers: Iterable[WorkerPlan]) -> None:
        self.directory = directory
        self.owner_of: dict[int, WorkerPlan] = {}
        slot = itertools.count(1)
        for worker in workers:
            for _ in range(worker.slots):
                self.owner_of[next(slot)] = worker
        self.ready: dict[str, WorkerPlan] = {}
        self.gone: set[str] = set()

    def mark_ready(self, worker: WorkerPlan) -> None:
        self.ready[worker.name] = worker
        self._repoint()

    def mark_gone(self, name: str) -> None:
        self.gone.add(name)
        self.ready.pop(name, None)
        self._repoint()

    def _repoint(self) -> None:
        live = list(self.ready.values())
        for slot, worker in self.owner_of.items():
            path = self.directory / str(slot)
            if not live:
                path.unlink(missing_ok=True)
                continue
            target = worker if worker.name in self.ready else live[slot % len(live)]
            tmp = self.directory / f".{slot}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target.socket)
            tmp.replace(path)  # atomic: a connecting client sees the old or the new worker


InputsOf = Callable[[int], tuple[str, ...] | None]


def _job_inputs(argv: tuple[str, ...], fed: list[str] | None) -> InputsOf:
    """Map a job's sequence number to its input values, where that mapping is certain.

    Certain means one job per input line (or per combination of ``:::`` values): no options
    that group or split arguments. Otherwise records carry ``inputs=None``.
    """
    grouping = {"-N", "-n", "-L", "-l", "-X", "-m", "--pipe", "--pipepart", "--header",
                "--max-args", "--max-lines", "--max-replace-args", "--xargs", "--block",
                "--group-by", "--shard", "--bin", "--colsep", "-C", "--skip-first-line",
                "--arg-file", "-a", "--resume", "--resume-failed", "--retry-failed"}
    words = list(argv)
    first_sep = next((i for i, w in enumerate(words) if w in _parallel.INPUT_SEPARATORS),
                     len(words))
    if any(w.split("=")[0] in grouping for w in words[:first_sep]):
        return lambda seq: None
    sources: list[list[str]] = []
    linked: list[bool] = []
    index = first_sep
    while index < len(words):
        sep = words[index]
        index += 1
        values: list[str] = []
        while index < len(words) and words[index] not in _parallel.INPUT_SEPARATORS:
            values.append(words[index])
            index += 1
        if sep.startswith("::::"):
            return lambda seq: None  # files read by GNU parallel: not ours to re-read
        sources.append(values)
        linked.append(sep.endswith("+"))
    if not sources:
        items = fed or []
        return lambda seq: (items[seq - 1],) if 0 < seq <= len(items) else None
    if fed:
        return lambda seq: None  # stdin is ignored when ::: is given; keep it simple
    # Linked sources (:::+) pair with the previous one; the rest combine, last fastest.
    groups: list[list[tuple[str, ...]]] = []
    for values, link in zip(sources, linked, strict=True):
        if link and groups:
            previous = groups[-1]
            groups[-1] = [(*old, values[i % len(values)]) for i, old in enumerate(previous)]
        else:
            groups.append([(value,) for value in values])
    combos = [tuple(itertools.chain.from_iterable(parts)) for parts in itertools.product(*groups)]
    return lambda seq: combos[seq - 1] if 0 < seq <= len(combos) else None


def _total(argv: tuple[str, ...], fed: list[str] | None) -> int | None:
    inputs_of = _job_inputs(argv, fed)
    count = 0
    while inputs_of(count + 1) is not None:
        count += 1
    return count or None


def _die_with_parent() -> None:
    # GNU parallel runs in its own session (so Ctrl-C reaches womm first); if womm itself is
    # killed, the kernel ends GNU parallel too instead of leaving it feeding the workers.
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Dispatch:
    """One run of ``womm parallel``: call :meth:`run` once (it blocks), :meth:`cancel` any time.

    Parameters
    ----------
    options:
        resolved womm options.
    parallel_argv:
        GNU parallel's options, command and input sources, passed through unchanged.
    inputs:
        input lines to feed on GNU parallel's stdin, or None to pass ``stdin`` through.
    capture:
        True: GNU parallel's output becomes ``stdout``/``stderr`` events (notebooks, API);
        False: it goes straight to this process's stdout/stderr (the CLI).
    emit:
        receives every Event, from the thread calling :meth:`run`.
    task_id:
        the task's id (default: a new one); the --async leader runs the client's task.
    """

    def __init__(self, options: ParallelOptions, parallel_argv: list[str], *, cwd: Path,
                 emit: Callable[[Event], None], inputs: list[str] | None = None,
                 stdin: IO[bytes] | None = None, capture: bool = False,
                 task_id: str | None = None) -> None:
        self.options = options
        self.args = _parallel.inspect(parallel_argv)
        self.cwd = cwd.resolve()
        self.inputs = inputs
        self.stdin = stdin
        self.capture = capture
        self.emit = emit
        self.task_id = task_id or new_task_id()  # given: the --async leader runs a task
        self.records: list[JobRecord] = []
        self.parallel_exit: int | None = None
        self._cancelled = threading.Event()
        self._gone: queue.Queue[tuple[str, str]] = queue.Queue()
        self._parallel: subprocess.Popen[bytes] | None = None
        self._backends: list[Backend] = []
        self._lost_reasons: list[str] = []
        self._share_notes: queue.Queue[str] = queue.Queue()  # from backend threads
        self._uploaded: dict[str, str] | None = None  # path -> sha256 at upload (syncback)
        self._mounts: dict[str, LazyMount] = {}  # pod -> its lazy-share mount
        self._mounts_lock = threading.Lock()
        self._unmounting = False

    # -- public -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the jobs and remove the workers; :meth:`run` then raises KeyboardInterrupt."""
        self._cancelled.set()
        self._stop_parallel()

    def run(self) -> int:
        """Run to completion; return GNU parallel's exit status. Cleans up in every case."""
        tdir = tasks.task_dir(self.task_id)
        try:
            for sub in ("s", "j", "w"):
                (tdir / sub).mkdir(parents=True, exist_ok=True)
            return self._run(tdir)
        finally:
            self._stop_parallel()
            self._unmount_all()
            for backend in reversed(self._backends):
                try:
                    kind = backend.delete()
                    if kind:  # "": its launch failed before it created anything
                        name = task_object_name(self.task_id)
                        self.emit(Event("deleted", f'{kind} "{name}" deleted'))
                except WommError as exc:
                    self.emit(Event("lost", f"womm: cleanup failed: {exc}"))
            tasks.remove(self.task_id)

    # -- internals --------------------------------------------------------------------------
    def _plan(self, tdir: Path, backend: Backend) -> tuple[LaunchPlan, LaunchPlan | None]:
        opts = self.options
        name = task_object_name(self.task_id)
        remote = tuple(WorkerPlan(f"{name}-{i}", opts.procs_per_pod, tdir / "w" / str(i))
                       for i in range(opts.kube_pods))
        image = opts.image
        if backend.name != "local" and not image:
            raise OptionError(f"--image is required on the {backend.name} backend until "
                              "`womm setup` has built a project image (e.g. --image "
                              "womm-base:bookworm, made by tools/base-image.sh).")
        user_shell = os.environ.get("SHELL", "") or "/bin/bash"
        base = dict(task_id=self.task_id, owner=owner(), cwd=self.cwd,
                    command=shlex.join(self.args.argv), options=opts, shell=user_shell,
                    client_path=str(tdir / "sh"), created=time.time(),
                    coordinator_pid=os.getpid(), host=socket.gethostname(), image=image)
        main = LaunchPlan(workers=remote, **base)  # type: ignore[arg-type]
        local = None
        if opts.local_procs:
            local = LaunchPlan(workers=(WorkerPlan(f"{name}-local", opts.local_procs,
                                                   tdir / "w" / "local"),), **base)  # type: ignore[arg-type]
        return main, local

    def _write_client(self, tdir: Path) -> Path:
        client = tdir / "sh"
        client.write_text(f"#!{_paths.perl()}\n" + _paths.transport_file("womm_sh.pl").read_text())
        client.chmod(0o755)
        return client

    def _run(self, tdir: Path) -> int:
        backend, reason = select_backend(self.options.backend, self.options.context,
                                         self.options.namespace)
        self.emit(Event("backend", reason))
        main, local = self._plan(tdir, backend)
        client = self._write_client(tdir)
        workers = main.workers + (local.workers if local else ())
        tasks.write_task(self.task_id, {
            "task_id": self.task_id, "backend": backend.name, "created": main.created,
            "pid": main.coordinator_pid, "host": main.host, "cpu": f"{self.options.kube_cpu:g}",
            "mem": self.options.kube_mem, "cwd": str(self.cwd), "command": main.command,
            "owner": main.owner, "desired": len(workers)})
        tasks.touch_heartbeat(self.task_id)

        def on_gone(name: str, why: str) -> None:
            self._gone.put((name, why))

        # Before the backend counts as launched: a refused share leaves nothing to delete.
        method = self._share_method(backend)
        self._backends.append(backend)
        if method in ("eager", "eager-syncback"):
            main = dataclasses.replace(main, prepare=functools.partial(
                self._upload, backend, method == "eager-syncback"))
        elif method == "lazy":
            main = dataclasses.replace(main, fuse=True,
                                       prepare=functools.partial(self._mount, backend))
        kind = backend.launch(main, on_gone)
        self.emit(Event("created", f"{kind}/{task_object_name(self.task_id)} created"))
        if local:
            local_backend = LocalBackend()
            self._backends.append(local_backend)
            local_backend.launch(local, on_gone)
        slots = _Slots(tdir / "s", workers)
        self._await_first_worker(slots, workers)
        code = self._run_parallel(tdir, client, slots, workers)
        self._drain_share_notes()
        if method == "eager-syncback":
            self._syncback(backend)
        return code

    # -- shares (see share.py) --------------------------------------------------------------
    def _share_method(self, backend: Backend) -> str:
        method = share_methods.method(self.options.share, self.cwd)
        if backend.name != "kubernetes":
            if method != "none":
                self.emit(Event("share", f"womm: share {method}: the {backend.name} workers "
                                         f"use {self.cwd} itself"))
            return "none"
        if method == "lazy" and not self.options.privileged_fuse:
            raise ShareError(
                "a lazy share on Kubernetes needs --privileged-fuse: it mounts your directory "
                "in each worker pod with sshfs (FUSE), and on containerd/runc only a privileged "
                "pod may open /dev/fuse (CAP_SYS_ADMIN and a hostPath /dev/fuse are not enough: "
                "'fuse: failed to open /dev/fuse: Operation not permitted'; see README). "
                "--privileged-fuse runs the worker pods privileged (every capability and "
                "device of the node) and lets their jobs read and write this directory as "
                "you. Or run with --share eager (or eager-syncback), or --share none.")
        if method == "lazy":
            sftp_server()  # missing here: say so before any pod is created
        elif self.options.privileged_fuse:
            self.emit(Event("share", f"womm: --privileged-fuse ignored: it serves --share lazy "
                                     f"only (this run's share: {method}); the pods run "
                                     "unprivileged"))
        return method

    def _mount(self, backend: Backend, pod: str) -> None:
        """A pod's prepare step (backend thread): mount the project there with sshfs."""
        from ..backends.kubernetes import KubernetesBackend

        assert isinstance(backend, KubernetesBackend)  # _share_method: lazy is Kubernetes only
        mount = LazyMount(pod, self.cwd, functools.partial(backend.exec_stream, pod),
                          functools.partial(self._mount_lost, backend))
        seconds = mount.start(self.options.start_timeout)
        with self._mounts_lock:
            if self._unmounting:  # the run ended while this pod was mounting
                mount.close()
                raise ShareError(f"share: the run ended while pod {pod} was mounting")
            self._mounts[pod] = mount
        self._share_notes.put(f"womm: share: pod {pod}: {self.cwd} mounted lazily (sshfs) in "
                              f"{seconds:.1f} s")

    def _mount_lost(self, backend: Backend, pod: str, why: str) -> None:
        with self._mounts_lock:
            self._mounts.pop(pod, None)
            if self._unmounting:
                return
        self._share_notes.put(f"womm: share: pod {pod}: {why}; it is replaced")
        from ..backends.kubernetes import KubernetesBackend

        if isinstance(backend, KubernetesBackend):
            backend.replace_worker(pod, why)

    def _unmount_all(self) -> None:
        with self._mounts_lock:
            self._unmounting = True
            mounts = list(self._mounts.values())
            self._mounts.clear()
        for mount in mounts:
            mount.stop_soon()
        for mount in mounts:
            mount.close()

    def _upload(self, backend: Backend, record_hashes: bool, pod: str) -> None:
        """A pod's prepare step (backend thread): rsync the project into it."""
        note = self._share_notes.put
        if record_hashes and self._uploaded is None:
            # Hashed before the first upload: a file edited during the upload then counts as
            # changed here, which can only keep a local version, never lose one.
            self._uploaded = share.hash_tree(self.cwd)
        namespace = getattr(backend, "namespace", "")
        result = share.push(self.cwd, pod, namespace=namespace, context=self.options.context,
                            report=lambda text: note(f"womm: {text}"))
        note(f"womm: share: pod {pod}: {result.files} files, {share.size_text(result.total_bytes)};"
             f" sent {result.transferred_files} files, "
             f"{share.size_text(result.transferred_bytes)} of file data in {result.seconds:.1f} s")

    def _drain_share_notes(self) -> None:
        while True:
            try:
                self.emit(Event("share", self._share_notes.get_nowait()))
            except queue.Empty:
                return

    def _syncback(self, backend: Backend) -> None:
        namespace = getattr(backend, "namespace", "")
        uploaded = self._uploaded or {}
        for pod in backend.share_targets():
            staging = self.cwd / ".womm" / f"syncback-{self.task_id}-{pod}"
            result = share.pull(self.cwd, pod, uploaded, namespace=namespace,
                                context=self.options.context, staging=staging)
            self.emit(Event("share", f"womm: share: syncback from pod {pod}: "
                                     f"{len(result.updated)} files new or changed here, "
                                     f"{len(result.conflicts)} conflicts "
                                     f"({result.seconds:.1f} s)"))
            for path, kept in result.conflicts:
                self.emit(Event("share", f"womm: share: conflict: {path} changed here and on "
                                         f"pod {pod}; yours stays, the pod's is {kept}"))

    def _check_ready(self, slots: _Slots, workers: tuple[WorkerPlan, ...]) -> None:
        self._drain_share_notes()
        while True:
            try:
                name, why = self._gone.get_nowait()
            except queue.Empty:
                break
            if name in slots.gone:
                continue
            diagnosis = self._diagnose(name)
            self._lost_reasons.append(f"{name}: {why}" + (f"\n{diagnosis}" if diagnosis else ""))
            slots.mark_gone(name)
            self.emit(Event("lost", f"womm: worker {name} stopped ({why}); its slots moved to "
                                    f"{len(slots.ready)} live worker(s)"))
        for worker in workers:
            # A place left by a lost pod is taken again by its replacement.
            if worker.name not in slots.ready and worker.socket.exists():
                slots.gone.discard(worker.name)
                slots.mark_ready(worker)
                self.emit(Event("ready", f"womm: worker {worker.name} ready"))

    def _diagnose(self, name: str) -> str:
        for backend in self._backends:
            text = backend.diagnose(name)
            if text:
                return text
        return ""

    def _await_first_worker(self, slots: _Slots, workers: tuple[WorkerPlan, ...]) -> None:
        deadline = time.monotonic() + self.options.start_timeout
        while not slots.ready:
            if self._cancelled.is_set():
                raise KeyboardInterrupt
            self._check_ready(slots, workers)
            fatal = next(filter(None, (backend.fatal() for backend in self._backends)), "")
            if fatal:
                advice = "Fix the cause (image name, resources, quota) and run again."
                if "PodSecurity" in fatal and "privileged" in fatal:
                    advice = ("--privileged-fuse needs privileged pods, which this namespace's "
                              "Pod Security level forbids: ask an admin for a namespace at the "
                              "privileged level (kubectl label namespace NS "
                              "pod-security.kubernetes.io/enforce=privileged), or use --share "
                              "eager.")
                raise BackendError(f"the workers cannot start: {fatal}. {advice}",
                                   "\n\n".join(filter(None, (self._diagnose(w.name)
                                                             for w in workers[:1]))))
            if len(slots.gone) == len(workers):
                raise ImageError(
                    f"every worker stopped before its agent started: check that image "
                    f"{self.options.image or '(default)'} has perl and a shell.",
                    "\n\n".join(self._lost_reasons))
            if time.monotonic() > deadline:
                details = "\n\n".join(filter(None, (self._diagnose(w.name) for w in workers)))
                raise BackendError(
                    f"no worker became ready within {self.options.start_timeout:g} s: raise "
                    "--start-timeout or look at the workers below.", details)
            time.sleep(0.02)
        # Docker starts every container at once: give the others a moment to join so the
        # first jobs spread out, without holding the run for stragglers.
        settle = time.monotonic() + 2.0
        while len(slots.ready) + len(slots.gone) < len(workers) and time.monotonic() < settle:
            self._check_ready(slots, workers)
            time.sleep(0.02)

    def _run_parallel(self, tdir: Path, client: Path, slots: _Slots,
                      workers: tuple[WorkerPlan, ...]) -> int:
        joblog = Path(self.args.joblog) if self.args.joblog else tdir / "joblog"
        if not joblog.is_absolute():
            joblog = self.cwd / joblog
        argv = [_paths.perl(), str(_paths.vendored_parallel()), "-j", str(len(slots.owner_of))]
        if not self.args.joblog:
            argv += ["--joblog", str(joblog)]
        # Records come from this run's rows only. GNU parallel truncates the user's joblog (or
        # appends to a +FILE one) once it has started, after womm's first read: drop the old
        # file now, or skip the rows it already holds.
        offset = 0
        if self.args.joblog and joblog.is_file():
            if self.args.joblog_append:
                offset = joblog.stat().st_size
            else:
                joblog.unlink()
        argv += list(self.args.argv)
        env = dict(os.environ, PARALLEL_SHELL=str(client), WOMM_SLOTS=str(tdir / "s"),
                   WOMM_JOBS=str(tdir / "j"), WOMM_ENV=" ".join(self.args.env_names),
                   WOMM_CONNECT_TIMEOUT=f"{self.options.start_timeout:.0f}")
        null = "-0" in self.args.argv or "--null" in self.args.argv
        stdin: Any = subprocess.PIPE if self.inputs is not None else self.stdin
        pipe = subprocess.PIPE if self.capture else None
        self._parallel = subprocess.Popen(argv, cwd=self.cwd, env=env, stdin=stdin, stdout=pipe,
                                          stderr=pipe, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        threads = []
        if self.inputs is not None:
            payload = "".join(line + ("\0" if null else "\n") for line in self.inputs).encode()
            threads.append(threading.Thread(target=self._feed, args=(payload,), daemon=True))
        if self.capture:
            assert self._parallel.stdout and self._parallel.stderr
            threads += [threading.Thread(target=self._pump, args=(stream, kind), daemon=True)
                        for stream, kind in ((self._parallel.stdout, "stdout"),
                                             (self._parallel.stderr, "stderr"))]
        for thread in threads:
            thread.start()
        reader = JoblogReader(joblog, tdir / "j", _job_inputs(self.args.argv, self.inputs),
                              offset)
        total = _total(self.args.argv, self.inputs)
        last_beat = 0.0
        lost_since: float | None = None
        failed = 0
        while True:
            exited = self._parallel.poll() is not None
            self._check_ready(slots, workers)
            for record in reader.read_new():
                self.records.append(record)
                failed += not record.ok
                self.emit(Event("record", data=record))
            started = tdir.joinpath("j", "started")
            running = max(0, (started.stat().st_size if started.exists() else 0)
                          - len(self.records))
            self.emit(Event("progress", data=Progress(total, len(self.records), failed,
                                                      0 if exited else running,
                                                      len(slots.ready), len(workers))))
            if self._cancelled.is_set():
                raise KeyboardInterrupt  # after the last records were read: they are kept
            if exited:
                break
            now = time.monotonic()
            if slots.ready:
                lost_since = None
            else:
                # Kubernetes replaces lost pods: wait for one, unless it cannot come.
                lost_since = lost_since or now
                fatal = "; ".join(filter(None, (b.fatal() for b in self._backends)))
                replacing = any(b.replaces_workers for b in self._backends) and not fatal
                if not replacing or now - lost_since > self.options.start_timeout:
                    self._stop_parallel()
                    raise WorkersLostError(
                        f"all {len(workers)} workers stopped while jobs remained"
                        f"{f' ({fatal})' if fatal else ''}; no job ran on this machine. Rerun, "
                        "with --retries N to re-run a lost worker's jobs.",
                        "\n\n".join(self._lost_reasons))
            if now - last_beat > tasks.HEARTBEAT_SECONDS:
                tasks.touch_heartbeat(self.task_id)
                for backend in self._backends:
                    backend.heartbeat()
                last_beat = now
            time.sleep(_POLL)
        for thread in threads:
            thread.join()
        self.parallel_exit = self._parallel.returncode
        return self.parallel_exit

    def _feed(self, payload: bytes) -> None:
        assert self._parallel and self._parallel.stdin
        try:
            self._parallel.stdin.write(payload)
            self._parallel.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def _pump(self, stream: IO[bytes], kind: str) -> None:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            self.emit(Event(kind, data=chunk))

    def _stop_parallel(self) -> None:
        proc = self._parallel
        if proc is None or proc.poll() is not None:
            return
        # GNU parallel and every job client share its session: TERM them all (clients close
        # their sockets, so agents kill the jobs on the workers), then make sure.
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
