"""The Jupyter server side (womm_jupyter/server) and the shell it attaches to, for real: the
dashboard and terminal processes started as jupyter-server-proxy starts them (on a free
loopback port or a unix socket, polled until they answer), a real Docker shell container,
a real WebSocket client typing into it."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import tornado.websocket

import womm_jupyter
from womm_jupyter import commands as manage
from womm_jupyter import server
from womm_jupyter.backends.base import TaskInfo
from womm_jupyter.errors import OptionError, SetupError
from womm_jupyter.options import ShellOptions
from womm_jupyter.server.dashboard import render
from womm_jupyter.shell.docker import start_shell

IMAGE = "womm-base:bookworm"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Process:
    """``python -m MODULE --port N``, answered once ``GET probe`` does."""

    def __init__(self, module: str, probe: str, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp_path / f"{module.rsplit('.', 1)[1]}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + probe, timeout=10):
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            assert self.proc.poll() is None, f"{module} exited: see {self.log.name}"
            assert time.monotonic() < deadline, f"{module} did not answer on {self.url}"
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.headers["Content-Type"], \
                    response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[_Process]:
    process = _Process("womm_jupyter.server.dashboard", "/tasks.json", tmp_path)
    yield process
    process.stop()


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[_Process]:
    process = _Process("womm_jupyter.server.terminal", "/static/xterm.css", tmp_path)
    yield process
    process.stop()


# -- registration ---------------------------------------------------------------------------

def test_entry_points_describe_processes_jupyter_server_proxy_accepts() -> None:
    from jupyter_server_proxy.config import ServerProcess

    found = {e.name: e for e in entry_points(group="jupyter_serverproxy_servers")}
    assert {"womm-dashboard", "womm-terminal"} <= set(found)
    for name, module in (("womm-dashboard", "womm_jupyter.server.dashboard"),
                         ("womm-terminal", "womm_jupyter.server.terminal")):
        config = found[name].load()()
        assert config["command"] == [sys.executable, "-m", module, "--unix-socket",
                                     "{unix_socket}"]
        assert config["unix_socket"] is True
        process = ServerProcess(name=name, **config)
        assert process.unix_socket is True
    dashboard = ServerProcess(name="womm-dashboard", **server.dashboard_process())
    assert dashboard.launcher_entry.enabled
    terminal = ServerProcess(name="womm-terminal", **server.terminal_process())
    assert not terminal.launcher_entry.enabled


def test_urls_follow_the_jupyterhub_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert server.dashboard_url() == "/womm-dashboard/"
    assert server.terminal_url("womm-shell-ab12") == "/womm-terminal/?container=womm-shell-ab12"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada")
    assert server.dashboard_url() == "/user/ada/womm-dashboard/"


# -- dashboard ------------------------------------------------------------------------------

def test_render_escapes_and_says_when_empty() -> None:
    task = TaskInfo("ab12cd34", "docker", 1000.0, "RUNNING", "1", "512Mi", 1, 2, "/p<q>",
                    "echo <b>{}</b> & more", "me@host")
    page = render([task], now=1125.0)
    assert "<td class='id'>ab12cd34</td>" in page and "<td class='age'>2m</td>" in page
    assert "echo &lt;b&gt;{}&lt;/b&gt; &amp; more" in page and "/p&lt;q&gt;" in page
    assert "<td class='health'>1/2</td>" in page and "status RUNNING" in page
    assert "http-equiv='refresh'" in page
    assert "no tasks" in render([], error="bad kubeconfig <x>")
    assert "bad kubeconfig &lt;x&gt;" in render([], error="bad kubeconfig <x>")


def test_dashboard_lists_a_running_task_live(dashboard: _Process, tmp_path: Path) -> None:
    run = womm_jupyter.parallel("sleep 30; echo {}", ["slow"], kube_pods=1, backend="local",
                                cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            code, kind, page = dashboard.get("/")
            if run.task_id in page and "RUNNING" in page:
                break
            assert time.monotonic() < deadline, page
            time.sleep(0.5)
        assert code == 200 and kind.startswith("text/html")
        assert f"data-task='{run.task_id}'" in page and "sleep 30; echo {}" in page
        assert str(tmp_path) in page
        code, kind, body = dashboard.get("/tasks.json")
        rows = {row["task_id"]: row for row in json.loads(body)["tasks"]}
        assert kind == "application/json" and rows[run.task_id]["backend"] == "local"
    finally:
        run.cancel()
        run.wait(60)
    _, _, page = dashboard.get("/")
    assert run.task_id not in page
    assert dashboard.get("/nowhere")[0] == 404


def test_dashboard_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "dash.sock"
    proc = subprocess.Popen([sys.executable, "-m", "womm_jupyter.server.dashboard",
                             "--unix-socket", str(path)])
    try:
        deadline = time.monotonic() + 60
        conn = http.client.HTTPConnection("localhost")
        while True:  # the file appears at bind(), connections are accepted after listen()
            conn.sock = socket.socket(socket.AF_UNIX)
            try:
                conn.sock.connect(str(path))
                break
            except OSError:
                conn.sock.close()
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert "<h2>womm tasks</h2>" in response.read().decode()
    finally:
        proc.terminate()
        proc.wait(10)


# -- shell ----------------------------------------------------------------------------------

def _options(**values: Any) -> ShellOptions:
    return ShellOptions(**{"backend": "docker", "image": IMAGE, **values})


def test_shell_command_streams_and_returns_its_status(docker_client: Any,
                                                      tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("three\nlines\nhere\n")
    session = start_shell(_options(kube_mem="256Mi"), tmp_path,
                          "wc -l < data.txt; echo oops >&2; echo $HOME $PWD; exit 7",
                          client=docker_client)
    try:
        chunks = list(session.output())
        assert session.wait() == 7
        out = b"".join(data for kind, data in chunks if kind == "stdout")
        err = b"".join(data for kind, data in chunks if kind == "stderr")
        assert (out, err) == (f"3\n/tmp {tmp_path}\n".encode(), b"oops\n")
        assert session.container.attrs["HostConfig"]["Memory"] == 256 * 2**20
    finally:
        session.close()
    assert docker_client.api.containers(all=True, filters={"name": session.name}) == []


def test_interactive_shell_is_a_task_until_finished(docker_client: Any,
                                                    tmp_path: Path) -> None:
    session = start_shell(_options(), tmp_path, client=docker_client)
    try:
        rows = {t.task_id: t for t in manage.status()}
        assert rows[session.task_id].status == "RUNNING"
        assert rows[session.task_id].command == "womm shell"
        assert rows[session.task_id].cwd == str(tmp_path)
        assert session.running()
        assert manage.finish(session.task_id) == [f"containers/womm-task-{session.task_id}"]
        assert docker_client.api.containers(all=True, filters={"name": session.name}) == []
    finally:
        session.close()


def test_shell_refuses_what_it_cannot_do(tmp_path: Path, docker_client: Any) -> None:
    with pytest.raises(OptionError, match="--image is required"):
        start_shell(ShellOptions(backend="docker"), tmp_path)
    with pytest.raises(OptionError, match="--backend local has no shell"):
        start_shell(_options(backend="local"), tmp_path)
    with pytest.raises(SetupError, match="womm-no-such:image is not on this Docker engine"):
        start_shell(_options(image="womm-no-such:image"), tmp_path, client=docker_client)


# -- terminal -------------------------------------------------------------------------------

async def _converse(url: str, typed: bytes, until: bytes | None = None) -> tuple[bytes, Any]:
    """Connect, type, read until ``until`` shows (then detach) or the server closes;
    (output, socket)."""
    ws = await tornado.websocket.websocket_connect(url)
    await ws.write_message(json.dumps({"resize": [30, 120]}))
    await ws.write_message(typed, binary=True)
    seen = b""
    while until is None or until not in seen:
        message = await asyncio.wait_for(ws.read_message(), 60)
        if message is None:
            return seen, ws
        seen += message if isinstance(message, bytes) else message.encode()
    ws.close()
    return seen, ws


def test_web_terminal_runs_typed_commands(terminal: _Process, docker_client: Any,
                                          tmp_path: Path) -> None:
    session = start_shell(_options(), tmp_path, client=docker_client)
    try:
        code, kind, page = terminal.get(f"/?container={session.name}")
        assert code == 200 and kind.startswith("text/html")
        assert f'data-container="{session.name}"' in page
        assert '<script src="static/xterm.js"></script>' in page
        code, kind, script = terminal.get("/static/xterm.js")
        assert code == 200 and "javascript" in kind and "Terminal" in script
        ws_url = terminal.url.replace("http", "ws") + f"/ws?container={session.name}"
        # A first page runs a command and is closed: that only detaches.
        seen, ws = asyncio.run(_converse(ws_url, b"echo first-$((2*3))\n", b"first-6\r\n"))
        assert ws.close_code is None or ws.close_code != 1011, ws.close_reason
        assert session.running()
        # The next page is shown the earlier output first, then runs its own.
        seen, ws = asyncio.run(_converse(ws_url, b"echo $((6*7)) > answer; stty size; "
                                                 b"cat answer; exit 3\n"))
        assert b"first-6" in seen and seen.index(b"first-6") < seen.index(b"30 120")
        assert b"30 120" in seen and b"\r\n42\r\n" in seen
        assert (ws.close_code, ws.close_reason) == (1000, "shell ended")
        assert (tmp_path / "answer").read_text() == "42\n"
        assert session.wait() == 3
        deadline = time.monotonic() + 30
        while docker_client.api.containers(all=True, filters={"name": session.name}):
            assert time.monotonic() < deadline, "the exited shell's container was not removed"
            time.sleep(0.2)
    finally:
        session.close()


def test_web_terminal_reaches_only_womm_containers(terminal: _Process) -> None:
    code, _, _ = terminal.get("/?container=some-database")
    assert code == 400
    assert terminal.get("/static/../../etc/passwd")[0] == 404
    ws_url = terminal.url.replace("http", "ws") + "/ws?container=womm-shell-gone0000"
    seen, ws = asyncio.run(_converse(ws_url, b""))
    assert seen == b""
    assert ws.close_code == 1011 and "its shell has ended" in ws.close_reason
