"""Pod verbs, composable in pipelines like kuboid's: choose pods, then act on them.

By default the pods a verb may see or touch are this owner's womm pods of the namespace
(``app.kubernetes.io/managed-by=womm`` and ``womm/owner=<you>``); ``all_pods`` widens that to
every pod of the namespace. A name given to a verb that is not among them is refused
(:class:`~womm_jupyter.errors.PodNotFoundError`), so a pipeline never touches other people's
pods by accident.

Each pod has one state, the most specific that applies: ``completed`` (exit 0), ``oom``
(OOM-killed), ``errored`` (failed otherwise, or its container cannot start), ``running``,
``pending``, ``terminating``. The ``errored`` filter includes OOM-killed pods.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import OptionError, PodNotFoundError
from ..kube.client import WAITING_WILL_NOT_CURE, clients, delete_pod
from ..kube.exec import STATUS, STDERR, STDOUT, ExecStream, exit_status, open_exec
from ..labels import LABEL_OWNER, LABEL_TASK, MANAGED_BY
from ..naming import owner

__all__ = ["STATES", "PodFilter", "PodTerminal", "Pods", "pod_state"]

STATES = ("completed", "oom", "errored", "running", "pending", "terminating")
# What `womm pods shell` runs when no command is given: bash when the image has it.
INTERACTIVE_SHELL = ("/bin/sh", "-c",
                     "if command -v bash >/dev/null 2>&1; then exec bash -i; fi; exec sh -i")


@dataclasses.dataclass(frozen=True)
class PodFilter:
    """Which pods to keep: any of the chosen states (none chosen: every state), and a name
    regular expression."""

    states: frozenset[str] = frozenset()
    regex: str = ""

    def keeps(self, pod: Any) -> bool:
        if self.regex and not re.search(self.regex, pod.metadata.name):
            return False
        if not self.states:
            return True
        state = pod_state(pod)
        return state in self.states or (state == "oom" and "errored" in self.states)


def _container_statuses(pod: Any) -> list[Any]:
    status = pod.status
    return list(status.init_container_statuses or []) + list(status.container_statuses or [])


def pod_state(pod: Any) -> str:
    """The pod's one state: completed, oom, errored, running, pending or terminating."""
    statuses = _container_statuses(pod)
    for status in statuses:
        for state in (status.state, status.last_state):
            if state is not None and state.terminated is not None \
                    and state.terminated.reason == "OOMKilled":
                return "oom"
    phase = pod.status.phase
    if phase == "Succeeded":
        return "completed"
    if phase == "Failed":
        return "errored"
    if pod.metadata.deletion_timestamp is not None:
        return "terminating"
    for status in statuses:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in WAITING_WILL_NOT_CURE:
            return "errored"
    return "running" if phase == "Running" else "pending"


