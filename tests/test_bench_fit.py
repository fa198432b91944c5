"""``python -m dango_nb.bench_fit`` on the tiny preset: both recipes fit in child processes, the
report holds what docs/performance.md shows, and the numbers are those of the same fit in this process."""

import json

import numpy as np
import pytest
import torch

from dango_nb import bench_fit

RECIPE = """\
train:
  epochs: {epochs}
  batch_size: {batch}
  lr: 0.01
  schedule: PaperTwoStage
  transition_epoch: 1
  lr_warmup_epochs: {warmup}
  early_stopping_patience: 2
  model:
    hidden_channels: 16
    num_heads: 2
"""


@pytest.fixture()
def recipes(tmp_path):
    base, cand = tmp_path / "base.yaml", tmp_path / "cand.yaml"
    base.write_text(RECIPE.format(epochs=4, batch=128, warmup=0))
    cand.write_text(RECIPE.format(epochs=4, batch=512, warmup=0.5))
    return base, cand


def test_bench_fit_tiny_reports_both_recipes(tmp_path, recipes, capsys):
    base, cand = recipes
    out = tmp_path / "r" / "bench_fit.json"
    data = tmp_path / "data"
    report = bench_fit.main(["--preset", "tiny", "--data-dir", str(data), "--out", str(out),
                             "--baseline", str(base), "--candidate", str(cand)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["synthetic"] is True and saved["torch_threads_per_fit"] == 1
    b, c = saved["runs"]["baseline"], saved["runs"]["candidate"]
    assert b["config"]["batch_size"] == 128 and c["config"]["batch_size"] == 512
    assert c["config"]["lr_warmup_epochs"] == 0.5 and b["config"]["checkpoint_dir"] is None
    for run in (b, c):
        assert 1 <= run["best_epoch"] < run["epochs_run"] <= 4
        assert 0 < run["wall_to_best_s"] <= run["wall_s"] and 0 < run["cpu_to_best_s"] <= run["cpu_s"]
        assert run["best_val_pearson"] == max(v for v in run["val_pearson_by_epoch"][1:] if v is not None)
        assert run["peak_rss_gb"] > 0 and run["torch_threads"] == 1
    assert saved["wall_to_best_ratio"] == pytest.approx(c["wall_to_best_s"] / b["wall_to_best_s"])
    assert saved["test_pearson_difference"] == pytest.approx(c["test_pearson"] - b["test_pearson"])
    met = c["wall_to_best_s"] <= 0.25 * b["wall_to_best_s"] and c["test_pearson"] >= b["test_pearson"] - 0.005
    assert saved["goal"]["met"] is met
    table = (tmp_path / "r" / "bench_fit.md").read_text()
    assert "SYNTHETIC" in table and "| baseline | batch 128" in table and "warm-up 0.5 ep" in table
    assert "cosine" not in table
    assert "SYNTHETIC" in capsys.readouterr().out

    # the child's test Pearson is the one this process gets from the same fit
    from dango_nb.data.study import load_study
    from dango_nb.eval.prediction import predict
    from dango_nb.eval.splits import make_splits
    from dango_nb.train import TrainConfig, fit
    from dango_nb.train.loop import regression_metrics

    torch.set_num_threads(1)
    study = load_study("tiny", seed=0, data_dir=data)
    t = study.triplets
    fold = make_splits("random", t.indices.numpy(), n_folds=5, seed=0, val_fraction=0.1)[0]
    sub = [t.subset(torch.as_tensor(r)) for r in (fold.train, fold.val, fold.test)]
    res = fit(study.cell_graph, sub[0], sub[1], TrainConfig(**c["config"]), study.planted_lambdas())
    pred = predict(res.best_model(), study.cell_graph, sub[2].indices, res.scaler)
    want = regression_metrics(sub[2].targets.numpy().astype(np.float64), np.asarray(pred, dtype=np.float64))[0]
    assert c["test_pearson"] == pytest.approx(want, abs=1e-6) and res.best_epoch == c["best_epoch"]


@pytest.mark.parametrize("text, message", [
    (None, "parameter file not found"),
    ("train: [1, 2]\n", "expected a `train:` mapping"),
    ("train:\n  batch_size: 0\n", "train: TrainConfig.batch_size: expected"),
    ("train:\n  bogus: 1\n", "bogus"),
    ("train: {a: 1\n", "not valid YAML"),
])
def test_bad_recipe_file_is_named_before_any_fit(tmp_path, capsys, text, message):
    path = tmp_path / "cand.yaml"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as exc:
        bench_fit.main(["--preset", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                        "--candidate", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {path}" in err and message in err
    assert not out.exists() and not (tmp_path / "data").exists()


def test_a_fit_that_dies_is_reported_not_waited_for():
    import os

    with pytest.raises(RuntimeError, match="the 9 fit died \\(exit code 9\\) before reporting"):
        bench_fit._in_child(9, target=os._exit)


def test_a_failed_fit_keeps_the_other_recipes_numbers(tmp_path, recipes, capsys):
    base, _ = recipes
    bad = tmp_path / "diverge.yaml"
    bad.write_text(RECIPE.format(epochs=4, batch=128, warmup=0).replace("lr: 0.01", "lr: 1.0e+6")
                   + "  grad_clip: null\n")
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as exc:
        bench_fit.main(["--preset", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                        "--baseline", str(base), "--candidate", str(bad), "--epochs-cap", "2"])
    assert exc.value.code == 1
    saved = json.loads(out.read_text())
    assert saved["runs"]["baseline"]["test_pearson"] is not None
    assert "TrainingDivergedError" in saved["runs"]["candidate"]["error"]
    assert saved["wall_to_best_ratio"] is None and saved["goal"]["met"] is None  # capped: not judged
    assert saved["epochs_cap"] == 2 and saved["runs"]["baseline"]["epochs_run"] <= 2
    assert "candidate fit failed: TrainingDivergedError" in capsys.readouterr().err
    assert "| candidate |" in (tmp_path / "b.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--out", "{tmp}/r.md"], "expected a path ending in .json"),
    (["--out", "{tmp}/d.json/"], "is a folder"),
    (["--out", "/proc/bench_fit.json"], "cannot write into /proc"),
    (["--epochs-cap", "1"], "baseline recipe (--epochs-cap 1): TrainConfig.transition_epoch"),
    (["--preset", "bogus"], "invalid choice: 'bogus'"),
    (["--data-dir", "/etc/passwd"], "--data-dir"),
])
def test_bad_options_stop_before_any_fit(tmp_path, recipes, capsys, extra, message):
    _, cand = recipes
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    (tmp_path / "d.json").mkdir()
    argv = ["--preset", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "b.json"),
            "--candidate", str(cand)] + extra
    with pytest.raises(SystemExit) as exc:
        bench_fit.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "b.json").exists()


def test_a_report_in_use_is_refused(tmp_path, recipes, capsys):
    from dango_nb.fileio import folder_lock

    _, cand = recipes
    out = tmp_path / "b.json"
    with folder_lock(out):
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-m", "dango_nb.bench_fit", "--preset", "tiny", "--data-dir",
                            str(tmp_path / "data"), "--out", str(out), "--candidate", str(cand)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "in use by another process" in r.stderr
    assert not (tmp_path / "data").exists()


def test_preset_names_are_the_presets():
    from dango_nb.data.synthetic import PRESETS

    assert set(bench_fit.PRESET_NAMES) == set(PRESETS)


def test_the_default_candidate_is_this_checkouts_params_real(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = bench_fit._parse([])
    from pathlib import Path

    assert Path(args.candidate) == Path(bench_fit.__file__).resolve().parent.parent / "params/real/04_evaluation.yaml"
    assert bench_fit.recipe_from_file(args.candidate)["batch_size"] >= 1024
