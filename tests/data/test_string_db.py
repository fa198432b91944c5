import gzip
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from dango_nb.data.string_db import (
    CHANNELS, STRING_COLUMNS, StringNetworks, combined_score, read_dango_release, read_string_detailed,
    write_dango_release, write_string_detailed,
)
from dango_nb.errors import DataFormatError

V91 = "4932.protein.links.detailed.v9.1.txt"

# The fixture file's edges by gene name (see tests/fixtures/string/4932.protein.links.detailed.v9.1.txt).
EXPECTED = {
    "neighborhood": {("YAL001C", "YAL002W", 0.150)},
    "fusion": {("YAL002W", "YCL001W", 0.801)},
    "cooccurence": {("YAL002W", "YCL001W", 0.273)},
    # YBR001C-YCL001W is listed as 88 one way and 91 the other: the max is kept
    "coexpression": {("Q0010", "YAL001C", 0.162), ("YBR001C", "YCL001W", 0.091)},
    # YCL001W-YDL227C is listed in one direction only
    "experimental": {("YAL001C", "YAL002W", 0.640), ("YBR001C", "YCL001W", 0.417), ("YCL001W", "YDL227C", 0.210)},
    "database": {("YAL001C", "YAL002W", 0.900)},
}


def named_edges(net: StringNetworks, channel: str) -> set:
    df = net.channels[channel]
    g = np.asarray(net.genes)
    return {(a, b, round(float(w), 6)) for a, b, w in zip(g[df["i"]], g[df["j"]], df["weight"])}


def check_canonical(net: StringNetworks):
    for c, df in net.channels.items():
        assert list(df.columns) == ["i", "j", "weight"], c
        assert df["i"].dtype == np.int64 and df["j"].dtype == np.int64 and df["weight"].dtype == np.float32
        assert (df["i"] < df["j"]).all()
        assert not df.duplicated(["i", "j"]).any()
        assert ((df["weight"] > 0) & (df["weight"] <= 1)).all()
        assert df["j"].max() < len(net.genes) if len(df) else True
        key = df["i"].to_numpy() * len(net.genes) + df["j"].to_numpy()
        assert (np.diff(key) > 0).all()


@pytest.fixture
def string_fixture(fixtures_dir):
    return fixtures_dir / "string" / V91


def test_read_string_detailed_plain(string_fixture):
    net = read_string_detailed(string_fixture)
    assert net.version == "9.1"
    assert net.genes == ["Q0010", "YAL001C", "YAL002W", "YBR001C", "YCL001W", "YDL227C"]
    assert tuple(net.channels) == CHANNELS
    for c in CHANNELS:
        assert named_edges(net, c) == {(a, b, round(np.float32(w).item(), 6)) for a, b, w in EXPECTED[c]}, c
    assert net.conflicts == {c: int(c == "coexpression") for c in CHANNELS}
    check_canonical(net)


