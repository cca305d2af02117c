"""The pure parts of a run: the share table, options -> LaunchPlan, GNU parallel's job
inputs, and job records <-> JSON (what `womm finish` downloads from the cluster)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from womm_jupyter import share
from womm_jupyter.backends import LocalBackend
from womm_jupyter.backends.base import Backend, LaunchPlan, TaskInfo
from womm_jupyter.errors import OptionError, ShareError
from womm_jupyter.options import ParallelOptions, SetupOptions, resolve
from womm_jupyter.run import gnu
from womm_jupyter.run.plan import plan_run, shell_plan, task_record
from womm_jupyter.run.records import (
    CSV_FIELDS,
    JobRecord,
    csv_row,
    record_from_json,
    record_json,
    records_frame,
)
from womm_jupyter.setup.testbed import dependencies
from womm_jupyter.share.session import ShareSession

# -- the share table ------------------------------------------------------------------------

def test_the_table_is_the_setup_menu_of_the_design():
    menu = [f"{m.number}) {m.label}" for m in share.METHODS]
    assert menu == ["1) lazily", "2) eagerly (no syncback)",
                    "3) eagerly (syncback on complete, not recommended)", "4) not at all"]
    assert share.NAMES == ("lazy", "eager", "eager-syncback", "none")
    assert share.NUMBERED_NAMES == "1 lazy, 2 eager, 3 eager-syncback, 4 none"


@pytest.mark.parametrize(("answer", "name"), [
    ("1", "lazy"), ("2", "eager"), ("3", "eager-syncback"), ("4", "none"), ("lazy", "lazy"),
    ("eager-syncback", "eager-syncback"), ("5", "5"), ("nfs", "nfs")])
def test_share_name_maps_menu_answers_and_passes_the_rest(answer, name):
    assert share.share_name(answer) == name


def test_every_face_offers_the_tables_choices():
    for options in (ParallelOptions, SetupOptions):
        assert options.__dataclass_fields__["share"].metadata["choices"] == share.CHOICES
    assert share.CHOICES == ("1", "2", "3", "4", "lazy", "eager", "eager-syncback", "none")


@pytest.mark.parametrize(("method", "needs"), [
    ("lazy", ["perl", "sshfs"]), ("eager", ["perl", "rsync"]),
    ("eager-syncback", ["perl", "rsync"]), ("none", ["perl"]), ("unknown", ["perl"])])
def test_the_image_check_asks_for_what_the_table_says(method, needs):
    assert [dep.name for dep in dependencies(method)] == needs
    assert all(dep.test == f"command -v {dep.name}" for dep in dependencies(method)[1:])


@pytest.mark.parametrize(("method", "allowed"), [
    ("lazy", False), ("eager", True), ("eager-syncback", False), ("none", True)])
def test_async_refuses_the_methods_that_need_the_client(method, allowed):
    refusal = share.by_name(method).async_refusal
    assert (refusal == "") is allowed
    assert allowed or (refusal.startswith("--async cannot be used with")
                       and f" {method} share" in refusal)


# -- the share session's decisions (no worker is started) -------------------------------------

class _Pods(Backend):
    """A backend whose workers have a filesystem of their own, as pods do; nothing starts."""

    name = "kubernetes"
    own_filesystem = True
    namespace = "ns"

    def launch(self, plan: LaunchPlan, on_gone) -> str:
        raise AssertionError("a share session never launches")

    def diagnose(self, worker: str) -> str:
        return ""

    def delete(self) -> str:
        return ""

    def tasks(self, all_owners: bool) -> list[TaskInfo]:
        return []

    def finish(self, task_id: str) -> list[str]:
        return []


def _session(backend: Backend, cwd: Path, value: str, fuse: bool = False) -> ShareSession:
    return ShareSession(backend, cwd, "abc", value=value, privileged_fuse=fuse, context="",
                        start_timeout=5)


def test_local_workers_use_the_directory_itself(tmp_path):
    session = _session(LocalBackend(), tmp_path, "2")
    assert session.method.name == "none"
    assert session.notes() == [f"womm: share eager: the local workers use {tmp_path} itself"]
    assert session.notes() == []
    plan = _launch_plan(tmp_path)
    assert session.plan(plan) is plan  # nothing to prepare
    session.after_run()
    session.close()


def test_pods_get_the_methods_per_worker_step(tmp_path):
    plan = _launch_plan(tmp_path)
    eager = _session(_Pods(), tmp_path, "eager")
    assert eager.plan(plan).prepare == eager.prepare and not eager.plan(plan).fuse
    assert eager.notes() == []
    lazy = _session(_Pods(), tmp_path, "1", fuse=True)
    assert lazy.plan(plan).fuse and lazy.plan(plan).prepare == lazy.prepare
    assert _session(_Pods(), tmp_path, "none").plan(plan) is plan
    ignored = _session(_Pods(), tmp_path, "3", fuse=True)
    assert ignored.notes() == ["womm: --privileged-fuse ignored: it serves --share lazy only "
                               "(this run's share: eager-syncback); the pods run unprivileged"]


def test_a_lazy_share_on_pods_needs_the_privileged_fuse_opt_in(tmp_path):
    with pytest.raises(ShareError, match="needs --privileged-fuse"):
        _session(_Pods(), tmp_path, "lazy")
    with pytest.raises(OptionError, match="--share must be one of"):
        _session(_Pods(), tmp_path, "nfs")


# -- options -> LaunchPlan ----------------------------------------------------------------

def _launch_plan(cwd: Path) -> LaunchPlan:
    options = resolve(ParallelOptions, {"kube_pods": 1}, environ={}, config={})
    return plan_run(options, task_id="abc", cwd=cwd, argv=("echo",), task_dir=cwd / "t",
                    backend_name="local").main


@pytest.mark.parametrize(("explicit", "backend", "remote", "local", "slots"), [
    ({"kube_pods": 3}, "local", 3, 0, 1),
    ({"kube_pods": 2, "procs_per_pod": 4, "image": "img"}, "docker", 2, 0, 4),
    ({"kube_pods": 1, "local_procs": 2, "image": "img"}, "kubernetes", 1, 1, 1),
])
def test_plan_from_options(tmp_path, explicit, backend, remote, local, slots):
    options = resolve(ParallelOptions, {"kube_cpu": 0.5, "kube_mem": "1Gi", **explicit},
                      environ={}, config={})
    plan = plan_run(options, task_id="k3xq9m2a", cwd=tmp_path, argv=("echo", "a b"),
                    task_dir=tmp_path / "t", backend_name=backend)
    main = plan.main
    assert [w.name for w in main.workers] == [f"womm-task-k3xq9m2a-{i}" for i in range(remote)]
    assert all(w.slots == slots for w in main.workers)
    assert [w.socket for w in main.workers] == [tmp_path / "t" / "w" / str(i) / "agent.sock"
                                                for i in range(remote)]
    assert (main.cpu, main.memory, main.image) == (0.5, "1Gi", options.image)
    assert main.command == "echo 'a b'"
    assert main.client_path == str(tmp_path / "t" / "sh")
    assert (plan.local is not None) == bool(local)
    if plan.local:
        assert [(w.name, w.slots) for w in plan.local.workers] == [
            ("womm-task-k3xq9m2a-local", options.local_procs)]
    assert len(plan.workers) == remote + local
    record = task_record(plan, backend)
    assert (record["cpu"], record["mem"], record["desired"], record["backend"]) == (
        "0.5", "1Gi", remote + local, backend)


@pytest.mark.parametrize("backend", ["docker", "kubernetes"])
def test_container_backends_need_an_image(tmp_path, backend):
    options = resolve(ParallelOptions, {"kube_pods": 1}, environ={}, config={})
    with pytest.raises(OptionError, match=f"--image is required on the {backend} backend"):
        plan_run(options, task_id="abc", cwd=tmp_path, argv=(), task_dir=tmp_path,
                 backend_name=backend)


def test_the_shell_plan_is_one_pod_without_slots(tmp_path):
    from womm_jupyter.kube.manifests import shell_pod

    plan = shell_plan(task_id="abc", cwd=tmp_path, command=None, cpu=2.0, memory="1Gi",
                      image="img", shared_claim="")
    assert (plan.workers, plan.command, plan.shell) == ((), "womm shell", "/bin/sh")
    container = shell_pod(plan, "womm-shell-abc", "agent")["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


# -- GNU parallel's job inputs --------------------------------------------------------------

@pytest.mark.parametrize(("argv", "fed", "expected"), [
    (("echo",), ["a", "b"], [("a",), ("b",)]),
    (("echo", ":::", "a", "b"), None, [("a",), ("b",)]),
    (("echo", ":::", "a", "b", ":::", "1", "2"), None,
     [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]),
    (("echo", ":::", "a", "b", ":::+", "1", "2"), None, [("a", "1"), ("b", "2")]),
    (("-N", "2", "echo", ":::", "a", "b"), None, None),  # grouped: not certain
    (("--pipe", "wc"), ["a"], None),
    (("echo", "::::", "file"), None, None),  # GNU parallel reads the file
    (("echo", ":::", "a"), ["x"], None),  # stdin is ignored when ::: is given
    (("echo",), [], None),
])
def test_job_inputs_and_count(argv, fed, expected):
    inputs_of = gnu.job_inputs(argv, fed)
    if expected is None:
        assert inputs_of(1) is None and gnu.job_count(argv, fed) is None
        return
    assert [inputs_of(seq) for seq in range(1, len(expected) + 1)] == expected
    assert inputs_of(0) is None and inputs_of(len(expected) + 1) is None
    assert gnu.job_count(argv, fed) == len(expected)


# -- job records <-> JSON ---------------------------------------------------------------------

def _record(seq: int = 3, inputs: tuple[str, ...] | None = ("a b", "ü")) -> JobRecord:
    return JobRecord(seq=seq, inputs=inputs, worker="womm-task-abc-0",
                     start=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), runtime=1.25,
                     exit_code=2, signal=0, stdout="out\n", stderr="err\n", command="echo a")


@pytest.mark.parametrize("inputs", [("a b", "ü"), None, ()])
def test_records_survive_json(inputs):
    record = _record(inputs=inputs)
    row = json.loads(json.dumps(record_json(record)))
    assert row["start"] == "2026-01-02T03:04:05.678000+00:00"
    assert record_from_json(row) == record


def test_the_csv_row_is_the_frame_without_outputs():
    record = _record()
    assert CSV_FIELDS == tuple(c for c in records_frame([record]).columns
                               if c not in ("stdout", "stderr"))
    handle = io.StringIO()
    csv.writer(handle).writerow(csv_row(record))
    assert handle.getvalue() == ('3,"[""a b"", ""\\u00fc""]",womm-task-abc-0,'
                                 '2026-01-02T03:04:05.678000+00:00,1.25,2,0,echo a\r\n')


@pytest.mark.parametrize(("change", "message"), [
    ({"seq": "../../etc/x"}, "seq '../../etc/x' is not a job number"),
    ({"seq": "3"}, "seq '3' is not a job number"),
    ({"seq": -1}, "seq -1 is not a job number"),
    ({"seq": True}, "seq True is not a job number"),
    ({"seq": 3.0}, "seq 3.0 is not a job number"),
    ({"stdout": None}, "job 3: stdout is not text"),
    ({"exit_code": "0"}, "job 3: exit_code is not a number"),
    ({"inputs": "a"}, "job 3: inputs is not a list of text"),
    ({"start": "yesterday"}, "job 3: start is not an ISO time"),
])
def test_a_malformed_record_is_refused(change, message):
    row = {**record_json(_record()), **change}
    with pytest.raises(ValueError) as caught:
        record_from_json(row)
    assert str(caught.value) == message


def test_a_record_must_be_an_object():
    with pytest.raises(ValueError, match="a record is not a JSON object: \\[3\\]"):
        record_from_json([3])


@pytest.mark.parametrize("task_id", ["x/../../escaped", "/tmp/x", "..", "k3xq9m2a/.."])
def test_download_takes_ids_not_paths(tmp_path, task_id):
    from womm_jupyter.run.detached import download

    into = tmp_path / "here"
    into.mkdir()
    assert download(task_id, into) is None  # refused before the cluster is asked
    assert list(tmp_path.rglob("*")) == [into]
