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
import importlib.util
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display

from .. import commands as manage
from .. import server
from ..errors import OptionError
from ..options import SetupOptions, resolve
from ..run.coordinator import Dispatch, Event
from ..run.gnu import INPUT_SEPARATORS
from ..run.handle import Run
from .parsing import HelpShown, build_parser, parse, resolve_usage, split_line
from .render import TaskTable, TextProgress

__all__ = ["WommMagics"]

_F = TypeVar("_F", bound=Callable[..., Any])
# Shown on stderr, as the CLI does.
_TEXT_EVENTS = ("backend", "created", "deleted", "lost", "share")


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


class _Renderer:
    """Writes a run's events into the cell, on the thread that calls :meth:`show`."""

    def __init__(self, text_progress: TextProgress | None) -> None:
        self._progress = text_progress
        self._decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace")
                          for kind in ("stdout", "stderr")}

    def show(self, event: Event) -> None:
        if event.kind in ("stdout", "stderr"):
            self._write(event.kind, self._decoders[event.kind].decode(event.data))
        elif event.kind in _TEXT_EVENTS:
            self._write("stderr", event.text + "\n")
        elif event.kind == "progress" and self._progress is not None:
            self._progress.update(event.data)

    def close(self) -> None:
        for kind, decoder in self._decoders.items():
            self._write(kind, decoder.decode(b"", final=True))
        if self._progress is not None:
            self._progress.close()

    def _write(self, kind: str, text: str) -> None:
        if not text:
            return
        stream = sys.stdout if kind == "stdout" else sys.stderr
        if self._progress is not None:
            self._progress.clear()
        stream.write(text)
        stream.flush()
        if self._progress is not None:
            self._progress.redraw()


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

    def _widgets_render(self) -> bool:
        # Widgets need a kernel with comms (ipykernel) and ipywidgets; terminal IPython and
        # plain InteractiveShell get the text line instead.
        return (getattr(self.shell, "kernel", None) is not None
                and importlib.util.find_spec("ipywidgets") is not None)

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
            raise UsageError("%%womm_parallel: put GNU parallel's options and command after "
                             "`--`, e.g. %%womm_parallel --kube-pods 3 -- wc -l {}")
        options = resolve_usage("womm_parallel", explicit)
        name = extras.get("output")
        if name is not None and not name.isidentifier():
            raise UsageError(f"%%womm_parallel: -o needs a Python name (got {name!r})")
        has_sources = any(word in INPUT_SEPARATORS for word in parallel_words)
        inputs = [text for text in (cell or "").splitlines() if text.strip()]
        if cell is None and not has_sources:
            raise UsageError("%womm_parallel: as a line magic, give the inputs after `:::` "
                             "(e.g. -- echo {} ::: a b c), or use the cell magic with one "
                             "input per line")
        if inputs and has_sources:
            raise UsageError("%%womm_parallel: give the inputs either in the cell body or "
                             "after `:::`, not both (GNU parallel would ignore the cell body)")
        if options.async_:
            from ..run.detached import submit

            data = None if has_sources else "".join(f"{text}\n" for text in inputs).encode()
            done = submit(options, parallel_words, cwd=Path.cwd(), stdin=data,
                          report=lambda text: print(f"womm: {text}", file=sys.stderr,
                                                    flush=True))
            print(f"womm: task {done.task_id} started in namespace {done.namespace}; follow it "
                  f"with %womm_logs {done.task_id} -f, collect and clean up with "
                  f"%womm_finish {done.task_id}", file=sys.stderr, flush=True)
            return None
        try:
            dispatch = Dispatch(options, parallel_words, cwd=Path.cwd(),
                                emit=lambda event: None, inputs=inputs, capture=True)
        except OptionError as exc:
            raise UsageError(f"%%womm_parallel: {str(exc).splitlines()[0]}") from None
        run = Run(dispatch)
        if name is not None:
            self._user_ns()[name] = run  # before draining: kept even if interrupted
        text_progress = None
        if self._widgets_render():
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
        run.result()  # a WommError shows as its message (_render_traceback_), no stack trace
        if run.exit_code:
            failed = sum(not record.ok for record in run.records)
            print(f"womm: {failed} job{'' if failed == 1 else 's'} failed (GNU parallel exited "
                  f"{run.exit_code}); see .df", file=sys.stderr, flush=True)
        return run

    def _citation(self) -> None:
        # GNU parallel's citation notice prompts on a terminal; a kernel has none, so run the
        # CLI's own routine with no input and show what it prints.
        done = subprocess.run([sys.executable, "-m", "womm_jupyter", "parallel",
                               "--citation"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)

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
        words, rest = split_line(line)
        if rest is not None:
            words = [*words, "--", *rest]  # `--` means nothing here: let argparse say so
        try:
            explicit, _ = parse("womm_status", words)
        except HelpShown:
            return None
        options = resolve_usage("womm_status", explicit)
        return TaskTable(manage.status(options.all_owners, **_rest(options, "all_owners")))

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_finish", """
    %womm_finish k3xq9m2a
""")
    def womm_finish(self, line: str) -> None:
        words, rest = split_line(line)
        if rest is not None:
            words = [*words, "--", *rest]
        try:
            explicit, _ = parse("womm_finish", words)
        except HelpShown:
            return None
        options = resolve_usage("womm_finish", explicit)
        saved = manage.collect(options.task_id, Path.cwd(), **_rest(options, "task_id"))
        if saved:  # an --async task: its records and output, before they are deleted
            print(f"womm: task {options.task_id}: records and output saved in {saved}")
        # TaskNotFoundError is a WommError: shown as its message, no stack trace.
        for deleted in manage.finish(options.task_id, **_rest(options, "task_id")):
            print(f"{deleted} deleted")
        return None

    @no_var_expand  # type: ignore[untyped-decorator]
    @line_magic  # type: ignore[untyped-decorator]
    @_with_help("womm_logs", """
    %womm_logs k3xq9m2a
    %womm_logs k3xq9m2a -f
""")
    def womm_logs(self, line: str) -> None:
        from ..run.detached import logs

        words, rest = split_line(line)
        if rest is not None:
            words = [*words, "--", *rest]
        try:
            explicit, _ = parse("womm_logs", words)
        except HelpShown:
            return None
        options = resolve_usage("womm_logs", explicit)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # TaskNotFoundError/BackendError are WommErrors: shown as their message. An interrupt
        # stops following; closing the stream releases the connection.
        chunks = logs(options.task_id, options.follow, context=options.context,
                      namespace=options.namespace)
        try:
            for chunk in chunks:
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
            sys.stdout.write(decoder.decode(b"", final=True))
            sys.stdout.flush()
        finally:
            getattr(chunks, "close", lambda: None)()  # a generator: release its connection
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
        words, rest = split_line(line)
        if rest is not None:
            words = [*words, "--", *rest]
        try:
            explicit, _ = parse("womm_setup", words)
        except HelpShown:
            return None
        if explicit.get("script") or explicit.get("show"):
            return _run_cli(["setup", *words])
        from ..setup.plan import setup_widget

        try:  # the same validation as the CLI; the project config plays no part in setup
            resolve(SetupOptions, explicit, config={})
        except OptionError as exc:
            raise UsageError(f"%womm_setup: {str(exc).splitlines()[0]}") from None
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
        from ..shell.docker import start_shell

        split = _DASHES.search(line)
        head, command = (line[:split.start()], line[split.end():].strip()) if split else \
            (line, None)
        words, _ = split_line(head)
        try:
            explicit, _ = parse("womm_shell", words)
        except HelpShown:
            return None
        options = resolve_usage("womm_shell", explicit)
        if command == "":
            raise UsageError("%womm_shell: give a command line after `--`, or no `--` for a "
                             "terminal")
        try:
            session = start_shell(options, Path.cwd(), command)
        except OptionError as exc:
            raise UsageError(f"%womm_shell: {str(exc).splitlines()[0]}") from None
        if command is None:
            from IPython.display import IFrame

            from ..shell.bridge import serve
            from ..shell.docker import ShellSession

            atexit.register(session.close)  # the kernel's end ends its shells
            if not isinstance(session, ShellSession):  # Kubernetes: the kernel holds the exec
                serve(session)
            print(f"womm: shell {session.name} (task {session.task_id}); `exit` ends it",
                  file=sys.stderr, flush=True)
            display(IFrame(server.terminal_url(session.name), width="100%",  # type: ignore[no-untyped-call]
                           height=420))
            return session
        try:
            decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace")
                        for kind in ("stdout", "stderr")}
            for kind, chunk in session.output():
                stream = sys.stdout if kind == "stdout" else sys.stderr
                stream.write(decoders[kind].decode(chunk))
                stream.flush()
            for kind, decoder in decoders.items():
                (sys.stdout if kind == "stdout" else sys.stderr).write(decoder.decode(b"", True))
            return session.wait()
        finally:
            session.close()  # also on interrupt: the command's container goes


_DASHES = re.compile(r"(?:^|\s)--(?:\s|$)")


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
    decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace")
                for kind in ("stdout", "stderr")}
    ended = 0
    try:
        while ended < 2:
            item = chunks.get()
            if item is None:
                ended += 1
                continue
            stream = sys.stdout if item[0] == "stdout" else sys.stderr
            stream.write(decoders[item[0]].decode(item[1]))
            stream.flush()
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