def test_read_string_detailed_gz_and_versions(string_fixture, tmp_path):
    plain = read_string_detailed(string_fixture)
    for version in ("9.1", "11.0", "12.0"):
        gz = tmp_path / f"4932.protein.links.detailed.v{version}.txt.gz"
        with open(string_fixture, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        net = read_string_detailed(gz)
        assert net.version == version
        assert net.genes == plain.genes
        for c in CHANNELS:
            pd.testing.assert_frame_equal(net.channels[c], plain.channels[c])


def test_version_argument_and_unknown_name(string_fixture, tmp_path):
    other = tmp_path / "yeast_links.txt"
    shutil.copy(string_fixture, other)
    with pytest.raises(DataFormatError, match="version"):
        read_string_detailed(other)
    assert read_string_detailed(other, version="11.0").version == "11.0"


def test_textmining_on_request(string_fixture):
    net = read_string_detailed(string_fixture, channels=("textmining", "fusion"))
    assert list(net.channels) == ["textmining", "fusion"]
    assert named_edges(net, "textmining") == {("YAL001C", "YBR001C", 0.345), ("YBR001C", "YCL001W", 0.12)}
    with pytest.raises(ValueError, match="unknown STRING channel"):
        read_string_detailed(string_fixture, channels=("coexpresion",))


def test_write_string_detailed_round_trip(string_fixture, tmp_path):
    net = read_string_detailed(string_fixture, channels=(*CHANNELS, "textmining"))
    for name in (V91, V91 + ".gz"):
        out = tmp_path / name
        write_string_detailed(out, net)
        raw = out.read_bytes()
        assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
        text = gzip.decompress(raw).decode() if name.endswith(".gz") else raw.decode()
        lines = text.splitlines()
        assert lines[0] == " ".join(STRING_COLUMNS)
        # every pair in both directions; pairs with only textmining are kept too
        assert len(lines) - 1 == 2 * 6
        assert "4932.YAL002W 4932.YAL001C 150 0 0 0 640 900 0 " in text
        back = read_string_detailed(out, channels=(*CHANNELS, "textmining"))
        assert back.genes == net.genes
        for c in net.channels:
            pd.testing.assert_frame_equal(back.channels[c], net.channels[c])
        assert sum(back.conflicts.values()) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_combined_score_matches_string_scheme():
    # a single channel's score comes back unchanged; independent evidence adds up
    s = np.zeros((3, 7), dtype=np.int64)
    s[0, 0] = 150
    s[1, 3] = 700
    s[2, [3, 4]] = 700
    got = combined_score(s)
    assert got[0] == 150 and got[1] == 700
    p = 0.041
    one = (0.7 - p) / (1 - p)
    expect = 1 - (1 - one) ** 2
    assert got[2] == round((expect + p * (1 - expect)) * 1000)


def test_write_large_weights_keep_small_edges(tmp_path):
    net = StringNetworks("12.0", ["A1", "B2", "C3"], {
        "coexpression": pd.DataFrame({"i": np.array([0, 1], np.int64), "j": np.array([1, 2], np.int64),
                                      "weight": np.array([0.0004, 1.0], np.float32)})})
    out = tmp_path / "4932.protein.links.detailed.v12.0.txt"
    write_string_detailed(out, net)
    back = read_string_detailed(out)
    assert len(back.channels["coexpression"]) == 2  # 0.0004 is written as 1, not dropped to 0
    assert back.channels["coexpression"]["weight"].tolist() == pytest.approx([0.001, 1.0])


# ----------------------------------------------------------------------------------------- bad input

def test_missing_column(fixtures_dir):
    path = fixtures_dir / "string" / "4932.protein.links.detailed.v9.1.missing_column.txt"
    with pytest.raises(DataFormatError) as err:
        read_string_detailed(path)
    assert err.value.line == 1 and err.value.column == "experimental"
    assert str(path) in str(err.value)
    # the columns that are there can still be read on request
    assert len(read_string_detailed(path, channels=("fusion",)).channels["fusion"]) == 1


def test_non_numeric_score(fixtures_dir):
    path = fixtures_dir / "string" / "4932.protein.links.detailed.v9.1.non_numeric.txt"
    with pytest.raises(DataFormatError) as err:
        read_string_detailed(path)
    assert (err.value.line, err.value.column) == (5, "experimental")
    assert "'high'" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("change, line, column, message", [
    (lambda t: t.replace("4932.YBR001C 4932.YCL001W 0 0 0 88", "4932.YBR001C 4932.YCL001W 0 0 0 1088"),
     10, "coexpression", "outside 0..1000"),
    (lambda t: t.replace("4932.YBR001C 4932.YCL001W 0 0 0 88", "4932.YBR001C 4932.YCL001W 0 0 0 -8"),
     10, "coexpression", "outside 0..1000"),
    (lambda t: t.replace("4932.YCL001W 4932.YDL227C", "9606.YCL001W 4932.YDL227C"), 12, "protein1", "4932."),
    (lambda t: t.replace("4932.Q0010 4932.YAL001C 0 0 0 162 0 0 0 162", "4932.Q0010 4932.YAL001C 0 0 162 0 0 0 162"),
     2, None, "expected 10 space-separated fields"),
    (lambda t: t[: t.index("4932.YCL001W 4932.YDL227C") + 30], 12, None, "truncated"),
])
def test_malformed_rows(string_fixture, tmp_path, change, line, column, message):
    path = tmp_path / V91
    path.write_text(change(string_fixture.read_text()))
    with pytest.raises(DataFormatError, match=message) as err:
        read_string_detailed(path)
    assert err.value.line == line and err.value.column == column
    assert str(path) in str(err.value)


def test_truncated_gzip(string_fixture, tmp_path):
    data = gzip.compress(string_fixture.read_bytes() * 50)
    path = tmp_path / (V91 + ".gz")
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="truncated or corrupt gzip") as err:
        read_string_detailed(path)
    assert str(path) in str(err.value)


