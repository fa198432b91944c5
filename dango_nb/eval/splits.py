"""Cross-validation splits over triplets: random k-fold and two gene-held-out schemes.

Every split is a function of the (N, 3) gene-index array and a seed only (targets are never
looked at), so it cannot leak test labels into training or selection. Each fold carries three
disjoint index arrays into the triplet table: ``train`` (fitting), ``val`` (early stopping,
checkpoint and hyper-parameter selection, carved out of the training part) and ``test``.

- ``random``: k-fold over *unique gene triples*. Kuzmin et al. measured some triples more than
  once (e.g. a DMA and a TSA allele); grouping keeps repeated measurements of one triple in the
  same part, so a test triple is never also a training triple.
- ``gene1``: ``n_test_genes`` screened genes (default 40 of the ~1,400 screened in Kuzmin et al.
  2018) are drawn; test = every triplet containing at least one of them; train/val = the rest.
- ``gene2``: ``n_test_genes`` screened genes (default 400) are drawn; test = triplets whose three
  genes are all test genes; triplets with one or two test genes are discarded; train/val = the
  rest. The test set is roughly (n_test / n_screened)^3 of the triplets (~2% for 400 of 1,400).
Folds of the gene splits are independent seeded gene draws (test sets may overlap across folds).

Screened genes are the genes appearing in at least one triplet. On smaller studies (the ``tiny``
and ``small`` presets) the default number of test genes is scaled by the screened-gene fraction of
the paper's setting: ``round(n_screened * 40 / 1400)`` and ``round(n_screened * 400 / 1400)``
(at least 1 and 3 genes), see :func:`default_n_test_genes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dango_nb.data.triplets import as_index_array
from dango_nb.errors import ParamsError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("random", "gene1", "gene2")
# The paper's setting, used to scale the number of test genes on smaller studies.
REFERENCE_SCREENED_GENES = 1400
REFERENCE_TEST_GENES = {"gene1": 40, "gene2": 400}


@dataclass(frozen=True)
class Fold:
    """One fold: disjoint int64 index arrays into the triplet table.

    ``test_genes`` holds the held-out gene ids of the gene splits (None for ``random``);
    ``discarded`` the triplets used nowhere (gene2: one or two test genes).
    """

    split: str
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_genes: np.ndarray | None = None
    discarded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                "discarded": len(self.discarded)}

    def check(self, n: int) -> None:
        """Raise if the parts overlap or do not cover ``n`` triplets exactly once."""
        parts = np.concatenate([self.train, self.val, self.test, self.discarded])
        if len(parts) != n or len(np.unique(parts)) != n:
            raise AssertionError(f"{self.split} fold {self.fold}: parts overlap or miss triplets "
                                 f"({self.sizes}, n={n})")


def screened_genes(triplets) -> np.ndarray:
    """Sorted ids of the genes appearing in at least one triplet."""
    return np.unique(as_index_array(triplets))


def default_n_test_genes(split: str, n_screened: int) -> int:
    """The paper's 40 / 400 test genes, scaled by ``n_screened / 1400`` (at least 1 / 3)."""
    if split not in REFERENCE_TEST_GENES:
        raise ValueError(f"no test genes for split {split!r}; expected one of {sorted(REFERENCE_TEST_GENES)}")
    n = round(n_screened * REFERENCE_TEST_GENES[split] / REFERENCE_SCREENED_GENES)
    floor = 1 if split == "gene1" else 3
    return int(min(max(n, floor), n_screened))


