"""A small trained DANGO run shared by the prediction and command-line tests."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    from dango_nb.__main__ import lambdas_for_study
    from dango_nb.data.study import load_study
    from dango_nb.train import TrainConfig, fit

    data_dir = tmp_path_factory.getbasetemp() / "dango_data"
    study = load_study("tiny", 0, data_dir)
    ckpt = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=3, transition_epoch=0, batch_size=256, progress=False, keep_top_k=2,
                      checkpoint_dir=str(ckpt), model={"hidden_channels": 16, "num_heads": 2, "num_layers": 1})
    n = len(study.triplets)
    fit(study.cell_graph, study.triplets.subset(np.arange(0, n - 200)),
        study.triplets.subset(np.arange(n - 200, n)), cfg, lambdas_for_study(study))
    return study, ckpt, data_dir
