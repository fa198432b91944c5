"""End-to-end: the loss-schedule notebook and its widget in a real JupyterLab, in headless chromium.

Run with ``make test-ui`` (sets DANGO_UI=1). Screenshots land in reports/ui/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(
        os.environ.get("DANGO_UI", "") != "1",
        reason="browser test in JupyterLab: run `make test-ui` (or set DANGO_UI=1)",
    ),
]

# Seconds; the notebook's "Run All" with tiny parameters dominates.
RUN_ALL_TIMEOUT = float(os.environ.get("DANGO_UI_TIMEOUT", "600"))
WIDGET_TIMEOUT = float(os.environ.get("DANGO_UI_WIDGET_TIMEOUT", "120"))

# CSS classes the widget (dango_nb/widgets.py) puts on its parts.
SCHEDULE = ".dango-schedule"
SLIDER = ".dango-transition-epoch"
RUN = ".dango-run"
ALPHA_PLOT = ".dango-alpha-plot"
RESULTS_PLOT = ".dango-results-plot"
PROGRESS = ".dango-progress"
ALPHA_DATA = ".dango-alpha-data"  # optional: the plotted alpha values as JSON text (hidden)
STATUS = ".dango-status"  # optional: caption naming the last run's schedule and transition_epoch

_NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator')
           || document.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
                       .map(e => e.textContent.trim());
  return {status: ind ? ind.getAttribute('data-status') : null, prompts};
}"""

# A plot's identity: SHA-256 of the image bytes it shows (ipywidgets Image -> blob: URL, Output
# widget with inline matplotlib -> data: URL), plus any inline SVG. Empty while no image is loaded.
_PLOT_SIGNATURE_JS = """async (el) => {
  const imgs = el.tagName === 'IMG' ? [el] : Array.from(el.querySelectorAll('img'));
  const parts = [];
  for (const img of imgs) {
    const src = img.getAttribute('src') || '';
    if (!src) continue;
    try {
      const buf = await (await fetch(src)).arrayBuffer();
      if (!buf.byteLength) continue;
      const d = new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
      parts.push(Array.from(d, b => b.toString(16).padStart(2, '0')).join(''));
    } catch (e) { /* a blob URL revoked by a redraw in flight: not ready yet */ }
  }
  for (const s of el.querySelectorAll('svg')) parts.push(s.outerHTML);
  return parts.join('\\n');
}"""

# Progress of the widget's bar as a fraction: ipywidgets' IntProgress/FloatProgress draw a
# .progress-bar whose width is the percentage (also when nested in a tqdm.auto HBox).
_PROGRESS_JS = """(el) => {
  const bars = el.classList.contains('progress-bar') ? [el]
             : Array.from(el.querySelectorAll('.progress-bar'));
  if (!bars.length) return null;
  const w = parseFloat(bars[0].style.width);
  return Number.isFinite(w) ? w / 100 : null;
}"""


def _wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _shot(page, report_dir: Path, name: str, focus=None) -> Path:
    """Full-window screenshot with ``focus`` scrolled to the top of the notebook view."""
    if focus is not None:
        focus.evaluate("e => (e.closest('.jp-OutputArea-child') || e).scrollIntoView({block: 'start'})")
        time.sleep(0.3)  # let Lab's lazy rendering settle after the scroll
    path = report_dir / name
    page.screenshot(path=str(path))
    return path


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def _save(page) -> None:
    """File > Save Notebook, then wait until the tab is no longer marked dirty."""
    _menu(page, "File", "Save Notebook")
    _wait_until(lambda: page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0, 30,
                "the notebook to be saved")


def _kernel_state(server, nb_name: str):
    """execution_state of the kernel the server holds for ``nb_name``, or None."""
    for sess in server.api("/api/sessions"):
        if sess.get("path", "").endswith(nb_name) and sess.get("kernel"):
            return sess["kernel"].get("execution_state")
    return None


def _notebook_state(page):
    return page.evaluate(_NOTEBOOK_STATE_JS)


def _wait_kernel_idle_all_run(page, timeout: float):
    """All code cells carry an execution count and the kernel is idle."""

    def done():
        st = _notebook_state(page)
        if st is None:
            return False
        if st["status"] in ("dead", "terminating", "autorestarting"):
            raise AssertionError(f"kernel went {st['status']} while running the notebook")
        numbered = all(re.fullmatch(r"\[\d+\]:", p) for p in st["prompts"])
        return st if (st["status"] == "idle" and st["prompts"] and numbered) else False

    return _wait_until(done, timeout, "all cells executed and the kernel idle", interval=0.5)


def _wait_kernel_idle(page, timeout: float):
    return _wait_until(
        lambda: (_notebook_state(page) or {}).get("status") == "idle", timeout, "kernel idle"
    )


