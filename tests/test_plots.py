import numpy as np
import pandas as pd
import pytest

from dango_nb import plots
from dango_nb.schedules import get_schedule

CHANNELS = ["neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database"]


def history(schedule="LinearUntilUniform", T=4, epochs=10):
    s = get_schedule(schedule, T)
    rows = []
    for e in range(epochs):
        w_rec, w_int = s.weights(e)
        rec, inter = 1.0 / (e + 1), 2.0 / (e + 2)
        row = dict(epoch=e, alpha=s.alpha(e), w_rec=w_rec, w_int=w_int, loss_total=w_rec * rec + w_int * inter,
                   loss_rec=rec, loss_int=inter, loss_rec_weighted=w_rec * rec, loss_int_weighted=w_int * inter,
                   lr=1e-3, train_pearson=e / epochs, train_spearman=e / epochs, train_mse=inter,
                   val_pearson=np.nan, val_spearman=np.nan, val_mse=np.nan, time_s=0.01)
        row.update({f"loss_rec_{c}": rec * (i + 1) for i, c in enumerate(CHANNELS)})
        rows.append(row)
    return pd.DataFrame(rows)


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]


def test_schedule_alpha_matches_schedule():
    ep, a, w = plots.schedule_alpha(get_schedule("LinearUntilFlipped", 40), 51)
    assert list(a[[0, 10, 20, 30, 40, 50]]) == [1, .75, .5, .25, 0, 0]
    np.testing.assert_allclose(w, 1 - a)
    _, a2, w2 = plots.schedule_alpha(get_schedule("PaperTwoStage", 5), 8)
    assert a2[7] == pytest.approx(0.001) and w2[7] == 1.0 and w2[0] == 0.0


def test_final_results_layout_and_numbers(tmp_path):
    h = history()
    rng = np.random.default_rng(0)
    yt = rng.normal(size=50)
    yp = yt + 0.1 * rng.normal(size=50)
    fig = plots.final_results(h, yt, yp, "LinearUntilUniform", 4, synthetic=True)
    axes = fig.axes
    assert len(axes) == 6
    r = np.corrcoef(yt, yp)[0, 1]
    assert f"Pearson r = {r:.3f}" in axes[1].get_title()
    assert f"MSE = {np.mean((yp - yt) ** 2):.3g}" in axes[3].get_title()
    # panel 6 carries alpha(epoch) of the history
    np.testing.assert_allclose(axes[5].lines[0].get_ydata(), h["alpha"])
    # panel 1 total loss, panel 3 both unweighted losses, panel 5 weighted (zeros masked for the log axis)
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), h["loss_total"])
    assert [ln.get_label() for ln in axes[2].lines[:2]] == ["reconstruction", "interaction"]
    assert np.isnan(axes[4].lines[1].get_ydata()[0])  # w_int = 0 at epoch 0
    assert "synthetic" in fig._suptitle.get_text() and "transition_epoch = 4" in fig._suptitle.get_text()
    out = plots.save_figure(fig, tmp_path / "sub" / "final_results.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_final_results_paper_two_stage_shows_w_int():
    h = history("PaperTwoStage", 4)
    fig = plots.final_results(h, [0, 1, 2], [0, 1, 3], "PaperTwoStage", 4)
    labels = [ln.get_label() for ln in fig.axes[5].lines]
    assert any("w_int" in lb for lb in labels)
    assert "synthetic" not in fig._suptitle.get_text()


def test_schedule_comparison_final_pearsons():
    rng = np.random.default_rng(1)
    res = {}
    for s in ["PreThenPost", "LinearUntilUniform"]:
        yt = rng.normal(size=20)
        res[s] = (history(s), yt, yt + rng.normal(size=20))
    fig = plots.schedule_comparison(res, transition_epoch=4)
    legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    for s, (_, yt, yp) in res.items():
        assert f"{s} (final r = {np.corrcoef(yt, yp)[0, 1]:.3f})" in legend


def test_lambda_bars_marks_threshold_reference_and_lambdas():
    tab = pd.DataFrame({"channel": CHANNELS, "pct_decreased_zeros": [0.5, 0.1, 0.03, 2.5, 1.5, 0.2],
                        "lambda": [1.0, 1.0, 1.0, 0.1, 0.1, 1.0]})
    fig = plots.lambda_bars(tab, {"cooccurence": 0.02, "coexpression": 2.42}, synthetic=True)
    ax = fig.axes[0]
    t = texts(fig)
    assert sum("λ = 0.1" in s for s in t) == 2 and sum("λ = 1" in s for s in t) == 4
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "coexpression\n(paper 2.42%)" in ticks and "cooccurence\n(paper 0.02%)" in ticks and "fusion" in ticks
    assert sum(ln.get_color() == "crimson" for ln in ax.lines) == 2
    assert [p.get_height() for p in ax.patches] == pytest.approx(tab["pct_decreased_zeros"].tolist())
    assert any(ln.get_ydata()[0] == 1.0 and ln.get_linestyle() == "--" for ln in ax.lines)


def test_pretraining_figures():
    fig = plots.reconstruction_curves(history())
    assert [ln.get_label() for ln in fig.axes[0].lines] == CHANNELS
    with pytest.raises(ValueError, match="loss_rec_<channel>"):
        plots.reconstruction_curves(pd.DataFrame({"epoch": [0], "loss_rec": [1.0]}))
    fig = plots.edge_recovery_auroc(dict(zip(CHANNELS, [0.9, 0.5, np.nan, 0.7, 0.8, 0.6])))
    assert "n/a" in texts(fig) and "0.900" in texts(fig)
    w = np.random.default_rng(0).dirichlet(np.ones(6), size=30)
    fig = plots.meta_weight_distribution(w, CHANNELS)
    assert "30 genes" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"\(genes, 6\)"):
        plots.meta_weight_distribution(w[:, :3], CHANNELS)


