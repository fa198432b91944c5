"""DANGO model components (PyG-style modules), the model's inference API and its sparse inputs."""

from dango_nb.models.dango import Dango, DangoOutput, eval_mode
from dango_nb.models.hypersagnn import (
    HYPERSAGNN_PRESETS,
    FeedForward,
    HyperSAGNN,
    TripletSelfAttention,
    hypersagnn_preset,
)
from dango_nb.models.meta import MetaEmbedding
from dango_nb.models.pretrain import DangoPreTrain, GraphInputs, normalize_edge_types, prepare_graph
from dango_nb.models.sparse import SparseRows, gather_rows

__all__ = ["Dango", "DangoOutput", "DangoPreTrain", "FeedForward", "GraphInputs", "HYPERSAGNN_PRESETS",
           "HyperSAGNN", "MetaEmbedding", "SparseRows", "TripletSelfAttention", "eval_mode", "gather_rows",
           "hypersagnn_preset", "normalize_edge_types", "prepare_graph"]
