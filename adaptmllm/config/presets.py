"""Presets that follow from a name: a pretrained model's family and starting values (:func:`model_family`,
:func:`model_preset`, :data:`PRETRAINED_PRESET`, :data:`PRETRAINED_MAX_LR`, :func:`check_model_name`,
:func:`learning_rate_warning`) and the MQM severity weights of human evaluation (:func:`mqm_weights`).

May import: adaptmllm.config.checks.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Optional

from adaptmllm.config.checks import ConfigError


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
