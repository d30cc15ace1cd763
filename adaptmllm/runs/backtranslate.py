"""Back-translation: synthetic training pairs from monolingual target-language text.

Low-resource practice (Sennrich et al. 2016, "Improving Neural Machine Translation Models with
Monolingual Data"): translate real target-language sentences *back* into the source language with
a model of the reverse direction (target -> source), and train source -> target on the pairs
(synthetic source, real target). The synthetic sources are tagged (Caswell et al. 2019, "Tagged
Back-Translation": a reserved marker such as ``<BT>`` at the start of each synthetic source) so the
model can tell them from real sources; the target side, which the model learns to produce, is
always human-written.

Output is a TSV whose header names the FLORES-200 codes (``eng_Latn``, ``gle_Latn``) and a
``synthetic`` column (1/0), which :func:`adaptmllm.data.readers.load_pairs` reads as it is: give it as
``data.train``. When mixing into a training corpus, give ``data.dev`` and ``data.test`` explicitly
so that no synthetic pair is split off into them.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from pathlib import Path
from typing import Sequence

from adaptmllm.data.readers import DataError, read_text
from adaptmllm.inference.translate import translate_texts
from adaptmllm.io import atomic_write_text
from adaptmllm.languages import check_code
from adaptmllm.modeling.model import load_pretrained

__all__ = ["DEFAULT_TAG", "back_translate", "write_pairs_tsv", "mix_pairs", "read_monolingual"]

log = logging.getLogger("adaptmllm")

DEFAULT_TAG = "<BT>"
"""Marker put before each synthetic source (Caswell et al. 2019); ``""`` for none."""


def read_monolingual(path: str | os.PathLike) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file of monolingual sentences (one per line).

    Raises:
        adaptmllm.data.readers.DataError: missing file, bad UTF-8, or no sentence in it.
    """
    lines = [ln.strip() for ln in read_text(Path(path)).split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"{path}: no sentences (one sentence a line expected)")
    return lines


def back_translate(targets: Sequence[str], model: str | os.PathLike | tuple, src_lang: str, tgt_lang: str, *,
                   tag: str = DEFAULT_TAG, num_beams: int = 4, max_new_tokens: int = 256, batch_size: int = 32,
                   local_files_only: bool = True, progress: bool = False) -> list[str]:
    """Synthetic sources for the monolingual ``targets``: each translated from ``tgt_lang`` into
    ``src_lang`` (the pair you fine-tune is ``src_lang -> tgt_lang``; ``model`` translates the
    other way: a folder or hub name, or a loaded ``(model, tokenizer)`` pair), prefixed with ``tag``
    and a space when ``tag`` is not empty. Returns one synthetic source per target, in order.

    Raises:
        adaptmllm.languages.LanguageError: an unknown language code.
        adaptmllm.modeling.model.ModelError: the model cannot be loaded (offline: give a local folder).
        ValueError: no targets, or ``tag`` holds a tab or a line break.
    """
    check_code(src_lang, "src_lang")
    check_code(tgt_lang, "tgt_lang")
    if not targets:
        raise ValueError("no target-language sentences to back-translate")
    if any(c in tag for c in "\t\r\n"):
        raise ValueError(f"tag {tag!r}: no tabs or line breaks")
    if isinstance(model, tuple):
        m, tok = model
    else:
        m, tok = load_pretrained(str(model), tgt_lang, src_lang, local_files_only=local_files_only)
    out = translate_texts(m, tok, list(targets), tgt_lang, src_lang, num_beams=num_beams,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
                          desc="back-translating")
    prefix = f"{tag} " if tag else ""
    return [prefix + " ".join(s.split()) for s in out]


def write_pairs_tsv(path: str | os.PathLike, src_lang: str, tgt_lang: str, sources: Sequence[str],
                    targets: Sequence[str], synthetic: Sequence[bool] | bool = True) -> Path:
    """Write pairs as a TSV (header ``<src_lang>``, ``<tgt_lang>``, ``synthetic``; csv quoting where a
    field needs it), atomically, in the form :func:`adaptmllm.data.readers.load_pairs` reads. Returns the path.

    Raises:
        ValueError: the lists differ in length.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    flags = [synthetic] * len(sources) if isinstance(synthetic, bool) else list(synthetic)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow([src_lang, tgt_lang, "synthetic"])
    for s, t, f in zip(sources, targets, flags):
        w.writerow([" ".join(str(s).split()), " ".join(str(t).split()), int(bool(f))])
    return atomic_write_text(path, buf.getvalue())


def mix_pairs(real_src: Sequence[str], real_tgt: Sequence[str], syn_src: Sequence[str], syn_tgt: Sequence[str],
              ratio: float = 1.0, seed: int = 13) -> tuple[list[str], list[str], list[bool], dict]:
    """All real pairs plus ``round(ratio * len(real))`` synthetic ones (a seeded random subset, or
    all of them when there are fewer), shuffled together with ``seed``.

    ``ratio`` is synthetic pairs per real pair (1.0: as many synthetic as real; 0.5: one for every two).
    Returns ``(sources, targets, is_synthetic, stats)``; ``stats`` = ``{"real", "synthetic",
    "synthetic_available", "ratio_asked", "ratio"}`` (the ratio reached can be lower than asked
    when there are too few synthetic pairs, and a warning is logged).

    Raises:
        ValueError: ``ratio`` < 0, no real pairs, or unaligned lists.
    """
    if ratio < 0:
        raise ValueError(f"ratio={ratio}: synthetic pairs per real pair must be >= 0")
    if len(real_src) != len(real_tgt) or len(syn_src) != len(syn_tgt):
        raise ValueError("sources and targets must be aligned (same lengths)")
    if not real_src:
        raise ValueError("no real pairs to mix the synthetic ones into")
    want = round(ratio * len(real_src))
    rng = random.Random(seed)
    take = sorted(rng.sample(range(len(syn_src)), min(want, len(syn_src))))
    if want > len(syn_src):
        log.warning("back-translation: %d synthetic pairs asked (ratio %g) but only %d available; using all",
                    want, ratio, len(syn_src))
    rows = [(s, t, False) for s, t in zip(real_src, real_tgt)] + [(syn_src[i], syn_tgt[i], True) for i in take]
    rng.shuffle(rows)
    stats = {"real": len(real_src), "synthetic": len(take), "synthetic_available": len(syn_src),
             "ratio_asked": ratio, "ratio": len(take) / len(real_src)}
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], stats
