"""`womm` run against the test cluster, and manifests applied to a test namespace, for the
cluster tests that share the --async leader setup."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import utils


def womm_env(cluster: Any) -> dict[str, str]:
    # crane (to push the leader image) comes with the test cluster's binaries.
    return dict(os.environ, KUBECONFIG=cluster.kubeconfig,
                PATH=f"{os.environ['PATH']}:{cluster.bin_dir}")


def run_womm(cluster: Any, *args: str, cwd: Path, timeout: float = 300,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["womm", *args], text=True, capture_output=True, cwd=cwd,
                          timeout=timeout, env=womm_env(cluster), input=stdin)


def apply_docs(cluster: Any, docs: list[dict], namespace: str) -> None:
    # Not the Namespace: it names the namespace the manifests were printed for (the
    # kubeconfig's), and the test's own exists already. tests/cluster/test_pod_security.py
    # applies it as the README says.
    docs = [doc for doc in docs if doc["kind"] != "Namespace"]
    for doc in docs:
        doc["metadata"].pop("namespace", None)
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    utils.create_from_yaml(cluster.api_client(), yaml_objects=docs, namespace=namespace)
