"""The ``hpo:`` section (:class:`HPOConfig`): the Optuna search, its space over ``train.*`` fields and the tiny
model's ``model.tiny.*`` sizes
(:class:`SearchSpaceConfig`, :data:`HPO_DIMENSIONS`, :data:`HPO_SECTIONS`, :func:`check_search_dim`,
:func:`check_hpo_model`), storage and workers.

May import: adaptmllm.config.checks, adaptmllm.config.train, adaptmllm.config.model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from adaptmllm.config.checks import ConfigError, build_section, check, check_storage_url
from adaptmllm.config.model import TinyModelConfig
from adaptmllm.config.train import LR_SCHEDULERS, PRECISIONS, TrainConfig


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
        check(isinstance(value, str), name, f"expected one of {_HPO_CHOICES[dim]}, got {value!r}")
    else:
        value = _as_number(value, name)
        if kind == "int":
            check(isinstance(value, int) or float(value).is_integer(), name, f"must be a whole number, got {value!r}")
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
        check(not extra, f"{name}.{extra[0] if extra else ''}",
               "give either choices or a range (low, high, log, step), not both")
        choices = spec["choices"]
        check(isinstance(choices, (list, tuple)) and len(choices) > 0, f"{name}.choices",
               "must be a non-empty list, e.g. [8, 16, 32]")
        values = [_check_dim_value(dim, v, f"{name}.choices[{i}]") for i, v in enumerate(choices)]
        check(len(set(map(repr, values))) == len(values), f"{name}.choices", f"{values} repeats a value")
        return {"choices": values}
    unknown = [k for k in spec if k not in _RANGE_KEYS]
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; a range has low, high and optionally log or "
                          "step, a list of values has choices")
    if kind == "choice":
        raise ConfigError(f"{name}: {dim} takes choices, e.g. {{choices: [{', '.join(_HPO_CHOICES[dim][1:3])}]}}, "
                          "not a range")
    for key in ("low", "high"):
        check(key in spec, f"{name}.{key}", "missing: a range needs low and high, e.g. {low: 1e-5, high: 9e-5}")
    low = _check_dim_value(dim, spec["low"], f"{name}.low")
    high = _check_dim_value(dim, spec["high"], f"{name}.high")
    check(low <= high, f"{name}.low", f"low {low} > high {high}; swap them")
    log = spec.get("log", False)
    check(isinstance(log, bool), f"{name}.log", f"must be true or false, got {log!r}")
    check(not log or low > 0, f"{name}.log", f"a log range needs low > 0, got {low}")
    out: dict[str, Any] = {"low": low, "high": high, "log": log}
    if spec.get("step") is not None:
        step = _as_number(spec["step"], f"{name}.step")
        check(step > 0, f"{name}.step", "must be > 0")
        check(not log, f"{name}.step", "cannot be combined with log: true")
        out["step"] = step
    if kind == "int":
        check(isinstance(out.get("step", 1), int), f"{name}.step", "must be a whole number for an integer field")
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


def check_hpo_model(config: Any) -> None:
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
        check(values is not None, f"hpo.space.{dim}", f"a range of more than {_MAX_ENUMERATED} values; give choices")
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
        check(isinstance(self.n_trials, int) and self.n_trials >= 1, "hpo.n_trials", "must be >= 1")
        check(self.timeout is None or self.timeout > 0, "hpo.timeout", "must be > 0 seconds (or empty: no limit)")
        check(self.sampler in HPO_SAMPLERS, "hpo.sampler", f"{self.sampler!r} is not one of {HPO_SAMPLERS}")
        check(self.pruner in HPO_PRUNERS, "hpo.pruner", f"{self.pruner!r} is not one of {HPO_PRUNERS}")
        check(self.pruner_startup_trials >= 0, "hpo.pruner_startup_trials", "must be >= 0")
        check(self.pruner_warmup_epochs >= 0, "hpo.pruner_warmup_epochs", "must be >= 0")
        if self.storage is not None and not str(self.storage).strip():
            self.storage = None
        if self.storage is not None:
            self.storage = check_storage_url(self.storage)
        check(self.study_name is None or bool(str(self.study_name).strip()), "hpo.study_name", "must not be blank")
        check(self.heartbeat_interval >= 1, "hpo.heartbeat_interval", "must be >= 1 second")
        check(self.grace_period is None or self.grace_period > self.heartbeat_interval, "hpo.grace_period",
               f"must be > hpo.heartbeat_interval ({self.heartbeat_interval} s)")
        check(self.max_retry >= 0, "hpo.max_retry", "must be >= 0")
        check(self.best_model in HPO_BEST_MODEL, "hpo.best_model",
               f"{self.best_model!r} is not one of {HPO_BEST_MODEL}")
        check(isinstance(self.enqueue, list), "hpo.enqueue", "must be a list of mappings")
        searched = self.space.searched()
        for i, params in enumerate(self.enqueue):
            check(isinstance(params, dict), f"hpo.enqueue[{i}]", "must be a mapping such as {learning_rate: 5e-5}")
            for key, value in params.items():
                check(key in searched, f"hpo.enqueue[{i}].{key}",
                       f"not a searched dimension; searched: {', '.join(searched) or 'none'}")
                params[key] = _check_dim_value(key, value, f"hpo.enqueue[{i}].{key}")
