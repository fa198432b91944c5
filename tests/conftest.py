import os
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch_geometric")

SHARED_STRING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "string_v9_1_dango"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_string_dir():
    if not SHARED_STRING.is_dir():
        pytest.skip(f"shared STRING v9.1 networks not found at {SHARED_STRING}")
    return SHARED_STRING


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory):
    """Folder watched by the runs' fault injection (set before Ray starts so workers inherit it)."""
    d = tmp_path_factory.mktemp("faults")
    os.environ["DANGO_NB_FAULT_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def ray_local(fault_dir):
    """One real local Ray with 2 CPUs for every test that needs one (the executor reuses a running
    Ray); started after ``fault_dir`` so its workers see the fault-injection folder."""
    pytest.importorskip("ray")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from dango_nb.runs.executor import ray_session

    session = ray_session(num_cpus=2)
    ray = session.__enter__()
    try:
        yield ray
    finally:
        session.__exit__(None, None, None)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The ``tiny`` synthetic study, generated per test module (modules may define their own)."""
    from dango_nb.data.study import load_study

    return load_study("tiny", seed=0, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def split(study):
    """Seeded 80/10 train/validation triplets of ``study``."""
    import torch

    t = study.triplets
    n = len(t)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    return t.subset(perm[: int(0.8 * n)]), t.subset(perm[int(0.8 * n): int(0.9 * n)])
