"""The Jupyter server side of womm, registered through jupyter-server-proxy.

Two entry points of the group ``jupyter_serverproxy_servers`` (declared in pyproject.toml;
named ``*_process`` so the submodules of the same names do not shadow them):

``womm-dashboard``
    :mod:`womm_jupyter.server.dashboard`: a tiny stdlib HTTP server rendering
    :func:`womm_jupyter.commands.status` as an HTML page that refreshes itself.
``womm-terminal``
    :mod:`womm_jupyter.server.terminal`: a web terminal (xterm.js, vendored) attached to the
    TTY of a ``%womm_shell`` container or a ``%womm_setup`` testbed, chosen by the page's
    ``?container=`` parameter.

jupyter-server-proxy starts each process on first use, listening on a unix socket in a
private temporary directory, and serves it under ``<base_url>womm-dashboard/`` and
``<base_url>womm-terminal/`` behind the Jupyter server's own authentication (so it works on
JupyterHub too). This module imports nothing from Jupyter: its functions only describe the
processes and build the URLs the magics and widgets show.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from typing import Any

__all__ = ["DASHBOARD", "TERMINAL", "base_url", "dashboard_process", "dashboard_url",
           "terminal_process", "terminal_url"]

DASHBOARD = "womm-dashboard"
TERMINAL = "womm-terminal"


def _process(module: str, title: str) -> dict[str, Any]:
    return {
        "command": [sys.executable, "-m", module, "--unix-socket", "{unix_socket}"],
        "unix_socket": True,  # a socket in a private directory: no port other users reach
        "timeout": 30,  # a busy machine starts Python slowly
        "launcher_entry": {"enabled": True, "title": title},
    }


def dashboard_process() -> dict[str, Any]:
    """jupyter-server-proxy's description of the task dashboard process."""
    return _process("womm_jupyter.server.dashboard", "womm tasks")


def terminal_process() -> dict[str, Any]:
    """jupyter-server-proxy's description of the web terminal process."""
    config = _process("womm_jupyter.server.terminal", "womm terminal")
    config["launcher_entry"] = {"enabled": False}  # it needs a container: magics link to it
    return config


def base_url() -> str:
    """The Jupyter server's base URL as a kernel can know it: JupyterHub's prefix for this
    user's server (``JUPYTERHUB_SERVICE_PREFIX``), else ``/``."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/") or "/"
    return prefix if prefix.endswith("/") else prefix + "/"


def dashboard_url() -> str:
    """The dashboard's path on the Jupyter server."""
    return f"{base_url()}{DASHBOARD}/"


def terminal_url(container: str) -> str:
    """The web terminal of ``container`` (a ``womm-shell-*`` or ``womm-setup-*`` name)."""
    return f"{base_url()}{TERMINAL}/?" + urllib.parse.urlencode({"container": container})
