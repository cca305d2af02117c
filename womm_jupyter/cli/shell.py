"""`womm shell`: the terminal face of :mod:`womm_jupyter.shell.docker`."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..options import ShellOptions
from ..shell.docker import ShellSession, start_shell
from ..shell.kubernetes import KubernetesShell
from . import _terminal

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


def _interactive(session: ShellSession | KubernetesShell) -> int:
    _terminal.join_socket(session.attach_socket(), session.resize)
    return int(session.wait(timeout=30))
