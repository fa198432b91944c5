import gzip
import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dango_nb.data.kuzmin import (
    DIGENIC_COLUMNS, KUZMIN_COLUMNS, TRIGENIC_COLUMNS, read_kuzmin_s1, write_kuzmin_s1,
)
from dango_nb.errors import DataFormatError

S1 = "aao1729_data_s1.tsv"


@pytest.fixture
def s1(fixtures_dir):
    return fixtures_dir / "kuzmin" / S1


def test_columns_exact():
    assert KUZMIN_COLUMNS == (
        "Query strain ID", "Query allele name", "Array strain ID", "Array allele name",
        "Combined mutant type", "Raw genetic interaction score (epsilon)",
        "Adjusted genetic interaction score (epsilon or tau)", "P-value",
        "Query single/double mutant fitness", "Array single mutant fitness",
        "Combined mutant fitness", "Combined mutant fitness standard deviation")


def test_read_fixture(s1, caplog):
    with caplog.at_level(logging.WARNING):
        screen = read_kuzmin_s1(s1)
    tri, di = screen.trigenic, screen.digenic
    assert list(tri.columns) == list(TRIGENIC_COLUMNS) and list(di.columns) == list(DIGENIC_COLUMNS)
    assert tri[["gene1", "gene2", "gene3"]].values.tolist() == [
        ["YAL048C", "YAR002W", "YML107C"], ["YAR002W", "YBR001C", "YML107C"], ["YAR002W", "YCL001W", "YML107C"]]
    # lines 2 and 3 measure the same triplet with query and array genes swapped
    assert tri["tau"].tolist() == pytest.approx([-0.10, -0.28, 0.06])
    assert tri["n_replicates"].tolist() == [2, 2, 1]
    fisher = stats.combine_pvalues([0.01, 0.04], method="fisher").pvalue
    # the p-value missing on line 13 is left out of the combination
    assert tri["pvalue"].tolist() == pytest.approx([fisher, 0.001, 0.3])
    assert tri["tau_sd"].iloc[0] == pytest.approx(np.std([-0.12, -0.08], ddof=1))
    assert tri["array_type"].tolist() == ["dma", "tsa", "dma"]
    assert tri["query_strain"].iloc[0] == "YAR002W+YML107C_tm2550"  # first replicate in file order
    assert tri["array_allele"].iloc[1] == "nth2-1"

    # X+YDL227C queries are digenic (YDL227C = HO); YDL227C itself never appears as a gene
    assert di[["gene1", "gene2"]].values.tolist() == [["YAL048C", "YAR002W"], ["YAL048C", "YML107C"]]
    assert di["epsilon"].tolist() == pytest.approx([-0.04, -0.11])
    assert di["n_replicates"].tolist() == [2, 1]
    assert di["pvalue"].iloc[0] == pytest.approx(stats.combine_pvalues([0.2, 0.5], method="fisher").pvalue)
    assert "YDL227C" not in set(tri[["gene1", "gene2", "gene3"]].values.ravel()) | set(di[["gene1", "gene2"]].values.ravel())

    assert screen.dropped == {"nan_tau": 1, "repeated_gene": 2, "unparseable_strain": 1, "unknown_array_type": 1}
    assert screen.type_disagreements == 1  # line 5 says "digenic" but its strains make a triplet
    assert screen.missing_pvalue == 1
    assert sorted(screen.trigenic_rows["line"]) == [2, 3, 4, 5, 13]
    assert "dropped 5 of 13 rows" in caplog.text


def test_fisher_matches_scipy_for_many_groups():
    from dango_nb.data.kuzmin import _fisher

    rng = np.random.default_rng(0)
    groups = [rng.uniform(1e-6, 1, size=k) for k in (1, 2, 3, 5)]
    got = _fisher(np.array([np.log(g).sum() for g in groups]), np.array([len(g) for g in groups]))
    want = [stats.combine_pvalues(g, method="fisher").pvalue for g in groups]
    assert got == pytest.approx(want, rel=1e-10)
    assert np.isnan(_fisher(np.array([0.0]), np.array([0])))[0]


def test_write_round_trip(s1, tmp_path):
    rows = pd.read_csv(s1, sep="\t", dtype=str, keep_default_na=False)
    for name in (S1, S1 + ".gz"):
        out = tmp_path / name
        write_kuzmin_s1(out, rows)
        if name.endswith(".gz"):
            assert gzip.decompress(out.read_bytes()).decode().splitlines()[0] == "\t".join(KUZMIN_COLUMNS)
        a, b = read_kuzmin_s1(s1), read_kuzmin_s1(out)
        pd.testing.assert_frame_equal(a.trigenic, b.trigenic)
        pd.testing.assert_frame_equal(a.digenic, b.digenic)
        assert a.dropped == b.dropped


