"""Significance (paired bootstrap), error analysis and the forgetting check from the translations a run left in
its folder; the entries merged into metrics.json.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from adaptmllm.config import Config
from adaptmllm.evaluation.scoring import forgetting, read_run_lines
from adaptmllm.metrics.analysis import error_analysis, write_segments_tsv
from adaptmllm.metrics.significance import paired_bootstrap
from adaptmllm.reporting.plots import plot_checkpoints

__all__ = ["evaluate_outputs"]

log = logging.getLogger("adaptmllm")


# ----------------------------------------------------------------------------- all together

def evaluate_outputs(run_dir: str | os.PathLike, config: Config, test_src: list[str], test_ref: list[str], *,
                     general_scores: Optional[dict] = None, checkpoints: Optional[list] = None,
                     history: Optional[list] = None, kept: Optional[str] = None) -> dict:
    """Significance, error analysis and the forgetting check from the translations already in the
    run folder (``baseline.hyp.txt`` when present, ``finetuned.hyp.txt``, ``general.*.hyp.txt``).

    Returns the entries to merge into ``metrics.json``: ``significance`` (see
    :func:`adaptmllm.metrics.significance.paired_bootstrap`; None without baseline translations),
    ``error_analysis`` (see :func:`adaptmllm.metrics.analysis.error_analysis`, without the per-segment
    scores, which go to ``segments.tsv``), ``forgetting`` (see :func:`forgetting`, when
    ``general_scores`` is given) and ``checkpoints`` (when given; its plot goes to
    ``checkpoint_scores.png``).

    Raises:
        EvaluationError: ``finetuned.hyp.txt`` is missing.
    """
    run_dir, ev = Path(run_dir), config.eval
    fine = read_run_lines(run_dir / "finetuned.hyp.txt")
    base_path = run_dir / "baseline.hyp.txt"
    base = read_run_lines(base_path) if base_path.is_file() else None
    metrics = ["chrf", "bleu", "ter"] + (["spbleu"] if ev.spm_model else [])
    out: dict = {"significance": None}
    if base is not None:
        out["significance"] = paired_bootstrap(base, fine, test_ref, metrics=metrics, bleu_tokenize=ev.bleu_tokenize,
                                               spm_model=ev.spm_model, n_samples=ev.bootstrap_samples,
                                               alpha=ev.significance_level)
    analysis = error_analysis(test_src, test_ref, fine, base, n=ev.error_analysis_n, src_lang=config.data.src_lang)
    write_segments_tsv(run_dir / "segments.tsv", analysis, test_src, test_ref, fine, base)
    analysis.pop("sentence_chrf")
    out["error_analysis"] = analysis
    if general_scores and general_scores.get("finetuned"):
        sig = None
        gb, gf = run_dir / "general.baseline.hyp.txt", run_dir / "general.finetuned.hyp.txt"
        gref = run_dir / "data" / f"general.{config.data.tgt_lang}"
        if general_scores.get("baseline") and gb.is_file() and gf.is_file() and gref.is_file():
            sig = paired_bootstrap(read_run_lines(gb), read_run_lines(gf), read_run_lines(gref), metrics=metrics,
                                   bleu_tokenize=ev.bleu_tokenize, spm_model=ev.spm_model,
                                   n_samples=ev.bootstrap_samples, alpha=ev.significance_level)
        out["forgetting"] = forgetting(general_scores, config, sig)
        if out["forgetting"]["flagged"]:
            log.warning("forgetting: general-domain chrF++ fell by %.2f points (threshold %.2f)",
                        out["forgetting"]["drop"], out["forgetting"]["threshold"])
    if checkpoints is not None:
        out["checkpoints"] = checkpoints
        png = plot_checkpoints(history or [], checkpoints, out.get("forgetting"), run_dir / "checkpoint_scores.png",
                               kept)
        out["checkpoint_plot"] = png.name if png else None
    return out
