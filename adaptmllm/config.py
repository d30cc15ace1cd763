"""The one typed configuration of adaptmllm.

Nested dataclasses whose attribute docstrings are the single source of help text for the CLI
(jsonargparse reads them), the YAML presets and the notebook forms. Every ``__post_init__``
validates its fields and raises :class:`ConfigError` naming the field (``train.learning_rate``)
and the fix. This module imports nothing heavy (no torch, no transformers).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from adaptmllm.io import atomic_write_text
from adaptmllm.languages import LANGUAGES, LanguageError, check_code

__all__ = ["MODEL_FAMILIES", "PRETRAINED_PRESET", "PRETRAINED_MAX_LR", "model_family", "model_preset",
    "check_model_name", "learning_rate_warning", "ConfigError", "DataConfig", "direction_name", "TinyModelConfig",
    "ModelConfig", "LoraConfig", "FreezeConfig", "TrainConfig", "DeepSpeedConfig", "EvalConfig", "GreenConfig",
    "ServeConfig", "SearchSpaceConfig", "HPOConfig", "HPO_DIMENSIONS", "HPO_SECTIONS", "check_search_dim",
    "check_hpo_model", "check_run_name", "check_storage_url",
    "mask_storage_url", "Config", "load_config", "save_config", "config_from_dict", "config_to_dict", "MQM_PRESETS",
    "mqm_weights"]

__version__ = "0.1.0"
"""The adaptmllm version (reports, model cards, the notebook's environment line)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METRICS = ("chrf", "bleu", "ter")
DATA_FORMATS = ("auto", "text", "tsv", "csv", "jsonl", "hf")
TOO_LONG = ("truncate", "reject")
ENGINES = ("transformers", "ctranslate2")
CT2_QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8", "int8_float16", "int8_bfloat16")


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field (dotted path) and the fix."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


SAMPLINGS = ("proportional", "temperature")
DIRECTION_KEYS = ("src_lang", "tgt_lang", "train", "dev", "test", "src_suffix", "tgt_suffix", "src_column",
                  "tgt_column")
_CODE_RE = r"^[a-z]{3}_[A-Z][a-z]{3}$"


def direction_name(d: dict) -> str:
    """``"eng_Latn->gle_Latn"`` for a direction mapping with ``src_lang`` and ``tgt_lang``."""
    return f"{d['src_lang']}->{d['tgt_lang']}"


def _new_languages(entries: Any) -> list[dict]:
    """``data.new_languages`` as a list of ``{code, init_from}``; raises ConfigError naming the entry."""
    import re

    _check(isinstance(entries, list), "data.new_languages", "must be a list of mappings {code, init_from}")
    out, seen = [], set()
    for i, e in enumerate(entries):
        name = f"data.new_languages[{i}]"
        if isinstance(e, str):
            e = {"code": e}
        _check(isinstance(e, dict), name, "must be a mapping such as {code: xyz_Latn, init_from: gle_Latn}")
        unknown = [k for k in e if k not in ("code", "init_from")]
        _check(not unknown, f"{name}.{unknown[0] if unknown else ''}", "unknown key; give code and init_from")
        code, init = e.get("code"), e.get("init_from") or None
        _check(isinstance(code, str) and re.match(_CODE_RE, code or "") is not None, f"{name}.code",
               f"{code!r} is not a FLORES-style code: three lower-case letters, '_', a script such as Latn (xyz_Latn)")
        _check(code not in LANGUAGES, f"{name}.code", f"{code} is already a known language; remove it from "
               "data.new_languages")
        _check(code not in seen, f"{name}.code", f"{code} is listed twice")
        seen.add(code)
        _check(init is None or init in LANGUAGES or init in seen - {code}, f"{name}.init_from",
               f"{init!r} is not a known language code; give a related language such as gle_Latn, or leave it "
               "empty for the mean of the language codes")
        out.append({"code": code, "init_from": init})
    return out


def _direction(entry: Any, name: str, data: "DataConfig", added: set, need_train: bool = False) -> dict:
    """One ``data.directions`` (or ``data.replay``) entry as a full mapping of :data:`DIRECTION_KEYS`.

    A string ``a->b`` takes data.train/dev/test; when it is data's pair reversed, the suffix and
    column settings are swapped so the same corpus is read the other way round.
    """
    if isinstance(entry, str):
        parts = [p.strip() for p in entry.split("->")]
        _check(len(parts) == 2 and all(parts), name, f"{entry!r} is not a direction; write it as eng_Latn->gle_Latn")
        src, tgt = parts
        d = {"src_lang": src, "tgt_lang": tgt, "train": data.train, "dev": data.dev, "test": data.test}
        same = (src, tgt) == (data.src_lang, data.tgt_lang)
        flip = (src, tgt) == (data.tgt_lang, data.src_lang)
        sides = ("src", "tgt") if not flip else ("tgt", "src")
        for mine, theirs in zip(("src", "tgt"), sides):
            for kind in ("suffix", "column"):
                d[f"{mine}_{kind}"] = getattr(data, f"{theirs}_{kind}") if (same or flip) else None
    elif isinstance(entry, dict):
        unknown = [k for k in entry if k not in DIRECTION_KEYS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], DIRECTION_KEYS, n=2)
            raise ConfigError(f"{name}.{unknown[0]}: unknown key" + (f"; did you mean {', '.join(close)}?" if close
                              else f"; known keys: {', '.join(DIRECTION_KEYS)}"))
        d = {k: entry.get(k) for k in DIRECTION_KEYS}
    else:
        raise ConfigError(f"{name}: expected a string such as eng_Latn->gle_Latn or a mapping {{src_lang, tgt_lang, "
                          f"train, ...}}, got {type(entry).__name__}")
    for side in ("src_lang", "tgt_lang"):
        code = d.get(side)
        if code in added:
            continue
        if not isinstance(code, str) or code not in LANGUAGES:
            try:
                check_code(code, f"{name}.{side}")
            except LanguageError as e:
                raise ConfigError(f"{e}; a language the model does not know goes under data.new_languages "
                                  "({code: xyz_Latn, init_from: <related code>})") from None
    _check(d["src_lang"] != d["tgt_lang"], name, f"source and target are both {d['src_lang']}")
    for k in ("train", "dev", "test"):
        if d[k] is not None and not str(d[k]).strip():
            d[k] = None
    _check(not need_train or bool(d["train"]), f"{name}.train", "give a corpus (or demo)")
    return d


