"""Models and tokenizers: NLLB-200 / M2M100 / Marian checkpoints by hub name or local folder, and the
embedded ``tiny`` NLLB-architecture model built offline from a SentencePiece vocabulary.

NLLB conventions (transformers 5.x): the source is ``[src_code] tokens </s>`` (``tokenizer.src_lang``),
the labels ``[tgt_code] tokens </s>`` (``text_target=`` with ``tokenizer.tgt_lang``), and generation
starts with ``decoder_start_token_id`` (``</s>``) followed by the forced BOS token
``tokenizer.convert_tokens_to_ids(tgt_code)``.
"""

from __future__ import annotations
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from adaptmllm.config import TinyModelConfig
from adaptmllm.languages import DEMO_LANGUAGES

__all__ = ["ModelError", "ModelBundle", "language_codes", "build_tokenizer", "build_tiny_model", "load_pretrained",
    "resolve_model", "hub_reachable", "set_languages", "forced_bos_token_id", "cache_dir", "base_licence",
    "length_cap", "set_generation_config"]

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model or tokenizer cannot be loaded or does not fit the language pair; the message says the fix."""


@dataclass
class ModelBundle:
    """A model with its tokenizer, set up for one language pair.

    Attributes:
        model: a ``transformers`` sequence-to-sequence model (``M2M100ForConditionalGeneration`` for NLLB).
        tokenizer: its tokenizer, ``src_lang``/``tgt_lang`` set.
        base_model: what the user asked for (``tiny``, a hub name or a folder); shown in reports.
        licence: licence of the base weights (SPDX-like id, e.g. ``cc-by-nc-4.0``).
        description: one line on where the weights come from.
    """

    model: Any
    tokenizer: Any
    base_model: str
    licence: str
    description: str


def language_codes() -> list[str]:
    """Special tokens of the tiny tokenizer: NLLB's 202 FLORES-200 codes, then the demo languages."""
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    return list(FAIRSEQ_LANGUAGE_CODES) + [c for c in DEMO_LANGUAGES if c not in FAIRSEQ_LANGUAGE_CODES]


def build_tokenizer(folder: str | os.PathLike, texts: Sequence[str], vocab_size: int, src_lang: str,
                    tgt_lang: str, seed: int = 0) -> Any:
    """Train a SentencePiece BPE model on ``texts`` and return an ``NllbTokenizer`` over it.

    The model is saved as ``<folder>/sentencepiece.bpe.model`` (NLLB's file name) and the tokenizer
    gets the FLORES-200 codes as special tokens. If the corpus is too small for ``vocab_size``,
    SentencePiece's own maximum is used instead (logged).

    Raises:
        ModelError: ``texts`` is empty.
    """
    from transformers import NllbTokenizer

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ModelError("cannot train a SentencePiece model on an empty corpus")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(texts, folder / "sentencepiece.bpe", vocab_size)
    (folder / "sentencepiece.bpe.vocab").unlink(missing_ok=True)
    return NllbTokenizer.from_pretrained(str(folder), src_lang=src_lang, tgt_lang=tgt_lang,
                                         extra_special_tokens=language_codes())


def train_sentencepiece(texts: Sequence[str], model_prefix: str | Path, vocab_size: int, **options: Any) -> Path:
    """Train a SentencePiece BPE model on ``texts`` (non-empty lines) into ``<model_prefix>.model``.

    ``options`` override SentencePieceTrainer's arguments (e.g. ``bos_id=-1``). When the corpus is too
    small for ``vocab_size``, SentencePiece's own maximum is used instead (logged). Returns the
    ``.model`` path. Raises RuntimeError (SentencePiece's) for any other training failure.
    """
    import re

    import sentencepiece as spm

    model_prefix = Path(model_prefix)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False,
                                     dir=model_prefix.parent) as fh:
        fh.write("\n".join(texts) + "\n")
        corpus = fh.name
    kwargs = dict(input=corpus, model_prefix=str(model_prefix), model_type="bpe",
                  character_coverage=1.0, input_sentence_size=200_000, shuffle_input_sentence=True,
                  seed_sentencepiece_size=200_000, minloglevel=2, num_threads=2)
    kwargs.update(options)
    try:
        try:
            spm.SentencePieceTrainer.train(vocab_size=vocab_size, **kwargs)
        except RuntimeError as e:  # "Vocabulary size is too high ... Please set it to a value <= N."
            m = re.search(r"<= (\d+)", str(e))
            if not m:
                raise
            log.warning("corpus too small for vocab_size %d; using %s", vocab_size, m.group(1))
            spm.SentencePieceTrainer.train(vocab_size=int(m.group(1)), **kwargs)
    finally:
        os.unlink(corpus)
    return model_prefix.with_name(model_prefix.name + ".model")


