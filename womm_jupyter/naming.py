"""Task ids, owners and names that are valid everywhere womm creates objects."""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import secrets
import socket

from .errors import OptionError

__all__ = ["check_task_id", "experiment_pod_name", "experiment_task_key", "is_task_id",
           "kube_safe_name", "new_task_id", "owner", "task_object_name"]

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o or 1/l: ids get read aloud


def new_task_id() -> str:
    """A short random task id, e.g. ``k3xq9m2a``: unique by construction, never derived."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


_TASK_ID = re.compile(f"[{_ID_ALPHABET}]{{8}}")


def is_task_id(text: str) -> bool:
    """Whether ``text`` is a task id as :func:`new_task_id` makes them (never a path)."""
    return bool(_TASK_ID.fullmatch(text))


def check_task_id(text: str) -> str:
    """``text`` when it is a task id; else :class:`OptionError` saying what ids look like.

    Task ids name directories (``womm finish`` removes one) and objects: a path, ``..`` or
    anything else must never get that far.
    """
    if not is_task_id(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise OptionError(f"{shown!r} is not a womm task id (8 lower-case letters and digits, "
                          "e.g. k3xq9m2a): 'womm status' lists your tasks and their ids.")
    return text


def owner() -> str:
    """``user@host`` of whoever runs womm here (labels, status filtering)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry and no $USER (docker run -u)
        user = f"uid{os.getuid()}"
    return kube_safe_name(f"{user}.{socket.gethostname()}", limit=63)


def task_object_name(task_id: str) -> str:
    """Name of a task's root object: ``womm-task-<id>``."""
    return f"womm-task-{task_id}"


_INVALID = re.compile(r"[^a-z0-9.-]+")
# What this function appends: a text that already ends like it gets a hash of its own, or
# "a-b-<hash of 'a_b'>" would come out the same as "a_b" does.
_LOOKS_HASHED = re.compile(r"(?:^|-)[0-9a-f]{8}$")


def kube_safe_name(text: str, limit: int = 63) -> str:
    """A valid Kubernetes name/label value for ``text``, at most ``limit`` characters.

    Different inputs never collide: when text had to be changed or shortened, a hash of the
    original is appended.
    """
    cleaned = _INVALID.sub("-", text.lower()).strip("-.") or "x"
    if cleaned == text and len(text) <= limit and not _LOOKS_HASHED.search(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:min(8, limit)]
    # max(0, ...): with a small limit a negative slice end would keep almost all of the text.
    head = cleaned[: max(0, limit - len(digest) - 1)].rstrip("-.")
    return f"{head}-{digest}" if head else digest


_HINT = re.compile(r"[^a-z0-9]+")


def experiment_pod_name(experiment_id: str, index: int, attempt: int, command: str) -> str:
    """Pod of one attempt at one task: ``womm-<experiment>-<line>-<attempt>-<hint>``.

    Unique by construction (experiment id, task line number, attempt); the hint, taken from
    the end of the command, is only for people reading ``kubectl get pods``. At most 63
    characters, a valid DNS-1123 label.
    """
    prefix = f"womm-{experiment_id}-{index}-{attempt}"
    room = 63 - len(prefix) - 1
    hint = _HINT.sub("-", command.lower()).strip("-")
    hint = hint[-room:].lstrip("-") if room > 0 else ""
    return f"{prefix}-{hint}" if hint else prefix


def experiment_task_key(index: int, command: str) -> str:
    """A task's name in the log directory (``<key>.log``): its line number and its command,
    so an edited line is a new task and two equal commands on two lines are two tasks."""
    return f"{index:05d}-{kube_safe_name(command, limit=48)}"
