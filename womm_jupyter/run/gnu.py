"""GNU parallel's side: reading the user's options, which inputs each job gets, the citation."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from .. import _paths
from ..errors import OptionError

# Options of GNU parallel 20221122 that take a separate value (from its options table), so
# that scanning its arguments stops at the command and never reads the command's own flags.
_VALUED = frozenset("""
B C D E H I J L N P S U W a arg-file arg-file-sep arg-sep argfile argfilesep argsep basefile
basenameextensionreplace basenamereplace bf bin block block-size block-timeout blocksize
blocktimeout bner bnr bt col-sep colsep compressprogram ctag-string ctagstring d debug
decompressprogram delay delimiter dirnamereplace dnr env er extensionreplace filter group-by
groupby halt halt-on-error header id j jl joblog jobs limit linkinputsource load max-args
max-chars max-procs max-replace-args maxargs maxchars maxprocs maxreplaceargs memfree
memsuspend n nice parens process-slot-var processslotvar profile recend recstart res result
results retries return rpl rsync-opts rsyncopts s semaphore-name semaphore-timeout
semaphorename semaphoretimeout seqreplace shard slf slotreplace sql sql-and-worker sql-master
sql-worker sqlandworker sqlmaster sqlworker ssh ssh-delay sshdelay sshlogin sshloginfile st
tag-string tagstring tempdir template term-seq termseq tf timeout tmpdir tmpl total total-jobs
totaljobs transfer-file transfer-files transferfile transferfiles trc trim
usecompressprogram usedecompressprogram wd work-dir workdir xapplyinputsource
""".split())

# womm decides where jobs run and how many run at once; these would contradict it.
_OWNED = {
    "j": "--procs-per-pod / --kube-pods", "jobs": "--procs-per-pod / --kube-pods",
    "P": "--procs-per-pod / --kube-pods", "max-procs": "--procs-per-pod / --kube-pods",
    "maxprocs": "--procs-per-pod / --kube-pods",
    "S": "--kube-pods", "sshlogin": "--kube-pods", "slf": "--kube-pods",
    "sshloginfile": "--kube-pods", "ssh": "--kube-pods",
}

INPUT_SEPARATORS = (":::", "::::", ":::+", "::::+")


@dataclass(frozen=True)
class ParallelArgs:
    """The user's GNU parallel arguments and what womm needs to know about them."""

    argv: tuple[str, ...]
    joblog: str | None  # the user's own --joblog, which womm then reads instead of its own
    env_names: tuple[str, ...]  # --env NAME: variables forwarded to the jobs
    has_command: bool
    joblog_append: bool = False  # --joblog +FILE: GNU parallel appends instead of truncating


def inspect(argv: list[str] | tuple[str, ...]) -> ParallelArgs:
    """Scan GNU parallel's options (up to the command) for the few womm cares about.

    Raises
    ------
    OptionError
        when an option would take job placement away from womm.
    """
    joblog: str | None = None
    joblog_append = False
    env_names: list[str] = []
    index = 0
    args = list(argv)
    while index < len(args):
        word = args[index]
        if word in INPUT_SEPARATORS or word == "--" or not word.startswith("-") or word == "-":
            break
        name, has_value, value = word.lstrip("-"), False, ""
        if "=" in name and word.startswith("--"):
            name, value = name.split("=", 1)
            has_value = True
        elif not word.startswith("--") and len(name) > 1 and name[0] in _VALUED:
            name, value, has_value = name[0], name[1:], True  # bundled: -j4, -S host
        if name in _OWNED:
            raise OptionError(f"GNU parallel's {word.split('=')[0]} cannot be used with womm: "
                              f"womm places the jobs; use {_OWNED[name]} instead.")
        if name in _VALUED and not has_value:
            index += 1
            if index >= len(args):
                raise OptionError(f"GNU parallel's {word} needs a value.")
            value = args[index]
        if name in ("joblog", "jl"):
            joblog_append = value.startswith("+")
            joblog = value[1:] if joblog_append else value
        elif name == "env":
            env_names.append(value)
        index += 1
    rest = args[index:]
    has_command = bool(rest) and rest[0] not in INPUT_SEPARATORS
    return ParallelArgs(tuple(argv), joblog, tuple(env_names), has_command, joblog_append)


