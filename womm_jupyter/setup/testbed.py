"""The machinery of ``womm setup`` (docker SDK): testbed, environment capture, dependency
check, commit and push. It never prints: faces render what it returns and reports.

One :class:`SetupSession` builds one project image:

1. :meth:`SetupSession.testbed` creates a testbed container of the start image (the base, or
   the project's previous womm image): the working directory at the same path, this machine's
   root at ``/mnt`` (read-only unless asked; its sockets, /proc, /sys and /dev hidden), cwd
   set, running as root, host networking (so package managers reach their mirrors). Its
   shell's ``EXIT`` trap writes ``env -0`` to a private directory of the user's mounted at
   ``/run/womm-setup`` (the capture survives any quoting) and removes shell histories, which
   would otherwise be committed (see :mod:`.testbed_files`).
2. :meth:`SetupSession.finish` (after the shell exits): files the testbed created in the
   working directory are given back to the user; the exported variables are captured (minus
   the shell's incidental ones, secret-looking ones set apart); the container is committed to
   a candidate image that a throw-away container checks for what workers need. A failed check
   lets the face offer the shell again: the next testbed starts from the candidate.
3. :meth:`SetupSession.publish` commits the final image with the chosen environment baked in
   (so it reaches workers on every backend), pushes it, and returns the pushed digest.
4. :meth:`SetupSession.close` removes every container and candidate image of the session
   (always call it: it is what makes Ctrl-C leave nothing behind).

Testbed containers carry no labels and no environment of womm's own: ``docker commit``
merges a container's labels and variables into the image. They are found by name,
``womm-setup-<project id>-<session>-<n>``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import share as share_methods
from ..errors import SetupError
from ..labels import LABEL_SETUP
from ..naming import new_task_id
from ..shell.docker import ContainerTerminal
from .capture import INCIDENTAL, Capture, looks_secret, parse_env0, sort_out
from .testbed_files import SETUP_DIR, host_shadows, write_setup_dir

__all__ = [
    "AGENT_NEEDS",
    "INCIDENTAL",
    "Capture",
    "Dependency",
    "Published",
    "PushProgress",
    "Round",
    "SetupSession",
    "Testbed",
    "dependencies",
    "ensure_image",
    "looks_secret",
    "parse_env0",
]


@dataclasses.dataclass(frozen=True)
class Dependency:
    """Something workers need in the image, and a /bin/sh test that succeeds when it is there."""

    name: str
    test: str


# What the worker agent needs: perl with the core modules it uses (perl-base has them); it
# runs jobs with /bin/sh, without which the check itself cannot start.
AGENT_NEEDS = (Dependency("perl", "perl -e 'use Socket; use POSIX (); exit 0'"),)


def dependencies(share: str) -> tuple[Dependency, ...]:
    """What the worker image needs for the agent and for ``share`` (the share table's
    commands, DESIGN §5: rsync over an exec stream for eager shares, sshfs for the lazy one)."""
    needs = share_methods.by_name(share).image_needs if share in share_methods.NAMES else ()
    return AGENT_NEEDS + tuple(Dependency(name, f"command -v {name}") for name in needs)


@dataclasses.dataclass(frozen=True)
class Round:
    """The outcome of one testbed session."""

    exit_code: int
    capture: Capture
    missing: tuple[str, ...]  # names of missing dependencies (empty: the check passed)
    check_output: str = ""
    # Files the testbed wrote that usually hold credentials (~/.netrc...): they would be in
    # the pushed image. Faces show them before "Does it work?".
    credential_files: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PushProgress:
    """One status line of a push: a layer (or "" for the whole image) and where it stands."""

    layer: str
    status: str
    current: int | None = None
    total: int | None = None


@dataclasses.dataclass(frozen=True)
class Published:
    """A pushed image: ``reference`` (``repository@sha256:...``) is what jobs run."""

    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def tagged(self) -> str:
        return f"{self.repository}:{self.tag}"


# Where logins leave credentials in a home directory.
_CREDENTIAL_FILE = re.compile(
    r"/(\.netrc|\.git-credentials|\.pypirc|\.npmrc|\.pgpass|\.my\.cnf|\.docker/config\.json"
    r"|\.aws/credentials|\.kube/config|\.config/gh/hosts\.yml|\.ssh/id_[a-z0-9]+"
    r"|\.config/gcloud/(credentials\.db|application_default_credentials\.json))$")


def credential_files(container: Any) -> tuple[str, ...]:
    """Paths the container added or changed that usually hold credentials, sorted."""
    try:
        changed = container.diff() or []
    except Exception:  # the container is gone: nothing of it will be committed either
        return ()
    return tuple(sorted(c["Path"] for c in changed
                        if c.get("Kind") in (0, 1) and _CREDENTIAL_FILE.search(c["Path"])))


def _env_dict(entries: list[str] | None) -> dict[str, str]:
    result = {}
    for entry in entries or ():
        name, _, value = entry.partition("=")
        result[name] = value
    return result


def ensure_image(client: Any, reference: str) -> Any:
    """The image ``reference`` on this engine, pulled when it is absent."""
    import docker.errors

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        pass
    try:
        return client.images.pull(reference)
    except docker.errors.APIError as exc:
        raise SetupError(f"image {reference} is not on this Docker engine and could not be "
                         f"pulled ({exc.explanation or exc}): check its name, `docker login` "
                         "to its registry, or build it locally.") from exc


class Testbed(ContainerTerminal):
    """One testbed container: attach to it (interactive) or read its output (script)."""

    def __init__(self, session: SetupSession, container: Any, setup_dir: Path,
                 interactive: bool) -> None:
        self.session = session
        self.container = container
        self.setup_dir = setup_dir
        self.interactive = interactive

    @property
    def name(self) -> str:
        return str(self.container.name)

    def attach_socket(self) -> Any:
        """A raw socket to the container's terminal (interactive testbeds; before ``start``).

        Bytes written go to the shell's terminal, bytes read come from it. Docker's detach
        keys (ctrl-p ctrl-q) end the attachment, not the shell.
        """
        sock = self.session.client.api.attach_socket(
            self.container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        return getattr(sock, "_sock", sock)  # SocketIO over the engine's unix socket

    def start(self) -> None:
        try:
            self.container.start()
        except Exception as exc:
            raise SetupError(f"the testbed {self.name} did not start: {exc}; check that the "
                             "image has /bin/sh.") from exc

    def output(self) -> Iterator[bytes]:
        """The script's output as it comes (script testbeds; after ``start``)."""
        # logs(follow) and not attach: attaching to a container that already exited hangs.
        yield from self.container.logs(stdout=True, stderr=True, stream=True, follow=True)

    def wait(self) -> int:
        """The shell's (or script's) exit status, once it has exited."""
        return int(self.container.wait().get("StatusCode", -1))


