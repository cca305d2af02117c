"""Workers as pods of one Deployment, ``womm-task-<id>``, on a Kubernetes cluster.

Pods run the womm agent as their main process. A pod joins the run as soon as it is Ready
(seen by a watch, never by polling) through a relay that carries its job connections over
one exec stream (see _relay.py), and leaves as soon as it stops being Ready; replacement pods
take the free worker places. A Lease owned by the Deployment is the coordinator's heartbeat.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
import time
from typing import Any

from .. import _paths
from ..kube import manifests
from ..kube.client import (
    WAITING_WILL_NOT_CURE,
    ApiError,
    Watch,
    clients,
    delete_each,
    lease_alive,
    now,
    renew_lease,
)
from ..kube.exec import ExecStream, open_exec
from ..kube.shared_volume import shared_claim
from ..labels import (
    LABEL_OWNER,
    LABEL_TASK,
    MANAGED_BY,
    described,
)
from ..naming import owner, task_object_name
from ._relay import PodRelay
from .base import Backend, GoneCallback, LaunchPlan, TaskInfo, WorkerPlan

__all__ = ["KubernetesBackend"]


class KubernetesBackend(Backend):
    """Deployment ``womm-task-<id>`` with ``--kube-pods`` replicas."""

    name = "kubernetes"
    replaces_workers = True
    own_filesystem = True

    def __init__(self, context: str = "", namespace: str = "") -> None:
        self._context = context
        self.clients = clients(context, namespace)
        self.namespace = self.clients.namespace
        self.core = self.clients.core
        self.apps = self.clients.apps
        self.coordination = self.clients.coordination
        self._plan: LaunchPlan | None = None
        self._on_gone: GoneCallback | None = None
        self._lock = threading.Lock()
        self._relays: dict[str, tuple[PodRelay, WorkerPlan]] = {}  # pod -> relay, place
        self._free: list[WorkerPlan] = []
        self._problems: dict[str, str] = {}  # pod -> why it is not running
        self._pods: set[str] = set()
        self._forbidden = ""
        self._prepare_failed = ""
        self._deleted: set[str] = set()
        self._stop = threading.Event()
        self._last_fatal_check = 0.0
        self._fatal = ""
        self._watch: Watch | None = None
        self._created = False  # the Deployment exists: delete() has something to delete
        self._watcher: threading.Thread | None = None

    # -- launch and watch -------------------------------------------------------------------
    def launch(self, plan: LaunchPlan, on_gone: GoneCallback) -> str:
        plan = dataclasses.replace(plan, shared_claim=shared_claim(self.core, self.namespace))
        self._plan, self._on_gone = plan, on_gone
        self._free = list(plan.workers)
        for worker in plan.workers:
            worker.socket_dir.mkdir(parents=True, exist_ok=True)
        body = manifests.worker_deployment(plan, _paths.transport_file("agent.pl").read_text())
        created = self.apps.create_namespaced_deployment(self.namespace, body)
        self._created = True
        self.coordination.create_namespaced_lease(
            self.namespace, manifests.lease(plan, created.metadata.uid, now()))
        self._watcher = threading.Thread(target=self._watch_pods, daemon=True,
                                         name=f"womm-watch-{plan.task_id}")
        self._watcher.start()
        return "deployment.apps"

    def _selector(self, task_id: str) -> str:
        return f"{MANAGED_BY}=womm,{LABEL_TASK}={task_id}"

    def _watch_pods(self) -> None:
        assert self._plan is not None
        selector = self._selector(self._plan.task_id)
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
                for pod in listed.items:
                    self._pod_event("ADDED", pod)
                stream = Watch()
                self._watch = stream
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace,
                                           label_selector=selector, timeout_seconds=60,
                                           resource_version=listed.metadata.resource_version):
                    if self._stop.is_set():
                        stream.stop()
                        return
                    self._pod_event(event["type"], event["object"])
            except Exception as exc:  # 410 Gone, a dropped connection: list again
                if self._stop.is_set():
                    return
                self._problems["watch"] = f"pod watch interrupted: {exc}"
                time.sleep(1)

    def _pod_event(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        self._pods.add(name)
        if kind == "DELETED":
            self._deleted.add(name)
        ready = kind != "DELETED" and pod.metadata.deletion_timestamp is None and any(
            c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        self._record_problem(name, pod, kind)
        with self._lock:
            attached = name in self._relays
            if ready and not attached and self._free:
                place = self._free.pop(0)
                relay = PodRelay(name, place.socket, self._stream_opener(name),
                                 functools.partial(self._relay_closed, name))
                self._relays[name] = (relay, place)
                if self._plan is not None and self._plan.prepare is not None:
                    # The eager share's upload: the pod joins (its socket appears) after it.
                    threading.Thread(target=self._prepare_then_start, args=(name, relay),
                                     daemon=True, name=f"womm-prepare-{name}").start()
                else:
                    relay.start()
                return
        if not ready and attached:
            self._detach(name, "pod deleted" if kind == "DELETED" else "pod no longer Ready")

    def _record_problem(self, name: str, pod: Any, kind: str) -> None:
        why = []
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                why.append(f"{condition.reason}: {condition.message}")
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting and waiting.reason:
                why.append(f"{waiting.reason}: {waiting.message or ''}".strip())
            terminated = status.state.terminated if status.state else None
            if terminated:
                why.append(f"exited with status {terminated.exit_code} ({terminated.reason})")
        if why and kind != "DELETED":
            self._problems[name] = "; ".join(why)
        else:
            self._problems.pop(name, None)

    def _prepare_then_start(self, pod: str, relay: PodRelay) -> None:
        assert self._plan is not None and self._plan.prepare is not None
        try:
            self._plan.prepare(pod)
        except Exception as exc:
            if pod not in self._deleted and not self._stop.is_set():
                # Not a lost pod: the same will happen on every pod (no rsync, Forbidden).
                self._prepare_failed = f"pod {pod}: {exc}"
            self._detach(pod, f"preparing the pod failed: {exc}", close=False)
            return
        with self._lock:
            current = self._relays.get(pod)
        if current is not None and current[0] is relay and not self._stop.is_set():
            relay.start()

    def share_targets(self) -> list[str]:
        with self._lock:
            return sorted(self._relays)

    def exec_stream(self, pod: str, command: list[str]) -> ExecStream:
        """An exec stream (stdin open) running ``command`` in ``pod``."""
        return open_exec(self.clients, pod, command)

    def _stream_opener(self, pod: str) -> functools.partial[ExecStream]:
        mux = _paths.transport_file("mux.pl").read_text()
        return functools.partial(self.exec_stream, pod,
                                 ["perl", "-e", mux, f"{manifests.AGENT_SOCKET_DIR}/agent.sock"])

    def replace_worker(self, pod: str, why: str) -> None:
        """Take ``pod`` out of the run at once and delete it; the Deployment starts another
        (a lazy share whose mount broke: its jobs must not run in the empty directory)."""
        self._detach(pod, why)
        if self._stop.is_set():
            return
        try:
            self.core.delete_namespaced_pod(pod, self.namespace, grace_period_seconds=1)
        except Exception as exc:  # gone already, or not ours to delete: it stays detached
            self._problems[pod] = f"could not delete it after its mount ended: {exc}"

    def _relay_closed(self, pod: str, why: str) -> None:
        if "Forbidden" in why or "(403)" in why:
            self._forbidden = (f"Kubernetes refused to exec into pod {pod} (Forbidden): womm "
                               "needs pods/exec; ask an admin to apply `womm cluster-setup` in "
                               f"namespace {self.namespace} and bind you to its Role")
        self._detach(pod, why, close=False)

    def _detach(self, pod: str, why: str, close: bool = True) -> None:
        with self._lock:
            entry = self._relays.pop(pod, None)
        if entry is None:
            return
        relay, place = entry
        if close:
            relay.close()
        place.socket.unlink(missing_ok=True)
        with self._lock:
            self._free.append(place)
        if self._on_gone and not self._stop.is_set():
            self._on_gone(place.name, f"{pod}: {why}")

    # -- health -----------------------------------------------------------------------------
    def heartbeat(self) -> None:
        assert self._plan is not None
        name = task_object_name(self._plan.task_id)
        try:
            renew_lease(self.clients, name)
        except ApiError as exc:  # a missed beat is not fatal; the next one may pass
            self._problems["lease"] = f"heartbeat failed: {exc}"

    def fatal(self) -> str:
        """A reason the workers cannot start that waiting will not cure, or ''."""
        if self._forbidden:
            return self._forbidden
        if self._prepare_failed:
            return self._prepare_failed
        problems = dict(self._problems)
        for pod, why in problems.items():
            if any(reason in why for reason in WAITING_WILL_NOT_CURE):
                return f"pod {pod}: {why}"
        # Pods that do not fit wait for room; only when none fits is it hopeless.
        unschedulable = [pod for pod, why in problems.items() if "Unschedulable" in why]
        if unschedulable and len(unschedulable) == len(self._pods - self._deleted):
            return f"pod {unschedulable[0]}: {problems[unschedulable[0]]}"
        moment = time.monotonic()
        if self._plan is not None and moment - self._last_fatal_check > 1.0:
            self._last_fatal_check = moment
            try:
                deployment = self.apps.read_namespaced_deployment(
                    task_object_name(self._plan.task_id), self.namespace)
                if deployment.spec.replicas == 0:
                    return "its Deployment was scaled to 0 from outside"
                for condition in deployment.status.conditions or []:
                    if condition.type == "ReplicaFailure" and condition.status == "True":
                        return f"{condition.reason}: {condition.message}"
            except ApiError as exc:
                return f"the Deployment cannot be read ({exc.reason or exc})"
        return ""

    def diagnose(self, worker: str) -> str:
        return "\n".join(f"pod {pod}: {why}" for pod, why in self._problems.items())

    # -- cleanup ----------------------------------------------------------------------------
    def delete(self) -> str:
        self._stop.set()
        self._end_watch()
        with self._lock:
            relays = list(self._relays.values())
            self._relays.clear()
        for relay, place in relays:
            relay.close()
            place.socket.unlink(missing_ok=True)
        if self._plan is None or not self._created:  # its launch failed before creating it
            return ""
        delete_each(self.namespace, (("deployment.apps", self.apps.delete_namespaced_deployment,
                                      task_object_name(self._plan.task_id)),))
        return "deployment.apps"

    def _end_watch(self) -> None:
        # A daemon thread blocked in an SSL read while the interpreter exits makes it abort
        # (SIGABRT, exit status 134, seen about once in ten failed runs): end the pod watch's
        # read by shutting its connection down, and let the thread return first.
        if self._watch is not None:
            self._watch.shutdown()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)

    # -- status and finish ------------------------------------------------------------------
    def tasks(self, all_owners: bool) -> list[TaskInfo]:
        selector = f"{MANAGED_BY}=womm" + ("" if all_owners else f",{LABEL_OWNER}={owner()}")
        deployments = self.apps.list_namespaced_deployment(self.namespace,
                                                           label_selector=selector).items
        leases = {lease.metadata.name: lease for lease in self.coordination.list_namespaced_lease(
            self.namespace, label_selector=selector).items}
        shells = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{selector},womm/kind=shell").items
        at = dt.datetime.now(dt.UTC)

        def row(meta: Any, ready: int, desired: int) -> TaskInfo:
            notes = meta.annotations or {}
            task_id = meta.labels.get(LABEL_TASK, meta.name)
            alive = lease_alive(leases.get(task_object_name(task_id)), at)
            return TaskInfo(
                task_id=task_id, backend=self.name, created=meta.creation_timestamp.timestamp(),
                status="RUNNING" if alive else "ORPHANED", ready=ready, desired=desired,
                owner=meta.labels.get(LABEL_OWNER, ""), **described(notes))

        rows = [row(d.metadata, d.status.ready_replicas or 0, d.spec.replicas or 0)
                for d in deployments]
        rows += [row(p.metadata, int(any(c.type == "Ready" and c.status == "True"
                                         for c in p.status.conditions or [])), 1)
                 for p in shells]
        return rows

    def finish(self, task_id: str) -> list[str]:
        name = task_object_name(task_id)
        return delete_each(self.namespace, (
            ("deployment.apps", self.apps.delete_namespaced_deployment, name),
            ("pod", self.core.delete_namespaced_pod, f"womm-shell-{task_id}"),
            ("lease.coordination.k8s.io", self.coordination.delete_namespaced_lease, name)))
