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
from typing import Any, Optional, Sequence

from adaptmllm.config import TrainConfig
from adaptmllm.hardware import (ensure_distributed_env, no_deepspeed_env, resolve_optim, resolve_precision,
                                tf32_supported, world_size)
from adaptmllm.metrics.corpus import score
from adaptmllm.modeling.model import forced_bos_token_id, length_cap, set_generation_config
from adaptmllm.training.deepspeed import apply_plan_to_model, trainer_class
from adaptmllm.training.memory_plan import plan_training
from adaptmllm.training.resilience import (TrainingOutOfMemoryError, find_resume_checkpoint, halve_batch,
                                           is_out_of_memory, oom_in_evaluation, oom_plan, resilient_trainer_class,
                                           save_every_steps)

__all__ = ["TrainResult", "tokenize_pairs", "training_args", "fine_tune", "last_checkpoint", "make_collator",
    "tokenize_directions", "cpu_distributed_args"]

log = logging.getLogger(__name__)

_GREATER_IS_BETTER = {"chrf": True, "bleu": True, "ter": False}
_LR_SCHEDULER_TYPES = {"linear": "linear", "inverse_sqrt": "inverse_sqrt", "cosine": "cosine",
                       "constant": "constant_with_warmup"}  # train.lr_scheduler -> transformers' name


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
        memory_plan: the memory plan used (:meth:`adaptmllm.training.memory_plan.ZeroPlan.to_dict`).
        auto_batch: out-of-memory retries of ``train.auto_batch``, in order (dicts with the batch
            settings that ran out of memory, ``at_step``, ``in_evaluation``, ``error``, ``resumed_from``).
        batch: the batch settings training finished with (``per_device_train_batch_size``,
            ``gradient_accumulation_steps``, ``per_device_eval_batch_size``) and ``world_size``, the
            data-parallel ranks (global batch = the product of the first two and the world size).
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
    auto_batch: list = field(default_factory=list)
    batch: dict = field(default_factory=dict)


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


def cpu_distributed_args() -> dict:
    """``{"use_cpu": True, "ddp_backend": "gloo"}`` for a multi-process launch (``WORLD_SIZE`` > 1 from
    torchrun or the DeepSpeed launcher) on a machine without CUDA, else ``{}``.

    Without ``use_cpu`` accelerate gives every CPU process of such a launch a world size of 1
    (``PartialState`` only finds a distributed backend for accelerators), so each process trains
    alone on all the data, and DeepSpeed's batch check fails (``train_batch_size`` 8 != 8 x 1 x 2).
    With it, accelerate initialises a gloo process group of all the ranks; a DeepSpeed config still
    gives a DeepSpeed engine (the Trainer's ``Accelerator`` is not told ``cpu``), which reuses that
    group (DeepSpeed's CPU accelerator; gloo where oneCCL is absent). Tested with 2 processes:
    tests/test_distributed.py.
    """
    import torch

    if world_size() > 1 and not torch.cuda.is_available():
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {}


