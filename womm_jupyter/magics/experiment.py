"""``%%womm_experiment``: ``womm experiment run`` in a cell, with a live table.

The cell body holds the task lines (one shell command line each; blank lines and ``#``
comments are skipped), like the task file of ``womm experiment run``; the options are that
command's, generated from the same option model. The magic blocks the cell like the command
blocks a terminal: it drains the experiment's events on the cell's own thread, writes messages
to ``sys.stderr``, shows the live table (a widget, where widgets render) or a plain progress
line, and returns the :class:`~womm_jupyter.kuboid.experiment.Experiment`, whose ``.df`` has one row
per task. Interrupting the kernel cancels the experiment: its pods are deleted, saved logs
stay.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display

from .. import commands
from ..errors import OptionError
from ..events import EventKind
from ..kuboid.experiment import Experiment, ExperimentEvent
from ..options import ExperimentOptions, add_arguments, resolve
from .parsing import HelpShown, MagicParser, usage_error, words
from .render import widgets_render

__all__ = ["ExperimentMagics", "build_parser"]

_DESCRIPTION = """\
Run each task line of the cell in a pod of its own, as `womm experiment run` (same options):
LOGDIR/<task>.log is written when a task completes, tasks with a log never run again,
vanished pods are rescheduled, failed and OOM-killed tasks are retried up to --max-retries.
Shows a live table (task, pod, state, attempts) and the progress line; returns the experiment
(.df: one row per task with its log's path)."""

_EXAMPLES = """
    %%womm_experiment -i 127.0.0.1:5000/lab/analysis:v3 -l logs --kube-cpu 0.2 -o exp
    python analyse.py sample-001.fastq
    python analyse.py sample-002.fastq

    %womm_experiment -i 127.0.0.1:5000/lab/analysis:v3 -f tasks.txt -l logs
    exp.df
"""
# Shown on stderr in every case; with the live table, per-task completions and pod deletions
# are left to the table (and to the summary at the end).
_QUIET_WITH_TABLE = (EventKind.COMPLETED, EventKind.DELETED)
_TEXT_INTERVAL = 5.0  # seconds between two plain progress lines


def build_parser() -> MagicParser:
    """The parser of ``%%womm_experiment``: ExperimentOptions' flags and ``-o NAME``."""
    parser = MagicParser(prog="%%womm_experiment", allow_abbrev=False,
                         usage="%(prog)s -i IMAGE [options] [-o NAME]",
                         description=_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, ExperimentOptions)
    parser.add_argument("-o", "--output", dest="output", metavar="NAME",
                        default=argparse.SUPPRESS,
                        help="also store the experiment in the namespace as NAME (magic only)")
    return parser


def _text_line(event: ExperimentEvent) -> str:
    return f"womm: {event.text}\n"


class _TextProgress:
    """The progress line where no widget renders: when it changed, at most every few
    seconds, and the last state at the end."""

    def __init__(self) -> None:
        self._last_time = 0.0
        self._shown = ""
        self._latest = ""

    def update(self, text: str) -> None:
        self._latest = text
        if time.monotonic() - self._last_time >= _TEXT_INTERVAL:
            self._show()

    def close(self) -> None:
        self._show()

    def _show(self) -> None:
        if self._latest and self._latest != self._shown:
            sys.stderr.write(f"womm: {self._latest}\n")
            sys.stderr.flush()
            self._shown = self._latest
            self._last_time = time.monotonic()


@magics_class
class ExperimentMagics(Magics):
    """``%%womm_experiment``; ``%load_ext womm_jupyter`` registers it."""

    @no_var_expand  # type: ignore[untyped-decorator]  # (IPython is untyped)
    @line_cell_magic  # type: ignore[untyped-decorator]
    def womm_experiment(self, line: str, cell: str | None = None) -> Experiment | None:
        try:  # `--` means nothing here: argparse says so
            explicit = vars(build_parser().parse_args(words(line)))
        except HelpShown:
            return None
        name = explicit.pop("output", None)
        if name is not None and not name.isidentifier():
            raise UsageError(f"%%womm_experiment: -o needs a Python name (got {name!r})")
        try:
            options = resolve(ExperimentOptions, explicit)
        except OptionError as exc:
            raise usage_error("%%womm_experiment", exc) from None
        lines = (cell or "").splitlines()
        has_tasks = any(text.strip() and not text.strip().startswith("#") for text in lines)
        if options.task_file and has_tasks:
            raise UsageError("%%womm_experiment: give the tasks either in the cell body or "
                             "with -f TASKFILE, not both")
        if not options.task_file and not has_tasks:
            raise UsageError("%%womm_experiment: give the task lines in the cell body (one "
                             "shell command line per line), or -f TASKFILE")
        try:
            experiment = Experiment(options, None if options.task_file else lines,
                                    source="the cell")
        except OptionError as exc:
            raise usage_error("%%womm_experiment", exc) from None
        if name is not None:
            self._user_ns()[name] = experiment  # before draining: kept even if interrupted
        table = widgets_render(self.shell)
        if table:
            display(experiment.widget())  # type: ignore[no-untyped-call]
        progress = _TextProgress()
        try:
            for event in experiment.events():
                if event.kind == EventKind.PROGRESS:
                    if not table:
                        progress.update(event.text)
                elif not (table and event.kind in _QUIET_WITH_TABLE):
                    sys.stderr.write(_text_line(event))
                    sys.stderr.flush()
        except KeyboardInterrupt:
            while True:  # leaving pods behind is worse than a slow stop
                try:
                    experiment.cancel()
                    experiment.wait()
                    break
                except KeyboardInterrupt:
                    continue
            print(commands.experiment_cancelled(experiment), file=sys.stderr, flush=True)
            raise
        finally:
            if not table:
                progress.close()
        if experiment.finished_elsewhere:
            print(f"womm: experiment {experiment.id} was finished from elsewhere (womm finish)",
                  file=sys.stderr, flush=True)
            return experiment
        # a WommError shows as its message, no stack trace
        print("\n".join(commands.experiment_summary(experiment)), file=sys.stderr, flush=True)
        return experiment

    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None  # registered magics always have their shell
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace


ExperimentMagics.womm_experiment.__doc__ = (build_parser().format_help()
                                            + "\nExamples\n--------\n" + _EXAMPLES)
