"""Predict's input files are read the way the data loaders read theirs, and never overwritten."""

import gzip
import os

import pandas as pd
import pytest

from dango_nb.__main__ import main
from dango_nb.errors import DataFormatError
from dango_nb.eval.prediction import read_gene_list, read_triplet_list


@pytest.fixture
def setup(trained_run, tmp_path):
    study, ckpt, data_dir = trained_run
    src = ["--preset", "tiny", "--data-seed", "0", "--data-dir", str(data_dir), "--no-progress"]
    return study, ["predict", "--checkpoint", str(ckpt), *src]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_exported_text_reads_like_a_clean_file(tmp_path):
    clean = tmp_path / "clean.tsv"
    clean.write_text("gene1\tgene2\tgene3\nYAL001C\tYBR002W\tYCL003C\nYAL001C\tYBR002W\tYDR004W\n")
    expected = read_triplet_list(clean)
    # spreadsheet export: BOM, CSV quotes, CRLF, lower-case ORF names, no newline after a whole last line
    export = tmp_path / "export.csv"
    export.write_bytes(b'\xef\xbb\xbf"gene1","gene2","gene3"\r\n"yal001c","YBR002W","ycl003c"\r\n'
                       b'"YAL001C","ybr002w","YDR004W"')
    pd.testing.assert_frame_equal(read_triplet_list(export), expected)
    packed = tmp_path / "clean.tsv.gz"
    packed.write_bytes(gzip.compress(clean.read_bytes()))
    pd.testing.assert_frame_equal(read_triplet_list(packed), expected)
    genes = tmp_path / "genes.csv"
    genes.write_bytes(b'\xef\xbb\xbf"gene"\r\n"yal001c"\r\nYBR002W')
    assert read_gene_list(genes) == ["YAL001C", "YBR002W"]


@pytest.mark.parametrize("reader", [read_triplet_list, read_gene_list])
def test_cut_and_non_utf8_files_name_the_line(reader, tmp_path):
    cut = tmp_path / "cut.tsv"
    cut.write_text("YAL001C\tYBR002W\tYCL003C\nYAL001C\tYBR002W\tYDR0")
    with pytest.raises(DataFormatError, match=rf"^{cut}:2: line 2 has no final newline and .* does not end in a "
                                              "complete systematic ORF name: the file was truncated"):
        reader(cut)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(b"YAL001C\tYBR002W\tYCL003C\nYAL001C\tYBR002W\tYDR004W \xe9\n")
    with pytest.raises(DataFormatError, match=rf"^{latin}:2: not UTF-8 text"):
        reader(latin)
    quoted = tmp_path / "quoted.tsv"
    quoted.write_text("'YAL001C'\tYBR002W\tYCL003C\n")
    with pytest.raises(DataFormatError, match=rf"^{quoted}:1: gene name \"'YAL001C'\" holds"):
        reader(quoted)


def test_cli_reads_exported_triplets_and_names_bad_files(setup, tmp_path, capsys):
    study, base = setup
    g = study.genes
    clean = tmp_path / "clean.tsv"
    clean.write_text(f"gene1\tgene2\tgene3\n{g[0]}\t{g[1]}\t{g[2]}\n{g[3]}\t{g[4]}\t{g[5]}\n")
    export = tmp_path / "export.csv"
    export.write_bytes(b'\xef\xbb\xbf"gene1","gene2","gene3"\r\n' + f'"{g[0].lower()}","{g[1]}","{g[2]}"\r\n'
                       f'{g[3]},{g[4].lower()},{g[5]}'.encode())
    assert main([*base, "--triplets", str(clean), "--out", str(tmp_path / "a.tsv")]) == 0
    assert main([*base, "--triplets", str(export), "--out", str(tmp_path / "b.tsv")]) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.tsv", sep="\t"), pd.read_csv(tmp_path / "b.tsv", sep="\t"))

    latin = tmp_path / "latin.tsv"
    latin.write_bytes(f"{g[0]}\t{g[1]}\t{g[2]}\n{g[3]}\t{g[4]}\t{g[5]}\xe9\n".encode("latin-1"))
    out = tmp_path / "p.tsv"
    assert main([*base, "--triplets", str(latin), "--out", str(out)]) == 2
    assert _err(capsys).startswith(f"dango-nb predict: error: {latin}:2: not UTF-8 text: byte b'\\xe9'")
    fake = tmp_path / "text.parquet"
    fake.write_text(clean.read_text())
    assert main([*base, "--triplets", str(fake), "--out", str(out)]) == 2
    assert _err(capsys).startswith(f"dango-nb predict: error: {fake}: not a readable Parquet file (")
    genes = tmp_path / "genes.txt"
    genes.write_bytes(f"{g[0]}\n{g[1]}\xff\n".encode("latin-1"))
    assert main([*base, "--genes", str(genes), "--out", str(out), "--all"]) == 2
    assert _err(capsys).startswith(f"dango-nb predict: error: {genes}:2: not UTF-8 text")
    assert not out.exists()