def _validation(train_pool: np.ndarray, val_fraction: float, rng: np.random.Generator,
                groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation part out of ``train_pool`` (grouped by unique triple when given)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0 or len(train_pool) == 0:
        return np.sort(train_pool), np.zeros(0, dtype=np.int64)
    if groups is None:
        groups = np.arange(len(train_pool))
    uniq = np.unique(groups)
    n_val = max(1, int(round(val_fraction * len(uniq))))
    val_groups = rng.choice(uniq, size=n_val, replace=False)
    in_val = np.isin(groups, val_groups)
    return np.sort(train_pool[~in_val]), np.sort(train_pool[in_val])


def _triple_groups(idx: np.ndarray) -> np.ndarray:
    """Group id per row: rows with the same unordered gene triple share an id."""
    _, inverse = np.unique(np.sort(idx, axis=1), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def random_kfold(triplets, n_folds: int = 5, val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """k-fold over unique gene triples; each training part gives ``val_fraction`` to validation."""
    idx = as_index_array(triplets)
    groups = _triple_groups(idx)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_folds < 2 or n_folds > n_groups:
        raise ParamsError(f"n_folds must be in [2, {n_groups}] (unique triples), got {n_folds}")
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    fold_of_group[rng.permutation(n_groups)] = np.arange(n_groups) % n_folds
    fold_of_row = fold_of_group[groups]
    rows = np.arange(len(idx), dtype=np.int64)
    folds = []
    for f in range(n_folds):
        test = rows[fold_of_row == f]
        pool = rows[fold_of_row != f]
        train, val = _validation(pool, val_fraction, rng, groups[pool])
        folds.append(Fold("random", f, train, val, test))
    return folds


def gene_split1(triplets, n_test_genes: int | None = None, n_folds: int = 5,
                val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """Test = triplets with at least one of ``n_test_genes`` held-out genes; train/val = the rest."""
    return _gene_split(triplets, "gene1", n_test_genes, n_folds, val_fraction, seed)


def gene_split2(triplets, n_test_genes: int | None = None, n_folds: int = 5,
                val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """Test = triplets of three held-out genes; one or two held-out genes: discarded."""
    return _gene_split(triplets, "gene2", n_test_genes, n_folds, val_fraction, seed)


def _gene_split(triplets, split: str, n_test_genes: int | None, n_folds: int,
                val_fraction: float, seed: int) -> list[Fold]:
    idx = as_index_array(triplets)
    genes = screened_genes(idx)
    if n_test_genes is None:
        n_test_genes = default_n_test_genes(split, len(genes))
    if not 1 <= n_test_genes < len(genes):
        raise ParamsError(f"{split}: n_test_genes must be in [1, {len(genes) - 1}] "
                         f"({len(genes)} screened genes), got {n_test_genes}")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    groups = _triple_groups(idx)
    rows = np.arange(len(idx), dtype=np.int64)
    # One generator per fold, derived from (seed, split, fold): adding folds keeps earlier ones.
    split_key = SPLITS.index(split)
    folds = []
    for f in range(n_folds):
        rng = np.random.default_rng([seed, split_key, f])
        test_genes = np.sort(rng.choice(genes, size=n_test_genes, replace=False))
        n_in = np.isin(idx, test_genes).sum(axis=1)
        if split == "gene1":
            test, discarded = rows[n_in >= 1], rows[:0]
        else:
            test, discarded = rows[n_in == 3], rows[(n_in == 1) | (n_in == 2)]
        pool = rows[n_in == 0]
        train, val = _validation(pool, val_fraction, rng, groups[pool])
        folds.append(Fold(split, f, train, val, test, test_genes, discarded))
    return folds


def make_splits(split: str, triplets, n_folds: int = 5, seed: int = 0, val_fraction: float = 0.1,
                n_test_genes: int | None = None) -> list[Fold]:
    """Dispatch by name: ``"random"``, ``"gene1"`` or ``"gene2"``."""
    if split == "random":
        if n_test_genes is not None:
            raise ValueError("n_test_genes applies to the gene splits only")
        return random_kfold(triplets, n_folds=n_folds, val_fraction=val_fraction, seed=seed)
    if split == "gene1":
        return gene_split1(triplets, n_test_genes, n_folds, val_fraction, seed)
    if split == "gene2":
        return gene_split2(triplets, n_test_genes, n_folds, val_fraction, seed)
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def split_table(folds: list[Fold]) -> "pd.DataFrame":
    """One row per fold with the part sizes (for reports)."""
    import pandas as pd

    return pd.DataFrame([{"split": f.split, "fold": f.fold, **f.sizes,
                          "n_test_genes": 0 if f.test_genes is None else len(f.test_genes)}
                         for f in folds])