def legend_points(ax):
    """Legend label -> number of drawn points in that label's colour (alpha ignored)."""
    from matplotlib.colors import to_rgb

    counts = {}
    for c in ax.collections:
        fc = c.get_facecolors()
        rgb = [tuple(np.round(fc[min(i, len(fc) - 1), :3], 4)) for i in range(len(c.get_offsets()))]
        for k in rgb:
            counts[k] = counts.get(k, 0) + 1
    leg = ax.get_legend()
    out = {}
    for h, t in zip(leg.legend_handles, leg.get_texts()):
        colour = h.get_facecolor()[0] if hasattr(h, "get_offsets") else h.get_markerfacecolor()
        out[t.get_text()] = counts.get(tuple(np.round(to_rgb(colour), 4)), 0)
    return out


def test_embedding_projection_colours_modules():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    labels = np.array([0] * 10 + [1] * 10 + [None] * 20, dtype=object)
    fig = plots.embedding_projection(emb, labels)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["no module", "module 0", "module 1"]
    assert legend_points(ax) == {"no module": 20, "module 0": 10, "module 1": 10}
    assert sum(len(c.get_offsets()) for c in ax.collections) == 40
    labels = np.array([0] * 12 + [1] * 10 + [2] * 8 + [3] * 10, dtype=object)
    fig = plots.embedding_projection(emb, labels, max_groups=2)
    assert legend_points(fig.axes[0]) == {"2 other modules": 18, "module 0": 12, "module 1": 10}
    assert "PC1" in ax.get_xlabel()
    fig = plots.embedding_projection(emb, None)
    assert len(fig.axes[0].collections[0].get_offsets()) == 40