@dataclass
class DataConfig:
    """Where the parallel corpus comes from, which language pair it is, and how it is cleaned."""

    src_lang: str = "eng_Latn"
    """Source language, a FLORES-200 code such as ``eng_Latn``."""
    tgt_lang: str = "qaa_Latn"
    """Target language, a FLORES-200 code such as ``gle_Latn`` (``qaa_Latn``..: the demo's artificial languages)."""
    train: Optional[str] = None
    """Training corpus: a TSV/CSV/JSONL file, a ``datasets`` folder saved to disk, or the prefix of
    aligned plain-text files (``data/train`` for ``data/train.en`` + ``data/train.ga``).
    Empty: the embedded demo corpus made by adaptmllm itself."""
    dev: Optional[str] = None
    """Development corpus (same forms as ``train``). Empty: split off the training corpus."""
    test: Optional[str] = None
    """Test corpus (same forms as ``train``). Empty: split off the training corpus."""
    src_suffix: Optional[str] = None
    """File suffix of the source side of aligned text files (``en``). Empty: the ISO 639-1 code of ``src_lang``."""
    tgt_suffix: Optional[str] = None
    """File suffix of the target side of aligned text files (``ga``). Empty: the ISO 639-1 code of ``tgt_lang``."""
    format: str = "auto"
    """Corpus format: auto, text, tsv, csv, jsonl or hf. ``auto`` decides from the path."""
    src_column: Optional[str] = None
    """Column (TSV/CSV) or key (JSONL ``translation`` dict, HF dataset) of the source side. Empty: ``src_suffix``."""
    tgt_column: Optional[str] = None
    """Column (TSV/CSV) or key (JSONL ``translation`` dict, HF dataset) of the target side. Empty: ``tgt_suffix``."""
    max_chars: int = 1000
    """Cleaning: drop pairs with a side longer than this many characters."""
    max_length_ratio: float = 3.0
    """Cleaning: drop pairs whose longer side has more than this many times the characters of the shorter."""
    too_long: str = "truncate"
    """Segments longer than model.max_source_length / max_target_length tokens: truncate (counted per split in
    data/data_report.json and the report) or reject (stop before training, naming the first such line)."""
    drop_duplicates: bool = True
    """Cleaning: drop repeated (source, target) pairs."""
    drop_identical: bool = True
    """Cleaning: drop pairs whose source equals its target (untranslated copies)."""
    dev_size: int = 200
    """Pairs split off for the dev set when ``dev`` is empty."""
    test_size: int = 200
    """Pairs split off for the test set when ``test`` is empty."""
    dev_percent: float = 0.0
    """Split off this percentage of the cleaned corpus for the dev set instead of ``dev_size`` pairs (adaptMLLM:
    3.2). 0: use ``dev_size``."""
    test_percent: float = 0.0
    """Split off this percentage of the cleaned corpus for the test set instead of ``test_size`` pairs (adaptMLLM:
    1.6). 0: use ``test_size``."""
    max_train_pairs: int = 0
    """Use at most this many training pairs after cleaning (0: all). Handy for a quick trial."""
    demo_train_pairs: int = 1500
    """Size of the embedded demo's in-domain training corpus (pairs)."""
    seed: int = 13
    """Seed of the deterministic dev/test split and of the demo corpus."""
    directions: list = field(default_factory=list)
    """Several translation directions in one model. Each entry is a string ``eng_Latn->gle_Latn`` (uses
    data.train/dev/test; ``gle_Latn->eng_Latn`` reads that same corpus the other way round) or a mapping
    {src_lang, tgt_lang, train, dev, test, src_suffix, tgt_suffix, src_column, tgt_column}. Empty: the one
    direction src_lang -> tgt_lang."""
    sampling: str = "proportional"
    """How training pairs are drawn across directions: proportional (each direction's pairs as they are) or
    temperature (direction i gets a share proportional to n_i^(1/temperature), small directions upsampled)."""
    temperature: float = 5.0
    """Sampling temperature across directions (sampling=temperature): 1 is proportional, larger evens them out."""
    new_languages: list = field(default_factory=list)
    """Language codes the model does not know, each a mapping {code: xyz_Latn, init_from: gle_Latn} (init_from
    empty: the mean of the known language codes' embeddings). Added as special tokens; the embeddings are resized."""
    extend_vocab: int = 0
    """Learn up to this many SentencePiece pieces on the training corpus and add those the tokenizer lacks
    (each new embedding: the mean of its old segmentation's). 0: off."""
    replay: list = field(default_factory=list)
    """General-domain pairs mixed into training against forgetting: mappings {src_lang, tgt_lang, train} (any
    directions; train: a corpus, or ``demo`` for the demo's general-domain pairs English -> demo language)."""
    replay_ratio: float = 0.2
    """Replay pairs drawn (with replacement where needed) per in-domain training pair, when replay is given."""

    def __post_init__(self) -> None:
        self.new_languages = _new_languages(self.new_languages)
        added = {n["code"] for n in self.new_languages}
        if self.src_lang not in added:
            check_code(self.src_lang, "data.src_lang")
        if self.tgt_lang not in added:
            check_code(self.tgt_lang, "data.tgt_lang")
        self.directions = [_direction(e, f"data.directions[{i}]", self, added) for i, e in enumerate(self.directions)]
        names = [direction_name(d) for d in self.directions]
        dup = [n for n in names if names.count(n) > 1]
        _check(not dup, "data.directions", f"{dup[0] if dup else ''} is listed twice; give each direction once")
        _check(self.sampling in SAMPLINGS, "data.sampling", f"{self.sampling!r} is not one of {SAMPLINGS}")
        _check(self.temperature >= 1.0, "data.temperature", "must be >= 1 (1: proportional; 5 is usual)")
        _check(isinstance(self.extend_vocab, int) and self.extend_vocab >= 0, "data.extend_vocab",
               "must be a whole number >= 0 (0: off)")
        _check(isinstance(self.replay, list), "data.replay", "must be a list of mappings {src_lang, tgt_lang, train}")
        self.replay = [_direction(e, f"data.replay[{i}]", self, added, need_train=True)
                       for i, e in enumerate(self.replay)]
        _check(0.0 < self.replay_ratio <= 10.0, "data.replay_ratio", "must be in (0, 10], e.g. 0.2")
        _check(self.src_lang != self.tgt_lang, "data.tgt_lang",
               f"source and target are both {self.src_lang}; pick two different languages")
        _check(self.format in DATA_FORMATS, "data.format", f"{self.format!r} is not one of {DATA_FORMATS}")
        _check(self.max_chars > 0, "data.max_chars", "must be > 0")
        _check(self.max_length_ratio >= 1.0, "data.max_length_ratio", "must be >= 1.0")
        _check(self.too_long in TOO_LONG, "data.too_long", f"{self.too_long!r} is not one of {TOO_LONG}")
        _check(self.dev_size >= 1, "data.dev_size", "must be >= 1")
        _check(self.test_size >= 1, "data.test_size", "must be >= 1")
        _check(0 <= self.dev_percent < 50, "data.dev_percent", "must be in [0, 50) percent, e.g. 3.2 (0: use dev_size)")
        _check(0 <= self.test_percent < 50, "data.test_percent", "must be in [0, 50) percent, e.g. 1.6 (0: use test_size)")

    def split_sizes(self, n: int) -> tuple[int, int]:
        """(dev, test) pairs split off a cleaned corpus of ``n`` pairs: the percentages when given, else the counts."""
        dev = max(1, round(n * self.dev_percent / 100)) if self.dev_percent else self.dev_size
        test = max(1, round(n * self.test_percent / 100)) if self.test_percent else self.test_size
        return dev, test
        _check(self.max_train_pairs >= 0, "data.max_train_pairs", "must be >= 0 (0 means all)")
        _check(self.demo_train_pairs >= 10, "data.demo_train_pairs", "must be >= 10")


@dataclass
class TinyModelConfig:
    """Sizes of the embedded ``tiny`` model: an NLLB-architecture (M2M100) model built from scratch
    with a SentencePiece vocabulary trained on the corpus. Runs offline on a CPU."""

    vocab_size: int = 1000
    """SentencePiece vocabulary size (pieces, before the language codes are added)."""
    d_model: int = 128
    """Hidden size."""
    encoder_layers: int = 2
    """Encoder layers."""
    decoder_layers: int = 2
    """Decoder layers."""
    attention_heads: int = 4
    """Attention heads (encoder and decoder)."""
    ffn_dim: int = 512
    """Feed-forward inner size."""
    dropout: float = 0.1
    """Dropout probability."""
    max_position_embeddings: int = 256
    """Longest sequence in tokens."""
    pretrain: bool = True
    """Demo only: first pretrain a small multilingual base on general-domain artificial data of
    several pairs (cached), so that the baseline translates a little, as NLLB does."""
    pretrain_epochs: int = 6
    """Epochs of that general-domain pretraining."""
    pretrain_pairs: int = 3000
    """General-domain pairs per direction for that pretraining."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "attention_heads",
                     "ffn_dim", "max_position_embeddings", "pretrain_epochs", "pretrain_pairs"):
            _check(getattr(self, name) > 0, f"model.tiny.{name}", "must be > 0")
        _check(self.vocab_size >= 100, "model.tiny.vocab_size", "must be >= 100")
        _check(self.d_model % self.attention_heads == 0, "model.tiny.attention_heads",
               f"d_model {self.d_model} must be divisible by attention_heads {self.attention_heads}")
        _check(0.0 <= self.dropout < 1.0, "model.tiny.dropout", "must be in [0, 1)")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class LoraConfig:
    """Parameter-efficient fine-tuning with LoRA (PEFT): the base model stays frozen and small
    low-rank adapters are trained; the kept model is merged back into a plain checkpoint."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights (fits NLLB-200-3.3B on a 16 GB GPU with gradient checkpointing)."""
    r: int = 16
    """Rank of the LoRA update matrices."""
    alpha: float = 32.0
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA branch's input."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Linear layers that get adapters (module names): attention q_proj k_proj v_proj out_proj, feed-forward fc1 fc2."""
    load_in_4bit: bool = False
    """QLoRA: load the frozen base model in 4-bit NF4 (bitsandbytes, CUDA GPUs only)."""

    def __post_init__(self) -> None:
        _check(self.r >= 1, "model.lora.r", "must be >= 1, e.g. 16")
        _check(self.alpha > 0, "model.lora.alpha", "must be > 0, e.g. 32")
        _check(0.0 <= self.dropout < 1.0, "model.lora.dropout", "must be in [0, 1)")
        if isinstance(self.target_modules, str):
            self.target_modules = self.target_modules.replace(",", " ").split()
        _check(bool(self.target_modules), "model.lora.target_modules",
               f"give at least one module name, e.g. {' '.join(LORA_TARGETS)}")
        _check(not self.load_in_4bit or self.enabled, "model.lora.load_in_4bit",
               "QLoRA trains LoRA adapters on a 4-bit base: set model.lora.enabled=true too")


@dataclass
class FreezeConfig:
    """Freeze parts of the model during full fine-tuning (less memory for optimizer states, less forgetting)."""

    embeddings: bool = False
    """Freeze the shared token embeddings (tied with the output projection, so that is frozen too)."""
    encoder: bool = False
    """Freeze the encoder's layers and final layer norm (the shared embeddings follow ``embeddings``)."""
    train_top_layers: int = 0
    """Train only the top N encoder and top N decoder layers, freezing the layers below (0: train all layers)."""

    def __post_init__(self) -> None:
        _check(self.train_top_layers >= 0, "model.freeze.train_top_layers", "must be >= 0 (0 trains all layers)")

    @property
    def active(self) -> bool:
        """Whether anything is frozen."""
        return self.embeddings or self.encoder or self.train_top_layers > 0


