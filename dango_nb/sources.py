"""Data sources recorded by checkpoints and run folders: used by name, never followed by path.

A checkpoint or a run folder may come from someone else, so a location it records (a data folder,
a STRING or Data S1 file path) could name any place: reading there, or generating a benchmark
there, is never done on the record's word. What a record may name is *what* the data are: an
embedded preset's name and seed, or a data file's name, looked up in a data folder the user
chose (``--data-dir``) or the user's own (``DANGO_DATA_DIR``, else the user cache). Anything else
is shown as the options to pass. ``dango-nb predict --run`` and ``dango-nb compare`` both go
through :func:`own_source`. Light module: no torch, no pandas.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

__all__ = ["own_source", "recorded_location", "source_options"]

#: DataParams keys that name data files (a run folder's ``data`` section).
FILE_KEYS = ("string_file", "dango_folder", "kuzmin_file")


def source_options(recorded: Mapping[str, Any] | None) -> str | None:
    """The command-line options that name a recorded data source (shell-quoted), or ``None``."""
    if not isinstance(recorded, Mapping):
        return None
    if isinstance(recorded.get("preset"), str) and not _is_real(recorded):
        seed = recorded.get("seed", 0)
        return f"--preset {shlex.quote(recorded['preset'])} --data-seed {shlex.quote(str(seed))} [--data-dir DIR]"
    string = recorded.get("string", recorded.get("string_file") or recorded.get("dango_folder"))
    if isinstance(string, str):
        opts = f"--string {shlex.quote(string)}"
        kuzmin = recorded.get("kuzmin", recorded.get("kuzmin_file"))
        if isinstance(kuzmin, str):
            opts += f" --kuzmin {shlex.quote(kuzmin)}"
        return opts
    return None


def _is_real(recorded: Mapping[str, Any]) -> bool:
    """A record of real data files: a checkpoint's ``{"kind": "files", ...}`` or a run's ``data``
    with ``kuzmin_file``."""
    return recorded.get("kind") == "files" or bool(recorded.get("kuzmin_file"))


def _bare_name(value: Any) -> bool:
    return (isinstance(value, str) and bool(value) and "\x00" not in value and "\\" not in value
            and len(PurePosixPath(value).parts) == 1 and value not in (".", "..")
            and not PureWindowsPath(value).drive)


def recorded_location(recorded: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The first key of a run's ``data`` section that names a place rather than what the data are
    (``data_dir``, or a file key holding a path instead of a bare file name), with its value."""
    if recorded.get("data_dir") is not None:
        return "data_dir", recorded["data_dir"]
    for key in FILE_KEYS:
        value = recorded.get(key)
        if value is not None and not _bare_name(value):
            return key, value
    return None


def own_source(recorded: Mapping[str, Any] | None, data_dir: str | None = None) -> dict | None:
    """The data a record names, to be read from (or generated in) ``data_dir`` (the user's choice;
    ``None``: the user's own data folder), or ``None`` when the record cannot be used so.

    - an embedded preset: ``{"preset", "seed", "data_dir"}``; a record naming a data folder of its
      own needs ``data_dir`` (its folder is not used);
    - a run's ``data`` section with real data files: the same section with every file by its name
      only, inside ``data_dir`` (``None`` when no ``data_dir`` is given and it records a path);
    - a checkpoint's real-data record: ``None`` (its files are named by ``--string``/``--kuzmin``).
    """
    if not isinstance(recorded, Mapping):
        return None
    real = _is_real(recorded)
    if not real and isinstance(recorded.get("preset"), str):
        if recorded.get("data_dir") is not None and data_dir is None:
            return None
        return {"preset": recorded["preset"], "seed": int(recorded.get("seed", 0) or 0), "data_dir": data_dir}
    if real and "kuzmin_file" in recorded:
        if recorded_location(recorded) is not None and data_dir is None:
            return None
        files = {k: (None if recorded.get(k) is None else Path(str(recorded[k])).name) for k in FILE_KEYS}
        return {**dict(recorded), **files, "data_dir": data_dir}
    return None
