"""Workers as containers on a local Docker engine: the embedded default.

Each worker is a container of the task's image whose main process is the womm agent (passed
inline with ``perl -e``, so any image with perl serves). The working directory is
bind-mounted at the same path, and the worker's socket directory at ``/run/womm``, where the
agent's unix socket is reachable from this machine without any network.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .. import _paths, tasks
from ..errors import BackendError, ImageError, MissingToolError
from ..labels import (
    LABEL_OWNER,
    LABEL_TASK,
    MANAGED_BY,
    NOTE_CREATED,
    NOTE_DESIRED,
    NOTE_HOST,
    NOTE_PID,
    describe,
    described,
)
from ..options import parse_memory
from .base import Backend, GoneCallback, LaunchPlan, TaskInfo

_SOCKET_DIR_IN_WORKER = "/run/womm"


def connect(timeout: float = 5.0) -> Any:
    """A docker client that answered a ping, or MissingToolError saying what to do."""
    try:
        import docker
    except ImportError as exc:  # a dependency; only a broken install lacks it
        raise MissingToolError("the docker Python package is missing: pip install docker") \
            from exc
    try:
        client = docker.from_env(timeout=max(1, round(timeout)))  # the SDK takes whole seconds
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise MissingToolError(
            f"no Docker engine answers at {host}: start one (e.g. `dockerd` or "
            "`systemctl start docker`) or choose --backend local.", str(exc)) from exc
    return client


class DockerBackend(Backend):
    """Workers are containers named ``womm-task-<id>-<n>``, labelled with task and owner."""

    name = "docker"

    def __init__(self, client: Any | None = None) -> None:
        self._client = client or connect()
        self._plan: LaunchPlan | None = None
        self._containers: dict[str, Any] = {}
        self._events: Any = None
        self._deleting = False

    def _labels(self, plan: LaunchPlan) -> dict[str, str]:
        return {MANAGED_BY: "womm", LABEL_TASK: plan.task_id, LABEL_OWNER: plan.owner,
                **describe(str(plan.cwd), plan.command[:4000], plan.cpu, plan.memory,
                           host=plan.host, pid=plan.coordinator_pid, created=plan.created,
                           desired=len(plan.workers))}

    def launch(self, plan: LaunchPlan, on_gone: GoneCallback) -> str:
        import docker.errors

        self._plan = plan
        agent_source = _paths.transport_file("agent.pl").read_text()
        try:
            self._client.images.get(plan.image)
        except docker.errors.ImageNotFound:
            try:  # e.g. the project image by digest, pushed by `womm setup` on another machine
                self._client.images.pull(plan.image)
            except docker.errors.APIError as exc:
                raise ImageError(f"image {plan.image} is not on this Docker engine and could "
                                 f"not be pulled ({exc.explanation or exc}): build it "
                                 "(tools/base-image.sh or `womm setup`), or pass --image.") \
                    from None
        # Watch before creating, so that no death goes unseen.
        since = int(time.time()) - 1
        self._events = self._client.events(
            decode=True, since=since,
            filters={"type": "container", "event": "die", "label": f"{LABEL_TASK}={plan.task_id}"})
        threading.Thread(target=self._watch, args=(on_gone,), daemon=True,
                         name=f"womm-docker-events-{plan.task_id}").start()
        labels = self._labels(plan)
        uid, gid = os.getuid(), os.getgid()
        for worker in plan.workers:
            worker.socket_dir.mkdir(parents=True, exist_ok=True)
            command = ["perl", "-e", agent_source, "--", "--listen",
                       f"{_SOCKET_DIR_IN_WORKER}/agent.sock", "--name", worker.name,
                       "--cwd", str(plan.cwd), "--shell", plan.shell,
                       "--alias", plan.client_path]
            try:
                container = self._client.containers.create(
                    plan.image, command=command, name=worker.name, labels=labels,
                    working_dir=str(plan.cwd), user=f"{uid}:{gid}",
                    volumes={str(plan.cwd): {"bind": str(plan.cwd), "mode": "rw"},
                             str(worker.socket_dir): {"bind": _SOCKET_DIR_IN_WORKER,
                                                      "mode": "rw"}},
                    nano_cpus=int(plan.cpu * 1e9),
                    mem_limit=parse_memory(plan.memory),
                    # Engines here run without a bridge; jobs share this machine's network as
                    # a pod shares its node's reachability.
                    network_mode="host", init=True, environment={"HOME": "/tmp"})
                self._containers[worker.name] = container
                container.start()
            except docker.errors.APIError as exc:
                raise BackendError(f"Docker could not start worker {worker.name} from image "
                                   f"{plan.image}: {exc.explanation or exc}") from exc
        return "containers"

    def _watch(self, on_gone: GoneCallback) -> None:
        try:
            for event in self._events:
                name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
                if name in self._containers and not self._deleting:
                    assert self._plan is not None
                    for worker in self._plan.workers:
                        if worker.name == name:
                            worker.socket.unlink(missing_ok=True)  # not a live worker now
                    code = event.get("Actor", {}).get("Attributes", {}).get("exitCode", "?")
                    on_gone(name, f"container exited with status {code}")
        except Exception:  # the stream closes when the backend is deleted
            return

    def diagnose(self, worker: str) -> str:
        container = self._containers.get(worker)
        if container is None:
            return ""
        try:
            container.reload()
            state = container.attrs.get("State", {})
            logs = container.logs(tail=20).decode(errors="replace")
        except Exception as exc:
            return f"container {worker}: {exc}"
        summary = f"container {worker}: {state.get('Status')} (exit status {state.get('ExitCode')})"
        return summary + (f"\n{logs}" if logs else "")

    def delete(self) -> str:
        self._deleting = True
        self._remove(list(self._containers.values()))
        if self._events is not None:
            self._events.close()
        return "containers"

    @staticmethod
    def _remove(containers: list[Any]) -> None:
        import docker.errors

        threads = []
        for container in containers:
            def remove(container: Any = container) -> None:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass
            thread = threading.Thread(target=remove, daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()

    def _task_containers(self, all_owners: bool, task_id: str | None = None) -> list[Any]:
        from ..naming import owner

        labels = [f"{MANAGED_BY}=womm"]
        if not all_owners:
            labels.append(f"{LABEL_OWNER}={owner()}")
        if task_id:
            labels.append(f"{LABEL_TASK}={task_id}")
        import docker.errors

        for _ in range(4):
            try:
                return list(self._client.containers.list(all=True, filters={"label": labels}))
            except docker.errors.NotFound:
                # The SDK inspects each listed container: one removed in between (another
                # run's cleanup) raises NotFound. List again.
                continue
        return list(self._client.containers.list(all=True, filters={"label": labels}))

    def tasks(self, all_owners: bool) -> list[TaskInfo]:
        groups: dict[str, list[Any]] = {}
        for container in self._task_containers(all_owners):
            groups.setdefault(container.labels[LABEL_TASK], []).append(container)
        rows = []
        for task_id, members in groups.items():
            labels = members[0].labels
            meta = {"task_id": task_id, "backend": self.name,
                    "created": labels.get(NOTE_CREATED, 0), "pid": int(labels.get(NOTE_PID, 0)),
                    "host": labels.get(NOTE_HOST), **described(labels),
                    "owner": labels.get(LABEL_OWNER)}
            running = sum(1 for c in members if c.status == "running")
            rows.append(tasks.task_info(meta, ready=running,
                                        desired=int(labels.get(NOTE_DESIRED, len(members)))))
        return rows

    def finish(self, task_id: str) -> list[str]:
        containers = self._task_containers(all_owners=True, task_id=task_id)
        self._remove(containers)
        return [f"containers/womm-task-{task_id}"] if containers else []
