"""Training guards: what can never work is refused before any work, and a run whose loss grows by
orders of magnitude stops with TrainingDivergedError, keeping the last good checkpoint."""

import pytest
import torch

from dango_nb.data.study import load_study
from dango_nb.errors import TrainingDivergedError
from dango_nb.models import Dango
from dango_nb.train import Callback, TrainConfig, fit, overfit_batch, pretrain

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return load_study("tiny", seed=0, data_dir=tmp_path_factory.mktemp("data"))


def cfg(**kw):
    base = dict(epochs=3, batch_size=256, schedule="LinearUntilUniform", transition_epoch=2, progress=False,
                device="cpu", model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("kw, key, expected", [
    ({"epochs": 0}, "epochs", "an integer from 1 to 100000"), ({"lr": 0}, "lr", "a finite number > 0.0"),
    ({"lr": -1e-3}, "lr", "a finite number > 0.0"), ({"divergence_factor": 1.0}, "divergence_factor", "a finite number > 1.0 or None"),
    ({"divergence_factor": float("inf")}, "divergence_factor", "a finite number"),
])
def test_values_that_never_train_are_refused_naming_the_key(kw, key, expected):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{key}: expected {expected}"):
        TrainConfig(**kw)
    assert TrainConfig(divergence_factor=None).divergence_factor is None


def test_schedule_that_never_trains_the_interaction_loss_is_refused_before_any_work(study, tmp_path):
    config = cfg(epochs=3, schedule="PreThenPost", transition_epoch=3, checkpoint_dir=str(tmp_path / "run"))
    assert config.interaction_epochs() == []
    model = Dango(study.cell_graph["gene"].num_nodes, study.cell_graph.edge_types, **config.model)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    msg = (r"TrainConfig\.transition_epoch: schedule 'PreThenPost' with transition_epoch=3 gives the interaction "
           r"loss weight 0 in all 3 epochs, so the interaction head would never be trained")
    with pytest.raises(ValueError, match=msg):
        fit(study.cell_graph, study.triplets, None, config, LAMBDAS, model=model)
    with pytest.raises(ValueError, match=msg):
        overfit_batch(study.cell_graph, study.triplets.subset(slice(0, 16)), config, LAMBDAS, model=model)
    assert calls == [] and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="PaperTwoStage"):
        fit(study.cell_graph, study.triplets, None, config.replace(schedule="PaperTwoStage", transition_epoch=5),
            LAMBDAS)
    assert config.replace(epochs=4).interaction_epochs() == [3]
    # reconstruction-only pre-training ignores the schedule
    assert len(pretrain(study.cell_graph, config.replace(epochs=1, checkpoint_dir=None), LAMBDAS).history) == 1


def test_exploding_loss_stops_with_values_and_knob_turns_it_off(study):
    config = cfg(epochs=2, lr=1000.0, grad_clip=None)
    with pytest.raises(TrainingDivergedError, match=r"loss_\w+ is \S+ at epoch 0, step \d+, more than 1000 x its "
                                                    r"value at the first step of the run \(\S+\)") as err:
        fit(study.cell_graph, study.triplets, None, config, LAMBDAS)
    e = err.value
    assert e.value > 1000 * e.reference and e.reference > 0 and e.factor == 1000.0
    # the same run without the check ends with a loss ~1e33 (what it silently did before)
    res = fit(study.cell_graph, study.triplets, None, config.replace(divergence_factor=None), LAMBDAS)
    assert res.history["loss_total"].iloc[-1] > 1e20


class _LrAfterFirstEpoch(Callback):
    def on_epoch_start(self, loop, epoch):
        if epoch == 1:
            for g in loop.optimizer.param_groups:
                g["lr"] = 1000.0


def test_divergence_keeps_the_last_good_checkpoint_and_survives_resume(study, tmp_path):
    config = cfg(epochs=3, grad_clip=None, checkpoint_dir=str(tmp_path))
    with pytest.raises(TrainingDivergedError, match=r"at epoch 1, step \d+, .*last good checkpoint kept at "
                                                    r".*last\.pt") as err:
        fit(study.cell_graph, study.triplets, None, config, LAMBDAS, callbacks=[_LrAfterFirstEpoch()])
    assert err.value.epoch == 1
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and set(ckpt["state"]["loss_reference"]) == {"loss_rec", "loss_int"}
    res = fit(study.cell_graph, study.triplets, None, config, LAMBDAS)  # healthy lr again: resumes
    assert len(res.history) == 3 and res.history["loss_total"].max() < 10


def test_edge_weights_outside_unit_interval_are_refused(study):
    g = study.cell_graph.clone()
    et = g.edge_types[2]
    w = g[et].edge_weight.clone()
    w[5] = -0.25
    g[et].edge_weight = w
    with pytest.raises(ValueError, match=rf"cell graph channel '{et[1]}': 1 edge weights outside \(0, 1\], "
                                         r"e\.g\. -0\.25 at edge 5"):
        fit(g, study.triplets, None, cfg(), LAMBDAS)
    w[5] = 0.0
    with pytest.raises(ValueError, match=r"edge weights outside \(0, 1\]"):
        pretrain(g, cfg(), LAMBDAS)


def test_bad_triplet_indices_and_infinite_targets_are_refused(study):
    t = study.triplets.subset(slice(0, 64))
    bad = t.subset(slice(None))
    bad.indices = t.indices.clone()
    bad.indices[7, 1] = -1  # would silently index the last gene
    with pytest.raises(ValueError, match=r"training triplets: row 7 has gene indices \[\d+, -1, \d+\], "
                                         r"expected 0 \.\. 121"):
        fit(study.cell_graph, bad, None, cfg(), LAMBDAS)
    with pytest.raises(ValueError, match=r"validation triplets: row 7"):
        fit(study.cell_graph, t, bad, cfg(), LAMBDAS)
    inf = t.subset(slice(None))
    inf.targets = t.targets.clone()
    inf.targets[3] = float("inf")
    with pytest.raises(ValueError, match=r"training triplets: row 3 has target inf, expected a finite tau"):
        fit(study.cell_graph, inf, None, cfg(), LAMBDAS)
