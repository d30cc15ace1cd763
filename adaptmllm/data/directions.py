"""Several translation directions in one run: per-direction data, temperature or proportional sampling sizes,
replay of general-domain pairs, and the prepared directions (:func:`prepare_directions`).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Sequence

from adaptmllm.config import DataConfig, direction_name
from adaptmllm.data.demo import DEMO_TARGETS, general_pairs
from adaptmllm.data.pairs import PreparedData, clean, prepare_data
from adaptmllm.data.readers import DataError, Pairs, load_pairs

__all__ = ["Direction", "MultiData", "direction_config", "sample_sizes", "prepare_directions"]


@dataclass
class Direction:
    """One translation direction of a multilingual run.

    Attributes:
        name: ``"eng_Latn->gle_Latn"``.
        src_lang, tgt_lang: FLORES-200 (or ``data.new_languages``) codes.
        prepared: its cleaned train/dev/test pairs and data report (:class:`adaptmllm.data.pairs.PreparedData`).
    """

    name: str
    src_lang: str
    tgt_lang: str
    prepared: PreparedData

    @property
    def slug(self) -> str:
        """File-name form of the name: ``eng_Latn-gle_Latn``."""
        return f"{self.src_lang}-{self.tgt_lang}"


@dataclass
class MultiData:
    """The data of a multilingual run.

    Attributes:
        directions: the evaluated directions, in ``data.directions`` order.
        languages: ``[(src_lang, tgt_lang)]`` of every training group: the directions, then the replay entries.
        train: the mixed training pairs (after sampling and replay), N pairs.
        train_dirs: N indices into ``languages``: the direction of each training pair.
        report: JSON-ready report: per direction its data report, the sampling (pairs per direction
            before and after), replay pairs drawn, and pairs dropped for overlapping another direction's
            dev/test segments.
    """

    directions: list[Direction]
    languages: list[tuple[str, str]]
    train: Pairs
    train_dirs: list[int]
    report: dict = field(default_factory=dict)


def direction_config(data: DataConfig, d: dict) -> DataConfig:
    """``data`` narrowed to one direction mapping ``d`` (a full ``data.directions`` entry)."""
    return dataclasses.replace(data, directions=[], replay=[], **d)


def _prepare_one(data: DataConfig, d: dict) -> PreparedData:
    """prepare_data for one direction; the demo corpus read the other way round for ``demo->eng_Latn``."""
    cfg = direction_config(data, d)
    if cfg.train is None and cfg.tgt_lang == "eng_Latn" and cfg.src_lang in DEMO_TARGETS:
        rev = prepare_data(dataclasses.replace(cfg, src_lang="eng_Latn", tgt_lang=cfg.src_lang))
        flip = {k: Pairs(p.tgt, p.src) for k, p in (("train", rev.train), ("dev", rev.dev), ("test", rev.test))}
        report = {**rev.report, "src_lang": cfg.src_lang, "tgt_lang": cfg.tgt_lang}
        return PreparedData(flip["train"], flip["dev"], flip["test"], report)
    try:
        return prepare_data(cfg)
    except ValueError as e:  # the demo corpus' own errors name data.src_lang / data.tgt_lang
        if isinstance(e, DataError):
            raise DataError(f"data.directions {direction_name(d)}: {e}") from e
        raise DataError(f"data.directions {direction_name(d)}: {e}") from e


def sample_sizes(counts: Sequence[int], sampling: str, temperature: float) -> list[int]:
    """Training pairs to draw per direction for one epoch of the mixture.

    ``proportional``: the counts as they are. ``temperature``: the same total N = sum(counts), split
    with shares p_i = n_i^(1/T) / sum_j n_j^(1/T) (T = 1 is proportional; a large T evens the
    directions out, upsampling small ones). Every direction keeps at least one pair.

    Raises:
        ValueError: an unknown ``sampling`` or a count < 1.
    """
    if any(n < 1 for n in counts):
        raise ValueError(f"every direction needs at least one training pair, got {list(counts)}")
    if sampling == "proportional":
        return list(counts)
    if sampling != "temperature":
        raise ValueError(f"sampling {sampling!r} is not proportional or temperature")
    weights = [n ** (1.0 / temperature) for n in counts]
    total = sum(counts)
    return [max(1, round(total * w / sum(weights))) for w in weights]


def _draw(n_have: int, n_want: int, rng: random.Random) -> list[int]:
    """``n_want`` indices into ``n_have`` items: a subset when fewer, all plus random repeats when more."""
    if n_want <= n_have:
        return sorted(rng.sample(range(n_have), n_want))
    return list(range(n_have)) + [rng.randrange(n_have) for _ in range(n_want - n_have)]


def _replay_pairs(data: DataConfig, d: dict, n: int) -> Pairs:
    """Replay corpus of entry ``d`` (``train: demo`` -> the demo's general-domain pairs)."""
    if d["train"] == "demo":
        if d["src_lang"] != "eng_Latn":
            raise DataError(f"data.replay {direction_name(d)}: train=demo has English (eng_Latn) sources only")
        try:
            return Pairs(*general_pairs(d["tgt_lang"], max(n, 1), seed=7000 + data.seed))
        except ValueError as e:
            raise DataError(f"data.replay {direction_name(d)}: {e}") from e
    cfg = direction_config(data, d)
    try:
        pairs = load_pairs(d["train"], cfg)
    except DataError as e:
        raise DataError(f"data.replay {direction_name(d)}: {e}") from e

    pairs, _ = clean(pairs, cfg)
    if not len(pairs):
        raise DataError(f"data.replay {direction_name(d)}: {d['train']} has no usable pairs after cleaning")
    return pairs


def prepare_directions(data: DataConfig) -> MultiData:
    """Load, clean, split and mix the corpora of ``data.directions`` (plus ``data.replay``).

    Each direction is prepared like a one-direction run. Then training pairs of a direction whose
    source or target occurs in another direction's dev or test set are dropped (with both directions
    from one corpus a test pair would otherwise be learned the other way round), the directions are
    sampled (:func:`sample_sizes`, seeded by ``data.seed``) and ``data.replay_ratio`` times as many
    replay pairs are added, split evenly over the replay entries.

    Raises:
        DataError: naming the direction: a corpus cannot be read, or nothing is left to train on.
    """
    if not data.directions:
        raise DataError("data.directions is empty; list the directions, e.g. [eng_Latn->gle_Latn, gle_Latn->eng_Latn]")
    dirs = [Direction(direction_name(d), d["src_lang"], d["tgt_lang"], _prepare_one(data, d)) for d in data.directions]
    eval_segs = []
    for d in dirs:
        p = d.prepared
        eval_segs.append(set(p.dev.src) | set(p.dev.tgt) | set(p.test.src) | set(p.test.tgt))
    trains, cross = [], {}
    for i, d in enumerate(dirs):
        others = set().union(*(s for j, s in enumerate(eval_segs) if j != i)) if len(dirs) > 1 else set()
        tr = d.prepared.train
        keep = [k for k, (s, t) in enumerate(zip(tr.src, tr.tgt)) if s not in others and t not in others]
        cross[d.name] = len(tr) - len(keep)
        if not keep:
            raise DataError(f"data.directions {d.name}: every training pair occurs in another direction's dev/test set")
        trains.append(tr.select(keep))
    sizes = sample_sizes([len(t) for t in trains], data.sampling, data.temperature)
    rng = random.Random(data.seed)
    src, tgt, dirs_idx = [], [], []
    for i, (tr, n) in enumerate(zip(trains, sizes)):
        sel = tr.select(_draw(len(tr), n, rng))
        src += sel.src
        tgt += sel.tgt
        dirs_idx += [i] * len(sel)
    languages = [(d.src_lang, d.tgt_lang) for d in dirs]
    replay_report = {}
    if data.replay:
        n_total = round(data.replay_ratio * len(src))
        for k, r in enumerate(data.replay):
            n = n_total // len(data.replay) + (1 if k < n_total % len(data.replay) else 0)
            pairs = _replay_pairs(data, r, n)
            sel = pairs.select(_draw(len(pairs), n, rng))
            languages.append((r["src_lang"], r["tgt_lang"]))
            src += sel.src
            tgt += sel.tgt
            dirs_idx += [len(languages) - 1] * len(sel)
            replay_report[direction_name(r)] = {"source": str(r["train"]), "available": len(pairs), "drawn": len(sel)}
    report = {
        "directions": {d.name: d.prepared.to_dict() for d in dirs},
        "sampling": {"method": data.sampling, "temperature": data.temperature if data.sampling == "temperature" else None,
                     "pairs": {d.name: {"available": len(t), "drawn": n} for d, t, n in zip(dirs, trains, sizes)}},
        "overlap_across_directions": cross,
        "replay": {"ratio": data.replay_ratio, "entries": replay_report} if data.replay else None,
        "counts": {"train": len(src), "dev": sum(len(d.prepared.dev) for d in dirs),
                   "test": sum(len(d.prepared.test) for d in dirs)},
    }
    return MultiData(dirs, languages, Pairs(src, tgt), dirs_idx, report)
