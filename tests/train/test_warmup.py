"""Learning-rate warm-up of the interaction stage: the rate of every step, its composition with the
schedules, refusals (resume equality: tests/train/test_regularisation.py)."""

import math

import pytest
import torch

from dango_nb.train import TrainConfig, fit
from dango_nb.train.callbacks import Callback

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}


def cfg(**kw):
    base = dict(epochs=4, batch_size=128, lr=0.01, schedule="PreThenPost", transition_epoch=1, progress=False,
                device="cpu", model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


class StepRates(Callback):
    """Records the rate each optimiser step runs at (read after every other step-start callback)."""

    def __init__(self):
        self.rates: list[tuple[int, int, float]] = []

    def on_step_start(self, loop, epoch, step):
        self.rates.append((epoch, step, loop.optimizer.param_groups[0]["lr"]))


def test_every_step_runs_at_the_documented_rate(study, split):
    train, val = split
    spe = math.ceil(len(train) / 128)
    probe = StepRates()
    res = fit(study.cell_graph, train, val, cfg(lr_warmup_epochs=1.5), LAMBDAS, callbacks=[probe])
    n = round(1.5 * spe)
    for epoch, step, lr in probe.rates:
        if epoch == 0:  # reconstruction only: full rate
            want = 0.01
        else:
            s = (epoch - 1) * spe + step
            want = 0.01 * (s + 1) / n if s < n else 0.01
        assert lr == pytest.approx(want, rel=1e-12), (epoch, step)
    assert len(probe.rates) == 4 * spe
    for epoch in range(4):  # the history shows the rate the epoch's steps ran at
        ran = [lr for e, _, lr in probe.rates if e == epoch]
        assert res.history["lr"].iloc[epoch] == pytest.approx(sum(ran) / len(ran), rel=1e-12)
    assert res.history["lr"].iloc[0] == res.history["lr"].iloc[3] == 0.01
    assert res.history["lr"].iloc[1] < 0.01 * 0.5 < res.history["lr"].iloc[2] < 0.01


def test_warmup_scales_a_cosine_rate(study, split):
    train, val = split
    spe = math.ceil(len(train) / 128)
    probe = StepRates()
    fit(study.cell_graph, train, val, cfg(lr_warmup_epochs=1, lr_schedule="cosine", lr_min=0.001), LAMBDAS,
        callbacks=[probe])
    cosine = [0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    for epoch, step, lr in probe.rates:
        factor = (step + 1) / spe if epoch == 1 else 1.0
        assert lr == pytest.approx(cosine[epoch] * factor, rel=1e-12), (epoch, step)


def test_no_warmup_is_the_training_without_it(study, split):
    train, val = split
    a = fit(study.cell_graph, train, val, cfg(epochs=2), LAMBDAS)
    b = fit(study.cell_graph, train, val, cfg(epochs=2, lr_warmup_epochs=0), LAMBDAS)
    c = fit(study.cell_graph, train, val, cfg(epochs=2, lr_warmup_epochs=0.5), LAMBDAS)
    for (k, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), k
    assert any(not torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), c.model.state_dict().values()))


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "1", True])
def test_bad_warmup_names_the_key(value):
    with pytest.raises(ValueError, match="TrainConfig.lr_warmup_epochs: expected"):
        cfg(lr_warmup_epochs=value)


def test_a_warmup_longer_than_the_interaction_stage_is_refused(study, split):
    train, val = split
    config = cfg(lr_warmup_epochs=3.5)  # 4 epochs, T=1: three train the interaction loss
    with pytest.raises(ValueError, match=r"lr_warmup_epochs: expected at most the 3 epoch\(s\).*got 3.5"):
        fit(study.cell_graph, train, val, config, LAMBDAS)
    cfg(lr_warmup_epochs=3).check_trains_interaction()