def test_not_gzip_and_empty(tmp_path):
    path = tmp_path / (V91 + ".gz")
    path.write_bytes(b"protein1 protein2\n")
    with pytest.raises(DataFormatError, match="gzip"):
        read_string_detailed(path)
    empty = tmp_path / V91
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty file") as err:
        read_string_detailed(empty)
    assert err.value.line == 1


# ------------------------------------------------------------------------------- DANGO release format

def test_read_dango_release_fixture(fixtures_dir):
    with pytest.warns(UserWarning, match="coexpression"):
        net = read_dango_release(fixtures_dir / "dango_release")
    assert net.genes == ["YAL001C", "YAL002W", "YBR001C", "YCL001W", "Q0010", "YDL227C"]
    assert list(net.channels) == ["neighborhood", "fusion", "database"]
    assert net.missing_channels == ("cooccurence", "coexpression", "experimental")
    assert named_edges(net, "neighborhood") == {("YAL001C", "YAL002W", 0.15), ("YBR001C", "YCL001W", 0.062)}
    assert named_edges(net, "fusion") == {("YAL002W", "YCL001W", 0.801)}
    # ids keep the gene list's order: 6 -> 4 is (YDL227C, YCL001W), stored as i=3 < j=5
    assert named_edges(net, "database") == {("YAL001C", "YAL002W", 0.9), ("YAL001C", "Q0010", 0.45),
                                           ("YCL001W", "YDL227C", 0.3)}
    check_canonical(net)


def test_dango_release_explicit_channels(fixtures_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = read_dango_release(fixtures_dir / "dango_release", channels=("fusion",))
    assert list(net.channels) == ["fusion"]
    with pytest.raises(FileNotFoundError, match="coexpression"):
        read_dango_release(fixtures_dir / "dango_release", channels=("fusion", "coexpression"))


def test_dango_release_round_trip(fixtures_dir, tmp_path):
    net = read_dango_release(fixtures_dir / "dango_release", channels=("neighborhood", "fusion", "database"))
    write_dango_release(tmp_path, net)
    assert (tmp_path / "yeast_string_fusion_adjacency.txt").read_text() == "2\t4\t0.801000\n4\t2\t0.801000\n"
    back = read_dango_release(tmp_path, channels=list(net.channels))
    assert back.genes == net.genes
    for c in net.channels:
        pd.testing.assert_frame_equal(back.channels[c], net.channels[c])


def test_string_to_dango_release_and_back(string_fixture, tmp_path):
    net = read_string_detailed(string_fixture)
    write_dango_release(tmp_path, net)
    back = read_dango_release(tmp_path)
    assert back.missing_channels == ()
    for c in CHANNELS:
        assert named_edges(back, c) == named_edges(net, c)


def test_dango_release_unknown_gene_id(fixtures_dir):
    folder = fixtures_dir / "dango_release_bad_id"
    with pytest.raises(DataFormatError, match=r"gene id 7 outside 1\.\.6") as err:
        read_dango_release(folder, channels=("neighborhood",))
    assert err.value.line == 3 and err.value.column == "id1"
    assert "yeast_string_neighborhood_adjacency.txt" in str(err.value)


@pytest.mark.parametrize("content, line, column, message", [
    ("1\t2\t0.5\n2\t1\tstrong\n", 2, "weight", "strong"),
    ("1\t2\t0.5\n2\t1\t1.5\n", 2, "weight", "outside"),
    ("1\t2\t0.5\n2\t1\t0\n", 2, "weight", "outside"),
    ("1\t2\t0.5\n0\t1\t0.5\n", 2, "id1", "outside"),
    ("1\t2\t0.5\n2\tx\t0.5\n", 2, "id2", "'x'"),
    ("1\t2\t0.5\n2\t1\t0.5\n3\t", 3, None, "truncated"),
    ("1 2 0.5\n", 1, None, "3 tab-separated"),
])
def test_dango_release_malformed(fixtures_dir, tmp_path, content, line, column, message):
    shutil.copy(fixtures_dir / "dango_release" / "yeast_string_genes.txt", tmp_path)
    (tmp_path / "yeast_string_fusion_adjacency.txt").write_text(content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_dango_release(tmp_path, channels=("fusion",))
    assert (err.value.line, err.value.column) == (line, column)


def test_dango_release_bad_gene_list(tmp_path):
    (tmp_path / "yeast_string_genes.txt").write_text("YAL001C\nYAL002W\nYAL001C\n")
    (tmp_path / "yeast_string_fusion_adjacency.txt").write_text("1\t2\t0.5\n")
    with pytest.raises(DataFormatError, match="repeated") as err:
        read_dango_release(tmp_path)
    assert err.value.line == 3
    (tmp_path / "yeast_string_genes.txt").write_text("YAL001C\n\nYAL002W\n")
    with pytest.raises(DataFormatError) as err:
        read_dango_release(tmp_path)
    assert err.value.line == 2


def test_dango_release_no_adjacency_files(fixtures_dir, tmp_path):
    shutil.copy(fixtures_dir / "dango_release" / "yeast_string_genes.txt", tmp_path)
    with pytest.raises(DataFormatError, match="no adjacency files"):
        read_dango_release(tmp_path)


def test_shared_dango_release_counts(shared_string_dir):
    with pytest.warns(UserWarning, match="coexpression"):
        net = read_dango_release(shared_string_dir)
    assert len(net.genes) == 6400
    assert net.num_edges() == {"neighborhood": 45610, "fusion": 1361, "cooccurence": 2664, "database": 33486}
    assert set(net.missing_channels) == {"coexpression", "experimental"}
    assert sum(net.conflicts.values()) == 0
    check_canonical(net)


def test_tab_separated_is_rejected(string_fixture, tmp_path):
    path = tmp_path / V91
    lines = string_fixture.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "".join(x.replace(" ", "\t") for x in lines[1:]))
    with pytest.raises(DataFormatError, match="expected 10 space-separated fields .*found 1") as err:
        read_string_detailed(path)
    assert err.value.line == 2


def test_crlf_and_blank_lines(string_fixture, tmp_path):
    path = tmp_path / V91
    lines = string_fixture.read_text().splitlines()
    path.write_text("\r\n".join(lines[:4] + [""] + lines[4:]) + "\r\n\r\n")
    net, ref = read_string_detailed(path), read_string_detailed(string_fixture)
    for c in CHANNELS:
        pd.testing.assert_frame_equal(net.channels[c], ref.channels[c])


# ------------------------------------------------------------------- what exports and cuts leave behind

def test_plain_string_file_cut_inside_its_last_field(string_fixture, tmp_path):
    text = string_fixture.read_text()
    n_lines = text.count("\n")
    path = tmp_path / V91
    path.write_text(text[:-2])  # "... 0 0 210\n" -> "... 0 0 21": the line still parses
    with pytest.raises(DataFormatError, match="has no final newline.*truncated") as err:
        read_string_detailed(path)
    assert err.value.line == n_lines and str(path) in str(err.value)


def test_header_only_or_all_zero_string_file(string_fixture, tmp_path):
    path = tmp_path / V91
    path.write_text(" ".join(STRING_COLUMNS) + "\n")
    with pytest.raises(DataFormatError, match="no data rows after the header") as err:
        read_string_detailed(path)
    assert str(path) in str(err.value)
    lines = string_fixture.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "".join(x for x in lines[1:] if x.split()[3] == "0"))  # fusion always 0
    with pytest.raises(DataFormatError, match=r"no edges: every score of channel\(s\) \['fusion'\] is 0"):
        read_string_detailed(path, channels=("fusion",))


