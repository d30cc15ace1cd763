"""The model a run trains: the pretrained model or the tiny one (the demo base), set up for the run's languages,
with LoRA/QLoRA or layer freezing applied; the multilingual model with new languages and an extended
vocabulary; a checkpoint loaded as the run built it (LoRA adapters merged onto the base).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from adaptmllm.config import Config
from adaptmllm.data.directions import MultiData
from adaptmllm.hardware import on_device
from adaptmllm.modeling.lora import adapt_model, model_load_kwargs
from adaptmllm.modeling.model import (ModelBundle, ModelError, base_licence, build_tiny_model, build_tokenizer,
                                      load_pretrained, set_languages)
from adaptmllm.modeling.vocabulary import add_languages, check_language_codes, extend_vocabulary, tokenizer_coverage
from adaptmllm.training.demo_base import demo_base

__all__ = ["prepare_model"]


def prepare_model(config: Config, train_texts: Sequence[str] = (), tokenizer_dir: str | os.PathLike | None = None,
                  progress: bool = True, reuse_tokenizer: bool = False) -> ModelBundle:
    """The model to fine-tune, set up for ``config.data``'s language pair, with ``model.lora`` (LoRA
    adapters, a bf16 or 4-bit QLoRA base) or ``model.freeze`` applied (:mod:`adaptmllm.modeling.lora`).

    Which model: see :func:`prepare_base_model`.

    Raises:
        ModelError: see :func:`load_pretrained` and :func:`set_languages`; QLoRA without a CUDA GPU
            or bitsandbytes (before anything is loaded), or QLoRA of the tiny model trained from scratch.
    """
    kwargs = model_load_kwargs(config)
    bundle = prepare_base_model(config, train_texts, tokenizer_dir, progress, reuse_tokenizer, kwargs)
    bundle.model = adapt_model(bundle.model, config)
    return bundle


def prepare_base_model(config: Config, train_texts: Sequence[str] = (),
                        tokenizer_dir: str | os.PathLike | None = None, progress: bool = True,
                        reuse_tokenizer: bool = False, model_kwargs: Optional[dict] = None) -> ModelBundle:
    """The model to fine-tune, set up for ``config.data``'s language pair (before LoRA/freezing).

    - ``model.name_or_path == "tiny"`` with the embedded demo corpus (``data.train`` empty) and
      ``model.tiny.pretrain``: the cached demo base (:func:`demo_base`), which translates a little.
    - ``tiny`` otherwise: a from-scratch model over a SentencePiece vocabulary trained on
      ``train_texts`` (both sides), saved under ``tokenizer_dir`` (reused from there with
      ``reuse_tokenizer``, e.g. on resume, so the vocabulary matches the checkpoints).
    - anything else: :func:`load_pretrained`.

    Raises:
        ModelError: see :func:`load_pretrained` and :func:`set_languages`.
    """
    d, m = config.data, config.model
    if m.name_or_path == "tiny":
        if d.train is None and m.tiny.pretrain:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            folder = demo_base(m.tiny, progress=progress)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForSeq2SeqLM.from_pretrained(folder, **(model_kwargs or {}))
            set_languages(tokenizer, d.src_lang, d.tgt_lang)
            return ModelBundle(model, tokenizer, "tiny", base_licence("tiny"),
                               "adaptmllm's tiny multilingual demo base, pretrained on general-domain artificial pairs")
        if tokenizer_dir is None:
            tokenizer_dir = tempfile.mkdtemp(prefix="adaptmllm-spm-")
        saved = Path(tokenizer_dir) / "tokenizer.json"
        if reuse_tokenizer and saved.is_file():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            set_languages(tokenizer, d.src_lang, d.tgt_lang)
        else:
            tokenizer = build_tokenizer(tokenizer_dir, list(train_texts), m.tiny.vocab_size, d.src_lang, d.tgt_lang,
                                        seed=config.train.seed)
            tokenizer.save_pretrained(tokenizer_dir)
        model = build_tiny_model(m.tiny, tokenizer, seed=config.train.seed)
        if model_kwargs and "quantization_config" in model_kwargs:
            raise ModelError("model.lora.load_in_4bit: QLoRA needs a saved checkpoint to load in 4 bits; the tiny "
                             "model trained from scratch has none (use plain LoRA, or a pretrained model)")
        if model_kwargs and model_kwargs.get("dtype") is not None:
            model = model.to(model_kwargs["dtype"])
        return ModelBundle(model, tokenizer, "tiny", base_licence("tiny"),
                           "adaptmllm's tiny NLLB-architecture model, trained from scratch on this corpus")
    model, tokenizer = load_pretrained(m.name_or_path, d.src_lang, d.tgt_lang, m.local_files_only, model_kwargs)
    return ModelBundle(model, tokenizer, m.name_or_path, base_licence(m.name_or_path), f"pretrained {m.name_or_path}")


def load_checkpoint_model(folder: str | os.PathLike, config: Optional[Config] = None,
                run_dir: Optional[str | os.PathLike] = None) -> Any:
    """A checkpoint as a plain model on the GPU when there is one. A LoRA checkpoint (PEFT adapters
    only, ``adapter_config.json``) is loaded onto the run's base model (``config``, its tokenizer in
    ``run_dir/tokenizer``) and merged."""
    from transformers import AutoModelForSeq2SeqLM

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        return on_device(AutoModelForSeq2SeqLM.from_pretrained(str(folder)))
    from peft import PeftModel


    if config is None or run_dir is None:
        raise ModelError(f"{folder} holds LoRA adapters: the run's config and folder are needed to load its base")
    base = prepare_base_model(config, tokenizer_dir=Path(run_dir) / "tokenizer", progress=False,
                               reuse_tokenizer=True).model
    return on_device(PeftModel.from_pretrained(base, str(folder)).merge_and_unload())


# ------------------------------------------------------------------------------------ the run

def with_pair(config: Any, src_lang: str, tgt_lang: str, train: Any = "keep") -> Any:
    """A copy of ``config`` whose data.src_lang/tgt_lang (and, if given, data.train) are replaced."""
    kw = {"src_lang": src_lang, "tgt_lang": tgt_lang}
    if train != "keep":
        kw["train"] = train
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **kw))


def _model_config(config: Any, multi: MultiData) -> Any:
    """The config :func:`adaptmllm.training.setup.prepare_model` gets: a language pair the base model knows
    (new languages are added afterwards) and a training corpus when any direction has one (so the tiny
    model is built on it rather than the demo base)."""
    new = {n["code"] for n in config.data.new_languages}
    known = [c for pair in multi.languages for c in pair if c not in new]
    known = list(dict.fromkeys(known + ["eng_Latn", "fra_Latn"]))
    train = next((d["train"] for d in config.data.directions if d.get("train")), None)
    return with_pair(config, known[0], known[1], train)


def build_model(config: Any, multi: MultiData, tok_dir: Path, progress: bool = True, reuse_tokenizer: bool = False,
                vocab_dir: Optional[Path] = None) -> tuple[Any, dict]:
    """The base model of a multilingual run, set up: :func:`adaptmllm.training.setup.prepare_model`, then
    ``data.new_languages`` (:func:`add_languages`) and ``data.extend_vocab`` (:func:`extend_vocabulary`),
    then every direction's codes checked (:func:`check_language_codes`).

    Returns ``(bundle, tokenizer_report)`` where the report holds the coverage ``before`` and (with
    vocabulary extension) ``after``, ``extension`` and ``new_languages`` ({code: id}).

    Raises:
        adaptmllm.modeling.model.ModelError: a direction's code unknown to the model, naming the field and the fix.
    """

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
