"""Table tests of the pure pieces (no engine, no cluster): which inputs a job had, the joblog
as it grows, option precedence, names, finish's task id check, the `womm status` row, the `--`
split."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from womm_jupyter import _paths, commands, labels
from womm_jupyter.backends.base import TaskInfo
from womm_jupyter.errors import OptionError
from womm_jupyter.magics.render import TaskTable
from womm_jupyter.naming import experiment_pod_name, experiment_task_key, kube_safe_name
from womm_jupyter.options import ParallelOptions, resolve
from womm_jupyter.run.gnu import job_inputs as _job_inputs
from womm_jupyter.run.records import JoblogReader
from womm_jupyter.server.dashboard import render

# -- job inputs: GNU parallel's argv (and the lines womm feeds) -> each job's input values -----

_JOBS = {
    "fed lines": (["echo"], ["a", "b c"], [("a",), ("b c",)]),
    "one source": (["echo", ":::", "a", "b", "c"], None, [("a",), ("b",), ("c",)]),
    "two sources combine, last fastest": (
        ["echo", ":::", "a", "b", ":::", "x", "y"], None,
        [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]),
    "linked source pairs": (["echo", ":::", "a", "b", ":::+", "1", "2"], None,
                            [("a", "1"), ("b", "2")]),
    "longer linked source is cut": (["echo", ":::", "a", "b", ":::+", "1", "2", "3"], None,
                                    [("a", "1"), ("b", "2")]),
    "links inside a product": (
        ["echo", ":::", "a", ":::+", "1", ":::", "x", "y", ":::+", "7", "8", "9"], None,
        [("a", "1", "x", "7"), ("a", "1", "y", "8")]),
    "options before the command": (["-k", "--retries", "2", "echo", ":::", "a", "b"], None,
                                   [("a",), ("b",)]),
}
# Where the mapping is not certain, records carry no inputs.
_UNKNOWN = {
    "-N groups arguments": ["-N", "2", "echo", ":::", "a", "b"],
    "--max-args=2 groups arguments": ["--max-args=2", "echo", ":::", "a", "b"],
    "--colsep splits lines": ["--colsep", ",", "echo"],
    "--pipe sends blocks": ["--pipe", "wc"],
    ":::: reads files": ["echo", "::::", "inputs.txt"],
}


@pytest.mark.parametrize(("argv", "fed", "expected"), list(_JOBS.values()), ids=list(_JOBS))
def test_job_inputs(argv, fed, expected):
    inputs_of = _job_inputs(tuple(argv), fed)
    assert [inputs_of(seq) for seq in range(1, len(expected) + 1)] == expected
    assert inputs_of(0) is None and inputs_of(len(expected) + 1) is None


@pytest.mark.parametrize("argv", list(_UNKNOWN.values()), ids=list(_UNKNOWN))
def test_job_inputs_unknown(argv):
    assert _job_inputs(tuple(argv), None)(1) is None


def test_job_inputs_ignore_fed_lines_when_arguments_carry_the_inputs():
    # GNU parallel ignores standard input when ::: is given.
    assert _job_inputs(("echo", ":::", "a"), ["fed"])(1) is None


def _gnu_dry_run(argv: list[str], tmp_path: Path) -> list[str]:
    env = {**os.environ, "HOME": str(tmp_path)}  # its ~/.parallel, not the user's
    done = subprocess.run([_paths.perl(), str(_paths.vendored_parallel()), "--will-cite", "-k",
                           "--dry-run", *argv], capture_output=True, text=True, check=True,
                          env=env, cwd=tmp_path)
    return done.stdout.splitlines()


_AGAINST_GNU = {name: argv for name, (argv, fed, _) in _JOBS.items() if fed is None}
_AGAINST_GNU["shorter linked source"] = ["echo", ":::", "a", "b", "c", ":::+", "1", "2"]


@pytest.mark.parametrize("argv", list(_AGAINST_GNU.values()), ids=list(_AGAINST_GNU))
def test_job_inputs_agree_with_gnu_parallel(argv, tmp_path):
    """The table above is GNU parallel's own behaviour: the jobs its --dry-run lists, in
    order, with the values womm maps to them."""
    jobs = _gnu_dry_run(argv, tmp_path)
    inputs_of = _job_inputs(tuple(argv), None)
    command = argv[argv.index("echo"):argv.index(":::")]  # GNU parallel's options not shown
    ours: list[str] = []
    while (values := inputs_of(len(ours) + 1)) is not None:
        ours.append(" ".join([*command, *values]))
    assert ours == jobs


# -- the joblog, read as it grows ---------------------------------------------------------------

_HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


def _row(seq: int, exit_code: int = 0, command: str = "echo x") -> str:
    return f"{seq}\t:\t1700000000.5\t0.25\t0\t2\t{exit_code}\t0\t{command}\n"


_GROWTH = {
    "whole rows": ([_HEADER + _row(1) + _row(2)], [[1, 2]]),
    "a row in two writes": ([_HEADER + _row(1)[:7], _row(1)[7:]], [[], [1]]),
    "header split": ([_HEADER[:5], _HEADER[5:] + _row(1)], [[], [1]]),
    "rows one by one": ([_HEADER, _row(1), "", _row(2) + _row(3)], [[], [1], [], [2, 3]]),
    "a command with tabs": ([_HEADER + _row(1, command="printf 'a\tb'")], [[1]]),
    "junk lines skipped": ([_HEADER + "garbage\n" + _row(4)], [[4]]),
}


@pytest.mark.parametrize(("writes", "seen"), list(_GROWTH.values()), ids=list(_GROWTH))
def test_joblog_reader_returns_each_finished_job_once(writes, seen, tmp_path):
    joblog, jobs = tmp_path / "joblog", tmp_path / "jobs"
    jobs.mkdir()
    reader = JoblogReader(joblog, jobs, lambda seq: (f"input {seq}",))
    assert list(reader.read_new()) == []  # no joblog yet: nothing, no error
    for chunk, expected in zip(writes, seen, strict=True):
        with open(joblog, "a") as handle:
            handle.write(chunk)
        assert [record.seq for record in reader.read_new()] == expected


def test_joblog_record_fields(tmp_path):
    joblog, jobs = tmp_path / "joblog", tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "3.meta").write_text("womm-task-x-0\t12")
    (jobs / "3.out").write_bytes(b"out \xff\n")
    (jobs / "3.err").write_text("err\n")
    joblog.write_text(_HEADER + _row(3, exit_code=2, command="wc -l 'a\tb'"))
    [record] = JoblogReader(joblog, jobs, lambda seq: ("a",)).read_new()
    assert (record.seq, record.inputs, record.worker, record.runtime, record.exit_code,
            record.command, record.ok) == (3, ("a",), "womm-task-x-0", 0.25, 2, "wc -l 'a\tb'",
                                           False)
    assert record.start.timestamp() == 1700000000.5
    assert (record.stdout, record.stderr) == ("out \\xff\n", "err\n")


def test_joblog_offset_skips_earlier_runs(tmp_path):
    """--joblog +FILE: GNU parallel appends; rows before the offset are an earlier run's."""
    joblog, jobs = tmp_path / "joblog", tmp_path / "jobs"
    jobs.mkdir()
    earlier = _HEADER + _row(1) + _row(2)
    joblog.write_text(earlier + _row(1, exit_code=1))
    reader = JoblogReader(joblog, jobs, lambda seq: None, offset=len(earlier.encode()))
    assert [(r.seq, r.exit_code) for r in reader.read_new()] == [(1, 1)]


