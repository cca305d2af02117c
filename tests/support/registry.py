"""A real local image registry (Debian's ``docker-registry``) and the traces of `womm setup`
on the Docker engine, for the tests that push images or run setups."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from womm_jupyter.labels import LABEL_SETUP


class Registry:
    """A running ``docker-registry serve`` on 127.0.0.1:port."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry")
        if not binary:
            pytest.fail("docker-registry is not installed: apt-get install docker-registry",
                        pytrace=False)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.prefix = f"127.0.0.1:{self.port}/"
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.log = (root / "registry.log").open("wb")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"docker-registry did not start on {self.url}: see {root}/"
                            "registry.log", pytrace=False)
            time.sleep(0.1)

    def catalog(self) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/v2/_catalog", timeout=10) as response:
            return list(json.load(response)["repositories"])

    def digest(self, repository: str, reference: str) -> str:
        """The manifest digest of ``repository:reference`` as the registry serves it."""
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{reference}", method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def setup_images(client: Any) -> set[str]:
    return {image.id for image in client.images.list(all=True, filters={"label": LABEL_SETUP})}


def setup_containers(client: Any, directory: Path) -> list[str]:
    """Containers of `womm setup` (testbeds and helpers) that mount ``directory``."""
    found = []
    for container in client.containers.list(all=True, filters={"name": "womm-setup-"}):
        mounts = container.attrs.get("Mounts") or []
        if any(str(m.get("Source", "")).startswith(str(directory)) for m in mounts):
            found.append(container.name)
    return found
