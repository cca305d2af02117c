"""womm_jupyter: fan shell jobs out to many cores, from a notebook or a terminal.

The public API is small: :func:`parallel` starts a run and returns a :class:`Run` at once
(:class:`Experiment` is the handle of ``%%womm_experiment``); :func:`status` and
:func:`finish` manage tasks; every error users see is a :class:`WommError`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .backends import TaskInfo
from .commands import finish, status
from .errors import (
    BackendError,
    ImageError,
    MissingToolError,
    OptionError,
    TaskNotFoundError,
    WommError,
    WorkersLostError,
)
from .kuboid.experiment import Experiment
from .options import ParallelOptions, resolve
from .run.coordinator import Dispatch, Event, Progress
from .run.handle import Run
from .run.records import JobRecord

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Event",
    "Experiment",
    "ImageError",
    "JobRecord",
    "MissingToolError",
    "OptionError",
    "ParallelOptions",
    "Progress",
    "Run",
    "TaskInfo",
    "TaskNotFoundError",
    "WommError",
    "WorkersLostError",
    "finish",
    "parallel",
    "status",
]


def parallel(command: str, inputs: Iterable[str] | None = None, *,
             parallel_args: Sequence[str] = (), cwd: str | Path | None = None,
             **options: Any) -> Run:
    """Start ``command`` once per input on womm workers; return the :class:`Run` at once.

    Parameters
    ----------
    command:
        a GNU parallel command template, e.g. ``"wc -l {}"``.
    inputs:
        one job per item, fed on GNU parallel's standard input.
    parallel_args:
        GNU parallel options placed before the command, e.g. ``["-k", "--tag"]``.
    cwd:
        the project directory (default: the current directory).
    **options:
        womm options by name (``kube_pods=3``, ``backend="docker"``, ``image=...``).

    Examples
    --------
    >>> run = womm_jupyter.parallel("wc -l {}", ["a.txt", "b.txt"], kube_pods=2)
    >>> run.wait(); run.df[["inputs", "stdout", "exit_code"]]
    """
    project = Path(cwd or Path.cwd())
    resolved = resolve(ParallelOptions, options, cwd=project)
    argv = [*parallel_args, command]
    items = [str(item) for item in inputs or ()]
    dispatch = Dispatch(resolved, argv, cwd=project, emit=lambda e: None,
                        inputs=items, capture=True)
    return Run(dispatch)


def _parallel_signature() -> inspect.Signature:
    """``parallel``'s signature with each womm option as a keyword (``kube_pods=``...), so
    notebooks complete them (ipyparallel's ``_traitlet_signature``). ``None`` means not given:
    the environment, the project config or the built-in default decides."""
    named = list(inspect.signature(parallel).parameters.values())[:-1]  # all but **options
    options = [inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=f"{field.type} | None")
               for field in dataclasses.fields(ParallelOptions)]
    return inspect.Signature([*named, *options], return_annotation="Run")


parallel.__signature__ = _parallel_signature()  # type: ignore[attr-defined]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext womm_jupyter``: register the magics (imported only now, so the core never
    imports IPython)."""
    from .magics import register

    register(ipython)
