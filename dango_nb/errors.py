"""Exceptions that say which file, line, column or key was wrong and what was expected."""

from __future__ import annotations

import os


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


class SourceMismatchError(ValueError):
    """Data that do not fit a trained model: another gene count, gene set or gene order than the
    checkpoint was trained on (a model scores gene ids, so such data would give wrong predictions)."""


class UnknownGenesError(KeyError):
    """Gene names that are not in a model's vocabulary; ``str(err)`` is the message (no quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""

    def __init__(self, epoch: int, step: int, value: float, checkpoint: str | None = None):
        self.epoch, self.step, self.value, self.checkpoint = epoch, step, value, checkpoint
        msg = f"loss is {value} at epoch {epoch}, step {step}"
        if checkpoint:
            msg += f"; last good checkpoint kept at {checkpoint}"
        super().__init__(msg)
