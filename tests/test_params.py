import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from dango_nb import params as P
from dango_nb.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    name: str
    size: int = 3


@dataclass
class Outer:
    inner: Inner = field(default_factory=lambda: Inner("x"))
    rate: float = 0.5
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    items: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    maybe: int | None = None


def write(tmp_path, text, name="03_loss_schedules.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_generic_validation_converts_and_defaults():
    got = P.params_from_mapping({"inner": {"name": "n"}, "rate": 2, "items": ["u"], "weights": {"k": 1},
                                 "maybe": None}, Outer)
    assert got == Outer(Inner("n", 3), 2.0, False, "a", ["u"], {"k": 1.0}, None)
    assert isinstance(got.rate, float)


@pytest.mark.parametrize("mapping, key, expected", [
    ({"rate": "fast"}, "'rate'", "a number"),
    ({"flag": 1}, "'flag'", "true or false"),
    ({"inner": {"name": "n", "size": 2.5}}, "'inner.size'", "an integer"),
    ({"inner": {"name": "n", "size": True}}, "'inner.size'", "an integer"),
    ({"mode": "c"}, "'mode'", "one of 'a', 'b'"),
    ({"items": ["ok", 3]}, "'items[1]'", "a string"),
    ({"weights": {"k": "v"}}, "'weights.k'", "a number"),
    ({"maybe": "x"}, "'maybe'", "an integer or null"),
    ({"inner": 5}, "'inner'", "a mapping"),
])
def test_wrong_type_names_key_and_expected(mapping, key, expected):
    with pytest.raises(ParamsError) as e:
        P.params_from_mapping(mapping, Outer, source="f.yaml")
    msg = str(e.value)
    assert msg.startswith("f.yaml: ") and f"key {key}" in msg and expected in msg


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ParamsError, match=r"f.yaml: unknown key 'inner.nmae'; allowed keys in 'inner': name, size"):
        P.params_from_mapping({"inner": {"nmae": "n"}}, Outer, source="f.yaml")
    with pytest.raises(ParamsError, match=r"unknown key 'speed'; allowed keys in the top level: inner, rate, flag"):
        P.params_from_mapping({"speed": 1}, Outer, source="f.yaml")


def test_missing_required_key():
    with pytest.raises(ParamsError, match=r"missing required key 'inner.name'"):
        P.params_from_mapping({"inner": {"size": 1}}, Outer, source="f.yaml")


def test_lambda_params_file(tmp_path):
    p = write(tmp_path, "data:\n  preset: tiny\n  seed: 3\nthreshold_pct: 2\n", "01_lambda_determination.yaml")
    got = P.load_params(p)
    assert isinstance(got, P.LambdaParams)
    assert got.data.preset == "tiny" and got.data.seed == 3 and got.threshold_pct == 2.0
    assert got.reference_pct == {"cooccurence": 0.02, "coexpression": 2.42}
    assert got.synthetic


def test_file_errors_name_the_file(tmp_path):
    p = write(tmp_path, "data:\n  preset: huge\n", "01_lambda_determination.yaml")
    with pytest.raises(ParamsError) as e:
        P.load_params(p)
    assert str(p) in str(e.value) and "'data.preset'" in str(e.value) and "'tiny', 'small', 'kuzmin'" in str(e.value)
    p = write(tmp_path, "data: [1, 2\n", "01_lambda_determination.yaml")
    with pytest.raises(ParamsError, match=r"01_lambda_determination.yaml:\d+: not valid YAML"):
        P.load_params(p)
    p = write(tmp_path, "- 1\n- 2\n", "01_lambda_determination.yaml")
    with pytest.raises(ParamsError, match="expected a mapping"):
        P.load_params(p)
    with pytest.raises(ParamsError, match="parameter file not found"):
        P.load_params(tmp_path / "01_lambda_determination_missing.yaml", "01_lambda_determination")
    with pytest.raises(ParamsError, match="no parameter schema for 'other'"):
        P.load_params(write(tmp_path, "{}", "other.yaml"))


def test_cross_field_checks(tmp_path):
    p = write(tmp_path, "earlier_string: a.txt.gz\n", "01_lambda_determination.yaml")
    with pytest.raises(ParamsError, match="both earlier_string and later_string"):
        P.load_params(p)
    p = write(tmp_path, "data:\n  string_file: s.txt.gz\n", "01_lambda_determination.yaml")
    with pytest.raises(ParamsError, match=r"'data': .*kuzmin_file"):
        P.load_params(p)


def test_overrides_are_validated(tmp_path):
    p = write(tmp_path, "data:\n  preset: tiny\n", "01_lambda_determination.yaml")
    got = P.load_params(p, overrides={"data": {"seed": 7}})
    assert got.data.preset == "tiny" and got.data.seed == 7
    with pytest.raises(ParamsError, match="'data.seed'"):
        P.load_params(p, overrides={"data": {"seed": "seven"}})


