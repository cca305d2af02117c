"""How workers see the project directory: the one table of share methods.

Every face and every part of the core that names a share method reads :data:`METHODS`: the
``womm setup`` menu (its numbers and words, DESIGN.md), the ``--share`` choices, what the
worker image must hold (``womm setup``'s check), what Kubernetes needs and what ``--async``
refuses. How a share is carried out lives beside this table: :mod:`.session` (one run's
share), :mod:`.eager` (rsync push and syncback), :mod:`.lazy` (sshfs over an exec stream),
:mod:`.kexec` (rsync's remote shell). On Docker and local workers the project directory is
the workers' own (a bind mount, the same filesystem): no method has anything to do there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import load_project
from ..errors import OptionError

__all__ = ["CHOICES", "METHODS", "NAMES", "NUMBERED_NAMES", "ShareMethod", "by_name", "method",
           "share_name"]


@dataclass(frozen=True)
class ShareMethod:
    """One way of sharing the project directory with workers on Kubernetes."""

    name: str  # --share, WOMM_SHARE, the project config's "share"
    number: str  # the womm setup menu's answer
    label: str  # the womm setup menu's words (DESIGN.md: "the exact menu")
    image_needs: tuple[str, ...]  # commands the worker image must have
    uploads: bool  # rsynced into each pod before it takes jobs
    syncback: bool  # pulled back into the directory when all jobs have ended
    privileged_fuse: bool  # mounts with FUSE: the pods must run privileged (--privileged-fuse)
    async_refusal: str  # why --async cannot run it ("" when it can)


METHODS: tuple[ShareMethod, ...] = (
    ShareMethod("lazy", "1", "lazily", ("sshfs",), uploads=False, syncback=False,
                privileged_fuse=True,
                async_refusal="--async cannot be used with a lazy share: the workers would read "
                              "your directory from this machine after you disconnect. Run with "
                              "--share none, or without --async."),
    ShareMethod("eager", "2", "eagerly (no syncback)", ("rsync",), uploads=True, syncback=False,
                privileged_fuse=False, async_refusal=""),
    ShareMethod("eager-syncback", "3", "eagerly (syncback on complete, not recommended)",
                ("rsync",), uploads=True, syncback=True, privileged_fuse=False,
                async_refusal="--async cannot be used with an eager-syncback share: files come "
                              "back to your directory only while the client waits for the run. "
                              "Run with --share eager (the output comes back through `womm "
                              "finish`), or without --async."),
    ShareMethod("none", "4", "not at all", (), uploads=False, syncback=False,
                privileged_fuse=False, async_refusal=""),
)
NAMES: tuple[str, ...] = tuple(m.name for m in METHODS)
# What --share accepts: the menu's numbers, then the names.
CHOICES: tuple[str, ...] = tuple(m.number for m in METHODS) + NAMES
# How errors name the answers: "1 lazy, 2 eager, 3 eager-syncback, 4 none".
NUMBERED_NAMES = ", ".join(f"{m.number} {m.name}" for m in METHODS)
_BY_ANSWER = {**{m.number: m for m in METHODS}, **{m.name: m for m in METHODS}}


def share_name(answer: str) -> str:
    """``1``..``4`` or a share's name -> the name (``lazy``, ``eager``, ...); anything else is
    returned unchanged for the caller to refuse."""
    found = _BY_ANSWER.get(answer)
    return found.name if found else answer


def by_name(name: str) -> ShareMethod:
    """The table's row for a method's name or menu number (KeyError when there is none)."""
    return _BY_ANSWER[name]


def method(value: str, cwd: Path) -> str:
    """The share method of a run: ``value`` (``--share``/``WOMM_SHARE``) when given, else the
    project config's (``womm setup``), else ``none``."""
    if not value:
        found = load_project(cwd)
        value = found[1].share if found else "none"
    value = share_name(value)
    if value not in NAMES:
        raise OptionError(f"--share must be one of {', '.join(NAMES)} (got {value!r})")
    return value
