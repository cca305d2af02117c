"""The lazy share on Kubernetes: the project directory mounted in a pod with sshfs.

One exec stream per pod runs ``sshfs -f -o passive :DIR DIR`` (passive: sshfs speaks SFTP on
its stdin/stdout instead of starting ssh); the coordinator connects that stream to a local
``sftp-server -d DIR`` it starts for this pod. No sshd, no keys, nothing listening on this
machine or in the pod. When the coordinator stops (end of run, Ctrl-C, crash) the stream or
sftp-server's stdin closes, sshfs sees end of file and the mount goes away with it.

The pod needs sshfs (the image) and FUSE (the pod privileged: ``--privileged-fuse``). The
mount is live before the pod joins: a loop in the pod compares the device of DIR with its
parent's and says ``womm-mounted`` on the stream's stderr once they differ.

sftp-server runs as the user who runs womm and is not confined to DIR (it has no chroot
without root): the mount shows DIR only, but code in a privileged pod could talk SFTP to it
through sshfs's descriptors. The user opted into that pod's privileges with their own jobs.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import MissingToolError, ShareError
from ..kube.exec import STATUS, STDERR, STDOUT, ExecStream, status_message

__all__ = ["LazyMount", "mount_script", "sftp_server"]

MOUNTED = b"womm-mounted"
_SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                 "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server")

# sh -c SCRIPT womm-mount DIR: mount DIR over itself, say womm-mounted on stderr once the
# mount answers, then wait for sshfs (it ends when its stdin closes, and unmounts). A
# background command's stdin is /dev/null in a non-interactive shell unless redirected
# explicitly: hence fd 3.
_SCRIPT = r"""dir=$1
mkdir -p "$dir" || exit 1
exec 3<&0
sshfs -f -o passive,OPTIONS ":$dir" "$dir" <&3 3<&- &
pid=$!
exec 3<&-
while kill -0 "$pid" 2>/dev/null; do
  if perl -e '@a = stat $ARGV[0]; @b = stat "$ARGV[0]/.."; exit !(@a && @b && $a[0] != $b[0])' \
      "$dir"; then echo womm-mounted >&2; break; fi
  sleep 0.1
done
# Some traffic every minute: the kubelet cuts exec streams idle for its
# streamingConnectionIdleTimeout (4 h by default), which would end the mount mid-run.
( while sleep 60; do ls -d "$dir/." ; done ) >/dev/null 2>&1 </dev/null &
keep=$!
wait "$pid"
status=$?
kill "$keep" 2>/dev/null
exit "$status"
"""
# dcache_timeout: how long sshfs trusts a cached listing or attribute (default 20 s). A file
# created on this machine shows up in the pods within about this long.
SSHFS_OPTIONS = "dcache_timeout=1"


def mount_script(options: str = SSHFS_OPTIONS) -> str:
    """The shell script the pod runs (``sh -c SCRIPT womm-mount DIR``)."""
    return _SCRIPT.replace("OPTIONS", options)


def sftp_server() -> str:
    """This machine's OpenSSH ``sftp-server``."""
    for path in _SFTP_SERVERS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sftp-server")
    if found:
        return found
    raise MissingToolError("a lazy share needs OpenSSH's sftp-server on this machine: install "
                           "it (Debian: apt-get install openssh-sftp-server) or use "
                           "--share eager.")


def _status_text(raw: bytes) -> str:
    code, message = status_message(raw)
    return f"exit status {code}" if code is not None else message


