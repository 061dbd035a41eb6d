"""File names as safe, one-line text: escaping, ``skipped.txt`` and the one-line summary.

A POSIX file name is any bytes but ``/`` and NUL: it may hold a TAB, a newline, bytes that are not
UTF-8 (Python hands those around as lone surrogates, which crash any strict UTF-8 write) or
invisible control characters. Written raw, such a name crashes the run (``UnicodeEncodeError``) or
injects fake lines into a file that is read one line per entry. :func:`escape_path` makes any name
printable, one line and reversible (:func:`unescape_path` gives back the exact name the OS knows):

- ``\\`` → ``\\\\``; TAB, newline and carriage return → ``\\t``, ``\\n``, ``\\r``;
- a byte that is not UTF-8 → ``\\xNN`` (the raw byte, always 80-FF);
- any other character that is not printable → ``\\uNNNN`` (or ``\\UNNNNNNNN``).

Printable non-ASCII letters (``é``, ``猫``) stay as they are, so the text is UTF-8.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "escape_path",
    "format_skipped",
    "parse_skipped",
    "safe_text",
    "skipped_summary",
    "unescape_path",
]

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNSHORT = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.S)


def _escape_char(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode's surrogateescape holds it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _needs_escape(c: str) -> bool:
    return not c.isprintable() or c in _SHORT  # lone surrogates are not printable either


def escape_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as printable one-line text that :func:`unescape_path` turns back into it exactly.

    Example::

        >>> escape_path(b"caf\\xe9\\tmenu.png")
        'caf\\\\xe9\\\\tmenu.png'
    """
    text = os.fsdecode(path)
    if text.isprintable() and "\\" not in text:  # the common case: nothing to do
        return text
    return "".join(
        "\\\\" if c == "\\" else _escape_char(c) if _needs_escape(c) else c for c in text
    )


def safe_text(text: str) -> str:
    """``text`` with what would break a line-oriented UTF-8 file escaped, backslashes kept.

    For text already escaped by :func:`escape_path` (or meant for display, like a class name) this is
    a no-op; for raw text it still guarantees one printable line (but is not reversible when the text
    holds a backslash followed by ``t``, ``n``, ``x``…).
    """
    if text.isprintable():
        return text
    return "".join(_escape_char(c) if _needs_escape(c) else c for c in text)


def _unescape_match(m: re.Match[str]) -> str:
    byte, u4, u8, other = m.groups()
    if byte is not None:
        code = int(byte, 16)
        return chr(0xDC00 + code) if code >= 0x80 else chr(code)
    if u4 is not None or u8 is not None:
        return chr(int(u4 or u8, 16))
    return _UNSHORT.get(other, "\\" + other)  # an unknown escape is kept as written


def unescape_path(text: str) -> str:
    """The exact name (a ``str`` the OS functions accept) that :func:`escape_path` escaped."""
    return _ESCAPE.sub(_unescape_match, text) if "\\" in text else text


def format_skipped(skipped: Iterable[tuple[str | os.PathLike, str]]) -> str:
    """The text of ``skipped.txt``: one ``PATH<TAB>REASON`` line per file, whatever the names hold.

    ``skipped`` is ``ImageDataset.skipped`` (whose paths are already escaped) or raw (path, reason)
    pairs; either way anything that could split a line or fail to encode is escaped, so the result
    has exactly one line per entry and can be written as UTF-8 (``write_text(..., encoding="utf-8")``).
    Read it back with :func:`parse_skipped`; :func:`unescape_path` gives each file's real name.
    """
    lines = []
    for path, why in skipped:
        shown = path if isinstance(path, str) else escape_path(path)
        lines.append(f"{safe_text(shown)}\t{safe_text(str(why))}\n")
    return "".join(lines)


def parse_skipped(text: str) -> list[tuple[str, str]]:
    """(escaped path, reason) of each line of a ``skipped.txt`` written by :func:`format_skipped`."""
    out = []
    for line in text.split("\n"):
        if line:
            path, _, why = line.partition("\t")
            out.append((path, why))
    return out


def skipped_summary(n: int, path: str | Path, total: int | None = None) -> str:
    """The one line a command prints about undecodable files, e.g.
    ``skipped 3 of 120 image files that could not be decoded (see runs/r/skipped.txt)``.
    """
    of = f" of {total:,}" if total is not None else ""
    noun = "image file" if (total if total is not None else n) == 1 else "image files"
    return f"skipped {n:,}{of} {noun} that could not be decoded (see {escape_path(path)})"
