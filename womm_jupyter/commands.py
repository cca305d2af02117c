"""What the faces do, decided once: each face (the CLI, the magics, the dashboard) only parses
and renders.

- tasks: :func:`status` (this machine's tasks), the `womm status` row (:data:`STATUS_HEADER`,
  :func:`age`, :func:`status_row`, :func:`status_lines`), :func:`finish` (delete) and
  :func:`collect_and_finish` (`womm finish`: an --async task's output first);
- runs: :func:`split_at_dashes` (womm's words before the first ``--``, GNU parallel's after),
  :data:`TEXT_EVENTS` (the event kinds shown as text), :func:`submit_async` and
  :func:`async_started` (`--async` and what to do next), :func:`citation_output`;
- :func:`stream_logs` (`womm logs`);
- experiments: :func:`experiment_summary`, :func:`experiment_cancelled`;
- the help texts both faces' parsers share (:data:`DESCRIPTIONS`, :data:`DASHES_EPILOG`).

Nothing here prints; messages come back as strings or through callbacks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from . import tasks
from .backends import Backend, LocalBackend, TaskInfo, kubernetes_configured
from .backends.docker import DockerBackend, connect
from .backends.kubernetes import KubernetesBackend
from .errors import MissingToolError, TaskNotFoundError
from .events import EventKind
from .kube import manifests
from .kube.client import load_config
from .kuboid import experiment as experiments
from .kuboid import tasks as experiment_tasks
from .naming import check_task_id
from .options import ParallelOptions
from .run import detached, gnu

__all__ = ["DASHES_EPILOG", "DESCRIPTIONS", "STATUS_HEADER", "TEXT_EVENTS", "age",
           "async_started", "citation_output", "cluster_setup", "collect",
           "collect_and_finish", "experiment_cancelled", "experiment_summary", "finish",
           "has_input_sources", "missing_dashes", "split_at_dashes", "split_line_at_dashes",
           "status", "status_lines", "status_row", "stream_logs", "submit_async"]

# -- help shared by the CLI's and the magics' parsers ------------------------------------------
DESCRIPTIONS = {
    "status": "ID AGE STATUS CPU MEM HEALTH PWD COMMAND of each task. STATUS is RUNNING, "
              "COMPLETE (awaiting `womm finish`) or ORPHANED (its coordinator is gone: "
              "`womm finish ID`).",
    "finish": "Stop a task's coordinator if it still runs and delete its workers and state.",
    "logs": "Print the output of an --async task's leader (GNU parallel's stdout and stderr, "
            "womm's messages); with -f, follow it until the run ends.",
    "shell": "Start one worker of the project image (a pod on Kubernetes, a container on "
             "Docker) with the working directory as cwd: with no command an interactive "
             "terminal (window size follows, Ctrl-C goes to the remote process), with a "
             "command its output and exit status. The worker is deleted when the shell ends.",
    "setup": "Choose how the project directory is shared, a base image and an image prefix; "
             "make your application work in a local testbed shell (a container of the base "
             "image with this directory at the same path and this machine at /mnt); the "
             "exported variables and everything installed become the image jobs run, pushed "
             "and recorded in .womm/config.json.",
}

DASHES_EPILOG = """\
Everything after `--` goes to GNU parallel unchanged: its options (-k, -0, --colsep, --tag,
--joblog, --results, --retries, --halt, --timeout, ...), the command with {} {.} {/} {#},
and input sources (::: values, :::: files, or standard input). womm chooses where jobs run,
so GNU parallel's -j, -S, --sshlogin and --ssh are refused.
"""


# -- the `--` convention -----------------------------------------------------------------------
def split_at_dashes(words: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Words before the first ``--`` and after it (None when there is no ``--``).

    womm's options come before ``--``; what follows (GNU parallel's options and command, a
    shell's command) passes unchanged, as IPython's ``%%script`` does it.
    """
    words = list(words)
    if "--" not in words:
        return words, None
    cut = words.index("--")
    return words[:cut], words[cut + 1:]


_DASHES = re.compile(r"(?:^|\s)--(?:\s|$)")


def split_line_at_dashes(line: str) -> tuple[str, str | None]:
    """:func:`split_at_dashes` for an unsplit line whose tail must stay verbatim (a command
    line for a shell: quotes and ``$VAR`` reach it as typed); the tail is stripped."""
    found = _DASHES.search(line)
    if found is None:
        return line, None
    return line[:found.start()], line[found.end():].strip()


def missing_dashes(prog: str) -> str:
    """The message for a `parallel` verb given no ``--`` (``prog``: how the face names it)."""
    return (f"{prog}: put GNU parallel's options and command after `--`, e.g. "
            f"{prog} --kube-pods 3 -- wc -l {{}}")


def has_input_sources(parallel_words: Sequence[str]) -> bool:
    """Whether GNU parallel's arguments carry the inputs (``:::``, ``::::``...)."""
    return any(word in gnu.INPUT_SEPARATORS for word in parallel_words)


# -- runs ---------------------------------------------------------------------------------------
# Event kinds every face shows as a text line (on stderr), besides job output and progress.
TEXT_EVENTS = frozenset({EventKind.BACKEND, EventKind.CREATED, EventKind.DELETED,
                         EventKind.LOST, EventKind.SHARE})


def submit_async(options: ParallelOptions, parallel_words: list[str], *, cwd: Path,
                 stdin: bytes | None, report: Callable[[str], None]) -> detached.Submitted:
    """Start an ``--async`` run (:func:`womm_jupyter.run.detached.submit`); ``stdin``: the
    input lines, or None when ``parallel_words`` carry them."""
    return detached.submit(options, parallel_words, cwd=cwd, stdin=stdin, report=report)


def async_started(done: detached.Submitted, *, face: Literal["cli", "magic"],
                  namespace_given: bool = False) -> str:
    """What to tell the user once an --async task started: how to follow it, see it and
    collect it, in the face's own verbs (the CLI's repeat ``--namespace`` when it was
    given)."""
    if face == "magic":
        return (f"womm: task {done.task_id} started in namespace {done.namespace}; follow it "
                f"with %womm_logs {done.task_id} -f, collect and clean up with "
                f"%womm_finish {done.task_id}")
    scope = f" --namespace {done.namespace}" if namespace_given else ""
    return (f"womm: task {done.task_id} started in namespace {done.namespace} (leader image "
            f"{done.leader_image}); it runs on without this terminal.\n"
            f"  follow it:       womm logs {done.task_id}{scope} -f\n"
            f"  see its state:   womm status{scope}\n"
            f"  collect output:  womm finish {done.task_id}{scope}")


def citation_output() -> tuple[str, str]:
    """GNU parallel's citation notice, (stdout, stderr), with no terminal to prompt on."""
    done = subprocess.run(gnu.citation_command(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False)
    return done.stdout, done.stderr


# -- tasks ------------------------------------------------------------------------------------
def _backends(context: str = "", namespace: str = "") -> list[Backend]:
    found: list[Backend] = [LocalBackend()]
    try:
        found.append(DockerBackend(connect(timeout=3.0)))
    except MissingToolError:
        pass  # no engine: it can hold no tasks
    if kubernetes_configured() or context:
        found.append(KubernetesBackend(context, namespace))
    return found


def status(all_owners: bool = False, *, context: str = "",
           namespace: str = "") -> list[TaskInfo]:
    """Every task of this owner (or all owners), oldest first: local processes, the Docker
    engine, and the Kubernetes namespace when a configuration is found."""
    rows = [row for backend in _backends(context, namespace) for row in backend.tasks(all_owners)]
    if kubernetes_configured() or context:
        found = detached.tasks(all_owners, context=context, namespace=namespace)
        ids = {row.task_id for row in found}  # their workers' Deployment is the same task
        rows = [row for row in rows if row.task_id not in ids] + found
        rows += experiment_tasks.tasks(all_owners, context=context, namespace=namespace)
    return sorted(rows, key=lambda row: row.created)


STATUS_HEADER = ("ID", "AGE", "STATUS", "CPU", "MEM", "HEALTH", "PWD", "COMMAND")


def age(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``: the largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def status_row(task: TaskInfo, now: float) -> tuple[str, ...]:
    """A task's cells, in :data:`STATUS_HEADER` order."""
    return (task.task_id, age(now - task.created), task.status, task.cpu, task.mem,
            f"{task.ready}/{task.desired}", task.cwd, task.command)


def status_lines(found: Iterable[TaskInfo], now: float) -> list[str]:
    """`womm status` as text: the header and a row per task, in aligned columns (the last,
    COMMAND, unpadded)."""
    rows = [STATUS_HEADER, *(status_row(task, now) for task in found)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATUS_HEADER) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  " + row[-1] for row in rows]


def collect(task_id: str, into: Path, *, context: str = "", namespace: str = "") -> Path | None:
    """Download an --async task's records and output under ``into``; None for other tasks."""
    check_task_id(task_id)
    if not (kubernetes_configured() or context):
        return None
    return detached.download(task_id, into, context=context, namespace=namespace)


def cluster_setup(context: str = "", namespace: str = "", *, pod_security: str = "baseline",
                  **fsserver: str) -> list[dict[str, Any]]:
    """The manifests an admin applies once per namespace (`womm cluster-setup`): first the
    Namespace with its Pod Security labels (``pod_security`` enforced), so that `kubectl apply`
    creates a new namespace before what goes in it; ``fsserver``:
    :func:`manifests.cluster_setup`'s file-server arguments."""
    if not namespace:
        try:
            namespace = load_config(context)[1]
        except MissingToolError:
            namespace = "default"
    return [manifests.namespace_pod_security(namespace, pod_security),
            *manifests.cluster_setup(namespace, **fsserver)]


def finish(task_id: str, *, context: str = "", namespace: str = "") -> list[str]:
    """Stop a task's coordinator if it still runs, delete every object of the task.

    Returns what was deleted, e.g. ``['containers/womm-task-k3xq9m2a']``.

    Raises
    ------
    OptionError
        when ``task_id`` is not a task id (:func:`~womm_jupyter.naming.check_task_id`): a
        path never gets as far as the state directory.
    TaskNotFoundError
        when nothing of the task is found.
    """
    check_task_id(task_id)
    meta = tasks.read_task(task_id)
    if meta and tasks.coordinator_alive(task_id, meta.get("pid"), meta.get("host")):
        os.kill(int(meta["pid"]), signal.SIGTERM)  # it cleans up after itself
    deleted: list[str] = []
    if kubernetes_configured() or context:
        deleted += detached.finish(task_id, context=context, namespace=namespace)
        deleted += experiment_tasks.finish(task_id, context=context, namespace=namespace)
    deleted += [name for backend in _backends(context, namespace)
                for name in backend.finish(task_id) if name not in deleted]
    if not deleted and meta is None:
        raise TaskNotFoundError(f"no task {task_id} on this machine or its Docker engine: "
                                "`womm status` lists the tasks you can finish.")
    tasks.remove(task_id)
    return deleted


def collect_and_finish(task_id: str, into: Path, *, context: str = "", namespace: str = "",
                       saved: Callable[[str], None] = lambda message: None) -> list[str]:
    """`womm finish ID`: an --async task's records and output saved under ``into`` first
    (``saved`` gets the message saying where, before anything is deleted), then
    :func:`finish`."""
    where = collect(task_id, into, context=context, namespace=namespace)
    if where:
        saved(f"womm: task {task_id}: records and output saved in {where}")
    return finish(task_id, context=context, namespace=namespace)


def stream_logs(task_id: str, follow: bool, write: Callable[[bytes], None], *,
                context: str = "", namespace: str = "") -> None:
    """`womm logs ID [-f]`: pass each chunk of the leader's output to ``write``. The
    connection is released however the loop ends (an interrupt stops following)."""
    chunks = detached.logs(task_id, follow, context=context, namespace=namespace)
    try:
        for chunk in chunks:
            write(chunk)
    finally:
        getattr(chunks, "close", lambda: None)()  # a generator: release its connection


# -- experiments --------------------------------------------------------------------------------
def experiment_summary(experiment: experiments.Experiment) -> list[str]:
    """The lines that end an experiment: how many tasks were done, then each failed task
    and where its reasons are."""
    found = experiment.result()
    failed = [task for task in found if task.status == "failed"]
    done = sum(task.status == "done" for task in found)
    skipped = sum(task.skipped for task in found)
    lines = [f"womm: experiment {experiment.id}: {done} of {len(found)} tasks done"
             + (f" ({skipped} already had logs)" if skipped else "")
             + f", {len(failed)} failed; logs in {experiment.log_dir}"]
    for task in failed:
        kind = "OOM-killed" if task.oom_killed else "failed"
        lines.append(f"womm: {kind}: line {task.index}: {task.command}  "
                     f"(see {experiment.log_dir / (task.key + '.failed')})")
    return lines


def experiment_cancelled(experiment: experiments.Experiment) -> str:
    """What a cancelled experiment leaves behind."""
    return (f"womm: experiment {experiment.id} cancelled; its pods were deleted, saved logs "
            f"stay in {experiment.log_dir}")
