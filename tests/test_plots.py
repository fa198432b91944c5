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
    assert [l.get_label() for l in axes[2].lines[:2]] == ["reconstruction", "interaction"]
    assert np.isnan(axes[4].lines[1].get_ydata()[0])  # w_int = 0 at epoch 0
    assert "synthetic" in fig._suptitle.get_text() and "transition_epoch = 4" in fig._suptitle.get_text()
    out = plots.save_figure(fig, tmp_path / "sub" / "final_results.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_final_results_paper_two_stage_shows_w_int():
    h = history("PaperTwoStage", 4)
    fig = plots.final_results(h, [0, 1, 2], [0, 1, 3], "PaperTwoStage", 4)
    labels = [l.get_label() for l in fig.axes[5].lines]
    assert any("w_int" in l for l in labels)
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
    assert sum(l.get_color() == "crimson" for l in ax.lines) == 2
    assert [p.get_height() for p in ax.patches] == pytest.approx(tab["pct_decreased_zeros"].tolist())
    assert any(l.get_ydata()[0] == 1.0 and l.get_linestyle() == "--" for l in ax.lines)


def test_pretraining_figures():
    fig = plots.reconstruction_curves(history())
    assert [l.get_label() for l in fig.axes[0].lines] == CHANNELS
    with pytest.raises(ValueError, match="loss_rec_<channel>"):
        plots.reconstruction_curves(pd.DataFrame({"epoch": [0], "loss_rec": [1.0]}))
    fig = plots.edge_recovery_auroc(dict(zip(CHANNELS, [0.9, 0.5, np.nan, 0.7, 0.8, 0.6])))
    assert "n/a" in texts(fig) and "0.900" in texts(fig)
    w = np.random.default_rng(0).dirichlet(np.ones(6), size=30)
    fig = plots.meta_weight_distribution(w, CHANNELS)
    assert "30 genes" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"\(genes, 6\)"):
        plots.meta_weight_distribution(w[:, :3], CHANNELS)


def test_embedding_projection_colours_modules():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    labels = np.array([0] * 10 + [1] * 10 + [None] * 20, dtype=object)
    fig = plots.embedding_projection(emb, labels)
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.collections] == ["no module", "module 0", "module 1"]
    assert [len(c.get_offsets()) for c in ax.collections] == [20, 10, 10]
    labels = np.array([0] * 12 + [1] * 10 + [2] * 8 + [3] * 10, dtype=object)
    fig = plots.embedding_projection(emb, labels, max_groups=2)
    got = {c.get_label(): len(c.get_offsets()) for c in fig.axes[0].collections}
    assert got == {"2 other modules": 18, "module 0": 12, "module 1": 10}
    assert "PC1" in ax.get_xlabel()
    fig = plots.embedding_projection(emb, None)
    assert len(fig.axes[0].collections[0].get_offsets()) == 40


def test_evaluation_figures():
    rng = np.random.default_rng(0)
    yt = rng.normal(size=100)
    fig = plots.predicted_vs_measured({"random": (yt, yt + rng.normal(size=100)), "gene1": (yt, -yt)})
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith("gene1: r = -1.000")
    pred = np.r_[np.full(10, -0.1), np.full(30, 0.0)]
    pv = np.r_[np.full(8, 0.01), np.full(2, 0.5), np.full(3, 0.01), np.full(27, 0.5)]
    fig = plots.pvalue_vs_prediction({"random": (pred, pv, pred), "gene1": (pred, pv, pred)})
    assert fig.axes[0].get_title() == "random: p < 0.05 in 80% of 10 predicted strong\nvs 10% of the other 30"
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 1], -np.log10(pv))
    spread = rng.uniform(0.1, 1, size=300)
    fig = plots.spread_calibration(spread, np.abs(rng.normal(size=300) * spread), synthetic=True)
    assert "Spearman" in fig.axes[0].get_title()
    m = pd.DataFrame({"model": ["dango", "dango", "mean", "mean"], "split": ["random"] * 4, "fold": [0, 1, 0, 1],
                      "pearson": [0.5, 0.6, 0.0, 0.01]})
    fig = plots.metrics_bars(m, ceiling=0.8)
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0.55, 0.005])
    assert any("noise ceiling (0.800)" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    fig = plots.metrics_bars(m, ceiling={"random": 0.7, "gene1": 0.5})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["noise ceiling random (0.700)", "random"]


def test_pearson_handles_nan_and_constant():
    assert plots.pearson([1, 2, np.nan, 4], [2, 4, 5, 8]) == pytest.approx(1.0)
    assert np.isnan(plots.pearson([1, 1, 1], [1, 2, 3]))
