"""``ProgressView``: the live progress of a run, as ipywidgets."""

from __future__ import annotations

from typing import Any

import ipywidgets

from ..events import EventKind, HandleStatus
from ..run.coordinator import Event, Progress

__all__ = ["ProgressView"]

_ENDED_STYLE: dict[str, str] = {HandleStatus.DONE: "success", HandleStatus.FAILED: "danger",
                                 HandleStatus.CANCELLED: "warning"}


class ProgressView(ipywidgets.HBox):  # type: ignore[misc]  # (ipywidgets is untyped)
    """A bar and a label: done / failed / running / total, ready workers out of requested.

    It only sets traits from the run's events (through :meth:`Run.add_listener`, called on
    the coordinator's thread); the core decides how often progress is reported (a few times a
    second) and traitlets only syncs values that changed, so the frontend is not flooded.

    Parameters
    ----------
    run:
        a :class:`~womm_jupyter.Run`, or anything with ``add_listener(callable)``,
        ``progress``, ``status`` and ``done()``.

    Examples
    --------
    >>> run = womm_jupyter.parallel("sleep 1; echo {}", range(10), kube_pods=2)
    >>> ProgressView(run)  # or run.widget()
    """

    def __init__(self, run: Any) -> None:
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=1, description="womm",
                                          bar_style="info")
        self.label = ipywidgets.Label(value="starting workers")
        super().__init__(children=[self.bar, self.label])
        self.add_class("womm-progress")
        self._run = run
        run.add_listener(self.on_event)  # first, so no event falls between reading and listening
        if run.progress is not None:
            self.show_progress(run.progress)
        if run.done():
            self.show_end(run.status)

    def __repr__(self) -> str:
        # The text fallback where the widget cannot render (and in saved notebooks).
        return f"womm {self.bar.description}: {self.label.value}"

    def on_event(self, event: Event) -> None:
        """The run's listener."""
        if event.kind == EventKind.PROGRESS:
            self.show_progress(event.data)
        elif event.kind == EventKind.FINISHED:
            self.show_end(self._run.status)

    def show_progress(self, progress: Progress) -> None:
        total = "" if progress.total is None else f"/{progress.total}"
        with self.bar.hold_sync():  # one message per update, not one per trait
            self.bar.max = max(1, progress.total or progress.done + progress.running)
            self.bar.value = progress.done
            if progress.failed:
                self.bar.bar_style = "danger"
        self.label.value = (f"{progress.done}{total} done · {progress.failed} failed · "
                            f"{progress.running} running · workers "
                            f"{progress.ready_workers}/{progress.desired_workers} ready")

    def show_end(self, status: str) -> None:
        self.bar.description = status
        self.bar.bar_style = _ENDED_STYLE.get(status, "")
