"""``womm shell`` on Kubernetes: one pod of the project image, interactive or one command.

The pod runs the womm agent as its main process (like a worker, so nothing sleeps); the
shell or command is an exec into it: a TTY exec for an interactive shell (window size on the
resize channel, Ctrl-C as a byte to the remote terminal), a plain exec for a command, whose
exit status comes from the exec's status channel. The pod carries the task labels and a
Lease it owns, renewed while the session lives: ``womm status`` shows it RUNNING, ORPHANED
when the client died, and ``womm finish ID`` (or the session's end) deletes it.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from .. import _paths, manifests
from ..errors import BackendError
from ..naming import task_object_name
from .base import LaunchPlan
from .kubernetes import _FATAL_WAITING, KubernetesBackend, _api_error, _now

_INTERACTIVE = "if command -v bash >/dev/null 2>&1; then exec bash -i; fi; exec sh -i"


class KubernetesShell:
    """One shell pod; the same methods as the Docker :class:`womm_jupyter.shell.ShellSession`."""

    def __init__(self, backend: KubernetesBackend, plan: LaunchPlan, command: str | None,
                 start_timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        self.backend = backend
        self.task_id = plan.task_id
        self.name = f"womm-shell-{plan.task_id}"
        self.command = command
        self.interactive = command is None
        self._closed = threading.Event()
        self._exit_code: int | None = None
        self._stream: Any = None
        namespace = backend.namespace
        body = manifests.shell_pod(plan, self.name,
                                   _paths.transport_file("agent.pl").read_text())
        try:
            pod = backend.core.create_namespaced_pod(namespace, body)
            backend.coordination.create_namespaced_lease(
                namespace, manifests.lease(plan, pod.metadata.uid, _now(), kind="Pod",
                                           api_version="v1", name=self.name))
        except ApiException as exc:
            self.close()
            raise _api_error(exc, f"create the shell pod {self.name}", namespace) from exc
        threading.Thread(target=self._heartbeat, daemon=True,
                         name=f"womm-shell-lease-{self.task_id}").start()
        try:
            self._await_ready(start_timeout)
            self._stream = self._exec()
        except BaseException:
            self.close()
            raise

    # -- start ------------------------------------------------------------------------------
    def _await_ready(self, timeout: float) -> None:
        from kubernetes import watch

        core, namespace = self.backend.core, self.backend.namespace
        stream = watch.Watch()
        why = "no news from the pod"
        for event in stream.stream(core.list_namespaced_pod, namespace,
                                   field_selector=f"metadata.name={self.name}",
                                   timeout_seconds=int(timeout)):
            pod = event["object"]
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                stream.stop()
                return
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting if status.state else None
                if waiting and waiting.reason:
                    why = f"{waiting.reason}: {waiting.message or ''}".strip()
                    if waiting.reason in _FATAL_WAITING:
                        stream.stop()
                        raise BackendError(f"the shell pod {self.name} cannot start: {why}")
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    why = f"{condition.reason}: {condition.message}"
        raise BackendError(f"the shell pod {self.name} was not ready within {timeout:g} s "
                           f"({why}): raise --start-timeout or ask for less --kube-cpu/--kube-mem.")

    def _exec(self) -> Any:
        from kubernetes import client
        from kubernetes.stream import stream

        api = client.CoreV1Api(client.ApiClient(self.backend._api_client.configuration))
        argv = ["/bin/sh", "-c", _INTERACTIVE if self.command is None else self.command]
        try:
            return stream(api.connect_get_namespaced_pod_exec, self.name,
                          self.backend.namespace, command=argv, stdin=self.interactive, stdout=True,
                          stderr=not self.interactive, tty=self.interactive,
                          _preload_content=False, binary=True)
        except Exception as exc:
            raise _api_error(exc, f"exec into the shell pod {self.name}",
                             self.backend.namespace) from exc

    def _heartbeat(self) -> None:
        name = task_object_name(self.task_id)
        while not self._closed.wait(2.0):
            try:
                self.backend.coordination.patch_namespaced_lease(
                    name, self.backend.namespace, {"spec": {"renewTime": _now()}})
            except Exception:  # deleted under us (womm finish) or a passing error
                continue

    # -- I/O ----------------------------------------------------------------------------------
    def attach_socket(self, replay: bool = True) -> socket.socket:
        """A socket whose bytes go to the remote terminal and come from it."""
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._bridge, args=(ours,), daemon=True,
                         name=f"womm-shell-tty-{self.task_id}").start()
        return theirs

    def _bridge(self, local: socket.socket) -> None:
        ws = self._stream
        local.setblocking(False)
        try:
            while ws.is_open() and not self._closed.is_set():
                ws.update(timeout=0.05)
                data = ws.read_channel(1)
                if data:
                    local.sendall(data)
                try:
                    typed = local.recv(65536)
                except BlockingIOError:
                    continue
                if not typed:
                    break
                ws.write_stdin(typed)
        except OSError:
            pass
        finally:
            if not ws.is_open():  # the shell ended; a closed page only detaches
                self._finish_exec()
            local.close()

    def resize(self, rows: int, columns: int) -> None:
        if self._stream is not None and self._stream.is_open():
            self._stream.write_channel(4, json.dumps({"Width": columns, "Height": rows}))

    def output(self) -> Iterator[tuple[str, bytes]]:
        """``(kind, bytes)`` chunks of the command's output until it exits."""
        if self.interactive:
            raise BackendError("an interactive shell's output goes to its terminal: use "
                               "attach_socket()")
        ws = self._stream
        chunks: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        while ws.is_open():
            ws.update(timeout=0.2)
            for channel, kind in ((1, "stdout"), (2, "stderr")):
                data = ws.read_channel(channel)
                if data:
                    chunks.put((kind, data))
            while not chunks.empty():
                yield chunks.get()
        for channel, kind in ((1, "stdout"), (2, "stderr")):
            data = ws.read_channel(channel)
            if data:
                yield kind, data
        self._finish_exec()

    def _finish_exec(self) -> None:
        if self._exit_code is None and self._stream is not None:
            code = self._stream.returncode
            self._exit_code = 137 if code is None else int(code)

    def running(self) -> bool:
        return self._exit_code is None and not self._closed.is_set()

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._exit_code is None:
            if self._closed.is_set():
                return 137
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the shell {self.name} still runs")
            time.sleep(0.05)
        return self._exit_code

    def close(self) -> None:
        """Delete the pod (its Lease goes with it) — idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._stream is not None:
            self._stream.close()
        try:
            self.backend.core.delete_namespaced_pod(self.name, self.backend.namespace,
                                                    grace_period_seconds=0)
        except Exception:  # already gone (womm finish)
            pass

    def __repr__(self) -> str:
        what = "interactive" if self.interactive else repr(self.command)
        return f"<womm KubernetesShell {self.task_id} {self.name} {what}>"

