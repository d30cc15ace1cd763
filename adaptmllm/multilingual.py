"""Multilingual fine-tuning: several translation directions in one model, languages the model does
not know, vocabulary extension, replay of general-domain pairs, and a forgetting check on the
directions that were not trained.

``data.directions`` lists the directions (see :class:`adaptmllm.config.DataConfig`). Each direction's
corpus is loaded, cleaned and split by :func:`adaptmllm.data.prepare_data` exactly as a one-direction
run would (so ``gle_Latn->eng_Latn`` read from the English-Irish corpus gets the English->Irish dev
and test sets reversed), then the directions are mixed (proportional or temperature sampling) with
optional replay pairs. Every training example keeps its own direction: it is tokenized with its
direction's ``src_lang``/``tgt_lang`` and the dev set of each direction is scored with the forced BOS
token of its own target (:func:`adaptmllm.train.fine_tune`). Imports nothing heavy at module level.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import DataConfig, direction_name
from .data import DataError, Pairs, PreparedData, load_pairs, prepare_data
from .translate import generation_settings, set_generation_config

__all__ = [
    "Direction",
    "MultiData",
    "direction_config",
    "prepare_directions",
    "sample_sizes",
    "check_language_codes",
    "add_languages",
    "tokenizer_coverage",
    "extend_vocabulary",
    "load_forgetting_tests",
]

log = logging.getLogger(__name__)


@dataclass
class Direction:
    """One translation direction of a multilingual run.

    Attributes:
        name: ``"eng_Latn->gle_Latn"``.
        src_lang, tgt_lang: FLORES-200 (or ``data.new_languages``) codes.
        prepared: its cleaned train/dev/test pairs and data report (:class:`adaptmllm.data.PreparedData`).
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
    from .demo import DEMO_TARGETS

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
        from .demo import general_pairs

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
    from .data import clean

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


# ----------------------------------------------------------------------------------- languages

def check_language_codes(tokenizer: Any, codes: Sequence[tuple[str, str]], new_codes: Sequence[str] = ()) -> None:
    """Check that the tokenizer knows every language code (after :func:`add_languages`).

    ``codes`` are ``(field, code)`` pairs such as ``("data.directions[1].src_lang", "gle_Latn")``;
    ``new_codes`` are the ``data.new_languages`` codes (named in the fix).

    Raises:
        adaptmllm.model.ModelError: a code the tokenizer lacks, naming the field and the fix
            (``data.new_languages``).
    """
    from .model import ModelError

    if not hasattr(tokenizer, "src_lang"):
        return
    unk = tokenizer.unk_token_id
    for where, code in codes:
        if tokenizer.convert_tokens_to_ids(code) in (None, unk):
            raise ModelError(f"{where}: the model's tokenizer has no language code {code!r}; add it under "
                             f"data.new_languages ({{code: {code}, init_from: <a related language>}}) or pick a "
                             "language the model knows")


