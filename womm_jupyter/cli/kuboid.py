"""`womm experiment`, `womm pods`, `womm kubesanitize`, `womm admin`: the kuboid verbs' CLI face.

Pod verbs print pod names one per line and read names from standard input when none are given
and it is a pipe or a file, so they compose: ``womm pods names --completed | womm pods savelog
logs/``. Progress and messages go to standard error.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .. import commands
from ..cluster.admin import member_kubeconfig, node_usage, write_kubeconfig
from ..errors import OptionError
from ..events import EventKind, HandleStatus
from ..kuboid.experiment import Experiment
from ..kuboid.pods import PodFilter, Pods
from ..naming import kube_safe_name
from ..options import (
    AdminKubeconfigOptions,
    AdminNodesOptions,
    ExperimentOptions,
    KubesanitizeOptions,
    PodExecOptions,
    PodLogGrepOptions,
    PodSaveLogOptions,
    PodShellOptions,
    PodsOptions,
    add_arguments,
    resolve,
)
from .podshell import pod_shell

__all__ = ["VERBS", "add_parsers", "main"]

VERBS = ("experiment", "pods", "kubesanitize", "admin")

_POD_VERBS: dict[str, tuple[type, str]] = {
    "names": (PodsOptions, "print the names of the chosen pods"),
    "states": (PodsOptions, "count the chosen pods in each state"),
    "runtime": (PodsOptions, "print each chosen pod's name and run time in seconds"),
    "describe": (PodsOptions, "describe each chosen pod: image, command, state, events"),
    "logs": (PodsOptions, "print each chosen pod's log"),
    "savelog": (PodSaveLogOptions, "save each chosen pod's log to DIR/<pod>.log"),
    "loggrep": (PodLogGrepOptions, "print the names of the chosen pods whose log matches"),
    "delete": (PodsOptions, "delete the chosen pods; print their names"),
    "exec": (PodExecOptions, "run a command in each named pod: womm pods exec NAME -- CMD"),
    "shell": (PodShellOptions, "open an interactive shell (or COMMAND) on a terminal in one "
                               "running pod"),
}

_POD_USAGE = {"exec": "womm pods exec [options] [NAME ...] -- COMMAND [ARG ...]",
              "shell": "womm pods shell [options] [NAME] [-- COMMAND [ARG ...]]"}

_PODS_EPILOG = """\
Pods: your womm pods of the namespace (--all-pods: every pod). Names come from the arguments,
else from standard input when it is a pipe or a file (one name per line, first word), else
every pod in scope (delete then needs a filter). Filters combine: states with OR, --regex
and --task with AND. States: completed, oom, errored (OOM-killed included by --errored),
running, pending.

examples:
  womm pods names --completed | womm pods savelog logs/
  womm pods names --errored | womm pods loggrep 'Traceback' | womm pods delete
  womm pods exec womm-k3xq9m2a-1-0-run -- df -h /
  womm pods names --running --task k3xq9m2a | head -1 | womm pods shell
"""

_EXPERIMENT_EPILOG = """\
Each task line runs as `sh -c LINE` in a pod of its own. LOGDIR/<task>.log is written only
when the task completes (exit 0); tasks with a log never run again, so running the same
experiment again resumes it. A task that fails (or is OOM-killed) on every one of its
1 + --max-retries attempts gets LOGDIR/<task>.failed (reasons and its last log lines) and is
reported; a later run tries it again. Pods that vanish (deleted, evicted, node lost) are
rescheduled. Lines appended to TASKFILE while the experiment runs are picked up.

example:
  womm experiment run -i 127.0.0.1:5000/lab/analysis:v3 -f tasks.txt -l logs/ --kube-mem 2Gi
