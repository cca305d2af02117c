"""``%%womm_experiment`` through a real IPython shell against the real cluster.

The cell body holds the task lines; the magic returns the experiment whose ``.df`` has one row
per task (line, command, pod, state, attempts, log); logs land in LOGDIR; nothing of the
experiment is left in the namespace. Bad input answers with a one-line UsageError.
"""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError
from kubernetes import client

pytestmark = pytest.mark.cluster


def _line(cluster, namespace, *extra: str) -> str:
    return " ".join(["-i", cluster.base_image, "--kube-cpu", "0.05", "--kube-mem", "32Mi",
                     "--namespace", namespace, *extra])


def _left(cluster, namespace, task_id):
    api = cluster.api_client()
    core, coordination = client.CoreV1Api(api), client.CoordinationV1Api(api)
    selector = f"womm/task={task_id}"
    return (core.list_namespaced_pod(namespace, label_selector=selector).items
            + core.list_namespaced_config_map(namespace, label_selector=selector).items
            + coordination.list_namespaced_lease(namespace, label_selector=selector).items)


def test_cell_tasks_run_and_df_has_one_row_per_task(ip, cluster, namespace, tmp_path, capsys):
    commands = ["echo alpha; echo done", "echo 'beta {}' $HOME; echo done",
                "printf 'gamma\\n'; echo done"]
    cell = "\n".join([commands[0], "", "# a comment is no task", *commands[1:]]) + "\n"
    experiment = ip.run_cell_magic("womm_experiment", _line(cluster, namespace, "-l", "logs",
                                                            "-o", "exp"), cell)
    assert ip.user_ns["exp"] is experiment
    assert experiment.status == "done"
    df = experiment.df
    assert list(df.columns) == ["line", "command", "pod", "state", "attempts", "log"]
    assert df["command"].tolist() == commands  # `{}` and `$HOME` reach the pod untouched
    assert df["line"].tolist() == [1, 4, 5]
    assert df["state"].tolist() == ["done"] * 3
    assert df["attempts"].tolist() == [1, 1, 1]
    assert all(pod.startswith(f"womm-{experiment.id}-") for pod in df["pod"])
    assert len(set(df["pod"])) == 3
    logs = [open(path).read() for path in df["log"]]
    assert logs == ["alpha\ndone\n", "beta {} /tmp\ndone\n", "gamma\ndone\n"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        os.path.basename(path) for path in df["log"])
    err = capsys.readouterr().err
    assert f"experiment {experiment.id}: tasks from the cell, logs in logs" in err
    assert "3 tasks: 3 done, 0 running, 0 pending, 0 failed" in err  # the plain progress line
    assert f"experiment {experiment.id}: 3 of 3 tasks done, 0 failed" in err
    assert _left(cluster, namespace, experiment.id) == []
    html = experiment._repr_html_()
    assert html.count("<tr>") == 4 and "alpha" in html

    # Run again: every task has its log, nothing is scheduled.
    again = ip.run_cell_magic("womm_experiment", _line(cluster, namespace, "-l", "logs"), cell)
    assert again.df["attempts"].tolist() == [0, 0, 0]
    assert again.df["log"].tolist() == df["log"].tolist()
    assert "3 of 3 tasks done (3 already had logs)" in capsys.readouterr().err


def test_live_table_widget_ends_with_every_task_done(ip, cluster, namespace, tmp_path):
    from womm_jupyter.kuboid.experiment import Experiment
    from womm_jupyter.options import ExperimentOptions

    options = ExperimentOptions(image=cluster.base_image, kube_cpu=0.05, kube_mem="32Mi",
                                namespace=namespace, log_dir=str(tmp_path / "logs"))
    experiment = Experiment(options, ["echo one", "exit 3"])
    view = experiment.widget()
    experiment.wait(240)
    experiment.result()
    view.on_event(type("E", (), {"kind": "finished"})())
    assert view.table.value.count("<tr>") == 3
    assert ">done<" in view.table.value and ">failed<" in view.table.value
    assert view.label.value.startswith("failed: 2 tasks: 1 done")
    assert experiment.df["attempts"].tolist() == [1, 3]  # 1 + --max-retries (2)


@pytest.mark.parametrize(("line", "cell", "message"), [
    ("--kube-cpu 0.1", "echo a", "-i"),
    ("-i img --no-such-flag", "echo a", "unrecognized arguments: --no-such-flag"),
    ("-i img --max-retries -1", "echo a", "--max-retries"),
    ("-i img", "\n# only a comment\n", "give the task lines in the cell body"),
    ("-i img -f tasks.txt", "echo a", "not both"),
    ("-i img -o 1x", "echo a", "-o needs a Python name"),
    ("-i img --kube-cpu", "echo a", "expected one argument"),
])
def test_bad_input_is_a_one_line_usage_error(ip, line, cell, message):
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic("womm_experiment", line, cell)
    assert caught.type is UsageError
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_help_is_the_docstring(ip, capsys):
    assert ip.run_line_magic("womm_experiment", "-h") is None
    out = capsys.readouterr().out
    for flag in ("--image", "--task-file", "--log-dir", "--max-retries", "--max-pods",
                 "--kube-cpu", "--kube-mem", "--namespace", "--context", "-o NAME"):
        assert flag in out
    assert "Examples" in ip.find_line_magic("womm_experiment").__doc__


def test_kernel_interrupt_cancels_the_experiment_and_keeps_finished_logs(
        cluster, namespace, tmp_path, monkeypatch):
    import json

    import nbclient
    import nbformat

    for name in [n for n in os.environ if n.startswith("WOMM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)  # the kernel inherits it
    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        new("%load_ext womm_jupyter"),
        new(f"%%womm_experiment {_line(cluster, namespace, '-l', 'logs', '-o', 'e')}\n"
            "echo quick\nsleep 300\nsleep 301"),
        new("import json\nprint('WOMM-CHECK ' + json.dumps({'id': e.id, 'status': e.status, "
            "'rows': e.df.to_dict('records')}))"),
    ])
    # nbclient interrupts the kernel when a cell outlasts its timeout: the quick task is done
    # by then, the two others sleep.
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=60, interrupt_on_timeout=True,
                            allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    cell = nb.cells[1]
    assert [o.ename for o in cell.outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    text = "".join(o["text"] for o in nb.cells[2].outputs if o.output_type == "stream")
    assert text.startswith("WOMM-CHECK "), text
    payload = json.loads(text[len("WOMM-CHECK "):])
    assert payload["status"] == "cancelled"
    states = [row["state"] for row in payload["rows"]]
    assert states[0] == "done" and "done" not in states[1:]
    assert (tmp_path / payload["rows"][0]["log"]).read_text() == "quick\n"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        os.path.basename(payload["rows"][0]["log"])]
    err = "".join(o["text"] for o in cell.outputs
                  if o.output_type == "stream" and o.name == "stderr")
    assert f"experiment {payload['id']} cancelled; its pods were deleted" in err
    assert _left(cluster, namespace, payload["id"]) == []
