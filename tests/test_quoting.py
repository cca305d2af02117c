"""Quoting: whatever the input, a womm job sees exactly what a local GNU parallel job sees.

Every case runs the same arguments through `womm parallel` (on Docker workers and on local
agents) and through the vendored GNU parallel on this machine; stdout must be byte-identical.
"""

from __future__ import annotations

import pytest

CORPUS = [
    "plain",
    "two  spaces\tand a tab",
    " leading and trailing ",
    "it's",
    'say "hi"',
    "both ' and \" quotes",
    "$HOME and ${PATH:-unset} and $1",
    "`echo backtick`",
    "$(echo subshell)",
    "back\\slash \\n \\\\ \\",
    "*",
    "*.txt ?[ab] {a,b}",
    "-n",
    "--help",
    "-e \\t",
    "ünïcødé ✓ 日本語",
    "",
    "semi;colon && amp || pipe | > gt < lt 2>&1",
    "#hash",
    "~tilde",
    "!bang !!",
    "{} {.} braces",
    "%s %d printf",
    "trailing backslash \\",
    "  ",
]

STDIN = "".join(line + "\n" for line in CORPUS).encode()

COMMANDS = {
    "printf": ["-k", "printf '%s\\n' {}"],
    "echo": ["-k", "echo {}"],
    "words": ["-k", "printf", "'<%s>\\n'", "{}"],
    "quote-q": ["-k", "-q", "printf", "<%s>\\n", "{}"],
    "tag": ["-k", "--tag", "printf '%s|\\n' {}"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_stdin_corpus_is_byte_identical(backend, gnu, tmp_path, name):
    (tmp_path / "a.txt").write_text("glob bait\n")  # `*` would expand to this if unquoted
    args = COMMANDS[name]
    ours = backend.parallel(args, cwd=tmp_path, input=STDIN)
    theirs = gnu(args, cwd=tmp_path, input=STDIN)
    assert theirs.returncode == 0, theirs.explain()
    assert ours.returncode == theirs.returncode, ours.explain()
    assert ours.stdout == theirs.stdout, ours.explain()
    if name == "printf":  # and GNU parallel itself gives every line back verbatim
        assert ours.stdout == STDIN


def test_argument_corpus_after_triple_colon(backend, gnu, tmp_path):
    args = ["-k", "printf '[%s]\\n' {}", ":::", *CORPUS]
    ours = backend.parallel(args, cwd=tmp_path)
    theirs = gnu(args, cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout
    assert ours.stdout == "".join(f"[{line}]\n" for line in CORPUS).encode()


def test_file_corpus_after_quadruple_colon(backend, gnu, tmp_path):
    (tmp_path / "inputs.txt").write_bytes(STDIN)
    args = ["-k", "printf '%s\\n' {} {#}", "::::", "inputs.txt"]
    ours = backend.parallel(args, cwd=tmp_path)
    theirs = gnu(args, cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout


NUL_RECORDS = [b"one\ntwo", b"it's \"quoted\"\n\n", b"", b"\xc3\xbc $x `y` \\", b"-n", b"last"]


@pytest.mark.parametrize("flag", ["-0", "--null"])
def test_nul_separated_input_with_newlines(backend, gnu, tmp_path, flag):
    data = b"\0".join(NUL_RECORDS) + b"\0"
    args = [flag, "-k", "printf '<%s>\\n' {}"]
    ours = backend.parallel(args, cwd=tmp_path, input=data)
    theirs = gnu(args, cwd=tmp_path, input=data)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout
    assert b"<one\ntwo>\n" in ours.stdout


def test_replacement_strings(backend, gnu, tmp_path):
    paths = ["dir/sub/file.tar.gz", "a b/c.d", "plain", "./x.y/z", "/abs/path.txt"]
    args = ["-k", "echo {#} '{}' '{.}' '{/}' '{//}' '{/.}' '{1}'", ":::", *paths]
    ours = backend.parallel(args, cwd=tmp_path)
    theirs = gnu(args, cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout
    assert b"1 dir/sub/file.tar.gz dir/sub/file.tar file.tar.gz dir/sub file.tar " in ours.stdout


def test_colsep_and_multiple_sources(backend, gnu, tmp_path):
    table = b"a,b c,d\n1,2,3\n'q',\"r\",$s\n"
    args = ["-k", "--colsep", ",", "printf '%s|%s|%s\\n' {3} {1} {2}"]
    ours = backend.parallel(args, cwd=tmp_path, input=table)
    theirs = gnu(args, cwd=tmp_path, input=table)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout
    assert ours.stdout.splitlines()[0] == b"d|a|b c"
    combos = ["-k", "--tag", "echo {1}-{2}", ":::", "x", "y z", ":::", "1", "2"]
    ours = backend.parallel(combos, cwd=tmp_path)
    theirs = gnu(combos, cwd=tmp_path)
    assert ours.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout
    assert len(ours.stdout.splitlines()) == 4


def test_pipe_feeds_job_stdin(backend, gnu, tmp_path):
    # --pipe feeds blocks of the input on each job's stdin, through the transport.
    data = b"".join(b"%d\n" % i for i in range(1, 2001))
    args = ["-k", "--pipe", "-N", "500", "wc -l"]
    ours = backend.parallel(args, cwd=tmp_path, input=data)
    theirs = gnu(args, cwd=tmp_path, input=data)
    assert ours.returncode == 0, ours.explain()
    assert ours.stdout == theirs.stdout == b"500\n" * 4


def test_large_and_binary_output(backend, gnu, tmp_path):
    args = ["-k", "{}", ":::", "seq 1 150000", "printf '\\000\\001\\377 no newline'",
            "seq 3 | tr -d '\\n'", "printf 'a\\r\\nb'"]
    ours = backend.parallel(args, cwd=tmp_path)
    theirs = gnu(args, cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 0, ours.explain()
    assert len(ours.stdout) > 900_000
    assert ours.stdout == theirs.stdout
    assert b"\x00\x01\xff no newline" in ours.stdout
