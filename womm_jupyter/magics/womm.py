"""The womm magics: ``%%womm_parallel`` (cell or line), ``%womm_status``, ``%womm_finish``,
``%womm_logs``, ``%womm_setup``, ``%womm_shell``.

Each equals ``womm <verb>`` with the same flags. ``%%womm_parallel`` blocks the cell like a
command in a terminal: it drains the run's events on the cell's own thread and writes job
output to ``sys.stdout``/``sys.stderr`` (so output lands in this cell whatever thread the core
uses), shows a progress widget where widgets render and a text line elsewhere, and returns the
:class:`~womm_jupyter.Run`. Interrupting the kernel cancels the run and waits for its cleanup.
"""

from __future__ import annotations

import atexit
import codecs
import dataclasses
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import IFrame, display

from .. import commands, server
from ..errors import OptionError
from ..events import EventKind
from ..options import SetupOptions, resolve
from ..run.coordinator import Dispatch, Event
from ..run.handle import Run
from ..setup.plan import describe, setup_widget
from ..shell.bridge import serve
from ..shell.docker import ShellSession, start_shell
from .parsing import (
    HelpShown,
    build_parser,
    options_of,
    parse,
    resolve_usage,
    split_line,
    usage_error,
    words,
)
from .render import TaskTable, TextProgress, widgets_render

__all__ = ["WommMagics"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _rest(options: Any, *skip: str) -> dict[str, Any]:
    """The options' other fields, as the core's keyword arguments (same names, as the CLI
    passes them: e.g. ``context``, ``namespace``)."""
    return {field.name: getattr(options, field.name) for field in dataclasses.fields(options)
            if field.name not in skip}


def _with_help(verb: str, examples: str) -> Callable[[_F], _F]:
    """Give a magic the generated help as its docstring (``%womm_parallel?``)."""

    def decorate(func: _F) -> _F:
        func.__doc__ = build_parser(verb).format_help() + "\nExamples\n--------\n" + examples
        return func

    return decorate


class _CellOutput:
    """Bytes for the cell's ``stdout``/``stderr``, written as text on the calling thread: one
    incremental UTF-8 decoder per stream, so a character split across chunks comes out whole.
    ``progress``, when given, is cleared before each write and drawn again after it."""

    def __init__(self, progress: TextProgress | None = None) -> None:
        self._progress = progress
        self._decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace")
                          for kind in ("stdout", "stderr")}

    def write(self, kind: str, data: bytes) -> None:
        self.write_text(kind, self._decoders[kind].decode(data))

    def write_text(self, kind: str, text: str) -> None:
        if not text:
            return
        stream = sys.stdout if kind == "stdout" else sys.stderr
        if self._progress is not None:
            self._progress.clear()
        stream.write(text)
        stream.flush()
        if self._progress is not None:
            self._progress.redraw()

    def close(self) -> None:
        """Write what the decoders still hold (an incomplete last character)."""
        for kind, decoder in self._decoders.items():
            self.write_text(kind, decoder.decode(b"", final=True))


class _Renderer:
    """Writes a run's events into the cell, on the thread that calls :meth:`show`."""

    def __init__(self, text_progress: TextProgress | None) -> None:
        self._progress = text_progress
        self._output = _CellOutput(text_progress)

    def show(self, event: Event) -> None:
        if event.kind in (EventKind.STDOUT, EventKind.STDERR):
            self._output.write(event.kind, event.data)
        elif event.kind in commands.TEXT_EVENTS:  # on stderr, as the CLI does
            self._output.write_text("stderr", event.text + "\n")
        elif event.kind == EventKind.PROGRESS and self._progress is not None:
            self._progress.update(event.data)

    def close(self) -> None:
        self._output.close()
        if self._progress is not None:
            self._progress.close()


def _drain(run: Run, render: _Renderer) -> bool:
    """Render every event until the run ends; True if the user interrupted it.

    An interrupt cancels the run, then waits for its cleanup (further interrupts only repeat
    the cancel: leaving workers behind is worse than a slow stop).
    """
    try:
        for event in run.events():
            render.show(event)
        return False
    except KeyboardInterrupt:
        pass
    while True:
        try:
            run.cancel()
            run.wait()
            break
        except KeyboardInterrupt:
            continue
    # The run has ended, so its remaining events (the cleanup's) are all queued. Collect them
    # on a helper thread with a deadline: if the interrupt landed just after the end-of-run
    # marker was taken, the queue stays empty and the helper must not hold the cell.
    rest: list[Event] = []

    def collect() -> None:
        for event in run.events():
            rest.append(event)

    helper = threading.Thread(target=collect, daemon=True, name=f"womm-drain-{run.task_id}")
    helper.start()
    helper.join(2.0)
    for event in list(rest):
        render.show(event)
    return True


