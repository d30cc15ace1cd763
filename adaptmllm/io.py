"""Small file helpers: atomic writes, so that a kill never leaves a half-written report or config, and
cells made safe for spreadsheets (CSV/TSV formula injection).

An atomic write goes through a temporary file ``.<name>.<random>.tmp`` in the target's folder and a
rename; the file gets the permissions an ordinary ``open(path, "w")`` would give (``0o666`` less the
umask, or the old file's mode when it is replaced). A process killed between the write and the rename
(SIGKILL, power loss) leaves that temporary file behind: :func:`sweep_temp_files` removes such files,
and every run does so in its folder when it starts (a resumed run or the next run in the same folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_bytes", "sweep_temp_files", "current_umask",
           "temporary_env", "spreadsheet_cell", "spreadsheet_row", "FORMULA_PREFIXES"]

TEMP_SUFFIX = ".tmp"
"""Suffix of the temporary files of an atomic write (``.<name>.<random>.tmp``)."""


def current_umask() -> int:
    """The process's umask (e.g. ``0o022``), read without changing it where the system allows
    (``/proc/self/status`` on Linux), else by setting it and putting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """Mode for a file written to ``target``: the old file's, else ``0o666`` less the umask (what
    ``open(target, "w")`` gives; mkstemp's own 0o600 would hide reports from other users and web servers)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, with the
    mode an ordinary write would give (see the module docstring).

    Returns the path. Parent folders are created. Raises ``OSError`` (e.g. no space left); the old
    file, if any, is then left untouched.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=TEMP_SUFFIX, dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), _file_mode(p))
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename
    (:func:`atomic_write_bytes`).

    Returns the path. Parent folders are created. Raises ``OSError`` (e.g. no space left); the old
    file, if any, is then left untouched.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def sweep_temp_files(folder: str | os.PathLike, skip: Iterable[str] = ("checkpoints",)) -> list[Path]:
    """Remove the temporary files that atomic writes killed before their rename left in ``folder`` and
    its sub-folders (``.<name>.<random>.tmp``; sub-folders named in ``skip`` are not searched).
    Call it only when no other process writes there (a run does so as it starts). Returns the
    paths removed."""
    root, gone = Path(folder), []
    if not root.is_dir():
        return gone
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in set(skip)]
        for f in filenames:
            if f.startswith(".") and f.endswith(TEMP_SUFFIX) and f.count(".") >= 3:
                p = Path(dirpath) / f
                try:
                    p.unlink()
                    gone.append(p)
                except OSError:
                    pass
    return gone


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
