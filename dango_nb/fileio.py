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
import errno
import fcntl
import json
import math
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Collection, Iterator, Mapping

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
    text = read_regular_text(path)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:  # JSONDecodeError included
        raise ValueError(f"{path}: not strict JSON: {err}") from None


def read_regular_text(path: str | os.PathLike, follow: bool = True) -> str:
    """The text of ``path``, which must be a regular file (``ValueError`` naming it otherwise): a FIFO
    is never opened for reading (that would block until someone writes), a folder never read.
    ``follow=False`` also refuses a symbolic link. ``FileNotFoundError`` when it does not exist."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        st = os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):  # checked before opening: opening a FIFO has effects
        raise ValueError(f"{path}: {_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the two looks
            raise ValueError(f"{path}: not a regular file")
        data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "a special file"


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


# YAML 1.2 floats that YAML 1.1 reads as strings: an exponent without a decimal point or without a sign
# (``1e-3``, ``1e5``, ``.5e3``). Added to this loader only, after the int resolver, so ints stay ints.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


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


def check_folder_path(path: str | os.PathLike, what: str) -> None:
    """``ValueError`` naming ``what`` when ``path`` (``~`` expanded) is too long or exists and is not a
    folder: data would be written into it only after other output was."""
    check_path_length(path, what)
    real = os.path.expanduser(os.fspath(path))
    if os.path.exists(real) and not os.path.isdir(real):
        raise ValueError(f"{what}: {shown(os.fspath(path))} exists and is not a folder")


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
#: Output folders written before ``owner.json`` existed: command -> the entries every such folder of
#: it holds (a trailing ``/``: a folder). A folder without ``owner.json`` counts as the command's only
#: when it holds all of them (regular files and folders, not links); one common name is not enough.
LEGACY_MARKERS = {
    "dango-nb train": ("COMPLETE", "run.json", "params.yaml", "provenance.json", "checkpoints/"),
    "dango-nb sweep": ("sweep.yaml", "provenance.json", "runs/"),
    "dango-nb evaluate": ("metrics.csv", "summary.csv", "splits.csv"),
    "dango_nb.report": ("index.html", "summary.json", "summary.md"),
}
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


def differences_text(diff: list[str], most: int = 6) -> str:
    """The first ``most`` of :func:`differences`' lines for a message, and how many more there are."""
    more = f"; and {len(diff) - most} more" if len(diff) > most else ""
    return "; ".join(diff[:most]) + more


def _has_entry(folder: Path, entry: str) -> bool:
    """``folder/entry`` is a regular file (a folder when ``entry`` ends in ``/``), links not followed."""
    try:
        mode = os.lstat(folder / entry.rstrip("/")).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) if entry.endswith("/") else stat.S_ISREG(mode)


def read_owner(folder: str | os.PathLike) -> dict | None:
    """The owner record of ``folder``: its ``owner.json`` (a regular file holding a JSON object with a
    ``"command"`` string, else :class:`~dango_nb.errors.OutputFolderError`), else ``{"command", "params":
    None}`` when the folder holds a command's full :data:`LEGACY_MARKERS` set, else ``None``."""
    folder = Path(folder)
    path = folder / OWNER_FILE
    try:
        owner = json.loads(read_regular_text(path, follow=False), parse_constant=_reject_constant)
    except FileNotFoundError:
        owner = None
    except ValueError as err:
        detail = str(err).removeprefix(f"{path}: ")
        raise OutputFolderError(f"{path}: unreadable owner record ({detail}); remove the folder or choose "
                                "another folder") from None
    else:
        if not (isinstance(owner, dict) and isinstance(owner.get("command"), str)):
            raise OutputFolderError(f"{path}: not an owner record (expected a JSON object with a \"command\" "
                                    "string); remove the folder or choose another folder")
        return owner
    for command, entries in LEGACY_MARKERS.items():
        if all(_has_entry(folder, e) for e in entries):
            return {"command": command, "params": None}
    return None


def real_output_folder(folder: str | os.PathLike, command: str, option: str = "--out") -> Path:
    """The real path of the output folder ``folder`` (links, ``.`` and ``..`` resolved: every name of a
    folder gets the same lock), checked to be creatable: not a dangling link, no file where a folder
    must be, a writable nearest existing folder. :class:`~dango_nb.errors.OutputFolderError` otherwise."""
    given = Path(folder)
    if os.path.islink(given) and not os.path.exists(given):
        raise OutputFolderError(f"{given}: a symbolic link to {os.readlink(given)}, which does not exist; give an "
                                f"existing folder, a link to one, or a new folder as {option}")
    try:
        real = given.resolve()
    except (OSError, RuntimeError) as err:  # a link loop
        raise OutputFolderError(f"{given}: cannot resolve the path ({getattr(err, 'strerror', None) or err}); give "
                                f"another folder as {option}") from None
    if real.exists() and not real.is_dir():
        raise OutputFolderError(f"{given}: exists and is not a folder; give a new folder (or one `{command}` made) "
                                f"as {option}")
    ancestor = real
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputFolderError(f"{given}: {ancestor} is not a folder; give a new folder (or one `{command}` made) "
                                f"as {option}")
    if ancestor != real:  # checked by writing (a nameless file): read-only mounts and root count too
        try:
            with tempfile.TemporaryFile(dir=ancestor):
                pass
        except OSError as err:
            raise OutputFolderError(f"{given}: cannot write in {ancestor} ({(err.strerror or str(err)).lower()}); "
                                    f"give another folder as {option}") from None
    return real