def test_evaluation_figures():
    rng = np.random.default_rng(0)
    yt = rng.normal(size=100)
    fig = plots.predicted_vs_measured({"random": (yt, yt + rng.normal(size=100)), "gene1": (yt, -yt)})
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "gene1: Pearson r = -1.000 (n = 100)"
    pred = np.r_[np.full(10, -0.1), np.full(30, 0.0)]
    pv = np.r_[np.full(8, 0.01), np.full(2, 0.5), np.full(3, 0.01), np.full(27, 0.5)]
    fig = plots.pvalue_vs_prediction({"random": (pred, pv, pred), "gene1": (pred, pv, pred)})
    assert fig.axes[0].get_title() == "random: p < 0.05 in 80% of 10 predicted strong\nvs 10% of the other 30"
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 1], -np.log10(pv))
    spread = rng.uniform(0.1, 1, size=300)
    err = rng.normal(size=300) * spread
    fig = plots.spread_calibration(np.zeros(300), err, spread, synthetic=True)
    assert "Spearman" in fig._suptitle.get_text()
    m = pd.DataFrame({"model": ["dango", "dango", "mean", "mean"], "split": ["random"] * 4, "fold": [0, 1, 0, 1],
                      "pearson": [0.5, 0.6, 0.0, 0.01]})
    fig = plots.metrics_bars(m, ceiling=0.8)
    assert [p.get_height() for c in fig.axes[0].containers for p in c] == pytest.approx([0.55, 0.005])
    assert any("noise ceiling (0.800)" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    fig = plots.metrics_bars(m, ceiling={"random": 0.7, "gene1": 0.5})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["random", "noise ceiling random (0.700)"]


def test_pearson_handles_nan_and_constant():
    assert plots.pearson([1, 2, np.nan, 4], [2, 4, 5, 8]) == pytest.approx(1.0)
    assert np.isnan(plots.pearson([1, 1, 1], [1, 2, 3]))


def all_text(fig):
    out = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return out


def test_pvalue_title_without_predicted_strong():
    pred = np.full(20, 0.02)  # nothing predicted at or below -0.05
    pv = np.r_[np.full(5, 0.01), np.full(15, 0.5)]
    fig = plots.pvalue_vs_prediction({"gene1": (pred, pv, pred)})
    assert fig.axes[0].get_title() == ("gene1: no predicted strong interactions (tau <= -0.05)\n"
                                       "p < 0.05 in 25% of all 20")
    fig = plots.pvalue_panel(np.full(4, -0.1), np.full(4, 0.01), np.zeros(4), name="x")
    assert fig.axes[0].get_title() == "x: p < 0.05 in 100% of 4 predicted strong\n(no other triplets)"
    assert len(fig.axes) == 2  # its own figure gets a colour bar
    assert not any("nan" in t for t in all_text(fig))


def test_undefined_pearson_is_written_undefined():
    yt = np.linspace(-0.2, 0.2, 30)
    const = np.full(30, 1 / 3)
    fig = plots.final_results(history(), yt, const, "PreThenPost", 4)
    assert "Pearson r = undefined (n = 30)" in fig.axes[1].get_title()
    fig2 = plots.predicted_vs_measured({"random": (yt, const)})
    fig3 = plots.schedule_comparison({"PreThenPost": (history("PreThenPost"), yt, const)})
    assert "PreThenPost (final r = undefined)" in all_text(fig3)
    for f in (fig, fig2, fig3):
        assert not any("nan" in t.lower() for t in all_text(f)), all_text(f)


def errorbar_spans(ax):
    from matplotlib.container import ErrorbarContainer

    spans = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            (seg,) = c.lines[2][0].get_segments()
            spans.append((seg[0][1], seg[1][1]))
    return spans


def test_metrics_bars_one_fold_uses_bootstrap_interval_and_marks_undefined():
    m = pd.DataFrame({"model": ["dango", "mean", "constant"], "split": ["random"] * 3, "fold": [0, 0, 0],
                      "pearson": [0.5, 0.02, np.nan], "pearson_ci_low": [0.4, np.nan, np.nan],
                      "pearson_ci_high": [0.55, np.nan, np.nan]})
    fig = plots.metrics_bars(m)
    ax = fig.axes[0]
    assert errorbar_spans(ax) == [pytest.approx((0.4, 0.55))]  # undefined interval: no bar drawn
    assert [t.get_text() for t in ax.texts] == ["n/a"] and ax.texts[0].get_position()[0] == pytest.approx(2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dango", "mean", "constant"]
    assert "one fold, 95% bootstrap CI" in fig._suptitle.get_text()
    # several folds: sd over folds (ddof=1, as metrics.summarize)
    m = pd.DataFrame({"model": ["a"] * 3, "split": ["random"] * 3, "fold": [0, 1, 2], "pearson": [0.4, 0.5, 0.9]})
    fig = plots.metrics_bars(m)
    (line,) = fig.axes[0].lines
    sd = np.std([0.4, 0.5, 0.9], ddof=1)
    ends = line.get_ydata()[np.isfinite(line.get_ydata())]  # the bar and its caps
    np.testing.assert_allclose([ends.min(), ends.max()], [0.6 - sd, 0.6 + sd])
    assert "mean ± sd over 3 folds" in fig._suptitle.get_text()


def test_spread_calibration_draws_the_ensemble_table():
    from dango_nb.eval.ensemble import spread_calibration_table

    rng = np.random.default_rng(4)
    spread = rng.uniform(0.01, 0.1, 400)
    y = rng.normal(0, 0.05, 400)
    pred = y + rng.normal(size=400) * spread
    y[:5] = np.nan
    fig = plots.spread_calibration(y, pred, spread, n_bins=5)
    cal = spread_calibration_table(y, pred, spread, n_bins=5)
    binned = next(c for c in fig.axes[0].containers if c.get_label().startswith("binned"))
    np.testing.assert_allclose(binned.lines[0].get_xdata(), cal["spread_mean"])
    np.testing.assert_allclose(binned.lines[0].get_ydata(), cal["abs_error_mean"])
    assert f"Spearman(spread, |error|) = {cal.attrs['spearman']:.3f}" in fig._suptitle.get_text()
    assert len(fig.axes[0].collections[0].get_offsets()) == 395
    fig = plots.spread_calibration(y, pred, np.zeros(400))  # one member: no spread, no correlation
    assert "Spearman(spread, |error|) = undefined" in fig._suptitle.get_text()


def test_panels_draw_on_a_given_axes_without_pyplot():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    rng = np.random.default_rng(0)
    fig = Figure(layout="constrained")
    axs = fig.subplots(3, 4).ravel()
    h = history()
    yt = rng.normal(size=40)
    w = rng.dirichlet(np.ones(6), size=30)
    m = pd.DataFrame({"model": ["a", "a"], "split": ["random"] * 2, "fold": [0, 1], "pearson": [0.5, 0.6]})
    calls = [
        lambda ax: plots.plot_alpha(h["epoch"], h["alpha"], ax=ax),
        lambda ax: plots.lambda_bars(pd.DataFrame({"channel": CHANNELS, "pct_decreased_zeros": np.ones(6),
                                                   "lambda": np.ones(6)}), ax=ax),
        lambda ax: plots.reconstruction_curves(h, ax=ax),
        lambda ax: plots.edge_recovery_auroc(dict(zip(CHANNELS, np.linspace(0.5, 1, 6))), ax=ax),
        lambda ax: plots.meta_weight_distribution(w, CHANNELS, synthetic=True, ax=ax),
        lambda ax: plots.embedding_projection(rng.normal(size=(30, 4)), ax=ax),
        lambda ax: plots.loss_curves(h, ["loss_total"], ax=ax),
        lambda ax: plots.true_vs_predicted(yt, yt, ax=ax),
        lambda ax: plots.error_histogram(yt, yt + 1, ax=ax),
        lambda ax: plots.pvalue_panel(yt, np.full(40, 0.1), yt, ax=ax),
        lambda ax: plots.spread_calibration(yt, yt + 0.1, np.abs(yt), ax=ax),
        lambda ax: plots.metrics_bars(m, ax=ax),
    ]
    for ax, call in zip(axs, calls):
        assert call(ax) is fig
    assert len(fig.axes) == 12 and fig._suptitle is None  # panels on a given axes leave the figure alone
    assert axs[4].get_title().endswith("[synthetic benchmark]")
    assert plt.get_fignums() == before
    # each panel alone makes its own figure
    assert plots.true_vs_predicted(yt, yt) is not fig


def test_channel_colours_are_stable_and_violins_use_them():
    col = plots.channel_colours(CHANNELS)
    assert plots.channel_colours(["database", "fusion"]) == [col[5], col[1]]
    assert len(set(plots.channel_colours(["textmining", "other"]) + col)) == 8
    w = np.random.default_rng(0).dirichlet(np.ones(6), size=50)
    ax = plots.meta_weight_distribution(w, CHANNELS).axes[0]
    bodies = [c for c in ax.collections if len(c.get_paths())]
    assert len(bodies) == 6
    np.testing.assert_allclose([b.get_facecolor()[0][:3] for b in bodies], np.array(col), atol=1e-6)


def test_metrics_bars_show_each_seed_over_the_mean_bar():
    """A model scored on several seeds: bar = mean over seeds, each seed a point, no bootstrap
    interval (it would hide the seed spread); a single-seed model keeps its interval."""
    m = pd.DataFrame({"model": ["dango", "dango", "additive"], "split": ["gene2"] * 3, "fold": [0, 0, 0],
                      "seed": [0, 1, 0], "pearson": [0.361, 0.018, 0.2], "pearson_ci_low": [0.3, 0.0, 0.15],
                      "pearson_ci_high": [0.4, 0.05, 0.25]})
    fig = plots.metrics_bars(m)
    ax = fig.axes[0]
    assert [p.get_height() for c in ax.containers if not hasattr(c, "lines") for p in c] == \
        pytest.approx([0.1895, 0.2])
    (points,) = [c for c in ax.collections if len(c.get_offsets()) == 2]
    np.testing.assert_allclose(sorted(points.get_offsets()[:, 1]), [0.018, 0.361])
    np.testing.assert_allclose(points.get_offsets()[:, 0], 0, atol=0.05)  # on the dango bar
    assert errorbar_spans(ax) == [pytest.approx((0.15, 0.25))]  # additive only
    assert ax.get_ylabel() == "pearson (mean over seeds)"
    assert "bar = mean of 2 seeds, points = each seed" in fig._suptitle.get_text()
    assert "each seed (mean over folds)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_final_results_labels_the_loss_weights_of_each_schedule():
    """alpha is the share of reconstruction only where w_int = 1 - alpha; PaperTwoStage's weights
    (1, 0) then (0.001, 1) are two weights, and the panel says so."""
    yt = np.linspace(-0.2, 0.2, 30)
    ax = plots.final_results(history("PaperTwoStage"), yt, yt, "PaperTwoStage", 4).axes[5]
    assert ax.get_title() == ("loss weights vs epoch: w_rec (reconstruction), w_int (interaction);\n"
                              "they do not sum to 1")
    assert ax.get_ylabel() == "loss weight"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["w_rec (weight on reconstruction)",
                                                                   "w_int (weight on interaction)"]
    assert [t.get_text() for t in ax.texts] == ["w_rec = 0.001 at the last epoch"]
    ax = plots.final_results(history("LinearUntilUniform"), yt, yt, "LinearUntilUniform", 4).axes[5]
    assert ax.get_title() == "alpha vs epoch: the weight on reconstruction\n(interaction gets 1 - alpha)"
    assert ax.get_ylabel() == "alpha" and len(ax.get_lines()) == 2  # alpha and the transition line


def test_pvalue_panel_draws_p_at_or_below_the_floor_at_the_cap_and_says_so():
    pred = np.array([-0.1, -0.1, 0.0, 0.0, 0.0])
    pv = np.array([0.0, 1e-16, 1e-20, 0.01, 0.5])  # p = 0 and p below 1e-16 are not dropped
    ax = plots.pvalue_panel(pred, pv, pred).axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], [16, 16, 16, 2, -np.log10(0.5)])
    assert ax.get_ylabel() == "-log10 screen p-value, capped at 16\n(p < 1e-16 and p = 0 drawn at 16)"
    assert "3 at the cap" in [t.get_text() for t in ax.texts]


def test_spread_calibration_names_the_splits_it_pools():
    rng = np.random.default_rng(1)
    spread = rng.uniform(0.1, 1, size=50)
    y = np.r_[np.full(49, 0.0), np.nan]  # the NaN target is left out of the counts too
    split = np.array(["random"] * 30 + ["gene1"] * 20, dtype=object)
    fig = plots.spread_calibration(y, rng.normal(size=50) * spread, spread, split=split)
    assert "test triplets pooled over random (30), gene1 (19)" in fig._suptitle.get_text()
    fig = plots.spread_calibration(y[:30], spread[:30], spread[:30], split=split[:30])
    assert "test triplets of random (30)" in fig._suptitle.get_text()