def training_args(tc: TrainConfig, output_dir: str | os.PathLike, evaluate: bool = True,
                  steps_per_epoch: int = 0, progress: bool = True, generation_max_length: Optional[int] = 128,
                  plan: Any = None, generation_num_beams: Optional[int] = 1) -> Any:
    """The one adapter from :class:`TrainConfig` to ``Seq2SeqTrainingArguments``.

    With ``evaluate``, the dev set is scored (generated output: beam ``generation_num_beams``, at most
    ``generation_max_length`` tokens; None for either: the model's ``generation_config`` decides) every
    ``tc.eval_every_epochs`` epochs, a checkpoint is saved at each evaluation, and the best one by ``tc.metric_for_best_model``
    is loaded at the end. ``steps_per_epoch`` (optimizer steps) is needed when evaluating every k > 1 epochs.
    ``plan`` (:class:`adaptmllm.training.memory_plan.ZeroPlan`) adds its DeepSpeed config and gradient
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
        warmup_steps=tc.warmup_steps if tc.warmup_steps > 0 else float(tc.warmup_ratio),
        label_smoothing_factor=tc.label_smoothing, max_grad_norm=tc.max_grad_norm,
        lr_scheduler_type=_LR_SCHEDULER_TYPES[tc.lr_scheduler], seed=tc.seed, data_seed=tc.seed, logging_steps=tc.logging_steps,
        logging_first_step=True, bf16=precision == "bf16", fp16=precision == "fp16",
        report_to=[] if tc.report_to == "none" else [tc.report_to], disable_tqdm=not progress,
        save_total_limit=tc.save_total_limit,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random", dataloader_num_workers=0, remove_unused_columns=True,
        predict_with_generate=evaluate, generation_max_length=generation_max_length,
        generation_num_beams=generation_num_beams,
        optim=resolve_optim(tc.optim), label_names=["labels"], gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
    )
    if tc.tf32 and tf32_supported():
        kwargs["tf32"] = True
    kwargs.update(cpu_distributed_args())
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
    """The newest complete ``checkpoint-<step>`` folder under ``output_dir`` (one that holds a valid
    trainer state; half-written ones, left by a kill while saving, are skipped), checked for damaged
    files, or None (see :func:`adaptmllm.training.resilience.find_resume_checkpoint`).

    Raises:
        adaptmllm.training.resilience.CheckpointError: that checkpoint has a truncated or missing file.
    """
    return find_resume_checkpoint(output_dir)


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


def tokenize_directions(tokenizer: Any, languages: Sequence[tuple[str, str]], src: Sequence[str],
                        tgt: Sequence[str], dirs: Sequence[int], max_source_length: int,
                        max_target_length: int) -> Any:
    """Like :func:`tokenize_pairs` for pairs of several directions: pair i is tokenized with the
    language codes ``languages[dirs[i]]`` (``src_lang``, ``tgt_lang``: source prefixed by its code,
    labels by the target's). Returns one ``datasets.Dataset`` of the N pairs, in their given order."""
    from datasets import concatenate_datasets

    parts, order = [], []
    for k, (s_lang, t_lang) in enumerate(languages):
        idx = [i for i, d in enumerate(dirs) if d == k]
        if not idx:
            continue
        tokenizer.src_lang, tokenizer.tgt_lang = s_lang, t_lang
        parts.append(tokenize_pairs(tokenizer, [src[i] for i in idx], [tgt[i] for i in idx], max_source_length,
                                    max_target_length))
        order += idx
    ds = concatenate_datasets(parts)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return ds.select(inverse)


def _length_capped_trainer(base: type, max_new_tokens: int) -> type:
    """A subclass of Trainer class ``base`` that generates each dev batch with at most
    :func:`adaptmllm.modeling.model.length_cap` new tokens (its longest source, ``max_new_tokens``): the
    length rule of the test's :func:`adaptmllm.inference.translate.translate_texts`."""
    class LengthCappedTrainer(base):
        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            if not gen_kwargs and hasattr(self, "_gen_kwargs"):
                gen_kwargs = self._gen_kwargs.copy()
            if "attention_mask" in inputs and gen_kwargs.get("max_new_tokens") is None:
                longest = int(inputs["attention_mask"].sum(-1).max())
                # as max_length (+1: the decoder start token), so the Trainer's default max_length never clashes
                gen_kwargs["max_length"] = length_cap(longest, max_new_tokens) + 1
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    return LengthCappedTrainer


def _multi_direction_trainer(base: type, dev_sets: dict, select: Optional[str], metric: str) -> type:
    """A subclass of Trainer class ``base`` whose evaluation scores each direction's dev set with the
    forced BOS token of its target (``dev_sets``: name -> (dataset, forced BOS id)) and reports
    ``eval_<name>_<metric>`` per direction plus ``eval_bleu``/``eval_chrf``/``eval_ter``/``eval_loss``:
    the macro average over the directions, or direction ``select``'s scores when given."""

    class MultiDirectionTrainer(base):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            if eval_dataset is not None:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)
            per, merged = {}, {}
            for name, (ds, bos) in dev_sets.items():
                kw = dict(gen_kwargs)
                if bos is not None:
                    kw["forced_bos_token_id"] = bos
                prefix = f"{metric_key_prefix}_{name}"
                m = super().evaluate(ds, ignore_keys, prefix, **kw)
                merged.update(m)
                per[name] = {k[len(prefix) + 1:]: v for k, v in m.items() if k.startswith(prefix + "_")}
            for key in ("loss", "bleu", "chrf", "ter"):
                vals = [p[key] for p in per.values() if key in p]
                if select is not None and key in per[select]:
                    merged[f"{metric_key_prefix}_{key}"] = per[select][key]
                elif vals:
                    merged[f"{metric_key_prefix}_{key}"] = sum(vals) / len(vals)
            merged["epoch"] = self.state.epoch
            self.log({k: v for k, v in merged.items() if k.startswith(metric_key_prefix) and
                      k[len(metric_key_prefix) + 1:] in ("loss", "bleu", "chrf", "ter")})
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, merged)
            return merged

    return MultiDirectionTrainer


