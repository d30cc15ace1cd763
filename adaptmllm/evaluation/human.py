"""Human evaluation of translations: SQM scores and MQM error spans, stored in SQLite.

The pure logic behind the playground's human evaluation tab (:mod:`adaptmllm.apps.playground.app`), usable
and tested without Gradio:

- **Items** to rate are ``(segment, system, source, output)`` rows, read from a run folder
  (``data/test.<src_lang>`` with ``baseline.hyp.txt`` and ``finetuned.hyp.txt``, see
  :func:`items_from_run`) or from a TSV file (:func:`items_from_tsv`).
- **Assignment**: every annotator rates every item, in an order shuffled per annotator (seeded by
  the annotator's name), so the system behind an output is hidden and systems are interleaved. The
  next item is the first one in that order the annotator has not rated yet: after a reload, or a
  server restart, the annotator continues where they stopped.
- **Storage** (:class:`HumanEvalStore`): one SQLite database in WAL mode, by default
  ``<run folder>/human_eval.sqlite``. Every click (an error span added or removed, a score
  submitted) is one committed transaction (``synchronous=FULL``): nothing is held in memory.
- **Scores**: SQM (Scalar Quality Metric, 0-6, Freitag et al. 2021) with a 95% Student-t
  confidence interval of the mean per system (:func:`mean_ci`), and MQM (Multidimensional Quality
  Metrics) points per 100 source words with error counts per category and severity
  (:func:`summarize`). Severity weights come from a preset (:data:`MQM_PRESETS`): the MQM default
  (minor 1, major 5, non-translation 25) or adaptMLLM's (minor 1, major 10).

This module imports nothing heavy; matplotlib is imported only by :func:`plot_summary`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import sqlite3
import time
import unicodedata
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from adaptmllm.config import MQM_PRESETS
from adaptmllm.io import atomic_write_text, spreadsheet_row

__all__ = ["HumanEvalError", "SQM_MIN", "SQM_MAX", "SQM_LABELS", "CATEGORIES", "SEVERITIES", "Item",
    "items_from_run", "items_from_tsv", "check_annotator", "HumanEvalStore", "segment_mqm_points", "DB_NAME",
    "MAX_ANNOTATOR_CHARS", "MAX_NOTE_CHARS", "MAX_ITEM_CHARS"]

DB_NAME = "human_eval.sqlite"
"""File name of the human evaluation database inside a run folder."""

SQM_MIN, SQM_MAX = 0, 6
SQM_LABELS: dict[int, str] = {
    0: "0: no meaning preserved",
    1: "1",
    2: "2: some meaning preserved",
    3: "3",
    4: "4: most meaning preserved, few grammar mistakes",
    5: "5",
    6: "6: perfect meaning and grammar",
}
"""The SQM scale (0-6) with the descriptors of Freitag et al. (2021) on the even points."""

CATEGORIES = ("accuracy", "fluency", "terminology", "style", "locale convention")
"""MQM error categories (top level of the MQM typology)."""

SEVERITIES = ("minor", "major", "non-translation")
"""MQM severities. ``non-translation``: the output is not a translation of the source at all."""

MAX_ANNOTATOR_CHARS = 64
MAX_NOTE_CHARS = 500
MAX_ITEM_CHARS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    segment INTEGER NOT NULL,
    system TEXT NOT NULL,
    source TEXT NOT NULL,
    output TEXT NOT NULL,
    UNIQUE (segment, system)
);
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    item_id INTEGER NOT NULL REFERENCES items(id),
    sqm INTEGER NOT NULL CHECK (sqm BETWEEN 0 AND 6),
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (annotator, item_id)
);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    item_id INTEGER NOT NULL REFERENCES items(id),
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    span_start INTEGER,
    span_end INTEGER,
    span_text TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_by_item ON errors (annotator, item_id);
"""


class HumanEvalError(ValueError):
    """Bad human-evaluation input (an unknown item, a score out of range, a malformed TSV...).

    The message is meant for the annotator or the user and names what to fix.
    """


