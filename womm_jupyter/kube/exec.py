"""Exec streams into pods: one opener, frames read by :mod:`._wsframes`, one status parser.

Every exec of womm (the job relay, the eager share's rsync pipe, the lazy share's sshfs,
`womm pods exec` and `shell`, `womm shell`) opens its stream with :func:`open_exec` and reads
it with :meth:`ExecStream.read` (every frame already received, nothing stranded, nothing
kept). The remote command's exit status arrives on :data:`STATUS` at its end; read it with
:func:`exit_status`.
"""

from __future__ import annotations

import json
import select
import ssl
from collections.abc import Sequence
from typing import Any

from ._wsframes import frames_waiting, read_frames
from .client import Clients, translate

__all__ = ["RESIZE", "STATUS", "STDERR", "STDIN", "STDOUT", "ExecStream", "exit_status",
           "open_exec", "status_message"]

# v4/v5.channel.k8s.io channels.
STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3  # the command's end: a metav1.Status as JSON
RESIZE = 4  # the terminal's size, {"Width": columns, "Height": rows}


class ExecStream:
    """A binary exec stream (one thread at a time may use it)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def socket(self) -> Any:
        """The connection's socket, for ``select``/``selectors``."""
        return self._client.sock.sock

    def fileno(self) -> int:
        return int(self.socket.fileno())

    def pending(self) -> bool:
        """Whether bytes are already decrypted and waiting (``select`` cannot see those)."""
        raw = self.socket
        return isinstance(raw, ssl.SSLSocket) and raw.pending() > 0

    def waiting(self) -> bool:
        """Whether a frame can be read now."""
        return frames_waiting(self._client)

    def read(self) -> tuple[dict[int, bytes], bool]:
        """Every frame already received: payload per channel, and whether the stream closed.
        Call it when :meth:`waiting` (or the socket is readable)."""
        return read_frames(self._client)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a frame; whether one can be read."""
        if self.pending():
            return True
        raw = self.socket
        if raw is None:
            return False
        readable, _, _ = select.select((raw,), (), (), timeout)
        return bool(readable)

    def write(self, data: bytes) -> None:
        """Send bytes to the command's standard input."""
        self._client.write_stdin(data)

    def resize(self, rows: int, columns: int) -> None:
        """Tell the remote terminal its window size."""
        self._client.write_channel(RESIZE, json.dumps({"Width": columns, "Height": rows}))

    def close(self) -> None:
        """Close the stream (the remote command gets a hang-up)."""
        self._client.close()


def open_exec(built: Clients, pod: str, command: Sequence[str], *, stdin: bool = True,
              stderr: bool = True, tty: bool = False, container: str = "") -> ExecStream:
    """Run ``command`` in ``pod`` (in ``built``'s namespace); raises ApiError."""
    from kubernetes.stream import stream  # not at import: see client.py

    api = built.fresh_core()  # the stream patches its client while it runs: one of its own
    extra = {"container": container} if container else {}
    try:
        client = stream(api.connect_get_namespaced_pod_exec, pod, built.namespace,
                         command=list(command), stdin=stdin, stdout=True, stderr=stderr,
                         tty=tty, _preload_content=False, binary=True, **extra)
    except Exception as exc:  # the SDK wraps every failure (a 403 handshake, a refused
        # connection) in ApiException(status=0)
        raise translate(exc, f"create pods/exec {pod}", built.namespace, built.server) from exc
    return ExecStream(client)


def status_message(raw: bytes) -> tuple[int | None, str]:
    """The exit status in an exec's :data:`STATUS` payload and the status's message:
    ``{"status": "Success"}`` is 0; a failure names its code in the ``ExitCode`` cause. None
    when there is no status (the stream ended without one: the pod was deleted) or no code in
    it (the exec itself failed: the message says why)."""
    try:
        status = json.loads(raw)
    except ValueError:
        return None, ""
    if not isinstance(status, dict):
        return None, ""
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", 1)), str(status.get("message", ""))
            except ValueError:
                break
    return None, str(status.get("message", ""))


def exit_status(raw: bytes) -> int | None:
    """The exit status in an exec's :data:`STATUS` payload (see :func:`status_message`)."""
    return status_message(raw)[0]