class SetupSession:
    """Builds one project image; see the module's docstring for the steps.

    Parameters
    ----------
    client:
        a docker client (``womm_jupyter.backends.docker.connect()``).
    cwd:
        the working directory, mounted at the same path in the testbed.
    start_image:
        the base image, or the project's previous womm image when setup is repeated.
    project_id:
        names the testbed containers and labels the images.
    share:
        the share method (decides the dependencies checked).
    host_rw:
        mount this machine's root at ``/mnt`` read-write.
    owner:
        (uid, gid) that files created in the working directory are given to.
    """

    def __init__(self, client: Any, cwd: Path, start_image: str, *, project_id: str,
                 share: str = "none", host_rw: bool = False,
                 owner: tuple[int, int] | None = None) -> None:
        self.client = client
        self.cwd = cwd.resolve()
        self.project_id = project_id
        self.share = share
        self.host_rw = host_rw
        self.owner = owner or (os.getuid(), os.getgid())
        self.start_image = start_image
        image = ensure_image(client, start_image)
        self._start_config: dict[str, Any] = image.attrs.get("Config") or {}
        self.start_environment = _env_dict(self._start_config.get("Env"))
        self._current_image = image.id  # the next testbed's image
        self._rounds = 0
        self._helpers = 0
        self._token = new_task_id()  # a killed session's leftovers never block the next one
        self._containers: list[Any] = []
        self._candidates: list[str] = []  # image ids, oldest first
        self._last: Any = None  # the container whose filesystem publish() commits
        self._tmp = Path(tempfile.mkdtemp(prefix="womm-setup-"))
        self._before: set[str] = set()  # root-owned paths in cwd before the testbed ran
        self._closed = False

    # -- steps --------------------------------------------------------------------------------
    def testbed(self, script: Path | None = None, term: str = "xterm") -> Testbed:
        """Create (not start) the next testbed: an interactive shell, or ``script`` sourced."""
        import docker.errors

        self._rounds += 1
        setup_dir = self._tmp / f"round-{self._rounds}"
        write_setup_dir(setup_dir, script, term, self.cwd)
        self._before = self._root_owned() if self.owner != (0, 0) else set()
        volumes = {str(self.cwd): {"bind": str(self.cwd), "mode": "rw"},
                   "/": {"bind": "/mnt", "mode": "rw" if self.host_rw else "ro"},
                   str(setup_dir): {"bind": SETUP_DIR, "mode": "rw"}}
        # The host's sockets stay out of reach: a read-only mount does not stop connect(),
        # and /mnt/run/docker.sock would hand root on the host to any install script.
        tmpfs = {f"/mnt{path}": "ro" for path in host_shadows()}
        user = "0:0" if self._start_config.get("User") else None  # root, so packages install
        name = f"womm-setup-{self.project_id}-{self._token}-{self._rounds}"
        interactive = script is None
        try:
            container = self.client.containers.create(
                self._current_image, name=name, entrypoint=["/bin/sh", f"{SETUP_DIR}/launcher",
                                                             "shell" if interactive else "script"],
                command=[], working_dir=str(self.cwd), user=user, volumes=volumes,
                tmpfs=tmpfs, tty=interactive, stdin_open=interactive, network_mode="host")
        except docker.errors.APIError as exc:
            raise SetupError(f"Docker could not create the testbed from {self.start_image}: "
                             f"{exc.explanation or exc}") from exc
        self._containers.append(container)
        return Testbed(self, container, setup_dir, interactive)

    def finish(self, testbed: Testbed) -> Round:
        """After the testbed exited: give files back, capture, commit a candidate, check it."""
        code = testbed.wait()
        capture = self._capture(testbed.setup_dir / "env")
        self._give_back_files()
        env = {**self.start_environment, **capture.environment}
        candidate = self._commit(testbed.container, env)
        self._candidates.append(candidate)
        # Earlier testbeds are in this candidate's history now.
        for old in self._containers[:-1]:
            self._remove_container(old)
        self._containers = self._containers[-1:]
        self._last = testbed.container
        self._current_image = candidate
        missing, output = self._check(candidate)
        return Round(code, capture, missing, output, credential_files(testbed.container))

    def publish(self, repository: str, tag: str, environment: dict[str, str],
                on_progress: Callable[[PushProgress], None] = lambda p: None) -> Published:
        """Commit the last testbed with ``environment`` baked in, push it, return its digest.

        On a failed push the image stays on this engine as ``repository:tag``.
        """
        import docker.errors

        if self._last is None:
            raise SetupError("nothing to publish: no testbed has finished.")
        image_id = self._commit(self._last, {**self.start_environment, **environment})
        image = self.client.images.get(image_id)
        image.tag(repository, tag)
        digest = ""
        error = ""
        try:
            for line in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in line:
                    error = str(line.get("errorDetail", {}).get("message") or line["error"])
                    break
                aux = line.get("aux") or {}
                if aux.get("Digest"):
                    digest = str(aux["Digest"])
                detail = line.get("progressDetail") or {}
                if line.get("status"):
                    on_progress(PushProgress(str(line.get("id", "")), str(line.get("status", "")),
                                             detail.get("current"), detail.get("total")))
        except docker.errors.APIError as exc:
            error = str(exc.explanation or exc)
        if error or not digest:
            raise SetupError(
                f"pushing {repository}:{tag} failed: {error or 'the registry sent no digest'}. "
                "Check that you may push under this prefix (`docker login` to its registry); "
                f"the image is kept here as {repository}:{tag}.")
        return Published(repository, tag, digest)

    def close(self) -> None:
        """Remove the session's containers and candidate images; keep what was published."""
        if self._closed:
            return
        self._closed = True
        for container in reversed(self._containers):
            self._remove_container(container)
        self._containers = []
        for image_id in reversed(self._candidates):
            self._remove_image(image_id)
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- internals ----------------------------------------------------------------------------
    def _capture(self, path: Path) -> Capture:
        data = path.read_bytes() if path.is_file() else b""
        if not data:  # `env` always prints PATH: nothing means the trap never wrote
            return Capture({}, {}, ("the exported variables could not be captured (the shell "
                                    "was killed, or its `env` lacks -0): none are saved",))
        return sort_out(data, self.start_environment)

    def _commit(self, container: Any, environment: dict[str, str]) -> str:
        import docker.errors

        start = self._start_config
        conf = {
            "Env": [f"{k}={v}" for k, v in environment.items()],
            # Undo the testbed's own settings: workers choose their command, user and cwd.
            "Entrypoint": start.get("Entrypoint") or [],
            "Cmd": start.get("Cmd") or ["/bin/sh"],
            "User": start.get("User") or "",
            "WorkingDir": start.get("WorkingDir") or "/",
            "Labels": {**(start.get("Labels") or {}), LABEL_SETUP: self.project_id},
        }
        try:
            result = self.client.api.commit(container.id, conf=conf,
                                            message="womm setup testbed")
        except docker.errors.APIError as exc:
            raise SetupError(f"Docker could not commit the testbed {container.name}: "
                             f"{exc.explanation or exc}") from exc
        return str(result["Id"])

    def _helper(self, image: str, command: list[str], *, user: str, what: str,
                mount_cwd: bool = False) -> tuple[int, str]:
        """Run a throw-away container of ``image`` and return (exit status, output)."""
        import docker.errors

        volumes = {str(self.cwd): {"bind": str(self.cwd), "mode": "rw"}} if mount_cwd else {}
        self._helpers += 1
        name = f"womm-setup-{self.project_id}-{self._token}-{what}-{self._helpers}"
        try:
            container = self.client.containers.create(
                image, entrypoint=["/bin/sh", "-c", command[0], *command[1:]], command=[],
                user=user, name=name, network_mode="none", volumes=volumes,
                environment={"HOME": "/tmp"}, labels={LABEL_SETUP: self.project_id})
        except docker.errors.APIError as exc:
            raise SetupError(f"Docker could not create the {what} container: "
                             f"{exc.explanation or exc}") from exc
        try:
            try:
                container.start()
            except docker.errors.APIError as exc:
                # No /bin/sh: the runtime cannot even start the check.
                return 127, str(exc.explanation or exc)
            code = int(container.wait().get("StatusCode", -1))
            return code, container.logs().decode("utf-8", "replace")
        finally:
            self._remove_container(container)

    def _check(self, image: str) -> tuple[tuple[str, ...], str]:
        needs = dependencies(self.share)
        script = "".join(f"({dep.test}) >/dev/null 2>&1 || echo 'womm-missing: {dep.name}'\n"
                         for dep in needs) + "echo womm-check-done\n"
        # As the workers run: the user's uid, HOME=/tmp, no network.
        uid, gid = os.getuid(), os.getgid()
        _, output = self._helper(image, [script], user=f"{uid}:{gid}", what="check")
        if "womm-check-done" not in output:
            return ("a POSIX shell (/bin/sh)", *(dep.name for dep in needs)), output
        missing = tuple(line.split(": ", 1)[1] for line in output.splitlines()
                        if line.startswith("womm-missing: "))
        return missing, output

    def _root_owned(self) -> set[str]:
        found = set()
        for top, dirs, files in os.walk(self.cwd):
            for name in (*dirs, *files):
                path = os.path.join(top, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if st.st_uid == 0 or st.st_gid == 0:
                    found.add(path)
        return found

    def _give_back_files(self) -> None:
        """chown what the testbed (root) created in the working directory to the user."""
        if self.owner == (0, 0):
            return
        uid, gid = self.owner
        for _ in range(3):  # a directory the user could not enter is walked once it is theirs
            new = sorted(self._root_owned() - self._before)
            if not new:
                return
            for start in range(0, len(new), 500):
                batch = new[start:start + 500]
                code, output = self._helper(
                    self._current_image, ['chown -h "$0" "$@"', f"{uid}:{gid}", *batch],
                    user="0:0", what="chown", mount_cwd=True)
                if code != 0:
                    raise SetupError(f"could not give the files the testbed created in "
                                     f"{self.cwd} back to uid {uid}: chown failed in the "
                                     "image.", output)

    def _remove_container(self, container: Any) -> None:
        import docker.errors

        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            time.sleep(0.5)  # "removal already in progress": let it finish
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

    def _remove_image(self, image_id: str) -> None:
        import docker.errors

        try:
            self.client.images.remove(image_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            # A candidate the published image grew from: it is part of that image's layers.
            pass
