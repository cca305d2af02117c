"""``ExperimentView``: an experiment's live table of tasks and its progress line."""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets

from ..events import EventKind

__all__ = ["ExperimentView"]

_INTERVAL = 0.3  # seconds between two redraws: a few per second at most


class ExperimentView(ipywidgets.VBox):  # type: ignore[misc]  # (ipywidgets is untyped)
    """A table (task line, command, pod, state, attempts) and the progress line.

    It only sets traits, from the experiment's listener (called on the experiment's thread):
    at most one redraw every 0.3 s, and a last one shortly after the latest event, so the
    frontend is never flooded and the final state is always shown.

    Parameters
    ----------
    experiment:
        an :class:`~womm_jupyter.kuboid.experiment.Experiment`, or anything with
        ``add_listener(callable)``, ``table_html()``, ``progress``, ``status`` and ``done()``.

    Examples
    --------
    >>> experiment = Experiment(options, ["echo a", "echo b"])
    >>> ExperimentView(experiment)  # or experiment.widget()
    """

    def __init__(self, experiment: Any) -> None:
        self.table = ipywidgets.HTML(value="")
        self.label = ipywidgets.Label(value="starting")
        super().__init__(children=[self.table, self.label])
        self.add_class("womm-experiment")
        self._experiment = experiment
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        experiment.add_listener(self.on_event)  # first, so nothing falls between
        self.refresh()

    def __repr__(self) -> str:
        # The text fallback where the widget cannot render (and in saved notebooks).
        return f"womm experiment: {self.label.value}"

    def on_event(self, event: Any) -> None:
        """The experiment's listener: redraw now, or soon if it redrew just now."""
        if event.kind == EventKind.FINISHED:
            self.refresh()
            return
        with self._lock:
            wait = self._last + _INTERVAL - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.refresh)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.refresh()

    def refresh(self) -> None:
        """Draw the experiment as it is now."""
        with self._lock:
            self._last = time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        experiment = self._experiment
        table = experiment.table_html()
        line = experiment.progress.line()
        if experiment.done():
            line = f"{experiment.status}: {line}"
        if table != self.table.value:  # traitlets would send it even when unchanged
            self.table.value = table
        self.label.value = line