# -- option precedence: explicit > WOMM_* environment > project config > built-in -------------

_PRECEDENCE = {
    "built-in": ({}, {}, {}, "512Mi", ""),
    "config": ({}, {}, {"kube_mem": "1Gi"}, "1Gi", ""),
    "environment over config": ({}, {"WOMM_KUBE_MEM": "2Gi"}, {"kube_mem": "1Gi"}, "2Gi", ""),
    "explicit over all": ({"kube_mem": "3Gi"}, {"WOMM_KUBE_MEM": "2Gi"}, {"kube_mem": "1Gi"},
                          "3Gi", ""),
    "None is not given": ({"kube_mem": None}, {"WOMM_KUBE_MEM": "2Gi"}, {}, "2Gi", ""),
    "bad environment names the variable": ({}, {"WOMM_KUBE_MEM": "lots"}, {}, None,
                                           "from $WOMM_KUBE_MEM"),
    "bad config says so": ({}, {}, {"kube_mem": "lots"}, None, "from the project config"),
    "bad explicit names the flag": ({"kube_mem": "lots"}, {}, {}, None, "--kube-mem: 'lots'"),
}


@pytest.mark.parametrize(("explicit", "environ", "config", "value", "error"),
                         list(_PRECEDENCE.values()), ids=list(_PRECEDENCE))
