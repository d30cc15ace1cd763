"""The ``train:`` section (:class:`TrainConfig`, with DeepSpeed ZeRO in :class:`DeepSpeedConfig`) and the
``green:`` section (:class:`GreenConfig`: energy and emissions of fine-tuning).

May import: adaptmllm.config.checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from adaptmllm.config.checks import build_section, check


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METRICS = ("chrf", "bleu", "ter")


ZERO_STAGES = ("auto", "off", "2", "3")
OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "adafactor")
LR_SCHEDULERS = ("linear", "inverse_sqrt", "cosine", "constant")


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO for full fine-tuning of large models (NLLB-200 1.3B/3.3B) on one or several GPUs.
    By default a memory planner picks the fastest plan that fits (see :mod:`adaptmllm.training.deepspeed`)."""

    stage: Union[str, int] = "auto"
    """ZeRO stage: auto (the planner decides from the model size and GPU memory; no DeepSpeed when plain
    training fits or there is no GPU), off, 2 (shard optimizer states and gradients) or 3 (shard parameters too)."""
    offload_optimizer: Optional[bool] = None
    """Keep the optimizer states in CPU memory (slower; frees about 12 bytes per parameter of GPU memory). Empty: the planner decides."""
    offload_params: Optional[bool] = None
    """ZeRO-3 only: keep the parameters in CPU memory too (slowest; for the tightest GPUs). Empty: the planner decides."""
    gpu_memory_gib: Optional[float] = None
    """GPU memory per device (GiB) that the planner plans for. Empty: read from the GPU (torch.cuda)."""
    cpu_memory_gib: Optional[float] = None
    """Host memory (GiB) available for CPU offload. Empty: the machine's total RAM."""
    num_gpus: int = 0
    """GPUs (data-parallel ranks) of the run in all. 0: the launcher's WORLD_SIZE, else 1."""
    config_file: Optional[str] = None
    """A DeepSpeed JSON config of your own, used instead of the planner's ("auto" values are filled from train.*)."""

    def __post_init__(self) -> None:
        self.stage = str(self.stage).strip().lower()
        check(self.stage in ZERO_STAGES, "train.deepspeed.stage", f"{self.stage!r} is not one of {ZERO_STAGES}")
        check(not (self.offload_params and self.stage == "2"), "train.deepspeed.offload_params",
               "parameter offload needs ZeRO stage 3: set train.deepspeed.stage=3 (or auto)")
        check(not ((self.offload_optimizer or self.offload_params) and self.stage == "off"),
               "train.deepspeed.stage", "CPU offload needs DeepSpeed: set stage to auto, 2 or 3")
        check(self.gpu_memory_gib is None or self.gpu_memory_gib > 0, "train.deepspeed.gpu_memory_gib",
               "must be > 0 (GiB), e.g. 80, or empty to read it from the GPU")
        check(self.cpu_memory_gib is None or self.cpu_memory_gib > 0, "train.deepspeed.cpu_memory_gib",
               "must be > 0 (GiB), or empty for the machine's RAM")
        check(self.num_gpus >= 0, "train.deepspeed.num_gpus", "must be >= 0 (0: from the launcher)")
        if self.config_file is not None and not str(self.config_file).strip():
            self.config_file = None
        check(self.config_file is None or Path(self.config_file).is_file(), "train.deepspeed.config_file",
               f"{self.config_file}: no such file; give a DeepSpeed JSON config or leave it empty for the planner")


