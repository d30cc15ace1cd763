"""Cleaning and splitting of parallel corpora, and the data of a run: load (:mod:`adaptmllm.data.readers`),
clean, split, prepare, save, and count the segments too long for the model.

Every problem with the user's files raises :class:`~adaptmllm.data.readers.DataError` naming the file, the
1-based line where there is one, and the fix. Nothing is written to disk except by :func:`save_splits`.
Imports nothing heavy.

May import: adaptmllm.config, io, data.readers, data.demo.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import DataConfig
from adaptmllm.data.demo import demo_splits
from adaptmllm.data.readers import DataError, Pairs, load_pairs
from adaptmllm.io import atomic_write_json, atomic_write_text

__all__ = [
    "CleaningReport",
    "PreparedData",
    "CLEANING_RULES",
    "MIN_CHARS_FOR_RATIO",
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
