"""Small file helpers: atomic writes, so that a kill never leaves a half-written report or config."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

__all__ = ["atomic_write_text", "atomic_write_json", "temporary_env"]


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