@dataclass(frozen=True)
class Item:
    """One output to rate: segment ``segment`` of the test set translated by ``system``.

    Attributes:
        id: database id of the item (what the API passes around).
        segment: index of the source segment (0-based line of the test set).
        system: name of the system (``baseline``, ``finetuned``...), never shown to annotators.
        source: the source segment.
        output: the system's translation.
    """

    id: int
    segment: int
    system: str
    source: str
    output: str


def _read_item_lines(path: Path) -> list[str]:
    """The lines of a file the items to rate come from (a run folder's test set and hypotheses, or a TSV of
    items a person made: a ``\\r`` of CRLF line ends is dropped); HumanEvalError when it is not UTF-8."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HumanEvalError(f"{path}: not UTF-8 text (byte {e.start})") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def run_languages(run_dir: Path) -> tuple[str, str]:
    report = run_dir / "data" / "data_report.json"
    if report.is_file():
        data = json.loads(report.read_text(encoding="utf-8"))
        rep = data.get("report", data)
        if "src_lang" in rep and "tgt_lang" in rep:
            return rep["src_lang"], rep["tgt_lang"]
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        import yaml

        d = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("data", {})
        if d.get("src_lang") and d.get("tgt_lang"):
            return d["src_lang"], d["tgt_lang"]
    raise HumanEvalError(f"{run_dir}: not a run folder (no data/data_report.json nor config.yaml naming the languages)")


def items_from_run(run_dir: str | Path, max_segments: int = 100, seed: int = 13,
                   include_reference: bool = False) -> tuple[list[tuple[int, str, str, str]], dict]:
    """Items to rate from a run folder: the test set's sources with each system's translations.

    Systems are ``baseline`` (``baseline.hyp.txt``) and ``finetuned`` (``finetuned.hyp.txt``), those
    present; with ``include_reference`` also ``reference`` (``data/test.<tgt_lang>``), a common
    control in SQM studies. Segments whose source or outputs are all empty are skipped.

    Args:
        run_dir: the run folder (``runs/<name>``).
        max_segments: at most this many test segments, a deterministic random sample (0: all).
        seed: seed of that sample.
        include_reference: also rate the human reference translations.
    Returns:
        ``(rows, meta)``: rows ``(segment, system, source, output)``, and ``meta`` with ``src_lang``,
        ``tgt_lang`` and ``origin`` (the folder).
    Raises:
        HumanEvalError: no test set, no hypothesis file, or files of different lengths.
    """
    run_dir = Path(run_dir)
    src_lang, tgt_lang = run_languages(run_dir)
    src_path = run_dir / "data" / f"test.{src_lang}"
    if not src_path.is_file():
        raise HumanEvalError(f"{src_path}: missing; the run folder has no test set")
    sources = _read_item_lines(src_path)
    systems: dict[str, list[str]] = {}
    for name in ("baseline", "finetuned"):
        p = run_dir / f"{name}.hyp.txt"
        if p.is_file():
            systems[name] = _read_item_lines(p)
    if include_reference:
        systems["reference"] = _read_item_lines(run_dir / "data" / f"test.{tgt_lang}")
    if not systems:
        raise HumanEvalError(f"{run_dir}: no baseline.hyp.txt nor finetuned.hyp.txt; finish the run first "
                             "(adaptmllm run) or give the segments as a TSV")
    for name, hyps in systems.items():
        if len(hyps) != len(sources):
            raise HumanEvalError(f"{run_dir}: {name} has {len(hyps)} lines but the test set {len(sources)}")
    segs = [i for i in range(len(sources)) if sources[i].strip()]
    if max_segments and len(segs) > max_segments:
        segs = sorted(random.Random(seed).sample(segs, max_segments))
    rows = [(i, name, sources[i], hyps[i]) for i in segs for name, hyps in systems.items()]
    return rows, {"src_lang": src_lang, "tgt_lang": tgt_lang, "origin": str(run_dir)}


def items_from_tsv(path: str | Path) -> list[tuple[int, str, str, str]]:
    """Items to rate from a UTF-8 TSV file with a header row naming the columns ``source``,
    ``system`` and ``output`` (any order; other columns are ignored) and optionally ``segment``
    (an integer id; default: one id per distinct source, in order of first appearance).

    Returns:
        rows ``(segment, system, source, output)``.
    Raises:
        HumanEvalError: a missing file, a missing column, a short row, a bad segment id or a
            repeated (segment, system), naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise HumanEvalError(f"{path}: no such file; give a TSV with a header row naming the columns source, "
                             "system and output (adaptmllm serve --segments FILE.tsv), or rate a run's test set "
                             "with --run runs/NAME")
    lines = _read_item_lines(path)
    if not lines:
        raise HumanEvalError(f"{path}: empty file")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    missing = [c for c in ("source", "system", "output") if c not in header]
    if missing:
        raise HumanEvalError(f"{path} line 1: the header must name the columns source, system and output "
                             f"(tab-separated); missing {', '.join(missing)}")
    col = {name: header.index(name) for name in ("source", "system", "output", "segment") if name in header}
    rows: list[tuple[int, str, str, str]] = []
    ids: dict[str, int] = {}
    seen = set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) <= max(col.values()):
            raise HumanEvalError(f"{path} line {n}: {len(cells)} columns, expected {len(header)}")
        src, system, out = cells[col["source"]].strip(), cells[col["system"]].strip(), cells[col["output"]].strip()
        if not system:
            raise HumanEvalError(f"{path} line {n}: empty system name")
        if "segment" in col:
            try:
                seg = int(cells[col["segment"]])
            except ValueError as e:
                raise HumanEvalError(f"{path} line {n}: segment {cells[col['segment']]!r} is not an integer") from e
        else:
            seg = ids.setdefault(src, len(ids))
        if (seg, system) in seen:
            raise HumanEvalError(f"{path} line {n}: segment {seg} of system {system!r} appears twice")
        seen.add((seg, system))
        rows.append((seg, system, src, out))
    if not rows:
        raise HumanEvalError(f"{path}: no rows after the header")
    return rows


