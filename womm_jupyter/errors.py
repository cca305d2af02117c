"""Errors womm reports to users.

Every message says what failed, on which object, and what to do next; details (worker logs,
stderr tails) follow after a blank line. The tree::

    WommError
    ├── OptionError          bad or conflicting options (CLI exit status 2)
    ├── MissingToolError     perl, a Docker engine or a kubeconfig is not available
    ├── BackendError         workers could not be started, reached or removed
    │   └── WorkersLostError every worker of a run died while jobs remained
    ├── ImageError           the worker image is missing or unusable
    │   └── SetupError       `womm setup` could not build, check or push the project image
    ├── ConfigError          a womm config file (project or user) cannot be read or written
    ├── ShareError           the project directory could not be shared with the workers
    ├── TaskNotFoundError    `womm finish ID` named no task of this owner
    └── PodNotFoundError     a `womm pods` verb named a pod that is not one of the chosen
                             (your womm) pods of the namespace
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "ImageError",
    "MissingToolError",
    "OptionError",
    "PodNotFoundError",
    "SetupError",
    "ShareError",
    "TaskNotFoundError",
    "WommError",
    "WorkersLostError",
]


class WommError(Exception):
    """Base of every error womm reports to a user (not a bug)."""

    exit_status = 1

    def __init__(self, message: str, details: str = "") -> None:
        self.message = message
        self.details = details.rstrip()
        super().__init__(message + (f"\n\n{self.details}" if self.details else ""))

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a stack trace: expected failures are not bugs.
        import os

        if os.environ.get("WOMM_DEBUG") == "1":
            import traceback

            return traceback.format_exception(self)
        return [f"{type(self).__name__}: {line}" if i == 0 else line
                for i, line in enumerate(str(self).splitlines())]


class OptionError(WommError):
    """An option is missing, malformed or conflicts with another."""

    exit_status = 2


class MissingToolError(WommError):
    """Something womm needs on this machine is absent (perl, a Docker engine...)."""

    exit_status = 2


class BackendError(WommError):
    """Workers could not be created, reached or removed."""


class WorkersLostError(BackendError):
    """Every worker of a run died while jobs were still to run."""


class ImageError(WommError):
    """The worker image is missing or cannot run the womm agent."""


class SetupError(ImageError):
    """`womm setup` could not start the testbed, build, check or push the project image."""


class ConfigError(WommError):
    """A womm config file (``.womm/config.json`` or the user's) is unreadable or unwritable."""


class ShareError(WommError):
    """The project directory could not be shared with (or brought back from) the workers."""


class TaskNotFoundError(WommError):
    """No task with that id belongs to this owner."""

    exit_status = 2


class PodNotFoundError(WommError):
    """A pod named to a `womm pods` verb is not among the pods it may touch."""

    exit_status = 2
