"""Reading parallel corpora: :class:`Pairs` (aligned segments), :class:`DataError`, and one reader per format.

A corpus is given as one string (``DataConfig.train``/``dev``/``test``): a TSV/CSV file with a header
row, a JSONL file, a folder saved by ``datasets`` (``folder`` or ``folder:split``), or the prefix of
aligned plain-text files (``data/train`` for ``data/train.en`` + ``data/train.ga``); :func:`load_pairs`
reads any of them, :func:`read_text` and :func:`decode_text` read text strictly as UTF-8. Every problem with
the user's files raises :class:`DataError` naming the file, the 1-based line where there is one, and
the fix. Nothing is written to disk. Imports nothing heavy (``datasets`` is imported only to read a
``datasets`` folder).

May import: adaptmllm.config, languages.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import DataConfig
from adaptmllm.languages import iso639_1

__all__ = ["DataError", "Pairs", "decode_text", "read_text", "detect_format", "load_pairs"]

_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_UTF8_FIX = "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"


class DataError(ValueError):
    """A corpus cannot be used. The message names the file, the 1-based line where relevant, and the fix."""


@dataclass
class Pairs:
    """Aligned segments: ``src[i]`` translates to ``tgt[i]``. Both lists have the same length."""

    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(f"Pairs: {len(self.src)} source but {len(self.tgt)} target segments")

    def __len__(self) -> int:
        return len(self.src)

    def select(self, indices: list[int]) -> "Pairs":
        """The pairs at ``indices``, in that order."""
        return Pairs([self.src[i] for i in indices], [self.tgt[i] for i in indices])


# ----------------------------------------------------------------------------------------- reading

def decode_text(raw: bytes, name: str | Path) -> str:
    """``raw`` bytes (of the file or stream ``name``) as text: strict UTF-8, BOM removed, CRLF turned into LF.

    Raises:
        DataError: not UTF-8, naming ``name``, the line and the byte offset, and the fix.
    """
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(f"{name} line {line}: not valid UTF-8 (byte {raw[offset]:#04x} at byte offset {offset}); "
                        f"{_UTF8_FIX}") from None
    return text.replace("\r\n", "\n")


def read_text(path: Path) -> str:
    """The file's text: strict UTF-8, BOM removed, CRLF turned into LF.

    Raises:
        DataError: missing file, not UTF-8 (line and byte offset), or no text at all.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    text = decode_text(raw, path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty; give a file with one segment per line or row")
    return text


_read_text = read_text  # the former private name


def _lines(path: Path) -> list[str]:
    """The stripped lines of a plain-text file (split on ``\\n`` only, so that odd Unicode line
    separators inside a segment never break the alignment)."""
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [s.strip() for s in lines]


def _segment(value: Any, where: str, key: str) -> str:
    """A JSON/HF value as a stripped segment (None -> ""); anything but a string is an error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} is a {type(value).__name__}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: {key!r} holds a lone surrogate escape such as \\ud800, which is not text; "
                       "fix or drop that record") from None
    return value.strip()


def _keys(data: DataConfig) -> tuple[list[str], list[str]]:
    """Candidate column/key names of each side: the explicit column, else the suffix and the FLORES code."""
    def side(column: Optional[str], suffix: Optional[str], lang: str) -> list[str]:
        if column:
            return [column]
        return list(dict.fromkeys(k for k in (suffix or iso639_1(lang), lang) if k))
    return (side(data.src_column, data.src_suffix, data.src_lang),
            side(data.tgt_column, data.tgt_suffix, data.tgt_lang))


def _pick(present: list[str], candidates: list[str], where: str, side: str) -> str:
    """The first candidate among the ``present`` columns, else a DataError listing them."""
    for c in candidates:
        if c in present:
            return c
    setting = f"data.{side}_column"
    raise DataError(f"{where}: no {side} column {' or '.join(map(repr, candidates))}; columns present: "
                    f"{', '.join(map(repr, present)) or 'none'}; set {setting} to one of them")


def _load_text(prefix: str, data: DataConfig) -> Pairs:
    sides = []
    for side, suffix, lang in (("src", data.src_suffix, data.src_lang), ("tgt", data.tgt_suffix, data.tgt_lang)):
        suffix = suffix or iso639_1(lang)
        if not suffix:
            raise DataError(f"{prefix}: {lang} has no ISO 639-1 code to use as file suffix; set data.{side}_suffix "
                            f"(the ending of {prefix}.<suffix>)")
        path = Path(f"{prefix}.{suffix}")
        if not path.is_file():
            hint = ""
            if Path(prefix).is_file():
                hint = f" ({prefix} is itself a file: give the aligned files' common prefix, or a .tsv/.jsonl file)"
            raise DataError(f"{path}: no such file, looked for the {side} side of {prefix!r}{hint}")
        sides.append((path, _lines(path)))
    (sp, src), (tp, tgt) = sides
    if len(src) != len(tgt):
        raise DataError(f"{sp} has {len(src)} lines but {tp} has {len(tgt)}; the files must be aligned line by line"
                        + _divergence_hint(sp, src, tp, tgt))
    return Pairs(src, tgt)


def _divergence_hint(sp: Path, src: list[str], tp: Path, tgt: list[str]) -> str:
    """Where two aligned files of different line counts probably stop matching, as a sentence for
    the error message ("" when the line lengths do not tell).

    Model: the first k lines pair up one to one, then the longer file has its d extra lines, and the
    rest pair up again shifted by d. The k whose pairs have the most consistent length ratio (log of
    character counts, less the median ratio) wins if it clearly beats the best k-free alternatives."""
    import math

    (lp, long_), (_, short) = sorted(((sp, src), (tp, tgt)), key=lambda x: -len(x[1]))
    d, n = len(long_) - len(short), len(short)
    if n < 4:
        return ""

    def ratio(a: str, b: str) -> float:
        return math.log((len(a) + 1) / (len(b) + 1))

    mid = sorted(ratio(a, b) for a, b in zip(long_, short))[n // 2]
    head = [0.0]
    for i in range(n):
        head.append(head[-1] + abs(ratio(long_[i], short[i]) - mid))
    tail = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        tail[i] = tail[i + 1] + abs(ratio(long_[i + d], short[i]) - mid)
    costs = [head[k] + tail[k] for k in range(n + 1)]
    best = min(range(n + 1), key=costs.__getitem__)
    worst = max(costs)
    if worst <= 0 or costs[best] > 0.5 * worst:
        return ""
    if best == n:
        return f"; the extra line(s) of {lp} are probably at its end (from line {n + 1})"
    return (f"; they probably stop matching at line {best + 1} of {lp} (line lengths stop pairing up there): "
            "look for a missing, extra or split line near it")


class _QuotingError(Exception):
    def __init__(self, line: int, msg: str) -> None:
        super().__init__(msg)
        self.line = line


def _rows(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row, csv quoting rules. Raises _QuotingError."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        return [(reader.line_num, row) for row in reader if row]
    except csv.Error as e:
        raise _QuotingError(reader.line_num, str(e)) from None


def _load_table(path: Path, data: DataConfig, delimiter: str) -> Pairs:
    text = _read_text(path)
    try:
        rows = _rows(text, delimiter)
    except _QuotingError as e:
        # Raw (unquoted) TSV, where a segment may start with a quote mark: fine if every line splits evenly.
        plain = [(i, ln.split("\t")) for i, ln in enumerate(text.split("\n"), 1) if ln]
        if delimiter != "\t" or len({len(r) for _, r in plain}) != 1:
            raise DataError(f"{path} line {e.line}: bad quoting ({e}); a field that starts with a double quote "
                            'must end with one, and quotes inside it are doubled ("")') from None
        rows = plain
    (_, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    src_keys, tgt_keys = _keys(data)
    si = header.index(_pick(header, src_keys, f"{path} line 1", "src"))
    ti = header.index(_pick(header, tgt_keys, f"{path} line 1", "tgt"))
    what = "tab" if delimiter == "\t" else "comma"
    src, tgt = [], []
    for line, row in body:
        if len(row) != len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields, but the header has {len(header)}; "
                            f"a {what} inside a field? quote the field")
        src.append(row[si].strip())
        tgt.append(row[ti].strip())
    if not src:
        raise DataError(f"{path}: only a header row, no pairs")
    return Pairs(src, tgt)


def _json_error(path: Path, line: Optional[int], e: Exception) -> DataError:
    msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) and line else str(e)
    where = f"{path} line {line}" if line else str(path)
    return DataError(f"{where}: not valid JSON ({msg}); each line must be one object such as "
                     '{"translation": {"en": "...", "ga": "..."}}')


def _load_jsonl(path: Path, data: DataConfig) -> Pairs:
    text = _read_text(path)
    records: list[tuple[Optional[int], Any]] = []
    if text.lstrip().startswith("["):  # a .json file holding one array of records
        try:
            records = [(None, r) for r in json.loads(text)]
        except (ValueError, RecursionError) as e:
            raise _json_error(path, getattr(e, "lineno", None), e) from None
    else:
        for i, ln in enumerate(text.split("\n"), 1):
            if ln.strip():
                try:
                    records.append((i, json.loads(ln)))
                except (ValueError, RecursionError) as e:
                    raise _json_error(path, i, e) from None
    src_keys, tgt_keys = _keys(data)
    src, tgt = [], []
    for line, rec in records:
        where = f"{path} line {line}" if line else f"{path} record {len(src) + 1}"
        if isinstance(rec, dict) and isinstance(rec.get("translation"), dict):
            rec = rec["translation"]
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        keys = [str(k) for k in rec]
        sk, tk = _pick(keys, src_keys, where, "src"), _pick(keys, tgt_keys, where, "tgt")
        src.append(_segment(rec[sk], where, sk))
        tgt.append(_segment(rec[tk], where, tk))
    if not src:
        raise DataError(f"{path}: no records")
    return Pairs(src, tgt)


def _split_hf_spec(spec: str) -> tuple[Path, Optional[str]]:
    """``folder`` or ``folder:split`` -> (folder, split or None)."""
    if not Path(spec).is_dir() and ":" in spec:
        folder, name = spec.rsplit(":", 1)
        if Path(folder).is_dir() and name and "/" not in name and "\\" not in name:
            return Path(folder), name
    return Path(spec), None


def _load_hf(spec: str, data: DataConfig) -> Pairs:
    folder, split_name = _split_hf_spec(spec)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (a `datasets` folder saved with save_to_disk)")
    if not any((folder / m).is_file() for m in _HF_MARKERS):
        raise DataError(f"{folder}: not a folder saved by `datasets` (none of {', '.join(_HF_MARKERS)}); "
                        "save it with Dataset.save_to_disk or give a TSV/JSONL file")
    import datasets

    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as e:  # corrupt or incompatible folders raise many different types
        raise DataError(f"{folder}: cannot be loaded by datasets.load_from_disk ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        split_name = split_name or "train"
        if split_name not in ds:
            raise DataError(f"{folder}: no split {split_name!r}; splits present: {', '.join(ds)}; "
                            f"give one as {folder}:<split>")
        ds = ds[split_name]
    elif split_name:
        raise DataError(f"{folder}: a single dataset without splits; drop ':{split_name}'")
    where = f"{folder}" + (f":{split_name}" if split_name else "")
    src_keys, tgt_keys = _keys(data)
    nested = "translation" in ds.column_names
    rows = [r or {} for r in ds["translation"]] if nested else []
    keys = (list(rows[0]) if rows else []) if nested else list(ds.column_names)
    sk, tk = _pick(keys, src_keys, where, "src"), _pick(keys, tgt_keys, where, "tgt")
    if nested:
        src_vals, tgt_vals = [r.get(sk) for r in rows], [r.get(tk) for r in rows]
    else:
        src_vals, tgt_vals = list(ds[sk]), list(ds[tk])
    if not len(src_vals):
        raise DataError(f"{where}: the dataset has no rows")
    return Pairs([_segment(v, f"{where} row {i + 1}", sk) for i, v in enumerate(src_vals)],
                 [_segment(v, f"{where} row {i + 1}", tk) for i, v in enumerate(tgt_vals)])


def _detect_format(spec: str) -> str:
    if _split_hf_spec(spec)[0].is_dir():
        return "hf"
    suffix = Path(spec).suffix.lower()
    return {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "text")


def detect_format(spec: str) -> str:
    """The corpus format ``auto`` picks for ``spec``: ``text``, ``tsv``, ``csv``, ``jsonl`` or ``hf``."""
    return _detect_format(spec)


def load_pairs(spec: str, data: DataConfig) -> Pairs:
    """Load one parallel corpus.

    ``spec`` is a ``.tsv``/``.csv`` file with a header row, a ``.jsonl``/``.json`` file (one
    ``{"translation": {"en": ..., "ga": ...}}`` or flat ``{"en": ..., "ga": ...}`` object a line), a
    ``datasets`` folder (``folder`` or ``folder:split``; a DatasetDict defaults to ``train``), or the
    prefix of aligned plain-text files ``<spec>.<src_suffix>`` / ``<spec>.<tgt_suffix>``.
    ``data.format`` (``auto``: from the path) picks the reader. Columns/keys are ``data.src_column`` /
    ``data.tgt_column``, else the suffix (``data.src_suffix`` or the ISO 639-1 code) or the FLORES code.
    Segments are stripped of surrounding whitespace and otherwise kept as they are.

    Returns:
        Pairs with one entry per line/row/record (empty segments included; :func:`clean` drops them).
    Raises:
        DataError: missing file or column, misaligned files, bad UTF-8, broken row or JSON line, empty file.
    """
    if not spec or not str(spec).strip():
        raise DataError("corpus path is empty; give a file, a folder or a prefix of aligned text files")
    spec = str(spec)
    fmt = data.format if data.format != "auto" else _detect_format(spec)
    if fmt == "text":
        return _load_text(spec, data)
    if fmt == "hf":
        return _load_hf(spec, data)
    path = Path(spec)
    if fmt == "jsonl":
        return _load_jsonl(path, data)
    return _load_table(path, data, "\t" if fmt == "tsv" else ",")
