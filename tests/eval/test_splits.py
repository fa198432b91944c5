import numpy as np
import pytest

from dango_nb.eval.splits import (Fold, default_n_test_genes, gene_split1, gene_split2, make_splits,
                             random_kfold, screened_genes, split_table)


def random_triplets(n_genes=60, n=3000, seed=0, duplicates=200):
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(n_genes, 3, replace=False) for _ in range(n)])
    # repeated measurements of the same triple (e.g. DMA and TSA alleles), in another gene order
    dup = idx[rng.choice(n, duplicates, replace=False)][:, ::-1]
    return np.concatenate([idx, dup])


def test_random_kfold_partitions_and_groups_repeated_triples():
    idx = random_triplets()
    folds = random_kfold(idx, n_folds=5, val_fraction=0.1, seed=3)
    assert [f.fold for f in folds] == list(range(5))
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(tests), np.arange(len(idx)))  # every triplet tested exactly once
    key = lambda rows: {tuple(sorted(t)) for t in idx[rows]}
    for f in folds:
        f.check(len(idx))
        assert not (set(f.train) & set(f.val) or set(f.train) & set(f.test) or set(f.val) & set(f.test))
        # a gene triple is never in two parts (repeated measurements stay together)
        assert not (key(f.test) & key(f.train)) and not (key(f.test) & key(f.val)) and not (key(f.val) & key(f.train))
        assert abs(len(f.test) / len(idx) - 0.2) < 0.02
        assert abs(len(f.val) / (len(f.val) + len(f.train)) - 0.1) < 0.02


def test_splits_are_seeded_and_reproducible():
    idx = random_triplets()
    for split in ("random", "gene1", "gene2"):
        a = make_splits(split, idx, n_folds=3, seed=7)
        b = make_splits(split, idx, n_folds=3, seed=7)
        c = make_splits(split, idx, n_folds=3, seed=8)
        for fa, fb in zip(a, b):
            assert np.array_equal(fa.train, fb.train) and np.array_equal(fa.val, fb.val)
            assert np.array_equal(fa.test, fb.test)
        assert any(not np.array_equal(fa.test, fc.test) for fa, fc in zip(a, c))


def test_gene_split1_membership():
    idx = random_triplets(n_genes=80)
    folds = gene_split1(idx, n_test_genes=5, n_folds=4, seed=1)
    assert len({tuple(f.test_genes) for f in folds}) == 4  # different gene draws per fold
    for f in folds:
        f.check(len(idx))
        assert len(f.test_genes) == 5 and set(f.test_genes) <= set(screened_genes(idx))
        has = np.isin(idx, f.test_genes).any(axis=1)
        assert np.array_equal(np.sort(f.test), np.flatnonzero(has))
        assert not np.isin(idx[f.train], f.test_genes).any()
        assert not np.isin(idx[f.val], f.test_genes).any()
        assert len(f.discarded) == 0 and len(f.val) > 0


def test_gene_split2_membership():
    idx = random_triplets(n_genes=30, n=4000)
    folds = gene_split2(idx, n_test_genes=12, n_folds=3, seed=2)
    for f in folds:
        f.check(len(idx))
        n_in = np.isin(idx, f.test_genes).sum(axis=1)
        assert np.array_equal(np.sort(f.test), np.flatnonzero(n_in == 3))
        assert np.array_equal(np.sort(f.discarded), np.flatnonzero((n_in == 1) | (n_in == 2)))
        assert (n_in[f.train] == 0).all() and (n_in[f.val] == 0).all()
        assert len(f.test) > 0


def test_default_test_gene_counts_scale_with_screened_genes():
    assert default_n_test_genes("gene1", 1400) == 40
    assert default_n_test_genes("gene2", 1400) == 400
    assert default_n_test_genes("gene1", 140) == 4
    assert default_n_test_genes("gene2", 140) == 40
    assert default_n_test_genes("gene1", 10) == 1  # floor
    idx = random_triplets(n_genes=70)
    assert len(gene_split2(idx, n_folds=1)[0].test_genes) == 20
    with pytest.raises(ValueError, match="no test genes"):
        default_n_test_genes("random", 100)


def test_screened_genes_only_drawn_from_triplets():
    idx = random_triplets(n_genes=50) + 100  # ids 0..99 never appear
    for f in gene_split1(idx, n_test_genes=10, n_folds=3):
        assert f.test_genes.min() >= 100


def test_bad_arguments():
    idx = random_triplets(n_genes=20, n=100, duplicates=0)
    with pytest.raises(ValueError, match="n_test_genes"):
        gene_split1(idx, n_test_genes=20)
    with pytest.raises(ValueError, match="unknown split"):
        make_splits("genes", idx)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        random_kfold(idx[:, :2])
    with pytest.raises(ValueError, match="val_fraction"):
        random_kfold(idx, val_fraction=1.0)
    bad = Fold("random", 0, np.array([0, 1]), np.array([1]), np.array([2]))
    with pytest.raises(AssertionError, match="overlap"):
        bad.check(3)


def test_split_table_and_torch_input():
    torch = pytest.importorskip("torch")
    idx = random_triplets(n_genes=40, n=500, duplicates=0)
    folds = random_kfold(torch.as_tensor(idx), n_folds=5)
    table = split_table(folds)
    assert list(table.columns[:6]) == ["split", "fold", "train", "val", "test", "discarded"]
    assert (table[["train", "val", "test"]].sum(axis=1) == 500).all()
