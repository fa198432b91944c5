import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.loader import DataLoader

from dango_nb.data.graph import build_cell_graph
from dango_nb.data.kuzmin import read_kuzmin_s1
from dango_nb.data.string_db import read_string_detailed
from dango_nb.data.triplets import TripletDataset, TripletTensors, make_triplets
from dango_nb.errors import DataFormatError

GENES = [f"Y{k:03d}" for k in range(12)]


def random_table(n=37, seed=0):
    rng = np.random.default_rng(seed)
    trip = np.stack([rng.choice(len(GENES), 3, replace=False) for _ in range(n)])
    return pd.DataFrame({"gene1": np.asarray(GENES)[trip[:, 0]], "gene2": np.asarray(GENES)[trip[:, 1]],
                         "gene3": np.asarray(GENES)[trip[:, 2]], "tau": rng.normal(-0.1, 0.1, n),
                         "pvalue": rng.uniform(0, 1, n)})


def test_make_triplets_drops_and_order():
    table = pd.DataFrame({
        "gene1": ["Y000", "Y001", "Y002", "YXXX", "Y003", "Y004"],
        "gene2": ["Y005", "Y001", "Y006", "Y000", "Y007", "Y008"],
        "gene3": ["Y009", "Y010", "Y011", "Y001", "Y002", "Y000"],
        "tau": [-0.2, -0.1, np.nan, 0.3, 0.05, -0.4],
        "pvalue": [0.01, 0.5, 0.2, 0.3, np.nan, 0.04],
    })
    tt, dropped = make_triplets(table, GENES)
    assert dropped == {"gene_not_in_graph": 1, "repeated_gene": 1, "nan_tau": 1}
    assert tt.indices.dtype == torch.long and tt.targets.dtype == torch.float32 and tt.pvalues.dtype == torch.float32
    assert tt.indices.tolist() == [[0, 5, 9], [3, 7, 2], [4, 8, 0]]  # table order kept
    assert tt.targets.tolist() == pytest.approx([-0.2, 0.05, -0.4])
    assert tt.pvalues[0].item() == pytest.approx(0.01) and torch.isnan(tt.pvalues[1])
    assert tt.genes == GENES and len(tt) == 3
    assert tt.to_frame()[["gene1", "gene2", "gene3"]].values.tolist() == [
        ["Y000", "Y005", "Y009"], ["Y003", "Y007", "Y002"], ["Y004", "Y008", "Y000"]]


def test_make_triplets_without_pvalue_column():
    tt, dropped = make_triplets(random_table().drop(columns="pvalue"), GENES)
    assert dropped == {} and torch.isnan(tt.pvalues).all()


def test_make_triplets_bad_input():
    with pytest.raises(DataFormatError) as err:
        make_triplets(random_table().drop(columns="tau"), GENES)
    assert err.value.column == "tau"
    table = random_table(4)
    table["tau"] = np.nan
    with pytest.raises(DataFormatError, match="no triplets left"):
        make_triplets(table, GENES)
    with pytest.raises(DataFormatError, match="gene_not_in_graph"):
        make_triplets(random_table(4), ["Z1", "Z2", "Z3"])


def test_tensor_shapes_validated():
    with pytest.raises(ValueError):
        TripletTensors(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4), torch.zeros(4), GENES)
    with pytest.raises(ValueError):
        TripletTensors(torch.zeros(4, 3, dtype=torch.long), torch.zeros(3), torch.zeros(4), GENES)


def test_subset_to_len_repr():
    tt, _ = make_triplets(random_table(), GENES)
    sub = tt.subset(torch.tensor([3, 0]))
    assert torch.equal(sub.indices, tt.indices[[3, 0]]) and torch.equal(sub.targets, tt.targets[[3, 0]])
    assert len(tt.subset(np.array([1, 2, 5]))) == 3
    assert len(tt.subset(slice(0, 10))) == 10
    mask = tt.targets < -0.1
    assert len(tt.subset(mask)) == int(mask.sum())
    assert tt.to("cpu").indices.device.type == "cpu"
    assert "n=37" in repr(tt) and "Y000" not in repr(tt)


