"""Workers as agent processes on this machine (``--backend local`` and ``--local-procs``)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from .. import _paths, tasks
from ..errors import BackendError
from .base import Backend, GoneCallback, LaunchPlan, TaskInfo

_PIDS_FILE = "local-agents"


def _is_agent(pid: int) -> bool:
    try:
        return b"agent.pl" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class LocalBackend(Backend):
    """Each worker is a womm agent process; jobs run as this user in the working directory."""

    name = "local"

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._plan: LaunchPlan | None = None
        self._deleting = False

    def launch(self, plan: LaunchPlan, on_gone: GoneCallback) -> str:
        self._plan = plan
        agent = str(_paths.transport_file("agent.pl"))
        for worker in plan.workers:
            worker.socket_dir.mkdir(parents=True, exist_ok=True)
            log = open(worker.socket_dir / "agent.log", "wb")
            try:
                proc = subprocess.Popen(
                    [_paths.perl(), agent, "--listen", str(worker.socket), "--name", worker.name,
                     "--cwd", str(plan.cwd), "--shell", plan.shell],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            except OSError as exc:
                raise BackendError(f"could not start the local agent {worker.name}: {exc}") \
                    from exc
            finally:
                log.close()
            self._procs[worker.name] = proc
            threading.Thread(target=self._watch, args=(worker.name, proc, on_gone),
                             daemon=True, name=f"womm-watch-{worker.name}").start()
        tasks.task_dir(plan.task_id).joinpath(_PIDS_FILE).write_text(
            "".join(f"{proc.pid}\n" for proc in self._procs.values()))
        return "processes"

    def _watch(self, name: str, proc: subprocess.Popen[bytes], on_gone: GoneCallback) -> None:
        code = proc.wait()
        assert self._plan is not None
        for worker in self._plan.workers:
            if worker.name == name:
                worker.socket.unlink(missing_ok=True)  # a killed agent leaves it behind
        if not self._deleting:
            on_gone(name, f"agent process exited with status {code}")

    def diagnose(self, worker: str) -> str:
        proc = self._procs.get(worker)
        if proc is None or self._plan is None:
            return ""
        log = next(w.socket_dir for w in self._plan.workers if w.name == worker) / "agent.log"
        state = "running" if proc.poll() is None else f"exited with status {proc.returncode}"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return f"agent {worker} {state}" + (f"\n{tail}" if tail else "")

    def delete(self) -> str:
        self._deleting = True
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return "processes"

    def tasks(self, all_owners: bool) -> list[TaskInfo]:
        rows = []
        for meta in tasks.local_tasks():
            if meta.get("backend") != self.name:
                continue
            pids = self._pids(meta["task_id"])
            rows.append(tasks.task_info(meta, ready=sum(map(_is_agent, pids)),
                                        desired=int(meta.get("desired", len(pids)))))
        return rows

    @staticmethod
    def _pids(task_id: str) -> list[int]:
        path = tasks.task_dir(task_id) / _PIDS_FILE
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def finish(self, task_id: str) -> list[str]:
        deleted = []
        for pid in self._pids(task_id):
            if _is_agent(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                    deleted.append(f"process/{pid}")
                except ProcessLookupError:
                    pass
        return deleted
