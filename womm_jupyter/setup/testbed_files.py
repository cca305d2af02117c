"""What a ``womm setup`` testbed container runs and sees.

Its launcher and shell start-up files, and the file its shell's EXIT trap writes the exported
variables to, sit in a directory of the user's mounted at :data:`SETUP_DIR`: 0700, each file
0600, because the launcher runs as root with this machine at ``/mnt`` and the capture holds
every exported variable, secrets included (root in the testbed passes all the same, through
CAP_DAC_OVERRIDE). Under ``/mnt`` the host's sockets and kernel interfaces are hidden.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..errors import SetupError

__all__ = ["SETUP_DIR", "host_shadows", "write_setup_dir"]

SETUP_DIR = "/run/womm-setup"  # in the testbed: womm's scripts and the captured environment


# The launcher the testbed runs (`/bin/sh launcher shell|script`). The EXIT trap writes the
# exported variables with NUL separators (values may hold newlines) into the file womm made
# (0600, the user's: `>` keeps its owner and mode; root in the testbed passes anyway).
# Then it removes shell and REPL histories from every home: what was typed there
# (`export TOKEN=...`, URLs with passwords) would be committed into the pushed image. bash
# writes its own history after this trap on exit (before it on SIGHUP): without HISTFILE it
# writes none. A home in the project directory (womm setup run in ~) is this machine's own,
# never committed: left alone.
_SAVE = r"""
__womm_save() {
    env -0 > /run/womm-setup/env 2>/dev/null || rm -f /run/womm-setup/env
    unset HISTFILE
    { echo "$HOME"; echo /root; while IFS=: read -r __u __x __i __g __c __h __s; do
        echo "$__h"; done < /etc/passwd; } 2>/dev/null | while read -r __h; do
        [ -d "$__h" ] || continue
        case "$__h/" in PROJECT_DIR/*) continue ;; esac
        for __f in HISTORY_FILES; do rm -f "$__h/$__f"; done
    done
}
trap __womm_save EXIT
""".replace("HISTORY_FILES", " ".join((
    ".bash_history", ".sh_history", ".ash_history", ".zsh_history", ".histfile",
    ".local/share/fish/fish_history", ".python_history", ".node_repl_history", ".irb_history",
    ".mysql_history", ".psql_history", ".sqlite_history", ".rediscli_history", ".lesshst",
    ".Rhistory", ".julia/logs/repl_history.jl")))
_LAUNCHER = r"""
if [ "$1" = script ]; then
    if command -v bash >/dev/null 2>&1; then
        exec bash -c '. /run/womm-setup/save.sh; . /run/womm-setup/script'
    fi
    . /run/womm-setup/save.sh
    . /run/womm-setup/script
    exit $?
fi
[ -r /run/womm-setup/term ] && read -r TERM < /run/womm-setup/term && export TERM
if command -v bash >/dev/null 2>&1; then
    exec bash --rcfile /run/womm-setup/bashrc -i
fi
ENV=/run/womm-setup/shrc exec sh -i
"""
_BASHRC = r"""
[ -r /etc/bash.bashrc ] && . /etc/bash.bashrc
[ -r "$HOME/.bashrc" ] && . "$HOME/.bashrc"
PS1="(womm testbed) ${PS1:-\$ }"
. /run/womm-setup/save.sh
"""
_SHRC = r"""
unset ENV
PS1="(womm testbed) ${PS1:-\$ }"
. /run/womm-setup/save.sh
"""



def write_setup_dir(setup_dir: Path, script: Path | None, term: str, project: Path) -> None:
    """Create ``setup_dir`` (0700) with the launcher, start-up files, an empty capture file
    and ``script`` (the setup script, for script testbeds), each 0600. ``project`` is the
    directory mounted at its own path."""
    setup_dir.mkdir(mode=0o700)
    if script is not None:
        try:
            script_text = script.read_bytes()
        except OSError as exc:
            raise SetupError(f"cannot read the setup script {script}: {exc.strerror}.") from exc
        _write_private(setup_dir / "script", script_text)
    save = _SAVE.replace("PROJECT_DIR", shlex.quote(str(project).rstrip("/")))
    for name, text in (("launcher", _LAUNCHER), ("save.sh", save), ("bashrc", _BASHRC),
                       ("shrc", _SHRC), ("term", term + "\n"), ("env", "")):
        _write_private(setup_dir / name, text.encode())


def _write_private(path: Path, data: bytes) -> None:
    """A new file only the user may read or write (never an existing file or a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# Host directories the testbed's /mnt never shows (an empty read-only tmpfs over each): the
# kernel's interfaces (/proc/sys is writable through a bind mount) and where sockets live:
# whoever connects to them acts as their owner (the Docker engine: root; ssh-agent, tmux and
# womm's own agents: the user who started them).
_HIDDEN_EVERYWHERE = ("/proc", "/sys", "/dev", "/run", "/tmp")


def host_shadows() -> tuple[str, ...]:
    """The host paths hidden under the testbed's /mnt.

    On every engine: /proc, /sys, /dev, /run (the Docker and containerd sockets, the users'
    $XDG_RUNTIME_DIR) and /tmp (ssh-agent, tmux, X11, womm's state). When the engine runs on
    this machine, also the engine's socket directory, /var/run when it is not a link to /run,
    /var/tmp and $XDG_RUNTIME_DIR, wherever they are.
    """
    found = list(_HIDDEN_EVERYWHERE)
    engine_socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if engine_socket.startswith("unix://"):  # the engine's "/" is this machine's
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        candidates = ["/var/run", "/var/tmp",
                      os.path.dirname(engine_socket.removeprefix("unix://"))]
        if runtime.startswith("/"):
            candidates.append(runtime)
        for path in candidates:
            real = os.path.realpath(path)
            if real != "/" and os.path.isdir(real) and not any(
                    real == top or real.startswith(top + "/") for top in found):
                found.append(real)
    return tuple(found)
