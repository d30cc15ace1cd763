"""Batched translation with any loaded model: segments sorted by length, batched, order restored."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

__all__ = ["translate_texts", "length_sorted_batches"]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest first, to cut padding.

    ``lengths`` are per-segment sizes (characters or tokens). Every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def translate_texts(model: Any, tokenizer: Any, texts: Sequence[str], src_lang: str, tgt_lang: str,
                    num_beams: int = 4, max_new_tokens: int = 128, batch_size: int = 32,
                    max_source_length: int = 256, progress: bool = False, desc: str = "translating") -> list[str]:
    """Translate ``texts`` (N segments) and return N translations in the input order.

    The tokenizer's ``src_lang`` is set to ``src_lang``; generation is forced to start with the
    ``tgt_lang`` code (NLLB/M2M100). A translation is at most ``min(max_new_tokens, 2 * L + 10)``
    tokens, L being the longest source of its batch in tokens. Runs under ``torch.inference_mode`` on the model's device.
    Empty segments translate to empty strings.
    """
    import torch
    from tqdm.auto import tqdm

    from .model import forced_bos_token_id

    out = [""] * len(texts)
    todo = [i for i, t in enumerate(texts) if t.strip()]
    if not todo:
        return out
    if hasattr(tokenizer, "src_lang"):
        tokenizer.src_lang = src_lang
    bos = forced_bos_token_id(tokenizer, tgt_lang)
    batches = length_sorted_batches([len(texts[i]) for i in todo], batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
                idx = [todo[j] for j in batch]
                enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                max_length=max_source_length).to(device)
                # No translation is more than twice its source plus 10 tokens: this stops a model that
                # never emits </s> (an untrained baseline) from running to max_new_tokens on every segment.
                longest = int(enc["attention_mask"].sum(dim=1).max())
                limit = min(max_new_tokens, 2 * longest + 10)
                gen_kwargs: dict[str, Any] = dict(num_beams=num_beams, max_new_tokens=limit, max_length=None)
                if bos is not None:
                    gen_kwargs["forced_bos_token_id"] = bos
                ids = model.generate(**enc, **gen_kwargs)
                for i, text in zip(idx, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                    out[i] = text.strip()
    finally:
        model.train(was_training)
    return out


def read_lines(lines: Iterable[str]) -> list[str]:
    """Strip line endings from an iterable of lines (file or stdin)."""
    return [line.rstrip("\r\n") for line in lines]