def test_bom_before_string_header(string_fixture, tmp_path):
    path = tmp_path / V91
    path.write_bytes(b"\xef\xbb\xbf" + string_fixture.read_bytes())
    net, ref = read_string_detailed(path), read_string_detailed(string_fixture)
    assert net.genes == ref.genes
    for c in CHANNELS:
        pd.testing.assert_frame_equal(net.channels[c], ref.channels[c])


def test_lowercase_string_orfs_agree_with_upper_case(string_fixture, tmp_path):
    text = string_fixture.read_text()
    path = tmp_path / V91
    # one direction lower-cased: both spellings name the same gene
    path.write_text(text.replace("4932.YAL001C 4932.YAL002W", "4932.yal001c 4932.YAL002W"))
    net, ref = read_string_detailed(path), read_string_detailed(string_fixture)
    assert net.genes == ref.genes
    for c in CHANNELS:
        pd.testing.assert_frame_equal(net.channels[c], ref.channels[c])


@pytest.mark.parametrize("change, line, column, message", [
    (lambda t: t.replace("4932.YAL001C 4932.YAL002W", '"4932.YAL001C" "4932.YAL002W"'), 4, "protein1", "'\"4932"),
    (lambda t: t.replace("4932.YAL002W 4932.YAL001C", '4932.YAL002W" 4932.YAL001C'), 5, "protein1", "YAL002W\""),
    (lambda t: t.replace("\n4932.YAL002W 4932.YCL001W", "\n   \n4932.YAL002W 4932.YCL001W"), 8, None, "only whitespace"),
    (lambda t: t.replace("4932.YBR001C 4932.YCL001W 0 0 0 88", "4932.YBR001C 4932.YCL\xe9 0 0 0 88"), 10, None, "UTF-8"),
])
def test_string_export_artefacts_named(string_fixture, tmp_path, change, line, column, message):
    path = tmp_path / V91
    path.write_bytes(change(string_fixture.read_text()).encode("latin-1"))
    with pytest.raises(DataFormatError, match=message) as err:
        read_string_detailed(path)
    assert (err.value.line, err.value.column) == (line, column) and str(path) in str(err.value)


