"""The built-in models of the evaluation, each one registration (:mod:`dango_nb.eval.registry`).

- baselines: ``mean``, ``additive``, ``pairwise_additive`` (:mod:`dango_nb.eval.baselines`) and
  ``mlp_embeddings`` (MLP on the integrated embeddings of a DANGO pre-trained on the graph only,
  label free, or of the fold's trained DANGO with ``mlp_embeddings_source: dango``);
- ``dango`` (scored on each of ``ensemble_seeds`` seeds: one metrics row per seed) and
  ``dango_ensemble`` (top-k validation checkpoints of the same seeds' fits, averaged);
- ablations, each a :class:`~dango_nb.eval.registry.DangoVariant`: ``dango_no_pretrain``
  (schedule ``InteractionOnly``), ``dango_mean_meta`` (``meta_embedding="mean"``),
  ``dango_single_<channel>`` for every STRING channel (the cell graph restricted to it) and
  ``dango_<Schedule>`` for every schedule registered when this module is imported;
- ``oracle_signal`` (only with ground truth): the planted signal itself, the best any model can
  do on each metric.

Torch and the training code are imported only when a DANGO model runs, so validating names
(params files, the command line) stays light.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dango_nb.data.graph import channel_of
from dango_nb.data.string_db import CHANNELS
from dango_nb.eval.registry import DangoVariant, FoldData, ModelOutput, register_model
from dango_nb.schedules import SCHEDULES

__all__ = ["DangoRun", "restrict_channels", "graph_channels", "dango_runs", "dango_fits_needed"]

#: EmbeddingMLP settings used unless ``mlp_embeddings`` overrides them.
MLP_DEFAULTS = {"hidden_layer_sizes": (128, 64), "max_epochs": 100, "patience": 10}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _val(data: FoldData):
    return (_np(data.val.indices), _np(data.val.targets)) if len(data.val) else (None, None)


def restrict_channels(cell_graph, channels: Sequence[str]):
    """A copy of the cell graph with only the edge types of the given channels (by channel name)."""
    keep = [et for et in cell_graph.edge_types if channel_of(et) in set(channels)]
    if not keep:
        known = sorted({channel_of(et) for et in cell_graph.edge_types})
        raise ValueError(f"no edge type of channel(s) {list(channels)}; the graph has {known}")
    return cell_graph.edge_type_subgraph(keep)


def graph_channels(cell_graph) -> list[str]:
    return [channel_of(et) for et in cell_graph.edge_types]


# ------------------------------------------------------------------------------------ baselines
def _baseline(name: str):
    def run(data: FoldData):
        from dango_nb.eval.baselines import BASELINES

        kwargs = dict((data.options.baseline_options or {}).get(name, {}))
        if name in ("additive", "pairwise_additive"):
            kwargs.setdefault("n_genes", data.n_genes)
        model = BASELINES[name](**kwargs)
        model.fit(_np(data.train.indices), _np(data.train.targets), *_val(data))
        return model.predict(data.test_indices)

    return run


for _name in ("mean", "additive", "pairwise_additive"):
    register_model(_name, _baseline(_name))


def _pretrained_embeddings(data: FoldData) -> np.ndarray:
    """Integrated embeddings of a DANGO pre-trained on the graph alone (reconstruction only: no
    triplets, no labels), so one pre-training serves every split and fold. Its meta-embedding
    attention is untrained (only the interaction loss trains it), i.e. a fixed random mix of the
    channel embeddings."""
    if "pretrain_embeddings" not in data.cache:
        from dango_nb import train
        from dango_nb.eval.baselines import integrated_embeddings

        epochs = data.options.pretrain_epochs or data.config.transition_epoch or 10
        cfg = dataclasses.replace(data.config, epochs=epochs, seed=data.seed, checkpoint_dir=None, progress=False,
                                  early_stopping_patience=None)
        result = train.pretrain(data.cell_graph, cfg, data.lambdas)
        data.cache["pretrain_embeddings"] = integrated_embeddings(result.model, data.cell_graph)
    return data.cache["pretrain_embeddings"]


@register_model("mlp_embeddings", trains_dango=True)
def _mlp_embeddings(data: FoldData):
    from dango_nb.eval.baselines import EmbeddingMLP, integrated_embeddings

    source = data.options.mlp_embeddings_source
    if source == "pretrain":
        emb = _pretrained_embeddings(data)
    else:  # the fold's trained DANGO (trained on this fold's training part only)
        run = dango_runs(data, DangoVariant(), n_seeds=1)[0]
        emb = integrated_embeddings(run.best, run.graph)
    kwargs = {"seed": data.seed, **MLP_DEFAULTS, **(data.options.mlp_embeddings or {})}
    model = EmbeddingMLP(emb, **kwargs)
    model.fit(_np(data.train.indices), _np(data.train.targets), *_val(data))
    return model.predict(data.test_indices)


@register_model("oracle_signal", needs_ground_truth=True)
def _oracle(data: FoldData):
    return ModelOutput(data.test_signal, fit_s=0.0)


# ---------------------------------------------------------------------------------------- DANGO
@dataclass
class DangoRun:
    """One DANGO fit of a fold: the :class:`~dango_nb.train.FitResult`, the model at its best
    validation epoch, the cell graph it was trained on and the fit's wall time."""

    result: Any
    best: Any
    graph: Any
    fit_s: float

    @classmethod
    def from_folder(cls, path, graph, device: str = "cpu") -> "DangoRun":
        """The fit kept in a run folder (:mod:`dango_nb.runs.folder`), as the runner hands it to
        the models: the best-epoch model is rebuilt from the recorded best parameters, so it is the
        model an in-process fit returns."""
        from dango_nb.runs.folder import RunFolder

        folder = RunFolder.open(path)
        result = folder.fit_result(device)
        return cls(result, result.best_model(), graph, float(folder.info["fit_s"]))


