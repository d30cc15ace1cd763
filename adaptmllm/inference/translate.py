"""Batched translation, the one place every front end generates in (evaluation, CLI, playground, HPO,
back-translation).

What :func:`translate_texts` does with N segments:

1. **Sentence splitting** (``split_sentences``): a segment holding several sentences (a paragraph, a
   document, lines) is cut into sentences with pysbd, each translated alone, and the translations are
   joined back with the original spaces and line breaks. NLLB was trained on single sentences: fed a
   paragraph, it drops or cuts sentences, and anything past ``max_source_length`` tokens is lost.
   A sentence still longer than ``max_source_length`` tokens is cut between words, so nothing is
   silently truncated.
2. **Token-budget batching**: the pieces are sorted by length (longest first) and grouped so that a
   batch's padded size, ``segments x longest source in tokens``, stays within ``max_batch_tokens``
   (and at most ``batch_size`` segments); one over-long piece alone forms its own batch.
3. **Generation** with ``transformers`` (``torch.inference_mode``; bf16, or fp16 where bf16 is not
   supported, autocast on a GPU) or with a CTranslate2 export (:mod:`adaptmllm.inference.ct2`), with the beam
   size, length penalty, maximum length and no-repeat n-gram size given.
4. The translations are put back in the input order.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any, Callable, Iterable, Optional, Sequence

from adaptmllm.config import ENGINES  # transformers (the PyTorch model) or ctranslate2 (an exported model)
from adaptmllm.inference.ct2 import to_ctranslate2
from adaptmllm.languages import iso639_1
from adaptmllm.modeling.model import forced_bos_token_id, length_cap

__all__ = ["translate_texts", "token_budget_batches", "length_sorted_batches", "split_into_sentences", "eval_kwargs",
    "engine_model", "ENGINES", "strip_line_ends", "generation_settings"]

log = logging.getLogger(__name__)

# pysbd's languages (ISO 639-1); other languages are split with its English rules (., !, ?, ...).
_PYSBD_LANGS = frozenset("en hi mr zh es am ar hy bg ur ru pl fa nl da fr my el it ja de kk sk".split())
# A cheap test that a piece may hold more than one sentence: a line break, or sentence-final
# punctuation followed by more text. Segments without it skip pysbd (most test-set sentences).
_MAYBE_MULTI = re.compile(r"\n|[.!?;:\u3002\uff01\uff1f\u0964\u06d4\u061f\u2026][\"'\u201d\u2019)\]]*\s+\S"
                          r"|[\u3002\uff01\uff1f]\S")


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest first, to cut padding.

    ``lengths`` are per-segment sizes (characters or tokens). Every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def token_budget_batches(lengths: Sequence[int], max_tokens: int,
                         max_segments: Optional[int] = None) -> list[list[int]]:
    """Indices grouped into batches whose padded size stays within a token budget, longest first.

    Args:
        lengths: N per-segment lengths in tokens (the padded source of a batch is as long as its longest).
        max_tokens: budget of one batch: ``len(batch) * max(lengths[i] for i in batch) <= max_tokens``.
            A segment longer than the budget forms a batch of its own (it cannot be split here).
        max_segments: also at most this many segments per batch (None: no limit).

    Returns:
        Batches of indices into ``lengths``; every index appears exactly once; segments are sorted by
        length, longest first (ties keep the input order), so batches hold similar lengths.

    Raises:
        ValueError: ``max_tokens`` or ``max_segments`` below 1.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if max_segments is not None and max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for i in order:
        full = max_segments is not None and len(cur) >= max_segments
        if cur and (full or (len(cur) + 1) * width > max_tokens):
            batches.append(cur)
            cur = []
        if not cur:
            width = max(1, int(lengths[i]))  # the first (longest) segment sets the padded width
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


@lru_cache(maxsize=32)
def _segmenter(iso: str) -> Any:
    import pysbd

    return pysbd.Segmenter(language=iso if iso in _PYSBD_LANGS else "en", clean=False)


