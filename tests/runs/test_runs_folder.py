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
    rc = main(["predict", "--run", str(trained), "--top-k", "1", "--triplets", str(tmp_path / "t.tsv"),
               "--out", str(out), "--no-progress"])
    assert rc == 0
    pred = pd.read_csv(out, sep="\t")
    # the best checkpoint reproduces the best-epoch predictions the run recorded
    np.testing.assert_allclose(pred["prediction"].to_numpy(), test["prediction"].to_numpy(), rtol=1e-5, atol=1e-6)
    # all kept checkpoints: an ensemble of 2 members
    rc = main(["predict", "--run", str(trained), "--triplets", str(tmp_path / "t.tsv"), "--out", str(out),
               "--no-progress"])
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
    fig = metric_vs_axis(df, "train.transition_epoch", "train.schedule")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    np.testing.assert_allclose(lines["A"].get_ydata(), [0.2, 0.6])
    np.testing.assert_allclose(lines["B"].get_ydata(), [0.2])  # the NaN run is left out
    figs = sweep_figures(df, ["train.schedule", "train.transition_epoch", "train.seed"])
    assert set(figs) == {"test_pearson_vs_transition_epoch", "test_pearson_vs_schedule", "test_pearson_vs_seed"}


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
