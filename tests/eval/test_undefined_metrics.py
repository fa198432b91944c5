"""Metrics that are undefined on their input stay undefined (NaN), in bootstrap intervals too."""

import numpy as np
import pytest
from scipy import stats

from dango_nb import metrics as M
from dango_nb.eval.ensemble import spread_calibration_table


@pytest.fixture
def y():
    return np.random.default_rng(0).normal(-0.02, 0.06, 500)


@pytest.mark.parametrize("value", [0.1, 0.05, -0.013, 1 / 3])
def test_constant_prediction_has_no_correlation_interval(y, value):
    const = np.full(len(y), value)
    assert np.isnan(M.pearson(y, const)) and np.isnan(M.spearman(y, const))
    ci = M.bootstrap_ci(y, const, n_boot=200, seed=1)
    for m in ("pearson", "spearman"):
        assert np.isnan(ci[m][0]) and np.isnan(ci[m][1]), (m, ci[m])
    assert np.isfinite(ci["mse"]).all()  # the error of a constant prediction is defined
    ci = M.bootstrap_ci(const, y, n_boot=50, seed=1, metrics=("pearson", "spearman"))  # constant target
    assert all(np.isnan(v).all() for v in ci.values())


def test_rowwise_pearson_is_nan_exactly_on_constant_rows(y):
    rows_y = np.stack([y[:50], y[50:100], np.full(50, 0.1), y[150:200]])
    rows_p = np.stack([np.full(50, 1 / 3), y[:50] * 2 + 1, y[100:150], y[200:250]])
    r = M._rowwise_pearson(rows_y, rows_p)
    assert np.isnan(r[[0, 2]]).all()
    for k in (1, 3):
        assert r[k] == pytest.approx(stats.pearsonr(rows_y[k], rows_p[k])[0], abs=1e-12)


def test_resamples_that_are_constant_are_left_out():
    # three distinct predictions over six triplets: some resamples draw one value only
    y = np.array([-0.2, -0.1, 0.0, 0.05, 0.1, 0.2])
    p = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.1])
    ci = M.bootstrap_ci(y, p, metrics=("pearson",), n_boot=400, seed=2)
    draws = np.random.default_rng(2).integers(0, 6, size=(400, 6))
    ref = [stats.pearsonr(y[d], p[d])[0] for d in draws if np.ptp(y[d]) > 0 and np.ptp(p[d]) > 0]
    assert 0 < len(ref) < 400
    assert ci["pearson"] == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), abs=1e-12)


def test_undefined_metric_has_no_interval_even_if_some_resamples_are_defined():
    # no strong triplet in the test set: AUROC/AUPRC are undefined, and so are their intervals
    y = np.array([0.1, 0.2, 0.0, 0.05])
    ci = M.bootstrap_ci(y, y, n_boot=50, metrics=("auroc", "auprc"))
    assert all(np.isnan(v).all() for v in ci.values())


def test_format_summary_says_na_not_nan(y):
    import pandas as pd

    table = pd.DataFrame({"model": ["constant", "constant"], "split": ["random"] * 2, "fold": [0, 1],
                          "pearson": [np.nan, np.nan]})
    wide = M.format_summary(M.summarize(table), metrics=("pearson",))
    assert wide.loc["constant", ("pearson", "random")] == "n/a"


def test_spread_calibration_table_standard_error_and_undefined_spearman(y):
    rng = np.random.default_rng(3)
    spread = rng.uniform(0.01, 0.1, len(y))
    pred = y + rng.normal(size=len(y)) * spread
    cal = spread_calibration_table(y, pred, spread, n_bins=4)
    err = np.abs(y - pred)
    edges = np.quantile(spread, [0, .25, .5, .75, 1])
    for k, row in cal.iterrows():
        sel = (spread >= edges[k]) & ((spread < edges[k + 1]) if k < 3 else True)
        assert row["n"] == sel.sum()
        assert row["abs_error_sem"] == pytest.approx(err[sel].std(ddof=1) / np.sqrt(sel.sum()))
    assert np.isnan(spread_calibration_table(y, pred, np.zeros(len(y))).attrs["spearman"])
    assert np.isnan(spread_calibration_table([np.nan], [0.0], [0.1]).attrs["spearman"])


def test_summary_table_writes_undefined_fractions_and_seed_spreads_as_n_a():
    import pandas as pd

    from dango_nb.eval.runner import EvaluationResult, summary_table

    metrics = pd.DataFrame({"model": ["additive", "dango", "dango"], "split": ["gene2"] * 3, "fold": [0, 0, 0],
                            "seed": [0, 0, 1], "pearson": [np.nan, 0.361, np.nan], "ceiling": [0.8] * 3})
    result = EvaluationResult(metrics, M.summarize(metrics), None, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {})
    table = summary_table(result, ("pearson",))
    cells = [str(v) for v in table.to_numpy().ravel()]
    assert not any("nan" in c.lower() for c in cells), cells
    assert table.loc["additive", ("pearson / ceiling", "gene2")] == "n/a"
    assert table.loc["dango", ("pearson: sd over seeds", "gene2")] == "n/a (2 seeds)"
