"""Exceptions that say which file, line, column or key was wrong and what was expected."""

from __future__ import annotations

import os
import reprlib

#: Longest text :func:`shown` gives for a value echoed in an error message.
SHOWN_CHARS = 80

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 3, SHOWN_CHARS, SHOWN_CHARS, SHOWN_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 6


def shown(value) -> str:
    """``repr(value)`` cut to at most :data:`SHOWN_CHARS` characters, for error messages.

    Built with :mod:`reprlib`, so a huge value (a long string, a deeply nested or aliased YAML
    structure) costs no more to show than a small one."""
    text = _repr.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def shown_key(key: str) -> str:
    """A dotted parameter key as written in error messages (``'train.epochs'``), cut like :func:`shown`
    so that a key of any length is echoed in bounded size."""
    text = str(key)
    return f"'{text}'" if len(text) <= SHOWN_CHARS - 2 else f"'{text[:SHOWN_CHARS - 5]}...'"


class DataFormatError(ValueError):
    """A raw data file does not have the expected format.

    ``str(err)`` reads ``"<path>:<line>: column '<column>': <message>"``; unknown parts are left out.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None, column: str | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.column = column
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        if column is not None:
            where += f"column '{column}': "
        super().__init__(where + message)


class ParamsError(ValueError):
    """A parameter file or mapping has an unknown key, a missing key or a wrong type."""


class OutputFolderError(ValueError):
    """An output folder that a command may not write into: a file, a folder another command (or
    another parameter set) owns, or one in use by another process; the message says what to do."""


class UsageError(ValueError):
    """Command-line options that cannot work together or a malformed option value; the message names
    the options."""


class SourceMismatchError(ValueError):
    """Data that do not fit a trained model: another gene count, gene set or gene order than the
    checkpoint was trained on (a model scores gene ids, so such data would give wrong predictions)."""


class UnknownGenesError(KeyError):
    """Gene names that are not in a model's vocabulary; ``str(err)`` is the message (no quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointError(ValueError):
    """A checkpoint or its index is damaged, or names a file outside its folder; ``path`` is the
    file at fault."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(message if self.path is None else f"{self.path}: {message}")


class CheckpointWarning(UserWarning):
    """A checkpoint could not be verified, or a damaged one was replaced by an older intact one."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite, or grew by orders of magnitude; the message names the epoch,
    the step, the value and, for growth, the reference it is compared with."""

    def __init__(self, epoch: int, step: int, value: float, checkpoint: str | None = None, what: str = "loss",
                 reference: float | None = None, factor: float | None = None):
        self.epoch, self.step, self.value, self.checkpoint = epoch, step, value, checkpoint
        self.what, self.reference, self.factor = what, reference, factor
        msg = f"{what} is {value:.6g} at epoch {epoch}, step {step}"
        if reference is not None:
            msg += (f", more than {factor:g} x its value at the first step of the run ({reference:.6g}); "
                    f"lower lr, set grad_clip, or set divergence_factor: null to turn this check off")
        if checkpoint:
            msg += f"; last good checkpoint kept at {checkpoint}"
        super().__init__(msg)
