"""The checkpoint format, owned here: writing, resuming, listing and loading.

A run directory holds ``last.pt`` (written after every epoch: model, optimiser, epoch, history,
target scaler, early-stopping state, the top-k index, every RNG state including the shuffling
generator, and a fingerprint of the training/validation triplets), ``top/epoch_<n>.pt`` for the
``keep_top_k`` best eligible epochs and their index ``top_k.json`` (best first). Every file is
written atomically; per epoch the top-k file comes first, then ``last.pt``, then the index, then
evictions, so a crash at any point leaves a consistent ``last.pt``. Every checkpoint also records
the model's constructor arguments, the gene names and, when the cell graph carries one, its data
source, so a checkpoint alone rebuilds the model (:func:`load_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from dango_nb.fileio import atomic_save_torch, atomic_write_json
from dango_nb.models import Dango
from dango_nb.train.config import RESUMABLE_KEYS, TrainConfig
from dango_nb.train.device import resolve_device
from dango_nb.train.scaler import TargetScaler

__all__ = ["CHECKPOINT_FORMAT", "CheckpointManager", "fingerprint", "list_checkpoints", "load_checkpoint"]

CHECKPOINT_FORMAT = 1


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def fingerprint(*tensors: torch.Tensor | None) -> str:
    """SHA-1 of the tensors' shapes and bytes (``None`` counts as a value)."""
    h = hashlib.sha1()
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            a = t.detach().cpu().contiguous()
            h.update(str(tuple(a.shape)).encode())
            h.update(a.numpy().tobytes())
    return h.hexdigest()


def graph_record(cell_graph) -> dict[str, Any]:
    """Gene names (so predictions can check names, not only counts) and the data source of the
    cell graph when it carries one (``dango_source``, set by the study loaders)."""
    rec: dict[str, Any] = {}
    node_ids = getattr(cell_graph["gene"], "node_ids", None)
    if node_ids is not None:
        rec["genes"] = [str(g) for g in node_ids]
    source = getattr(cell_graph, "dango_source", None)
    if isinstance(source, dict):
        rec["source"] = source
    return rec


def _load(path: Path, device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable dango_nb checkpoint ({type(err).__name__}: {err})") from err


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[Dango, TargetScaler]:
    """Rebuild the model (eval mode) and target scaler saved in a checkpoint (``last.pt`` or a
    top-k file)."""
    path = Path(path)
    ckpt = _load(path, resolve_device(device))
    if "model_init" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a dango_nb checkpoint (no 'model_init'/'model' entries)")
    init = ckpt["model_init"]
    model = Dango(init["gene_num"], [tuple(et) for et in init["edge_types"]], **init["kwargs"])
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval(), TargetScaler.from_state(ckpt["scaler"])


def list_checkpoints(checkpoint_dir) -> pd.DataFrame:
    """The kept top-k checkpoints, best first: columns ``path, epoch, metric, value``."""
    checkpoint_dir = Path(checkpoint_dir)
    index = checkpoint_dir / "top_k.json"
    cols = ["path", "epoch", "metric", "value"]
    if not index.is_file():
        return pd.DataFrame(columns=cols)
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{index}:{err.lineno}: not valid JSON: {err.msg}") from None
    rows = [{"path": checkpoint_dir / e["file"], "epoch": int(e["epoch"]), "metric": e["metric"],
             "value": float(e["value"])} for e in entries]
    return pd.DataFrame(rows, columns=cols)


class CheckpointManager:
    """Writes and reads one run directory.

    Args:
        directory: the run directory.
        config: the run's :class:`TrainConfig` (``keep_top_k``, ``early_stopping_metric``; the keys
            outside :data:`~dango_nb.train.config.RESUMABLE_KEYS` must match to resume).
        kind: the batch source's name (``"fit"``, ``"overfit"``, ``"pretrain"``); a run resumes
            only from a checkpoint of the same kind.
        data_fingerprint: :func:`fingerprint` of the training and validation triplets.
    """

    def __init__(self, directory, config: TrainConfig, kind: str, data_fingerprint: str):
        self.dir = Path(directory)
        self.config, self.kind, self.fingerprint = config, kind, data_fingerprint
        self.metric = config.early_stopping_metric
        self.top: list[dict[str, Any]] = []  # {"file", "epoch", "metric", "value"}, best first

    def _config_for_check(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.to_dict().items() if k not in RESUMABLE_KEYS}

    def payload(self, model: Dango, scaler: TargetScaler, cell_graph) -> dict[str, Any]:
        """What every checkpoint file holds: enough to rebuild the model and its scaler."""
        return {"model": model.state_dict(),
                "model_init": {"gene_num": model.gene_num, "edge_types": [tuple(et) for et in model.edge_types],
                               "kwargs": dict(self.config.model)},
                "scaler": scaler.state_dict(), "config": self.config.to_dict(), **graph_record(cell_graph)}

    def read_last(self, device) -> dict[str, Any] | None:
        """``last.pt`` checked for resuming this run, or ``None`` when there is none."""
        path = self.dir / "last.pt"
        if not path.is_file():
            return None
        ckpt = _load(path, device)
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("mode") != self.kind:
            raise ValueError(f"{path}: checkpoint of a {ckpt.get('mode')!r} run (format {ckpt.get('format')}); "
                             f"cannot resume a {self.kind!r} run from it; use another checkpoint_dir")
        saved, now = ckpt["config"], self._config_for_check()
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
            raise ValueError(f"{path}: cannot resume, TrainConfig differs from the checkpointed run ({detail}); "
                             f"use another checkpoint_dir")
        if ckpt["fingerprint"] != self.fingerprint:
            raise ValueError(f"{path}: cannot resume, the training/validation triplets differ from the "
                             f"checkpointed run; use another checkpoint_dir")
        self.top = [dict(t) for t in ckpt["state"]["top"]]
        self._prune_top_files()
        return ckpt

    def save(self, payload: dict[str, Any], epoch: int, value: float, eligible: bool, higher: bool,
             last: dict[str, Any]) -> None:
        """The epoch's top-k file (if it qualifies), then ``last.pt`` (``payload`` plus ``last``,
        whose ``state`` gains the top-k index), then ``top_k.json``, then evicted files."""
        k = self.config.keep_top_k
        evicted: list[str] = []
        if k > 0 and eligible and math.isfinite(value):
            entry = {"file": f"top/epoch_{epoch:04d}.pt", "epoch": epoch, "metric": self.metric, "value": float(value)}
            ranked = sorted(self.top + [entry], key=lambda e: (-e["value"] if higher else e["value"], e["epoch"]))
            keep, evicted = ranked[:k], [e["file"] for e in ranked[k:]]
            if entry in keep:
                atomic_save_torch({**payload, "epoch": epoch, "metric": self.metric, "value": float(value)},
                                  self.dir / entry["file"])
            else:
                evicted.remove(entry["file"])
            self.top = keep
        state = {**last["state"], "top": self.top}
        atomic_save_torch({**payload, "format": CHECKPOINT_FORMAT, "mode": self.kind,
                           "config": self._config_for_check(), **last, "state": state,
                           "fingerprint": self.fingerprint}, self.dir / "last.pt")
        atomic_write_json(self.top, self.dir / "top_k.json")
        for f in evicted:
            (self.dir / f).unlink(missing_ok=True)

    def _prune_top_files(self) -> None:
        keep = {t["file"] for t in self.top}
        for f in (self.dir / "top").glob("epoch_*.pt"):
            if f"top/{f.name}" not in keep:
                f.unlink(missing_ok=True)
        atomic_write_json(self.top, self.dir / "top_k.json")
