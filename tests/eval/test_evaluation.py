import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from dango_nb import eval as E
from dango_nb import metrics as M
from dango_nb.eval.registry import MODELS
from dango_nb.eval.splits import make_splits


@pytest.fixture
def registered():
    """Register test models for one test and remove them afterwards."""
    names = []

    def add(name, fn):
        E.register_model(name, fn)
        names.append(name)

    yield add
    for name in names:
        MODELS.pop(name, None)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from dango_nb.data.study import load_study

    return load_study("tiny", 0, tmp_path_factory.getbasetemp() / "dango_data")


@pytest.fixture(scope="module")
def lambdas(study):
    from dango_nb.__main__ import lambdas_for_study

    return lambdas_for_study(study)


def tiny_config(**kw):
    from dango_nb.train import TrainConfig

    base = dict(epochs=3, transition_epoch=1, batch_size=128, progress=False, keep_top_k=2,
                model={"hidden_channels": 16, "num_heads": 2, "num_layers": 1})
    return TrainConfig(**{**base, **kw})


def test_baselines_table_ceiling_and_files(study, tmp_path):
    out = tmp_path / "evaluation"
    r = E.run_evaluation(study, models=["mean", "additive", "pairwise_additive"], n_folds=3, n_boot=50,
                         out_dir=out, progress=False)
    m = r.metrics
    # one row per model x split x fold, oracle added because the study has ground truth
    assert len(m) == 4 * 3 * 3
    assert set(m["model"]) == {"mean", "additive", "pairwise_additive", "oracle_signal"}
    assert set(m["split"]) == {"random", "gene1", "gene2"} and set(m["fold"]) == {0, 1, 2}
    for col in ("model", "split", "fold", "pearson", "spearman", "mse", "auroc", "auprc", "pearson_strong",
                "auroc_balanced", "auprc_balanced", "n_test", "ceiling", "pearson_ci_low", "pearson_ci_high"):
        assert col in m.columns, col
    # the ceiling column is Pearson(planted signal, tau) on each fold's test triplets
    signal = study.planted_signal()
    tau = study.triplets.targets.numpy().astype(np.float64)
    fold = make_splits("gene1", study.triplets, n_folds=3, seed=0)[1]
    row = m[(m.model == "additive") & (m.split == "gene1") & (m.fold == 1)].iloc[0]
    assert row["ceiling"] == pytest.approx(M.pearson(tau[fold.test], signal[fold.test]))
    assert row["n_test"] == len(fold.test)
    oracle = m[m.model == "oracle_signal"]
    assert np.allclose(oracle["pearson"], oracle["ceiling"])
    # additive learns something on random triplets; the mean predictor has no correlation
    add = m[(m.model == "additive") & (m.split == "random")]
    assert (add["pearson"] > 0.2).all() and (add["pearson"] < add["ceiling"]).all()
    assert m[m.model == "mean"]["pearson"].isna().all()
    assert (m[m.model == "mean"]["auroc"] == 0.5).all()
    # files
    disk = pd.read_csv(out / "metrics.csv")
    assert len(disk) == len(m) and disk["synthetic"].all()
    ceiling = json.loads((out / "ceiling.json").read_text())
    assert ceiling["synthetic"] is True and set(ceiling["per_split"]) == {"random", "gene1", "gene2"}
    assert ceiling["per_split"]["gene1"]["folds"] == pytest.approx(
        m[m.model == "additive"].query("split == 'gene1'")["ceiling"].tolist())
    assert (out / "predictions.parquet").is_file() and (out / "summary.csv").is_file()
    s = r.summary.set_index(["model", "split"])
    assert s.loc[("additive", "random"), "pearson_mean"] == pytest.approx(add["pearson"].mean())
    wide = E.summary_table(r)
    assert "noise ceiling (pearson)" in wide.index


def test_same_seed_same_numbers(study):
    kw = dict(splits=["random", "gene2"], models=["additive"], n_folds=2, n_boot=20, out_dir=None, progress=False)
    a = E.run_evaluation(study, seed=3, **kw).metrics
    b = E.run_evaluation(study, seed=3, **kw).metrics
    pd.testing.assert_frame_equal(a.drop(columns="fit_s"), b.drop(columns="fit_s"))