def test_relative_paths_resolve_in_data_dir(tmp_path, monkeypatch):
    d = P.DataParams(data_dir=str(tmp_path))
    assert d.resolve("x/y.tsv") == tmp_path / "x" / "y.tsv"
    assert d.resolve("/abs/f.tsv") == Path("/abs/f.tsv")
    monkeypatch.setenv("DANGO_DATA_DIR", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "f.tsv").write_text("x")
    assert P.DataParams().resolve("f.tsv") == tmp_path / "env" / "f.tsv"
    monkeypatch.setenv("DANGO_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"aao1729_data_s1.tsv not found in .*env"):
        P.DataParams().resolve("aao1729_data_s1.tsv")


def test_train_section_maps_onto_trainconfig(tmp_path):
    from dango_nb.train import TrainConfig

    p = write(tmp_path, "data: {preset: tiny}\ntrain:\n  epochs: 7\n  lr: 0.01\n  model: {hidden_channels: 16}\n"
                        "schedules: [PreThenPost, PaperTwoStage]\ntransition_epoch: 3\n")
    got = P.load_params(p)
    assert isinstance(got.train, TrainConfig)
    assert got.train.epochs == 7 and got.train.lr == 0.01 and got.train.model == {"hidden_channels": 16}
    assert got.schedules == ["PreThenPost", "PaperTwoStage"] and got.transition_epoch == 3
    with pytest.raises(ParamsError, match=r"unknown key 'train.epoch'; allowed keys in 'train': epochs"):
        P.load_params(write(tmp_path, "train: {epoch: 3}\n"))
    with pytest.raises(ParamsError, match=r"'train.transition_epoch' is not allowed"):
        P.load_params(write(tmp_path, "train: {transition_epoch: 3}\n"))
    with pytest.raises(ParamsError, match=r"unknown schedule\(s\) \['Nope'\]"):
        P.load_params(write(tmp_path, "schedules: [Nope]\n"))


@pytest.mark.parametrize("folder", ["params", "params/tiny"])
def test_shipped_parameter_dirs_are_valid(folder):
    got = P.load_param_dir(ROOT / folder)
    assert list(got) == list(P.NOTEBOOKS)
    want = "small" if folder == "params" else "tiny"
    assert all(p.data.preset == want for p in got.values())


def test_param_dir_missing_and_extra_files(tmp_path):
    with pytest.raises(ParamsError, match="parameter directory not found"):
        P.load_param_dir(tmp_path / "nope")
    (tmp_path / "01_lambda_determination.yaml").write_text("{}\n")
    with pytest.raises(ParamsError, match="missing parameter file.*02_pretraining.yaml"):
        P.load_param_dir(tmp_path)
    (tmp_path / "05_extra.yaml").write_text("{}\n")
    with pytest.raises(ParamsError, match="unexpected parameter file.*05_extra.yaml"):
        P.load_param_dir(tmp_path, ("01_lambda_determination",))


def test_lambdas_file_roundtrip_and_errors(tmp_path):
    f = P.default_lambdas_file(tmp_path)
    assert f == tmp_path / "lambda_determination" / "lambdas.json"
    with pytest.raises(ParamsError, match="run notebooks/01_lambda_determination.ipynb first"):
        P.load_lambdas(f)
    f.parent.mkdir()
    f.write_text(json.dumps({"lambdas": {"coexpression": 0.1, "fusion": 1}}))
    assert P.load_lambdas(f) == {"coexpression": 0.1, "fusion": 1.0}
    f.write_text(json.dumps({"lambdas": {"coexpression": "low"}}))
    with pytest.raises(ParamsError, match="'lambdas.coexpression'"):
        P.load_lambdas(f)
    f.write_text("{")
    with pytest.raises(ParamsError, match="not valid JSON"):
        P.load_lambdas(f)


def test_run_name():
    assert P.run_name("03_loss_schedules") == "loss_schedules"
    assert P.run_name("custom") == "custom"


def test_every_shipped_parameter_set_validates():
    from pathlib import Path

    from dango_nb.params import load_param_dir

    root = Path(__file__).resolve().parents[1] / "params"
    sets = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    assert {p.name for p in sets} >= {"params", "tiny", "real"}
    for folder in sets:
        load_param_dir(folder)
    real = load_param_dir(root / "real")
    assert real["01_lambda_determination"].earlier_string.endswith("v9.1.txt.gz")


@pytest.mark.parametrize("stem", ["02_pretraining", "03_loss_schedules", "04_evaluation"])
def test_lambdas_file_name_is_checked_with_the_other_keys(stem):
    with pytest.raises(ParamsError) as err:
        P.params_from_mapping({"lambdas_file": "a" * 120_000}, stem)
    assert "lambdas_file: path of 120000 bytes is too long" in str(err.value) and len(str(err.value)) < 400
