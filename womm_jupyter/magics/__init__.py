"""IPython magics for womm: ``%%womm_parallel``, ``%womm_status``, ``%womm_finish``,
``%%womm_experiment``.

``%load_ext womm_jupyter`` calls :func:`register`. The magics parse with the same option model
as the ``womm`` CLI and call the same core; they never import ``womm_jupyter.widgets`` (a run
hands out its own widget).
"""

from __future__ import annotations

from typing import Any

from .experiment import ExperimentMagics
from .womm import WommMagics

__all__ = ["ExperimentMagics", "WommMagics", "register"]


def register(ipython: Any) -> None:
    """Register womm's magics on an IPython shell."""
    ipython.register_magics(WommMagics)
    ipython.register_magics(ExperimentMagics)
