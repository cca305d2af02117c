"""The live task dashboard: ``womm status`` as a web page (stdlib only).

``python -m womm_jupyter.server.dashboard --unix-socket PATH`` (as jupyter-server-proxy
starts it) or ``--port N`` (on 127.0.0.1). ``/`` is an HTML table of
:func:`womm_jupyter.commands.status` that reloads itself every few seconds; ``/tasks.json`` is
the same rows as JSON. Nothing here changes a task.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import os
import socketserver
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..commands import STATUS_HEADER, status, status_row
from ..errors import WommError

__all__ = ["REFRESH_SECONDS", "main", "render", "serve"]

REFRESH_SECONDS = 2
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #ddd; }
td.cmd, td.pwd { font-family: monospace; }
.RUNNING { color: #1a7f37; } .ORPHANED { color: #cf222e; } .COMPLETE { color: #0969da; }
.error { color: #cf222e; white-space: pre-wrap; }
"""


def render(tasks: list[Any], *, error: str = "", now: float | None = None) -> str:
    """The dashboard page for ``tasks`` (:class:`~womm_jupyter.TaskInfo` rows)."""
    now = time.time() if now is None else now
    head = "".join(f"<th>{h}</th>" for h in STATUS_HEADER)
    rows = []
    for task in tasks:
        cells = status_row(task, now)
        classes = ("id", "age", f"status {task.status}", "cpu", "mem", "health", "pwd", "cmd")
        rows.append(f"<tr data-task='{html.escape(task.task_id, quote=True)}'>"
                    + "".join(f"<td class='{c}'>{html.escape(str(v))}</td>"
                              for c, v in zip(classes, cells, strict=True)) + "</tr>")
    if not rows:
        rows.append(f"<tr><td colspan='{len(STATUS_HEADER)}'><i>no tasks</i></td></tr>")
    problem = f"<p class='error'>{html.escape(error)}</p>" if error else ""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        f"<title>womm tasks</title><style>{_STYLE}</style></head><body>"
        f"<h2>womm tasks</h2>{problem}"
        f"<table class='womm-status'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p><small>{len(tasks)} task{'' if len(tasks) == 1 else 's'} · updated {stamp} · "
        "<code>%womm_finish ID</code> removes one</small></p></body></html>")


def _status() -> tuple[list[Any], str]:
    try:
        return status(), ""
    except WommError as exc:  # e.g. a kubeconfig that cannot be read: say so on the page
        return [], str(exc)


class _Handler(BaseHTTPRequestHandler):
    server_version = "womm-dashboard"
    status_source: Callable[[], tuple[list[Any], str]] = staticmethod(_status)

    def address_string(self) -> str:  # unix sockets have no client address
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # jupyter-server-proxy keeps the process's output; requests are not news

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            tasks, error = self.status_source()
            self._send(200, "text/html; charset=utf-8", render(tasks, error=error).encode())
        elif path == "/tasks.json":
            tasks, error = self.status_source()
            body = json.dumps({"tasks": [dataclasses.asdict(t) for t in tasks],
                               "error": error}).encode()
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain", b"not found: the dashboard is at /\n")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(unix_socket: str = "", port: int = 0) -> socketserver.BaseServer:
    """A dashboard server bound to ``unix_socket`` (or 127.0.0.1:``port``), not yet serving."""
    if unix_socket:
        if os.path.exists(unix_socket):
            os.unlink(unix_socket)
        return _UnixServer(unix_socket, _Handler)
    return _TCPServer(("127.0.0.1", port), _Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="womm-dashboard", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix-socket", default="", help="listen on this unix socket")
    where.add_argument("--port", type=int, default=0, help="listen on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    server = serve(args.unix_socket, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
