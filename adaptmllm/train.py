"""Fine-tuning: config -> ``Seq2SeqTrainingArguments`` (the one adapter) -> ``Seq2SeqTrainer``.

Reads top to bottom: tokenize -> arguments -> trainer (dev BLEU/chrF++ from generated output each
epoch, checkpoints, best checkpoint by the chosen metric, optional early stopping) -> fit (resuming
from the last checkpoint on request) -> history (JSON + PNG).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import TrainConfig

__all__ = ["TrainResult", "tokenize_pairs", "training_args", "fine_tune", "resolve_precision", "resolve_optim",
           "tf32_supported", "last_checkpoint", "make_collator"]

log = logging.getLogger(__name__)

_GREATER_IS_BETTER = {"chrf": True, "bleu": True, "ter": False}


@dataclass
class TrainResult:
    """What fine-tuning produced.

    Attributes:
        best_checkpoint: folder of the checkpoint with the best dev metric (None if never evaluated).
        best_metric: its dev score (``metric`` units: BLEU/chrF++/TER points, 0-100).
        metric: the dev metric used (``chrf``, ``bleu`` or ``ter``).
        baseline_dev: the dev score of the model before fine-tuning (None when not evaluated).
        history: the Trainer's ``log_history`` (dicts with ``step``, ``epoch`` and ``loss`` or ``eval_*``).
        global_step: optimizer steps done.
        train_runtime_s: seconds spent in ``trainer.train`` (this process).
        resumed_from: checkpoint folder the run resumed from, if any.
        memory_plan: the memory plan used (:meth:`adaptmllm.deepspeed.ZeroPlan.to_dict`).
    """

    best_checkpoint: Optional[str]
    best_metric: Optional[float]
    metric: str
    baseline_dev: Optional[float]
    history: list = field(default_factory=list)
    global_step: int = 0
    train_runtime_s: float = 0.0
    resumed_from: Optional[str] = None
    memory_plan: Optional[dict] = None


def tokenize_pairs(tokenizer: Any, src: Sequence[str], tgt: Sequence[str], max_source_length: int,
                   max_target_length: int) -> Any:
    """A ``datasets.Dataset`` of N pairs with ``input_ids``, ``attention_mask`` and ``labels`` (lists of ids).

    The tokenizer's current ``src_lang``/``tgt_lang`` decide the language codes; longer segments are
    truncated to the given token counts.
    """
    from datasets import Dataset

    enc = tokenizer(list(src), text_target=list(tgt), max_length=max_source_length, truncation=True)
    if max_target_length != max_source_length:
        enc["labels"] = tokenizer(text_target=list(tgt), max_length=max_target_length, truncation=True)["input_ids"]
    return Dataset.from_dict({k: enc[k] for k in ("input_ids", "attention_mask", "labels")})


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA GPU that supports it, else ``fp32``; others unchanged.

    ``fp16`` is allowed but warned about: NLLB can overflow in fp16.
    """
    import torch

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        log.warning("train.precision=%s needs a GPU; using fp32 on this CPU", precision)
        return "fp32"
    if precision == "fp16":
        log.warning("train.precision=fp16: NLLB can overflow in fp16; prefer bf16 on Ampere or newer GPUs")
    return precision


def resolve_optim(optim: str) -> str:
    """``auto`` -> ``adamw_torch_fused`` (AdamW with torch's fused kernel, CPU and CUDA); others unchanged."""
    return "adamw_torch_fused" if optim == "auto" else optim


