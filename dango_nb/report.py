"""``make report``: execute every notebook headless with papermill and collect the results.

    python -m dango_nb.report --params params --out reports

1. Every parameter file in ``--params`` (one per notebook, see :mod:`dango_nb.params`) is validated
   before anything runs or anything is deleted; a bad file stops here with the file, key and allowed
   keys named.
2. The notebooks run in order, each into its own folder ``<out>/<run>/`` (``lambda_determination``,
   ``pretraining``, ``loss_schedules``, ``evaluation``): the executed ``.ipynb``, its HTML export, the
   PNG figures and the tables it writes, plus ``summary.json`` (its key numbers, written by the notebook
   through :func:`write_summary`). A run's folder is emptied before the notebook runs again.
   The schedule notebook runs once and compares all schedules on the same batch (one data load, and
   the comparison figure needs every schedule); its per-schedule figures are
   ``loss_schedules/<Schedule>_transition_epoch=<T>_<timestamp>/final_results.png``.
3. The lambda notebook writes ``lambda_determination/lambdas.json``, which the other three read, so
   when it fails they are skipped; the other three do not depend on each other, so one failing does not
   stop the rest. The folders of notebooks that succeeded are kept.
4. ``<out>/index.html`` links every run and shows its key numbers (lambdas, final Pearson per
   schedule, the evaluation table); ``<out>/summary.json`` and ``<out>/summary.md`` hold the same.
   Any failed or skipped notebook makes the command exit with status 1 after printing the failing
   cell's error.

The kernel is ``dango_nb`` when registered (``make install`` does it), else ``python3``. Kernels
run with ``OMP_NUM_THREADS=1`` / ``MKL_NUM_THREADS=1`` unless those are already set (``--threads N``
sets them): on the 2-core reference machine, shared with other work, PyTorch's intra-op threads made
the sparse training steps far slower, not faster (10 pre-training epochs of the ``small`` preset:
1.3 s with one thread, 61 s with two).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import html
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ParamsError
from .fileio import atomic_write, atomic_write_json
from .params import NOTEBOOKS, load_param_dir, run_name

__all__ = ["RunResult", "DEPENDS_ON", "notebook_dir", "pick_kernel", "run_notebook", "run_report",
           "write_summary", "read_summary", "write_index", "main"]

#: run name -> runs whose outputs it reads
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "lambda_determination": (),
    "pretraining": ("lambda_determination",),
    "loss_schedules": ("lambda_determination",),
    "evaluation": ("lambda_determination",),
}
SUMMARY_NAME = "summary.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def notebook_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the package)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def pick_kernel(preferred: str = "dango_nb") -> str:
    """``preferred`` when that kernel spec is installed, else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return preferred if preferred in KernelSpecManager().find_kernel_specs() else "python3"


# ---------------------------------------------------------------------------- per-run summaries
def write_summary(report_dir: str | os.PathLike, numbers: Mapping[str, Any], **extra: Any) -> Path:
    """Called by a notebook at its end: its key numbers (JSON-able; scalars, mappings of scalars,
    or ``{"columns": [...], "rows": [[...], ...]}`` tables) go to ``<report_dir>/summary.json``."""
    path = Path(report_dir) / SUMMARY_NAME
    atomic_write_json({"numbers": dict(numbers), **extra}, path)
    return path


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def table(df, digits: int = 4) -> dict:
    """A DataFrame as the ``{"columns", "rows"}`` form :func:`write_summary` renders as a table
    (floats kept to ``digits`` significant digits)."""
    def cell(v):
        v = v.item() if hasattr(v, "item") else v
        return float(f"{v:.{digits}g}") if isinstance(v, float) else v

    return {"columns": [str(c) for c in df.columns], "rows": [[cell(v) for v in rec] for rec in df.itertuples(index=False)]}


