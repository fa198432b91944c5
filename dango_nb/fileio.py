"""Atomic writes: a reader never sees a half-written file, and a failure keeps the old one.

Output folders are owned (:func:`check_output_folder`, :func:`owned_output_folder`): each records in
``owner.json`` the command and parameters that made it, a command writes only into a new or empty
folder or one it made itself with the same parameters, and holds the folder's lock
(:func:`folder_lock`) while it writes.

Also the strict readers and writers of the text formats the package exchanges: JSON without ``NaN`` /
``Infinity`` tokens (undefined numbers are written as ``null``) and YAML that refuses duplicate keys
and aliases that expand beyond :data:`MAX_YAML_VALUES` values.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import yaml

from .errors import OutputFolderError, ParamsError, shown

#: Most values (scalars, lists, mappings) a YAML document may expand to once its aliases are
#: followed; a few hundred bytes of nested aliases ("billion laughs") would otherwise expand to
#: gigabytes in any code that walks or copies the loaded value.
MAX_YAML_VALUES = 100_000


def _umask_mode() -> int:
    # mkstemp creates 0600 files; give the final file the mode a plain open() would have.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for libraries that write by name; rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as strict JSON: NaN and +-inf become ``null`` (``JSON.parse`` rejects the tokens
    Python would write), numpy scalars and arrays become numbers and lists, paths become strings."""
    text = json.dumps(to_strict_json(obj), indent=2, sort_keys=True, allow_nan=False)
    with atomic_write(path) as fh:
        fh.write(text + "\n")


def to_strict_json(o: Any) -> Any:
    """``o`` with every non-finite float replaced by None and numpy / Path values made plain."""
    if isinstance(o, float):  # includes numpy.float64
        return float(o) if math.isfinite(o) else None
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    if isinstance(o, dict):
        return {k if isinstance(k, str) else str(to_strict_json(k)): to_strict_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [to_strict_json(v) for v in o]
    import numpy as np

    if isinstance(o, (np.generic, np.ndarray)):
        return to_strict_json(o.tolist())
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def read_json(path: str | os.PathLike) -> Any:
    """Parse ``path`` as strict JSON (``NaN`` / ``Infinity`` tokens are an error naming the file)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except ValueError as err:  # JSONDecodeError included
        raise ValueError(f"{path}: not strict JSON: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    source = "<yaml>"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<" merges may override
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: SafeLoader reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise ParamsError(f"{self.source}:{line}: duplicate key {shown(key)} (first given on line "
                                      f"{first}); each key may appear once per mapping")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load`` that raises :class:`ParamsError` ``"<source>:<line>: duplicate key ..."``
    instead of silently keeping the last of two equal keys; other YAML errors propagate unchanged."""
    loader = _UniqueKeyLoader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: yaml.Node, source: str, limit: int = MAX_YAML_VALUES) -> None:
    """Refuse a document whose aliases expand to more than ``limit`` values, or refer to themselves.

    The composed node graph shares an aliased node instead of copying it, so the expanded size is
    counted per distinct node (memoised): the cost is that of the file, not of its expansion."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            children = (node.value if isinstance(node, yaml.SequenceNode)
                        else [n for pair in node.value for n in pair])
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > limit:
                raise ParamsError(f"{source}:{node.start_mark.line + 1}: aliases ('*name') expand this value to "
                                  f"more than {limit:,} values; write the values out or use fewer aliases")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            sizes[key] = 1
            continue
        if key in open_:
            raise ParamsError(f"{source}:{node.start_mark.line + 1}: an alias refers to the value that "
                              "contains it (a recursive structure); parameter files hold plain trees")
        open_.add(key)
        stack.append((node, True))
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        stack.extend((c, False) for c in reversed(children) if id(c) not in sizes)


def read_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file strictly (see :func:`load_yaml`); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        return load_yaml(text, str(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ParamsError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None


#: Limits of Linux file systems (``NAME_MAX``, ``PATH_MAX`` in bytes, terminating NUL included).
NAME_MAX, PATH_MAX = 255, 4096


def check_path_length(path: str | os.PathLike, what: str, reserve: int = 0) -> None:
    """``ValueError`` naming ``what`` when ``path`` (with ``reserve`` bytes more for what will be
    created inside it) is longer than ``PATH_MAX`` or has a component longer than ``NAME_MAX``: the
    operating system would refuse it only when the first file is created, after work was done."""
    text = os.fspath(path)
    size = len(os.fsencode(text))
    if size + reserve >= PATH_MAX:
        raise ValueError(f"{what}: path of {size} bytes is too long ({PATH_MAX - 1 - reserve} at most here, "
                         f"PATH_MAX {PATH_MAX}): {shown(text)}")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(f"{what}: a file or folder name of {len(os.fsencode(part))} bytes is longer than "
                             f"NAME_MAX ({NAME_MAX}): {shown(part)}")


def atomic_save_torch(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


#: Table formats :func:`atomic_write_table` writes, by file suffix.
TABLE_SUFFIXES = (".parquet", ".tsv", ".txt", ".csv")


def check_table_suffix(path: str | os.PathLike) -> Path:
    """``path`` as a Path if :func:`atomic_write_table` can write it, else ``ValueError``."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported table suffix {path.suffix!r}; use {', '.join(TABLE_SUFFIXES)}")
    return path


