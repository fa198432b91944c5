import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from dango_nb.eval.baselines import AdditiveGeneModel
from dango_nb.errors import DataFormatError
from dango_nb.eval.prediction import (BaselineScorer, iter_triplet_chunks, n_triplets, read_gene_list,
                              read_triplet_list, score_all_triplets, score_triplets, unrank_triplets,
                              write_predictions)

GENES = [f"Y{i:03d}W" for i in range(40)]


class Recorder:
    """Scorer with a known formula that records the chunk sizes it was given."""

    def __init__(self):
        self.genes = GENES
        self.w = np.linspace(-0.05, 0.03, len(GENES))
        self.calls = []

    def score(self, idx):
        self.calls.append(len(idx))
        return self.w[idx].sum(axis=1), np.abs(self.w[idx]).std(axis=1)


@pytest.mark.parametrize("n", [3, 4, 9, 25])
def test_unranking_matches_itertools(n):
    ref = np.array(list(itertools.combinations(range(n), 3)))
    assert np.array_equal(unrank_triplets(n, np.arange(n_triplets(n))), ref)
    for cs in (1, 5, 1000):
        assert np.array_equal(np.concatenate(list(iter_triplet_chunks(n, cs))), ref)


def test_unranking_large_n_spot_check():
    n = 6607  # the full yeast vocabulary: C(n, 3) ~ 4.8e10 does not fit a dense enumeration
    r = np.array([0, 1, n_triplets(n) - 1, 12_345_678_901, 9_999_999])
    t = unrank_triplets(n, r)
    i, j, k = t.T
    # independent rank formula: triplets starting below a, pairs below b after a, then k offset
    rank = [math.comb(n, 3) - math.comb(n - a, 3) + math.comb(n - a - 1, 2) - math.comb(n - b, 2) + (c - b - 1)
            for a, b, c in t]
    assert rank == r.tolist()
    assert ((i < j) & (j < k) & (k < n)).all()
    with pytest.raises(ValueError, match="ranks"):
        unrank_triplets(5, np.array([10]))


def test_all_triplets_exact_count_and_chunking_invariant():
    scorer = Recorder()
    genes = GENES[:17]
    full = score_all_triplets(scorer, genes, threshold=None, chunk_size=10**6, progress=False)
    assert len(full) == math.comb(17, 3) == 680
    assert full.attrs["n_scored"] == 680
    assert list(full.columns) == ["gene1", "gene2", "gene3", "prediction", "spread"]
    ref = [(a, b, c) for a, b, c in itertools.combinations(genes, 3)]
    assert list(full[["gene1", "gene2", "gene3"]].itertuples(index=False, name=None)) == ref
    scorer.calls.clear()
    chunked = score_all_triplets(scorer, genes, threshold=None, chunk_size=37, progress=False)
    assert max(scorer.calls) <= 37 and sum(scorer.calls) == 680
    pd.testing.assert_frame_equal(full, chunked)


def test_threshold_count_checked_independently():
    scorer = Recorder()
    genes = GENES[5:30]
    got = score_all_triplets(scorer, genes, threshold=-0.05, chunk_size=100, progress=False)
    pos = {g: GENES.index(g) for g in genes}
    brute = [(a, b, c) for a, b, c in itertools.combinations(genes, 3)
             if scorer.w[[pos[a], pos[b], pos[c]]].sum() <= -0.05]
    assert 0 < len(brute) < math.comb(25, 3)
    assert list(got[["gene1", "gene2", "gene3"]].itertuples(index=False, name=None)) == brute
    assert (got["prediction"] <= -0.05).all()
    above = score_all_triplets(scorer, genes, threshold=-0.05, keep="above", chunk_size=64, progress=False)
    assert len(above) + len(got) == math.comb(25, 3) + int(np.isclose(got["prediction"], -0.05).sum())


