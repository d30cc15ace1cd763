"""The ``data:`` section (:class:`DataConfig`): the corpus, the language pair or directions, cleaning,
splitting, new languages and replay; :func:`direction_name` and :data:`DIRECTION_KEYS` of a direction mapping.

May import: adaptmllm.config.checks, adaptmllm.languages.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

from adaptmllm.config.checks import ConfigError, check
from adaptmllm.languages import LANGUAGES, LanguageError, check_code


DATA_FORMATS = ("auto", "text", "tsv", "csv", "jsonl", "hf")
TOO_LONG = ("truncate", "reject")


SAMPLINGS = ("proportional", "temperature")
DIRECTION_KEYS = ("src_lang", "tgt_lang", "train", "dev", "test", "src_suffix", "tgt_suffix", "src_column",
                  "tgt_column")
_CODE_RE = r"^[a-z]{3}_[A-Z][a-z]{3}$"


def direction_name(d: dict) -> str:
    """``"eng_Latn->gle_Latn"`` for a direction mapping with ``src_lang`` and ``tgt_lang``."""
    return f"{d['src_lang']}->{d['tgt_lang']}"


def _new_languages(entries: Any) -> list[dict]:
    """``data.new_languages`` as a list of ``{code, init_from}``; raises ConfigError naming the entry."""
    import re

    check(isinstance(entries, list), "data.new_languages", "must be a list of mappings {code, init_from}")
    out, seen = [], set()
    for i, e in enumerate(entries):
        name = f"data.new_languages[{i}]"
        if isinstance(e, str):
            e = {"code": e}
        check(isinstance(e, dict), name, "must be a mapping such as {code: xyz_Latn, init_from: gle_Latn}")
        unknown = [k for k in e if k not in ("code", "init_from")]
        check(not unknown, f"{name}.{unknown[0] if unknown else ''}", "unknown key; give code and init_from")
        code, init = e.get("code"), e.get("init_from") or None
        check(isinstance(code, str) and re.match(_CODE_RE, code or "") is not None, f"{name}.code",
               f"{code!r} is not a FLORES-style code: three lower-case letters, '_', a script such as Latn (xyz_Latn)")
        check(code not in LANGUAGES, f"{name}.code", f"{code} is already a known language; remove it from "
               "data.new_languages")
        check(code not in seen, f"{name}.code", f"{code} is listed twice")
        seen.add(code)
        check(init is None or init in LANGUAGES or init in seen - {code}, f"{name}.init_from",
               f"{init!r} is not a known language code; give a related language such as gle_Latn, or leave it "
               "empty for the mean of the language codes")
        out.append({"code": code, "init_from": init})
    return out


def _direction(entry: Any, name: str, data: "DataConfig", added: set, need_train: bool = False) -> dict:
    """One ``data.directions`` (or ``data.replay``) entry as a full mapping of :data:`DIRECTION_KEYS`.

    A string ``a->b`` takes data.train/dev/test; when it is data's pair reversed, the suffix and
    column settings are swapped so the same corpus is read the other way round.
    """
    if isinstance(entry, str):
        parts = [p.strip() for p in entry.split("->")]
        check(len(parts) == 2 and all(parts), name, f"{entry!r} is not a direction; write it as eng_Latn->gle_Latn")
        src, tgt = parts
        d = {"src_lang": src, "tgt_lang": tgt, "train": data.train, "dev": data.dev, "test": data.test}
        same = (src, tgt) == (data.src_lang, data.tgt_lang)
        flip = (src, tgt) == (data.tgt_lang, data.src_lang)
        sides = ("src", "tgt") if not flip else ("tgt", "src")
        for mine, theirs in zip(("src", "tgt"), sides):
            for kind in ("suffix", "column"):
                d[f"{mine}_{kind}"] = getattr(data, f"{theirs}_{kind}") if (same or flip) else None
    elif isinstance(entry, dict):
        unknown = [k for k in entry if k not in DIRECTION_KEYS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], DIRECTION_KEYS, n=2)
            raise ConfigError(f"{name}.{unknown[0]}: unknown key" + (f"; did you mean {', '.join(close)}?" if close
                              else f"; known keys: {', '.join(DIRECTION_KEYS)}"))
        d = {k: entry.get(k) for k in DIRECTION_KEYS}
    else:
        raise ConfigError(f"{name}: expected a string such as eng_Latn->gle_Latn or a mapping {{src_lang, tgt_lang, "
                          f"train, ...}}, got {type(entry).__name__}")
    for side in ("src_lang", "tgt_lang"):
        code = d.get(side)
        if code in added:
            continue
        if not isinstance(code, str) or code not in LANGUAGES:
            try:
                check_code(code, f"{name}.{side}")
            except LanguageError as e:
                raise ConfigError(f"{e}; a language the model does not know goes under data.new_languages "
                                  "({code: xyz_Latn, init_from: <related code>})") from None
    check(d["src_lang"] != d["tgt_lang"], name, f"source and target are both {d['src_lang']}")
    for k in ("train", "dev", "test"):
        if d[k] is not None and not str(d[k]).strip():
            d[k] = None
    check(not need_train or bool(d["train"]), f"{name}.train", "give a corpus (or demo)")
    return d


@dataclass
class DataConfig:
    """Where the parallel corpus comes from, which language pair it is, and how it is cleaned."""

    src_lang: str = "eng_Latn"
    """Source language, a FLORES-200 code such as ``eng_Latn``."""
    tgt_lang: str = "qaa_Latn"
    """Target language, a FLORES-200 code such as ``gle_Latn`` (``qaa_Latn``..: the demo's artificial languages)."""
    train: Optional[str] = None
    """Training corpus: a TSV/CSV/JSONL file, a ``datasets`` folder saved to disk, or the prefix of
    aligned plain-text files (``data/train`` for ``data/train.en`` + ``data/train.ga``).
    Empty: the embedded demo corpus made by adaptmllm itself."""
    dev: Optional[str] = None
    """Development corpus (same forms as ``train``). Empty: split off the training corpus."""
    test: Optional[str] = None
    """Test corpus (same forms as ``train``). Empty: split off the training corpus."""
    src_suffix: Optional[str] = None
    """File suffix of the source side of aligned text files (``en``). Empty: the ISO 639-1 code of ``src_lang``."""
    tgt_suffix: Optional[str] = None
    """File suffix of the target side of aligned text files (``ga``). Empty: the ISO 639-1 code of ``tgt_lang``."""
    format: str = "auto"
    """Corpus format: auto, text, tsv, csv, jsonl or hf. ``auto`` decides from the path."""
    src_column: Optional[str] = None
    """Column (TSV/CSV) or key (JSONL ``translation`` dict, HF dataset) of the source side. Empty: ``src_suffix``."""
    tgt_column: Optional[str] = None
    """Column (TSV/CSV) or key (JSONL ``translation`` dict, HF dataset) of the target side. Empty: ``tgt_suffix``."""
    max_chars: int = 1000
    """Cleaning: drop pairs with a side longer than this many characters."""
    max_length_ratio: float = 3.0
    """Cleaning: drop pairs whose longer side has more than this many times the characters of the shorter."""
    too_long: str = "truncate"
    """Segments longer than model.max_source_length / max_target_length tokens: truncate (counted per split in
    data/data_report.json and the report) or reject (stop before training, naming the first such line)."""
    drop_duplicates: bool = True
    """Cleaning: drop repeated (source, target) pairs."""
    drop_identical: bool = True
    """Cleaning: drop pairs whose source equals its target (untranslated copies)."""
    dev_size: int = 200
    """Pairs split off for the dev set when ``dev`` is empty."""
    test_size: int = 200
    """Pairs split off for the test set when ``test`` is empty."""
    dev_percent: float = 0.0
    """Split off this percentage of the cleaned corpus for the dev set instead of ``dev_size`` pairs (adaptMLLM:
    3.2). 0: use ``dev_size``."""
    test_percent: float = 0.0
    """Split off this percentage of the cleaned corpus for the test set instead of ``test_size`` pairs (adaptMLLM:
    1.6). 0: use ``test_size``."""
    max_train_pairs: int = 0
    """Use at most this many training pairs after cleaning (0: all). Handy for a quick trial."""
    demo_train_pairs: int = 1500
    """Size of the embedded demo's in-domain training corpus (pairs)."""
    seed: int = 13
    """Seed of the deterministic dev/test split and of the demo corpus."""
    directions: list = field(default_factory=list)
    """Several translation directions in one model. Each entry is a string ``eng_Latn->gle_Latn`` (uses
    data.train/dev/test; ``gle_Latn->eng_Latn`` reads that same corpus the other way round) or a mapping
    {src_lang, tgt_lang, train, dev, test, src_suffix, tgt_suffix, src_column, tgt_column}. Empty: the one
    direction src_lang -> tgt_lang."""
    sampling: str = "proportional"
    """How training pairs are drawn across directions: proportional (each direction's pairs as they are) or
    temperature (direction i gets a share proportional to n_i^(1/temperature), small directions upsampled)."""
    temperature: float = 5.0
    """Sampling temperature across directions (sampling=temperature): 1 is proportional, larger evens them out."""
    new_languages: list = field(default_factory=list)
    """Language codes the model does not know, each a mapping {code: xyz_Latn, init_from: gle_Latn} (init_from
    empty: the mean of the known language codes' embeddings). Added as special tokens; the embeddings are resized."""
    extend_vocab: int = 0
    """Learn up to this many SentencePiece pieces on the training corpus and add those the tokenizer lacks
    (each new embedding: the mean of its old segmentation's). 0: off."""
    replay: list = field(default_factory=list)
    """General-domain pairs mixed into training against forgetting: mappings {src_lang, tgt_lang, train} (any
    directions; train: a corpus, or ``demo`` for the demo's general-domain pairs English -> demo language)."""
    replay_ratio: float = 0.2
    """Replay pairs drawn (with replacement where needed) per in-domain training pair, when replay is given."""

    def __post_init__(self) -> None:
        self.new_languages = _new_languages(self.new_languages)
        added = {n["code"] for n in self.new_languages}
        if self.src_lang not in added:
            check_code(self.src_lang, "data.src_lang")
        if self.tgt_lang not in added:
            check_code(self.tgt_lang, "data.tgt_lang")
        self.directions = [_direction(e, f"data.directions[{i}]", self, added) for i, e in enumerate(self.directions)]
        names = [direction_name(d) for d in self.directions]
        dup = [n for n in names if names.count(n) > 1]
        check(not dup, "data.directions", f"{dup[0] if dup else ''} is listed twice; give each direction once")
        check(self.sampling in SAMPLINGS, "data.sampling", f"{self.sampling!r} is not one of {SAMPLINGS}")
        check(self.temperature >= 1.0, "data.temperature", "must be >= 1 (1: proportional; 5 is usual)")
        check(isinstance(self.extend_vocab, int) and self.extend_vocab >= 0, "data.extend_vocab",
               "must be a whole number >= 0 (0: off)")
        check(isinstance(self.replay, list), "data.replay", "must be a list of mappings {src_lang, tgt_lang, train}")
        self.replay = [_direction(e, f"data.replay[{i}]", self, added, need_train=True)
                       for i, e in enumerate(self.replay)]
        check(0.0 < self.replay_ratio <= 10.0, "data.replay_ratio", "must be in (0, 10], e.g. 0.2")
        check(self.src_lang != self.tgt_lang, "data.tgt_lang",
               f"source and target are both {self.src_lang}; pick two different languages")
        check(self.format in DATA_FORMATS, "data.format", f"{self.format!r} is not one of {DATA_FORMATS}")
        check(self.max_chars > 0, "data.max_chars", "must be > 0")
        check(self.max_length_ratio >= 1.0, "data.max_length_ratio", "must be >= 1.0")
        check(self.too_long in TOO_LONG, "data.too_long", f"{self.too_long!r} is not one of {TOO_LONG}")
        check(self.dev_size >= 1, "data.dev_size", "must be >= 1")
        check(self.test_size >= 1, "data.test_size", "must be >= 1")
        check(0 <= self.dev_percent < 50, "data.dev_percent", "must be in [0, 50) percent, e.g. 3.2 (0: use dev_size)")
        check(0 <= self.test_percent < 50, "data.test_percent", "must be in [0, 50) percent, e.g. 1.6 (0: use test_size)")
        check(self.max_train_pairs >= 0, "data.max_train_pairs", "must be >= 0 (0 means all)")
        check(self.demo_train_pairs >= 10, "data.demo_train_pairs", "must be >= 10")

    def split_sizes(self, n: int) -> tuple[int, int]:
        """(dev, test) pairs split off a cleaned corpus of ``n`` pairs: the percentages when given, else the counts."""
        dev = max(1, round(n * self.dev_percent / 100)) if self.dev_percent else self.dev_size
        test = max(1, round(n * self.test_percent / 100)) if self.test_percent else self.test_size
        return dev, test
