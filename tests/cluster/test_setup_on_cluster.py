"""`womm setup` pushes to the cluster's own local registry; `womm parallel --backend
kubernetes` then runs that image by digest with no --image, and the jobs see what setup put
there (a tool and an exported variable, byte for byte)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.docker]

GREETING = 'hello "world"\nsecond line \u00fc \u20ac'
GREETING_BASH = r"""$'hello "world"\nsecond line \303\274 \342\202\254'"""
TOOL = ("printf '#!/bin/sh\\necho hello from the tool\\n' > /usr/local/bin/hello-womm && "
        "chmod +x /usr/local/bin/hello-womm")


def test_setup_image_runs_on_the_cluster(cluster, namespace, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    script = tmp_path / "setup.sh"
    script.write_text(f"{TOOL}\nexport GREETING={GREETING_BASH}\n")
    setup = subprocess.run(["womm", "setup", "--script", str(script), "--yes", "--share", "4",
                            "--base", "womm-base:bookworm", "--prefix",
                            f"{cluster.registry}/womm-test/"],
                           cwd=project, env=env, text=True, capture_output=True, timeout=400)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    image = json.loads((project / ".womm" / "config.json").read_text())["image"]
    assert image.startswith(f"{cluster.registry}/womm-test/womm-image-") and "@sha256:" in image

    run = subprocess.run(["womm", "parallel", "--backend", "kubernetes", "--namespace",
                          namespace, "--kube-pods", "1", "--kube-cpu", "0.2", "--",
                          'hello-womm; printf "%s|%s" "$GREETING" {}', ":::", "x"],
                         cwd=project, env=env, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode() == "hello from the tool\n" + GREETING + "|x"
    pods = subprocess.run(["womm", "status", "--namespace", namespace], cwd=project, env=env,
                          text=True, capture_output=True, timeout=60)
    # Nothing of this run is left (other rows may be other backends' tasks on this machine).
    assert pods.returncode == 0 and str(project) not in pods.stdout, pods.stdout