@dataclass
class TrainConfig:
    """Fine-tuning hyperparameters (passed to ``Seq2SeqTrainingArguments``)."""

    learning_rate: float = 5e-4
    """Peak learning rate of AdamW."""
    num_train_epochs: float = 8.0
    """Epochs over the training set."""
    per_device_train_batch_size: int = 32
    """Sentence pairs per device per step."""
    per_device_eval_batch_size: int = 64
    """Sentence pairs per device per generation batch during evaluation."""
    gradient_accumulation_steps: int = 1
    """Steps whose gradients are summed before each optimizer update."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.05
    """Share of the training steps with a linear learning-rate warm-up (unused when warmup_steps > 0)."""
    warmup_steps: int = 0
    """Optimizer steps of linear learning-rate warm-up; when > 0 it replaces warmup_ratio (a warm-up that
    does not grow with the number of epochs, as models trained from scratch want: a few hundred steps)."""
    lr_scheduler: str = "linear"
    """Learning rate after the warm-up: linear (down to 0 at the last step), inverse_sqrt (peak x
    sqrt(warm-up steps / step), the Transformer's schedule: independent of the run's length, so a longer
    run keeps the same start), cosine (down to 0 along a half cosine) or constant."""
    label_smoothing: float = 0.1
    """Label smoothing factor of the cross-entropy loss."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    group_by_length: bool = True
    """Batch sentences of similar length together (less padding, faster; order still shuffled)."""
    precision: str = "auto"
    """auto, fp32, bf16 or fp16. ``auto``: bf16 on a GPU that supports it, else fp32 (NLLB overflows in fp16)."""
    metric_for_best_model: str = "chrf"
    """Dev metric that picks the best checkpoint: chrf (chrF++), bleu or ter."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without improvement (0: off)."""
    eval_every_epochs: int = 1
    """Evaluate on the dev set (BLEU, chrF++ from generated output) every this many epochs."""
    eval_max_pairs: int = 200
    """Dev pairs used by the per-epoch evaluation (0: all)."""
    save_total_limit: int = 2
    """Checkpoints kept on disk (the best is always kept)."""
    logging_steps: int = 10
    """Log the training loss every this many steps."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: use ``num_train_epochs``)."""
    select_direction: Optional[str] = None
    """With several data.directions: the direction whose dev score picks the best checkpoint
    (eng_Latn->gle_Latn). Empty: the macro average over the directions."""
    seed: int = 42
    """Seed of model initialisation, data order and dropout."""
    resume: bool = False
    """Resume from the last checkpoint in the run folder (after a crash or kill)."""
    save_steps: int = 0
    """Also save a checkpoint every this many optimizer steps (0: only at each evaluation), so that a run
    killed mid-epoch resumes close to where it stopped. Old checkpoints still go by save_total_limit."""
    auto_batch: bool = False
    """On a GPU out-of-memory error, retry with half the per-device batch and twice the gradient
    accumulation (the same effective batch), down to batch 1; each retry is recorded in metrics.json."""
    report_to: str = "none"
    """Experiment tracking through the Trainer: none, tensorboard or mlflow."""
    gradient_checkpointing: Optional[bool] = None
    """Recompute activations in the backward pass (about 30% slower, far less memory). Empty: on only
    when the memory planner needs it to fit the GPU."""
    tf32: bool = True
    """Allow TF32 matmuls for fp32 work on Ampere or newer GPUs (ignored elsewhere)."""
    optim: str = "auto"
    """Optimizer: auto (AdamW with torch's fused kernel), adamw_torch (AdamW, multi-tensor), adamw_torch_fused
    or adafactor. DeepSpeed CPU offload always uses DeepSpeed's CPU Adam."""
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    """DeepSpeed ZeRO (stage 2/3, CPU offload) chosen by the memory planner or by hand."""

    def __post_init__(self) -> None:
        if isinstance(self.deepspeed, dict):
            self.deepspeed = build_section(DeepSpeedConfig, self.deepspeed, "train.deepspeed")
        if self.select_direction is not None and not str(self.select_direction).strip():
            self.select_direction = None
        check(self.select_direction is None or "->" in str(self.select_direction), "train.select_direction",
               f"{self.select_direction!r} is not a direction such as eng_Latn->gle_Latn (empty: macro average)")
        check(self.optim in OPTIMIZERS, "train.optim", f"{self.optim!r} is not one of {OPTIMIZERS}")
        check(self.learning_rate > 0, "train.learning_rate", "must be > 0, e.g. 5e-5")
        check(self.learning_rate < 1, "train.learning_rate", f"{self.learning_rate} is far too large; try 1e-5 to 1e-3")
        check(self.num_train_epochs > 0, "train.num_train_epochs", "must be > 0")
        check(self.per_device_train_batch_size >= 1, "train.per_device_train_batch_size", "must be >= 1")
        check(self.per_device_eval_batch_size >= 1, "train.per_device_eval_batch_size", "must be >= 1")
        check(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be >= 1")
        check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        check(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "must be in [0, 1)")
        check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0 (0: use train.warmup_ratio)")
        check(self.lr_scheduler in LR_SCHEDULERS, "train.lr_scheduler",
               f"{self.lr_scheduler!r} is not one of {LR_SCHEDULERS}")
        check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        check(self.precision in PRECISIONS, "train.precision", f"{self.precision!r} is not one of {PRECISIONS}")
        check(self.metric_for_best_model in METRICS, "train.metric_for_best_model",
               f"{self.metric_for_best_model!r} is not one of {METRICS}")
        check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0 (0 turns it off)")
        check(self.eval_every_epochs >= 1, "train.eval_every_epochs", "must be >= 1")
        check(self.eval_max_pairs >= 0, "train.eval_max_pairs", "must be >= 0 (0 means all)")
        check(self.save_total_limit >= 1, "train.save_total_limit", "must be >= 1")
        check(self.logging_steps >= 1, "train.logging_steps", "must be >= 1")
        check(self.save_steps >= 0, "train.save_steps", "must be >= 0 (0: save only at each evaluation)")
        check(self.report_to in ("none", "tensorboard", "mlflow"), "train.report_to",
               f"{self.report_to!r} is not one of none, tensorboard, mlflow")


@dataclass
class GreenConfig:
    """Energy and emissions tracking of fine-tuning (CodeCarbon, offline)."""

    enabled: bool = True
    """Track energy and emissions with CodeCarbon's OfflineEmissionsTracker."""
    country_iso_code: str = "IRL"
    """ISO 3166-1 alpha-3 code of the country whose grid carbon intensity is used (IRL, DEU, USA, ...)."""
    measure_power_secs: float = 5.0
    """Seconds between power readings."""
    flush_secs: float = 60.0
    """Seconds between writes of the energy so far to ``green/emissions.csv``: a process killed mid-run
    loses at most this much of its energy figure, and the resumed run's report adds what it wrote."""

    def __post_init__(self) -> None:
        check(len(self.country_iso_code) == 3 and self.country_iso_code.isalpha(), "green.country_iso_code",
               f"{self.country_iso_code!r} is not an ISO 3166-1 alpha-3 code such as IRL")
        self.country_iso_code = self.country_iso_code.upper()
        check(self.measure_power_secs > 0, "green.measure_power_secs", "must be > 0")
        check(self.flush_secs > 0, "green.flush_secs", "must be > 0 (seconds between writes of emissions.csv)")