def _read_now(fd: int, size: int) -> bytes | None:
    """What the non-blocking ``fd`` holds now: b"" at its end, None when nothing came yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None


class LazyMount:
    """The project directory ``directory`` mounted in pod ``pod`` while this object lives.

    ``open_stream(command)`` opens an exec stream into the pod; ``on_lost(pod, why)`` is
    called once if the mount ends by itself after :meth:`start` succeeded.
    """

    def __init__(self, pod: str, directory: Path, open_stream: Callable[[list[str]], ExecStream],
                 on_lost: Callable[[str, str], None]) -> None:
        self.pod = pod
        self.directory = directory
        self._open_stream = open_stream
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._mounted = threading.Event()
        self._ended = threading.Event()
        self._server: subprocess.Popen[bytes] | None = None
        self._stream: ExecStream | None = None
        self._thread: threading.Thread | None = None
        self.remote_stderr = ""  # sshfs's (and the script's) messages, last 4 kB
        self.server_stderr = ""
        self.status = ""
        self.reason = ""

    def start(self, timeout: float) -> float:
        """Mount; return the seconds it took. Raises ShareError (with sshfs's words) if the
        mount does not come up within ``timeout``."""
        started = time.monotonic()
        server = sftp_server()
        self._server = subprocess.Popen([server, "-d", str(self.directory), "-e", "-l", "ERROR"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=self.directory,
                                        start_new_session=True)  # Ctrl-C is womm's to handle
        try:
            self._stream = self._open_stream(["sh", "-c", mount_script(), "womm-mount",
                                              str(self.directory)])
        except Exception:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"womm-sshfs-{self.pod}")
        self._thread.start()
        deadline = started + timeout
        while not self._mounted.is_set() and not self._ended.is_set():
            if time.monotonic() > deadline:
                break
            self._mounted.wait(0.05)
        if self._mounted.is_set():
            return time.monotonic() - started
        self.close()
        raise self._failure(timeout)

    def _failure(self, timeout: float) -> ShareError:
        said = self.remote_stderr.strip()
        details = "\n".join(filter(None, (
            f"pod {self.pod}: {said}" if said else "",
            f"sftp-server: {self.server_stderr.strip()}" if self.server_stderr.strip() else "",
            f"pod {self.pod}: {self.reason}" if self.reason else "")))
        what = f"share: mounting {self.directory} in pod {self.pod} with sshfs failed"
        if "sshfs: not found" in said or "sshfs: command not found" in said:
            return ShareError(f"{what}: the worker image has no sshfs. Add it in `womm setup` "
                              "(Debian: apt-get install sshfs), or use --share eager.", details)
        if "/dev/fuse" in said:
            return ShareError(f"{what}: the pod cannot use /dev/fuse. The cluster does not "
                              "let even a privileged pod mount FUSE: use --share eager.",
                              details)
        if not self._ended.is_set():
            return ShareError(f"{what}: not mounted within {timeout:g} s; raise "
                              "--start-timeout or use --share eager.", details)
        return ShareError(f"{what}; use --share eager instead.", details)

    def stop_soon(self) -> None:
        """Ask the stream's thread to stop (then :meth:`close`): lets many mounts stop at
        once instead of one after another."""
        self._stop.set()

    def close(self) -> None:
        """Unmount (close the stream and stop sftp-server); no on_lost call."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
        server = self._server
        if server is not None and server.poll() is None:
            for pipe in (server.stdin, server.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
            server.terminate()
            try:
                server.wait(timeout=3)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server is not None and server.stderr is not None:
            server.stderr.close()

    def _run(self) -> None:
        try:
            self.reason = self._pump()
        except Exception as exc:  # any failure ends this pod's mount, never the run
            self.reason = f"the sshfs stream failed: {exc}"
        finally:
            self._ended.set()
            stopped = self._stop.is_set()
            self._cleanup()
        if not stopped and self._mounted.is_set():
            said = self.remote_stderr.strip()[-300:]
            self._on_lost(self.pod, f"its sshfs mount ended: {self.reason}"
                          + (f" ({said})" if said else ""))

    def _pump(self) -> str:
        assert self._server is not None and self._server.stdin and self._server.stdout \
            and self._server.stderr
        stream = self._stream
        assert stream is not None
        raw = stream.socket
        to_server = self._server.stdin.fileno()
        from_server = self._server.stdout.fileno()
        server_err = self._server.stderr.fileno()
        for fd in (to_server, from_server, server_err):
            os.set_blocking(fd, False)
        selector = selectors.DefaultSelector()
        selector.register(raw, selectors.EVENT_READ, "stream")
        selector.register(from_server, selectors.EVENT_READ, "server")
        selector.register(server_err, selectors.EVENT_READ, "server-err")
        pending = b""  # SFTP requests not yet taken by sftp-server (it may be busy writing)
        writing = False
        while not self._stop.is_set():
            if bool(pending) != writing:
                writing = bool(pending)
                if writing:
                    selector.register(to_server, selectors.EVENT_WRITE, "server-in")
                else:
                    selector.unregister(to_server)
            waiting = stream.pending()
            events = selector.select(timeout=0 if waiting else 0.5)
            ready = {key.data for key, _ in events}
            if waiting or "stream" in ready or (not events and stream.waiting()):
                received, closed = stream.read()
                pending += received.get(STDOUT, b"")
                if STDERR in received:
                    self.remote_stderr = (self.remote_stderr + received[STDERR].decode(
                        errors="replace"))[-4000:]
                    if MOUNTED.decode() in self.remote_stderr and not self._mounted.is_set():
                        self.remote_stderr = self.remote_stderr.replace(MOUNTED.decode() + "\n",
                                                                        "")
                        self._mounted.set()
                if STATUS in received:
                    self.status = _status_text(received[STATUS])
                if closed:
                    if self.status:
                        return f"the mount command in the pod ended ({self.status})"
                    return "the pod's stream closed (pod stopped or deleted)"
            if "server-in" in ready and pending:
                try:
                    written = os.write(to_server, pending)
                except BlockingIOError:
                    written = 0
                except OSError as exc:
                    return f"sftp-server stopped reading ({exc})"
                pending = pending[written:]
            if "server" in ready:
                data = _read_now(from_server, 65536)
                if data == b"":
                    return "sftp-server ended"
                if data:
                    stream.write(data)
            if "server-err" in ready:
                data = _read_now(server_err, 4096)
                if data == b"":
                    selector.unregister(server_err)
                elif data:
                    self.server_stderr = (self.server_stderr
                                          + data.decode(errors="replace"))[-2000:]
        return "stopped"
