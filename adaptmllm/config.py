"""The one typed configuration of adaptmllm.

Nested dataclasses whose attribute docstrings are the single source of help text for the CLI
(jsonargparse reads them), the YAML presets and the notebook forms. Every ``__post_init__``
validates its fields and raises :class:`ConfigError` naming the field (``train.learning_rate``)
and the fix. This module imports nothing heavy (no torch, no transformers).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "ConfigError",
    "DataConfig",
    "TinyModelConfig",
    "ModelConfig",
    "TrainConfig",
    "EvalConfig",
    "GreenConfig",
    "ServeConfig",
    "Config",
    "load_config",
    "save_config",
    "config_from_dict",
    "config_to_dict",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METRICS = ("chrf", "bleu", "ter")
DATA_FORMATS = ("auto", "text", "tsv", "csv", "jsonl", "hf")


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field (dotted path) and the fix."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


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
    drop_duplicates: bool = True
    """Cleaning: drop repeated (source, target) pairs."""
    drop_identical: bool = True
    """Cleaning: drop pairs whose source equals its target (untranslated copies)."""
    dev_size: int = 200
    """Pairs split off for the dev set when ``dev`` is empty."""
    test_size: int = 200
    """Pairs split off for the test set when ``test`` is empty."""
    max_train_pairs: int = 0
    """Use at most this many training pairs after cleaning (0: all). Handy for a quick trial."""
    demo_train_pairs: int = 1500
    """Size of the embedded demo's in-domain training corpus (pairs)."""
    seed: int = 13
    """Seed of the deterministic dev/test split and of the demo corpus."""

    def __post_init__(self) -> None:
        from .languages import check_code  # light module

        check_code(self.src_lang, "data.src_lang")
        check_code(self.tgt_lang, "data.tgt_lang")
        _check(self.src_lang != self.tgt_lang, "data.tgt_lang",
               f"source and target are both {self.src_lang}; pick two different languages")
        _check(self.format in DATA_FORMATS, "data.format", f"{self.format!r} is not one of {DATA_FORMATS}")
        _check(self.max_chars > 0, "data.max_chars", "must be > 0")
        _check(self.max_length_ratio >= 1.0, "data.max_length_ratio", "must be >= 1.0")
        _check(self.dev_size >= 1, "data.dev_size", "must be >= 1")
        _check(self.test_size >= 1, "data.test_size", "must be >= 1")
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

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model.name_or_path", "give 'tiny', a hub name or a local folder")
        _check(self.max_source_length > 0, "model.max_source_length", "must be > 0")
        _check(self.max_target_length > 0, "model.max_target_length", "must be > 0")
        if isinstance(self.tiny, dict):
            self.tiny = _build(TinyModelConfig, self.tiny, "model.tiny")


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
    """Share of the training steps with a linear learning-rate warm-up."""
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
    seed: int = 42
    """Seed of model initialisation, data order and dropout."""
    resume: bool = False
    """Resume from the last checkpoint in the run folder (after a crash or kill)."""
    report_to: str = "none"
    """Experiment tracking through the Trainer: none, tensorboard or mlflow."""

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0, e.g. 5e-5")
        _check(self.learning_rate < 1, "train.learning_rate", f"{self.learning_rate} is far too large; try 1e-5 to 1e-3")
        _check(self.num_train_epochs > 0, "train.num_train_epochs", "must be > 0")
        _check(self.per_device_train_batch_size >= 1, "train.per_device_train_batch_size", "must be >= 1")
        _check(self.per_device_eval_batch_size >= 1, "train.per_device_eval_batch_size", "must be >= 1")
        _check(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be >= 1")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.warmup_ratio < 1, "train.warmup_ratio", "must be in [0, 1)")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.precision in PRECISIONS, "train.precision", f"{self.precision!r} is not one of {PRECISIONS}")
        _check(self.metric_for_best_model in METRICS, "train.metric_for_best_model",
               f"{self.metric_for_best_model!r} is not one of {METRICS}")
        _check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0 (0 turns it off)")
        _check(self.eval_every_epochs >= 1, "train.eval_every_epochs", "must be >= 1")
        _check(self.eval_max_pairs >= 0, "train.eval_max_pairs", "must be >= 0 (0 means all)")
        _check(self.save_total_limit >= 1, "train.save_total_limit", "must be >= 1")
        _check(self.logging_steps >= 1, "train.logging_steps", "must be >= 1")
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

    def __post_init__(self) -> None:
        _check(self.num_beams >= 1, "eval.num_beams", "must be >= 1")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _check(self.bleu_tokenize not in ("flores101", "flores200", "spm"), "eval.bleu_tokenize",
               "spBLEU tokenizers download a model; use 13a here")


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
    batch_wait_ms: float = 5.0
    """Milliseconds the batcher waits for more requests to fill a batch."""
    request_timeout_s: float = 600.0
    """A translation request that waits longer than this many seconds fails with a message."""
    mqm_preset: str = "mqm"
    """MQM severity weights: mqm (minor 1, major 5, non-translation 25) or adaptmllm (minor 1, major 10, non-translation 25)."""
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

    def __post_init__(self) -> None:
        _check(bool(self.host), "serve.host", "give an address such as 127.0.0.1")
        _check(self.port is None or 0 < self.port < 65536, "serve.port", "must be in 1..65535 (or empty)")
        for name in ("num_beams", "max_new_tokens", "max_beams", "max_new_tokens_limit", "max_input_chars",
                     "max_file_lines", "max_upload_bytes", "concurrency_limit", "queue_size", "max_batch_segments"):
            _check(getattr(self, name) >= 1, f"serve.{name}", "must be >= 1")
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
        from .humaneval import mqm_weights

        return mqm_weights(self.mqm_preset, {"minor": self.mqm_minor, "major": self.mqm_major,
                                             "non-translation": self.mqm_non_translation})


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

    def __post_init__(self) -> None:
        _check(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
               f"{self.name!r} must be a plain folder name such as 'demo'")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, dict) and isinstance(f.default_factory, type):
                setattr(self, f.name, _build(f.default_factory, v, f.name))

    @property
    def run_dir(self) -> Path:
        """The run folder ``<runs_dir>/<name>``."""
        return Path(self.runs_dir) / self.name


def _build(cls: type, data: dict, prefix: str) -> Any:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known fields: {', '.join(known)}"
            raise ConfigError(f"{name}: unknown field{hint}")
        f = known[key]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and is_dataclass(sub) and isinstance(value, dict):
            value = _build(sub, value, name)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a (nested) dict such as a parsed YAML file.

    Raises:
        ConfigError: an unknown field (with the closest known names) or an invalid value.
    """
    return _build(Config, data or {}, "")


def config_to_dict(config: Any) -> dict:
    """The config as a plain nested dict (YAML-ready)."""
    return dataclasses.asdict(config)


def load_config(path: str | os.PathLike) -> Config:
    """Read a YAML config file.

    Raises:
        ConfigError: the file is missing, is not valid YAML (with its line), or holds invalid values.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file; see configs/ for presets such as configs/demo.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    try:
        return config_from_dict(data or {})
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from e


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write the config as YAML, atomically (temporary file + rename). Returns the path."""
    import yaml

    from .io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True))
