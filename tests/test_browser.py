"""JupyterLab in a real browser: Debian's chromium driven by Playwright for Python.

JupyterLab runs on a free loopback port with a token, its kernel on the Docker backend. A
notebook runs a ``%%womm_parallel`` cell whose jobs are slow enough to watch: the live
IntProgress renders as a widget (``.widget-hprogress``, not its text fallback) and ends at
done == total; the task dashboard, served through jupyter-server-proxy, lists the task while
it runs; ``%womm_shell``'s terminal (xterm.js in an IFrame through the proxy) accepts a
command; ``run.df`` renders as an HTML table with one row per input. Screenshots are kept under
``artifacts/``.

Needs: pip jupyterlab, jupyter-server-proxy>=4.4, playwright; apt chromium (never
``playwright install``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = pytest.mark.docker

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
IMAGE = os.environ.get("WOMM_TEST_IMAGE", "womm-base:bookworm")
INPUTS = [f"item-{n}" for n in range(12)]
COMMAND = "sleep 3; echo {} processed"


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1:<free port> with a random token, in ``root``."""

    def __init__(self, root: Path, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
        env.update(WOMM_BACKEND="docker", JUPYTER_CONFIG_DIR=str(root.parent / "jupyter-config"),
                   JUPYTER_RUNTIME_DIR=str(root.parent / "jupyter-runtime"))
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.allow_root=True",  # the test machines run as root
             "--LabApp.news_url=", "--LabApp.check_for_updates_class="
             "jupyterlab.NeverCheckForUpdate"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}",
                                            timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"JupyterLab did not start on {self.url}: see {log}", pytrace=False)
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def lab(tmp_path: Path, docker_client: Any) -> Iterator[JupyterLab]:
    root = tmp_path / "project"
    root.mkdir()
    new = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        new("%load_ext womm_jupyter"),
        new(f"%%womm_parallel --kube-pods 2 --image {IMAGE} -o run -- -k {COMMAND}\n"
            + "\n".join(INPUTS)),
        new("print('TASK', run.task_id, run.status, len(run.records))"),
        new('run.df[["inputs", "stdout", "exit_code"]]'),
        new(f"shell = %womm_shell --backend docker --image {IMAGE}"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})
    nbformat.write(nb, root / "browser.ipynb")
    served = JupyterLab(root, tmp_path / "jupyterlab.log")
    yield served
    served.stop()
    left = docker_client.api.containers(all=True, filters={"label": f"womm/cwd={root}"})
    for container in left:
        docker_client.api.remove_container(container["Id"], force=True)
    assert not left, f"containers left behind: {[c['Names'] for c in left]}"


def _browser_args() -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_live_progress_dashboard_and_terminal_in_jupyterlab(lab: JupyterLab,
                                                            tmp_path: Path) -> None:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as playwright:
        # Playwright owns --user-data-dir (launch_persistent_context): a fresh profile.
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=_browser_args(),
            viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        try:
            task_id = _drive(context, page, lab, tmp_path)
        except BaseException:
            for n, seen in enumerate(context.pages):
                seen.screenshot(path=str(ARTIFACTS / f"browser-failure-{n}.png"), full_page=True)
            raise
        finally:
            context.close()
    # What was seen is kept beside the screenshots.
    (ARTIFACTS / "browser-task.json").write_text(json.dumps({"task": task_id}))


