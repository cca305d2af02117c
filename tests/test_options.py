"""The option model: resolution order, validation messages naming the flag, memory sizes,
and how womm reads GNU parallel's arguments (womm_jupyter.run.gnu.inspect)."""

from __future__ import annotations

import dataclasses

import pytest

from womm_jupyter import OptionError, ParallelOptions
from womm_jupyter.options import FinishOptions, env_name, flag_name, parse_memory, resolve
from womm_jupyter.run.gnu import inspect


def _resolve(explicit=None, environ=None, config=None):
    return resolve(ParallelOptions, explicit or {}, environ=environ or {}, config=config)


# -- resolution order -------------------------------------------------------------------------

def test_explicit_beats_environment_beats_config_beats_default():
    env = {"WOMM_KUBE_PODS": "5", "WOMM_KUBE_MEM": "1Gi"}
    config = {"kube_pods": 7, "kube_mem": "2Gi", "procs_per_pod": 4}
    opts = _resolve({"kube_pods": 3}, env, config)
    assert opts.kube_pods == 3  # explicit
    assert opts.kube_mem == "1Gi"  # environment over config
    assert opts.procs_per_pod == 4  # config over default
    assert opts.kube_cpu == 1.0  # built-in default
    assert _resolve({}, env, config).kube_pods == 5
    assert _resolve({}, {}, config).kube_pods == 7


def test_builtin_defaults():
    opts = _resolve({"kube_pods": 1})
    assert (opts.local_procs, opts.procs_per_pod, opts.kube_cpu, opts.kube_mem, opts.backend,
            opts.image, opts.citation) == (0, 1, 1.0, "512Mi", "auto", "", False)


def test_none_counts_as_not_given():
    assert _resolve({"kube_pods": None}, {"WOMM_KUBE_PODS": "2"}).kube_pods == 2


def test_values_are_converted_from_text():
    opts = _resolve({"kube_pods": "4", "kube_cpu": "0.5"}, {"WOMM_CITATION": "yes"})
    assert opts.kube_pods == 4 and isinstance(opts.kube_pods, int)
    assert opts.kube_cpu == 0.5
    assert opts.citation is True
    assert _resolve({"kube_pods": 1}, {"WOMM_CITATION": "0"}).citation is False


def test_names_map_mechanically():
    for field in dataclasses.fields(ParallelOptions):
        name = field.name.rstrip("_")  # PEP 8: a trailing _ avoids a keyword (async_)
        assert flag_name(field.name) == "--" + name.replace("_", "-")
        assert env_name(field.name) == "WOMM_" + name.upper()
    assert flag_name("kube_pods") == "--kube-pods"
    assert env_name("kube_pods") == "WOMM_KUBE_PODS"
    assert (flag_name("async_"), env_name("async_")) == ("--async", "WOMM_ASYNC")


# -- validation messages name the flag (and where a bad value came from) ----------------------

@pytest.mark.parametrize("explicit, environ, config, message", [
    ({"kube_pods": 0}, {}, None, "--kube-pods must be at least 1 (got 0)"),
    ({"kube_pods": -3}, {}, None, "--kube-pods must be at least 1 (got -3)"),
    ({}, {"WOMM_KUBE_PODS": "0"}, None, "--kube-pods must be at least 1 (got 0 from "
                                        "$WOMM_KUBE_PODS)"),
    ({}, {}, {"kube_pods": 0}, "--kube-pods must be at least 1 (got 0 from the project "
                               "config)"),
    ({"kube_pods": "lots"}, {}, None, "--kube-pods must be a number (got 'lots')"),
    ({"kube_pods": 1, "procs_per_pod": 0}, {}, None, "--procs-per-pod must be at least 1 "
                                                     "(got 0)"),
    ({"kube_pods": 1, "local_procs": -1}, {}, None, "--local-procs must be at least 0 (got -1)"),
    ({"kube_pods": 1, "kube_cpu": 0}, {}, None, "--kube-cpu must be at least 0.001 (got 0)"),
])
def test_validation_messages(explicit, environ, config, message):
    with pytest.raises(OptionError) as caught:
        _resolve(explicit, environ, config)
    assert str(caught.value) == message
    assert caught.value.exit_status == 2