def _config_for(config, variant: DangoVariant, seed: int, checkpoint_dir):
    changes: dict[str, Any] = {"seed": seed, "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
                               "progress": False}
    if variant.schedule is not None:
        changes["schedule"] = variant.schedule
    if variant.model:
        changes["model"] = {**(config.model or {}), **dict(variant.model)}
    return dataclasses.replace(config, **changes)


def dango_fits_needed(specs, options) -> dict[DangoVariant, tuple[str, int]]:
    """The DANGO fits the models of ``specs`` ask for per fold: variant -> (a name for its run
    folders, number of seeds): ``ensemble_seeds`` of the unchanged model when ``dango`` or
    ``dango_ensemble`` runs, else one seed per variant (``mlp_embeddings`` with ``source: dango``
    uses the first)."""
    names = [s.name for s in specs]
    out: dict[DangoVariant, tuple[str, int]] = {}
    for s in specs:
        if s.variant is not None and s.variant != DangoVariant():
            out.setdefault(s.variant, (s.name, 1))
    n_base = 0
    if "dango_ensemble" in names or "dango" in names:
        n_base = options.ensemble_seeds
    elif ("mlp_embeddings" in names and options.mlp_embeddings_source == "dango"):
        n_base = 1
    if n_base:
        out[DangoVariant()] = ("dango", n_base)
    return out


def dango_runs(data: FoldData, variant: DangoVariant, n_seeds: int) -> list[DangoRun]:
    """DANGO fits of ``variant`` for seeds ``data.seed + s`` (cached per fold and variant). The
    runner may put precomputed fits there (``data.cache[("fits", variant)]``, e.g. from run
    folders trained by :func:`dango_nb.runs.run_many`); only missing seeds are fitted here.
    Checkpoints are written only for the unchanged model when the ensemble needs the top-k."""
    from dango_nb import train

    graph = data.cell_graph if variant.channel is None else restrict_channels(data.cell_graph, [variant.channel])
    runs = data.cache.setdefault(("fits", variant), [])
    for s in range(len(runs), n_seeds):
        ckpt = None
        if variant == DangoVariant() and "dango_ensemble" in data.options.models and data.workdir is not None:
            ckpt = data.workdir / "dango" / f"seed{s}"
        cfg = _config_for(data.config, variant, data.seed + s, ckpt)
        t0 = time.perf_counter()
        result = train.fit(graph, data.train, data.val if len(data.val) else None, cfg, data.lambdas)
        runs.append(DangoRun(result, result.best_model(), graph, time.perf_counter() - t0))
    return runs[:n_seeds]


def _dango(variant: DangoVariant):
    def run(data: FoldData):
        from dango_nb.eval.prediction import predict

        if variant == DangoVariant():  # one seed's score is not DANGO's: every seed is scored
            runs = dango_runs(data, variant, data.options.ensemble_seeds)
            preds = [np.asarray(predict(r.best, r.graph, data.test_indices, r.result.scaler), dtype=np.float64)
                     for r in runs]
            return ModelOutput(np.stack(preds), fit_s=[r.fit_s for r in runs])
        r = dango_runs(data, variant, 1)[0]
        pred = predict(r.best, r.graph, data.test_indices, r.result.scaler)
        return ModelOutput(np.asarray(pred, dtype=np.float64), fit_s=r.fit_s)

    return run


def _ensemble_members(runs: list[DangoRun], top_k: int | None) -> list:
    """Members: the kept top-k validation checkpoints of each run (best first, at most ``top_k``),
    or the run's best-epoch model when it kept none."""
    from dango_nb.eval.ensemble import Member
    from dango_nb.train import list_checkpoints, load_checkpoint

    members = []
    for s, run in enumerate(runs):
        fit = run.result
        listed = list_checkpoints(fit.checkpoint_dir) if fit.checkpoint_dir is not None else None
        if listed is not None and len(listed):
            if top_k is not None:
                listed = listed.head(top_k)
            for row in listed.itertuples():
                model, scaler = load_checkpoint(row.path, device="cpu")
                members.append(Member(model, scaler, f"seed{s}/epoch{row.epoch}",
                                      {"run": f"seed{s}", "epoch": row.epoch, row.metric: row.value}))
        else:
            members.append(Member(run.best, fit.scaler, f"seed{s}/best_epoch{fit.best_epoch}", {"run": f"seed{s}"}))
    return members


@register_model("dango_ensemble", trains_dango=True, variant=DangoVariant())
def _dango_ensemble(data: FoldData):
    from dango_nb.eval.ensemble import combine, member_predictions

    runs = dango_runs(data, DangoVariant(), data.options.ensemble_seeds)
    members = _ensemble_members(runs, data.options.ensemble_top_k)
    preds = member_predictions(members, runs[0].graph, data.test_indices)
    mean, spread = combine(preds)
    data.cache["ensemble_members"] = (preds, [m.name for m in members], [m.info["run"] for m in members])
    return ModelOutput(mean, spread, sum(r.fit_s for r in runs))  # every seed's fit


def _register_variant(name: str, variant: DangoVariant) -> None:
    register_model(name, _dango(variant), trains_dango=True, variant=variant)


_register_variant("dango", DangoVariant())
_register_variant("dango_no_pretrain", DangoVariant(schedule="InteractionOnly"))
_register_variant("dango_mean_meta", DangoVariant(model=(("meta_embedding", "mean"),)))
for _ch in CHANNELS:
    _register_variant(f"dango_single_{_ch}", DangoVariant(channel=_ch))
for _schedule in SCHEDULES:
    _register_variant(f"dango_{_schedule}", DangoVariant(schedule=_schedule))