def test_score_list_and_unknown_genes():
    scorer = Recorder()
    rows = [(GENES[3], GENES[1], GENES[2]), (GENES[0], GENES[5], GENES[9])]
    out = score_triplets(scorer, rows)
    assert list(out["gene1"]) == [GENES[3], GENES[0]]  # input order and names kept
    assert out["prediction"].tolist() == pytest.approx([scorer.w[[3, 1, 2]].sum(), scorer.w[[0, 5, 9]].sum()])
    frame = pd.DataFrame(rows, columns=["gene1", "gene2", "gene3"])
    pd.testing.assert_frame_equal(score_triplets(scorer, frame), out)
    with pytest.raises(KeyError, match="YNOPE.*YALSO") as err:
        score_triplets(scorer, [(GENES[0], "YNOPE", GENES[1]), ("YALSO", GENES[1], GENES[2])])
    assert "2 gene name(s)" in str(err.value)
    with pytest.raises(KeyError, match="YNOPE"):
        score_all_triplets(scorer, GENES[:5] + ["YNOPE"], progress=False)
    with pytest.raises(ValueError, match="repeats a gene"):
        score_triplets(scorer, [(GENES[0], GENES[0], GENES[1])])


def test_baseline_scorer_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    idx = np.stack([rng.choice(len(GENES), 3, replace=False) for _ in range(500)])
    b = rng.normal(0, 0.03, len(GENES))
    model = AdditiveGeneModel(alpha=1e-4).fit(idx, b[idx].sum(axis=1))
    scorer = BaselineScorer(model, GENES)
    out = score_all_triplets(scorer, GENES[:12], threshold=None, progress=False)
    assert len(out) == 220 and (out["spread"] == 0).all()
    for suffix in (".parquet", ".tsv"):
        path = tmp_path / f"pred{suffix}"
        write_predictions(out, path)
        back = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, sep="\t")
        assert list(back.columns) == list(out.columns) and len(back) == 220
        assert np.allclose(back["prediction"], out["prediction"])
    with pytest.raises(ValueError, match="prediction"):
        write_predictions(out.drop(columns="prediction"), tmp_path / "x.tsv")


def test_reading_gene_and_triplet_lists(tmp_path):
    p = tmp_path / "genes.txt"
    p.write_text("# my genes\nYAL001C\n\nYBR002W extra\n")
    assert read_gene_list(p) == ["YAL001C", "YBR002W"]
    p.write_text("gene\tmodule\nYAL001C\t1\nYBR002W\t2\n")
    assert read_gene_list(p) == ["YAL001C", "YBR002W"]
    p.write_text("# nothing\n")
    with pytest.raises(DataFormatError, match="genes.txt.*no gene names"):
        read_gene_list(p)
    t = tmp_path / "trip.tsv"
    t.write_text("gene1\tgene2\tgene3\nA\tB\tC\nD\tE\tF\n")
    assert read_triplet_list(t).values.tolist() == [["A", "B", "C"], ["D", "E", "F"]]
    t.write_text("A,B,C\nD E\n")
    with pytest.raises(DataFormatError, match=r"trip.tsv:2: expected three gene names"):
        read_triplet_list(t)


# ------------------------------------------------------------------------------ DANGO + CLI
def test_ensemble_scorer_from_run_directory(trained_run):
    from dango_nb.eval.ensemble import EnsembleScorer
    from dango_nb.train import list_checkpoints

    study, ckpt, _ = trained_run
    scorer = EnsembleScorer.from_checkpoints([ckpt], study.cell_graph)
    assert len(scorer.members) == len(list_checkpoints(ckpt)) == 2
    genes = study.genes[:9]
    out = score_all_triplets(scorer, genes, threshold=None, chunk_size=25, progress=False)
    assert len(out) == math.comb(9, 3)
    assert (out["spread"] > 0).all()
    # the cached-embedding path equals eval.prediction.predict member by member
    from dango_nb.eval.ensemble import member_predictions
    from dango_nb.eval.prediction import unrank_triplets

    idx = unrank_triplets(len(study.genes), np.arange(0, 50_000, 97))
    assert np.allclose(scorer.member_predictions(idx),
                       member_predictions(scorer.members, study.cell_graph, idx), atol=1e-6)
    one = score_triplets(scorer, out[["gene3", "gene1", "gene2"]].rename(
        columns={"gene3": "gene1", "gene1": "gene2", "gene2": "gene3"}))
    assert np.allclose(one["prediction"], out["prediction"], atol=1e-6)  # gene order does not matter
    with pytest.raises(ValueError, match="genes"):
        from torch_geometric.data import HeteroData

        g = HeteroData()
        g["gene"].num_nodes = 5
        EnsembleScorer.from_checkpoints([ckpt], g)


