"""The installed package is the built wheel, and it carries GNU parallel and the transport."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import womm_jupyter
from womm_jupyter import _paths

REPO = Path(__file__).resolve().parents[1]


def test_tests_run_against_the_installed_wheel_not_the_source_tree() -> None:
    installed = Path(womm_jupyter.__file__).resolve().parent
    assert REPO not in installed.parents, (
        f"womm_jupyter was imported from {installed}; run the suite with tools/test.sh, which "
        "installs the wheel and imports it")


def test_wheel_ships_vendored_parallel_unmodified() -> None:
    parallel = _paths.vendored_parallel()
    assert parallel.parent.name == "parallel" and parallel.parent.parent.name == "_vendor"
    recorded = (parallel.parent / "VERSION").read_text()
    digest = hashlib.sha256(parallel.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in recorded
    assert (parallel.parent / "COPYING").read_text().startswith(
        "                    GNU GENERAL PUBLIC LICENSE")
    assert digest == hashlib.sha256((REPO / "vendor/parallel/parallel").read_bytes()).hexdigest()


def test_vendored_parallel_runs_without_a_system_parallel() -> None:
    out = subprocess.run([_paths.perl(), str(_paths.vendored_parallel()), "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("GNU parallel 20221122")


def test_wheel_ships_the_transport_scripts() -> None:
    for name in ("agent.pl", "womm_sh.pl"):
        script = _paths.transport_file(name)
        assert script.is_file()
        subprocess.run([_paths.perl(), "-c", str(script)], check=True, capture_output=True)
