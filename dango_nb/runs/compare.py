"""Recipes of a sweep side by side: validation Pearson (what a recipe is chosen on), and beside it
test Pearson, its fraction of the noise ceiling, the additive baselines of the same test parts, the
best-validation epoch and what ensembling adds. Choosing a recipe by its test score makes that
score an optimistic estimate, so the table is ordered by validation Pearson and test columns are
only reported.

Only complete runs count (a sweep still running, or interrupted, can be compared so far).
A *recipe* is one combination of the sweep's columns other than ``train.seed`` and the split (a
``variant``, or an axis value); its runs over seeds are summarised per split (mean and sd over
seeds; folds, when the sweep has several, are pooled with the seeds). The references of each
split x fold (noise ceiling on synthetic data, ``additive`` and ``pairwise_additive``) come from
:func:`~dango_nb.eval.run_evaluation` on exactly the test part the runs held out (same split
function, fold and seed), so a fraction of the ceiling and a margin over the baseline compare
like with like. ``dango-nb compare SWEEP_FOLDER`` writes the result as ``recipes.csv`` beside
``results.csv``.

Before any number is computed every run folder is checked: its ``params.yaml`` against the request
``run.json`` and ``provenance.json`` record (:meth:`~dango_nb.runs.folder.RunFolder.checked_params`).
The data are those the runs name (preset and seed, or data file names) in a data folder the caller
gives (``data_dir``) or the user's own, never a folder a run folder records
(:func:`dango_nb.sources.own_source`, as ``predict --run``); once loaded they must be the runs'
data: the data files' SHA-256 in ``provenance.json`` and the gene names of the held-out triplets
in ``predictions.parquet``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["BASELINES", "SPLIT_KEYS", "compare_recipes", "split_references", "write_recipes"]

#: The baselines every recipe is compared with (the best of them is ``best_additive``).
BASELINES = ("additive", "pairwise_additive")
#: The resolved ``split`` keys that identify a test part.
SPLIT_KEYS = ("name", "fold", "n_folds", "seed", "val_fraction", "n_test_genes")


def _runs(sweep_dir: Path, data_dir: str | None = None) -> pd.DataFrame:
    """One row per complete run folder of the sweep (as in ``results.csv``), also while the sweep
    is unfinished or was interrupted: the runs and their axis values come from the sweep's
    ``sweep.yaml``, the numbers from each run's ``run.json``; ``_data`` is the data section to load
    (:func:`_run_data`)."""
    from ..errors import OutputFolderError, ParamsError
    from ..fileio import read_yaml
    from .executor import RunOutcome, sweep_specs
    from .folder import RunFolder, is_complete
    from .results import results_table
    from .sweep import sweep_from_mapping

    definition = sweep_dir / "sweep.yaml"
    if not definition.is_file():
        raise FileNotFoundError(f"{sweep_dir}: not a sweep folder (no sweep.yaml)")
    raw = dict(read_yaml(definition) or {})
    source = raw.pop("source", str(definition))
    sweep = sweep_from_mapping(raw, str(definition), base_dir=Path(source).parent)
    outcomes, rows = [], []
    for spec in sweep_specs(sweep, sweep_dir):
        if not is_complete(spec.out):
            continue
        folder = RunFolder.open(spec.out)
        params = folder.checked_params()
        if params.get("split") is None:
            raise ParamsError(f"{spec.out}: the run held out no test part (split: null); nothing to compare")
        outcomes.append(RunOutcome(spec.run_id, Path(spec.out), "done", folder.info, None, dict(spec.axes)))
        rows.append({**{f"_split_{k}": params["split"][k] for k in SPLIT_KEYS},
                     "_data": json.dumps(_run_data(spec.out, params["data"], data_dir), sort_keys=True)})
    if not outcomes:
        raise OutputFolderError(f"{sweep_dir}: no complete runs to compare yet (0 of its {len(sweep.runs)} runs "
                                "finished); run the sweep first")
    return pd.concat([results_table(outcomes, sweep.columns), pd.DataFrame(rows)], axis=1)


def _run_data(run: Path, data: dict, data_dir: str | None) -> dict:
    """The data section to load for a run: what its ``data`` names, inside ``data_dir`` or the
    user's own data folder (:func:`~dango_nb.sources.own_source`); a place it records is refused."""
    from ..errors import ParamsError
    from ..sources import own_source, recorded_location

    own = own_source(data, data_dir)
    if own is None:
        key, value = recorded_location(data) or ("data", data)
        what = (f"the {data.get('preset')!r} seed {data.get('seed')} benchmark" if not data.get("kuzmin_file")
                else "its data files by name")
        raise ParamsError(f"{run}: params.yaml records data.{key} {value!r}; compare reads or generates data only "
                          f"in a folder the command line names, never one a run folder records: give --data-dir DIR "
                          f"(the data folder holding {what})")
    return own


