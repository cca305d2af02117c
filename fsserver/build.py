"""Build womm's file-server image on this machine, with no image registry on the internet.

    python3 fsserver/build.py --prefix 127.0.0.1:5000/ (--base IMAGE | --rootfs TAR)

The image is a Debian bookworm base (an image in the registry, ``--base``, or a root
filesystem tarball such as ``mmdebstrap --variant=minbase bookworm``'s, ``--rootfs``) plus one
layer: the Debian packages ``rsync``, ``openssh-sftp-server``, ``sshfs`` and ``fuse3`` (and the
libraries they need that minbase lacks), fetched with ``apt-get download`` from this
machine's Debian mirror and unpacked with ``dpkg-deb -x``, and ``entrypoint.sh`` as
``/usr/local/bin/womm-fsserver``. ``crane`` appends the layers and sets the entrypoint; the
tag is a digest of the added layer, so rebuilding an unchanged server pushes nothing new.
The image reference is the only line on standard output.

``--packages`` replaces the package list (the same recipe builds a worker image with sshfs,
for example); ``--name`` the repository name. Stdlib only: this script imports nothing from
womm. This machine must be Debian bookworm (or pass ``--debs DIR`` holding the .deb files).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRYPOINT = HERE / "entrypoint.sh"
PACKAGES = ("rsync", "libpopt0", "openssh-sftp-server", "sshfs", "fuse3", "libfuse3-3",
            "libglib2.0-0", "libffi8")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME = "womm-fsserver"


class BuildError(Exception):
    pass


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=cwd)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit status {proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc.stdout


def cache_dir() -> Path:
    base = os.environ.get("WOMM_CACHE") or (
        "/var/cache/womm" if os.geteuid() == 0 else str(Path.home() / ".cache" / "womm"))
    path = Path(base) / "fsserver"
    path.mkdir(parents=True, exist_ok=True)
    return path


def download(packages: tuple[str, ...], debs: Path) -> list[Path]:
    """The .deb files of ``packages`` in ``debs`` (downloaded once)."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        if not shutil.which("apt-get"):
            raise BuildError("apt-get is needed to fetch the Debian packages "
                             f"({', '.join(missing)}); or pass --debs DIR with their .deb files")
        _run(["apt-get", "download", *missing], "apt-get download " + " ".join(missing),
             cwd=debs)
    found = [deb for p in packages for deb in sorted(debs.glob(f"{p}_*.deb"))[-1:]]
    if len(found) != len(packages):
        raise BuildError(f"missing .deb files in {debs} for some of {', '.join(packages)}")
    return found


def _clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0  # the same inputs give the same layer and tag
    return info


def layer(debs: list[Path], out: Path, with_entrypoint: bool = True) -> str:
    """Unpack ``debs`` into one layer tarball ``out``; return its digest (first 16 hex)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
        # bookworm's root is merged-/usr (/lib, /bin, /sbin are symlinks into /usr): a
        # top-level directory in a layer would hide them, so move such files into usr/.
        for top in ("bin", "sbin", "lib", "lib64"):
            src = root / top
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, root / "usr" / top, symlinks=True, dirs_exist_ok=True)
                shutil.rmtree(src)
        if with_entrypoint:
            target = root / "usr/local/bin"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(ENTRYPOINT, target / NAME)
            os.chmod(target / NAME, 0o755)
        with tarfile.open(out, "w") as tar:
            for top in sorted(p.name for p in root.iterdir()):
                if top in ("usr", "etc"):
                    tar.add(str(root / top), arcname=top, filter=_clean)
    return hashlib.sha256(out.read_bytes()).hexdigest()[:16]


def build(prefix: str, *, base: str = "", rootfs: str = "", crane: str = "",
          insecure: bool | None = None, packages: tuple[str, ...] = PACKAGES,
          name: str = NAME, debs: Path | None = None, entrypoint: bool = True) -> str:
    """Build and push; return the image reference."""
    if not prefix:
        raise BuildError("--prefix is needed: the registry the cluster pulls from, e.g. "
                         "127.0.0.1:5000/")
    if bool(base) == bool(rootfs):
        raise BuildError("give exactly one of --base IMAGE and --rootfs TAR")
    crane = crane or os.environ.get("WOMM_CRANE") or shutil.which("crane") or ""
    if not crane:
        raise BuildError("crane is needed (go-containerregistry); put it on PATH or set "
                         "WOMM_CRANE")
    if insecure is None:
        insecure = prefix.startswith(("127.0.0.1", "localhost"))
    flags = ["--insecure"] if insecure else []
    deb_files = download(packages, debs or cache_dir() / "debs")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "layer.tar"
        digest = layer(deb_files, out, entrypoint)
        base_key = hashlib.sha256((base or Path(rootfs).name).encode()).hexdigest()[:6]
        image = f"{prefix}{name}:{base_key}-{digest}"
        # Append under a temporary tag, then write the real one: never half-made under it.
        source = ["-b", base] if base else ["-f", rootfs]
        _run([crane, "append", *flags, *source, "-f", str(out), "-t", f"{image}-tmp"],
             "crane append")
        mutate = [crane, "mutate", *flags, f"{image}-tmp", "--set-platform", "linux/amd64",
                  "--env", f"PATH={PATH}", "-t", image]
        if entrypoint:
            mutate[4:4] = ["--entrypoint", f"/usr/local/bin/{NAME},serve"]
        _run(mutate, "crane mutate")
    return image


def tag(image: str, other: str, *, crane: str = "", insecure: bool | None = None) -> None:
    """Give ``image`` a second reference ``other`` (same registry), e.g. ``...:latest``."""
    crane = crane or os.environ.get("WOMM_CRANE") or shutil.which("crane") or "crane"
    if insecure is None:
        insecure = image.startswith(("127.0.0.1", "localhost"))
    _run([crane, "copy", *(["--insecure"] if insecure else []), image, other],
         f"crane copy {image} {other}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--base", default="")
    parser.add_argument("--rootfs", default="")
    parser.add_argument("--crane", default="")
    parser.add_argument("--insecure", action="store_true", default=None)
    parser.add_argument("--packages", default=",".join(PACKAGES))
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--debs", default="")
    parser.add_argument("--no-entrypoint", action="store_true")
    parser.add_argument("--tag", default="", help="also push the image as this reference")
    args = parser.parse_args(argv)
    try:
        image = build(args.prefix, base=args.base, rootfs=args.rootfs, crane=args.crane,
                    insecure=args.insecure, packages=tuple(args.packages.split(",")),
                    name=args.name, debs=Path(args.debs) if args.debs else None,
                    entrypoint=not args.no_entrypoint)
        if args.tag:
            tag(image, args.tag, crane=args.crane, insecure=args.insecure)
        print(image)
    except BuildError as exc:
        print(f"fsserver/build.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
