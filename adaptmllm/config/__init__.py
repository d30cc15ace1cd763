"""The one typed configuration of adaptmllm.

Nested dataclasses whose attribute docstrings are the single source of help text for the CLI
(jsonargparse reads them), the YAML presets and the notebook forms. Every ``__post_init__``
validates its fields and raises :class:`ConfigError` naming the field (``train.learning_rate``)
and the fix. This package imports nothing heavy (no torch, no transformers).

It holds one module per YAML section and the parts they share, each importing only those listed above it:

* ``checks``: :class:`ConfigError`, :func:`check`, :func:`build_section` (unknown fields, secrets), the run
  name and the HPO storage URL;
* ``presets``: pretrained-model families and presets, MQM severity weights;
* ``data``, ``model``, ``train`` (with ``green:``), ``evaluation`` (``eval:``), ``serve``, ``hpo``: the sections;
* ``files``: the whole :class:`Config`, :data:`CHOICES`, and its dicts and YAML files.

Import from here (``from adaptmllm.config import Config, load_config``): this file is the package's
public interface. May import: adaptmllm.io, languages (and its own modules).
"""

from __future__ import annotations

from adaptmllm.config.checks import (ConfigError, build_section, check, check_run_name, check_storage_url,
                                     mask_storage_url)
from adaptmllm.config.data import DATA_FORMATS, DIRECTION_KEYS, SAMPLINGS, TOO_LONG, DataConfig, direction_name
from adaptmllm.config.evaluation import CT2_QUANTIZATIONS, ENGINES, EvalConfig
from adaptmllm.config.files import (CHOICES, Config, config_from_dict, config_to_dict, diff_dicts, load_config,
                                    read_config_file, save_config, unknown_fields, yaml_line)
from adaptmllm.config.hpo import (HPO_BEST_MODEL, HPO_DIMENSIONS, HPO_PRUNERS, HPO_SAMPLERS, HPO_SECTIONS, HPOConfig,
                                  SearchSpaceConfig, check_hpo_model, check_search_dim)
from adaptmllm.config.model import LORA_TARGETS, FreezeConfig, LoraConfig, ModelConfig, TinyModelConfig
from adaptmllm.config.presets import (HUB_NAME, MODEL_FAMILIES, MQM_PRESETS, PRETRAINED_MAX_LR, PRETRAINED_PRESET,
                                      check_model_name, learning_rate_warning, model_family, model_preset,
                                      mqm_weights)
from adaptmllm.config.serve import MQM_PRESET_NAMES, ServeConfig
from adaptmllm.config.train import (LR_SCHEDULERS, METRICS, OPTIMIZERS, PRECISIONS, ZERO_STAGES, DeepSpeedConfig,
                                    GreenConfig, TrainConfig)

__all__ = ["MODEL_FAMILIES", "PRETRAINED_PRESET", "PRETRAINED_MAX_LR", "model_family", "model_preset",
    "check_model_name", "learning_rate_warning", "ConfigError", "DataConfig", "direction_name", "TinyModelConfig",
    "ModelConfig", "LoraConfig", "FreezeConfig", "TrainConfig", "DeepSpeedConfig", "EvalConfig", "GreenConfig",
    "ServeConfig", "SearchSpaceConfig", "HPOConfig", "HPO_DIMENSIONS", "HPO_SECTIONS", "check_search_dim",
    "check_hpo_model", "check_run_name", "check_storage_url",
    "mask_storage_url", "Config", "load_config", "save_config", "config_from_dict", "config_to_dict", "MQM_PRESETS",
    "mqm_weights",
    # also imported by the rest of adaptmllm: the fixed choices of fields, and the helpers of files and forms
    "CHOICES", "PRECISIONS", "METRICS", "DATA_FORMATS", "TOO_LONG", "SAMPLINGS", "DIRECTION_KEYS", "ENGINES",
    "CT2_QUANTIZATIONS", "OPTIMIZERS", "LR_SCHEDULERS", "ZERO_STAGES", "LORA_TARGETS", "MQM_PRESET_NAMES",
    "HPO_SAMPLERS", "HPO_PRUNERS", "HPO_BEST_MODEL", "HUB_NAME", "build_section", "check",
    "diff_dicts", "read_config_file", "unknown_fields", "yaml_line", "__version__"]

__version__ = "0.1.0"
"""The adaptmllm version (reports, model cards, the notebook's environment line)."""
