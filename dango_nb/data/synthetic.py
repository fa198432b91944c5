"""The embedded benchmark: a seeded synthetic study written in the real raw formats.

``generate_benchmark(out_dir, preset, seed)`` writes two STRING ``protein.links.detailed`` releases
(v9.1 and v11.0), a Kuzmin-2018-style Data S1 table and the ground truth beside them. The rest of
the package reads these files back through the same loaders it uses for real data, so the whole
pipeline runs offline. Everything here is synthetic and is labelled so (``synthetic: true``).

What is planted
- Genes with systematic ORF-like names, grouped into functional modules (and modules into
  processes); each gene has a latent unit vector ``u``; similarity ``S_ij = u_i . u_j`` is ~0.6
  inside a module, ~0.3 inside a process, ~0 otherwise.
- Six channels: edge probability ``sigmoid(beta + signal * S_ij + theta_i + theta_j)`` over the
  genes a channel covers, so coexpression/experimental/database carry the module structure and
  neighborhood/fusion/cooccurence are mostly noise; ``theta`` gives STRING-like degree skew, scores
  are skewed to low values (database uses STRING's discrete levels).
- Release 11.0 adds new edges per channel among genes present in both releases so that the
  "percentage of decreased zeros" is planted; the generator's own count of them (not a recomputation
  from the files) is stored with the lambda it implies.
- A screen of query gene pairs x array strains (dma/tsa). Planted signal
  ``s = c0 + a_i + a_j + a_k + h(u_i, u_j, u_k)``: per-gene main effects plus a convex higher-order
  term of the three genes' latent similarities (a long negative tail) that an additive per-gene
  model cannot represent but a model that sees the informative channels can learn. Measured
  ``tau = s + e`` with ``var(e) = var(s) (1 - r) / r`` so two measurements of one triplet correlate
  at ``r = 0.59`` (the real screen's replicate correlation).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from dango_nb.data.kuzmin import HO_LOCUS, KUZMIN_COLUMNS, write_kuzmin_s1
from dango_nb.data.string_db import CHANNELS, StringNetworks, write_string_detailed
from dango_nb.fileio import atomic_write_json, atomic_write_table

log = logging.getLogger(__name__)

#: Bumped whenever the generator's output for a given preset + seed changes (invalidates caches).
GENERATOR_VERSION = 1

#: DANGO's lambda rule: 0.1 where the percentage of decreased zeros exceeds 1 %, else 1.0.
LAMBDA_THRESHOLD_PCT = 1.0


def planted_lambda(pct: float | None) -> float:
    """The lambda DANGO's rule gives a planted percentage (1.0 where it is undefined)."""
    return 0.1 if pct is not None and pct > LAMBDA_THRESHOLD_PCT else 1.0

STRING_V9_1_FILE = "4932.protein.links.detailed.v9.1.txt.gz"
STRING_V11_0_FILE = "4932.protein.links.detailed.v11.0.txt.gz"
KUZMIN_S1_FILE = "aao1729_data_s1.tsv"
GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_TRIPLETS = "ground_truth_triplets.parquet"
MODULES_FILE = "gene_modules.tsv"
MANIFEST_FILE = "manifest.json"

# Genes per chromosome arm in S. cerevisiae (systematic names Y<chr><arm><nnn><strand>); the
# generator numbers loci up to ~1.4x these counts so names look real without being real.
_ARM_GENES = {
    "AL": 73, "AR": 34, "BL": 125, "BR": 322, "CL": 71, "CR": 109, "DL": 253, "DR": 568,
    "EL": 81, "ER": 214, "FL": 72, "FR": 60, "GL": 265, "GR": 311, "HL": 55, "HR": 239,
    "IL": 173, "IR": 43, "JL": 227, "JR": 167, "KL": 236, "KR": 107, "LL": 68, "LR": 493,
    "ML": 145, "MR": 344, "NL": 349, "NR": 80, "OL": 172, "OR": 407, "PL": 290, "PR": 217,
}
# STRING's curated-database scores come in a few discrete levels.
_DATABASE_LEVELS = (185, 192, 360, 520, 720, 800, 856, 900, 949)


# ------------------------------------------------------------------------------------------ presets

@dataclass(frozen=True)
class ChannelSpec:
    """How one STRING channel is generated.

    ``edges``: target undirected edges in release 9.1; ``coverage``: fraction of genes the channel
    can touch; ``signal``: logit slope of edge probability on latent similarity (0 = pure noise);
    ``degree_spread``: sd of per-gene log-propensity (degree skew); ``score_median``,
    ``score_spread``, ``score_signal``: weight = sigmoid(logit(median) + spread * z + signal * S);
    ``new_pct``: planted percentage of decreased zeros from release 9.1 to 11.0.
    """

    name: str
    edges: int
    coverage: float
    signal: float
    degree_spread: float
    score_median: float
    score_spread: float
    score_signal: float
    new_pct: float


@dataclass(frozen=True)
class SignalSpec:
    """The planted trigenic signal ``s = baseline + a_i + a_j + a_k + h`` and digenic epsilon.

    ``h = -scale * softplus(kappa * (x - theta)) / kappa`` with
    ``x = mean(S_ij, S_ik, S_jk) + gamma * S_ij * S_ik * S_jk``; ``a_g = additive_sd *
    (1 - Gamma(additive_shape) / additive_shape)`` (mean 0, negative skew).
    """

    baseline: float = -0.012
    additive_sd: float = 0.018
    additive_shape: float = 1.5
    scale: float = 0.30
    kappa: float = 10.0
    theta: float = 0.2
    gamma: float = 1.0
    digenic_baseline: float = -0.01
    digenic_additive: float = 0.6
    digenic_scale: float = 0.15
    digenic_theta: float = 0.35


