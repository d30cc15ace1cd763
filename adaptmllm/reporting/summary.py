"""What a run's numbers say: ``metrics.json`` in its fixed shape (:func:`build_metrics`,
:func:`write_metrics`) and the verdict (:func:`verdict_info`: did fine-tuning help, as data and as one
plain-language paragraph), with the small formatting helpers the reports share. report.md and the model
card are :mod:`adaptmllm.reporting.markdown`, report.html :mod:`adaptmllm.reporting.html`.

Scores are sacrebleu's (0-100, see :mod:`adaptmllm.metrics.corpus`); energy is in kWh, emissions in
kgCO2eq and durations in seconds (see :mod:`adaptmllm.training.green`). Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from adaptmllm.io import atomic_write_json
from adaptmllm.languages import language_name

__all__ = ["write_metrics", "verdict", "build_metrics", "verdict_info", "format_p", "system_labels"]

SCORE_KEYS = ("bleu", "chrf", "ter")
LABELS = {"bleu": "BLEU", "chrf": "chrF++", "ter": "TER"}
SAME = 0.05
"""Differences smaller than this (in score points) read as unchanged: they round to 0.0."""


# ----------------------------------------------------------------------------- helpers

def config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config or {})


def display_language(code: str) -> str:
    try:
        return language_name(code) or code
    except Exception:  # languages.py missing, or the code is unknown to it
        return code


def fmt_number(x: Optional[float], fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _check_scores(name: str, scores: Any) -> Optional[dict]:
    if scores is None:
        return None
    if not isinstance(scores, dict) or any(not isinstance(scores.get(k), (int, float)) for k in SCORE_KEYS):
        raise ValueError(f"metrics[{name!r}] must be a dict with numeric bleu, chrf and ter "
                         "(as adaptmllm.metrics.corpus.score returns), or None")
    return scores


def build_metrics(metrics: dict) -> dict:
    """The fixed ``metrics.json`` shape from ``metrics``: ``baseline`` and ``finetuned`` score
    dicts (baseline may be None), ``delta`` (finetuned minus baseline for bleu/chrf/ter, None
    without a baseline), ``green`` (a :class:`~adaptmllm.training.green.GreenReport` or its dict, or None),
    then any other keys unchanged (``best_checkpoint``, ``data``, ``train``...).

    With ``kept`` (what ``model/`` holds: ``"finetuned"`` or ``"baseline"``), the ``finetuned`` dict gets
    ``"kept": True`` or ``False``: ``False`` means its scores are those of a fine-tuned checkpoint that
    was discarded (never beat the baseline on the dev set) and is not in ``model/``.

    Raises:
        ValueError: ``finetuned`` is missing, or a score dict lacks numeric bleu, chrf or ter.
    """
    if "finetuned" not in metrics:
        raise ValueError("metrics needs a 'finetuned' entry (the fine-tuned model's test scores)")
    base = _check_scores("baseline", metrics.get("baseline"))
    fine = _check_scores("finetuned", metrics["finetuned"])
    if fine is not None and metrics.get("kept") in ("finetuned", "baseline"):
        fine = {**fine, "kept": metrics["kept"] == "finetuned"}
    green = metrics.get("green")
    if green is not None and not isinstance(green, dict):
        green = green.to_dict()
    delta = None if base is None or fine is None else {k: fine[k] - base[k] for k in SCORE_KEYS}
    for k in ("spbleu", "comet"):  # optional metrics, when both systems have them
        if delta is not None and isinstance(base.get(k), (int, float)) and isinstance(fine.get(k), (int, float)):
            delta[k] = fine[k] - base[k]
    out = {"baseline": base, "finetuned": fine, "delta": delta, "green": green}
    out.update({k: v for k, v in metrics.items() if k not in out})
    return out


def _outcome(m: dict) -> Optional[str]:
    delta = m.get("delta")
    if delta is None:
        return None
    for key in ("chrf", "bleu"):
        if abs(delta[key]) >= SAME:
            return "improved" if delta[key] > 0 else "worse"
    return "unchanged"


def _kept_baseline_head(m: dict) -> str:
    """The verdict's first sentence when ``model/`` holds the baseline (``kept == "baseline"``)."""
    dev = m.get("dev") or {}
    label = LABELS.get(dev.get("metric") or "", dev.get("metric") or "the dev metric")
    scores = ""
    if isinstance(dev.get("best"), (int, float)) and isinstance(dev.get("baseline"), (int, float)):
        scores = f" (dev {label}: best fine-tuned checkpoint {dev['best']:.1f}, baseline {dev['baseline']:.1f})"
    return f"model/ holds the baseline, unchanged: fine-tuning never beat it on the dev set{scores}."


