"""One object holding a whole study: networks, cell graph, triplets, screen tables, provenance.

``load_study`` generates the embedded synthetic benchmark (or reuses it) and reads it back through
the same loaders as real data; ``load_study_from_files`` does the same for real files. Both give a
:class:`Study` whose ``synthetic`` flag and ``describe()`` table say what the numbers come from.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from torch_geometric.data import HeteroData

from dango_nb.data.graph import build_cell_graph
from dango_nb.data.kuzmin import KuzminScreen, read_kuzmin_s1
from dango_nb.data.string_db import (
    CHANNELS, StringNetworks, read_dango_release, read_string_detailed,
)
from dango_nb.data.synthetic import (
    MANIFEST_FILE, PRESETS, BenchmarkFiles, Preset, generate_benchmark, get_preset,
)
from dango_nb.data.triplets import TripletTensors, make_triplets
from dango_nb.errors import DataFormatError

_GENES = ["gene1", "gene2", "gene3"]


@dataclass
class Study:
    """A loaded study.

    ``cell_graph``: ``HeteroData`` over ``networks.genes`` followed by screened genes absent from
    STRING (sorted). ``triplets``: :class:`TripletTensors` into the cell graph's nodes; row ``k`` of
    ``trigenic`` is triplet ``k`` (rows that could not be mapped are left out of both and counted).
    ``digenic``: merged digenic controls. ``trigenic_rows``: the screen's kept trigenic rows before
    replicate merging (for replicate analyses). ``dropped``: stage -> reason -> rows left out
    (``string``, ``kuzmin``, ``triplets``). ``source``: where it came from (paths, preset, seed).
    ``ground_truth`` / ``modules``: the synthetic benchmark's planted truth (``None`` for real data).
    """

    cell_graph: HeteroData
    triplets: TripletTensors
    trigenic: pd.DataFrame
    digenic: pd.DataFrame
    networks: StringNetworks
    ground_truth: dict | None
    modules: pd.Series | None
    dropped: dict[str, dict[str, int]]
    source: dict
    synthetic: bool
    trigenic_rows: pd.DataFrame | None = None
    files: BenchmarkFiles | None = None
    _releases: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------------ views
    @property
    def genes(self) -> list[str]:
        return list(self.cell_graph["gene"].node_ids)

    @property
    def edge_types(self) -> list[tuple[str, str, str]]:
        return list(self.cell_graph.edge_types)

    @property
    def label(self) -> str:
        """A one-line description that says whether the data are synthetic."""
        if self.synthetic:
            return f"SYNTHETIC benchmark (preset {self.source.get('preset')!r}, seed {self.source.get('seed')})"
        return f"files: STRING {self.networks.version} {self.source.get('string')}; screen {self.source.get('kuzmin')}"

    def describe(self) -> pd.DataFrame:
        """A small ``item -> value`` table for notebooks: sizes, edges per channel, drops, provenance."""
        n_string = len(self.networks.genes)
        screened = pd.unique(self.trigenic[_GENES].to_numpy().ravel())
        rows: list[tuple[str, object]] = [
            ("data", self.label),
            ("synthetic", bool(self.synthetic)),
            ("STRING version", self.networks.version),
            ("genes (cell graph)", int(self.cell_graph["gene"].num_nodes)),
            ("genes in STRING", n_string),
            ("screened genes", int(len(screened))),
        ]
        for c in CHANNELS:
            if c in self.networks.channels:
                rows.append((f"edges {c} (undirected)", int(len(self.networks.channels[c]))))
            else:
                rows.append((f"edges {c} (undirected)", "missing"))
        rows += [
            ("triplets", len(self.triplets)),
            ("triplets with replicates", int((self.trigenic["n_replicates"] > 1).sum())
             if "n_replicates" in self.trigenic else "n/a"),
            ("digenic pairs", int(len(self.digenic))),
        ]
        for stage, reasons in self.dropped.items():
            total = int(sum(reasons.values()))
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) if reasons else "none"
            rows.append((f"dropped ({stage})", f"{total}" + (f" ({detail})" if reasons else "")))
        if self.ground_truth is not None:
            gt = self.ground_truth
            rows.append(("noise ceiling r (planted signal vs tau)", round(float(gt["noise_ceiling"]), 4)))
            rows.append(("replicate r", round(float(gt["replicate_r"]), 4)))
            lam = gt.get("planted_lambda", {})
            rows.append(("planted lambdas", ", ".join(f"{c}: {lam[c]:g}" for c in CHANNELS if c in lam)))
        return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": object})

    summary = describe

    def __repr__(self) -> str:
        return (f"Study({self.label}; {self.cell_graph['gene'].num_nodes} genes, "
                f"{len(self.edge_types)} channels, {len(self.triplets)} triplets)")

    # ---------------------------------------------------------------------------- extras
    def planted_lambdas(self) -> dict[str, float]:
        """The benchmark's planted lambda for each relation of the cell graph (its channel's entry of
        ``ground_truth["planted_lambda"]``), 1.0 where none is planted (always so on real data)."""
        planted = (self.ground_truth or {}).get("planted_lambda") or {}
        return {et[1]: float(planted.get(et[1].rsplit("_", 1)[-1], 1.0)) for et in self.cell_graph.edge_types}

    def read_release(self, version: str) -> StringNetworks:
        """Another STRING release of this study (e.g. ``"11.0"`` for lambda determination)."""
        version = str(version)
        if version == self.networks.version:
            return self.networks
        if version not in self._releases:
            paths = self.source.get("string_releases", {})
            if version not in paths:
                raise KeyError(f"no STRING {version} release known for this study; known: {sorted(paths)}")
            self._releases[version] = read_string_detailed(paths[version], version=version)
        return self._releases[version]

    def planted_signal(self) -> np.ndarray:
        """The planted (noise-free) signal of every triplet, aligned with ``triplets`` (synthetic only)."""
        if self.files is None or not self.synthetic:
            raise ValueError("planted signal exists only for the synthetic benchmark")
        truth = pd.read_parquet(self.files.ground_truth_triplets)
        key = self.trigenic[_GENES].merge(truth[_GENES + ["signal"]], on=_GENES, how="left")
        if key["signal"].isna().any():
            raise DataFormatError("ground truth lacks some loaded triplets", self.files.ground_truth_triplets)
        return key["signal"].to_numpy(np.float64)


# ------------------------------------------------------------------------------------- assembly

def _assemble(networks: StringNetworks, screen: KuzminScreen, *, source: dict, synthetic: bool,
              ground_truth: dict | None = None, modules: pd.Series | None = None,
              files: BenchmarkFiles | None = None) -> Study:
    string_genes = list(networks.genes)
    known = set(string_genes)
    screened = pd.unique(screen.trigenic[_GENES].to_numpy().ravel())
    extra = sorted(str(g) for g in screened if g not in known)
    node_ids = string_genes + extra
    cell_graph = build_cell_graph(networks, genes=node_ids)
    triplets, dropped_t = make_triplets(screen.trigenic, node_ids)
    trigenic = screen.trigenic
    if dropped_t:  # keep the table aligned with the tensors (make_triplets keeps table order)
        trigenic = triplets.to_frame()[_GENES].merge(trigenic, on=_GENES, how="left")
    trigenic = trigenic.reset_index(drop=True)
    dropped = {"string": dict(networks.dropped), "kuzmin": dict(screen.dropped), "triplets": dict(dropped_t)}
    source = {**source, "screened_genes_not_in_string": len(extra)}
    # Checkpoints record where their cell graph came from, so `python -m dango_nb predict` can rebuild it.
    cell_graph.dango_source = json.loads(json.dumps(source, default=str))
    return Study(cell_graph=cell_graph, triplets=triplets, trigenic=trigenic, digenic=screen.digenic,
                 networks=networks, ground_truth=ground_truth, modules=modules, dropped=dropped,
                 source=source, synthetic=synthetic,
                 trigenic_rows=screen.trigenic_rows, files=files)


def _default_data_dir() -> Path:
    from dango_nb.data.download import data_dir

    return Path(data_dir())


def benchmark_dir(preset: str | Preset = "small", seed: int = 0, data_dir: str | os.PathLike | None = None) -> Path:
    """Where ``load_study`` keeps a benchmark: ``<data_dir>/synthetic/<preset>_seed<seed>``.

    A tuned preset (one that differs from ``PRESETS[name]``) gets its own folder (name + hash).
    """
    p = get_preset(preset)
    root = Path(data_dir) if data_dir is not None else _default_data_dir()
    name = p.name
    if PRESETS.get(p.name) != p:
        digest = hashlib.sha256(json.dumps(p.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        name = f"{p.name}-{digest}"
    return root / "synthetic" / f"{name}_seed{int(seed)}"


def _read_modules(path: Path) -> pd.Series:
    df = pd.read_csv(path, sep="\t", dtype={"gene": str})
    for c in ("gene", "module"):
        if c not in df.columns:
            raise DataFormatError(f"missing column; found {list(df.columns)}", path, line=1, column=c)
    return pd.Series(df["module"].to_numpy(np.int64), index=pd.Index(df["gene"], name="gene"), name="module")


def _load_benchmark(files: BenchmarkFiles, source: dict) -> Study:
    networks = read_string_detailed(files.string_v9_1, version="9.1")
    screen = read_kuzmin_s1(files.kuzmin_s1)
    gt = files.read_ground_truth()
    src = {**source, "string": str(files.string_v9_1), "kuzmin": str(files.kuzmin_s1),
           "string_releases": {"9.1": str(files.string_v9_1), "11.0": str(files.string_v11_0)},
           "root": str(files.root)}
    return _assemble(networks, screen, source=src, synthetic=True, ground_truth=gt,
                     modules=_read_modules(files.modules), files=files)


def load_study(preset: str | Preset = "small", seed: int = 0, data_dir: str | os.PathLike | None = None) -> Study:
    """The embedded synthetic benchmark as a :class:`Study` (``synthetic=True``).

    Generates ``preset`` + ``seed`` into :func:`benchmark_dir` unless an identical one is there, then
    reads it back with ``read_string_detailed`` (release 9.1), ``read_kuzmin_s1``,
    ``build_cell_graph`` and ``make_triplets``; the ground truth and gene modules are attached.
    """
    p = get_preset(preset)
    folder = benchmark_dir(p, seed, data_dir)
    files = generate_benchmark(folder, preset=p, seed=seed)
    return _load_benchmark(files, {"kind": "synthetic", "preset": p.name, "seed": int(seed)})


def load_study_from_files(string: str | os.PathLike, kuzmin: str | os.PathLike,
                          string_version: str | None = None,
                          channels: Iterable[str] | None = None) -> Study:
    """A study from real files: ``string`` is a STRING ``protein.links.detailed`` file (``.gz`` or
    plain) or a folder in DANGO's released format; ``kuzmin`` is Data S1.

    ``string_version`` defaults to the version in the STRING file name (``"9.1"`` for a DANGO
    folder). Files written by the synthetic generator are recognised by the manifest beside them and
    stay labelled synthetic, with their ground truth attached.
    """
    string, kuzmin = Path(string), Path(kuzmin)
    if string.is_dir():
        networks = read_dango_release(string, version=string_version or "9.1", channels=channels)
    elif string.is_file():
        networks = read_string_detailed(string, version=string_version, channels=channels)
    else:
        raise FileNotFoundError(f"{string}: no such STRING file or DANGO release folder")
    if not kuzmin.is_file():
        raise FileNotFoundError(f"{kuzmin}: no such Data S1 file")
    screen = read_kuzmin_s1(kuzmin)
    source = {"kind": "files", "string": str(string), "kuzmin": str(kuzmin),
              "string_releases": {networks.version: str(string)}}
    manifest = kuzmin.parent / MANIFEST_FILE
    if manifest.is_file():
        try:
            man = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            man = {}
        if man.get("synthetic"):
            files = BenchmarkFiles.at(kuzmin.parent)
            source.update(kind="synthetic", preset=man.get("preset", {}).get("name"), seed=man.get("seed"))
            if files.string_v11_0.is_file():
                source["string_releases"]["11.0"] = str(files.string_v11_0)
            return _assemble(networks, screen, source=source, synthetic=True,
                             ground_truth=files.read_ground_truth(), modules=_read_modules(files.modules),
                             files=files)
    return _assemble(networks, screen, source=source, synthetic=False)

