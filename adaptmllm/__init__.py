"""adaptmllm: fine-tune NLLB-200 (and other multilingual translation models) for low-resource pairs.

The small public API::

    import adaptmllm
    cfg = adaptmllm.Config(name="demo")            # or adaptmllm.load_config("configs/demo.yaml")
    result = adaptmllm.run(cfg)                    # -> runs/demo/ (metrics.json, report.md, model/)
    adaptmllm.translate(["The nurse treats the patient."], model="runs/demo/model",
                        src_lang="eng_Latn", tgt_lang="qaa_Latn")
    adaptmllm.score(hypotheses, references)        # BLEU, chrF++, TER with sacrebleu signatures

Heavy libraries (torch, transformers) are imported only when a function needs them.

The public names (``run``, ``translate``, ``score``, ``load_config``, ``Config``...) stay these functions
and classes whatever else is imported: the import system binds an imported submodule as an attribute of
its package, and before the stage sub-packages ``adaptmllm.translate`` (a module then) replaced the
function that way after :func:`run`. No top-level module shares a public name now; the guard below keeps
it so. Reach a module's contents with ``from adaptmllm.inference.translate import translate_texts``.
"""

from __future__ import annotations

import sys
import types
from typing import Sequence

from adaptmllm.config import (Config, ConfigError, DataConfig, EvalConfig, GreenConfig, ModelConfig, TinyModelConfig,
                              TrainConfig, __version__, load_config, save_config)
from adaptmllm.inference.translate import translate_texts
from adaptmllm.metrics.corpus import score as _score
from adaptmllm.modeling.model import load_pretrained
from adaptmllm.runs.pipeline import run as _run

__all__ = [
    "Config", "ConfigError", "DataConfig", "ModelConfig", "TinyModelConfig", "TrainConfig", "EvalConfig",
    "GreenConfig", "load_config", "save_config", "run", "translate", "score", "__version__",
]


def run(config: Config | dict, progress: bool = True):
    """Run the whole pipeline (see :func:`adaptmllm.runs.pipeline.run`). Returns a ``RunResult``."""
    return _run(config, progress=progress)


def translate(texts: Sequence[str], model: str, src_lang: str, tgt_lang: str, num_beams: int = 4,
              max_new_tokens: int = 256, batch_size: int = 32) -> list[str]:
    """Translate N segments with the model folder (or hub name) ``model``; returns N translations."""
    m, tok = load_pretrained(model, src_lang, tgt_lang)
    return translate_texts(m, tok, list(texts), src_lang, tgt_lang, num_beams=num_beams,
                           max_new_tokens=max_new_tokens, batch_size=batch_size)


def score(hypotheses: Sequence[str], references: Sequence[str], bleu_tokenize: str = "13a") -> dict:
    """Corpus BLEU, chrF++ and TER with signatures (see :func:`adaptmllm.metrics.corpus.score`)."""
    return _score(list(hypotheses), list(references), bleu_tokenize)


class _Package(types.ModuleType):
    """The ``adaptmllm`` package object: the import system's binding of a submodule as an attribute of its
    package (``adaptmllm.inference.translate = <module>``) is skipped for the names of the public API in ``__all__``
    (the submodule stays importable: it is in ``sys.modules``)."""

    def __setattr__(self, name: str, value) -> None:
        if name in __all__ and isinstance(value, types.ModuleType) and name in self.__dict__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
