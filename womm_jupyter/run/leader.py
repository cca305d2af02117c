"""The --async leader: ``python3 -m womm_jupyter.run.leader``, the Job that runs a detached
task's coordinator in the cluster (the client's side is ``detached.py``, which describes the
task's objects).

It reads the task's ``spec.json`` and ``stdin`` from the root ConfigMap (mounted), waits for
the client's upload of an eager share, runs the same :class:`~womm_jupyter.run.coordinator.
Dispatch` as the client would, prints GNU parallel's output to its log (``womm logs ID -f``)
and saves the job records while jobs finish: JSON lines in ConfigMaps ``-output-<n>`` of at
most :data:`PART_BYTES`, then the outcome in ``-result``. A process entry point: it prints.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BackendError, ShareError, WommError
from ..kube import manifests
from ..kube.client import ApiError, clients
from ..options import ParallelOptions
from ..share import by_name
from .coordinator import Dispatch, Event
from .detached import SHARE_READY
from .records import JobRecord, record_json

__all__ = ["PART_BYTES", "leader_main"]

PART_BYTES = 512 * 1024  # well under a ConfigMap's 1 MiB, base64 included
_UPLOAD_WAIT = 900  # seconds the leader waits for the client's upload of an eager share


class _Sink:
    """Job records as JSON lines into ConfigMaps ``-output-<n>`` while the run goes on."""

    def __init__(self, core: Any, task_id: str, owner: str, root_uid: str,
                 namespace: str) -> None:
        self.core, self.task_id, self.owner = core, task_id, owner
        self.root_uid, self.namespace = root_uid, namespace
        self.part = 0
        self.buffer = b""  # the current part's bytes (rewritten whole on each flush)
        self.pending: list[bytes] = []
        self.lock = threading.Lock()  # records arrive on the run's thread, flushes on another

    def add(self, record: JobRecord) -> None:
        line = json.dumps(record_json(record)).encode() + b"\n"
        with self.lock:
            self.pending.append(line)

    def flush(self) -> None:
        with self.lock:
            data = b"".join(self.pending)
            self.pending.clear()
        while data:
            room = PART_BYTES - len(self.buffer)
            self.buffer += data[:room]
            data = data[room:]
            self._write()
            if len(self.buffer) >= PART_BYTES:
                self.part += 1
                self.buffer = b""

    def _write(self) -> None:
        body = manifests.detached_part(task_id=self.task_id, owner=self.owner,
                                       root_uid=self.root_uid, role="output", index=self.part,
                                       data_b64=base64.b64encode(self.buffer).decode())
        for _attempt in range(5):
            try:
                try:
                    self.core.replace_namespaced_config_map(body["metadata"]["name"],
                                                            self.namespace, body)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    self.core.create_namespaced_config_map(self.namespace, body)
                return
            except ApiError as exc:
                print(f"womm: leader: saving output failed ({exc.reason}); retrying",
                      file=sys.stderr, flush=True)
                time.sleep(1)
        raise BackendError("the leader could not save job output into ConfigMaps")

    def result(self, outcome: dict[str, Any]) -> None:
        body = manifests.detached_part(
            task_id=self.task_id, owner=self.owner, root_uid=self.root_uid, role="result",
            index=0, data_b64=base64.b64encode(json.dumps(outcome).encode()).decode())
        self.core.create_namespaced_config_map(self.namespace, body)


def _await_upload(cwd: Path) -> None:
    """In the leader: wait until the client's upload of the eager share is whole."""
    print(f"womm: waiting for the client to upload {cwd} (eager share)", file=sys.stderr,
          flush=True)
    ready = Path(SHARE_READY)
    deadline = time.monotonic() + _UPLOAD_WAIT
    while not ready.exists():  # a local file the client creates by exec: nothing to watch
        if time.monotonic() > deadline:
            raise ShareError(f"the client did not finish uploading {cwd} within {_UPLOAD_WAIT}"
                             " s (was it stopped?): run the task again.")
        time.sleep(0.5)
    print("womm: the project directory is here; the workers get it before they take jobs",
          file=sys.stderr, flush=True)


def leader_main() -> int:
    """Entry point of the leader Job (``python3 -m womm_jupyter.run.leader``)."""
    task_id = os.environ["WOMM_TASK_ID"]
    root_uid = os.environ["WOMM_ROOT_UID"]
    owner = os.environ.get("WOMM_OWNER", "")
    inputs_dir = Path(manifests.LEADER_MOUNT)
    spec = json.loads((inputs_dir / "spec.json").read_text())
    built = clients()
    core, namespace = built.core, built.namespace
    sink = _Sink(core, task_id, owner, root_uid, namespace)
    options = ParallelOptions(**spec["options"])
    argv = list(spec["argv"])
    cwd = Path(spec["cwd"])
    cwd.mkdir(parents=True, exist_ok=True)  # the workers run there too (an empty directory
    # unless a share fills it)
    lines: list[str] | None = None
    stdin_file = inputs_dir / "stdin"
    data = stdin_file.read_bytes() if stdin_file.exists() else None
    stdin_handle = None
    if data is not None:
        null = "-0" in argv or "--null" in argv
        try:
            text = data.decode("utf-8")
            lines = text.split("\0" if null else "\n")
            if lines and lines[-1] == "":
                lines.pop()
        except UnicodeDecodeError:
            stdin_handle = open(stdin_file, "rb")  # GNU parallel reads the raw bytes
    else:
        lines = []  # inputs come from ::: arguments; nothing on stdin

    def emit(event: Event) -> None:
        if event.kind == "stdout":
            sys.stdout.buffer.write(event.data)
            sys.stdout.buffer.flush()
        elif event.kind == "stderr":
            sys.stderr.buffer.write(event.data)
            sys.stderr.buffer.flush()
        elif event.kind == "record":
            sink.add(event.data)
        elif event.text:
            print(event.text, file=sys.stderr, flush=True)

    dispatch = Dispatch(options, argv, cwd=cwd, emit=emit,
                        inputs=lines if stdin_handle is None else None, stdin=stdin_handle,
                        capture=True, task_id=task_id)
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(
        target=dispatch.cancel, daemon=True).start())
    stop = threading.Event()

    def flusher() -> None:
        while not stop.wait(2.0):
            sink.flush()

    thread = threading.Thread(target=flusher, daemon=True)
    thread.start()
    print(f"womm: leader of task {task_id} in namespace {namespace}", file=sys.stderr,
          flush=True)
    outcome: dict[str, Any] = {"exit_code": None, "error": "",
                               "ended": dt.datetime.now(dt.UTC).isoformat()}
    try:
        if by_name(options.share).uploads:  # submit() let only an eager share through
            _await_upload(cwd)
        outcome["exit_code"] = dispatch.run()
    except KeyboardInterrupt:
        outcome["error"] = "cancelled (the leader was stopped, e.g. by `womm finish`)"
    except WommError as exc:
        outcome["error"] = str(exc)
        print(f"womm: error: {outcome['error']}", file=sys.stderr, flush=True)
    finally:
        stop.set()
        thread.join()
        sink.flush()
    outcome["records"] = len(dispatch.records)
    outcome["ended"] = dt.datetime.now(dt.UTC).isoformat()
    sink.result(outcome)
    print(f"womm: task {task_id} ended: {len(dispatch.records)} jobs, GNU parallel exit "
          f"status {outcome['exit_code']}", file=sys.stderr, flush=True)
    code = outcome["exit_code"]
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(leader_main())