def fine_tune(model: Any, tokenizer: Any, tc: TrainConfig, train_src: Sequence[str], train_tgt: Sequence[str],
              dev_src: Sequence[str], dev_tgt: Sequence[str], output_dir: str | os.PathLike, tgt_lang: str,
              max_source_length: int = 128, max_target_length: int = 128, progress: bool = True,
              callbacks: Sequence[Any] = (), score_baseline_dev: bool = True, *,
              languages: Optional[Sequence[tuple[str, str]]] = None, train_dirs: Optional[Sequence[int]] = None,
              dev_dirs: Optional[Sequence[int]] = None, select_direction: Optional[str] = None,
              generation: Optional[dict] = None) -> tuple[Any, TrainResult]:
    """Fine-tune ``model`` on the training pairs, scoring the dev pairs each epoch.

    Checkpoints go to ``output_dir`` (``checkpoint-<step>``; also every ``tc.save_steps`` steps when
    set). With ``tc.resume`` and a checkpoint there, training continues from the newest complete one.
    Returns ``(trainer, result)``; ``trainer.model`` holds the best checkpoint's weights.

    A GPU out-of-memory error becomes :class:`~adaptmllm.training.resilience.TrainingOutOfMemoryError`
    proposing the next plan; with ``tc.auto_batch`` (no DeepSpeed) training is first retried with
    half the batch and twice the accumulation (:func:`adaptmllm.training.resilience.halve_batch`), from the
    last checkpoint or else from the initial weights (kept in CPU memory for this), down to batch 1.

    Several directions (:mod:`adaptmllm.runs.multilingual`): ``languages`` lists ``(src_lang, tgt_lang)``
    per direction, ``train_dirs``/``dev_dirs`` give each training/dev pair's index into it (N and M
    entries). Each pair is tokenized with its own codes (:func:`tokenize_directions`); the dev set of
    each direction is scored with its target's forced BOS token (``eval_<src>-><tgt>_chrf`` ... in the
    history), and the best checkpoint is chosen by the macro average over the directions, or by
    ``select_direction`` (``"eng_Latn->gle_Latn"``). ``tgt_lang`` is then unused.

    ``generation`` (:func:`adaptmllm.inference.translate.generation_settings`: beam size, ``max_new_tokens``,
    penalties) is how the dev set is decoded to pick the best checkpoint: pass the test's decoding, so
    the checkpoint kept is the best one as the test will decode it. It is written into
    ``model.generation_config`` (saved with every checkpoint). None: greedy, at most
    ``max_target_length`` tokens.

    Raises:
        ValueError: empty training or dev set; ``select_direction`` not among the dev directions;
            ``train_dirs``/``dev_dirs`` not of the pairs' lengths.
        adaptmllm.training.resilience.CheckpointError: the checkpoint to resume from is damaged.
        adaptmllm.training.resilience.DiskFullError: no space left to save a checkpoint (the last good one kept).
        adaptmllm.training.resilience.TrainingOutOfMemoryError: out of GPU memory (after any auto-batch retries).
    """
    from transformers import EarlyStoppingCallback, Seq2SeqTrainer

    if not len(train_src) or not len(dev_src):
        raise ValueError("fine-tuning needs at least one training and one dev pair")
    dev_sets: dict = {}
    if languages is not None:
        if len(train_dirs or ()) != len(train_src) or len(dev_dirs or ()) != len(dev_src):
            raise ValueError("train_dirs/dev_dirs must give one direction index per training/dev pair")
        model.generation_config.forced_bos_token_id = None
        for k, (s_lang, t_lang) in enumerate(languages):
            idx = [i for i, d in enumerate(dev_dirs) if d == k][: tc.eval_max_pairs or None]
            if idx:
                tokenizer.src_lang, tokenizer.tgt_lang = s_lang, t_lang
                ds = tokenize_pairs(tokenizer, [dev_src[i] for i in idx], [dev_tgt[i] for i in idx],
                                    max_source_length, max_target_length)
                dev_sets[f"{s_lang}->{t_lang}"] = (ds, forced_bos_token_id(tokenizer, t_lang))
        if select_direction is not None and select_direction not in dev_sets:
            raise ValueError(f"train.select_direction: {select_direction} is not one of the directions "
                             f"({', '.join(dev_sets)})")
        train_ds = tokenize_directions(tokenizer, languages, train_src, train_tgt, train_dirs, max_source_length,
                                       max_target_length)
        dev_ds = next(iter(dev_sets.values()))[0]
        tokenizer.src_lang, tokenizer.tgt_lang = languages[0]
    else:
        bos = forced_bos_token_id(tokenizer, tgt_lang)
        if bos is not None:
            model.generation_config.forced_bos_token_id = bos
        if tc.eval_max_pairs:
            dev_src, dev_tgt = dev_src[: tc.eval_max_pairs], dev_tgt[: tc.eval_max_pairs]
        train_ds = tokenize_pairs(tokenizer, train_src, train_tgt, max_source_length, max_target_length)
        dev_ds = tokenize_pairs(tokenizer, dev_src, dev_tgt, max_source_length, max_target_length)
    model.generation_config.max_length = None
    if generation is not None:
        # beam size and penalties in the model's generation_config; the length cap per batch (test's rule)
        settings = {**generation, "max_new_tokens": None, "max_length": None}
        set_generation_config(model, settings)
    # the dev decoding: the model's generation_config (set just above) or greedy up to max_target_length
    gen_args = (dict(generation_max_length=None, generation_num_beams=None) if generation is not None else
                dict(generation_max_length=max_target_length, generation_num_beams=1))
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
                                           progress=progress, **gen_args)
                plain = (_length_capped_trainer(Seq2SeqTrainer, generation["max_new_tokens"])
                         if generation is not None and generation.get("max_new_tokens") else Seq2SeqTrainer)
                base = plain(model=model, args=plain_args, eval_dataset=dev_ds, processing_class=tokenizer,
                                      data_collator=collator, compute_metrics=compute_metrics).evaluate()
            del plain_args
    args = training_args(tc, output_dir, evaluate=True, steps_per_epoch=steps_per_epoch, progress=progress,
                         plan=plan, **gen_args)
    cbs = list(callbacks)
    if tc.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    if tc.save_steps:  # mid-epoch checkpoints: a kill loses at most save_steps steps

        cbs.append(save_every_steps(tc.save_steps))
    with contextlib.nullcontext() if plan.uses_deepspeed else no_deepspeed_env():
        cls = resilient_trainer_class(trainer_class(plan))  # a full disk while saving: DiskFullError
        if generation is not None and generation.get("max_new_tokens"):
            cls = _length_capped_trainer(cls, generation["max_new_tokens"])
        if dev_sets:
            cls = _multi_direction_trainer(cls, dev_sets, select_direction, tc.metric_for_best_model)
        trainer = cls(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
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
    def rebuild(t: TrainConfig) -> Any:  # the same Trainer with other batch settings (auto-batch retries)
        with no_deepspeed_env():
            return cls(model=model, args=training_args(t, output_dir, evaluate=True, steps_per_epoch=steps_per_epoch,
                                                       progress=progress, plan=plan, **gen_args),
                       train_dataset=train_ds, eval_dataset=dev_ds, processing_class=tokenizer,
                       data_collator=collator, compute_metrics=compute_metrics, callbacks=cbs)

    trainer, out, now, retries = _train_with_oom_retries(trainer, rebuild, resume, tc, plan, model, output_dir)
    state = trainer.state
    result = TrainResult(
        best_checkpoint=state.best_model_checkpoint, best_metric=state.best_metric, metric=tc.metric_for_best_model,
        baseline_dev=baseline_dev, history=history + list(state.log_history), global_step=state.global_step,
        train_runtime_s=float(out.metrics.get("train_runtime", 0.0)), resumed_from=resume,
        memory_plan=plan.to_dict(), auto_batch=retries,
        batch={**{k: getattr(now, k) for k in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                               "per_device_eval_batch_size")}, "world_size": ranks},
    )
    return trainer, result


