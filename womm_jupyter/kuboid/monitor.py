"""Following an experiment's pods: a watch from a listed resourceVersion, never polling.

:func:`watch_pods` runs on a thread of its own and puts what it sees in the experiment's
inbox: ``("pod", type, pod)`` for each ADDED, MODIFIED or DELETED pod, ``("relist", pods)``
after the API server answered 410 Gone (the version was too old to watch from), and
``("error", exc)`` when even the list failed. :func:`terminated` and
:data:`VANISHED_REASONS` tell a pod that failed by itself from one that was removed.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from ..kube.client import ApiError, Watch

__all__ = ["VANISHED_REASONS", "terminated", "watch_pods"]

# A Failed pod with one of these pod-level reasons did not fail by itself: it was removed.
VANISHED_REASONS = {"Evicted", "NodeLost", "Shutdown", "NodeShutdown", "Terminated",
                    "Preempting", "DeletionByTaintManager", "UnexpectedAdmissionError"}


def watch_pods(core: Any, namespace: str, selector: str, resource_version: str,
               stop: threading.Event, inbox: queue.Queue[tuple[Any, ...]]) -> None:
    """Put the events of the pods matching ``selector`` in ``inbox`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            stream = Watch()
            for event in stream.stream(core.list_namespaced_pod, namespace,
                                       label_selector=selector, timeout_seconds=30,
                                       resource_version=resource_version,
                                       allow_watch_bookmarks=True):
                if stop.is_set():
                    stream.stop()
                    return
                pod = event["object"]
                resource_version = pod.metadata.resource_version or resource_version
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    inbox.put(("pod", event["type"], pod))
        except ApiError as exc:
            if stop.is_set():
                return
            if exc.status != 410:  # anything else: try the same version again shortly
                time.sleep(1)
                continue
            # 410 Gone: the version is too old to watch from; list again.
            try:
                listed = core.list_namespaced_pod(namespace, label_selector=selector)
            except Exception as list_exc:
                inbox.put(("error", list_exc))
                return
            resource_version = listed.metadata.resource_version
            inbox.put(("relist", listed.items))
        except Exception:  # a dropped connection: watch again from the last version
            if stop.is_set():
                return
            time.sleep(1)


def terminated(pod: Any) -> Any:
    """The terminated state of the pod's container, or None while none ended."""
    for status in pod.status.container_statuses or []:
        if status.state and status.state.terminated:
            return status.state.terminated
    return None