def test_models_never_see_test_data(study, monkeypatch, lambdas, registered):
    """Selection (fitting, early stopping, checkpoint choice) only receives train/val triplets."""
    from dango_nb import train as training

    tau = study.triplets.targets.numpy()
    idx = study.triplets.indices.numpy()
    seen = []

    def spy(data):
        assert not hasattr(data, "test_targets") and not hasattr(data, "test")
        seen.append((data.split, data.fold, data.train.indices.numpy(), data.val.indices.numpy(),
                     data.test_indices.copy()))
        return np.zeros(len(data.test_indices))

    real_fit = training.fit
    fits = []

    def fit_spy(cell_graph, train, val, config, lam, **kw):
        fits.append((train.indices.numpy().copy(), val.indices.numpy().copy()))
        return real_fit(cell_graph, train, val, config, lam, **kw)

    monkeypatch.setattr(training, "fit", fit_spy)
    registered("spy", spy)
    E.run_evaluation(study, models=["spy", "dango"], n_folds=5, folds=[0], config=tiny_config(epochs=1, transition_epoch=0),
                     lambdas=lambdas, n_boot=0, out_dir=None, progress=False, ensemble_seeds=1)
    assert len(seen) == 3 and len(fits) == 3
    key = lambda a: {tuple(sorted(t)) for t in a.tolist()}
    for (split, fold, train, val, test), (ftrain, fval) in zip(seen, fits):
        assert np.array_equal(train, ftrain) and np.array_equal(val, fval)
        folds = make_splits(split, study.triplets, n_folds=5, seed=0)
        f = folds[fold]
        assert np.array_equal(test, idx[f.test])
        assert not key(test) & key(train) and not key(test) & key(val)
        if split != "random":
            assert not np.isin(train, f.test_genes).any() and not np.isin(val, f.test_genes).any()
        assert len(train) + len(val) + len(test) + len(f.discarded) == len(tau)


def test_dango_single_ensemble_and_ablations(study, lambdas, tmp_path):
    r = E.run_evaluation(study, splits=["random"], models=["dango", "dango_ensemble", "dango_no_pretrain",
                                                            "dango_mean_meta", "dango_single_coexpression",
                                                            "dango_LinearUntilFlipped", "mlp_embeddings"],
                         n_folds=5, folds=[0], config=tiny_config(), lambdas=lambdas, ensemble_seeds=2,
                         pretrain_epochs=1, mlp_embeddings={"max_epochs": 3}, n_boot=0, out_dir=tmp_path,
                         progress=False)
    # "dango" is scored on each of its seeds (the ensemble's fits), not on the first one only
    seeds = r.metrics[r.metrics["model"] == "dango"]
    assert list(seeds["seed"]) == [0, 1] and (r.metrics[r.metrics["model"] != "dango"]["seed"] == 0).all()
    assert seeds["pearson"].iloc[0] != pytest.approx(seeds["pearson"].iloc[1])
    s = r.summary.set_index("model")
    assert s.loc["dango", "n_seeds"] == 2 and s.loc["dango_ensemble", "n_seeds"] == 1
    assert s.loc["dango", "pearson_mean"] == pytest.approx(seeds["pearson"].mean())
    assert s.loc["dango", "pearson_seed_sd"] == pytest.approx(seeds["pearson"].std(ddof=1))
    assert math.isnan(s.loc["dango_ensemble", "pearson_seed_sd"])
    table = E.summary_table(r)
    assert table.loc["dango", ("pearson: sd over seeds", "random")] == f"{seeds['pearson'].std(ddof=1):.3f} (2 seeds)"
    assert table.loc["dango_ensemble", ("pearson: sd over seeds", "random")] == ""
    m = r.metrics[r.metrics["seed"] == 0].set_index("model")
    for name in ("dango", "dango_ensemble", "dango_no_pretrain", "dango_mean_meta", "dango_single_coexpression",
                 "dango_LinearUntilFlipped", "mlp_embeddings"):
        assert math.isfinite(m.loc[name, "mse"]), name
    # 2 seeds x top-2 checkpoints = 4 members; spread across them is reported per prediction
    g = r.ensemble
    assert (g["kind"] == "member").sum() == 4
    assert set(g["name"]) >= {"single_mean", "ensemble", "gain"}
    d = g[g["kind"] == "decomposition"].set_index("name")
    assert list(d.index) == ["best_single", "top_k", "seeds", "gain_top_k", "gain_seeds", "gain_ensemble"]
    assert d.loc["gain_ensemble", "pearson"] == pytest.approx(
        g.set_index("name").loc["ensemble", "pearson"] - d.loc["best_single", "pearson"])
    from dango_nb.eval import ensemble_contributions

    c = ensemble_contributions(g).set_index("split")
    assert c.loc["random", "top_k_x_seeds"] == pytest.approx(m.loc["dango_ensemble", "pearson"])
    assert c.loc["random", "gain_seeds"] == pytest.approx(c.loc["random", "seeds"] - c.loc["random", "best_single"])
    # each seed's best checkpoint is the model of that seed's "dango" row; their mean is best_single
    for k in (0, 1):
        best_k = g[(g["kind"] == "member") & g["name"].str.startswith(f"seed{k}/")].iloc[0]
        assert best_k["pearson"] == pytest.approx(seeds["pearson"].iloc[k], abs=1e-6)
    assert d.loc["best_single", "pearson"] == pytest.approx(s.loc["dango", "pearson_mean"], abs=1e-6)
    ens = r.predictions[r.predictions.model == "dango_ensemble"]
    assert (ens["spread"] > 0).all() and r.predictions.query("model == 'dango'")["spread"].isna().all()
    # the single model is the first seed's best-validation model: not the same as the ensemble
    single = r.predictions.query("model == 'dango' and seed == 0")["prediction"].to_numpy()
    assert not np.allclose(single, ens["prediction"].to_numpy())
    assert (tmp_path / "ensemble_gain.csv").is_file()
    # ablations really change the model: different predictions
    preds = r.predictions[r.predictions["seed"] == 0].pivot(index="row", columns="model", values="prediction")
    for name in ("dango_no_pretrain", "dango_mean_meta", "dango_single_coexpression"):
        assert not np.allclose(preds["dango"], preds[name]), name


