"""Every womm option, declared once.

Each option is a field of a frozen dataclass whose metadata carries its help text and limits.
The CLI parser, the magics' parser and (later) widget forms are generated from these classes;
names map mechanically: ``kube_pods`` <-> ``--kube-pods`` <-> ``WOMM_KUBE_PODS``. Values
resolve in one place: explicit > ``WOMM_*`` environment > project config > built-in default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import share as share_methods
from .errors import OptionError

__all__ = [
    "BACKENDS",
    "AdminKubeconfigOptions",
    "AdminNodesOptions",
    "ClusterSetupOptions",
    "DoctorOptions",
    "ExperimentOptions",
    "FinishOptions",
    "KubesanitizeOptions",
    "LogsOptions",
    "ParallelOptions",
    "PodExecOptions",
    "PodLogGrepOptions",
    "PodSaveLogOptions",
    "PodShellOptions",
    "PodsOptions",
    "SetupOptions",
    "ShellOptions",
    "StatusOptions",
    "add_arguments",
    "env_name",
    "flag_name",
    "parse_memory",
    "resolve",
]

BACKENDS = ("auto", "kubernetes", "docker", "local")


def _option(default: Any = dataclasses.MISSING, *, help: str, choices: tuple[str, ...] = (),
            minimum: float | None = None, metavar: str | None = None, short: str = "",
            shown_default: str | None = None, positional: str = "") -> Any:
    # shown_default: the default as --help words it, when the field's own default ("") only
    # means "not given" (e.g. `womm setup` asks, or uses what the project recorded).
    # positional: "1" for one positional argument, "*" or "+" for a tuple of them.
    meta = {"help": help, "choices": choices, "minimum": minimum, "metavar": metavar,
            "short": short, "shown_default": shown_default, "positional": positional}
    return dataclasses.field(default=default, metadata=meta)


def _namespace() -> Any:
    return _option("", help="Kubernetes namespace (default: the context's)", metavar="NS",
                   short="-n")


def _context() -> Any:
    return _option("", help="kubeconfig context (default: the current one)", metavar="NAME")


_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_MEMORY_UNITS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_memory(text: str) -> int:
    """Bytes in a Kubernetes memory quantity such as ``512Mi``, ``2Gi`` or ``1G``."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a memory size like 512Mi or 2Gi")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


@dataclasses.dataclass(frozen=True)
class ParallelOptions:
    """Options of ``womm parallel`` / ``%%womm_parallel``."""

    kube_pods: int = _option(help="number of workers (pods, or containers on Docker) to start; "
                             "required", minimum=1, metavar="N")
    local_procs: int = _option(0, help="extra job slots on this machine, beside the workers",
                               minimum=0, metavar="N")
    procs_per_pod: int = _option(1, help="jobs each worker runs at once", minimum=1,
                                 metavar="N")
    kube_cpu: float = _option(1.0, help="CPUs for each worker (requests = limits)",
                              minimum=0.001, metavar="N")
    kube_mem: str = _option("512Mi", help="memory for each worker, e.g. 512Mi or 4Gi",
                            metavar="M")
    backend: str = _option("auto", help="where workers run: Kubernetes when configured, else "
                           "Docker when an engine answers, else local processes",
                           choices=BACKENDS)
    image: str = _option("", help="image the workers run (default: the project's womm image)",
                         metavar="IMAGE")
    namespace: str = _option("", help="Kubernetes namespace (default: the kubeconfig "
                             "context's, or the pod's own when run inside a cluster)",
                             metavar="NS", short="-n")
    context: str = _context()
    share: str = _option("", help="how the workers see the project directory: 1 or lazy, 2 or "
                         "eager (rsynced before jobs start), 3 or eager-syncback (and changes "
                         "pulled back when all jobs end), 4 or none (the image's files only)",
                         choices=share_methods.CHOICES,
                         metavar="METHOD", shown_default="the project's (`womm setup`), else none")
    privileged_fuse: bool = _option(False, help="let a lazy share mount the project with "
                                    "sshfs (FUSE) in each worker pod: the pods then run "
                                    "privileged (every device and capability of the node; "
                                    "needed for /dev/fuse on containerd/runc) and the mount "
                                    "gives their jobs read-write access to the project "
                                    "directory as your user. Only with --share lazy on "
                                    "Kubernetes")
    start_timeout: float = _option(120.0, help="seconds to wait for workers to become ready",
                                   minimum=1, metavar="S")
    citation: bool = _option(False, help="show GNU parallel's citation notice and exit")
    # A trailing _ because `async` is a Python keyword: the flag is --async, $WOMM_ASYNC.
    async_: bool = _option(False, help="run the coordinator in the cluster (a Job of the "
                           "womm-leader ServiceAccount) and return at once; follow with "
                           "`womm logs ID -f`, collect and clean up with `womm finish ID`")
    leader_image: str = _option("", help="image of the in-cluster coordinator for --async",
                                metavar="IMAGE", shown_default="the one `womm cluster-setup "
                                "--build` recorded in the namespace")