def _check_run_data(run: Path, study) -> None:
    """The loaded study holds the run's data: the data files ``provenance.json`` hashed, and the
    held-out triplets of ``predictions.parquet`` at their rows (:class:`SourceMismatchError`)."""
    from ..errors import SourceMismatchError
    from .folder import RunFolder
    from .provenance import data_files

    folder = RunFolder.open(run)
    found = {f["name"]: f["sha256"] for f in data_files(getattr(study, "source", None))}
    for f in folder.provenance.get("data_files") or []:
        name, sha = f.get("name"), f.get("sha256")
        if sha is not None and found.get(name) != sha:
            raise SourceMismatchError(
                f"{run}: the data found are not the data the run was trained on ({name}: sha256 {sha} in "
                f"provenance.json, {found.get(name) or 'no such file'} found in {study.label}); give --data-dir "
                "with the run's data")
    pred = folder.predictions()
    rows = pred["row"].to_numpy(np.int64)
    n = len(study.triplets)
    genes = np.asarray(study.genes, dtype=object)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise SourceMismatchError(f"{run}: predictions.parquet names triplet row {int(rows.max())}, the data hold "
                                  f"{n} triplets; give --data-dir with the run's data")
    names = genes[study.triplets.indices.cpu().numpy()[rows]] if len(rows) else np.zeros((0, 3), dtype=object)
    same = (names == pred[["gene1", "gene2", "gene3"]].to_numpy(dtype=object)).all(axis=1)
    if not same.all():
        k = int(np.flatnonzero(~same)[0])
        raise SourceMismatchError(f"{run}: predictions.parquet row {k} holds triplet {tuple(pred.iloc[k][['gene1', 'gene2', 'gene3']])}, "
                                  f"the data hold {tuple(names[k])} there; give --data-dir with the run's data")


def _load_study(data: dict):
    from ..params import DataParams, params_from_mapping

    return params_from_mapping(dict(data), DataParams, "data").load_study()


def split_references(data: dict, splits: Sequence[dict], study=None) -> pd.DataFrame:
    """Noise ceiling and baselines per split x fold of one data source.

    ``data``: a run's ``data`` section; ``splits``: resolved ``split`` sections (keys
    :data:`SPLIT_KEYS`); ``study``: the study ``data`` loads, if already loaded. One row per split:
    those keys plus ``ceiling`` (NaN on real data), ``n_test``, one Pearson column per
    :data:`BASELINES` name and ``best_additive``.
    """
    from ..eval import run_evaluation

    study = _load_study(data) if study is None else study
    rows = []
    for s in splits:
        k = s.get("n_test_genes")
        res = run_evaluation(study, splits=[s["name"]], models=list(BASELINES), n_folds=int(s["n_folds"]),
                             folds=[int(s["fold"])], val_fraction=float(s["val_fraction"]),
                             n_test_genes=None if k is None else {s["name"]: int(k)}, n_boot=0,
                             n_balanced_repeats=1, seed=int(s["seed"]), out_dir=None, progress=False)
        m = res.metrics.set_index("model")
        row = {**{key: s.get(key) for key in SPLIT_KEYS}, "ceiling": float(m["ceiling"].iloc[0]),
               "n_test": int(res.splits["n_test"].iloc[0]) if "n_test" in res.splits else None}
        for b in BASELINES:
            row[f"{b}_pearson"] = float(m.loc[b, "pearson"])
        row["best_additive"] = max(row[f"{b}_pearson"] for b in BASELINES)
        rows.append(row)
    return pd.DataFrame(rows)


