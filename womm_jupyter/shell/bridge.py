"""A shell's terminal served on a private unix socket, for the web terminal process.

A Kubernetes shell (:class:`~womm_jupyter.shell.kubernetes.KubernetesShell`) is an exec
stream held by the process that started it (the kernel of ``%womm_shell``); unlike a Docker
container, no other process can attach to it. :func:`serve` makes the kernel listen on
``<task dir>/tty.sock`` (the per-user state directory, mode 0700) while the shell runs; the
web terminal process (:mod:`womm_jupyter.server.terminal`) finds it by the shell's name.

Each connection starts with one line: ``attach`` (then the shell's recent output, replayed,
and raw terminal bytes both ways until the shell ends or the connection closes: closing it
detaches, the shell keeps running; several connections may be attached at once) or
``resize ROWS COLUMNS`` (then the connection is closed).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

from .. import _paths
from . import TerminalSession

__all__ = ["attach", "resize", "serve", "socket_path"]

_PREFIX = "womm-shell-"


def socket_path(name: str) -> Path | None:
    """Where the bridge of shell ``name`` listens (None for a name that is no shell's)."""
    task_id = name.removeprefix(_PREFIX)
    if task_id == name or not task_id.isalnum():
        return None
    return _paths.task_dir(task_id) / "tty.sock"


def serve(session: TerminalSession) -> Path:
    """Serve ``session``'s terminal until it ends; returns the socket's path."""
    path = socket_path(session.name)
    assert path is not None, session.name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(4)
    listener.settimeout(0.5)
    threading.Thread(target=_accept, args=(session, listener, path), daemon=True,
                     name=f"womm-tty-bridge-{session.name}").start()
    return path


def _accept(session: TerminalSession, listener: socket.socket, path: Path) -> None:
    try:
        while session.running():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=_handle, args=(session, conn), daemon=True).start()
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            path.unlink()


def _handle(session: TerminalSession, conn: socket.socket) -> None:
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:
        data = conn.recv(1)
        if not data:
            conn.close()
            return
        line += data
    words = line.decode("ascii", "replace").split()
    if words[:1] == ["resize"] and len(words) == 3 and all(w.isdigit() for w in words[1:]):
        with contextlib.suppress(Exception):
            session.resize(int(words[1]), int(words[2]))
        conn.close()
        return
    if words != ["attach"]:
        conn.close()
        return
    try:
        tty = session.attach_socket()
    except Exception:
        conn.close()
        return
    threading.Thread(target=_pipe, args=(conn, tty), daemon=True).start()
    _pipe(tty, conn)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy until either end closes, then close both (which ends the other direction)."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _connect(name: str) -> socket.socket | None:
    path = socket_path(name)
    if path is None or not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def attach(name: str) -> socket.socket | None:
    """A socket joined to shell ``name``'s terminal, or None when no bridge serves it."""
    sock = _connect(name)
    if sock is not None:
        sock.sendall(b"attach\n")
    return sock


def resize(name: str, rows: int, columns: int) -> None:
    sock = _connect(name)
    if sock is not None:
        with sock:
            sock.sendall(f"resize {int(rows)} {int(columns)}\n".encode())
