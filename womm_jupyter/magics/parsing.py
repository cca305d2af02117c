"""The magics' argument parsers, generated from the same option model as the CLI's.

A magic line is split like a shell line (``shlex``), then at the first ``--``: womm's options
before it, GNU parallel's options and command after it, unchanged (IPython's ``%%script``
does the same). Every bad input raises exactly :class:`IPython.core.error.UsageError` (IPython
checks the exact class: a subclass would get a stack trace) with a one-line message.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError

from .. import commands, options
from ..errors import OptionError

__all__ = ["HelpShown", "MagicParser", "build_parser", "options_of", "parse", "resolve_usage",
           "split_line", "usage_error", "words"]


class HelpShown(Exception):
    """``-h`` printed the help: the magic does nothing else."""


class MagicParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(f"{self.prog}: {(message or 'error').strip()}")
        raise HelpShown


_PARALLEL_EPILOG = commands.DASHES_EPILOG + """\
{} and $VAR are not expanded by IPython: the worker's shell sees them. The cell body holds the
inputs, one job per line (blank lines are skipped). As a line magic, give the inputs after
`:::`.

examples:
  %%womm_parallel --kube-pods 3 -o run -- wc -l {}
  data/a.txt
  data/b.txt

  %womm_parallel --kube-pods 2 -- -k echo {} ::: x y z
"""

_VERBS: dict[str, tuple[type, dict[str, Any]]] = {
    "womm_parallel": (options.ParallelOptions, dict(
        prog="%%womm_parallel",
        usage="%(prog)s [womm options] [-o NAME] -- [GNU parallel options] command",
        description="Run the command once per input line on --kube-pods workers through GNU "
                    "parallel, stream its output into the cell, show live progress, and "
                    "return the run object (.df: one row per job). Same options as "
                    "`womm parallel`.",
        epilog=_PARALLEL_EPILOG)),
    "womm_status": (options.StatusOptions, dict(
        prog="%womm_status",
        description=commands.DESCRIPTIONS["status"] + " As `womm status`; returns a table "
                    "whose .df is a DataFrame.")),
    "womm_finish": (options.FinishOptions, dict(
        prog="%womm_finish",
        description=commands.DESCRIPTIONS["finish"] + " As `womm finish ID`.")),
    "womm_logs": (options.LogsOptions, dict(
        prog="%womm_logs",
        description=commands.DESCRIPTIONS["logs"] + " As `womm logs ID`; interrupt the kernel "
                    "to stop following.")),
    "womm_setup": (options.SetupOptions, dict(
        prog="%womm_setup",
        description="Build the project's worker image, as `womm setup`. Without arguments: a "
                    "form (share, base image, prefix), a testbed terminal, \"Does it work?\" "
                    "and the push's progress. With --script FILE the setup runs like `womm "
                    "setup` with the same flags (a kernel has no terminal for the dialogue); "
                    "other flags pre-fill the form.")),
    "womm_shell": (options.ShellOptions, dict(
        prog="%womm_shell",
        usage="%(prog)s [options] [-- command line]",
        description=commands.DESCRIPTIONS["shell"] + " As `womm shell`: the terminal is in "
                    "the page; with a command line after `--`, its exit status is returned.")),
}


def build_parser(verb: str) -> MagicParser:
    """The parser of magic ``verb`` (``womm_parallel``, ``womm_status``, ``womm_finish``,
    ``womm_logs``, ``womm_setup``, ``womm_shell``)."""
    model, settings = _VERBS[verb]
    parser = MagicParser(allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                         **settings)
    options.add_arguments(parser, model)
    if verb == "womm_parallel":
        parser.add_argument("-o", "--output", dest="output", metavar="NAME",
                            default=argparse.SUPPRESS,
                            help="also store the run object in the namespace as NAME "
                                 "(magic only)")
    return parser


def words(line: str) -> list[str]:
    """The magic line split like a shell line (``shlex``); UsageError if it cannot be."""
    try:
        return shlex.split(line)
    except ValueError as exc:  # e.g. "No closing quotation"
        raise UsageError(f"cannot split the magic line like a shell would: {exc}") from None


def split_line(line: str) -> tuple[list[str], list[str] | None]:
    """Words before the first ``--`` and after it (None when there is no ``--``)."""
    return commands.split_at_dashes(words(line))


def usage_error(prog: str, exc: OptionError) -> UsageError:
    """An OptionError found after parsing, as the magic's one-line UsageError."""
    return UsageError(f"{prog}: {str(exc).splitlines()[0]}")


def parse(verb: str, words: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse ``words`` with the verb's parser: (explicit womm options, magic-only extras).

    Raises
    ------
    UsageError
        for unknown, abbreviated or malformed options.
    HelpShown
        after ``-h``/``--help`` printed the help.
    """
    explicit = vars(build_parser(verb).parse_args(words))
    extras = {name: explicit.pop(name) for name in ("output",) if name in explicit}
    return explicit, extras


def resolve_usage(verb: str, explicit: dict[str, Any]) -> Any:
    """The verb's options object (explicit > WOMM_* environment > config > default).

    Raises
    ------
    UsageError
        naming the flag, for missing or out-of-range values.
    """
    try:
        return options.resolve(_VERBS[verb][0], explicit)
    except OptionError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def options_of(verb: str, words: list[str]) -> Any:
    """The verb's options object from the magic's words (:func:`parse`, then
    :func:`resolve_usage`), for verbs without magic-only flags; None once ``-h`` printed the
    help. Raises UsageError as they do."""
    try:
        explicit, _ = parse(verb, words)
    except HelpShown:
        return None
    return resolve_usage(verb, explicit)