@dataclasses.dataclass(frozen=True)
class SetupOptions:
    """Options of ``womm setup`` / ``%womm_setup``: one flag per question of the dialogue."""

    share: str = _option("", help="how to share the project directory with the workers: 1 or "
                         "lazy, 2 or eager (no syncback), 3 or eager-syncback, 4 or none",
                         choices=share_methods.CHOICES, metavar="METHOD",
                         shown_default="ask; a repeated setup keeps the recorded one")
    base: str = _option("", help="base image of the testbed; giving it on a repeated setup "
                        "starts again from this image instead of the project's",
                        metavar="IMAGE",
                        shown_default="ask, offering ubuntu:22.04; a repeated setup starts "
                                      "from the project's image")
    prefix: str = _option("", help="image name prefix you may push to, e.g. "
                          "us-west4-docker.pkg.dev/angr-ci/defcon/ or 127.0.0.1:5000/",
                          metavar="PREFIX", shown_default="ask, offering the one you gave last")
    script: str = _option("", help="run this shell script in the testbed (sourced by its "
                          "shell, so its exports are captured) instead of an interactive shell",
                          metavar="FILE", shown_default="an interactive shell")
    yes: bool = _option(False, help="answer every remaining question with its default, and "
                        "\"Does it work?\" with y", short="-y")
    keep_secrets: str = _option("", help="comma-separated names of exported variables that "
                                "look like secrets (TOKEN, PASSWORD, KEY...) to keep in the "
                                "image anyway", metavar="NAMES",
                                shown_default="leave them out")
    host_rw: bool = _option(False, help="mount this machine's root at /mnt read-write in the "
                            "testbed (read-only by default)")
    show: bool = _option(False, help="print the project's current configuration and exit")


@dataclasses.dataclass(frozen=True)
class ShellOptions:
    """Options of ``womm shell`` / ``%womm_shell``: one worker of the project image."""

    kube_cpu: float = _option(1.0, help="CPUs for the shell's worker (requests = limits)",
                              minimum=0.001, metavar="N")
    kube_mem: str = _option("512Mi", help="memory for the shell's worker, e.g. 512Mi or 16Gi",
                            metavar="M")
    backend: str = _option("auto", help="where the shell runs: Kubernetes when configured, "
                           "else Docker when an engine answers", choices=BACKENDS)
    image: str = _option("", help="image the shell runs (default: the project's womm image)",
                         metavar="IMAGE")
    namespace: str = _namespace()
    context: str = _context()


@dataclasses.dataclass(frozen=True)
class DoctorOptions:
    """Options of ``womm doctor``."""

    image: str = _option("", help="image to look for in its registry (default: the project's "
                         "womm image)", metavar="IMAGE")
    namespace: str = _namespace()
    context: str = _context()


@dataclasses.dataclass(frozen=True)
class StatusOptions:
    """Options of ``womm status``."""

    all_owners: bool = _option(False, help="show every owner's tasks, not only this "
                               "machine's", short="-A")
    namespace: str = _namespace()
    context: str = _context()