def atomic_write_table(df, path: str | os.PathLike) -> None:
    """Write a DataFrame as Parquet (``.parquet``), tab-separated (``.tsv``/``.txt``) or comma-separated
    (``.csv``) text."""
    path = check_table_suffix(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix in (".tsv", ".txt"):
            df.to_csv(tmp, sep="\t", index=False)
        else:
            df.to_csv(tmp, index=False)


# ---------------------------------------------------------------------------- owned output folders
#: The record of who made an output folder: ``{"command", "params", "created"}``.
OWNER_FILE = "owner.json"
#: Files that mark output folders written before ``owner.json`` existed: file -> owning command.
LEGACY_MARKERS = {"COMPLETE": "dango-nb train", "sweep.yaml": "dango-nb sweep", "index.html": "dango_nb.report",
                  "summary.json": "dango_nb.report", "metrics.csv": "dango-nb evaluate"}
# Entries that do not make a folder someone's (a folder holding only these counts as empty).
_IGNORABLE = {".gitkeep", ".DS_Store"}
_HELD: dict[str, int] = {}  # lock files this process holds -> depth (a nested take is not a conflict)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """``["key.sub: old -> new", ...]`` for the dotted keys whose values differ between ``a`` and ``b``."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {shown(a)} -> {shown(b)}"]


def read_owner(folder: str | os.PathLike) -> dict | None:
    """The owner record of ``folder``: its ``owner.json``, else ``{"command", "params": None}`` guessed
    from a file an older version wrote (:data:`LEGACY_MARKERS`), else ``None``."""
    folder = Path(folder)
    try:
        owner = read_json(folder / OWNER_FILE)
    except FileNotFoundError:
        owner = None
    except ValueError:
        raise OutputFolderError(f"{folder / OWNER_FILE}: unreadable owner record; remove the folder or choose "
                                "another folder") from None
    if isinstance(owner, dict) and isinstance(owner.get("command"), str):
        return owner
    for marker, command in LEGACY_MARKERS.items():
        if (folder / marker).is_file():
            return {"command": command, "params": None}
    return None


def check_output_folder(folder: str | os.PathLike, command: str, params: Mapping | None = None,
                        option: str = "--out") -> Path:
    """``folder`` may receive ``command``'s output: it does not exist, is empty, or was made by ``command``
    (with the same ``params`` when given: the recorded and the new parameters are compared key by key).
    Otherwise :class:`~dango_nb.errors.OutputFolderError` naming the folder, the owner or the differing
    keys, and what to do (``option``: how the command line names the folder). Writes nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{folder}: exists and is not a folder; give a new folder (or one `{command}` "
                                f"made) as {option}")
    if not folder.exists():
        return folder
    owner = read_owner(folder)
    if owner is None:
        try:
            entries = sorted(e.name for e in folder.iterdir()
                             if e.name not in _IGNORABLE and not (e.name.startswith(".") and e.name.endswith(".lock")))
        except OSError as err:
            raise OutputFolderError(f"{folder}: cannot read the folder ({err.strerror or err})") from None
        if not entries:
            return folder
        listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputFolderError(f"{folder}: exists and is not an output folder of `{command}` (it holds {listed}); "
                                f"give a new or empty folder as {option}")
    if owner["command"] != command:
        raise OutputFolderError(f"{folder}: belongs to `{owner['command']}`, not to `{command}`; give another "
                                f"folder as {option}")
    if params is not None:
        if owner.get("params") is None:
            raise OutputFolderError(f"{folder}: an output of `{command}` that does not record its parameters "
                                    f"(an older version wrote it); remove it or give another folder as {option}")
        diff = differences(owner["params"], to_strict_json(params))
        if diff:
            more = f"; and {len(diff) - 6} more" if len(diff) > 6 else ""
            raise OutputFolderError(f"{folder}: made by `{command}` with other parameters ({'; '.join(diff[:6])}"
                                    f"{more}); give another folder as {option}, or remove this one to replace it")
    return folder


def write_owner(folder: str | os.PathLike, command: str, params: Mapping | None = None) -> None:
    """Record in ``folder/owner.json`` that ``command`` with ``params`` made the folder."""
    atomic_write_json({"command": command, "params": params,
                       "created": _dt.datetime.now().isoformat(timespec="seconds")}, Path(folder) / OWNER_FILE)


def lock_file_of(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it (a folder built elsewhere and renamed
    into place, like a run folder, has the same lock before and after)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, lock_file: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock (``lock_file``, default :func:`lock_file_of`) while writing into it.

    An ``flock`` on the lock file: the kernel releases it when the holder exits, however it exits, so
    a killed command never leaves a stale lock. The holder writes its pid into the file; a second
    process fails at once with :class:`~dango_nb.errors.OutputFolderError` naming the folder and that
    pid. Taking a lock this process already holds is allowed (nested calls)."""
    folder = Path(folder)
    lock = Path(lock_file) if lock_file is not None else lock_file_of(folder)
    key = os.path.abspath(lock)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield lock
        finally:
            _HELD[key] -= 1
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputFolderError(f"{folder}: cannot create {lock.parent} ({err.strerror or err})") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputFolderError(f"{folder}: cannot write its lock file {lock} ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise OutputFolderError(
                f"{folder}: in use by another process (pid {holder.get('pid', '?')}, started "
                f"{holder.get('started', '?')}; lock {lock}); wait for it to finish, or give another folder") from None
        try:  # the holder before us may have removed the file after we opened it: lock the one at the path
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "started": _dt.datetime.now().isoformat(timespec="seconds"),
                             "argv": sys.argv}).encode("utf-8"))
    _HELD[key] = 1
    try:
        yield lock
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # still holding it: a waiting process re-checks the path (above)
        os.close(fd)


@contextlib.contextmanager
def owned_output_folder(folder: str | os.PathLike, command: str, params: Mapping | None = None,
                        record: Mapping | None = None) -> Iterator[Path]:
    """Check ``folder`` (:func:`check_output_folder`), take its lock, check again (another process may
    have written it meanwhile), create it and record ``command`` and ``record`` (default ``params``) as
    its owner; yields the folder, locked until the block ends."""
    folder = check_output_folder(folder, command, params)
    with folder_lock(folder):
        check_output_folder(folder, command, params)
        folder.mkdir(parents=True, exist_ok=True)
        write_owner(folder, command, to_strict_json(record if record is not None else params))
        yield folder
