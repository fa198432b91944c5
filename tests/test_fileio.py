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