def test_cli_predict_genes_and_triplets(trained_run, tmp_path, capsys):
    from dango_nb.__main__ import main
    from dango_nb.eval.ensemble import EnsembleScorer

    study, ckpt, data_dir = trained_run
    genes = study.genes[10:20]
    gfile = tmp_path / "genes.txt"
    gfile.write_text("\n".join(genes) + "\n")
    src = ["--preset", "tiny", "--data-seed", "0", "--data-dir", str(data_dir)]
    out = tmp_path / "all.parquet"
    rc = main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all",
               "--chunk-size", "7", "--no-progress", *src])
    assert rc == 0
    table = pd.read_parquet(out)
    assert len(table) == math.comb(10, 3) == 120
    ref = score_all_triplets(EnsembleScorer.from_checkpoints([ckpt], study.cell_graph), genes, threshold=None,
                             progress=False)
    assert np.allclose(table["prediction"], ref["prediction"]) and np.allclose(table["spread"], ref["spread"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["scored"] == 120
    # thresholded: exactly the rows of the full table beyond the threshold
    thr = float(np.median(table["prediction"]))
    out2 = tmp_path / "strong.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out2),
                 "--threshold", str(thr), "--no-progress", *src]) == 0
    strong = pd.read_csv(out2, sep="\t")
    assert len(strong) == int((table["prediction"] <= thr).sum())
    # a triplet list; an unknown gene is a clear error and writes nothing
    tfile = tmp_path / "trip.tsv"
    tfile.write_text("gene1\tgene2\tgene3\n" + "\t".join(genes[:3]) + "\n")
    out3 = tmp_path / "list.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--triplets", str(tfile), "--out", str(out3), *src]) == 0
    assert len(pd.read_csv(out3, sep="\t")) == 1
    tfile.write_text("\t".join([genes[0], "YNOTAGENE", genes[1]]) + "\n")
    out4 = tmp_path / "bad.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--triplets", str(tfile), "--out", str(out4), *src]) == 2
    assert "YNOTAGENE" in capsys.readouterr().err and not out4.exists()
    # a checkpoint that recorded no data source needs one on the command line
    import torch

    from dango_nb.train import list_checkpoints

    saved = torch.load(list_checkpoints(ckpt)["path"].iloc[0], map_location="cpu", weights_only=True)
    saved.pop("source")
    bare = tmp_path / "bare" / "bare.pt"  # --out may not lie in a checkpoint's folder
    bare.parent.mkdir()
    torch.save(saved, bare)
    assert main(["predict", "--checkpoint", str(bare), "--genes", str(gfile), "--out", str(out)]) == 2
    assert "no data source: give --preset" in capsys.readouterr().err


def test_cli_predict_uses_recorded_source_and_checks_gene_names(trained_run, tmp_path, capsys):
    import torch

    from dango_nb.__main__ import main
    from dango_nb.train import list_checkpoints

    study, ckpt, data_dir = trained_run
    best = list_checkpoints(ckpt)["path"].iloc[0]
    saved = torch.load(best, map_location="cpu", weights_only=True)
    assert saved["genes"] == list(study.cell_graph["gene"].node_ids)
    assert saved["source"]["preset"] == "tiny" and saved["source"]["seed"] == 0
    gfile = tmp_path / "genes.txt"
    gfile.write_text("\n".join(study.genes[:6]) + "\n")
    out = tmp_path / "p.tsv"
    # the options the checkpoint records (shown when none are given) rebuild the cell graph
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all",
                 "--no-progress", "--preset", "tiny", "--data-seed", "0", "--data-dir", str(data_dir)]) == 0
    assert len(pd.read_csv(out, sep="\t")) == math.comb(6, 3)
    # another benchmark seed has other gene names: refused, nothing written
    bad = tmp_path / "bad.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(bad), "--all",
                 "--no-progress", "--preset", "tiny", "--data-seed", "1", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dango-nb predict: error: ") and "trained on" in err
    assert "the checkpoint records --preset tiny --data-seed 0" in err
    assert not bad.exists()