def system_labels(m: dict) -> dict:
    """Row labels of the baseline and the fine-tuned model in score tables (report.md, report.html, the
    notebook, the model card), saying which one ``model/`` holds when the fine-tuned checkpoint was
    discarded: ``{"baseline": str, "finetuned": str}``."""
    if m.get("kept") == "baseline":
        return {"baseline": "Baseline (kept in model/)", "finetuned": "Fine-tuned (discarded, not in model/)"}
    return {"baseline": "Baseline", "finetuned": "Fine-tuned"}


def _legacy_verdict(m: dict) -> str:
    """The verdict from the score differences alone (no significance test in ``m``)."""
    d = m["delta"]
    ter = f"TER {d['ter']:+.1f}, lower is better"
    if m.get("kept") == "baseline":
        return (_kept_baseline_head(m) + f" On the test set the discarded fine-tuned checkpoint scored chrF++ "
                f"{d['chrf']:+.1f}, BLEU {d['bleu']:+.1f} and {ter} against the baseline.")
    outcome = _outcome(m)
    if outcome == "improved":
        up = [f"{LABELS[k]} by {d[k]:+.1f}" for k in ("bleu", "chrf") if d[k] >= SAME]
        rest = [f"{LABELS[k]} {d[k]:+.1f}" for k in ("bleu", "chrf") if d[k] < SAME] + [ter]
        return f"Fine-tuning improved {' and '.join(up)} over the baseline ({'; '.join(rest)})."
    if outcome == "worse":
        head = (f"Fine-tuning did not improve on the baseline (chrF++ {d['chrf']:+.1f}, "
                f"BLEU {d['bleu']:+.1f}, {ter})")
        return head + "."
    return (f"Fine-tuning left chrF++ and BLEU unchanged (both within {SAME} points of the "
            f"baseline; {ter}).")


