"""Parameter-efficient fine-tuning: LoRA and QLoRA through PEFT, freezing, merge-and-save.

- :func:`adapt_model` applies ``model.freeze`` (full fine-tuning of part of the model) or
  ``model.lora`` (LoRA adapters on ``q_proj k_proj v_proj out_proj fc1 fc2`` by default, Hu et al.
  2021, "LoRA: Low-Rank Adaptation of Large Language Models") to a loaded model.
- :func:`model_load_kwargs` gives ``from_pretrained`` what LoRA/QLoRA need: a bf16 base under LoRA
  on a bf16 GPU, a 4-bit NF4 base with double quantization under QLoRA (Dettmers et al. 2023,
  "QLoRA: Efficient Finetuning of Quantized LLMs"; bitsandbytes, CUDA only).
- :func:`save_plain_model` writes the kept model as a plain checkpoint: LoRA adapters are merged
  into the base weights (a QLoRA run merges into a 16-bit reload of the base), so ``model/`` loads
  with ``AutoModelForSeq2SeqLM.from_pretrained`` alone, without PEFT or bitsandbytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config, FreezeConfig, LoraConfig
from adaptmllm.hardware import resolve_precision
from adaptmllm.modeling.model import ModelError

__all__ = ["model_load_kwargs", "check_qlora_available", "freeze_layers", "lora_model", "adapt_model",
           "is_peft_model", "trainable_parameters", "merged_model", "save_plain_model"]

log = logging.getLogger(__name__)


def check_qlora_available() -> None:
    """Check that QLoRA can run here.

    Raises:
        adaptmllm.modeling.model.ModelError: no CUDA GPU (bitsandbytes' 4-bit kernels need one), or
            bitsandbytes is not installed; the message names ``model.lora.load_in_4bit`` and the fix.
    """
    import torch

    if not torch.cuda.is_available():
        raise ModelError("model.lora.load_in_4bit: QLoRA loads the base model in 4 bits with bitsandbytes, which "
                         "needs a CUDA GPU; none was found. On this machine use LoRA without 4-bit "
                         "(model.lora.load_in_4bit=false) or full fine-tuning.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ModelError("model.lora.load_in_4bit: QLoRA needs bitsandbytes: pip install bitsandbytes "
                         "(or pip install 'adaptmllm[gpu]')") from e


def model_load_kwargs(config: Config) -> dict:
    """Extra ``from_pretrained`` arguments for ``config.model.lora``.

    LoRA on a GPU with bf16: the frozen base in bf16 (half the memory; the adapters stay fp32).
    QLoRA: ``quantization_config`` (NF4, double quantization, bf16 compute) and this rank's GPU as
    ``device_map``. Otherwise nothing.

    Raises:
        adaptmllm.modeling.model.ModelError: QLoRA where it cannot run (see :func:`check_qlora_available`).
    """
    lora = config.model.lora
    if not lora.enabled:
        return {}
    import torch

    precision = resolve_precision(config.train.precision)
    if lora.load_in_4bit:
        check_qlora_available()
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if precision == "bf16" else torch.float16
        return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_use_double_quant=True,
                                                          bnb_4bit_compute_dtype=compute),
                "dtype": compute, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0") or 0)}}
    if precision == "bf16":
        return {"dtype": torch.bfloat16}
    return {}


def _stacks(model: Any) -> tuple[Any, Any]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_encoder(), base.get_decoder()


def freeze_layers(model: Any, freeze: FreezeConfig) -> int:
    """Freeze parts of an encoder-decoder model in place; returns the number of frozen parameters.

    ``embeddings``: the shared token embeddings (tied with the output projection). ``encoder``: the
    encoder's layers and final layer norm. ``train_top_layers=N``: all but the top N layers of the
    encoder and of the decoder. Tied parameters are counted once.

    Raises:
        ValueError: the model has no ``get_encoder``/``get_decoder`` (not an encoder-decoder).
    """
    if not freeze.active:
        return 0
    if not hasattr(model, "get_encoder"):
        raise ValueError(f"model.freeze: {type(model).__name__} is not an encoder-decoder model")
    enc, dec = _stacks(model)
    frozen: dict[int, Any] = {}

    def off(module: Any) -> None:
        for p in module.parameters():
            p.requires_grad_(False)
            frozen[id(p)] = p

    if freeze.embeddings:
        off(model.get_input_embeddings())
    if freeze.encoder:
        for layer in enc.layers:
            off(layer)
        if getattr(enc, "layer_norm", None) is not None:
            off(enc.layer_norm)
    if freeze.train_top_layers:
        n = freeze.train_top_layers
        for stack in (enc, dec):
            for layer in list(stack.layers)[: max(0, len(stack.layers) - n)]:
                off(layer)
    return sum(p.numel() for p in frozen.values())


def lora_model(model: Any, lora: LoraConfig) -> Any:
    """Wrap ``model`` in PEFT LoRA adapters (``PeftModelForSeq2SeqLM``); the base weights are frozen.

    A 4-bit (QLoRA) base is first prepared with ``peft.prepare_model_for_kbit_training`` (layer norms
    in fp32, input gradients on).

    Raises:
        ValueError: none of ``lora.target_modules`` exists in the model (PEFT's message).
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = PeftLoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=list(lora.target_modules), bias="none")
    return get_peft_model(model, cfg)


def trainable_parameters(model: Any) -> tuple[int, int]:
    """``(trainable, total)`` distinct parameters of ``model`` (4-bit weights counted as stored elements x 2)."""
    seen = {id(p): p for p in model.parameters()}.values()

    def count(p: Any) -> int:
        return p.numel() * 2 if p.__class__.__name__ == "Params4bit" else p.numel()

    return sum(count(p) for p in seen if p.requires_grad), sum(count(p) for p in seen)


def adapt_model(model: Any, config: Config) -> Any:
    """Apply ``config.model.lora`` (returns the PEFT model) or ``config.model.freeze`` (in place) and log
    the trainable share; with neither, ``model`` is returned untouched."""
    m = config.model
    if m.lora.enabled:
        model = lora_model(model, m.lora)
    elif m.freeze.active:
        freeze_layers(model, m.freeze)
    else:
        return model
    trainable, total = trainable_parameters(model)
    log.info("trainable parameters: %s of %s (%.2f%%)%s", f"{trainable:,}", f"{total:,}", 100 * trainable / max(1, total),
             f" (LoRA r={m.lora.r}{', 4-bit base' if m.lora.load_in_4bit else ''})" if m.lora.enabled else " (frozen layers)")
    return model


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a PEFT wrapper (LoRA adapters)."""
    return getattr(model, "peft_config", None) is not None and hasattr(model, "merge_and_unload")


def merged_model(model: Any, base_name_or_path: Optional[str] = None) -> Any:
    """A plain ``transformers`` model with the LoRA adapters merged into the weights (W + B A alpha/r).

    A model without adapters is returned as it is. A 4-bit (QLoRA) base is not merged in place (that
    would requantize the merged weights): the adapters are saved, the base is reloaded in 16 bits from
    ``base_name_or_path`` (default: the path PEFT recorded) and merged there. Note that merging a
    non-quantized base modifies ``model``'s base in place.

    Raises:
        ValueError: a 4-bit base whose original checkpoint path is unknown.
    """
    if not is_peft_model(model):
        return model
    base = model.get_base_model()
    if not getattr(base, "is_loaded_in_4bit", False):
        return model.merge_and_unload()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    path = base_name_or_path or next(iter(model.peft_config.values())).base_model_name_or_path
    if not path:
        raise ValueError("cannot merge QLoRA adapters: the base model's path is unknown; pass base_name_or_path")
    with tempfile.TemporaryDirectory(prefix="adaptmllm-adapter-") as tmp:
        model.save_pretrained(tmp)
        full = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(full, tmp).merge_and_unload()
    merged.generation_config = base.generation_config
    return merged


def save_plain_model(model: Any, folder: str | os.PathLike, base_name_or_path: Optional[str] = None) -> Path:
    """Save ``model`` with ``save_pretrained`` as a plain checkpoint (LoRA merged, see :func:`merged_model`).
    Returns the folder."""
    folder = Path(folder)
    merged_model(model, base_name_or_path).save_pretrained(folder)
    return folder
