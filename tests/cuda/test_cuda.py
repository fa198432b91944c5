"""The CUDA path against the CPU (float64 reference): forward, losses, an optimiser step, the
sparse products and their backward, ``fit`` with resume, the deterministic setting, prediction
and evaluation, bf16 autocast, and no host sync in a training step. Skipped without a GPU."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dango_nb
from dango_nb.eval.prediction import evaluate, predict
from dango_nb.losses import DangoLoss
from dango_nb.models import Dango
from dango_nb.models.sparse import gather_rows
from dango_nb.schedules import get_schedule
from dango_nb.train import Callback, TrainConfig, TrainingLoop, TripletEpochs, fit

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LAMBDAS = {"neighborhood": 1.0, "fusion": 1.0, "cooccurence": 1.0, "coexpression": 0.1,
           "experimental": 0.1, "database": 1.0}
PKG = Path(dango_nb.__file__).resolve().parent
CUDA = torch.device("cuda")


def cfg(**kw):
    base = dict(epochs=4, batch_size=256, schedule="LinearUntilUniform", transition_epoch=1, progress=False,
                device="cuda", model={"hidden_channels": 16, "num_heads": 2})
    base.update(kw)
    return TrainConfig(**base)


def numbers(h):
    return h.drop(columns=["time_s"])


def _models(study, hidden=16):
    torch.manual_seed(0)
    ref = Dango(study.cell_graph["gene"].num_nodes, study.cell_graph.edge_types, hidden_channels=hidden, num_heads=2)
    cpu = ref
    f64 = Dango(ref.gene_num, ref.edge_types, hidden_channels=hidden, num_heads=2).double()
    f64.load_state_dict({k: v.double() for k, v in ref.state_dict().items()})
    gpu = Dango(ref.gene_num, ref.edge_types, hidden_channels=hidden, num_heads=2).to(CUDA)
    gpu.load_state_dict(ref.state_dict())
    return cpu, gpu, f64


def _close(a, b, ref, what):
    """``a`` (float32 CPU) and ``b`` (float32 CUDA) both within float32 tolerance of ``ref`` (float64)."""
    ref = ref.detach().double().cpu()
    scale = ref.abs().max().clamp(min=1.0)
    for name, x in (("cpu", a), ("cuda", b)):
        err = (x.detach().double().cpu() - ref).abs().max() / scale
        assert err < 1e-4, f"{what} on {name}: max relative error {float(err):.2e}"


def test_forward_loss_and_one_step_match_cpu_and_float64(study, split):
    train, _ = split
    idx = train.indices[:256].long()
    z = ((train.targets[:256] - train.targets.nanmean()) / 0.05).float()
    outs, losses, params = [], [], []
    for model in _models(study):
        dev = model.embedding_device if hasattr(model, "embedding_device") else next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        loss_fn = DangoLoss(LAMBDAS, get_schedule("PaperTwoStage", 0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        out = model(study.cell_graph, idx.to(dev), local=True)
        lo = loss_fn(out, z.to(dev, dtype), 0)
        opt.zero_grad()
        lo.total.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        opt.step()
        outs.append((out.scores, grads))
        losses.append(torch.stack([lo.total.detach(), lo.rec, lo.int]))
        params.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    (s_cpu, g_cpu), (s_gpu, g_gpu), (s_64, g_64) = outs
    _close(s_cpu, s_gpu, s_64, "scores")
    _close(losses[0], losses[1], losses[2], "losses")
    _close(g_cpu, g_gpu, g_64, "gradients")
    _close(params[0], params[1], params[2], "parameters after one Adam step")


def test_sparse_products_and_backward_match_cpu(study):
    cpu, gpu, f64 = _models(study)
    rows = torch.arange(0, cpu.gene_num, 3)
    grads, embs = [], []
    for model in (cpu, gpu, f64):
        dev = next(model.parameters()).device
        inputs = model.prepare(study.cell_graph)
        full = torch.stack(list(model.pretrain(inputs).values()))  # _SpMM (stacked, block)
        local = model.pretrain(inputs, rows.to(dev))  # _SpMMRows, _RowSpMM, gather_rows
        torch.testing.assert_close(local, full[:, rows.to(dev)], rtol=1e-5, atol=1e-6)
        model.zero_grad()
        (full.square().sum() + local.sin().sum()).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.pretrain.parameters() if p.grad is not None]))
        embs.append(full)
        et = model.edge_types[0]
        sr = gather_rows(inputs.adj[et], rows.to(dev))
        dense = inputs.adj[et].to_dense()[rows.to(dev)]
        torch.testing.assert_close(sr.to_dense(), dense)
    _close(embs[0], embs[1], embs[2], "GNN embeddings")
    _close(grads[0], grads[1], grads[2], "GNN gradients")


def test_fit_with_resume_on_cuda_equals_uninterrupted(study, split, tmp_path):
    train, val = split
    straight = fit(study.cell_graph, train, val, cfg(), LAMBDAS)
    assert straight.device.type == "cuda" and next(straight.model.parameters()).is_cuda
    fit(study.cell_graph, train, val, cfg(epochs=2, checkpoint_dir=str(tmp_path)), LAMBDAS)
    resumed = fit(study.cell_graph, train, val, cfg(checkpoint_dir=str(tmp_path)), LAMBDAS)
    pd.testing.assert_frame_equal(numbers(resumed.history), numbers(straight.history), rtol=1e-5, atol=1e-7)
    assert resumed.best_epoch == straight.best_epoch
    for (k, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=k)


def test_deterministic_setting_on_cuda_sets_cublas_workspace_itself(study, split, tmp_path):
    """In a fresh process without CUBLAS_WORKSPACE_CONFIG: two fits give the same numbers, the
    package set the workspace itself, and torch raised no determinism warning."""
    code = (
        "import os, warnings, torch\n"
        "warnings.simplefilter('error', UserWarning)\n"
        "warnings.filterwarnings('ignore', message=r'Sparse (CSR|CSC|invariant)')\n"
        "from dango_nb.data.study import load_study\n"
        "from dango_nb.train import TrainConfig, fit\n"
        f"s = load_study('tiny', seed=0, data_dir={str(tmp_path)!r})\n"
        f"c = TrainConfig(epochs=2, transition_epoch=1, schedule='LinearUntilUniform', progress=False, device='cuda',"
        " model={'hidden_channels': 16, 'num_heads': 2})\n"
        f"L = {LAMBDAS!r}\n"
        "a = fit(s.cell_graph, s.triplets, None, c, L).history.drop(columns=['time_s'])\n"
        "b = fit(s.cell_graph, s.triplets, None, c, L).history.drop(columns=['time_s'])\n"
        "assert a.equals(b), (a, b)\n"
        "print('CUBLAS', os.environ['CUBLAS_WORKSPACE_CONFIG'])\n")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    env["PYTHONPATH"] = str(PKG.parent) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CUBLAS :4096:8" in r.stdout


def test_prediction_and_evaluation_on_cuda_match_cpu(study, split):
    train, val = split
    res = fit(study.cell_graph, train, val, cfg(epochs=2), LAMBDAS)
    gpu = res.model
    cpu = Dango(gpu.gene_num, gpu.edge_types, **res.config.model)
    cpu.load_state_dict({k: v.cpu() for k, v in gpu.state_dict().items()})
    p_gpu = predict(gpu, study.cell_graph, val, res.scaler, batch_size=65536)
    p_cpu = predict(cpu, study.cell_graph, val, res.scaler)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-4, atol=1e-5)
    e_gpu, e_cpu = evaluate(gpu, study.cell_graph, val, res.scaler), evaluate(cpu, study.cell_graph, val, res.scaler)
    assert e_gpu["pearson"] == pytest.approx(e_cpu["pearson"], abs=1e-4)
    assert res.history["val_pearson"].iloc[-1] == pytest.approx(e_gpu["pearson"], abs=1e-4)


def test_bf16_autocast_matches_float32_on_held_out_pearson(study, split):
    train, val = split
    c = cfg(epochs=8, model={"hidden_channels": 32, "num_heads": 4})
    fp32 = fit(study.cell_graph, train, val, c, LAMBDAS)
    bf16 = fit(study.cell_graph, train, val, c.replace(precision="bf16"), LAMBDAS)
    p32, p16 = fp32.history["val_pearson"].max(), bf16.history["val_pearson"].max()
    print(f"held-out Pearson fp32 {p32:.4f} bf16 {p16:.4f}")
    assert np.isfinite(p16) and abs(p16 - p32) < 0.05, (p32, p16)


class _Watch(Callback):
    """Steps 2.. of the first epoch under sync-debug 'warn'; records each warning's Python frame."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, loop, epoch, step):
        if step == 1:
            torch.cuda.set_sync_debug_mode("warn")

    def on_epoch_end(self, loop, epoch, row):
        torch.cuda.set_sync_debug_mode("default")


