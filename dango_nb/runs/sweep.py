"""Sweep files: a base run parameter set plus axes, expanded into one run per combination.

::

    base: train.yaml            # a run parameter file (relative to this file) or an inline mapping
    overrides:                  # optional dotted keys set on the base for every run
      train.epochs: 20
    variants:                   # optional named recipes (dotted keys), each crossed with the grid
      reference: {}
      regularised: {train.weight_decay: 0.01, train.model.attention_dropout: 0.3}
    axes:                       # the grid: every combination is one run (a run folder)
      train.schedule: [PreThenPost, LinearUntilUniform]
      train.transition_epoch: [0, 2, 5]
      train.seed: [0, 1]
      split.fold: [0, 1]

An axis or override key is ``data.<field>``, ``train.<TrainConfig field>``,
``train.model.<Dango argument>``, ``split.<field>``, ``lambdas_file``, ``lambdas`` or ``lambdas.<channel>``;
a key without a section is a ``train`` key
(``lr``, ``model.hidden_channels``), and ``split`` / ``fold`` stand for ``split.name`` / ``split.fold``.
Unknown keys fail before anything runs, naming the file and the key; every expanded run is then
validated like a run parameter file. A run's folder name is made of its axis values
(``schedule-PreThenPost_transition_epoch-2_seed-0``, led by ``variant-<name>`` when there are
variants), so it stays the same when axes are reordered and a rerun finds the runs already done.
Variants are for comparing recipes that differ in several keys at once (a grid over each key would
mostly run combinations nobody asked for); the results table gets a ``variant`` column.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ParamsError, shown, shown_key
from ..fileio import NAME_MAX, check_path_length, read_yaml
from .spec import RunParams, load_run_mapping, run_params, section_fields, set_key

__all__ = ["RunSpec", "Sweep", "check_out", "load_sweep", "sweep_from_mapping", "normalise_key"]

_TOP = ("base", "overrides", "variants", "axes")
#: Longest run id: its folder is built as ``.<run_id>.partial`` (NAME_MAX less 9 bytes).
MAX_RUN_ID_BYTES = NAME_MAX - len("..partial")
#: Bytes kept free below a run folder's path for the files a run writes inside it
#: (``checkpoints/top/<name>.pt`` and temporary names).
RUN_FILES_RESERVE = 200
_SHORTHAND = {"split": "split.name", "fold": "split.fold"}


@dataclass
class RunSpec:
    """One run of a sweep: its id (folder name), axis values and validated parameters."""

    run_id: str
    axes: dict[str, Any]
    params: RunParams
    out: Path | None = None


@dataclass
class Sweep:
    """An expanded sweep: ``runs`` in grid order, ``axes`` as given (normalised keys)."""

    source: str
    base: dict
    overrides: dict
    axes: dict[str, list]
    runs: list[RunSpec] = field(default_factory=list)
    variants: dict[str, dict] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """What tells the runs apart: ``variant`` (when there are variants), then the axis keys."""
        return (["variant"] if self.variants else []) + list(self.axes)

    def to_dict(self) -> dict:
        out = {"base": self.base, "overrides": self.overrides, "axes": self.axes}
        if self.variants:
            out["variants"] = self.variants
        return out


_NO_VALUE = object()


def normalise_key(key: Any, source: str, where: str, value: Any = _NO_VALUE) -> str:
    """The full dotted key for an axis/override key, or :class:`ParamsError` naming file and key.

    ``split`` with the value ``None`` (when known) is the whole split: null trains on all triplets."""
    if not isinstance(key, str) or not key:
        raise ParamsError(f"{source}: {where}: keys must be non-empty strings, got {shown(key)}")
    if "" in key.split("."):
        raise ParamsError(f"{source}: {where}: key {shown_key(key)} has an empty part; write dotted keys such as "
                          "train.epochs")
    if key == "split" and value is None:
        return key
    if key in ("data", "train"):
        raise ParamsError(f"{source}: {where}: key {shown_key(key)} is a section; set its fields one by one "
                          f"({key}.<field>, e.g. {'train.epochs' if key == 'train' else 'data.preset'})")
    key = _SHORTHAND.get(key, key)
    parts = key.split(".")
    if key in ("lambdas", "lambdas_file") or (parts[0] == "lambdas" and len(parts) == 2 and parts[1]):
        return key  # top-level keys of a run; lambdas.<channel> is checked with the run's lambdas
    fields = section_fields()
    head = key.split(".", 1)[0]
    if head not in ("data", "train", "split"):
        key = "train." + key
    parts = key.split(".")
    if parts[0] == "train" and len(parts) >= 2 and parts[1] == "model":
        ok, allowed, section = len(parts) == 3 and parts[2] in fields["train.model"], fields["train.model"], "train.model"
    else:
        section = parts[0]
        ok, allowed = len(parts) == 2 and parts[1] in fields[section], fields[section]
    if not ok:
        raise ParamsError(f"{source}: {where}: unknown key {shown_key(key)}; '{section}' takes "
                          f"{', '.join(allowed)}")
    if key == "train.checkpoint_dir":
        raise ParamsError(f"{source}: {where}: 'train.checkpoint_dir' is set by the run folder, not by a sweep")
    return key


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        text = repr(v) if not math.isfinite(v) else f"{v:g}"
    elif v is None:
        text = "none"
    else:
        text = str(v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def run_id(axes: Mapping[str, Any]) -> str:
    """``schedule-PreThenPost_seed-0`` from axis values (last key part; full key when ambiguous)."""
    short = [k.split(".")[-1] for k in axes]
    names = [s if short.count(s) == 1 else k.replace(".", "-") for s, k in zip(short, axes)]
    return "_".join(f"{n}-{_value_text(v)}" for n, v in zip(names, axes.values())) or "run"


def sweep_from_mapping(raw: Any, source: str = "<sweep>", base_dir: str | os.PathLike | None = None) -> Sweep:
    """Validate and expand a sweep mapping (the content of a sweep file)."""
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source}: expected a mapping with keys {', '.join(_TOP)}, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in _TOP]
    if unknown:
        raise ParamsError(f"{source}: unknown key {shown_key(str(unknown[0]))}; a sweep file takes {', '.join(_TOP)}")
    base = raw.get("base")
    if isinstance(base, str):
        path = Path(os.path.expanduser(base))
        if not path.is_absolute():
            path = Path(base_dir or ".") / path
        base_map = load_run_mapping(path)
        base_source = str(path)
    elif isinstance(base, Mapping) or base is None:
        base_map, base_source = dict(base or {}), source
    else:
        raise ParamsError(f"{source}: key 'base': expected a run parameter file name or a mapping, got {shown(base)}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ParamsError(f"{source}: key 'overrides': expected a mapping of dotted keys to values")
    for k, v in overrides.items():
        base_map = set_key(base_map, normalise_key(k, source, "overrides"), v, source)
    axes_raw = raw.get("axes") or {}
    if not isinstance(axes_raw, Mapping):
        raise ParamsError(f"{source}: key 'axes': expected a mapping of dotted keys to lists of values")
    axes: dict[str, list] = {}
    for k, values in axes_raw.items():
        key = normalise_key(k, source, "axes")
        if key in axes:
            raise ParamsError(f"{source}: axes: '{k}' and another key both mean '{key}'")
        if not isinstance(values, list) or not values:
            raise ParamsError(f"{source}: axes: key '{k}': expected a non-empty list of values, got {shown(values)}")
        axes[key] = list(values)
    variants = _variants(raw.get("variants"), source, axes)
    run_params(base_map, base_source)  # the base alone must be valid (clear errors before the grid)

    sweep = Sweep(source=source, base=base_map, overrides=dict(overrides), axes=axes, variants=variants)
    seen: dict[str, dict] = {}
    grid = itertools.product(variants.items() or [None], *axes.values()) if axes or variants else [(None,)]
    for variant, *combo in grid:
        values = dict(zip(axes, combo))
        mapping = base_map
        if variant is not None:
            for k, v in variant[1].items():
                mapping = set_key(mapping, k, v, source)
            values = {"variant": variant[0], **values}
        for k, v in values.items():
            if k != "variant":
                mapping = set_key(mapping, k, v, source)
        rid = run_id(values)
        if len(rid.encode()) > MAX_RUN_ID_BYTES:
            raise ParamsError(f"{source}: axes: run {shown(rid)}: its folder name is {len(rid.encode())} bytes, "
                              f"more than the {MAX_RUN_ID_BYTES} a run folder may have (NAME_MAX {NAME_MAX} less "
                              "'.' and '.partial'); use shorter axis values or variants")
        where = f"{source} (run {rid})"
        params = run_params(mapping, where)
        if rid in seen:
            raise ParamsError(f"{source}: axes: runs {shown(seen[rid])} and {shown(values)} get the same folder name {shown(rid)}; "
                              "make the values distinct")
        seen[rid] = values
        sweep.runs.append(RunSpec(rid, values, params))
    return sweep


def _variants(raw: Any, source: str, axes: Mapping[str, list]) -> dict[str, dict]:
    """``variants``: name -> mapping of dotted keys (normalised); names become folder names."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise ParamsError(f"{source}: key 'variants': expected a non-empty mapping of names to mappings of "
                          f"dotted keys, got {shown(raw)}")
    out: dict[str, dict] = {}
    for name, keys in raw.items():
        if not isinstance(name, str) or _value_text(name) != name:
            raise ParamsError(f"{source}: variants: name {shown(name)}: expected letters, digits, '.', '+' or '-' "
                              f"(it becomes part of a folder name)")
        if keys is None:
            keys = {}
        if not isinstance(keys, Mapping):
            raise ParamsError(f"{source}: variants: '{name}': expected a mapping of dotted keys to values, "
                              f"got {shown(keys)}")
        norm: dict[str, Any] = {}
        for k, v in keys.items():
            key = normalise_key(k, source, f"variants: '{name}'")
            if key in axes:
                raise ParamsError(f"{source}: variants: '{name}' sets '{key}', which is also an axis; "
                                  f"set it in one place")
            norm[key] = v
        out[name] = norm
    return out


def check_out(sweep: Sweep, out: str | os.PathLike) -> None:
    """``ParamsError`` when a run folder of ``sweep`` under ``out`` would have a path longer than the
    file system allows (with room for the files a run writes inside), before any run starts."""
    runs = Path(out) / "runs"
    for r in sweep.runs:
        try:
            check_path_length(runs / f".{r.run_id}.partial", f"run {r.run_id}", reserve=RUN_FILES_RESERVE)
        except ValueError as err:
            raise ParamsError(f"{sweep.source}: --out {shown(str(out))}: {err}") from None


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read, validate and expand a sweep file (``base`` is looked up beside it)."""
    path = Path(path)
    raw = read_yaml(path)
    return sweep_from_mapping(raw if raw is not None else {}, str(path), base_dir=path.parent)