def tf32_supported() -> bool:
    """Whether this machine has a CUDA GPU with TF32 matmuls (Ampere, compute capability 8.0, or newer)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def training_args(tc: TrainConfig, output_dir: str | os.PathLike, evaluate: bool = True,
                  steps_per_epoch: int = 0, progress: bool = True, generation_max_length: int = 128,
                  plan: Any = None) -> Any:
    """The one adapter from :class:`TrainConfig` to ``Seq2SeqTrainingArguments``.

    With ``evaluate``, the dev set is scored (generated output, greedy) every ``tc.eval_every_epochs``
    epochs, a checkpoint is saved at each evaluation, and the best one by ``tc.metric_for_best_model``
    is loaded at the end. ``steps_per_epoch`` (optimizer steps) is needed when evaluating every k > 1 epochs.
    ``plan`` (:class:`adaptmllm.deepspeed.ZeroPlan`) adds its DeepSpeed config and gradient
    checkpointing; without one, ``tc.gradient_checkpointing`` decides (empty: off).
    """
    from transformers import Seq2SeqTrainingArguments

    precision = resolve_precision(tc.precision)
    checkpointing = plan.gradient_checkpointing if plan is not None else bool(tc.gradient_checkpointing)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), learning_rate=tc.learning_rate, num_train_epochs=tc.num_train_epochs,
        max_steps=tc.max_steps, per_device_train_batch_size=tc.per_device_train_batch_size,
        per_device_eval_batch_size=tc.per_device_eval_batch_size,
        gradient_accumulation_steps=tc.gradient_accumulation_steps, weight_decay=tc.weight_decay,
        warmup_steps=float(tc.warmup_ratio), label_smoothing_factor=tc.label_smoothing, max_grad_norm=tc.max_grad_norm,
        lr_scheduler_type="linear", seed=tc.seed, data_seed=tc.seed, logging_steps=tc.logging_steps,
        logging_first_step=True, bf16=precision == "bf16", fp16=precision == "fp16",
        report_to=[] if tc.report_to == "none" else [tc.report_to], disable_tqdm=not progress,
        save_total_limit=tc.save_total_limit,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random", dataloader_num_workers=0, remove_unused_columns=True,
        predict_with_generate=evaluate, generation_max_length=generation_max_length, generation_num_beams=1,
        optim=resolve_optim(tc.optim), label_names=["labels"], gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
    )
    if tc.tf32 and tf32_supported():
        kwargs["tf32"] = True
    if plan is not None and plan.uses_deepspeed:
        kwargs["deepspeed"] = plan.deepspeed_config()
    if evaluate:
        if tc.eval_every_epochs == 1 or steps_per_epoch <= 0:
            strategy: dict[str, Any] = dict(eval_strategy="epoch", save_strategy="epoch")
        else:
            every = steps_per_epoch * tc.eval_every_epochs
            strategy = dict(eval_strategy="steps", save_strategy="steps", eval_steps=every, save_steps=every)
        kwargs.update(strategy, load_best_model_at_end=True, metric_for_best_model=tc.metric_for_best_model,
                      greater_is_better=_GREATER_IS_BETTER[tc.metric_for_best_model])
    else:
        kwargs.update(eval_strategy="no", save_strategy="no")
    return Seq2SeqTrainingArguments(**kwargs)


def last_checkpoint(output_dir: str | os.PathLike) -> Optional[str]:
    """The newest ``checkpoint-<step>`` folder under ``output_dir`` that holds a trainer state, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    ckpt = get_last_checkpoint(str(output_dir))
    if ckpt and not (Path(ckpt) / "trainer_state.json").is_file():
        return None
    return ckpt


def make_collator(tokenizer: Any, model: Any) -> Any:
    """``DataCollatorForSeq2Seq`` that always adds ``decoder_input_ids`` (labels shifted right).

    transformers 5.x's M2M100/NLLB model lacks ``prepare_decoder_input_ids_from_labels``, so the
    stock collator leaves them out, and with label smoothing (the Trainer pops ``labels``) the
    decoder then gets no input at all. Padding uses -100 for labels.
    """
    from transformers import DataCollatorForSeq2Seq

    class _Collator(DataCollatorForSeq2Seq):
        def __call__(self, features, return_tensors=None):
            batch = super().__call__(features, return_tensors)
            if "labels" in batch and "decoder_input_ids" not in batch:
                labels = batch["labels"].clone()
                cfg = model.config
                labels[labels == -100] = cfg.pad_token_id
                start = cfg.decoder_start_token_id
                dec = labels.new_full(labels.shape, cfg.pad_token_id)
                dec[:, 1:] = labels[:, :-1]
                dec[:, 0] = start
                batch["decoder_input_ids"] = dec
            return batch

    return _Collator(tokenizer, model=model, label_pad_token_id=-100)


def _compute_metrics_fn(tokenizer: Any):
    import numpy as np

    from .metrics import score

    def compute(eval_pred) -> dict:
        preds, labels = eval_pred
        if isinstance(preds, tuple):
            preds = preds[0]
        preds = np.where(preds < 0, tokenizer.pad_token_id, preds)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        s = score(hyps, refs)
        return {"bleu": s["bleu"], "chrf": s["chrf"], "ter": s["ter"]}

    return compute


