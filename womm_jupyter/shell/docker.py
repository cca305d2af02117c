"""``womm shell``: one worker of the project image, interactive or running one command.

:func:`start_shell` picks the backend (one function, so the Kubernetes variant plugs in
beside Docker) and returns a :class:`ShellSession` at once; it never prints. On Docker the
worker is a container named ``womm-shell-<task id>`` of the project image with the working
directory at the same path (as ``womm parallel``'s workers): with no command its main process
is an interactive shell on a TTY, which a terminal attaches to (``attach_socket``: the CLI's
raw terminal, or the Jupyter web terminal of :mod:`womm_jupyter.server`); with a command,
:meth:`ShellSession.output` streams its output and :meth:`ShellSession.wait` returns its exit
status.

The container carries the task labels of ``womm parallel``'s workers, and the session
touches the task's heartbeat while it lives: ``womm status`` lists it as RUNNING, as ORPHANED
once the process that started it is gone, and ``womm finish ID`` removes it. The session
removes its container when the shell exits (a watcher thread) or on :meth:`close`.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import tasks
from ..errors import BackendError, OptionError
from ..labels import (
    LABEL_OWNER,
    LABEL_TASK,
    MANAGED_BY,
    describe,
)
from ..naming import new_task_id, owner
from ..options import ShellOptions, parse_memory

if TYPE_CHECKING:
    from .kubernetes import KubernetesShell

__all__ = ["SHELL_PREFIX", "ContainerTerminal", "ShellSession", "start_shell"]

SHELL_PREFIX = "womm-shell-"  # container names; the web terminal attaches to no other kind
# bash when the image has it, else sh; both interactive, in the working directory.
_INTERACTIVE = ('if command -v bash >/dev/null 2>&1; then exec bash -i; fi; '
                'exec sh -i')


def _backend_name(options: ShellOptions) -> str:
    if options.backend in ("docker", "kubernetes"):
        return options.backend
    if options.backend == "local":
        raise OptionError("--backend local has no shell: a local shell is your own terminal; "
                          "choose --backend docker (or kubernetes)")
    from .. import backends

    return "kubernetes" if backends.kubernetes_configured() else "docker"


def start_shell(options: ShellOptions, cwd: Path, command: str | None = None,
                client: Any = None) -> ShellSession | KubernetesShell:
    """Start one worker for ``womm shell`` and return its session at once.

    Parameters
    ----------
    options:
        resolved :class:`~womm_jupyter.options.ShellOptions`.
    cwd:
        the working directory: mounted at the same path, and the shell's cwd.
    command:
        a ``/bin/sh -c`` command line; None for an interactive shell on a TTY.
    client:
        a docker client (default: :func:`womm_jupyter.backends.docker.connect`).

    Raises
    ------
    OptionError
        when no image is known (no ``--image`` and no project image).
    BackendError, ImageError
        when the worker cannot be created.
    """
    if not options.image:
        raise OptionError("--image is required: no project image is recorded here; run "
                          "`womm setup` (or %womm_setup) in the project directory, or pass "
                          "--image")
    backend = _backend_name(options)
    if backend == "docker":
        from ..backends.docker import connect

        return ShellSession(client or connect(), options, cwd.resolve(), command)
    return _kubernetes_shell(options, cwd.resolve(), command)


def _kubernetes_shell(options: ShellOptions, cwd: Path, command: str | None) -> KubernetesShell:
    from ..backends.kubernetes import KubernetesBackend
    from ..kube.shared_volume import shared_claim
    from ..run.plan import shell_plan, shell_start_timeout
    from .kubernetes import KubernetesShell

    backend = KubernetesBackend(options.context, options.namespace)
    plan = shell_plan(task_id=new_task_id(), cwd=cwd, command=command, cpu=options.kube_cpu,
                      memory=options.kube_mem, image=options.image,
                      shared_claim=shared_claim(backend.core, backend.namespace))
    return KubernetesShell(backend, plan, command, start_timeout=shell_start_timeout())


class ContainerTerminal:
    """What a shell in a Docker container (``container``) answers the terminal bridge
    (:mod:`.bridge`): whether it still runs, and its terminal's size. Shared by
    :class:`ShellSession` and the setup testbed."""

    container: Any

    def running(self) -> bool:
        """Whether the shell's process still runs."""
        try:
            self.container.reload()
        except Exception:
            return False
        return bool(self.container.status == "running")

    def resize(self, rows: int, columns: int) -> None:
        """Tell the shell its terminal's size."""
        try:
            self.container.resize(height=rows, width=columns)
        except Exception:  # the shell may have exited already: nothing to resize
            pass