@dataclass
class ModelConfig:
    """Which model is fine-tuned."""

    name_or_path: str = "tiny"
    """``tiny`` (built locally, offline), a hub name such as ``facebook/nllb-200-distilled-600M``,
    or a local folder holding a saved model and tokenizer."""
    max_source_length: int = 128
    """Source segments are truncated to this many tokens."""
    max_target_length: int = 128
    """Target segments are truncated to this many tokens."""
    local_files_only: bool = False
    """Never try the network for hub names (set automatically when ``HF_HUB_OFFLINE=1``)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Sizes of the ``tiny`` model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA / QLoRA adapters instead of full fine-tuning."""
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    """Parts of the model frozen during full fine-tuning."""

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model.name_or_path", "give 'tiny', a hub name or a local folder")
        _check(self.max_source_length > 0, "model.max_source_length", "must be > 0")
        _check(self.max_target_length > 0, "model.max_target_length", "must be > 0")
        if isinstance(self.tiny, dict):
            self.tiny = build_section(TinyModelConfig, self.tiny, "model.tiny")
        if isinstance(self.lora, dict):
            self.lora = build_section(LoraConfig, self.lora, "model.lora")
        if isinstance(self.freeze, dict):
            self.freeze = build_section(FreezeConfig, self.freeze, "model.freeze")
        _check(not (self.lora.enabled and self.freeze.active), "model.freeze",
               "has no effect with model.lora.enabled (LoRA already freezes the whole base model); leave it off")


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
        _check(self.stage in ZERO_STAGES, "train.deepspeed.stage", f"{self.stage!r} is not one of {ZERO_STAGES}")
        _check(not (self.offload_params and self.stage == "2"), "train.deepspeed.offload_params",
               "parameter offload needs ZeRO stage 3: set train.deepspeed.stage=3 (or auto)")
        _check(not ((self.offload_optimizer or self.offload_params) and self.stage == "off"),
               "train.deepspeed.stage", "CPU offload needs DeepSpeed: set stage to auto, 2 or 3")
        _check(self.gpu_memory_gib is None or self.gpu_memory_gib > 0, "train.deepspeed.gpu_memory_gib",
               "must be > 0 (GiB), e.g. 80, or empty to read it from the GPU")
        _check(self.cpu_memory_gib is None or self.cpu_memory_gib > 0, "train.deepspeed.cpu_memory_gib",
               "must be > 0 (GiB), or empty for the machine's RAM")
        _check(self.num_gpus >= 0, "train.deepspeed.num_gpus", "must be >= 0 (0: from the launcher)")
        if self.config_file is not None and not str(self.config_file).strip():
            self.config_file = None
        _check(self.config_file is None or Path(self.config_file).is_file(), "train.deepspeed.config_file",
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
        _check(self.select_direction is None or "->" in str(self.select_direction), "train.select_direction",
               f"{self.select_direction!r} is not a direction such as eng_Latn->gle_Latn (empty: macro average)")
        _check(self.optim in OPTIMIZERS, "train.optim", f"{self.optim!r} is not one of {OPTIMIZERS}")
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0, e.g. 5e-5")
        _check(self.learning_rate < 1, "train.learning_rate", f"{self.learning_rate} is far too large; try 1e-5 to 1e-3")
        _check(self.num_train_epochs > 0, "train.num_train_epochs", "must be > 0")
        _check(self.per_device_train_batch_size >= 1, "train.per_device_train_batch_size", "must be >= 1")
        _check(self.per_device_eval_batch_size >= 1, "train.per_device_eval_batch_size", "must be >= 1")
        _check(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be >= 1")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "must be in [0, 1)")
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0 (0: use train.warmup_ratio)")
        _check(self.lr_scheduler in LR_SCHEDULERS, "train.lr_scheduler",
               f"{self.lr_scheduler!r} is not one of {LR_SCHEDULERS}")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.precision in PRECISIONS, "train.precision", f"{self.precision!r} is not one of {PRECISIONS}")
        _check(self.metric_for_best_model in METRICS, "train.metric_for_best_model",
               f"{self.metric_for_best_model!r} is not one of {METRICS}")
        _check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0 (0 turns it off)")
        _check(self.eval_every_epochs >= 1, "train.eval_every_epochs", "must be >= 1")
        _check(self.eval_max_pairs >= 0, "train.eval_max_pairs", "must be >= 0 (0 means all)")
        _check(self.save_total_limit >= 1, "train.save_total_limit", "must be >= 1")
        _check(self.logging_steps >= 1, "train.logging_steps", "must be >= 1")
        _check(self.save_steps >= 0, "train.save_steps", "must be >= 0 (0: save only at each evaluation)")
        _check(self.report_to in ("none", "tensorboard", "mlflow"), "train.report_to",
               f"{self.report_to!r} is not one of none, tensorboard, mlflow")


@dataclass
class EvalConfig:
    """How the baseline and the fine-tuned model are scored on the test set."""

    num_beams: int = 4
    """Beam size of generation."""
    max_new_tokens: int = 128
    """Longest translation in tokens."""
    batch_size: int = 64
    """Segments per generation batch."""
    bleu_tokenize: str = "13a"
    """sacrebleu BLEU tokenizer (13a, intl, char, zh, ja-mecab, ...)."""
    score_baseline: bool = True
    """Score the untouched baseline on the same test set before fine-tuning."""
    bootstrap_samples: int = 1000
    """Resamples of the paired bootstrap test fine-tuned vs baseline (sacrebleu's --paired-bs; 1000 is its default)."""
    significance_level: float = 0.05
    """p-value below which a difference counts as significant."""
    general_test: Optional[str] = None
    """General-domain test set for the forgetting check (same forms as data.test, e.g. the prefix of
    FLORES-200 devtest as aligned files), scored for baseline and fine-tuned model; ``demo``: the embedded
    demo's held-out general-domain pairs. Empty: no forgetting check."""
    forgetting_threshold: float = 1.0
    """Flag forgetting (in red) when general-domain chrF++ falls by more than this many points."""
    forgetting_tests: list = field(default_factory=list)
    """Held-out test sets of directions NOT trained, scored for baseline and fine-tuned model (forgetting
    check per direction): mappings {src_lang, tgt_lang, test} (test: a corpus, or ``demo`` for the demo's
    general-domain pairs English -> demo language). A chrF++ drop over forgetting_threshold is flagged."""
    score_checkpoints: bool = False
    """Also score each remaining checkpoint (checkpoints/checkpoint-*) on the dev set and the general test
    set, to pick the trade-off per epoch (slower; raise train.save_total_limit to keep more checkpoints)."""
    error_analysis_n: int = 10
    """Segments listed as most worse and most better in the error analysis."""
    spm_model: Optional[str] = None
    """Local path of the FLORES-200 SentencePiece model: adds spBLEU (never downloaded). Empty: no spBLEU."""
    comet_model: Optional[str] = None
    """Local path of a COMET checkpoint (needs pip install 'adaptmllm[comet]'): adds COMET. Empty: no COMET."""
    length_penalty: float = 1.0
    """Beam search length penalty: score = log-probability / length ** length_penalty (above 1 favours
    longer translations; no effect with num_beams 1)."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a translation (0: off; 3 or 4 curbs loops)."""
    max_batch_tokens: int = 4096
    """Token budget of one generation batch: segments x longest source in tokens (padded). Segments are
    sorted by length and batched up to this budget and eval.batch_size; lower it if the GPU runs out of memory."""
    split_sentences: bool = True
    """Translate multi-sentence segments (paragraphs, documents) sentence by sentence (pysbd) and join
    them back, keeping spaces and line breaks: NLLB drops or cuts sentences from long inputs. Sentences
    longer than model.max_source_length tokens are cut between words, never silently truncated."""
    engine: str = "transformers"
    """Generation engine for scoring: transformers (PyTorch), or ctranslate2 (the model is converted with
    CTranslate2 at eval.ct2_quantization first; faster on CPU; needs pip install ctranslate2)."""
    ct2_quantization: str = "int8"
    """Weights of the CTranslate2 conversion when eval.engine is ctranslate2: float32, float16, bfloat16,
    int8, int8_float16 or int8_bfloat16 (int8: about 4x smaller and faster on CPU, within ~1 chrF++)."""

    def __post_init__(self) -> None:
        _check(self.num_beams >= 1, "eval.num_beams", "must be >= 1")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _check(self.bleu_tokenize not in ("flores101", "flores200", "spm"), "eval.bleu_tokenize",
               "spBLEU tokenizers download a model; use 13a here and give eval.spm_model for spBLEU")
        _check(self.bootstrap_samples >= 100, "eval.bootstrap_samples", "must be >= 100 (1000 is usual)")
        _check(0 < self.significance_level < 1, "eval.significance_level", "must be in (0, 1), e.g. 0.05")
        _check(self.forgetting_threshold >= 0, "eval.forgetting_threshold", "must be >= 0 (chrF++ points)")
        _check(self.error_analysis_n >= 1, "eval.error_analysis_n", "must be >= 1")
        _check(self.length_penalty > 0, "eval.length_penalty", "must be > 0 (1.0: no preference)")
        _check(self.no_repeat_ngram_size >= 0, "eval.no_repeat_ngram_size", "must be >= 0 (0: off)")
        _check(self.max_batch_tokens >= 1, "eval.max_batch_tokens", "must be >= 1, e.g. 4096")
        _check(self.engine in ENGINES, "eval.engine", f"{self.engine!r} is not one of {ENGINES}")
        _check(self.ct2_quantization in CT2_QUANTIZATIONS, "eval.ct2_quantization",
               f"{self.ct2_quantization!r} is not one of {CT2_QUANTIZATIONS}")
        _check(isinstance(self.forgetting_tests, list), "eval.forgetting_tests",
               "must be a list of mappings {src_lang, tgt_lang, test}")
        for i, e in enumerate(self.forgetting_tests):
            name = f"eval.forgetting_tests[{i}]"
            _check(isinstance(e, dict), name, "must be a mapping {src_lang, tgt_lang, test}")
            bad = [k for k in e if k not in DIRECTION_KEYS]
            _check(not bad, f"{name}.{bad[0] if bad else ''}", f"unknown key; known keys: {', '.join(DIRECTION_KEYS)}")
            _check(bool(e.get("test")) and bool(e.get("src_lang")) and bool(e.get("tgt_lang")), name,
                   "needs src_lang, tgt_lang and test")
        for name in ("general_test", "spm_model", "comet_model"):
            if getattr(self, name) is not None and not str(getattr(self, name)).strip():
                setattr(self, name, None)


@dataclass
class GreenConfig:
    """Energy and emissions tracking of fine-tuning (CodeCarbon, offline)."""

    enabled: bool = True
    """Track energy and emissions with CodeCarbon's OfflineEmissionsTracker."""
    country_iso_code: str = "IRL"
    """ISO 3166-1 alpha-3 code of the country whose grid carbon intensity is used (IRL, DEU, USA, ...)."""
    measure_power_secs: float = 5.0
    """Seconds between power readings."""

    def __post_init__(self) -> None:
        _check(len(self.country_iso_code) == 3 and self.country_iso_code.isalpha(), "green.country_iso_code",
               f"{self.country_iso_code!r} is not an ISO 3166-1 alpha-3 code such as IRL")
        self.country_iso_code = self.country_iso_code.upper()
        _check(self.measure_power_secs > 0, "green.measure_power_secs", "must be > 0")


MQM_PRESET_NAMES = ("mqm", "adaptmllm")


@dataclass
class ServeConfig:
    """The translation playground and human evaluation server (``adaptmllm serve``): defaults,
    limits that keep a shared link safe, batching and queueing, and MQM severity weights."""

    host: str = "127.0.0.1"
    """Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for the local network too (then use --auth)."""
    port: Optional[int] = None
    """TCP port. Empty: the first free port from 7860."""
    num_beams: int = 4
    """Beam size the playground starts with."""
    max_new_tokens: int = 128
    """Longest translation (tokens) the playground starts with."""
    max_beams: int = 8
    """Largest beam size a user may pick."""
    max_new_tokens_limit: int = 512
    """Largest maximum translation length (tokens) a user may pick."""
    max_input_chars: int = 2000
    """Most characters of text in one translation request, and in one line of an uploaded file."""
    max_file_lines: int = 1000
    """Most lines (segments) in one uploaded file."""
    max_upload_bytes: int = 1_000_000
    """Largest upload in bytes; bigger files are refused before they are read."""
    concurrency_limit: int = 16
    """Translation requests served at once; they share the model, batched together."""
    queue_size: int = 256
    """Requests that may wait in the queue; beyond that, users are told the server is busy."""
    max_batch_segments: int = 32
    """Most segments translated in one model batch (requests of several users are batched together)."""
    max_batch_tokens: int = 4096
    """Token budget of one model batch: segments x longest source in tokens (padded)."""
    split_sentences: bool = True
    """Translate a line holding several sentences sentence by sentence (pysbd) and join them back."""
    length_penalty: float = 1.0
    """Beam search length penalty (above 1 favours longer translations)."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a translation (0: off)."""
    batch_wait_ms: float = 5.0
    """Milliseconds the batcher waits for more requests to fill a batch."""
    request_timeout_s: float = 600.0
    """A translation request that waits longer than this many seconds fails with a message."""
    mqm_preset: str = "mqm"
    """MQM severity weights: mqm (minor 1, major 5, non-translation 25) or adaptmllm (minor 1, major 10,
    non-translation 25)."""
    mqm_minor: Optional[float] = None
    """Override of the preset's weight of a minor error."""
    mqm_major: Optional[float] = None
    """Override of the preset's weight of a major error."""
    mqm_non_translation: Optional[float] = None
    """Override of the preset's weight of a non-translation."""
    eval_segments: int = 100
    """Test segments offered for human evaluation: a fixed random sample (0: all)."""
    eval_include_reference: bool = False
    """Also ask annotators to rate the human reference translations (a control system)."""
    seed: int = 13
    """Seed of the evaluation sample and of each annotator's shuffled order."""
    file_ttl_s: int = 3600
    """Seconds that uploads, translated files and exports stay on the server before they are deleted
    (all of them are deleted when the server stops, also on SIGTERM)."""
    login_max_failures: int = 5
    """Failed logins a client address may make within serve.login_lockout_s seconds before it is locked out."""
    login_lockout_s: int = 300
    """Seconds a client address stays locked out after too many failed logins."""
    login_global_per_minute: int = 30
    """Failed logins over all client addresses in any minute; beyond, every login waits (a shared link
    reaches the server through one tunnel address: this is what bounds password guessing then)."""

    def __post_init__(self) -> None:
        _check(bool(self.host), "serve.host", "give an address such as 127.0.0.1")
        for name in ("file_ttl_s", "login_max_failures", "login_lockout_s", "login_global_per_minute"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"serve.{name}",
                   "must be a whole number >= 1")
        _check(self.port is None or 0 < self.port < 65536, "serve.port", "must be in 1..65535 (or empty)")
        for name in ("num_beams", "max_new_tokens", "max_beams", "max_new_tokens_limit", "max_input_chars",
                     "max_file_lines", "max_upload_bytes", "concurrency_limit", "queue_size", "max_batch_segments",
                     "max_batch_tokens"):
            _check(getattr(self, name) >= 1, f"serve.{name}", "must be >= 1")
        _check(self.length_penalty > 0, "serve.length_penalty", "must be > 0 (1.0: no preference)")
        _check(self.no_repeat_ngram_size >= 0, "serve.no_repeat_ngram_size", "must be >= 0 (0: off)")
        _check(self.num_beams <= self.max_beams, "serve.num_beams", f"must be <= serve.max_beams ({self.max_beams})")
        _check(self.max_new_tokens <= self.max_new_tokens_limit, "serve.max_new_tokens",
               f"must be <= serve.max_new_tokens_limit ({self.max_new_tokens_limit})")
        _check(self.batch_wait_ms >= 0, "serve.batch_wait_ms", "must be >= 0")
        _check(self.request_timeout_s > 0, "serve.request_timeout_s", "must be > 0")
        _check(self.mqm_preset in MQM_PRESET_NAMES, "serve.mqm_preset",
               f"{self.mqm_preset!r} is not one of {MQM_PRESET_NAMES}")
        for name in ("mqm_minor", "mqm_major", "mqm_non_translation"):
            v = getattr(self, name)
            _check(v is None or v >= 0, f"serve.{name}", "must be >= 0 (or empty for the preset's weight)")
        _check(self.eval_segments >= 0, "serve.eval_segments", "must be >= 0 (0 means all)")

    def mqm_weights(self) -> dict:
        """Severity -> points: the preset's weights with this config's overrides."""

        return mqm_weights(self.mqm_preset, {"minor": self.mqm_minor, "major": self.mqm_major,
                                             "non-translation": self.mqm_non_translation})


HPO_SAMPLERS = ("tpe", "random")
HPO_PRUNERS = ("median", "hyperband", "none")
HPO_BEST_MODEL = ("keep", "retrain")
HPO_DIMENSIONS: dict[str, str] = {
    "learning_rate": "float",
    "per_device_train_batch_size": "int",
    "gradient_accumulation_steps": "int",
    "weight_decay": "float",
    "num_train_epochs": "number",
    "warmup_ratio": "float",
    "warmup_steps": "int",
    "lr_scheduler": "choice",
    "label_smoothing": "float",
    "precision": "choice",
    "vocab_size": "int",
    "d_model": "int",
    "encoder_layers": "int",
    "decoder_layers": "int",
    "ffn_dim": "int",
    "attention_heads": "int",
    "dropout": "float",
}
"""The searchable fields and their kind: ``int`` (integer range or choices), ``float`` (real range or
choices), ``number`` (an integer range when both bounds are integers, else real) and ``choice`` (choices
only). Each dimension is named after the field it sets (see :data:`HPO_SECTIONS`): the names of
``train.*`` and ``model.tiny.*`` do not overlap, so ``hpo.space`` stays one flat mapping that reads like
the fields it sets (``hpo.space.d_model`` sets ``model.tiny.d_model``)."""
HPO_SECTIONS: dict[str, str] = {dim: "train" for dim in HPO_DIMENSIONS} | {
    dim: "model.tiny" for dim in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "ffn_dim",
                                  "attention_heads", "dropout")}