def check_output_folder(folder: str | os.PathLike, command: str, params: Mapping | None = None,
                        option: str = "--out", shared: Collection[str] = ()) -> Path:
    """``folder`` may receive ``command``'s output: it does not exist, is empty, or was made by ``command``
    (with the same ``params`` when given: the recorded and the new parameters are compared key by key).
    Otherwise :class:`~dango_nb.errors.OutputFolderError` naming the folder, the owner or the differing
    keys, and what to do (``option``: how the command line names the folder). Entries named in
    ``shared`` (other commands' outputs that may live beside this one's, which the command never
    touches) do not make a folder someone else's. Writes nothing; returns the folder's real path
    (:func:`real_output_folder`), where the command must write."""
    given = Path(folder)
    folder = real_output_folder(given, command, option)
    if not folder.exists():
        return folder
    owner = read_owner(folder)
    if owner is None:
        try:
            entries = sorted(e.name for e in folder.iterdir()
                             if e.name not in _IGNORABLE and e.name not in shared
                             and not (e.name.startswith(".") and e.name.endswith(".lock")))
        except OSError as err:
            raise OutputFolderError(f"{given}: cannot read the folder ({err.strerror or err})") from None
        if not entries:
            return folder
        listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputFolderError(f"{given}: exists and is not an output folder of `{command}` (it holds {listed}); "
                                f"give a new or empty folder as {option}")
    if owner["command"] != command:
        raise OutputFolderError(f"{given}: belongs to `{owner['command']}`, not to `{command}`; give another "
                                f"folder as {option}")
    if params is not None:
        if owner.get("params") is None:
            raise OutputFolderError(f"{given}: an output of `{command}` that does not record its parameters "
                                    f"(an older version wrote it); remove it or give another folder as {option}")
        diff = differences(owner["params"], to_strict_json(params))
        if diff:
            raise OutputFolderError(f"{given}: made by `{command}` with other parameters ({differences_text(diff)}); "
                                    f"give another folder as {option}, or remove this one to replace it")
    return folder


def check_made_by(folder: str | os.PathLike, command: str, what: str) -> Path:
    """``folder`` exists and ``command`` made it (its owner record, or an older version's full set of
    files); else :class:`~dango_nb.errors.OutputFolderError` ``"<folder>: not a <what> ..."``. Returns
    its real path."""
    given = Path(folder)
    if not given.is_dir():
        found = "does not exist" if not os.path.lexists(given) else "is not a folder"
        raise OutputFolderError(f"{given}: not a {what} (it {found}); give a folder `{command}` made")
    real = given.resolve()
    owner = read_owner(real)
    if owner is None or owner["command"] != command:
        by = f"no {OWNER_FILE}" if owner is None else f"made by `{owner['command']}`"
        raise OutputFolderError(f"{given}: not a {what} ({by}); give a folder `{command}` made")
    return real


def write_owner(folder: str | os.PathLike, command: str, params: Mapping | None = None) -> None:
    """Record in ``folder/owner.json`` that ``command`` with ``params`` made the folder (a rerun keeps
    the first creation time)."""
    path = Path(folder) / OWNER_FILE
    created = None
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(read_regular_text(path, follow=False))
        if isinstance(old, dict) and old.get("command") == command and isinstance(old.get("created"), str):
            created = old["created"]
    atomic_write_json({"command": command, "params": params,
                       "created": created or _dt.datetime.now().isoformat(timespec="seconds")}, path)


def lock_file_of(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside its real path (every name of the folder,
    a link or ``.``, has the same lock; a folder built elsewhere and renamed into place, like a run
    folder, has the same lock before and after)."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


def _same_file(path: Path, fd: int) -> bool:
    """``path`` (not followed) is the file open as ``fd``."""
    try:
        a, b = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, lock_file: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock (``lock_file``, default :func:`lock_file_of`) while writing into it.

    An ``flock`` on the lock file: the kernel releases it when the holder exits, however it exits, so
    a killed command never leaves a stale lock. The holder writes its pid into the file; a second
    process fails at once with :class:`~dango_nb.errors.OutputFolderError` naming the folder and that
    pid. Taking a lock this process already holds is allowed (nested calls). The lock file must be a
    regular file: a link there is never followed (it could make us overwrite someone's file)."""
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
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            what = "a symbolic link" if err.errno == errno.ELOOP else None
            if what is None:
                raise OutputFolderError(f"{folder}: cannot write its lock file {lock} "
                                        f"({err.strerror or err})") from None
        else:
            mode = os.fstat(fd).st_mode
            what = None if stat.S_ISREG(mode) else _kind(mode)
            if what is not None:
                os.close(fd)
        if what is not None:
            raise OutputFolderError(f"{lock}: {what} where the lock file of {folder} goes (a lock file is a regular "
                                    "file); remove it, or give another folder")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
            except ValueError:
                holder = {}
            os.close(fd)
            if not isinstance(holder, dict):
                holder = {}
            raise OutputFolderError(
                f"{folder}: in use by another process (pid {holder.get('pid', '?')}, started "
                f"{holder.get('started', '?')}; lock {lock}); wait for it to finish, or give another folder") from None
        if _same_file(lock, fd):  # the holder before us may have removed it after we opened it
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
        if _same_file(lock, fd):  # still holding it: a waiting process re-checks the path (above)
            with contextlib.suppress(OSError):
                os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def owned_output_folder(folder: str | os.PathLike, command: str, params: Mapping | None = None,
                        record: Mapping | None = None) -> Iterator[Path]:
    """Check ``folder`` (:func:`check_output_folder`), take its lock, check again (another process may
    have written it meanwhile), create it and record ``command`` and ``record`` (default ``params``) as
    its owner; yields the folder's real path (write there), locked until the block ends."""
    folder = check_output_folder(folder, command, params)
    with folder_lock(folder):
        check_output_folder(folder, command, params)
        folder.mkdir(parents=True, exist_ok=True)
        write_owner(folder, command, to_strict_json(record if record is not None else params))
        yield folder
