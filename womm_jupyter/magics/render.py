"""Plain renderers for the magics: the text progress line and the task table."""

from __future__ import annotations

import html
import importlib.util
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from .. import commands
from ..backends import TaskInfo
from ..run.coordinator import Progress

__all__ = ["TaskTable", "TextProgress", "progress_text", "widgets_render"]



def widgets_render(shell: Any) -> bool:
    """Whether a magic in ``shell`` shows widgets: they need a kernel with comms (ipykernel)
    and ipywidgets; terminal IPython and a plain InteractiveShell get text lines instead."""
    return (getattr(shell, "kernel", None) is not None
            and importlib.util.find_spec("ipywidgets") is not None)

def progress_text(progress: Progress) -> str:
    """``womm: 3/10 done, 1 failed, 2 running; workers 2/2 ready``."""
    total = "" if progress.total is None else f"/{progress.total}"
    return (f"womm: {progress.done}{total} done, {progress.failed} failed, "
            f"{progress.running} running; workers {progress.ready_workers}/"
            f"{progress.desired_workers} ready")


class TextProgress:
    """A progress line where widgets cannot render (terminal IPython, no ipywidgets).

    On a terminal it is one line redrawn in place (at most ``interval`` apart), cleared while
    job output is written; elsewhere a new line when something changed, at most every
    ``quiet_interval`` seconds, and the last state at the end.
    """

    def __init__(self, stream: TextIO, *, interval: float = 0.25,
                 quiet_interval: float = 5.0) -> None:
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._interval = interval if self._tty else quiet_interval
        self._last_time = 0.0
        self._last_text = ""
        self._shown = ""  # text currently drawn on the terminal line
        self._latest: Progress | None = None

    def update(self, progress: Progress) -> None:
        self._latest = progress
        now = time.monotonic()
        if now - self._last_time >= self._interval:
            self._draw(progress_text(progress))
            self._last_time = now

    def clear(self) -> None:
        """Remove the terminal line before other output is written."""
        if self._tty and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = ""

    def redraw(self) -> None:
        """Draw the terminal line again after other output."""
        if self._tty and self._latest is not None and not self._shown:
            self._draw(progress_text(self._latest))

    def close(self) -> None:
        """Show the final state and end the line."""
        if self._latest is not None:
            self._draw(progress_text(self._latest), final=True)
        elif self._tty:
            self.clear()

    def _draw(self, text: str, final: bool = False) -> None:
        if self._tty:
            if text == self._shown and not final:
                return
            self._stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self._shown = "" if final else text
        elif text != self._last_text:
            self._stream.write(text + "\n")
        else:
            return
        self._last_text = text
        self._stream.flush()


class TaskTable:
    """What ``%womm_status`` returns: the rows of ``womm status``.

    Shows itself as an HTML table (text in a terminal); ``.df`` is a DataFrame; iterating
    gives the :class:`~womm_jupyter.TaskInfo` objects.
    """

    HEADER = commands.STATUS_HEADER

    def __init__(self, tasks: Iterable[TaskInfo], *, now: float | None = None) -> None:
        self.tasks = list(tasks)
        self._now = time.time() if now is None else now

    def __iter__(self) -> Iterator[TaskInfo]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def rows(self) -> list[tuple[str, ...]]:
        """One tuple of display strings per task, in HEADER order."""
        return [commands.status_row(task, self._now) for task in self.tasks]

    @property
    def df(self) -> Any:
        """A pandas DataFrame, one row per task, indexed by task id."""
        import pandas as pd

        frame = pd.DataFrame([vars(t) for t in self.tasks],
                             columns=list(TaskInfo.__dataclass_fields__))
        return frame.set_index("task_id", drop=False)

    def __repr__(self) -> str:
        lines = commands.status_lines(self.tasks, self._now)
        if not self.tasks:
            lines.append("(no tasks)")
        return "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in self.HEADER)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(cell)}</td>"
                                        for cell in row) + "</tr>" for row in self.rows())
        if not self.tasks:
            body = f"<tr><td colspan='{len(self.HEADER)}'><i>no tasks</i></td></tr>"
        return (f"<table class='womm-status'><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")