@dataclasses.dataclass(frozen=True)
class ClusterSetupOptions:
    """Options of ``womm cluster-setup``."""

    namespace: str = _option("", help="namespace the manifests are for (default: the "
                             "kubeconfig context's, else default)", metavar="NS", short="-n")
    context: str = _context()
    pod_security: str = _option("baseline", help="Pod Security level the namespace enforces "
                                "(its labels, printed as a Namespace object): baseline refuses "
                                "privileged and hostPath pods; restricted also refuses womm's "
                                "workers (they may run as root); privileged allows node root "
                                "and is needed only by lazy shares with --privileged-fuse",
                                choices=("baseline", "restricted", "privileged"),
                                metavar="LEVEL")
    build: bool = _option(False, help="also build the --async leader image (Debian python3 "
                          "and perl with this womm installed) and the file server image "
                          "(fsserver/), push them under --prefix and print a ConfigMap that "
                          "records the leader's for `womm parallel --async`")
    prefix: str = _option("", help="image name prefix the leader image is pushed under, e.g. "
                          "127.0.0.1:5000/", metavar="PREFIX")
    fsserver_image: str = _option("", help="the file server's image (default: the one --build "
                                  "pushes, else PREFIXwomm-fsserver:latest)", metavar="IMAGE")
    storage_class: str = _option("", help="keep the file server's files on a PVC of this "
                                 "storage class (default: an emptyDir, lost with its pod)",
                                 metavar="NAME")
    storage_size: str = _option("10Gi", help="size of that PVC", metavar="SIZE")
    shared_pvc: str = _option("", help="an existing PersistentVolumeClaim (ReadWriteMany) that "
                              "every pod womm creates in the namespace mounts at /shared; "
                              "recorded in ConfigMap womm-settings", metavar="NAME")


@dataclasses.dataclass(frozen=True)
class FinishOptions:
    """Options of ``womm finish``."""

    task_id: str = _option(help="the task's ID, as `womm status` shows it", metavar="ID")
    namespace: str = _namespace()
    context: str = _context()


@dataclasses.dataclass(frozen=True)
class LogsOptions:
    """Options of ``womm logs``."""

    task_id: str = _option(help="the --async task's ID, as `womm status` shows it", metavar="ID")
    follow: bool = _option(False, help="keep printing the leader's output until it ends",
                           short="-f")
    namespace: str = _namespace()
    context: str = _context()


@dataclasses.dataclass(frozen=True)
class ExperimentOptions:
    """Options of ``womm experiment run``: one pod per task line (kuboid)."""

    image: str = _option(help="image each task's pod runs; it needs sh", metavar="IMAGE",
                         short="-i")
    task_file: str = _option("", help="file of tasks, one shell command line per line (blank "
                             "lines and lines starting with # are skipped); lines appended "
                             "while the experiment runs are picked up", metavar="TASKFILE",
                             short="-f", shown_default="standard input")
    log_dir: str = _option("womm-logs", help="directory that receives <task>.log when a task "
                           "completes, and <task>.failed when it failed every attempt; a "
                           "task whose log is there is never run again", metavar="LOGDIR",
                           short="-l")
    max_retries: int = _option(2, help="times a failed or OOM-killed task is run again before "
                               "it is reported as failed", minimum=0, metavar="N")
    max_pods: int = _option(0, help="at most this many task pods at once (0: every task at "
                            "once; Kubernetes queues what does not fit)", minimum=0,
                            metavar="N")
    kube_cpu: float = _option(1.0, help="CPUs for each task's pod (requests = limits)",
                              minimum=0.001, metavar="N")
    kube_mem: str = _option("512Mi", help="memory for each task's pod, e.g. 512Mi or 4Gi",
                            metavar="M")
    namespace: str = _namespace()
    context: str = _context()