# ------------------------------------------------------------------------------------- running
@dataclass
class RunResult:
    name: str
    notebook: str
    status: str  # "ok" | "failed" | "skipped"
    seconds: float = 0.0
    error: str | None = None
    ipynb: str | None = None
    html: str | None = None
    figures: list[str] = field(default_factory=list)
    summary: dict | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


def _error_text(err: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        tb = _ANSI.sub("", "\n".join(err.traceback or []))
        return (f"cell {err.cell_index} (execution count {err.exec_count}) raised "
                f"{err.ename}: {err.evalue}\n{tb}").rstrip()
    return f"{type(err).__name__}: {err}"


def export_html(ipynb: Path) -> Path:
    """HTML next to the executed notebook (figures embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = ipynb.with_suffix(".html")
    with atomic_write(out) as fh:
        fh.write(body)
    return out


def run_notebook(stem: str, params_file: Path, out_root: Path, kernel: str,
                 timeout: int | None = None, nb_dir: Path | None = None) -> RunResult:
    """Execute one notebook into ``out_root/<run>/`` (emptied first) and export its HTML."""
    import papermill as pm

    name = run_name(stem)
    nb_dir = nb_dir or notebook_dir()
    src = nb_dir / f"{stem}.ipynb"
    run_dir = out_root / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    out_nb = run_dir / f"{stem}.ipynb"
    res = RunResult(name, str(src), "ok", ipynb=str(out_nb.relative_to(out_root)))
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out_nb), kernel_name=kernel, language="python", cwd=str(nb_dir),
                            parameters={"params_file": str(params_file.resolve()),
                                        "report_dir": str(run_dir.resolve())},
                            progress_bar=False, execution_timeout=timeout)
    except Exception as err:
        res.status, res.error = "failed", _error_text(err)
    res.seconds = round(time.perf_counter() - t0, 1)
    if out_nb.is_file():
        try:
            res.html = str(export_html(out_nb).relative_to(out_root))
        except Exception as err:
            print(f"warning: HTML export of {out_nb} failed: {err}", file=sys.stderr)
    res.figures = sorted(str(p.relative_to(out_root)) for p in run_dir.rglob("*.png"))
    res.summary = read_summary(run_dir)
    if res.status == "ok" and res.summary is None:
        res.status, res.error = "failed", f"{src.name} finished without writing {SUMMARY_NAME}"
    return res


def run_report(params_dir: str | os.PathLike, out: str | os.PathLike, only: Sequence[str] | None = None,
               kernel: str | None = None, timeout: int | None = None, nb_dir: Path | None = None,
               log=None, threads: int | None = None) -> tuple[list[RunResult], dict]:
    """Validate ``params_dir``, run the notebooks, write the index and summaries."""
    params_dir, out = Path(params_dir), Path(out)
    log = log or (lambda *a: print(*a, flush=True))
    stems = list(NOTEBOOKS)
    if only:
        wanted = set(only)
        bad = wanted - set(stems) - {run_name(s) for s in stems}
        if bad:
            raise ParamsError(f"--only: unknown notebook(s) {sorted(bad)}; choose from "
                              f"{', '.join(run_name(s) for s in stems)}")
        stems = [s for s in stems if s in wanted or run_name(s) in wanted]
    load_param_dir(params_dir, tuple(stems))  # everything validated before any work
    nb_dir = Path(nb_dir) if nb_dir is not None else notebook_dir()
    missing = [f"{s}.ipynb" for s in stems if not (nb_dir / f"{s}.ipynb").is_file()]
    if missing:
        raise ParamsError(f"{nb_dir}: notebook(s) {', '.join(missing)} not found (use --notebooks DIR)")
    kernel = kernel or pick_kernel()
    out.mkdir(parents=True, exist_ok=True)
    with _thread_env(threads):
        return _run_all(stems, params_dir, out, kernel, timeout, nb_dir, log)


@contextlib.contextmanager
def _thread_env(threads: int | None):
    """Thread variables the kernels inherit: ``threads`` when given, else 1 where not set."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    try:
        for k in _THREAD_VARS:
            if threads is not None:
                os.environ[k] = str(int(threads))
            else:
                os.environ.setdefault(k, "1")
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_all(stems, params_dir: Path, out: Path, kernel: str, timeout, nb_dir, log):
    started = _dt.datetime.now()
    t0 = time.perf_counter()
    params_dir = Path(params_dir)
    results: list[RunResult] = []
    status: dict[str, str] = {}
    for stem in stems:
        name = run_name(stem)
        blocked = [d for d in DEPENDS_ON.get(name, ()) if status.get(d, "ok") != "ok"
                   or (d not in status and not (out / d / SUMMARY_NAME).is_file())]
        if blocked:
            r = RunResult(name, str((nb_dir or notebook_dir()) / f"{stem}.ipynb"), "skipped",
                          error=f"skipped: needs {', '.join(blocked)}, which did not succeed")
            log(f"[report] {name}: {r.error}")
        else:
            log(f"[report] {name}: running {stem}.ipynb (kernel {kernel}) ...")
            r = run_notebook(stem, params_dir / f"{stem}.yaml", out, kernel, timeout, nb_dir)
            log(f"[report] {name}: {r.status} in {r.seconds:.1f} s")
            if r.status != "ok":
                log(f"[report] {name} FAILED: {r.error}")
        status[name] = r.status
        results.append(r)
    summary = {
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "params_dir": str(params_dir.resolve()),
        "kernel": kernel,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "ok": all(r.status == "ok" for r in results),
        "runs": [r.to_dict() for r in results],
    }
    atomic_write_json(summary, out / "summary.json")
    with atomic_write(out / "summary.md") as fh:
        fh.write(summary_markdown(summary))
    write_index(summary, out / "index.html")
    return results, summary


# -------------------------------------------------------------------------------------- output
def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _is_table(v: Any) -> bool:
    return isinstance(v, Mapping) and set(v) == {"columns", "rows"}


def _html_value(v: Any) -> str:
    if _is_table(v):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in v["columns"])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_scalar(x))}</td>" for x in row) + "</tr>"
                       for row in v["rows"])
        return f"<table><tr>{head}</tr>{body}</table>"
    if isinstance(v, Mapping):
        return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_html_value(x)}</td></tr>"
                                   for k, x in v.items()) + "</table>"
    if isinstance(v, (list, tuple)):
        return html.escape(", ".join(_scalar(x) for x in v))
    return html.escape(_scalar(v))