def format_p(p: float) -> str:
    """A p-value as reports print it: ``p < 0.001`` below 0.001, else ``p = 0.123``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


SIG_LABELS = {**LABELS, "spbleu": "spBLEU"}


def verdict_info(metrics: dict) -> dict:
    """Whether fine-tuning helped, as data and as one plain-language paragraph (``text``).

    With a significance test in ``metrics`` (``metrics["significance"]``, see
    :func:`adaptmllm.metrics.significance.paired_bootstrap`) the outcome is decided on chrF++: ``improved``
    or ``worse`` when the paired bootstrap p-value is below the test's ``alpha`` (0.05 by default)
    and the difference is at least 0.05 points, else ``unchanged`` ("did not significantly
    change"); the text gives the difference, its 95% confidence interval and p, then BLEU and TER
    (lower is better) with their p-values. Without one, the older rule applies: chrF++ first, then
    BLEU, a change under 0.05 points reads as unchanged. The first sentence is about the model in
    ``model/``: when the pipeline kept the baseline (``kept == "baseline"``: fine-tuning never beat it
    on the dev set), the text opens with that, and the test comparison follows as the discarded
    fine-tuned checkpoint's. It then says when ``model/`` holds a fine-tuned model that the test set
    finds worse, a hand-selected checkpoint (``selected_checkpoint``), and warns when the forgetting
    check is flagged (``forgetting.flagged``).

    Returns ``{"outcome": "improved"|"unchanged"|"worse"|"not_compared"|"not_scored", "metric":
    "chrf", "significant": bool or None, "p_value", "delta", "delta_ci": [low, high] or None,
    "kept", "forgetting": bool or None, "text"}``.

    Raises:
        ValueError: as :func:`build_metrics` does.
    """
    m = build_metrics(metrics)
    fine, d = m["finetuned"], m["delta"]
    kept = m.get("kept")
    forg = m.get("forgetting") or {}
    info: dict = {"outcome": None, "metric": "chrf", "significant": None, "p_value": None, "delta": None,
                  "delta_ci": None, "kept": kept, "forgetting": forg.get("flagged"), "text": ""}
    if fine is None:
        info.update(outcome="not_scored", text="The fine-tuned model has not been scored.")
        return info
    if d is None:
        info.update(outcome="not_compared", text=(
            f"The fine-tuned model scores BLEU {fine['bleu']:.1f}, chrF++ {fine['chrf']:.1f} and "
            f"TER {fine['ter']:.1f}; the baseline was not scored, so there is no comparison."))
        return info
    sig = ((m.get("significance") or {}).get("metrics") or {})
    if "chrf" not in sig:
        info.update(outcome=_outcome(m), delta=d["chrf"], text=_legacy_verdict(m))
    else:
        s = sig["chrf"]
        delta, (lo, hi), p = s["delta"], s["delta_ci"], s["p_value"]
        significant = bool(s["significant"]) and abs(delta) >= SAME
        outcome = ("improved" if delta > 0 else "worse") if significant else "unchanged"
        ci = f"95% CI {lo:+.1f} to {hi:+.1f}, {format_p(p)}"
        if kept == "baseline":  # the first sentence is about what model/ holds
            who = _kept_baseline_head(m) + " On the test set the discarded fine-tuned checkpoint"
            head = (f"{who} would have improved chrF++ by {delta:.1f} points ({ci})" if outcome == "improved" else
                    f"{who} was worse too, chrF++ {-delta:.1f} points lower ({ci})" if outcome == "worse" else
                    f"{who} did not significantly change chrF++ ({delta:+.1f} points, {ci})")
        elif outcome == "improved":
            head = f"Fine-tuning improved chrF++ by {delta:.1f} points ({ci})"
        elif outcome == "worse":
            head = f"Fine-tuning made chrF++ worse by {-delta:.1f} points ({ci})"
        else:
            head = f"Fine-tuning did not significantly change chrF++ ({delta:+.1f} points, {ci})"
        rest = []
        for k in ("bleu", "spbleu", "ter"):
            if k in sig:
                note = ", lower is better" if k == "ter" else ""
                rest.append(f"{SIG_LABELS[k]} {sig[k]['delta']:+.1f} ({format_p(sig[k]['p_value'])}{note})")
        text = head + ("; " + ", ".join(rest) if rest else "") + "."
        if kept == "finetuned" and outcome == "worse" and not m.get("selected_checkpoint"):
            text += (" model/ holds the fine-tuned model because it beat the baseline on the dev set; "
                     "on this test set the baseline is better.")
        info.update(outcome=outcome, significant=significant, p_value=p, delta=delta, delta_ci=[lo, hi], text=text)
    sel = m.get("selected_checkpoint")
    if sel:
        info["text"] += f" model/ holds {sel.get('checkpoint')} (epoch {fmt_number(sel.get('epoch'), 'g')}), selected by hand."
    if forg.get("flagged"):
        info["text"] += (f" Warning: on the general-domain test set chrF++ fell by {forg['drop']:.1f} points "
                         f"(more than the {forg['threshold']:g}-point threshold): fine-tuning cost general-domain quality.")
    return info


def verdict(metrics: dict) -> str:
    """One plain-language paragraph on whether fine-tuning beat the baseline: the ``text`` of
    :func:`verdict_info` (see there for the rules). ``metrics`` is the ``metrics.json`` shape (see
    :func:`build_metrics`). Raises ``ValueError`` as :func:`build_metrics` does.
    """
    return verdict_info(metrics)["text"]


# ----------------------------------------------------------------------------- metrics.json

def write_metrics(run_dir: str | os.PathLike, metrics: dict) -> Path:
    """Write ``<run_dir>/metrics.json`` (atomically) in the fixed shape of :func:`build_metrics`,
    with ``verdict`` (:func:`verdict_info`) added.

    Returns the path. Raises ``ValueError`` as :func:`build_metrics` does, ``OSError`` on write errors.
    """
    m = build_metrics(metrics)
    m["verdict"] = verdict_info(m)
    return atomic_write_json(Path(run_dir) / "metrics.json", m)
