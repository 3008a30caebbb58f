"""The attention explorer in a real JupyterLab: the widgets must render, and moving a control must redraw the figure.

The notebook tests run nbs/15_attention_viz.ipynb in a bare IPython shell, where ipywidgets have no front end: they
check the explorer's Python side (its controls, the figure it makes), never that a browser shows it. Here JupyterLab
runs on 127.0.0.1 on a temporary copy of the notebook (its runnable cells only, as tests/test_notebooks.py picks
them) and headless Chromium, driven by selenium through Debian's chromedriver, opens it, runs every cell, finds the
explorer that the tour displays and moves its layer control, then its step control: each time the figure inside
the explorer's Output widget (a PNG data URL) must change within seconds. A kernel error in the notebook's outputs,
an uncaught error in the page or a widget that fails to render fails the test with what went wrong.

Everything JupyterLab and the kernel write (settings, workspaces, runtime files, IPython's history, Chromium's
profile) goes to a temporary folder that is removed at the end, with the server and its kernel stopped, also on
failure; the lab extensions of ipywidgets that pip installs under the environment's share/jupyter stay visible.

Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (.ci/run installs them). Without them (or
without selenium or jupyterlab, the dev extras) this test is skipped on a developer's machine, and fails in CI
(CI=true). It takes about half a minute on two cores, most of it the notebook's run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tools import build_docs

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

ROOT = build_docs.ROOT
NOTEBOOK = build_docs.NBS / "15_attention_viz.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SERVER_START_S = 90  # JupyterLab's server answers
PAGE_READY_S = 90  # the page has loaded, opened the notebook and started its kernel
NOTEBOOK_RUN_S = 300  # every cell has run (about 30 s on two idle cores)
REDRAW_S = 60  # a moved control has redrawn the figure

# JupyterLab's user settings for the test: no autosave (the run stays in memory), every cell in the DOM (no windowed
# notebook that leaves cells out of view undrawn), and no asking for or fetching news and updates (offline).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# Run in the page before its own scripts: keeps every uncaught error and unhandled promise rejection.
ERROR_COLLECTOR = """
window.__pageErrors = [];
window.addEventListener("error", e => window.__pageErrors.push(
  `${e.message} (${e.filename || "?"}:${e.lineno || "?"})${e.error && e.error.stack ? "\\n" + e.error.stack : ""}`));
window.addEventListener("unhandledrejection", e => window.__pageErrors.push(
  `unhandled rejection: ${e.reason && (e.reason.stack || e.reason.message) || e.reason}`));
"""

# The open notebook's state, for polling: `null` until JupyterLab has opened it; `ready` once its kernel is idle.
NOTEBOOK_STATE = """
const app = window.jupyterapp, panel = app && app.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext || !panel.context.isReady) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
return {path: panel.context.path, kernel: kernel ? kernel.status : "none",
        connection: kernel ? kernel.connectionStatus : "none",
        ready: !!kernel && kernel.status === "idle" && kernel.connectionStatus === "connected"};
"""

# Runs every cell; the command's promise settles when the last one has run (or a cell failed and the rest stopped).
RUN_ALL = """
window.__runAll = {done: false};
window.jupyterapp.commands.execute("notebook:run-all-cells").then(
  ok => { window.__runAll = {done: true, ok: ok}; },
  error => { window.__runAll = {done: true, ok: false, error: String(error && error.stack || error)}; });
"""

# The explorer's figure: the image in the Output widget of the VBox that holds the given dropdown, and the text that
# the Output widget shows besides (a message, or a traceback when the redraw failed).
FIGURE = """
const box = arguments[0].closest(".widget-vbox"), output = box && box.querySelector(".widget-output");
if (!output) return null;
const image = output.querySelector("img"), error = output.querySelector(
  "[data-mime-type='application/vnd.jupyter.stderr'], [data-mime-type='application/vnd.jupyter.error']");
