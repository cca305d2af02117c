"""``SetupView``: ``%womm_setup`` as a form, a testbed terminal, "Does it work?" and a push bar.

The view only sets traits and calls the core: :func:`womm_jupyter.setup.plan.plan_setup`
decides, :class:`womm_jupyter.setup.testbed.SetupSession` does the work, :func:`setup_plan.record`
saves the result. Every button goes through one decorator (:func:`_action`): it disables the
controls, runs the call on a worker thread (a push takes a while; the kernel stays free),
shows a :class:`~womm_jupyter.WommError` in the panel, and enables what the current step
allows. Nothing is swallowed: a bug's traceback is shown in the panel and raised again.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets

from .. import config
from ..backends.docker import connect
from ..errors import WommError
from ..options import SetupOptions
from ..server import terminal_url
from ..setup.plan import SetupPlan, plan_setup, record
from ..setup.testbed import PushProgress, Round, SetupSession, Testbed, dependencies
from ..share import by_name, share_name

__all__ = ["FORM_FIELDS", "SetupView"]

# SetupOptions fields the form shows; the others are the CLI's ways around a dialogue
# (--script is the text area here, --yes and --show have no place in a form).
FORM_FIELDS = ("share", "base", "prefix", "keep_secrets", "host_rw")
_F = TypeVar("_F", bound=Callable[..., None])


def _action(method: _F) -> _F:
    """Run a button's work on a worker thread: controls off meanwhile, WommError in the
    panel, then the controls the current step allows."""

    @functools.wraps(method)
    def run(self: SetupView, *args: Any) -> None:
        self._set_enabled(False)

        def work() -> None:
            try:
                method(self, *args)
            except WommError as exc:
                self.show_message(str(exc), "error")
            except BaseException:
                self.show_message(traceback.format_exc(), "error")
                raise
            finally:
                self._set_enabled(True)

        thread = threading.Thread(target=work, daemon=True, name=f"womm-setup-{method.__name__}")
        self._threads.append(thread)
        thread.start()

    return run  # type: ignore[return-value]


def _field_widget(field: dataclasses.Field[Any], value: Any, placeholder: str) -> Any:
    """A form control for one SetupOptions field: labelled with its name, its help as the
    tooltip."""
    meta = field.metadata
    label = field.name.replace("_", " ")
    if field.type == "bool":
        return ipywidgets.Checkbox(value=bool(value), description=label, tooltip=meta["help"],
                                   indent=False)
    if meta["choices"]:
        # Digits are the dialogue's menu answers; the names are what the menu says.
        names = [c for c in meta["choices"] if not c.isdigit()]
        options = [(f"{by_name(c).number}) {by_name(c).label}", c) for c in names]
        if placeholder:
            options.insert(0, (f"({placeholder})", ""))
        return ipywidgets.Dropdown(options=options, value=share_name(str(value)) if value else
                                   options[0][1], description=label, tooltip=meta["help"],
                                   style={"description_width": "initial"})
    return ipywidgets.Text(value=str(value), description=label, placeholder=placeholder,
                           tooltip=meta["help"], style={"description_width": "initial"},
                           layout=ipywidgets.Layout(width="32em"))


class SetupView(ipywidgets.VBox):  # type: ignore[misc]  # (ipywidgets is untyped)
    """The setup form. Steps (``step`` attribute): ``form`` -> ``testbed`` -> ``verdict`` ->
    ``pushing`` -> ``done`` (or back to ``form`` when the check finds something missing, or
    ``stopped`` after "No").

    Parameters
    ----------
    cwd:
        the project directory (mounted in the testbed at the same path).
    initial:
        SetupOptions values to pre-fill (``%womm_setup --share 4 ...``).
    client:
        a docker client (default: connect to the local engine when the testbed starts).

    Examples
    --------
    >>> view = SetupView(Path.cwd())        # what %womm_setup shows
    >>> view.script.value = "apt-get install -y perl-base"
    >>> view.start.click(); view.join()      # as the buttons do in a browser
    """

    def __init__(self, cwd: Path, initial: dict[str, Any] | None = None,
                 client: Any = None) -> None:
        self.cwd = cwd.resolve()
        self._client = client
        self._threads: list[threading.Thread] = []
        self.session: SetupSession | None = None
        self.plan: SetupPlan | None = None
        self.round: Round | None = None
        self.published: Any = None
        self.config_path: Path | None = None
        self.step = "form"
        initial = dict(initial or {})
        found = config.load_project(self.cwd)
        previous = found[1] if found else None
        remembered = str(config.load_user().get("prefix", ""))
        placeholders = {
            "share": f"keep: {previous.share}" if previous else "",
            "base": (f"the project's image {previous.image}" if previous
                     else "ubuntu:22.04"),
            "prefix": remembered or "e.g. registry.example.org/me/",
            "keep_secrets": "leave secret-looking variables out",
        }
        fields = {f.name: f for f in dataclasses.fields(SetupOptions)}
        self.fields = {name: _field_widget(fields[name],
                                           initial.get(name, fields[name].default),
                                           placeholders.get(name, ""))
                       for name in FORM_FIELDS}
        if not previous and not initial.get("share"):
            self.fields["share"].value = "none"  # a first setup must choose: the safe one
        self.script = ipywidgets.Textarea(
            value=self._read_script(initial.get("script", "")),
            placeholder="Optional: a setup script, run in the testbed instead of a terminal "
                        "(its exports are captured), e.g. apt-get install -y python3",
            layout=ipywidgets.Layout(width="100%", height="6em"))
        self.start = ipywidgets.Button(description="Start testbed", icon="play",
                                       button_style="primary")
        self.terminal = ipywidgets.HTML()
        self.transcript = ipywidgets.Output(layout=ipywidgets.Layout(max_height="20em",
                                                              overflow="auto"))
        self.message = ipywidgets.HTML()
        self.message_text = ""
        self.question = ipywidgets.Label("Does it work?")
        self.works_yes = ipywidgets.Button(description="Yes: push it", button_style="success")
        self.works_no = ipywidgets.Button(description="No: stop", button_style="warning")
        self.push_bar = ipywidgets.IntProgress(value=0, min=0, max=1, description="push")
        self.push_label = ipywidgets.Label()
        self.start.on_click(lambda _: self.start_testbed())
        self.works_yes.on_click(lambda _: self.answer(True))
        self.works_no.on_click(lambda _: self.answer(False))
        self._layers: dict[str, tuple[int, int]] = {}
        super().__init__(children=[
            ipywidgets.HTML("<b>womm setup</b>: make your application work in a local "
                            "testbed; what you install and export becomes the image jobs run."),
            *self.fields.values(), self.script, self.start, self.terminal, self.transcript,
            ipywidgets.HBox([self.question, self.works_yes, self.works_no]),
            ipywidgets.HBox([self.push_bar, self.push_label]), self.message])
        self.add_class("womm-setup")
        self._set_enabled(True)

    @staticmethod
    def _read_script(path: str) -> str:
        return Path(path).read_text() if path else ""

    # -- controls -----------------------------------------------------------------------------
    def _set_enabled(self, enabled: bool) -> None:
        """Enable what the current step allows (``enabled=False``: nothing, while working)."""
        form = enabled and self.step in ("form", "done", "stopped")
        first = self.session is None or self.step in ("done", "stopped")
        for widget in self.fields.values():
            widget.disabled = not (form and first)
        self.script.disabled = not form
        self.start.disabled = not form
        self.works_yes.disabled = self.works_no.disabled = not (enabled
                                                                and self.step == "verdict")

    def show_message(self, text: str, kind: str = "info") -> None:
        import html

        self.message_text = text  # what the panel shows, as plain text
        color = {"error": "#cf222e", "ok": "#1a7f37"}.get(kind, "inherit")
        self.message.value = (f"<pre class='womm-{kind}' style='white-space:pre-wrap;"
                              f"color:{color}'>{html.escape(text)}</pre>")

    def join(self, timeout: float = 600) -> None:
        """Wait for the work the buttons started (tests, and scripts driving the view)."""
        deadline = time.monotonic() + timeout
        while self._threads:
            thread = self._threads[0]
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"setup step {thread.name} still runs after {timeout} s")
            self._threads.remove(thread)

    def _options(self) -> dict[str, Any]:
        return {name: widget.value for name, widget in self.fields.items()}

    # -- steps --------------------------------------------------------------------------------
    @_action
    def start_testbed(self) -> None:
        """"Start testbed": a script run, or an interactive shell in the web terminal."""
        if self.step in ("done", "stopped"):
            self.close_session()
            self.session, self.plan, self.round, self.step = None, None, None, "form"
        values = self._options()
        if self.session is None:
            self.plan = plan_setup(self.cwd, share=values["share"], base=values["base"],
                                   prefix=values["prefix"])
            if self._client is None:
                self._client = connect()
            self.show_message(f"Preparing the testbed from {self.plan.start_image}...")
            self.session = SetupSession(self._client, self.cwd, self.plan.start_image,
                                        project_id=self.plan.project_id,
                                        share=self.plan.share, host_rw=values["host_rw"])
        needs = ", ".join(dep.name for dep in dependencies(self.session.share))
        self.step = "testbed"
        if self.script.value.strip():
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as handle:
                handle.write(self.script.value + "\n")
            try:
                testbed = self.session.testbed(Path(handle.name))
            finally:
                Path(handle.name).unlink()
            self.show_message(f"Running the setup script in {testbed.name}...")
            testbed.start()
            for chunk in testbed.output():
                self.transcript.append_stdout(chunk.decode("utf-8", "replace"))
            self._finish_round(testbed)
            return
        testbed = self.session.testbed(term="xterm-256color")
        testbed.start()
        self.terminal.value = (
            f"<iframe class='womm-terminal' src='{terminal_url(testbed.name)}' "
            "style='width:100%;height:24em;border:1px solid #ccc'></iframe>")
        self.show_message(f"The testbed {testbed.name} runs in the terminal above. Make your "
                          f"application work; also install {needs}. Type `exit` when done.")
        self.testbed = testbed
        self._await_exit(testbed)

    @_action
    def _await_exit(self, testbed: Testbed) -> None:
        testbed.wait()
        self._finish_round(testbed)

    def _finish_round(self, testbed: Testbed) -> None:
        assert self.session is not None
        self.show_message("Checking the image for what workers need...")
        self.round = round_ = self.session.finish(testbed)
        self.terminal.value = ""
        if round_.missing:
            self.step = "form"
            self.show_message(f"You didn't install {', '.join(round_.missing)}! Install it "
                              "and start the testbed again (it starts from what you did).",
                              "error")
            return
        capture = round_.capture
        lines = [*(f"Note: {p}" for p in capture.problems)]
        lines.append("These exported variables will be in the run-time environment:"
                     if capture.environment else "No exported variables were captured.")
        lines += [f"  {k}={v!r}" for k, v in capture.environment.items()]
        kept = self._kept_secrets()
        left_out = sorted(set(capture.secrets) - set(kept))
        if left_out:
            lines.append(f"Left out (they look like secrets): {', '.join(left_out)}")
        if round_.credential_files:
            lines.append("Warning: these files hold credentials and would be in the pushed "
                         f"image: {', '.join(round_.credential_files)}. Answer no, then "
                         "remove them in a new testbed.")
        lines.append("Does it work?")
        self.step = "verdict"
        self.show_message("\n".join(lines))

    def _kept_secrets(self) -> dict[str, str]:
        assert self.round is not None
        names = {n.strip() for n in str(self.fields["keep_secrets"].value).split(",")}
        return {k: v for k, v in self.round.capture.secrets.items() if k in names}

    @_action
    def answer(self, works: bool) -> None:
        """"Does it work?": yes pushes and records the image; no stops, saving nothing."""
        assert self.session is not None and self.plan is not None and self.round is not None
        if not works:
            self.close_session()
            self.step = "stopped"
            self.show_message("Nothing was pushed; the project config is unchanged.")
            return
        self.step = "pushing"
        environment = {**self.round.capture.environment, **self._kept_secrets()}
        tag = time.strftime("%Y%m%d-%H%M%S")
        self.show_message(f"The push refers to repository [{self.plan.repository}]")
        self._layers = {}
        try:
            self.published = self.session.publish(self.plan.repository, tag, environment,
                                                  self.on_push_progress)
        except WommError:
            self.step = "verdict"  # the image is kept: "Yes" tries the push again
            raise
        with self.push_bar.hold_sync():
            self.push_bar.max = max(self.push_bar.max, 1)
            self.push_bar.value = self.push_bar.max
            self.push_bar.bar_style = "success"
        self.config_path = record(self.plan, self.published, environment)
        self.close_session()
        self.step = "done"
        self.show_message(f"{self.published.tagged}: digest: {self.published.digest}\n"
                          f"Saved in {self.config_path}: jobs now run "
                          f"{self.published.reference}", "ok")

    def on_push_progress(self, event: PushProgress) -> None:
        """The core's push callback: bytes pushed over bytes to push, across layers."""
        if not event.layer:
            return
        if event.status == "Pushing" and event.total:
            self._layers[event.layer] = (event.current or 0, event.total)
        elif event.status in ("Pushed", "Layer already exists"):
            done, total = self._layers.get(event.layer, (1, 1))
            self._layers[event.layer] = (total, total)
        else:
            return
        done = sum(c for c, _ in self._layers.values())
        total = sum(t for _, t in self._layers.values())
        with self.push_bar.hold_sync():
            self.push_bar.max = max(1, total)
            self.push_bar.value = min(done, total)
        self.push_label.value = (f"{len(self._layers)} layer(s): {done / 1e6:.1f}/"
                                 f"{total / 1e6:.1f} MB")

    def close_session(self) -> None:
        """Remove the testbed containers and candidate images (what was pushed stays)."""
        if self.session is not None:
            self.session.close()

    def close(self) -> None:
        self.close_session()
        super().close()
