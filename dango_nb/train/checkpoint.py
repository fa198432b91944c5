"""The checkpoint format, owned here: writing, verifying, resuming, listing and loading.

A run directory holds ``last.pt`` (written after every epoch: model, optimiser, epoch, history,
target scaler, early-stopping state, the divergence references, the top-k index, every RNG state
including the shuffling generator, and a fingerprint of the training/validation triplets),
``last.prev.pt`` (the ``last.pt`` of the epoch before), ``best.pt`` (the model of the best eligible
epoch so far, whatever ``keep_top_k``: the model a fit reports as ``best_epoch``; it records that
``epoch``), ``top/epoch_<n>.pt`` for the ``keep_top_k`` best eligible epochs and their index
``top_k.json`` (best first). Every checkpoint
file has a sidecar ``<file>.sha256`` holding the hex SHA-256 of its bytes (no file name: the
sidecar is renamed with ``last.pt`` when that becomes ``last.prev.pt``).
Every file is written atomically; per epoch ``best.pt`` and the top-k file come first, then ``last.pt`` (the old
one renamed to ``last.prev.pt`` first), then the index, then evictions, so a crash at any point
leaves an intact ``last.pt`` or ``last.prev.pt``. Every checkpoint also records the model's
constructor arguments, the gene names and, when the cell graph carries one, its data source, so a
checkpoint alone rebuilds the model (:func:`load_checkpoint`).

Reading trusts neither the bytes nor the names inside:

- every load goes through :func:`load_intact`: a file whose SHA-256 differs from its sidecar is
  refused (``torch.load`` would accept many damaged files and resume with garbage weights); for
  ``last.pt`` the loader then falls back to ``last.prev.pt`` with a :class:`CheckpointWarning`
  naming both files. When no candidate is intact it raises :class:`CheckpointError` instead of
  starting afresh, which would overwrite the run. A file without a sidecar (written before
  checksums existed) loads with a warning;
- every file name read from ``last.pt`` or ``top_k.json`` goes through :func:`confined`, which
  refuses names that could reach outside the run directory (absolute paths, ``..``, symbolic
  links pointing elsewhere), so a crafted index can neither delete nor read other files;
- temporary files of an interrupted write (``.last.pt.<random>.tmp`` and the like) are removed
  when the next run opens the directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
import re
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from dango_nb.errors import CheckpointError, CheckpointWarning
from dango_nb.fileio import atomic_write, atomic_write_json
from dango_nb.models import Dango
from dango_nb.train.config import RESUMABLE_KEYS, TrainConfig
from dango_nb.train.device import resolve_device
from dango_nb.train.scaler import TargetScaler

log = logging.getLogger(__name__)

__all__ = ["BEST", "CHECKPOINT_FORMAT", "CheckpointManager", "confined", "fingerprint", "list_checkpoints",
           "load_checkpoint", "load_intact", "save_checkpoint"]

CHECKPOINT_FORMAT = 1
LAST, PREVIOUS, INDEX, TOP, BEST = "last.pt", "last.prev.pt", "top_k.json", "top", "best.pt"
#: Temporary files of this module's atomic writes (``fileio.atomic_write``/``atomic_path`` names).
_TEMP = re.compile(r"\.(last\.pt|last\.prev\.pt|best\.pt|top_k\.json|epoch_\d+\.pt)(\.sha256)?\.[^/]+\.tmp(\.pt)?")


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


def confined(directory, entry, origin, inside: str | None = None) -> Path:
    """``directory / entry`` for a file name ``entry`` read from ``origin`` (a checkpoint or an
    index), refusing any name that could reach outside ``directory`` (or its subfolder ``inside``):
    non-strings, absolute paths, drive letters, backslashes, ``..`` parts, and symbolic links
    (of the file or a folder on the way) that resolve elsewhere.

    Raises:
        CheckpointError: naming ``origin`` and the entry.
    """
    root = Path(directory)

    def refuse(why: str):
        return CheckpointError(f"entry {entry!r} {why}; checkpoint entries must name files inside "
                               f"{root / inside if inside else root}", path=origin)

    if not isinstance(entry, str) or not entry or "\x00" in entry:
        raise refuse("is not a relative file name")
    posix, win = PurePosixPath(entry), PureWindowsPath(entry)
    if posix.is_absolute() or win.drive or win.root or "\\" in entry:
        raise refuse("is an absolute path")
    if ".." in posix.parts:
        raise refuse("contains '..'")
    if inside is not None and posix.parts[0] != inside:
        raise refuse(f"is not in the {inside!r} folder")
    base = (root / inside) if inside else root
    real_root, real_base, real = root.resolve(), base.resolve(), (root / posix).resolve()
    if not (real_base.is_relative_to(real_root) and real.is_relative_to(real_base)) or real == real_base:
        raise refuse(f"resolves to {real} (a symbolic link out of the folder)")
    return root / posix


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(obj: Mapping[str, Any], path) -> None:
    """Write ``obj`` (``torch.save``) to ``path`` atomically, then its SHA-256 to ``<path>.sha256``
    (also atomically)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    with atomic_write(_sidecar(path)) as fh:
        fh.write(hashlib.sha256(data).hexdigest() + "\n")


