"""Scoring a model on a set: the test set (:func:`score_model`, shared by every run and ``adaptmllm
evaluate``), the general-domain set of the forgetting check (``eval.general_test``, a chrF++ drop beyond
``eval.forgetting_threshold`` points flagged) and each remaining ``checkpoints/checkpoint-*`` on the dev and
general sets (``eval.score_checkpoints``), so that the user can pick the trade-off
(:func:`adaptmllm.runs.evaluate.select_checkpoint`). Significance and error analysis of a run's
translations are :mod:`adaptmllm.evaluation.outputs`.

Files in the run folder: ``data/general.<src>``/``.<tgt>`` (the general test set as scored),
``general.baseline.hyp.txt``, ``general.finetuned.hyp.txt``. Scores are sacrebleu's, 0-100.
"""

from __future__ import annotations
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config
from adaptmllm.inference.translate import engine_model, eval_kwargs, translate_texts
from adaptmllm.io import atomic_write_text
from adaptmllm.metrics.corpus import score, write_hypotheses
from adaptmllm.training.resilience import checkpoint_folders, checkpoint_step
from adaptmllm.training.setup import load_checkpoint_model

__all__ = ["EvaluationError", "score_general", "forgetting", "list_checkpoints", "score_checkpoints", "read_run_lines",
    "score_model"]

log = logging.getLogger("adaptmllm")


class EvaluationError(RuntimeError):
    """A run folder cannot be (re-)evaluated as asked: a file is missing or a checkpoint is unknown.
    The message names the file or the choices."""


