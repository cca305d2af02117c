"""`womm shell`: the terminal face of :mod:`womm_jupyter.shell`."""

from __future__ import annotations

import os
import select
import shlex
import signal
import sys
import termios
import tty
from pathlib import Path
from typing import Any

from .errors import OptionError
from .options import ShellOptions
from .shell import start_shell

__all__ = ["shell"]


def shell(options: ShellOptions, command: list[str] | None) -> int:
    """Run ``command`` (or an interactive shell) in one worker; return its exit status."""
    line = shlex.join(command) if command else None
    if line is None and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise OptionError("womm shell without a command needs a terminal: run it in one, or "
                          "give the command after `--` (womm shell -- make test)")
    session = start_shell(options, Path.cwd(), line)

    def stop(signum: int, frame: Any) -> None:
        session.close()
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if line is not None:
            for kind, data in session.output():
                stream = sys.stdout.buffer if kind == "stdout" else sys.stderr.buffer
                stream.write(data)
                stream.flush()
            return session.wait()
        return _interactive(session)
    except KeyboardInterrupt:
        return 130
    finally:
        session.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interactive(session: Any) -> int:
    sock = session.attach_socket()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    def resize(*_: Any) -> None:
        size = os.get_terminal_size(stdout)
        session.resize(size.lines, size.columns)

    resize()
    signal.signal(signal.SIGWINCH, resize)
    saved = termios.tcgetattr(stdin)
    tty.setraw(stdin)  # Ctrl-C and friends go to the remote terminal as bytes
    try:
        while getattr(sock, "pending", 0):  # replayed output the socket already holds
            os.write(stdout, sock.recv(65536))
        while True:
            ready, _, _ = select.select([stdin, sock], [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                os.write(stdout, data)
            if stdin in ready:
                typed = os.read(stdin, 65536)
                if not typed:
                    break
                sock.sendall(typed)
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        sock.close()
    return int(session.wait(timeout=30))