"""The section each search dimension sets: ``train`` or ``model.tiny`` (the sizes of the tiny model
built from scratch, which only ``model.name_or_path: tiny`` has)."""
_HPO_CHOICES = {"precision": PRECISIONS, "lr_scheduler": LR_SCHEDULERS}
_RANGE_KEYS = ("low", "high", "log", "step")


def _as_number(value: Any, name: str) -> Any:
    """YAML reads ``1e-5`` (no dot) as a string: accept numeric strings; reject bools and the rest."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    return value


def _check_dim_value(dim: str, value: Any, name: str) -> Any:
    """Check one value of a search dimension as its field (``train.<dim>`` or ``model.tiny.<dim>``, see
    :data:`HPO_SECTIONS`) would be checked; errors name ``name``. ``d_model`` and ``attention_heads`` are
    checked alone here (each > 0); whether every sampled pair divides is :func:`check_hpo_model`'s."""
    kind = HPO_DIMENSIONS[dim]
    if kind == "choice":
        _check(isinstance(value, str), name, f"expected one of {_HPO_CHOICES[dim]}, got {value!r}")
    else:
        value = _as_number(value, name)
        if kind == "int":
            _check(isinstance(value, int) or float(value).is_integer(), name, f"must be a whole number, got {value!r}")
            value = int(value)
    try:
        if HPO_SECTIONS[dim] == "train":
            TrainConfig(**{dim: value})
        else:  # a width/head pair that divides, so that only this value is judged
            partner = {"d_model": {"attention_heads": 1}, "attention_heads": {"d_model": value}}.get(dim, {})
            TinyModelConfig(**{dim: value, **partner})
    except ConfigError as e:
        raise ConfigError(f"{name}: {str(e).split(': ', 1)[-1]}") from None
    return value


