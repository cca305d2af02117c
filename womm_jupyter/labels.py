"""The label and annotation keys womm puts on every object it creates (containers, images, pods,
Deployments, Jobs, ConfigMaps, Leases): `womm status` finds tasks by them and `womm finish`
deletes by them. Labels select; annotations describe (never credentials: they are readable by
anyone who may list the objects)."""

from __future__ import annotations

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
