import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from dango_nb import metrics as M


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.normal(-0.02, 0.06, 800)
    p = 0.6 * y + rng.normal(0, 0.04, 800)
    return y, p


def test_against_scipy_and_sklearn(data):
    y, p = data
    lab = (y <= -0.05).astype(int)
    assert M.pearson(y, p) == pytest.approx(stats.pearsonr(y, p)[0], abs=1e-12)
    assert M.spearman(y, p) == pytest.approx(stats.spearmanr(y, p)[0], abs=1e-12)
    assert M.mse(y, p) == pytest.approx(np.mean((y - p) ** 2))
    assert M.auroc(y, p) == pytest.approx(roc_auc_score(lab, -p))
    assert M.auprc(y, p) == pytest.approx(average_precision_score(lab, -p))
    s = y <= -0.05
    r = M.evaluate(y, p)
    assert r["pearson_strong"] == pytest.approx(stats.pearsonr(y[s], p[s])[0])
    assert r["spearman_strong"] == pytest.approx(stats.spearmanr(y[s], p[s])[0])
    assert r["n_test"] == 800 and r["n_strong"] == s.sum()
    assert set(M.METRICS) <= set(r)


def test_known_values():
    y = np.array([-0.3, -0.1, 0.0, 0.1])
    assert M.auroc(y, y) == 1.0 and M.auroc(y, -y) == 0.0
    assert M.auprc(y, y) == 1.0
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.mse([0, 0], [1, 3]) == 5.0


def test_nan_targets_are_masked(data):
    y, p = data
    y2 = y.copy()
    y2[::7] = np.nan
    keep = ~np.isnan(y2)
    got = M.evaluate(y2, p)
    ref = M.evaluate(y[keep], p[keep])
    for k in ref:
        assert got[k] == pytest.approx(ref[k], nan_ok=True), k
    assert got["n_test"] == keep.sum()
    ci = M.bootstrap_ci(y2, p, n_boot=50)
    assert all(np.isfinite(v).all() for v in ci.values())


def test_nan_predictions_are_an_error(data):
    y, p = data
    p = p.copy()
    p[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.pearson(y, p)
    with pytest.raises(ValueError, match="values"):
        M.mse(y, p[:-1])


def test_undefined_metrics_are_nan_not_errors():
    y = np.array([-0.2, 0.1, 0.0, 0.3])
    const = np.full(4, 0.05)
    r = M.evaluate(y, const)
    assert np.isnan(r["pearson"]) and np.isnan(r["spearman"])
    assert r["auroc"] == 0.5  # ties: a constant score ranks nothing
    r = M.evaluate(np.array([0.1, 0.2, 0.0]), np.array([0.0, 0.1, 0.3]))  # no strong triplet
    assert np.isnan(r["auroc"]) and np.isnan(r["auprc"]) and np.isnan(r["pearson_strong"])
    assert np.isnan(M.pearson([], []))


def test_balanced_subsample(data):
    y, _ = data
    idx = M.balanced_subsample(y, seed=1)
    lab = y[idx] <= -0.05
    assert lab.sum() == (~lab).sum() == min((y <= -0.05).sum(), (y > -0.05).sum())
    assert np.array_equal(idx, M.balanced_subsample(y, seed=1))
    assert not np.array_equal(idx, M.balanced_subsample(y, seed=2))
    yn = y.copy()
    yn[idx[:5]] = np.nan
    assert not np.isnan(yn[M.balanced_subsample(yn, seed=1)]).any()


def test_balanced_auc_random_predictor_near_half():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 0.05, 20000)
    roc, prc = M.balanced_auc(y, rng.normal(size=20000), n_repeats=3)
    assert abs(roc - 0.5) < 0.03 and abs(prc - 0.5) < 0.03
    # on the full (imbalanced) set the AUPRC of a random predictor is the prevalence instead
    assert abs(M.auprc(y, rng.normal(size=20000)) - (y <= -0.05).mean()) < 0.03