def _plot_signature(locator) -> str:
    return locator.evaluate(_PLOT_SIGNATURE_JS)


def _wait_plot_changed(locator, before: str, what: str) -> str:
    def changed():
        sig = _plot_signature(locator)
        return sig if (sig and sig != before) else False

    return _wait_until(changed, WIDGET_TIMEOUT, what)


def _alpha_data(page):
    """The plotted alpha(epoch) values the widget mirrors as JSON (``.dango-alpha-data``), or None."""
    el = page.locator(ALPHA_DATA)
    if not el.count():
        return None
    text = el.first.text_content().strip()
    return json.loads(text) if text else None


def _wait_alpha_redrawn(page, alpha, before: str, transition_epoch: int, schedule: str | None):
    """Wait until the alpha plot shows a new image, stable for a moment (key presses redraw once
    each), and, where the widget mirrors its data, that data is for ``schedule``/``transition_epoch``.
    Returns (image signature, data or None)."""

    def data_ok():
        d = _alpha_data(page)
        if d is None:
            return page.locator(ALPHA_DATA).count() == 0 or False
        return (d.get("transition_epoch") == transition_epoch
                and (schedule is None or d.get("schedule") == schedule))

    what = f"alpha plot for transition_epoch={transition_epoch}" + (
        f", schedule={schedule}" if schedule else "")
    _wait_until(data_ok, WIDGET_TIMEOUT, f"{what} in {ALPHA_DATA}")
    _wait_plot_changed(alpha, before, what)

    def stable():
        first = _plot_signature(alpha)
        time.sleep(0.5)
        return first if (first and first == _plot_signature(alpha)
                         and (_notebook_state(page) or {}).get("status") == "idle") else False

    return _wait_until(stable, WIDGET_TIMEOUT, f"{what} to settle"), _alpha_data(page)


def _digest(sig: str) -> str:
    return hashlib.sha256(sig.encode()).hexdigest()[:12]


def _parsed_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _saved_notebook_problems(nb_path: Path) -> list[str]:
    """Error outputs and unexecuted code cells in the notebook as Lab saved it. Jupyter writes the
    file in place (its atomic writing keeps a backup copy, it does not rename), so a read while a
    save or an autosave is writing can see it empty or cut: read until it parses."""
    nb = _wait_until(lambda: _parsed_json(nb_path), 30, f"{nb_path} to hold the saved notebook")
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i} was not executed")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i} raised {out.get('ename')}: {out.get('evalue')}")
    return problems


