"""Where a run computes, and the deterministic-kernel setting it runs under."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

__all__ = ["resolve_device", "check_device", "deterministic_kernels", "CUBLAS_WORKSPACE_CONFIG"]

#: cuBLAS is deterministic only with a fixed workspace (NVIDIA's cuBLAS docs, "Results
#: reproducibility"); ``:4096:8`` is the larger of the two documented settings.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def _cublas_workspace() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` unless the user did: torch reads it when it first creates a
    cuBLAS workspace, so this runs before any CUDA work of a run."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if dev.type == "cuda":
        _cublas_workspace()
    return dev


def check_device(device: str = "auto", precision: str = "fp32") -> torch.device:
    """The device a config's ``device`` and ``precision`` run on, or ``ValueError`` naming the key:
    checked when a command starts, before data loads, not when the fit reaches the device."""
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"TrainConfig.device: {device!r} requested but CUDA is not available on this "
                             "machine; use 'auto' or 'cpu'")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"TrainConfig.device: {device!r} requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("TrainConfig.device: 'mps' requested but MPS is not available on this machine; "
                         "use 'auto' or 'cpu'")
    dev = resolve_device(device)
    if precision == "bf16" and dev.type != "cuda":
        raise ValueError(f"TrainConfig.precision: 'bf16' needs a CUDA device, the run is on {dev}; "
                         "use precision 'fp32' there")
    return dev


@contextlib.contextmanager
def deterministic_kernels(device: torch.device | None = None) -> Iterator[None]:
    """Deterministic kernels for the duration of a run, then the caller's setting again.

    Measured on a 2-core CPU: with 2 threads, two identical ``fit`` calls drifted apart from
    epoch 1 (1e-6 in val Pearson, 1e-3 in predictions) until deterministic kernels were required;
    they cost about 5% of an epoch. ``warn_only`` keeps a CUDA op without a deterministic kernel
    usable (it warns instead). On CUDA the cuBLAS workspace setting deterministic cuBLAS needs is
    set here (``CUBLAS_WORKSPACE_CONFIG``, unless already set)."""
    if (device is not None and torch.device(device).type == "cuda") or torch.cuda.is_initialized():
        _cublas_workspace()
    was, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)