def test_bad_arguments_and_failure_keeps_old_table(study, tmp_path, registered):
    with pytest.raises(ValueError, match="unknown model"):
        E.run_evaluation(study, models=["dango_turbo"], out_dir=None, progress=False)
    with pytest.raises(ValueError, match="lambdas"):
        E.run_evaluation(study, models=["dango"], out_dir=None, progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        E.run_evaluation(study, splits=["genes"], models=["mean"], out_dir=None, progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        E.run_evaluation(study, models=["dango_single_telepathy"], lambdas={"x": 1.0}, out_dir=None, progress=False)
    one_channel = dataclasses.replace(study, cell_graph=E.restrict_channels(study.cell_graph, ["coexpression"]))
    with pytest.raises(ValueError, match="channel 'fusion' not in the cell graph"):
        E.run_evaluation(one_channel, models=["dango_single_fusion"], lambdas={"x": 1.0}, out_dir=None,
                         progress=False)
    out = tmp_path / "ev"
    E.run_evaluation(study, splits=["random"], models=["mean"], n_folds=2, n_boot=0, out_dir=out, progress=False)
    before = (out / "metrics.csv").read_text()

    def broken(data):
        raise RuntimeError("model exploded")

    registered("broken", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        E.run_evaluation(study, splits=["random"], models=["mean", "broken"], n_folds=2,
                         out_dir=out, progress=False)
    assert (out / "metrics.csv").read_text() == before


def test_dango_variants_are_registrations():
    V = E.DangoVariant
    assert E.get_model("dango").variant == V() and E.get_model("dango_ensemble").variant == V()
    assert E.get_model("dango_no_pretrain").variant == V(schedule="InteractionOnly")
    assert E.get_model("dango_mean_meta").variant == V(model=(("meta_embedding", "mean"),))
    assert E.get_model("dango_single_database").variant == V(channel="database")
    assert E.get_model("dango_PaperTwoStage").variant == V(schedule="PaperTwoStage")
    assert E.get_model("additive").variant is None and not E.get_model("additive").trains_dango
    with pytest.raises(ValueError, match="unknown model 'dango_nonsense'"):
        E.get_model("dango_nonsense")
    with pytest.raises(ValueError, match="already registered"):
        E.register_model("mean", lambda data: None)


def test_one_registration_is_validated_everywhere(registered):
    """A new model is one registration: options (params files, the CLI) accept it from then on."""
    with pytest.raises(ValueError, match="unknown model"):
        E.EvaluationOptions(models=["median"])
    registered("median", lambda data: np.zeros(len(data.test_indices)))
    assert E.EvaluationOptions(models=["median"]).models == ["median"]


def test_restrict_channels(study):
    g = E.restrict_channels(study.cell_graph, ["coexpression"])
    assert E.graph_channels(g) == ["coexpression"]
    assert g["gene"].num_nodes == study.cell_graph["gene"].num_nodes
    assert list(g["gene"].node_ids) == list(study.cell_graph["gene"].node_ids)


def test_seed_values_lists_each_seed_mean_over_folds():
    m = pd.DataFrame({"model": ["dango"] * 4 + ["mean"], "split": ["gene2"] * 5, "fold": [0, 0, 1, 1, 0],
                      "seed": [0, 1, 0, 1, 0], "pearson": [0.361, 0.018, 0.3, 0.1, 0.0]})
    assert E.seed_values(m, "dango") == {"gene2": [pytest.approx(0.3305), pytest.approx(0.059)]}
    assert E.seed_values(m, "mean") == {"gene2": [0.0]}
