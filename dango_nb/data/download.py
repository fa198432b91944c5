"""Finding raw data files locally, or downloading them once with pooch.

Files live in :func:`data_dir` (``$DANGO_DATA_DIR``, else the per-user cache from platformdirs).
A file already there is used without any network access. Only a missing file is downloaded; pooch
streams it to a temporary file in the same folder and renames it into place after the download (and
hash check) succeeded, so an interrupted or failed download never leaves a file under the real name.
When a file is missing and cannot be downloaded (offline, ``DANGO_OFFLINE=1``, or no known URL) one
:class:`DataNotAvailableError` says which file to place in which folder.

No published hash exists for these files, so the folder keeps its own: the first time a file is
downloaded (or first used, when placed by hand) its size and sha256 go into ``registry.json`` in
the same folder (trust on first use, as pooch's registries and ``ssh``'s known hosts do). Every later
use checks the file against that record, and a download of a file whose record exists must match
it, so a file changed on disk or swapped at the source is refused, naming both hashes.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import platformdirs
import pooch

from dango_nb.errors import DataFormatError
from dango_nb.fileio import atomic_write_json

log = logging.getLogger(__name__)

ENV_DATA_DIR = "DANGO_DATA_DIR"
ENV_OFFLINE = "DANGO_OFFLINE"

STRING_VERSIONS = ("9.1", "11.0", "12.0")
KUZMIN_S1 = "aao1729_data_s1.tsv"
#: Size and sha256 of every file of a data folder, recorded on first download or use.
REGISTRY_FILE = "registry.json"


class DataNotAvailableError(FileNotFoundError):
    """A data file is not in the data folder and could not be downloaded."""


@dataclass(frozen=True)
class RemoteFile:
    """A known raw file: where it comes from and, when known, its sha256."""

    name: str
    url: str | None
    sha256: str | None
    source: str


def string_filename(version: str) -> str:
    return f"4932.protein.links.detailed.v{version}.txt.gz"


def string_url(version: str) -> str:
    """Download URL of the yeast (taxon 4932) ``protein.links.detailed`` file of a STRING version.

    v9.1 lives on the archived ``string91.embl.de`` site (served over https too); v11.0 on ``stringdb-static.org``, STRING's
    download host when v11.0 was current (the archive site ``version-11-0.string-db.org`` links
    there); v12.0 and later follow ``stringdb-downloads.org``'s layout
    ``download/protein.links.detailed.v{ver}/4932.protein.links.detailed.v{ver}.txt.gz``.
    """
    version = str(version)
    name = string_filename(version)
    if version == "9.1":
        return f"https://string91.embl.de/newstring_download/protein.links.detailed.v9.1/{name}"
    if version == "11.0":
        return f"https://stringdb-static.org/download/protein.links.detailed.v11.0/{name}"
    try:
        major = float(version)
    except ValueError:
        raise ValueError(f"STRING version {version!r} is not of the form '12.0'") from None
    if major < 12:
        raise ValueError(f"no known download URL for STRING v{version}; known: {STRING_VERSIONS} and >= 12.0")
    return f"https://stringdb-downloads.org/download/protein.links.detailed.v{version}/{name}"


#: Files the package knows by name. No hash is published for them, so ``sha256`` is None and the
#: folder's :data:`REGISTRY_FILE` pins each file after its first download; pass ``known_hash=`` to
#: :func:`fetch` to pin one up front.
KNOWN_FILES: dict[str, RemoteFile] = {
    **{string_filename(v): RemoteFile(string_filename(v), string_url(v), None,
                                      f"STRING v{v} download page (yeast, taxon 4932)")
       for v in STRING_VERSIONS},
    # Science serves supplements through its web site (aao1729_data_s1.zip holding the .tsv), not at a
    # URL a script can rely on, so the user places the file.
    KUZMIN_S1: RemoteFile(KUZMIN_S1, None, None,
                          "Kuzmin et al. 2018, Science 360:eaao1729, Supplementary Materials, Data S1 "
                          "(https://doi.org/10.1126/science.aao1729; unzip aao1729_data_s1.zip)"),
}


def data_dir() -> Path:
    """The raw-data folder: ``$DANGO_DATA_DIR`` when set, else the per-user cache for dango_nb."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("dango_nb"))


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def _split(name_or_url: str) -> tuple[str, str | None, RemoteFile | None]:
    if "://" in name_or_url:
        fname = Path(urlparse(name_or_url).path).name
        if not fname:
            raise ValueError(f"cannot tell a file name from URL {name_or_url!r}")
        return fname, name_or_url, KNOWN_FILES.get(fname)
    if "/" in name_or_url or os.sep in name_or_url:
        raise ValueError(f"{name_or_url!r}: pass a bare file name or a URL; for a file elsewhere use its path directly")
    known = KNOWN_FILES.get(name_or_url)
    return name_or_url, (known.url if known else None), known


def _read_registry(folder: Path) -> dict:
    path = folder / REGISTRY_FILE
    try:
        reg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"unreadable registry ({exc}); delete it to record every file of {folder} "
                              "again from what is there now", path) from exc
    if not isinstance(reg, dict) or not isinstance(reg.get("files", {}), dict):
        raise DataFormatError(f"expected a JSON object with 'files'; delete it to record every file of {folder} "
                              "again", path)
    return reg.get("files", {})


