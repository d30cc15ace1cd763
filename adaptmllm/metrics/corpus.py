"""Corpus scores of translations with sacrebleu: BLEU, chrF++ and TER, with their signatures.

sacrebleu is called directly (never ``evaluate.load``, which needs the hub), so scoring works
offline and the numbers equal those of the ``sacrebleu`` command line on the same files.
Scores are on sacrebleu's 0-100 scale and kept at full precision; reports round them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from adaptmllm.io import atomic_write_text

__all__ = ["score", "sentence_chrf", "write_hypotheses", "DOWNLOADING_TOKENIZERS", "MetricUnavailable",
           "spbleu_metric", "spbleu", "comet", "check_optional_metrics"]

DOWNLOADING_TOKENIZERS = ("flores101", "flores200", "spm", "spBLEU-1K")
"""sacrebleu BLEU tokenizers that download a SentencePiece model on first use: refused here."""


def _check_pair(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: "
                         "every hypothesis needs exactly one reference")
    if not hypotheses:
        raise ValueError("no hypotheses to score: the test set is empty")


def score(hypotheses: list[str], references: list[str], bleu_tokenize: str = "13a", *,
          spm_model: Optional[str | os.PathLike] = None, comet_model: Optional[str | os.PathLike] = None,
          sources: Optional[Sequence[str]] = None) -> dict:
    """Score ``hypotheses`` against one reference each with BLEU, chrF++ (chrF, word order 2) and TER.

    Returns ``{"bleu", "chrf", "ter", "signatures": {"bleu", "chrf", "ter"}, "n_segments"}``: the
    scores are floats on sacrebleu's 0-100 scale (TER: lower is better), the signatures are
    sacrebleu's strings (tokenizer, smoothing, version...) that make the scores reproducible.
    Empty hypothesis strings are allowed (they score 0).

    With ``spm_model`` (the local path of a SentencePiece model, e.g. FLORES-200's), ``spbleu``
    (0-100, see :func:`spbleu`) and its signature are added; with ``comet_model`` (a local COMET
    checkpoint) and ``sources``, ``comet`` (COMET's own scale, about 0-1) is added (see :func:`comet`).

    Raises:
        ValueError: the two lists differ in length (both lengths are given), they are empty, or
            ``bleu_tokenize`` is unknown or one of the spBLEU tokenizers (they download a model).
        MetricUnavailable: ``spm_model`` or ``comet_model`` is given but cannot be used (missing
            file, not installed), with what to do.
    """
    from sacrebleu.metrics import BLEU, CHRF, TER

    _check_pair(hypotheses, references)
    if bleu_tokenize in DOWNLOADING_TOKENIZERS:
        raise ValueError(f"BLEU tokenizer {bleu_tokenize!r} downloads a SentencePiece model, which "
                         "adaptmllm does not do (it works offline); use 13a, intl, char, zh or none")
    if bleu_tokenize not in BLEU.TOKENIZERS:
        known = ", ".join(t for t in BLEU.TOKENIZERS if t not in DOWNLOADING_TOKENIZERS)
        raise ValueError(f"unknown BLEU tokenizer {bleu_tokenize!r}; known: {known}")
    hyps, refs = [str(h) for h in hypotheses], [[str(r) for r in references]]
    metrics = {"bleu": BLEU(tokenize=bleu_tokenize), "chrf": CHRF(word_order=2), "ter": TER()}
    out: dict = {name: float(m.corpus_score(hyps, refs).score) for name, m in metrics.items()}
    out["signatures"] = {name: str(m.get_signature()) for name, m in metrics.items()}
    out["n_segments"] = len(hyps)
    if spm_model is not None:
        sp = spbleu_metric(spm_model)
        out["spbleu"] = float(sp.corpus_score(hyps, refs).score)
        out["signatures"]["spbleu"] = str(sp.get_signature())
    if comet_model is not None:
        c = comet(sources if sources is not None else [], hyps, refs[0], comet_model)
        out["comet"] = c["score"]
        out["signatures"]["comet"] = c["signature"]
    return out


def sentence_chrf(hyps: list[str], refs: list[str]) -> list[float]:
    """chrF++ (0-100) of each hypothesis against its reference, in order.

    Raises:
        ValueError: the lists differ in length or are empty.
    """
    from sacrebleu.metrics import CHRF

    _check_pair(hyps, refs)
    chrf = CHRF(word_order=2)
    return [float(chrf.sentence_score(str(h), [str(r)]).score) for h, r in zip(hyps, refs)]


def write_hypotheses(path: str | os.PathLike, hyps: list[str]) -> Path:
    """Write one hypothesis per line (UTF-8), atomically; line breaks inside a hypothesis become
    spaces so that line ``i`` is always segment ``i``. Returns the path. Raises ``OSError``."""
    return atomic_write_text(path, "".join(" ".join(str(h).splitlines()) + "\n" for h in hyps))


# ----------------------------------------------------------------------------- optional metrics

class MetricUnavailable(RuntimeError):
    """An optional metric (spBLEU, COMET) cannot be computed here: its package or its local model
    file is missing. adaptmllm never downloads either; the message says what to install or give."""


FLORES200_SPM_URL = "https://tinyurl.com/flores200sacrebleuspm"
"""Where sacrebleu's ``tokenize='flores200'`` fetches the FLORES-200 SentencePiece model from
(sacrebleu 2.6, ``sacrebleu/tokenizers/tokenizer_spm.py``). adaptmllm never fetches it: download it
once yourself and give its local path as ``eval.spm_model``."""


def _spm_signature(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return f"spm-local-{re.sub(r'[^A-Za-z0-9_.-]', '_', path.name)}-{digest}"


class _LocalSPMTokenizer:
    """sacrebleu-compatible tokenizer over a local SentencePiece model: the same operation as
    sacrebleu's ``TokenizerSPM`` (pieces joined by spaces), without its download."""

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as e:
            raise MetricUnavailable(f"{path}: not a SentencePiece model ({e}); for spBLEU give the FLORES-200 "
                                    f"model that sacrebleu uses ({FLORES200_SPM_URL}) as eval.spm_model") from e
        self._signature = _spm_signature(path)
        self._cache: dict[str, str] = {}

    def signature(self) -> str:
        """``spm-local-<file name>-<first 8 hex digits of its SHA-256>``: names the exact model used."""
        return self._signature

    def __call__(self, line: str) -> str:
        out = self._cache.get(line)
        if out is None:
            out = " ".join(self.sp.EncodeAsPieces(line))
            if len(self._cache) < 65536:
                self._cache[line] = out
        return out


def spbleu_metric(spm_model: str | os.PathLike) -> Any:
    """A sacrebleu ``BLEU`` (spBLEU) whose tokenizer is the local SentencePiece model ``spm_model``.

    spBLEU is BLEU over SentencePiece pieces, as FLORES-101/200 report it (Goyal et al. 2022; NLLB
    Team 2022 use the FLORES-200 model). sacrebleu's own ``tokenize='flores200'`` downloads that
    model; here it is read from the given path instead, and the signature says so honestly:
    ``tok:spm-local-<file name>-<sha256 prefix>``. With the FLORES-200 model file the pieces, and so
    the scores, equal sacrebleu's ``-tok flores200`` (a test checks the equality with a model trained
    on the fly).

    Raises:
        MetricUnavailable: no file at ``spm_model``, or it is not a SentencePiece model.
    """
    from sacrebleu.metrics import BLEU

    path = Path(spm_model).expanduser()
    if not path.is_file():
        raise MetricUnavailable(f"{path}: no SentencePiece model there. spBLEU needs the local path of one "
                                f"(eval.spm_model); adaptmllm never downloads it: fetch the FLORES-200 model "
                                f"once from {FLORES200_SPM_URL} and give its path")
    bleu = BLEU(tokenize="none")
    tok = _LocalSPMTokenizer(path)
    bleu.tokenizer = tok
    bleu.tokenizer_signature = tok.signature()
    return bleu


def spbleu(hypotheses: list[str], references: list[str], spm_model: str | os.PathLike) -> dict:
    """spBLEU (0-100) of ``hypotheses`` against one reference each, tokenized by the local
    SentencePiece model ``spm_model`` (see :func:`spbleu_metric`). Returns ``{"score", "signature"}``.

    Raises:
        ValueError: the lists differ in length or are empty.
        MetricUnavailable: as :func:`spbleu_metric`.
    """
    _check_pair(hypotheses, references)
    m = spbleu_metric(spm_model)
    res = m.corpus_score([str(h) for h in hypotheses], [[str(r) for r in references]])
    return {"score": float(res.score), "signature": str(m.get_signature())}


_COMET_INSTALL = ("COMET is an optional extra: pip install 'adaptmllm[comet]' (it installs unbabel-comet and "
                  "its dependencies, several GB)")


def _comet_checkpoint(comet_model: Optional[str | os.PathLike]) -> Path:
    if comet_model is None or not str(comet_model).strip():
        raise MetricUnavailable("COMET needs the local path of a COMET checkpoint (eval.comet_model, e.g. "
                                ".../wmt22-comet-da/checkpoints/model.ckpt, or the model folder holding it); "
                                "adaptmllm never downloads it")
    path = Path(comet_model).expanduser()
    if path.is_dir() and (path / "checkpoints" / "model.ckpt").is_file():
        path = path / "checkpoints" / "model.ckpt"
    if not path.is_file():
        raise MetricUnavailable(f"{path}: no COMET checkpoint there (a model.ckpt file, or a folder with "
                                "checkpoints/model.ckpt); download one once (e.g. Unbabel/wmt22-comet-da) "
                                "and give its local path as eval.comet_model; adaptmllm never downloads it")
    return path


def check_optional_metrics(spm_model: Optional[str | os.PathLike] = None,
                           comet_model: Optional[str | os.PathLike] = None) -> None:
    """Fail early (before any translation) when an optional metric that was asked for cannot run:
    ``spm_model`` not a file; ``comet_model`` given but not a checkpoint, or COMET not installed.

    Raises:
        MetricUnavailable: with what to install or which path to give.
    """
    if spm_model is not None and not Path(spm_model).expanduser().is_file():
        spbleu_metric(spm_model)  # raises with the message
    if comet_model is not None:
        _comet_checkpoint(comet_model)
        if importlib.util.find_spec("comet") is None:
            raise MetricUnavailable(f"eval.comet_model is set, but the comet package is not installed. {_COMET_INSTALL}")


_COMET_MODELS: dict[str, Any] = {}


def comet(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str],
          comet_model: Optional[str | os.PathLike], batch_size: int = 16) -> dict:
    """COMET (Rei et al. 2020) of ``hypotheses`` given their ``sources`` and ``references``, with the
    local checkpoint ``comet_model`` (optional extra ``adaptmllm[comet]``; never downloaded).

    Returns ``{"score": system score, "scores": per-segment scores, "signature"}`` on COMET's own
    scale (about 0-1 for ``wmt22-comet-da``; not 0-100). Runs on the GPU when one is visible.
    No significance test is run for COMET here.

    Raises:
        ValueError: the three lists differ in length or are empty.
        MetricUnavailable: no checkpoint path, no file there, or the ``comet`` package is missing.
    """
    _check_pair(list(hypotheses), list(references))
    if len(sources) != len(hypotheses):
        raise ValueError(f"COMET needs one source per hypothesis: {len(sources)} sources, {len(hypotheses)} hypotheses")
    path = _comet_checkpoint(comet_model)
    if importlib.util.find_spec("comet") is None:
        raise MetricUnavailable(_COMET_INSTALL)
    import comet as comet_pkg  # pragma: no cover - optional extra, not installed in CI

    model = _COMET_MODELS.get(str(path))  # pragma: no cover
    if model is None:  # pragma: no cover
        model = _COMET_MODELS[str(path)] = comet_pkg.load_from_checkpoint(str(path))
    import torch  # pragma: no cover

    data = [{"src": str(s), "mt": str(h), "ref": str(r)} for s, h, r in zip(sources, hypotheses, references)]
    out = model.predict(data, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0,
                        progress_bar=False)  # pragma: no cover
    version = getattr(comet_pkg, "__version__", "unknown")  # pragma: no cover
    name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return {"score": float(out.system_score), "scores": [float(x) for x in out.scores],
            "signature": f"comet:{name}|nrefs:1|version:{version}"}  # pragma: no cover


log = logging.getLogger(__name__)


def macro(scores: Sequence[dict]) -> dict:
    """Macro average of score dicts (the keys all have in common that are numbers), plus
    ``n_segments`` summed and the first one's ``signatures``."""
    keys = [k for k in scores[0] if all(isinstance(s.get(k), (int, float)) and not isinstance(s.get(k), bool)
                                        for s in scores)]
    out = {k: sum(s[k] for s in scores) / len(scores) for k in keys if k != "n_segments"}
    out["n_segments"] = sum(int(s.get("n_segments", 0)) for s in scores)
    if "signatures" in scores[0]:
        out["signatures"] = scores[0]["signatures"]
    if any(math.isnan(v) for v in out.values() if isinstance(v, float)):
        log.warning("a macro-averaged score is NaN")
    return out