def _drive(context: Any, page: Page, lab: JupyterLab, tmp_path: Path) -> str:
    if True:
        page.goto(f"{lab.url}/lab/tree/browser.ipynb?token={lab.token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
               ).to_have_count(1, timeout=120_000)
        # Keys pressed before the kernel's session connects are lost: wait for "Idle" in the
        # status bar, then Run > Run All Cells (they run one after the other).
        expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first
               ).to_be_visible(timeout=120_000)
        # The dashboard's process starts on first use through the proxy: start it now.
        dash = context.new_page()
        dash.goto(f"{lab.url}/womm-dashboard/")
        expect(dash.locator("h2")).to_have_text("womm tasks", timeout=120_000)
        page.bring_to_front()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        # The live widget: a real progress bar, not the "HBox(...)" text fallback.
        cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
        bar = cell.locator(".widget-hprogress")
        bar.wait_for(state="visible", timeout=180_000)
        label = cell.locator(".womm-progress div.widget-label")
        expect(label).to_contain_text("done", timeout=120_000)
        assert "HBox(" not in cell.inner_text()
        # Mid-run: some done, not all (jobs take 2 s each on 2 workers).
        expect(label).to_contain_text(re.compile(r"[1-9] running"), timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "browser-progress-live.png"), full_page=True)

        # The dashboard through jupyter-server-proxy lists the task while it runs.
        dash.reload()  # it also reloads itself every 2 s
        row = dash.locator("table.womm-status tr[data-task]").filter(has_text="processed")
        expect(row).to_have_count(1, timeout=60_000)
        expect(row.locator("td.status")).to_have_text("RUNNING")
        task_id = row.get_attribute("data-task")
        dash.screenshot(path=str(ARTIFACTS / "browser-dashboard.png"), full_page=True)

        total = len(INPUTS)
        expect(label).to_contain_text(f"{total}/{total} done · 0 failed · 0 running",
                                      timeout=180_000)
        progress = bar.locator(".progress-bar")
        expect(progress).to_have_attribute("style", re.compile(r"(^|[ ;])width: 100%"),
                                           timeout=30_000)
        expect(progress).to_have_class(re.compile("progress-bar-success"))
        result = page.locator(".jp-Notebook .jp-Cell").nth(2)
        expect(result).to_contain_text(f"TASK {task_id} done {total}", timeout=60_000)
        stream = cell.locator(".jp-OutputArea-output[data-mime-type='application/"
                              "vnd.jupyter.stdout']")
        expect(stream.first).to_contain_text("item-0 processed")
        page.screenshot(path=str(ARTIFACTS / "browser-progress-done.png"), full_page=True)

        # run.df: rendered as an HTML table, one body row per input, in input order.
        df_cell = page.locator(".jp-Notebook .jp-Cell").nth(3)
        df_cell.scroll_into_view_if_needed()
        table = df_cell.locator(".jp-OutputArea-output.jp-RenderedHTMLCommon table")
        table.wait_for(timeout=60_000)
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(total, timeout=30_000)
        for n, word in enumerate(INPUTS):
            expect(rows.nth(n)).to_contain_text(f"{word} processed")
        table.scroll_into_view_if_needed()
        df_cell.screenshot(path=str(ARTIFACTS / "browser-dataframe.png"))
        dash.reload()
        expect(dash.locator(f"tr[data-task='{task_id}']")).to_have_count(0, timeout=30_000)

        # %womm_shell (the last cell): the terminal in the page accepts a command.
        frame_element = page.locator(".jp-Notebook .jp-Cell").nth(4).locator("iframe")
        frame_element.wait_for(timeout=120_000)
        assert "/womm-terminal/?container=womm-shell-" in (frame_element.get_attribute("src")
                                                           or "")
        frame = page.frame_locator(".jp-Notebook .jp-Cell >> nth=4 >> iframe")
        frame.locator(".xterm-rows").wait_for(timeout=120_000)
        expect(frame.locator("body")).to_have_attribute("data-state", "open", timeout=60_000)
        frame.locator(".xterm").click()
        page.keyboard.type("echo typed-$((6*7)) > from-terminal; cat from-terminal\n")
        expect(frame.locator(".xterm-rows")).to_contain_text("typed-42", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser-terminal.png"), full_page=True)
        assert (tmp_path / "project" / "from-terminal").read_text() == "typed-42\n"
        page.keyboard.type("exit\n")
        frame_body = frame.locator("body")
        expect(frame_body).to_have_attribute("data-state", "closed", timeout=60_000)
    return str(task_id)