def test_schedule_widget_in_jupyterlab(ui_notebook, lab_server, page, ui_report_dir, ui_timings):
    timings = ui_timings
    t0 = time.monotonic()
    try:
        # -- log in with the URL Jupyter printed (as a user's click does; the browser keeps the
        # login cookie), then open the notebook in a clean workspace; the kernel starts by itself
        login = page.request.get(lab_server.login_url)
        assert login.ok, f"GET {lab_server.login_url} gave HTTP {login.status}"
        page.goto(f"{lab_server.url}/lab/tree/{ui_notebook.as_posix()}?reset")
        assert "/login" not in page.url, f"the token URL did not log the browser in ({page.url})"
        page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
        # The toolbar says idle before any kernel exists; a Run All sent then runs nothing.
        _wait_until(lambda: _kernel_state(lab_server, ui_notebook.as_posix()) == "idle", 180,
                    "the dango_nb kernel to start (GET /api/sessions)", interval=0.5)
        _wait_kernel_idle(page, 60)
        # Collapse the file browser (click its current side tab): room for the figures.
        left_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if left_tab.count():
            left_tab.first.click()
        timings["open"] = time.monotonic() - t0

        # -- Run > Run All Cells, wait for every cell, no errors --------------------------------
        t = time.monotonic()
        _menu(page, "Run", "Run All Cells")
        _wait_until(
            lambda: any(p != "[ ]:" for p in (_notebook_state(page) or {}).get("prompts", [])),
            60, "Run All Cells to start executing",
        )
        _wait_kernel_idle_all_run(page, RUN_ALL_TIMEOUT)
        timings["run_all"] = time.monotonic() - t
        _save(page)
        problems = _saved_notebook_problems(Path(lab_server.root) / ui_notebook)
        assert not problems, "Run All Cells in JupyterLab failed:\n" + "\n".join(problems)

        alpha = page.locator(ALPHA_PLOT).first
        results = page.locator(RESULTS_PLOT).first
        alpha.wait_for(state="visible", timeout=30_000)
        alpha_0 = _plot_signature(alpha)
        assert alpha_0, "the alpha(epoch) plot shows no image after Run All"
        data_0 = _alpha_data(page)
        if data_0 is not None:  # a test hook: in the DOM, out of sight
            assert not page.locator(ALPHA_DATA).first.is_visible(), f"{ALPHA_DATA} is visible"
        _shot(page, ui_report_dir, "01_after_run_all.png", focus=page.locator(SLIDER).first)

        # -- transition_epoch slider, moved with the keyboard on its handle ---------------------
        handle = page.locator(f"{SLIDER} .noUi-handle").first
        readout = page.locator(f"{SLIDER} .widget-readout").first
        lo, value_0, hi = (int(float(handle.get_attribute(k)))
                           for k in ("aria-valuemin", "aria-valuenow", "aria-valuemax"))
        assert int(readout.inner_text()) == value_0
        # Three steps inward, away from the ends (T = 0 makes every schedule's alpha the same).
        steps = 3 if value_0 + 3 < hi else -3
        value_1 = value_0 + steps
        assert lo < value_1 < hi, f"slider range {lo}..{hi} too small to move from {value_0}"
        handle.focus()
        for _ in range(abs(steps)):
            handle.press("ArrowRight" if steps > 0 else "ArrowLeft")
        _wait_until(lambda: int(readout.inner_text()) == value_1, 30,
                    f"slider readout to show {value_1}")
        alpha_1, data_1 = _wait_alpha_redrawn(page, alpha, alpha_0, value_1, None)
        _shot(page, ui_report_dir, "02_after_slider.png", focus=page.locator(SLIDER).first)

        # -- schedule dropdown --------------------------------------------------------------------
        select = page.locator(f"{SCHEDULE} select").first
        options = select.evaluate("s => Array.from(s.options).map(o => o.textContent)")
        current = select.evaluate("s => s.options[s.selectedIndex].textContent")
        # Prefer a linear schedule: its alpha(epoch) differs from any step-shaped one.
        prefer = ["LinearUntilFlipped", "LinearUntilUniform"]
        other = next(o for o in prefer + options if o in options and o != current)
        select.select_option(label=other)
        alpha_2, data_2 = _wait_alpha_redrawn(page, alpha, alpha_1, value_1, other)
        assert len({alpha_0, alpha_1, alpha_2}) == 3, "alpha plot image did not change each time"
        if data_0 is not None:
            assert data_0["alpha"] != data_1["alpha"] != data_2["alpha"], (
                "alpha(epoch) values in the DOM did not change", data_0, data_1, data_2)
        _shot(page, ui_report_dir, "03_after_dropdown.png", focus=page.locator(SLIDER).first)

        # -- Run: progress bar to completion, results figure replaced ---------------------------
        results_0 = _plot_signature(results)
        progress = page.locator(PROGRESS).first
        button = page.locator(RUN).first
        t = time.monotonic()
        button.click()
        seen = []

        def finished():
            frac = progress.evaluate(_PROGRESS_JS)
            if frac is not None and (not seen or seen[-1] != frac):
                seen.append(frac)
            st = _notebook_state(page) or {}
            sig = _plot_signature(results)
            return (
                st.get("status") == "idle" and frac is not None and frac >= 0.999
                and sig and sig != results_0 and not button.is_disabled()
            )

        _wait_until(finished, RUN_ALL_TIMEOUT, "Run to finish (progress 100%, new figure)",
                    interval=0.05)
        timings["run_button"] = time.monotonic() - t
        assert any(f < 0.999 for f in seen), (
            f"the progress bar never showed an unfinished state during Run (saw {seen})")
        caption = page.locator(STATUS).first.inner_text() if page.locator(STATUS).count() else None
        if caption is not None:  # the new figure is for the settings chosen in the browser
            assert f"{other}, transition_epoch = {value_1}" in caption, caption
        _save(page)
        problems = _saved_notebook_problems(Path(lab_server.root) / ui_notebook)
        assert not problems, "errors after the widget interaction:\n" + "\n".join(problems)
        _shot(page, ui_report_dir, "04_after_run.png", focus=page.locator(SLIDER).first)
        results.screenshot(path=str(ui_report_dir / "05_results_figure.png"))  # the whole figure

        assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"
        timings["total"] = time.monotonic() - t0
        summary = {
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "slider": [value_0, value_1],
            "alpha_data": [None if d is None else {k: d[k] for k in ("schedule", "transition_epoch")}
                           for d in (data_0, data_1, data_2)],
            "schedule": [current, other],
            "alpha_plot_sha": [_digest(s) for s in (alpha_0, alpha_1, alpha_2)],
            "results_plot_sha": [_digest(results_0), _digest(_plot_signature(results))],
            "progress_seen": seen,
            "status_after_run": caption,
        }
        (ui_report_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))
    except BaseException:
        try:
            page.screenshot(path=str(ui_report_dir / "99_failure.png"))
        except Exception:  # the page may be gone; the original error matters
            pass
        print("--- jupyterlab log (tail) ---\n" + lab_server.log_tail(60))
        raise