def check_annotator(name: Any) -> str:
    """The annotator name, stripped and NFC-normalised.

    Raises:
        HumanEvalError: empty, longer than 64 characters, or holding control characters.
    """
    if not isinstance(name, str) or not name.strip():
        raise HumanEvalError("Enter your name (or an annotator id) first.")
    name = unicodedata.normalize("NFC", name.strip())
    if len(name) > MAX_ANNOTATOR_CHARS:
        raise HumanEvalError(f"The annotator name is too long ({len(name)} characters; at most {MAX_ANNOTATOR_CHARS}).")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise HumanEvalError("The annotator name holds control characters; use letters, digits and spaces.")
    return name


def _order_seed(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


class HumanEvalStore:
    """The human evaluation database (SQLite, WAL mode): items, annotators, SQM ratings, MQM errors.

    Every method opens its own short-lived connection, so one store is safe to share between the
    threads of a web server; every write is one ``BEGIN IMMEDIATE`` transaction committed with
    ``synchronous=FULL`` before the method returns.

    Args:
        path: the database file (created with its folder if missing).
        items: rows ``(segment, system, source, output)`` to load into a new database. For an
            existing database they must be the same as those stored (or omitted).
        meta: strings stored with the items (``src_lang``, ``tgt_lang``, ``origin``...).
        seed: seed of the per-annotator shuffles (stored at creation; the stored one wins).
    Raises:
        HumanEvalError: a new database without items, or items that differ from those stored.
        sqlite3.Error: the file is not a database or cannot be written.
    """

    def __init__(self, path: str | Path, items: Optional[Sequence[tuple[int, str, str, str]]] = None,
                 meta: Optional[Mapping[str, str]] = None, seed: int = 13) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        with self._write() as con:
            stored = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            if items is not None:
                rows = [(int(s), str(sy), str(src)[:MAX_ITEM_CHARS], str(out)[:MAX_ITEM_CHARS])
                        for s, sy, src, out in items]
                fingerprint = hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()
                if stored == 0:
                    if not rows:
                        raise HumanEvalError("no items to rate")
                    con.executemany("INSERT INTO items (segment, system, source, output) VALUES (?, ?, ?, ?)", rows)
                    con.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
                    con.execute("INSERT OR IGNORE INTO meta VALUES ('seed', ?)", (str(int(seed)),))
                    con.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
                    for k, v in (meta or {}).items():
                        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (str(k), str(v)))
                else:
                    old = con.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
                    if old is not None and old[0] != fingerprint:
                        raise HumanEvalError(
                            f"{self.path} already holds a different set of segments to rate; keep it (omit the new "
                            "segments), or give another database path for the new ones")
            elif stored == 0:
                raise HumanEvalError(f"{self.path}: no segments to rate; serve with a run folder or a TSV of segments")
        self.meta = self._meta()
        self.seed = int(self.meta.get("seed", seed))
        self._item_ids = [r[0] for r in self._read("SELECT id FROM items ORDER BY id")]

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with closing(self._connect()) as con:
            return con.execute(sql, tuple(args)).fetchall()

    def _meta(self) -> dict[str, str]:
        return dict(self._read("SELECT key, value FROM meta"))

    # -- items and assignment -------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Number of items (segment x system) each annotator is asked to rate."""
        return len(self._item_ids)

    def systems(self) -> list[str]:
        """Names of the systems, sorted."""
        return [r[0] for r in self._read("SELECT DISTINCT system FROM items ORDER BY system")]

    def item(self, item_id: int) -> Item:
        """The item with this id.

        Raises:
            HumanEvalError: no such item.
        """
        try:
            item_id = int(item_id)
        except (TypeError, ValueError) as e:
            raise HumanEvalError(f"item id {item_id!r} is not an integer") from e
        rows = self._read("SELECT id, segment, system, source, output FROM items WHERE id=?", (item_id,))
        if not rows:
            raise HumanEvalError(f"There is no item {item_id} to rate; press Start to get your next segment.")
        return Item(*rows[0])

    def order(self, annotator: str) -> list[int]:
        """Item ids in the order ``annotator`` rates them (a shuffle seeded by the name)."""
        ids = list(self._item_ids)
        random.Random(_order_seed(check_annotator(annotator), self.seed)).shuffle(ids)
        return ids

    def register(self, annotator: str) -> str:
        """Record ``annotator`` (idempotent). Returns the normalised name. Raises :class:`HumanEvalError`."""
        name = check_annotator(annotator)
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (name, time.time()))
        return name

    def rated_ids(self, annotator: str) -> set[int]:
        """Ids of the items ``annotator`` has scored."""
        name = check_annotator(annotator)
        return {r[0] for r in self._read("SELECT item_id FROM ratings WHERE annotator=?", (name,))}

    def next_item(self, annotator: str) -> Optional[Item]:
        """The first item in ``annotator``'s order not yet scored by them; None when all are done."""
        done = self.rated_ids(annotator)
        for i in self.order(annotator):
            if i not in done:
                return self.item(i)
        return None

    def progress(self, annotator: str) -> tuple[int, int]:
        """``(items scored by annotator, items in all)``."""
        return len(self.rated_ids(annotator)), self.n_items

    # -- annotations -------------------------------------------------------------------------------
    def add_error(self, annotator: str, item_id: int, category: str, severity: str, span_start: Optional[int] = None,
                  span_end: Optional[int] = None, span_text: str = "", note: str = "") -> int:
        """Record one MQM error span on ``item_id``'s output. Returns the error's id.

        The span is character offsets ``[span_start, span_end)`` into the output; if ``span_text``
        is given too, it must be the text at those offsets, or else its first occurrence is used
        (the offsets came from an edited copy); if only ``span_text`` is given, its first
        occurrence is used; with neither, the error concerns the whole output (an omission, a
        non-translation).

        Raises:
            HumanEvalError: unknown annotator/item/category/severity, a span outside the output, a
                ``span_text`` not in the output, or a note over 500 characters.
        """
        name = check_annotator(annotator)
        item = self.item(item_id)
        if category not in CATEGORIES:
            raise HumanEvalError(f"Unknown error category {category!r}; pick one of: {', '.join(CATEGORIES)}.")
        if severity not in SEVERITIES:
            raise HumanEvalError(f"Unknown severity {severity!r}; pick one of: {', '.join(SEVERITIES)}.")
        span_text = span_text or ""
        note = (note or "").strip()
        if len(note) > MAX_NOTE_CHARS:
            raise HumanEvalError(f"The note is too long ({len(note)} characters; at most {MAX_NOTE_CHARS}).")
        if span_text and span_start is not None and span_end is not None:
            try:
                ok = item.output[int(span_start):int(span_end)] == span_text
            except (TypeError, ValueError):
                ok = False
            if not ok:
                span_start = span_end = None  # the selection came from an edited copy: trust the text
        if span_start is not None or span_end is not None:
            try:
                start, end = int(span_start if span_start is not None else 0), int(
                    span_end if span_end is not None else len(item.output))
            except (TypeError, ValueError) as e:
                raise HumanEvalError("The error span's offsets must be integers.") from e
            if not 0 <= start <= end <= len(item.output):
                raise HumanEvalError(f"The error span [{start}, {end}) is outside the translation "
                                     f"({len(item.output)} characters).")
            span_text = item.output[start:end]
        elif span_text:
            pos = item.output.find(span_text)
            if pos < 0:
                raise HumanEvalError("The marked text is not part of the translation; select it in the translation "
                                     "box (press Start / continue to reload the segment).")
            start, end = pos, pos + len(span_text)
        else:
            start = end = None
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (name, time.time()))
            cur = con.execute(
                "INSERT INTO errors (annotator, item_id, category, severity, span_start, span_end, span_text, note, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, item.id, category, severity, start, end, span_text, note, time.time()))
            return int(cur.lastrowid)

    def remove_error(self, annotator: str, error_id: int) -> bool:
        """Delete one of ``annotator``'s error spans. Returns whether it existed (theirs only)."""
        name = check_annotator(annotator)
        with self._write() as con:
            return con.execute("DELETE FROM errors WHERE id=? AND annotator=?", (int(error_id), name)).rowcount > 0

    def remove_last_error(self, annotator: str, item_id: int) -> bool:
        """Delete ``annotator``'s most recent error span on ``item_id`` (an undo). Returns whether one existed."""
        name = check_annotator(annotator)
        with self._write() as con:
            row = con.execute("SELECT MAX(id) FROM errors WHERE annotator=? AND item_id=?",
                              (name, int(item_id))).fetchone()
            if row[0] is None:
                return False
            con.execute("DELETE FROM errors WHERE id=?", (row[0],))
            return True

    def errors(self, annotator: str, item_id: int) -> list[dict]:
        """``annotator``'s error spans on ``item_id``, oldest first, as dicts (id, category, severity,
        span_start, span_end, span_text, note)."""
        name = check_annotator(annotator)
        rows = self._read("SELECT id, category, severity, span_start, span_end, span_text, note FROM errors "
                          "WHERE annotator=? AND item_id=? ORDER BY id", (name, int(item_id)))
        keys = ("id", "category", "severity", "span_start", "span_end", "span_text", "note")
        return [dict(zip(keys, r)) for r in rows]

    def rate(self, annotator: str, item_id: int, sqm: Any) -> None:
        """Record ``annotator``'s SQM score (integer 0-6) of ``item_id``; a second call replaces it.

        Raises:
            HumanEvalError: the score is missing or out of range, or the item unknown.
        """
        name = check_annotator(annotator)
        if sqm is None or sqm == "":
            raise HumanEvalError("Choose a score from 0 to 6 before submitting.")
        try:
            value = float(sqm)
        except (TypeError, ValueError) as e:
            raise HumanEvalError(f"The score {sqm!r} is not a number from 0 to 6.") from e
        if not (value.is_integer() and SQM_MIN <= value <= SQM_MAX):
            raise HumanEvalError(f"The score must be a whole number from {SQM_MIN} to {SQM_MAX}, got {sqm!r}.")
        item = self.item(item_id)
        now = time.time()
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO annotators VALUES (?, ?)", (name, now))
            con.execute("INSERT INTO ratings (annotator, item_id, sqm, created, updated) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (annotator, item_id) DO UPDATE SET sqm=excluded.sqm, updated=excluded.updated",
                        (name, item.id, int(value), now, now))

    def count_ratings(self, annotator: Optional[str] = None) -> int:
        """Number of SQM ratings stored (of one annotator, or of all)."""
        if annotator is None:
            return int(self._read("SELECT COUNT(*) FROM ratings")[0][0])
        return int(self._read("SELECT COUNT(*) FROM ratings WHERE annotator=?", (check_annotator(annotator),))[0][0])

    def annotations(self) -> list[dict]:
        """Every scored item with its errors: dicts with ``annotator, item_id, segment, system, source,
        output, sqm, created, updated, errors`` (a list of error dicts), ordered by annotator and time.
        Error spans on items not (yet) scored are left out."""
        rows = self._read(
            "SELECT r.annotator, r.item_id, i.segment, i.system, i.source, i.output, r.sqm, r.created, r.updated "
            "FROM ratings r JOIN items i ON i.id = r.item_id ORDER BY r.annotator, r.created, r.id")
        errs: dict[tuple[str, int], list[dict]] = {}
        for e in self._read("SELECT annotator, item_id, id, category, severity, span_start, span_end, span_text, note "
                            "FROM errors ORDER BY id"):
            errs.setdefault((e[0], e[1]), []).append(dict(zip(
                ("id", "category", "severity", "span_start", "span_end", "span_text", "note"), e[2:])))
        keys = ("annotator", "item_id", "segment", "system", "source", "output", "sqm", "created", "updated")
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["errors"] = errs.get((d["annotator"], d["item_id"]), [])
            out.append(d)
        return out

    def export_csv(self, path: str | Path, weights: Optional[Mapping[str, float]] = None) -> Path:
        """Write every scored item as one CSV row (UTF-8, header): annotator, item_id, segment, system,
        source, output, sqm, n_errors, mqm_points (with ``weights``, default preset ``mqm``),
        errors (a JSON list of spans), created/updated (ISO 8601 UTC). Written atomically. Cells
        that a spreadsheet would run as a formula (names, notes, segments starting with ``= + - @``...)
        are neutralised with a leading ``'`` (:func:`adaptmllm.io.spreadsheet_cell`).

        Returns the path. Raises ``OSError`` if it cannot be written.
        """
        weights = dict(weights or MQM_PRESETS["mqm"])
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["annotator", "item_id", "segment", "system", "source", "output", "sqm", "n_errors",
                    "mqm_points", "errors", "created", "updated"])
        for a in self.annotations():
            errs = [{k: e[k] for k in ("category", "severity", "span_start", "span_end", "span_text", "note")}
                    for e in a["errors"]]
            w.writerow(spreadsheet_row([
                a["annotator"], a["item_id"], a["segment"], a["system"], a["source"], a["output"], a["sqm"], len(errs),
                _fmt(segment_mqm_points(a["errors"], weights)), json.dumps(errs, ensure_ascii=False), _iso(a["created"]),
                _iso(a["updated"])]))
        return atomic_write_text(path, buf.getvalue())


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _fmt(x: float) -> str:
    return f"{x:g}"


def segment_mqm_points(errors: Sequence[Mapping[str, Any]], weights: Mapping[str, float]) -> float:
    """MQM points of one rated output: the sum of its errors' severity weights, except that an
    output with a ``non-translation`` error scores that weight alone (its other errors are moot)."""
    if any(e["severity"] == "non-translation" for e in errors):
        return float(weights["non-translation"])
    return float(sum(weights[e["severity"]] for e in errors))
