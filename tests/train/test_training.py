"""Training engine: determinism, resume, NaN guard, overfitting, efficiency, scaler, early stopping."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dango_nb.errors import TrainingDivergedError
from dango_nb.eval.prediction import evaluate, predict
from dango_nb.models import Dango, SparseRows
from dango_nb.train import (
    HISTORY_COLUMNS, TargetScaler, TrainConfig, fit, list_checkpoints, load_checkpoint, overfit_batch, pretrain,
    resolve_device,
)

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}


def cfg(**kw):
    base = dict(epochs=3, batch_size=256, schedule="LinearUntilUniform", transition_epoch=2, progress=False,
                device="cpu", model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


def numbers(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["time_s"])


# ----------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, field", [
    ({"lr": -1.0}, "lr"), ({"epochs": 1.5}, "epochs"), ({"batch_size": 0}, "batch_size"),
    ({"optimizer": "sgd"}, "optimizer"), ({"schedule": "Nope"}, "schedule"),
    ({"interaction_loss": "l1"}, "interaction_loss"), ({"grad_clip": 0.0}, "grad_clip"),
    ({"early_stopping_metric": "val_auc"}, "early_stopping_metric"), ({"device": "tpu9"}, "device"),
    ({"keep_top_k": -1}, "keep_top_k"), ({"model": {"hidden": 8}}, "model"), ({"progress": "yes"}, "progress"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**kw)


def test_config_defaults_match_contract():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.optimizer, c.lr, c.weight_decay, c.schedule, c.transition_epoch,
            c.interaction_loss, c.grad_clip, c.early_stopping_patience, c.early_stopping_metric, c.device,
            c.seed, c.checkpoint_dir, c.keep_top_k, c.progress, c.model) == (
        50, 256, "adam", 1e-3, 0.0, "PreThenPost", 10, "logcosh", 1.0, None, "val_pearson", "auto", 0, None,
        5, True, {})
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------ determinism
def test_history_columns_and_determinism(study, split):
    train, val = split
    a = fit(study.cell_graph, train, val, cfg(), LAMBDAS)
    b = fit(study.cell_graph, train, val, cfg(), LAMBDAS)
    channels = ["neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database"]
    assert list(a.history.columns) == list(HISTORY_COLUMNS) + [f"loss_rec_{c}" for c in channels]
    assert list(a.history["epoch"]) == [0, 1, 2]
    assert list(a.history["alpha"]) == [1.0, 0.75, 0.5]
    pd.testing.assert_frame_equal(numbers(a.history), numbers(b.history), check_exact=True)
    for (k, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), k
    c = fit(study.cell_graph, train, val, cfg(seed=1), LAMBDAS)
    assert not np.allclose(c.history["loss_total"], a.history["loss_total"])
    # weighted = weight * raw; total = sum of weighted
    h = a.history
    np.testing.assert_allclose(h["loss_rec_weighted"], h["w_rec"] * h["loss_rec"], rtol=1e-12)
    np.testing.assert_allclose(h["loss_total"], h["loss_rec_weighted"] + h["loss_int_weighted"], rtol=1e-5)
    assert h[[f"val_{m}" for m in ("pearson", "spearman", "mse")]].notna().all().all()


def test_two_threads_give_the_same_numbers_and_setting_is_restored(study, split):
    # with 2 threads some CPU kernels accumulate in a racy order unless deterministic ones are required
    train, val = split
    seen = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = fit(study.cell_graph, train, val, cfg(), LAMBDAS,
                callback=lambda e, r: seen.append(torch.are_deterministic_algorithms_enabled()))
        b = fit(study.cell_graph, train, val, cfg(), LAMBDAS)
    finally:
        torch.set_num_threads(threads)
    assert seen == [True, True, True]
    assert not torch.are_deterministic_algorithms_enabled()
    pd.testing.assert_frame_equal(numbers(a.history), numbers(b.history), check_exact=True)


def test_resume_equals_uninterrupted(study, split, tmp_path):
    train, val = split
    straight = fit(study.cell_graph, train, val, cfg(epochs=4), LAMBDAS)
    first = fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(tmp_path)), LAMBDAS)
    assert len(first.history) == 2 and (tmp_path / "last.pt").is_file()
    resumed = fit(study.cell_graph, train, val, cfg(epochs=4, checkpoint_dir=str(tmp_path)), LAMBDAS)
    pd.testing.assert_frame_equal(numbers(resumed.history), numbers(straight.history), check_exact=True)
    for (k, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k
    assert resumed.best_epoch == straight.best_epoch
    # a config change that alters the numbers is refused
    with pytest.raises(ValueError, match="lr"):
        fit(study.cell_graph, train, val, cfg(epochs=5, lr=0.5, checkpoint_dir=str(tmp_path)), LAMBDAS)


def test_top_k_checkpoints(study, split, tmp_path):
    train, val = split
    res = fit(study.cell_graph, train, val, cfg(epochs=5, keep_top_k=2, checkpoint_dir=str(tmp_path)), LAMBDAS)
    ck = list_checkpoints(tmp_path)
    assert len(ck) == 2 and all(p.is_file() for p in ck["path"])
    assert len(list((tmp_path / "top").glob("*.pt"))) == 2
    eligible = res.history[res.history["w_int"] > 0]
    expected = eligible.sort_values("val_pearson", ascending=False)["epoch"].head(2).tolist()
    assert ck["epoch"].tolist() == expected
    assert ck["epoch"].iloc[0] == res.best_epoch
    model, scaler = load_checkpoint(ck["path"].iloc[0])
    got = evaluate(model, study.cell_graph, val, scaler)["pearson"]
    assert got == pytest.approx(ck["value"].iloc[0], abs=1e-6)
    best = predict(res.best_model(), study.cell_graph, val, res.scaler)
    np.testing.assert_allclose(predict(model, study.cell_graph, val, scaler), best, rtol=1e-6)


# ------------------------------------------------------------------------------------ NaN guard
def test_nan_loss_stops_and_keeps_last_good_checkpoint(study, split, tmp_path):
    train, val = split
    config = cfg(epochs=4, checkpoint_dir=str(tmp_path))
    torch.manual_seed(0)
    model = Dango(study.cell_graph["gene"].num_nodes, study.cell_graph.edge_types, **config.model)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    calls = {"n": 0}

    def poison(module, args, output):  # step 3 of epoch 1 returns NaN scores
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 4:
            output.scores = output.scores * float("nan")
        return output

    model.register_forward_hook(poison)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 3") as err:
        fit(study.cell_graph, train, val, config, LAMBDAS, model=model)
    assert err.value.epoch == 1 and err.value.step == 3 and "last.pt" in str(err.value)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1  # the state after epoch 0, not the poisoned one
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    # without the poison the run resumes from that checkpoint
    res = fit(study.cell_graph, train, val, config, LAMBDAS)
    assert len(res.history) == 4 and res.history["loss_total"].notna().all()


def test_huge_lr_diverges_with_named_epoch(study, split):
    train, _ = split
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, step \d+"):
        fit(study.cell_graph, train, None, cfg(epochs=30, lr=1e30, grad_clip=None, schedule="InteractionOnly"),
            LAMBDAS)


# ------------------------------------------------------------------------------------ overfitting
def test_overfit_tiny_batch(study):
    batch = study.triplets.subset(slice(0, 64))
    res = overfit_batch(study.cell_graph, batch, cfg(epochs=60, lr=1e-2, schedule="InteractionOnly"), LAMBDAS)
    assert len(res.history) == 60
    assert res.history["train_pearson"].iloc[-1] > 0.95
    pred = predict(res.model, study.cell_graph, batch, res.scaler)
    assert np.corrcoef(pred, batch.targets.numpy())[0, 1] > 0.95


# ------------------------------------------------------------------------------------ efficiency
def test_model_runs_once_per_step_and_embeds_once_per_eval(study, split, monkeypatch):
    train, val = split
    config = cfg(epochs=2)
    torch.manual_seed(0)
    model = Dango(study.cell_graph["gene"].num_nodes, study.cell_graph.edge_types, **config.model)
    counts = {"forward": 0, "gnn": 0}
    model.register_forward_pre_hook(lambda *a: counts.__setitem__("forward", counts["forward"] + 1))
    model.pretrain.register_forward_pre_hook(lambda *a: counts.__setitem__("gnn", counts["gnn"] + 1))

    def no_dense(*a, **k):
        raise AssertionError("dense reconstruction built during training")

    monkeypatch.setattr(SparseRows, "to_dense", no_dense)
    fit(study.cell_graph, train, val, config, LAMBDAS, model=model)
    steps = 2 * math.ceil(len(train) / config.batch_size)
    assert counts["forward"] == steps
    assert counts["gnn"] == steps + 2  # + one embedding pass per validation evaluation
    counts["gnn"] = 0
    predict(model, study.cell_graph, val, None, batch_size=8)  # many chunks, one embedding pass
    assert counts["gnn"] == 1


def test_reconstruction_skipped_when_its_weight_is_zero(study, split, monkeypatch):
    train, val = split
    import dango_nb.models.pretrain as pt

    rows_seen = []
    orig = pt.GraphInputs.target_rows_all  # one call gathers every channel's rows
    monkeypatch.setattr(pt.GraphInputs, "target_rows_all",
                        lambda self, rows: rows_seen.extend([rows.numel()] * len(self.edge_types)) or orig(self, rows))
    res = fit(study.cell_graph, train, val, cfg(epochs=3, schedule="PreThenPost", transition_epoch=1), LAMBDAS)
    h = res.history
    steps = math.ceil(len(train) / 256)
    assert sum(n > 0 for n in rows_seen) == 6 * steps  # only epoch 0 gathers reconstruction rows
    assert h["loss_rec"].isna().tolist() == [False, True, True]
    assert h["loss_rec_weighted"].tolist()[1:] == [0.0, 0.0]
    assert h["loss_int_weighted"].iloc[0] == 0.0 and np.isfinite(h["loss_int"]).all()
    assert np.isfinite(h["train_pearson"]).all()


# ------------------------------------------------------------------------------ scaler and NaNs
def test_scaler_fitted_on_train_only(study, split):
    train, val = split
    a = fit(study.cell_graph, train, val, cfg(epochs=1, transition_epoch=0), LAMBDAS)
    shifted = val.subset(slice(None))
    shifted.targets = val.targets + 100.0
    b = fit(study.cell_graph, train, shifted, cfg(epochs=1, transition_epoch=0), LAMBDAS)
    y = train.targets.double()
    assert a.scaler == b.scaler
    assert a.scaler.mean == pytest.approx(float(y.mean())) and a.scaler.std == pytest.approx(float(y.std(unbiased=False)))
    pd.testing.assert_series_equal(a.history["loss_total"], b.history["loss_total"])
    assert b.history["val_mse"].iloc[0] > 1000 * a.history["val_mse"].iloc[0]


def test_nan_targets_are_masked(study, split):
    train, val = split
    train = train.subset(slice(None))
    val = val.subset(slice(None))
    train.targets = train.targets.clone()
    train.targets[::7] = float("nan")
    val.targets = val.targets.clone()
    val.targets[::5] = float("nan")
    res = fit(study.cell_graph, train, val, cfg(epochs=2), LAMBDAS)
    cols = ["loss_total", "loss_int", "train_pearson", "train_spearman", "train_mse", "val_pearson",
            "val_spearman", "val_mse"]
    assert np.isfinite(res.history[cols].to_numpy()).all()
    y = train.targets.double()
    y = y[torch.isfinite(y)]
    assert res.scaler.mean == pytest.approx(float(y.mean()))
    assert TargetScaler.fit(train.targets) == res.scaler


def test_early_stopping_stops(study, split):
    train, val = split
    # lr = 1e-30: Adam steps far below float32 resolution, so the parameters and the validation
    # metric never change after the first eligible epoch
    res = fit(study.cell_graph, train, val,
              cfg(epochs=10, lr=1e-30, schedule="InteractionOnly", early_stopping_patience=2), LAMBDAS)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 0
    with pytest.raises(ValueError, match="validation"):
        fit(study.cell_graph, train, None, cfg(early_stopping_patience=2), LAMBDAS)


# ------------------------------------------------------------------------------------ pre-training
def test_pretrain_reconstruction_only(study):
    res = pretrain(study.cell_graph, cfg(epochs=4, batch_size=50, lr=1e-2), LAMBDAS)
    h = res.history
    n = study.cell_graph["gene"].num_nodes
    assert (h["alpha"] == 1.0).all() and (h["w_int"] == 0.0).all()
    assert h[["loss_int", "train_pearson", "val_pearson"]].isna().all().all()
    per = h[[c for c in h.columns if c.startswith("loss_rec_") and c != "loss_rec_weighted"]]
    assert per.shape[1] == 6 and np.isfinite(per.to_numpy()).all()
    np.testing.assert_allclose(per.sum(axis=1), h["loss_rec"], rtol=1e-5)
    assert h["loss_rec"].iloc[-1] < h["loss_rec"].iloc[0]
    # reconstructions of chosen rows are available from the trained model
    out = res.model(study.cell_graph, None, recon_rows=torch.arange(5))
    rec = out.reconstructions()
    assert all(v.shape == (5, n) for v in rec.values())