def test_out_may_not_be_an_input(setup, tmp_path, capsys):
    study, base = setup
    g = study.genes
    triplets = tmp_path / "t.tsv"
    triplets.write_text(f"{g[0]}\t{g[1]}\t{g[2]}\n")
    before = triplets.read_bytes()
    link = tmp_path / "link.tsv"
    link.symlink_to(triplets)
    hard = tmp_path / "hard.tsv"
    os.link(triplets, hard)
    for out in (triplets, link, hard, tmp_path / "sub" / ".." / "t.tsv"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main([*base, "--triplets", str(triplets), "--out", str(out)]) == 2
        assert _err(capsys) == (f"dango-nb predict: error: --out {out} is the same file as --triplets {triplets}; "
                                "write the predictions to another file")
        assert triplets.read_bytes() == before and link.is_symlink()
    genes = tmp_path / "genes.tsv"
    genes.write_text("\n".join(g[:5]) + "\n")
    assert main([*base, "--genes", str(genes), "--out", str(genes), "--all"]) == 2
    assert "is the same file as --genes" in _err(capsys)
    assert genes.read_text() == "\n".join(g[:5]) + "\n"


@pytest.mark.parametrize("reader", [read_triplet_list, read_gene_list])
def test_a_whitespace_only_line_is_named_as_the_loaders_name_it(reader, tmp_path):
    spaced = tmp_path / "spaced.tsv"
    spaced.write_text("YAL001C\tYBR002W\tYCL003C\n \t \nYAL001C\tYBR002W\tYDR004W\n")
    with pytest.raises(DataFormatError, match=rf"^{spaced}:2: the line holds only whitespace; expected a data "
                                              r"line \(or an empty line\)$"):
        reader(spaced)
    # an empty line and a comment line are still skipped
    spaced.write_text("YAL001C\tYBR002W\tYCL003C\n\n# note\nYAL001C\tYBR002W\tYDR004W\n")
    assert len(reader(spaced)) == 2


def test_genes_and_triplets_named_parquet_share_the_parquet_check(setup, tmp_path, capsys):
    study, base = setup
    g = study.genes
    out = tmp_path / "p.tsv"
    fake = tmp_path / "genes.parquet"
    fake.write_text("\n".join(g[:5]) + "\n")
    assert main([*base, "--genes", str(fake), "--out", str(out), "--all"]) == 2
    assert _err(capsys).startswith(f"dango-nb predict: error: {fake}: not a readable Parquet file (")
    assert not out.exists()
    real = tmp_path / "real.parquet"
    pd.DataFrame({"gene": [x.lower() for x in g[:5]]}).to_parquet(real)
    assert read_gene_list(real) == list(g[:5])
    pd.DataFrame({"name": g[:5]}).to_parquet(real)
    with pytest.raises(DataFormatError, match=rf"^{real}: missing column\(s\) \['gene'\]; expected gene$"):
        read_gene_list(real)


def test_an_unknown_gene_names_the_file_and_first_line(setup, tmp_path, capsys):
    study, base = setup
    g = study.genes
    out = tmp_path / "p.tsv"
    triplets = tmp_path / "t.tsv"
    triplets.write_text(f"gene1\tgene2\tgene3\n{g[0]}\t{g[1]}\t{g[2]}\n\n{g[3]}\tYFOO01X\t{g[5]}\n"
                        f"YBAR02X\t{g[1]}\t{g[2]}\n")
    assert main([*base, "--triplets", str(triplets), "--out", str(out)]) == 2
    assert _err(capsys) == (f"dango-nb predict: error: {triplets}:4: triplets: 2 gene name(s) not in the model's "
                            f"vocabulary ({len(g)} genes): YFOO01X, YBAR02X")
    genes = tmp_path / "genes.txt"
    genes.write_text(f"{g[0]}\n{g[1]}\n{g[0]}\n# x\nYFOO01X\n{g[2]}\n")
    assert main([*base, "--genes", str(genes), "--out", str(out), "--all"]) == 2
    assert _err(capsys) == (f"dango-nb predict: error: {genes}:5: genes: 1 gene name(s) not in the model's "
                            f"vocabulary ({len(g)} genes): YFOO01X")
    parquet = tmp_path / "t.parquet"
    pd.DataFrame({"gene1": [g[0], "YFOO01X"], "gene2": [g[1], g[4]], "gene3": [g[2], g[5]]}).to_parquet(parquet)
    assert main([*base, "--triplets", str(parquet), "--out", str(out)]) == 2
    assert _err(capsys).startswith(f"dango-nb predict: error: {parquet}: row 1: triplets: 1 gene name(s)")
    assert not out.exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line(setup, tmp_path, capsys):
    import warnings

    from dango_nb.errors import CheckpointWarning

    study, base = setup
    g = study.genes
    triplets = tmp_path / "t.tsv"
    triplets.write_text(f"{g[0]}\t{g[1]}\t{g[2]}\n")
    other = tmp_path / "other"
    other.mkdir()
    text = other / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    empty = other / "empty.pt"
    empty.write_bytes(b"")
    src = base[base.index("--preset"):]
    for bad in (text, empty):
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # no warning before the error
            rc = main(["predict", "--checkpoint", str(bad), *src, "--triplets", str(triplets),
                       "--out", str(tmp_path / "p.tsv")])
        err = capsys.readouterr().err
        assert rc == 2
        assert err == f"dango-nb predict: error: {bad}: not a dango_nb checkpoint (not a file torch.save writes)\n"
    assert not (tmp_path / "p.tsv").exists()