def fine_tune(model: Any, tokenizer: Any, tc: TrainConfig, train_src: Sequence[str], train_tgt: Sequence[str],
              dev_src: Sequence[str], dev_tgt: Sequence[str], output_dir: str | os.PathLike, tgt_lang: str,
              max_source_length: int = 128, max_target_length: int = 128, progress: bool = True,
              callbacks: Sequence[Any] = (), score_baseline_dev: bool = True) -> tuple[Any, TrainResult]:
    """Fine-tune ``model`` on the training pairs, scoring the dev pairs each epoch.

    Checkpoints go to ``output_dir`` (``checkpoint-<step>``). With ``tc.resume`` and a checkpoint
    there, training continues from the newest one. Returns ``(trainer, result)``; ``trainer.model``
    holds the best checkpoint's weights.

    Raises:
        ValueError: empty training or dev set.
    """
    from transformers import EarlyStoppingCallback, Seq2SeqTrainer

    from .deepspeed import (apply_plan_to_model, ensure_distributed_env, no_deepspeed_env, plan_training,
                            trainer_class, world_size)
    from .model import forced_bos_token_id

    if not len(train_src) or not len(dev_src):
        raise ValueError("fine-tuning needs at least one training and one dev pair")
    bos = forced_bos_token_id(tokenizer, tgt_lang)
    if bos is not None:
        model.generation_config.forced_bos_token_id = bos
    model.generation_config.max_length = None
    if tc.eval_max_pairs:
        dev_src, dev_tgt = dev_src[: tc.eval_max_pairs], dev_tgt[: tc.eval_max_pairs]
    train_ds = tokenize_pairs(tokenizer, train_src, train_tgt, max_source_length, max_target_length)
    dev_ds = tokenize_pairs(tokenizer, dev_src, dev_tgt, max_source_length, max_target_length)
    ranks = world_size()
    steps_per_epoch = max(1, -(-len(train_ds) // (tc.per_device_train_batch_size * tc.gradient_accumulation_steps
                                                  * ranks)))
    # Memory plan (DeepSpeed ZeRO stage, offload, gradient checkpointing) from the longest sequences.
    plan = plan_training(model, tc, max(map(len, train_ds["input_ids"])), max(map(len, train_ds["labels"])))
    apply_plan_to_model(model, plan)
    collator, compute_metrics = make_collator(tokenizer, model), _compute_metrics_fn(tokenizer)
    base = None
    if plan.uses_deepspeed:
        ensure_distributed_env()
        if score_baseline_dev:
            # DeepSpeed builds its engine in train(), and ZeRO-2 cannot evaluate before that: score the
            # untouched model with a plain Trainer first (before DeepSpeed's arguments exist).
            with no_deepspeed_env():
                plain_args = training_args(tc, output_dir, evaluate=True, steps_per_epoch=steps_per_epoch,
                                           progress=progress, generation_max_length=max_target_length)
                base = Seq2SeqTrainer(model=model, args=plain_args, eval_dataset=dev_ds, processing_class=tokenizer,
                                      data_collator=collator, compute_metrics=compute_metrics).evaluate()
            del plain_args
    args = training_args(tc, output_dir, evaluate=True, steps_per_epoch=steps_per_epoch, progress=progress,
                         generation_max_length=max_target_length, plan=plan)
    cbs = list(callbacks)
    if tc.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    with contextlib.nullcontext() if plan.uses_deepspeed else no_deepspeed_env():
        trainer = trainer_class(plan)(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                                      processing_class=tokenizer, data_collator=collator,
                                      compute_metrics=compute_metrics, callbacks=cbs)
    resume = last_checkpoint(output_dir) if tc.resume else None
    if tc.resume and resume is None:
        log.warning("train.resume: no checkpoint in %s yet; starting from the beginning", output_dir)
    baseline_dev, history = None, []
    if score_baseline_dev:
        # The untouched model's dev score: epoch 0 of the curves, and the bar fine-tuning must clear.
        base = base if base is not None else trainer.evaluate()
        baseline_dev = base[f"eval_{tc.metric_for_best_model}"]
        history.append({**base, "epoch": 0.0, "step": 0})
    out = trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    result = TrainResult(
        best_checkpoint=state.best_model_checkpoint, best_metric=state.best_metric, metric=tc.metric_for_best_model,
        baseline_dev=baseline_dev, history=history + list(state.log_history), global_step=state.global_step,
        train_runtime_s=float(out.metrics.get("train_runtime", 0.0)), resumed_from=resume,
        memory_plan=plan.to_dict(),
    )
    return trainer, result