@dataclass(frozen=True)
class Preset:
    """Sizes and knobs of one synthetic study. Tune with ``with_preset("small", n_query_pairs=32)``
    (``dataclasses.replace``); values are checked on construction.

    Screen: ``n_query_pairs`` double-mutant query strains (a fraction ``related_pair_fraction``
    of them two genes of one module, ``swapped_query_fraction`` of them constructed a second time
    in swapped order, meeting ``swapped_array_scale`` times fewer arrays) each meet a random
    ``array_fraction`` of the array strains;
    ``n_array_genes`` array genes, each a tsa (fraction ``tsa_fraction``) or dma strain, some
    (``both_alleles_fraction``) with both, the second one met ``second_allele_scale`` times as often.
    Replicates (one triplet measured twice) come from these two designs; spreading them thinly over
    many array genes and query pairs keeps the replicated triplets representative, so their
    correlation estimates the population's ``replicate_r``. Every query gene has an HO-control strain
    (``X+YDL227C``) meeting ``digenic_fraction`` of the arrays. ``n_new_genes`` genes exist only
    in release 11.0, ``n_unlisted_screened`` of them are array genes (screened genes absent from
    the v9.1 network). ``nan_rows`` trigenic rows carry no adjusted score.
    """

    name: str
    n_genes: int
    module_size: int
    modules_per_process: int
    channels: tuple[ChannelSpec, ...]
    n_query_pairs: int
    n_array_genes: int
    array_fraction: float
    digenic_fraction: float
    n_new_genes: int
    n_unlisted_screened: int
    nan_rows: int
    latent_dim: int = 32
    module_rho: float = 0.6
    process_rho: float = 0.5
    tsa_fraction: float = 0.45
    both_alleles_fraction: float = 0.3
    second_allele_scale: float = 0.35
    swapped_query_fraction: float = 0.3
    swapped_array_scale: float = 0.15
    related_pair_fraction: float = 0.5
    query_from_array_fraction: float = 0.4
    replicate_r: float = 0.59
    v11_removed_fraction: float = 0.004
    v11_rescored_fraction: float = 0.25
    signal: SignalSpec = field(default_factory=SignalSpec)

    def __post_init__(self):
        def bad(key, value, expected):
            raise ValueError(f"preset {self.name!r}: {key}={value!r}; expected {expected}")

        if tuple(c.name for c in self.channels) != CHANNELS:
            bad("channels", tuple(c.name for c in self.channels), f"one ChannelSpec per channel in order {CHANNELS}")
        for c in self.channels:
            if c.edges < 0:
                bad(f"channels[{c.name}].edges", c.edges, ">= 0")
            if not 0.0 < c.coverage <= 1.0:
                bad(f"channels[{c.name}].coverage", c.coverage, "a fraction in (0, 1]")
            if not 0.0 < c.score_median < 1.0:
                bad(f"channels[{c.name}].score_median", c.score_median, "a weight in (0, 1)")
            if not 0.0 <= c.new_pct < 100.0:
                bad(f"channels[{c.name}].new_pct", c.new_pct, "a percentage in [0, 100)")
        if self.n_genes < 10:
            bad("n_genes", self.n_genes, ">= 10")
        if not 2 <= self.n_array_genes <= self.n_genes:
            bad("n_array_genes", self.n_array_genes, f"between 2 and n_genes ({self.n_genes})")
        if self.n_query_pairs < 1:
            bad("n_query_pairs", self.n_query_pairs, ">= 1")
        if not 0 <= self.n_unlisted_screened <= min(self.n_new_genes, self.n_array_genes):
            bad("n_unlisted_screened", self.n_unlisted_screened, "between 0 and min(n_new_genes, n_array_genes)")
        for key in ("array_fraction", "digenic_fraction", "tsa_fraction", "both_alleles_fraction",
                    "second_allele_scale", "swapped_query_fraction", "swapped_array_scale", "related_pair_fraction",
                    "query_from_array_fraction", "v11_removed_fraction", "v11_rescored_fraction",
                    "module_rho", "process_rho"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                bad(key, getattr(self, key), "a fraction in [0, 1]")
        if not 0.0 < self.replicate_r < 1.0:
            bad("replicate_r", self.replicate_r, "a correlation in (0, 1)")
        if self.nan_rows < 0 or self.n_new_genes < 0 or self.module_size < 2 or self.modules_per_process < 1:
            bad("nan_rows/n_new_genes/module_size/modules_per_process",
                (self.nan_rows, self.n_new_genes, self.module_size, self.modules_per_process),
                "nan_rows >= 0, n_new_genes >= 0, module_size >= 2, modules_per_process >= 1")

    def channel(self, name: str) -> ChannelSpec:
        for c in self.channels:
            if c.name == name:
                return c
        raise KeyError(f"preset {self.name!r} has no channel {name!r}; channels: {list(CHANNELS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Shape parameters shared by every preset; only sizes and coverage change with the preset.
_CHANNEL_SHAPE = {
    #               signal degree score_median spread score_signal new_pct
    "neighborhood": (0.6, 0.8, 0.18, 0.7, 0.5, 0.30),
    "fusion":       (0.3, 0.6, 0.012, 1.8, 0.5, 0.10),
    "cooccurence":  (0.5, 0.6, 0.12, 1.0, 0.5, 0.02),
    "coexpression": (6.0, 0.8, 0.09, 0.9, 2.0, 2.2),
    "experimental": (5.0, 1.0, 0.12, 1.1, 1.5, 1.6),
    "database":     (9.0, 0.7, 0.75, 1.2, 1.5, 0.5),
}


def _channels(edges: Mapping[str, int], coverage: Mapping[str, float]) -> tuple[ChannelSpec, ...]:
    out = []
    for c in CHANNELS:
        sig, deg, med, spread, ssig, pct = _CHANNEL_SHAPE[c]
        out.append(ChannelSpec(c, int(edges[c]), float(coverage[c]), sig, deg, med, spread, ssig, pct))
    return tuple(out)


# Gene coverage of each channel in the real STRING v9.1 (genes with an edge / 6,400); the small
# presets cover more so that sparse channels are not empty.
_COVERAGE_REAL = {"neighborhood": 0.34, "fusion": 0.19, "cooccurence": 0.20, "coexpression": 0.92,
                  "experimental": 0.86, "database": 0.42}
_COVERAGE_SMALL = {"neighborhood": 0.45, "fusion": 0.3, "cooccurence": 0.3, "coexpression": 0.92,
                   "experimental": 0.86, "database": 0.5}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", n_genes=120, module_size=12, modules_per_process=3,
        channels=_channels({"neighborhood": 250, "fusion": 30, "cooccurence": 50, "coexpression": 1200,
                            "experimental": 900, "database": 220}, _COVERAGE_SMALL),
        n_query_pairs=60, n_array_genes=80, array_fraction=0.5, digenic_fraction=0.15,
        n_new_genes=4, n_unlisted_screened=2, nan_rows=3,
    ),
    "small": Preset(
        name="small", n_genes=1200, module_size=30, modules_per_process=5,
        channels=_channels({"neighborhood": 4000, "fusion": 150, "cooccurence": 300, "coexpression": 24000,
                            "experimental": 17000, "database": 3000}, _COVERAGE_SMALL),
        n_query_pairs=64, n_array_genes=720, array_fraction=0.42, digenic_fraction=0.1,
        n_new_genes=12, n_unlisted_screened=3, nan_rows=12,
    ),
    "kuzmin": Preset(
        name="kuzmin", n_genes=6400, module_size=40, modules_per_process=5,
        channels=_channels({"neighborhood": 45610, "fusion": 1361, "cooccurence": 2664, "coexpression": 314000,
                            "experimental": 220000, "database": 33486}, _COVERAGE_REAL),
        n_query_pairs=150, n_array_genes=1200, array_fraction=0.47, digenic_fraction=0.1,
        n_new_genes=60, n_unlisted_screened=0, nan_rows=40,
    ),
}


