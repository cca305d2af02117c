"""``%womm_setup``'s widget in plain pytest: buttons clicked (``Button.click()``) against the real
Docker engine, pushing to a real local registry (tests/support/registry.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.registry import setup_containers, setup_images

import womm_jupyter
from womm_jupyter.server import terminal_url
from womm_jupyter.shell.docker import attach_terminal
from womm_jupyter.widgets.setup import FORM_FIELDS, SetupView

pytestmark = pytest.mark.docker

TOOL = "printf '#!/bin/sh\\necho hello from the tool\\n' > /usr/local/bin/hello-womm " \
       "&& chmod +x /usr/local/bin/hello-womm"


@pytest.fixture
def project(tmp_path: Path, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory with its own user config; afterwards no setup container of it may
    remain, and the images its setups made are removed."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in [n for n in __import__("os").environ if n.startswith("WOMM_")]:
        monkeypatch.delenv(name)
    before = setup_images(docker_client)
    directory = tmp_path / "project"
    directory.mkdir()
    yield directory
    left = setup_containers(docker_client, tmp_path)
    for name in left:
        docker_client.containers.get(name).remove(force=True)
    for _ in range(4):
        made = setup_images(docker_client) - before
        for image_id in made:
            try:
                docker_client.images.remove(image_id, force=True)
            except Exception:
                pass
        if not made:
            break
    assert not left, f"setup containers left behind: {left}"


def _form(view: SetupView, registry: Any, share: str = "none") -> None:
    view.fields["share"].value = share
    view.fields["base"].value = "womm-base:bookworm"
    view.fields["prefix"].value = registry.prefix


def _log(view: SetupView) -> str:
    return "".join(o.get("text", "") for o in view.transcript.outputs)


def test_form_fields_come_from_setup_options(project: Path) -> None:
    view = SetupView(project)
    assert tuple(view.fields) == FORM_FIELDS
    share = view.fields["share"]
    assert [value for _, value in share.options] == ["lazy", "eager", "eager-syncback", "none"]
    assert dict(share.options)["2) eagerly (no syncback)"] == "eager"
    assert view.fields["base"].placeholder == "ubuntu:22.04"
    assert "push to" in view.fields["prefix"].tooltip
    assert view.fields["host_rw"].value is False
    assert (view.start.disabled, view.works_yes.disabled, view.works_no.disabled) == \
        (False, True, True)
    prefilled = SetupView(project, {"share": "2", "base": "x:1", "prefix": "reg.example/me/"})
    assert (prefilled.fields["share"].value, prefilled.fields["base"].value,
            prefilled.fields["prefix"].value) == ("eager", "x:1", "reg.example/me/")


def test_script_setup_pushes_records_and_jobs_run_the_image(project: Path, registry: Any,
                                                            docker_client: Any) -> None:
    view = SetupView(project, client=docker_client)
    _form(view, registry)
    view.script.value = f"{TOOL}\nexport GREETING='hi there'\nexport API_TOKEN=x\necho script ran"
    view.start.click()
    view.join()
    assert view.step == "verdict", view.message_text
    assert "script ran" in _log(view)
    assert "GREETING='hi there'" in view.message_text
    assert "Left out (they look like secrets): API_TOKEN" in view.message_text
    assert (view.start.disabled, view.works_yes.disabled, view.works_no.disabled) == \
        (True, False, False)
    assert all(widget.disabled for widget in view.fields.values())

    view.works_yes.click()
    view.join()
    assert view.step == "done", view.message_text
    saved = json.loads((project / ".womm" / "config.json").read_text())
    repository, digest = saved["image"].split("@")
    name = repository.removeprefix(registry.prefix)
    assert name in registry.catalog()
    assert registry.digest(name, saved["tag"].rsplit(":", 1)[1]) == digest
    assert saved["environment"] == {"GREETING": "hi there"}
    assert saved["share"] == "none" and saved["base"] == "womm-base:bookworm"
    assert f"digest: {digest}" in view.message_text and "womm-ok" in view.message.value
    # The push bar was driven by the core's progress callbacks: bytes, and it ended full.
    assert view.push_bar.max > 1000 and view.push_bar.value == view.push_bar.max
    assert view.push_bar.bar_style == "success"
    assert "layer(s)" in view.push_label.value
    assert setup_containers(docker_client, project) == []
    # Jobs run the recorded image without --image.
    run = womm_jupyter.parallel(': {}; hello-womm; printf "%s|%s" "$GREETING" "${API_TOKEN-unset}"',
                                ["x"], kube_pods=1, backend="docker", cwd=project).result()
    assert run.status == "done"
    assert run.records[0].stdout == "hello from the tool\nhi there|unset"
    # A new setup can start from the form again.
    assert not view.start.disabled and not view.fields["share"].disabled


def test_missing_dependency_then_again_then_no(project: Path, registry: Any,
                                              docker_client: Any) -> None:
    catalog = registry.catalog()
    view = SetupView(project, client=docker_client)
    _form(view, registry, share="eager")  # eager needs rsync: womm-base lacks it
    view.script.value = "echo round one"
    view.start.click()
    view.join()
    assert view.step == "form"
    assert "You didn't install rsync!" in view.message_text
    assert not view.start.disabled and view.works_yes.disabled
    assert all(widget.disabled for widget in view.fields.values())  # the session goes on
    view.script.value = ("printf '#!/bin/sh\\n' > /usr/local/bin/rsync && "
                         "chmod +x /usr/local/bin/rsync")
    view.start.click()
    view.join()
    assert view.step == "verdict", view.message_text
    view.works_no.click()
    view.join()
    assert view.step == "stopped"
    assert "Nothing was pushed; the project config is unchanged." in view.message_text
    assert registry.catalog() == catalog
    assert not (project / ".womm").exists()
    assert setup_containers(docker_client, project) == []


def test_errors_show_in_the_panel_and_controls_come_back(project: Path,
                                                         docker_client: Any) -> None:
    view = SetupView(project, client=docker_client)
    view.fields["share"].value = "none"
    view.fields["prefix"].value = "my registry/Me/"
    view.start.click()
    view.join()
    assert "registries refuse" in view.message_text and "womm-error" in view.message.value
    assert view.session is None and view.step == "form"
    assert not view.start.disabled and not view.fields["prefix"].disabled
    view.fields["prefix"].value = ""
    view.start.click()
    view.join()
    assert "--prefix is required on a first setup" in view.message_text
    view.fields["prefix"].value = "127.0.0.1:5000/"
    view.fields["base"].value = "womm-test-no-such-image:never"
    view.start.click()
    view.join()
    assert "womm-test-no-such-image:never is not on this Docker engine" in view.message_text
    assert not view.start.disabled


def test_interactive_testbed_in_the_terminal(project: Path, registry: Any, docker_client: Any,
                                             tools: Any) -> None:
    view = SetupView(project, client=docker_client)
    _form(view, registry)
    view.start.click()
    tools.wait_for(lambda: view.terminal.value, 120, "the testbed's terminal")
    testbed = setup_containers(docker_client, project)
    assert len(testbed) == 1
    assert terminal_url(testbed[0]).replace("&", "&amp;") in view.terminal.value
    assert "<iframe" in view.terminal.value
    assert view.start.disabled and view.works_yes.disabled
    # What the web terminal does: attach to the testbed's TTY and type.
    sock = attach_terminal(docker_client, testbed[0])
    try:
        sock.sendall(b"export FROM_TERMINAL='typed here'; echo made > typed; exit\n")
        view.join(120)
    finally:
        sock.close()
    assert view.step == "verdict", view.message_text
    assert "FROM_TERMINAL='typed here'" in view.message_text
    assert (project / "typed").read_text() == "made\n"
    assert view.terminal.value == ""
    view.works_no.click()
    view.join()
    assert setup_containers(docker_client, project) == []
