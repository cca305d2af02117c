"""The web terminal: xterm.js in the page, a container's TTY at the other end.

``python -m womm_jupyter.server.terminal --unix-socket PATH`` (as jupyter-server-proxy
starts it) or ``--port N`` (127.0.0.1). Routes, relative to where the proxy mounts it:

``/?container=NAME``
    the page: xterm.js (vendored, ``vendor/xterm``) connected to ``ws?container=NAME``.
``/ws?container=NAME``
    a WebSocket joined to the container's terminal through the docker SDK's attach socket
    (what ``docker attach`` does): binary messages are terminal bytes both ways; a text
    message ``{"resize": [rows, columns]}`` resizes the TTY. The terminal's earlier output is
    replayed first, so a reloaded page shows the prompt and history. A Kubernetes shell
    (a pod named ``womm-shell-ID``, its exec held by the kernel that started it) is reached
    through the kernel's :mod:`womm_jupyter.shell.bridge` socket instead, which replays its
    recent output (the last 64 KiB) the same way.
``/static/...``
    the vendored xterm.js files.

Only womm's own containers can be reached: names starting ``womm-shell-`` (``%womm_shell``)
or ``womm-setup-`` (``%womm_setup``'s testbed). The process listens where only the Jupyter
server's proxy reaches it (a unix socket in a private directory); that proxy authenticates
every request, WebSockets included (jupyter-server-proxy >= 4.4 fixes CVE-2024-28179).
Tornado comes with the Jupyter server this runs beside.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import re
import threading
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
import tornado.websocket

__all__ = ["ALLOWED", "make_app", "vendored_xterm"]

ALLOWED = re.compile(r"^(womm-shell-|womm-setup-)[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PACKAGE = Path(__file__).resolve().parent.parent
_STATIC = ("xterm.js", "xterm.css", "addon-fit.js")

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>womm terminal: {name}</title>
<link rel="stylesheet" href="static/xterm.css">
<style>
html, body {{ height: 100%; margin: 0; background: #1e1e1e; }}
#terminal {{ position: absolute; inset: 4px; }}
</style></head>
<body data-container="{name}"><div id="terminal"></div>
<script src="static/xterm.js"></script>
<script src="static/addon-fit.js"></script>
<script>
const name = document.body.dataset.container;
const term = new Terminal({{cursorBlink: true, scrollback: 5000}});
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal"));
fit.fit();
const url = new URL("ws?container=" + encodeURIComponent(name), window.location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const encoder = new TextEncoder();
const sendSize = () => {{
  if (ws.readyState === WebSocket.OPEN)
    ws.send(JSON.stringify({{resize: [term.rows, term.cols]}}));
}};
ws.onopen = () => {{ sendSize(); term.focus(); document.body.dataset.state = "open"; }};
ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
ws.onclose = (e) => {{
  document.body.dataset.state = "closed";
  term.write("\\r\\n\\x1b[2m[" + (e.reason || "terminal closed") + "]\\x1b[0m\\r\\n");
}};
term.onData((data) => {{ if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); }});
term.onResize(sendSize);
window.addEventListener("resize", () => fit.fit());
</script></body></html>
"""


def vendored_xterm() -> Path:
    """The directory of the vendored xterm.js: inside the wheel, or ``vendor/xterm``."""
    for candidate in (_PACKAGE / "_vendor" / "xterm", _PACKAGE.parent / "vendor" / "xterm"):
        if (candidate / "xterm.js").is_file():
            return candidate
    raise FileNotFoundError("womm's copy of xterm.js is missing from this installation: "
                            "reinstall womm_jupyter")


def _container(handler: tornado.web.RequestHandler) -> str:
    name = handler.get_query_argument("container", "")
    if not ALLOWED.match(name):
        raise tornado.web.HTTPError(
            400, reason="container must name a womm shell or setup testbed")
    return name


class _Page(tornado.web.RequestHandler):
    def get(self) -> None:
        name = _container(self)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(_PAGE.format(name=html.escape(name, quote=True)))


class _Static(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        if name not in _STATIC:
            raise tornado.web.HTTPError(404)
        kind = "text/css" if name.endswith(".css") else "application/javascript"
        self.set_header("Content-Type", f"{kind}; charset=utf-8")
        self.set_header("Cache-Control", "max-age=3600")
        self.finish((vendored_xterm() / name).read_bytes())


class _Terminal(tornado.websocket.WebSocketHandler):
    """One browser terminal joined to one container's TTY."""

    client: Any = None  # a docker client, shared by the connections of this process

    def check_origin(self, origin: str) -> bool:
        # Only the Jupyter server's proxy reaches this process (private unix socket), and it
        # checks the origin and the user's credentials before it forwards a WebSocket.
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        from ..backends.docker import connect
        from ..errors import WommError
        from ..shell import bridge as tty_bridge
        from ..shell.docker import attach_terminal

        self._name = _container(self)
        self._loop = tornado.ioloop.IOLoop.current()
        self._sock: Any = tty_bridge.attach(self._name)  # a kernel's Kubernetes shell
        self._bridged = self._sock is not None
        try:
            if self._sock is None:
                if _Terminal.client is None:
                    _Terminal.client = connect()
                self._sock = attach_terminal(_Terminal.client, self._name)
        except WommError as exc:
            self.close(1011, str(exc).splitlines()[0][:120])
            return
        threading.Thread(target=self._pump, daemon=True,
                         name=f"womm-terminal-{self._name}").start()

    def _pump(self) -> None:
        """Container -> browser, on a thread (the docker socket blocks)."""
        sock = self._sock
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                self._loop.add_callback(self._forward, data)
        except OSError:
            pass
        self._loop.add_callback(self._ended)

    def _forward(self, data: bytes) -> None:
        try:
            self.write_message(data, binary=True)
        except tornado.websocket.WebSocketClosedError:
            pass

    def _ended(self) -> None:
        if self.ws_connection is not None:
            self.close(1000, "shell ended")

    def on_message(self, message: str | bytes) -> None:
        if self._sock is None:
            return
        if isinstance(message, bytes):
            try:
                self._sock.sendall(message)
            except OSError:
                self._ended()
            return
        try:
            rows, columns = json.loads(message)["resize"]
            if self._bridged:
                from ..shell import bridge as tty_bridge

                tty_bridge.resize(self._name, int(rows), int(columns))
            else:
                _Terminal.client.api.resize(self._name, height=int(rows), width=int(columns))
        except Exception:  # a malformed control message, or the shell is gone: ignore it
            pass

    def on_close(self) -> None:
        # Closing the page detaches; the shell keeps running until it exits or its session
        # (the kernel's %womm_shell, the setup widget) closes it.
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass


def make_app() -> tornado.web.Application:
    """The terminal's tornado application (routes as in the module's docstring)."""
    return tornado.web.Application([
        (r"/", _Page),
        (r"/ws", _Terminal),
        (r"/static/([A-Za-z0-9_.-]+)", _Static),
    ], websocket_ping_interval=20)


async def _serve(unix_socket: str, port: int) -> None:
    server = tornado.httpserver.HTTPServer(make_app())
    if unix_socket:
        server.add_socket(tornado.netutil.bind_unix_socket(unix_socket, mode=0o600))
    else:
        server.listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="womm-terminal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix-socket", default="", help="listen on this unix socket")
    where.add_argument("--port", type=int, default=0, help="listen on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.unix_socket, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
