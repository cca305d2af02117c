"""Experiments (kuboid's ``monitor_experiment``, working): one pod per task line.

Each task line (from a file that may grow while the experiment runs, or from a stream such as
standard input) runs as ``sh -c LINE`` in a pod of its own. The log directory is the ledger
(:mod:`.ledger`): ``<key>.log`` only once the task's pod completed with exit status 0 (a task
whose log exists is never run again, so running the same experiment again resumes it);
``<key>.failed`` when it failed (non-zero exit or OOM-killed) on its first run and on all
``--max-retries`` retries. A ``.failed`` report does not stop a later run from trying again.

``<key>`` is the task's line number and a sanitised, collision-free form of the line
(:func:`~womm_jupyter.naming.experiment_task_key`). Pod names carry the experiment id, the line
number and the attempt (:func:`~womm_jupyter.naming.experiment_pod_name`): unique by
construction. Pods carry ``app.kubernetes.io/managed-by=womm``, ``womm/task=<experiment id>``,
``womm/owner`` and ``womm/experiment-task=<line number>``; the experiment watches, changes and
deletes only pods with its own id.

Pods are followed with a watch from a listed resourceVersion (relisted on 410 Gone), never by
polling (:mod:`.monitor`). A pod that vanishes (deleted, evicted, pre-empted, its node lost)
is rescheduled and does not count as a failed attempt. The task file is checked for appended
lines once a second.

The core never prints: :class:`Experiment` reports :class:`ExperimentEvent`s (``progress``
carries a :class:`Progress`) to whoever iterates :meth:`Experiment.events`, and calls the
listeners added with :meth:`Experiment.add_listener` (widgets) on its own thread.

In the cluster, an experiment ``<id>`` is a root ConfigMap ``womm-task-<id>`` (label
``womm/role=experiment``; annotations for `womm status`), a Lease of the same name that the
running client renews every :data:`~womm_jupyter.kube.client.HEARTBEAT_SECONDS`, and its
pods; the Lease and the pods carry an ownerReference to the root, so deleting the root
deletes everything. `womm status` lists experiments (:func:`.tasks.tasks`: RUNNING, or
ORPHANED once the Lease went stale because the client died) and `womm finish ID`
(:func:`.tasks.finish`) deletes them.
"""

from __future__ import annotations

import dataclasses
import html
import os
import queue
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ImageError, OptionError, WommError
from ..events import EventStream, HandleStatus
from ..kube import manifests
from ..kube.client import (
    HEARTBEAT_SECONDS,
    IMAGE_PULL_FAILURES,
    ApiError,
    clients,
    delete_pod,
    renew_lease,
)
from ..kube.shared_volume import shared_claim
from ..labels import (
    LABEL_ATTEMPT,
    LABEL_EXPERIMENT_TASK,
    LABEL_OWNER,
    LABEL_TASK,
    MANAGED_BY,
    NOTE_COMMAND,
    NOTE_LOG,
    NOTE_LOG_DIR,
    describe,
)
from ..naming import experiment_pod_name, experiment_task_key, new_task_id, owner, task_object_name
from ..options import ExperimentOptions
from .ledger import Progress, TaskFile, TaskOutcome, count, log_path, write_failure, write_log
from .monitor import VANISHED_REASONS, terminated, watch_pods
from .tasks import create_root, delete_root

__all__ = ["Experiment", "ExperimentEvent", "Progress", "TaskOutcome"]
_LOG_TAIL_LINES = 40
_FILE_CHECK_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class ExperimentEvent:
    """Something a face may show. ``kind`` is one of ``started``, ``progress`` (``data`` is a
    :class:`Progress`), ``completed``, ``rescheduled``, ``retry``, ``failed`` (``data`` is a
    :class:`TaskOutcome`), ``waiting`` (a pod cannot be scheduled yet), ``deleted``."""

    kind: str
    text: str = ""
    data: Any = None


_FINISHED = ExperimentEvent("finished")


