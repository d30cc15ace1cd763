"""Test sets beyond the run's own split: the general-domain set of the forgetting check (``eval.general_test``;
``demo`` builds one from the demo generator) and the per-direction forgetting sets of a multilingual run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from adaptmllm.config import Config, TinyModelConfig, direction_name
from adaptmllm.data import demo
from adaptmllm.data.demo import DEMO_BASE_SEED
from adaptmllm.data.readers import DataError, Pairs, load_pairs

__all__ = ["GENERAL_DEMO", "demo_general_test", "load_general_test", "load_forgetting_tests"]

GENERAL_DEMO = "demo"
"""``eval.general_test`` value that selects the embedded demo's held-out general-domain pairs."""


# ----------------------------------------------------------------------------- general test set

def demo_general_test(tgt_lang: str, n: int = 200, seed: int = 13) -> tuple[list[str], list[str]]:
    """``n`` general-domain demo pairs English -> ``tgt_lang`` that the demo base never saw in its
    pretraining (its sources are removed), the demo's stand-in for FLORES-200 devtest.

    Raises:
        ValueError: ``tgt_lang`` is not a demo language.
    """
    seen: set[str] = set()
    pretrain = TinyModelConfig().pretrain_pairs
    for i, lang in enumerate(demo.DEMO_TARGETS):
        seen.update(demo.general_pairs(lang, pretrain, seed=DEMO_BASE_SEED + i)[0])
    src, tgt = demo.general_pairs(tgt_lang, 4 * n, seed=10_000 + seed)
    keep = [i for i, s in enumerate(src) if s not in seen][:n]
    return [src[i] for i in keep], [tgt[i] for i in keep]


def load_general_test(config: Config) -> Optional[Any]:
    """The general-domain test set of the forgetting check (``eval.general_test``) as
    :class:`adaptmllm.data.readers.Pairs`, or None when it is not set. Loaded as given (not cleaned, like
    ``data.test``), with the ``data.*`` column/suffix settings and the format detected from the path;
    ``demo``: :func:`demo_general_test` with ``data.test_size`` pairs.

    Raises:
        adaptmllm.data.readers.DataError: the corpus cannot be read, is empty, or ``demo`` is asked for a pair
            the demo does not have.
    """
    spec = config.eval.general_test
    if not spec:
        return None
    if spec == GENERAL_DEMO:
        if config.data.src_lang != "eng_Latn":
            raise DataError(f"eval.general_test=demo: the demo's general-domain pairs are English (eng_Latn) -> "
                            f"demo language, not {config.data.src_lang}; give a general-domain test set such as "
                            "FLORES-200 devtest for your pair")
        try:
            src, tgt = demo_general_test(config.data.tgt_lang, config.data.test_size, config.data.seed)
        except ValueError as e:
            raise DataError(f"eval.general_test=demo: {e}") from e
        return Pairs(src, tgt)
    try:
        pairs = load_pairs(spec, dataclasses.replace(config.data, format="auto"))
    except DataError as e:
        raise DataError(f"eval.general_test: {e}") from e
    if not len(pairs):
        raise DataError(f"eval.general_test: {spec} holds no pairs")
    return pairs


# ---------------------------------------------------------------------------- forgetting

def load_forgetting_tests(config: Any) -> list[tuple[dict, Pairs]]:
    """``eval.forgetting_tests`` loaded: ``[(entry, pairs)]`` (``test: demo`` -> the demo's held-out
    general-domain pairs English -> demo language, ``data.test_size`` of them). Loaded as given.

    Raises:
        DataError: naming the entry: the corpus cannot be read or holds no pairs.
    """

    out = []
    for i, e in enumerate(config.eval.forgetting_tests):
        d = {k: e.get(k) for k in ("src_lang", "tgt_lang", "test", "src_suffix", "tgt_suffix", "src_column",
                                   "tgt_column")}
        where = f"eval.forgetting_tests[{i}] ({direction_name(d)})"
        if d["test"] == "demo":
            if d["src_lang"] != "eng_Latn":
                raise DataError(f"{where}: test=demo has English (eng_Latn) sources only")
            try:
                pairs = Pairs(*demo_general_test(d["tgt_lang"], config.data.test_size, config.data.seed))
            except ValueError as err:
                raise DataError(f"{where}: {err}") from err
        else:
            cfg = dataclasses.replace(config.data, directions=[], replay=[], format="auto", train=None,
                                      dev=None, **{k: d[k] for k in d if k != "test"})
            try:
                pairs = load_pairs(d["test"], cfg)
            except DataError as err:
                raise DataError(f"{where}: {err}") from err
        if not len(pairs):
            raise DataError(f"{where}: no pairs")
        out.append((d, pairs))
    return out