"""


def add_parsers(verbs: Any) -> None:
    """Add the kuboid verbs to `womm`'s sub-command action ``verbs``."""
    raw = argparse.RawDescriptionHelpFormatter
    experiment = verbs.add_parser("experiment", help="run one pod per task line (kuboid)",
                                  allow_abbrev=False)
    parser_class = type(experiment)
    sub = experiment.add_subparsers(dest="experiment_verb", metavar="COMMAND",
                                    parser_class=parser_class)
    run = sub.add_parser("run", help="run (or resume) an experiment", allow_abbrev=False,
                         description="Run each task line in a pod of its own until every "
                                     "task has a log or has failed every attempt.",
                         epilog=_EXPERIMENT_EPILOG, formatter_class=raw)
    add_arguments(run, ExperimentOptions)

    pods = verbs.add_parser("pods", help="list, inspect and act on pods, in pipelines",
                            allow_abbrev=False, epilog=_PODS_EPILOG, formatter_class=raw)
    sub = pods.add_subparsers(dest="pods_verb", metavar="COMMAND", parser_class=parser_class)
    for name, (options, text) in _POD_VERBS.items():
        verb = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                              allow_abbrev=False, epilog=_PODS_EPILOG, formatter_class=raw,
                              usage=_POD_USAGE.get(name))
        add_arguments(verb, options)

    sanitize = verbs.add_parser(
        "kubesanitize", help="print Kubernetes-safe names for texts", allow_abbrev=False,
        description="Print, for each TEXT (or line of standard input), a name valid for any "
                    "Kubernetes object: at most 63 characters, lowercase alphanumerics, '-' "
                    "and '.'. Valid names are kept; others get a hash of the original "
                    "appended, so different texts never get the same name.")
    add_arguments(sanitize, KubesanitizeOptions)

    admin = verbs.add_parser("admin", help="cluster admin helpers", allow_abbrev=False)
    sub = admin.add_subparsers(dest="admin_verb", metavar="COMMAND", parser_class=parser_class)
    kubeconfig = sub.add_parser(
        "kubeconfig", help="write a kubeconfig for a lab member, bound to one namespace",
        allow_abbrev=False,
        description="Create (or update) a ServiceAccount, a Role with exactly the verbs womm "
                    "uses and a RoleBinding, all in NAMESPACE (nothing cluster-wide, never "
                    "cluster-admin), and write a kubeconfig with a token of that "
                    "ServiceAccount from the TokenRequest API.")
    add_arguments(kubeconfig, AdminKubeconfigOptions)
    nodes = sub.add_parser("nodes", help="list nodes: allocatable against requested CPU and "
                           "memory", allow_abbrev=False)
    add_arguments(nodes, AdminNodesOptions)


# -- helpers ---------------------------------------------------------------------------------
def _piped(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe or a file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _stdin_names() -> list[str] | None:
    if not _piped(sys.stdin):
        return None
    return [line.split()[0] for line in sys.stdin if line.split()]


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _write_err(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


def _explicit(parsed: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(parsed).items()
            if key not in ("verb", "experiment_verb", "pods_verb", "admin_verb")}


# -- verbs -----------------------------------------------------------------------------------
def _experiment(options: ExperimentOptions) -> int:
    # Standard input holds tasks when it is a pipe, a file or a terminal (end with Ctrl-D);
    # /dev/null or a closed input is no task list.
    reads_stdin = not options.task_file and sys.stdin is not None and (
        _piped(sys.stdin) or sys.stdin.isatty())
    if reads_stdin and sys.stdin.isatty():
        print("womm: reading task lines from the terminal; end them with Ctrl-D",
              file=sys.stderr)
    experiment = Experiment(options, sys.stdin if reads_stdin else None)

    def interrupt(signum: int, frame: Any) -> None:
        threading.Thread(target=experiment.cancel, daemon=True).start()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM,
                                                                signal.SIGHUP)}
    tty = sys.stderr.isatty()
    drawn = False
    try:
        for event in experiment.events():
            if event.kind == EventKind.PROGRESS and tty:
                sys.stderr.write(f"\r\033[Kwomm: {event.text}")
                drawn = True
            else:
                if drawn:
                    sys.stderr.write("\n")
                    drawn = False
                sys.stderr.write(f"womm: {event.text}\n")
            sys.stderr.flush()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if drawn:
            sys.stderr.write("\n")
    if experiment.status == HandleStatus.CANCELLED:
        print(commands.experiment_cancelled(experiment), file=sys.stderr)
        return 130
    for line in commands.experiment_summary(experiment):
        print(line, file=sys.stderr)
    return 1 if any(task.status == "failed" for task in experiment.result()) else 0


