"""The playground's translation worker: one model per engine, requests batched from a queue, a limit on waiting
requests.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from adaptmllm.inference.ct2 import is_ct2_model, load_ct2
from adaptmllm.inference.translate import translate_texts
from adaptmllm.modeling.model import load_pretrained

__all__ = ["Engine"]

# -- the model behind the app ---------------------------------------------------------------------------
@dataclass
class _Request:
    texts: list[str]
    key: tuple
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Engine:
    """One loaded translation model shared by every user of a server.

    A single worker thread owns the model and its tokenizer (which are not thread-safe): requests
    from many users are queued, and those waiting together with the same settings (languages, beam
    size, maximum length) are translated in one batch of at most ``max_batch_segments`` segments.

    Args:
        model, tokenizer: a loaded ``transformers`` sequence-to-sequence model and its tokenizer.
        name: shown in the page (``fine-tuned``, ``baseline``).
        max_batch_segments: segments per model batch.
        batch_wait_s: seconds the worker waits for more requests to fill a batch.
        max_source_length: longest source sentence in tokens (longer ones are cut between words when
            splitting sentences, else truncated).
        options: further :func:`adaptmllm.inference.translate.translate_texts` keywords (``max_batch_tokens``,
            ``split_sentences``, ``length_penalty``, ``no_repeat_ngram_size``).
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "model", max_batch_segments: int = 32,
                 batch_wait_s: float = 0.005, max_source_length: int = 256, **options: Any) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.options = options
        self.max_batch_segments = max(1, int(max_batch_segments))
        self.batch_wait_s = max(0.0, float(batch_wait_s))
        self.max_source_length = max_source_length
        self.batches = 0
        self._q: "queue.Queue[Optional[_Request]]" = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"adaptmllm-engine-{name}", daemon=True)
        self._thread.start()

    @classmethod
    def from_path(cls, name_or_path: str | os.PathLike, src_lang: str, tgt_lang: str, name: str = "model",
                  **kwargs: Any) -> "Engine":
        """Load a model folder (or hub name) once, on the GPU when there is one (bf16 where supported).
        A CTranslate2 export (``adaptmllm export``) is loaded with CTranslate2.

        Raises:
            adaptmllm.modeling.model.ModelError: the folder is incomplete, the hub cannot be reached, or the
                tokenizer lacks a language code (adaptmllm.inference.ct2.CT2Error: ctranslate2 is not installed).
        """
        if is_ct2_model(name_or_path):
            ct2_model, tokenizer = load_ct2(name_or_path, src_lang, tgt_lang)
            return cls(ct2_model, tokenizer, name=name, **kwargs)
        import torch

        model, tokenizer = load_pretrained(str(name_or_path), src_lang, tgt_lang)
        if torch.cuda.is_available():
            model = model.to("cuda")
            if torch.cuda.is_bf16_supported():
                model = model.to(torch.bfloat16)
        model.eval()
        return cls(model, tokenizer, name=name, **kwargs)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch, n, stop = [first], len(first.texts), False
            deadline = time.monotonic() + self.batch_wait_s
            while n < self.max_batch_segments:
                try:
                    left = deadline - time.monotonic()
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                n += len(nxt.texts)
            groups: dict[tuple, list[_Request]] = {}
            for r in batch:
                if r.future.set_running_or_notify_cancel():
                    groups.setdefault(r.key, []).append(r)
            for (src, tgt, beams, max_new), reqs in groups.items():
                texts = [t for r in reqs for t in r.texts]
                try:
                    out = translate_texts(self.model, self.tokenizer, texts, src, tgt, num_beams=beams,
                                          max_new_tokens=max_new, batch_size=self.max_batch_segments,
                                          max_source_length=self.max_source_length, **self.options)
                    self.batches += 1
                except BaseException as e:  # handed to the waiting requests
                    for r in reqs:
                        r.future.set_exception(e)
                    continue
                i = 0
                for r in reqs:
                    r.future.set_result(out[i:i + len(r.texts)])
                    i += len(r.texts)
            if stop:
                return

    def translate(self, texts: Sequence[str], src_lang: str, tgt_lang: str, num_beams: int = 4,
                  max_new_tokens: int = 128, timeout: Optional[float] = None) -> list[str]:
        """Translate N segments (blocking; thread-safe); returns N translations in order.

        Raises:
            concurrent.futures.TimeoutError: no result within ``timeout`` seconds.
            RuntimeError: the engine is closed.
            Exception: whatever generation raised.
        """
        if not self._thread.is_alive():
            raise RuntimeError(f"the {self.name} engine is closed")
        texts = list(texts)
        if not texts:
            return []
        req = _Request(texts, (src_lang, tgt_lang, int(num_beams), int(max_new_tokens)))
        self._q.put(req)
        try:
            return req.future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            req.future.cancel()
            raise

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker thread after the requests already queued."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout)
