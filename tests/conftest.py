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