def test_resolve_precedence(explicit, environ, config, value, error):
    explicit = {"kube_pods": 1, **explicit}  # the one option without a default
    if error:
        with pytest.raises(OptionError, match=error.replace("$", r"\$")):
            resolve(ParallelOptions, explicit, environ=environ, config=config)
    else:
        assert resolve(ParallelOptions, explicit, environ=environ,
                       config=config).kube_mem == value


# -- names and task ids ---------------------------------------------------------------------------

_SANITISED = {
    # text: (limit, kept as is)
    "experiment": (63, True),
    "a.b-c": (63, True),
    "x" * 63: (63, True),
    "x" * 64: (63, False),
    "Hello World": (63, False),
    "a_b": (63, False),
    "a-b": (63, True),
    "a-b-0123abcd": (63, False),  # looks hashed: hashed again, so it never meets a_b's name
    "python analyse.py sample-001.fastq": (20, False),
    "": (8, False),
}


@pytest.mark.parametrize("text", list(_SANITISED), ids=[t[:20] or "empty" for t in _SANITISED])
def test_kube_safe_name_table(text):
    limit, kept = _SANITISED[text]
    name = kube_safe_name(text, limit=limit)
    assert (name == text) is kept
    assert len(name) <= limit
    assert name == kube_safe_name(text, limit=limit)  # stable


def test_kube_safe_names_of_the_table_are_unique():
    names = [kube_safe_name(text, limit=limit) for text, (limit, _) in _SANITISED.items()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("index", "attempt", "command"), [
    (1, 0, "echo hi"), (99999, 12, "x" * 300), (7, 1, "!!!"), (2, 3, "Python Analyse.PY")])
def test_experiment_names_fit_and_differ(index, attempt, command):
    pod = experiment_pod_name("k3xq9m2a", index, attempt, command)
    assert len(pod) <= 63 and pod.startswith(f"womm-k3xq9m2a-{index}-{attempt}")
    assert pod != experiment_pod_name("k3xq9m2a", index, attempt + 1, command)
    key = experiment_task_key(index, command)
    assert key.startswith(f"{index:05d}-") and len(key) <= 5 + 1 + 48


@pytest.mark.parametrize("text", ["/tmp", "../../etc", "a/b", ".", "nosuchid", "k3xq9m2a/.."])
def test_finish_refuses_what_is_not_a_task_id(text):
    # (which texts are task ids: tests/test_security.py)
    with pytest.raises(OptionError, match="is not a womm task id") as caught:
        commands.finish(text)
    assert caught.value.exit_status == 2
    with pytest.raises(OptionError, match="is not a womm task id"):
        commands.collect_and_finish(text, Path("."))


# -- the `womm status` row --------------------------------------------------------------------

