import numpy as np
import pytest

from dango_nb.eval.baselines import (AdditiveGeneModel, EmbeddingMLP, MeanPredictor, PairwiseAdditiveModel,
                                sorted_triplet_features)


def triplets(n_genes, n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(n_genes, 3, replace=False) for _ in range(n)])


def test_mean_predictor_ignores_nan():
    y = np.array([1.0, np.nan, 3.0])
    m = MeanPredictor().fit(np.zeros((3, 3), int) + [0, 1, 2], y)
    assert np.array_equal(m.predict(np.array([[0, 1, 2]] * 2)), [2.0, 2.0])


def test_additive_recovers_planted_gene_effects():
    rng = np.random.default_rng(0)
    G = 50
    b = rng.normal(0, 0.05, G)
    idx = triplets(G, 3000, 1)
    y = 0.01 + b[idx].sum(axis=1) + rng.normal(0, 0.002, len(idx))
    y[::50] = np.nan  # NaN targets are dropped, not fitted
    model = AdditiveGeneModel(n_genes=G, alpha=1e-3).fit(idx, y)
    # gene effects are identified up to a shared shift absorbed by the intercept
    shift = np.mean(model.coef_ - b)
    assert np.abs(model.coef_ - b - shift).max() < 5e-3
    assert model.intercept_ + 3 * shift == pytest.approx(0.01, abs=2e-3)
    test = triplets(G, 500, 2)
    assert np.corrcoef(model.predict(test), b[test].sum(axis=1))[0, 1] > 0.99


def test_alpha_chosen_on_validation_only():
    rng = np.random.default_rng(1)
    G = 40
    b = rng.normal(0, 0.05, G)
    idx = triplets(G, 400, 3)
    y = b[idx].sum(axis=1) + rng.normal(0, 0.05, len(idx))
    vi = triplets(G, 200, 4)
    vy = b[vi].sum(axis=1) + rng.normal(0, 0.05, len(vi))
    m = AdditiveGeneModel(alphas=(1e-4, 1.0, 1e4)).fit(idx, y, vi, vy)
    assert m.alpha_ == min(m.val_mse_, key=m.val_mse_.get) and set(m.val_mse_) == {1e-4, 1.0, 1e4}
    assert m.alpha_ != 1e4  # the huge penalty predicts the mean only


def test_unseen_genes_fall_back_to_known_terms():
    G = 30
    idx = triplets(20, 500, 5)  # genes 20..29 never trained
    b = np.linspace(-0.1, 0.1, G)
    y = b[idx].sum(axis=1)
    m = AdditiveGeneModel(alpha=1e-4).fit(idx, y)
    pred = m.predict(np.array([[25, 26, 27], [0, 1, 28]]))  # ids beyond the training vocabulary
    assert pred[0] == pytest.approx(m.intercept_)
    assert pred[1] == pytest.approx(m.intercept_ + m.coef_[0] + m.coef_[1])
    p = PairwiseAdditiveModel(alpha=1e-4).fit(idx, y)
    assert np.isfinite(p.predict(np.array([[25, 26, 27], [0, 1, 28]]))).all()


def test_pairwise_additive_recovers_pair_effects():
    rng = np.random.default_rng(2)
    G = 15
    idx = np.array([t for t in __import__("itertools").combinations(range(G), 3)])  # all 455 triples
    b = rng.normal(0, 0.05, G)
    pair = {(i, j): rng.normal(0, 0.05) for i in range(G) for j in range(i + 1, G)}
    s = np.sort(idx, axis=1)
    y = b[idx].sum(axis=1) + np.array([pair[a, c] + pair[a, d] + pair[c, d] for a, c, d in s])
    perm = rng.permutation(idx, axis=1)  # gene order must not matter
    m = PairwiseAdditiveModel(alpha=1e-5).fit(perm, y)
    assert np.corrcoef(m.predict(idx), y)[0, 1] > 0.999
    add = AdditiveGeneModel(alpha=1e-5).fit(perm, y)
    assert np.corrcoef(add.predict(idx), y)[0, 1] < 0.9  # pair terms are needed
    assert m.pair_index_.shape == (G * (G - 1) // 2, 2) and len(m.pair_coef_) == len(m.pair_index_)


def test_sorted_features_are_order_invariant():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10, 4))
    f1 = sorted_triplet_features(emb, np.array([[1, 2, 3]]))
    f2 = sorted_triplet_features(emb, np.array([[3, 1, 2]]))
    assert np.array_equal(f1, f2) and f1.shape == (1, 12)


def test_embedding_mlp_learns_a_function_of_embeddings():
    rng = np.random.default_rng(0)
    G, H = 60, 8
    emb = rng.normal(size=(G, H))
    w = rng.normal(size=H)
    idx = triplets(G, 2500, 6)
    e = emb[idx]
    y = 0.05 * np.tanh(e @ w).prod(axis=1)  # a non-additive triplet function
    tr, va, te = idx[:1800], idx[1800:2100], idx[2100:]
    m = EmbeddingMLP(emb, max_epochs=60, patience=10, seed=0)
    m.fit(tr, y[:1800], va, y[1800:2100])
    r = np.corrcoef(m.predict(te), y[2100:])[0, 1]
    assert r > 0.9, r
    assert 0 <= m.best_epoch_ < 60 and len(m.val_mse_) >= m.best_epoch_ + 1
    assert m.val_mse_[m.best_epoch_] == min(m.val_mse_)
    assert np.allclose(m.predict(te[:, [2, 0, 1]]), m.predict(te))  # gene order does not matter
    again = EmbeddingMLP(emb, max_epochs=60, patience=10, seed=0).fit(tr, y[:1800], va, y[1800:2100])
    assert np.array_equal(again.predict(te), m.predict(te))  # seeded
    s = EmbeddingMLP(emb, features="sorted", max_epochs=5, seed=0).fit(tr, y[:1800])
    assert s.best_epoch_ == 4 and np.allclose(s.predict(te[:, [1, 2, 0]]), s.predict(te), atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        EmbeddingMLP(emb, features="mean")


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        AdditiveGeneModel().fit(np.zeros((3, 2), int), np.zeros(3))
    with pytest.raises(ValueError, match="targets"):
        AdditiveGeneModel().fit(np.zeros((3, 3), int), np.zeros(2))
    with pytest.raises(ValueError, match="no finite"):
        MeanPredictor().fit(np.zeros((1, 3), int), [np.nan])