@dataclasses.dataclass(frozen=True, kw_only=True)
class _PodSelection:
    """What every ``womm pods`` verb chooses from: this owner's womm pods, filtered."""

    completed: bool = _option(False, help="only pods whose command completed (exit 0)")
    errored: bool = _option(False, help="only pods that failed (OOM-killed ones included)")
    oom: bool = _option(False, help="only pods OOM-killed (over --kube-mem)")
    running: bool = _option(False, help="only running pods")
    pending: bool = _option(False, help="only pods waiting to be scheduled or started")
    regex: str = _option("", help="only pods whose name matches this regular expression",
                         metavar="R")
    task: str = _option("", help="only pods of this task or experiment ID", metavar="ID")
    all_pods: bool = _option(False, help="every pod of the namespace, not only your womm pods")
    namespace: str = _namespace()
    context: str = _context()


_NAMES_HELP = "pod names"
_NAMES_DEFAULT = "read from standard input when it is a pipe or file, else every chosen pod"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodsOptions(_PodSelection):
    """Options of ``womm pods names|states|runtime|describe|logs|delete``."""

    names: tuple[str, ...] = _option((), help=_NAMES_HELP, metavar="NAME", positional="*",
                                     shown_default=_NAMES_DEFAULT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodSaveLogOptions(_PodSelection):
    """Options of ``womm pods savelog DIR``."""

    directory: str = _option(help="directory that receives <pod>.log", metavar="DIR",
                             positional="1")
    names: tuple[str, ...] = _option((), help=_NAMES_HELP, metavar="NAME", positional="*",
                                     shown_default=_NAMES_DEFAULT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodLogGrepOptions(_PodSelection):
    """Options of ``womm pods loggrep REGEX``."""

    pattern: str = _option(help="regular expression searched for in each pod's log",
                           metavar="REGEX", positional="1")
    names: tuple[str, ...] = _option((), help=_NAMES_HELP, metavar="NAME", positional="*",
                                     shown_default=_NAMES_DEFAULT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodExecOptions(_PodSelection):
    """Options of ``womm pods exec NAME... -- COMMAND``."""

    names: tuple[str, ...] = _option((), help=_NAMES_HELP, metavar="NAME", positional="*",
                                     shown_default="read from standard input")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodShellOptions(_PodSelection):
    """Options of ``womm pods shell NAME [-- COMMAND]``."""

    names: tuple[str, ...] = _option((), help="the pod's name", metavar="NAME", positional="*",
                                     shown_default="the one name on standard input")
    container: str = _option("", help="container to open the shell in", metavar="NAME",
                             shown_default="the pod's first")


@dataclasses.dataclass(frozen=True)
class KubesanitizeOptions:
    """Options of ``womm kubesanitize``."""

    texts: tuple[str, ...] = _option((), help="texts to turn into Kubernetes names",
                                     metavar="TEXT", positional="*",
                                     shown_default="lines of standard input")


@dataclasses.dataclass(frozen=True)
class AdminKubeconfigOptions:
    """Options of ``womm admin kubeconfig NAMESPACE``."""

    namespace: str = _option(help="the only namespace the kubeconfig may use",
                             metavar="NAMESPACE", positional="1")
    output: str = _option("", help="write the kubeconfig to this file (mode 0600)",
                          metavar="FILE", short="-o", shown_default="standard output")
    user: str = _option("womm-member", help="name of the member's ServiceAccount, Role and "
                        "RoleBinding in that namespace", metavar="NAME")
    days: int = _option(30, help="days the token stays valid", minimum=1, metavar="N")
    context: str = _option("", help="your (admin) kubeconfig context (default: the current "
                           "one)", metavar="NAME")


@dataclasses.dataclass(frozen=True)
class AdminNodesOptions:
    """Options of ``womm admin nodes``."""

    idle: bool = _option(False, help="only nodes running no pod outside kube-system")
    used: bool = _option(False, help="only nodes running a pod outside kube-system")
    context: str = _context()


def flag_name(name: str) -> str:
    """``kube_pods`` -> ``--kube-pods``."""
    return "--" + name.rstrip("_").replace("_", "-")


def env_name(name: str) -> str:
    """``kube_pods`` -> ``WOMM_KUBE_PODS``."""
    return "WOMM_" + name.rstrip("_").upper()


def _positional(field: dataclasses.Field[Any]) -> bool:
    return field.name == "task_id" or bool(field.metadata.get("positional"))


def add_arguments(parser: argparse.ArgumentParser, options: type) -> None:
    """Add one argument per option field; unset ones stay absent (argparse.SUPPRESS)."""
    for field in dataclasses.fields(options):
        meta = field.metadata
        help_text = meta["help"]
        if meta.get("shown_default"):
            help_text += f" (default: {meta['shown_default']})"
        elif field.default is not dataclasses.MISSING and field.type != "bool" \
                and "default:" not in help_text:
            help_text += f" (default: {field.default if field.default != '' else 'none'})"
        if _positional(field):
            nargs = meta.get("positional") if meta.get("positional") in ("*", "+") else None
            extra: dict[str, Any] = {"default": argparse.SUPPRESS} if nargs == "*" else {}
            parser.add_argument(field.name, help=help_text, metavar=meta["metavar"],
                                nargs=nargs, **extra)
            continue
        flags = [flag_name(field.name)] + ([meta["short"]] if meta["short"] else [])
        if field.type == "bool":
            parser.add_argument(*flags, dest=field.name, action="store_true",
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(*flags, dest=field.name, default=argparse.SUPPRESS,
                                metavar=meta["metavar"], choices=meta["choices"] or None,
                                help=help_text)


T = TypeVar("T")


def _convert(field: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    flag = flag_name(field.name)
    meta = field.metadata
    try:
        if field.type == "bool":
            value: Any = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true",
                                                                               "yes", "on")
        elif field.type == "int":
            value = int(raw)
        elif field.type == "float":
            value = float(raw)
        elif field.type == "tuple[str, ...]":
            value = tuple(str(item) for item in raw) if isinstance(raw, list | tuple) \
                else tuple(str(raw).split())
        else:
            value = str(raw)
    except ValueError:
        raise OptionError(f"{flag} must be a number (got {raw!r}{source})") from None
    if meta["minimum"] is not None and value < meta["minimum"]:
        shown = int(meta["minimum"]) if field.type == "int" else meta["minimum"]
        raise OptionError(f"{flag} must be at least {shown} (got {raw}{source})")
    if meta["choices"] and value not in meta["choices"]:
        raise OptionError(f"{flag} must be one of {', '.join(meta['choices'])} "
                          f"(got {value!r}{source})")
    if field.name == "kube_mem":
        try:
            parse_memory(value)
        except ValueError as exc:
            raise OptionError(f"{flag}: {exc}{source}") from None
    return value


def resolve(options: type[T], explicit: Mapping[str, Any], *,
            environ: Mapping[str, str] | None = None,
            config: Mapping[str, Any] | None = None, cwd: Path | None = None) -> T:
    """Build an options object: explicit > WOMM_* environment > project config > default.

    ``config`` defaults to what the project config of ``cwd`` (default: the current
    directory) supplies (:func:`womm_jupyter.config.option_defaults`); pass ``{}`` for none.

    Raises
    ------
    OptionError
        naming the flag, when a value is missing, malformed or out of range.
    """
    environ = os.environ if environ is None else environ
    if config is None:
        from .config import option_defaults

        config = option_defaults(cwd)
    known = {field.name for field in dataclasses.fields(options)}  # type: ignore[arg-type]
    unknown = set(explicit) - known
    if unknown:
        raise OptionError(f"unknown option {flag_name(sorted(unknown)[0])}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(options):  # type: ignore[arg-type]
        if field.name in explicit and explicit[field.name] is not None:
            values[field.name] = _convert(field, explicit[field.name], "")
        elif env_name(field.name) in environ:
            values[field.name] = _convert(field, environ[env_name(field.name)],
                                          f" from ${env_name(field.name)}")
        elif field.name in config:
            values[field.name] = _convert(field, config[field.name], " from the project config")
        elif field.default is dataclasses.MISSING:
            what = flag_name(field.name) if not _positional(field) else field.metadata["metavar"]
            raise OptionError(f"{what} is required: {field.metadata['help']}")
    return options(**values)
