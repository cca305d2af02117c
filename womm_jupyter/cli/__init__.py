"""`womm`: the command line face. Parsers come from the option model; output is rendered from
the core's events; the core itself never prints."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from .. import commands as manage
from ..errors import OptionError, WommError
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

__all__ = ["main"]

_PARALLEL_EPILOG = """\
Everything after `--` goes to GNU parallel unchanged: its options (-k, -0, --colsep, --tag,
--joblog, --results, --retries, --halt, --timeout, ...), the command with {} {.} {/} {#},
and input sources (::: values, :::: files, or standard input). womm chooses where jobs run,
so GNU parallel's -j, -S, --sshlogin and --ssh are refused.

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
                              description="ID AGE STATUS CPU MEM HEALTH PWD COMMAND of each "
                              "task. STATUS is RUNNING, COMPLETE (awaiting `womm finish`) or "
                              "ORPHANED (its coordinator is gone: `womm finish ID`).")
    add_arguments(status, StatusOptions)
    finish = verbs.add_parser("finish", help="delete everything of a task",
                              allow_abbrev=False,
                              description="Stop a task's coordinator if it still runs and "
                                          "delete its workers and state.")
    add_arguments(finish, FinishOptions)
    shell = verbs.add_parser(
        "shell", help="a shell (or one command) in a worker of the project image",
        allow_abbrev=False, usage="womm shell [options] [-- command ...]",
        description="Start one worker of the project image (a pod on Kubernetes, a container "
                    "on Docker) with the working directory as cwd: with no command an "
                    "interactive terminal (window size follows, Ctrl-C goes to the remote "
                    "process), with a command its output and exit status. The worker is "
                    "deleted when the shell ends.")
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
                            description="Print the output of an --async task's leader (GNU "
                                        "parallel's stdout and stderr, womm's messages); with "
                                        "-f, follow it until the run ends.")
    add_arguments(logs, LogsOptions)
    setup = verbs.add_parser(
        "setup", help="build the project's worker image in a local testbed shell",
        allow_abbrev=False,
        description="Choose how the project directory is shared, a base image and an image "
                    "prefix; make your application work in a local testbed shell (a container "
                    "of the base image with this directory at the same path and this machine "
                    "at /mnt); the exported variables and everything installed become the "
                    "image jobs run, pushed and recorded in .womm/config.json.")
    add_arguments(setup, SetupOptions)
    cli_kuboid.add_parsers(verbs)
    return parser


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _status(options: StatusOptions) -> int:
    rows = [["ID", "AGE", "STATUS", "CPU", "MEM", "HEALTH", "PWD", "COMMAND"]]
    now = time.time()
    for task in manage.status(options.all_owners, context=options.context,
                              namespace=options.namespace):
        rows.append([task.task_id, _age(now - task.created), task.status, task.cpu, task.mem,
                     f"{task.ready}/{task.desired}", task.cwd, task.command])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        print("  ".join(cells) + "  " + row[-1])
    return 0


