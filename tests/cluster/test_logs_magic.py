"""``%womm_logs ID [-f]`` through a real IPython shell against the real cluster: an ``--async``
run started by ``%%womm_parallel --async``, its leader's output streamed into the cell; bad
input answers with a one-line UsageError, an unknown task with womm's own message."""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from IPython.core.error import UsageError

import womm_jupyter

pytestmark = pytest.mark.cluster


def _async_helpers():
    """test_async.py's helpers (tests/cluster is no package; this works in every import
    mode)."""
    spec = importlib.util.spec_from_file_location(
        "_womm_test_async", Path(__file__).with_name("test_async.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _async_helpers()


@pytest.fixture(scope="module")
def leader_docs(cluster, tmp_path_factory) -> list[dict]:
    """`womm cluster-setup --build` (cached on disk: a rebuild only pushes womm's layer)."""
    started = time.monotonic()
    run = helpers._womm(cluster, "cluster-setup", "--build", "--prefix",
                        f"{cluster.registry}/", cwd=tmp_path_factory.mktemp("leader"),
                        timeout=900)
    assert run.returncode == 0, run.stderr
    print(f"leader image built and pushed in {time.monotonic() - started:.1f}s")
    return list(yaml.safe_load_all(run.stdout))


@pytest.fixture
def ip(ip, cluster, monkeypatch):
    # crane (to push the leader image) comes with the test cluster's binaries.
    monkeypatch.setenv("PATH", f"{os.environ['PATH']}:{cluster.bin_dir}")
    return ip


def test_logs_magic_streams_the_leaders_output(ip, cluster, namespace, leader_docs, capsys):
    helpers._apply(cluster, list(yaml.safe_load_all(yaml.safe_dump_all(leader_docs))), namespace)
    line = (f"--async --namespace {namespace} --image {cluster.base_image} --kube-pods 2 "
            "--kube-cpu 0.2 --kube-mem 128Mi --start-timeout 120 -- "
            "echo out {} $HOME; echo err {} >&2")
    assert ip.run_cell_magic("womm_parallel", line, "a\nb\nc\n") is None
    err = capsys.readouterr().err
    found = re.search(r"womm: task (\w{8}) started", err)
    assert found, err
    task_id = found.group(1)
    assert f"%womm_logs {task_id} -f" in err, err
    try:
        assert ip.run_line_magic("womm_logs", f"{task_id} -n {namespace} -f") is None
        out = capsys.readouterr().out
        for value in "abc":
            # $HOME reached the worker's shell untouched (IPython would expand it).
            assert re.search(rf"^out {value} /\S*$", out, re.M), out
            assert f"err {value}\n" in out, out
        # The leader has ended: without -f the same log comes back at once.
        assert ip.run_line_magic("womm_logs", f"--namespace {namespace} {task_id}") is None
        assert capsys.readouterr().out == out
    finally:
        ip.run_line_magic("womm_finish", f"{task_id} --namespace {namespace}")


def test_logs_magic_bad_input_and_unknown_task(ip, namespace):
    for line, expected in (("", "required: ID"),
                           ("abc def", "unrecognized arguments: def"),
                           ("abc --follow-up", "unrecognized arguments: --follow-up")):
        with pytest.raises(UsageError) as caught:
            ip.run_line_magic("womm_logs", line)
        assert type(caught.value) is UsageError
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(womm_jupyter.TaskNotFoundError) as caught:
        ip.run_line_magic("womm_logs", f"nosuchta -n {namespace}")
    assert f"no --async task nosuchta in namespace {namespace}" in str(caught.value)