def _pods(verb: str, options: Any, command: Sequence[str]) -> int:
    states = frozenset(state for state in ("completed", "errored", "oom", "running", "pending")
                       if getattr(options, state))
    keep = PodFilter(states, options.regex)
    try:
        re.compile(options.regex)
    except re.error as exc:
        raise OptionError(f"--regex: {options.regex!r} is not a regular expression ({exc})"
                          ) from None
    pattern = None
    if verb == "loggrep":
        try:  # line by line, as grep: ^ and $ match at each line's start and end
            pattern = re.compile(options.pattern.encode(), re.MULTILINE)
        except re.error as exc:
            raise OptionError(f"womm pods loggrep: {options.pattern!r} is not a regular "
                              f"expression ({exc})") from None
    names: list[str] | None = list(options.names) or _stdin_names()
    if verb == "shell":
        return pod_shell(options, names, command)
    if verb == "exec" and not names:
        raise OptionError("womm pods exec: name the pods (or pipe their names in), then the "
                          "command after `--`: womm pods exec NAME -- CMD")
    if verb == "delete" and names is None and not (states or options.regex or options.task):
        raise OptionError("womm pods delete: name the pods, pipe their names in, or choose "
                          "them with a filter (--completed, --errored, --regex R, --task ID; "
                          "--regex . means every pod of yours)")
    pods = Pods(options.context, options.namespace, all_pods=options.all_pods,
                task=options.task)
    chosen = pods.list(keep, names)
    if verb == "names":
        for pod in chosen:
            print(pod.metadata.name)
    elif verb == "states":
        for state, count in pods.states(chosen).items():
            print(f"{state}\t{count}")
    elif verb == "runtime":
        for pod in chosen:
            seconds = pods.runtime(pod)
            print(f"{pod.metadata.name}\t{'-' if seconds is None else f'{seconds:.1f}'}")
    elif verb == "describe":
        print("\n\n".join(pods.describe(pod) for pod in chosen))
    elif verb == "logs":
        for pod in chosen:
            if len(chosen) > 1:
                _write(f"==> {pod.metadata.name} <==\n".encode())
            _write(pods.logs(pod.metadata.name))
    elif verb == "savelog":
        directory = Path(options.directory)
        for pod in chosen:
            pods.savelog(pod.metadata.name, directory)
            print(pod.metadata.name, flush=True)
    elif verb == "loggrep":
        assert pattern is not None
        for pod in chosen:
            if pods.loggrep(pod.metadata.name, pattern):
                print(pod.metadata.name, flush=True)
    elif verb == "delete":
        for pod in chosen:
            pods.delete(pod.metadata.name)
            print(pod.metadata.name, flush=True)
    elif verb == "exec":
        status = 0
        for pod in chosen:
            code = pods.exec(pod.metadata.name, command, _write, _write_err)
            status = code or status
        return status
    return 0


def _kubesanitize(options: KubesanitizeOptions) -> int:
    texts = list(options.texts)
    if not texts:
        if not _piped(sys.stdin):
            raise OptionError("womm kubesanitize: give texts as arguments or one per line on "
                              "standard input")
        texts = [line.rstrip("\r\n") for line in sys.stdin]
    for text in texts:
        print(kube_safe_name(text))
    return 0


def _admin_kubeconfig(options: AdminKubeconfigOptions) -> int:
    import yaml

    config = member_kubeconfig(options.namespace, options.user, options.days, options.context)
    if options.output:
        write_kubeconfig(config, Path(options.output))
        print(f"womm: wrote {options.output}: ServiceAccount {options.user} with womm's Role "
              f"in namespace {options.namespace} only, token valid {options.days} days",
              file=sys.stderr)
    else:
        print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def _admin_nodes(options: AdminNodesOptions) -> int:
    if options.idle and options.used:
        raise OptionError("womm admin nodes: choose --idle or --used, not both")
    rows = [["NAME", "READY", "CPU-REQUESTED", "CPU-ALLOCATABLE", "MEM-REQUESTED",
             "MEM-ALLOCATABLE", "PODS", "USER-PODS"]]
    for node in node_usage(options.context):
        if (options.idle and not node.idle) or (options.used and node.idle):
            continue
        rows.append([node.name, "yes" if node.ready else "no", f"{node.cpu_requested:g}",
                     f"{node.cpu_allocatable:g}", f"{node.memory_requested / 2**20:.0f}Mi",
                     f"{node.memory_allocatable / 2**20:.0f}Mi", str(node.pods),
                     str(node.user_pods)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0


def main(args: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """Run a kuboid verb (``args`` starts with one of :data:`VERBS`) parsed by `womm`'s
    ``parser``; WommError propagates."""
    args = list(args)
    command: list[str] = []
    if args[:2] in (["pods", "exec"], ["pods", "shell"]):
        args, rest = commands.split_at_dashes(args)
        command = rest or []
    parsed = parser.parse_args(args)
    explicit = _explicit(parsed)
    if parsed.verb == "experiment":
        if parsed.experiment_verb != "run":
            raise OptionError("womm experiment: say `womm experiment run -i IMAGE -f TASKFILE`")
        return _experiment(resolve(ExperimentOptions, explicit))
    if parsed.verb == "pods":
        if parsed.pods_verb is None:
            raise OptionError("womm pods: choose a command: " + ", ".join(_POD_VERBS))
        return _pods(parsed.pods_verb, resolve(_POD_VERBS[parsed.pods_verb][0], explicit),
                     command)
    if parsed.verb == "kubesanitize":
        return _kubesanitize(resolve(KubesanitizeOptions, explicit, config={}))
    if parsed.admin_verb == "kubeconfig":
        return _admin_kubeconfig(resolve(AdminKubeconfigOptions, explicit, config={}))
    if parsed.admin_verb == "nodes":
        return _admin_nodes(resolve(AdminNodesOptions, explicit, config={}))
    raise OptionError("womm admin: choose a command: kubeconfig, nodes")
