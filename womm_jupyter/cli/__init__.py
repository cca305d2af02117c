"""`womm`: the command line face. Parsers come from the option model; output is rendered from
the core's events; the core itself never prints."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__, commands
from ..cluster.doctor import check
from ..cluster.fileserver import build_fsserver_image, default_image
from ..cluster.leader_image import build_leader_image
from ..errors import OptionError, WommError
from ..events import HandleStatus
from ..kube.manifests import leader_image_record, role_effects
from ..kube.shared_volume import settings_record
from ..options import (
    ClusterSetupOptions,
    DoctorOptions,
    FinishOptions,
    LogsOptions,
    ParallelOptions,
    SetupOptions,
    ShellOptions,
    StatusOptions,
    add_arguments,
    resolve,
)
from ..run.coordinator import Dispatch
from ..run.gnu import citation
from ..run.handle import Run
from . import kuboid as cli_kuboid
from . import setup as cli_setup
from . import shell as cli_shell

__all__ = ["main"]

_PARALLEL_EPILOG = commands.DASHES_EPILOG + """
examples:
  find -type f | womm parallel --kube-pods 3 -- wc -l {}
  womm parallel --kube-pods 10 --procs-per-pod 4 --kube-mem 2Gi -- -k gzip -9 {} ::: *.csv
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise OptionError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The `womm` parser, generated from the option model."""
    parser = _Parser(prog="womm", allow_abbrev=False,
                     description="Works On My Machine: run shell jobs on many workers (Docker "
                                 "containers, or local processes) through GNU parallel.")
    parser.add_argument("--version", action="version", version=f"womm {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    run = verbs.add_parser(
        "parallel", help="run GNU parallel with its jobs on womm workers", allow_abbrev=False,
        usage="womm parallel [womm options] -- [GNU parallel options] command [::: inputs]",
        description="Start --kube-pods workers running the project image, feed them GNU "
                    "parallel's jobs, print their output as GNU parallel would, and delete "
                    "the workers at the end (also on Ctrl-C and errors).",
        epilog=_PARALLEL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(run, ParallelOptions)
    status = verbs.add_parser("status", help="list this machine's tasks", allow_abbrev=False,
                              description=commands.DESCRIPTIONS["status"])
    add_arguments(status, StatusOptions)
    finish = verbs.add_parser("finish", help="delete everything of a task",
                              allow_abbrev=False, description=commands.DESCRIPTIONS["finish"])
    add_arguments(finish, FinishOptions)
    shell = verbs.add_parser(
        "shell", help="a shell (or one command) in a worker of the project image",
        allow_abbrev=False, usage="womm shell [options] [-- command ...]",
        description=commands.DESCRIPTIONS["shell"])
    add_arguments(shell, ShellOptions)
    cluster = verbs.add_parser(
        "cluster-setup", aliases=["server-deployment"], allow_abbrev=False,
        help="print the manifests that prepare a namespace for womm",
        description="Print the leader ServiceAccount and a Role + RoleBinding with exactly the "
                    "verbs womm uses (nothing cluster-wide), and the file server (an "
                    "unprivileged Deployment + Service + NetworkPolicy, storage an emptyDir or "
                    "a PVC), for an admin to apply: `womm cluster-setup | kubectl apply -f -`. "
                    "The Namespace object comes first: its labels make Pod Security enforce "
                    "--pod-security (baseline by default), and `kubectl apply` creates the "
                    "namespace or labels the existing one. What each verb lets a member do "
                    "goes to stderr.")
    add_arguments(cluster, ClusterSetupOptions)
    doctor = verbs.add_parser(
        "doctor", help="check that womm can run on the configured cluster", allow_abbrev=False,
        description="Check the kubeconfig, that the API server answers, every permission womm "
                    "uses in the namespace (asked of the API server), the Pod Security level "
                    "the namespace enforces (a warning when none or privileged), and that the "
                    "image is in its registry; say what is missing and what to do. Exit "
                    "status 1 when something is missing.")
    add_arguments(doctor, DoctorOptions)
    logs = verbs.add_parser("logs", help="print an --async task's output", allow_abbrev=False,
                            description=commands.DESCRIPTIONS["logs"])
    add_arguments(logs, LogsOptions)
    setup = verbs.add_parser(
        "setup", help="build the project's worker image in a local testbed shell",
        allow_abbrev=False, description=commands.DESCRIPTIONS["setup"])
    add_arguments(setup, SetupOptions)
    cli_kuboid.add_parsers(verbs)
    return parser


def _status(options: StatusOptions) -> int:
    found = commands.status(options.all_owners, context=options.context,
                            namespace=options.namespace)
    for line in commands.status_lines(found, time.time()):
        print(line)
    return 0


def _doctor(options: DoctorOptions) -> int:
    found = check(context=options.context, namespace=options.namespace, image=options.image)
    marks = {True: "ok", False: "MISSING", None: "unknown"}
    for item in found:
        print(f"{'WARNING' if item.warning else marks[item.ok]:8} {item.name}: {item.detail}")
        if item.advice and item.ok is not True:
            print(f"{'':8} -> {item.advice}")
    return 1 if any(item.ok is False for item in found) else 0


def _parallel(womm_args: list[str], parallel_args: list[str] | None) -> int:
    # Without `--`, words womm does not know are most likely the command: say where it goes.
    _, extra = build_parser().parse_known_args(["parallel", *womm_args])
    if extra and parallel_args is None:
        raise OptionError(f"womm parallel: unrecognized arguments: {' '.join(extra)}; put GNU "
                          "parallel's options and command after `--`, e.g. "
                          "womm parallel --kube-pods 3 -- wc -l {}")
    explicit = _explicit(build_parser().parse_args(["parallel", *womm_args]))
    if explicit.get("citation"):
        return citation()
    if parallel_args is None:
        raise OptionError(commands.missing_dashes("womm parallel"))
    options = resolve(ParallelOptions, explicit)
    if options.async_:
        return _parallel_async(options, parallel_args)
    dispatch = Dispatch(options, parallel_args, cwd=Path.cwd(), emit=lambda event: None)
    run = Run(dispatch)

    def interrupt(signum: int, frame: Any) -> None:
        threading.Thread(target=run.cancel, daemon=True).start()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM,
                                                                signal.SIGHUP)}
    try:
        for event in run.events():
            if event.kind in commands.TEXT_EVENTS:
                print(event.text, file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if run.status == HandleStatus.CANCELLED:
        print("womm: cancelled; the workers were deleted", file=sys.stderr)
        return 130
    run.result()
    return run.exit_code or 0


def _parallel_async(options: ParallelOptions, parallel_args: list[str]) -> int:
    data: bytes | None = None
    if not commands.has_input_sources(parallel_args):
        if sys.stdin.isatty():
            raise OptionError("womm parallel --async: give the inputs after ::: or on standard "
                              "input (the client does not stay to read a terminal).")
        data = sys.stdin.buffer.read()
    done = commands.submit_async(
        options, parallel_args, cwd=Path.cwd(), stdin=data,
        report=lambda text: print(f"womm: {text}", file=sys.stderr, flush=True))
    print(commands.async_started(done, face="cli", namespace_given=bool(options.namespace)),
          file=sys.stderr)
    print(done.task_id)
    return 0


def _cluster_setup(options: ClusterSetupOptions) -> int:
    import yaml  # (only this verb needs it)

    fsserver_image = options.fsserver_image
    if options.build and not fsserver_image:
        fsserver_image = build_fsserver_image(options.prefix, progress=lambda text: print(
            text, file=sys.stderr, flush=True))
        print(f"womm: file server image {fsserver_image} pushed", file=sys.stderr)
    if not fsserver_image:
        fsserver_image = default_image(options.prefix)
    docs = commands.cluster_setup(options.context, options.namespace,
                                  pod_security=options.pod_security,
                                  fsserver_image=fsserver_image,
                                  storage_class=options.storage_class,
                                  storage_size=options.storage_size)
    namespace = docs[0]["metadata"]["name"]  # the Namespace object comes first
    if options.build:
        image = build_leader_image(options.prefix, progress=lambda text: print(
            text, file=sys.stderr, flush=True))
        print(f"womm: leader image {image} pushed; the ConfigMap below records it",
              file=sys.stderr)
        docs.append(leader_image_record(image, namespace))
    if options.shared_pvc:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", options.shared_pvc):
            raise OptionError(f"--shared-pvc: {options.shared_pvc!r} is not a claim's name "
                              "(lower-case letters, digits, '-' and '.'): give the name of "
                              "an existing PersistentVolumeClaim of the namespace")
        docs.append(settings_record(options.shared_pvc, namespace))
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    # On stderr, so that the manifests stay pipeable into kubectl.
    print(f"womm: what the Role lets each member of namespace {namespace} do:",
          file=sys.stderr)
    for line in role_effects(options.pod_security):
        print(textwrap.fill(line, 92, initial_indent="  - ", subsequent_indent="    "),
              file=sys.stderr)
    print(f"womm: apply with `kubectl apply -f -`: it creates namespace {namespace} or labels "
          "it; `kubectl create -f -` fails on an existing one (AlreadyExists) and leaves it "
          "unlabelled", file=sys.stderr)
    return 0


def _logs(options: LogsOptions) -> int:
    out = sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    commands.stream_logs(options.task_id, options.follow, write, context=options.context,
                         namespace=options.namespace)
    return 0


def _finish(options: FinishOptions) -> int:
    deleted = commands.collect_and_finish(
        options.task_id, Path.cwd(), context=options.context, namespace=options.namespace,
        saved=lambda message: print(message, file=sys.stderr))
    for name in deleted:
        print(f"{name} deleted")
    return 0


def _explicit(parsed: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(parsed).items() if key != "verb"}


def _run(args: list[str]) -> int:
    """Run one `womm` command line; WommError propagates."""
    if args and args[0] in cli_kuboid.VERBS:
        return cli_kuboid.main(args, build_parser())
    if args and args[0] in ("shell", "parallel"):
        # The words after `--` are the command's, never womm's: parse only those before.
        womm_args, rest = commands.split_at_dashes(args[1:])
        if args[0] == "shell":
            explicit = _explicit(build_parser().parse_args(["shell", *womm_args]))
            return cli_shell.shell(resolve(ShellOptions, explicit), rest or None)
        return _parallel(womm_args, rest)
    parsed = build_parser().parse_args(args)
    explicit = _explicit(parsed)
    if parsed.verb == "status":
        return _status(resolve(StatusOptions, explicit))
    if parsed.verb in ("cluster-setup", "server-deployment"):
        return _cluster_setup(resolve(ClusterSetupOptions, explicit))
    if parsed.verb == "doctor":
        return _doctor(resolve(DoctorOptions, explicit))
    if parsed.verb == "logs":
        return _logs(resolve(LogsOptions, explicit))
    if parsed.verb == "setup":
        return cli_setup.setup(resolve(SetupOptions, explicit, config={}))
    if parsed.verb == "finish":
        return _finish(resolve(FinishOptions, explicit))
    build_parser().print_help()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run `womm`; return its exit status.

    Every :class:`~womm_jupyter.WommError`, whichever verb raised it, ends as one
    ``womm: error: ...`` message on standard error (its details after a blank line) and the
    error's exit status: 1 for runtime failures, 2 for usage errors. No stack trace, unless
    ``WOMM_DEBUG=1``. Anything else is a bug and keeps its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except WommError as exc:
        if os.environ.get("WOMM_DEBUG") == "1":
            traceback.print_exc()
        print(f"womm: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