def _ensemble_rows(group: pd.DataFrame, study, top_k: int | None) -> dict:
    """Test Pearson of the best checkpoint (mean over runs), of each run's top-k ensemble (mean),
    of the seeds' best checkpoints together and of top-k x seeds (:func:`ensemble_gain`)."""
    from ..errors import SourceMismatchError
    from ..eval.ensemble import EnsembleScorer, Member, ensemble_gain
    from ._api import load_checkpoint
    from .folder import RunFolder

    first = RunFolder.open(group["path"].iloc[0])
    test = first.predictions("test")
    members, groups = [], []
    for path, run_id in zip(group["path"], group["run_id"]):
        folder = RunFolder.open(path)
        if not folder.predictions("test")["row"].equals(test["row"]):
            raise SourceMismatchError(f"{path}: its test part differs from {first.path}'s; cannot ensemble them")
        for ckpt in folder.checkpoints(top_k):
            model, scaler = load_checkpoint(ckpt, device="cpu")
            if model.gene_num != len(study.genes):
                raise SourceMismatchError(f"{ckpt}: model of {model.gene_num} genes, the run's data hold "
                                          f"{len(study.genes)}")
            members.append(Member(model, scaler, f"{run_id}/{Path(ckpt).stem}"))
            groups.append(run_id)
    idx = study.triplets.indices[np.asarray(test["row"])]
    preds = EnsembleScorer(members, study.cell_graph).member_predictions(idx)
    g = ensemble_gain(test["tau"].to_numpy(np.float64), preds, groups=groups, n_balanced_repeats=1).set_index("name")
    return {"ens_best_single": g.loc["best_single", "pearson"], "ens_top_k": g.loc["top_k", "pearson"],
            "ens_seeds": g.loc["seeds", "pearson"], "ens_top_k_x_seeds": g.loc["ensemble", "pearson"],
            "ens_members": len(members)}


