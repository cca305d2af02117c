"""The cluster notebooks of notebooks/ executed headlessly (nbclient, a real ipykernel)
against the real cluster: the kernel's environment points KUBECONFIG at the test cluster and
WOMM_IMAGE / WOMM_NAMESPACE at its base image and a fresh namespace. Assertions read the
executed notebook's outputs and saved widget state, then the namespace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbclient
import nbformat
import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CHECK = "WOMM-CHECK "


@pytest.fixture
def kernel_env(cluster, namespace, monkeypatch):
    for name in [n for n in os.environ if n.startswith("WOMM_")]:
        monkeypatch.delenv(name)
    # The kernel inherits this environment.
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    monkeypatch.setenv("WOMM_IMAGE", cluster.base_image)
    monkeypatch.setenv("WOMM_NAMESPACE", namespace)
    return namespace


def _run(name: str, check_source: str, directory: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(check_source))
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(directory)}}).execute()
    nbformat.write(nb, directory / name)  # kept with the test's files for inspection
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"{name}: {cell.source!r} raised {errors}"
    text = _streams(nb.cells[-1], "stdout")
    assert text.startswith(CHECK), text
    return nb, json.loads(text[len(CHECK):])


def _streams(cell, name: str) -> str:
    return "".join(o["text"] for o in cell.outputs
                   if o.output_type == "stream" and o.name == name)


def _cell(nb, starts: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts))


def _result(cell):
    return next(o for o in cell.outputs if o.output_type == "execute_result")


def _widget_parts(nb, cell) -> list[dict]:
    views = [o for o in cell.outputs if o.output_type == "display_data"
             and "application/vnd.jupyter.widget-view+json" in o.data]
    assert len(views) == 1
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    box = state[views[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]]
    return [state[ref.removeprefix("IPY_MODEL_")]["state"] for ref in box["state"]["children"]]


def _leftovers(cluster, namespace) -> list[str]:
    api = cluster.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    coordination = client.CoordinationV1Api(api)
    selector = "app.kubernetes.io/managed-by=womm"
    return ([f"pod/{o.metadata.name}" for o in
             core.list_namespaced_pod(namespace, label_selector=selector).items]
            + [f"deployment/{o.metadata.name}" for o in
               apps.list_namespaced_deployment(namespace, label_selector=selector).items]
            + [f"configmap/{o.metadata.name}" for o in
               core.list_namespaced_config_map(namespace, label_selector=selector).items]
            + [f"lease/{o.metadata.name}" for o in
               coordination.list_namespaced_lease(namespace, label_selector=selector).items])


def _wait_no_leftovers(cluster, namespace, timeout=60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while (left := _leftovers(cluster, namespace)) and time.monotonic() < deadline:
        time.sleep(0.5)  # pods of a deleted Deployment go asynchronously
    assert left == []


def test_cluster_notebook(cluster, kernel_env, tmp_path):
    namespace = kernel_env
    nb, payload = _run("cluster.ipynb", (
        "import json\n"
        "print('WOMM-CHECK ' + json.dumps({'run': run.task_id, 'status': run.status, "
        "'inputs': [list(i) for i in run.df['inputs']], 'workers': list(run.df['worker'])}))"),
        tmp_path)
    cell = _cell(nb, "%%womm_parallel")
    inputs = cell.source.splitlines()[1:]
    assert inputs == ["apple", "banana", "cherry"]
    assert payload["status"] == "done"
    # run.df: one row per input, in order; each job ran in a pod of the run's Deployment.
    assert payload["inputs"] == [[word] for word in inputs]
    assert all(worker for worker in payload["workers"])
    assert _streams(cell, "stdout") == "".join(f"{word} has {len(word)} letters\n"
                                               for word in inputs)
    bar, label = _widget_parts(nb, cell)
    assert bar["value"] == bar["max"] == len(inputs)
    assert (bar["description"], bar["bar_style"]) == ("done", "success")
    assert label["value"].startswith("3/3 done · 0 failed")
    frame = _result(_cell(nb, "run.df"))
    assert "<table" in frame.data["text/html"]
    for word in inputs:
        assert f"{word} has {len(word)} letters" in frame.data["text/plain"]
    # %womm_status: the finished run is not listed (it cleaned up after itself).
    status = _result(_cell(nb, "%womm_status"))
    assert payload["run"] not in status.data["text/plain"]
    _wait_no_leftovers(cluster, namespace)


def test_experiments_notebook(cluster, kernel_env, tmp_path):
    namespace = kernel_env
    nb, payload = _run("experiments.ipynb", (
        "import json\n"
        "print('WOMM-CHECK ' + json.dumps({'id': exp.id, 'status': exp.status, "
        "'rows': exp.df.to_dict('records')}))"), tmp_path)
    cell = _cell(nb, "%%womm_experiment")
    commands = cell.source.splitlines()[1:]
    assert payload["status"] == "done"
    rows = payload["rows"]
    # One row per task line, in order, each done with one pod and a log in ./logs.
    assert [row["command"] for row in rows] == commands
    assert [row["line"] for row in rows] == [1, 2, 3]
    assert [row["state"] for row in rows] == ["done"] * 3
    assert [row["attempts"] for row in rows] == [1, 1, 1]
    assert all(row["pod"].startswith(f"womm-{payload['id']}-") for row in rows)
    # The log paths are as -l gave them: relative to the notebook's directory.
    assert all(Path(row["log"]).parent == Path("logs") for row in rows)
    logs = [tmp_path / row["log"] for row in rows]
    assert [path.read_text() for path in logs] == ["4\n", "42\n", "Linux\n"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(p.name for p in logs)
    # The live table's final state: every task listed as done; the progress line.
    table, label = _widget_parts(nb, cell)
    assert table["value"].count("<tr>") == 4
    assert table["value"].count(">done<") == 3
    assert label["value"] == ("done: 3 tasks: 3 done, 0 running, 0 pending, 0 failed, "
                              "0 rescheduled, 0 retried")
    assert f"experiment {payload['id']}: 3 of 3 tasks done, 0 failed" in _streams(cell,
                                                                                 "stderr")
    # The cell's value and exp.df render as tables.
    assert "<table" in _result(cell).data["text/html"]
    assert "<table" in _result(_cell(nb, "exp.df")).data["text/html"]
    printed = _streams(_cell(nb, "for task in"), "stdout").splitlines()
    assert printed == [f"{commands[0]}  ->  4", f"{commands[1]}  ->  42",
                       f"{commands[2]}  ->  Linux"]
    status = _result(_cell(nb, "%womm_status"))
    assert payload["id"] not in status.data["text/plain"]
    _wait_no_leftovers(cluster, namespace)
