"""The `womm` command line: the seed's example, help, version, citation and bad options."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import womm_jupyter
from womm_jupyter.cli import main


def _project(root):
    """A small project: files of different lengths, one with a space in its name."""
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("1\n2\n3\n")
    (root / "data" / "b c.txt").write_text("x\n")
    (root / "data" / "sub" / "d.csv").write_text("".join(f"{i}\n" for i in range(17)))
    (root / "empty").write_text("")
    (root / "no-newline").write_text("one\ntwo")
    return subprocess.run(["find", "-type", "f"], cwd=root, capture_output=True,
                          check=True).stdout


def test_seed_example_same_lines_as_gnu_parallel(backend, gnu, tmp_path):
    found = _project(tmp_path)
    ours = backend.parallel(["wc", "-l", "{}"], cwd=tmp_path, input=found)
    theirs = gnu(["wc", "-l", "{}"], cwd=tmp_path, input=found)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    assert len(ours.stdout.splitlines()) == 5
    assert b"3 ./data/a.txt" in ours.stdout.splitlines()
    # GNU parallel's output alone on stdout; womm's own lines on stderr, as the seed prints.
    kind = "containers" if backend.name == "docker" else "processes"
    assert f"{kind}/womm-task-" in ours.err and " created" in ours.err, ours.err
    assert f'{kind} "womm-task-' in ours.err and '" deleted' in ours.err, ours.err


def test_seed_example_keep_order_is_byte_identical(backend, gnu, tmp_path):
    found = _project(tmp_path)
    ours = backend.parallel(["-k", "wc", "-l", "{}"], cwd=tmp_path, input=found)
    theirs = gnu(["-k", "wc", "-l", "{}"], cwd=tmp_path, input=found)
    assert ours.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout


def test_help_lists_verbs(womm, tmp_path):
    result = womm("--help", cwd=tmp_path)
    assert result.returncode == 0, result.explain()
    for verb in ("parallel", "status", "finish"):
        assert verb in result.out


def test_parallel_help_lists_every_womm_option(womm, tmp_path):
    result = womm("parallel", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.explain()
    for flag in ("--kube-pods", "--local-procs", "--procs-per-pod", "--kube-cpu", "--kube-mem",
                 "--backend", "--image", "--citation"):
        assert flag in result.out, flag
    assert "512Mi" in result.out  # the documented default of --kube-mem
    assert "-- wc -l {}" in result.out  # the seed's example


def test_version(womm, tmp_path):
    result = womm("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.out.strip() == f"womm {womm_jupyter.__version__}"


def test_citation_reaches_gnu_parallels_notice(womm, tools, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = womm("parallel", "--citation", cwd=tmp_path, input=b"will cite\n",
                  env=tools.clean_env(HOME=str(home)))
    assert result.returncode == 0, result.explain()
    assert "@software{tange_2022" in result.out + result.err
    assert (home / ".parallel" / "will-cite").exists()  # GNU parallel's own answer handling


# -- bad options: one clear line, exit 2, nothing created, nothing run --------------------

def _assert_usage_error(result, *needles, lines=1):
    assert result.returncode == 2, result.explain()
    assert result.stdout == b""
    err_lines = result.err.rstrip("\n").splitlines()
    assert err_lines[0].startswith("womm: error: "), result.err
    assert "Traceback" not in result.err
    if lines == 1:
        assert len(err_lines) == 1, result.err
    for needle in needles:
        assert needle in err_lines[0], (needle, result.err)


def _nothing_ran(tmp_path):
    assert not list(tmp_path.glob("ran-*")), "a job ran despite the error"


JOB = ["touch ran-{}", ":::", "a", "b"]


def test_missing_kube_pods(womm, tmp_path):
    result = womm("parallel", "--backend", "local", "--", *JOB, cwd=tmp_path)
    _assert_usage_error(result, "--kube-pods", "required")
    _nothing_ran(tmp_path)


@pytest.mark.parametrize("value, shown", [("0", "--kube-pods must be at least 1 (got 0)"),
                                          ("many", "--kube-pods must be a number")])
def test_bad_kube_pods_value(womm, tmp_path, value, shown):
    result = womm("parallel", "--kube-pods", value, "--backend", "local", "--", *JOB,
                  cwd=tmp_path)
    _assert_usage_error(result, shown)
    _nothing_ran(tmp_path)


def test_missing_separator_without_command(womm, tmp_path):
    result = womm("parallel", "--kube-pods", "2", "--backend", "local", cwd=tmp_path)
    _assert_usage_error(result, "`--`")


def test_missing_separator_before_command(womm, tmp_path):
    # The natural slip: the command typed straight after womm's options.
    result = womm("parallel", "--kube-pods", "2", "--backend", "local", *JOB, cwd=tmp_path)
    _assert_usage_error(result, "`--`")
    _nothing_ran(tmp_path)


def test_unknown_backend(womm, tmp_path):
    result = womm("parallel", "--kube-pods", "2", "--backend", "nope", "--", *JOB,
                  cwd=tmp_path)
    _assert_usage_error(result, "--backend", "nope")
    _nothing_ran(tmp_path)


def test_unknown_womm_option(womm, tmp_path):
    result = womm("parallel", "--kube-pods", "2", "--kube-podz", "3", "--", *JOB, cwd=tmp_path)
    _assert_usage_error(result, "--kube-podz")
    _nothing_ran(tmp_path)


def test_unreachable_engine_with_docker_backend(womm, tools, tmp_path):
    result = womm("parallel", "--kube-pods", "2", "--backend", "docker", "--image", tools.image,
                  "--", *JOB, cwd=tmp_path,
                  env=tools.clean_env(DOCKER_HOST="unix:///nonexistent.sock"))
    # The engine's own words may follow after a blank line; the first line says it all.
    _assert_usage_error(result, "Docker engine", "unix:///nonexistent.sock", lines=None)
    _nothing_ran(tmp_path)


@pytest.mark.parametrize("words", [["-j", "4"], ["-j4"], ["--jobs", "4"], ["--jobs=4"],
                                   ["-P", "2"], ["-S", "host"], ["--sshlogin", "host"],
                                   ["--ssh", "ssh"]])
def test_gnu_parallel_placement_options_are_refused(womm, tmp_path, words):
    result = womm("parallel", "--kube-pods", "2", "--backend", "local", "--", *words, *JOB,
                  cwd=tmp_path)
    _assert_usage_error(result, "GNU parallel's", "cannot be used with womm")
    _nothing_ran(tmp_path)


@pytest.mark.docker
def test_refused_option_creates_no_container(womm, tools, docker_client, tmp_path):
    result = womm("parallel", "--kube-pods", "2", "--backend", "docker", "--image", tools.image,
                  "--", "-j", "4", *JOB, cwd=tmp_path)
    _assert_usage_error(result, "-j")
    assert tools.containers_under(docker_client, tmp_path) == []
    _nothing_ran(tmp_path)


def test_options_from_environment(womm, tools, tmp_path):
    env = tools.clean_env(WOMM_KUBE_PODS="2", WOMM_BACKEND="local")
    result = womm("parallel", "--", "-k", "echo", "{}", ":::", "x", "y", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.explain()
    assert result.out == "x\ny\n"
    assert "backend local" in result.err


def test_bad_option_from_environment_names_the_variable(womm, tools, tmp_path):
    env = tools.clean_env(WOMM_KUBE_PODS="0")
    result = womm("parallel", "--backend", "local", "--", *JOB, cwd=tmp_path, env=env)
    _assert_usage_error(result, "--kube-pods must be at least 1 (got 0 from $WOMM_KUBE_PODS)")
    _nothing_ran(tmp_path)


def test_finish_unknown_task(womm, tmp_path):
    result = womm("finish", "n2suchid", cwd=tmp_path)  # an id, of no task
    assert result.returncode == 2, result.explain()
    assert result.err.startswith("womm: error: no task n2suchid"), result.err


def test_sigint_on_local_backend_stops_agents_and_jobs(tools, tmp_path):
    backend_args = ("--backend", "local")
    proc = subprocess.Popen(
        [tools.womm_script, "parallel", "--kube-pods", "2", *backend_args, "--",
         "touch started-{}; sleep 3; touch finished-{}", ":::", "1", "2", "3"],
        cwd=tmp_path, env=tools.clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = tools.LineReader(proc.stderr)
    tools.wait_for(lambda: list(tmp_path.glob("started-*")), 60, "a job to start")
    created = next(line.decode() for line in err.lines if b" created" in line)
    task = re.search(r"womm-task-(\w+)", created).group(1)
    assert _processes_mentioning(task)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert b"cancelled" in b"".join(err.join())
    tools.wait_for(lambda: not _processes_mentioning(task), 10, "the task's processes to end")
    proc.stdout.close()
    # A job left running would touch its marker 3 s after it started.
    time.sleep(3.2)
    assert not list(tmp_path.glob("finished-*"))


def _processes_mentioning(task):
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and task.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# -- every verb: a WommError is one `womm: error:` message and its exit status, no traceback --

_NO_CLUSTER = {
    "status": ["status"],
    "finish": ["finish", "k3xq9m2a"],
    "logs": ["logs", "k3xq9m2a"],
    "parallel --async": ["parallel", "--async", "--kube-pods", "1", "--image", "busybox", "--",
                         "echo", ":::", "a"],
    "experiment run": ["experiment", "run", "-i", "busybox", "-f", "tasks.txt", "-l", "logs"],
    "pods": ["pods", "names"],
    "admin nodes": ["admin", "nodes"],
    "shell": ["shell", "--backend", "kubernetes", "--image", "busybox", "--", "true"],
}


@pytest.mark.parametrize("argv", list(_NO_CLUSTER.values()), ids=list(_NO_CLUSTER))
def test_every_verb_reports_an_unusable_kubeconfig_in_one_line(argv, tmp_path, monkeypatch,
                                                              capsys):
    (tmp_path / "kubeconfig").write_text("{}\n")  # a file, but no cluster in it
    (tmp_path / "tasks.txt").write_text("echo hi\n")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("WOMM_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("womm: error: no usable Kubernetes configuration"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_womm_debug_adds_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WOMM_DEBUG", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["finish", "../etc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "OptionError" in err, err
    assert err.splitlines()[-1].startswith("womm: error: '../etc' is not a womm task id")


@pytest.mark.parametrize("target", ["/tmp", "..", "a/b"])
def test_finish_takes_only_task_ids(womm, tmp_path, target):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "task.json").write_text("{}")  # a directory finish must not delete
    result = womm("finish", str(tmp_path / "state") if target == "/tmp" else target,
                  cwd=tmp_path)
    assert result.returncode == 2, result.explain()
    assert "is not a womm task id" in result.err and "'womm status' lists" in result.err
    assert (tmp_path / "state" / "task.json").is_file()
