"""``womm parallel --async``: the coordinator runs in the cluster; the client goes away.

Objects of a detached task ``<id>`` (all labelled ``womm/task=<id>``; all but the root carry
an ownerReference to the root, so deleting the root cascades):

- ConfigMap ``womm-task-<id>`` (the root): ``spec.json`` (options, GNU parallel's arguments,
  working directory) and ``stdin`` (the input lines), written by the client.
- Job ``womm-task-<id>``: the leader, ``python3 -m womm_jupyter.run.leader`` in the leader image,
  under the ``womm-leader`` ServiceAccount. It runs the same :class:`~womm_jupyter.Dispatch`
  as the client would (Deployment + Lease ``womm-task-<id>`` of workers) and prints GNU
  parallel's output to its log (`womm logs ID -f`).
- ConfigMaps ``womm-task-<id>-output-<n>``: the job records (JSON lines with each job's
  stdout and stderr), a byte stream cut in parts of at most :data:`PART_BYTES`, written while
  jobs finish: the output is durable in the cluster, not only in a container's /tmp.
- ConfigMap ``womm-task-<id>-result``: GNU parallel's exit status or womm's error, written
  last. `womm status` says COMPLETE once the leader has ended.

`womm finish ID` downloads everything into ``./womm-<id>/`` and deletes the task.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import backends
from .. import share as share_methods
from ..backends.base import TaskInfo
from ..errors import BackendError, ImageError, OptionError, ShareError, TaskNotFoundError
from ..kube import manifests
from ..kube.client import (
    WAITING_WILL_NOT_CURE,
    ApiError,
    Watch,
    clients,
    delete_each,
    see_through,
)
from ..kube.shared_volume import shared_claim
from ..labels import (
    LABEL_LEADER,
    LABEL_OWNER,
    LABEL_PART,
    LABEL_ROLE,
    LABEL_TASK,
    MANAGED_BY,
    NOTE_PODS,
    describe,
    described,
)
from ..naming import is_task_id, task_object_name
from ..naming import owner as current_owner
from ..options import ParallelOptions
from ..share import eager as share
from . import gnu as _parallel
from .records import CSV_FIELDS, csv_row, record_from_json, record_json

__all__ = ["SHARE_READY", "Submitted", "download", "finish", "logs", "submit", "tasks"]

SHARE_READY = "/tmp/womm-share-uploaded"  # in the leader's pod: the client's upload is whole
_LEADER_START = 300  # seconds the client waits for the leader's pod to upload an eager share
_MAX_INPUT = 700 * 1024


@dataclasses.dataclass(frozen=True)
class Submitted:
    """What `womm parallel --async` started."""

    task_id: str
    namespace: str
    leader_image: str


def _clients(context: str, namespace: str) -> tuple[Any, Any, str]:
    built = clients(context, namespace)
    return built.core, built.batch, built.namespace


def _leader_image(core: Any, namespace: str, explicit: str) -> str:
    if explicit:
        return explicit
    try:
        record = core.read_namespaced_config_map(manifests.LEADER, namespace)
        image = (record.data or {}).get("image", "")
    except ApiError as exc:
        if exc.status not in (403, 404):
            raise
        image = ""
    if not image:
        raise ImageError(
            f"no leader image is recorded in namespace {namespace}: build and record one with "
            "`womm cluster-setup --build --prefix REGISTRY/ | kubectl apply -f -`, or give "
            "--leader-image.")
    return str(image)


def submit(options: ParallelOptions, parallel_argv: list[str], *, cwd: Path,
           stdin: bytes | None, report: Callable[[str], None] | None = None) -> Submitted:
    """Upload the run and create its leader Job; returns at once, or with an eager share
    once the project directory is in the leader's pod (the leader then uploads it to each
    worker, as a client would).

    ``stdin``: the input lines (GNU parallel's standard input), or None when the arguments
    carry the inputs (``:::``). ``report``: progress of the share's upload.

    Raises
    ------
    OptionError
        for what cannot run detached (lazy share, local slots, input files, no cluster).
    ImageError
        when no leader image is known.
    """
    if options.backend in ("docker", "local") or (options.backend == "auto"
                                                   and not backends.kubernetes_configured()
                                                   and not options.context):
        raise OptionError("--async needs a Kubernetes cluster (the coordinator runs there): "
                          "set KUBECONFIG or --context, or run without --async.")
    method = share_methods.method(options.share, cwd)
    if share_methods.by_name(method).async_refusal:
        raise OptionError(share_methods.by_name(method).async_refusal)
    if options.local_procs:
        raise OptionError("--local-procs cannot be used with --async: the coordinator runs in "
                          "the cluster, not on this machine.")
    if not options.image:
        raise OptionError("--image is required with --async until `womm setup` has built a "
                          "project image.")
    args = _parallel.inspect(parallel_argv)
    if not args.has_command:
        raise OptionError("womm parallel --async: give GNU parallel a command after `--`.")
    words = list(args.argv)
    if any(w.startswith("::::") for w in words) or any(
            w in ("-a", "--arg-file", "--argfile") or w.startswith(("--arg-file=", "-a"))
            for w in words[:next((i for i, w in enumerate(words)
                                  if w in _parallel.INPUT_SEPARATORS), len(words))]):
        raise OptionError("--async cannot read input files of this machine (:::: or -a): "
                          "pipe them on standard input instead, e.g. "
                          "womm parallel --async ... < FILE")
    if stdin is not None and len(stdin) > _MAX_INPUT:
        raise OptionError(f"--async takes at most {_MAX_INPUT // 1024} KiB of input lines "
                          f"(got {len(stdin) // 1024} KiB): split the run, or pass the data "
                          "through the project directory.")
    core, batch, namespace = _clients(options.context, options.namespace)
    image = _leader_image(core, namespace, options.leader_image)

    from ..naming import new_task_id

    task_id = new_task_id()
    owner = current_owner()
    name = task_object_name(task_id)
    leader_options = dataclasses.replace(options, async_=False, backend="kubernetes",
                                         context="", namespace=namespace, leader_image="",
                                         share=method)
    spec = {"options": dataclasses.asdict(leader_options), "argv": list(args.argv),
            "cwd": str(cwd.resolve()), "created": time.time()}
    annotations = {**describe(str(cwd.resolve()), " ".join(args.argv), options.kube_cpu,
                              options.kube_mem),
                   NOTE_PODS: str(options.kube_pods)}
    root = manifests.detached_root(
        task_id=task_id, owner=owner, annotations=annotations, spec=json.dumps(spec),
        stdin_b64=None if stdin is None else base64.b64encode(stdin).decode())
    created = core.create_namespaced_config_map(namespace, root)
    try:
        batch.create_namespaced_job(namespace, manifests.leader_job(
            task_id=task_id, owner=owner, root_uid=created.metadata.uid, image=image,
            annotations=annotations, shared_claim=shared_claim(core, namespace)))
    except ApiError:
        delete_each(namespace, (("configmap", core.delete_namespaced_config_map, name),))
        raise
    if share_methods.by_name(method).uploads:
        try:
            _upload_to_leader(core, task_id, namespace, options.context, cwd, report)
        except BaseException:
            # Nothing half-made stays: the Job at once (its pod follows), then the root.
            delete_each(namespace, (("job.batch", batch.delete_namespaced_job, name),
                                    ("configmap", core.delete_namespaced_config_map, name)))
            raise
    return Submitted(task_id, namespace, image)


def _running_leader(core: Any, task_id: str, namespace: str) -> Any:
    """The leader's pod once it runs; ShareError when it cannot start (a bad image) or has not
    within :data:`_LEADER_START` seconds."""
    selector = f"{LABEL_LEADER}={task_id}"
    why = "no pod yet"
    listed = core.list_namespaced_pod(namespace, label_selector=selector)
    stream = Watch()
    events = ({"type": "LISTED", "object": pod} for pod in listed.items)
    watched = stream.stream(core.list_namespaced_pod, namespace, label_selector=selector,
                            resource_version=listed.metadata.resource_version,
                            timeout_seconds=_LEADER_START)
    for event in itertools.chain(events, watched):
        pod = event["object"]
        if event["type"] == "DELETED":
            continue
        if pod.status.phase == "Running":
            stream.stop()
            return pod
        why = f"pod {pod.metadata.name}: phase {pod.status.phase}"
        waiting = [status.state.waiting for status in pod.status.container_statuses or []
                   if status.state and status.state.waiting and status.state.waiting.reason]
        why += "".join(f", {w.reason}: {w.message or ''}".rstrip(": ") for w in waiting)
        if pod.status.phase in ("Succeeded", "Failed") or any(
                w.reason in WAITING_WILL_NOT_CURE for w in waiting):
            stream.stop()  # it will not run: say why now, not after the timeout
            break
    raise ShareError(f"the leader of task {task_id} did not run ({why}), so the project "
                     "directory could not be uploaded; the task was deleted. Check the leader "
                     "image (`womm cluster-setup --build`, or --leader-image) and try again.")


def _upload_to_leader(core: Any, task_id: str, namespace: str, context: str, cwd: Path,
                      report: Callable[[str], None] | None) -> None:
    """rsync ``cwd`` into the leader's pod at the same path, then tell the leader it is all
    there (:data:`SHARE_READY`); the leader uploads it to each worker before it takes jobs."""
    from ..kuboid.pods import Pods

    pod = _running_leader(core, task_id, namespace)
    cwd = cwd.resolve()
    name = pod.metadata.name
    pods = Pods(context, namespace, task="")
    errors: list[bytes] = []

    def run(*argv: str) -> None:
        code = pods.exec(name, argv, lambda data: None, errors.append)
        if code != 0:
            raise ShareError(f"preparing the leader pod {name} for the upload failed (exit "
                             f"status {code}).", b"".join(errors).decode(errors="replace"))

    run("mkdir", "-p", str(cwd))
    result = share.push(cwd, name, namespace=namespace, context=context, report=report)
    run("touch", SHARE_READY)
    if report is not None:
        report(f"share: the leader holds {result.files} files, "
               f"{share.size_text(result.total_bytes)} (sent in {result.seconds:.1f} s); it "
               "uploads them to each worker")


# -- status, logs, finish ---------------------------------------------------------------------
def _job_ended(job: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True"
               for c in (job.status.conditions or []))


def tasks(all_owners: bool = False, *, context: str = "", namespace: str = "") -> list[TaskInfo]:
    """Detached tasks in the namespace: RUNNING while the leader runs, COMPLETE once it ended
    (awaiting `womm finish`), ORPHANED when its leader Job is gone."""
    built = clients(context, namespace)
    core, batch, namespace = built.core, built.batch, built.namespace
    owner = "" if all_owners else current_owner()
    roots = core.list_namespaced_config_map(
        namespace, label_selector=manifests.selector(role="root", owner=owner))
    jobs = {job.metadata.name: job for job in batch.list_namespaced_job(
        namespace, label_selector=manifests.selector(role="leader", owner=owner)).items}
    results = {cm.metadata.labels.get(LABEL_TASK) for cm in core.list_namespaced_config_map(
        namespace, label_selector=manifests.selector(role="result", owner=owner)).items}
    workers = {d.metadata.labels.get(LABEL_TASK): d for d in built.apps.list_namespaced_deployment(
        namespace, label_selector=f"{MANAGED_BY}=womm").items}
    rows = []
    for root in roots.items:
        meta = root.metadata
        task_id = meta.labels.get(LABEL_TASK, "")
        notes = meta.annotations or {}
        job = jobs.get(meta.name)
        if task_id in results or (job is not None and _job_ended(job)):
            status = "COMPLETE"
        elif job is not None:
            status = "RUNNING"
        else:
            status = "ORPHANED"
        deployment = workers.get(task_id)
        ready = (deployment.status.ready_replicas or 0) if deployment else 0
        rows.append(TaskInfo(task_id=task_id, backend="kubernetes",
                             created=meta.creation_timestamp.timestamp(), status=status,
                             ready=ready, desired=int(notes.get(NOTE_PODS, "0") or 0),
                             owner=meta.labels.get(LABEL_OWNER, ""), **described(notes)))
    return rows


def _root(core: Any, task_id: str, namespace: str) -> Any | None:
    try:
        root = core.read_namespaced_config_map(task_object_name(task_id), namespace)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    labels = root.metadata.labels or {}
    return root if labels.get(LABEL_ROLE) == "root" else None


def _leader_pod(core: Any, task_id: str, namespace: str, wait: float) -> Any | None:
    """The leader's pod once it has started (or ended), waiting up to ``wait`` seconds."""
    selector = f"{LABEL_LEADER}={task_id}"

    def started(pod: Any) -> bool:
        if pod.status.phase in ("Running", "Succeeded", "Failed"):
            return True
        return any(s.state and (s.state.running or s.state.terminated)
                   for s in pod.status.container_statuses or [])

    listed = core.list_namespaced_pod(namespace, label_selector=selector)
    for pod in listed.items:
        if started(pod):
            return pod
    if wait <= 0:
        return listed.items[0] if listed.items else None
    stream = Watch()
    for event in stream.stream(core.list_namespaced_pod, namespace, label_selector=selector,
                               resource_version=listed.metadata.resource_version,
                               timeout_seconds=int(wait)):
        if event["type"] != "DELETED" and started(event["object"]):
            stream.stop()
            return event["object"]
    return None


def logs(task_id: str, follow: bool = False, *, context: str = "",
         namespace: str = "") -> Iterator[bytes]:
    """The leader's output (GNU parallel's stdout and stderr, womm's messages), as chunks;
    with ``follow``, until the leader ends."""
    core, _, namespace = _clients(context, namespace)
    if _root(core, task_id, namespace) is None:
        raise TaskNotFoundError(f"no --async task {task_id} in namespace {namespace}: "
                                "`womm status` lists the tasks.")
    pod = _leader_pod(core, task_id, namespace, 300 if follow else 0)
    if pod is None:
        raise BackendError(f"the leader of task {task_id} has not started yet: try again, or "
                           "look at `womm status`.")
    response = core.read_namespaced_pod_log(pod.metadata.name, namespace, follow=follow,
                                            _preload_content=False)
    try:
        yield from response.stream(4096)
    finally:
        response.release_conn()


def _records_from_parts(core: Any, task_id: str, namespace: str) -> list[dict[str, Any]]:
    parts = core.list_namespaced_config_map(
        namespace, label_selector=manifests.selector(task_id=task_id, role="output")).items
    parts.sort(key=lambda cm: int(cm.metadata.labels.get(LABEL_PART, "0")))
    stream = b"".join(base64.b64decode((cm.binary_data or {}).get("data", "")) for cm in parts)
    return [json.loads(line) for line in stream.decode("utf-8").splitlines() if line.strip()]


def download(task_id: str, into: Path, *, context: str = "",
             namespace: str = "") -> Path | None:
    """Save an --async task's records and output under ``into/womm-<id>/`` (and nowhere
    else: each record's ``seq`` is checked to be a job number); None when ``task_id`` is no
    detached task in the namespace.

    Writes ``records.json``, ``records.csv`` (as ``Run.df``, without the outputs),
    ``result.json``, ``leader.log`` and ``jobs/<seq>.stdout`` / ``.stderr``.
    """
    if not is_task_id(task_id):  # a path names no task; files go under into/womm-ID only
        return None
    target = into / f"womm-{task_id}"
    core, _, namespace = _clients(context, namespace)
    if _root(core, task_id, namespace) is None:
        return None
    try:
        # Checked before anything is written: a record's seq names its files under jobs/.
        records = [record_from_json(row) for row in _records_from_parts(core, task_id,
                                                                          namespace)]
    except ValueError as exc:
        raise BackendError(f"the job records of task {task_id} are malformed ({exc}): its "
                           "output ConfigMaps were changed by something other than its "
                           "leader; nothing was downloaded, and the task was kept.") from exc
    jobs = target / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (target / "records.json").write_text(json.dumps([record_json(r) for r in records],
                                                    indent=1))
    with open(target / "records.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        writer.writerows(csv_row(record) for record in records)
    for record in records:
        (jobs / f"{record.seq}.stdout").write_text(record.stdout)
        (jobs / f"{record.seq}.stderr").write_text(record.stderr)
    try:
        result = core.read_namespaced_config_map(f"{task_object_name(task_id)}-result",
                                                 namespace)
        outcome = json.loads(base64.b64decode(result.binary_data["data"]))
    except ApiError as exc:
        if exc.status != 404:
            raise
        outcome = {"exit_code": None, "error": "the leader ended without a result (killed?)"}
    (target / "result.json").write_text(json.dumps(outcome, indent=1))
    try:
        pod = _leader_pod(core, task_id, namespace, 0)
        if pod is not None:
            (target / "leader.log").write_text(core.read_namespaced_pod_log(
                pod.metadata.name, namespace))
    except ApiError:
        pass  # the pod's log is a convenience; the records above are the durable copy
    return target


def finish(task_id: str, *, context: str = "", namespace: str = "",
           wait: float = 60.0) -> list[str]:
    """Delete every object of a detached task (the root, and through it everything it owns;
    the workers' Deployment and Lease by name); returns what was deleted."""
    built = clients(context, namespace)
    core, batch, namespace = built.core, built.batch, built.namespace
    if _root(core, task_id, namespace) is None:
        return []
    name = task_object_name(task_id)
    # The Job first: its leader gets SIGTERM and removes the workers.
    deleted = delete_each(namespace, (("job.batch", batch.delete_namespaced_job, name),
                                      ("configmap", core.delete_namespaced_config_map, name)))
    apps, coordination = built.apps, built.coordination
    selector = manifests.selector(task_id=task_id)

    def step() -> list[str]:
        nonlocal deleted
        left = [f"configmap/{cm.metadata.name}" for cm in
                core.list_namespaced_config_map(namespace, label_selector=selector).items]
        left += [f"pod/{p.metadata.name}" for p in core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_LEADER}={task_id}").items]
        for kind, listed, delete in (
                ("deployment.apps", apps.list_namespaced_deployment,
                 apps.delete_namespaced_deployment),
                ("lease.coordination.k8s.io", coordination.list_namespaced_lease,
                 coordination.delete_namespaced_lease)):
            deleted += delete_each(namespace, ((kind, delete, obj.metadata.name) for obj in
                                               listed(namespace, label_selector=selector).items))
        return left

    see_through(step, wait)
    return deleted
