"""The accelerator step, checked on the CPU: no host read of a device value inside
``TrainingLoop.step`` with the batched divergence guard, and that guard stops a run at the same
step with the same numbers as the per-step check."""

import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import dango_nb
from dango_nb.errors import TrainingDivergedError
from dango_nb.models import Dango
from dango_nb.train import Callback, TrainConfig, fit
from dango_nb.train.device import CUBLAS_WORKSPACE_CONFIG, deterministic_kernels

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}
PKG = Path(dango_nb.__file__).resolve().parent
LOOP_CODE = (PKG / "train", PKG / "losses.py")


def cfg(**kw):
    base = dict(epochs=3, batch_size=256, schedule="LinearUntilUniform", transition_epoch=1, progress=False,
                device="cpu", model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


class Batched(Callback):
    """Runs the loop with the accelerator's guard (read every ``every`` steps and per epoch)."""

    def __init__(self, every: int = 4):
        self.every = every

    def on_train_start(self, loop):
        loop.guard_every = self.every


def numbers(h):
    return h.drop(columns=["time_s"])


def test_step_reads_no_device_value_on_the_host(study, split, monkeypatch):
    """Every Tensor -> Python conversion raises when the loop's or the losses' code calls it
    inside a step; the model's own (data-dependent shapes) are recorded, not hidden."""
    train, val = split
    inside = {"on": False}
    model_reads = []

    def guarded(name):
        orig = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            if inside["on"]:
                caller = Path(sys._getframe(1).f_code.co_filename).resolve()
                if any(caller == p or p in caller.parents for p in LOOP_CODE):
                    raise AssertionError(f"host read Tensor.{name} in {caller.name}:{sys._getframe(1).f_lineno}")
                if PKG in caller.parents:
                    model_reads.append((name, caller.name))
            return orig(self, *a, **k)
        return f

    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, guarded(name))
    from dango_nb.train.loop import TrainingLoop

    step = TrainingLoop.step
    calls = {"n": 0}

    def wrapped(self, *a, **k):
        inside["on"] = True
        try:
            calls["n"] += 1
            return step(self, *a, **k)
        finally:
            inside["on"] = False

    monkeypatch.setattr(TrainingLoop, "step", wrapped)
    res = fit(study.cell_graph, train, val, cfg(epochs=2), LAMBDAS, callbacks=[Batched(1000)])
    assert calls["n"] >= 4 and len(res.history) == 2
    # the model's remaining reads are the sizes of its data-dependent tensors, nothing else
    assert {n for n, _ in model_reads} <= {"__int__", "tolist"}
    assert {f for _, f in model_reads} <= {"sparse.py", "pretrain.py"}

    # without the batched guard the per-step check does read the loss (the check is live)
    with pytest.raises(AssertionError, match="host read Tensor.tolist in loop.py"):
        fit(study.cell_graph, train, val, cfg(epochs=2), LAMBDAS)


def test_batched_guard_gives_the_same_numbers_and_resumes_exactly(study, split, tmp_path):
    train, val = split
    per_step = fit(study.cell_graph, train, val, cfg(epochs=3), LAMBDAS)
    batched = fit(study.cell_graph, train, val, cfg(epochs=3), LAMBDAS, callbacks=[Batched(2)])
    pd.testing.assert_frame_equal(numbers(per_step.history), numbers(batched.history), check_exact=True)
    fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(tmp_path)), LAMBDAS, callbacks=[Batched(2)])
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(ckpt["state"]["loss_reference"]) == {"loss_rec", "loss_int"}
    resumed = fit(study.cell_graph, train, val, cfg(epochs=3, checkpoint_dir=str(tmp_path)), LAMBDAS,
                  callbacks=[Batched(2)])
    pd.testing.assert_frame_equal(numbers(resumed.history), numbers(per_step.history), check_exact=True)


def test_batched_guard_names_the_same_step_and_values(study, split):
    train, _ = split
    config = cfg(epochs=2, lr=1000.0, grad_clip=None, schedule="PaperTwoStage", transition_epoch=0)
    errors = []
    for callbacks in ([], [Batched(3)]):
        with pytest.raises(TrainingDivergedError) as err:
            fit(study.cell_graph, train, None, config, LAMBDAS, callbacks=callbacks)
        errors.append(err.value)
    a, b = errors
    assert (a.epoch, a.step, a.what, a.value, a.reference) == (b.epoch, b.step, b.what, b.value, b.reference)
    assert a.reference is not None and a.value > 1000 * a.reference


def test_batched_guard_catches_nan_and_keeps_the_last_good_checkpoint(study, split, tmp_path):
    train, val = split
    config = cfg(epochs=3, checkpoint_dir=str(tmp_path))
    torch.manual_seed(0)
    model = Dango(study.cell_graph["gene"].num_nodes, study.cell_graph.edge_types, **config.model)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    calls = {"n": 0}

    def poison(module, args, output):  # step 1 of epoch 1
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:
            output.scores = output.scores * float("nan")
        return output

    model.register_forward_hook(poison)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1") as err:
        fit(study.cell_graph, train, val, config, LAMBDAS, model=model, callbacks=[Batched(1000)])
    assert err.value.what == "loss" and math.isnan(err.value.value)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_precision_is_validated_and_bf16_needs_cuda(study, split):
    with pytest.raises(ValueError, match=r"TrainConfig.precision: expected 'fp32' or 'bf16', got 'fp16'"):
        cfg(precision="fp16")
    assert TrainConfig().precision == "fp32"
    train, val = split
    with pytest.raises(ValueError, match=r"TrainConfig.precision: 'bf16' needs a CUDA device, the run is on cpu"):
        fit(study.cell_graph, train, val, cfg(precision="bf16"), LAMBDAS)


def test_cublas_workspace_is_set_for_cuda_unless_the_user_set_it(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with deterministic_kernels(torch.device("cpu")):
        pass
    if not torch.cuda.is_initialized():
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # a CPU run leaves the environment alone
    with deterministic_kernels(torch.device("cuda")):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic_kernels(torch.device("cuda")):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
