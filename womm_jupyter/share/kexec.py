"""``python -m womm_jupyter.share.kexec POD COMMAND...``: a pipe into a pod, for ``rsync -e``.

rsync runs its remote shell as ``RSH HOST COMMAND...`` and speaks its protocol over the
shell's stdin/stdout. This helper is that shell for a Kubernetes pod: it opens one exec
stream (no sshd, no keys, no network path to the pod) and copies bytes both ways until the
remote command ends, then exits with its status. The namespace and kubeconfig context come
from ``WOMM_KEXEC_NAMESPACE`` and ``WOMM_KEXEC_CONTEXT`` (rsync treats ``ns/pod:path`` as a
local path, so they cannot travel in the host name).
"""

from __future__ import annotations

import json
import os
import selectors
import ssl
import sys


def _returncode(stream: object) -> int:
    # The error channel carries a Status object once the command has ended.
    raw = stream.read_channel(3)  # type: ignore[attr-defined]
    if not raw:
        return 0 if not stream.is_open() else 255  # type: ignore[attr-defined]
    status = json.loads(raw)
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", 1))
    sys.stderr.write(f"womm: {status.get('message', 'exec failed')}\n")
    return 255


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: python -m womm_jupyter.share.kexec POD COMMAND...\n")
        return 2
    pod, command = argv[0], argv[1:]
    if pod == "-l":  # rsync passes `-l USER` for user@host: there is no user to be
        pod, command = command[1], command[2:]
    from kubernetes import client
    from kubernetes.stream import stream

    from ..backends.kubernetes import load_config

    api_client, default_namespace = load_config(os.environ.get("WOMM_KEXEC_CONTEXT", ""))
    namespace = os.environ.get("WOMM_KEXEC_NAMESPACE") or default_namespace
    api = client.CoreV1Api(api_client)
    ws = stream(api.connect_get_namespaced_pod_exec, pod, namespace, command=command,
                stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
                binary=True)
    raw = ws.sock.sock
    selector = selectors.DefaultSelector()
    selector.register(raw, selectors.EVENT_READ, "stream")
    selector.register(0, selectors.EVENT_READ, "stdin")
    out, err = sys.stdout.buffer, sys.stderr.buffer
    while True:
        pending = isinstance(raw, ssl.SSLSocket) and raw.pending()
        events = selector.select(timeout=0 if pending else 1.0)
        if pending or any(key.data == "stream" for key, _ in events) or not events:
            ws.update(timeout=0)
            data = ws.read_channel(1)
            if data:
                out.write(data)
                out.flush()
            data = ws.read_channel(2)
            if data:
                err.write(data)
                err.flush()
            if not ws.is_open():
                break
        if any(key.data == "stdin" for key, _ in events):
            chunk = os.read(0, 65536)
            if chunk:
                ws.write_stdin(chunk)
            else:  # rsync closed its end: the remote side ends by protocol
                selector.unregister(0)
    return _returncode(ws)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