def split_into_sentences(text: str, lang: str = "eng_Latn") -> list[tuple[str, str]]:
    """Cut ``text`` into sentences with pysbd, keeping what separates them.

    Args:
        text: a segment: a sentence, a paragraph or several lines.
        lang: its language, a FLORES-200 code (or ISO 639-1); pysbd's rules for it where it has them
            (23 languages), its English rules (., !, ?) otherwise.

    Returns:
        ``(sentence, separator)`` pairs with ``"".join(s + sep for s, sep in pairs) == text.strip()``:
        sentences are stripped, separators are the spaces and line breaks that followed them. Blank
        lines give no sentence (their line breaks stay in the previous separator).
    """
    text = text.strip()
    if not text:
        return []
    if not _MAYBE_MULTI.search(text):
        return [(text, "")]
    iso = (iso639_1(lang) if "_" in lang else lang) or "en"
    seg = _segmenter(iso)
    out: list[tuple[str, str]] = []
    for line, brk in re.findall(r"([^\n]*)(\n*)", text):
        if not line and not brk:
            continue
        pieces = seg.segment(line) if line.strip() and _MAYBE_MULTI.search(line) else [line]
        for p in pieces:
            s = p.strip()
            lead = p[:len(p) - len(p.lstrip())]
            if not s:
                if out:
                    out[-1] = (out[-1][0], out[-1][1] + p)
                continue
            if lead and out:
                out[-1] = (out[-1][0], out[-1][1] + lead)
            out.append((s, p[len(lead) + len(s):]))
        if out:
            out[-1] = (out[-1][0], out[-1][1] + brk)
    if out:
        out[-1] = (out[-1][0], out[-1][1].rstrip())
    return out


