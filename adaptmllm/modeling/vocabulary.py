"""New languages for a model: FLORES-200 code checks, language tokens added to the tokenizer and model, tokenizer
coverage of a corpus, and vocabulary extension with SentencePiece pieces trained on the new language.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path
from typing import Any, Sequence

from adaptmllm.modeling.model import ModelError, train_sentencepiece

__all__ = ["check_language_codes", "add_languages", "tokenizer_coverage", "extend_vocabulary"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- languages

def check_language_codes(tokenizer: Any, codes: Sequence[tuple[str, str]], new_codes: Sequence[str] = ()) -> None:
    """Check that the tokenizer knows every language code (after :func:`add_languages`).

    ``codes`` are ``(field, code)`` pairs such as ``("data.directions[1].src_lang", "gle_Latn")``;
    ``new_codes`` are the ``data.new_languages`` codes (named in the fix).

    Raises:
        adaptmllm.modeling.model.ModelError: a code the tokenizer lacks, naming the field and the fix
            (``data.new_languages``).
    """
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
        adaptmllm.modeling.model.ModelError: ``init_from`` is not a code of the tokenizer.
    """
    import torch

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
        adaptmllm.modeling.model.ModelError: the tokenizer is not a BPE fast tokenizer (NLLB's is).
    """
    import json

    import sentencepiece as spm
    import torch
    from tokenizers import Tokenizer

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