def _md_value(k: str, v: Any) -> str:
    if _is_table(v):
        lines = [f"**{k}**", "", "| " + " | ".join(map(str, v["columns"])) + " |",
                 "|" + "---|" * len(v["columns"])]
        lines += ["| " + " | ".join(_scalar(x) for x in row) + " |" for row in v["rows"]]
        return "\n".join(lines) + "\n"
    if isinstance(v, Mapping):
        return f"**{k}**\n\n" + "\n".join(f"- {a}: {_scalar(b)}" for a, b in v.items()) + "\n"
    return f"- **{k}**: {_scalar(v)}"


def summary_markdown(summary: Mapping) -> str:
    out = [f"# dango_nb report ({summary['started']})", "",
           f"Parameters: `{summary['params_dir']}`; kernel `{summary['kernel']}`; "
           f"total {summary['wall_s']:.1f} s; {'all notebooks succeeded' if summary['ok'] else 'SOME NOTEBOOKS FAILED'}.",
           ""]
    if any((r.get("summary") or {}).get("synthetic") for r in summary["runs"]):
        out += ["**Results marked synthetic come from the embedded SYNTHETIC benchmark, not from real "
                "STRING / Kuzmin data.**", ""]
    for r in summary["runs"]:
        out += [f"## {r['name']}: {r['status']} ({r['seconds']:.1f} s)", ""]
        if r.get("html"):
            out.append(f"Report: [{r['html']}]({r['html']})\n")
        if r.get("error"):
            out += ["```", r["error"][-3000:], "```", ""]
        s = r.get("summary") or {}
        meta = [_md_value(k, v) for k, v in s.items() if k != "numbers"]
        if meta:
            out += meta + [""]
        for k, v in (s.get("numbers") or {}).items():
            out += [_md_value(k, v), ""]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%;text-align:left}
