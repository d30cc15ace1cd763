"""The search space of a study: which precisions this machine allows, :func:`suggest`, a trial's config from
the study's ``hpo.space`` (test it with ``optuna.trial.FixedTrial``), and :func:`tokenizer_dir`, the
SentencePiece folder a trial of the tiny model uses (one per searched vocabulary size).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import HPO_DIMENSIONS, HPO_SECTIONS, Config

__all__ = ["allowed_precisions", "suggest", "tokenizer_dir"]

log = logging.getLogger("adaptmllm")


# ----------------------------------------------------------------------------- search space

_PRECISIONS_HERE: Optional[list[str]] = None


def allowed_precisions() -> list[str]:
    """Precisions this machine can train in: always fp32 and auto; fp16 with a CUDA GPU; bf16 with a
    CUDA GPU that supports it (Ampere or newer). Cached per process."""
    global _PRECISIONS_HERE
    if _PRECISIONS_HERE is None:
        import torch

        allowed = ["auto", "fp32"]
        if torch.cuda.is_available():
            allowed.append("fp16")
            if torch.cuda.is_bf16_supported():
                allowed.append("bf16")
        _PRECISIONS_HERE = allowed
    return list(_PRECISIONS_HERE)


def _precision_choices(choices: list[str]) -> list[str]:
    allowed = allowed_precisions()
    usable = [c for c in choices if c in allowed]
    if len(usable) < len(choices):
        log.debug("hpo.space.precision: %s cannot run here; searching %s", sorted(set(choices) - set(usable)), usable)
    return usable or ["fp32"]


def suggest(trial: Any, config: Config) -> Config:
    """The full config of one trial: ``config`` with every ``hpo.space`` dimension sampled by ``trial``.

    Each dimension goes to its section (:data:`adaptmllm.config.HPO_SECTIONS`): ``train.<dim>``, or
    ``model.tiny.<dim>`` for the tiny model's sizes (vocab_size, d_model, encoder_layers,
    decoder_layers, ffn_dim, attention_heads, dropout). Optuna's parameter names are the dimension
    names. Ranges use ``trial.suggest_float`` (``suggest_int`` for integer fields, and for
    ``num_train_epochs`` with integer bounds), choices ``trial.suggest_categorical``; fixed values
    are set without asking the trial, empty entries keep the field's value. Precision choices this
    machine cannot run are dropped first (see :func:`allowed_precisions`); a single one left is
    set, not searched. ``train.resume`` is off: every trial trains from the untouched model. Works
    with ``optuna.trial.FixedTrial`` (give the searched dimensions only).

    Raises:
        ConfigError: a sampled value is invalid for its section (naming the field); the config's
            own check (:func:`adaptmllm.config.check_hpo_model`) refuses spaces where that can happen.
        ValueError: a ``FixedTrial`` lacks a searched dimension (Optuna's error).
    """
    space = config.hpo.space
    values: dict[str, dict[str, Any]] = {"train": {"resume": False}, "model.tiny": {}}
    for dim, kind in HPO_DIMENSIONS.items():
        spec = getattr(space, dim)
        if spec is None:
            continue
        target = values[HPO_SECTIONS[dim]]
        if not isinstance(spec, dict):
            target[dim] = spec
            continue
        if "choices" in spec:
            choices = list(spec["choices"])
            if dim == "precision":
                choices = _precision_choices(choices)
            target[dim] = choices[0] if len(choices) == 1 else trial.suggest_categorical(dim, choices)
            continue
        low, high, log_scale, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        as_int = kind == "int" or (kind == "number" and isinstance(low, int) and isinstance(high, int)
                                   and isinstance(step if step is not None else 1, int))
        if low == high:
            target[dim] = low
        elif as_int:
            target[dim] = trial.suggest_int(dim, int(low), int(high), step=int(step or 1), log=log_scale)
        else:
            target[dim] = trial.suggest_float(dim, float(low), float(high), step=step, log=log_scale)
    train = dataclasses.replace(config.train, **values["train"])
    model = config.model
    if values["model.tiny"]:
        model = dataclasses.replace(model, tiny=dataclasses.replace(model.tiny, **values["model.tiny"]))
    return dataclasses.replace(config, train=train, model=model)


def tokenizer_dir(config: Config) -> Path:
    """The SentencePiece folder of a trial (``config``: the trial's config, from :func:`suggest`) of the tiny
    model built from scratch: ``<run folder>/tokenizer-v<model.tiny.vocab_size>`` when ``hpo.space.vocab_size``
    is set, so that each vocabulary size has its own model (trained by the first trial of that size,
    reused by the others and by the best model's baseline), else ``<run folder>/tokenizer`` as before."""
    if config.hpo.space.vocab_size is None:
        return config.run_dir / "tokenizer"
    return config.run_dir / f"tokenizer-v{config.model.tiny.vocab_size}"


def max_epochs(config: Config) -> int:
    spec = config.hpo.space.num_train_epochs
    if isinstance(spec, dict):
        top = max(spec["choices"]) if "choices" in spec else spec["high"]
    else:
        top = spec if spec is not None else config.train.num_train_epochs
    return max(1, math.ceil(top / config.train.eval_every_epochs))
