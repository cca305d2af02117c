"""The run object: a handle on one `womm parallel`, returned at once (ipyparallel's AsyncResult).

The coordinator runs on a background thread and never prints. Faces either iterate
:meth:`Run.events` on their own thread (the CLI, a blocking magic) or add listeners (widgets):
the :class:`~womm_jupyter.events.EventStream` that :class:`Run` is.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from ..errors import WommError
from ..events import EventKind, EventStream, HandleStatus
from .coordinator import Dispatch, Event, Progress
from .records import JobRecord, records_frame

__all__ = ["Run"]

_FINISHED = Event(EventKind.FINISHED)


class Run(EventStream[Event, "Run"]):
    """One run of `womm parallel`.

    Attributes
    ----------
    task_id: the task's id, as `womm status` shows it.
    status: a :class:`~womm_jupyter.events.HandleStatus`: ``running``, ``done`` (GNU parallel
        exited 0), ``failed`` (jobs failed or womm raised), or ``cancelled``.
    records: a JobRecord per finished job, growing while the run goes on.
    """

    def __init__(self, dispatch: Dispatch) -> None:
        super().__init__(_FINISHED)
        self._dispatch = dispatch
        self.task_id = dispatch.task_id
        self.exit_code: int | None = None
        self.progress: Progress | None = None
        dispatch.emit = self._emit
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"womm-run-{self.task_id}")
        self._thread.start()

    # -- coordinator thread ---------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if event.kind == EventKind.PROGRESS:
            self.progress = event.data
        self._publish(event)

    def _main(self) -> None:
        try:
            self.exit_code = self._dispatch.run()
            self.status = HandleStatus.DONE if self.exit_code == 0 else HandleStatus.FAILED
        except KeyboardInterrupt:
            self.status = HandleStatus.CANCELLED
        except BaseException as exc:  # kept for result(); the face decides how to show it
            self.error = exc
            self.status = HandleStatus.FAILED
        finally:
            self._end()

    # -- faces ------------------------------------------------------------------------------
    @property
    def records(self) -> list[JobRecord]:
        return list(self._dispatch.records)

    @property
    def df(self) -> Any:
        """A pandas DataFrame, one row per finished job (input, worker, start, runtime, exit
        code, signal, stdout, stderr)."""
        return records_frame(self.records)

    def widget(self) -> Any:
        """A live progress widget of this run (``womm_jupyter.widgets.ProgressView``).

        Imported only now, so the core never imports ipywidgets unless a face asks for it.
        """
        from ..widgets import ProgressView

        return ProgressView(self)

    def result(self) -> Run:
        """Wait, then return self, or raise what stopped the run (a WommError or bug)."""
        return super().result()

    def _outcome(self) -> Run:
        return self

    def cancel(self) -> None:
        """Stop the jobs and remove the workers; finished jobs keep their records."""
        self._dispatch.cancel()

    def __repr__(self) -> str:
        return (f"<womm Run {self.task_id} {self.status}: {len(self._dispatch.records)} jobs"
                f"{'' if self.exit_code is None else f', exit {self.exit_code}'}>")

    def _repr_html_(self) -> str:
        records = self.records
        failed = sum(not r.ok for r in records)
        workers = len({r.worker for r in records})
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{v}</td></tr>"
                       for k, v in (("task", self.task_id), ("status", self.status),
                                    ("jobs", len(records)), ("failed", failed),
                                    ("workers used", workers),
                                    ("exit code", self.exit_code)))
        error = ""
        if isinstance(self.error, WommError):
            error = f"<pre>{html.escape(str(self.error))}</pre>"
        return f"<table>{rows}</table>{error}<p>Records: <code>.df</code></p>"
