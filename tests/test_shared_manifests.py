"""/shared: every kind of pod womm creates mounts the namespace's shared claim when one is
recorded (womm cluster-setup --shared-pvc), and none does otherwise."""

from __future__ import annotations

import time
from pathlib import Path

from womm_jupyter.backends.base import LaunchPlan
from womm_jupyter.kube import manifests
from womm_jupyter.kube import shared_volume as shared

SHARED_VOLUME = {"name": "womm-shared", "persistentVolumeClaim": {"claimName": "lab-data"}}
SHARED_MOUNT = {"name": "womm-shared", "mountPath": "/shared"}


def _plan(claim: str) -> LaunchPlan:
    return LaunchPlan(task_id="k3xq9m2a", owner="me.host", cwd=Path("/p"), command="echo",
                      workers=(), shell="/bin/sh", client_path="", created=time.time(),
                      coordinator_pid=1, host="h", cpu=1.0, memory="512Mi", image="img",
                      shared_claim=claim)


def _pod_specs(claim: str) -> list[dict]:
    deployment = manifests.worker_deployment(_plan(claim), "agent")
    shell = manifests.shell_pod(_plan(claim), "womm-shell-k3xq9m2a", "agent")
    task = manifests.experiment_pod(name="p", image="img", command="true", labels={},
                                    annotations={}, cpu="0.1", memory="64Mi",
                                    shared_claim=claim)
    leader = manifests.leader_job(task_id="k3xq9m2a", owner="o", root_uid="u", image="img",
                                  annotations={}, shared_claim=claim)
    return [deployment["spec"]["template"]["spec"], shell["spec"], task["spec"],
            leader["spec"]["template"]["spec"]]


def test_every_pod_mounts_the_shared_claim_at_slash_shared():
    for spec in _pod_specs("lab-data"):
        assert SHARED_VOLUME in spec["volumes"]
        assert SHARED_MOUNT in spec["containers"][0]["volumeMounts"]


def test_without_a_claim_no_pod_has_slash_shared():
    for spec in _pod_specs(""):
        assert all(v["name"] != "womm-shared" for v in spec.get("volumes", []))
        assert all(m["mountPath"] != "/shared"
                   for m in spec["containers"][0].get("volumeMounts", []))


def test_the_settings_record_names_the_claim():
    record = shared.settings_record("lab-data", "lab")
    assert record["metadata"] == {"name": "womm-settings", "namespace": "lab",
                                  "labels": {"app.kubernetes.io/managed-by": "womm"}}
    assert record["data"] == {"shared-pvc": "lab-data"}
