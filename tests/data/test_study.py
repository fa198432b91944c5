"""load_study / load_study_from_files: generator -> files -> loaders -> cell_graph + triplets."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from dango_nb.data.graph import edge_type_name
from dango_nb.data.string_db import CHANNELS, write_dango_release
from dango_nb.data.study import Study, benchmark_dir, load_study, load_study_from_files
from dango_nb.data.synthetic import PRESETS, simulate, with_preset

GENES = ["gene1", "gene2", "gene3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def study(data_dir) -> Study:
    return load_study("tiny", seed=0, data_dir=data_dir)


@pytest.fixture(scope="module")
def truth():
    return simulate("tiny", 0)


def test_benchmark_lands_in_the_data_dir(study, data_dir):
    assert study.files.root == data_dir / "synthetic" / "tiny_seed0" == benchmark_dir("tiny", 0, data_dir)
    assert study.files.kuzmin_s1.is_file() and study.files.manifest.is_file()
    tuned = benchmark_dir(with_preset("tiny", n_query_pairs=5), 0, data_dir)
    assert tuned != study.files.root and tuned.name.startswith("tiny-") and tuned.name.endswith("_seed0")


def test_default_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DANGO_DATA_DIR", str(tmp_path))
    assert benchmark_dir("small", 2) == tmp_path / "synthetic" / "small_seed2"


def test_cell_graph_matches_the_generated_networks(study, truth):
    g = study.cell_graph
    v9 = truth.v9_1
    extra = PRESETS["tiny"].n_unlisted_screened
    assert g["gene"].num_nodes == len(v9.genes) + extra == len(g["gene"].node_ids)
    assert g["gene"].node_ids[: len(v9.genes)] == v9.genes
    assert sorted(g["gene"].node_ids[len(v9.genes):]) == g["gene"].node_ids[len(v9.genes):]
    assert study.source["screened_genes_not_in_string"] == extra
    assert [et[1] for et in g.edge_types] == [edge_type_name("9.1", c) for c in CHANNELS]
    n = g["gene"].num_nodes
    for c in CHANNELS:
        store = g["gene", edge_type_name("9.1", c), "gene"]
        e = v9.num_edges()[c]
        assert store.edge_index.shape == (2, 2 * e) and store.edge_index.dtype == torch.long
        assert store.edge_weight.shape == (2 * e,) and store.edge_weight.dtype == torch.float32
        assert int(store.edge_index.min()) >= 0 and int(store.edge_index.max()) < len(v9.genes)
        # both directions, weights = score / 1000 as generated
        ei = store.edge_index.numpy()
        fwd = set(zip(ei[0], ei[1]))
        assert all((b, a) in fwd for a, b in fwd)
        np.testing.assert_allclose(np.sort(store.edge_weight.numpy()[ei[0] < ei[1]]),
                                   np.sort(v9.channels[c]["weight"].to_numpy()), rtol=0, atol=1e-7)
    # screened genes absent from STRING are isolated nodes
    isolated = set(range(len(v9.genes), n))
    for et in g.edge_types:
        assert not isolated & set(g[et].edge_index[0].tolist())


def test_triplets_match_the_ground_truth(study, truth):
    gt = study.ground_truth
    t = study.triplets
    assert study.synthetic is True and gt["synthetic"] is True
    assert len(t) == gt["counts"]["n_triplets"] == len(truth.truth) == len(study.trigenic)
    assert t.indices.shape == (len(t), 3) and t.indices.dtype == torch.long
    assert t.targets.shape == (len(t),) and t.targets.dtype == torch.float32
    assert t.genes == study.cell_graph["gene"].node_ids
    frame = t.to_frame()
    pd.testing.assert_frame_equal(frame[GENES], study.trigenic[GENES].astype(object), check_dtype=False)
    np.testing.assert_allclose(t.targets.numpy(), study.trigenic["tau"].to_numpy(), rtol=0, atol=1e-6)
    merged = study.trigenic.merge(truth.truth, on=GENES, suffixes=("", "_truth"), validate="one_to_one")
    assert len(merged) == len(study.trigenic)
    np.testing.assert_allclose(merged["tau"], merged["tau_truth"], rtol=0, atol=1e-9)
    # planted signal aligned with the triplets reproduces the stored noise ceiling
    signal = study.planted_signal()
    assert signal.shape == (len(t),)
    r = stats.pearsonr(signal, study.trigenic["tau"])[0]
    assert math.isclose(r, gt["noise_ceiling"], abs_tol=1e-9)
    assert study.modules is not None and study.modules.index.is_unique
    assert set(study.genes[: len(study.networks.genes)]) <= set(study.modules.index)


def test_dropped_counts_from_every_stage(study):
    assert set(study.dropped) == {"string", "kuzmin", "triplets"}
    assert study.dropped["kuzmin"] == {"nan_tau": PRESETS["tiny"].nan_rows}
    assert study.dropped["triplets"] == {} and study.dropped["string"] == {}
    assert len(study.digenic) > 0 and set(study.digenic.columns) >= {"gene1", "gene2", "epsilon"}


def test_describe_is_a_small_labelled_table(study):
    d = study.describe()
    assert list(d.columns) == ["item", "value"]
    items = dict(zip(d["item"], d["value"]))
    assert items["synthetic"] is True and "SYNTHETIC" in items["data"]
    assert items["triplets"] == len(study.triplets)
    assert items["genes (cell graph)"] == study.cell_graph["gene"].num_nodes
    for c in CHANNELS:
        assert items[f"edges {c} (undirected)"] == study.networks.num_edges()[c]
    assert items["dropped (kuzmin)"].startswith(str(PRESETS["tiny"].nan_rows))
    assert "coexpression: 0.1" in items["planted lambdas"]
    assert study.summary().equals(d)
    assert "SYNTHETIC" in repr(study)


def test_later_release_is_available_for_lambda_determination(study, truth):
    later = study.read_release("11.0")
    assert later.version == "11.0" and later.num_edges() == truth.v11_0.num_edges()
    assert study.read_release("9.1") is study.networks
    with pytest.raises(KeyError, match="12.0"):
        study.read_release("12.0")


def test_second_load_reuses_the_files(study, data_dir):
    before = {k: p.stat().st_mtime_ns for k, p in study.files.data_files().items()}
    again = load_study("tiny", seed=0, data_dir=data_dir)
    assert {k: p.stat().st_mtime_ns for k, p in again.files.data_files().items()} == before
    assert torch.equal(again.triplets.indices, study.triplets.indices)


def test_load_from_files(study, tmp_path):
    # the generator's files, recognised as synthetic through their manifest
    same = load_study_from_files(study.files.string_v9_1, study.files.kuzmin_s1)
    assert same.synthetic and same.ground_truth == study.ground_truth
    assert torch.equal(same.triplets.indices, study.triplets.indices)
    # the same files without the manifest are treated as real data
    for p in (study.files.string_v9_1, study.files.kuzmin_s1):
        shutil.copy(p, tmp_path / p.name)
    real = load_study_from_files(tmp_path / study.files.string_v9_1.name, tmp_path / study.files.kuzmin_s1.name)
    assert real.synthetic is False and real.ground_truth is None and real.modules is None
    assert real.networks.version == "9.1"
    assert torch.equal(real.triplets.targets, study.triplets.targets)
    assert "SYNTHETIC" not in real.describe().to_string()
    with pytest.raises(ValueError, match="synthetic"):
        real.planted_signal()
    # a DANGO release folder
    folder = tmp_path / "dango"
    write_dango_release(folder, study.networks)
    dango = load_study_from_files(folder, tmp_path / study.files.kuzmin_s1.name)
    assert dango.networks.version == "9.1" and dango.networks.num_edges() == study.networks.num_edges()
    assert dango.cell_graph["gene"].node_ids == study.cell_graph["gene"].node_ids
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        load_study_from_files(tmp_path / "nowhere.txt", study.files.kuzmin_s1)
    with pytest.raises(FileNotFoundError, match="missing_s1.tsv"):
        load_study_from_files(study.files.string_v9_1, tmp_path / "missing_s1.tsv")


def test_unmapped_triplets_are_counted_and_tables_stay_aligned(study, tmp_path):
    """A screen gene the cell graph cannot hold (repeated gene) is dropped at the triplet stage."""
    from dango_nb.data.study import _assemble
    from dango_nb.data.kuzmin import read_kuzmin_s1

    screen = read_kuzmin_s1(study.files.kuzmin_s1)
    bad = screen.trigenic.copy()
    bad.loc[[0, 5], "gene3"] = bad.loc[[0, 5], "gene1"]
    screen.trigenic = bad
    s = _assemble(study.networks, screen, source={"kind": "test"}, synthetic=False)
    assert s.dropped["triplets"] == {"repeated_gene": 2}
    assert len(s.triplets) == len(bad) - 2 == len(s.trigenic)
    np.testing.assert_array_equal(s.triplets.to_frame()[GENES].to_numpy(), s.trigenic[GENES].to_numpy())