def test_write_numeric_frame(tmp_path):
    text = dict(zip(KUZMIN_COLUMNS[:5], ["YAR002W+YML107C_tm1", "a+b", "YAL048C_dma2", "c", "trigenic"]))
    rows = pd.DataFrame({c: [text.get(c, np.nan)] for c in KUZMIN_COLUMNS})
    rows["Adjusted genetic interaction score (epsilon or tau)"] = -0.25
    rows["extra"] = 1
    out = tmp_path / S1
    write_kuzmin_s1(out, rows)
    assert out.read_text().splitlines()[0] == "\t".join(KUZMIN_COLUMNS)  # extra column not written
    tri = read_kuzmin_s1(out).trigenic
    assert tri["tau"].tolist() == [-0.25] and np.isnan(tri["pvalue"].iloc[0])


def test_write_missing_column_keeps_old_file(s1, tmp_path):
    out = tmp_path / S1
    out.write_text("old")
    with pytest.raises(ValueError, match="P-value"):
        write_kuzmin_s1(out, pd.DataFrame({c: [] for c in KUZMIN_COLUMNS if c != "P-value"}))
    assert out.read_text() == "old"


# ----------------------------------------------------------------------------------------- bad input

def test_missing_column(fixtures_dir):
    path = fixtures_dir / "kuzmin" / "aao1729_data_s1.missing_column.tsv"
    with pytest.raises(DataFormatError) as err:
        read_kuzmin_s1(path)
    assert (err.value.line, err.value.column) == (1, "P-value") and str(path) in str(err.value)


def test_non_numeric(fixtures_dir):
    path = fixtures_dir / "kuzmin" / "aao1729_data_s1.non_numeric.tsv"
    with pytest.raises(DataFormatError, match="-0.3OO") as err:
        read_kuzmin_s1(path)
    assert (err.value.line, err.value.column) == (4, "Adjusted genetic interaction score (epsilon or tau)")


def _edit(s1, tmp_path, fn, name=S1):
    path = tmp_path / name
    path.write_text(fn(s1.read_text()))
    return path


def test_wrong_field_count_and_truncation(s1, tmp_path):
    text = s1.read_text()
    lines = text.splitlines(keepends=True)
    path = tmp_path / S1
    path.write_text("".join(lines[:3]) + lines[3].replace("\t0.0200", "\t0.0200\textra"))
    with pytest.raises(DataFormatError, match="expected 12 tab-separated fields, found 13") as err:
        read_kuzmin_s1(path)
    assert err.value.line == 4
    path.write_text("".join(lines[:5]) + lines[5][:40])
    with pytest.raises(DataFormatError, match="truncated") as err:
        read_kuzmin_s1(path)
    assert err.value.line == 6


def test_truncated_gzip(s1, tmp_path):
    data = gzip.compress(s1.read_bytes() * 20)
    path = tmp_path / (S1 + ".gz")
    path.write_bytes(data[:-30])
    with pytest.raises(DataFormatError, match="truncated or corrupt gzip") as err:
        read_kuzmin_s1(path)
    assert str(path) in str(err.value)


def test_pvalue_out_of_range(s1, tmp_path):
    path = _edit(s1, tmp_path, lambda t: t.replace("\t0.001\t", "\t1.5\t"))
    with pytest.raises(DataFormatError, match="outside") as err:
        read_kuzmin_s1(path)
    assert (err.value.line, err.value.column) == (4, "P-value")


def test_empty_after_filtering(s1, tmp_path):
    lines = s1.read_text().splitlines(keepends=True)
    # header + NaN tau + repeated gene + digenic rows only
    path = tmp_path / S1
    path.write_text("".join([lines[0], lines[5], lines[6], lines[9]]))
    with pytest.raises(DataFormatError, match="no trigenic rows left") as err:
        read_kuzmin_s1(path)
    assert "nan_tau" in str(err.value) and str(path) in str(err.value)
    path.write_text("")
    with pytest.raises(DataFormatError, match="empty file"):
        read_kuzmin_s1(path)


def test_blank_lines_and_crlf(s1, tmp_path):
    lines = s1.read_text().splitlines()
    path = tmp_path / S1
    path.write_text("\r\n".join(lines[:3] + [""] + lines[3:]) + "\r\n\r\n")
    screen = read_kuzmin_s1(path)
    pd.testing.assert_frame_equal(screen.trigenic, read_kuzmin_s1(s1).trigenic)
    assert 14 in set(screen.trigenic_rows["line"])  # line numbers count the blank line
    assert screen.dropped == read_kuzmin_s1(s1).dropped  # and the blank line is no dropped row