@magics_class
class WommMagics(Magics):
    """womm's IPython magics; ``%load_ext womm_jupyter`` registers them."""

    @no_var_expand  # type: ignore[untyped-decorator]  # (IPython is untyped)
    @line_cell_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_parallel", """
    %%womm_parallel --kube-pods 2 --image womm-base:bookworm -o run -- -k wc -c {}
    notebooks/quickstart.ipynb
    README.md

    %womm_parallel --kube-pods 2 -- echo {} on $HOSTNAME ::: a b c
""")
    def womm_parallel(self, line: str, cell: str | None = None) -> Run | None:
        womm_words, parallel_words = split_line(line)
        try:
            explicit, extras = parse("womm_parallel", womm_words)
        except HelpShown:
            return None
        if explicit.get("citation"):
            self._citation()
            return None
        if parallel_words is None:
            raise UsageError(commands.missing_dashes("%%womm_parallel"))
        options = resolve_usage("womm_parallel", explicit)
        name = extras.get("output")
        if name is not None and not name.isidentifier():
            raise UsageError(f"%%womm_parallel: -o needs a Python name (got {name!r})")
        has_sources = commands.has_input_sources(parallel_words)
        inputs = [text for text in (cell or "").splitlines() if text.strip()]
        if cell is None and not has_sources:
            raise UsageError("%womm_parallel: as a line magic, give the inputs after `:::` "
                             "(e.g. -- echo {} ::: a b c), or use the cell magic with one "
                             "input per line")
        if inputs and has_sources:
            raise UsageError("%%womm_parallel: give the inputs either in the cell body or "
                             "after `:::`, not both (GNU parallel would ignore the cell body)")
        if options.async_:
            data = None if has_sources else "".join(f"{text}\n" for text in inputs).encode()
            done = commands.submit_async(
                options, parallel_words, cwd=Path.cwd(), stdin=data,
                report=lambda text: print(f"womm: {text}", file=sys.stderr, flush=True))
            print(commands.async_started(done, face="magic"), file=sys.stderr, flush=True)
            return None
        try:
            dispatch = Dispatch(options, parallel_words, cwd=Path.cwd(),
                                emit=lambda event: None, inputs=inputs, capture=True)
        except OptionError as exc:
            raise usage_error("%%womm_parallel", exc) from None
        run = Run(dispatch)
        if name is not None:
            self._user_ns()[name] = run  # before draining: kept even if interrupted
        text_progress = None
        if widgets_render(self.shell):
            display(run.widget())  # type: ignore[no-untyped-call]
        else:
            text_progress = TextProgress(sys.stderr)
        render = _Renderer(text_progress)
        try:
            interrupted = _drain(run, render)
        finally:
            render.close()
        if interrupted:
            kept = len(run.records)
            where = f" in {name}.records" if name else " (use -o NAME to keep the run object)"
            print(f"womm: cancelled; the workers were deleted; {kept} finished job"
                  f"{'' if kept == 1 else 's'} kept{where}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        try:
            run.result()  # a WommError shows as its message (_render_traceback_), no stack trace
        except OptionError as exc:  # found on the run's thread (e.g. no image): as if parsed
            raise usage_error("%%womm_parallel", exc) from None
        if run.exit_code:
            failed = sum(not record.ok for record in run.records)
            print(f"womm: {failed} job{'' if failed == 1 else 's'} failed (GNU parallel exited "
                  f"{run.exit_code}); see .df", file=sys.stderr, flush=True)
        return run

    def _citation(self) -> None:
        # GNU parallel's citation notice prompts on a terminal; a kernel has none, so it runs
        # with no input and the cell shows what it printed.
        out, err = commands.citation_output()
        sys.stdout.write(out)
        sys.stderr.write(err)

    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None  # registered magics always have their shell
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_status", """
    %womm_status
    %womm_status --all-owners
    tasks = %womm_status
    tasks.df
""")
    def womm_status(self, line: str) -> TaskTable | None:
        # `--` means nothing here: argparse says so
        options = options_of("womm_status", words(line))
        if options is None:  # -h printed the help
            return None
        return TaskTable(commands.status(options.all_owners, **_rest(options, "all_owners")))

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_finish", """
    %womm_finish k3xq9m2a