def add_languages(model: Any, tokenizer: Any, new_languages: Sequence[dict]) -> dict[str, int]:
    """Add ``data.new_languages`` codes as special tokens and give each an embedding.

    Codes the tokenizer already has are left alone (a run resumed or reloaded from a saved model). The
    token embeddings (tied with the output projection) are resized to ``len(tokenizer)``; the new code's
    row is a copy of ``init_from``'s row, or the mean of the rows of the language codes the tokenizer
    already had when ``init_from`` is empty. Returns ``{code: token id}`` of every new language.

    Raises:
        adaptmllm.model.ModelError: ``init_from`` is not a code of the tokenizer.
    """
    import torch

    from .model import ModelError

    unk = tokenizer.unk_token_id
    missing = [n for n in new_languages if tokenizer.convert_tokens_to_ids(n["code"]) in (None, unk)]
    if missing:
        known = [t for t in tokenizer.convert_ids_to_tokens(tokenizer.all_special_ids)
                 if len(t) == 8 and t[3] == "_" and t not in {n["code"] for n in new_languages}]
        tokenizer.add_special_tokens({"extra_special_tokens": [n["code"] for n in missing]},
                                     replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            mean = emb[tokenizer.convert_tokens_to_ids(known)].mean(dim=0) if known else emb[:-len(missing)].mean(dim=0)
            for n in missing:
                new_id = tokenizer.convert_tokens_to_ids(n["code"])
                if n["init_from"]:
                    src_id = tokenizer.convert_tokens_to_ids(n["init_from"])
                    if src_id in (None, unk):
                        raise ModelError(f"data.new_languages {n['code']}: init_from {n['init_from']!r} is not a "
                                         "language code of the model's tokenizer; pick one it knows or leave it empty")
                    emb[new_id] = emb[src_id]
                else:
                    emb[new_id] = mean
        log.info("added language codes %s", {n["code"]: tokenizer.convert_tokens_to_ids(n["code"]) for n in missing})
    return {n["code"]: tokenizer.convert_tokens_to_ids(n["code"]) for n in new_languages}


def tokenizer_coverage(tokenizer: Any, texts_by_lang: dict[str, Sequence[str]], max_chars: int = 30) -> dict:
    """How well the tokenizer covers each language's text.

    Returns ``{lang: {"segments", "tokens", "unk_tokens", "unk_rate" (unk_tokens / tokens, 0-1),
    "unknown_chars": [{"char", "codepoint" ("U+00DF"), "name", "count"}, ...]}}`` where
    ``unknown_chars`` are the characters (whitespace excluded) the tokenizer maps to its unknown
    token on their own, most frequent first, at most ``max_chars`` of them.
    """
    unk = tokenizer.unk_token_id
    out = {}
    for lang, texts in texts_by_lang.items():
        texts = list(texts)
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        n_tok = sum(len(x) for x in ids)
        n_unk = sum(x.count(unk) for x in ids)
        counts: dict[str, int] = {}
        for t in texts:
            for ch in t:
                if not ch.isspace():
                    counts[ch] = counts.get(ch, 0) + 1
        chars = list(counts)
        char_ids = tokenizer(chars, add_special_tokens=False)["input_ids"] if chars else []
        bad = sorted((c for c, i in zip(chars, char_ids) if unk in i), key=lambda c: (-counts[c], c))
        out[lang] = {"segments": len(texts), "tokens": n_tok, "unk_tokens": n_unk,
                     "unk_rate": n_unk / n_tok if n_tok else 0.0,
                     "unknown_chars": [{"char": c, "codepoint": f"U+{ord(c):04X}",
                                        "name": unicodedata.name(c, "?"), "count": counts[c]} for c in bad[:max_chars]],
                     "n_unknown_chars": len(bad)}
    return out


# ------------------------------------------------------------------------------ vocabulary

def extend_vocabulary(model: Any, tokenizer: Any, texts: Sequence[str], n_pieces: int,
                      work_dir: str | Path, seed: int = 0) -> dict:
    """Add pieces learned on ``texts`` to the tokenizer's BPE vocabulary and give them embeddings.

    A SentencePiece BPE model of ``n_pieces`` pieces is trained on ``texts`` (``character_coverage``
    1.0, so every character of the corpus becomes a piece). Pieces the tokenizer lacks are added to its
    BPE model (``tokenizer.json``): single characters as new alphabet symbols, longer pieces as chains
    of new merges built from the piece's old segmentation, ranked after all existing merges (so the
    old tokenization is unchanged wherever no new piece applies). Each new embedding row is the mean
    of the rows of the piece's old segmentation (the unknown token's row for a character the old
    vocabulary lacked). The NLLB SentencePiece model file itself is not changed: transformers 5.x saves
    and loads the fast tokenizer from ``tokenizer.json``, which holds the extension.

    Returns ``{"requested", "added", "pieces" (up to 50 examples)}``.

    Raises:
        adaptmllm.model.ModelError: the tokenizer is not a BPE fast tokenizer (NLLB's is).
    """
    import json

    import sentencepiece as spm
    import torch
    from tokenizers import Tokenizer

    from .model import ModelError, train_sentencepiece

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    if spec.get("model", {}).get("type") != "BPE":
        raise ModelError("data.extend_vocab: works with BPE fast tokenizers (NLLB-200's); this tokenizer is "
                         f"{spec.get('model', {}).get('type', type(tokenizer).__name__)}")
    texts = [t for t in texts if t.strip()]
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(texts, work / "extend", n_pieces, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1)
    sp = spm.SentencePieceProcessor(model_file=str(work / "extend.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_unknown(i) and not sp.is_control(i)]
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    as_pairs = bool(merges) and isinstance(merges[0], list)
    have_merge = {tuple(m) if as_pairs else tuple(m.split(" ", 1)) for m in merges}
    next_id = len(tokenizer)
    unk_id = tokenizer.unk_token_id
    added: list[str] = []
    seg_of: dict[str, list[int]] = {}

    def add(tok: str, seg: list[int]) -> None:
        nonlocal next_id
        vocab[tok] = next_id
        seg_of[tok] = seg
        next_id += 1
        added.append(tok)

    # 1) characters the old vocabulary lacks become alphabet symbols
    for p in pieces:
        for ch in p:
            if ch not in vocab:
                add(ch, [unk_id])
    old = Tokenizer.from_str(json.dumps(spec))  # old merges, new alphabet
    for p in pieces:
        if p in vocab:
            continue
        parts = [t.value for t in old.model.tokenize(p)]
        ids = [vocab[t] for t in parts]
        # 2) a chain of merges from the old segmentation: ((a b) c) d ...
        cur, cur_ids = parts[0], ids[:1]
        for nxt, nid in zip(parts[1:], ids[1:]):
            if (cur, nxt) not in have_merge:
                merges.append([cur, nxt] if as_pairs else f"{cur} {nxt}")
                have_merge.add((cur, nxt))
            cur, cur_ids = cur + nxt, cur_ids + [nid]
            if cur not in vocab:
                add(cur, cur_ids)
    if added:
        new = Tokenizer.from_str(json.dumps(spec))
        tokenizer._tokenizer = new  # the fast tokenizer's backend (what save_pretrained writes to tokenizer.json)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            for tok in added:
                emb[vocab[tok]] = emb[torch.tensor(seg_of[tok])].mean(dim=0)
    log.info("data.extend_vocab: added %d of %d learned pieces", len(added), len(pieces))
    return {"requested": n_pieces, "learned": len(pieces), "added": len(added), "pieces": added[:50]}


# ---------------------------------------------------------------------------- forgetting

def load_forgetting_tests(config: Any) -> list[tuple[dict, Pairs]]:
    """``eval.forgetting_tests`` loaded: ``[(entry, pairs)]`` (``test: demo`` -> the demo's held-out
    general-domain pairs English -> demo language, ``data.test_size`` of them). Loaded as given.

    Raises:
        DataError: naming the entry: the corpus cannot be read or holds no pairs.
    """
    from .evaluation import demo_general_test

    out = []
    for i, e in enumerate(config.eval.forgetting_tests):
        d = {k: e.get(k) for k in ("src_lang", "tgt_lang", "test", "src_suffix", "tgt_suffix", "src_column",
                                   "tgt_column")}
        where = f"eval.forgetting_tests[{i}] ({direction_name(d)})"
        if d["test"] == "demo":
            if d["src_lang"] != "eng_Latn":
                raise DataError(f"{where}: test=demo has English (eng_Latn) sources only")
            try:
                pairs = Pairs(*demo_general_test(d["tgt_lang"], config.data.test_size, config.data.seed))
            except ValueError as err:
                raise DataError(f"{where}: {err}") from err
        else:
            cfg = dataclasses.replace(config.data, directions=[], replay=[], format="auto", train=None,
                                      dev=None, **{k: d[k] for k in d if k != "test"})
            try:
                pairs = load_pairs(d["test"], cfg)
            except DataError as err:
                raise DataError(f"{where}: {err}") from err
        if not len(pairs):
            raise DataError(f"{where}: no pairs")
        out.append((d, pairs))
    return out


def macro(scores: Sequence[dict]) -> dict:
    """Macro average of score dicts (the keys all have in common that are numbers), plus
    ``n_segments`` summed and the first one's ``signatures``."""
    keys = [k for k in scores[0] if all(isinstance(s.get(k), (int, float)) and not isinstance(s.get(k), bool)
                                        for s in scores)]
    out = {k: sum(s[k] for s in scores) / len(scores) for k in keys if k != "n_segments"}
    out["n_segments"] = sum(int(s.get("n_segments", 0)) for s in scores)
    if "signatures" in scores[0]:
        out["signatures"] = scores[0]["signatures"]
    if any(math.isnan(v) for v in out.values() if isinstance(v, float)):
        log.warning("a macro-averaged score is NaN")
    return out


# ------------------------------------------------------------------------------------ the run

def _with_pair(config: Any, src_lang: str, tgt_lang: str, train: Any = "keep") -> Any:
    """A copy of ``config`` whose data.src_lang/tgt_lang (and, if given, data.train) are replaced."""
    kw = {"src_lang": src_lang, "tgt_lang": tgt_lang}
    if train != "keep":
        kw["train"] = train
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **kw))


def _model_config(config: Any, multi: MultiData) -> Any:
    """The config :func:`adaptmllm.model.prepare_model` gets: a language pair the base model knows
    (new languages are added afterwards) and a training corpus when any direction has one (so the tiny
    model is built on it rather than the demo base)."""
    new = {n["code"] for n in config.data.new_languages}
    known = [c for pair in multi.languages for c in pair if c not in new]
    known = list(dict.fromkeys(known + ["eng_Latn", "fra_Latn"]))
    train = next((d["train"] for d in config.data.directions if d.get("train")), None)
    return _with_pair(config, known[0], known[1], train)


def build_model(config: Any, multi: MultiData, tok_dir: Path, progress: bool = True, reuse_tokenizer: bool = False,
                vocab_dir: Optional[Path] = None) -> tuple[Any, dict]:
    """The base model of a multilingual run, set up: :func:`adaptmllm.model.prepare_model`, then
    ``data.new_languages`` (:func:`add_languages`) and ``data.extend_vocab`` (:func:`extend_vocabulary`),
    then every direction's codes checked (:func:`check_language_codes`).

    Returns ``(bundle, tokenizer_report)`` where the report holds the coverage ``before`` and (with
    vocabulary extension) ``after``, ``extension`` and ``new_languages`` ({code: id}).

    Raises:
        adaptmllm.model.ModelError: a direction's code unknown to the model, naming the field and the fix.
    """
    from .model import prepare_model

    mcfg = _model_config(config, multi)
    texts = multi.train.src + multi.train.tgt
    bundle = prepare_model(mcfg, texts, tokenizer_dir=tok_dir, progress=progress, reuse_tokenizer=reuse_tokenizer)
    model, tok = bundle.model, bundle.tokenizer
    base = getattr(model, "get_base_model", lambda: model)()
    rep: dict = {}
    if config.data.new_languages:
        rep["new_languages"] = add_languages(base, tok, config.data.new_languages)
    fields = [(f"data.directions[{i}].{side}", d[side]) for i, d in enumerate(config.data.directions)
              for side in ("src_lang", "tgt_lang")]
    fields += [(f"data.replay[{i}].{side}", d[side]) for i, d in enumerate(config.data.replay)
               for side in ("src_lang", "tgt_lang")]
    fields += [(f"eval.forgetting_tests[{i}].{side}", d[side]) for i, d in enumerate(config.eval.forgetting_tests)
               for side in ("src_lang", "tgt_lang")]
    check_language_codes(tok, fields)
    by_lang: dict[str, list[str]] = {}
    for (s_lang, t_lang), s, t in zip((multi.languages[k] for k in multi.train_dirs), multi.train.src, multi.train.tgt):
        by_lang.setdefault(s_lang, []).append(s)
        by_lang.setdefault(t_lang, []).append(t)
    rep["before"] = tokenizer_coverage(tok, by_lang)
    if config.data.extend_vocab:
        rep["extension"] = extend_vocabulary(base, tok, texts, config.data.extend_vocab,
                                             vocab_dir or Path(tok_dir) / "extend", seed=config.data.seed)
        rep["after"] = tokenizer_coverage(tok, by_lang)
    tok.src_lang, tok.tgt_lang = multi.languages[0]
    return bundle, rep


def run_multilingual(config: Any, progress: bool = True, callbacks: Sequence[Any] = ()) -> Any:
    """The pipeline run (:func:`adaptmllm.pipeline.run`) for several ``data.directions`` in one model.

    Writes the run folder as a one-direction run does, with per-direction files: ``data/<src>-<tgt>/``
    (splits), ``baseline.<src>-<tgt>.hyp.txt`` / ``finetuned.<src>-<tgt>.hyp.txt``, and
    ``forgetting.<src>-<tgt>.{baseline,finetuned}.hyp.txt`` for ``eval.forgetting_tests``.
    ``baseline.hyp.txt``/``finetuned.hyp.txt`` hold all directions' test translations in order
    (the pooled significance test and error analysis read them). ``metrics.json``: ``baseline`` and
    ``finetuned`` are the macro averages over the directions; ``directions`` holds per direction its
    ``baseline``, ``finetuned``, ``delta`` and ``significance`` (paired bootstrap);
    ``forgetting_directions`` the untrained directions' scores with ``drop``/``flagged``.

    Raises:
        ConfigError: eval.general_test with several directions (use eval.forgetting_tests),
            or train.select_direction not among data.directions.
        adaptmllm.data.DataError, adaptmllm.model.ModelError, RunFolderError: bad input, before training.
    """
    import time

    from .config import ConfigError
    from .data import save_splits
    from .evaluation import evaluate_outputs, forgetting
    from .green import GreenTracker
    from .io import atomic_write_json, sweep_temp_files
    from .lora import save_plain_model
    from .metrics import check_optional_metrics, write_hypotheses
    from .pipeline import _dev_better, _log_to_file, finish_run, prepare_run_dir, score_model, train_summary
    from .report import build_metrics, plot_history
    from .significance import paired_bootstrap
    from .train import fine_tune
    from .translate import engine_model

    t_start = time.perf_counter()
    if config.eval.general_test:
        raise ConfigError("eval.general_test: with several data.directions use eval.forgetting_tests "
                          "({src_lang, tgt_lang, test} per direction) instead")
    names = [direction_name(d) for d in config.data.directions]
    sel = config.train.select_direction
    if sel is not None and sel not in names:
        raise ConfigError(f"train.select_direction: {sel} is not one of data.directions ({', '.join(names)})")
    multi = prepare_directions(config.data)
    forget_sets = load_forgetting_tests(config)
    check_optional_metrics(config.eval.spm_model, config.eval.comet_model)
    from .model import resolve_model

    resolve_model(config.model.name_or_path, config.model.local_files_only)  # before the run folder is touched
    run_dir = prepare_run_dir(config)
    sweep_temp_files(run_dir)  # left by a run killed between an atomic write and its rename
    handler = _log_to_file(run_dir / "run.log")
    try:
        log.info("run %s: %s", config.name, ", ".join(names))
        for d in multi.directions:
            save_splits(d.prepared, run_dir / "data" / d.slug)
        tok_dir = run_dir / "tokenizer"
        bundle, tok_report = build_model(config, multi, tok_dir, progress, reuse_tokenizer=config.train.resume,
                                         vocab_dir=run_dir / "tokenizer-extension")
        model, tokenizer = bundle.model, bundle.tokenizer
        data_report = {**multi.report, "tokenizer": tok_report}
        atomic_write_json(run_dir / "data" / "data_report.json", data_report)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s (%s parameters)", bundle.description, f"{n_params:,}")

        def score_all(system: str, mdl: Any) -> tuple[dict, dict]:
            mdl = engine_model(mdl, tokenizer, config)  # eval.engine ctranslate2: converted once for every set
            per, fgt = {}, {}
            for d in multi.directions:
                per[d.name] = score_model(mdl, tokenizer, _with_pair(config, d.src_lang, d.tgt_lang),
                                          d.prepared.test.src, d.prepared.test.tgt,
                                          run_dir / f"{system}.{d.slug}.hyp.txt", progress,
                                          f"{system}: translating the {d.name} test set")
                log.info("%s %s test: BLEU %.2f chrF++ %.2f", system, d.name, per[d.name]["bleu"], per[d.name]["chrf"])
            for e, pairs in forget_sets:
                name = direction_name(e)
                fgt[name] = score_model(mdl, tokenizer, _with_pair(config, e["src_lang"], e["tgt_lang"]), pairs.src,
                                        pairs.tgt, run_dir / f"forgetting.{e['src_lang']}-{e['tgt_lang']}.{system}.hyp.txt",
                                        progress, f"{system}: translating the {name} forgetting test set")
            return per, fgt

        base_per, base_fgt = score_all("baseline", model) if config.eval.score_baseline else ({}, {})
        dev_src, dev_tgt, dev_dirs = [], [], []
        for k, d in enumerate(multi.directions):
            dev_src += d.prepared.dev.src
            dev_tgt += d.prepared.dev.tgt
            dev_dirs += [k] * len(d.prepared.dev)
        with GreenTracker(config.green, run_dir / "green", f"adaptmllm-{config.name}") as green:
            trainer, result = fine_tune(
                model, tokenizer, config.train, multi.train.src, multi.train.tgt, dev_src, dev_tgt,
                run_dir / "checkpoints", multi.languages[0][1], config.model.max_source_length,
                config.model.max_target_length, progress=progress, callbacks=callbacks,
                languages=multi.languages, train_dirs=multi.train_dirs, dev_dirs=dev_dirs, select_direction=sel,
                generation=generation_settings(config))  # dev decoded as the test is
        atomic_write_json(run_dir / "history.json", result.history)
        curves = plot_history(result.history, run_dir / "training_curves.png")
        from .deepspeed import consolidated_model

        model = consolidated_model(trainer)
        kept = "finetuned"
        if result.baseline_dev is not None and not _dev_better(result.metric, result.best_metric, result.baseline_dev):
            kept = "baseline"
            log.warning("fine-tuning never beat the baseline on the dev set (%s %.2f vs %.2f): keeping the baseline",
                        result.metric, result.best_metric or float("nan"), result.baseline_dev)
        fine_per, fine_fgt = score_all("finetuned", model)
        model_dir = run_dir / "model"
        if model_dir.exists():
            import shutil

            shutil.rmtree(model_dir)
        # generation_config.json: the test's decoding; no forced BOS token (one target language per direction)
        if kept == "baseline":
            base_bundle, _ = build_model(config, multi, tok_dir, False, reuse_tokenizer=True,
                                         vocab_dir=run_dir / "tokenizer-extension")
            save_plain_model(set_generation_config(base_bundle.model, generation_settings(config)), model_dir)
        else:
            save_plain_model(set_generation_config(model, generation_settings(config)), model_dir)
        tokenizer.save_pretrained(model_dir)
        del trainer

        # Pooled files: all directions' test translations in order (significance + error analysis).
        test_src = [s for d in multi.directions for s in d.prepared.test.src]
        test_ref = [t for d in multi.directions for t in d.prepared.test.tgt]
        for system, per in (("baseline", base_per), ("finetuned", fine_per)):
            if per:
                from .evaluation import read_lines

                write_hypotheses(run_dir / f"{system}.hyp.txt",
                                 [h for d in multi.directions for h in read_lines(run_dir / f"{system}.{d.slug}.hyp.txt")])
        evaluation = evaluate_outputs(run_dir, _with_pair(config, *multi.languages[0]), test_src, test_ref,
                                      history=result.history)
        ev = config.eval
        metric_names = ["chrf", "bleu", "ter"] + (["spbleu"] if ev.spm_model else [])
        from .evaluation import read_lines

        directions = {}
        for d in multi.directions:
            b, f = base_per.get(d.name), fine_per[d.name]
            sig = None
            if b is not None:
                sig = paired_bootstrap(read_lines(run_dir / f"baseline.{d.slug}.hyp.txt"),
                                       read_lines(run_dir / f"finetuned.{d.slug}.hyp.txt"), d.prepared.test.tgt,
                                       metrics=metric_names, bleu_tokenize=ev.bleu_tokenize, spm_model=ev.spm_model,
                                       n_samples=ev.bootstrap_samples, alpha=ev.significance_level)
            directions[d.name] = {"baseline": b, "finetuned": f, "n_segments": len(d.prepared.test),
                                  "delta": {k: f[k] - b[k] for k in ("bleu", "chrf", "ter")} if b else None,
                                  "significance": sig}
        forgetting_dirs = {}
        for e, pairs in forget_sets:
            name = direction_name(e)
            fr = forgetting({"baseline": base_fgt.get(name), "finetuned": fine_fgt[name]}, config)
            fr["source"] = str(e["test"])
            forgetting_dirs[name] = fr
            if fr["flagged"]:
                log.warning("forgetting in %s: chrF++ fell by %.2f points", name, fr["drop"])
        metrics = build_metrics({
            "baseline": macro(list(base_per.values())) if base_per else None,
            "finetuned": macro(list(fine_per.values())), "green": green.report, "kept": kept,
            "macro_average_over": names,
            "directions": directions,
            "forgetting_directions": forgetting_dirs or None,
            "best_checkpoint": result.best_checkpoint,
            "dev": {"metric": result.metric, "baseline": result.baseline_dev, "best": result.best_metric,
                    "selected_by": sel or "macro average"},
            "train": train_summary(result, n_params),
            "data": multi.report["counts"],
            "tokenizer": tok_report,
            "total_runtime_s": round(time.perf_counter() - t_start, 2),
            **evaluation,
        })
        return finish_run(run_dir, config, metrics, data_report, curves, model_dir,
                          _with_pair(config, *multi.languages[0]), bundle, t_start)
    finally:
        for name in ("adaptmllm", "transformers"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
