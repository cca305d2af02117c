"""What ``womm setup`` carries from the testbed shell into the image: its exported variables,
minus the shell's incidental ones, with the ones that look like credentials set apart.

The testbed writes ``env -0`` (see :mod:`.testbed`); :func:`sort_out` turns that into a
:class:`Capture`. A variable is set apart as a secret when its name suggests a credential
(``API_TOKEN``, ``MYSQL_PWD``) or its value holds one (a URL with a password in it, a private
key, a well-known token format). It is then left out unless the user keeps it.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["INCIDENTAL", "Capture", "looks_secret", "parse_env0", "sort_out"]

# Variables every shell or container sets by itself; never part of the run-time environment.
INCIDENTAL = frozenset({
    "_", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "TERM", "HOME", "SHELL", "USER", "LOGNAME",
    "MAIL", "LINES", "COLUMNS", "PS1", "PS2", "PS4", "ENV", "BASH_ENV", "HISTFILE",
    "HISTSIZE", "HISTFILESIZE", "LS_COLORS", "SSH_AUTH_SOCK", "SSH_CLIENT", "SSH_CONNECTION",
    "SSH_TTY", "DISPLAY", "TMUX", "container",
})
# What Docker sets when the image does not: unchanged, it is not the user's.
DEFAULTS = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

# Names: the words credentials go by. PWD only as a suffix after "_" (MYSQL_PWD), never the
# working directory; PAT, JWT, DSN as whole words (GH_PAT, CI_JOB_JWT, SENTRY_DSN).
_SECRET_NAME = re.compile(
    r"TOKEN|PASS(WOR)?D|PASSWD|SECRET|KEY|CREDENTIAL|PRIVATE|AUTH|COOKIE|WEBHOOK|NETRC"
    r"|_PWD$|(^|_)(PAT|JWT|DSN)($|_)|^AIRFLOW_CONN_", re.I)
# Values: userinfo in a URL (scheme://user:password@host, and https://token@host as GitHub
# and GitLab take tokens), a PEM private key, and token formats that announce themselves.
_SECRET_VALUE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s@:]*:[^/?#\s@]+@"
    r"|https?://[^/?#\s@:]+@"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\."  # a JWT
    r"|\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b|\bhf_[A-Za-z0-9]{30,}|\bsk-[A-Za-z0-9_-]{20,}")


def looks_secret(name: str, value: str = "") -> bool:
    """Whether a variable looks like a credential: by its name (TOKEN, PASSWORD, SECRET,
    KEY...) or by its value (a URL with ``user:password@``, a private key, a token)."""
    return bool(_SECRET_NAME.search(name) or _SECRET_VALUE.search(value))


@dataclasses.dataclass(frozen=True)
class Capture:
    """The testbed shell's exported variables, sorted out.

    environment: new or changed variables to carry into the run-time environment.
    secrets: new or changed variables that look like credentials (by name or value): left
        out unless the user keeps them.
    problems: what could not be captured, in words.
    """

    environment: dict[str, str]
    secrets: dict[str, str]
    problems: tuple[str, ...] = ()


def parse_env0(data: bytes) -> tuple[dict[str, str], list[str]]:
    """``env -0`` output -> ({name: value}, problems). Values keep every byte they had."""
    found: dict[str, str] = {}
    problems = []
    for entry in data.split(b"\0"):
        if not entry:
            continue
        name, sep, value = entry.partition(b"=")
        if not sep:
            continue
        try:
            found[name.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{name.decode('utf-8', 'replace')} is left out: its value is not "
                            "UTF-8 text")
    return found, problems


def sort_out(data: bytes, start_environment: dict[str, str]) -> Capture:
    """The capture of ``env -0`` output ``data``: what is new or changed against the start
    image's environment, incidental variables dropped, secret-looking ones set apart."""
    found, problems = parse_env0(data)
    environment: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for name in sorted(found):
        value = found[name]
        if name in INCIDENTAL or start_environment.get(name, DEFAULTS.get(name)) == value:
            continue
        (secrets if looks_secret(name, value) else environment)[name] = value
    return Capture(environment, secrets, tuple(problems))
