import os
import pytest



@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory):
    """Folder watched by the runs' fault injection (set before Ray starts so workers inherit it)."""
    d = tmp_path_factory.mktemp("faults")
    os.environ["DANGO_NB_FAULT_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def ray_local(fault_dir):
    """One real local Ray with 2 CPUs for all tests here (the executor reuses a running Ray)."""
    pytest.importorskip("ray")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from dango_nb.runs.executor import ray_session

    session = ray_session(num_cpus=2)
    ray = session.__enter__()
    try:
        yield ray
    finally:
        session.__exit__(None, None, None)
