"""Run folders without Ray: train -> predict --run, strict JSON, skip/mismatch, bad keys."""

from pathlib import Path

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from dango_nb.__main__ import main
from dango_nb.errors import ParamsError
from dango_nb.runs import RunFolder, load_run_params, load_sweep, sweep_from_mapping, train_run
from dango_nb.runs.folder import MARKER, partial_path

TINY = Path(__file__).resolve().parents[2] / "params" / "tiny"
TINY_TRAIN = TINY / "train.yaml"
TINY_SWEEP = TINY / "sweep.yaml"


def _no_nan(text: str):
    def bad(token):
        raise AssertionError(f"non-strict JSON token {token}")
    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    rc = main(["train", str(TINY_TRAIN), "--out", str(out), "--set", "train.batch_size=64", "--no-progress"])
    assert rc == 0
    return out


def test_train_writes_a_complete_run_folder(trained, capsys):
    folder = RunFolder.open(trained)
    for name in ("params.yaml", "run.json", "provenance.json", "history.csv", "predictions.parquet",
                 "README.md", MARKER, "checkpoints/last.pt", "checkpoints/top_k.json"):
        assert (trained / name).is_file(), name
    assert not partial_path(trained).exists()
    info = _no_nan((trained / "run.json").read_text())
    prov = _no_nan((trained / "provenance.json").read_text())
    assert info["epochs_run"] == 3 and info["n_test"] > 0 and info["n_val"] > 0
    assert math.isfinite(info["metrics"]["test"]["pearson"])
    assert len(list((trained / "checkpoints" / "top").glob("*.pt"))) == 2  # top-k = 2 (epochs 1 and 2 train the interaction loss)
    assert prov["versions"]["torch"] and prov["torch"]["device"] == "cpu" and prov["seed"] == 0
    files = {f["name"]: f for f in prov["data_files"]}
    assert "aao1729_data_s1.tsv" in files and len(files["aao1729_data_s1.tsv"]["sha256"]) == 64
    assert files["aao1729_data_s1.tsv"]["bytes"] > 0
    assert "git" in prov and "commit" in prov["git"]
    # resolved parameters: every TrainConfig field and Dango default, lambdas, explicit split seed
    params = yaml.safe_load((trained / "params.yaml").read_text())
    from dango_nb.train import TrainConfig
    assert set(params["train"]) == set(TrainConfig().to_dict())
    assert params["train"]["batch_size"] == 64 and params["train"]["model"]["num_heads"] == 4
    assert params["split"]["seed"] == 0 and set(params["lambdas"]) >= {"neighborhood", "coexpression"}
    # the resolved file is itself a valid run parameter file
    assert load_run_params(trained / "params.yaml").train.batch_size == 64
    hist = folder.history
    assert list(hist["epoch"]) == [0, 1, 2]
    assert "Synthetic benchmark" in (trained / "README.md").read_text()