def _release(tmp_path, fixtures_dir, genes: bytes | None = None, fusion: bytes | None = None):
    src = fixtures_dir / "dango_release"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "yeast_string_genes.txt").write_bytes(genes if genes is not None
                                                      else (src / "yeast_string_genes.txt").read_bytes())
    (tmp_path / "yeast_string_fusion_adjacency.txt").write_bytes(
        fusion if fusion is not None else (src / "yeast_string_fusion_adjacency.txt").read_bytes())
    return tmp_path


def test_dango_gene_list_bom_quotes_case_crlf(fixtures_dir, tmp_path):
    ref = read_dango_release(fixtures_dir / "dango_release", channels=("fusion",))
    names = (fixtures_dir / "dango_release" / "yeast_string_genes.txt").read_text().split("\n")
    variants = [
        b"\xef\xbb\xbf" + "\n".join(names).encode(),
        "\n".join(f'"{g}"' for g in names).encode(),
        "\r\n".join(g.lower() for g in names).encode() + b"\r\n",
    ]
    for k, genes in enumerate(variants):
        folder = _release(tmp_path / str(k), fixtures_dir, genes=genes,
                          fusion=b"2\t4\t0.801000\r\n4\t2\t0.801000\r\n")
        net = read_dango_release(folder, channels=("fusion",))
        assert net.genes == ref.genes, k
        pd.testing.assert_frame_equal(net.channels["fusion"], ref.channels["fusion"])


def test_dango_gene_list_artefacts_and_cut(fixtures_dir, tmp_path):
    folder = _release(tmp_path, fixtures_dir, genes=b'YAL001C\n"YAL002W\nYBR001C\nYCL001W\n')
    with pytest.raises(DataFormatError, match="expected one gene name") as err:
        read_dango_release(folder, channels=("fusion",))
    assert err.value.line == 2
    # the released list has no final newline; a cut shows as an incomplete last name
    _release(tmp_path, fixtures_dir, genes=b"YAL001C\nYAL002W\nYBR001C\nYCL0")
    with pytest.raises(DataFormatError, match="'YCL0' is not a complete systematic ORF name.*truncated") as err:
        read_dango_release(folder, channels=("fusion",))
    assert err.value.line == 4 and "yeast_string_genes.txt" in str(err.value)


@pytest.mark.parametrize("content, line, column, message", [
    (b"2\t4\t0.801000\n4\t2\t0.8", 2, None, "no final newline.*truncated"),  # the cut line still parses
    (b"2\t4\t0.801000\n \t\n4\t2\t0.801000\n", 2, None, "only whitespace"),
    (b"2\t4\t0.801000\n  \n4\t2\t0.801000\n", 2, None, "only whitespace"),
    (b"2\t4\t0.801000\n4\t2\t0.8\xff\n", 2, None, "not UTF-8"),
    (b"2\t4\t1e-50\n4\t2\t1e-50\n", 1, "weight", "rounds to 0 in float32"),
    (b"2\t4\t-0.5\n", 1, "weight", "outside"),
])
def test_dango_adjacency_bad_lines_named(fixtures_dir, tmp_path, content, line, column, message):
    folder = _release(tmp_path, fixtures_dir, fusion=content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_dango_release(folder, channels=("fusion",))
    assert (err.value.line, err.value.column) == (line, column)
    assert "yeast_string_fusion_adjacency.txt" in str(err.value)


def test_dango_empty_adjacency_file(fixtures_dir, tmp_path):
    folder = _release(tmp_path, fixtures_dir, fusion=b"")
    with pytest.raises(DataFormatError, match="no edges") as err:
        read_dango_release(folder, channels=("fusion",))
    assert "yeast_string_fusion_adjacency.txt" in str(err.value)
