"""Every notebook in notebooks/ executed headlessly (nbclient, a real ipykernel) against the
real Docker backend; assertions read the executed notebook's outputs and saved widget state.
notebooks/setup.ipynb also gets a local docker-registry to push to (``setup_env``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import nbclient
import nbformat
import pytest
from support.registry import setup_images

# These need the test cluster: tests/cluster/test_cluster_notebooks.py executes them.
CLUSTER_NOTEBOOKS = {"cluster.ipynb", "experiments.ipynb"}
NOTEBOOKS = sorted(path for path in (Path(__file__).resolve().parent.parent / "notebooks")
                   .glob("*.ipynb") if path.name not in CLUSTER_NOTEBOOKS)
IMAGE = os.environ.get("WOMM_TEST_IMAGE", "womm-base:bookworm")
CHECK = "WOMM-CHECK "

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_engine(monkeypatch):
    # Like the rest of the suite: a missing engine or image fails, it is never skipped.
    import docker

    try:
        client = docker.from_env(timeout=5)
        client.images.get(IMAGE)
    except Exception as exc:
        pytest.fail(f"needs a running Docker engine with image {IMAGE} (tools/base-image.sh "
                    f"builds it): {exc}", pytrace=False)
    for name in [n for n in os.environ if n.startswith("WOMM_")]:
        monkeypatch.delenv(name)
    # The kernel inherits this: the notebooks use the embedded default, whatever kubeconfig
    # this machine may hold for the cluster tests.
    monkeypatch.setenv("WOMM_BACKEND", "docker")
    return client


@pytest.fixture
def setup_env(docker_engine, monkeypatch, tmp_path, request) -> Iterator[None]:
    """notebooks/setup.ipynb: its registry prefix and a user config of its own; the images its
    setup made are removed afterwards."""
    registry = request.getfixturevalue("registry")
    monkeypatch.setenv("WOMM_SETUP_PREFIX", registry.prefix)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    before = setup_images(docker_engine)
    yield
    for _ in range(4):  # children first
        made = setup_images(docker_engine) - before
        for image_id in made:
            try:
                docker_engine.images.remove(image_id, force=True)
            except Exception:
                pass
        if not made:
            break


def _execute(nb, directory: Path, **settings):
    settings.setdefault("timeout", 300)
    client = nbclient.NotebookClient(nb, kernel_name="python3",
                                     resources={"metadata": {"path": str(directory)}},
                                     **settings)
    client.execute()
    return nb


def _streams(cell, name: str) -> str:
    return "".join(o["text"] for o in cell.outputs
                   if o.output_type == "stream" and o.name == name)


def _cell(nb, starts: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts))


def _widget_state(nb) -> dict:
    return nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def _check_payload(nb) -> dict:
    text = _streams(nb.cells[-1], "stdout")
    assert text.startswith(CHECK), text
    return json.loads(text[len(CHECK):])


def _no_containers_left(client, *task_ids: str) -> None:
    for task_id in task_ids:
        left = client.containers.list(all=True, filters={"label": f"womm/task={task_id}"})
        assert left == [], f"containers of task {task_id} left behind: {left}"


def _check_quickstart(nb, client) -> None:
    cell = _cell(nb, "%%womm_parallel")
    inputs = cell.source.splitlines()[1:]
    assert inputs == ["apple", "banana", "cherry", "durian"]
    # Streamed output, in input order (-k), and the workers created then deleted.
    assert _streams(cell, "stdout") == "".join(f"{word} has {len(word)} letters\n"
                                               for word in inputs)
    payload = _check_payload(nb)
    err = _streams(cell, "stderr")
    assert f"containers/womm-task-{payload['run']} created" in err
    assert f'containers "womm-task-{payload["run"]}" deleted' in err
    # The progress widget: displayed, and its final model state says every job is done.
    views = [o for o in cell.outputs if o.output_type == "display_data"
             and "application/vnd.jupyter.widget-view+json" in o.data]
    assert len(views) == 1
    state = _widget_state(nb)
    box = state[views[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]]
    bar, label = (state[ref.removeprefix("IPY_MODEL_")]["state"]
                  for ref in box["state"]["children"])
    assert bar["_model_name"] == "IntProgressModel"
    assert bar["value"] == bar["max"] == len(inputs)
    assert (bar["description"], bar["bar_style"]) == ("done", "success")
    assert label["value"] == "4/4 done · 0 failed · 0 running · workers 2/2 ready"
    # The cell's value is the run: its summary table.
    result = next(o for o in cell.outputs if o.output_type == "execute_result")
    assert "<table>" in result.data["text/html"] and payload["run"] in result.data["text/html"]
    # run.df: one row per input, shown as a table.
    assert payload["inputs"] == [[word] for word in inputs]
    frame = next(o for o in _cell(nb, "run.df").outputs if o.output_type == "execute_result")
    assert "<table" in frame.data["text/html"]
    for word in inputs:
        assert f"{word} has {len(word)} letters" in frame.data["text/plain"]
    # %womm_status saw the background run while it ran.
    status = next(o for o in _cell(nb, "%womm_status").outputs
                  if o.output_type == "execute_result")
    assert payload["background"] in status.data["text/html"]
    assert "RUNNING" in status.data["text/plain"]
    _no_containers_left(client, payload["run"], payload["background"])


def _check_setup(nb, client) -> None:
    setup = _streams(_cell(nb, "import os"), "stdout")
    assert "Does it work?" not in setup
    config = json.loads(Path(_check_payload(nb)["config"]).read_text())
    assert config["environment"] == {"GREETING": "set up in the notebook"}
    image = config["image"]
    assert image.startswith(os.environ["WOMM_SETUP_PREFIX"] + "womm-image-"), image
    assert f"jobs now run {image}" in setup
    cell = _cell(nb, "%%womm_parallel")
    assert "--image" not in cell.source
    inputs = cell.source.splitlines()[1:]
    assert inputs == ["first", "second"]
    expected = [f"{word}: hello from the tool, set up in the notebook\n" for word in inputs]
    assert _streams(cell, "stdout") == "".join(expected)
    payload = _check_payload(nb)
    # run.df: one row per input, the tool's output and the variable in each job's stdout.
    frame = next(o for o in _cell(nb, "run.df").outputs if o.output_type == "execute_result")
    assert "<table" in frame.data["text/html"]
    assert payload["inputs"] == [[word] for word in inputs]
    assert payload["stdout"] == expected
    assert payload["exit_codes"] == [0, 0]
    _no_containers_left(client, payload["run"])


_CHECKS = {
    "quickstart.ipynb": (
        "import json\n"
        "print('WOMM-CHECK ' + json.dumps({'run': run.task_id, "
        "'background': background.task_id, 'inputs': [list(i) for i in run.df['inputs']]}))",
        _check_quickstart),
    "setup.ipynb": (
        "import json, os\n"
        "print('WOMM-CHECK ' + json.dumps({'run': run.task_id, "
        "'config': os.path.abspath('.womm/config.json'), "
        "'inputs': [list(i) for i in run.df['inputs']], 'stdout': list(run.df['stdout']), "
        "'exit_codes': [int(c) for c in run.df['exit_code']]}))",
        _check_setup),
}
# Notebooks that need more than the Docker engine: the fixture that provides it.
_NEEDS = {"setup.ipynb": "setup_env"}


def test_every_notebook_has_checks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    assert {path.name for path in NOTEBOOKS} == set(_CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, docker_engine, tmp_path, request):
    if path.name in _NEEDS:
        request.getfixturevalue(_NEEDS[path.name])
    nb = nbformat.read(path, as_version=4)
    source, check = _CHECKS[path.name]
    nb.cells.append(nbformat.v4.new_code_cell(source))
    _execute(nb, tmp_path)
    nbformat.write(nb, tmp_path / path.name)  # kept with the test's files for inspection
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"{path.name}: {cell.source!r} raised {errors}"
    check(nb, docker_engine)


def test_kernel_interrupt_cancels_the_run(docker_engine, tmp_path):
    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        new("%load_ext womm_jupyter"),
        new(f"%%womm_parallel --kube-pods 2 --image {IMAGE} -o r -- sleep {{}}\n0\n0\n60\n60"),
        new("import json\nprint('WOMM-CHECK ' + json.dumps({'status': r.status, 'run': "
            "r.task_id, 'inputs': [list(x.inputs) for x in r.records]}))"),
    ])
    # nbclient interrupts the kernel when a cell outlasts its timeout: the first two jobs are
    # done by then, the other two sleep.
    _execute(nb, tmp_path, timeout=25, interrupt_on_timeout=True, allow_errors=True)
    cell = nb.cells[1]
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["KeyboardInterrupt"]
    payload = _check_payload(nb)
    assert payload["status"] == "cancelled"
    assert payload["inputs"] == [["0"], ["0"]]
    err = _streams(cell, "stderr")
    assert f'containers "womm-task-{payload["run"]}" deleted' in err
    assert "womm: cancelled; the workers were deleted; 2 finished jobs kept in r.records" in err
    _no_containers_left(docker_engine, payload["run"])
