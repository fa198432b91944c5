import json
import os
import stat

import pandas as pd
import pytest

from dango_nb.fileio import atomic_write, atomic_write_json, atomic_write_table


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.tsv"]


def test_written_files_are_readable_like_plain_open(tmp_path):
    atomic_write_json({"a": 1}, tmp_path / "x.json")
    mode = stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_table_suffix(tmp_path):
    df = pd.DataFrame({"a": [1, 2]})
    atomic_write_table(df, tmp_path / "t.parquet")
    atomic_write_table(df, tmp_path / "t.tsv")
    atomic_write_table(df, tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv").equals(df)
    assert pd.read_parquet(tmp_path / "t.parquet").equals(df)
    assert pd.read_csv(tmp_path / "t.tsv", sep="\t").equals(df)
    with pytest.raises(ValueError, match="unsupported table suffix"):
        atomic_write_table(df, tmp_path / "t.xlsx")


def test_json_is_strict_with_null_for_undefined(tmp_path):
    import numpy as np

    from dango_nb.fileio import read_json

    obj = {"nan": float("nan"), "inf": np.float32("inf"), "ninf": -np.inf, "list": [np.float64("nan"), 1.5],
           "array": np.array([1.0, np.nan]), "int": np.int64(3), "path": tmp_path}
    atomic_write_json(obj, tmp_path / "x.json")
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(tmp_path / "x.json") == {"nan": None, "inf": None, "ninf": None, "list": [None, 1.5],
                                              "array": [1.0, None], "int": 3, "path": str(tmp_path)}
    (tmp_path / "bad.json").write_text('{"a": NaN}')
    with pytest.raises(ValueError, match=r"bad.json: not strict JSON: NaN is not JSON"):
        read_json(tmp_path / "bad.json")


def test_yaml_duplicate_keys_are_refused_with_file_and_line(tmp_path):
    from dango_nb.errors import ParamsError
    from dango_nb.fileio import load_yaml, read_yaml
    from dango_nb.params import load_params

    with pytest.raises(ParamsError, match=r"^f.yaml:4: duplicate key 'epochs' \(first given on line 2\)"):
        load_yaml("train:\n  epochs: 3\n  lr: 0.1\n  epochs: 5\n", "f.yaml")
    # merge keys may still override what they merge in
    assert load_yaml("base: &b {x: 1}\nm: {<<: *b, x: 2}\n")["m"] == {"x": 2}
    path = tmp_path / "03_loss_schedules.yaml"
    path.write_text("transition_epoch: 3\ntransition_epoch: 4\n")
    with pytest.raises(ParamsError, match=rf"^{path}:2: duplicate key 'transition_epoch'"):
        load_params(path)
    with pytest.raises(ParamsError, match=rf"^{path}:2: duplicate key"):
        read_yaml(path)


def _laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" YAML document: each level a list of ``width`` aliases of the one before."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_fast_with_file_line_and_bounded_memory(tmp_path):
    import time
    import tracemalloc

    from dango_nb.errors import ParamsError
    from dango_nb.fileio import MAX_YAML_VALUES, read_yaml

    path = tmp_path / "bomb.yaml"
    path.write_text(_laughs())
    assert path.stat().st_size < 1000  # 9**9 = 387 million values once expanded
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ParamsError) as err:
            read_yaml(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5
    assert peak < 5 * 2**20, peak
    # the first value that expands beyond the limit: 9**6 values at level 5 (line 6)
    assert str(err.value) == (f"{path}:6: aliases ('*name') expand this value to more than {MAX_YAML_VALUES:,} "
                              "values; write the values out or use fewer aliases")


def test_yaml_aliases_within_the_limit_and_recursive_ones():
    from dango_nb.errors import ParamsError
    from dango_nb.fileio import load_yaml

    small = load_yaml(_laughs(levels=4, width=9))  # 9**4 = 6,561 values: fine
    assert len(small["a3"]) == 9 and small["a3"][0][0][0] == ["lol"] * 9
    with pytest.raises(ParamsError, match=r"^f.yaml:1: an alias refers to the value that contains it"):
        load_yaml("a: &x [1, *x]\n", "f.yaml")


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1E5", 1e5), ("-2e+3", -2000.0), (".5e3", 500.0),
                                         ("1.e5", 1e5), ("1.0e+30", 1e30), ("12", 12), ("1_000", 1000),
                                         ("0x1f", 31), ("e5", "e5"), ("1e", "1e")])
def test_yaml_reads_yaml_1_2_floats_and_keeps_ints(text, value):
    import yaml

    from dango_nb.fileio import load_yaml

    got = load_yaml(text)
    assert got == value and type(got) is type(value)
    assert yaml.safe_load("1e-3") == "1e-3"  # the loader subclass only: PyYAML's own stays as it is


def test_run_file_takes_scientific_notation(tmp_path):
    from dango_nb.runs.spec import load_run_params

    path = tmp_path / "train.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: 2\n  transition_epoch: 1\n")
    params = load_run_params(path)
    assert params.train.lr == 0.001 and params.train.epochs == 2
