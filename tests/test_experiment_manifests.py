"""The objects of an experiment in the cluster: root ConfigMap, Lease and pods owned by it."""

from __future__ import annotations

from womm_jupyter.kube import manifests
from womm_jupyter.labels import LABEL_ROLE


def test_root_lease_and_pods_hang_off_the_root():
    root = manifests.experiment_root(task_id="k3xq9m2a", owner="me.host",
                                     annotations={"womm/command": "experiment -i img"})
    assert root["kind"] == "ConfigMap"
    assert root["metadata"]["name"] == "womm-task-k3xq9m2a"
    assert root["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "womm",
                                          "womm/task": "k3xq9m2a", "womm/owner": "me.host",
                                          "womm/role": "experiment"}
    lease = manifests.experiment_lease(task_id="k3xq9m2a", owner="me.host", root_uid="u-1",
                                       holder="host:42", now="2026-01-01T00:00:00.000000Z")
    assert lease["metadata"]["name"] == "womm-task-k3xq9m2a"
    assert lease["metadata"]["labels"]["womm/task"] == "k3xq9m2a"
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "womm-task-k3xq9m2a",
                 "uid": "u-1"}
    assert lease["metadata"]["ownerReferences"] == [owner_ref]
    assert lease["spec"]["renewTime"] == lease["spec"]["acquireTime"]
    pod = manifests.experiment_pod(name="womm-k3xq9m2a-1-0-x", image="img", command="echo x",
                                   labels={}, annotations={}, cpu="0.1", memory="64Mi",
                                   root=("womm-task-k3xq9m2a", "u-1"))
    assert pod["metadata"]["ownerReferences"] == [owner_ref]
    alone = manifests.experiment_pod(name="p", image="img", command="echo x", labels={},
                                     annotations={}, cpu="0.1", memory="64Mi")
    assert "ownerReferences" not in alone["metadata"]


def test_detached_tasks_do_not_take_experiments_for_their_roots():
    # `womm status` lists --async tasks by womm/role=root: an experiment's root is another role.
    root = manifests.experiment_root(task_id="k3xq9m2a", owner="o", annotations={})
    assert root["metadata"]["labels"][LABEL_ROLE] != "root"