class Experiment(EventStream[ExperimentEvent, list[TaskOutcome]]):
    """A running experiment: pods for task lines, until every task is done or failed.

    Starts at once on a background thread. ``events()`` yields what happens; ``cancel()``
    stops it (every pod of the experiment is deleted, as at the end of a normal run);
    ``result()`` waits and returns the tasks, or raises what stopped the experiment.

    Parameters
    ----------
    options:
        the experiment's options (image, task file, log directory, retries, pod size...).
    lines:
        the task lines when ``options.task_file`` is empty (e.g. ``sys.stdin``); read on a
        thread of their own as they come.
    source:
        what ``lines`` are, for messages (e.g. "the cell").
    """

    def __init__(self, options: ExperimentOptions, lines: Iterable[str] | None = None, *,
                 source: str = "standard input") -> None:
        super().__init__(_FINISHED)
        if not options.task_file and lines is None:
            raise OptionError("womm experiment run: give the tasks with -f TASKFILE or on "
                              "standard input, one shell command line per line")
        self.options = options
        self.id = new_task_id()
        self.owner = owner()
        self.log_dir = Path(options.log_dir)
        self._task_file = Path(options.task_file) if options.task_file else None
        if self._task_file is not None and not self._task_file.is_file():
            raise OptionError(f"--task-file: {self._task_file} is not a file: give an existing "
                              "file of task lines, or pipe the lines in")
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(f"--log-dir: cannot create {self.log_dir} ({exc.strerror}): "
                              "choose a directory you may write") from None
        self.clients = clients(options.context, options.namespace)
        self.namespace = self.clients.namespace
        self.core = self.clients.core
        self.tasks: dict[int, TaskOutcome] = {}
        # status: running | done (all tasks done) | failed | cancelled (HandleStatus)
        self.progress = Progress()
        self._lines = lines
        self._source = source
        self._input_done = lines is None  # a file has no end; a stream ends at EOF
        self._file = TaskFile(self._task_file) if self._task_file else None
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._waiting_reported: set[str] = set()
        self._root_uid = ""
        self._shared_claim = ""  # the namespace's /shared (read once the experiment starts)
        self.finished_elsewhere = False  # `womm finish ID` deleted it while it ran
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"womm-experiment-{self.id}")
        self._thread.start()

    # -- faces (events, add_listener, done, wait: EventStream) --------------------------------
    def snapshot(self) -> list[TaskOutcome]:
        """Copies of the tasks as they are now, in line order (safe from any thread)."""
        while True:
            try:
                items = sorted(self.tasks.items())
                return [dataclasses.replace(task, failures=list(task.failures))
                        for _, task in items]
            except RuntimeError:  # the dict changed size while it was read: read again
                continue

    @property
    def df(self) -> Any:
        """A pandas DataFrame, one row per task line: ``line`` (the number in the task list),
        ``command``, ``pod`` (the latest attempt's), ``state``, ``attempts``, ``log`` (the
        log's path once the task completed, else "")."""
        import pandas as pd

        columns = ["line", "command", "pod", "state", "attempts", "log"]
        rows = [(task.index, task.command, task.last_pod or task.pod, task.status,
                 task.attempts, task.log) for task in self.snapshot()]
        return pd.DataFrame(rows, columns=columns)

    def widget(self) -> Any:
        """A live table of the tasks and the progress line (ipywidgets)."""
        from ..widgets.experiment import ExperimentView

        return ExperimentView(self)

    def table_html(self) -> str:
        """The tasks as an HTML table: line, command, pod, state, attempts."""
        head = "".join(f"<th style='text-align:left'>{name}</th>"
                       for name in ("line", "command", "pod", "state", "attempts"))
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(cell))}</td>"
                             for cell in (task.index, task.command, task.last_pod or task.pod,
                                          task.status, task.attempts)) + "</tr>"
            for task in self.snapshot())
        return (f"<table class='womm-experiment'><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def _repr_html_(self) -> str:
        return (f"<p>experiment {html.escape(self.id)} ({html.escape(self.status)}): "
                f"{html.escape(self.progress.line())}; logs in "
                f"{html.escape(str(self.log_dir))}</p>" + self.table_html())

    def __repr__(self) -> str:
        return f"<Experiment {self.id} {self.status}: {self.progress.line()}>"

    def cancel(self) -> None:
        """Stop: delete every pod of this experiment; logs already saved stay."""
        self._stop.set()
        self._inbox.put(("wake",))

    def result(self) -> list[TaskOutcome]:
        """Wait; return every task in line order, or raise what stopped the experiment."""
        return super().result()

    def _outcome(self) -> list[TaskOutcome]:
        return [self.tasks[index] for index in sorted(self.tasks)]

    @property
    def selector(self) -> str:
        """Label selector of this experiment's pods."""
        return manifests.selector(task_id=self.id)

    # -- the experiment's thread ------------------------------------------------------------
    def _emit(self, kind: str, text: str = "", data: Any = None) -> None:
        self._publish(ExperimentEvent(kind, text, data))

    def _notify(self, event: ExperimentEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a face's bug must not stop the experiment (or its cleanup)
                pass

    def _main(self) -> None:
        try:
            self._run()
            failed = any(task.status == "failed" for task in self.tasks.values())
            self.status = HandleStatus.CANCELLED if self._stop.is_set() else (
                HandleStatus.FAILED if failed else HandleStatus.DONE)
        except BaseException as exc:  # kept for result(); the face decides how to show it
            self.error = exc
            self.status = HandleStatus.FAILED
        finally:
            try:
                self._cleanup()
            except WommError as exc:  # an unreachable API, a Forbidden: the first error stays
                self.error = self.error or exc
            finally:  # whatever happened, whoever waits learns that it ended
                self._end()

    def _run(self) -> None:
        self._shared_claim = shared_claim(self.core, self.namespace)
        self._create_root()
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        threading.Thread(target=watch_pods, args=(
            self.core, self.namespace, self.selector, listed.metadata.resource_version,
            self._stop, self._inbox), daemon=True, name=f"womm-experiment-watch-{self.id}").start()
        if self._lines is not None:
            threading.Thread(target=self._read_lines, daemon=True,
                             name=f"womm-experiment-input-{self.id}").start()
        source = str(self._task_file) if self._task_file else self._source
        self._emit("started", f"experiment {self.id}: tasks from {source}, logs in "
                              f"{self.log_dir}, pods in namespace {self.namespace}")
        self._read_file(final=False)
        last_check = time.monotonic()
        while not self._stop.is_set():
            self._schedule()
            self._report_progress()
            if self._finished():
                self._read_file(final=True)  # a last line without its newline counts too
                if self._finished():
                    return
                continue
            try:
                item = self._inbox.get(timeout=_FILE_CHECK_SECONDS)
            except queue.Empty:
                item = ("wake",)
            self._handle(item)
            while True:  # drain what else arrived before scheduling again
                try:
                    self._handle(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if time.monotonic() - last_check >= _FILE_CHECK_SECONDS:
                last_check = time.monotonic()
                self._read_file(final=False)

    def _create_root(self) -> None:
        """The root ConfigMap and the heartbeat Lease (owned by it); start the heartbeat."""
        source = self.options.task_file or self._source
        annotations = {**describe(os.getcwd(), f"experiment -i {self.options.image} ({source})",
                                  self.options.kube_cpu, self.options.kube_mem,
                                  host=socket.gethostname(), pid=os.getpid()),
                       NOTE_LOG_DIR: str(self.log_dir.resolve())}
        self._root_uid = create_root(self.clients, self.id, self.owner, annotations)
        threading.Thread(target=self._heartbeat, daemon=True,
                         name=f"womm-experiment-heartbeat-{self.id}").start()

    def _heartbeat(self) -> None:
        name = task_object_name(self.id)
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                renew_lease(self.clients, name)
            except ApiError as exc:  # a missed beat is not fatal; the next one may pass
                if exc.status == 404 and not self._stop.is_set():
                    # `womm finish ID` from elsewhere deleted the experiment: stop with it.
                    self.finished_elsewhere = True
                    self.cancel()
                    return

    def _finished(self) -> bool:
        return self._input_done and all(task.status in ("done", "failed")
                                        for task in self.tasks.values())

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "line":
            self._add_task(item[1], item[2])
        elif kind == "eof":
            self._input_done = True
        elif kind == "pod":
            self._pod_event(item[1], item[2])
        elif kind == "relist":
            present = {pod.metadata.name for pod in item[1]}
            for task in self.tasks.values():
                if task.pod and task.pod not in present and task.status in ("pending",
                                                                            "running"):
                    self._vanished(task, "its pod is gone")
            for pod in item[1]:
                self._pod_event("MODIFIED", pod)
        elif kind == "error":
            raise item[1]

    # -- task input -------------------------------------------------------------------------
    def _read_lines(self) -> None:
        assert self._lines is not None
        try:
            for number, line in enumerate(self._lines, start=1):
                if self._stop.is_set():
                    return
                self._inbox.put(("line", number, line.rstrip("\r\n")))
        finally:
            self._inbox.put(("eof",))

    def _read_file(self, final: bool) -> None:
        if self._file is None:
            return
        for number, line in self._file.read(final):
            self._add_task(number, line)

    def _add_task(self, index: int, line: str) -> None:
        command = line.strip()
        if not command or command.startswith("#"):
            return
        task = TaskOutcome(index=index, command=command, key=experiment_task_key(index, command))
        if log_path(self.log_dir, task).exists():
            task.status, task.skipped = "done", True
            task.log = str(log_path(self.log_dir, task))
        self.tasks[index] = task

    # -- pods -------------------------------------------------------------------------------
    def _schedule(self) -> None:
        active = sum(task.status in ("pending", "running") for task in self.tasks.values())
        for index in sorted(self.tasks):
            task = self.tasks[index]
            if task.status != "waiting":
                continue
            if self.options.max_pods and active >= self.options.max_pods:
                return
            if log_path(self.log_dir, task).exists():  # another run of this experiment finished it
                task.status, task.skipped = "done", True
                task.log = str(log_path(self.log_dir, task))
                continue
            self._create_pod(task)
            active += 1

    def _create_pod(self, task: TaskOutcome) -> None:
        name = experiment_pod_name(self.id, task.index, task.attempts, task.command)
        labels = {MANAGED_BY: "womm", LABEL_TASK: self.id, LABEL_OWNER: self.owner,
                  LABEL_EXPERIMENT_TASK: str(task.index), LABEL_ATTEMPT: str(task.attempts)}
        annotations = {NOTE_COMMAND: task.command, NOTE_LOG: f"{task.key}.log",
                       NOTE_LOG_DIR: str(self.log_dir.resolve())}
        body = manifests.experiment_pod(
            name=name, image=self.options.image, command=task.command, labels=labels,
            annotations=annotations, cpu=f"{self.options.kube_cpu:g}",
            memory=self.options.kube_mem,
            root=(task_object_name(self.id), self._root_uid) if self._root_uid else None,
            shared_claim=self._shared_claim)
        self.core.create_namespaced_pod(self.namespace, body)
        task.pod, task.last_pod, task.status = name, name, "pending"
        task.attempts += 1

    def _task_of(self, pod: Any) -> TaskOutcome | None:
        labels = pod.metadata.labels or {}
        if labels.get(LABEL_TASK) != self.id:  # only this experiment's pods, ever
            return None
        try:
            task = self.tasks.get(int(labels.get(LABEL_EXPERIMENT_TASK, "")))
        except ValueError:
            return None
        # Events of an earlier attempt's pod (being deleted) say nothing about the task.
        return task if task is not None and task.pod == pod.metadata.name else None

    def _pod_event(self, kind: str, pod: Any) -> None:
        task = self._task_of(pod)
        if task is None or task.status not in ("pending", "running"):
            return
        if kind == "DELETED":
            self._vanished(task, "its pod was deleted")
            return
        phase = pod.status.phase if pod.status else None
        if phase == "Succeeded":
            self._completed(task, pod)
        elif pod.metadata.deletion_timestamp is not None:
            self._vanished(task, "its pod is being deleted")
        elif phase == "Failed":
            ended = terminated(pod)
            if (pod.status.reason in VANISHED_REASONS or ended is None):
                self._vanished(task, f"its pod was stopped ({pod.status.reason or 'no exit'}"
                                     f": {pod.status.message or 'no message'})")
            else:
                self._failed(task, pod, ended)
        elif phase == "Running":
            task.status = "running"
        else:
            self._pending(task, pod)

    def _pending(self, task: TaskOutcome, pod: Any) -> None:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in IMAGE_PULL_FAILURES:
                raise ImageError(f"pod {pod.metadata.name} cannot get image "
                                 f"{self.options.image} ({waiting.reason}): check the name "
                                 "and that the cluster can pull it, then run the experiment "
                                 "again (finished tasks keep their logs).",
                                 waiting.message or "")
        for condition in pod.status.conditions or []:
            if (condition.type == "PodScheduled" and condition.status == "False"
                    and task.pod not in self._waiting_reported):
                self._waiting_reported.add(task.pod)
                self._emit("waiting", f"{task.pod} waits for room: {condition.reason}: "
                                      f"{condition.message}")

    def _completed(self, task: TaskOutcome, pod: Any) -> None:
        try:
            log = self._pod_log(pod.metadata.name)
        except Exception as exc:  # gone before its log was read: run it again
            self._vanished(task, f"its log could not be read ({exc})")
            return
        path = write_log(self.log_dir, task, log, self.id)
        task.status, task.pod, task.log = "done", "", str(path)
        self._delete_pod(pod.metadata.name)
        self._emit("completed", f"{task.key}: completed ({pod.metadata.name})", task)

    def _failed(self, task: TaskOutcome, pod: Any, terminated: Any) -> None:
        task.oom_killed = terminated.reason == "OOMKilled"
        why = ("OOM-killed (over --kube-mem " + self.options.kube_mem + ")"
               if task.oom_killed else f"exited with status {terminated.exit_code}")
        task.failures.append(f"{pod.metadata.name}: {why}")
        try:
            tail = b"\n".join(self._pod_log(pod.metadata.name).splitlines()[-_LOG_TAIL_LINES:])
        except Exception:
            tail = b""
        name = pod.metadata.name
        task.pod = ""
        self._delete_pod(name)
        if len(task.failures) <= self.options.max_retries:
            task.status = "waiting"
            self._emit("retry", f"{task.key}: {why}; retry {len(task.failures)} of "
                                f"{self.options.max_retries}", task)
            return
        task.status = "failed"
        marker = write_failure(self.log_dir, task, tail, self.id)
        self._emit("failed", f"{task.key}: {why} on each of {task.attempts} attempts; see "
                             f"{marker}", task)

    def _vanished(self, task: TaskOutcome, why: str) -> None:
        name = task.pod
        task.pod, task.status = "", "waiting"
        task.rescheduled += 1
        self._delete_pod(name)
        self._emit("rescheduled", f"{task.key}: {why} ({name}); rescheduled", task)

    def _pod_log(self, name: str) -> bytes:
        response = self.core.read_namespaced_pod_log(name, self.namespace, container="task",
                                                     _preload_content=False)
        return bytes(response.data)

    def _delete_pod(self, name: str) -> None:
        delete_pod(self.core, self.namespace, name)

    def _report_progress(self) -> None:
        progress = count(self.tasks.values())
        if progress != self.progress:
            self.progress = progress
            self._emit("progress", progress.line(), progress)

    def _cleanup(self) -> None:
        """Delete every pod of this experiment that is left (at the end, on Ctrl-C)."""
        self._stop.set()
        left = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        for pod in left.items:
            self._delete_pod(pod.metadata.name)
            self._emit("deleted", f"pod/{pod.metadata.name} deleted")
        if self._root_uid and not self.finished_elsewhere:
            # The root last: deleting it also removes the Lease (and any pod created since).
            delete_root(self.clients, self.id)

