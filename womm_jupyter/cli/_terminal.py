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
from typing import Any


def join(sock: socket.socket, resize: Callable[[int, int], None]) -> None:
    """Relay bytes between this terminal (in raw mode) and ``sock`` until either side ends.

    Raw mode sends Ctrl-C and friends to the remote terminal as bytes; a window change here
    becomes ``resize(rows, columns)`` there. Closes ``sock``.
    """
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()

    def on_window_change(*_: Any) -> None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd_out)
            resize(size.lines, size.columns)

    on_window_change()
    previous = signal.signal(signal.SIGWINCH, on_window_change)
    saved = termios.tcgetattr(fd_in)
    tty.setraw(fd_in)
    try:
        while getattr(sock, "pending", 0):  # replayed output the socket object already holds
            os.write(fd_out, sock.recv(65536))
        while True:
            try:
                ready, _, _ = select.select([fd_in, sock], [], [])
            except InterruptedError:
                continue
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                os.write(fd_out, data)
            if fd_in in ready:
                typed = os.read(fd_in, 65536)
                if not typed:
                    break
                sock.sendall(typed)
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        sock.close()