def _record(folder: Path, fname: str, path: Path, url: str | None) -> None:
    files = _read_registry(folder)
    files[fname] = {"bytes": path.stat().st_size, "sha256": pooch.file_hash(str(path), alg="sha256"),
                    "url": url, "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        atomic_write_json({"files": files}, folder / REGISTRY_FILE)
    except OSError as exc:  # a read-only data folder can still be read; it just cannot pin its files
        log.warning("%s: cannot record %s's sha256 (%s); it will not be verified on reuse",
                    folder / REGISTRY_FILE, fname, exc)


def _verify(target: Path, fname: str, rec: dict, registry: Path) -> None:
    """Refuse ``target`` when its size or sha256 differs from the registry's record."""
    want = str(rec.get("sha256", ""))
    got_size = target.stat().st_size
    got = pooch.file_hash(str(target), alg="sha256") if got_size == rec.get("bytes") else None
    if got != want:
        found = f"sha256 {got}" if got else f"{got_size} bytes instead of {rec.get('bytes')}"
        raise DataFormatError(
            f"differs from the copy recorded in {registry} on {rec.get('recorded', '?')}: expected sha256 {want}, "
            f"found {found}. If the file was damaged, delete it to download it again (the download must "
            f"match the record); if you replaced it on purpose, delete the '{fname}' entry from {registry} "
            "to record the new file", target)


def fetch(name_or_url: str, *, folder: str | os.PathLike | None = None, known_hash: str | None = None,
          allow_download: bool | None = None, progressbar: bool = False,
          downloader: Callable | None = None) -> Path:
    """Path of a raw file in ``folder`` (default :func:`data_dir`), downloading it only if missing.

    ``name_or_url``: a known file name (see :data:`KNOWN_FILES`, e.g. ``string_filename("9.1")`` or
    ``KUZMIN_S1``) or a URL. ``allow_download=None`` downloads unless ``$DANGO_OFFLINE`` is set.
    ``downloader`` is passed to ``pooch.retrieve`` (tests use it to stay off the network).
    The file is checked against ``known_hash`` when given, else against its record in the folder's
    :data:`REGISTRY_FILE` (written after the first download or first use).
    Raises :class:`DataNotAvailableError` (a ``FileNotFoundError``) naming the file and the folder
    when the file is missing and cannot be downloaded, and ``DataFormatError`` when a file's sha256
    differs from the known or recorded one (the message says how to recover).
    """
    fname, url, known = _split(name_or_url)
    folder = Path(folder).expanduser() if folder is not None else data_dir()
    sha = known_hash or (known.sha256 if known else None)
    target = folder / fname
    registry = folder / REGISTRY_FILE
    rec = _read_registry(folder).get(fname) if folder.is_dir() else None
    if target.is_file():
        if sha is not None:
            algo, _, digest = sha.rpartition(":")
            got = pooch.file_hash(str(target), alg=algo or "sha256")
            if got != digest.lower():
                raise DataFormatError(f"{algo or 'sha256'} {got} differs from the expected {digest}; "
                                      "delete the file to download it again", target)
        elif rec is not None:
            _verify(target, fname, rec, registry)
        if rec is None:
            _record(folder, fname, target, url)
        return target

    where = f"Place '{fname}' in {folder}"
    hint = f" (or set {ENV_DATA_DIR} to the folder that holds it)"
    get = f"; get it from {known.source}" if known else (f"; it is downloadable from {url}" if url else "")
    if url is None:
        raise DataNotAvailableError(f"{fname} not found in {folder} and it has no download URL. "
                                    f"{where}{hint}{get}.")
    if allow_download is None:
        allow_download = not _offline()
    if not allow_download:
        raise DataNotAvailableError(f"{fname} not found in {folder} and downloading is switched off"
                                    f"{f' ({ENV_OFFLINE} is set)' if _offline() else ''}. {where}{hint}{get}.")
    pinned = sha or (f"sha256:{rec['sha256']}" if rec is not None else None)
    try:
        got = pooch.retrieve(url, known_hash=pinned, fname=fname, path=str(folder), progressbar=progressbar,
                             downloader=downloader)
    except Exception as exc:  # network errors come in many types (requests, ftplib, socket, hash mismatch)
        pin = (f" The download must match the sha256 {rec['sha256']} recorded in {registry} on "
               f"{rec.get('recorded', '?')}; if the source changed on purpose, delete the '{fname}' entry "
               "there." if rec is not None and sha is None else "")
        raise DataNotAvailableError(f"{fname} not found in {folder} and downloading {url} failed "
                                    f"({type(exc).__name__}: {exc}).{pin} {where}{hint}{get}.") from exc
    if sha is None and rec is None:
        _record(folder, fname, Path(got), url)
    return Path(got)


def fetch_string(version: str = "9.1", **kwargs) -> Path:
    """:func:`fetch` the yeast ``protein.links.detailed`` file of a STRING version."""
    if str(version) not in STRING_VERSIONS:
        return fetch(string_url(version), **kwargs)
    return fetch(string_filename(version), **kwargs)


def fetch_kuzmin_s1(**kwargs) -> Path:
    """:func:`fetch` Kuzmin 2018 Data S1 (placed by the user; see :data:`KNOWN_FILES`)."""
    return fetch(KUZMIN_S1, **kwargs)
