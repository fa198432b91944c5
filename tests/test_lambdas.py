import itertools
import json

import numpy as np
import pandas as pd
import pytest

from dango_nb.data.string_db import StringNetworks
from dango_nb.lambdas import LAMBDA_COLUMNS, LambdaResult, determine_lambdas


def edges(pairs, genes):
    """Edge table from pairs of gene NAMES (any order) over the vocabulary ``genes``."""
    pos = {g: k for k, g in enumerate(genes)}
    ij = sorted((min(pos[a], pos[b]), max(pos[a], pos[b])) for a, b in pairs)
    return pd.DataFrame({"i": np.array([p[0] for p in ij], dtype=np.int64),
                         "j": np.array([p[1] for p in ij], dtype=np.int64),
                         "weight": np.full(len(ij), 0.5, dtype=np.float32)})


def test_hand_built_counts_and_gene_matching_by_name():
    # earlier vocabulary A..F; later vocabulary in another order, without F, with a new gene G
    g9 = ["A", "B", "C", "D", "E", "F"]
    g11 = ["G", "E", "D", "C", "B", "A"]
    # coexpression: earlier edges among A-E plus F; later adds 2 new edges among shared genes,
    # one edge to the new gene G (not counted) and drops A-B (a lost edge does not count)
    e9 = [("A", "B"), ("B", "C"), ("C", "D"), ("D", "E"), ("E", "F")]
    e11 = [("B", "C"), ("C", "D"), ("D", "E"), ("A", "C"), ("B", "E"), ("G", "A")]
    # fusion: only A, B, C have edges in both; nothing new
    f9 = [("A", "B"), ("B", "C"), ("D", "E")]
    f11 = [("A", "B"), ("C", "A")]
    earlier = StringNetworks("9.1", g9, {"coexpression": edges(e9, g9), "fusion": edges(f9, g9)})
    later = StringNetworks("11.0", g11, {"coexpression": edges(e11, g11), "fusion": edges(f11, g11)})
    res = determine_lambdas(earlier, later)
    assert isinstance(res, LambdaResult)
    assert list(res.table.columns) == LAMBDA_COLUMNS
    co = res.table.set_index("channel").loc["coexpression"]
    # genes with an edge in both: A, B, C, D, E (F only earlier, G only later) -> 10 pairs
    assert co.genes_in_both == 5 and co.n_pairs == 10
    assert co.non_edges_earlier == 10 - 4  # A-B, B-C, C-D, D-E
    assert co.new_edges == 2  # A-C, B-E
    assert co.pct_decreased_zeros == pytest.approx(100 * 2 / 6)
    assert co["lambda"] == 0.1
    fu = res.table.set_index("channel").loc["fusion"]
    # A, B, C in both (D, E only earlier): 3 pairs, earlier edges A-B, B-C -> 1 non-edge (A-C), which
    # became an edge -> 100 %
    assert (fu.genes_in_both, fu.n_pairs, fu.non_edges_earlier, fu.new_edges) == (3, 3, 1, 1)
    assert fu.pct_decreased_zeros == pytest.approx(100.0)
    assert res.lambdas == {"coexpression": 0.1, "fusion": 0.1}


def _grid(m, n_new, extra_earlier=()):
    """m genes, no earlier edges except a path touching every gene, then n_new new later edges."""
    genes = [f"G{k:03d}" for k in range(m)]
    path = [(genes[k], genes[k + 1]) for k in range(m - 1)]
    existing = {frozenset(p) for p in path}
    candidates = [p for p in itertools.combinations(genes, 2) if frozenset(p) not in existing]
    new = candidates[:n_new]
    return genes, path, new


def test_threshold_is_strict_at_one_percent():
    # m = 201 genes: 20100 pairs, a path of 200 earlier edges -> 19900 non-edges; 199 new = exactly 1 %
    genes, path, new = _grid(201, 200)
    earlier = StringNetworks("9.1", genes, {"database": edges(path, genes)})
    at = StringNetworks("11.0", genes, {"database": edges(path + new[:199], genes)})
    above = StringNetworks("11.0", genes, {"database": edges(path + new[:200], genes)})
    r_at = determine_lambdas(earlier, at)
    assert r_at.table["non_edges_earlier"].item() == 19900
    assert r_at.table["pct_decreased_zeros"].item() == pytest.approx(1.0, abs=0, rel=1e-15)
    assert r_at.lambdas == {"database": 1.0}
    r_above = determine_lambdas(earlier, above)
    assert r_above.table["pct_decreased_zeros"].item() > 1.0
    assert r_above.lambdas == {"database": 0.1}
    # custom thresholds and levels
    r = determine_lambdas(earlier, above, threshold_pct=2.0, low=0.05, high=0.9)
    assert r.lambdas == {"database": 0.9}
    r = determine_lambdas(earlier, above, threshold_pct=0.5, low=0.05, high=0.9)
    assert r.lambdas == {"database": 0.05}


def test_degenerate_and_missing_channels():
    genes = ["A", "B", "C"]
    earlier = StringNetworks("9.1", genes, {"fusion": edges([("A", "B")], genes),
                                            "neighborhood": edges([("A", "B"), ("B", "C"), ("A", "C")], genes)})
    later = StringNetworks("11.0", genes, {"fusion": edges([], genes),
                                           "neighborhood": edges([("A", "B"), ("B", "C")], genes)})
    res = determine_lambdas(earlier, later).table.set_index("channel")
    assert res.loc["fusion", "genes_in_both"] == 0 and np.isnan(res.loc["fusion", "pct_decreased_zeros"])
    assert res.loc["fusion", "lambda"] == 1.0
    assert res.loc["neighborhood", "non_edges_earlier"] == 0
    assert np.isnan(res.loc["neighborhood", "pct_decreased_zeros"]) and res.loc["neighborhood", "lambda"] == 1.0
    with pytest.raises(KeyError, match="neighborhood"):
        determine_lambdas(earlier, StringNetworks("11.0", genes, {"fusion": edges([], genes)}))


def test_recovers_planted_lambdas_on_the_embedded_benchmark(tmp_path):
    synthetic = pytest.importorskip("dango_nb.data.synthetic")
    from dango_nb.data.string_db import read_string_detailed

    files = synthetic.generate_benchmark(tmp_path / "bench", preset="tiny", seed=0)
    truth = json.loads(files.ground_truth_json.read_text())
    res = determine_lambdas(read_string_detailed(files.string_v9_1), read_string_detailed(files.string_v11_0))
    assert set(res.lambdas) == set(truth["planted_lambda"])
    assert res.lambdas == {k: float(v) for k, v in truth["planted_lambda"].items()}
    pct = res.table.set_index("channel")["pct_decreased_zeros"]
    for ch, planted in truth["planted_decreased_zeros_pct"].items():
        assert pct[ch] == pytest.approx(planted, rel=1e-9, abs=1e-12), ch
    # the benchmark plants both outcomes, so the test can tell channels apart
    assert {0.1, 1.0} <= set(res.lambdas.values())