def check_search_dim(dim: str, spec: Any, prefix: str = "hpo.space") -> Any:
    """Validate and normalise one search-space entry of ``train.<dim>`` or ``model.tiny.<dim>`` (see
    :data:`HPO_SECTIONS`); returns the normalised entry.

    An entry is ``None`` (keep the field's value), a fixed value (``3e-5``), a range mapping
    ``{low, high, log?, step?}`` or a choices mapping ``{choices: [...]}`` (a plain list is read as
    choices). Numeric strings (YAML's ``1e-5``) become numbers.

    Raises:
        ConfigError: naming the entry (``hpo.space.learning_rate.low``) and the fix: an unknown
            key, low > high, a log range with low <= 0, a non-integer bound of an integer field, an
            unknown precision or learning-rate schedule, or a value the field would refuse
            (``hpo.space.dropout.high: must be in [0, 1)``).
    """
    name = f"{prefix}.{dim}"
    kind = HPO_DIMENSIONS[dim]
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        spec = {"choices": list(spec)}
    if not isinstance(spec, dict):
        return _check_dim_value(dim, spec, name)
    spec = dict(spec)
    if "choices" in spec:
        extra = [k for k in spec if k != "choices"]
        _check(not extra, f"{name}.{extra[0] if extra else ''}",
               "give either choices or a range (low, high, log, step), not both")
        choices = spec["choices"]
        _check(isinstance(choices, (list, tuple)) and len(choices) > 0, f"{name}.choices",
               "must be a non-empty list, e.g. [8, 16, 32]")
        values = [_check_dim_value(dim, v, f"{name}.choices[{i}]") for i, v in enumerate(choices)]
        _check(len(set(map(repr, values))) == len(values), f"{name}.choices", f"{values} repeats a value")
        return {"choices": values}
    unknown = [k for k in spec if k not in _RANGE_KEYS]
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; a range has low, high and optionally log or "
                          "step, a list of values has choices")
    if kind == "choice":
        raise ConfigError(f"{name}: {dim} takes choices, e.g. {{choices: [{', '.join(_HPO_CHOICES[dim][1:3])}]}}, "
                          "not a range")
    for key in ("low", "high"):
        _check(key in spec, f"{name}.{key}", "missing: a range needs low and high, e.g. {low: 1e-5, high: 9e-5}")
    low = _check_dim_value(dim, spec["low"], f"{name}.low")
    high = _check_dim_value(dim, spec["high"], f"{name}.high")
    _check(low <= high, f"{name}.low", f"low {low} > high {high}; swap them")
    log = spec.get("log", False)
    _check(isinstance(log, bool), f"{name}.log", f"must be true or false, got {log!r}")
    _check(not log or low > 0, f"{name}.log", f"a log range needs low > 0, got {low}")
    out: dict[str, Any] = {"low": low, "high": high, "log": log}
    if spec.get("step") is not None:
        step = _as_number(spec["step"], f"{name}.step")
        _check(step > 0, f"{name}.step", "must be > 0")
        _check(not log, f"{name}.step", "cannot be combined with log: true")
        out["step"] = step
    if kind == "int":
        _check(isinstance(out.get("step", 1), int), f"{name}.step", "must be a whole number for an integer field")
    return out


@dataclass
class SearchSpaceConfig:
    """The hyperparameter search space over ``train.*`` fields and, for the tiny model built from scratch,
    ``model.tiny.*`` sizes; adaptMLLM's ``train.*`` dimensions by default, the others not searched.

    Each entry is named after the field it sets (``hpo.space.d_model`` sets ``model.tiny.d_model``:
    the names of the two sections do not overlap, so the space stays one flat, readable mapping; see
    :data:`HPO_SECTIONS`). Each entry is a fixed value (``learning_rate: 3e-5``), a range (``{low:
    1e-5, high: 9e-5, log: true}``, optionally ``step``), or choices (``{choices: [8, 16, 32]}`` or just
    ``[8, 16, 32]``). Empty (null) keeps the value of the field. The model dimensions need
    ``model.name_or_path: tiny``, and every sampled d_model must be divisible by every sampled
    attention_heads: both are refused when the config is loaded (:func:`check_hpo_model`), never
    met by a trial."""

    learning_rate: Any = field(default_factory=lambda: {"low": 1e-5, "high": 9e-5, "log": True})
    """Peak learning rate: log-uniform range (adaptMLLM's slider: 1e-5 to 9e-5; the tiny demo needs ~1e-3)."""
    per_device_train_batch_size: Any = field(default_factory=lambda: {"choices": [8, 16, 32]})
    """Sentence pairs per device per step (adaptMLLM: 8 to 32)."""
    gradient_accumulation_steps: Any = field(default_factory=lambda: {"low": 1, "high": 12})
    """Steps whose gradients are summed before each update (adaptMLLM: 1 to 12)."""
    weight_decay: Any = field(default_factory=lambda: {"low": 0.01, "high": 2.0, "log": True})
    """AdamW weight decay (adaptMLLM: 0.01 to 2.0)."""
    num_train_epochs: Any = field(default_factory=lambda: {"low": 1, "high": 10})
    """Epochs (adaptMLLM: 1 to 10); integer bounds search whole epochs."""
    warmup_ratio: Any = field(default_factory=lambda: {"low": 0.0, "high": 0.2})
    """Share of steps with learning-rate warm-up."""
    label_smoothing: Any = field(default_factory=lambda: {"low": 0.0, "high": 0.2})
    """Label smoothing of the loss."""
    precision: Any = field(default_factory=lambda: {"choices": ["bf16", "fp16", "fp32"]})
    """Precision choices among bf16, fp16, fp32 (auto); those this machine cannot run are dropped
    (a CPU runs fp32 only), so on a CPU precision is not searched."""
    warmup_steps: Any = None
    """train.warmup_steps: optimizer steps of warm-up, e.g. {low: 100, high: 800, step: 100} (when > 0 it
    replaces warmup_ratio). Empty: not searched."""
    lr_scheduler: Any = None
    """train.lr_scheduler choices among linear, inverse_sqrt, cosine, constant. Empty: not searched."""
    vocab_size: Any = None
    """model.tiny.vocab_size (SentencePiece pieces), e.g. [1000, 2000, 4000]: each size gets its own
    SentencePiece model in <run folder>/tokenizer-v<size>/, trained once and shared by the trials of that
    size. Tiny model only. Empty: not searched."""
    d_model: Any = None
    """model.tiny.d_model (hidden size), e.g. [128, 256]; each must be divisible by every attention_heads
    value. Tiny model only. Empty: not searched."""
    encoder_layers: Any = None
    """model.tiny.encoder_layers, e.g. {low: 2, high: 4}. Tiny model only. Empty: not searched."""
    decoder_layers: Any = None
    """model.tiny.decoder_layers, e.g. {low: 2, high: 4}. Tiny model only. Empty: not searched."""
    ffn_dim: Any = None
    """model.tiny.ffn_dim (feed-forward inner size), e.g. [512, 1024]. Tiny model only. Empty: not searched."""
    attention_heads: Any = None
    """model.tiny.attention_heads, e.g. [4, 8]; must divide every d_model value. Tiny model only. Empty:
    not searched."""
    dropout: Any = None
    """model.tiny.dropout probability, e.g. {low: 0.1, high: 0.4}. Tiny model only. Empty: not searched."""

    def __post_init__(self) -> None:
        for dim in HPO_DIMENSIONS:
            setattr(self, dim, check_search_dim(dim, getattr(self, dim)))

    def searched(self) -> list[str]:
        """Names of the dimensions given as a range or choices (the others are fixed or kept)."""
        return [d for d in HPO_DIMENSIONS if isinstance(getattr(self, d), dict)]

    def model_dims(self) -> list[str]:
        """Names of the ``model.tiny`` dimensions that are set (fixed, a range or choices)."""
        return [d for d in HPO_DIMENSIONS if HPO_SECTIONS[d] == "model.tiny" and getattr(self, d) is not None]


