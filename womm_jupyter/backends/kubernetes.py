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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import _paths
from ..errors import BackendError, MissingToolError
from ..kube import manifests
from ..naming import owner, task_object_name
from ._relay import PodRelay
from .base import (
    LABEL_OWNER,
    LABEL_TASK,
    MANAGED_BY,
    Backend,
    GoneCallback,
    LaunchPlan,
    TaskInfo,
    WorkerPlan,
)

# Waiting reasons that will not fix themselves within a start timeout.
_FATAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                  "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff"}
_STALE_LEASE = 10.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _api_error(exc: Exception, doing: str, namespace: str) -> BackendError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or str(exc)
    if status == 403:
        return BackendError(
            f"Kubernetes refused to let you {doing} in namespace {namespace} (Forbidden): ask "
            "an admin to apply `womm cluster-setup` there and to bind you to its Role, or "
            "choose another namespace with --namespace.", getattr(exc, "body", "") or "")
    return BackendError(f"Kubernetes could not {doing} in namespace {namespace}: {reason}",
                        getattr(exc, "body", "") or "")


def load_config(context: str = "") -> tuple[Any, str]:
    """An ApiClient and the namespace of the kubeconfig context (or in-cluster config)."""
    import os

    from kubernetes import client, config

    try:
        if "KUBERNETES_SERVICE_HOST" in os.environ and not context:
            config.load_incluster_config()
            namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            return client.ApiClient(), namespace.read_text().strip() or "default"
        # KUBECONFIG as it is now: the client reads it once, at import, so a kernel whose
        # user set os.environ["KUBECONFIG"] later would get the old one.
        files = os.environ.get("KUBECONFIG") or None
        config.load_kube_config(config_file=files, context=context or None)
        _, active = config.list_kube_config_contexts(config_file=files)
        chosen = active
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=files)
            chosen = next(c for c in contexts if c["name"] == context)
        return client.ApiClient(), chosen.get("context", {}).get("namespace") or "default"
    except Exception as exc:  # the loader raises ConfigException, StopIteration, OSError...
        raise MissingToolError(f"no usable Kubernetes configuration ({exc}): set KUBECONFIG "
                               "or --context, or choose --backend docker or local.") from exc


def delete_each(namespace: str,
                targets: Iterable[tuple[str, Callable[..., Any], str]]) -> list[str]:
    """Delete ``(kind, delete_namespaced_x, name)`` objects, owned ones in the background;
    returns ``kind/name`` of those that existed. An object already gone is no error."""
    from kubernetes.client.exceptions import ApiException

    deleted = []
    for kind, delete, name in targets:
        try:
            delete(name, namespace, propagation_policy="Background")
            deleted.append(f"{kind}/{name}")
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, f"delete {kind}/{name}", namespace) from exc
    return deleted


