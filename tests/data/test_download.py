import hashlib
import json
import socket
from pathlib import Path

import pooch
import pytest
import requests

from dango_nb.data import download
from dango_nb.data.download import (
    KNOWN_FILES, KUZMIN_S1, REGISTRY_FILE, DataNotAvailableError, data_dir, fetch, fetch_kuzmin_s1, fetch_string,
    string_filename, string_url,
)
from dango_nb.errors import DataFormatError

V91 = "4932.protein.links.detailed.v9.1.txt.gz"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: downloads go through fake downloaders only."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to use the network")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("DANGO_OFFLINE", raising=False)


def writer(content: bytes, calls: list):
    def downloader(url, output_file, pooch_obj):
        calls.append(url)
        Path(output_file).write_bytes(content)
    return downloader


def failing(partial: bytes, exc: Exception):
    def downloader(url, output_file, pooch_obj):
        Path(output_file).write_bytes(partial)  # a download cut off half way
        raise exc
    return downloader


def test_data_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DANGO_DATA_DIR", str(tmp_path / "raw"))
    assert data_dir() == tmp_path / "raw"
    monkeypatch.delenv("DANGO_DATA_DIR")
    d = data_dir()
    assert d.is_absolute() and "dango_nb" in d.parts


def test_urls():
    assert string_url("9.1") == ("https://string91.embl.de/newstring_download/protein.links.detailed.v9.1/"
                                 "4932.protein.links.detailed.v9.1.txt.gz")
    for v in ("11.0", "12.0", "12.5"):
        assert string_url(v).endswith(f"/download/protein.links.detailed.v{v}/4932.protein.links.detailed.v{v}.txt.gz")
    with pytest.raises(ValueError):
        string_url("10.5")
    assert KNOWN_FILES[string_filename("11.0")].url == string_url("11.0")
    assert KNOWN_FILES[KUZMIN_S1].url is None


def test_present_file_used_without_network(monkeypatch, tmp_path):
    monkeypatch.setenv("DANGO_DATA_DIR", str(tmp_path))
    (tmp_path / V91).write_bytes(b"local")

    def no_retrieve(*a, **k):
        raise AssertionError("pooch.retrieve called for a present file")
    monkeypatch.setattr(pooch, "retrieve", no_retrieve)
    assert fetch(V91) == tmp_path / V91
    assert fetch_string("9.1") == tmp_path / V91
    (tmp_path / KUZMIN_S1).write_text("x")
    assert fetch_kuzmin_s1() == tmp_path / KUZMIN_S1
    # a URL naming a present file is served locally too
    assert fetch(string_url("9.1")) == tmp_path / V91


def test_present_file_hash_checked(tmp_path):
    (tmp_path / V91).write_bytes(b"local")
    good = hashlib.sha256(b"local").hexdigest()
    assert fetch(V91, folder=tmp_path, known_hash=good) == tmp_path / V91
    assert fetch(V91, folder=tmp_path, known_hash="sha256:" + good) == tmp_path / V91
    with pytest.raises(DataFormatError, match="delete the file"):
        fetch(V91, folder=tmp_path, known_hash="0" * 64)