_MAX_ENUMERATED = 100_000


def _int_values(spec: Any, default: int) -> Optional[list[int]]:
    """Every value an integer dimension may take (``None``: the field's ``default``), or None when too many."""
    if spec is None:
        return [default]
    if not isinstance(spec, dict):
        return [spec]
    if "choices" in spec:
        return list(spec["choices"])
    low, high = spec["low"], spec["high"]
    if spec.get("log"):
        return None if high - low > _MAX_ENUMERATED else list(range(low, high + 1))  # Optuna's int log range
    step = spec.get("step", 1)
    return None if (high - low) // step > _MAX_ENUMERATED else list(range(low, high + 1, step))


def check_hpo_model(config: Config) -> None:
    """Check ``hpo.space``'s model dimensions against ``config.model`` (a :class:`Config`).

    The ``model.tiny`` dimensions (vocab_size, d_model, encoder_layers, decoder_layers, ffn_dim,
    attention_heads, dropout) size the tiny model built from scratch, so they need ``model.name_or_path:
    tiny``. Every d_model a trial may sample must be divisible by every attention_heads it may sample
    (with ``model.tiny``'s value for the one not searched): an invalid pair is refused here, when the
    config is loaded, rather than met by a trial, so a study never crashes or wastes a trial on it.

    Raises:
        ConfigError: naming ``hpo.space.<dim>``, the model and the fix.
    """
    space, model = config.hpo.space, config.model
    dims = space.model_dims()
    if dims and model.name_or_path != "tiny":
        raise ConfigError(f"hpo.space.{dims[0]}: searches model.tiny.{dims[0]}, which only sizes the tiny model built "
                          f"from scratch, but model.name_or_path is {model.name_or_path!r} (a pretrained model keeps "
                          f"its sizes); set hpo.space.{dims[0]} to null, or use model.name_or_path: tiny")
    if space.d_model is None and space.attention_heads is None:
        return
    widths = _int_values(space.d_model, model.tiny.d_model)
    heads = _int_values(space.attention_heads, model.tiny.attention_heads)
    for dim, values in (("d_model", widths), ("attention_heads", heads)):
        _check(values is not None, f"hpo.space.{dim}", f"a range of more than {_MAX_ENUMERATED} values; give choices")
    bad = next(((w, h) for w in widths for h in heads if w % h), None)
    if bad is None:
        return
    if space.d_model is None:
        dim, fix = "attention_heads", f"give attention_heads values that divide model.tiny.d_model {bad[0]}"
    elif space.attention_heads is None:
        dim, fix = "d_model", (f"give d_model values that model.tiny.attention_heads {bad[1]} divides: choices, or a "
                               f"range whose low and step are multiples of it, e.g. {{low: 128, high: 512, step: 128}}")
    else:
        dim, fix = "attention_heads", ("give d_model values that every attention_heads value divides, e.g. "
                                       "d_model: [128, 256] with attention_heads: [4, 8]")
    raise ConfigError(f"hpo.space.{dim}: a trial could get d_model {bad[0]} with attention_heads {bad[1]}, which does "
                      f"not divide it; {fix}")


@dataclass
class HPOConfig:
    """Hyperparameter search with Optuna (``adaptmllm hpo``): each trial is a full fine-tuning run
    scored on the dev set by ``train.metric_for_best_model`` (chrF++ by default) after every epoch."""

    n_trials: int = 20
    """Trials to finish (completed or pruned), counted over every run and worker of the study: rerunning
    a finished study does nothing; raise this to extend it. With W workers up to W-1 more may finish."""
    timeout: Optional[float] = None
    """Stop starting new trials after this many seconds (this process; the running trial finishes). Empty: no limit."""
    space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    """The search space (train.* fields, and the tiny model's sizes model.tiny.*)."""
    sampler: str = "tpe"
    """How trials are proposed: tpe (Optuna's default, Bayesian) or random."""
    seed: Optional[int] = None
    """Seed of the sampler (a study is reproducible with one worker). Give every worker its own seed, or
    none: workers with the same seed propose the same first trials."""
    pruner: str = "median"
    """Early stopping of bad trials: median (stop a trial whose dev score is below the median of earlier
    trials at the same epoch), hyperband, or none."""
    pruner_startup_trials: int = 3
    """Median pruner: trials that must finish before any is pruned."""
    pruner_warmup_epochs: int = 1
    """Epochs every trial trains before it may be pruned (Hyperband: its minimum resource)."""
    storage: Optional[str] = None
    """Optuna storage URL shared by all workers, e.g. postgresql://user@host/db (needs psycopg2-binary; the
    password goes in PGPASSWORD or ~/.pgpass, never in the URL, which is saved in config.yaml) or
    sqlite:////abs/path/study.db. Empty: sqlite in <run folder>/hpo/study.db."""
    study_name: Optional[str] = None
    """Name of the study in the storage. Empty: the run name."""
    heartbeat_interval: int = 60
    """Seconds between a running trial's heartbeats to the storage."""
    grace_period: Optional[int] = None
    """A running trial without a heartbeat for this many seconds is failed (its process was killed)
    and retried. Empty: twice ``heartbeat_interval``."""
    max_retry: int = 2
    """Times a trial whose process was killed is retried with the same parameters."""
    enqueue: list[dict] = field(default_factory=list)
    """Parameter sets tried first, e.g. [{learning_rate: 5e-5, num_train_epochs: 3}] (searched dimensions
    only; the others are sampled); skipped when already in the study."""
    best_model: str = "keep"
    """keep: keep the best trial's model (retrained when this machine does not hold it), or retrain:
    train a fresh model with the best parameters. Either way it is scored on the test set against the baseline."""
    finalize: bool = True
    """After the trials, write the study artefacts and score the best model into <run folder>/best/.
    Extra workers can pass false and leave that to one worker."""
    plots: bool = True
    """Write the optimisation-history and parameter-importance plots (PNG and interactive HTML)."""

    def __post_init__(self) -> None:
        if isinstance(self.space, dict):
            self.space = build_section(SearchSpaceConfig, self.space, "hpo.space")
        _check(isinstance(self.n_trials, int) and self.n_trials >= 1, "hpo.n_trials", "must be >= 1")
        _check(self.timeout is None or self.timeout > 0, "hpo.timeout", "must be > 0 seconds (or empty: no limit)")
        _check(self.sampler in HPO_SAMPLERS, "hpo.sampler", f"{self.sampler!r} is not one of {HPO_SAMPLERS}")
        _check(self.pruner in HPO_PRUNERS, "hpo.pruner", f"{self.pruner!r} is not one of {HPO_PRUNERS}")
        _check(self.pruner_startup_trials >= 0, "hpo.pruner_startup_trials", "must be >= 0")
        _check(self.pruner_warmup_epochs >= 0, "hpo.pruner_warmup_epochs", "must be >= 0")
        if self.storage is not None and not str(self.storage).strip():
            self.storage = None
        if self.storage is not None:
            self.storage = check_storage_url(self.storage)
        _check(self.study_name is None or bool(str(self.study_name).strip()), "hpo.study_name", "must not be blank")
        _check(self.heartbeat_interval >= 1, "hpo.heartbeat_interval", "must be >= 1 second")
        _check(self.grace_period is None or self.grace_period > self.heartbeat_interval, "hpo.grace_period",
               f"must be > hpo.heartbeat_interval ({self.heartbeat_interval} s)")
        _check(self.max_retry >= 0, "hpo.max_retry", "must be >= 0")
        _check(self.best_model in HPO_BEST_MODEL, "hpo.best_model",
               f"{self.best_model!r} is not one of {HPO_BEST_MODEL}")
        _check(isinstance(self.enqueue, list), "hpo.enqueue", "must be a list of mappings")
        searched = self.space.searched()
        for i, params in enumerate(self.enqueue):
            _check(isinstance(params, dict), f"hpo.enqueue[{i}]", "must be a mapping such as {learning_rate: 5e-5}")
            for key, value in params.items():
                _check(key in searched, f"hpo.enqueue[{i}].{key}",
                       f"not a searched dimension; searched: {', '.join(searched) or 'none'}")
                params[key] = _check_dim_value(key, value, f"hpo.enqueue[{i}].{key}")


