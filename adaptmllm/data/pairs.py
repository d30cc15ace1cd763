"""Loading, cleaning and splitting of parallel corpora.

A corpus is given as one string (``DataConfig.train``/``dev``/``test``): a TSV/CSV file with a header
row, a JSONL file, a folder saved by ``datasets`` (``folder`` or ``folder:split``), or the prefix of
aligned plain-text files (``data/train`` for ``data/train.en`` + ``data/train.ga``). Every problem with
the user's files raises :class:`DataError` naming the file, the 1-based line where there is one, and
the fix. Nothing is written to disk except by :func:`save_splits`. Imports nothing heavy
(``datasets`` is imported only to read a ``datasets`` folder).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import DataConfig
from adaptmllm.data.demo import demo_splits
from adaptmllm.io import atomic_write_json, atomic_write_text
from adaptmllm.languages import iso639_1

__all__ = [
    "detect_format",
    "DataError",
    "Pairs",
    "CleaningReport",
    "PreparedData",
    "CLEANING_RULES",
    "MIN_CHARS_FOR_RATIO",
    "load_pairs",
    "clean",
    "split",
    "prepare_data",
    "save_splits",
    "check_lengths",
]

CLEANING_RULES = ("empty", "too_long", "length_ratio", "identical", "duplicate")
"""Cleaning rules in the order they are applied; a pair is counted under the first rule that drops it."""

MIN_CHARS_FOR_RATIO = 20
"""The length-ratio rule applies only when the longer side has at least this many characters, so
that short pairs such as ``Thanks`` / ``Go raibh maith agat`` are kept."""

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


# ---------------------------------------------------------------------------------------- cleaning

@dataclass
class CleaningReport:
    """What :func:`clean` did: ``total`` pairs in, ``kept`` out, ``dropped[rule]`` per rule of
    :data:`CLEANING_RULES` (each dropped pair counted once, under the first rule that drops it)."""

    total: int
    kept: int
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLEANING_RULES, 0))

    def to_dict(self) -> dict:
        """``{"total": int, "kept": int, "dropped": {rule: int}}``."""
        return {"total": self.total, "kept": self.kept, "dropped": dict(self.dropped)}


def rule_text(rule: str, data: DataConfig) -> str:
    """What the cleaning rule ``rule`` drops and the setting that changes it, for error messages."""
    return {
        "empty": "a side is empty",
        "too_long": f"a side is longer than data.max_chars {data.max_chars} characters; raise data.max_chars",
        "length_ratio": f"the longer side is over data.max_length_ratio {data.max_length_ratio} times the shorter; "
                        "raise data.max_length_ratio",
        "identical": "source identical to target; check that the source and target files are not the same text "
                     "(data.drop_identical false keeps such pairs)",
        "duplicate": "a repeated pair (data.drop_duplicates false keeps them)",
    }.get(rule, rule)


def check_cleaned(source: str, report: CleaningReport, needed: int, data: DataConfig) -> None:
    """Raise when cleaning left fewer than ``needed`` pairs (at least 1) of ``source`` out of enough, naming the
    rules that dropped them (most first) and what each means, not just the split sizes.

    Raises:
        DataError: ``"<source>: cleaning dropped 40 of 40 pairs (identical 40: source identical to target; ...)"``.
    """
    if report.kept >= max(1, needed) or not any(report.dropped.values()):
        return
    if report.kept and report.total < needed:  # too small before cleaning too: split()'s message says so
        return
    rules = sorted(((n, r) for r, n in report.dropped.items() if n), reverse=True)
    why = "; ".join(f"{r} {n}: {rule_text(r, data)}" for n, r in rules)
    raise DataError(f"{source}: cleaning dropped {report.total - report.kept} of {report.total} pairs, leaving "
                    f"{report.kept} (fewer than the {max(1, needed)} needed) - {why}")


def _drop_reason(s: str, t: str, data: DataConfig) -> Optional[str]:
    if not s or not t:
        return "empty"
    if len(s) > data.max_chars or len(t) > data.max_chars:
        return "too_long"
    short, long_ = sorted((len(s), len(t)))
    if long_ >= MIN_CHARS_FOR_RATIO and long_ / max(1, short) > data.max_length_ratio:
        return "length_ratio"
    if data.drop_identical and s == t:
        return "identical"
    return None


def clean(pairs: Pairs, data: DataConfig) -> tuple[Pairs, CleaningReport]:
    """Drop unusable pairs, in the order of :data:`CLEANING_RULES`:

    ``empty`` (a side is empty), ``too_long`` (a side has more than ``data.max_chars`` characters),
    ``length_ratio`` (longer / shorter side in characters > ``data.max_length_ratio``, checked only
    when the longer side has at least :data:`MIN_CHARS_FOR_RATIO` characters), ``identical`` (source ==
    target, if ``data.drop_identical``), ``duplicate`` (a repeated (source, target) pair, if
    ``data.drop_duplicates``; the first occurrence is kept). Order of the kept pairs is preserved.

    Returns:
        (kept pairs, report).
    """
    report = CleaningReport(total=len(pairs), kept=0)
    seen: set[tuple[str, str]] = set()
    keep: list[int] = []
    for i, (s, t) in enumerate(zip(pairs.src, pairs.tgt)):
        reason = _drop_reason(s, t, data)
        if reason is None and data.drop_duplicates:
            reason = "duplicate" if (s, t) in seen else None
            seen.add((s, t))
        if reason:
            report.dropped[reason] += 1
        else:
            keep.append(i)
    report.kept = len(keep)
    return pairs.select(keep), report


def split(pairs: Pairs, dev_size: int, test_size: int, seed: int) -> tuple[Pairs, Pairs, Pairs]:
    """Split off a random dev and test set, deterministically by ``seed``.

    The indices are shuffled with ``random.Random(seed)``; the first ``dev_size`` go to dev, the next
    ``test_size`` to test, the rest to train. Each part keeps the corpus order. Sizes may be 0.

    Returns:
        (train, dev, test).
    Raises:
        DataError: fewer than ``dev_size + test_size`` pairs would remain for training.
    """
    n, held = len(pairs), dev_size + test_size
    if dev_size < 0 or test_size < 0:
        raise DataError(f"dev size {dev_size} and test size {test_size} must be >= 0")
    if n - held < held:
        raise DataError(f"the corpus has only {n} pairs after cleaning: splitting off dev {dev_size} + test "
                        f"{test_size} would leave {max(0, n - held)} for training (fewer than dev + test); lower "
                        f"data.dev_size / data.test_size, or give separate data.dev and data.test corpora")
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return (pairs.select(sorted(idx[held:])), pairs.select(sorted(idx[:dev_size])),
            pairs.select(sorted(idx[dev_size:held])))


# ------------------------------------------------------------------------------------- preparation

@dataclass
class PreparedData:
    """The train/dev/test pairs of a run and a JSON-ready ``report``:

    ``{"src_lang", "tgt_lang", "counts": {split: n}, "splits": {split: {"source", "total", "kept",
    "dropped": {rule: n}, ...}}}``. For train, ``total == kept + sum(dropped) + split_off``.
    """

    train: Pairs
    dev: Pairs
    test: Pairs
    report: dict

    def to_dict(self) -> dict:
        """The report (a plain, JSON-ready dict)."""
        return copy.deepcopy(self.report)


def _split_report(source: str, pairs: Pairs, rep: Optional[CleaningReport] = None) -> dict:
    rep = rep or CleaningReport(total=len(pairs), kept=len(pairs), dropped={})
    return {"source": source, **rep.to_dict()}


def prepare_data(data: DataConfig) -> PreparedData:
    """Load, clean and split the corpora of ``data``.

    ``data.train`` empty: the embedded demo corpus (``adaptmllm.data.demo.demo_splits``). Otherwise train
    is loaded and cleaned; a given dev set is loaded and cleaned, a given test set
    loaded and left as it is (scores stay comparable with published ones); either is else split off the cleaned
    training set (:func:`split` with ``data.dev_size``/``data.test_size``/``data.seed``). Training pairs
    whose source also occurs in dev or test are removed (``overlap_with_eval``: such leakage inflates
    scores); then at most ``data.max_train_pairs`` training pairs are kept (a seeded random subset in
    corpus order, ``over_max_train_pairs``).

    Raises:
        DataError: from loading or splitting; ``data.dev``/``data.test`` set without ``data.train``;
            nothing left to train or score on after cleaning.
    """
    splits: dict[str, dict] = {}
    if data.train is None or not str(data.train).strip():
        given = [k for k in ("dev", "test") if getattr(data, k)]
        if given:
            raise DataError(f"data.{given[0]} is set but data.train is empty (the demo corpus); "
                            f"set data.train too, or clear data.{given[0]}")

        demo = demo_splits(data.src_lang, data.tgt_lang, data.demo_train_pairs, data.seed)
        parts = {}
        for name in ("train", "dev", "test"):
            parts[name], rep = clean(Pairs(*map(list, demo[name])), data)
            splits[name] = _split_report("demo", parts[name], rep)
        train, dev, test = parts["train"], parts["dev"], parts["test"]
        splits["train"]["split_off"] = 0
    else:
        train, rep = clean(load_pairs(data.train, data), data)
        splits["train"] = _split_report(str(data.train), train, rep)
        held = sum(0 if getattr(data, k) else getattr(data, f"{k}_size") for k in ("dev", "test"))
        check_cleaned(str(data.train), rep, 2 * held, data)  # the split needs dev + test, and as many to train
        loaded = {}
        for name in ("dev", "test"):
            spec = getattr(data, name)
            if spec and name == "test":
                # A given test set is scored as given, so that scores compare with published ones.
                loaded[name] = load_pairs(spec, data)
                splits[name] = _split_report(str(spec), loaded[name])
                splits[name]["note"] = "not cleaned: scored as given"
            elif spec:
                loaded[name], rep = clean(load_pairs(spec, data), data)
                splits[name] = _split_report(str(spec), loaded[name], rep)
        n_before = len(train)
        dev_n, test_n = data.split_sizes(len(train))  # data.dev_percent/test_percent, else the counts
        train, dev, test = split(train, 0 if "dev" in loaded else dev_n, 0 if "test" in loaded else test_n, data.seed)
        for name, part in (("dev", dev), ("test", test)):
            if name not in loaded:
                splits[name] = _split_report("split from train", part)
        dev, test = loaded.get("dev", dev), loaded.get("test", test)
        splits["train"]["split_off"] = n_before - len(train)
    eval_src = set(dev.src) | set(test.src)
    keep = [i for i, s in enumerate(train.src) if s not in eval_src]
    dropped = splits["train"]["dropped"]
    dropped["overlap_with_eval"] = len(train) - len(keep)
    train = train.select(keep)
    over = max(0, len(train) - data.max_train_pairs) if data.max_train_pairs else 0
    if over:
        train = train.select(sorted(random.Random(data.seed).sample(range(len(train)), data.max_train_pairs)))
    dropped["over_max_train_pairs"] = over
    splits["train"]["kept"] = len(train)
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        if not len(part):
            raise DataError(f"{splits[name]['source']}: no {name} pairs left after cleaning (dropped: "
                            f"{splits[name]['dropped']}); check the corpus and the data.* cleaning settings")
    report = {"src_lang": data.src_lang, "tgt_lang": data.tgt_lang,
              "counts": {"train": len(train), "dev": len(dev), "test": len(test)}, "splits": splits}
    return PreparedData(train, dev, test, report)


def save_splits(prepared: PreparedData, folder: str | Path) -> dict[str, Path]:
    """Write ``train.<src_lang>``, ``train.<tgt_lang>`` (likewise dev, test; one segment per line, a
    line break inside a segment becomes a space) and ``data_report.json`` into ``folder``, atomically.

    Returns:
        ``{"train.src": path, "train.tgt": ..., "dev.src": ..., ..., "report": path}``.
    Raises:
        OSError: the folder cannot be written.
    """
    folder = Path(folder)
    langs = {"src": prepared.report["src_lang"], "tgt": prepared.report["tgt_lang"]}
    paths: dict[str, Path] = {}
    for name in ("train", "dev", "test"):
        part: Pairs = getattr(prepared, name)
        for side, segs in (("src", part.src), ("tgt", part.tgt)):
            text = "".join(" ".join(s.replace("\r", "\n").split("\n")) + "\n" for s in segs)
            paths[f"{name}.{side}"] = atomic_write_text(folder / f"{name}.{langs[side]}", text)
    paths["report"] = atomic_write_json(folder / "data_report.json", prepared.to_dict())
    return paths


def check_lengths(tokenizer: Any, prepared: PreparedData, data: DataConfig, max_source_length: int,
                  max_target_length: int, model_limit: Optional[int] = None) -> dict:
    """Count the segments longer than the model takes, per split and side, and apply ``data.too_long``.

    Sources are tokenized as the model sees them (``tokenizer.src_lang``), targets with
    ``text_target`` (``tokenizer.tgt_lang``), without truncation; a source over ``max_source_length``
    or a target over ``max_target_length`` tokens counts as too long (the test set's targets are
    references, never tokenized, so they are not counted). The counts are added to
    ``prepared.report["too_long"]`` as ``{split: {"src": n, "tgt": m}, "action": "truncate"|"reject",
    "max_source_length": .., "max_target_length": ..}``.

    Returns:
        That ``too_long`` dict.
    Raises:
        DataError: ``data.too_long == "reject"`` and a segment is too long: names the split, the pair
            (1-based, as in ``data/<split>.<lang>`` of the run folder), its first characters, its
            length in tokens, and the fixes.
    """
    out: dict = {"action": data.too_long, "max_source_length": max_source_length,
                 "max_target_length": max_target_length}
    first = None
    for name in ("train", "dev", "test"):
        part: Pairs = getattr(prepared, name)
        sides = [("src", part.src, max_source_length)] + ([] if name == "test" else [("tgt", part.tgt, max_target_length)])
        counts = {"src": 0, "tgt": 0}
        for side, segs, limit in sides:
            enc = tokenizer(list(segs))["input_ids"] if side == "src" else \
                tokenizer(text_target=list(segs))["input_ids"]
            for i, ids in enumerate(enc):
                if len(ids) > limit:
                    counts[side] += 1
                    if first is None:
                        first = (name, side, i, len(ids), limit, segs[i])
        out[name] = counts
    prepared.report["too_long"] = out
    if first is not None and data.too_long == "truncate":
        import logging

        logging.getLogger("adaptmllm").warning(
            "segments longer than model.max_source_length %d / max_target_length %d tokens are truncated: %s "
            "(counted in data/data_report.json; data.too_long reject stops the run instead)", max_source_length,
            max_target_length, {k: out[k] for k in ("train", "dev", "test") if out[k]["src"] + out[k]["tgt"]})
    if first is not None and data.too_long == "reject":
        name, side, i, n, limit, seg = first
        lang = data.src_lang if side == "src" else data.tgt_lang
        field_ = "model.max_source_length" if side == "src" else "model.max_target_length"
        total = sum(out[k]["src"] + out[k]["tgt"] for k in ("train", "dev", "test"))
        cap = f" (the model takes at most {model_limit})" if model_limit else ""
        raise DataError(f"{name} pair {i + 1} ({lang}: {seg[:60]!r}{'...' if len(seg) > 60 else ''}) has {n} tokens, "
                        f"more than {field_} {limit}; {total} segment(s) in all are too long and data.too_long is "
                        f"reject: shorten or split them, raise {field_}{cap}, or set data.too_long truncate")
    return out
