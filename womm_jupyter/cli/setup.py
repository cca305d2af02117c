"""`womm setup`: the terminal dialogue (a face: the work is done by ``setup/testbed.py`` and
``config.py``). Questions keep the original WOMM's words; every answer has a flag
(``--share``, ``--base``, ``--prefix``, ``--yes``, ``--script``) so the same setup runs
without a terminal."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import config
from .. import share as share_methods
from ..backends.docker import connect
from ..errors import OptionError, SetupError
from ..options import SetupOptions
from ..setup import plan as setup_plan
from ..setup.testbed import PushProgress, Round, SetupSession, Testbed, dependencies
from . import _terminal

__all__ = ["setup", "show"]

_SHARE_MENU = "\n".join(["How do you want to share {cwd} to your cloud?",
                         *(f"{m.number}) {m.label}" for m in share_methods.METHODS),
                         "*) never mind, quit"])
_PREFIX_QUESTION = """\
What is a prefix of a docker image name that you are authorized to push to a secure location?
e.g. 'us-west4-docker.pkg.dev/angr-ci/defcon/'"""

class _Quit(Exception):
    """The user chose to stop (the menu's `*`, or "n"): nothing is saved."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _say(text: str = "") -> None:
    print(text, flush=True)


def _ask(default: str, choices: tuple[str, ...] = ()) -> str:
    """Read one answer after a ``[default] >`` prompt; empty means the default."""
    prompt = f"[{default}] > " if default else "> "
    while True:
        try:
            answer = input(prompt).strip()
        except EOFError:
            raise OptionError("womm setup: no answer (end of input); answer on a terminal, or "
                              "give every answer as a flag (--share, --base, --prefix, --yes)"
                              ) from None
        answer = answer or default
        if answer and (not choices or answer in choices):
            return answer
        if choices:
            _say(f"Please answer {' or '.join(choices)}.")


def _ask_base() -> str:
    _say("What is the docker hub name for the base image for your operating system?")
    return _ask(setup_plan.DEFAULT_BASE)


def _yes_no(question: str, default: str) -> bool:
    _say(f"{question} y/n")
    return _ask(default, ("y", "n")) == "y"


def show(cwd: Path) -> int:
    """``womm setup --show``: the project's configuration and the user's prefix."""
    lines, status = setup_plan.describe(cwd)
    for line in lines:
        _say(line)
    return status


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end setup as Ctrl-C does: through the cleanup."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interact(testbed: Testbed) -> None:
    """Join this terminal to the testbed's shell until it exits.

    The docker SDK attaches a raw socket to the container's TTY; this loop is what
    `docker run -it` does: raw mode here, bytes both ways, SIGWINCH becomes a resize.
    """
    sock = testbed.attach_socket()
    testbed.start()
    _terminal.join_socket(sock, testbed.resize)
    if testbed.running():  # detached (ctrl-p ctrl-q): the shell still runs; end it
        testbed.container.kill()


def _run_script(testbed: Testbed, script: str) -> None:
    testbed.start()
    for chunk in testbed.output():
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    code = testbed.wait()
    if code != 0:
        raise SetupError(f"the setup script {script} failed in the testbed (exit status "
                         f"{code}); nothing was saved. Fix it and run `womm setup` again.")


class _PushDisplay:
    """Docker-like push progress: a line per finished layer, one live line for the rest."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.layers: dict[str, tuple[int, int]] = {}
        self.live = False
        self.shown = 0.0

    def __call__(self, event: PushProgress) -> None:
        if not event.layer:
            return
        if event.status == "Pushing" and event.total:
            self.layers[event.layer] = (event.current or 0, event.total)
            if self.tty and time.monotonic() - self.shown > 0.1:  # ~10 redraws a second
                self.shown = time.monotonic()
                done = sum(c for c, _ in self.layers.values()) / 1e6
                total = sum(t for _, t in self.layers.values()) / 1e6
                sys.stdout.write(f"\r\x1b[KPushing {len(self.layers)} layer(s): "
                                 f"{done:.1f}/{total:.1f} MB")
                sys.stdout.flush()
                self.live = True
            return
        if event.status in ("Preparing", "Waiting", "Pushing"):
            return
        self.layers.pop(event.layer, None)
        self._clear()
        _say(f"{event.layer}: {event.status}")

    def _clear(self) -> None:
        if self.live:
            sys.stdout.write("\r\x1b[K")
            self.live = False

    def close(self) -> None:
        self._clear()
        sys.stdout.flush()


def _decide_secrets(round_: Round, options: SetupOptions) -> dict[str, str]:
    kept = {name.strip() for name in options.keep_secrets.split(",") if name.strip()}
    chosen = {}
    for name, value in round_.capture.secrets.items():
        if name in kept:
            chosen[name] = value
        elif not options.yes and _yes_no(f"{name} looks like a secret and is left out of the "
                                         "image. Keep it anyway?", "n"):
            chosen[name] = value
    return chosen


def setup(options: SetupOptions, cwd: Path | None = None) -> int:
    """``womm setup``: the dialogue; see the module's docstring."""
    cwd = (cwd or Path.cwd()).resolve()
    if options.show:
        return show(cwd)
    try:
        with _signals_interrupt():
            return _setup(options, cwd)
    except _Quit as stop:
        _say(str(stop))
        return stop.status


def _setup(options: SetupOptions, cwd: Path) -> int:
    if not options.script and not sys.stdin.isatty():
        raise OptionError("womm setup: the testbed shell needs a terminal; run it in one, or "
                          "pass --script FILE to run a setup script instead")
    if options.script and not Path(options.script).is_file():
        raise OptionError(f"--script {options.script}: no such file")
    found = config.load_project(cwd)
    project_dir, previous = found if found else (cwd, None)

    # -- share method ------------------------------------------------------------------------
    share = share_methods.share_name(options.share) if options.share else ""
    if not share and previous is not None:
        _say(f"This project ({project_dir}) runs {previous.image}, shared {previous.share}.")
        share = previous.share
        if not options.yes and _yes_no("Do you want to change the share type?", "n"):
            share = ""
    if not share:
        if options.yes:
            raise OptionError("--share is required with --yes on a first setup "
                              f"({share_methods.NUMBERED_NAMES})")
        _say(_SHARE_MENU.format(cwd=cwd))
        answer = _ask("*", (*(m.number for m in share_methods.METHODS), "*"))
        if answer == "*":
            raise _Quit("Never mind: nothing was changed.", 0)
        share = share_methods.share_name(answer)

    # -- start image: the project's (no base given), or a base, which starts afresh ------------
    base = options.base
    if not base and previous is not None:
        if options.yes or not _yes_no("Do you want to change your base image?", "n"):
            _say(f"Starting from the project's image {previous.image}")
        else:
            base = _ask_base()
    elif not base:
        base = setup_plan.DEFAULT_BASE if options.yes else _ask_base()

    # -- image name: a new image needs the prefix it is pushed under --------------------------
    prefix = options.prefix
    if base and not prefix:
        remembered = str(config.load_user().get("prefix", ""))
        if options.yes and not remembered:
            raise OptionError("--prefix is required with --yes on a first setup, e.g. "
                              "--prefix registry.example.org/me/")
        if not options.yes:
            _say(_PREFIX_QUESTION)
            prefix = _ask(remembered)
    plan = setup_plan.plan_setup(cwd, share=share, base=base, prefix=prefix)

    # -- testbed rounds -----------------------------------------------------------------------
    client = connect()
    _say(f"Preparing the testbed from {plan.start_image}...")
    session = SetupSession(client, cwd, plan.start_image, project_id=plan.project_id,
                           share=plan.share, host_rw=options.host_rw)
    try:
        needs = ", ".join(dep.name for dep in dependencies(plan.share))
        while True:
            _say("This is a *local* shell where any dependencies you install will be saved.")
            _say("The goal is that if your application works here, it will work on the cloud "
                 "too.")
            _say("Make it work!")
            _say(f"Also make sure our dependencies are installed: {needs}")
            _say("Everything you write here is in the pushed image (shell histories are "
                 "removed); credentials you save in files (~/.netrc...) would be too.")
            if options.script:
                testbed = session.testbed(Path(options.script))
                _run_script(testbed, options.script)
            else:
                testbed = session.testbed(term=os.environ.get("TERM", "xterm"))
                _interact(testbed)
            _say("Checking the image for what workers need...")
            round_ = session.finish(testbed)
            if not round_.missing:
                break
            _say(f"You didn't install {', '.join(round_.missing)}!")
            if options.script:
                raise SetupError(f"the image lacks {', '.join(round_.missing)} after the setup "
                                 f"script {options.script}: install it there (e.g. apt-get "
                                 "install -y perl-base) and run again; nothing was saved.")
            if options.yes or not _yes_no("Try again?", "y"):
                raise _Quit("Nothing was pushed; the project config is unchanged.", 1)

        # -- environment ----------------------------------------------------------------------
        capture = round_.capture
        for problem in capture.problems:
            _say(f"Note: {problem}")
        if capture.environment:
            _say("These exported variables will be in the run-time environment:")
            _say(setup_plan.environment_lines(capture.environment))
        else:
            _say("No exported variables were captured.")
        environment = {**capture.environment, **_decide_secrets(round_, options)}
        left_out = sorted(set(capture.secrets) - set(environment))
        if left_out:
            _say(f"Left out (they look like secrets): {', '.join(left_out)}")
        if round_.credential_files:
            _say("Warning: these files hold credentials and would be in the pushed image: "
                 f"{', '.join(round_.credential_files)}. Answer n, then run `womm setup` "
                 "again and remove them before leaving the testbed.")

        if not options.yes and not _yes_no("Does it work?", "y"):
            raise _Quit("Nothing was pushed; the project config is unchanged.", 1)

        # -- commit, push, record -------------------------------------------------------------
        tag = time.strftime("%Y%m%d-%H%M%S")
        _say(f"The push refers to repository [{plan.repository}]")
        display = _PushDisplay()
        try:
            published = session.publish(plan.repository, tag, environment, display)
        finally:
            display.close()
        _say(f"{published.tagged}: digest: {published.digest}")
        path = setup_plan.record(plan, published, environment)
        _say(f"Saved in {path}: jobs now run {published.reference}")
        if share_methods.by_name(plan.share).privileged_fuse:
            _say("On Kubernetes a lazy share mounts this directory in each worker pod with "
                 "sshfs: run `womm parallel --privileged-fuse ...` to allow that (the worker "
                 "pods then run privileged; see README). Docker and local runs need nothing.")
        return 0
    finally:
        session.close()
