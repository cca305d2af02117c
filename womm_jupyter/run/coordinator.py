"""The coordinator: start workers, run GNU parallel over them, collect records, clean up.

GNU parallel runs locally with ``-j SLOTS`` and ``PARALLEL_SHELL`` pointing at womm's tiny job
client (``transport/womm_sh.pl``). Job slot *k* is a socket in the task's ``s/`` directory: a
symlink to the agent socket of the worker serving that slot. When a worker stops, its slots
are re-pointed at live workers at once; when none is left the run fails. Nothing ever runs on
this machine unless ``--local-procs`` asked for local slots.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import _paths, tasks
from ..backends import Backend, LocalBackend, WorkerPlan, select_backend
from ..errors import BackendError, ImageError, WommError, WorkersLostError
from ..naming import new_task_id, task_object_name
from ..options import ParallelOptions
from ..share.session import ShareSession
from . import gnu as _parallel
from .plan import plan_run, task_record, write_client
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
        self._share: ShareSession | None = None

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
            if self._share is not None:
                self._share.close()
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
    def _run(self, tdir: Path) -> int:
        backend, reason = select_backend(self.options.backend, self.options.context,
                                         self.options.namespace)
        self.emit(Event("backend", reason))
        plan = plan_run(self.options, task_id=self.task_id, cwd=self.cwd, argv=self.args.argv,
                        task_dir=tdir, backend_name=backend.name)
        client = write_client(tdir)
        workers = plan.workers
        tasks.write_task(self.task_id, task_record(plan, backend.name))
        tasks.touch_heartbeat(self.task_id)

        def on_gone(name: str, why: str) -> None:
            self._gone.put((name, why))

        # Before the backend counts as launched: a refused share leaves nothing to delete.
        self._share = ShareSession(backend, self.cwd, self.task_id, value=self.options.share,
                                   privileged_fuse=self.options.privileged_fuse,
                                   context=self.options.context,
                                   start_timeout=self.options.start_timeout)
        self._emit_share_notes()
        self._backends.append(backend)
        kind = backend.launch(self._share.plan(plan.main), on_gone)
        self.emit(Event("created", f"{kind}/{task_object_name(self.task_id)} created"))
        if plan.local:
            local_backend = LocalBackend()
            self._backends.append(local_backend)
            local_backend.launch(plan.local, on_gone)
        slots = _Slots(tdir / "s", workers)
        self._await_first_worker(slots, workers)
        code = self._run_parallel(tdir, client, slots, workers)
        self._emit_share_notes()
        self._share.after_run()
        self._emit_share_notes()
        return code

    def _emit_share_notes(self) -> None:
        for text in self._share.notes() if self._share else ():
            self.emit(Event("share", text))

    def _check_ready(self, slots: _Slots, workers: tuple[WorkerPlan, ...]) -> None:
        self._emit_share_notes()
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
        reader = JoblogReader(joblog, tdir / "j", _parallel.job_inputs(self.args.argv, self.inputs),
                              offset)
        total = _parallel.job_count(self.args.argv, self.inputs)
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
