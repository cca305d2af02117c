"""ipywidgets views of womm's core objects. They hold no logic of their own: they set traits
from the objects' events. The core never imports this package at module level; a run hands
out its view with :meth:`Run.widget`."""

from __future__ import annotations

from .experiment import ExperimentView
from .progress import ProgressView

__all__ = ["ExperimentView", "ProgressView"]
