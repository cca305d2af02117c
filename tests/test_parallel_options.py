"""GNU parallel's own options pass through womm and behave as with local GNU parallel:
--joblog, --results, --halt, --timeout, --retries."""

from __future__ import annotations

import time

import pytest


def _joblog_rows(path):
    """(Seq, Exitval, Signal, Command) of each row; host, times and sizes vary."""
    lines = path.read_text().splitlines()
    header = ["Seq", "Host", "Starttime", "JobRuntime", "Send", "Receive", "Exitval", "Signal",
              "Command"]
    if lines and lines[0].split("\t") == header:  # not written when appending (+FILE)
        lines = lines[1:]
    rows = [line.split("\t") for line in lines]
    return sorted((int(r[0]), int(r[6]), int(r[7]), r[8]) for r in rows)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def twin(tmp_path):
    """Separate project directories for womm and GNU parallel (their files must not mix)."""
    ours, theirs = tmp_path / "womm", tmp_path / "gnu"
    ours.mkdir()
    theirs.mkdir()
    return ours, theirs


def test_joblog_and_exit_status(backend, gnu, twin):
    ours_dir, theirs_dir = twin
    args = ["--joblog", "jobs.log", "-k", "echo {}; exit {}", ":::", "0", "1", "2", "0"]
    ours = backend.parallel(args, cwd=ours_dir)
    theirs = gnu(args, cwd=theirs_dir)
    assert theirs.returncode == 2  # GNU parallel: the number of failed jobs
    assert ours.returncode == theirs.returncode, ours.explain()
    assert ours.stdout == theirs.stdout == b"0\n1\n2\n0\n"
    assert _joblog_rows(ours_dir / "jobs.log") == _joblog_rows(theirs_dir / "jobs.log")
    assert [row[1] for row in _joblog_rows(ours_dir / "jobs.log")] == [0, 1, 2, 0]


def test_joblog_append(backend, gnu, twin):
    ours_dir, theirs_dir = twin
    for _ in range(2):
        args = ["--joblog", "+jobs.log", "-k", "echo {}", ":::", "a", "b"]
        assert backend.parallel(args, cwd=ours_dir).returncode == 0
        assert gnu(args, cwd=theirs_dir).returncode == 0
    assert _joblog_rows(ours_dir / "jobs.log") == _joblog_rows(theirs_dir / "jobs.log")
    assert len(_joblog_rows(ours_dir / "jobs.log")) == 4
    first_lines = [(d / "jobs.log").read_text().splitlines()[0] for d in twin]
    assert first_lines[0].startswith("Seq") == first_lines[1].startswith("Seq")


def test_results_directory(backend, gnu, twin):
    ours_dir, theirs_dir = twin
    args = ["--results", "out", "-k", "echo {}; echo err-{} >&2", ":::", "a", "b c", "d'e"]
    ours = backend.parallel(args, cwd=ours_dir)
    theirs = gnu(args, cwd=theirs_dir)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout
    ours_tree, theirs_tree = _tree(ours_dir / "out"), _tree(theirs_dir / "out")
    assert ours_tree == theirs_tree
    assert ours_tree["1/b c/stdout"] == b"b c\n"
    assert ours_tree["1/b c/stderr"] == b"err-b c\n"


def test_halt_now_on_first_failure(backend, gnu, twin):
    ours_dir, theirs_dir = twin
    script = ("case {} in fail) sleep 0.5; exit 3;; slow) sleep 2.5; touch slow-done;; "
              "*) touch ran-{};; esac")
    args = ["--halt", "now,fail=1", script, ":::", "fail", "slow", "never"]
    theirs = gnu(args, cwd=theirs_dir, jobs=2)
    started = time.monotonic()
    ours = backend.parallel(args, cwd=ours_dir, kube_pods=2)
    assert theirs.returncode == 3  # now,fail=1: the failing job's own status
    assert ours.returncode == theirs.returncode, ours.explain()
    assert ours.stdout == theirs.stdout
    assert "This job failed" in ours.err
    # The slow job was killed (on the worker too): its marker never appears.
    time.sleep(max(0.0, started + 3.5 - time.monotonic()))
    for directory in twin:
        assert not (directory / "slow-done").exists(), directory
        assert not (directory / "ran-never").exists(), directory


def test_timeout_kills_the_job_on_its_worker(backend, gnu, twin):
    # One slot: the timed-out job is killed at 2 s while the run goes on for 2.5 s more, so a
    # job process left alive on the worker would write its marker (at 3.5 s) before the
    # workers are deleted. Fillers have 1.5 s of headroom under the timeout on a busy machine.
    ours_dir, theirs_dir = twin
    script = "case {} in slow) sleep 3.5; touch slow-done;; *) sleep 0.5; echo {};; esac"
    fillers = ["w1", "w2", "w3", "w4", "w5"]
    args = ["--timeout", "2", "--joblog", "jobs.log", "-k", script, ":::", "slow", *fillers]
    theirs = gnu(args, cwd=theirs_dir, jobs=1)
    ours = backend.parallel(args, cwd=ours_dir, kube_pods=1)
    assert theirs.returncode == 1, theirs.explain()
    assert ours.returncode == theirs.returncode, ours.explain()
    assert ours.stdout == theirs.stdout == "".join(f"{f}\n" for f in fillers).encode()
    assert not (ours_dir / "slow-done").exists(), "the timed-out job kept running"
    assert not (theirs_dir / "slow-done").exists()
    ours_rows = _joblog_rows(ours_dir / "jobs.log")
    theirs_rows = _joblog_rows(theirs_dir / "jobs.log")
    assert ours_rows[0] == theirs_rows[0]  # the killed job: same exit value and signal
    assert ours_rows[0][1:3] == (-1, 15)


def test_retries_rerun_failed_jobs(backend, gnu, twin):
    ours_dir, theirs_dir = twin
    # Fails twice, succeeds on the third attempt; the counter lives in the project dir.
    script = "echo x >> count-{}; test $(wc -l < count-{}) -ge 3 && echo ok {}"
    args = ["--retries", "3", "-k", script, ":::", "a", "b"]
    ours = backend.parallel(args, cwd=ours_dir)
    theirs = gnu(args, cwd=theirs_dir)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout == b"ok a\nok b\n"
    for directory in twin:
        assert (directory / "count-a").read_text() == "x\nx\nx\n"
    too_few = ["--retries", "2", "-k", script, ":::", "c"]
    ours = backend.parallel(too_few, cwd=ours_dir)
    theirs = gnu(too_few, cwd=theirs_dir)
    assert ours.returncode == theirs.returncode == 1, ours.explain()
    assert ours.stdout == theirs.stdout == b""