def _chunk_words(text: str, tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut one over-long sentence between words into pieces of at most ``max_tokens`` content tokens."""
    words = text.split()
    counts = [len(ids) for ids in tokenizer(words, add_special_tokens=False)["input_ids"]] if words else []
    pieces, cur, n = [], [], 0
    for w, c in zip(words, counts):
        if cur and n + c > max_tokens:
            pieces.append(" ".join(cur))
            cur, n = [], 0
        cur.append(w)
        n += c
    if cur:
        pieces.append(" ".join(cur))
    return pieces


def _is_ct2(model: Any) -> bool:
    return bool(getattr(model, "is_ctranslate2", False))


def translate_texts(model: Any, tokenizer: Any, texts: Sequence[str], src_lang: str, tgt_lang: str,
                    num_beams: int = 4, max_new_tokens: int = 128, batch_size: int = 32,
                    max_source_length: int = 256, progress: bool = False, desc: str = "translating", *,
                    max_batch_tokens: Optional[int] = None, length_penalty: float = 1.0,
                    no_repeat_ngram_size: int = 0, split_sentences: bool = False,
                    on_progress: Optional[Callable[[int, int], None]] = None) -> list[str]:
    """Translate ``texts`` (N segments) and return N translations in the input order.

    Args:
        model: a ``transformers`` sequence-to-sequence model (on its device), or a
            :class:`adaptmllm.inference.ct2.CT2Model` (a CTranslate2 export, see :func:`adaptmllm.inference.ct2.load_ct2`).
        tokenizer: its tokenizer; ``src_lang`` is set to ``src_lang``. Generation is forced to start
            with the ``tgt_lang`` code (NLLB/M2M100).
        texts: N segments; empty ones translate to empty strings.
        num_beams: beam size (1: greedy).
        max_new_tokens: longest translation of one sentence in tokens. A translation is also at most
            ``2 * L + 10`` tokens, L being the longest source of its batch in tokens, so that a model
            that never emits ``</s>`` (an untrained baseline) does not run to ``max_new_tokens``.
        batch_size: most segments (sentences when splitting) in one batch.
        max_source_length: longest source in tokens. Longer ones are cut between words into pieces
            (``split_sentences``) or truncated with a logged warning.
        progress: show a tqdm bar (``desc`` its label) over the sentences.
        max_batch_tokens: token budget of a batch, ``segments x longest source (tokens)``; None: only
            ``batch_size`` limits a batch.
        length_penalty: beam search score = log-probability / length ** length_penalty (>1 favours longer).
        no_repeat_ngram_size: forbid repeating any n-gram of this size in a translation (0: off).
        split_sentences: translate multi-sentence segments sentence by sentence
            (:func:`split_into_sentences`) and join them back with the original spaces and line breaks.
        on_progress: called after each batch with (sentences done, sentences in all).

    Returns:
        N translations (str), stripped, in the order of ``texts``.

    Raises:
        ValueError: a bad setting (``num_beams``/``batch_size``/``max_batch_tokens`` below 1...).
    """
    if num_beams < 1 or batch_size < 1 or max_new_tokens < 1 or max_source_length < 3:
        raise ValueError(f"translate_texts: num_beams ({num_beams}), batch_size ({batch_size}) and max_new_tokens "
                         f"({max_new_tokens}) must be >= 1 and max_source_length ({max_source_length}) >= 3")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"translate_texts: max_batch_tokens must be >= 1 (or None), got {max_batch_tokens}")
    from tqdm.auto import tqdm

    out = [""] * len(texts)
    if hasattr(tokenizer, "src_lang"):
        tokenizer.src_lang = src_lang
    # 1. the units to translate: sentences (or whole segments), with where their translation goes
    units: list[str] = []
    owner: list[tuple[int, str]] = []  # (segment index, separator after this unit's translation)
    for i, t in enumerate(texts):
        if not t or not t.strip():
            continue
        pieces = split_into_sentences(t, src_lang) if split_sentences else [(t.strip(), "")]
        for s, sep in pieces:
            units.append(s)
            owner.append((i, sep))
    if not units:
        return out
    ids = tokenizer(units, add_special_tokens=True)["input_ids"]
    limit_content = max_source_length - 2  # room for the language code and </s>
    if any(len(x) > max_source_length for x in ids):
        if split_sentences:
            units2, owner2, ids2 = [], [], []
            for u, o, x in zip(units, owner, ids):
                parts = [u] if len(x) <= max_source_length else _chunk_words(u, tokenizer, limit_content)
                if len(parts) == 1:
                    units2.append(u)
                    owner2.append(o)
                    ids2.append(x)
                    continue
                for k, p in enumerate(parts):
                    units2.append(p)
                    owner2.append((o[0], " " if k < len(parts) - 1 else o[1]))
                ids2 += tokenizer(parts, add_special_tokens=True)["input_ids"]
            units, owner, ids = units2, owner2, ids2
        n_long = sum(len(x) > max_source_length for x in ids)
        if n_long:
            log.warning("%d segment(s) longer than %d tokens were truncated; turn on sentence splitting "
                        "(eval.split_sentences) to translate all of them", n_long, max_source_length)
            ids = [x if len(x) <= max_source_length else x[:max_source_length - 1] + x[-1:] for x in ids]
    # 2. length-sorted batches under the token budget
    batches = token_budget_batches([len(x) for x in ids], max_batch_tokens or 10 ** 12, batch_size)
    # 3. generation
    bos = forced_bos_token_id(tokenizer, tgt_lang)
    gen = _ct2_generate if _is_ct2(model) else _hf_generate
    hyps: list[str] = [""] * len(units)
    settings = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size, bos=bos, tgt_lang=tgt_lang)
    done = 0
    with tqdm(total=len(units), desc=desc, disable=not progress, unit="sent") as bar, _session(model) as ctx:
        for batch in batches:
            for j, text in zip(batch, gen(model, tokenizer, [ids[j] for j in batch], ctx, **settings)):
                hyps[j] = text.strip()
            done += len(batch)
            bar.update(len(batch))
            if on_progress is not None:
                on_progress(done, len(units))
    # 4. back in order, sentences joined with their original separators
    parts: dict[int, list[str]] = {}
    for j, (i, sep) in enumerate(owner):
        parts.setdefault(i, []).append(hyps[j] + sep)
    for i, p in parts.items():
        out[i] = "".join(p).strip()
    return out


class _session:
    """Eval mode, ``torch.inference_mode`` and, on a GPU, bf16/fp16 autocast for a transformers model;
    nothing for CTranslate2. Restores training mode on exit. ``as`` gives the device (or None)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.stack: list[Any] = []

    def __enter__(self) -> Any:
        if _is_ct2(self.model):
            return None
        import torch

        self.was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        self.stack = [torch.inference_mode()]
        if device.type == "cuda" and next(self.model.parameters()).dtype == torch.float32:
            half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.stack.append(torch.autocast("cuda", dtype=half))
        for c in self.stack:
            c.__enter__()
        return device

    def __exit__(self, *exc: Any) -> None:
        for c in reversed(self.stack):
            c.__exit__(*exc)
        if not _is_ct2(self.model):
            self.model.train(self.was_training)


def _limit(batch_ids: list[list[int]], max_new_tokens: int) -> int:
    return length_cap(max(len(x) for x in batch_ids), max_new_tokens)


def _hf_generate(model: Any, tokenizer: Any, batch_ids: list[list[int]], device: Any, *, num_beams: int,
                 max_new_tokens: int, length_penalty: float, no_repeat_ngram_size: int, bos: Optional[int],
                 tgt_lang: str) -> list[str]:
    enc = tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt").to(device)
    kw: dict[str, Any] = dict(num_beams=num_beams, max_new_tokens=_limit(batch_ids, max_new_tokens), max_length=None)
    if num_beams > 1:
        kw["length_penalty"] = length_penalty
    if no_repeat_ngram_size:
        kw["no_repeat_ngram_size"] = no_repeat_ngram_size
    if bos is not None:
        kw["forced_bos_token_id"] = bos
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def _ct2_generate(model: Any, tokenizer: Any, batch_ids: list[list[int]], _: Any, *, num_beams: int,
                  max_new_tokens: int, length_penalty: float, no_repeat_ngram_size: int, bos: Optional[int],
                  tgt_lang: str) -> list[str]:
    tokens = [tokenizer.convert_ids_to_tokens(x) for x in batch_ids]
    # transformers counts the language code in max_new_tokens; CTranslate2's max_decoding_length too
    res = model.translator.translate_batch(
        tokens, target_prefix=[[tgt_lang]] * len(tokens) if bos is not None else None, beam_size=num_beams,
        length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
        max_decoding_length=_limit(batch_ids, max_new_tokens))
    return [tokenizer.decode(tokenizer.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True)
            for r in res]


def eval_kwargs(config: Any) -> dict:
    """:func:`translate_texts` keyword arguments from a :class:`adaptmllm.config.Config`'s ``eval`` section
    (beam size, lengths, batching, penalties, sentence splitting) and ``model.max_source_length``."""
    e = config.eval
    return dict(num_beams=e.num_beams, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size,
                max_source_length=config.model.max_source_length, max_batch_tokens=e.max_batch_tokens,
                length_penalty=e.length_penalty, no_repeat_ngram_size=e.no_repeat_ngram_size,
                split_sentences=e.split_sentences)


def generation_settings(config: Any) -> dict:
    """The ``GenerationConfig`` attributes of ``config.eval``'s decoding, as :func:`translate_texts` uses it:
    ``num_beams``, ``max_new_tokens`` (tokens, the language code included) with ``max_length`` None, and
    ``length_penalty`` (beam search only) / ``no_repeat_ngram_size`` (when set).

    The one decoding of a run: dev scoring for checkpoint selection (:func:`adaptmllm.training.train.fine_tune`)
    and the test set use it, and the saved model's ``generation_config.json`` holds it, so a plain
    ``model.generate(**inputs)`` decodes as adaptmllm's test did."""
    e = config.eval
    out: dict = {"num_beams": e.num_beams, "max_new_tokens": e.max_new_tokens, "max_length": None}
    if e.num_beams > 1:
        out["length_penalty"] = e.length_penalty
    if e.no_repeat_ngram_size:
        out["no_repeat_ngram_size"] = e.no_repeat_ngram_size
    return out


def engine_model(model: Any, tokenizer: Any, config: Any) -> Any:
    """The model to generate with under ``config.eval.engine``: ``model`` itself for ``transformers``
    (or when it already is a CTranslate2 model), else ``model`` converted with CTranslate2 at
    ``config.eval.ct2_quantization`` (:func:`adaptmllm.inference.ct2.to_ctranslate2`; raises its CT2Error)."""
    if config.eval.engine != "ctranslate2" or _is_ct2(model):
        return model

    return to_ctranslate2(model, tokenizer, config.eval.ct2_quantization)


def strip_line_ends(lines: Iterable[str]) -> list[str]:
    """The lines with their line endings (``\\r``, ``\\n``) stripped, from an iterable of lines (file or stdin);
    nothing is read (a file's lines: :func:`adaptmllm.evaluation.scoring.read_run_lines`)."""
    return [line.rstrip("\r\n") for line in lines]
