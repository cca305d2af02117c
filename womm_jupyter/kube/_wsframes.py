"""Reading a Kubernetes exec stream frame by frame.

The client's ``WSClient.update()``/``read_channel()`` pair strands data: reading channel 2
first calls ``update()`` again, which can pull the next channel-1 frames into a buffer that
nothing looks at until the socket becomes readable once more. On a stream that then goes
quiet (a job's last frames, a shell's prompt) those bytes wait forever. It also keeps a copy
of all output for ``read_all()``, which grows without bound on a long-lived stream. So womm
reads the websocket's frames itself: everything already received, nothing more, nothing kept.
"""

from __future__ import annotations

import select
import ssl
from typing import Any

_CLOSE_CHANNEL = 255  # v5.channel.k8s.io: "this channel is closed" signal, not data


def frames_waiting(stream: Any) -> bool:
    """Whether a frame can be read now: bytes on the socket or decrypted in the TLS buffer."""
    raw = stream.sock.sock
    if raw is None:
        return False
    if isinstance(raw, ssl.SSLSocket) and raw.pending():
        return True
    readable, _, _ = select.select((raw,), (), (), 0)
    return bool(readable)


def read_frames(stream: Any) -> tuple[dict[int, bytes], bool]:
    """Every frame already received: payload per channel, and whether the stream closed.

    Call it when the socket is readable (or :func:`frames_waiting`); it returns as soon as
    no further frame is waiting.
    """
    from websocket import ABNF, WebSocketConnectionClosedException

    received: dict[int, bytes] = {}
    ws = stream.sock
    while True:
        try:
            opcode, frame = ws.recv_data_frame(True)
        except WebSocketConnectionClosedException:  # the connection ended without a close frame
            return received, True
        if opcode == ABNF.OPCODE_CLOSE:
            return received, True
        if opcode in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) and frame.data:
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
            channel = data[0]
            if channel != _CLOSE_CHANNEL and len(data) > 1:
                received[channel] = received.get(channel, b"") + data[1:]
        if not frames_waiting(stream):
            return received, False
