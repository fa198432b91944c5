"""Where a result came from: library versions, git commit, device, threads, data files with hashes.

Written into every run folder (``provenance.json``) and sweep folder, so a number can be traced to
the code, the machine and the exact input files that produced it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["provenance", "file_record", "git_commit", "package_versions", "data_files"]

_HASHES: dict[tuple[str, int, int], str] = {}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "name", "bytes", "sha256"}`` of one file (hashes cached per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return {"path": str(p), "name": p.name, "bytes": int(st.st_size), "sha256": _HASHES[key]}


def git_commit(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding ``path`` (default: this package), or nulls
    when it is not in one (an installed wheel)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"python": platform.python_version()}
    for name in ("dango_nb", "torch", "torch_geometric", "numpy", "pandas", "scipy", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _torch_record(device: str | None) -> dict[str, Any]:
    import torch

    rec: dict[str, Any] = {
        "device": device, "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": None,
    }
    if device is not None and device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        rec["gpu"] = torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())
    return rec


def _ray_record() -> dict[str, Any] | None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "task_id": ctx.get_task_id(), "worker_id": ctx.get_worker_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}
    except Exception:
        return None


def data_files(source: Mapping[str, Any] | None, files: Iterable[str | os.PathLike] = ()) -> list[dict[str, Any]]:
    """Records of the input files of a study: those its ``source`` names (STRING releases, Data S1)
    plus ``files``; missing paths are listed with ``bytes``/``sha256`` null."""
    paths: list[str] = []
    src = dict(source or {})
    for key in ("string", "kuzmin"):
        if isinstance(src.get(key), str):
            paths.append(src[key])
    for p in (src.get("string_releases") or {}).values():
        if isinstance(p, str):
            paths.append(p)
    paths.extend(str(f) for f in files)
    out, seen = [], set()
    for p in paths:
        if p in seen:
            continue
        seen.add(p)
        if Path(p).is_file():
            out.append(file_record(p))
        elif Path(p).is_dir():  # a DANGO release folder: every file in it
            out.extend(file_record(f) for f in sorted(Path(p).iterdir()) if f.is_file())
        else:
            out.append({"path": p, "name": Path(p).name, "bytes": None, "sha256": None})
    return out


def provenance(device: str | None = None, seed: int | None = None, source: Mapping[str, Any] | None = None,
               files: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    """The provenance record of a run (JSON-ready)."""
    return {
        "created": _now(),
        "versions": package_versions(),
        "git": git_commit(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "pid": os.getpid(),
                 "cpu_count": os.cpu_count(),
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "command": " ".join(sys.argv)},
        "torch": _torch_record(device),
        "ray": _ray_record(),
        "seed": seed,
        "data_source": dict(source) if source is not None else None,
        "data_files": data_files(source, files),
    }
