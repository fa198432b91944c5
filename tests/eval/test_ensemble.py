import numpy as np
import pytest
from scipy import stats

from dango_nb import metrics as M
from dango_nb.eval.ensemble import combine, ensemble_gain, spread_calibration_table, spread_error_table


def members(seed=0, k=5, n=2000):
    """Noisy members around a common truth: averaging removes member noise."""
    rng = np.random.default_rng(seed)
    y = rng.normal(-0.02, 0.06, n)
    preds = y + rng.normal(0, 0.05, (k, n))
    return y, preds


def test_combine_mean_and_std():
    p = np.array([[1.0, 2.0], [3.0, 2.0]])
    mean, spread = combine(p)
    assert mean.tolist() == [2.0, 2.0] and spread.tolist() == [1.0, 0.0]
    assert combine(p[:1])[1].tolist() == [0.0, 0.0]  # one member: no spread
    with pytest.raises(ValueError, match="members"):
        combine(np.zeros(3))


def test_ensemble_gain_is_positive_for_independent_errors():
    y, preds = members()
    g = ensemble_gain(y, preds).set_index("name")
    assert list(g.index[:5]) == [f"member{k}" for k in range(5)]
    single = g.loc[[f"member{k}" for k in range(5)], "pearson"].mean()
    assert g.loc["single_mean", "pearson"] == pytest.approx(single)
    assert g.loc["ensemble", "pearson"] == pytest.approx(M.pearson(y, preds.mean(axis=0)))
    assert g.loc["gain", "pearson"] == pytest.approx(g.loc["ensemble", "pearson"] - single)
    assert g.loc["gain", "pearson"] > 0.05 and g.loc["gain", "mse"] < 0
    with pytest.raises(ValueError, match="names"):
        ensemble_gain(y, preds, names=["a"])


def test_spread_tables():
    rng = np.random.default_rng(1)
    n = 5000
    spread = rng.uniform(0.01, 0.1, n)
    y = rng.normal(0, 0.05, n)
    pred = y + rng.normal(0, 1, n) * spread  # errors scale with spread: calibrated
    y[:10] = np.nan
    t = spread_error_table(y, pred, spread)
    assert len(t) == n - 10 and np.allclose(t["abs_error"], np.abs(t["target"] - t["prediction"]))
    cal = spread_calibration_table(y, pred, spread, n_bins=5)
    assert cal["n"].sum() == n - 10 and len(cal) == 5
    assert cal["spread_mean"].is_monotonic_increasing and cal["abs_error_mean"].is_monotonic_increasing
    # calibrated Gaussian errors: mean |error| ~ sqrt(2/pi) * rms spread per bin
    assert np.allclose(cal["abs_error_mean"], cal["expected_abs_error"], rtol=0.1)
    assert cal.attrs["spearman"] == pytest.approx(stats.spearmanr(t["spread"], t["abs_error"])[0])
    flat = spread_calibration_table(y, pred, np.zeros(n))  # single member: one bin
    assert len(flat) == 1 and np.isnan(flat.attrs["spearman"])
    with pytest.raises(ValueError, match="lengths"):
        spread_error_table(y, pred[:-1], spread)


def test_decomposition_by_run_separates_top_k_and_seeds():
    from dango_nb import metrics as M

    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    # two runs (seeds) of three checkpoints each, best first; checkpoints of one run share most of their error
    run_err = [rng.normal(size=400) for _ in range(2)]
    preds = np.stack([y + run_err[r] + 0.3 * rng.normal(size=400) for r in range(2) for _ in range(3)])
    groups = ["seed0"] * 3 + ["seed1"] * 3
    g = ensemble_gain(y, preds, groups=groups, n_balanced_repeats=1).set_index("name")
    best = np.mean([M.pearson(y, preds[0]), M.pearson(y, preds[3])])
    assert g.loc["best_single", "pearson"] == pytest.approx(best)
    top_k = np.mean([M.pearson(y, preds[:3].mean(0)), M.pearson(y, preds[3:].mean(0))])
    assert g.loc["top_k", "pearson"] == pytest.approx(top_k)
    assert g.loc["seeds", "pearson"] == pytest.approx(M.pearson(y, preds[[0, 3]].mean(0)))
    assert g.loc["gain_top_k", "pearson"] == pytest.approx(top_k - best)
    # independent run errors average out across seeds more than shared ones across checkpoints
    assert g.loc["gain_seeds", "pearson"] > g.loc["gain_top_k", "pearson"] > 0
    assert g.loc["gain_ensemble", "pearson"] == pytest.approx(g.loc["ensemble", "pearson"] - best)
    with pytest.raises(ValueError, match="5 groups for 6 members"):
        ensemble_gain(y, preds, groups=groups[:5])
