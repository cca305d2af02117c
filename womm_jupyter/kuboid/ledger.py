"""An experiment's ledger: its tasks, their counts, and the log directory that records them.

The log directory is what survives an experiment (see :mod:`.experiment`): ``<key>.log``
exists only for a task whose pod completed with exit status 0, ``<key>.failed`` for one that
failed every attempt. Both are written to a temporary name and renamed, so a file is either
complete or absent. :class:`TaskFile` reads the task lines of a file that may grow while the
experiment runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import OptionError

__all__ = ["Progress", "TaskFile", "TaskOutcome", "count", "failure_path", "log_path",
           "write_failure", "write_log"]


@dataclasses.dataclass(frozen=True)
class Progress:
    """Counts of an experiment's tasks. ``done`` includes ``skipped`` (logs found at start);
    ``failed`` counts tasks that failed every attempt; ``rescheduled`` and ``retried`` count
    pods started again (after vanishing, after failing)."""

    total: int = 0
    done: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    rescheduled: int = 0
    retried: int = 0
    skipped: int = 0

    def line(self) -> str:
        """``12 tasks: 7 done, 2 running, 3 pending, 0 failed, 1 rescheduled, 0 retried``."""
        return (f"{self.total} tasks: {self.done} done, {self.running} running, "
                f"{self.pending} pending, {self.failed} failed, {self.rescheduled} rescheduled, "
                f"{self.retried} retried")


@dataclasses.dataclass
class TaskOutcome:
    """One task line and what became of it."""

    index: int  # line number in the task file (1-based)
    command: str
    key: str
    status: str = "waiting"  # waiting | pending | running | done | failed
    pod: str = ""  # the current attempt's pod, "" when none
    attempts: int = 0  # pods started
    failures: list[str] = dataclasses.field(default_factory=list)
    oom_killed: bool = False  # the last failure was an OOM kill
    rescheduled: int = 0
    skipped: bool = False  # its log was there before the experiment started it
    last_pod: str = ""  # the latest attempt's pod (kept after it was deleted)
    log: str = ""  # path of its log once it completed


def count(tasks: Iterable[TaskOutcome]) -> Progress:
    """The :class:`Progress` of ``tasks``: a failed task's first failure is no retry."""
    tasks = list(tasks)
    return Progress(
        total=len(tasks),
        done=sum(task.status == "done" for task in tasks),
        running=sum(task.status == "running" for task in tasks),
        pending=sum(task.status in ("pending", "waiting") for task in tasks),
        failed=sum(task.status == "failed" for task in tasks),
        rescheduled=sum(task.rescheduled for task in tasks),
        retried=sum(len(task.failures) for task in tasks if task.status != "failed")
        + sum(len(task.failures) - 1 for task in tasks if task.status == "failed"),
        skipped=sum(task.skipped for task in tasks))


def log_path(log_dir: Path, task: TaskOutcome) -> Path:
    """Where the task's log is once it completed."""
    return log_dir / f"{task.key}.log"


def failure_path(log_dir: Path, task: TaskOutcome) -> Path:
    """Where the report of a task that failed every attempt is."""
    return log_dir / f"{task.key}.failed"


def _write_whole(path: Path, data: bytes, writer: str) -> None:
    # A temporary name per experiment (``writer``), then a rename: two runs of the same
    # experiment never see each other's half-written file.
    temporary = path.with_name(f".{path.name}.{writer}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_log(log_dir: Path, task: TaskOutcome, log: bytes, writer: str) -> Path:
    """Record the task as completed with ``log``: a later run skips it; an earlier failure
    report goes."""
    path = log_path(log_dir, task)
    _write_whole(path, log, writer)  # a log is either complete or absent
    failure_path(log_dir, task).unlink(missing_ok=True)
    return path


def write_failure(log_dir: Path, task: TaskOutcome, tail: bytes, writer: str) -> Path:
    """Record that the task failed every attempt: the attempts, their reasons, the last log
    lines (``tail``)."""
    marker = failure_path(log_dir, task)
    report = (f"command: {task.command}\nattempts: {task.attempts}\n"
              + "".join(f"failure: {failure}\n" for failure in task.failures)
              + f"oom-killed: {'yes' if task.oom_killed else 'no'}\n"
              + "last log lines:\n").encode() + tail + b"\n"
    _write_whole(marker, report, writer)
    return marker


class TaskFile:
    """The lines of a task file that may grow: each :meth:`read` returns the lines appended
    since the last one, numbered from 1 in the file; a last line without its newline is held
    back until ``final``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._lines = 0
        self._partial = b""

    def read(self, final: bool) -> list[tuple[int, str]]:
        """The complete lines appended since the last call, as ``(number, line)``."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError as exc:
            raise OptionError(f"--task-file: cannot read {self.path} "
                              f"({exc.strerror})") from None
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        lines = []
        for raw in complete:
            self._lines += 1
            lines.append((self._lines, raw.decode("utf-8", "surrogateescape").rstrip("\r")))
        return lines