def test_non_finite_tau_is_its_own_drop_reason():
    table = pd.DataFrame({"gene1": [GENES[0]] * 5, "gene2": [GENES[1]] * 5, "gene3": [GENES[2]] * 5,
                          "tau": [0.1, np.inf, -np.inf, 1e300, np.nan]})
    tt, dropped = make_triplets(table, GENES)
    assert dropped == {"nan_tau": 1, "non_finite_tau": 3}
    assert len(tt) == 1 and torch.isfinite(tt.targets).all()


def test_no_batch_iterator_on_tensors():
    # batching belongs to the training loop's batch sources; the tensors only index and move
    assert not hasattr(TripletTensors, "batches")


def test_dataset_items_torchcell_layout():
    tt, _ = make_triplets(random_table(), GENES)
    ds = TripletDataset(tt)
    assert len(ds) == 37
    item = ds[5]
    assert item.perturbed_genes == [GENES[k] for k in tt.indices[5].tolist()]
    assert item.perturbation_indices.dtype == torch.long and item.perturbation_indices.shape == (3,)
    assert torch.equal(item.perturbation_indices, tt.indices[5])
    assert item.phenotype_values.shape == (1,) and item.phenotype_values.item() == tt.targets[5].item()
    assert item.pvalue.shape == (1,) and item.pvalue.item() == tt.pvalues[5].item()
    assert item.num_nodes == 3


def test_both_views_agree_through_dataloader():
    tt, _ = make_triplets(random_table(), GENES)
    ds = TripletDataset(tt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PyG's "Unable to accurately infer 'num_nodes'"
        loader = DataLoader(ds, batch_size=8, shuffle=False, follow_batch=["perturbation_indices"])
        pairs = list(zip(loader, [(tt.indices[k:k + 8], tt.targets[k:k + 8]) for k in range(0, len(tt), 8)]))
    assert len(pairs) == 5
    for batch, (idx, tgt) in pairs:
        b = len(tgt)
        # global indices are not offset by batching
        assert torch.equal(batch.perturbation_indices.view(b, 3), idx)
        assert torch.equal(batch.perturbation_indices_batch, torch.arange(b).repeat_interleave(3))
        assert torch.equal(batch.phenotype_values, tgt)
        assert [list(g) for g in batch.perturbed_genes] == [[GENES[k] for k in row] for row in idx.tolist()]

    # the same seeded permutation gives the same batches in both views
    perm = torch.randperm(len(tt), generator=torch.Generator().manual_seed(3))
    loader = DataLoader(ds.index_select(perm), batch_size=10, follow_batch=["perturbation_indices"])
    sub = tt.subset(perm)
    chunks = [(sub.indices[k:k + 10], sub.targets[k:k + 10]) for k in range(0, len(sub), 10)]
    assert len(loader) == len(chunks) == 4
    for batch, (idx, tgt) in zip(loader, chunks):
        assert torch.equal(batch.perturbation_indices.view(-1, 3), idx)
        assert torch.equal(batch.phenotype_values, tgt)


def test_from_kuzmin_and_string_fixtures(fixtures_dir):
    screen = read_kuzmin_s1(fixtures_dir / "kuzmin" / "aao1729_data_s1.tsv")
    net = read_string_detailed(fixtures_dir / "string" / "4932.protein.links.detailed.v9.1.txt")
    screened = sorted(set(screen.trigenic[["gene1", "gene2", "gene3"]].values.ravel()))
    node_ids = sorted(set(net.genes) | set(screened))
    graph = build_cell_graph(net, genes=node_ids)
    tt, dropped = make_triplets(screen.trigenic, graph["gene"].node_ids)
    assert dropped == {} and len(tt) == len(screen.trigenic)
    assert tt.to_frame()[["gene1", "gene2", "gene3"]].values.tolist() == \
        screen.trigenic[["gene1", "gene2", "gene3"]].values.tolist()
    # the fixture's screened genes are all absent from the fixture's STRING vocabulary
    with pytest.raises(DataFormatError, match=r"'gene_not_in_graph': 3"):
        make_triplets(screen.trigenic, net.genes)
    ds = TripletDataset.from_table(screen.trigenic, node_ids)
    assert ds[0].perturbed_genes == ["YAL048C", "YAR002W", "YML107C"]
