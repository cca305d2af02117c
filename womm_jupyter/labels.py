"""The label and annotation keys womm puts on every object it creates (containers, images, pods,
Deployments, Jobs, ConfigMaps, Leases): `womm status` finds tasks by them and `womm finish`
deletes by them. Labels select; annotations describe (never credentials: they are readable by
anyone who may list the objects)."""

from __future__ import annotations

from collections.abc import Mapping

# Labels (selectable)
MANAGED_BY = "app.kubernetes.io/managed-by"  # always "womm"
LABEL_TASK = "womm/task"  # the task id
LABEL_OWNER = "womm/owner"  # the user who started it (naming.owner)
LABEL_ROLE = "womm/role"  # root | output | result (objects of a detached task)
LABEL_LEADER = "womm/leader-of"  # the leader pod: not womm/task, or its own run would take it
LABEL_KIND = "womm/kind"  # "shell" on a shell pod
LABEL_PART = "womm/part"  # the index of a detached run's output part
LABEL_EXPERIMENT_TASK = "womm/experiment-task"  # an experiment pod's task key
LABEL_ATTEMPT = "womm/attempt"  # an experiment pod's attempt number
LABEL_SETUP = "womm/setup"  # on committed images and helper containers: the project id
LABEL_COMPONENT = "womm/component"  # the file server's objects

# Annotations (Docker: labels) that `womm status` shows
NOTE_CWD = "womm/cwd"
NOTE_COMMAND = "womm/command"
NOTE_CPU = "womm/cpu"
NOTE_MEM = "womm/mem"
NOTE_HOST = "womm/host"
NOTE_PID = "womm/pid"
NOTE_CREATED = "womm/created"
NOTE_DESIRED = "womm/desired"  # how many workers the task asked for
NOTE_PODS = "womm/pods"  # the same, for a detached run's workers
NOTE_LOG = "womm/log"  # an experiment task's log file name
NOTE_LOG_DIR = "womm/log-dir"
NOTE_PRIVILEGED = "womm/privileged"  # why a pod is privileged (the lazy share's FUSE)


def describe(cwd: str, command: str, cpu: float, mem: str, *, host: str | None = None,
             pid: int | None = None, created: float | None = None,
             desired: int | None = None) -> dict[str, str]:
    """The annotations that say what a task is (``womm status``'s CPU, MEM, PWD, COMMAND, and
    where its coordinator runs); :func:`described` reads them back."""
    notes = {NOTE_CWD: cwd, NOTE_COMMAND: command, NOTE_CPU: f"{cpu:g}", NOTE_MEM: mem}
    if host is not None:
        notes[NOTE_HOST] = host
    if pid is not None:
        notes[NOTE_PID] = str(pid)
    if created is not None:
        notes[NOTE_CREATED] = f"{created:.0f}"
    if desired is not None:
        notes[NOTE_DESIRED] = str(desired)
    return notes


def described(notes: Mapping[str, str]) -> dict[str, str]:
    """``cpu``, ``mem``, ``cwd`` and ``command`` of :func:`describe`'s annotations ("" where
    missing), as TaskInfo takes them."""
    return {"cpu": notes.get(NOTE_CPU, ""), "mem": notes.get(NOTE_MEM, ""),
            "cwd": notes.get(NOTE_CWD, ""), "command": notes.get(NOTE_COMMAND, "")}
