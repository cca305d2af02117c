"""``python -m womm_jupyter.share.kexec POD COMMAND...``: a pipe into a pod, for ``rsync -e``.

rsync runs its remote shell as ``RSH HOST COMMAND...`` and speaks its protocol over the
shell's stdin/stdout. This helper is that shell for a Kubernetes pod: it opens one exec
stream (no sshd, no keys, no network path to the pod) and copies bytes both ways until the
remote command ends, then exits with its status. The namespace and kubeconfig context come
from ``WOMM_KEXEC_NAMESPACE`` and ``WOMM_KEXEC_CONTEXT`` (rsync treats ``ns/pod:path`` as a
local path, so they cannot travel in the host name).
"""

from __future__ import annotations

import os
import selectors
import sys

from ..errors import WommError
from ..kube.client import clients
from ..kube.exec import STATUS, STDERR, STDOUT, open_exec, status_message


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: python -m womm_jupyter.share.kexec POD COMMAND...\n")
        return 2
    pod, command = argv[0], argv[1:]
    if pod == "-l":  # rsync passes `-l USER` for user@host: there is no user to be
        pod, command = command[1], command[2:]
    try:
        built = clients(os.environ.get("WOMM_KEXEC_CONTEXT", ""),
                        os.environ.get("WOMM_KEXEC_NAMESPACE", ""))
        stream = open_exec(built, pod, command)
    except WommError as exc:
        sys.stderr.write(f"womm: {exc}\n")
        return 255
    selector = selectors.DefaultSelector()
    selector.register(stream.socket, selectors.EVENT_READ, "stream")
    selector.register(0, selectors.EVENT_READ, "stdin")
    out, err = sys.stdout.buffer, sys.stderr.buffer
    status = b""
    try:
        while True:
            pending = stream.pending()
            events = selector.select(timeout=0 if pending else 1.0)
            if pending or any(key.data == "stream" for key, _ in events):
                received, closed = stream.read()
                if received.get(STDOUT):
                    out.write(received[STDOUT])
                    out.flush()
                if received.get(STDERR):
                    err.write(received[STDERR])
                    err.flush()
                status += received.get(STATUS, b"")
                if closed:
                    break
            if any(key.data == "stdin" for key, _ in events):
                chunk = os.read(0, 65536)
                if chunk:
                    stream.write(chunk)
                else:  # rsync closed its end: the remote side ends by protocol
                    selector.unregister(0)
    finally:
        stream.close()
    code, message = status_message(status)
    if code is None:
        if message:
            sys.stderr.write(f"womm: {message}\n")
        return 255
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