def test_missing_offline_names_file_and_folder(monkeypatch, tmp_path):
    with pytest.raises(DataNotAvailableError) as err:
        fetch(V91, folder=tmp_path, allow_download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f"Place '{V91}' in {tmp_path}" in msg and "DANGO_DATA_DIR" in msg
    monkeypatch.setenv("DANGO_OFFLINE", "1")
    with pytest.raises(DataNotAvailableError, match="DANGO_OFFLINE"):
        fetch(V91, folder=tmp_path)


def test_kuzmin_has_no_url(tmp_path):
    with pytest.raises(DataNotAvailableError) as err:
        fetch(KUZMIN_S1, folder=tmp_path)
    msg = str(err.value)
    assert f"Place '{KUZMIN_S1}' in {tmp_path}" in msg and "10.1126/science.aao1729" in msg


def test_unknown_name(tmp_path):
    with pytest.raises(DataNotAvailableError, match="no download URL"):
        fetch("something.tsv", folder=tmp_path)
    with pytest.raises(ValueError, match="bare file name"):
        fetch("sub/something.tsv", folder=tmp_path)


def test_download_once(tmp_path):
    calls = []
    got = fetch(V91, folder=tmp_path, downloader=writer(b"payload", calls))
    assert got == tmp_path / V91 and got.read_bytes() == b"payload"
    assert calls == [string_url("9.1")]
    fetch(V91, folder=tmp_path, downloader=writer(b"other", calls))
    assert len(calls) == 1 and got.read_bytes() == b"payload"
    assert sorted(p.name for p in tmp_path.iterdir()) == [V91, REGISTRY_FILE]


def test_download_into_new_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DANGO_DATA_DIR", str(tmp_path / "new" / "raw"))
    calls = []
    got = fetch_string("12.0", downloader=writer(b"v12", calls))
    assert got == tmp_path / "new" / "raw" / string_filename("12.0") and got.read_bytes() == b"v12"


@pytest.mark.parametrize("exc", [requests.exceptions.ConnectionError("no route to host"), OSError("disk full"),
                                 KeyboardInterrupt()])
def test_failed_download_leaves_nothing(tmp_path, exc):
    expected = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else DataNotAvailableError
    with pytest.raises(expected) as err:
        fetch(V91, folder=tmp_path, downloader=failing(b"half a fi", exc))
    if expected is DataNotAvailableError:
        assert V91 in str(err.value) and str(tmp_path) in str(err.value) and string_url("9.1") in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the target, pooch's temporary file nor a record is left
    # the next call tries again instead of trusting a partial file
    calls = []
    assert fetch(V91, folder=tmp_path, downloader=writer(b"full", calls)).read_bytes() == b"full"
    assert len(calls) == 1


def test_hash_mismatch_on_download_leaves_nothing(tmp_path):
    with pytest.raises(DataNotAvailableError, match="downloading"):
        fetch(V91, folder=tmp_path, known_hash="0" * 64, downloader=writer(b"tampered", []))
    assert list(tmp_path.iterdir()) == []


def test_module_exports():
    import dango_nb.data as data

    for name in ("data_dir", "fetch", "string_url", "DataNotAvailableError"):
        assert getattr(data, name) is getattr(download, name)


# ------------------------------------------------------------------------------ the folder's registry

def registry(folder: Path) -> dict:
    return json.loads((folder / REGISTRY_FILE).read_text())["files"]


def test_every_url_prefers_https():
    for v in ("9.1", "11.0", "12.0"):
        assert string_url(v).startswith("https://"), v


def test_first_download_recorded_and_verified_on_reuse(tmp_path):
    fetch(V91, folder=tmp_path, downloader=writer(b"payload", []))
    rec = registry(tmp_path)[V91]
    assert rec["bytes"] == 7 and rec["sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert rec["url"] == string_url("9.1")
    assert fetch(V91, folder=tmp_path) == tmp_path / V91  # intact: reused
    (tmp_path / V91).write_bytes(b"paylaod")  # same size, other bytes
    with pytest.raises(DataFormatError) as err:
        fetch(V91, folder=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / V91) in msg
    assert f"expected sha256 {rec['sha256']}" in msg and hashlib.sha256(b"paylaod").hexdigest() in msg
    assert "delete it to download it again" in msg and f"delete the '{V91}' entry" in msg
    (tmp_path / V91).write_bytes(b"pay")  # cut short
    with pytest.raises(DataFormatError, match="found 3 bytes instead of 7"):
        fetch(V91, folder=tmp_path)


def test_redownload_must_match_the_record(tmp_path):
    fetch(V91, folder=tmp_path, downloader=writer(b"payload", []))
    (tmp_path / V91).unlink()
    with pytest.raises(DataNotAvailableError) as err:
        fetch(V91, folder=tmp_path, downloader=writer(b"swapped", []))
    assert hashlib.sha256(b"payload").hexdigest() in str(err.value) and "recorded in" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [REGISTRY_FILE]  # the swapped bytes are gone
    assert fetch(V91, folder=tmp_path, downloader=writer(b"payload", [])).read_bytes() == b"payload"


def test_placed_file_recorded_on_first_use(tmp_path):
    (tmp_path / KUZMIN_S1).write_text("screen\n")
    fetch_kuzmin_s1(folder=tmp_path)
    assert registry(tmp_path)[KUZMIN_S1]["sha256"] == hashlib.sha256(b"screen\n").hexdigest()
    (tmp_path / KUZMIN_S1).write_text("SCREEN\n")
    with pytest.raises(DataFormatError, match="differs from the copy recorded"):
        fetch_kuzmin_s1(folder=tmp_path)
    # recovering as the message says: drop the entry, the new file is recorded
    reg = json.loads((tmp_path / REGISTRY_FILE).read_text())
    del reg["files"][KUZMIN_S1]
    (tmp_path / REGISTRY_FILE).write_text(json.dumps(reg))
    assert fetch_kuzmin_s1(folder=tmp_path) == tmp_path / KUZMIN_S1
    assert registry(tmp_path)[KUZMIN_S1]["sha256"] == hashlib.sha256(b"SCREEN\n").hexdigest()


def test_broken_registry_is_named(tmp_path):
    (tmp_path / V91).write_bytes(b"x")
    (tmp_path / REGISTRY_FILE).write_text("{not json")
    with pytest.raises(DataFormatError, match="unreadable registry") as err:
        fetch(V91, folder=tmp_path)
    assert REGISTRY_FILE in str(err.value)


def test_read_only_folder_still_serves_its_files(tmp_path, caplog, monkeypatch):
    (tmp_path / V91).write_bytes(b"x")

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(download, "atomic_write_json", read_only)
    assert fetch(V91, folder=tmp_path) == tmp_path / V91
    assert "cannot record" in caplog.text and not (tmp_path / REGISTRY_FILE).exists()