_AGES = {0: "0s", 59.9: "59s", 60: "1m", 3599: "59m", 3600: "1h", 86399: "23h", 86400: "1d",
         10 * 86400 + 5: "10d", -3.5: "-3s"}


@pytest.mark.parametrize("seconds", list(_AGES))
def test_age(seconds):
    assert commands.age(seconds) == _AGES[seconds]


_TASK = TaskInfo("ab12cd34", "docker", 1000.0, "RUNNING", "1", "512Mi", 1, 2, "/p", "wc -l {}",
                 "me@host")


def test_status_row_cells():
    assert commands.status_row(_TASK, 1125.0) == ("ab12cd34", "2m", "RUNNING", "1", "512Mi",
                                                  "1/2", "/p", "wc -l {}")
    assert len(commands.STATUS_HEADER) == len(commands.status_row(_TASK, 0))


def test_status_lines_align_every_column_but_the_command():
    lines = commands.status_lines([_TASK], 1125.0)
    assert lines == ["ID        AGE  STATUS   CPU  MEM    HEALTH  PWD  COMMAND",
                     "ab12cd34  2m   RUNNING  1    512Mi  1/2     /p   wc -l {}"]
    assert commands.status_lines([], 0) == ["ID  AGE  STATUS  CPU  MEM  HEALTH  PWD  COMMAND"]


def test_every_face_shows_the_same_cells():
    cells = commands.status_row(_TASK, 1125.0)
    table = TaskTable([_TASK], now=1125.0)
    assert table.rows() == [cells]
    assert repr(table).splitlines() == commands.status_lines([_TASK], 1125.0)
    page = render([_TASK], now=1125.0)
    for cell in cells:
        assert f">{cell}</td>" in page


# -- the `--` split -----------------------------------------------------------------------------

_SPLITS = {
    "no --": (["--kube-pods", "2"], (["--kube-pods", "2"], None)),
    "at the first --": (["-n", "x", "--", "-k", "--", "echo"], (["-n", "x"], ["-k", "--", "echo"])),
    "nothing after": (["--"], ([], [])),
}


@pytest.mark.parametrize(("words", "expected"), list(_SPLITS.values()), ids=list(_SPLITS))
def test_split_at_dashes(words, expected):
    assert commands.split_at_dashes(words) == expected


_LINE_SPLITS = {
    "no --": ("--kube-pods 2", ("--kube-pods 2", None)),
    "tail verbatim": ("--kube-pods 2 -- sh -c 'exit 7' $HOME", ("--kube-pods 2",
                                                                "sh -c 'exit 7' $HOME")),
    "--x is not --": ("--kube-pods 2 --x", ("--kube-pods 2 --x", None)),
    "at the start": ("-- ls", ("", "ls")),
    "nothing after": ("-n x --", ("-n x", "")),
}


@pytest.mark.parametrize(("line", "expected"), list(_LINE_SPLITS.values()), ids=list(_LINE_SPLITS))
def test_split_line_at_dashes(line, expected):
    assert commands.split_line_at_dashes(line) == expected


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, {"womm/cwd": "/p", "womm/command": "wc -l {}", "womm/cpu": "0.5", "womm/mem": "1Gi"}),
    ({"host": "h", "pid": 7, "created": 12.6, "desired": 3},
     {"womm/cwd": "/p", "womm/command": "wc -l {}", "womm/cpu": "0.5", "womm/mem": "1Gi",
      "womm/host": "h", "womm/pid": "7", "womm/created": "13", "womm/desired": "3"}),
])
def test_task_annotations_are_written_and_read_back(kwargs, expected):
    notes = labels.describe("/p", "wc -l {}", 0.5, "1Gi", **kwargs)
    assert notes == expected
    assert labels.described(notes) == {"cpu": "0.5", "mem": "1Gi", "cwd": "/p",
                                       "command": "wc -l {}"}
    assert labels.described({}) == {"cpu": "", "mem": "", "cwd": "", "command": ""}
