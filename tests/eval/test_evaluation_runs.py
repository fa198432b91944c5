"""The evaluation's DANGO fits as run folders through the run executor: the same numbers in this
process, through run folders, and on a real local Ray with two workers; kept run folders predict."""

import math

import pandas as pd
import pytest

from dango_nb import eval as E
from dango_nb.errors import ParamsError
from dango_nb.params import DataParams

MODELS = ["mean", "dango", "dango_ensemble"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return DataParams(preset="tiny", seed=0, data_dir=str(tmp_path_factory.getbasetemp() / "dango_data"))


@pytest.fixture(scope="module")
def study(data):
    return data.load_study()


@pytest.fixture(scope="module")
def lambdas(study):
    from dango_nb.__main__ import lambdas_for_study

    return lambdas_for_study(study)


def _config():
    from dango_nb.train import TrainConfig

    return TrainConfig(epochs=3, transition_epoch=1, batch_size=128, progress=False, keep_top_k=2,
                       model={"hidden_channels": 8, "num_heads": 2, "num_layers": 1})


def _evaluate(study, data, lambdas, out, **kw):
    return E.run_evaluation(study, splits=["random", "gene1"], models=MODELS, n_folds=5, folds=[0],
                            config=_config(), lambdas=lambdas, ensemble_seeds=2, ensemble_top_k=2, n_boot=10,
                            n_balanced_repeats=2, out_dir=out, progress=False, data=data, **kw)


def _numbers(result):
    return result.metrics.drop(columns="fit_s").sort_values(["model", "split", "fold", "seed"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def inline(study, data, lambdas, tmp_path_factory):
    """workers: 1 (the default): run folders trained one after another in this process."""
    return _evaluate(study, data, lambdas, tmp_path_factory.mktemp("inline"))


def test_run_folders_equal_in_process_fits_and_predict(inline, study, data, lambdas, tmp_path, capsys):
    legacy = _evaluate(study, None, lambdas, tmp_path / "legacy")  # no data: fitted in process as before
    pd.testing.assert_frame_equal(_numbers(inline), _numbers(legacy), check_exact=True)
    pd.testing.assert_frame_equal(inline.ensemble, legacy.ensemble, check_exact=True)
    assert not (tmp_path / "legacy" / "runs").exists()

    runs = inline.paths["metrics"].parent / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["gene1_fold0_seed0", "gene1_fold0_seed1",
                                                      "random_fold0_seed0", "random_fold0_seed1"]
    from dango_nb.runs import RunFolder

    folder = RunFolder.open(runs / "random_fold0_seed1")
    assert folder.params["train"]["seed"] == 1 and folder.params["split"] == {
        "name": "random", "fold": 0, "n_folds": 5, "val_fraction": 0.1, "seed": 0, "n_test_genes": None}
    # the run folder's own test metrics are those of the evaluation's single dango model (seed 0)
    row = inline.metrics.query("model == 'dango' and split == 'random'").iloc[0]
    assert RunFolder.open(runs / "random_fold0_seed0").info["metrics"]["test"]["pearson"] == pytest.approx(
        row["pearson"], rel=1e-12)

    from dango_nb.__main__ import main

    tsv = tmp_path / "triplets.tsv"
    genes = list(study.genes)
    tsv.write_text("gene1\tgene2\tgene3\n" + f"{genes[0]}\t{genes[1]}\t{genes[2]}\n")
    rc = main(["predict", "--run", str(runs / "random_fold0_seed0"), "--triplets", str(tsv),
               "--out", str(tmp_path / "pred.tsv"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    pred = pd.read_csv(tmp_path / "pred.tsv", sep="\t")
    assert len(pred) == 1 and math.isfinite(pred["prediction"].iloc[0])


@pytest.mark.usefixtures("ray_local")
def test_two_ray_workers_give_the_numbers_of_the_inline_fits(inline, study, data, lambdas, tmp_path):
    ray = _evaluate(study, data, lambdas, tmp_path, workers=2)
    pd.testing.assert_frame_equal(_numbers(ray), _numbers(inline), check_exact=True)
    pd.testing.assert_frame_equal(ray.predictions, inline.predictions, check_exact=True)
    from dango_nb.runs import RunFolder

    on_ray = {RunFolder.open(p).provenance["ray"] is not None for p in (tmp_path / "runs").iterdir()}
    assert on_ray == {True}, "the fits did not run as Ray tasks"


def test_rerun_skips_complete_run_folders_and_keep_runs_false_keeps_none(inline, study, data, lambdas, tmp_path):
    out = inline.paths["metrics"].parent
    marker = (out / "runs" / "gene1_fold0_seed1" / "COMPLETE").stat().st_mtime_ns
    again = _evaluate(study, data, lambdas, out)
    assert (out / "runs" / "gene1_fold0_seed1" / "COMPLETE").stat().st_mtime_ns == marker
    pd.testing.assert_frame_equal(_numbers(again), _numbers(inline), check_exact=True)

    none = _evaluate(study, data, lambdas, tmp_path, keep_runs=False)
    assert not (tmp_path / "runs").exists()
    pd.testing.assert_frame_equal(_numbers(none), _numbers(inline), check_exact=True)


def test_executor_options_are_validated():
    for bad in ({"workers": 0}, {"workers": 1.5}, {"gpus_per_run": -0.5}, {"cpus_per_run": 0},
                {"backend": "slurm"}, {"address": ""}, {"address": "auto", "backend": "inline"}):
        with pytest.raises(ParamsError, match=next(iter(bad))):
            E.EvaluationOptions(**bad)
    opts = E.EvaluationOptions()
    assert (opts.workers, opts.address, opts.gpus_per_run, opts.keep_runs, opts.uses_ray) == (1, None, 0.0, True, False)
    assert E.EvaluationOptions(workers=2).uses_ray and not E.EvaluationOptions(workers=2, backend="inline").uses_ray


def test_workers_without_data_is_an_error(study, lambdas):
    with pytest.raises(ParamsError, match="data parameters"):
        E.run_evaluation(study, splits=["random"], models=["dango"], folds=[0], config=_config(), lambdas=lambdas,
                         out_dir=None, progress=False, workers=2)


def test_a_run_folder_of_other_settings_is_replaced_only_by_a_complete_one(inline, study, data, lambdas, tmp_path):
    import shutil

    out = tmp_path / "ev"
    shutil.copytree(inline.paths["metrics"].parent / "runs", out / "runs")
    r = E.run_evaluation(study, splits=["random"], folds=[0], models=["dango"], n_folds=5,
                         config=_config().replace(lr=0.02), lambdas=lambdas, n_boot=0, out_dir=out, progress=False,
                         data=data, ensemble_seeds=1)
    from dango_nb.runs import RunFolder

    assert RunFolder.open(out / "runs" / "random_fold0_seed0").params["train"]["lr"] == 0.02
    assert not list((out / "runs").glob(".*"))  # the replaced folder is gone once its new fit is complete
    assert r.metrics.loc[0, "pearson"] != inline.metrics.query("model == 'dango' and split == 'random'")["pearson"].iloc[0]


@pytest.mark.parametrize("record", ["not json", "[1, 2]", "fifo", "folder"])
def test_a_kept_run_with_a_damaged_record_is_retrained_not_a_traceback(tmp_path, record):
    """A complete run folder of an evaluation whose run.json cannot be read is set aside (and
    retrained), never trusted and never a traceback; a FIFO is not opened for reading."""
    import os
    from types import SimpleNamespace

    from dango_nb.eval.runner import _set_aside_stale

    out = tmp_path / "runs" / "random_fold0_seed0"
    out.mkdir(parents=True)
    (out / "COMPLETE").write_text("")
    if record == "fifo":
        os.mkfifo(out / "run.json")
    elif record == "folder":
        (out / "run.json").mkdir()
    else:
        (out / "run.json").write_text(record)
    stale = _set_aside_stale([SimpleNamespace(out=str(out), run_id="r", params=None)])
    assert stale == {"r": (out, out.with_name(".random_fold0_seed0.replaced"))}
    assert not out.exists() and out.with_name(".random_fold0_seed0.replaced").is_dir()
