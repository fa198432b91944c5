"""Fixtures for the browser test: a throwaway JupyterLab server and a headless Debian chromium.

Only used when DANGO_UI=1 (``make test-ui``); the test module skips otherwise, so the default
``pytest tests`` run starts neither a server nor a browser.

Environment knobs (all optional): ``DANGO_CHROMIUM`` (browser binary, default /usr/bin/chromium),
``DANGO_UI_REPORT_DIR`` (screenshots and logs, default reports/ui), ``DANGO_UI_NOTEBOOK`` (another
notebook to drive, for debugging the harness), ``DANGO_UI_TIMEOUT`` / ``DANGO_UI_WIDGET_TIMEOUT``
(seconds, see the test module).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("DANGO_CHROMIUM", "/usr/bin/chromium"))
KERNEL_NAME = "dango_nb"
NOTEBOOK_STEM = "03_loss_schedules"
LAMBDA_STEM = "01_lambda_determination"  # writes the lambdas.json the schedule notebook reads
# Debian's chromium, not Playwright's download; the network flags stop it reaching for Google hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 1200}

# User settings for the throwaway server: no news/update toasts over the notebook, and every cell
# attached to the DOM so widgets further down can be found without scrolling first.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ui: end-to-end browser test in JupyterLab (make test-ui, or DANGO_UI=1)"
    )


@pytest.fixture(scope="session")
def ui_report_dir() -> Path:
    """reports/ui/, emptied of the previous run's screenshots and logs."""
    out = Path(os.environ.get("DANGO_UI_REPORT_DIR", REPO / "reports" / "ui"))
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), *out.glob("*.log"), *out.glob("summary.json")]:
        old.unlink()
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN_URL = re.compile(r"(http://127\.0\.0\.1:(\d+)/lab\?token=([A-Za-z0-9_-]+))")


class LabServer:
    """JupyterLab started by ``scripts/lab.sh`` (what ``make lab`` runs: Jupyter's own random token,
    XSRF/Host checks on), in its own process group, with a log file.

    ``token`` and ``login_url`` are read from the log: the URL Jupyter prints for the user to open.
    :meth:`api` sends the token in an ``Authorization`` header, as Jupyter's REST clients do.
    """

    def __init__(self, root: Path, home: Path, log_path: Path, extra_args: list[str] = ()):
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token: str | None = None
        self.login_url: str | None = None
        self.log_path = log_path
        env = dict(os.environ)
        env.pop("JUPYTER_TOKEN", None)  # the token under test is the one Jupyter generates
        env.pop("JUPYTER_TOKEN_FILE", None)
        env.pop("JUPYTER_CONFIG_DIR", None)  # lab.sh refuses other config places without --insecure
        env.pop("JUPYTER_CONFIG_PATH", None)
        env.update(
            VENV=sys.prefix,  # lab.sh runs this interpreter's jupyter
            # Isolate from the user's Jupyter config (HOME/.jupyter), workspaces and settings; the
            # dango_nb kernel is found in the venv's share/jupyter (sys.prefix), where `make install` put it.
            HOME=str(home),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_DATA_DIR=str(home / "data"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        settings = home / "settings"
        for name, values in LAB_SETTINGS.items():
            plugin, file = name.rsplit("/", 1)
            (settings / plugin).mkdir(parents=True, exist_ok=True)
            (settings / plugin / file).write_text(json.dumps(values))
        cmd = [
            "bash", str(REPO / "scripts" / "lab.sh"),
            "--no-browser",
            f"--notebook-dir={root}",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *extra_args,
        ]
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def request(self, path: str, method: str = "GET", token: str | None = None, body=None,
                headers: dict | None = None, timeout: float = 10.0):
        """(status, parsed JSON body or None); HTTP errors are returned, not raised."""
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"token {token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, method=method, data=data, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as err:
            return err.code, None

    def api(self, path: str, method: str = "GET", body=None):
        """JSON of an authenticated REST call; fails the test on any status but 2xx."""
        status, data = self.request(path, method, token=self.token, body=body)
        if not 200 <= status < 300:
            raise AssertionError(f"{method} {path} with the token gave HTTP {status}")
        return data

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the log shows the token URL and ``/api/status`` answers with that token."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {self.proc.returncode} before serving:\n{self.log_tail()}"
                )
            if self.token is None:
                m = TOKEN_URL.search(self.log_path.read_text(errors="replace"))
                if m and int(m.group(2)) == self.port:
                    self.login_url, self.token = m.group(1), m.group(3)
            if self.token is not None:
                try:
                    if self.request("/api/status", token=self.token, timeout=2)[0] == 200:
                        return
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
            time.sleep(0.3)
        raise TimeoutError(f"JupyterLab not serving {self.url}/api/status (token found: "
                           f"{self.token is not None}) after {timeout}s:\n{self.log_tail()}")

    def shutdown(self) -> None:
        """POST /api/shutdown, then SIGTERM and SIGKILL the process group (kernels included)."""
        if self.proc.poll() is None and self.token is not None:
            try:
                self.request("/api/shutdown", "POST", token=self.token, timeout=5)
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)  # the group also holds the kernels it started
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.5)  # let kernel children see SIGTERM before the SIGKILL round
        self._log.close()


