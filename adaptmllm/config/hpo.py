"""The ``hpo:`` section (:class:`HPOConfig`): the Optuna search, its space over ``train.*`` fields
(:class:`SearchSpaceConfig`, :data:`HPO_DIMENSIONS`, :func:`check_search_dim`), storage and workers.

May import: adaptmllm.config.checks, adaptmllm.config.train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from adaptmllm.config.checks import ConfigError, build_section, check, check_storage_url
from adaptmllm.config.train import PRECISIONS, TrainConfig


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
    "label_smoothing": "float",
    "precision": "choice",
}
"""The searchable ``train.*`` fields and their kind: ``int`` (integer range or choices), ``float``
(real range or choices), ``number`` (an integer range when both bounds are integers, else real) and
``choice`` (choices only)."""
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


def _check_train_value(dim: str, value: Any, name: str) -> Any:
    """Check one value of a search dimension as ``train.<dim>`` would be checked; errors name ``name``."""
    kind = HPO_DIMENSIONS[dim]
    if kind == "choice":
        check(isinstance(value, str), name, f"expected one of {PRECISIONS}, got {value!r}")
    else:
        value = _as_number(value, name)
        if kind == "int":
            check(isinstance(value, int) or float(value).is_integer(), name, f"must be a whole number, got {value!r}")
            value = int(value)
    try:
        TrainConfig(**{dim: value})
    except ConfigError as e:
        raise ConfigError(f"{name}: {str(e).split(': ', 1)[-1]}") from None
    return value


def check_search_dim(dim: str, spec: Any, prefix: str = "hpo.space") -> Any:
    """Validate and normalise one search-space entry of ``train.<dim>``; returns the normalised entry.

    An entry is ``None`` (keep ``train.<dim>``), a fixed value (``3e-5``), a range mapping
    ``{low, high, log?, step?}`` or a choices mapping ``{choices: [...]}`` (a plain list is read as
    choices). Numeric strings (YAML's ``1e-5``) become numbers.

    Raises:
        ConfigError: naming the entry (``hpo.space.learning_rate.low``) and the fix: an unknown
            key, low > high, a log range with low <= 0, a non-integer bound of an integer field, an
            unknown precision, or a value ``train.<dim>`` would refuse.
    """
    name = f"{prefix}.{dim}"
    kind = HPO_DIMENSIONS[dim]
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        spec = {"choices": list(spec)}
    if not isinstance(spec, dict):
        return _check_train_value(dim, spec, name)
    spec = dict(spec)
    if "choices" in spec:
        extra = [k for k in spec if k != "choices"]
        check(not extra, f"{name}.{extra[0] if extra else ''}",
               "give either choices or a range (low, high, log, step), not both")
        choices = spec["choices"]
        check(isinstance(choices, (list, tuple)) and len(choices) > 0, f"{name}.choices",
               "must be a non-empty list, e.g. [8, 16, 32]")
        values = [_check_train_value(dim, v, f"{name}.choices[{i}]") for i, v in enumerate(choices)]
        check(len(set(map(repr, values))) == len(values), f"{name}.choices", f"{values} repeats a value")
        return {"choices": values}
    unknown = [k for k in spec if k not in _RANGE_KEYS]
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; a range has low, high and optionally log or "
                          "step, a list of values has choices")
    check(kind != "choice", name, f"{dim} takes choices, e.g. {{choices: [bf16, fp32]}}, not a range")
    for key in ("low", "high"):
        check(key in spec, f"{name}.{key}", "missing: a range needs low and high, e.g. {low: 1e-5, high: 9e-5}")
    low = _check_train_value(dim, spec["low"], f"{name}.low")
    high = _check_train_value(dim, spec["high"], f"{name}.high")
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
    """The hyperparameter search space over ``train.*`` fields; adaptMLLM's dimensions by default.

    Each entry is a fixed value (``learning_rate: 3e-5``), a range (``{low: 1e-5, high: 9e-5, log:
    true}``, optionally ``step``), or choices (``{choices: [8, 16, 32]}`` or just ``[8, 16, 32]``).
    Empty (null) keeps the value of ``train.<field>``."""

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

    def __post_init__(self) -> None:
        for dim in HPO_DIMENSIONS:
            setattr(self, dim, check_search_dim(dim, getattr(self, dim)))

    def searched(self) -> list[str]:
        """Names of the dimensions given as a range or choices (the others are fixed or kept)."""
        return [d for d in HPO_DIMENSIONS if isinstance(getattr(self, d), dict)]


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
    """The search space (train.* fields)."""
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
                params[key] = _check_train_value(key, value, f"hpo.enqueue[{i}].{key}")