def test_training_step_has_no_host_sync_of_its_own(study, split):
    """Under ``torch.cuda.set_sync_debug_mode('warn')`` no synchronising call comes from the loop
    or the losses; the model's data-dependent shapes (unique genes, CSR row sizes) are counted."""
    train, _ = split
    loop = TrainingLoop(study.cell_graph, TripletEpochs(train), None, cfg(epochs=2), LAMBDAS,
                        get_schedule("PaperTwoStage", 0))
    assert loop.guard_every > 0
    from dango_nb.train.loop import DeviceGuard

    loop.guard = DeviceGuard(loop.device, loop.config.divergence_factor, {})
    loop.model.train()
    batches = list(loop.source.batches(loop.generator))[:6]
    loop.step(batches[0], 0, 0, 1.0)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for i, b in enumerate(batches[1:]):
                loop.step(b, 0, i + 1, 1.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = [(Path(w.filename).name, w.lineno) for w in syncs]
    print(f"sync warnings over {len(batches) - 1} steps: {len(syncs)}, at {sorted(set(where))}")
    ours = [w for w in syncs if Path(w.filename).resolve().is_relative_to(PKG / "train")
            or Path(w.filename).name == "losses.py"]
    assert not ours, [(w.filename, w.lineno, str(w.message)) for w in ours]
    loop.guard.check(loop, 0)