.ok{color:#176f2c}.failed,.skipped{color:#b00020}pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:25em}
img.thumb{height:170px;margin:4px;border:1px solid #ddd}section{border-top:2px solid #eee;margin-top:1.5em}
"""


def write_index(summary: Mapping, path: Path) -> Path:
    """``index.html``: every run, its status, links, key numbers and figure thumbnails."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dango_nb report</title>"
             f"<style>{_CSS}</style></head><body><h1>dango_nb report</h1>",
             f"<p>Started {html.escape(summary['started'])}; parameters <code>{html.escape(summary['params_dir'])}"
             f"</code>; kernel <code>{html.escape(summary['kernel'])}</code>; total {summary['wall_s']:.1f} s. "
             f"<a href='summary.md'>summary.md</a> · <a href='summary.json'>summary.json</a></p>",
             "<table><tr><th>run</th><th>status</th><th>time (s)</th><th>report</th><th>notebook</th></tr>"]
    if any((r.get("summary") or {}).get("synthetic") for r in summary["runs"]):
        parts.insert(2, "<p class='failed'><b>Results marked synthetic come from the embedded SYNTHETIC "
                        "benchmark, not from real STRING / Kuzmin data.</b></p>")
    for r in summary["runs"]:
        link = f"<a href='{html.escape(r['html'])}'>HTML</a>" if r.get("html") else ""
        nb = f"<a href='{html.escape(r['ipynb'])}'>.ipynb</a>" if r.get("ipynb") else ""
        parts.append(f"<tr><td><a href='#{r['name']}'>{r['name']}</a></td><td class='{r['status']}'>"
                     f"{r['status']}</td><td>{r['seconds']:.1f}</td><td>{link}</td><td>{nb}</td></tr>")
    parts.append("</table>")
    for r in summary["runs"]:
        parts.append(f"<section id='{r['name']}'><h2>{r['name']} <span class='{r['status']}'>"
                     f"({r['status']})</span></h2>")
        if r.get("error"):
            parts.append(f"<pre>{html.escape(r['error'][-5000:])}</pre>")
        s = r.get("summary") or {}
        meta = {k: v for k, v in s.items() if k != "numbers"}
        if meta:
            parts.append(_html_value(meta))
        for k, v in (s.get("numbers") or {}).items():
            parts.append(f"<h3>{html.escape(k)}</h3>{_html_value(v)}")
        for fig in r.get("figures", []):
            parts.append(f"<a href='{html.escape(fig)}' title='{html.escape(fig)}'>"
                         f"<img class='thumb' src='{html.escape(fig)}' alt='{html.escape(fig)}'></a>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    with atomic_write(path) as fh:
        fh.write("\n".join(parts))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dango_nb.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params", help="parameter directory (one YAML per notebook)")
    ap.add_argument("--out", default="reports", help="report directory")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="run only these notebooks "
                    "(lambda_determination pretraining loss_schedules evaluation)")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel (default: dango_nb if registered, else python3)")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    ap.add_argument("--notebooks", default=None, help="folder holding the notebooks (default: the repository's notebooks/)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/MKL threads of the kernels (default: as set in the environment, else 1)")
    args = ap.parse_args(argv)
    try:
        results, summary = run_report(args.params, args.out, args.only, args.kernel, args.timeout,
                                      nb_dir=Path(args.notebooks) if args.notebooks else None,
                                      threads=args.threads)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        if r.status != "ok":
            print(f"\n=== {r.name} {r.status.upper()} ===\n{r.error}", file=sys.stderr)
    print(f"[report] {sum(r.status == 'ok' for r in results)}/{len(results)} notebooks ok in "
          f"{summary['wall_s']:.1f} s; open {Path(args.out) / 'index.html'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
