"""The local end of a pod's job connections.

Each Ready pod gets one long-lived exec stream running ``transport/mux.pl``; this relay
listens on the worker's local unix socket (the path the job slots point at, as with Docker)
and carries every accepted job connection over that stream as a channel. Job bytes never
touch the Kubernetes API per job, only the already-open stream.
"""

from __future__ import annotations

import itertools
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from ..kube.exec import STDERR, STDOUT, ExecStream

_HEADER = struct.Struct(">cII")  # type, channel, length (as mux.pl)


class PodRelay:
    """Serve ``socket_path`` for one pod until its stream or the relay closes.

    ``open_stream()`` returns an exec stream running mux.pl; ``on_closed(reason)`` is
    called once when the relay stops by itself.
    """

    def __init__(self, pod: str, socket_path: Path, open_stream: Callable[[], ExecStream],
                 on_closed: Callable[[str], None]) -> None:
        self.pod = pod
        self.socket_path = socket_path
        self._open_stream = open_stream
        self._on_closed = on_closed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"womm-relay-{pod}")
        self.error = ""

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop relaying (jobs on this pod lose their connection); no on_closed call."""
        self._stop.set()
        if self._thread.ident is not None:  # not started yet while its pod is being prepared
            self._thread.join(timeout=5)

    def _run(self) -> None:
        reason = "the pod's stream closed"
        try:
            reason = self._serve()
        except Exception as exc:  # any failure ends this pod's service, never the run
            reason = f"relay failed: {exc}"
        finally:
            self.socket_path.unlink(missing_ok=True)
        if not self._stop.is_set():
            self._on_closed(reason)

    def _serve(self) -> str:
        stream = self._open_stream()
        raw = stream.socket
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = self.socket_path.with_name(self.socket_path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        listener.bind(str(tmp))
        # Whoever connects runs jobs as this user: the user's alone, as the agent's socket.
        # chmod after bind, not umask (process-wide: other threads create files); until then
        # the private state directory keeps others out.
        tmp.chmod(0o600)
        listener.listen(512)
        listener.setblocking(False)
        tmp.replace(self.socket_path)  # appears only once it accepts: readiness
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "listen")
        selector.register(raw, selectors.EVENT_READ, "stream")
        conns: dict[int, socket.socket] = {}
        ids = itertools.count(1)
        buffer = b""
        try:
            while not self._stop.is_set():
                pending = stream.pending()
                events = selector.select(timeout=0 if pending else 0.5)
                if pending or any(key.data == "stream" for key, _ in events):
                    received, closed = stream.read()
                    buffer += received.get(STDOUT, b"")
                    if STDERR in received:
                        self.error = (self.error
                                      + received[STDERR].decode(errors="replace"))[-2000:]
                    buffer = self._deliver(buffer, conns, selector, stream)
                    if closed:
                        said = f": {self.error.strip()[-500:]}" if self.error.strip() else ""
                        return f"the pod's stream closed (pod stopped or deleted){said}"
                # Frames for the pod are collected over one round and sent as one message: each
                # write costs a trip through the API server and the kubelet.
                outgoing = bytearray()
                for key, _ in events:
                    if key.data == "listen":
                        for accepted in _accept_all(listener):
                            channel = next(ids)
                            conns[channel] = accepted
                            selector.register(accepted, selectors.EVENT_READ, channel)
                            outgoing += _HEADER.pack(b"C", channel, 0)
                            # The client sends its command right after connecting: it usually
                            # travels with the open.
                            outgoing += self._forward(channel, conns, selector, socket.MSG_DONTWAIT)
                    elif isinstance(key.data, int) and key.data in conns:  # not ended this round
                        outgoing += self._forward(key.data, conns, selector)
                if outgoing:
                    stream.write(bytes(outgoing))
            return "stopped"
        finally:
            for conn in conns.values():
                conn.close()
            listener.close()
            stream.close()

    @staticmethod
    def _forward(channel: int, conns: dict[int, socket.socket],
                 selector: selectors.BaseSelector, flags: int = 0) -> bytes:
        """The frames for what a job client sent: its bytes, or the end of its channel."""
        client = conns[channel]
        try:
            data = client.recv(65536, flags)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if data:
            return _HEADER.pack(b"D", channel, len(data)) + data
        selector.unregister(client)
        client.close()
        del conns[channel]
        return _HEADER.pack(b"E", channel, 0)

    @staticmethod
    def _deliver(buffer: bytes, conns: dict[int, socket.socket],
                 selector: selectors.BaseSelector, stream: ExecStream) -> bytes:
        while len(buffer) >= _HEADER.size:
            kind, channel, size = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            data = buffer[_HEADER.size:_HEADER.size + size]
            buffer = buffer[_HEADER.size + size:]
            conn = conns.get(channel)
            if conn is None:
                continue
            if kind == b"D":
                try:
                    conn.sendall(data)
                    continue
                except OSError:  # the job client is gone: the pod's end must close too
                    stream.write(_HEADER.pack(b"E", channel, 0))
            selector.unregister(conn)
            conn.close()
            del conns[channel]
        return buffer


def _accept_all(listener: socket.socket) -> list[socket.socket]:
    accepted: list[socket.socket] = []
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return accepted
        conn.setblocking(True)
        accepted.append(conn)
