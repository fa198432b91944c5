"""Reading raw text files the way every loader of the data layer needs them.

One place decides what counts as a whole, readable file, so that STRING, DANGO-release and Data S1
files are held to the same rules:

- ``.gz`` is decompressed; a truncated or corrupt stream (gzip's CRC and length check) is an error.
- A UTF-8 byte-order mark (what spreadsheets write) is removed.
- The file must end with a newline: the real files do, so a last line without one means the file
  was cut (a cut can leave a line that still parses, e.g. ``...\\t0.12`` from ``...\\t0.1234``).
- Gene names are systematic ORF names, compared upper-case (Kuzmin's strain ids, STRING's
  ``4932.<ORF>`` ids and DANGO's gene list all go through :func:`orf_name`); a name holding a quote,
  a BOM or whitespace is an artefact of how the file was written and is refused.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

from dango_nb.errors import DataFormatError

BOM = b"\xef\xbb\xbf"

# Characters that never occur in a gene name but do come from exports: quotes, BOM/zero-width marks,
# whitespace and control characters.
_ARTEFACT = re.compile(r"[\"'\ufeff\u200b\u00a0\s\x00-\x1f\x7f]")


#: Systematic names of S. cerevisiae loci: nuclear ORFs (``YAL001C``, ``YPR204C-A``), mitochondrial
#: (``Q0010``) and 2-micron plasmid (``R0010W``) genes; case-insensitive.
SYSTEMATIC_ORF = re.compile(r"(?i)^(?:Y[A-P][LR]\d{3}[WC](?:-[A-Z])?|Q\d{4}|R\d{4}[WC])$")


def read_bytes(path: str | Path, final_newline: bool = True) -> bytes:
    """The file's bytes (decompressed for ``.gz``) without a leading BOM, checked to be complete.

    Raises ``DataFormatError`` for a truncated or corrupt gzip stream and, with ``final_newline``,
    for a non-empty file whose last line has no final newline (naming that line).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataFormatError(f"truncated or corrupt gzip stream ({type(exc).__name__}: {exc})", path) from exc
    if data.startswith(BOM):
        data = data[len(BOM):]
    if final_newline and data and not data.endswith(b"\n"):
        raise cut_error(data, path)
    return data


def cut_error(data: bytes, path: Path, why: str = " (every line of a complete file ends with one)"
              ) -> DataFormatError:
    """The error for a file whose last line shows it was cut."""
    line = data.count(b"\n") + 1
    return DataFormatError(f"line {line} has no final newline{why}: the file was truncated; download or "
                           "export it again", path, line=line)


def whitespace_line_error(path: Path, line: int) -> DataFormatError:
    """The error for a line holding only whitespace (the loaders skip empty lines, not these)."""
    return DataFormatError("the line holds only whitespace; expected a data line (or an empty line)", path,
                           line=line)


def read_lines(path: str | Path, complete_last=None) -> list[tuple[int, str]]:
    """``(line number, text)`` of every line of a text file read the loaders' way: :func:`read_bytes`
    (``.gz``, BOM, cut file), each line decoded as UTF-8 (:func:`decode_line` names a bad one), the
    ``\\r`` of CRLF line ends removed; a line holding only whitespace is an error naming it.

    ``complete_last(text) -> bool`` accepts a last line without a final newline when it ends in a
    complete systematic ORF name (gene lists typed by hand or released without one); without it, or
    when it says no, such a line means the file was cut.
    """
    path = Path(path)
    data = read_bytes(path, final_newline=complete_last is None)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    elif data and not complete_last(last := decode_line(lines[-1], path, len(lines)).rstrip("\r")):
        raise cut_error(data, path, f" and {last.strip()!r} does not end in a complete systematic ORF name")
    out = [(k, decode_line(raw, path, k).rstrip("\r")) for k, raw in enumerate(lines, start=1)]
    for k, text in out:
        if text and not text.strip():
            raise whitespace_line_error(path, k)
    return out


def decode_line(raw: bytes, path: Path, line: int) -> str:
    """One line as UTF-8 text; a ``DataFormatError`` naming the line (and byte) otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not UTF-8 text: byte {raw[exc.start:exc.start + 1]!r} at position "
                              f"{exc.start + 1} of the line ({exc.reason})", path, line=line) from None


def first_bad_utf8_line(data: bytes) -> int | None:
    """1-based line of the first invalid UTF-8 byte, or ``None`` when ``data`` is valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data[: exc.start].count(b"\n") + 1
    return None


def unquote(field: str) -> str:
    """``"abc"`` -> ``abc`` (``""`` inside -> ``"``), as CSV writers quote; other fields unchanged."""
    if len(field) >= 2 and field[0] == '"' and field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def orf_name(name: str) -> str:
    """The canonical (upper-case) form of a systematic ORF name, e.g. ``yal001c`` -> ``YAL001C``."""
    return name.upper()


def artefact_in(name: str) -> str | None:
    """The first character of ``name`` that no gene name holds (a quote, BOM, space...), or ``None``."""
    m = _ARTEFACT.search(name)
    return m.group(0) if m else None