def build_tiny_model(tiny: TinyModelConfig, tokenizer: Any, seed: int = 42) -> Any:
    """A freshly initialised NLLB-architecture (``M2M100Config``) model sized by ``tiny``.

    Vocabulary size is ``len(tokenizer)``; special ids follow the tokenizer; LayerDrop is 0.
    """
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(
        vocab_size=len(tokenizer), d_model=tiny.d_model, encoder_layers=tiny.encoder_layers,
        decoder_layers=tiny.decoder_layers, encoder_attention_heads=tiny.attention_heads,
        decoder_attention_heads=tiny.attention_heads, encoder_ffn_dim=tiny.ffn_dim, decoder_ffn_dim=tiny.ffn_dim,
        dropout=tiny.dropout, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
        decoder_layerdrop=0.0, max_position_embeddings=tiny.max_position_embeddings, scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return M2M100ForConditionalGeneration(config)


def set_languages(tokenizer: Any, src_lang: str, tgt_lang: str) -> None:
    """Point the tokenizer at the pair; for tokenizers without language codes (Marian) do nothing.

    Raises:
        ModelError: the tokenizer has language codes but not one of these (with the fix).
    """
    if not hasattr(tokenizer, "src_lang"):
        return
    unk = tokenizer.unk_token_id
    for field, code in (("data.src_lang", src_lang), ("data.tgt_lang", tgt_lang)):
        if tokenizer.convert_tokens_to_ids(code) in (None, unk):
            raise ModelError(f"{field}: the model's tokenizer has no language code {code!r}; pick a language the "
                             "model knows (NLLB-200: a FLORES-200 code such as gle_Latn)")
    tokenizer.src_lang = src_lang
    tokenizer.tgt_lang = tgt_lang


def forced_bos_token_id(tokenizer: Any, tgt_lang: str) -> Optional[int]:
    """Id of the target language code that generation must start with (None for Marian-style models)."""
    if not hasattr(tokenizer, "src_lang"):
        return None
    return tokenizer.convert_tokens_to_ids(tgt_lang)


def base_licence(name_or_path: str) -> str:
    """Licence id of a base model's weights: NLLB-200 weights are CC BY-NC 4.0 (Meta AI, 2022)."""
    n = name_or_path.lower()
    if "nllb" in n:
        return "cc-by-nc-4.0"
    if n == "tiny" or n.startswith("tiny"):
        return "apache-2.0"
    if "m2m100" in n or "opus-mt" in n:
        return "mit" if "m2m100" in n else "cc-by-4.0"
    return "unknown"


HUB_CHECK_TIMEOUT_S = 3.0
"""Seconds :func:`hub_reachable` waits for a TCP connection to the hub before calling it unreachable."""


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_CHECK_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hugging Face hub (``$HF_ENDPOINT``, default huggingface.co:443)
    opens within ``timeout`` seconds: a bounded check, instead of huggingface_hub's minute of retries."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    """A folder, not a hub id: starts with ``/ . ~``, or has a path separator other than the one ``/`` of
    ``owner/name`` (hub ids have exactly one)."""
    seps = {os.sep, os.altsep or os.sep} - {"/"}
    return name.startswith(("/", ".", "~")) or any(s in name for s in seps) or name.count("/") > 1


def resolve_model(name_or_path: str, local_files_only: bool = False, flag: str = "model.name_or_path"
                  ) -> tuple[str, bool]:
    """Check that the model ``name_or_path`` can be loaded, before anything is loaded or written, and
    say how: returns ``(name_or_path, offline)``, with ``~`` expanded for a folder and ``offline``
    True when it must be loaded from local files only (a folder, ``local_files_only``,
    ``HF_HUB_OFFLINE``, or a hub model already in the local cache while the hub is unreachable).

    ``tiny`` is returned as it is. A path (starting with ``/``, ``.`` or ``~``, or holding a path
    separator beyond one ``owner/name`` slash) must be an existing folder with ``config.json``. A hub
    name offline must be in the Hugging Face cache; online, the hub must answer within
    :data:`HUB_CHECK_TIMEOUT_S` seconds (:func:`hub_reachable`), so no minute is spent in retries.

    Raises:
        ModelError: ``"<flag>: no such folder: PATH"``; a folder without ``config.json``; a hub model
            that cannot be fetched (offline and not cached), naming ``hf download NAME --local-dir DIR``.
    """
    name = str(name_or_path)
    if name == "tiny":
        return name, bool(local_files_only)
    path = Path(name).expanduser()
    if path.exists():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json", "model.bin")):
            raise ModelError(f"{flag}: {name} is not a model folder (no config.json in it); give the folder "
                             "written by save_pretrained, e.g. runs/<name>/model")
        return str(path), True
    if _looks_like_path(name):
        raise ModelError(f"{flag}: no such folder: {name}")
    offline = bool(local_files_only) or _truthy_env("HF_HUB_OFFLINE") or _truthy_env("TRANSFORMERS_OFFLINE")
    if not offline and hub_reachable():
        return name, False
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repository id
        cached = None
    if isinstance(cached, str):
        return name, True
    why = ("offline (HF_HUB_OFFLINE or model.local_files_only)" if offline else
           f"the Hugging Face hub ({os.environ.get('HF_ENDPOINT') or 'huggingface.co'}) cannot be reached")
    local = f"./{name.rstrip('/').split('/')[-1]}"
    raise ModelError(f"{flag}: {name!r} is not a local folder, is not in the Hugging Face cache, and {why}. "
                     f"Download it on a machine with network access (hf download {name} --local-dir {local}), "
                     f"copy that folder here and give {flag} {local}"
                     + (", or use model.name_or_path=tiny for the offline demo model" if flag.startswith("model.")
                        else ""))


def load_pretrained(name_or_path: str, src_lang: str, tgt_lang: str, local_files_only: bool = False,
                    model_kwargs: Optional[dict] = None, flag: str = "model.name_or_path") -> tuple[Any, Any]:
    """Load a sequence-to-sequence checkpoint (NLLB-200, M2M100, Marian) and its tokenizer.

    ``name_or_path`` is a local folder (``save_pretrained`` output) or a hub name such as
    ``facebook/nllb-200-distilled-600M``. Returns ``(model, tokenizer)`` with languages set.
    ``model_kwargs`` go to the model's ``from_pretrained`` (e.g. ``dtype``, ``quantization_config``).
    ``flag`` names the setting that gave ``name_or_path`` in error messages (``--model`` for the CLI's
    translate and serve).

    Raises:
        ModelError: see :func:`resolve_model` (checked first, fast); the folder is incomplete, or the
            model cannot be fetched, with the fix.
    """
    name_or_path, offline = resolve_model(name_or_path, local_files_only, flag)  # fast, before the heavy import
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    local = Path(name_or_path).exists()
    try:
        kwargs: dict[str, Any] = {"local_files_only": offline}
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, **kwargs, **(model_kwargs or {}))
    except (OSError, ValueError) as e:
        if local:
            raise ModelError(f"{name_or_path}: not a complete model folder ({e}); it needs config.json, the weights "
                             "(model.safetensors) and the tokenizer files, as written by save_pretrained") from e
        raise ModelError(
            f"{flag}: cannot load {name_or_path!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}). Without network access, download it elsewhere "
            f"(hf download {name_or_path} --local-dir ./{Path(name_or_path).name}), copy that folder here and "
            f"give {flag} that folder" + (", or use model.name_or_path=tiny for the offline demo model"
                                          if flag.startswith("model.") else "")) from e
    set_languages(tokenizer, src_lang, tgt_lang)
    return model, tokenizer


def cache_dir() -> Path:
    """adaptmllm's cache folder: ``$ADAPTMLLM_CACHE`` or ``~/.cache/adaptmllm``."""
    return Path(os.environ.get("ADAPTMLLM_CACHE") or Path.home() / ".cache" / "adaptmllm")


def length_cap(longest_source: int, max_new_tokens: int) -> int:
    """New tokens a batch may generate: ``min(max_new_tokens, 2 * longest_source + 10)`` (tokens; the
    longest source of the batch counted with its language code and ``</s>``). No translation is more
    than twice its source plus 10 tokens: this stops a model that never emits ``</s>`` (an untrained
    baseline) from running to ``max_new_tokens`` on every segment. Test and dev decoding both use it."""
    return min(max_new_tokens, 2 * longest_source + 10)


def set_generation_config(model: Any, settings: dict, forced_bos_token_id: Optional[int] = None) -> Any:
    """Write ``settings`` (:func:`generation_settings`) and, when given, the target language's
    ``forced_bos_token_id`` into ``model.generation_config`` (what ``save_pretrained`` writes to
    ``generation_config.json``). Returns the model."""
    gc = model.generation_config
    for k, v in settings.items():
        setattr(gc, k, v)
    if forced_bos_token_id is not None:
        gc.forced_bos_token_id = forced_bos_token_id
    gc._from_model_config = False  # a config of its own now: saved as given, not re-derived from model.config
    return model
