"""Eager shares: ``eager`` and ``eager-syncback`` (the methods are listed in ``share/__init__``).

On Kubernetes an eager share is rsynced into each worker pod's own working directory (the
project path) over an exec stream, before that pod takes jobs: rsync runs locally with
``-e 'python -m womm_jupyter.share.kexec'`` and ``rsync --server`` runs in the pod. Nothing
listens anywhere, no keys exist, and a pod only ever holds its own task's tree. The worker
image needs ``rsync`` (``womm setup`` checks for it). ``.gitignore`` and ``.wommignore``
files are honoured (rsync per-directory exclude rules), and ``.git/`` and ``.womm/`` never go.

Syncback (``eager-syncback``): when all jobs have ended, each live pod's tree is pulled into
a staging directory (files equal to the local ones by rsync's quick check are skipped), and
each pulled file is applied by content hash against the hash recorded at upload:

- the pod's file equals the uploaded one: the pod did not change it; nothing to do;
- the local file still equals the uploaded one (or never existed): take the pod's version;
- the local file changed since the upload too: a conflict; the local file stays and the
  pod's version is kept beside it as ``NAME.womm-remote``.

Files a job deleted are never deleted locally. On Docker and local backends the project
directory itself is the workers' directory (bind mount / same filesystem): nothing to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .._paths import local_tool
from ..errors import ShareError

__all__ = ["PullResult", "SyncResult", "hash_tree", "pull", "push", "rsync_filters",
           "size_text"]

CONFLICT_SUFFIX = ".womm-remote"

Report = Callable[[str], None]


def rsync_filters() -> list[str]:
    """rsync options that leave out what git and womm ignore."""
    return ["--filter=:- .gitignore", "--filter=:- .wommignore", "--exclude=/.git/",
            "--exclude=/.womm/"]


def _rsync() -> str:
    return local_tool("rsync", "eager shares need rsync on this machine: install it (Debian: "
                               "apt-get install rsync) or run with --share none.")


def _rsh(namespace: str, context: str) -> tuple[str, dict[str, str]]:
    env = dict(os.environ, WOMM_KEXEC_NAMESPACE=namespace, WOMM_KEXEC_CONTEXT=context)
    # rsync splits -e on spaces (quotes honoured): quote the interpreter's path.
    return f"'{sys.executable}' -m womm_jupyter.share.kexec", env


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What one rsync run moved (from ``--stats``)."""

    files: int  # regular files in the tree
    total_bytes: int  # their size
    transferred_files: int
    transferred_bytes: int  # file data actually sent
    seconds: float
    stats: str  # rsync's --stats text


_PROGRESS = re.compile(rb"^\s*([\d,]+)\s+(\d+)%")


def _stat(stats: str, label: str) -> int:
    match = re.search(rf"^{re.escape(label)}:\s*([\d,]+)", stats, re.M)
    return int(match.group(1).replace(",", "")) if match else 0


def _run_rsync(argv: list[str], env: dict[str, str], what: str,
               report: Report | None) -> SyncResult:
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out = b""
    last = 0.0
    while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
        out += chunk
        # --info=progress2 rewrites one line with \r: show it at most every 2 s.
        now = time.monotonic()
        if report and now - last > 2.0:
            lines = re.split(rb"[\r\n]", out[-400:])
            for line in reversed(lines):
                match = _PROGRESS.match(line)
                if match:
                    done = int(match.group(1).replace(b",", b""))
                    report(f"{what}: {match.group(2).decode()}% ({size_text(done)})")
                    last = now
                    break
    err = proc.stderr.read().decode(errors="replace")
    code = proc.wait()
    text = out.decode(errors="replace")
    if code != 0:
        hint = ""
        if "rsync: not found" in err or "executable file not found" in err or code == 127:
            hint = " The worker image has no rsync: add it in `womm setup`, or use --share none."
        raise ShareError(f"{what} failed (rsync exit status {code}).{hint}", err.strip()[-2000:])
    stats = text[text.find("Number of files:"):] if "Number of files:" in text else text
    return SyncResult(files=_files(stats), total_bytes=_stat(stats, "Total file size"),
                      transferred_files=_stat(stats, "Number of regular files transferred"),
                      transferred_bytes=_stat(stats, "Total transferred file size"),
                      seconds=time.monotonic() - start, stats=stats)


