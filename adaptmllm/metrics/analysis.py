"""Error analysis of a test set: where did fine-tuning help or hurt, and how do the outputs fail?

- sentence-level chrF++ (sacrebleu, 0-100) of both systems and its change per segment;
- the N segments that got most worse and most better;
- corpus chrF++ of both systems per source-length bucket;
- counts of empty outputs, outputs that copy the source, and (mostly) untranslated outputs.

Everything here is a pure function of the texts: no model is loaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

from adaptmllm.io import atomic_write_text, spreadsheet_cell
from adaptmllm.metrics.corpus import sentence_chrf

__all__ = ["error_analysis", "failure_kind", "length_unit", "write_segments_tsv", "FAILURE_KINDS",
           "WORD_BUCKETS", "CHAR_BUCKETS", "UNTRANSLATED_SHARE"]

FAILURE_KINDS = ("empty", "copied_source", "untranslated")
"""Failure kinds counted per system, each segment under the first that applies."""

UNTRANSLATED_SHARE = 0.5
"""A non-empty output that is not a whole copy of the source counts as *untranslated* when at least
this share of its words occur in the source but not in the reference (words left in the source
language). A heuristic (no language identification), stated as such in the report."""

WORD_BUCKETS = (10, 20, 30, 50)
"""Upper edges of the source-length buckets in words: 1-10, 11-20, 21-30, 31-50, 51+."""
CHAR_BUCKETS = (20, 40, 60, 100)
"""Upper edges in characters, for scripts written without spaces between words."""
NO_SPACE_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Thai", "Khmr", "Laoo", "Mymr", "Tibt"})

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _norm(s: str) -> str:
    return " ".join(s.casefold().split())


def _words(s: str) -> list[str]:
    return _WORD.findall(s.casefold())


def failure_kind(hypothesis: str, source: str, reference: str) -> Optional[str]:
    """How an output fails, if it does in one of these visible ways: ``"empty"`` (nothing but
    whitespace), ``"copied_source"`` (the source itself, ignoring case and spacing), ``"untranslated"``
    (at least :data:`UNTRANSLATED_SHARE` of its words are in the source but not in the reference),
    else None. When the reference equals the source (names, numbers), copying is correct: None."""
    if not hypothesis.strip():
        return "empty"
    if _norm(source) == _norm(reference):
        return None
    if _norm(hypothesis) == _norm(source):
        return "copied_source"
    words = _words(hypothesis)
    if words:
        src, ref = set(_words(source)), set(_words(reference))
        left = sum(1 for w in words if w in src and w not in ref)
        if left / len(words) >= UNTRANSLATED_SHARE:
            return "untranslated"
    return None


def length_unit(src_lang: Optional[str]) -> str:
    """``"chars"`` for source scripts written without spaces (Chinese, Japanese, Thai, Khmer, Lao,
    Burmese, Tibetan: ``zho_Hans``...), else ``"words"`` (whitespace-separated)."""
    script = (src_lang or "").rpartition("_")[2]
    return "chars" if script in NO_SPACE_SCRIPTS else "words"


def _length(s: str, unit: str) -> int:
    return len("".join(s.split())) if unit == "chars" else len(s.split())


def _buckets(edges: Sequence[int]) -> list[tuple[str, int, Optional[int]]]:
    out, lo = [], 1
    for hi in edges:
        out.append((f"{lo}-{hi}", lo, hi))
        lo = hi + 1
    out.append((f"{lo}+", lo, None))
    return out


def error_analysis(sources: Sequence[str], references: Sequence[str], finetuned: Sequence[str],
                   baseline: Optional[Sequence[str]] = None, *, n: int = 10, src_lang: Optional[str] = None,
                   unit: Optional[str] = None, edges: Optional[Sequence[int]] = None) -> dict:
    """Error analysis of ``finetuned`` (and ``baseline`` when given) against ``references``.

    Args:
        n: how many most-worse and most-better segments to list.
        src_lang: FLORES-200 code of the source; picks the length unit (:func:`length_unit`).
        unit: ``"words"`` or ``"chars"`` (overrides ``src_lang``); edges: upper bucket edges
            (default :data:`WORD_BUCKETS` or :data:`CHAR_BUCKETS`).

    Returns a JSON-ready dict::

        {"n_segments", "systems": ["baseline", "finetuned"],
         "sentence_chrf": {"baseline": [...], "finetuned": [...]},   # 0-100 per segment
         "change": {"better", "worse", "same"},     # segments whose chrF++ rose / fell / stayed
         "most_worse": [{"index", "source", "reference", "baseline", "finetuned",
                         "chrf_baseline", "chrf_finetuned", "delta"}, ...],   # n, worst first
         "most_better": [...],                                                # n, best first
         "length_unit": "words", "length_buckets": [{"bucket": "1-10", "min", "max", "n",
                         "baseline_chrf", "finetuned_chrf", "delta"}, ...],  # corpus chrF++ per bucket
         "failures": {"baseline": {"empty", "copied_source", "untranslated"}, "finetuned": {...}},
         "failure_examples": {"finetuned": {kind: [index, ...]}, ...}}       # up to n indices each

    Without ``baseline`` the comparisons (``change``, ``most_*``, deltas) are left out.

    Raises:
        ValueError: lists of different lengths, an empty test set, ``n < 1`` or an unknown unit.
    """
    from sacrebleu.metrics import CHRF

    systems = {"baseline": baseline, "finetuned": finetuned} if baseline is not None else {"finetuned": finetuned}
    lengths = {len(sources), len(references)} | {len(v) for v in systems.values()}
    if len(lengths) != 1:
        raise ValueError(f"error analysis needs aligned lists: {len(sources)} sources, {len(references)} references, "
                         + ", ".join(f"{len(v)} {k}" for k, v in systems.items()))
    if not references:
        raise ValueError("no segments to analyse: the test set is empty")
    if n < 1:
        raise ValueError(f"n={n}: list at least 1 segment")
    unit = unit or length_unit(src_lang)
    if unit not in ("words", "chars"):
        raise ValueError(f"unit={unit!r}: use 'words' or 'chars'")
    edges = tuple(edges) if edges else (CHAR_BUCKETS if unit == "chars" else WORD_BUCKETS)
    srcs, refs = [str(s) for s in sources], [str(r) for r in references]
    hyps = {k: [str(h) for h in v] for k, v in systems.items()}
    per = {k: sentence_chrf(v, refs) for k, v in hyps.items()}
    out: dict = {"n_segments": len(refs), "systems": list(hyps), "sentence_chrf": per}

    if baseline is not None:
        delta = [f - b for f, b in zip(per["finetuned"], per["baseline"])]
        out["change"] = {"better": sum(d > 0 for d in delta), "worse": sum(d < 0 for d in delta),
                         "same": sum(d == 0 for d in delta)}

        def row(i: int) -> dict:
            return {"index": i, "source": srcs[i], "reference": refs[i], "baseline": hyps["baseline"][i],
                    "finetuned": hyps["finetuned"][i], "chrf_baseline": per["baseline"][i],
                    "chrf_finetuned": per["finetuned"][i], "delta": delta[i]}

        order = sorted(range(len(refs)), key=lambda i: (delta[i], i))
        out["most_worse"] = [row(i) for i in order[:n] if delta[i] < 0]
        out["most_better"] = [row(i) for i in sorted(range(len(refs)), key=lambda i: (-delta[i], i))[:n]
                              if delta[i] > 0]

    chrf = CHRF(word_order=2)
    lens = [_length(s, unit) for s in srcs]
    out["length_unit"] = unit
    out["length_buckets"] = []
    for label, lo, hi in _buckets(edges):
        # (empty sources, length 0, go to the first bucket)
        idx = [i for i, ln in enumerate(lens) if (lo == 1 or ln >= lo) and (hi is None or ln <= hi)]
        b = {"bucket": label, "min": lo, "max": hi, "n": len(idx)}
        for k, v in hyps.items():
            b[f"{k}_chrf"] = (float(chrf.corpus_score([v[i] for i in idx], [[refs[i] for i in idx]]).score)
                              if idx else None)
        if baseline is not None:
            b["delta"] = None if not idx else b["finetuned_chrf"] - b["baseline_chrf"]
        out["length_buckets"].append(b)

    out["failures"], out["failure_examples"] = {}, {}
    for k, v in hyps.items():
        kinds = [failure_kind(h, s, r) for h, s, r in zip(v, srcs, refs)]
        out["failures"][k] = {kind: kinds.count(kind) for kind in FAILURE_KINDS}
        out["failure_examples"][k] = {kind: [i for i, x in enumerate(kinds) if x == kind][:n] for kind in FAILURE_KINDS}
    return out


def write_segments_tsv(path: str | os.PathLike, analysis: dict, sources: Sequence[str], references: Sequence[str],
                       finetuned: Sequence[str], baseline: Optional[Sequence[str]] = None) -> Path:
    """Write every segment with both outputs and their sentence chrF++ (and its change) as a TSV
    (header row; tabs and line breaks inside a segment become spaces; a segment that a spreadsheet would
    run as a formula, starting with ``= + - @``, gets a leading ``'``: :func:`adaptmllm.io.spreadsheet_cell`),
    atomically. Returns the path."""
    def clean(x: object) -> str:
        return spreadsheet_cell(" ".join(str(x).replace("\t", " ").splitlines()))

    per = analysis["sentence_chrf"]
    cols = ["index", "source", "reference"] + (["baseline"] if baseline is not None else []) + ["finetuned"]
    cols += (["chrf_baseline"] if baseline is not None else []) + ["chrf_finetuned"]
    cols += ["delta"] if baseline is not None else []
    cols += ["failure_finetuned"]
    lines = ["\t".join(cols)]
    for i, (s, r, f) in enumerate(zip(sources, references, finetuned)):
        row = [str(i), clean(s), clean(r)] + ([clean(baseline[i])] if baseline is not None else []) + [clean(f)]
        row += ([f"{per['baseline'][i]:.2f}"] if baseline is not None else []) + [f"{per['finetuned'][i]:.2f}"]
        row += [f"{per['finetuned'][i] - per['baseline'][i]:+.2f}"] if baseline is not None else []
        row += [failure_kind(str(f), str(s), str(r)) or ""]
        lines.append("\t".join(row))
    return atomic_write_text(path, "\n".join(lines) + "\n")
