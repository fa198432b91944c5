"""Data layer: raw files -> typed tables -> PyTorch Geometric objects (see docs/architecture.md)."""

from dango_nb.data.download import (
    KNOWN_FILES, KUZMIN_S1, REGISTRY_FILE, DataNotAvailableError, data_dir, fetch, fetch_kuzmin_s1, fetch_string,
    string_filename, string_url,
)
from dango_nb.data.graph import build_cell_graph, channel_of, edge_type_name, version_of
from dango_nb.data.kuzmin import HO_LOCUS, KUZMIN_COLUMNS, KuzminScreen, read_kuzmin_s1, write_kuzmin_s1
from dango_nb.data.string_db import (
    CHANNELS, EXTRA_CHANNELS, StringNetworks, read_dango_release, read_string_detailed, write_dango_release,
    write_string_detailed,
)
from dango_nb.data.triplets import TripletDataset, TripletTensors, as_index_array, make_triplets

__all__ = [
    "KNOWN_FILES", "KUZMIN_S1", "REGISTRY_FILE", "DataNotAvailableError", "data_dir", "fetch", "fetch_kuzmin_s1",
    "fetch_string", "string_filename", "string_url",
    "build_cell_graph", "channel_of", "edge_type_name", "version_of",
    "HO_LOCUS", "KUZMIN_COLUMNS", "KuzminScreen", "read_kuzmin_s1", "write_kuzmin_s1",
    "CHANNELS", "EXTRA_CHANNELS", "StringNetworks", "read_dango_release", "read_string_detailed",
    "write_dango_release", "write_string_detailed",
    "TripletDataset", "TripletTensors", "as_index_array", "make_triplets",
]

# synthetic.py and study.py import the loaders above.
from dango_nb.data.synthetic import (
    PRESETS, BenchmarkFiles, ChannelSpec, Preset, SignalSpec, SyntheticStudy, generate_benchmark,
    simulate, with_preset,
)
from dango_nb.data.study import Study, benchmark_dir, load_study, load_study_from_files

__all__ += [
    "PRESETS", "BenchmarkFiles", "ChannelSpec", "Preset", "SignalSpec", "SyntheticStudy",
    "generate_benchmark", "simulate", "with_preset",
    "Study", "benchmark_dir", "load_study", "load_study_from_files",
]
