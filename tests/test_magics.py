"""The magics through a real IPython shell: parity with the CLI's options, untouched `{}` and
`$VAR`, UsageError for bad input, streaming, interrupts, and the import layering."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from support.registry import setup_containers, setup_images

import womm_jupyter
from womm_jupyter import cli
from womm_jupyter.magics import parsing
from womm_jupyter.magics.render import TaskTable
from womm_jupyter.options import (
    FinishOptions,
    LogsOptions,
    ParallelOptions,
    SetupOptions,
    ShellOptions,
    StatusOptions,
)

PACKAGE = Path(womm_jupyter.__file__).resolve().parent
IMAGE = os.environ.get("WOMM_TEST_IMAGE", "womm-base:bookworm")


# -- options parity with the CLI ----------------------------------------------------------

def _cli_actions(verb: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[verb]._actions if a.dest != "help"}


def _magic_actions(verb: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parsing.build_parser(f"womm_{verb}")._actions
            if a.dest not in ("help", "output")}


def _sample(field: dataclasses.Field) -> list[str]:
    if field.type == "bool":
        return []
    if field.metadata["choices"]:
        return [field.metadata["choices"][-1]]
    return {"int": ["3"], "float": ["2.5"]}.get(field.type, ["1Gi" if "mem" in field.name
                                                             else "some-value"])


_FIELDS = [(verb, cls, field) for verb, cls in (("parallel", ParallelOptions),
                                                ("status", StatusOptions),
                                                ("finish", FinishOptions),
                                                ("logs", LogsOptions),
                                                ("setup", SetupOptions),
                                                ("shell", ShellOptions))
           for field in dataclasses.fields(cls)]


@pytest.mark.parametrize(("verb", "cls", "field"), _FIELDS,
                         ids=[f"{v}-{f.name}" for v, _, f in _FIELDS])
def test_magic_accepts_each_cli_option_the_same_way(verb, cls, field):
    cli_action = _cli_actions(verb)[field.name]
    magic_action = _magic_actions(verb)[field.name]
    assert magic_action.option_strings == cli_action.option_strings
    assert magic_action.choices == cli_action.choices
    assert magic_action.help == cli_action.help
    words = [*cli_action.option_strings[:1], *_sample(field)]
    for other in dataclasses.fields(cls):  # required positionals (the task ID) come along
        if other is not field and not _cli_actions(verb)[other.name].option_strings:
            words += _sample(other)
    cli_args = vars(cli.build_parser().parse_args([verb, *words]))
    cli_args.pop("verb")
    magic_args, extras = parsing.parse(f"womm_{verb}", words)
    assert magic_args == cli_args
    assert extras == {}


@pytest.mark.parametrize("verb", ["parallel", "status", "finish", "logs", "setup", "shell"])
def test_magic_has_no_option_the_cli_lacks(verb):
    assert set(_magic_actions(verb)) == set(_cli_actions(verb))


def test_resolution_matches_the_cli(monkeypatch):
    monkeypatch.setenv("WOMM_KUBE_MEM", "2Gi")
    explicit, extras = parsing.parse("womm_parallel", ["--kube-pods", "4", "-o", "r"])
    assert extras == {"output": "r"}
    options = parsing.resolve_usage("womm_parallel", explicit)
    assert options == ParallelOptions(kube_pods=4, kube_mem="2Gi")


def test_help_is_the_magic_docstring_and_h_prints_it(ip, capsys):
    doc = ip.find_cell_magic("womm_parallel").__doc__
    for field in dataclasses.fields(ParallelOptions):
        assert "--" + field.name.rstrip("_").replace("_", "-") in doc
    assert "Examples" in doc
    assert ip.run_line_magic("womm_parallel", "--help") is None
    out = capsys.readouterr().out
    assert out.startswith("usage: %%womm_parallel")
    assert ip.run_line_magic("womm_status", "-h") is None
    assert "--all-owners" in capsys.readouterr().out


# -- bad input: exactly UsageError, one line, nothing started ------------------------------

_BAD = {
    "missing --kube-pods": ("--backend local -- echo {}", "--kube-pods is required"),
    "zero pods": ("--kube-pods 0 -- echo {}", "--kube-pods must be at least 1 (got 0)"),
    "not a number": ("--kube-pods two -- echo {}", "--kube-pods must be a number"),
    "abbreviation": ("--kube-pod 2 -- echo {}", "unrecognized arguments: --kube-pod 2"),
    "unknown option": ("--kube-pods 2 --pods 2 -- echo {}", "unrecognized arguments: --pods"),
    "bad choice": ("--kube-pods 2 --backend cloud -- echo {}", "invalid choice: 'cloud'"),
    "bad memory": ("--kube-pods 2 --kube-mem lots -- echo {}", "--kube-mem: 'lots' is not"),
    "no --": ("--kube-pods 2 echo {}", "unrecognized arguments: echo {}"),
    "no -- at all": ("--kube-pods 2", "put GNU parallel's options and command after `--`"),
    "parallel -j": ("--kube-pods 2 -- -j 4 echo {}", "-j cannot be used with womm"),
    "parallel -S": ("--kube-pods 2 -- -S host echo {}", "-S cannot be used with womm"),
    "open quote": ("--kube-pods 2 -- echo 'a", "No closing quotation"),
    "-o not a name": ("--kube-pods 2 -o 1x -- echo {}", "-o needs a Python name"),
    "cell and :::": ("--kube-pods 2 -- echo {} ::: a b", "not both"),
}


@pytest.mark.parametrize(("line", "expected"), list(_BAD.values()), ids=list(_BAD))
def test_bad_input_is_a_one_line_usage_error(ip, line, expected, monkeypatch):
    from womm_jupyter.magics import womm as magic_module

    started = []
    monkeypatch.setattr(magic_module, "Run", lambda *a: started.append(a))
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic("womm_parallel", line, "a\nb\n")
    assert type(caught.value) is UsageError  # IPython shows only exactly this class briefly
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert started == []  # nothing was started


def test_an_option_error_found_on_the_runs_thread_is_a_usage_error_too(ip, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no project config: no image recorded
    monkeypatch.delenv("WOMM_IMAGE", raising=False)
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic("womm_parallel", "--kube-pods 1 --backend docker -- echo {}", "a\n")
    assert type(caught.value) is UsageError
    assert str(caught.value).startswith("%%womm_parallel: --image is required")
    assert "\n" not in str(caught.value)


def test_line_magic_needs_inline_inputs(ip):
    with pytest.raises(UsageError, match="give the inputs after `:::`"):
        ip.run_line_magic("womm_parallel", "--kube-pods 1 --backend local -- echo {}")


def test_status_and_finish_reject_bad_input(ip):
    with pytest.raises(UsageError, match="unrecognized arguments: --kube-pods"):
        ip.run_line_magic("womm_status", "--kube-pods 2")
    with pytest.raises(UsageError, match="required: ID"):
        ip.run_line_magic("womm_finish", "")
    with pytest.raises(UsageError, match="unrecognized arguments: extra"):
        ip.run_line_magic("womm_finish", "abc extra")


# -- running jobs -------------------------------------------------------------------------

def test_braces_and_dollar_vars_reach_the_worker_untouched(ip, capsys):
    # IPython would expand {1} to "1" and $HOME to this namespace variable.
    ip.user_ns["HOME"] = "ipython-expanded"
    result = ip.run_cell("%%womm_parallel --kube-pods 2 --backend local -o r -- "
                         "-k echo {} {1} $HOME\nfirst\nsecond\n\nthird\n")
    assert result.error_in_exec is None, result.error_in_exec
    run = ip.user_ns["r"]
    assert result.result is run
    home = os.environ["HOME"]  # local workers' shells see this machine's HOME
    expected = [f"{word} {word} {home}\n" for word in ("first", "second", "third")]
    assert list(run.df["stdout"]) == expected
    assert [inputs for inputs in run.df["inputs"]] == [("first",), ("second",), ("third",)]
    captured = capsys.readouterr()
    assert "".join(expected) in captured.out  # streamed, in order (-k)
    assert "ipython-expanded" not in captured.out + captured.err


def test_text_progress_where_widgets_cannot_render(ip, capsys):
    run = ip.run_cell_magic("womm_parallel", "--kube-pods 1 --backend local -- echo {}",
                            "a\nb")
    assert run.status == "done"
    err = capsys.readouterr().err
    assert "womm: backend local (you asked for it)" in err
    assert "womm: 2/2 done, 0 failed, 0 running; workers 1/1 ready" in err.splitlines()


def test_line_magic_with_inline_inputs(ip, capsys):
    run = ip.run_line_magic("womm_parallel", "--kube-pods 2 --backend local -- -k echo {} "
                                             "::: x y z")
    assert list(run.df["stdout"]) == ["x\n", "y\n", "z\n"]
    assert capsys.readouterr().out == "x\ny\nz\n"


def test_failed_jobs_return_the_run_and_say_so(ip, capsys):
    run = ip.run_cell_magic("womm_parallel", "--kube-pods 1 --backend local -- exit {}",
                            "0\n3\n0")
    assert run.status == "failed"
    assert list(run.df["exit_code"]) == [0, 3, 0]
    assert "womm: 1 job failed (GNU parallel exited 1)" in capsys.readouterr().err


def _interrupt_when(ip, name: str, records: int, deadline: float = 60.0) -> threading.Thread:
    """SIGINT the main thread (what a kernel interrupt delivers) once run ``name`` has
    ``records`` finished jobs, and only while it still runs (a stray SIGINT would stop the
    whole test session)."""
    main = threading.main_thread().ident

    def watch() -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            run = ip.user_ns.get(name)
            if run is not None and run.done():
                return
            if run is not None and len(run.records) >= records:
                time.sleep(0.3)
                if not run.done():
                    signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(pid)
    return found


def test_interrupt_cancels_and_keeps_finished_records(ip, capsys):
    marker = f"womm-test-{uuid.uuid4().hex[:8]}"
    watcher = _interrupt_when(ip, "r", 2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic("womm_parallel", "--kube-pods 2 --backend local -o r -- "
                          f"'sleep {{}}; : {marker}'", "0\n0\n60\n60")
    watcher.join()
    assert time.monotonic() - started < 40
    run = ip.user_ns["r"]
    assert run.status == "cancelled"
    assert [record.inputs for record in run.records] == [("0",), ("0",)]
    assert _processes_with(marker) == []
    err = capsys.readouterr().err
    assert 'processes "womm-task-' in err and "deleted" in err
    assert "womm: cancelled; the workers were deleted; 2 finished jobs kept in r.records" in err


def test_status_table_and_finish(ip, capsys):
    table = ip.run_line_magic("womm_status", "")
    assert isinstance(table, TaskTable)
    assert repr(table).splitlines()[0].split() == list(TaskTable.HEADER)
    assert "<table" in table._repr_html_()
    assert list(table.df.columns)[:3] == ["task_id", "backend", "created"]
    with pytest.raises(womm_jupyter.TaskNotFoundError) as caught:
        ip.run_line_magic("womm_finish", "n2suchid")  # an id, of no task
    assert caught.value._render_traceback_() == [
        "TaskNotFoundError: no task n2suchid on this machine or its Docker engine: "
        "`womm status` lists the tasks you can finish."]


def test_status_lists_a_running_task(ip, tmp_path):
    run = womm_jupyter.parallel("sleep {}", ["3"], kube_pods=1, backend="local", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            table = ip.run_line_magic("womm_status", "")
            rows = [task for task in table if task.task_id == run.task_id]
            if rows:
                break
            time.sleep(0.2)
        assert rows and rows[0].status == "RUNNING"
        assert run.task_id in repr(table)
        assert run.task_id in table._repr_html_()
    finally:
        run.cancel()
        run.wait(60)


# -- Docker: the worker's own shell expands, interrupts remove the containers ---------------

def _docker_client():
    # Like the rest of the suite: a missing engine or image fails, it is never skipped.
    import docker

    try:
        client = docker.from_env(timeout=5)
        client.images.get(IMAGE)
    except Exception as exc:
        pytest.fail(f"needs a running Docker engine with image {IMAGE} (tools/base-image.sh "
                    f"builds it): {exc}", pytrace=False)
    return client


@pytest.mark.docker
def test_docker_worker_shell_expands_home(ip, capsys):
    _docker_client()
    ip.user_ns["HOME"] = "ipython-expanded"
    result = ip.run_cell(f"%%womm_parallel --kube-pods 2 --image {IMAGE} --backend docker "
                         "-o r -- -k echo {} {1} $HOME '$(printenv HOME)'\nalpha\nbeta")
    assert result.error_in_exec is None, result.error_in_exec
    lines = [line.split() for line in ip.user_ns["r"].df["stdout"]]
    assert [line[:2] for line in lines] == [["alpha", "alpha"], ["beta", "beta"]]
    for line in lines:
        assert line[2] == line[3] != "ipython-expanded"  # $HOME as the worker's shell has it
        assert line[2].startswith("/")
    assert "ipython-expanded" not in capsys.readouterr().out


@pytest.mark.docker
def test_docker_interrupt_deletes_the_containers(ip, capsys):
    client = _docker_client()
    watcher = _interrupt_when(ip, "r", 1, deadline=120)
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic("womm_parallel", f"--kube-pods 2 --image {IMAGE} --backend docker "
                          "-o r -- sleep {}", "0\n60\n60")
    watcher.join()
    run = ip.user_ns["r"]
    assert run.status == "cancelled"
    assert [record.inputs for record in run.records] == [("0",)]
    left = client.containers.list(all=True, filters={"label": f"womm/task={run.task_id}"})
    assert left == []
    assert f'containers "womm-task-{run.task_id}" deleted' in capsys.readouterr().err


@pytest.mark.docker
def test_docker_shell_command_streams_and_returns_its_exit_status(ip, capsys):
    client = _docker_client()
    ip.user_ns["HOME"] = "ipython-expanded"
    code = ip.run_line_magic("womm_shell", f"--backend docker --image {IMAGE} -- "
                                           "sh -c 'echo out {}; echo err $HOME >&2; exit 7'")
    assert code == 7
    captured = capsys.readouterr()
    assert captured.out == "out {}\n"  # `{}` reaches the command untouched
    assert "err /tmp\n" in captured.err  # $HOME as the shell's container has it
    assert client.containers.list(all=True, filters={"name": "womm-shell-", "label":
                                                     f"womm/cwd={Path.cwd()}"}) == []


@pytest.mark.docker
def test_docker_setup_script_pushes_and_records_the_image(ip, registry, tmp_path, capsys,
                                                          monkeypatch):
    client = _docker_client()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    before = setup_images(client)
    script = tmp_path / "setup.sh"
    script.write_text("echo script ran {} $HOME\nexport MAGIC_GREETING='two words'\n")
    try:
        code = ip.run_line_magic("womm_setup", f"--script {script} --yes --share 4 --base "
                                               f"{IMAGE} --prefix {registry.prefix}")
        assert code is None  # None: womm setup succeeded
        captured = capsys.readouterr()
        assert "script ran {} /" in captured.out, captured
        saved = json.loads((tmp_path / ".womm" / "config.json").read_text())
        assert saved["environment"] == {"MAGIC_GREETING": "two words"}
        repository, digest = saved["image"].split("@")
        assert repository.startswith(f"{registry.prefix}womm-image-")
        name = repository.removeprefix(registry.prefix)
        assert name in registry.catalog()
        assert registry.digest(name, saved["tag"].rsplit(":", 1)[1]) == digest
        assert setup_containers(client, tmp_path) == []
    finally:
        for _ in range(4):  # children first
            made = setup_images(client) - before
            for image_id in made:
                try:
                    client.images.remove(image_id, force=True)
                except Exception:
                    pass
            if not made:
                break


# -- layering: the core imports neither IPython nor ipywidgets ------------------------------

def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _touches(names: set[str], *targets: str) -> set[str]:
    """Imported names with one of ``targets`` as a dotted component."""
    return {name for name in names if set(name.split(".")) & set(targets)}


def test_core_never_imports_faces_at_module_level():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).parts
        if relative[0] in ("magics", "widgets", "cli", "__main__.py"):  # faces, the CLI's entry
            continue
        bad = _touches(_imports(path, True), "IPython", "ipywidgets", "magics", "widgets",
                       "cli")
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_magics_and_widgets_do_not_import_each_other():
    for face, other in (("magics", "widgets"), ("widgets", "magics")):
        for path in (PACKAGE / face).rglob("*.py"):
            bad = _touches(_imports(path, False), other)
            assert not bad, f"{face}/{path.name} imports {bad}"


def test_importing_the_core_loads_no_ipython():
    code = ("import sys, womm_jupyter, womm_jupyter.run.handle, womm_jupyter.run.coordinator, "
            "womm_jupyter.commands, womm_jupyter.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('IPython', 'ipywidgets', 'ipykernel')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_text_progress_redraws_one_line_on_a_terminal():
    import io

    from womm_jupyter.magics.render import TextProgress
    from womm_jupyter.run.coordinator import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    line = TextProgress(term, interval=0)
    line.update(Progress(2, 0, 0, 1, 1, 1))
    line.clear()
    term.write("job output\n")
    line.redraw()
    line.update(Progress(2, 2, 0, 0, 1, 1))
    line.close()
    assert term.getvalue() == (
        "\r\x1b[Kwomm: 0/2 done, 0 failed, 1 running; workers 1/1 ready\r\x1b[K"
        "job output\n"
        "\r\x1b[Kwomm: 0/2 done, 0 failed, 1 running; workers 1/1 ready"
        "\r\x1b[Kwomm: 2/2 done, 0 failed, 0 running; workers 1/1 ready"
        "\r\x1b[Kwomm: 2/2 done, 0 failed, 0 running; workers 1/1 ready\n")