def _doctor(options: DoctorOptions) -> int:
    from ..cluster.doctor import check

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
    explicit = vars(build_parser().parse_args(["parallel", *womm_args]))
    explicit.pop("verb")
    if explicit.get("citation"):
        return citation()
    if parallel_args is None:
        raise OptionError("womm parallel: put GNU parallel's options and command after `--`, "
                          "e.g. womm parallel --kube-pods 3 -- wc -l {}")
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
            if event.kind in ("backend", "created", "deleted", "lost", "share"):
                print(event.text, file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if run.status == "cancelled":
        print("womm: cancelled; the workers were deleted", file=sys.stderr)
        return 130
    run.result()
    return run.exit_code or 0


def _parallel_async(options: ParallelOptions, parallel_args: list[str]) -> int:
    from ..run import gnu as gnu
    from ..run.detached import submit

    data: bytes | None = None
    if not any(word in gnu.INPUT_SEPARATORS for word in parallel_args):
        if sys.stdin.isatty():
            raise OptionError("womm parallel --async: give the inputs after ::: or on standard "
                              "input (the client does not stay to read a terminal).")
        data = sys.stdin.buffer.read()
    done = submit(options, parallel_args, cwd=Path.cwd(), stdin=data,
                  report=lambda text: print(f"womm: {text}", file=sys.stderr, flush=True))
    scope = f" --namespace {done.namespace}" if options.namespace else ""
    print(f"womm: task {done.task_id} started in namespace {done.namespace} (leader image "
          f"{done.leader_image}); it runs on without this terminal.\n"
          f"  follow it:       womm logs {done.task_id}{scope} -f\n"
          f"  see its state:   womm status{scope}\n"
          f"  collect output:  womm finish {done.task_id}{scope}", file=sys.stderr)
    print(done.task_id)
    return 0


def _cluster_setup(options: ClusterSetupOptions) -> int:
    import yaml

    from ..kube.manifests import leader_image_record, role_effects

    fsserver_image = options.fsserver_image
    if options.build and not fsserver_image:
        from ..cluster.fileserver import build_fsserver_image

        fsserver_image = build_fsserver_image(options.prefix, progress=lambda text: print(
            text, file=sys.stderr, flush=True))
        print(f"womm: file server image {fsserver_image} pushed", file=sys.stderr)
    if not fsserver_image:
        from ..cluster.fileserver import default_image

        fsserver_image = default_image(options.prefix)
    docs = manage.cluster_setup(options.context, options.namespace,
                                pod_security=options.pod_security,
                                fsserver_image=fsserver_image,
                                storage_class=options.storage_class,
                                storage_size=options.storage_size)
    namespace = docs[0]["metadata"]["name"]  # the Namespace object comes first
    if options.build:
        from ..cluster.leader_image import build_leader_image

        image = build_leader_image(options.prefix, progress=lambda text: print(
            text, file=sys.stderr, flush=True))
        print(f"womm: leader image {image} pushed; the ConfigMap below records it",
              file=sys.stderr)
        docs.append(leader_image_record(image, namespace))
    if options.shared_pvc:
        import re

        from ..kube.shared_volume import settings_record

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
    from ..run.detached import logs

    out = sys.stdout.buffer
    for chunk in logs(options.task_id, options.follow, context=options.context,
                      namespace=options.namespace):
        out.write(chunk)
        out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `womm`; return its exit status (2 for usage errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in cli_kuboid.VERBS:
            return cli_kuboid.main(args)
        if args and args[0] == "shell":
            cut = args.index("--") if "--" in args else len(args)
            explicit = vars(build_parser().parse_args(args[:cut]))
            explicit.pop("verb")
            from .shell import shell

            return shell(resolve(ShellOptions, explicit), args[cut + 1:] or None)
        if args and args[0] == "parallel":
            split = args.index("--") if "--" in args else None
            womm_args = args[1:split] if split is not None else args[1:]
            return _parallel(womm_args, args[split + 1:] if split is not None else None)
        parsed = build_parser().parse_args(args)
        explicit = {k: v for k, v in vars(parsed).items() if k != "verb"}
        if parsed.verb == "status":
            return _status(resolve(StatusOptions, explicit))
        if parsed.verb in ("cluster-setup", "server-deployment"):
            return _cluster_setup(resolve(ClusterSetupOptions, explicit))
        if parsed.verb == "doctor":
            return _doctor(resolve(DoctorOptions, explicit))
        if parsed.verb == "logs":
            return _logs(resolve(LogsOptions, explicit))
        if parsed.verb == "setup":
            from .setup import setup

            return setup(resolve(SetupOptions, explicit, config={}))
        if parsed.verb == "finish":
            done = resolve(FinishOptions, explicit)
            saved = manage.collect(done.task_id, Path.cwd(), context=done.context,
                                   namespace=done.namespace)
            if saved:
                print(f"womm: task {done.task_id}: records and output saved in {saved}",
                      file=sys.stderr)
            for name in manage.finish(done.task_id, context=done.context,
                                      namespace=done.namespace):
                print(f"{name} deleted")
            return 0
        build_parser().print_help()
        return 2
    except WommError as exc:
        print(f"womm: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130

