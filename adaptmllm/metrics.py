"""Corpus scores of translations with sacrebleu: BLEU, chrF++ and TER, with their signatures.

sacrebleu is called directly (never ``evaluate.load``, which needs the hub), so scoring works
offline and the numbers equal those of the ``sacrebleu`` command line on the same files.
Scores are on sacrebleu's 0-100 scale and kept at full precision; reports round them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .io import atomic_write_text

__all__ = ["score", "sentence_chrf", "write_hypotheses", "DOWNLOADING_TOKENIZERS"]

DOWNLOADING_TOKENIZERS = ("flores101", "flores200", "spm", "spBLEU-1K")
"""sacrebleu BLEU tokenizers that download a SentencePiece model on first use: refused here."""


def _check_pair(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: "
                         "every hypothesis needs exactly one reference")
    if not hypotheses:
        raise ValueError("no hypotheses to score: the test set is empty")


def score(hypotheses: list[str], references: list[str], bleu_tokenize: str = "13a") -> dict:
    """Score ``hypotheses`` against one reference each with BLEU, chrF++ (chrF, word order 2) and TER.

    Returns ``{"bleu", "chrf", "ter", "signatures": {"bleu", "chrf", "ter"}, "n_segments"}``: the
    scores are floats on sacrebleu's 0-100 scale (TER: lower is better), the signatures are
    sacrebleu's strings (tokenizer, smoothing, version...) that make the scores reproducible.
    Empty hypothesis strings are allowed (they score 0).

    Raises:
        ValueError: the two lists differ in length (both lengths are given), they are empty, or
            ``bleu_tokenize`` is unknown or one of the spBLEU tokenizers (they download a model).
    """
    from sacrebleu.metrics import BLEU, CHRF, TER

    _check_pair(hypotheses, references)
    if bleu_tokenize in DOWNLOADING_TOKENIZERS:
        raise ValueError(f"BLEU tokenizer {bleu_tokenize!r} downloads a SentencePiece model, which "
                         "adaptmllm does not do (it works offline); use 13a, intl, char, zh or none")
    if bleu_tokenize not in BLEU.TOKENIZERS:
        known = ", ".join(t for t in BLEU.TOKENIZERS if t not in DOWNLOADING_TOKENIZERS)
        raise ValueError(f"unknown BLEU tokenizer {bleu_tokenize!r}; known: {known}")
    hyps, refs = [str(h) for h in hypotheses], [[str(r) for r in references]]
    metrics = {"bleu": BLEU(tokenize=bleu_tokenize), "chrf": CHRF(word_order=2), "ter": TER()}
    out: dict = {name: float(m.corpus_score(hyps, refs).score) for name, m in metrics.items()}
    out["signatures"] = {name: str(m.get_signature()) for name, m in metrics.items()}
    out["n_segments"] = len(hyps)
    return out


def sentence_chrf(hyps: list[str], refs: list[str]) -> list[float]:
    """chrF++ (0-100) of each hypothesis against its reference, in order.

    Raises:
        ValueError: the lists differ in length or are empty.
    """
    from sacrebleu.metrics import CHRF

    _check_pair(hyps, refs)
    chrf = CHRF(word_order=2)
    return [float(chrf.sentence_score(str(h), [str(r)]).score) for h, r in zip(hyps, refs)]


def write_hypotheses(path: str | os.PathLike, hyps: list[str]) -> Path:
    """Write one hypothesis per line (UTF-8), atomically; line breaks inside a hypothesis become
    spaces so that line ``i`` is always segment ``i``. Returns the path. Raises ``OSError``."""
    return atomic_write_text(path, "".join(" ".join(str(h).splitlines()) + "\n" for h in hyps))