@pytest.fixture(scope="session")
def ui_timings() -> dict:
    """Seconds per phase, filled by the fixtures and the test, written to reports/ui/summary.json."""
    return {}


@pytest.fixture(scope="session")
def lab_workdir():
    """Temp dir: ``root/`` (the server's root, laid out like the repo), ``home/`` (Jupyter config,
    settings, runtime) and ``data/`` (DANGO_DATA_DIR: the tiny synthetic benchmark)."""
    tmp = Path(tempfile.mkdtemp(prefix="dango_ui_"))
    for sub in ("root", "home", "data"):
        (tmp / sub).mkdir()
    with pytest.MonkeyPatch.context() as mp:
        # Inherited by the papermill kernel below and by the JupyterLab server and its kernel.
        mp.setenv("DANGO_DATA_DIR", str(tmp / "data"))
        yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ui_notebook(lab_workdir, ui_timings) -> Path:
    """The loss-schedule notebook as a user meets it, with tiny parameters: ``root/notebooks/``
    holds an unmodified copy, ``root/params/`` the files of params/tiny/ (so the notebook's default
    ``../params/<stem>.yaml`` is the tiny set), and ``root/reports/`` the lambdas.json that the
    lambda notebook writes (run here headless through ``dango_nb.report``, as `make report` does).
    Returns the notebook's path relative to the server root."""
    from dango_nb import report

    root = lab_workdir / "root"
    src = Path(os.environ.get("DANGO_UI_NOTEBOOK", REPO / "notebooks" / f"{NOTEBOOK_STEM}.ipynb"))
    if not src.is_file():
        pytest.fail(f"notebook not found: {src}")
    (root / "notebooks").mkdir()
    shutil.copy(src, root / "notebooks" / src.name)
    shutil.copytree(REPO / "params" / "tiny", root / "params")
    t0 = time.monotonic()
    res = report.run_notebook(LAMBDA_STEM, root / "params" / f"{LAMBDA_STEM}.yaml", root / "reports",
                              KERNEL_NAME, timeout=600, nb_dir=REPO / "notebooks")
    if res.status != "ok":
        pytest.fail(f"set-up: {LAMBDA_STEM} (tiny) failed under papermill:\n{res.error}")
    ui_timings["setup_lambda_notebook"] = time.monotonic() - t0
    return Path("notebooks") / src.name


@pytest.fixture(scope="session")
def lab_server(lab_workdir, ui_report_dir, ui_timings):
    t0 = time.monotonic()
    server = LabServer(lab_workdir / "root", lab_workdir / "home", ui_report_dir / "jupyterlab.log")
    try:
        server.wait_ready()
        ui_timings["server_start"] = time.monotonic() - t0
        specs = server.api("/api/kernelspecs")["kernelspecs"]
        if KERNEL_NAME not in specs:
            pytest.fail(f"kernel {KERNEL_NAME!r} not registered (have {sorted(specs)}); "
                        "run `make install`")
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def browser_context(lab_workdir, ui_report_dir, ui_timings):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run scripts/setup_ui_test.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    console = open(ui_report_dir / "browser_console.log", "w")
    t0 = time.monotonic()
    with sync_playwright() as pw:
        # A fresh profile per run; no first-run pages, no network beyond the loopback server.
        context = pw.chromium.launch_persistent_context(
            str(lab_workdir / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        ui_timings["browser_start"] = time.monotonic() - t0
        context.on("console", lambda m: console.write(f"[{m.type}] {m.text}\n"))
        try:
            yield context
        finally:
            context.close()
            console.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    page.page_errors = []  # uncaught JS errors, reported by the test on failure
    page.on("pageerror", lambda e: page.page_errors.append(str(e)))
    yield page
    page.close()
