"""DANGO model components (PyG-style modules)."""

from dango_nb.models.dango import Dango, DangoOutput
from dango_nb.models.hypersagnn import HyperSAGNN, TripletSelfAttention
from dango_nb.models.meta import MetaEmbedding
from dango_nb.models.pretrain import DangoPreTrain, GraphInputs, normalize_edge_types, prepare_graph

__all__ = ["Dango", "DangoOutput", "DangoPreTrain", "GraphInputs", "HyperSAGNN", "MetaEmbedding",
           "TripletSelfAttention", "normalize_edge_types", "prepare_graph"]
