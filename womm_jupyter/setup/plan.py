"""What a ``womm setup`` will do, decided from its answers and the project's record; and
recording what it published. Core, no dialogue: both faces gather the answers their own way
(the dialogue of ``cli/setup.py`` asks, the form of ``widgets/setup.py`` reads its fields),
then call :func:`plan_setup`, drive :class:`~womm_jupyter.setup.testbed.SetupSession` and end
with :func:`record`. A repeated setup keeps the recorded share and starts from the project's
image unless a base is given; the prefix defaults to the one the user gave last.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

from .. import config
from .. import share as share_methods
from ..errors import OptionError
from ..naming import new_task_id
from .testbed import Published

__all__ = ["DEFAULT_BASE", "SetupPlan", "describe", "environment_lines", "plan_setup", "record",
           "repository", "setup_widget"]

DEFAULT_BASE = "ubuntu:22.04"
# A repository name as registries accept it: lowercase path components, optional host:port.
_REPOSITORY = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                         r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def repository(prefix: str, project_id: str) -> str:
    """The project image's repository under ``prefix``; OptionError if registries refuse it."""
    name = f"{prefix}womm-image-{project_id}"
    if not _REPOSITORY.match(name):
        raise OptionError(f"--prefix {prefix!r} makes the image name {name!r}, which "
                          "registries refuse: use a lowercase prefix ending in '/', e.g. "
                          "registry.example.org/me/")
    return name


@dataclasses.dataclass(frozen=True)
class SetupPlan:
    """One setup's decisions.

    start_image: the testbed's image (the base, or the project's previous image).
    from_scratch: False when a repeated setup starts from the project's image.
    """

    project_dir: Path
    previous: config.ProjectConfig | None
    project_id: str
    repository: str
    start_image: str
    base: str
    share: str
    prefix: str
    from_scratch: bool


def plan_setup(cwd: Path, *, share: str = "", base: str = "", prefix: str = "") -> SetupPlan:
    """Decide a setup in ``cwd`` from the answers given ("" = not given).

    Raises
    ------
    OptionError
        naming the flag, when an answer is needed and missing (a first setup's share or
        prefix) or malformed.
    """
    cwd = cwd.resolve()
    found = config.load_project(cwd)
    project_dir, previous = found if found else (cwd, None)
    chosen = share_methods.share_name(share) if share else (previous.share if previous else "")
    if not chosen:
        raise OptionError(f"--share is required on a first setup: "
                          f"{share_methods.NUMBERED_NAMES}")
    if chosen not in share_methods.NAMES:
        raise OptionError(f"--share must be one of {', '.join(share_methods.CHOICES)} "
                          f"(got {share!r})")
    from_scratch = bool(base) or previous is None
    if from_scratch:
        base = base or DEFAULT_BASE
        start_image = base
    else:
        assert previous is not None
        start_image, base = previous.image, previous.base
    if from_scratch:
        project_id = new_task_id()
        prefix = prefix or str(config.load_user().get("prefix", ""))
        if not prefix:
            raise OptionError("--prefix is required on a first setup: an image name prefix "
                              "you may push to, e.g. registry.example.org/me/")
        name = repository(prefix, project_id)
    else:
        assert previous is not None
        project_id = previous.project_id
        name = repository(prefix, project_id) if prefix else previous.image.split("@", 1)[0]
    return SetupPlan(project_dir, previous, project_id, name, start_image, base, chosen, prefix,
                     from_scratch)


def record(plan: SetupPlan, published: Published, environment: dict[str, str]) -> Path:
    """Save the project config (and the user's prefix) after a publish; return its path."""
    kept = (dict(plan.previous.environment)
            if plan.previous is not None and not plan.from_scratch else {})
    project = config.ProjectConfig(
        project_id=plan.project_id, image=published.reference, tag=published.tagged,
        base=plan.base, share=plan.share, environment={**kept, **environment},
        updated=time.time())
    path = config.save_project(plan.project_dir, project)
    if plan.prefix and plan.prefix != config.load_user().get("prefix"):
        config.save_user(prefix=plan.prefix)
    return path


def describe(cwd: Path) -> tuple[list[str], int]:
    """``womm setup --show``: the lines describing the project's configuration and the user's
    prefix, and the exit status (1 when ``cwd`` has no setup)."""
    found = config.load_project(cwd)
    prefix = config.load_user().get("prefix", "")
    if found is None:
        lines = [f"No womm setup in {cwd} or above: run `womm setup` there."]
        if prefix:
            lines.append(f"image prefix (yours): {prefix}")
        return lines, 1
    directory, project = found
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(project.updated))
    lines = [f"project:     {directory}  ({directory / config.PROJECT_FILE})",
             f"image:       {project.image}",
             f"pushed as:   {project.tag}",
             f"base image:  {project.base}",
             f"share:       {project.share}",
             f"updated:     {when}"]
    if prefix:
        lines.append(f"prefix:      {prefix}  ({config.user_config_path()})")
    if project.environment:
        lines += ["environment:", environment_lines(project.environment)]
    else:
        lines.append("environment: (none captured)")
    return lines, 0


def environment_lines(values: dict[str, str]) -> str:
    """Variables as the setup shows them: ``  NAME='value'``, one a line."""
    return "\n".join(f"  {name}={value!r}" for name, value in values.items())


def setup_widget(cwd: Path, initial: dict[str, Any] | None = None) -> Any:
    """The setup form (``womm_jupyter.widgets.SetupView``) for ``cwd``, pre-filled with
    ``initial`` SetupOptions values. Imported only now: the core never imports ipywidgets
    unless a face asks for a widget."""
    from ..widgets.setup import SetupView

    return SetupView(cwd, initial)