def test_bootstrap_ci_matches_loop_and_contains_estimate(data):
    y, p = data
    ci = M.bootstrap_ci(y, p, n_boot=200, seed=3, max_block=800 * 37)  # several blocks
    ci2 = M.bootstrap_ci(y, p, n_boot=200, seed=3)
    assert ci == ci2  # blocking does not change the draws
    for m in ("pearson", "spearman", "mse", "auroc", "auprc"):
        lo, hi = ci[m]
        est = getattr(M, m)(y, p)
        assert lo < est < hi, m
    # the vectorised statistics equal scipy/sklearn on the same resamples
    rng = np.random.default_rng(3)
    draws = rng.integers(0, len(y), size=(200, len(y)))
    vals = {"pearson": [stats.pearsonr(y[d], p[d])[0] for d in draws],
            "spearman": [stats.spearmanr(y[d], p[d])[0] for d in draws],
            "auroc": [roc_auc_score(y[d] <= -0.05, -p[d]) for d in draws],
            "auprc": [average_precision_score(y[d] <= -0.05, -p[d]) for d in draws]}
    for m, v in vals.items():
        assert ci[m] == pytest.approx(tuple(np.percentile(v, [2.5, 97.5])), abs=1e-10), m
    with pytest.raises(ValueError, match="unsupported"):
        M.bootstrap_ci(y, p, metrics=("r2",))


def test_noise_ceiling():
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 1, 5000)
    tau = signal + rng.normal(0, 1, 5000)
    assert M.noise_ceiling(signal, tau) == pytest.approx(1 / np.sqrt(2), abs=0.02)


def test_summarize_and_format():
    table = pd.DataFrame({
        "model": ["a", "a", "a", "b", "b", "b"], "split": ["random"] * 6, "fold": [0, 1, 2] * 2,
        "pearson": [0.5, 0.6, 0.7, 0.1, 0.2, 0.3], "mse": [1.0, 2.0, 3.0, 1, 1, 1],
        "ceiling": [0.8, 0.8, 0.8, 0.8, 0.8, 0.8]})
    s = M.summarize(table)
    a = s.set_index("model").loc["a"]
    assert a["pearson_mean"] == pytest.approx(0.6) and a["pearson_sd"] == pytest.approx(0.1)
    assert a["n_folds"] == 3 and a["pearson_frac_ceiling"] == pytest.approx(0.75)
    wide = M.format_summary(s, metrics=("pearson", "mse"))
    assert wide.loc["a", ("pearson", "random")] == "0.600 ± 0.100"
    assert list(wide.index) == ["a", "b"]


def test_summarize_averages_seeds_per_fold_and_reports_their_spread():
    t = pd.DataFrame({"model": ["dango"] * 4 + ["mean"] * 2, "split": ["gene2"] * 6, "fold": [0, 0, 1, 1, 0, 1],
                      "seed": [0, 1, 0, 1, 0, 0], "pearson": [0.361, 0.018, 0.5, 0.3, 0.1, 0.2],
                      "ceiling": [0.5] * 6})
    s = M.summarize(t).set_index("model")
    assert s.loc["dango", "n_folds"] == 2 and s.loc["dango", "n_seeds"] == 2 and s.loc["mean", "n_seeds"] == 1
    folds = [(0.361 + 0.018) / 2, 0.4]
    assert s.loc["dango", "pearson_mean"] == pytest.approx(np.mean(folds))
    assert s.loc["dango", "pearson_sd"] == pytest.approx(np.std(folds, ddof=1))  # over folds
    assert s.loc["dango", "pearson_seed_sd"] == pytest.approx(
        np.mean([np.std([0.361, 0.018], ddof=1), np.std([0.5, 0.3], ddof=1)]))
    assert np.isnan(s.loc["mean", "pearson_seed_sd"])
    assert s.loc["dango", "pearson_frac_ceiling"] == pytest.approx(np.mean(folds) / 0.5)