class KubernetesBackend(Backend):
    """Deployment ``womm-task-<id>`` with ``--kube-pods`` replicas."""

    name = "kubernetes"
    replaces_workers = True

    def __init__(self, context: str = "", namespace: str = "") -> None:
        from kubernetes import client

        self._context = context
        self._api_client, default_namespace = load_config(context)
        self.namespace = namespace or default_namespace
        self.core = client.CoreV1Api(self._api_client)
        self.apps = client.AppsV1Api(self._api_client)
        self.coordination = client.CoordinationV1Api(self._api_client)
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
        self._watch: Any = None
        self._watcher: threading.Thread | None = None

    # -- launch and watch -------------------------------------------------------------------
    def launch(self, plan: LaunchPlan, on_gone: GoneCallback) -> str:
        from kubernetes.client.exceptions import ApiException

        from ..kube.shared_volume import shared_claim

        plan = dataclasses.replace(plan, shared_claim=shared_claim(self.core, self.namespace))
        self._plan, self._on_gone = plan, on_gone
        self._free = list(plan.workers)
        for worker in plan.workers:
            worker.socket_dir.mkdir(parents=True, exist_ok=True)
        body = manifests.worker_deployment(plan, _paths.transport_file("agent.pl").read_text())
        try:
            created = self.apps.create_namespaced_deployment(self.namespace, body)
            self.coordination.create_namespaced_lease(
                self.namespace, manifests.lease(plan, created.metadata.uid, _now()))
        except ApiException as exc:
            raise _api_error(exc, "create the workers' Deployment", self.namespace) from exc
        self._watcher = threading.Thread(target=self._watch_pods, daemon=True,
                                         name=f"womm-watch-{plan.task_id}")
        self._watcher.start()
        return "deployment.apps"

    def _selector(self, task_id: str) -> str:
        return f"{MANAGED_BY}=womm,{LABEL_TASK}={task_id}"

    def _watch_pods(self) -> None:
        from kubernetes import watch

        assert self._plan is not None
        selector = self._selector(self._plan.task_id)
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
                for pod in listed.items:
                    self._pod_event("ADDED", pod)
                stream = watch.Watch()
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

    def exec_stream(self, pod: str, command: list[str]) -> Any:
        """A binary exec stream (stdin open, not preloaded) running ``command`` in ``pod``;
        read it with ``_wsframes``."""
        from kubernetes import client
        from kubernetes.stream import stream

        # stream() patches its ApiClient while it runs: give each stream a client of its own.
        api = client.CoreV1Api(client.ApiClient(self._api_client.configuration))
        return stream(api.connect_get_namespaced_pod_exec, pod, self.namespace,
                      command=command, stdin=True, stdout=True, stderr=True, tty=False,
                      _preload_content=False, binary=True)

    def _stream_opener(self, pod: str) -> Any:
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
            self.coordination.patch_namespaced_lease(name, self.namespace,
                                                     {"spec": {"renewTime": _now()}})
        except Exception as exc:  # a missed beat is not fatal; the next one may pass
            self._problems["lease"] = f"heartbeat failed: {exc}"

    def fatal(self) -> str:
        """A reason the workers cannot start that waiting will not cure, or ''."""
        if self._forbidden:
            return self._forbidden
        if self._prepare_failed:
            return self._prepare_failed
        problems = dict(self._problems)
        for pod, why in problems.items():
            if any(reason in why for reason in _FATAL_WAITING):
                return f"pod {pod}: {why}"
        # Pods that do not fit wait for room; only when none fits is it hopeless.
        unschedulable = [pod for pod, why in problems.items() if "Unschedulable" in why]
        if unschedulable and len(unschedulable) == len(self._pods - self._deleted):
            return f"pod {unschedulable[0]}: {problems[unschedulable[0]]}"
        now = time.monotonic()
        if self._plan is not None and now - self._last_fatal_check > 1.0:
            self._last_fatal_check = now
            try:
                deployment = self.apps.read_namespaced_deployment(
                    task_object_name(self._plan.task_id), self.namespace)
                if deployment.spec.replicas == 0:
                    return "its Deployment was scaled to 0 from outside"
                for condition in deployment.status.conditions or []:
                    if condition.type == "ReplicaFailure" and condition.status == "True":
                        return f"{condition.reason}: {condition.message}"
            except Exception as exc:
                return f"the Deployment cannot be read ({getattr(exc, 'reason', exc)})"
        return ""

    def diagnose(self, worker: str) -> str:
        return "\n".join(f"pod {pod}: {why}" for pod, why in self._problems.items())

    # -- cleanup ----------------------------------------------------------------------------
    def delete(self) -> str:
        from kubernetes.client.exceptions import ApiException

        self._stop.set()
        self._end_watch()
        with self._lock:
            relays = list(self._relays.values())
            self._relays.clear()
        for relay, place in relays:
            relay.close()
            place.socket.unlink(missing_ok=True)
        assert self._plan is not None
        try:
            self.apps.delete_namespaced_deployment(task_object_name(self._plan.task_id),
                                                   self.namespace,
                                                   propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, "delete the workers' Deployment", self.namespace) from exc
        return "deployment.apps"

    def _end_watch(self) -> None:
        # A daemon thread blocked in an SSL read while the interpreter exits makes it abort
        # (SIGABRT, exit status 134, seen about once in ten failed runs): end the pod watch's
        # read by shutting its connection down, and let the thread return first.
        watch = self._watch
        if watch is not None:
            watch.stop()
            response = getattr(watch, "_resp", None)
            try:
                if response is not None:
                    response.shutdown()
            except Exception:  # already closed, or an older urllib3: the join may time out
                pass
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
        now = dt.datetime.now(dt.UTC)

        def row(meta: Any, ready: int, desired: int) -> TaskInfo:
            notes = meta.annotations or {}
            task_id = meta.labels.get(LABEL_TASK, meta.name)
            lease = leases.get(task_object_name(task_id))
            renewed = lease.spec.renew_time if lease else None
            alive = renewed is not None and (now - renewed).total_seconds() < _STALE_LEASE
            return TaskInfo(
                task_id=task_id, backend=self.name, created=meta.creation_timestamp.timestamp(),
                status="RUNNING" if alive else "ORPHANED", cpu=notes.get("womm/cpu", ""),
                mem=notes.get("womm/mem", ""), ready=ready, desired=desired,
                cwd=notes.get("womm/cwd", ""), command=notes.get("womm/command", ""),
                owner=meta.labels.get(LABEL_OWNER, ""))

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
