"""Comparing a sweep's recipes: references on the runs' own test parts, fractions, margins, ensembles."""

import math

import numpy as np
import pandas as pd
import pytest

from dango_nb.__main__ import main
from dango_nb.data.study import load_study
from dango_nb.eval import run_evaluation
from dango_nb.runs import run_sweep, sweep_from_mapping


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = {"preset": "tiny", "seed": 0, "data_dir": str(root / "data")}
    sweep = sweep_from_mapping({
        "base": {"data": data, "train": {"epochs": 3, "batch_size": 128, "lr": 0.01, "transition_epoch": 1,
                                         "keep_top_k": 2, "progress": False, "model": {"hidden_channels": 8}}},
        "variants": {"reference": {}, "dropout": {"model.output_dropout": 0.25}},
        "axes": {"split.name": ["random", "gene1"], "train.seed": [0, 1]},
    }, "compare-sweep")
    result = run_sweep(sweep, root / "sweep", backend="inline", progress=False)
    assert not result.failed
    return root / "sweep", data


def test_recipes_use_the_references_of_the_runs_own_test_parts(finished_sweep):
    from dango_nb.runs.compare import compare_recipes

    out, data = finished_sweep
    table = compare_recipes(out, data_dir=data["data_dir"])
    assert table.attrs["synthetic"]
    assert len(table) == 4 and set(table["variant"]) == {"reference", "dropout"}
    assert set(table["split"]) == {"random", "gene1"} and (table["runs"] == 2).all()
    study = load_study("tiny", seed=0, data_dir=data["data_dir"])
    results = pd.read_csv(out / "results.csv")
    for split in ("random", "gene1"):
        ref = run_evaluation(study, splits=[split], models=["additive", "pairwise_additive"], folds=[0], n_boot=0,
                             n_balanced_repeats=1, out_dir=None, progress=False).metrics.set_index("model")
        row = table[(table["variant"] == "dropout") & (table["split"] == split)].iloc[0]
        assert row["ceiling"] == pytest.approx(ref["ceiling"].iloc[0])
        best = max(ref.loc["additive", "pearson"], ref.loc["pairwise_additive", "pearson"])
        assert row["best_additive"] == pytest.approx(best)
        runs = results[(results["variant"] == "dropout") & (results["split.name"] == split)]
        assert row["test_pearson"] == pytest.approx(runs["test_pearson"].mean())
        assert row["test_pearson_sd"] == pytest.approx(runs["test_pearson"].std(ddof=1))
        assert row["fraction_of_ceiling"] == pytest.approx((runs["test_pearson"] / row["ceiling"]).mean())
        assert row["margin_over_additive"] == pytest.approx(row["test_pearson"] - best)
        assert row["best_epoch"] == pytest.approx(runs["best_epoch"].mean())


