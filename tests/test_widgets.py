"""ProgressView in plain pytest: no kernel, no frontend (ipywidgets falls back to dummy comms)."""

from __future__ import annotations

import ipywidgets
import pytest

import womm_jupyter
from womm_jupyter.run.coordinator import Event, Progress
from womm_jupyter.widgets import ProgressView


class _FakeRun:
    """The part of Run a view uses: listeners, the last progress, the status."""

    def __init__(self, progress: Progress | None = None, status: str = "running") -> None:
        self.listeners: list = []
        self.progress = progress
        self.status = status

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)

    def done(self) -> bool:
        return self.status != "running"

    def emit(self, event: Event) -> None:
        if event.kind == "progress":
            self.progress = event.data
        for listener in self.listeners:
            listener(event)


def test_progress_events_set_bar_and_label():
    run = _FakeRun()
    view = ProgressView(run)
    assert isinstance(view, ipywidgets.HBox)
    assert view.children == (view.bar, view.label)
    assert view.label.value == "starting workers"
    run.emit(Event("progress", data=Progress(10, 3, 0, 2, 1, 2)))
    assert (view.bar.value, view.bar.max, view.bar.bar_style) == (3, 10, "info")
    assert view.label.value == "3/10 done · 0 failed · 2 running · workers 1/2 ready"
    run.emit(Event("progress", data=Progress(10, 5, 1, 2, 2, 2)))
    assert view.bar.bar_style == "danger"
    assert "1 failed" in view.label.value
    assert "workers 2/2 ready" in view.label.value


def test_unknown_total_grows_the_bar():
    run = _FakeRun()
    view = ProgressView(run)
    run.emit(Event("progress", data=Progress(None, 4, 0, 3, 3, 3)))
    assert (view.bar.value, view.bar.max) == (4, 7)
    assert view.label.value.startswith("4 done ·")


@pytest.mark.parametrize(("status", "style"), [("done", "success"), ("failed", "danger"),
                                                ("cancelled", "warning")])
def test_end_of_run_sets_status(status, style):
    run = _FakeRun()
    view = ProgressView(run)
    run.emit(Event("progress", data=Progress(2, 2, 0, 0, 1, 1)))
    run.status = status
    run.emit(Event("finished"))
    assert (view.bar.description, view.bar.bar_style) == (status, style)
    assert repr(view) == f"womm {status}: 2/2 done · 0 failed · 0 running · workers 1/1 ready"


def test_view_of_a_finished_run_shows_its_last_state():
    run = _FakeRun(Progress(3, 3, 0, 0, 2, 2), status="done")
    view = ProgressView(run)
    assert (view.bar.value, view.bar.max, view.bar.description) == (3, 3, "done")


def test_other_events_change_nothing():
    run = _FakeRun()
    view = ProgressView(run)
    before = (view.bar.get_state(), view.label.get_state())
    for event in (Event("stdout", data=b"x\n"), Event("created", "containers/x created"),
                  Event("record", data=None)):
        run.emit(event)
    assert (view.bar.get_state(), view.label.get_state()) == before


def test_view_of_a_real_run(tmp_path):
    run = womm_jupyter.parallel("echo {}", ["a", "b", "c"], kube_pods=2, backend="local",
                                cwd=tmp_path)
    view = run.widget()
    assert isinstance(view, ProgressView)
    assert run.wait(120)
    assert run.status == "done"
    assert (view.bar.value, view.bar.max) == (3, 3)
    assert view.bar.description == "done"
    assert view.label.value == "3/3 done · 0 failed · 0 running · workers 2/2 ready"
