"""`womm shell`: an interactive shell in a worker (Docker or Kubernetes) and its terminal bridge.

:class:`TerminalSession` is what a terminal face needs of a remote terminal: a `womm shell`
worker (:class:`~womm_jupyter.shell.docker.ShellSession`,
:class:`~womm_jupyter.shell.kubernetes.KubernetesShell`) or a `womm setup` testbed
(:class:`~womm_jupyter.setup.testbed.Testbed`).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["TerminalSession"]


class TerminalSession(Protocol):
    """A remote terminal that a local terminal or a web page joins."""

    @property
    def name(self) -> str:
        """The container's or pod's name."""

    def attach_socket(self) -> Any:
        """A socket: bytes written go to the remote terminal, bytes read come from it."""

    def resize(self, rows: int, columns: int) -> None:
        """Tell the remote terminal its size."""

    def running(self) -> bool:
        """Whether the remote shell still runs."""