class ShellSession(ContainerTerminal):
    """One shell worker (a Docker container); see the module's docstring."""

    def __init__(self, client: Any, options: ShellOptions, cwd: Path,
                 command: str | None) -> None:
        import docker.errors

        from ..setup.testbed import ensure_image

        self.client = client
        self.cwd = cwd
        self.command = command
        self.interactive = command is None
        self.task_id = new_task_id()
        self.name = f"{SHELL_PREFIX}{self.task_id}"
        self._closed = threading.Event()
        self._exit_code: int | None = None
        ensure_image(client, options.image)
        uid, gid = os.getuid(), os.getgid()
        labels = {MANAGED_BY: "womm", LABEL_TASK: self.task_id, LABEL_OWNER: owner(),
                  **describe(str(cwd), command or "womm shell", options.kube_cpu,
                             options.kube_mem, host=socket.gethostname(), pid=os.getpid(),
                             created=time.time(), desired=1)}
        try:
            self.container = client.containers.create(
                options.image, entrypoint=["/bin/sh", "-c"],
                command=[_INTERACTIVE if command is None else command],
                name=self.name, labels=labels, working_dir=str(cwd), user=f"{uid}:{gid}",
                volumes={str(cwd): {"bind": str(cwd), "mode": "rw"}},
                nano_cpus=int(options.kube_cpu * 1e9), mem_limit=parse_memory(options.kube_mem),
                network_mode="host", init=True, tty=self.interactive,
                stdin_open=self.interactive,
                # As the workers: HOME and SHELL set (under `docker exec` SHELL is unset).
                environment={"HOME": "/tmp", "SHELL": "/bin/sh", "TERM": "xterm-256color"})
        except docker.errors.APIError as exc:
            raise BackendError(f"Docker could not create the shell {self.name} from image "
                               f"{options.image}: {exc.explanation or exc}") from exc
        self._task_dir = tasks.task_dir(self.task_id)
        self._task_dir.mkdir(parents=True, exist_ok=True)
        tasks.touch_heartbeat(self.task_id)
        threading.Thread(target=self._heartbeat, daemon=True,
                         name=f"womm-shell-heartbeat-{self.task_id}").start()
        self._streams: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        try:
            if not self.interactive:
                self._follow()  # before start: no output is missed
            self.container.start()
        except docker.errors.APIError as exc:
            self.close()
            raise BackendError(f"the shell {self.name} did not start: "
                               f"{exc.explanation or exc}; check that the image has /bin/sh."
                               ) from exc
        threading.Thread(target=self._watch, daemon=True,
                         name=f"womm-shell-watch-{self.task_id}").start()

    # -- lifecycle ----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while not self._closed.wait(tasks.HEARTBEAT_SECONDS):
            try:
                tasks.touch_heartbeat(self.task_id)
            except OSError:
                return

    def _watch(self) -> None:
        """An interactive shell ends when its user exits it: then remove the container."""
        if not self.interactive:
            return
        try:
            self._exit_code = int(self.container.wait().get("StatusCode", -1))
        except Exception:  # removed from outside (womm finish): nothing left to watch
            pass
        self.close()

    def wait(self, timeout: float | None = None) -> int:
        """The shell's (or command's) exit status, once it has exited."""
        if self._exit_code is not None:  # the watcher saw it exit (and removed it)
            return self._exit_code
        try:
            result = self.container.wait(timeout=timeout)
        except Exception as exc:
            if self._exit_code is not None:
                return self._exit_code
            if self._closed.is_set():
                return 137  # removed (close, or `womm finish`): killed
            raise BackendError(f"lost the shell {self.name}: {exc}") from exc
        return int(result.get("StatusCode", -1))

    def close(self) -> None:
        """Remove the container and the task's state (idempotent)."""
        import docker.errors

        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            time.sleep(0.5)  # "removal already in progress"
            try:
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
        shutil.rmtree(self._task_dir, ignore_errors=True)

    def __enter__(self) -> ShellSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = "interactive" if self.interactive else repr(self.command)
        return f"<womm ShellSession {self.task_id} {self.name} {what}>"

    # -- I/O ----------------------------------------------------------------------------------
    def attach_socket(self, replay: bool = True) -> Any:
        """A raw socket to the interactive shell's terminal; ``replay`` sends what it has
        printed so far first (the prompt)."""
        return attach_terminal(self.client, self.name, replay=replay)

    def _follow(self) -> None:
        # One attach per kind (the docker API merges them in `logs`), each read on a thread
        # into one queue. The attach requests are made here, before the container starts, so
        # no output is missed (attaching to a container that already exited would hang).
        streams = {kind: self.client.api.attach(self.container.id, stream=True, logs=True,
                                                stdout=kind == "stdout",
                                                stderr=kind == "stderr")
                   for kind in ("stdout", "stderr")}
        ended = threading.Semaphore(0)

        def read(kind: str) -> None:
            try:
                for chunk in streams[kind]:
                    self._streams.put((kind, chunk))
            except Exception:  # the container was removed (interrupt): the stream ends
                pass
            finally:
                ended.release()

        def join() -> None:
            ended.acquire()
            ended.acquire()
            self._streams.put(None)

        for kind in streams:
            threading.Thread(target=read, args=(kind,), daemon=True).start()
        threading.Thread(target=join, daemon=True).start()

    def output(self) -> Iterator[tuple[str, bytes]]:
        """``(kind, bytes)`` chunks of the command's output, kind ``stdout`` or ``stderr``,
        until it exits (command sessions only)."""
        if self.interactive:
            raise BackendError("an interactive shell's output goes to its terminal: use "
                               "attach_socket()")
        while True:
            item = self._streams.get()
            if item is None:
                return
            yield item


