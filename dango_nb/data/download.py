"""Finding raw data files locally, or downloading them once with pooch.

Files live in :func:`data_dir` (``$DANGO_DATA_DIR``, else the per-user cache from platformdirs).
A file already there is used as is, without any network access (its sha256 is checked when one is
known). Only a missing file is downloaded; pooch streams it to a temporary file in the same folder
and renames it into place after the download (and hash check) succeeded, so an interrupted or failed
download never leaves a file under the real name. When a file is missing and cannot be downloaded
(offline, ``DANGO_OFFLINE=1``, or no known URL) one :class:`DataNotAvailableError` says which file to
place in which folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import platformdirs
import pooch

from dango_nb.errors import DataFormatError

ENV_DATA_DIR = "DANGO_DATA_DIR"
ENV_OFFLINE = "DANGO_OFFLINE"

STRING_VERSIONS = ("9.1", "11.0", "12.0")
KUZMIN_S1 = "aao1729_data_s1.tsv"


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

    v9.1 lives on the archived ``string91.embl.de`` site; v11.0 on ``stringdb-static.org``, STRING's
    download host when v11.0 was current (the archive site ``version-11-0.string-db.org`` links
    there); v12.0 and later follow ``stringdb-downloads.org``'s layout
    ``download/protein.links.detailed.v{ver}/4932.protein.links.detailed.v{ver}.txt.gz``.
    """
    version = str(version)
    name = string_filename(version)
    if version == "9.1":
        return f"http://string91.embl.de/newstring_download/protein.links.detailed.v9.1/{name}"
    if version == "11.0":
        return f"https://stringdb-static.org/download/protein.links.detailed.v11.0/{name}"
    try:
        major = float(version)
    except ValueError:
        raise ValueError(f"STRING version {version!r} is not of the form '12.0'") from None
    if major < 12:
        raise ValueError(f"no known download URL for STRING v{version}; known: {STRING_VERSIONS} and >= 12.0")
    return f"https://stringdb-downloads.org/download/protein.links.detailed.v{version}/{name}"


#: Files the package knows by name. Hashes are unknown offline, so ``sha256`` is None (pooch then
#: skips verification); pass ``known_hash=`` to :func:`fetch` to pin one.
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


def fetch(name_or_url: str, *, folder: str | os.PathLike | None = None, known_hash: str | None = None,
          allow_download: bool | None = None, progressbar: bool = False,
          downloader: Callable | None = None) -> Path:
    """Path of a raw file in ``folder`` (default :func:`data_dir`), downloading it only if missing.

    ``name_or_url``: a known file name (see :data:`KNOWN_FILES`, e.g. ``string_filename("9.1")`` or
    ``KUZMIN_S1``) or a URL. ``allow_download=None`` downloads unless ``$DANGO_OFFLINE`` is set.
    ``downloader`` is passed to ``pooch.retrieve`` (tests use it to stay off the network).
    Raises :class:`DataNotAvailableError` (a ``FileNotFoundError``) naming the file and the folder
    when the file is missing and cannot be downloaded, and ``DataFormatError`` when a present file's
    sha256 differs from the known one.
    """
    fname, url, known = _split(name_or_url)
    folder = Path(folder).expanduser() if folder is not None else data_dir()
    sha = known_hash or (known.sha256 if known else None)
    target = folder / fname
    if target.is_file():
        if sha is not None:
            algo, _, digest = sha.rpartition(":")
            got = pooch.file_hash(str(target), alg=algo or "sha256")
            if got != digest.lower():
                raise DataFormatError(f"{algo or 'sha256'} {got} differs from the expected {digest}; "
                                      "delete the file to download it again", target)
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
    try:
        got = pooch.retrieve(url, known_hash=sha, fname=fname, path=str(folder), progressbar=progressbar,
                             downloader=downloader)
    except Exception as exc:  # network errors come in many types (requests, ftplib, socket, hash mismatch)
        raise DataNotAvailableError(f"{fname} not found in {folder} and downloading {url} failed "
                                    f"({type(exc).__name__}: {exc}). {where}{hint}{get}.") from exc
    return Path(got)


def fetch_string(version: str = "9.1", **kwargs) -> Path:
    """:func:`fetch` the yeast ``protein.links.detailed`` file of a STRING version."""
    if str(version) not in STRING_VERSIONS:
        return fetch(string_url(version), **kwargs)
    return fetch(string_filename(version), **kwargs)


def fetch_kuzmin_s1(**kwargs) -> Path:
    """:func:`fetch` Kuzmin 2018 Data S1 (placed by the user; see :data:`KNOWN_FILES`)."""
    return fetch(KUZMIN_S1, **kwargs)
