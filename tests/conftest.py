"""Shared fixtures: the real `womm` console script, local GNU parallel, the real Docker engine.

Nothing here mocks Docker. Tests that need the engine request ``docker_client`` (or the
``docker`` flavour of ``backend``); when the engine or the image is missing those tests FAIL
with a message saying what to start or build, they are never skipped.

Every womm run happens in a ``tmp_path`` project directory, so the containers a test creates
are found by their ``womm/cwd`` label and never confused with other people's runs on the
same engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.registry import Registry

from womm_jupyter import _paths
from womm_jupyter.labels import MANAGED_BY

IMAGE = os.environ.get("WOMM_TEST_IMAGE", "womm-base:bookworm")


def _womm_script() -> str:
    # The console script of the interpreter running the tests (a pyenv shim would add a
    # bash process between us and womm, which matters when signalling it).
    beside = Path(sys.executable).parent / "womm"
    found = str(beside) if beside.is_file() else shutil.which("womm")
    if not found:
        pytest.fail("the `womm` console script is not installed: pip install -e . (or the "
                    "wheel) into this Python first", pytrace=False)
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without WOMM_* settings, with a fixed SHELL (job quoting depends on it:
    womm runs jobs with the user's SHELL, and so does GNU parallel)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    env["SHELL"] = "/bin/bash"
    env.update(extra)
    return env


@dataclass
class Ran:
    """A finished command: exit status and raw output."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def explain(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


def run(argv: Sequence[str], cwd: Path, *, input: bytes = b"", env: dict[str, str] | None = None,
        timeout: float = 180) -> Ran:
    proc = subprocess.run(list(argv), cwd=cwd, input=input, capture_output=True,
                          env=env or clean_env(), timeout=timeout)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Womm:
    """Runs the real `womm` CLI; ``backend_args`` select the backend under test."""

    name: str  # docker | local | none
    backend_args: tuple[str, ...] = ()
    script: str = field(default_factory=_womm_script)

    def argv(self, *args: str) -> list[str]:
        return [self.script, *args]

    def __call__(self, *args: str, cwd: Path, input: bytes = b"",
                 env: dict[str, str] | None = None, timeout: float = 180) -> Ran:
        return run(self.argv(*args), cwd, input=input, env=env, timeout=timeout)

    def parallel(self, parallel_args: Sequence[str], *, cwd: Path, kube_pods: int = 3,
                 input: bytes = b"", env: dict[str, str] | None = None,
                 timeout: float = 180) -> Ran:
        """``womm parallel --kube-pods N <backend> -- <parallel_args>``."""
        return self("parallel", "--kube-pods", str(kube_pods), *self.backend_args, "--",
                    *parallel_args, cwd=cwd, input=input, env=env, timeout=timeout)

    def popen(self, args: Sequence[str], *, cwd: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), cwd=cwd, env=clean_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


def gnu_parallel(parallel_args: Sequence[str], *, cwd: Path, jobs: int = 3, input: bytes = b"",
                 timeout: float = 180) -> Ran:
    """The vendored GNU parallel run locally, as a user without womm would."""
    argv = [_paths.perl(), str(_paths.vendored_parallel()), "-j", str(jobs), *parallel_args]
    return run(argv, cwd, input=input, timeout=timeout)


@pytest.fixture
def gnu() -> Callable[..., Ran]:
    return gnu_parallel


@pytest.fixture
def womm() -> Womm:
    """`womm` without a chosen backend (help, errors, status, finish)."""
    return Womm("none")


# -- Docker ---------------------------------------------------------------------------------

@dataclass
class Container:
    """A womm container as one listing saw it (a listing never inspects, so a container
    removed meanwhile cannot make it fail)."""

    client: Any
    id: str
    name: str
    labels: dict[str, str]
    status: str

    def kill(self) -> None:
        self.client.api.kill(self.id)

    def remove(self) -> None:
        import docker.errors

        try:
            self.client.api.remove_container(self.id, force=True)
        except docker.errors.NotFound:
            pass

    def inspect(self) -> dict[str, Any]:
        info: dict[str, Any] = self.client.api.inspect_container(self.id)
        return info


def containers_under(client: Any, directory: Path) -> list[Container]:
    """womm containers whose project directory is ``directory`` or below it."""
    prefix = str(directory)
    found = []
    for raw in client.api.containers(all=True, filters={"label": f"{MANAGED_BY}=womm"}):
        labels = raw.get("Labels") or {}
        cwd = labels.get("womm/cwd", "")
        if cwd == prefix or cwd.startswith(prefix + os.sep):
            found.append(Container(client, raw["Id"], raw["Names"][0].lstrip("/"), labels,
                                   raw.get("State", "")))
    return found


@pytest.fixture(scope="session")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A client of the real engine; fails (never skips) when there is none or no image.

    At the end of the session no womm container of any test may remain."""
    import docker
    import docker.errors

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers at {host} ({exc}): the docker tests need one; "
                    "start it with `dockerd --iptables=false --ip6tables=false --bridge=none` "
                    "or run tools/test.sh", pytrace=False)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} is not on the Docker engine: build it with "
                    "tools/base-image.sh", pytrace=False)
    yield client
    base = tmp_path_factory.getbasetemp()
    left = containers_under(client, base)
    names = [c.name for c in left]
    for container in left:
        container.remove()
    assert not names, f"womm containers left behind by the tests: {names}"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def docker_womm(docker_client: Any, tmp_path: Path) -> Iterator[Womm]:
    """`womm` on Docker workers; afterwards none of this test's containers may remain."""
    yield Womm("docker", ("--backend", "docker", "--image", IMAGE))
    left = [c.name for c in containers_under(docker_client, tmp_path)]
    for container in containers_under(docker_client, tmp_path):
        container.remove()
    assert not left, f"containers of this test were not deleted: {left}"


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "local"])
def backend(request: pytest.FixtureRequest) -> Womm:
    """`womm` on each backend of this issue: Docker workers and local agent processes."""
    if request.param == "local":
        return Womm("local", ("--backend", "local"))
    womm: Womm = request.getfixturevalue("docker_womm")
    return womm


class LineReader:
    """Collects a pipe's lines on a thread, so a test can act once some output appeared."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def join(self, timeout: float = 30) -> list[bytes]:
        self._thread.join(timeout)
        return self.lines


@pytest.fixture
def host_mnt_ns() -> str:
    """This machine's mount namespace: a job that prints another one ran in a container."""
    return os.readlink("/proc/self/ns/mnt")


@pytest.fixture
def tools() -> SimpleNamespace:
    """Helpers for test modules (conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(run=run, clean_env=clean_env, wait_for=wait_for,
                           containers_under=containers_under, LineReader=LineReader,
                           image=IMAGE, womm_script=_womm_script())


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real local image registry (Debian's docker-registry) on a free loopback port; one
    per test module, so a module's first push uploads every layer."""
    served = Registry(tmp_path_factory.mktemp("registry"))
    yield served
    served.stop()


@pytest.fixture(scope="session")
def ipython() -> Any:
    """A real IPython shell with womm's magics loaded (one per session: IPython's global
    app cannot be started twice)."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "womm_jupyter")
    return shell


@pytest.fixture
def ip(ipython: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """That shell in ``tmp_path``, without WOMM_* settings; its namespace restored after."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("WOMM_")]:
        monkeypatch.delenv(name)
    saved = dict(ipython.user_ns)
    yield ipython
    ipython.user_ns.clear()
    ipython.user_ns.update(saved)
