"""JupyterLab in a real browser: Debian's chromium driven by Playwright for Python.

JupyterLab runs on a free loopback port with a token, its kernel on the Docker backend, in a
project holding a copy of the shipped ``notebooks/quickstart.ipynb``. The user's path: open the
quickstart, Run All Cells, read what it shows — the progress widget rendered as a widget
(``.widget-hprogress``, not its text fallback) ending at done == total, the jobs' streamed
output in input order, ``run.df`` as an HTML table with one row per input, ``%womm_status``'s
table listing the background run, and the background run's records. Then, in the same
notebook, the user types cells of their own: a ``%%womm_parallel`` run slow enough to watch
(the bar moves; the task dashboard, served through jupyter-server-proxy, lists the task while
it runs) and ``%womm_shell``, whose terminal (xterm.js in an IFrame through the proxy) accepts
a command. Screenshots are kept under ``artifacts/``.

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

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

pytestmark = pytest.mark.docker

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
# What the quickstart's %%womm_parallel cell runs over, and what each job prints.
WORDS = ["apple", "banana", "cherry", "durian"]
CHROMIUM = "/usr/bin/chromium"
IMAGE = os.environ.get("WOMM_TEST_IMAGE", "womm-base:bookworm")
COMMAND = "sleep 3; echo {} processed"


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1:<free port> with a random token, in ``root``."""

    def __init__(self, root: Path, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.root = root
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WOMM_")}
        env.update(WOMM_BACKEND="docker", JUPYTER_CONFIG_DIR=str(root.parent / "jupyter-config"),
                   JUPYTER_RUNTIME_DIR=str(root.parent / "jupyter-runtime"))
        if sys.prefix != sys.base_prefix:
            # A venv made with --system-site-packages imports the base interpreter's
            # packages but does not look in its Jupyter config and data directories, where
            # those packages enable their server extensions (jupyter-server-proxy) and keep
            # their lab extensions (the widgets'): add them to the search paths.
            for name, where in (("JUPYTER_CONFIG_PATH", "etc"), ("JUPYTER_PATH", "share")):
                env[name] = os.pathsep.join(filter(None, [
                    os.environ.get(name), str(Path(sys.base_prefix, where, "jupyter"))]))
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
    shutil.copy(QUICKSTART, root / QUICKSTART.name)  # the shipped notebook, as it is
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


def test_quickstart_then_own_cells_in_jupyterlab(lab: JupyterLab, tmp_path: Path) -> None:
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
            seen = _drive(context, page, lab, tmp_path)
        except BaseException:
            for n, shown in enumerate(context.pages):
                shown.screenshot(path=str(ARTIFACTS / f"browser-failure-{n}.png"), full_page=True)
            raise
        finally:
            context.close()
    # What was seen is kept beside the screenshots.
    (ARTIFACTS / "browser-task.json").write_text(json.dumps(seen))


def _cell(page: Page, source: str) -> Locator:
    """The code cell whose input contains ``source`` (not the Markdown that explains it)."""
    return page.locator(".jp-Notebook .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text=source)).first


def _add_cell(page: Page, source: str) -> Locator:
    """Type a new code cell below the last one and run it (Shift+Enter), as a user does."""
    cells = page.locator(".jp-Notebook .jp-Cell")
    count = cells.count()
    last = cells.nth(count - 1)
    last.scroll_into_view_if_needed()
    last.locator(".jp-InputPrompt").click()  # selects the cell without editing it
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # command mode: a new code cell below
    expect(cells).to_have_count(count + 1)
    page.keyboard.press("Enter")  # edit it
    page.keyboard.type(source)
    page.keyboard.press("Shift+Enter")
    return cells.nth(count)


def _drive(context: Any, page: Page, lab: JupyterLab, tmp_path: Path) -> dict[str, str]:
    page.goto(f"{lab.url}/lab/tree/{QUICKSTART.name}?token={lab.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
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

    # The quickstart's %%womm_parallel cell: a real progress bar (not the "HBox(...)" text
    # fallback) that ends with every job done, and the jobs' output streamed in input order.
    cell = _cell(page, "%%womm_parallel")
    cell.scroll_into_view_if_needed()
    bar = cell.locator(".widget-hprogress")
    bar.wait_for(state="visible", timeout=180_000)
    label = cell.locator(".womm-progress div.widget-label")
    total = len(WORDS)
    expect(label).to_contain_text(f"{total}/{total} done · 0 failed · 0 running",
                                  timeout=180_000)
    progress = bar.locator(".progress-bar")
    expect(progress).to_have_attribute("style", re.compile(r"(^|[ ;])width: 100%"),
                                       timeout=30_000)
    expect(progress).to_have_class(re.compile("progress-bar-success"))
    assert "HBox(" not in cell.inner_text()
    stream = cell.locator(".jp-OutputArea-output[data-mime-type='application/"
                          "vnd.jupyter.stdout']")
    lines = [f"{word} has {len(word)} letters" for word in WORDS]
    expect(stream.first).to_contain_text(lines[-1], timeout=60_000)
    streamed = "".join(stream.all_inner_texts())
    assert [streamed.find(line) for line in lines] == sorted(streamed.find(line)
                                                             for line in lines), streamed
    assert -1 not in [streamed.find(line) for line in lines], streamed
    # The cell's value is the run: its summary table names the task.
    summary = cell.locator(".jp-OutputArea-executeResult table")
    expect(summary).to_contain_text("done", timeout=60_000)
    cell.screenshot(path=str(ARTIFACTS / "browser-quickstart-progress.png"))

    # run.df: rendered as an HTML table, one body row per input, in input order.
    df_cell = _cell(page, "run.df[")
    df_cell.scroll_into_view_if_needed()
    table = df_cell.locator(".jp-OutputArea-output.jp-RenderedHTMLCommon table")
    table.wait_for(timeout=60_000)
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(total, timeout=30_000)
    for n, line in enumerate(lines):
        expect(rows.nth(n)).to_contain_text(line)
    table.scroll_into_view_if_needed()
    df_cell.screenshot(path=str(ARTIFACTS / "browser-dataframe.png"))

    # %womm_status listed the background run (started by womm_jupyter.parallel) as running;
    # its records arrive in the last cell. (The table lists every task of this machine: the
    # one started here is the one in this project's directory.)
    status = _cell(page, "%womm_status").locator(
        ".jp-OutputArea-output.jp-RenderedHTMLCommon table")
    status.scroll_into_view_if_needed()
    background = status.locator("tbody tr").filter(has_text="sleep 4").filter(
        has_text=str(lab.root))
    expect(background).to_have_count(1, timeout=120_000)
    expect(background).to_contain_text("RUNNING")
    records = _cell(page, "background.result()").locator(
        ".jp-OutputArea-output.jp-RenderedHTMLCommon table tbody tr")
    expect(records).to_have_count(1, timeout=120_000)
    expect(records).to_contain_text("slow done")
    records.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-quickstart.png"), full_page=True)
    expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first
           ).to_be_visible(timeout=120_000)

    # The user's own cell: a run slow enough to watch move, and the dashboard beside it.
    inputs = [f"item-{n}" for n in range(12)]
    cell = _add_cell(page, f"%%womm_parallel --kube-pods 2 --image {IMAGE} -o slow -- -k "
                           f"{COMMAND}\n" + "\n".join(inputs))
    label = cell.locator(".womm-progress div.widget-label")
    cell.locator(".widget-hprogress").wait_for(state="visible", timeout=180_000)
    # Mid-run: some done, not all (jobs take 3 s each on 2 workers).
    expect(label).to_contain_text(re.compile(r"[1-9] running"), timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "browser-progress-live.png"), full_page=True)
    # No reload here: the dashboard reloads itself every 2 s, and a reload of ours that meets
    # one of its own is aborted (net::ERR_ABORTED).
    row = dash.locator("table.womm-status tr[data-task]").filter(has_text="processed").filter(
        has=dash.locator("td.pwd", has_text=str(lab.root)))  # not another project's task
    expect(row).to_have_count(1, timeout=60_000)
    expect(row.locator("td.status")).to_have_text("RUNNING")
    task_id = row.get_attribute("data-task") or ""
    dash.screenshot(path=str(ARTIFACTS / "browser-dashboard.png"), full_page=True)
    total = len(inputs)
    expect(label).to_contain_text(f"{total}/{total} done · 0 failed · 0 running",
                                  timeout=180_000)
    expect(cell.locator(".jp-OutputArea-executeResult")).to_contain_text(task_id)
    page.screenshot(path=str(ARTIFACTS / "browser-progress-done.png"), full_page=True)
    expect(dash.locator(f"tr[data-task='{task_id}']")).to_have_count(0, timeout=30_000)

    # %womm_shell: the terminal in the page accepts a command.
    cell = _add_cell(page, f"shell = %womm_shell --backend docker --image {IMAGE}")
    frame_element = cell.locator("iframe")
    frame_element.wait_for(timeout=120_000)
    assert "/womm-terminal/?container=womm-shell-" in (frame_element.get_attribute("src")
                                                       or "")
    frame = frame_element.content_frame
    frame.locator(".xterm-rows").wait_for(timeout=120_000)
    expect(frame.locator("body")).to_have_attribute("data-state", "open", timeout=60_000)
    frame.locator(".xterm").click()
    page.keyboard.type("echo typed-$((6*7)) > from-terminal; cat from-terminal\n")
    expect(frame.locator(".xterm-rows")).to_contain_text("typed-42", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-terminal.png"), full_page=True)
    assert (tmp_path / "project" / "from-terminal").read_text() == "typed-42\n"
    page.keyboard.type("exit\n")
    expect(frame.locator("body")).to_have_attribute("data-state", "closed", timeout=60_000)
    return {"task": task_id}