def compare_recipes(sweep_dir: str | os.PathLike, recipe: Sequence[str] | None = None,
                    ensembles: bool = False, top_k: int | None = None,
                    data_dir: str | os.PathLike | None = None, metric: str = "val_pearson") -> pd.DataFrame:
    """One row per recipe x split of a sweep folder's complete runs, per split best ``metric``
    first.

    Args:
        recipe: the columns that make a recipe (default: every sweep column except
            ``train.seed`` and the split's ``name`` / ``fold``); in ``attrs["recipe"]``.
        metric: the column recipes are ordered by (default validation Pearson; a recipe chosen on
            a test column has an optimistic test score); in ``attrs["metric"]``.
        ensembles: also score ensembles of each recipe x split's runs (``ens_*`` columns; loads
            every kept checkpoint, so it takes a prediction pass per checkpoint).
        top_k: checkpoints per run in those ensembles (``None``: all kept).
        data_dir: the data folder the runs' data are read from or generated in (``None``: the
            user's own); a data folder or file path a run folder records is never used.

    Columns: the recipe columns, ``split``, ``runs``, ``val_pearson`` / ``val_pearson_sd``,
    ``test_pearson`` / ``test_pearson_sd``, ``fraction_of_ceiling`` / ``fraction_of_ceiling_sd`` (per run, then mean and
    sd), ``ceiling``, the baselines' Pearson, ``best_additive``, ``margin_over_additive``
    (``test_pearson - best_additive``), ``best_epoch`` / ``best_epoch_sd``, ``epochs_run`` and
    ``fit_s`` (means). Standard deviations use ddof=1 and are NaN for a single run.
    """
    from ..errors import ParamsError

    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ParamsError(f"top_k: expected an integer >= 1 or None (all kept), got {top_k!r}")
    sweep_dir = Path(sweep_dir)
    runs = _runs(sweep_dir, None if data_dir is None else os.fspath(data_dir))
    axis_cols = [c for c in runs.columns if c == "variant" or c.startswith(("data.", "train.", "split."))]
    if recipe is None:
        recipe = [c for c in axis_cols if c not in ("train.seed", "split.name", "split.fold")]
    unknown = [c for c in recipe if c not in axis_cols]
    if unknown:
        raise ParamsError(f"recipe column(s) {unknown} not in the sweep; its columns: {', '.join(axis_cols)}")
    studies = {data: _load_study(json.loads(data)) for data in runs["_data"].unique()}  # each loaded once
    for run, data in zip(runs["path"], runs["_data"]):
        _check_run_data(Path(run), studies[data])
    refs = []
    for data, sub in runs.groupby("_data", sort=False):
        splits = sub[[f"_split_{k}" for k in SPLIT_KEYS]].drop_duplicates()
        splits.columns = list(SPLIT_KEYS)
        ref = split_references(json.loads(data), [
            {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in splits.to_dict("records")],
            study=studies[data])
        ref["_data"] = data
        refs.append(ref)
    ref = pd.concat(refs, ignore_index=True).rename(columns={k: f"_split_{k}" for k in SPLIT_KEYS})
    keys = ["_data"] + [f"_split_{k}" for k in SPLIT_KEYS]
    for k in keys[1:]:
        runs[k] = runs[k].astype(object).where(runs[k].notna(), None)
        ref[k] = ref[k].astype(object).where(ref[k].notna(), None)
    merged = runs.merge(ref, on=keys, how="left", validate="many_to_one")
    merged["fraction_of_ceiling"] = merged["test_pearson"] / merged["ceiling"]
    merged["split"] = merged["_split_name"]
    out = []
    group_cols = list(recipe) + ["_data", "split"]
    for key, g in merged.groupby(group_cols, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(group_cols, key))
        data = row.pop("_data")
        row["runs"] = len(g)
        for col in ("val_pearson", "test_pearson", "fraction_of_ceiling", "best_epoch"):
            vals = pd.to_numeric(g[col], errors="coerce").astype(float)
            row[col] = float(vals.mean())
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        row["ceiling"] = float(g["ceiling"].mean())
        for b in BASELINES:
            row[f"{b}_pearson"] = float(g[f"{b}_pearson"].mean())
        row["best_additive"] = float(g["best_additive"].mean())
        row["margin_over_additive"] = row["test_pearson"] - row["best_additive"]
        row["epochs_run"] = float(pd.to_numeric(g["epochs_run"], errors="coerce").mean())
        row["fit_s"] = float(g["fit_s"].mean())
        if ensembles:
            study = studies[data]
            if g["_split_fold"].nunique() > 1:
                for fold, gf in g.groupby("_split_fold"):
                    row.update({f"{k}_fold{fold}": v for k, v in _ensemble_rows(gf, study, top_k).items()})
            else:
                row.update(_ensemble_rows(g, study, top_k))
        out.append(row)
    table = pd.DataFrame(out)
    if metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not a column of the comparison ({', '.join(table.columns)})")
    order = {sp: k for k, sp in enumerate(dict.fromkeys(table["split"]))}
    table = table.assign(_o=table["split"].map(order)).sort_values(
        ["_o", metric], ascending=[True, metric in ("val_mse", "test_mse")], kind="stable",
        na_position="last").drop(columns="_o").reset_index(drop=True)
    table.attrs["recipe"] = list(recipe)
    table.attrs["metric"] = metric
    table.attrs["synthetic"] = all(study.synthetic for study in studies.values())
    return table


def write_recipes(table: pd.DataFrame, sweep_dir: str | os.PathLike) -> Path:
    """``recipes.csv`` in the sweep folder (atomically; undefined numbers as empty cells)."""
    from ..fileio import atomic_write_table

    path = Path(sweep_dir) / "recipes.csv"
    atomic_write_table(table, path)
    return path