def read_run_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file of a run folder (one segment per line, as the run folder stores them:
    ``finetuned.hyp.txt``, ``data/test.<lang>``), the last line break dropped.

    Raises:
        EvaluationError: the file is missing ("is this a finished adaptmllm run folder?").
    """
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{p}: missing; is this a finished adaptmllm run folder?")
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def score_general(model: Any, tokenizer: Any, config: Config, general: Any, run_dir: str | os.PathLike,
                  system: str, progress: bool = False) -> dict:
    """Translate the general test set with ``model`` and score it like the test set (see
    :func:`adaptmllm.evaluation.scoring.score_model`); writes ``general.<system>.hyp.txt`` and, once,
    ``data/general.<src>``/``.<tgt>``. ``system`` is ``baseline`` or ``finetuned``. Returns the scores."""

    run_dir = Path(run_dir)
    for side, segs in ((config.data.src_lang, general.src), (config.data.tgt_lang, general.tgt)):
        p = run_dir / "data" / f"general.{side}"
        if not p.is_file():
            atomic_write_text(p, "".join(" ".join(s.splitlines()) + "\n" for s in segs))
    s = score_model(model, tokenizer, config, general.src, general.tgt, run_dir / f"general.{system}.hyp.txt",
                    progress, f"{system}: translating the general-domain test set")
    log.info("%s general-domain test: BLEU %.2f chrF++ %.2f TER %.2f", system, s["bleu"], s["chrf"], s["ter"])
    return s


def forgetting(general_scores: dict, config: Config, significance: Optional[dict] = None) -> dict:
    """The forgetting check's verdict from ``{"baseline": scores or None, "finetuned": scores}``.

    Returns ``{"source", "n_segments", "baseline", "finetuned", "delta": {bleu, chrf, ter},
    "metric": "chrf", "drop": chrF++ points lost (negative: gained), "threshold", "flagged",
    "significance"}``. ``flagged`` is True when the chrF++ drop exceeds ``eval.forgetting_threshold``
    (None without a baseline score). Fine-tuning on a narrow domain can cost general quality: the
    field's cautionary example is an English-Romanian baseline at 41.6 BLEU falling to 30.9 after
    fine-tuning on a broad corpus (the figures the issue tracker cites).
    """
    base, fine = general_scores.get("baseline"), general_scores["finetuned"]
    keys = [k for k in ("bleu", "chrf", "ter", "spbleu", "comet") if base and k in base and k in fine]
    delta = {k: fine[k] - base[k] for k in keys} if base else None
    drop = None if delta is None else -delta["chrf"]
    thr = float(config.eval.forgetting_threshold)
    return {"source": config.eval.general_test, "n_segments": fine.get("n_segments"), "baseline": base,
            "finetuned": fine, "delta": delta, "metric": "chrf", "drop": drop, "threshold": thr,
            "flagged": None if drop is None else bool(drop > thr), "significance": significance}


# ----------------------------------------------------------------------------- checkpoints

def list_checkpoints(run_dir: str | os.PathLike) -> list[dict]:
    """The checkpoints left in ``<run_dir>/checkpoints``, oldest first: ``{"checkpoint": name,
    "path", "step", "epoch"}`` (epoch from its ``trainer_state.json``, None if unreadable)."""
    out = []
    for p in reversed(checkpoint_folders(Path(run_dir) / "checkpoints")):
        epoch = None
        try:
            epoch = json.loads((p / "trainer_state.json").read_text(encoding="utf-8")).get("epoch")
        except (OSError, ValueError):
            pass
        out.append({"checkpoint": p.name, "path": str(p), "step": checkpoint_step(p), "epoch": epoch})
    return out


def _scores(model: Any, tokenizer: Any, config: Config, src: list[str], ref: list[str]) -> dict:
    hyps = translate_texts(engine_model(model, tokenizer, config), tokenizer, src, config.data.src_lang,
                           config.data.tgt_lang, **eval_kwargs(config))
    s = score(hyps, ref, config.eval.bleu_tokenize)
    return {k: s[k] for k in ("bleu", "chrf", "ter", "n_segments")}


def score_checkpoints(run_dir: str | os.PathLike, config: Config, tokenizer: Any, dev: Any,
                      general: Optional[Any] = None, progress: bool = False) -> list[dict]:
    """Score every remaining checkpoint on the in-domain dev set (its first ``train.eval_max_pairs``
    pairs, as training evaluates) and on the general test set, with the eval settings
    (``eval.num_beams``...). Returns :func:`list_checkpoints`'s entries (without ``path``) with
    ``"dev"`` and ``"general"`` (None without a general set) score dicts (BLEU, chrF++, TER, 0-100).
    Takes one model load and two translation passes per checkpoint."""
    from tqdm.auto import tqdm

    n = config.train.eval_max_pairs or len(dev)
    dev_src, dev_ref = list(dev.src[:n]), list(dev.tgt[:n])
    out = []
    for c in tqdm(list_checkpoints(run_dir), desc="scoring checkpoints", disable=not progress):
        model = engine_model(load_checkpoint_model(c["path"], config, run_dir), tokenizer, config)  # converted once
        row = {k: v for k, v in c.items() if k != "path"}
        row["dev"] = _scores(model, tokenizer, config, dev_src, dev_ref)
        row["general"] = _scores(model, tokenizer, config, list(general.src), list(general.tgt)) if general else None
        log.info("%s (epoch %s): dev chrF++ %.2f%s", c["checkpoint"], c["epoch"], row["dev"]["chrf"],
                 f", general chrF++ {row['general']['chrf']:.2f}" if row["general"] else "")
        out.append(row)
        del model
    return out


def score_model(model: Any, tokenizer: Any, config: Config, src: list[str], refs: list[str],
                hyp_path: Optional[Path] = None, progress: bool = False, desc: str = "translating") -> dict:
    """Translate ``src`` with the eval settings of ``config`` and score against ``refs``.

    ``model`` is converted for ``eval.engine`` (:func:`adaptmllm.inference.translate.engine_model`) unless it already
    is a CTranslate2 model: a caller scoring one model on several sets converts it once and passes that.

    Returns :func:`adaptmllm.metrics.corpus.score`'s dict plus ``seconds`` (generation time). Writes the
    hypotheses one per line to ``hyp_path`` when given.
    """
    t0 = time.perf_counter()
    hyps = translate_texts(engine_model(model, tokenizer, config), tokenizer, src, config.data.src_lang,
                           config.data.tgt_lang, progress=progress, desc=desc, **eval_kwargs(config))
    seconds = time.perf_counter() - t0
    if hyp_path is not None:
        write_hypotheses(hyp_path, hyps)
    return {**score(hyps, refs, config.eval.bleu_tokenize, spm_model=config.eval.spm_model,
                    comet_model=config.eval.comet_model, sources=src), "seconds": round(seconds, 3)}
