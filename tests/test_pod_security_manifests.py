"""`womm cluster-setup`'s Pod Security labels and its account of what the Role allows
(security issue 12, item 6), offline: the manifests, and the CLI's stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from womm_jupyter import commands
from womm_jupyter.kube import manifests

# The Role as the security review audited it: the labels must not widen it.
AUDITED_RULES = [
    (["apps"], ["deployments"], ["get", "list", "watch", "create", "delete", "patch"]),
    (["apps"], ["replicasets"], ["get", "list"]),
    ([""], ["pods"], ["get", "list", "watch", "create", "delete"]),
    ([""], ["pods/exec"], ["get", "create"]),
    ([""], ["pods/log"], ["get"]),
    ([""], ["events"], ["list"]),
    (["coordination.k8s.io"], ["leases"], ["get", "list", "create", "update", "patch", "delete"]),
    (["batch"], ["jobs"], ["get", "list", "watch", "create", "delete"]),
    ([""], ["configmaps"], ["get", "list", "create", "update", "patch", "delete"]),
]


def test_the_namespace_comes_first_with_baseline_enforced_and_restricted_warnings():
    docs = commands.cluster_setup(namespace="lab", fsserver_image="r/fs:1")
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "lab", "labels": {"pod-security.kubernetes.io/enforce": "baseline",
                                  "pod-security.kubernetes.io/warn": "restricted",
                                  "pod-security.kubernetes.io/audit": "restricted"}}}
    # The rest is what it was, namespaced in the same namespace.
    assert docs[1:] == manifests.cluster_setup("lab", fsserver_image="r/fs:1")
    assert all(d["metadata"]["namespace"] == "lab" for d in docs[1:])


def test_the_level_is_chosen_and_the_role_is_unchanged():
    for level in ("baseline", "restricted", "privileged"):
        docs = commands.cluster_setup(namespace="lab", pod_security=level)
        assert docs[0]["metadata"]["labels"][manifests.POD_SECURITY_ENFORCE] == level
        role = next(d for d in docs if d["kind"] == "Role")
        assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]] == \
            AUDITED_RULES


def test_what_the_verbs_allow_names_the_secrets_caveat_and_the_level():
    for level in ("baseline", "restricted", "privileged"):
        lines = manifests.role_effects(level)
        pods = next(line for line in lines if "pods: create" in line)
        assert "Secret" in pods and "ServiceAccounts" in pods and "trust domain" in pods
        assert f"Pod Security {level}" in lines[-1]
    baseline = manifests.role_effects("baseline")[-1]
    assert "privileged pods" in baseline and "hostPath" in baseline
    assert "--privileged-fuse need privileged" in baseline
    assert "--privileged-fuse" in manifests.role_effects("privileged")[-1]


def _cluster_setup(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
    return subprocess.run([sys.executable, "-m", "womm_jupyter", "cluster-setup", *args],
                          text=True, capture_output=True, env=env, timeout=60)


def test_cli_keeps_stdout_pipeable_and_explains_on_stderr():
    run = _cluster_setup("-n", "lab", "--fsserver-image", "r/fs:1", "--shared-pvc", "data")
    assert run.returncode == 0, run.stderr
    docs = list(yaml.safe_load_all(run.stdout))
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "Role", "RoleBinding",
                                         "Deployment", "Service", "NetworkPolicy", "ConfigMap"]
    assert docs[-1]["metadata"]["namespace"] == "lab"  # womm-settings, after the Namespace
    assert "what the Role lets each member of namespace lab do" in run.stderr
    assert "mounts every Secret" in run.stderr and "Pod Security baseline" in run.stderr
    assert "apply with `kubectl apply -f -`: it creates namespace lab or labels it" in run.stderr
    assert "apiVersion" not in run.stderr

    run = _cluster_setup("-n", "lab", "--pod-security", "privileged", "--fsserver-image", "x")
    assert run.returncode == 0, run.stderr
    assert next(yaml.safe_load_all(run.stdout))["metadata"]["labels"][
        manifests.POD_SECURITY_ENFORCE] == "privileged"
    assert "root on the node" in run.stderr

    run = _cluster_setup("-n", "lab", "--pod-security", "none")
    assert run.returncode == 2 and run.stdout == ""
    assert "--pod-security: invalid choice: 'none'" in run.stderr