def _train_with_oom_retries(trainer: Any, rebuild: Any, resume: Optional[str], tc: TrainConfig, plan: Any,
                            model: Any, output_dir: str | os.PathLike) -> tuple[Any, Any, TrainConfig, list]:
    """``trainer.train`` with out-of-memory handling: returns ``(trainer, train output, final TrainConfig,
    retries)``. With ``tc.auto_batch`` (no DeepSpeed) an out-of-memory error is retried with
    :func:`adaptmllm.training.resilience.halve_batch` on a trainer made by ``rebuild(config)``, from the last
    checkpoint or else from the initial weights; otherwise, or at batch 1, it raises
    :class:`adaptmllm.training.resilience.TrainingOutOfMemoryError` with the next plan."""
    retry = tc.auto_batch and not plan.uses_deepspeed
    initial = _snapshot(model) if retry and resume is None else None
    lora = bool(getattr(model, "peft_config", None))
    retries: list[dict] = []
    now = tc
    while True:
        try:
            return trainer, trainer.train(resume_from_checkpoint=resume), now, retries
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            in_eval = oom_in_evaluation(e)
            step, nxt = trainer.state.global_step, halve_batch(now, in_eval) if retry else None
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            del trainer
            _free_memory(model)
            if nxt is None:
                raise TrainingOutOfMemoryError(oom_plan(e, now, plan, lora, retries, in_eval)) from None
            resume = last_checkpoint(output_dir)
            if resume is None and initial is not None:
                _restore(model, initial)
            retries.append({"per_device_train_batch_size": now.per_device_train_batch_size,
                            "gradient_accumulation_steps": now.gradient_accumulation_steps,
                            "per_device_eval_batch_size": now.per_device_eval_batch_size, "at_step": step,
                            "in_evaluation": in_eval, "error": msg, "resumed_from": resume})
            log.warning("out of GPU memory at step %d (%s; train batch %d x accumulation %d, eval batch %d); "
                        "train.auto_batch: retrying with train batch %d x accumulation %d, eval batch %d, from %s",
                        step, "evaluating" if in_eval else "training", now.per_device_train_batch_size,
                        now.gradient_accumulation_steps, now.per_device_eval_batch_size,
                        nxt.per_device_train_batch_size, nxt.gradient_accumulation_steps,
                        nxt.per_device_eval_batch_size, resume or "the initial weights")
            now = nxt
            trainer = rebuild(now)


def _snapshot(model: Any) -> dict:
    """CPU copies of the trainable parameters (what training changes), for an auto-batch restart."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: Any, snapshot: dict) -> None:
    """Put the :func:`_snapshot` weights back into ``model``."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            params[name].copy_(value.to(params[name].device))


def _free_memory(model: Any) -> None:
    """Drop gradients and cached GPU blocks after an out-of-memory error."""
    import gc

    import torch

    model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