""")
    def womm_finish(self, line: str) -> None:
        options = options_of("womm_finish", words(line))
        if options is None:  # -h printed the help
            return None
        # An --async task's records and output are saved first. TaskNotFoundError is a
        # WommError: shown as its message, no stack trace.
        for deleted in commands.collect_and_finish(options.task_id, Path.cwd(), saved=print,
                                                   **_rest(options, "task_id")):
            print(f"{deleted} deleted")
        return None

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_logs", """
    %womm_logs k3xq9m2a
    %womm_logs k3xq9m2a -f
""")
    def womm_logs(self, line: str) -> None:
        options = options_of("womm_logs", words(line))
        if options is None:  # -h printed the help
            return None
        output = _CellOutput()
        # TaskNotFoundError/BackendError are WommErrors: shown as their message. An interrupt
        # stops following (and releases the connection).
        commands.stream_logs(options.task_id, options.follow,
                             lambda chunk: output.write("stdout", chunk),
                             context=options.context, namespace=options.namespace)
        output.close()
        return None

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_setup", """
    %womm_setup
    %womm_setup --share 4 --base ubuntu:22.04 --prefix registry.example.org/me/
    %womm_setup --script setup.sh --yes --share 4 --base ubuntu:22.04 --prefix 127.0.0.1:5000/
    %womm_setup --show
""")
    def womm_setup(self, line: str) -> Any:
        given = words(line)
        try:
            explicit, _ = parse("womm_setup", given)
        except HelpShown:
            return None
        if explicit.get("show"):
            lines, status = describe(Path.cwd())
            print("\n".join(lines), flush=True)
            return status or None
        if explicit.get("script"):
            # The scripted setup is the `womm setup` dialogue (cli/setup.py), a face of its
            # own: its questions read a terminal, which a kernel does not have. As a process
            # with no input, a question the flags left open fails with "give every answer as
            # a flag" instead of hanging the cell, and Ctrl-C reaches its cleanup as it does
            # in a terminal. In-process needs the dialogue as a core step machine that both
            # faces drive (issue 11's setup/flow.py).
            return _run_cli(["setup", *given])
        try:  # the same validation as the CLI; the project config plays no part in setup
            resolve(SetupOptions, explicit, config={})
        except OptionError as exc:
            raise usage_error("%womm_setup", exc) from None
        display(setup_widget(Path.cwd(), explicit))  # type: ignore[no-untyped-call]
        return None

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_shell", """
    %womm_shell
    %womm_shell --kube-cpu 4 --kube-mem 8Gi
    %womm_shell -- python --version
    code = %womm_shell -- sh -c 'exit 7'
""")
    def womm_shell(self, line: str) -> Any:
        head, command = commands.split_line_at_dashes(line)  # the command line stays verbatim
        options = options_of("womm_shell", words(head))
        if options is None:  # -h printed the help
            return None
        if command == "":
            raise UsageError("%womm_shell: give a command line after `--`, or no `--` for a "
                             "terminal")
        try:
            session = start_shell(options, Path.cwd(), command)
        except OptionError as exc:
            raise usage_error("%womm_shell", exc) from None
        if command is None:
            atexit.register(session.close)  # the kernel's end ends its shells
            if not isinstance(session, ShellSession):  # Kubernetes: the kernel holds the exec
                serve(session)
            print(f"womm: shell {session.name} (task {session.task_id}); `exit` ends it",
                  file=sys.stderr, flush=True)
            display(IFrame(server.terminal_url(session.name), width="100%",  # type: ignore[no-untyped-call]
                           height=420))
            return session
        try:
            output = _CellOutput()
            for kind, chunk in session.output():
                output.write(kind, chunk)
            output.close()
            return session.wait()
        finally:
            session.close()  # also on interrupt: the command's container goes


def _run_cli(args: list[str]) -> int | None:
    """Run ``womm ARGS`` with no terminal, streaming its output into the cell (on this
    thread); an interrupt reaches it as Ctrl-C does in a terminal, and its cleanup is awaited.
    Returns its exit status when it failed."""
    proc = subprocess.Popen([sys.executable, "-m", "womm_jupyter", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    chunks: queue.Queue[tuple[str, bytes] | None] = queue.Queue()

    def read(kind: str, pipe: Any) -> None:
        for data in iter(lambda: pipe.read1(65536), b""):
            chunks.put((kind, data))
        chunks.put(None)

    for kind, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        threading.Thread(target=read, args=(kind, pipe), daemon=True).start()
    output = _CellOutput()
    ended = 0
    try:
        while ended < 2:
            item = chunks.get()
            if item is None:
                ended += 1
                continue
            output.write(*item)
        output.close()
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        while True:
            try:
                proc.wait()
                break
            except KeyboardInterrupt:
                continue
        raise
    return code or None

