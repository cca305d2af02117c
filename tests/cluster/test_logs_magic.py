"""``%womm_logs ID [-f]`` through a real IPython shell against the real cluster: an ``--async``
run started by ``%%womm_parallel --async``, its leader's output streamed into the cell; bad
input answers with a one-line UsageError, an unknown task with womm's own message."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from IPython.core.error import UsageError
from support.leader import apply_docs

import womm_jupyter

pytestmark = pytest.mark.cluster


@pytest.fixture
def ip(ip, cluster, monkeypatch):
    # crane (to push the leader image) comes with the test cluster's binaries.
    monkeypatch.setenv("PATH", f"{os.environ['PATH']}:{cluster.bin_dir}")
    return ip


def test_logs_magic_streams_the_leaders_output(ip, cluster, namespace, leader_setup, capsys):
    apply_docs(cluster, list(yaml.safe_load_all(yaml.safe_dump_all(leader_setup))), namespace)
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
