"""The Python API: womm_jupyter.parallel returns a run at once; its records become a DataFrame."""

from __future__ import annotations

import pytest

import womm_jupyter


def test_parallel_records_dataframe(backend, tools, tmp_path):
    extra = {"image": tools.image} if backend.name == "docker" else {}
    run = womm_jupyter.parallel("echo {}", ["a", "b c"], kube_pods=2, backend=backend.name,
                                cwd=tmp_path, **extra)
    assert isinstance(run, womm_jupyter.Run)
    assert run.result() is run
    assert run.status == "done" and run.exit_code == 0
    df = run.df
    assert len(df) == 2
    assert list(df["inputs"]) == [("a",), ("b c",)]
    assert list(df["stdout"]) == ["a\n", "b c\n"]
    assert list(df["stderr"]) == ["", ""]
    assert list(df["exit_code"]) == [0, 0]
    assert list(df["signal"]) == [0, 0]
    assert list(df["seq"]) == [1, 2]
    assert all(worker.startswith(f"womm-task-{run.task_id}-") for worker in df["worker"])
    assert all(runtime >= 0 for runtime in df["runtime"])
    for column in ("inputs", "worker", "start", "runtime", "exit_code", "signal", "stdout",
                   "stderr"):
        assert column in df.columns


def test_failed_jobs_are_recorded_not_raised(tmp_path):
    run = womm_jupyter.parallel("echo out-{}; echo err-{} >&2; exit {}", ["0", "3"],
                                kube_pods=2, backend="local", cwd=tmp_path)
    run.wait(120)
    assert run.status == "failed" and run.exit_code == 1  # GNU parallel: 1 job failed
    df = run.df
    assert list(df["exit_code"]) == [0, 3]
    assert list(df["stdout"]) == ["out-0\n", "out-3\n"]
    assert list(df["stderr"]) == ["err-0\n", "err-3\n"]
    assert [r.ok for r in sorted(run.records, key=lambda r: r.seq)] == [True, False]


@pytest.mark.parametrize("joblog", ["jobs.log", "+jobs.log"])
def test_a_reused_joblog_gives_only_this_runs_records(tmp_path, joblog):
    for inputs in (["a", "b"], ["c", "d", "e"]):
        run = womm_jupyter.parallel("echo {}", inputs, parallel_args=["--joblog", joblog],
                                    kube_pods=2, backend="local", cwd=tmp_path).result()
        assert sorted(r.stdout for r in run.records) == [f"{i}\n" for i in inputs]
        assert sorted(r.inputs for r in run.records) == [(i,) for i in inputs]
    rows = (tmp_path / "jobs.log").read_text().splitlines()
    assert len([row for row in rows if not row.startswith("Seq")]) == (5 if "+" in joblog
                                                                         else 3)


def test_bad_option_raises_at_once(tmp_path):
    with pytest.raises(womm_jupyter.OptionError, match=r"--kube-pods must be at least 1"):
        womm_jupyter.parallel("echo {}", ["a"], kube_pods=0, backend="local", cwd=tmp_path)
    with pytest.raises(womm_jupyter.OptionError, match=r"GNU parallel's -j"):
        womm_jupyter.parallel("echo {}", ["a"], parallel_args=["-j", "2"], kube_pods=1,
                              backend="local", cwd=tmp_path)