@dataclass
class Config:
    """A whole adaptmllm run: data -> model -> fine-tune -> evaluate -> green report."""

    name: str = "demo"
    """Run name: the run folder is ``<runs_dir>/<name>``."""
    runs_dir: str = "runs"
    """Folder that holds the run folders."""
    overwrite: bool = False
    """Allow writing into a run folder that already holds another (finished or different) run."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpus and language pair."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model to fine-tune."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Fine-tuning hyperparameters."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Scoring of baseline and fine-tuned model."""
    green: GreenConfig = field(default_factory=GreenConfig)
    """Energy and emissions tracking."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """Playground and human evaluation server."""
    hpo: HPOConfig = field(default_factory=HPOConfig)
    """Hyperparameter search (adaptmllm hpo)."""

    def __post_init__(self) -> None:
        check_run_name(self.name)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, dict) and isinstance(f.default_factory, type):
                setattr(self, f.name, build_section(f.default_factory, v, f.name))
        check_hpo_model(self)

    @property
    def run_dir(self) -> Path:
        """The run folder ``<runs_dir>/<name>``."""
        return Path(self.runs_dir) / self.name


def build_section(cls: type, data: dict, prefix: str) -> Any:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        _check_no_secret(name, key, value)
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known fields: {', '.join(known)}"
            raise ConfigError(f"{name}: unknown field{hint}")
        f = known[key]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and is_dataclass(sub) and isinstance(value, dict):
            value = build_section(sub, value, name)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_?key|auth)($|_)", re.IGNORECASE)
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
_SECRET_FIX = ("a config file is saved in every run folder, so it never holds secrets: set the Hugging Face token "
               "as the HF_TOKEN environment variable, or on Colab as the secret HF_TOKEN (key icon in the left bar)")


def _check_no_secret(name: str, key: Any, value: Any) -> None:
    """Refuse secrets in a config (they would be saved in config.yaml): a key named like a token or
    password, a value that looks like a Hugging Face token (``hf_...``), or a password inside
    ``hpo.storage``. The message never repeats the value.

    Raises:
        ConfigError: naming the field and where the secret belongs instead.
    """
    if isinstance(key, str) and _SECRET_KEY.search(key):
        raise ConfigError(f"{name}: looks like a secret; {_SECRET_FIX}")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, str) and _HF_TOKEN.search(v):
            raise ConfigError(f"{name}: holds what looks like a Hugging Face token (hf_...); {_SECRET_FIX}")
    if name == "hpo.storage" and isinstance(value, str) and value.strip():
        check_storage_url(value)


_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{i}" for d in ("COM", "LPT") for i in list("123456789") + ["\u00b9", "\u00b2", "\u00b3"]}
_FORBIDDEN_CHARS = set('<>:"/\\|?*')


def check_run_name(name: Any, field_name: str = "name") -> str:
    """Check that ``name`` is a plain folder name on every platform (Linux, macOS, Windows), so that
    ``<runs_dir>/<name>`` stays inside ``runs_dir``. Returns the name.

    Refused: empty; ``.`` or ``..``; a path separator or other character Windows forbids
    (``/ \\ : * ? " < > |``); control characters; a leading or trailing space, or a trailing dot
    (Windows drops them); a Windows device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``,
    ``LPT1``-``LPT9``, also with an extension such as ``nul.txt``); more than 255 bytes in UTF-8.

    Raises:
        ConfigError: naming ``field_name``, what is wrong and an example of a good name.
    """
    fix = "use a plain folder name such as 'demo' or 'en-ga_lora' (letters, digits, '-', '_', '.')"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field_name}: the run name is empty; {fix}")
    shown = ascii(name) if len(name) <= 80 else ascii(name[:80]) + "..."
    if name in (".", ".."):
        raise ConfigError(f"{field_name}: {shown} is not a folder name; {fix}")
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS})
    if bad:
        raise ConfigError(f"{field_name}: {shown} holds {' '.join(bad)}, which is a path separator or is not "
                          f"allowed in a folder name on Windows; {fix}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise ConfigError(f"{field_name}: {shown} holds control characters; {fix}")
    if name != name.strip() or name.endswith("."):
        raise ConfigError(f"{field_name}: {shown} starts or ends with a space, or ends with a dot (Windows drops "
                          f"them); {fix}")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        raise ConfigError(f"{field_name}: {shown} is a reserved device name on Windows; {fix}")
    if len(name.encode("utf-8")) > 255:
        raise ConfigError(f"{field_name}: the run name is longer than 255 bytes; {fix}")
    return name


_URL_SECRET_KEYS = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
_URL_SAFE_KEYS = {"sslkey", "ssl_key", "sslkeylogfile", "read_default_file"}  # paths to files, not secrets


def mask_storage_url(url: Any) -> str:
    """A database URL safe to show or save: ``driver://user:***@host:port/database?key=***`` (every
    password and every query value hidden; parsed with SQLAlchemy's ``make_url``). A URL that does
    not parse is hidden whole (``<database URL, hidden>``)."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(str(url).strip())
    except Exception:  # noqa: BLE001 - whatever it is, it is not shown
        return "<database URL, hidden>"
    out = f"{u.drivername}://"
    if u.username:
        out += u.username + (":***" if u.password is not None else "") + "@"
    elif u.password is not None:
        out += ":***@"
    if u.host:
        out += u.host + (f":{u.port}" if u.port else "")
    if u.database:
        out += "/" + u.database
    if u.query:
        out += "?" + "&".join(f"{k}=***" for k in u.query)
    return out


def check_storage_url(url: Any, field_name: str = "hpo.storage") -> str:
    """Check an Optuna storage URL (SQLAlchemy form) before it is saved in ``config.yaml`` and
    ``hpo/study_config.yaml``: it must parse (``make_url``) and hold no secret, neither a password
    (``postgresql://user:PASSWORD@host/db``, whatever characters it holds) nor a query parameter named
    like one (``?password=``, ``?sslpassword=``, ``?passwd=``, ``?pwd=``, ``?token=``...). The
    password belongs in ``PGPASSWORD`` or ``~/.pgpass`` (PostgreSQL) or a MySQL option file. Messages
    never repeat the URL. Returns the URL, stripped.

    Raises:
        ConfigError: naming ``field_name`` and the fix.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{field_name}: expected a database URL such as postgresql://user@host/db, got "
                          f"{type(url).__name__}")
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url.strip())
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        raise ConfigError(f"{field_name}: checking the URL needs sqlalchemy (pip install sqlalchemy)") from None
    except Exception:  # noqa: BLE001 - the URL (maybe with a password) is never repeated
        raise ConfigError(f"{field_name}: not a database URL such as postgresql://user@host/db or "
                          "sqlite:////abs/path/study.db (the value is not shown: it may hold a password)") from None
    fix = ("drop it from the URL (postgresql://user@host/db) and give it through the PGPASSWORD environment "
           "variable or ~/.pgpass (PostgreSQL), or a MySQL option file (?read_default_file=~/.my.cnf)")
    if u.password is not None:
        raise ConfigError(f"{field_name}: the URL {mask_storage_url(url)} holds a password, which would be saved "
                          f"in config.yaml; {fix}")
    secret = [k for k in u.query if _URL_SECRET_KEYS.search(k) and k.lower() not in _URL_SAFE_KEYS]
    if secret:
        raise ConfigError(f"{field_name}: the URL {mask_storage_url(url)} holds a secret in its query "
                          f"({', '.join(secret)}), which would be saved in config.yaml; {fix}")
    return url.strip()


def diff_dicts(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted fields whose values differ between two nested dicts, as ``"train.seed (1 -> 2)"``."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_dicts(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return out


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a (nested) dict such as a parsed YAML file.

    Raises:
        ConfigError: an unknown field (with the closest known names) or an invalid value.
    """
    return build_section(Config, data or {}, "")


def config_to_dict(config: Any) -> dict:
    """The config as a plain nested dict (YAML-ready)."""
    return dataclasses.asdict(config)


_FIELD_FIX = "adaptmllm run --help lists every field"