InputsOf = Callable[[int], tuple[str, ...] | None]


def job_inputs(argv: tuple[str, ...], fed: list[str] | None) -> InputsOf:
    """Map a job's sequence number to its input values, where that mapping is certain.

    Certain means one job per input line (or per combination of ``:::`` values): no options
    that group or split arguments. Otherwise records carry ``inputs=None``.
    """
    grouping = {"-N", "-n", "-L", "-l", "-X", "-m", "--pipe", "--pipepart", "--header",
                "--max-args", "--max-lines", "--max-replace-args", "--xargs", "--block",
                "--group-by", "--shard", "--bin", "--colsep", "-C", "--skip-first-line",
                "--arg-file", "-a", "--resume", "--resume-failed", "--retry-failed"}
    words = list(argv)
    first_sep = next((i for i, w in enumerate(words) if w in INPUT_SEPARATORS),
                     len(words))
    if any(w.split("=")[0] in grouping for w in words[:first_sep]):
        return lambda seq: None
    sources: list[list[str]] = []
    linked: list[bool] = []
    index = first_sep
    while index < len(words):
        sep = words[index]
        index += 1
        values: list[str] = []
        while index < len(words) and words[index] not in INPUT_SEPARATORS:
            values.append(words[index])
            index += 1
        if sep.startswith("::::"):
            return lambda seq: None  # files read by GNU parallel: not ours to re-read
        sources.append(values)
        linked.append(sep.endswith("+"))
    if not sources:
        items = fed or []
        return lambda seq: (items[seq - 1],) if 0 < seq <= len(items) else None
    if fed:
        return lambda seq: None  # stdin is ignored when ::: is given; keep it simple
    # Linked sources (:::+) pair with the previous one, stopping at the shorter (as GNU
    # parallel does); the rest combine, last fastest.
    groups: list[list[tuple[str, ...]]] = []
    for values, link in zip(sources, linked, strict=True):
        if link and groups:
            groups[-1] = [(*old, value) for old, value in zip(groups[-1], values, strict=False)]
        else:
            groups.append([(value,) for value in values])
    combos = [tuple(itertools.chain.from_iterable(parts)) for parts in itertools.product(*groups)]
    return lambda seq: combos[seq - 1] if 0 < seq <= len(combos) else None


def job_count(argv: tuple[str, ...], fed: list[str] | None) -> int | None:
    """How many jobs GNU parallel will run, where :func:`job_inputs` is certain; else None."""
    inputs_of = job_inputs(argv, fed)
    count = 0
    while inputs_of(count + 1) is not None:
        count += 1
    return count or None


def citation_command() -> list[str]:
    """The command that runs GNU parallel's own citation routine and prompt from the vendored
    copy.

    Debian's build (the one vendored) comments out the ``--citation`` option but keeps the
    routine; this loads it from the unmodified file and calls it.
    """
    loader = r"""
        my $path = shift;
        open(my $fh, '<', $path) or die "cannot read $path: $!\n";
        my $source = do { local $/; <$fh> };
        my ($sub) = $source =~ /^(sub citation\(\) \{.*?^\})/ms or die "no citation in $path\n";
        my @helpers = map { $source =~ /^(sub $_\(\@\) \{.*?^\})/ms }
            qw(status status_no_nl warning);
        $Global::progname = 'parallel';
        $Global::config_dir = "$ENV{HOME}/.parallel";
        @Global::config_dirs = ($Global::config_dir);
        eval join(";\n", @helpers, $sub, 1) or die $@;
        citation([], []);
    """
    return [_paths.perl(), "-e", loader, str(_paths.vendored_parallel())]


def citation() -> int:
    """Run GNU parallel's citation routine on this terminal (it may prompt); its exit status."""
    return subprocess.call(citation_command())
