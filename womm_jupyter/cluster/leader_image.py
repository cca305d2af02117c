"""The --async leader image, built on this machine with no image registry on the internet.

Three layers, pushed with ``crane`` to the registry of ``--prefix``:

1. Debian bookworm minbase with python3, perl, ca-certificates and rsync (the leader uploads
   an eager share to its workers), made by ``mmdebstrap`` from Debian's mirror (cached:
   ``$WOMM_CACHE/leader/rootfs-bookworm-<packages digest>.tar``, about a minute the first
   time).
2. The leader's Python dependencies (kubernetes, PyYAML), installed by this machine's pip
   with ``--target`` for the image's Python (bookworm: CPython 3.11, manylinux wheels only),
   so pip never runs inside the image (cached too).
3. womm itself: the package this command runs from, GNU parallel included, copied as
   installed. The tag is a digest of this layer: rebuilding an unchanged womm pushes nothing
   new.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import __version__, _paths
from ..errors import ImageError, MissingToolError

__all__ = ["IMAGE_PYTHON", "build_leader_image", "cache_dir"]

IMAGE_PYTHON = "3.11"  # Debian bookworm's python3
_SITE = f"usr/local/lib/python{IMAGE_PYTHON}/dist-packages"  # on bookworm's sys.path
_DEPENDENCIES = ("kubernetes>=30", "pyyaml>=6")
_PACKAGES = ("python3", "perl", "ca-certificates", "rsync")
# The cached root filesystem and the image tag change with the package list.
_ROOTFS_KEY = hashlib.sha256(",".join(_PACKAGES).encode()).hexdigest()[:8]
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cache_dir() -> Path:
    """``$WOMM_CACHE/leader`` (default /var/cache/womm as root, else ~/.cache/womm)."""
    base = os.environ.get("WOMM_CACHE") or (
        "/var/cache/womm" if os.geteuid() == 0 else str(Path.home() / ".cache" / "womm"))
    path = Path(base) / "leader"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ImageError(f"building the leader image failed while {what} (exit status "
                         f"{proc.returncode}).", proc.stdout[-3000:])


def _tool(name: str, hint: str) -> str:
    found = os.environ.get(f"WOMM_{name.upper()}") or shutil.which(name)
    if not found:
        raise MissingToolError(f"{name} is needed to build the leader image: {hint}")
    return found


def _rootfs(progress: Callable[[str], None]) -> Path:
    tarball = cache_dir() / f"rootfs-bookworm-{_ROOTFS_KEY}.tar"
    if tarball.is_file() and tarball.stat().st_size:
        return tarball
    mmdebstrap = _tool("mmdebstrap", "apt-get install mmdebstrap")
    progress(f"womm: building the leader's Debian root filesystem with mmdebstrap into "
             f"{tarball} (about a minute, once)")
    partial = tarball.with_suffix(".part")
    _run([mmdebstrap, "--quiet", "--format=tar", "--variant=minbase",
          "--include=" + ",".join(_PACKAGES), "bookworm", str(partial)],
         "running mmdebstrap")
    partial.replace(tarball)
    return tarball


def _add_tree(tar: tarfile.TarFile, source: Path, arcname: str) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name.split("/") or info.name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0  # the same womm gives the same layer and tag
        return info

    tar.add(str(source), arcname=arcname, filter=clean)


def _dependencies(progress: Callable[[str], None]) -> Path:
    tarball = cache_dir() / f"deps-py{IMAGE_PYTHON}.tar"
    if tarball.is_file() and tarball.stat().st_size:
        return tarball
    progress("womm: installing the leader's Python dependencies (pip --target)")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "site"
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
              "--disable-pip-version-check", "--target", str(target),
              "--python-version", IMAGE_PYTHON, "--implementation", "cp",
              "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
              "--platform", "any", "--only-binary=:all:", *_DEPENDENCIES],
             "installing kubernetes and PyYAML with pip")
        partial = tarball.with_suffix(".part")
        with tarfile.open(partial, "w") as tar:
            _add_tree(tar, target, _SITE)
        partial.replace(tarball)
    return tarball


def _womm_layer(directory: Path) -> tuple[Path, str]:
    package = Path(__file__).resolve().parents[1]
    layer = directory / "womm.tar"
    with tarfile.open(layer, "w") as tar:
        _add_tree(tar, package, f"{_SITE}/womm_jupyter")
        # An editable install has GNU parallel beside the package, not inside it.
        if not (package / "_vendor" / "parallel").is_dir():
            _add_tree(tar, _paths.vendored_parallel().parent,
                      f"{_SITE}/womm_jupyter/_vendor/parallel")
        marker = f"womm {__version__}\n".encode()
        info = tarfile.TarInfo(f"{_SITE}/womm_jupyter/_vendor/LEADER")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    digest = hashlib.sha256(layer.read_bytes() + _ROOTFS_KEY.encode()).hexdigest()[:16]
    return layer, digest


def build_leader_image(prefix: str, *, progress: Callable[[str], None] = lambda text: None,
                       insecure: bool | None = None) -> str:
    """Build and push the leader image under ``prefix``; return its reference.

    ``insecure``: talk plain HTTP to the registry (default: for 127.0.0.1 and localhost).

    Raises
    ------
    MissingToolError
        without mmdebstrap (first build) or crane.
    ImageError
        when a step fails; the tool's output follows.
    """
    if not prefix:
        from ..errors import OptionError

        raise OptionError("--build needs --prefix, the registry the cluster pulls from, e.g. "
                          "--prefix 127.0.0.1:5000/")
    crane = _tool("crane", "install go-containerregistry's crane (e.g. `go install "
                           "github.com/google/go-containerregistry/cmd/crane@latest`) or set "
                           "WOMM_CRANE to its path")
    if insecure is None:
        insecure = prefix.startswith(("127.0.0.1", "localhost"))
    flags = ["--insecure"] if insecure else []
    rootfs = _rootfs(progress)
    deps = _dependencies(progress)
    with tempfile.TemporaryDirectory() as tmp:
        layer, digest = _womm_layer(Path(tmp))
        image = f"{prefix}womm-leader:{__version__}-{digest}"  # as the project image
        progress(f"womm: pushing leader image {image}")
        # Append under a temporary tag, then write the real one: never half-made under it.
        _run([crane, "append", *flags, "-f", str(rootfs), "-f", str(deps), "-f", str(layer),
              "-t", f"{image}-tmp"], "pushing the layers with crane append")
        _run([crane, "mutate", *flags, f"{image}-tmp", "--set-platform", "linux/amd64",
              "--env", f"PATH={_PATH}", "--env", "SHELL=/bin/bash",
              "--entrypoint", "python3,-m,womm_jupyter.run.leader", "-t", image],
             "setting the image's configuration with crane mutate")
    return image