def test_predict_from_the_run_folder_alone(trained, tmp_path, capsys):
    folder = RunFolder.open(trained)
    test = folder.predictions("test")
    test[["gene1", "gene2", "gene3"]].to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    out = tmp_path / "pred.tsv"
    # a plain --run (the run keeps 2 top-k checkpoints) uses the reported model only: it reproduces
    # the best-epoch predictions the run recorded; --top-k 1 is the same
    for extra in ([], ["--top-k", "1"]):
        rc = main(["predict", "--run", str(trained), *extra, "--triplets", str(tmp_path / "t.tsv"),
                   "--out", str(out), "--no-progress"])
        assert rc == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["members"] == 1
        pred = pd.read_csv(out, sep="\t")
        np.testing.assert_allclose(pred["prediction"].to_numpy(), test["prediction"].to_numpy(), rtol=1e-5,
                                   atol=1e-6)
    # --top-k 2: the reported model and the other kept checkpoint
    rc = main(["predict", "--run", str(trained), "--top-k", "2", "--triplets", str(tmp_path / "t.tsv"),
               "--out", str(out), "--no-progress"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["members"] == 2


def test_complete_folder_is_skipped_and_other_params_refused(trained, capsys):
    before = (trained / MARKER).stat().st_mtime_ns
    p = load_run_params(TINY_TRAIN, {"train.batch_size": 64})
    assert train_run(p, trained, progress=False)["skipped"] is True
    assert (trained / MARKER).stat().st_mtime_ns == before
    p = load_run_params(TINY_TRAIN, {"train.batch_size": 64, "train.lr": 0.05})
    with pytest.raises(ParamsError, match=r"train\.lr: 0\.01 -> 0\.05"):
        train_run(p, trained)
    assert main(["predict", "--run", str(trained.parent / "nope"), "--triplets", "x", "--out", "y"]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_bad_keys_name_the_file_and_key(tmp_path, capsys):
    with pytest.raises(ParamsError, match=r"sw\.yaml: axes: unknown key 'train\.learning_rate'"):
        sweep_from_mapping({"base": {"data": {"preset": "tiny"}}, "axes": {"learning_rate": [1]}}, "sw.yaml")
    with pytest.raises(ParamsError, match=r"unknown key 'train\.model\.width'"):
        sweep_from_mapping({"axes": {"model.width": [8]}}, "sw.yaml")
    with pytest.raises(ParamsError, match=r"sw\.yaml \(run lr-fast\): key 'train\.lr'"):
        sweep_from_mapping({"axes": {"lr": ["fast"]}}, "sw.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {preset: tiny}\ntrain: {epochz: 2}\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "train.epochz" in err
    assert not (tmp_path / "r").exists()
    twice = tmp_path / "twice.yaml"
    twice.write_text("base: {data: {preset: tiny}}\naxes:\n  lr: [0.1]\n  lr: [0.2]\n")
    with pytest.raises(ParamsError, match=r"twice\.yaml:4: duplicate key 'lr' \(first given on line 3\)"):
        load_sweep(twice)


def test_shipped_tiny_sweep_expands():
    sweep = load_sweep(TINY_SWEEP)
    assert len(sweep.runs) == 4
    assert sweep.runs[0].run_id == "schedule-PreThenPost_transition_epoch-0"
    assert {r.params.train.schedule for r in sweep.runs} == {"PreThenPost", "LinearUntilUniform"}
    assert all(r.params.train.epochs == 3 and r.params.data.preset == "tiny" for r in sweep.runs)


def test_metric_vs_axis_draws_the_mean_over_other_axes():
    from dango_nb.runs.results import metric_vs_axis, sweep_figures

    df = pd.DataFrame({"status": "done", "train.schedule": ["A", "A", "A", "A", "B", "B"],
                       "train.transition_epoch": [0, 0, 5, 5, 0, 5], "train.seed": [0, 1, 0, 1, 0, 0],
                       "test_pearson": [0.1, 0.3, 0.5, 0.7, 0.2, np.nan], "val_pearson": 0.0})
    fig = metric_vs_axis(df, "train.transition_epoch", "train.schedule", "test_pearson")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    np.testing.assert_allclose(lines["A"].get_ydata(), [0.2, 0.6])
    np.testing.assert_allclose(lines["B"].get_ydata(), [0.2])  # the NaN run is left out
    figs = sweep_figures(df, ["train.schedule", "train.transition_epoch", "train.seed"])
    assert set(figs) == {"val_pearson_vs_transition_epoch", "val_pearson_vs_schedule", "val_pearson_vs_seed"}


def _joining_lines(ax):
    """Lines that run from one category to another (error bars and caps stay within one)."""
    out = []
    for ln in ax.get_lines():
        x = np.asarray(ln.get_xdata(), dtype=float)
        x = x[np.isfinite(x)]
        if ln.get_linestyle() not in ("None", "none", "") and x.size > 1 and x.max() - x.min() > 0.5:
            out.append(ln)
    return out


def test_sweep_figures_read_validation_with_test_beside_and_categories_as_points():
    from dango_nb.runs.results import sweep_figures

    df = pd.DataFrame({"status": "done", "train.schedule": ["A", "A", "A", "A", "B", "B", "B", "B"],
                       "train.transition_epoch": [0, 0, 5, 5, 0, 0, 5, 5], "train.seed": [0, 1] * 4,
                       "val_pearson": [0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.3, 0.4],
                       "test_pearson": [0.45, 0.55, 0.65, 0.75, 0.05, 0.15, 0.25, 0.35]})
    figs = sweep_figures(df, ["train.schedule", "train.transition_epoch", "train.seed"])
    for name, fig in figs.items():
        val, test = fig.axes[:2]
        assert (val.get_ylabel(), test.get_ylabel()) == ("validation pearson", "test pearson"), name
        assert "choose recipes on this" in val.get_title() and "not for choosing" in test.get_title()
    # numeric axis: a line per schedule through the validation means
    lines = {ln.get_label(): ln for ln in figs["val_pearson_vs_transition_epoch"].axes[0].get_lines()}
    np.testing.assert_allclose(lines["A"].get_ydata(), [0.55, 0.75])
    # categories (schedule, seed): a mean point with an sd bar, no line from one category to the next
    for name in ("val_pearson_vs_schedule", "val_pearson_vs_seed"):
        val, test = figs[name].axes[:2]
        assert not _joining_lines(val) and not _joining_lines(test), name
        assert [t.get_text() for t in val.get_xticklabels()] == (["A", "B"] if "schedule" in name else ["0", "1"])
    val = figs["val_pearson_vs_schedule"].axes[0]
    (means,) = [ln for ln in val.get_lines() if ln.get_marker() == "D"]
    assert means.get_linestyle() == "None"
    np.testing.assert_allclose(means.get_xdata(), [0, 1])
    np.testing.assert_allclose(means.get_ydata(), [0.65, 0.25])
    bars = [ln for ln in val.get_lines() if ln is not means]
    spans = [float(np.nanmax(ln.get_ydata()) - np.nanmin(ln.get_ydata())) for ln in bars]
    sd = np.std([0.5, 0.6, 0.7, 0.8], ddof=1)
    np.testing.assert_allclose(spans, [2 * sd, 2 * sd])


def test_variants_cross_the_grid_and_set_every_listed_key():
    sweep = sweep_from_mapping({
        "base": {"data": {"preset": "tiny"}, "train": {"epochs": 3, "transition_epoch": 1, "model": {"hidden_channels": 16}}},
        "variants": {"reference": {}, "regularised": {"model.output_dropout": 0.25, "weight_decay": 0.1,
                                                      "optimizer": "adamw"}},
        "axes": {"train.seed": [0, 1]},
    }, "sw.yaml")
    assert [r.run_id for r in sweep.runs] == ["variant-reference_seed-0", "variant-reference_seed-1",
                                              "variant-regularised_seed-0", "variant-regularised_seed-1"]
    assert sweep.columns == ["variant", "train.seed"]
    ref, reg = sweep.runs[0].params.train, sweep.runs[2].params.train
    assert (ref.optimizer, ref.weight_decay, ref.model) == ("adam", 0.0, {"hidden_channels": 16})
    assert (reg.optimizer, reg.weight_decay) == ("adamw", 0.1)
    assert reg.model == {"hidden_channels": 16, "output_dropout": 0.25}  # merged into the base's model keys
    assert sweep.runs[2].axes == {"variant": "regularised", "train.seed": 0}
    assert sweep.to_dict()["variants"]["regularised"]["train.weight_decay"] == 0.1


@pytest.mark.parametrize("variants, message", [
    ({"a b": {}}, r"variants: name 'a b': expected letters"),
    ({"x": {"learning_rate": 1}}, r"variants: 'x': unknown key 'train\.learning_rate'"),
    ({"x": {"seed": 3}}, r"variants: 'x' sets 'train\.seed', which is also an axis"),
    ({"x": [1]}, r"variants: 'x': expected a mapping"),
    ([], r"key 'variants': expected a non-empty mapping"),
])
def test_bad_variants_name_the_file_and_key(variants, message):
    with pytest.raises(ParamsError, match=rf"sw\.yaml: {message}"):
        sweep_from_mapping({"base": {"data": {"preset": "tiny"}}, "variants": variants,
                            "axes": {"train.seed": [0]}}, "sw.yaml")


def test_shipped_study_sweeps_expand():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[2] / "params").glob("sweep_generalization_*.yaml"))
    assert len(paths) == 2
    for path in paths:
        sweep = load_sweep(path)
        assert sweep.variants and "reference" in sweep.variants, path
        assert all(r.params.data.preset in ("small", "kuzmin") for r in sweep.runs), path


@pytest.fixture(scope="module")
def trained_keep_none(tmp_path_factory):
    """A run that keeps no top-k checkpoints and whose best epoch is not its last one. Which epoch is
    best depends on float32 rounding (another CPU may differ), so the first seed that gives such a
    run is used."""
    root = tmp_path_factory.mktemp("keep0")
    for seed in range(5):
        out = root / f"run{seed}"
        rc = main(["train", str(TINY_TRAIN), "--out", str(out), "--set", f"data.data_dir={root / 'data'}",
                   "--set", "train.keep_top_k=0", "--set", "train.epochs=6", "--set", "train.lr=0.05",
                   "--set", "train.batch_size=64", "--set", f"train.seed={seed}", "--no-progress"])
        assert rc == 0
        info = RunFolder.open(out).info
        if info["best_epoch"] is not None and info["best_epoch"] < info["epochs_run"] - 1:
            return out
    pytest.fail("no seed gave a run whose best epoch is not its last")


def test_predict_run_uses_the_model_run_json_reports(trained_keep_none, tmp_path, capsys):
    import shutil

    folder = RunFolder.open(trained_keep_none)
    info = folder.info
    assert info["best_epoch"] < info["epochs_run"] - 1  # else last.pt would be the best model too
    assert not (trained_keep_none / "checkpoints" / "top").exists()
    test = folder.predictions("test")
    test[["gene1", "gene2", "gene3"]].to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    out = tmp_path / "pred.tsv"
    rc = main(["predict", "--run", str(trained_keep_none), "--triplets", str(tmp_path / "t.tsv"), "--out", str(out),
               "--no-progress"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["members"] == 1
    np.testing.assert_allclose(pd.read_csv(out, sep="\t")["prediction"].to_numpy(), test["prediction"].to_numpy(),
                               rtol=1e-5, atol=1e-6)

    # a folder without the reported model, or with another epoch's, is refused, naming the file
    broken = tmp_path / "broken"
    shutil.copytree(trained_keep_none, broken)
    best = broken / "checkpoints" / "best.pt"
    shutil.copy(broken / "checkpoints" / "last.pt", best)
    shutil.copy(broken / "checkpoints" / "last.pt.sha256", best.with_name("best.pt.sha256"))
    args = ["predict", "--run", str(broken), "--triplets", str(tmp_path / "t.tsv"), "--out", str(tmp_path / "x.tsv")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dango-nb predict: error: {best}: holds epoch ") and "\n" not in err
    assert f"run.json reports best epoch {info['best_epoch']}" in err
    best.unlink()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dango-nb predict: error: {best}: missing: run.json reports best epoch")
    assert not (tmp_path / "x.tsv").exists()


def test_a_run_folder_without_best_pt_uses_its_top_k_checkpoint_of_the_best_epoch(trained, tmp_path):
    """Run folders written before ``best.pt`` existed keep the reported model among their top-k."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    (old / "checkpoints" / "best.pt").unlink()
    (old / "checkpoints" / "best.pt.sha256").unlink(missing_ok=True)
    folder = RunFolder.open(old)
    path = folder.best_checkpoint()
    assert path.parent.name == "top"
    from dango_nb.train.checkpoint import load_intact

    assert load_intact([path])[0]["epoch"] == folder.info["best_epoch"]
    assert folder.checkpoints()[0] == path and len(set(folder.checkpoints())) == len(folder.checkpoints())


def test_predict_refuses_an_output_inside_a_run_sweep_or_checkpoint_folder(trained, tmp_path, capsys):
    """--out inside a folder predict reads from could replace one of its files (the run's own
    predictions, its history): refused before anything is read or written."""
    test = RunFolder.open(trained).predictions("test")
    test[["gene1", "gene2", "gene3"]].head(3).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "runs" / "tiny").symlink_to(trained)
    best = trained / "checkpoints" / "best.pt"
    cases = [(["--run", str(trained)], trained / "predictions.parquet", "--run"),
             (["--run", str(trained)], trained / "history.csv", "--run"),
             (["--run", str(sweep)], sweep / "runs" / "tiny" / "predictions.parquet", "--run"),
             (["--run", str(sweep)], sweep / "p.tsv", "--run"),
             (["--checkpoint", str(best)], trained / "checkpoints" / "p.tsv", "--checkpoint"),
             (["--checkpoint", str(trained / "checkpoints")], trained / "checkpoints" / "top" / "p.tsv",
              "--checkpoint")]
    for source, out, option in cases:
        before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
        rc = main(["predict", *source, "--triplets", str(tmp_path / "t.tsv"), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2, (source, out)
        assert err.startswith(f"dango-nb predict: error: --out {out} is inside the {option} folder"), err
        assert len(err.strip().splitlines()) == 1
        assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before
        assert not (sweep / "p.tsv").exists()


def test_predict_counts_a_checkpoint_given_twice_once(trained, tmp_path, capsys):
    test = RunFolder.open(trained).predictions("test")
    test[["gene1", "gene2", "gene3"]].head(3).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    best = trained / "checkpoints" / "best.pt"
    link = tmp_path / "link"
    link.symlink_to(trained)
    for given in (["--run", str(trained), str(trained)], ["--run", str(trained), str(link)],
                  ["--run", str(trained), "--checkpoint", str(best)],
                  ["--checkpoint", str(best), str(link / "checkpoints" / "best.pt")]):
        rc = main(["predict", *given, "--triplets", str(tmp_path / "t.tsv"), "--out", str(tmp_path / "p.tsv"),
                   "--preset", "tiny", "--no-progress"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert json.loads(captured.out.strip().splitlines()[-1])["members"] == 1, given
        assert "is given twice; counted once in the ensemble" in captured.err


def test_predict_run_reads_the_runs_preset_from_data_dir(trained, tmp_path, capsys):
    """``--data-dir`` with ``--run`` names where the run's preset benchmark lives (as the hint
    ``--preset tiny --data-seed 0 [--data-dir DIR]`` says); --data-seed still needs --preset."""
    test = RunFolder.open(trained).predictions("test")
    test[["gene1", "gene2", "gene3"]].head(3).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    data_dir = tmp_path / "data"
    base = ["predict", "--run", str(trained), "--triplets", str(tmp_path / "t.tsv"), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a.tsv")]) == 0
    assert main([*base, "--data-dir", str(data_dir), "--out", str(tmp_path / "b.tsv")]) == 0
    err = capsys.readouterr().err
    assert f"using the run's synthetic preset in --data-dir {data_dir}: --preset tiny --data-seed 0" in err
    assert list(data_dir.rglob("manifest.json")), "the benchmark was not read from --data-dir"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.tsv", sep="\t"), pd.read_csv(tmp_path / "b.tsv", sep="\t"))
    assert main([*base, "--data-seed", "0", "--out", str(tmp_path / "c.tsv")]) == 2
    assert capsys.readouterr().err == "dango-nb predict: error: --data-seed goes with --preset\n"
    assert not (tmp_path / "c.tsv").exists()