#: The first bytes of every file ``torch.save`` writes (a zip archive).
TORCH_ZIP_MAGIC = b"PK\x03\x04"


def _read(path: Path, device) -> dict[str, Any]:
    """One checkpoint file, its bytes checked against its sidecar; :class:`CheckpointError` when
    the file is missing, damaged or unreadable."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read the checkpoint ({err.strerror or err})", path=path) from None
    side = _sidecar(path)
    if side.is_file():
        recorded = side.read_text(encoding="utf-8", errors="replace").split()
        actual = hashlib.sha256(data).hexdigest()
        if not recorded or recorded[0].lower() != actual:
            raise CheckpointError(f"damaged: its SHA-256 is {actual}, {side.name} records "
                                  f"{recorded[0] if recorded else 'nothing'}", path=path)
    if not data.startswith(TORCH_ZIP_MAGIC):  # torch.save writes a zip archive; anything else is another file
        raise CheckpointError("not a dango_nb checkpoint (not a file torch.save writes)", path=path)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as err:  # any unreadable file gets the same clear message
        raise CheckpointError(f"not a readable dango_nb checkpoint ({type(err).__name__}: {err})",
                              path=path) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not a dango_nb checkpoint (holds a {type(ckpt).__name__})", path=path)
    if not side.is_file():  # warned only for a file that is a checkpoint at all
        warnings.warn(f"{path}: no checksum file {side.name}; loading it unverified", CheckpointWarning,
                      stacklevel=3)
    return ckpt


def _candidates(path: Path) -> list[Path]:
    """``path`` and, for ``last.pt``, the ``last.prev.pt`` beside it (newest first)."""
    return [path, path.with_name(PREVIOUS)] if path.name == LAST else [path]


def load_intact(paths, device="cpu") -> tuple[dict[str, Any], Path]:
    """The first intact checkpoint of ``paths`` (newest first) and its path.

    Missing candidates are skipped. When a damaged or unreadable one is skipped for an older one,
    a :class:`CheckpointWarning` names both files.

    Raises:
        CheckpointError: no candidate is intact (the message lists why each was refused).
    """
    paths = [Path(p) for p in paths]
    refused: list[CheckpointError] = []
    for path in paths:
        if not path.exists() and not path.is_symlink():
            continue
        try:
            ckpt = _read(path, device)
        except CheckpointError as err:
            refused.append(err)
            continue
        if refused:
            warnings.warn(f"{'; '.join(map(str, refused))}; using {path}, the newest intact checkpoint, instead",
                          CheckpointWarning, stacklevel=2)
        return ckpt, path
    if len(refused) == 1 and len(paths) == 1:  # one file: its own reason, named once
        raise refused[0]
    if refused:
        raise CheckpointError("no intact checkpoint: " + "; ".join(map(str, refused)), path=paths[0])
    raise CheckpointError("checkpoint not found", path=paths[0])


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[Dango, TargetScaler]:
    """Rebuild the model (eval mode) and target scaler saved in a checkpoint (``last.pt`` or a
    top-k file). The file must be intact (:func:`load_intact`); a damaged ``last.pt`` is replaced
    by ``last.prev.pt`` with a warning, a damaged top-k file is an error."""
    path = Path(path)
    ckpt, path = load_intact(_candidates(path), resolve_device(device))
    if "model_init" not in ckpt or "model" not in ckpt:
        raise CheckpointError("not a dango_nb checkpoint (no 'model_init'/'model' entries)", path=path)
    init = ckpt["model_init"]
    model = Dango(init["gene_num"], [tuple(et) for et in init["edge_types"]], **init["kwargs"])
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval(), TargetScaler.from_state(ckpt["scaler"])


def _top_entries(directory: Path, entries, origin) -> list[dict[str, Any]]:
    """Top-k index entries checked for shape, their files confined to ``directory/top``."""
    if not isinstance(entries, list):
        raise CheckpointError(f"top-k index is a {type(entries).__name__}, expected a list", path=origin)
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or not {"file", "epoch", "metric", "value"} <= set(e):
            raise CheckpointError(f"top-k entry {i} is {e!r}, expected a mapping with file, epoch, metric, value",
                                  path=origin)
        confined(directory, e["file"], origin, inside=TOP)
        out.append(dict(e))
    return out


def list_checkpoints(checkpoint_dir) -> pd.DataFrame:
    """The kept top-k checkpoints, best first: columns ``path, epoch, metric, value``."""
    checkpoint_dir = Path(checkpoint_dir)
    index = checkpoint_dir / INDEX
    cols = ["path", "epoch", "metric", "value"]
    if not index.is_file():
        return pd.DataFrame(columns=cols)
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{index}:{err.lineno}: not valid JSON: {err.msg}") from None
    rows = [{"path": checkpoint_dir / e["file"], "epoch": int(e["epoch"]), "metric": e["metric"],
             "value": float(e["value"])} for e in _top_entries(checkpoint_dir, entries, index)]
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

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files left by an interrupted write of this module (and only those)."""
        removed = []
        for folder in (self.dir, self.dir / TOP):
            if not folder.is_dir() or folder.is_symlink():
                continue
            for f in folder.iterdir():
                if _TEMP.fullmatch(f.name) and (f.is_file() or f.is_symlink()):
                    f.unlink(missing_ok=True)
                    removed.append(f)
        return removed

    def read_last(self, device) -> dict[str, Any] | None:
        """The newest intact of ``last.pt`` / ``last.prev.pt`` checked for resuming this run, or
        ``None`` when there is neither. Stale temporary files are removed first.

        Raises:
            CheckpointError: they exist but none is intact (starting afresh would overwrite the
                run), or the checkpoint names top-k files outside ``top/``.
            ValueError: the checkpoint is of another kind of run, another configuration or
                other triplets.
        """
        for f in self.remove_temp_files():
            log.info("removed %s, left by an interrupted write", f)
        last = self.dir / LAST
        candidates = _candidates(last)
        if not any(p.exists() or p.is_symlink() for p in candidates):
            return None
        try:
            ckpt, path = load_intact(candidates, device)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; cannot resume. Move the damaged files out of {self.dir} to start "
                                  f"afresh, or use another checkpoint_dir") from None
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("mode") != self.kind:
            raise ValueError(f"{path}: checkpoint of a {ckpt.get('mode')!r} run (format {ckpt.get('format')}); "
                             f"cannot resume a {self.kind!r} run from it; use another checkpoint_dir")
        saved, now = ckpt["config"], self._config_for_check()
        # a key added to TrainConfig after the checkpoint was written had its default then
        defaults = TrainConfig().to_dict()
        diff = sorted(k for k in now if saved.get(k, defaults.get(k)) != now[k])
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k, defaults.get(k))!r} -> {now[k]!r}" for k in diff)
            raise ValueError(f"{path}: cannot resume, TrainConfig differs from the checkpointed run ({detail}); "
                             f"use another checkpoint_dir")
        horizon = ckpt["state"].get("lr_schedule", {}).get("epochs")
        if now.get("lr_schedule") == "cosine" and horizon != self.config.epochs:
            raise ValueError(f"{path}: cannot resume, lr_schedule 'cosine' anneals over epochs={horizon!r} "
                             f"and this run has epochs={self.config.epochs!r}; keep epochs, or use another "
                             f"checkpoint_dir")
        if ckpt["fingerprint"] != self.fingerprint:
            raise ValueError(f"{path}: cannot resume, the training/validation triplets differ from the "
                             f"checkpointed run; use another checkpoint_dir")
        if path != last:  # keep the intact older file until a new last.pt is written
            for f in (last, _sidecar(last)):
                if f.exists():
                    os.replace(f, f.with_name(f.name + ".damaged"))
            log.warning("moved the damaged %s aside to %s.damaged", last, last.name)
        top = _top_entries(self.dir, ckpt["state"]["top"], path)
        # after a fall-back to last.prev.pt a listed file may have been evicted since: an evicted
        # epoch never re-enters the top k, so dropping it gives the same ranking
        self.top = [t for t in top if (self.dir / t["file"]).is_file()]
        self._prune_top_files()
        return ckpt

    def save(self, payload: dict[str, Any], epoch: int, value: float, eligible: bool, higher: bool,
             last: dict[str, Any], best: bool = False) -> None:
        """``best.pt`` (when ``best``: this epoch is the new best), the epoch's top-k file (if it
        qualifies), then ``last.pt`` (``payload`` plus ``last``, whose ``state`` gains the top-k
        index; the previous one becomes ``last.prev.pt``), then ``top_k.json``, then evicted files."""
        k = self.config.keep_top_k
        evicted: list[str] = []
        if best:  # kept even with keep_top_k 0: the model a fit reports must stay loadable
            save_checkpoint({**payload, "epoch": epoch, "metric": self.metric, "value": float(value)},
                            self.dir / BEST)
        if k > 0 and eligible and math.isfinite(value):
            entry = {"file": f"{TOP}/epoch_{epoch:04d}.pt", "epoch": epoch, "metric": self.metric,
                     "value": float(value)}
            ranked = sorted(self.top + [entry], key=lambda e: (-e["value"] if higher else e["value"], e["epoch"]))
            keep, evicted = ranked[:k], [e["file"] for e in ranked[k:]]
            if entry in keep:
                save_checkpoint({**payload, "epoch": epoch, "metric": self.metric, "value": float(value)},
                                self.dir / entry["file"])
            else:
                evicted.remove(entry["file"])
            self.top = keep
        state = {**last["state"], "top": self.top}
        self._rotate_last()
        save_checkpoint({**payload, "format": CHECKPOINT_FORMAT, "mode": self.kind,
                         "config": self._config_for_check(), **last, "state": state,
                         "fingerprint": self.fingerprint}, self.dir / LAST)
        atomic_write_json(self.top, self.dir / INDEX)
        for f in evicted:
            self._remove(confined(self.dir, f, self.dir / LAST, inside=TOP))

    def restore_best(self, payload: dict[str, Any], best_state: Mapping[str, Any], epoch: int, value: float) -> None:
        """Rewrite ``best.pt`` from a resumed run's best-epoch parameters unless it already holds
        ``epoch`` (an interrupted epoch may have written a best that the resumed run does not reach)."""
        path = self.dir / BEST
        try:
            held = load_intact([path])[0].get("epoch") if path.is_file() else None
        except CheckpointError:
            held = None
        if held != epoch:
            save_checkpoint({**payload, "model": dict(best_state), "epoch": epoch, "metric": self.metric,
                             "value": float(value)}, path)

    def _rotate_last(self) -> None:
        # sidecar first: a crash between the two renames leaves last.pt without a sidecar (loads
        # with a warning), never a last.prev.pt whose sidecar belongs to another file
        last, prev = self.dir / LAST, self.dir / PREVIOUS
        if not last.is_file():
            return
        if _sidecar(last).is_file():
            os.replace(_sidecar(last), _sidecar(prev))
        else:
            _sidecar(prev).unlink(missing_ok=True)
        os.replace(last, prev)

    @staticmethod
    def _remove(path: Path) -> None:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)

    def _prune_top_files(self) -> None:
        keep = {t["file"] for t in self.top}
        top = confined(self.dir, TOP, self.dir, inside=None) if (self.dir / TOP).exists() else None
        if top is not None and top.is_dir():
            for f in top.iterdir():
                name = f.name[:-len(".sha256")] if f.name.endswith(".sha256") else f.name
                if re.fullmatch(r"epoch_\d+\.pt", name) and f"{TOP}/{name}" not in keep:
                    f.unlink(missing_ok=True)
        atomic_write_json(self.top, self.dir / INDEX)