def test_ensembles_and_the_command_line(finished_sweep, capsys):
    out, data = finished_sweep
    assert main(["compare", str(out), "--ensembles", "--data-dir", data["data_dir"]]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("SYNTHETIC benchmark")
    table = pd.read_csv(out / "recipes.csv")
    results = pd.read_csv(out / "results.csv")
    for row in table.itertuples():
        runs = results[(results["variant"] == row.variant) & (results["split.name"] == row.split)]
        # the best-checkpoint ensemble member of each run is that run's reported model
        assert row.ens_best_single == pytest.approx(runs["test_pearson"].mean(), abs=1e-6)
        assert row.ens_members == 4  # 2 seeds x top-2
        assert all(math.isfinite(v) for v in (row.ens_top_k, row.ens_seeds, row.ens_top_k_x_seeds))
    assert np.isfinite(table["fraction_of_ceiling"]).all()


def test_an_unfinished_sweep_is_compared_on_its_complete_runs(finished_sweep, tmp_path):
    import shutil

    from dango_nb.runs.compare import compare_recipes
    from dango_nb.runs.folder import MARKER

    out, data = finished_sweep
    copy = tmp_path / "unfinished"
    shutil.copytree(out, copy)
    (copy / "results.csv").unlink()
    (copy / "runs" / "variant-dropout_name-gene1_seed-1" / MARKER).unlink()  # as if still training
    table = compare_recipes(copy, data_dir=data["data_dir"]).set_index(["variant", "split"])
    assert table.loc[("dropout", "gene1"), "runs"] == 1
    assert math.isnan(table.loc[("dropout", "gene1"), "test_pearson_sd"])
    assert table.loc[("reference", "gene1"), "runs"] == 2
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        compare_recipes(tmp_path)


def _edit(path, change):
    import json

    import yaml

    if path.suffix == ".json":
        value = json.loads(path.read_text())
        change(value)
        path.write_text(json.dumps(value))
    else:
        value = yaml.safe_load(path.read_text())
        change(value)
        path.write_text(yaml.safe_dump(value, sort_keys=False))


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_a_run_folder_changed_after_training_is_refused(finished_sweep, tmp_path, capsys):
    import shutil

    out, data = finished_sweep
    copy = tmp_path / "edited"
    shutil.copytree(out, copy)
    (copy / "recipes.csv").unlink(missing_ok=True)
    run = copy / "runs" / "variant-reference_name-random_seed-0"
    _edit(run / "params.yaml", lambda p: p["data"].update(seed=1))
    for extra in ([], ["--ensembles"], ["--data-dir", data["data_dir"]]):
        assert main(["compare", str(copy), *extra]) == 2
        assert _err(capsys) == (f"dango-nb compare: error: {run}: params.yaml differs from the request run.json "
                                "records (run.json -> params.yaml: data.seed: 0 -> 1); the run folder was changed "
                                "after training: restore it or train the run again")
    # run.json edited the same way: provenance.json still records the data the run trained on
    _edit(run / "run.json", lambda r: r["request"]["data"].update(seed=1))
    assert main(["compare", str(copy), "--ensembles"]) == 2
    assert _err(capsys) == (f"dango-nb compare: error: {run}: params.yaml data.seed is 1, provenance.json records 0; "
                            "the run folder was changed after training: restore it or train the run again")
    assert not (copy / "recipes.csv").exists()


def test_a_data_folder_recorded_in_a_run_folder_is_not_used(finished_sweep, tmp_path, capsys):
    import shutil

    out, data = finished_sweep
    copy = tmp_path / "moved"
    shutil.copytree(out, copy)
    victim = tmp_path / "victim"
    for run in sorted((copy / "runs").iterdir()):
        _edit(run / "params.yaml", lambda p: p["data"].update(data_dir=str(victim)))
        _edit(run / "run.json", lambda r: r["request"]["data"].update(data_dir=str(victim)))
    assert main(["compare", str(copy), "--ensembles"]) == 2
    line = _err(capsys)
    assert line.startswith(f"dango-nb compare: error: {copy / 'runs'}/variant-")
    assert line.endswith(f"params.yaml records data.data_dir '{victim}'; compare reads or generates data only in a "
                         "folder the command line names, never one a run folder records: give --data-dir DIR (the "
                         "data folder holding the 'tiny' seed 0 benchmark)")
    assert not victim.exists()
    # the folder named on the command line is used, and its data are checked to be the runs' own
    assert main(["compare", str(copy), "--data-dir", data["data_dir"]]) == 0
    capsys.readouterr()
    assert not victim.exists()
    pd.testing.assert_frame_equal(pd.read_csv(copy / "recipes.csv")[["variant", "split", "ceiling", "best_additive"]],
                                  pd.read_csv(out / "recipes.csv")[["variant", "split", "ceiling", "best_additive"]])


def test_bad_compare_input_is_one_line(finished_sweep, tmp_path, capsys):
    out, data = finished_sweep
    assert main(["compare", str(out), "--ensembles", "--top-k", "0"]) == 2
    assert _err(capsys) == "dango-nb compare: error: argument --top-k: expected an integer >= 1, got '0'"
    assert main(["compare", str(out), "--data-dir", data["data_dir"], "--recipe", "train.lrr"]) == 2
    assert _err(capsys).startswith("dango-nb compare: error: recipe column(s) ['train.lrr'] not in the sweep; ")
    assert main(["compare", str(tmp_path)]) == 2
    assert _err(capsys) == (f"dango-nb compare: error: {tmp_path}: not a sweep folder (no owner.json); give a folder "
                            "`dango-nb sweep` made")


def test_the_runs_data_are_checked_once_loaded(finished_sweep, tmp_path):
    from dango_nb.errors import SourceMismatchError
    from dango_nb.runs.compare import _check_run_data

    out, data = finished_sweep
    run = out / "runs" / "variant-reference_name-random_seed-0"
    _check_run_data(run, load_study("tiny", seed=0, data_dir=data["data_dir"]))
    with pytest.raises(SourceMismatchError, match=rf"^{run}: the data found are not the data the run was trained on "
                                                  r"\(\S+: sha256 [0-9a-f]{64} in provenance.json, [0-9a-f]{64} found"):
        _check_run_data(run, load_study("tiny", seed=1, data_dir=tmp_path / "other"))


def test_recipes_are_ordered_by_validation_and_printed_with_every_recipe_column(tmp_path, capsys):
    from dango_nb.runs.compare import compare_recipes

    data = {"preset": "tiny", "seed": 0, "data_dir": str(tmp_path / "data")}
    sweep = sweep_from_mapping({
        "base": {"data": data, "split": {"name": "random"},
                 "train": {"epochs": 2, "batch_size": 128, "transition_epoch": 1, "progress": False,
                           "model": {"hidden_channels": 8}}},
        "axes": {"train.lr": [0.0001, 0.01], "train.seed": [0, 1]},
    }, "lr-sweep")
    out = tmp_path / "sweep"
    assert not run_sweep(sweep, out, backend="inline", progress=False).failed
    table = compare_recipes(out, data_dir=data["data_dir"])
    assert table.attrs["recipe"] == ["train.lr"] and table.attrs["metric"] == "val_pearson"
    cols = list(table.columns)
    assert cols.index("val_pearson") < cols.index("val_pearson_sd") < cols.index("test_pearson")
    assert list(table["val_pearson"]) == sorted(table["val_pearson"], reverse=True)  # best validation first
    results = pd.read_csv(out / "results.csv").groupby("train.lr")["val_pearson"]
    for row in table.itertuples():
        assert row.val_pearson == pytest.approx(results.mean()[row._1])
        assert row.val_pearson_sd == pytest.approx(results.std(ddof=1)[row._1])
    assert main(["compare", str(out), "--data-dir", data["data_dir"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(ln for ln in lines if ln.split()[:1] == ["train.lr"]).split()
    assert header[:5] == ["train.lr", "split", "runs", "val_pearson", "val_pearson_sd"]
    assert header.index("test_pearson") > header.index("val_pearson")
    assert any("choose a recipe on validation" in ln for ln in lines)