def with_preset(name: str, **changes) -> Preset:
    """A tuned copy of a preset, e.g. ``with_preset("small", n_query_pairs=32)``."""
    return dataclasses.replace(get_preset(name), **changes)


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {preset!r}; known: {sorted(PRESETS)}") from None


# ------------------------------------------------------------------------------------ small helpers

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    a, b = np.minimum(i, j), np.maximum(i, j)
    return a.astype(np.int64) * n + b.astype(np.int64)


def _unique_in_order(keys: np.ndarray) -> np.ndarray:
    """Indices of first occurrences of each key, in original order (keeps sampling random)."""
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def _gene_names(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct yeast-like systematic ORF names (never the HO locus the screen uses)."""
    loci = []
    for arm, count in _ARM_GENES.items():
        top = int(round(count * 1.4))
        loci.extend(f"Y{arm}{k:03d}" for k in range(1, top + 1))
    loci = np.array([x for x in loci if x != HO_LOCUS[:-1]], dtype=object)
    if n > len(loci):
        raise ValueError(f"cannot name {n} genes; at most {len(loci)} ORF-like names exist")
    pick = loci[np.sort(rng.choice(len(loci), size=n, replace=False))]
    strand = np.where(rng.random(n) < 0.5, "W", "C")
    return np.array([p + s for p, s in zip(pick, strand)], dtype=object)


def _standard_names(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct lower-case gene names like ``vps12`` for allele names."""
    cons, vow = np.array(list("bcdfghklmnprstvwyz")), np.array(list("aeiou"))
    n_fam = max(4, n // 4)
    fams: list[str] = []
    seen = set()
    while len(fams) < n_fam:
        k = 4 * n_fam
        words = np.char.add(np.char.add(rng.choice(cons, k), rng.choice(vow, k)), rng.choice(cons, k))
        for w in words:
            if w not in seen:
                seen.add(w)
                fams.append(str(w))
                if len(fams) == n_fam:
                    break
    fam = rng.integers(0, n_fam, size=n)
    num = np.zeros(n, dtype=np.int64)
    counts = np.zeros(n_fam, dtype=np.int64)
    for g in range(n):  # numbering inside a family: 1, 2, ... (cheap: n <= ~7k)
        counts[fam[g]] += 1
        num[g] = counts[fam[g]]
    return np.array([f"{fams[f]}{k}" for f, k in zip(fam, num)], dtype=object)


# ------------------------------------------------------------------------------------ latent space

@dataclass
class _Latent:
    names: np.ndarray      # (n_total,) ORF names; first n_genes are in release 9.1
    std_names: np.ndarray  # (n_total,) allele stems
    module: np.ndarray     # (n_total,) int
    process: np.ndarray    # (n_total,) int
    u: np.ndarray          # (n_total, d) float32 unit vectors


def _latent(rng: np.random.Generator, p: Preset) -> _Latent:
    n = p.n_genes + p.n_new_genes
    names = _gene_names(rng, n)
    # release-9.1 genes first (sorted), then the genes that appear only in release 11.0
    names = np.concatenate([np.sort(names[: p.n_genes]), names[p.n_genes:]])
    std = _standard_names(rng, n)
    n_mod = max(2, int(round(n / p.module_size)))
    n_proc = max(1, int(round(n_mod / p.modules_per_process)))
    sizes = rng.dirichlet(np.full(n_mod, 4.0))
    module = rng.choice(n_mod, size=n, p=sizes)
    process = rng.permutation(np.arange(n_mod) % n_proc)
    d = p.latent_dim

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    pc = unit(rng.standard_normal((n_proc, d)))
    mc = unit(math.sqrt(p.process_rho) * pc[process] + math.sqrt(1 - p.process_rho)
              * unit(rng.standard_normal((n_mod, d))))
    u = unit(math.sqrt(p.module_rho) * mc[module] + math.sqrt(1 - p.module_rho)
             * unit(rng.standard_normal((n, d))))
    return _Latent(names, std, module, process[module], u.astype(np.float32))


# ----------------------------------------------------------------------------------------- channels

def _edge_logit_offset(rng, u, theta, spec: ChannelSpec, n_pairs_target: float, m: int) -> float:
    """Intercept ``beta`` so the expected edge count matches ``spec.edges`` (pair sample, bisection)."""
    k = 200_000
    if m * (m - 1) // 2 <= k:  # few pairs: use them all (exact expectation)
        a, b = np.triu_indices(m, 1)
    else:
        a = rng.integers(0, m, size=k)
        b = rng.integers(0, m - 1, size=k)
        b = b + (b >= a)
    s = np.einsum("ij,ij->i", u[a], u[b])
    base = spec.signal * s + theta[a] + theta[b]
    target = min(spec.edges / n_pairs_target, 0.95)
    lo, hi = -40.0, 20.0
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        if _sigmoid(mid + base).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sample_edges(rng, u_p: np.ndarray, theta_p: np.ndarray, beta: float, signal: float):
    """Bernoulli edges over all pairs ``i < j`` of the covered genes, in row chunks (no m x m array)."""
    m = len(u_p)
    chunk = max(1, (1 << 22) // max(m, 1))
    cols = np.arange(m)
    out_i, out_j = [], []
    for r0 in range(0, m, chunk):
        r1 = min(m, r0 + chunk)
        s = u_p[r0:r1] @ u_p.T
        logit = (beta + signal * s) + (theta_p[r0:r1, None] + theta_p[None, :])
        p = 1.0 / (1.0 + np.exp(-logit))
        hit = rng.random(p.shape, dtype=np.float32) < p
        hit &= cols[None, :] > np.arange(r0, r1)[:, None]
        ii, jj = np.nonzero(hit)
        out_i.append(ii + r0)
        out_j.append(jj)
    return np.concatenate(out_i), np.concatenate(out_j)


def _scores(rng, spec: ChannelSpec, s: np.ndarray) -> np.ndarray:
    """Integer STRING scores 1..1000: skewed to low values, higher for similar genes."""
    z = rng.standard_normal(len(s))
    w = _sigmoid(_logit(spec.score_median) + spec.score_spread * z + spec.score_signal * (s - 0.1))
    score = np.clip(np.rint(w * 1000.0), 1, 1000).astype(np.int64)
    if spec.name == "database":
        levels = np.array(_DATABASE_LEVELS)
        score = levels[np.abs(score[:, None] - levels[None, :]).argmin(axis=1)]
    return score


@dataclass
class _Channel:
    i: np.ndarray      # global gene index, i < j
    j: np.ndarray
    score: np.ndarray  # int64 1..1000


def _release_9_1(rng, p: Preset, lat: _Latent) -> tuple[dict[str, _Channel], dict[str, np.ndarray]]:
    n = p.n_genes
    u = lat.u[:n]
    out, thetas = {}, {}
    for spec in p.channels:
        theta = (spec.degree_spread * rng.standard_normal(n)).astype(np.float32)
        covered = np.flatnonzero(rng.random(n) < spec.coverage)
        m = len(covered)
        if m < 2 or spec.edges == 0:
            out[spec.name] = _Channel(*(np.zeros(0, np.int64),) * 3)
            thetas[spec.name] = theta
            continue
        beta = _edge_logit_offset(rng, u[covered], theta[covered], spec, m * (m - 1) / 2, m)
        a, b = _sample_edges(rng, u[covered], theta[covered], beta, spec.signal)
        gi, gj = covered[a], covered[b]
        s = np.einsum("ij,ij->i", u[gi], u[gj])
        out[spec.name] = _Channel(gi.astype(np.int64), gj.astype(np.int64), _scores(rng, spec, s))
        thetas[spec.name] = theta
    # Every release-9.1 gene gets at least one edge, so the release's vocabulary is all n genes.
    deg = np.zeros(n, np.int64)
    for ch in out.values():
        np.add.at(deg, ch.i, 1)
        np.add.at(deg, ch.j, 1)
    lonely = np.flatnonzero(deg == 0)
    if len(lonely):
        co = out["coexpression"]
        partner = np.empty(len(lonely), np.int64)
        for k, g in enumerate(lonely):
            same = np.flatnonzero(lat.module[:n] == lat.module[g])
            same = same[same != g]
            pool = same if len(same) else np.delete(np.arange(n), g)
            partner[k] = rng.choice(pool)
        keys = _pair_keys(lonely, partner, n)
        keep = _unique_in_order(keys)
        keep = keep[~np.isin(keys[keep], _pair_keys(co.i, co.j, n))]
        a, b = np.minimum(lonely, partner)[keep], np.maximum(lonely, partner)[keep]
        s = np.einsum("ij,ij->i", u[a], u[b])
        sc = _scores(rng, p.channel("coexpression"), s)
        out["coexpression"] = _Channel(np.concatenate([co.i, a]), np.concatenate([co.j, b]),
                                       np.concatenate([co.score, sc]))
    return out, thetas


def _release_11_0(rng, p: Preset, lat: _Latent, rel9: dict[str, _Channel],
                  thetas: dict[str, np.ndarray]) -> tuple[dict[str, _Channel], dict[str, dict]]:
    """Later release: a few edges removed, some re-scored, planted new edges, edges of new genes.

    Also returns, per channel, what was planted: over the ``genes_in_both`` genes with an edge in
    release 9.1 (removals never strip a gene of its last edge, so they keep one in 11.0) and their
    ``n_pairs`` pairs, ``new_edges`` of the ``non_edges_earlier`` became edges, i.e.
    ``pct_decreased_zeros = 100 * new_edges / non_edges_earlier`` (``None`` without non-edges).
    """
    n9, n_all = p.n_genes, p.n_genes + p.n_new_genes
    out, planted = {}, {}
    for spec in p.channels:
        ch = rel9[spec.name]
        e = len(ch.i)
        present = np.unique(np.concatenate([ch.i, ch.j]))
        # removals never strip a gene of its last edge, so "present in both releases" = present in 9.1
        removed = rng.random(e) < p.v11_removed_fraction
        deg = np.zeros(n9, np.int64)
        np.add.at(deg, ch.i[~removed], 1)
        np.add.at(deg, ch.j[~removed], 1)
        removed &= (deg[ch.i] > 0) & (deg[ch.j] > 0)
        i, j, score = ch.i[~removed], ch.j[~removed], ch.score[~removed].copy()
        res = rng.random(len(score)) < p.v11_rescored_fraction
        jitter = np.rint(rng.standard_normal(int(res.sum())) * (0.1 * score[res] + 5)).astype(np.int64)
        score[res] = np.clip(score[res] + jitter, 1, 1000)
        if spec.name == "database":
            levels = np.array(_DATABASE_LEVELS)
            score = levels[np.abs(score[:, None] - levels[None, :]).argmin(axis=1)]
        # planted new edges among the genes present in both releases
        m = len(present)
        non_edges = m * (m - 1) // 2 - e
        k_new = int(round(spec.new_pct / 100.0 * non_edges))
        new_i, new_j = _new_pairs(rng, present, np.exp(thetas[spec.name][present]), k_new,
                                  _pair_keys(ch.i, ch.j, n_all), n_all)
        planted[spec.name] = {"genes_in_both": int(m), "n_pairs": int(m * (m - 1) // 2),
                              "non_edges_earlier": int(non_edges), "new_edges": int(len(new_i)),
                              "pct_decreased_zeros": 100.0 * len(new_i) / non_edges if non_edges > 0 else None}
        # edges of genes that exist only in the later release (excluded from the percentage)
        ext_i, ext_j = [], []
        if p.n_new_genes and m:
            mean_deg = 2.0 * e / max(m, 1)
            for g in range(n9, n_all):
                if spec.name != "coexpression" and rng.random() >= spec.coverage:
                    continue
                k = min(m, 1 + rng.poisson(min(mean_deg, 50.0)))
                ext_j.append(rng.choice(present, size=k, replace=False))
                ext_i.append(np.full(k, g))
        ext_i = np.concatenate(ext_i) if ext_i else np.zeros(0, np.int64)
        ext_j = np.concatenate(ext_j) if ext_j else np.zeros(0, np.int64)
        ai = np.concatenate([new_i, np.minimum(ext_i, ext_j)])
        aj = np.concatenate([new_j, np.maximum(ext_i, ext_j)])
        s = np.einsum("ij,ij->i", lat.u[ai], lat.u[aj])
        out[spec.name] = _Channel(np.concatenate([i, ai]).astype(np.int64),
                                  np.concatenate([j, aj]).astype(np.int64),
                                  np.concatenate([score, _scores(rng, spec, s)]))
    return out, planted


def _new_pairs(rng, genes: np.ndarray, weight: np.ndarray, k: int, existing_keys: np.ndarray, n: int):
    """``k`` distinct unordered pairs of ``genes`` not in ``existing_keys``, endpoints ~ ``weight``."""
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    existing = np.sort(existing_keys)
    prob = weight / weight.sum()
    keys = np.zeros(0, np.int64)
    while len(keys) < k:
        draw = int(1.3 * (k - len(keys))) + 64
        a = genes[rng.choice(len(genes), size=draw, p=prob)]
        b = genes[rng.choice(len(genes), size=draw, p=prob)]
        ok = a != b
        cand = _pair_keys(a[ok], b[ok], n)
        pos = np.searchsorted(existing, cand)
        pos[pos == len(existing)] = 0
        cand = cand[existing[pos] != cand] if len(existing) else cand
        keys = np.concatenate([keys, cand])
        keys = keys[_unique_in_order(keys)]
    keys = keys[:k]
    return keys // n, keys % n


def _networks(version: str, lat: _Latent, channels: dict[str, _Channel]) -> StringNetworks:
    """Release tables over the sorted vocabulary of genes that have an edge in it."""
    used = np.unique(np.concatenate([np.concatenate([c.i, c.j]) for c in channels.values()]))
    names = lat.names[used]
    order = np.argsort(names, kind="stable")
    pos = np.empty(len(lat.names), np.int64)
    pos[used[order]] = np.arange(len(used))
    frames = {}
    for c in CHANNELS:
        ch = channels[c]
        a, b = pos[ch.i], pos[ch.j]
        i, j = np.minimum(a, b), np.maximum(a, b)
        srt = np.lexsort((j, i))
        frames[c] = pd.DataFrame({"i": i[srt].astype(np.int64), "j": j[srt].astype(np.int64),
                                  "weight": (ch.score[srt] / 1000.0).astype(np.float32)})
    return StringNetworks(version=version, genes=[str(g) for g in names[order]], channels=frames,
                          source="synthetic")


# ------------------------------------------------------------------------------------------- screen

def _trigenic_signal(sp: SignalSpec, a: np.ndarray, u: np.ndarray, i, j, k) -> np.ndarray:
    sij = np.einsum("nd,nd->n", u[i], u[j], dtype=np.float64)
    sik = np.einsum("nd,nd->n", u[i], u[k], dtype=np.float64)
    sjk = np.einsum("nd,nd->n", u[j], u[k], dtype=np.float64)
    x = (sij + sik + sjk) / 3.0 + sp.gamma * sij * sik * sjk
    h = -sp.scale * _softplus(sp.kappa * (x - sp.theta)) / sp.kappa
    return sp.baseline + a[i] + a[j] + a[k] + h


def _digenic_signal(sp: SignalSpec, a: np.ndarray, u: np.ndarray, x, y) -> np.ndarray:
    s = np.einsum("nd,nd->n", u[x], u[y], dtype=np.float64)
    h = -sp.digenic_scale * _softplus(sp.kappa * (s - sp.digenic_theta)) / sp.kappa
    return sp.digenic_baseline + sp.digenic_additive * (a[x] + a[y]) + h


def _noise_sd(signal: np.ndarray, r: float) -> float:
    """Noise sd so that two measurements ``s + e1``, ``s + e2`` correlate at ``r``."""
    return float(math.sqrt(np.var(signal) * (1.0 - r) / r))


def _pvalues(rng, score: np.ndarray, sd: float) -> np.ndarray:
    from scipy.special import erfc

    se = sd * np.exp(0.3 * rng.standard_normal(len(score)))
    p = erfc(np.abs(score) / se / math.sqrt(2.0))
    p = np.clip(p, 1e-16, 1.0)  # erfc underflows for large scores; plots.P_FLOOR draws this floor as a cap
    return np.array([float(f"{x:.4g}") for x in p])  # 4 significant digits, short repr in the file


@dataclass
class _Screen:
    rows: pd.DataFrame           # Data S1 rows (KUZMIN_COLUMNS)
    truth: pd.DataFrame          # gene1, gene2, gene3, signal, tau (merged like the loader)
    info: dict


def _screen(rng, p: Preset, lat: _Latent) -> _Screen:
    sp = p.signal
    n9, n_all = p.n_genes, p.n_genes + p.n_new_genes
    names, std = lat.names, lat.std_names
    a = sp.additive_sd * (1.0 - rng.gamma(sp.additive_shape, 1.0 / sp.additive_shape, size=n_all))

    # array strains
    n_unl = min(p.n_unlisted_screened, p.n_new_genes)
    arr_genes = np.concatenate([rng.choice(n9, size=p.n_array_genes - n_unl, replace=False),
                                np.arange(n9, n9 + n_unl)])
    is_tsa = rng.random(len(arr_genes)) < p.tsa_fraction
    both = rng.random(len(arr_genes)) < p.both_alleles_fraction
    s_gene = np.concatenate([arr_genes, arr_genes[both]])
    s_tsa = np.concatenate([is_tsa, ~is_tsa[both]])
    s_scale = np.concatenate([np.ones(len(arr_genes)), np.full(int(both.sum()), p.second_allele_scale)])
    order = np.argsort(names[s_gene].astype(str), kind="stable")
    s_gene, s_tsa, s_scale = s_gene[order], s_tsa[order], s_scale[order]
    n_str = len(s_gene)
    n_tsa, n_dma = int(s_tsa.sum()), int((~s_tsa).sum())
    num = np.empty(n_str, np.int64)
    num[s_tsa] = rng.choice(np.arange(1, max(1500, 2 * n_tsa) + 1), size=n_tsa, replace=False)
    num[~s_tsa] = rng.choice(np.arange(1, max(6000, 2 * n_dma) + 1), size=n_dma, replace=False)
    s_id = np.array([f"{names[g]}_{'tsa' if t else 'dma'}{k}" for g, t, k in zip(s_gene, s_tsa, num)],
                    dtype=object)
    ts_num = rng.integers(1, 200, size=n_str)
    s_allele = np.array([f"{std[g]}-{k}" if t else f"{std[g]}\u0394"
                         for g, t, k in zip(s_gene, s_tsa, ts_num)], dtype=object)
    s_fit = np.where(s_tsa, np.clip(rng.normal(0.82, 0.12, n_str), 0.3, 1.1),
                     np.clip(1.0 - np.abs(rng.normal(0.0, 0.07, n_str)) + rng.normal(0.0, 0.02, n_str),
                             0.35, 1.15))
    del_fit = np.clip(1.0 - np.abs(rng.normal(0.0, 0.07, n_all)) + rng.normal(0.0, 0.02, n_all), 0.35, 1.15)

    # query pairs: half of them two genes of one module (like paralog / complex pairs)
    arr_pool = arr_genes[arr_genes < n9]
    non_arr = np.setdiff1d(np.arange(n9), arr_pool)
    pairs = np.zeros((0, 2), np.int64)
    while len(pairs) < p.n_query_pairs:
        k = 2 * (p.n_query_pairs - len(pairs)) + 8
        from_arr = rng.random(k) < p.query_from_array_fraction
        first = np.where(from_arr, rng.choice(arr_pool, k), rng.choice(non_arr if len(non_arr) else arr_pool, k))
        second = rng.integers(0, n9, size=k)
        related = rng.random(k) < p.related_pair_fraction
        for t in np.flatnonzero(related):
            same = np.flatnonzero(lat.module[:n9] == lat.module[first[t]])
            same = same[same != first[t]]
            if len(same):
                second[t] = rng.choice(same)
        ok = first != second
        cand = np.stack([first[ok], second[ok]], axis=1)
        allp = np.concatenate([pairs, cand])
        keep = _unique_in_order(_pair_keys(allp[:, 0], allp[:, 1], n_all))
        pairs = allp[keep][: p.n_query_pairs]
    n_swap = int(round(p.swapped_query_fraction * len(pairs)))
    if p.swapped_query_fraction > 0:
        n_swap = max(1, n_swap)
    swap = rng.choice(len(pairs), size=n_swap, replace=False)
    q_a = np.concatenate([pairs[:, 0], pairs[swap, 1]])
    q_b = np.concatenate([pairs[:, 1], pairs[swap, 0]])
    q_genes = np.unique(pairs)
    n_q = len(q_a)
    n_ctrl = len(q_genes)
    tm = rng.choice(np.arange(1001, 10000), size=n_q + n_ctrl, replace=False)

    # trigenic rows: each query strain meets a random subset of array strains
    frac = np.where(np.arange(n_q) < len(pairs), p.array_fraction, p.array_fraction * p.swapped_array_scale)
    meet = rng.random((n_q, n_str)) < frac[:, None] * s_scale[None, :]
    meet &= (s_gene[None, :] != q_a[:, None]) & (s_gene[None, :] != q_b[:, None])
    qi, si = np.nonzero(meet)
    gi, gj, gk = q_a[qi], q_b[qi], s_gene[si]
    signal = _trigenic_signal(sp, a, lat.u, gi, gj, gk)
    sd = _noise_sd(signal, p.replicate_r)
    tau = np.round(signal + sd * rng.standard_normal(len(signal)), 4)

    # digenic control rows: query gene X with the HO locus (YDL227C), against some arrays
    meet_d = rng.random((n_ctrl, n_str)) < p.digenic_fraction
    meet_d &= s_gene[None, :] != q_genes[:, None]
    ci, cs = np.nonzero(meet_d)
    dx, dk = q_genes[ci], s_gene[cs]

    # measured digenic epsilons for every pair the fitness arithmetic needs (one value per pair)
    px = np.concatenate([gi, gj, dx, pairs[:, 0]])
    py = np.concatenate([gk, gk, dk, pairs[:, 1]])
    keys = _pair_keys(px, py, n_all)
    ukeys, inv = np.unique(keys, return_inverse=True)
    dsig = _digenic_signal(sp, a, lat.u, ukeys // n_all, ukeys % n_all)
    dsd = _noise_sd(dsig, p.replicate_r)
    eps_u = dsig + dsd * rng.standard_normal(len(ukeys))
    n_t, n_d = len(gi), len(dx)
    eps_ik, eps_jk = eps_u[inv[:n_t]], eps_u[inv[n_t:2 * n_t]]
    eps_d = np.round(eps_u[inv[2 * n_t:2 * n_t + n_d]], 4)
    eps_q = eps_u[inv[2 * n_t + n_d:]]  # per pair, then per query strain
    pair_of = np.concatenate([np.arange(len(pairs)), swap])
    eps_ij = eps_q[pair_of][qi]

    fi, fj, fk = del_fit[gi], del_fit[gj], s_fit[si]
    f_ij = np.clip(fi * fj + eps_ij, 0.05, None)
    f_ijk = np.clip(fi * fj * fk + eps_ij * fk + eps_ik * fj + eps_jk * fi + tau, 0.0, None)
    raw_t = f_ijk - f_ij * fk
    sd_t = np.abs(sd * (0.4 + 0.3 * np.exp(0.3 * rng.standard_normal(n_t))))
    p_t = _pvalues(rng, tau, sd)
    nan_idx = rng.choice(n_t, size=min(p.nan_rows, n_t), replace=False)
    tau_file = tau.astype(np.float64).copy()
    p_file = p_t.copy()
    tau_file[nan_idx] = np.nan
    p_file[nan_idx] = np.nan

    fx = del_fit[dx]
    fk_d = s_fit[cs]
    f_xk = np.clip(fx * fk_d + eps_d, 0.0, None)
    raw_d = np.round(f_xk - fx * fk_d, 4)
    sd_d = np.abs(dsd * (0.4 + 0.3 * np.exp(0.3 * rng.standard_normal(n_d))))
    p_d = _pvalues(rng, eps_d, dsd)

    q_id = np.array([f"{names[x]}+{names[y]}_tm{t}" for x, y, t in zip(q_a, q_b, tm[:n_q])], dtype=object)
    q_allele = np.array([f"{std[x]}\u0394+{std[y]}\u0394" for x, y in zip(q_a, q_b)], dtype=object)
    ho_first = rng.random(n_ctrl) < 0.25
    c_id = np.array([(f"{HO_LOCUS}+{names[x]}" if h else f"{names[x]}+{HO_LOCUS}") + f"_tm{t}"
                     for x, h, t in zip(q_genes, ho_first, tm[n_q:])], dtype=object)
    c_allele = np.array([f"ho\u0394+{std[x]}\u0394" if h else f"{std[x]}\u0394+ho\u0394"
                         for x, h in zip(q_genes, ho_first)], dtype=object)

    r4 = lambda v: np.round(np.asarray(v, dtype=np.float64), 4)
    tri = pd.DataFrame({
        KUZMIN_COLUMNS[0]: q_id[qi], KUZMIN_COLUMNS[1]: q_allele[qi],
        KUZMIN_COLUMNS[2]: s_id[si], KUZMIN_COLUMNS[3]: s_allele[si],
        KUZMIN_COLUMNS[4]: "trigenic", KUZMIN_COLUMNS[5]: r4(raw_t), KUZMIN_COLUMNS[6]: tau_file,
        KUZMIN_COLUMNS[7]: p_file, KUZMIN_COLUMNS[8]: r4(f_ij), KUZMIN_COLUMNS[9]: r4(fk),
        KUZMIN_COLUMNS[10]: r4(f_ijk), KUZMIN_COLUMNS[11]: r4(sd_t),
    })
    dig = pd.DataFrame({
        KUZMIN_COLUMNS[0]: c_id[ci], KUZMIN_COLUMNS[1]: c_allele[ci],
        KUZMIN_COLUMNS[2]: s_id[cs], KUZMIN_COLUMNS[3]: s_allele[cs],
        KUZMIN_COLUMNS[4]: "digenic", KUZMIN_COLUMNS[5]: raw_d, KUZMIN_COLUMNS[6]: eps_d,
        KUZMIN_COLUMNS[7]: p_d, KUZMIN_COLUMNS[8]: r4(fx), KUZMIN_COLUMNS[9]: r4(fk_d),
        KUZMIN_COLUMNS[10]: r4(f_xk), KUZMIN_COLUMNS[11]: r4(sd_d),
    })
    rows = pd.concat([tri, dig], ignore_index=True)
    rows = rows.sort_values([KUZMIN_COLUMNS[0], KUZMIN_COLUMNS[2]], kind="stable")
    file_order = rows.index.to_numpy()
    file_order = file_order[file_order < n_t]  # trigenic rows in the order the file lists them
    rows = rows.reset_index(drop=True)

    # ground truth merged the way the loader merges replicates: mean tau over non-NaN rows
    trip = np.sort(np.stack([gi, gj, gk], axis=1), axis=1)
    rank = np.empty(n_all, np.int64)
    rank[np.argsort(names.astype(str), kind="stable")] = np.arange(n_all)
    trip = trip[np.arange(n_t)[:, None], np.argsort(rank[trip], axis=1)]
    valid = ~np.isnan(tau_file)
    tkey = (trip[:, 0] * n_all + trip[:, 1]) * n_all + trip[:, 2]
    _, first, tinv, cnt = np.unique(tkey[valid], return_index=True, return_inverse=True, return_counts=True)
    tau_mean = np.bincount(tinv, weights=tau[valid]) / cnt
    vt = trip[valid][first]
    truth = pd.DataFrame({"gene1": names[vt[:, 0]].astype(str), "gene2": names[vt[:, 1]].astype(str),
                          "gene3": names[vt[:, 2]].astype(str), "signal": signal[valid][first],
                          "tau": tau_mean, "n_replicates": cnt.astype(np.int64)})
    truth = truth.sort_values(["gene1", "gene2", "gene3"], kind="stable").reset_index(drop=True)

    # replicate correlation: the first two valid measurements (in file order) of every triplet
    # measured more than once
    fo = file_order[valid[file_order]]
    _, g_inv, g_cnt = np.unique(tkey[fo], return_inverse=True, return_counts=True)
    by_group = np.argsort(g_inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(g_cnt)[:-1]])
    rep = g_cnt >= 2
    r1, r2 = tau[fo[by_group[starts[rep]]]], tau[fo[by_group[starts[rep] + 1]]]
    replicate_r = float(np.corrcoef(r1, r2)[0, 1]) if rep.sum() > 2 else float("nan")

    info = {
        "noise_sd": sd, "signal_var": float(np.var(signal)), "digenic_noise_sd": dsd,
        "replicate_r": replicate_r, "n_replicate_pairs": int(rep.sum()),
        "noise_ceiling": float(np.corrcoef(truth["signal"], truth["tau"])[0, 1]),
        "n_trigenic_rows": int(n_t), "n_digenic_rows": int(n_d), "n_nan_rows": int(len(nan_idx)),
        "n_triplets": int(len(truth)), "n_query_pairs": int(len(pairs)), "n_query_strains": int(n_q),
        "n_swapped_query_strains": int(n_swap), "n_array_strains": int(n_str),
        "n_array_strains_tsa": n_tsa, "n_array_strains_dma": n_dma,
        "n_array_genes": int(len(arr_genes)), "n_query_genes": int(len(q_genes)),
        "n_screened_genes": int(len(np.union1d(q_genes, arr_genes))),
        "n_screened_genes_not_in_v9_1": int(n_unl),
        "tau_fraction_negative": float(np.mean(tau < 0)),
        "tau_quantiles": {str(q): float(np.quantile(tau, q)) for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)},
        "additive_r_max": _additive_r(truth, names),
    }
    return _Screen(rows, truth, info)


def _additive_r(truth: pd.DataFrame, names: np.ndarray) -> float:
    """Best in-sample Pearson r of a per-gene additive model (b_i + b_j + b_k) with the signal.

    How much of the planted signal is out of reach of the additive baseline even with
    no noise and no held-out genes.
    """
    import scipy.sparse as sps
    from scipy.sparse.linalg import lsqr

    g = truth[["gene1", "gene2", "gene3"]].to_numpy().ravel()
    codes, _ = pd.factorize(g)
    n = len(truth)
    x = sps.csr_matrix((np.ones(3 * n), (np.repeat(np.arange(n), 3), codes)), shape=(n, codes.max() + 1))
    x = sps.hstack([x, np.ones((n, 1))]).tocsr()
    y = truth["signal"].to_numpy()
    coef = lsqr(x, y, atol=1e-10, btol=1e-10, iter_lim=5000)[0]
    return float(np.corrcoef(x @ coef, y)[0, 1])


# --------------------------------------------------------------------------------------- benchmark

@dataclass
class SyntheticStudy:
    """Everything the generator produces, in memory (what the files hold, plus provenance)."""

    preset: Preset
    seed: int
    v9_1: StringNetworks
    v11_0: StringNetworks
    s1_rows: pd.DataFrame
    truth: pd.DataFrame
    modules: pd.DataFrame
    ground_truth: dict


def simulate(preset: str | Preset = "tiny", seed: int = 0) -> SyntheticStudy:
    """Generate a synthetic study in memory (no files). Same preset + seed -> same tables."""
    p = get_preset(preset)
    root = np.random.SeedSequence([int(seed), GENERATOR_VERSION])
    r_lat, r_net, r_new, r_scr = (np.random.default_rng(s) for s in root.spawn(4))
    lat = _latent(r_lat, p)
    rel9, thetas = _release_9_1(r_net, p, lat)
    rel11, planted = _release_11_0(r_new, p, lat, rel9, thetas)
    v9, v11 = _networks("9.1", lat, rel9), _networks("11.0", lat, rel11)
    screen = _screen(r_scr, p, lat)
    # The planted answer comes from the generator's own counts, not from lambda determination, so
    # comparing determine_lambdas on the written files with it is a check of that function.
    dz = [{"channel": c, **planted[c], "lambda": planted_lambda(planted[c]["pct_decreased_zeros"])}
          for c in CHANNELS]
    modules = pd.DataFrame({"gene": lat.names.astype(str), "module": lat.module.astype(np.int64)})
    modules = modules.sort_values("gene", kind="stable").reset_index(drop=True)
    gt = {
        "synthetic": True,
        "note": "SYNTHETIC data from dango_nb.data.synthetic (planted signal, not a real screen)",
        "generator_version": GENERATOR_VERSION,
        "preset": p.name,
        "seed": int(seed),
        "replicate_r_target": p.replicate_r,
        "noise_ceiling": screen.info.pop("noise_ceiling"),
        "replicate_r": screen.info.pop("replicate_r"),
        "planted_decreased_zeros_pct": {r["channel"]: r["pct_decreased_zeros"] for r in dz},
        "planted_lambda": {r["channel"]: r["lambda"] for r in dz},
        "decreased_zeros": dz,
        "counts": {
            "genes_v9_1": v9.num_genes, "genes_v11_0": v11.num_genes,
            "edges_v9_1": v9.num_edges(), "edges_v11_0": v11.num_edges(),
            "modules": int(lat.module.max() + 1), "processes": int(lat.process.max() + 1),
            **{k: v for k, v in screen.info.items() if k.startswith("n_")},
        },
        **{k: v for k, v in screen.info.items() if not k.startswith("n_")},
    }
    return SyntheticStudy(p, int(seed), v9, v11, screen.rows, screen.truth, modules, gt)


@dataclass(frozen=True)
class BenchmarkFiles:
    """Paths of one generated benchmark (see docs/architecture.md)."""

    root: Path
    string_v9_1: Path
    string_v11_0: Path
    kuzmin_s1: Path
    ground_truth_json: Path
    ground_truth_triplets: Path
    modules: Path
    manifest: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "BenchmarkFiles":
        root = Path(root)
        return cls(root, root / STRING_V9_1_FILE, root / STRING_V11_0_FILE, root / KUZMIN_S1_FILE,
                   root / GROUND_TRUTH_JSON, root / GROUND_TRUTH_TRIPLETS, root / MODULES_FILE,
                   root / MANIFEST_FILE)

    def data_files(self) -> dict[str, Path]:
        return {"string_v9_1": self.string_v9_1, "string_v11_0": self.string_v11_0,
                "kuzmin_s1": self.kuzmin_s1, "ground_truth_json": self.ground_truth_json,
                "ground_truth_triplets": self.ground_truth_triplets, "modules": self.modules}

    def string(self, version: str) -> Path:
        return {"9.1": self.string_v9_1, "11.0": self.string_v11_0}[str(version)]

    def read_ground_truth(self) -> dict:
        return json.loads(self.ground_truth_json.read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_key(p: Preset, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "preset": p.to_dict(), "seed": int(seed)}


def _reuse_problem(files: BenchmarkFiles, key: dict) -> tuple[str | None, bool]:
    """``(None, _)`` when the files in ``files.root`` are the benchmark ``key`` describes, else
    ``(why, damaged)``: ``damaged`` when a complete benchmark's file no longer matches its manifest."""
    try:
        man = json.loads(files.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable manifest", False
    if {k: man.get(k) for k in key} != json.loads(json.dumps(key)):
        return "the manifest is for other parameters", False
    for name, path in files.data_files().items():
        meta = man.get("files", {}).get(name)
        if not meta or not path.is_file():
            return f"{path} is missing", True
        if path.stat().st_size != meta.get("bytes"):
            return f"{path} has {path.stat().st_size} bytes, the manifest {meta.get('bytes')}", True
        got = _sha256(path)
        if got != meta.get("sha256"):
            return f"{path} has sha256 {got}, the manifest {meta.get('sha256')}", True
    return None, False


#: Generator temp files older than this are left over from an interrupted write (a live write keeps
#: its temp file's modification time fresh).
STALE_TEMP_SECONDS = 60.0


def _remove_stale_temps(files: BenchmarkFiles) -> list[Path]:
    """Delete temp files that an interrupted :func:`dango_nb.fileio.atomic_write` left in ``files.root``."""
    if not files.root.is_dir():
        return []
    now = time.time()
    gone = []
    for path in (*files.data_files().values(), files.manifest):
        for tmp in files.root.glob(f".{glob.escape(path.name)}.*.tmp*"):
            try:
                if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                    tmp.unlink()
                    gone.append(tmp)
            except FileNotFoundError:
                pass
    if gone:
        log.info("%s: removed %d temp files left by an interrupted write: %s", files.root, len(gone),
                 [p.name for p in gone])
    return gone


def write_study(study: SyntheticStudy, out_dir: str | os.PathLike) -> BenchmarkFiles:
    """Write an in-memory study in the raw formats; the manifest goes last (marks completeness)."""
    files = BenchmarkFiles.at(out_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    files.manifest.unlink(missing_ok=True)
    write_string_detailed(files.string_v9_1, study.v9_1)
    write_string_detailed(files.string_v11_0, study.v11_0)
    write_kuzmin_s1(files.kuzmin_s1, study.s1_rows)
    atomic_write_table(study.truth[["gene1", "gene2", "gene3", "signal", "tau", "n_replicates"]],
                       files.ground_truth_triplets)
    atomic_write_table(study.modules, files.modules)
    atomic_write_json(study.ground_truth, files.ground_truth_json)
    man = {**_manifest_key(study.preset, study.seed), "synthetic": True,
           "files": {name: {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
                     for name, path in files.data_files().items()}}
    atomic_write_json(man, files.manifest)
    return files


def generate_benchmark(out_dir: str | os.PathLike, preset: str | Preset = "tiny", seed: int = 0,
                       overwrite: bool = False) -> BenchmarkFiles:
    """Write the synthetic benchmark for ``preset`` + ``seed`` into ``out_dir`` (or reuse it).

    Files already there with a manifest for the same generator version, preset parameters and seed,
    and the sizes and sha256 it records, are reused as they are; anything else is regenerated (with a
    ``UserWarning`` when a file of a complete benchmark was changed or removed). Temp files left by an
    interrupted write are removed first. Same preset + seed give byte-identical files.
    """
    p = get_preset(preset)
    files = BenchmarkFiles.at(out_dir)
    _remove_stale_temps(files)
    if not overwrite:
        why, damaged = _reuse_problem(files, _manifest_key(p, seed))
        if why is None:
            return files
        if damaged:
            warnings.warn(f"{files.root}: {why}; regenerating the benchmark (preset {p.name!r}, seed {seed})",
                          UserWarning, stacklevel=2)
    return write_study(simulate(p, seed), out_dir)
