"""DANGO model components (PyG-style modules)."""

from dango_nb.models.dango import Dango, DangoOutput
from dango_nb.models.hypersagnn import (HYPERSAGNN_PRESETS, FeedForward, HyperSAGNN, TripletSelfAttention,
                                        hypersagnn_preset)
from dango_nb.models.meta import MetaEmbedding
from dango_nb.models.pretrain import DangoPreTrain, GraphInputs, normalize_edge_types, prepare_graph

__all__ = ["Dango", "DangoOutput", "DangoPreTrain", "FeedForward", "GraphInputs", "HYPERSAGNN_PRESETS", "HyperSAGNN",
           "MetaEmbedding", "TripletSelfAttention", "hypersagnn_preset", "normalize_edge_types", "prepare_graph"]
