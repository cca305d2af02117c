"""``womm shell`` on Kubernetes: one pod of the project image, interactive or one command.

The pod runs the womm agent as its main process (like a worker, so nothing sleeps); the
shell or command is an exec into it: a TTY exec for an interactive shell (window size on the
resize channel, Ctrl-C as a byte to the remote terminal), a plain exec for a command, whose
exit status comes from the exec's status channel. One thread owns the exec's stream for the
shell's life: terminals attach and detach (``attach_socket``, with the last output replayed)
without ending the shell; the shell's end closes them all. The pod carries the task labels
and a Lease it owns, renewed while the session lives: ``womm status`` shows it RUNNING,
ORPHANED when the client died, and ``womm finish ID``, :meth:`KubernetesShell.close` or the
interactive shell's exit deletes it.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

from .. import _paths
from ..backends.base import LaunchPlan
from ..backends.kubernetes import KubernetesBackend
from ..errors import BackendError
from ..kube import manifests
from ..kube.client import (
    HEARTBEAT_SECONDS,
    WAITING_WILL_NOT_CURE,
    ApiError,
    Watch,
    now,
    renew_lease,
)
from ..kube.exec import STATUS, STDERR, STDOUT, ExecStream, exit_status, open_exec
from ..naming import task_object_name

_INTERACTIVE = "if command -v bash >/dev/null 2>&1; then exec bash -i; fi; exec sh -i"
_SCROLLBACK = 64 * 1024  # the terminal output replayed to a page that attaches
_PAGE_BACKLOG = 1024 * 1024  # output a page has not taken; beyond it the page is detached


class KubernetesShell:
    """One shell pod; the same methods as the Docker shell (:class:`.docker.ShellSession`)."""

    def __init__(self, backend: KubernetesBackend, plan: LaunchPlan, command: str | None,
                 start_timeout: float) -> None:
        self.backend = backend
        self.task_id = plan.task_id
        self.name = f"womm-shell-{plan.task_id}"
        self.command = command
        self.interactive = command is None
        self._closed = threading.Event()
        self._exit_code: int | None = None
        self._stream: ExecStream | None = None
        self._lock = threading.Lock()
        self._delete_lock = threading.Lock()
        self._deleted = False
        self._ended = threading.Event()  # the exec's stream ended: _exit_code is final
        self._requests: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._chunks: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._scrollback = bytearray()
        self.error = ""  # why the stream broke, if it did
        namespace = backend.namespace
        body = manifests.shell_pod(plan, self.name,
                                   _paths.transport_file("agent.pl").read_text())
        try:
            pod = backend.core.create_namespaced_pod(namespace, body)
            backend.coordination.create_namespaced_lease(
                namespace, manifests.lease(plan, pod.metadata.uid, now(), kind="Pod",
                                           api_version="v1", name=self.name))
        except ApiError:
            self.close()
            raise
        self._heartbeats = threading.Thread(target=self._heartbeat, daemon=True,
                                            name=f"womm-shell-lease-{self.task_id}")
        self._heartbeats.start()
        try:
            self._await_ready(start_timeout)
            self._stream = self._exec()
            self._start_io()
        except BaseException:
            self.close()
            raise

    # -- start ------------------------------------------------------------------------------
    def _await_ready(self, timeout: float) -> None:
        core, namespace = self.backend.core, self.backend.namespace
        stream = Watch()
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
                    if waiting.reason in WAITING_WILL_NOT_CURE:
                        stream.stop()
                        raise BackendError(f"the shell pod {self.name} cannot start: {why}")
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    why = f"{condition.reason}: {condition.message}"
        raise BackendError(f"the shell pod {self.name} was not ready within {timeout:g} s "
                           f"({why}): raise --start-timeout or ask for less --kube-cpu/--kube-mem.")

    def _exec(self) -> ExecStream:
        argv = ["/bin/sh", "-c", _INTERACTIVE if self.command is None else self.command]
        return open_exec(self.backend.clients, self.name, argv, stdin=self.interactive,
                         stderr=not self.interactive, tty=self.interactive)

    def _heartbeat(self) -> None:
        name = task_object_name(self.task_id)
        while not self._closed.wait(HEARTBEAT_SECONDS):
            try:
                renew_lease(self.backend.clients, name)
            except ApiError:  # deleted under us (womm finish) or a passing error
                continue

    # -- I/O: one thread owns the exec stream -------------------------------------------------
    # The websocket client is not safe for concurrent use (a page's bridge reading while a
    # resize wrote from another thread broke the stream), and its update()/read_channel()
    # pair strands frames. So one thread, started with the exec and ending with it, does all
    # of the stream's I/O: it reads frames as they arrive (_wsframes), fans terminal output
    # out to the attached pages and into a bounded scrollback, and writes what the pages type
    # and the resizes other threads ask for (queued, with a wake-up byte).
    def _start_io(self) -> None:
        self._wake, self._waker = socket.socketpair()
        self._waker.setblocking(False)
        self._io = threading.Thread(target=self._own_stream, daemon=True,
                                    name=f"womm-shell-io-{self.task_id}")
        self._io.start()

    def _ask(self, request: tuple[Any, ...]) -> None:
        self._requests.put(request)
        with contextlib.suppress(OSError):  # full (already woken) or closed (ended)
            self._waker.send(b"!")

    def attach_socket(self, replay: bool = True) -> socket.socket:
        """A socket joined to the interactive shell's terminal: bytes written are typed into
        it, bytes read are its output. ``replay`` first sends the last output (up to 64 KiB,
        from a line start) so a reloaded page shows the prompt and history. Closing the socket
        detaches (the shell keeps running); the shell's end closes it."""
        if not self.interactive:
            raise BackendError(f"the shell {self.name} runs a command, not a terminal: read "
                               "its output()")
        ours, theirs = socket.socketpair()
        with self._lock:  # against the stream's end, which closes every page once
            if self._ended.is_set():
                ours.close()
                theirs.close()
                raise BackendError(f"the shell {self.name} has ended")
            self._ask(("attach", ours, replay))
        return theirs

    def resize(self, rows: int, columns: int) -> None:
        """Set the remote terminal's size (from any thread)."""
        if self.interactive and not self._ended.is_set():
            self._ask(("resize", int(rows), int(columns)))

    def output(self) -> Iterator[tuple[str, bytes]]:
        """``(kind, bytes)`` chunks of the command's output until it exits."""
        if self.interactive:
            raise BackendError("an interactive shell's output goes to its terminal: use "
                               "attach_socket()")
        while (item := self._chunks.get()) is not None:
            yield item
        self._chunks.put(None)  # a second output() ends at once too

    def _own_stream(self) -> None:
        stream = self._stream
        assert stream is not None
        raw = stream.socket
        selector = selectors.DefaultSelector()
        selector.register(raw, selectors.EVENT_READ)
        selector.register(self._wake, selectors.EVENT_READ)
        pages: dict[socket.socket, _Page] = {}
        status = b""
        try:
            while not self._closed.is_set():
                pending = stream.pending()
                events = selector.select(timeout=0 if pending else 1.0)
                if pending or any(key.fileobj is raw for key, _ in events):
                    received, closed = stream.read()
                    status += received.pop(STATUS, b"")  # the exec's status, at its end
                    self._output(received, pages, selector)
                    if closed:
                        break
                for key, mask in events:
                    if key.fileobj is self._wake:
                        self._wake.recv(4096)
                        self._serve_requests(stream, pages, selector)
                    elif isinstance(key.data, _Page) and key.data.sock in pages:
                        page = key.data
                        if mask & selectors.EVENT_WRITE:
                            self._send(page, b"", pages, selector)
                        if mask & selectors.EVENT_READ and page.sock in pages:
                            try:
                                typed = page.sock.recv(65536)
                            except OSError:
                                typed = b""
                            if typed:
                                stream.write(typed)
                            else:
                                self._detach(page, pages, selector)
        except Exception as exc:  # a broken stream ends the shell; nothing may hang on it
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._exit_code = exit_status(status)
                self._ended.set()
            while not self._requests.empty():  # pages that asked too late
                request = self._requests.get()
                if request[0] == "attach":
                    pages[request[1]] = _Page(request[1])
            for page in list(pages.values()):
                self._detach(page, pages, selector, flush=True)
            self._chunks.put(None)
            selector.close()
            for sock in (self._wake, self._waker):
                sock.close()
            with contextlib.suppress(Exception):
                stream.close()
            if self.interactive:  # its user exited it: the pod goes, as a Docker shell's does
                self._closed.set()
                self._delete_pod()

    def _output(self, received: dict[int, bytes], pages: dict[socket.socket, _Page],
                selector: selectors.BaseSelector) -> None:
        if not self.interactive:
            for channel, kind in ((STDOUT, "stdout"), (STDERR, "stderr")):
                if received.get(channel):
                    self._chunks.put((kind, received[channel]))
            return
        data = received.get(STDOUT, b"")
        if not data:
            return
        self._scrollback += data
        if len(self._scrollback) > _SCROLLBACK:
            del self._scrollback[:len(self._scrollback) - _SCROLLBACK]
            line = self._scrollback.find(b"\n", 0, 4096)  # replay from a line's start
            del self._scrollback[:line + 1]
        for page in list(pages.values()):
            self._send(page, data, pages, selector)

    def _serve_requests(self, stream: ExecStream, pages: dict[socket.socket, _Page],
                        selector: selectors.BaseSelector) -> None:
        while not self._requests.empty():
            request = self._requests.get()
            if request[0] == "resize":
                _, rows, columns = request
                stream.resize(rows, columns)
            elif request[0] == "attach":
                _, sock, replay = request
                sock.setblocking(False)
                page = pages[sock] = _Page(sock)
                selector.register(sock, selectors.EVENT_READ, page)
                if replay and self._scrollback:
                    self._send(page, bytes(self._scrollback), pages, selector)

    @staticmethod
    def _send(page: _Page, data: bytes, pages: dict[socket.socket, _Page],
              selector: selectors.BaseSelector) -> None:
        """Send without blocking the stream's thread: what a page cannot take yet waits in
        its backlog; a page too far behind is detached (it can attach again, with replay)."""
        page.backlog += data
        try:
            sent = page.sock.send(page.backlog) if page.backlog else 0
        except BlockingIOError:
            sent = 0
        except OSError:  # the page went away
            KubernetesShell._detach(page, pages, selector)
            return
        del page.backlog[:sent]
        if len(page.backlog) > _PAGE_BACKLOG:
            KubernetesShell._detach(page, pages, selector)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if page.backlog else 0)
        if selector.get_key(page.sock).events != events:
            selector.modify(page.sock, events, page)

    @staticmethod
    def _detach(page: _Page, pages: dict[socket.socket, _Page],
                selector: selectors.BaseSelector, flush: bool = False) -> None:
        pages.pop(page.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(page.sock)
        if flush and page.backlog:  # the shell's last words before it ended
            with contextlib.suppress(OSError):
                page.sock.settimeout(2)
                page.sock.sendall(page.backlog)
        with contextlib.suppress(OSError):
            page.sock.shutdown(socket.SHUT_RDWR)
        page.sock.close()

    def running(self) -> bool:
        return not self._ended.is_set() and not self._closed.is_set()

    def wait(self, timeout: float | None = None) -> int:
        """The shell's (or command's) exit status, once it has exited; 137 when it was
        closed (or its stream lost) before it said."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"the shell {self.name} still runs")
        return 137 if self._exit_code is None else self._exit_code

    def close(self) -> None:
        """Delete the pod (its Lease goes with it) — idempotent; returns once it is done
        (a process may exit right after: no thread of the shell is left mid-request)."""
        self._closed.set()
        io: threading.Thread | None = getattr(self, "_io", None)
        if io is not None and io is not threading.current_thread():
            with contextlib.suppress(OSError):  # wake it (its waker is closed once it ended)
                self._waker.send(b"!")
            io.join(timeout=5)
        heartbeats: threading.Thread | None = getattr(self, "_heartbeats", None)
        if heartbeats is not None:
            heartbeats.join(timeout=5)
        self._delete_pod()

    def _delete_pod(self) -> None:
        with self._delete_lock:  # once; a second caller waits until it is done
            if self._deleted:
                return
            self._deleted = True
            try:
                self.backend.core.delete_namespaced_pod(self.name, self.backend.namespace,
                                                        grace_period_seconds=0)
            except ApiError:  # already gone (womm finish), or the API is unreachable
                pass

    def __repr__(self) -> str:
        what = "interactive" if self.interactive else repr(self.command)
        return f"<womm KubernetesShell {self.task_id} {self.name} {what}>"


class _Page:
    """One attached terminal: the stream thread's end of its socket pair, and the output it
    has not taken yet."""

    __slots__ = ("backlog", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.backlog = bytearray()

