"""`womm pods shell NAME [-- COMMAND]`: a terminal into a running pod, joined to this one.

The pod's name comes from the argument or, like the other pod verbs, from standard input
(``womm pods names --running --task ID | head -1 | womm pods shell``); the terminal is then
``/dev/tty``, since standard input is the pipe. Keys go to the remote terminal as bytes (Ctrl-C
interrupts the remote command, not womm), window-size changes follow, and womm exits with the
remote command's status.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import OptionError
from ..kuboid.pods import INTERACTIVE_SHELL, Pods, PodTerminal
from ..options import PodShellOptions
from . import _terminal

__all__ = ["pod_shell"]


def pod_shell(options: PodShellOptions, names: list[str] | None, command: Sequence[str]) -> int:
    """Open the shell (or ``command``) on a terminal in the one named pod; its exit status."""
    if not names:
        raise OptionError("womm pods shell: name the pod (womm pods shell NAME) or pipe its name "
                          "in; `womm pods names --running` lists them")
    if len(names) > 1:
        raise OptionError(f"womm pods shell: one pod at a time, got {len(names)} names "
                          f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): "
                          "pick one, e.g. with `| head -1`")
    pods = Pods(options.context, options.namespace, all_pods=options.all_pods,
                task=options.task)
    # What is wrong with the pod comes first, then whether there is a terminal.
    container = pods.running_container(names[0], options.container)
    with _local_terminal() as fd:
        terminal = pods.terminal(names[0], command or INTERACTIVE_SHELL, container)
        try:
            return _join(terminal, fd)
        finally:
            terminal.close()


@contextlib.contextmanager
def _local_terminal() -> Any:
    """The local terminal's file descriptor: standard input, else /dev/tty."""
    if sys.stdin is not None and sys.stdin.isatty():
        yield sys.stdin.fileno()
        return
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise OptionError("womm pods shell needs a terminal: run it in one, or run a command "
                          "without one: womm pods exec NAME -- COMMAND") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _join(terminal: PodTerminal, fd: int) -> int:
    """Join the local terminal ``fd`` to the pod's terminal; the remote command's status."""
    out = sys.stdout.fileno() if fd == sys.stdin.fileno() and sys.stdout.isatty() else fd
    _terminal.join(terminal, terminal.resize, fd_in=fd, fd_out=out)
    return terminal.returncode