def test_missing_required_option_names_the_flag():
    with pytest.raises(OptionError, match=r"^--kube-pods is required"):
        _resolve({})
    with pytest.raises(OptionError, match=r"^ID is required"):
        resolve(FinishOptions, {}, environ={})


def test_bad_choice_lists_the_choices():
    with pytest.raises(OptionError) as caught:
        _resolve({"kube_pods": 1, "backend": "cloud"})
    assert str(caught.value) == ("--backend must be one of auto, kubernetes, docker, local "
                                 "(got 'cloud')")


def test_bad_memory_names_the_flag():
    with pytest.raises(OptionError) as caught:
        _resolve({"kube_pods": 1}, {"WOMM_KUBE_MEM": "lots"})
    assert str(caught.value).startswith("--kube-mem: ")
    assert "512Mi" in str(caught.value) and "$WOMM_KUBE_MEM" in str(caught.value)


def test_unknown_option_is_refused():
    with pytest.raises(OptionError, match="--kube-podz"):
        _resolve({"kube_pods": 1, "kube_podz": 2})


def test_options_are_frozen():
    opts = _resolve({"kube_pods": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.kube_pods = 3  # type: ignore[misc]


# -- memory sizes -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1Ti", 2**40), ("64Ki", 64 * 2**10),
    ("1G", 10**9), ("500M", 500 * 10**6), ("1k", 1000), ("1K", 1000), ("1T", 10**12),
    ("100", 100), ("1.5Gi", 3 * 2**29), (" 256Mi ", 256 * 2**20),
])
def test_parse_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "Mi", "12MB", "-1Mi", "1 Gi", "1gi", "one", "1e3"])
def test_parse_memory_rejects(text):
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory(text)


# -- GNU parallel's arguments -----------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["-j", "4", "echo"], ["-j4", "echo"], ["--jobs", "4", "echo"], ["--jobs=4", "echo"],
    ["-P", "2", "echo"], ["--max-procs", "2", "echo"], ["-k", "-j", "1", "echo"],
    ["-S", "host", "echo"], ["-Shost", "echo"], ["--sshlogin", "h", "echo"],
    ["--sshloginfile", "f", "echo"], ["--slf", "f", "echo"], ["--ssh", "ssh", "echo"],
])
def test_inspect_refuses_placement_options(argv):
    with pytest.raises(OptionError) as caught:
        inspect(argv)
    message = str(caught.value)
    assert message.startswith("GNU parallel's -")
    assert "cannot be used with womm" in message
    assert "--kube-pods" in message
    assert caught.value.exit_status == 2


@pytest.mark.parametrize("argv, joblog", [
    (["--joblog", "log.txt", "echo"], "log.txt"),
    (["--joblog=log.txt", "echo"], "log.txt"),
    (["--jl", "log.txt", "echo"], "log.txt"),
    (["-k", "--joblog", "+log.txt", "echo"], "log.txt"),
    (["--joblog", "/abs/j.log", "--tag", "echo"], "/abs/j.log"),
    (["echo", "--joblog", "x"], None),
    (["-k", "echo"], None),
])
def test_inspect_finds_joblog(argv, joblog):
    assert inspect(argv).joblog == joblog


def test_inspect_joblog_append_flag():
    assert inspect(["--joblog", "+log", "echo"]).joblog_append is True
    assert inspect(["--joblog", "log", "echo"]).joblog_append is False


@pytest.mark.parametrize("argv", [
    ["make", "-j", "4", "{}"],
    ["-k", "make", "-j", "4"],
    ["--tag", "--timeout", "10", "ssh", "-S", "sock", "host"],
    ["--colsep", "-j", "echo"],  # a value that looks like an option is still a value
    ["-k", "--", "-j", "4"],
    [":::", "-j", "4"],
])
def test_inspect_stops_at_the_command(argv):
    parsed = inspect(argv)
    assert parsed.argv == tuple(argv)  # passed through unchanged


def test_inspect_command_and_env():
    parsed = inspect(["--env", "FOO", "--env", "BAR", "echo", "{}", ":::", "a"])
    assert parsed.env_names == ("FOO", "BAR")
    assert parsed.has_command is True
    assert inspect([":::", "a", "b"]).has_command is False
    assert inspect(["-k", "wc", "-l", "{}"]).has_command is True


def test_inspect_value_missing():
    with pytest.raises(OptionError, match="needs a value"):
        inspect(["--joblog"])