class Pods:
    """The pods of a namespace a verb may see: this owner's womm pods, or all of them.

    Parameters
    ----------
    context, namespace:
        kubeconfig context and namespace (defaults: the current context and its namespace).
    all_pods:
        every pod of the namespace instead of this owner's womm pods.
    task:
        only the pods of this task or experiment id.
    """

    def __init__(self, context: str = "", namespace: str = "", *, all_pods: bool = False,
                 task: str = "") -> None:
        self.clients = clients(context, namespace)
        self.namespace = self.clients.namespace
        self.core = self.clients.core
        selector = [] if all_pods else [f"{MANAGED_BY}=womm", f"{LABEL_OWNER}={owner()}"]
        if task:
            selector.append(f"{LABEL_TASK}={task}")
        self.selector = ",".join(selector)
        self._scope = "pods" if all_pods else "womm pods of yours"

    def list(self, keep: PodFilter | None = None, names: Sequence[str] | None = None
             ) -> list[Any]:
        """The pods in scope that pass ``keep``, sorted by name; only ``names`` when given
        (each must be in scope, else PodNotFoundError)."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        by_name = {pod.metadata.name: pod for pod in pods}
        if names is not None:
            missing = [name for name in names if name not in by_name]
            if missing:
                raise PodNotFoundError(
                    f"no pod {missing[0]} among the {self._scope} in namespace "
                    f"{self.namespace}: `womm pods names` lists them"
                    + ("" if self._scope == "pods" else "; --all-pods reaches every pod")
                    + ".")
            pods = [by_name[name] for name in dict.fromkeys(names)]
        keep = keep or PodFilter()
        return sorted((pod for pod in pods if keep.keeps(pod)), key=lambda p: p.metadata.name)

    @staticmethod
    def states(pods: Iterable[Any]) -> dict[str, int]:
        """How many pods are in each state (every state listed, zeros included)."""
        counts = Counter(pod_state(pod) for pod in pods)
        return {state: counts.get(state, 0) for state in STATES}

    @staticmethod
    def runtime(pod: Any, now: dt.datetime | None = None) -> float | None:
        """Seconds from the pod's start to its containers' end (or now); None if not
        started."""
        start = pod.status.start_time
        if start is None:
            return None
        ends = [status.state.terminated.finished_at for status in _container_statuses(pod)
                if status.state and status.state.terminated
                and status.state.terminated.finished_at]
        running = any(status.state and status.state.running
                      for status in _container_statuses(pod))
        end = max(ends) if ends and not running else (now or dt.datetime.now(dt.UTC))
        return max(0.0, float((end - start).total_seconds()))

    def logs(self, name: str) -> bytes:
        """The pod's log (its first container's, or the ``task`` container's)."""
        response = self.core.read_namespaced_pod_log(name, self.namespace,
                                                     _preload_content=False)
        return bytes(response.data)

    def savelog(self, name: str, directory: Path) -> Path:
        """Write the pod's log to ``directory/<name>.log`` (whole or not at all)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.log"
        temporary = directory / f".{name}.log.tmp"
        temporary.write_bytes(self.logs(name))
        os.replace(temporary, path)
        return path

    def loggrep(self, name: str, pattern: re.Pattern[bytes]) -> bool:
        """Whether the pod's log matches ``pattern``."""
        return pattern.search(self.logs(name)) is not None

    def delete(self, name: str) -> None:
        """Delete the pod (now: no grace period)."""
        delete_pod(self.core, self.namespace, name)

    def exec(self, name: str, command: Sequence[str], stdout: Callable[[bytes], Any],
             stderr: Callable[[bytes], Any]) -> int:
        """Run ``command`` in the pod; stream its output to the callbacks; return its exit
        status as the pod reports it."""
        if not command:
            raise OptionError("womm pods exec: give the command after `--`, e.g. "
                              "womm pods exec NAME -- ls -l")
        stream = open_exec(self.clients, name, command, stdin=False)
        status = b""
        try:
            closed = False
            while not closed:
                if not stream.wait(1.0):
                    continue
                received, closed = stream.read()
                if received.get(STDOUT):
                    stdout(received[STDOUT])
                if received.get(STDERR):
                    stderr(received[STDERR])
                status += received.get(STATUS, b"")
        finally:
            stream.close()
        code = exit_status(status)
        return code if code is not None else 1

    def terminal(self, name: str, command: Sequence[str] = INTERACTIVE_SHELL,
                 container: str = "") -> PodTerminal:
        """Open ``command`` (an interactive shell by default) on a terminal in pod ``name``,
        which must be running; see :class:`PodTerminal`."""
        container = self.running_container(name, container)
        return PodTerminal(open_exec(self.clients, name, command, stderr=False, tty=True,
                                     container=container))

    def running_container(self, name: str, container: str = "") -> str:
        """``container`` (default: the first) of pod ``name``, after checking that the pod is
        in scope and running and has that container; else OptionError/PodNotFoundError."""
        pod = self.list(names=[name])[0]
        state = pod_state(pod)
        if state != "running":
            raise OptionError(f"womm pods shell: pod {name} is {state}: a shell needs a running "
                              "pod (`womm pods names --running` lists them); its log is in "
                              f"`womm pods logs {name}`.")
        containers = [c.name for c in pod.spec.containers]
        if container and container not in containers:
            raise OptionError(f"--container: pod {name} has no container {container!r}; it has "
                              + ", ".join(containers) + ".")
        return container or str(containers[0])

    def describe(self, pod: Any) -> str:
        """A readable account of the pod: where and what it runs, its state, its events."""
        meta, spec, status = pod.metadata, pod.spec, pod.status
        lines = [f"Name:       {meta.name}", f"Namespace:  {meta.namespace}",
                 f"State:      {pod_state(pod)} (phase {status.phase}"
                 + (f", {status.reason}" if status.reason else "") + ")",
                 f"Node:       {spec.node_name or '-'}",
                 f"Started:    {status.start_time or '-'}"]
        runtime = self.runtime(pod)
        if runtime is not None:
            lines.append(f"Runtime:    {runtime:.1f}s")
        lines.append("Labels:     " + ", ".join(f"{k}={v}" for k, v in
                                               sorted((meta.labels or {}).items())))
        for key, value in sorted((meta.annotations or {}).items()):
            if key.startswith("womm/"):
                lines.append(f"Annotation: {key}={value}")
        statuses = {s.name: s for s in status.container_statuses or []}
        for container in spec.containers:
            lines.append(f"Container {container.name}:")
            lines.append(f"  Image:    {container.image}")
            if container.command or container.args:
                argv = list(container.command or []) + list(container.args or [])
                lines.append(f"  Command:  {argv}")
            resources = container.resources
            if resources is not None and (resources.requests or resources.limits):
                lines.append(f"  Requests: {resources.requests or {}}  "
                             f"Limits: {resources.limits or {}}")
            state = statuses.get(container.name)
            if state is not None:
                lines.append(f"  State:    {_describe_state(state.state)}")
                if state.last_state and (state.last_state.terminated
                                         or state.last_state.waiting):
                    lines.append(f"  Last:     {_describe_state(state.last_state)}")
                lines.append(f"  Restarts: {state.restart_count}")
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={meta.name}").items
        lines.append("Events:" if events else "Events:     none")
        for event in sorted(events, key=lambda e: str(e.last_timestamp or e.event_time or "")):
            lines.append(f"  {event.type:<8} {event.reason:<18} {event.message or ''}")
        return "\n".join(lines)


