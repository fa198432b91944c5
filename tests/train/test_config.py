"""TrainConfig: torch-free validation, model keyword arguments checked before any training."""

import subprocess
import sys

import pytest

from dango_nb import params as P
from dango_nb.errors import ParamsError
from dango_nb.train import TrainConfig


def test_config_module_does_not_import_torch():
    code = ("import sys; import dango_nb.train.config as c; c.TrainConfig(epochs=2); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("model, match", [
    ({"hidden_channels": "sixteen"}, r"TrainConfig.model.hidden_channels: expected an integer from 1 to 16384, got 'sixteen'"),
    ({"hidden_channels": 0}, r"TrainConfig.model.hidden_channels: expected an integer from 1 to 16384, got 0"),
    ({"activation": "bogus"}, r"TrainConfig.model.activation: expected a torch activation name"),
    ({"widht": 3}, r"TrainConfig.model.widht: unknown key"),
])
def test_bad_model_kwargs_fail_at_construction(model, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(model=model)


@pytest.mark.parametrize("field, value", [("device", "gpu"), ("device", 3), ("epochs", -1), ("lr", float("inf")),
                                          ("schedule", "Cosine"), ("early_stopping_metric", "val_r2")])
def test_bad_fields(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_numpy_numbers_are_accepted():
    np = pytest.importorskip("numpy")
    c = TrainConfig(epochs=np.int64(3), lr=np.float32(0.5), device="cuda:1")
    assert c.epochs == 3 and type(c.epochs) is int and c.lr == 0.5 and type(c.lr) is float


@pytest.mark.parametrize("line, match", [
    ("hidden_channels: sixteen", r"model.hidden_channels: expected an integer from 1 to 16384, got 'sixteen'"),
    ("activation: bogus", r"model.activation: expected a torch activation name"),
    ("hidden_channels: 0", r"model.hidden_channels: expected an integer from 1 to 16384, got 0"),
])
def test_params_file_names_file_and_model_key(tmp_path, line, match):
    path = tmp_path / "02_pretraining.yaml"
    path.write_text(f"data: {{preset: tiny}}\ntrain:\n  epochs: 2\n  model:\n    {line}\n")
    with pytest.raises(ParamsError, match=rf"02_pretraining.yaml: 'train': .*{match}"):
        P.load_params(path)


def test_evaluation_options_in_params_are_the_library_dataclass(tmp_path):
    from dango_nb.eval import EvaluationOptions

    path = tmp_path / "04_evaluation.yaml"
    path.write_text("evaluation:\n  models: [mean, dango_turbo]\n")
    with pytest.raises(ParamsError, match=r"04_evaluation.yaml: 'evaluation': models: unknown model\(s\) \['dango_turbo'\]"):
        P.load_params(path)
    path.write_text("evaluation:\n  models: [mean]\n  n_boot: 0\n")
    got = P.load_params(path).evaluation
    assert type(got) is EvaluationOptions and got.models == ["mean"] and got.n_boot == 0
    assert got.splits == EvaluationOptions().splits  # defaults defined once
