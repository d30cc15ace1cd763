"""The whole run's :class:`Config` (one field per section) and its files: build it from a mapping
(:func:`config_from_dict`), back to one (:func:`config_to_dict`, :func:`diff_dicts`), read and check a YAML file
naming the line of a bad field (:func:`read_config_file`, :func:`load_config`, :func:`unknown_fields`,
:func:`yaml_line`), write one (:func:`save_config`); :data:`CHOICES`, the fields with fixed values.

May import: every other module of adaptmllm.config, adaptmllm.io.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config.checks import ConfigError, build_section, check_run_name, check_storage_url
from adaptmllm.config.data import DATA_FORMATS, SAMPLINGS, TOO_LONG, DataConfig
from adaptmllm.config.evaluation import CT2_QUANTIZATIONS, ENGINES, EvalConfig
from adaptmllm.config.hpo import HPO_BEST_MODEL, HPO_PRUNERS, HPO_SAMPLERS, HPOConfig, check_hpo_model
from adaptmllm.config.model import ModelConfig
from adaptmllm.config.serve import MQM_PRESET_NAMES, ServeConfig
from adaptmllm.config.train import (LR_SCHEDULERS, METRICS, OPTIMIZERS, PRECISIONS, ZERO_STAGES, GreenConfig,
                                    TrainConfig)
from adaptmllm.io import atomic_write_text


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
