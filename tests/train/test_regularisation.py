"""Training-side regularisation switches: learning-rate schedules (the documented rates, resume
equality, refusals), weight decay, and the default configuration against the training without the switches."""

import math

import pandas as pd
import pytest
import torch

from dango_nb.train import TrainConfig, fit

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}


def cfg(**kw):
    base = dict(epochs=5, batch_size=256, lr=0.01, schedule="PreThenPost", transition_epoch=1, progress=False,
                device="cpu", model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


def numbers(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["time_s"])


def test_cosine_rates_follow_the_formula(study, split):
    train, val = split
    res = fit(study.cell_graph, train, val, cfg(lr_schedule="cosine", lr_min=0.001), LAMBDAS)
    want = [0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert res.history["lr"].tolist() == pytest.approx(want, rel=1e-12)
    assert res.history["lr"].iloc[0] == pytest.approx(0.01)


def test_plateau_lowers_the_rate_only_after_patience_eligible_epochs(study, split):
    train, val = split
    # val_mse "improves" only when it falls; lr_patience 0 reduces after every non-improving eligible epoch
    res = fit(study.cell_graph, train, val, cfg(epochs=6, lr_schedule="plateau", lr_factor=0.5, lr_patience=0,
                                                early_stopping_metric="val_mse"), LAMBDAS)
    h = res.history
    assert h["lr"].iloc[0] == h["lr"].iloc[1] == pytest.approx(0.01)  # epoch 0 is pre-training: never counted
    best = math.inf
    lr = 0.01
    for e in range(1, 6):
        assert h["lr"].iloc[e] == pytest.approx(lr), e
        v = h["val_mse"].iloc[e]
        if v < best:
            best = v
        else:
            lr *= 0.5
    assert h["lr"].min() >= 0.0


def test_plateau_never_goes_below_lr_min(study, split):
    train, val = split
    res = fit(study.cell_graph, train, val, cfg(epochs=6, lr_schedule="plateau", lr_factor=0.1, lr_patience=0,
                                                lr_min=0.004, early_stopping_metric="loss_total"), LAMBDAS)
    assert res.history["lr"].min() >= 0.004 - 1e-15


@pytest.mark.parametrize("kw", [dict(lr_schedule="cosine", lr_patience=0, early_stopping_metric="val_mse"),
                                dict(lr_schedule="plateau", lr_patience=0, early_stopping_metric="val_mse"),
                                dict(lr_warmup_epochs=2.5)],  # interrupted inside the warm-up (epochs 1-3.5)
                         ids=["cosine", "plateau", "warmup"])
def test_resume_equals_uninterrupted(study, split, tmp_path, kw):
    train, val = split
    straight = fit(study.cell_graph, train, val, cfg(**kw), LAMBDAS)
    stop = tmp_path / "interrupted"

    class Interrupt(Exception):
        pass

    def interrupt(epoch, row):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(study.cell_graph, train, val, cfg(checkpoint_dir=str(stop), **kw), LAMBDAS, callback=interrupt)
    resumed = fit(study.cell_graph, train, val, cfg(checkpoint_dir=str(stop), **kw), LAMBDAS)
    pd.testing.assert_frame_equal(numbers(resumed.history), numbers(straight.history), check_exact=True)
    for (k, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k


def test_cosine_refuses_a_resume_with_other_epochs(study, split, tmp_path):
    train, val = split
    fit(study.cell_graph, train, val, cfg(epochs=3, lr_schedule="cosine", checkpoint_dir=str(tmp_path)), LAMBDAS)
    with pytest.raises(ValueError, match="cosine.*epochs=3.*epochs=5"):
        fit(study.cell_graph, train, val, cfg(epochs=5, lr_schedule="cosine", checkpoint_dir=str(tmp_path)), LAMBDAS)


def test_off_is_a_constant_rate(study, split):
    train, val = split
    res = fit(study.cell_graph, train, val, cfg(epochs=3), LAMBDAS)
    assert res.history["lr"].tolist() == [0.01] * 3


@pytest.mark.parametrize("kw, key", [
    ({"lr_schedule": "step"}, "lr_schedule"), ({"lr_min": 0.5}, "lr_min"), ({"lr_min": -1.0}, "lr_min"),
    ({"lr_factor": 1.0}, "lr_factor"), ({"lr_factor": 0.0}, "lr_factor"), ({"lr_patience": -1}, "lr_patience"),
])
def test_bad_settings_name_the_key(kw, key):
    with pytest.raises(ValueError, match=f"TrainConfig.{key}: expected"):
        cfg(**kw)


def test_default_training_is_the_training_without_the_switches(study, monkeypatch):
    """The default configuration trains exactly as the loop did before the learning-rate schedules
    and the weight-decay switch existed: plain Adam at its own defaults and a fixed rate. The
    reference runs in this process (float32 training differs in the last bits between CPUs)."""
    from dango_nb.eval.splits import make_splits
    from dango_nb.train import loop as loop_module
    from dango_nb.train.callbacks import Callback

    f = make_splits("random", study.triplets.indices.numpy(), n_folds=5, seed=0)[0]
    train = study.triplets.subset(torch.as_tensor(f.train))
    val = study.triplets.subset(torch.as_tensor(f.val))
    config = TrainConfig(epochs=4, batch_size=128, lr=0.01, transition_epoch=1, progress=False, device="cpu",
                         model={"hidden_channels": 16})
    assert (config.optimizer, config.weight_decay, config.lr_schedule) == ("adam", 0.0, None)
    default = fit(study.cell_graph, train, val, config, LAMBDAS)

    adam = torch.optim.Adam

    class PlainAdam(adam):
        """The optimiser before the switches: Adam with only the configured rate."""

        def __init__(self, params, lr, **switches):
            super().__init__(params, lr=lr)

    class NoSchedule(Callback):
        def __init__(self, *args, **kwargs):
            pass

    monkeypatch.setattr(torch.optim, "Adam", PlainAdam)
    monkeypatch.setattr(torch.optim, "AdamW", PlainAdam)
    monkeypatch.setattr(loop_module, "LearningRateSchedule", NoSchedule)
    plain = fit(study.cell_graph, train, val, config, LAMBDAS)
    monkeypatch.undo()

    pd.testing.assert_frame_equal(numbers(default.history), numbers(plain.history), check_exact=True)
    for (k, p), q in zip(default.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(p, q), k
    assert default.history["lr"].tolist() == [0.01] * 4
    # the numbers recorded with the code before the switches, at a tolerance any x86-64 CPU's float32
    # honours (the last bits differ between AVX2 and AVX-512 kernels, about 1e-7 relative after four
    # epochs); a change of the training itself moves them by far more
    h = default.history
    assert h["loss_total"].tolist() == pytest.approx(
        [0.07664394535258877, 0.360477307616653, 0.3555708761481424, 0.33624374481518543], rel=1e-4)
    assert h["val_pearson"].tolist() == pytest.approx(
        [0.08970763327146888, 0.2160093997486931, 0.23234714095297085, 0.3740737010714788], rel=1e-4)


def test_decoupled_weight_decay_shrinks_the_weights(study, split):
    train, val = split

    def norm(res):
        return float(torch.sqrt(sum((p.detach() ** 2).sum() for p in res.model.parameters())))

    plain = fit(study.cell_graph, train, val, cfg(epochs=3, optimizer="adamw", weight_decay=0.0), LAMBDAS)
    adam = fit(study.cell_graph, train, val, cfg(epochs=3), LAMBDAS)
    decayed = fit(study.cell_graph, train, val, cfg(epochs=3, optimizer="adamw", weight_decay=5.0), LAMBDAS)
    # AdamW without decay is Adam; with decay every step multiplies the weights by (1 - lr * wd)
    pd.testing.assert_frame_equal(numbers(plain.history), numbers(adam.history), check_exact=True)
    assert norm(decayed) < 0.9 * norm(plain)
