"""This terminal joined to a remote one, the way `docker run -it` does it."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import termios
import tty
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["RemoteTerminal", "SocketTerminal", "join", "join_socket"]


class RemoteTerminal(Protocol):
    """The remote side of :func:`join` (e.g. ``kuboid.pods.PodTerminal``)."""

    closed: bool  # the remote end has gone

    def fileno(self) -> int:
        """What ``select`` waits on for the remote's output."""

    def ready(self) -> bool:
        """Whether output was already received that ``select`` cannot see."""

    def read(self) -> bytes:
        """The output received so far (may be b"" while not :attr:`closed`)."""

    def write(self, data: bytes) -> None:
        """Send typed bytes."""


class SocketTerminal:
    """A socket joined to a remote terminal (a container's attach socket, a Kubernetes
    shell's), as a :class:`RemoteTerminal`; its end is the socket's end."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def ready(self) -> bool:
        # Replayed output the socket object already holds (shell.docker's _TerminalSocket).
        return bool(getattr(self._sock, "pending", 0))

    def read(self) -> bytes:
        data = self._sock.recv(65536)
        self.closed = not data
        return data

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)


def join(remote: RemoteTerminal, resize: Callable[[int, int], None], *,
         fd_in: int | None = None, fd_out: int | None = None) -> None:
    """Relay bytes between this terminal (in raw mode) and ``remote`` until either side ends.

    Raw mode sends Ctrl-C and friends to the remote terminal as bytes; a window change here
    becomes ``resize(rows, columns)`` there. ``fd_in``/``fd_out``: the local terminal
    (default: standard input and output).
    """
    fd_in = sys.stdin.fileno() if fd_in is None else fd_in
    fd_out = sys.stdout.fileno() if fd_out is None else fd_out

    def on_window_change(*_: Any) -> None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd_out)
            resize(size.lines, size.columns)

    on_window_change()
    previous = signal.signal(signal.SIGWINCH, on_window_change)
    saved = termios.tcgetattr(fd_in)
    tty.setraw(fd_in)
    try:
        while not remote.closed:
            far = remote.fileno()
            ready = [far] if remote.ready() else select.select([fd_in, far], [], [])[0]
            if far in ready:
                data = remote.read()
                while data:
                    data = data[os.write(fd_out, data):]
            if fd_in in ready:
                typed = os.read(fd_in, 65536)
                if not typed:
                    break
                remote.write(typed)
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


def join_socket(sock: Any, resize: Callable[[int, int], None]) -> None:
    """:func:`join` this terminal to the remote terminal behind ``sock``; closes ``sock``."""
    try:
        join(SocketTerminal(sock), resize)
    finally:
        sock.close()