return {src: image ? image.getAttribute("src") || "" : "", loaded: !!image && image.complete && image.naturalWidth > 0,
        shown: !!image && image.getBoundingClientRect().width > 0, text: output.innerText.trim().slice(-1500),
        error: error ? error.innerText.trim().slice(-1500) : ""};
"""


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _require_lab_and_browser() -> None:
    "Skip without Chromium, chromedriver, selenium or jupyterlab, except in CI, where the test must run."
    missing = [name for name, found in [("chromium", CHROMIUM), ("chromedriver (chromium-driver)", CHROMEDRIVER),
                                        ("selenium", _importable("selenium")),
                                        ("jupyterlab", _importable("jupyterlab"))] if not found]
    if not missing: return
    message = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver; pip install -e '.[dev]')"
    if os.environ.get("CI"): pytest.fail(f"{message}; .ci/run installs them")
    pytest.skip(message)


def _free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on now."
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition: Callable[[], Any], seconds: float, what: str, poll_s: float = 0.5,
              explain: Callable[[], str] = lambda: "") -> Any:
    "Poll `condition` until it returns something truthy (returned); after `seconds`, fail naming `what`, `explain()`."
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result: return result
        if time.monotonic() > deadline: pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}{explain()}")
        time.sleep(poll_s)


def _copy_runnable_notebook(notebook: Path, folder: Path) -> Path:
    "A copy of `notebook` in `folder` with only the cells the notebook tests run (no export call, no flagged cells)."
    import nbformat
    nb = nbformat.read(notebook, as_version=4)
    flags = build_docs.skip_flags()
    nb.cells = [cell for cell in nb.cells if cell.cell_type != "code" or build_docs.runs(cell, flags)]
    for cell in nb.cells:
        if cell.cell_type == "code": cell.outputs, cell.execution_count = [], None
    copy = folder / notebook.name
    nbformat.write(nb, copy)
    return copy


@dataclass
class Lab:
    "A JupyterLab server of the test: where to open it, and its temporary folder."
    url: str
    token: str
    folder: Path
    notebook: Path
    log: Path

    def log_tail(self, characters: int = 3000) -> str:
        "The end of the server's log, for failure messages."
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else "(no log)"


def _write_lab_settings(settings_dir: Path) -> None:
    "JupyterLab's user settings files for `LAB_SETTINGS`."
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def _server_answers(url: str, token: str, server: subprocess.Popen, lab_log: Path) -> bool:
    "Whether the server answers its status API; fails with its log if it has exited."
    if server.poll() is not None:
        pytest.fail(f"JupyterLab exited with {server.returncode}:\n{lab_log.read_text(errors='replace')[-3000:]}")
    try:
        with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError): return False


def _stop_server(server: subprocess.Popen, url: str, token: str) -> None:
    "Ask the server to shut down (it stops its kernels), then end its process group if it is still there."
    try:
        request = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(request, timeout=10).close()
        server.wait(timeout=20)
    except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired): pass
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        try: os.killpg(server.pid, stop_signal)  # the server's own session: it and any kernel left behind
        except ProcessLookupError: return
        try: server.wait(timeout=10)
        except subprocess.TimeoutExpired: continue


@pytest.fixture
def lab() -> Iterator[Lab]:
    "JupyterLab on 127.0.0.1 serving a temporary copy of the notebook, with every file it writes in that folder."
    _require_lab_and_browser()
    with tempfile.TemporaryDirectory(prefix="dynvfx-lab-") as name:
        folder = Path(name)
        nbs = folder / "nbs"; nbs.mkdir()
        notebook = _copy_runnable_notebook(NOTEBOOK, nbs)
        for helper in build_docs.NBS.glob("*.py"): shutil.copy(helper, nbs)  # test_helpers.py, as the notebooks import
        (folder / "data").symlink_to(ROOT / "data", target_is_directory=True)  # the notebook reads ../data/sample
        config = folder / "jupyter-config"
        _write_lab_settings(config / "lab" / "user-settings")
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
                   IPYTHONDIR=str(folder / "ipython"), IN_TEST="1")  # IN_TEST as the notebook tests set it
        port, token, log = _free_port(), secrets.token_hex(16), folder / "lab.log"
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                   f"--ServerApp.root_dir={nbs}", "--ServerApp.allow_root=True", "--expose-app-in-browser",
                   "--LabApp.extension_manager=readonly",  # no looking up extensions on PyPI
                   "--LanguageServerManager.autodetect=False",  # jupyter_lsp would run npm, which logs to $HOME
                   f"--LabApp.user_settings_dir={config / 'lab' / 'user-settings'}",
                   f"--LabApp.workspaces_dir={config / 'lab' / 'workspaces'}", "--NotebookNotary.db_file=:memory:",
                   f"--NotebookNotary.secret_file={folder / 'notebook_secret'}"]
        with open(log, "wb") as log_file:
            server = subprocess.Popen(command, cwd=nbs, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_for(lambda: _server_answers(url, token, server, log), SERVER_START_S, "JupyterLab's server")
            yield Lab(url, token, folder, notebook, log)
        finally: _stop_server(server, url, token)


@pytest.fixture
def browser(lab: Lab) -> Iterator[WebDriver]:
    "Headless Chromium under chromedriver, offline but for 127.0.0.1, collecting the page's uncaught errors."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1400,1000",
                 f"--user-data-dir={lab.folder / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    xdg_dirs = {f"XDG_{kind.upper()}_HOME": str(lab.folder / "xdg" / kind) for kind in ["config", "cache", "data"]}
    service = Service(executable_path=CHROMEDRIVER, log_output=str(lab.folder / "chromedriver.log"),
                      env=dict(os.environ, **xdg_dirs))  # Chromium's dconf and caches stay out of $HOME
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_COLLECTOR})
        driver.set_script_timeout(30)
        yield driver
    finally: driver.quit()


def _kernel_errors(driver: WebDriver) -> list[str]:
    "The error outputs of the open notebook's cells, as 'cell N: Name: value' and the traceback's last lines."
    notebook = driver.execute_script("return window.jupyterapp.shell.currentWidget.context.model.toJSON();")
    errors = []
    for number, cell in enumerate(notebook["cells"], 1):
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error": continue
            traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(output.get("traceback", [])))
            errors.append(f"cell {number} ({''.join(cell['source'])[:60]!r}): {output['ename']}: {output['evalue']}"
                          f"\n{traceback[-1500:]}")
    return errors


class PageErrors:
    "The page's uncaught errors and unhandled rejections (ERROR_COLLECTOR keeps them) and its console's errors."

    def __init__(self, driver: WebDriver):
        self.driver, self.console = driver, []  # chromedriver hands each console entry over once: keep them

    def __call__(self) -> list[str]:
        self.console += [f"console: {entry['message']}" for entry in self.driver.get_log("browser")
                         if entry["level"] == "SEVERE"]
        return self.driver.execute_script("return window.__pageErrors || [];") + self.console

    def explain(self) -> str:
        "For a failure message: the errors so far, if any."
        errors = self()
        return "; errors in the page:\n" + "\n".join(errors) if errors else ""


def _explorer_controls(driver: WebDriver, label: str) -> list[WebElement]:
    "The `<select>` elements of the dropdowns named `label` (ipywidgets 8 draws a label and a select)."
    return driver.find_elements(
        "xpath", f"//div[contains(@class, 'widget-dropdown')][label[normalize-space() = '{label}']]/select")


def _explorer_control(driver: WebDriver, label: str) -> WebElement:
    "The `<select>` of the explorer's dropdown named `label`; there must be exactly one explorer on the page."
    selects = _explorer_controls(driver, label)
    assert len(selects) == 1, f"{len(selects)} explorer '{label}' controls rendered, expected one"
    return selects[0]


def _figure(driver: WebDriver, control: WebElement) -> dict:
    "The explorer's figure (`src`, `loaded`, `shown`) and the text its Output widget shows (`text`, `error`)."
    return driver.execute_script(FIGURE, control) or {}


def _move(driver: WebDriver, label: str) -> tuple[str, str]:
    "Pick the next option of the explorer's `label` control as a user would; the option labels before and after."
    from selenium.webdriver.support.select import Select
    control = _explorer_control(driver, label)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", control)
    choice = Select(control)
    before = choice.first_selected_option.text
    options = [option.text for option in choice.options]
    after = options[(options.index(before) + 1) % len(options)]
    choice.select_by_visible_text(after)
    return before, after


def test_explorer_redraws_when_a_control_moves(lab: Lab, browser: WebDriver) -> None:
    driver, started, page_errors = browser, time.monotonic(), PageErrors(browser)
    def explorer_shows() -> str:
        figure = _figure(driver, _explorer_control(driver, "layer"))
        return f"; the explorer shows: {figure.get('text') or ('a figure' if figure.get('src') else 'nothing')}"

    driver.get(f"{lab.url}/lab/tree/{lab.notebook.name}?token={lab.token}&reset")
    state = _wait_for(lambda: driver.execute_script(NOTEBOOK_STATE), PAGE_READY_S, "JupyterLab to open the notebook",
                      explain=page_errors.explain)
    assert state["path"] == lab.notebook.name, f"JupyterLab opened {state['path']}, not {lab.notebook.name}"
    _wait_for(lambda: (driver.execute_script(NOTEBOOK_STATE) or {}).get("ready"), PAGE_READY_S,
              "the notebook's kernel to start",
              explain=lambda: f"; it is {driver.execute_script(NOTEBOOK_STATE)}; server log:\n{lab.log_tail()}")

    driver.execute_script(RUN_ALL)
    run = _wait_for(lambda: driver.execute_script("return window.__runAll.done && window.__runAll;"),
                    NOTEBOOK_RUN_S, "the notebook's cells to run", poll_s=1)
    errors = _kernel_errors(driver)
    if errors: pytest.fail("the notebook failed in JupyterLab:\n" + "\n\n".join(errors), pytrace=False)
    if not run["ok"]:
        pytest.fail(f"running all cells failed: {run.get('error')}{page_errors.explain()}", pytrace=False)
    ran_s = time.monotonic() - started

    _wait_for(lambda: _explorer_controls(driver, "layer"), 30, "the explorer's widgets to render",
              explain=page_errors.explain)
    def first_figure() -> dict | None:
        figure = _figure(driver, _explorer_control(driver, "layer"))
        return figure if figure.get("loaded") else None
    first = _wait_for(first_figure, 30, "the explorer's first figure", explain=explorer_shows)
    assert first["src"].startswith("data:image/png"), f"the figure is not a PNG data URL: {first['src'][:60]}"
    assert first["shown"], "the explorer's figure has no size on the page"

    shown = first
    for label in ["layer", "step"]:
        before, after = _move(driver, label)
        def redrawn() -> dict | None:
            figure = _figure(driver, _explorer_control(driver, label))
            if figure.get("error"):
                pytest.fail(f"moving {label} from {before} to {after} failed:\n{figure['error']}", pytrace=False)
            return figure if figure.get("loaded") and figure["src"] != shown["src"] else None
        shown = _wait_for(redrawn, REDRAW_S, f"the figure to change when {label} moved from {before} to {after}",
                          explain=explorer_shows)
        assert shown["shown"], f"after {label} moved, the figure has no size on the page"

    assert not driver.find_elements("xpath", "//*[contains(text(), 'Error displaying widget')]"), \
        "a widget failed to render"
    errors = _kernel_errors(driver)
    if errors: pytest.fail("the explorer's redraw failed in the kernel:\n" + "\n\n".join(errors), pytrace=False)
    if page_errors(): pytest.fail(page_errors.explain().lstrip("; "), pytrace=False)
    print(f"notebook ran in {ran_s:.0f} s; the figure changed with layer and step in "
          f"{time.monotonic() - started - ran_s:.1f} s")