def attach_terminal(client: Any, container: str, replay: bool = True) -> Any:
    """A raw socket to the TTY of ``container`` (a womm shell or a ``womm setup`` testbed).

    Bytes written go to its terminal; bytes read come from it. ``replay`` first sends what the
    terminal printed before (a TTY container's log).
    """
    import docker.errors

    try:
        info = client.api.inspect_container(container)
    except docker.errors.NotFound:
        raise BackendError(f"no container {container}: its shell has ended.") from None
    if not info.get("Config", {}).get("Tty"):
        raise BackendError(f"container {container} has no terminal to attach to.")
    sock = client.api.attach_socket(info["Id"], params={
        "stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "logs": 1 if replay else 0})
    raw = getattr(sock, "_sock", sock)  # SocketIO over the engine's unix socket
    return _TerminalSocket(raw, _taken_with_the_headers(sock, raw))


def _taken_with_the_headers(sock: Any, raw: Any) -> bytes:
    """What the engine sent right after its upgrade response (the replayed log): the HTTP
    client's buffered reader took it while it read the headers, and the raw socket will not
    return it again."""
    reader = getattr(getattr(getattr(getattr(sock, "_response", None), "raw", None), "_fp", None),
                     "fp", None)
    if reader is None or not hasattr(reader, "peek"):
        return b""
    timeout = raw.gettimeout()
    raw.setblocking(False)  # peek() returns what is buffered, or b"" instead of waiting
    try:
        return bytes(reader.peek())
    except (BlockingIOError, ValueError, OSError):
        return b""
    finally:
        raw.settimeout(timeout)


class _TerminalSocket:
    """The engine's attach socket, whose first :meth:`recv` returns the bytes the HTTP
    client had already taken (``pending`` says how many, for callers that select())."""

    def __init__(self, sock: Any, early: bytes) -> None:
        self._sock = sock
        self._early = early

    @property
    def pending(self) -> int:
        return len(self._early)

    def recv(self, size: int) -> bytes:
        if self._early:
            data, self._early = self._early[:size], self._early[size:]
            return data
        return bytes(self._sock.recv(size))

    def __getattr__(self, name: str) -> Any:  # sendall, fileno, close, shutdown, settimeout
        return getattr(self._sock, name)
