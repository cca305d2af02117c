"""``%womm_shell`` on Kubernetes in the web terminal: the magic (a real IPython shell) starts
the shell pod and keeps its exec in the kernel, serving it on the kernel's tty bridge; the real
terminal process (``python -m womm_jupyter.server.terminal``) reaches it by the shell's name;
a real WebSocket client types into it, resizes it, detaches, and a second page attaches
again: it sees the earlier output, types, and ends the shell with its exit status."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import tornado.websocket
from kubernetes import client

import womm_jupyter
from womm_jupyter.shell.kubernetes import KubernetesShell

pytestmark = pytest.mark.cluster


@pytest.fixture
def terminal(tmp_path):
    """The terminal process as jupyter-server-proxy starts it (here on a loopback port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "terminal.log").open("wb")
    # The same womm_jupyter as this test's (a checkout may shadow the installed one).
    source = os.path.dirname(os.path.dirname(womm_jupyter.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [source, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-m", "womm_jupyter.server.terminal", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/static/xterm.css", timeout=10):
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "see terminal.log"
        time.sleep(0.1)
    yield url.replace("http", "ws")
    proc.terminate()
    proc.wait(10)
    log.close()


async def _type(url: str, typed: bytes, until: bytes | None) -> tuple[bytes, object]:
    """Connect, resize, type; read until ``until`` shows (then detach) or the server closes."""
    ws = await tornado.websocket.websocket_connect(url)
    await ws.write_message(json.dumps({"resize": [30, 120]}))
    await asyncio.sleep(0.5)  # the resize reaches the remote terminal before the command
    if ws.close_code is not None:  # refused: say why
        return b"", ws
    await ws.write_message(typed, binary=True)
    seen = b""
    while until is None or until not in seen:
        message = await asyncio.wait_for(ws.read_message(), 60)
        if message is None:
            return seen, ws
        seen += message if isinstance(message, bytes) else message.encode()
    ws.close()
    return seen, ws


def test_kubernetes_shell_in_the_web_terminal(ip, cluster, namespace, terminal, capsys):
    session = ip.run_line_magic("womm_shell", f"--backend kubernetes --namespace {namespace} "
                                              f"--image {cluster.base_image} --kube-cpu 0.1 "
                                              "--kube-mem 64Mi")
    try:
        assert isinstance(session, KubernetesShell)
        assert f"womm: shell {session.name}" in capsys.readouterr().err
        url = f"{terminal}/ws?container={session.name}"
        seen, ws = asyncio.run(_type(url, b"echo $((6*7))-answer; stty size\n", b"30 120"))
        assert b"42-answer" in seen and b"30 120" in seen, (seen, ws.close_reason)
        time.sleep(1)
        assert session.running()  # closing the page only detached
        # A second page: the earlier output replayed first, then its own command; the
        # shell's exit closes the page and is the session's exit status.
        seen, ws = asyncio.run(_type(url, b"echo again-$((2*3)); exit 3\n", None))
        assert b"42-answer" in seen and b"again-6" in seen, (seen, ws.close_reason)
        assert seen.index(b"42-answer") < seen.index(b"again-6")
        assert (ws.close_code, ws.close_reason) == (1000, "shell ended")
        assert session.wait(30) == 3
    finally:
        session.close()
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + 60
    while core.list_namespaced_pod(namespace, label_selector="womm/task").items:
        assert time.monotonic() < deadline, "the shell's pod was not deleted"
        time.sleep(0.5)
