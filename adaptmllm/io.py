"""Small file helpers: atomic writes, so that a kill never leaves a half-written report or config, and
cells made safe for spreadsheets (CSV/TSV formula injection)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

__all__ = ["atomic_write_text", "atomic_write_json", "temporary_env", "spreadsheet_cell", "spreadsheet_row",
           "FORMULA_PREFIXES"]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename.

    Returns the path. Parent folders are created. Raises ``OSError`` (e.g. no space left); the old
    file, if any, is then left untouched.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def temporary_env(updates: Optional[Mapping[str, str]] = None, restore: Iterable[str] = ()) -> Iterator[None]:
    """Set the environment variables ``updates`` for the ``with`` block, then put back what was there
    before (a variable that was unset is unset again), for those and for the names in ``restore``
    (variables that code inside the block may set, e.g. DeepSpeed's RANK/WORLD_SIZE)."""
    updates = dict(updates or {})
    saved = {k: os.environ.get(k) for k in {*updates, *restore}}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) read a CSV/TSV cell as a
formula or a DDE command (OWASP, "CSV Injection": https://owasp.org/www-community/attacks/CSV_Injection)."""

_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_cell(value: Any) -> Any:
    """A CSV/TSV cell that a spreadsheet shows as text, never runs as a formula.

    A string starting with one of :data:`FORMULA_PREFIXES` (``= + - @``, tab, carriage return) gets
    a leading single quote, as OWASP advises (``=HYPERLINK(...)`` -> ``'=HYPERLINK(...)``). Plain
    numbers are left alone, as numbers or as strings (``-0.5``, ``+1.25``, ``1e-5``: a spreadsheet
    reads them as numbers, not formulas); so are ``None`` and other non-strings.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def spreadsheet_row(values: Iterable[Any]) -> list:
    """:func:`spreadsheet_cell` applied to every cell of a row (a list, or a dict's values: use
    ``{k: spreadsheet_cell(v) for k, v in row.items()}`` for ``csv.DictWriter``)."""
    return [spreadsheet_cell(v) for v in values]