def test_column_aliases_and_unicode_alleles(s1, tmp_path):
    text = s1.read_text().replace("Combined mutant fitness", "Double/triple mutant fitness")
    text = text.replace("nup2-delta", "nup2Δ")
    path = tmp_path / S1
    path.write_text(text, encoding="utf-8")
    screen = read_kuzmin_s1(path)
    assert screen.trigenic["query_allele"].iloc[0] == "nup2Δ+pml39-delta"
    pd.testing.assert_frame_equal(screen.trigenic.drop(columns="query_allele"),
                                  read_kuzmin_s1(s1).trigenic.drop(columns="query_allele"))
    path.write_bytes(text.encode("utf-8").replace("Δ".encode(), b"\xc4"))  # a Latin-1 export
    assert read_kuzmin_s1(path).trigenic["tau"].tolist() == pytest.approx([-0.10, -0.28, 0.06])


# ------------------------------------------------------------------- what exports and cuts leave behind

def test_plain_file_cut_inside_its_last_field(s1, tmp_path):
    text = s1.read_text()
    lines = text.splitlines(keepends=True)
    path = tmp_path / S1
    # "...0.0300\n" cut to "...0.03": the line still parses, but the file is not whole
    path.write_text("".join(lines[:-1]) + lines[-1].rstrip("\n")[:-2])
    with pytest.raises(DataFormatError, match="has no final newline.*the file was truncated") as err:
        read_kuzmin_s1(path)
    assert err.value.line == len(lines) and str(path) in str(err.value)


def test_header_only_file(s1, tmp_path):
    path = tmp_path / S1
    path.write_text(s1.read_text().splitlines(keepends=True)[0])
    with pytest.raises(DataFormatError, match="no data rows after the header") as err:
        read_kuzmin_s1(path)
    assert str(path) in str(err.value)


def _quote_all(line: str) -> str:
    return "\t".join(f'"{f}"' for f in line.rstrip("\r\n").split("\t"))


@pytest.mark.parametrize("slow", [False, True])
def test_spreadsheet_export_bom_quotes_crlf(s1, tmp_path, slow):
    lines = s1.read_text().splitlines()
    body = [_quote_all(x) for x in lines[1:]]
    if slow:
        body.insert(2, "")  # a blank line takes the line-by-line parser
    path = tmp_path / S1
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join([_quote_all(lines[0]), *body]) + "\r\n").encode())
    screen, ref = read_kuzmin_s1(path), read_kuzmin_s1(s1)
    pd.testing.assert_frame_equal(screen.trigenic, ref.trigenic)
    pd.testing.assert_frame_equal(screen.digenic, ref.digenic)
    assert screen.dropped == ref.dropped
    genes = set(screen.trigenic[["gene1", "gene2", "gene3"]].to_numpy().ravel())
    assert genes == set(ref.trigenic[["gene1", "gene2", "gene3"]].to_numpy().ravel())
    assert not any('"' in g for g in genes)


def test_lowercase_orfs_are_upper_cased(s1, tmp_path):
    lines = s1.read_text().splitlines(keepends=True)
    path = tmp_path / S1
    path.write_text(lines[0] + "".join(x.replace("YAR002W", "yar002w") for x in lines[1:]))
    cols = ["gene1", "gene2", "gene3", "tau", "pvalue", "n_replicates"]
    pd.testing.assert_frame_equal(read_kuzmin_s1(path).trigenic[cols], read_kuzmin_s1(s1).trigenic[cols])


@pytest.mark.parametrize("slow", [False, True])
def test_non_finite_scores_are_their_own_drop_reason(s1, tmp_path, slow):
    lines = s1.read_text().splitlines(keepends=True)
    col = KUZMIN_COLUMNS.index("Adjusted genetic interaction score (epsilon or tau)")

    def with_score(line, value):
        parts = line.rstrip("\n").split("\t")
        parts[col] = value
        return "\t".join(parts) + "\n"

    # rows 2, 3, 4 are kept trigenic rows, row 5 a digenic one: replace their scores
    bad = [with_score(lines[1], "inf"), with_score(lines[2], "-Infinity"), with_score(lines[3], "1e400")]
    rest = lines[4:]
    big = with_score(lines[1], "1e300").replace("YAL048C_dma5203", "YBR001C_dma5203")
    neg = with_score(lines[2], "-inf").replace("YAR002W_dma112", "YBR001C_dma112")
    eps = with_score(lines[9], "Infinity")
    path = tmp_path / S1
    path.write_text("".join([lines[0], *bad, big, neg, eps, *([] if not slow else ["\n"]), *rest]))
    screen = read_kuzmin_s1(path)
    ref = read_kuzmin_s1(s1)
    assert screen.dropped["non_finite_tau"] == 5
    assert screen.dropped["non_finite_epsilon"] == 1
    assert screen.dropped["nan_tau"] == ref.dropped["nan_tau"]  # NaN stays NaN
    assert np.isfinite(screen.trigenic["tau"]).all()
    assert np.isfinite(screen.trigenic["tau"].astype(np.float32)).all()