class PodTerminal:
    """A command on a TTY in a pod (an exec stream with ``tty=True``), for a face to join to
    a local terminal: wait until :meth:`fileno` is readable (or :meth:`ready` is true), then
    :meth:`read`; :meth:`write` what is typed, :meth:`resize` on window changes. Once
    :attr:`closed`, :attr:`returncode` is the command's exit status as the pod reports it.
    """

    def __init__(self, stream: ExecStream) -> None:
        self._stream = stream
        self._status = b""
        self.closed = False

    def fileno(self) -> int:
        """The stream's socket, for ``select``."""
        return self._stream.fileno()

    def ready(self) -> bool:
        """Whether bytes are already decrypted and waiting (``select`` cannot see those)."""
        return self._stream.pending()

    def read(self) -> bytes:
        """The terminal's output received so far (b"" and :attr:`closed` at the end)."""
        received, closed = self._stream.read()
        self._status += received.get(STATUS, b"")
        self.closed = self.closed or closed
        return received.get(STDOUT, b"")

    def write(self, data: bytes) -> None:
        """Send typed bytes (Ctrl-C included: the remote terminal makes it a signal)."""
        self._stream.write(data)

    def resize(self, rows: int, columns: int) -> None:
        """Tell the remote terminal its window size."""
        self._stream.resize(rows, columns)

    @property
    def returncode(self) -> int:
        """The command's exit status (255 when the pod reported none, e.g. it was deleted)."""
        code = exit_status(self._status)
        return 255 if code is None else code

    def close(self) -> None:
        """Close the stream (the remote command gets a hang-up)."""
        self.closed = True
        self._stream.close()


def _describe_state(state: Any) -> str:
    if state is None:
        return "-"
    if state.running:
        return f"running since {state.running.started_at}"
    if state.terminated:
        t = state.terminated
        return (f"terminated: {t.reason or ''} exit {t.exit_code}"
                + (f" signal {t.signal}" if t.signal else "")
                + f" ({t.started_at} .. {t.finished_at})")
    if state.waiting:
        return f"waiting: {state.waiting.reason or ''} {state.waiting.message or ''}".rstrip()
    return "-"
