"""argparse types of the command line's numeric options (:mod:`dango_nb.__main__`,
:mod:`dango_nb.runs.cli`): a bad value is argparse's one-line error naming the option, before any work.

Upper bounds are where a larger value would only exhaust time or memory (e.g. that many Ray workers
or torch threads), so it is refused at once instead of hanging.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Callable

from dango_nb.errors import shown

__all__ = ["MAX_GPUS", "MAX_PARALLEL", "MAX_SEED", "check_ray_address", "data_folder", "finite_float", "int_at_least", "int_in",
           "number_in", "ray_address"]

#: Most workers / threads / CPUs one command may ask for (far above any machine's core count).
MAX_PARALLEL = 4096
#: Most GPUs one run may ask for.
MAX_GPUS = 64
#: Largest seed: torch takes seeds below 2**64 (``torch.manual_seed``).
MAX_SEED = 2**64 - 1

_RAY_ADDRESS = re.compile(r"(auto|local|(ray://)?[^\s:/]+:(\d{1,5}))")


def data_folder(text: str) -> str:
    """A data folder's name: a missing one is created later, an existing one must be a folder."""
    from dango_nb.fileio import check_folder_path

    try:
        check_folder_path(text, text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).partition(": ")[2]) from None
    return text


def check_ray_address(text) -> str:
    """``text`` if it is a Ray address (``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT``),
    else ``ValueError``: a typo fails here, not after a connection attempt."""
    m = _RAY_ADDRESS.fullmatch(text) if isinstance(text, str) else None
    if m is None or (m.group(3) is not None and not 0 < int(m.group(3)) < 65536):
        raise ValueError(f"expected a Ray address: 'auto', HOST:PORT or ray://HOST:10001, got {shown(text)}")
    return text


def ray_address(text: str) -> str:
    """argparse type of ``--address`` (see :func:`check_ray_address`)."""
    try:
        return check_ray_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def int_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in ``[minimum, maximum]`` (no upper bound when ``maximum`` is None)."""
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}")
        return value

    parse.__name__ = expected
    return parse


def int_at_least(minimum: int) -> Callable[[str], int]:
    return int_in(minimum)


def number_in(minimum: float, maximum: float) -> Callable[[str], float]:
    """A finite number in ``[minimum, maximum]``."""
    expected = f"a number from {minimum:g} to {maximum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not minimum <= value <= maximum:  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}")
        return value

    parse.__name__ = expected
    return parse


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {shown(text)}")
    return value