def _files(stats: str) -> int:
    match = re.search(r"^Number of files:.*?reg: ([\d,]+)", stats, re.M)
    return int(match.group(1).replace(",", "")) if match else 0


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


def push(cwd: Path, pod: str, *, namespace: str, context: str = "",
         report: Report | None = None) -> SyncResult:
    """rsync ``cwd`` into pod ``pod``'s directory of the same path; unchanged files (same size
    and modification time) send no data."""
    rsh, env = _rsh(namespace, context)
    argv = [_rsync(), "-rlptD", "--blocking-io", "--stats", "--info=progress2",
            "--no-inc-recursive", *rsync_filters(), "-e", rsh, f"{cwd}/", f"{pod}:{cwd}/"]
    return _run_rsync(argv, env, f"share: upload to pod {pod}", report)


def _walk(root: Path) -> Iterator[Path]:
    for directory, _dirs, names in os.walk(root):
        for name in names:
            yield Path(directory, name)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def hash_tree(cwd: Path) -> dict[str, str]:
    """Content hashes of the regular files an upload of ``cwd`` sends, by relative path."""
    listing = subprocess.run([_rsync(), "-r", "--list-only", *rsync_filters(), f"{cwd}/"],
                             capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise ShareError(f"could not list {cwd} for the upload", listing.stderr.strip())
    hashes = {}
    for line in listing.stdout.splitlines():
        # "-rw-r--r--          6 2025/01/01 12:00:00 path with spaces"
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[0].startswith("-") and parts[4] != ".":
            try:
                hashes[parts[4]] = _digest(cwd / parts[4])
            except OSError:
                continue  # deleted since the listing: nothing was uploaded for it
    return hashes


@dataclasses.dataclass
class PullResult:
    """What a syncback brought home from one pod."""

    updated: list[str] = dataclasses.field(default_factory=list)  # new or changed locally
    conflicts: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, kept)
    seconds: float = 0.0


def _free_name(path: Path) -> Path:
    candidate = path.with_name(path.name + CONFLICT_SUFFIX)
    n = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.name}{CONFLICT_SUFFIX}-{n}")
        n += 1
    return candidate


def pull(cwd: Path, pod: str, uploaded: dict[str, str], *, namespace: str, context: str = "",
         staging: Path, report: Report | None = None) -> PullResult:
    """Bring back what jobs on ``pod`` created or changed; never delete or silently overwrite
    a local file (see the module docstring)."""
    start = time.monotonic()
    rsh, env = _rsh(namespace, context)
    staging.mkdir(parents=True, exist_ok=True)
    argv = [_rsync(), "-rlptD", "--blocking-io", "--stats", *rsync_filters(),
            f"--compare-dest={cwd}/", "-e", rsh, f"{pod}:{cwd}/", f"{staging}/"]
    _run_rsync(argv, env, f"share: syncback from pod {pod}", report)
    result = PullResult()
    try:
        for fetched in sorted(_walk(staging)):
            rel = fetched.relative_to(staging).as_posix()
            local = cwd / rel
            if fetched.is_symlink() or not fetched.is_file():
                if not (local.exists() or local.is_symlink()):
                    local.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(fetched, local)
                    result.updated.append(rel)
                continue
            remote_hash = _digest(fetched)
            if uploaded.get(rel) == remote_hash:
                continue  # the pod did not change it (the local copy may have: it stays)
            local_hash = _digest(local) if local.is_file() else None
            if local_hash == remote_hash:
                continue
            unchanged_here = (local_hash is None and rel not in uploaded and
                              not local.is_symlink() and not local.exists()) or \
                (local_hash is not None and uploaded.get(rel) == local_hash)
            if unchanged_here:
                local.parent.mkdir(parents=True, exist_ok=True)
                os.replace(fetched, local)
                result.updated.append(rel)
            else:
                kept = _free_name(local)
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.replace(fetched, kept)
                result.conflicts.append((rel, kept.relative_to(cwd).as_posix()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - start
    return result