def yaml_line(text: str, dotted: str) -> Optional[int]:
    """The 1-based line of the key ``dotted`` (``train.learning_rate``) in the YAML ``text``, or None."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return line
        for key, value in node.value:
            if getattr(key, "value", None) == part:
                line, node = key.start_mark.line + 1, value
                break
        else:
            return line
    return line


def unknown_fields(data: Any, cls: type = None, prefix: str = "") -> list[tuple[str, list[str]]]:
    """The unknown keys of a config mapping: ``(dotted name, closest valid names)`` each, nested
    sections included (``train.learnin_rate`` -> ``["train.learning_rate"]``)."""
    cls = cls or Config
    if not isinstance(data, dict):
        return []
    known = {f.name: f for f in fields(cls)}
    out = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=3)
            out.append((name, [f"{prefix}.{c}" if prefix else c for c in close]))
            continue
        sub = known[key].default_factory if known[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and is_dataclass(sub) and isinstance(value, dict):
            out += unknown_fields(value, sub, name)
    return out


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML config file as a dict and check its keys (not yet its values).

    Raises:
        ConfigError: one line naming the file and line: the file is missing, is not valid YAML, is not
            a mapping, or has an unknown key (with the closest valid field and the fix).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file; check the path, or start from a preset in configs/ such "
                          "as configs/demo.yaml")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at byte offset {e.start}); save "
                          "it as UTF-8") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        raise ConfigError(f"{p}{where}: not valid YAML ({problem}" + (f", {context}" if context else "")
                          + "); fix the indentation, colon or bracket there") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} line 1: expected a mapping of config fields (name: ..., data: ..., train: ...), got "
                          f"a {type(data).__name__}; see configs/demo.yaml")
    unknown = unknown_fields(data)
    if unknown:
        name, close = unknown[0]
        line = yaml_line(text, name)
        hint = (f"did you mean {' or '.join(close)}? Fix: rename it" if close
                else "Fix: remove it") + f" ({_FIELD_FIX})"
        raise ConfigError(f"{p}" + (f" line {line}" if line else "") + f": {name}: unknown field; {hint}")
    return data


def load_config(path: str | os.PathLike) -> Config:
    """Read a YAML config file.

    Raises:
        ConfigError: one line naming the file (and line): the file is missing, is not valid YAML, has an
            unknown key (with the closest valid one), or holds an invalid value (with the field and fix).
    """
    p = Path(path)
    data = read_config_file(p)
    try:
        return config_from_dict(data)
    except ConfigError as e:
        name = str(e).split(":", 1)[0]
        line = yaml_line(p.read_text(encoding="utf-8"), name) if re.fullmatch(r"[\w.]+", name) else None
        raise ConfigError(f"{p}" + (f" line {line}" if line else "") + f": {e}") from e


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write the config as YAML, atomically (temporary file + rename). Returns the path.

    Raises:
        ConfigError: ``hpo.storage`` was set, after the config was built, to a URL holding a secret.
    """
    import yaml

    if config.hpo.storage:
        check_storage_url(config.hpo.storage)  # never written with a password

    return atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True))


CHOICES: dict[str, tuple] = {
    "data.format": DATA_FORMATS,
    "data.too_long": TOO_LONG,
    "data.sampling": SAMPLINGS,
    "train.precision": PRECISIONS,
    "train.metric_for_best_model": METRICS,
    "train.report_to": ("none", "tensorboard", "mlflow"),
    "train.optim": OPTIMIZERS,
    "train.lr_scheduler": LR_SCHEDULERS,
    "train.deepspeed.stage": ZERO_STAGES,
    "serve.mqm_preset": MQM_PRESET_NAMES,
    "eval.engine": ENGINES,
    "eval.ct2_quantization": CT2_QUANTIZATIONS,
    "hpo.sampler": HPO_SAMPLERS,
    "hpo.pruner": HPO_PRUNERS,
    "hpo.best_model": HPO_BEST_MODEL,
}
"""Fields that take one of a fixed set of values (dotted path -> the values). The notebook form shows
them as dropdowns: register a new field with fixed choices here (other new fields need no entry)."""


# ------------------------------------------------------------------------------------------ model presets

MODEL_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"nllb-200|(^|/)nllb-", "NLLB-200"), (r"m2m100", "M2M100"), (r"opus-mt|marian", "Marian"))
"""(regular expression on the model name, family): the pretrained translation models with a preset."""

PRETRAINED_PRESET: dict = {
    "train": {"learning_rate": 2e-5, "weight_decay": 0.01, "per_device_train_batch_size": 16,
              "gradient_accumulation_steps": 1, "num_train_epochs": 5, "early_stopping_patience": 2,
              "warmup_ratio": 0.05, "label_smoothing": 0.1, "eval_max_pairs": 0},
    "eval": {"num_beams": 5},
    "hpo": {"space": {"learning_rate": {"low": 1e-5, "high": 1e-4, "log": True},
                      "per_device_train_batch_size": {"choices": [8, 16]},
                      "gradient_accumulation_steps": {"low": 1, "high": 4},
                      "weight_decay": {"low": 0.001, "high": 0.1, "log": True},
                      "num_train_epochs": {"low": 2, "high": 6}, "warmup_ratio": {"low": 0.0, "high": 0.1}}},
}
"""Starting values for fine-tuning a pretrained model (NLLB-200, M2M100, Marian): adaptMLLM's (Lankford et
al. 2023, "adaptMLLM: Fine-Tuning Multilingual Language Models on Low-Resource Languages", Information 14(12):
learning rate 2e-5, weight decay 0.01, batch 16) with early stopping after 2 epochs without improvement,
beam 5 and the whole dev set; HPO ranges sized for a pretrained model (learning rate 1e-5 to 1e-4)."""

PRETRAINED_MAX_LR = 1e-4
"""Learning rates above this on a pretrained model usually wreck what it knows (catastrophic forgetting)."""

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
"""A Hugging Face hub model id: ``owner/name``."""


def model_family(name: str) -> Optional[str]:
    """``NLLB-200``, ``M2M100`` or ``Marian`` for a pretrained model name or folder; None for ``tiny``
    and names of no known family."""
    if not name or name.strip() == "tiny":
        return None
    low = name.strip().lower()
    return next((fam for pattern, fam in MODEL_FAMILIES if re.search(pattern, low)), None)


def model_preset(name: str) -> Optional[dict]:
    """A deep copy of :data:`PRETRAINED_PRESET` for a pretrained model (any name but ``tiny``), else None."""
    import copy

    if not name or name.strip() == "tiny":
        return None
    return copy.deepcopy(PRETRAINED_PRESET)


def check_model_name(name: str) -> Optional[str]:
    """Why ``name`` cannot be a model (None when it can): it must be ``tiny``, an existing folder, or a hub
    id ``owner/name`` (``facebook/nllb-200-distilled-600M``). The message names the fix."""
    name = (name or "").strip()
    if name == "tiny" or Path(name).expanduser().is_dir() or HUB_NAME.match(name):
        return None
    hint = ""
    if model_family(name) == "NLLB-200":
        hint = " such as facebook/nllb-200-distilled-600M, facebook/nllb-200-1.3B or facebook/nllb-200-3.3B"
    return (f"{name!r} is neither 'tiny', an existing model folder, nor a hub name owner/model{hint or ' (e.g. facebook/nllb-200-distilled-600M)'}")


def learning_rate_warning(name: str, learning_rate: float) -> Optional[str]:
    """A warning (None if none) when a pretrained model gets a learning rate above :data:`PRETRAINED_MAX_LR`."""
    if model_preset(name) is not None and learning_rate > PRETRAINED_MAX_LR:
        return (f"{learning_rate:g} is high for a pretrained model: above {PRETRAINED_MAX_LR:g} fine-tuning tends to "
                f"erase what it knows (adaptMLLM used 2e-5); try 1e-5 to 1e-4")
    return None


MQM_PRESETS: dict[str, dict[str, float]] = {
    "mqm": {"minor": 1.0, "major": 5.0, "non-translation": 25.0},
    "adaptmllm": {"minor": 1.0, "major": 10.0, "non-translation": 25.0},
}
"""Severity weights (points per error). ``mqm``: Freitag et al. (2021); ``adaptmllm``: minor 1 and
major 10 as in adaptMLLM (Lankford et al. 2023), which has no non-translation level: it keeps 25."""


def mqm_weights(preset: str = "mqm", overrides: Optional[Mapping[str, Optional[float]]] = None) -> dict[str, float]:
    """Severity weights (points per error) of an MQM preset, with optional per-severity overrides.

    Args:
        preset: ``mqm`` (minor 1, major 5, non-translation 25) or ``adaptmllm`` (minor 1, major 10,
            non-translation 25).
        overrides: ``{severity: weight}``; ``None`` values keep the preset's weight.
    Raises:
        ConfigError: an unknown preset or severity, or a negative weight.
    """
    if preset not in MQM_PRESETS:
        raise ConfigError(f"unknown MQM preset {preset!r}; use one of {', '.join(MQM_PRESETS)}")
    weights = dict(MQM_PRESETS[preset])
    for sev, w in (overrides or {}).items():
        if w is None:
            continue
        if sev not in weights:
            raise ConfigError(f"unknown MQM severity {sev!r}; use one of {', '.join(MQM_PRESETS['mqm'])}")
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ConfigError(f"MQM weight of {sev!r} must be a number >= 0, got {w!r}")
        weights[sev] = float(w)
    return weights
