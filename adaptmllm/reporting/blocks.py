"""The report's evaluation sections as blocks (significance, extra metrics, forgetting, checkpoints, error
analysis, HPO, directions) that render to both Markdown and HTML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from adaptmllm.reporting.summary import fmt_number, format_p

__all__ = ["evaluation_blocks", "render_markdown", "evaluation_markdown"]

_LABELS = {"bleu": "BLEU", "chrf": "chrF++", "ter": "TER", "spbleu": "spBLEU", "comet": "COMET"}


_KIND_LABELS = {"empty": "empty output", "copied_source": "copy of the source", "untranslated": "mostly untranslated"}


# A block is a tuple: ("h2", text) | ("p", text) | ("table", headers, rows) | ("img", path, alt)
# | ("pre", text) | ("box", text, css_class). Cells are strings, or (string, css_class) pairs.
# Text may hold **bold** and `code` (rendered in both formats).

def _sig_blocks(m: dict) -> list:
    sig = m.get("significance")
    if not sig:
        return []

    rows = []
    for k, s in sig["metrics"].items():
        lo, hi = s["delta_ci"]
        better = s.get("better")
        cls = "good" if better == "finetuned" else "bad" if better == "baseline" else ""
        rows.append([_LABELS.get(k, k), fmt_number(s["baseline"]), fmt_number(s["finetuned"]), (f"{s['delta']:+.1f}", cls),
                     f"{lo:+.1f} to {hi:+.1f}", format_p(s["p_value"]),
                     ("yes" if s["significant"] else "no", cls)])
    sigs = [f"{_LABELS.get(k, k)}: {s['signature']}" for k, s in sig["metrics"].items()]
    return [("h2", "Significance (paired bootstrap)"),
            ("table", ["Metric", "Baseline", "Fine-tuned", "Difference", "95% CI of the difference", "p",
                       f"Significant (p < {sig['alpha']:g})"], rows),
            ("p", f"{sig['test']}: {sig['n_samples']} resamples of the {sig['n_segments']} test segments, seed "
                  f"{sig['seed']}. The p-value is roughly the probability of a difference this large arising by "
                  "chance if both systems were the same; the interval is the 2.5th to 97.5th percentile of the "
                  "resampled differences. TER: lower is better, so an improvement is negative."),
            ("pre", "\n".join(sigs))]


def _extra_metric_blocks(m: dict) -> list:
    keys = [k for k in ("spbleu", "comet") if any(k in (m.get(s) or {}) for s in ("baseline", "finetuned"))]
    if not keys:
        return []
    rows, sigs = [], []
    for k in keys:
        b, f = (m.get("baseline") or {}).get(k), (m.get("finetuned") or {}).get(k)
        fmt = ".4f" if k == "comet" else ".1f"
        rows.append([_LABELS[k], fmt_number(b, fmt), fmt_number(f, fmt), "n/a" if b is None or f is None else format(f - b, "+" + fmt)])
        sig = ((m.get("finetuned") or m.get("baseline") or {}).get("signatures") or {}).get(k)
        sigs.append(f"{_LABELS[k]}: {sig}")
    return [("h2", "Further metrics"), ("table", ["Metric", "Baseline", "Fine-tuned", "Difference"], rows),
            ("p", "spBLEU: BLEU over SentencePiece pieces of the local model named in its signature. "
                  "COMET: on COMET's own scale (not 0-100)."), ("pre", "\n".join(sigs))]


def _forgetting_blocks(m: dict) -> list:
    f = m.get("forgetting")
    if not f:
        return []

    out: list = [("h2", "Forgetting check (general-domain test set)")]
    if f.get("flagged"):
        out.append(("box", f"Forgetting: general-domain chrF++ fell by {f['drop']:.1f} points, more than the "
                           f"{f['threshold']:g}-point threshold.", "bad"))
    elif f.get("flagged") is False:
        out.append(("box", f"No forgetting flagged: general-domain chrF++ changed by {-f['drop']:+.1f} points "
                           f"(threshold: a drop of {f['threshold']:g}).", "good"))
    rows = []
    for name, s in (("Baseline", f.get("baseline")), ("Fine-tuned", f.get("finetuned"))):
        rows.append([name] + ([fmt_number(s[k]) for k in ("bleu", "chrf", "ter")] if s else ["not scored"] * 3))
    if f.get("delta"):
        sig = ((f.get("significance") or {}).get("metrics") or {})
        cls = "bad" if f.get("flagged") else ""
        rows.append(["Difference"] + [(f"{f['delta'][k]:+.1f}" + (f" ({format_p(sig[k]['p_value'])})" if k in sig else ""),
                                       cls if k == "chrf" else "") for k in ("bleu", "chrf", "ter")])
    out += [("table", ["System", "BLEU", "chrF++", "TER"], rows),
            ("p", f"General-domain test set: `{f.get('source')}` ({f.get('n_segments')} segments). Fine-tuning on "
                  "a narrow domain can make a good model worse elsewhere; this check scores both models on "
                  "general-domain text to show it.")]
    return out


def _checkpoint_blocks(m: dict) -> list:
    cks = m.get("checkpoints")
    if not cks:
        return []
    kept = Path(str((m.get("selected_checkpoint") or {}).get("checkpoint") or m.get("best_checkpoint") or "")).name
    rows = []
    for c in cks:
        g = c.get("general") or {}
        mark = " (kept)" if c["checkpoint"] == kept and m.get("kept") != "baseline" else ""
        rows.append([f"`{c['checkpoint']}`{mark}", fmt_number(c.get("epoch"), "g"), str(c.get("step")),
                     fmt_number(c["dev"]["chrf"]), fmt_number(c["dev"]["bleu"]), fmt_number(g.get("chrf")), fmt_number(g.get("bleu"))])
    out = [("h2", "Per-epoch scores of the remaining checkpoints"),
           ("table", ["Checkpoint", "Epoch", "Step", "Dev chrF++", "Dev BLEU", "General chrF++", "General BLEU"], rows),
           ("p", "Dev: the in-domain dev set; general: the general-domain test set (when given). To keep another "
                 "checkpoint in `model/`: `adaptmllm select-checkpoint --run RUN_DIR --checkpoint NAME`. Only the "
                 "checkpoints still on disk are listed (raise train.save_total_limit to keep more).")]
    if m.get("checkpoint_plot"):
        out.append(("img", m["checkpoint_plot"], "Per-epoch chrF++: in-domain dev vs general-domain test"))
    return out


def _clip(s: str, n: int = 160) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _analysis_blocks(m: dict) -> list:
    a = m.get("error_analysis")
    if not a:
        return []
    both = "baseline" in a.get("systems", [])
    out: list = [("h2", "Error analysis")]
    if both and a.get("change"):
        c = a["change"]
        out.append(("p", f"Sentence-level chrF++ rose for {c['better']} segments, fell for {c['worse']} and stayed "
                         f"the same for {c['same']} (of {a['n_segments']}). Every segment with both outputs and "
                         "scores: `segments.tsv`."))
    unit = a.get("length_unit", "words")
    rows = []
    for b in a.get("length_buckets", []):
        row = [b["bucket"], str(b["n"])]
        if both:
            row.append(fmt_number(b.get("baseline_chrf")))
        row.append(fmt_number(b.get("finetuned_chrf")))
        if both:
            d = b.get("delta")
            row.append(("n/a", "") if d is None else (f"{d:+.1f}", "good" if d > 0 else "bad" if d < 0 else ""))
        rows.append(row)
    heads = [f"Source length ({unit})", "Segments"] + (["Baseline chrF++"] if both else []) + ["Fine-tuned chrF++"]
    heads += ["Difference"] if both else []
    out += [("h3", "By source length"), ("table", heads, rows)]
    fails = a.get("failures", {})
    kinds = list(_KIND_LABELS)
    frows = [[k.capitalize().replace("Finetuned", "Fine-tuned")] + [str(fails[k].get(kind, 0)) for kind in kinds]
             for k in a.get("systems", []) if k in fails]
    out += [("h3", "Empty, copied and untranslated outputs"),
            ("table", ["System"] + [_KIND_LABELS[k].capitalize() for k in kinds], frows),
            ("p", "Copy of the source: the output equals the source (ignoring case and spacing). Mostly untranslated: "
                  "at least half of its words occur in the source but not in the reference (a heuristic, no "
                  "language identification). Segments whose reference equals the source are not counted.")]
    for key, title in (("most_worse", "Segments that got most worse"), ("most_better", "Segments that got most better")):
        segs = a.get(key)
        if not both:
            continue
        out.append(("h3", f"{title} ({len(segs or [])})"))
        if not segs:
            out.append(("p", "None."))
            continue
        rows = [[str(s["index"]), _clip(s["source"]), _clip(s["reference"]), _clip(s["baseline"]), _clip(s["finetuned"]),
                 fmt_number(s["chrf_baseline"]), fmt_number(s["chrf_finetuned"]),
                 (f"{s['delta']:+.1f}", "good" if s["delta"] > 0 else "bad")] for s in segs]
        out.append(("table", ["#", "Source", "Reference", "Baseline", "Fine-tuned", "chrF++ before", "chrF++ after",
                              "Change"], rows))
    return out


def _hpo_blocks(m: dict) -> list:
    h = m.get("hpo")
    if not isinstance(h, dict) or not h:
        return []
    out: list = [("h2", "Hyperparameter search")]
    scalars = []
    for k, v in h.items():
        if isinstance(v, dict) and k != "best_params":
            v = ", ".join(f"{kk.replace('_', ' ')} {_fmt(vv)}" for kk, vv in v.items() if not isinstance(vv, (dict, list)))
        if not isinstance(v, (dict, list)):
            scalars.append([str(k).replace("_", " "), _fmt(v)])
    if scalars:
        out.append(("table", ["", "Value"], scalars))
    best = h.get("best_params")
    if isinstance(best, dict) and best:
        out += [("h3", "Best hyperparameters"), ("table", ["Parameter", "Value"], [[f"`{k}`", _fmt(v)] for k, v in best.items()])]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return format(v, ".4g")
    return str(v)


def _direction_blocks(m: dict) -> list:
    """Per-direction test scores with paired-bootstrap p-values and the macro average (multilingual runs)."""
    dirs = m.get("directions")
    if not dirs:
        return []

    rows = []
    for name, d in dirs.items():
        b, f, sig = d.get("baseline"), d["finetuned"], ((d.get("significance") or {}).get("metrics") or {})
        for label, s in (("baseline", b), ("fine-tuned", f)):
            rows.append([f"`{name}` {label}"] + ([fmt_number(s[k]) for k in ("bleu", "chrf", "ter")] if s else ["not scored"] * 3)
                        + [str(d.get("n_segments", "n/a")), ""])
        if d.get("delta"):
            cls = "good" if d["delta"]["chrf"] > 0 else "bad" if d["delta"]["chrf"] < 0 else ""
            p = ", ".join(f"{_LABELS.get(k, k)} {format_p(sig[k]['p_value'])}" for k in ("chrf", "bleu") if k in sig)
            rows.append([f"`{name}` difference"] + [(f"{d['delta'][k]:+.1f}", cls if k == "chrf" else "")
                                                    for k in ("bleu", "chrf", "ter")] + ["", p])
    b, f = m.get("baseline"), m.get("finetuned")
    rows.append(["**macro average** baseline"] + ([fmt_number(b[k]) for k in ("bleu", "chrf", "ter")] if b else
                                                  ["not scored"] * 3) + ["", ""])
    fine_label = "fine-tuned (discarded, not in model/)" if m.get("kept") == "baseline" else "fine-tuned"
    rows.append([f"**macro average** {fine_label}"] + [fmt_number(f[k]) for k in ("bleu", "chrf", "ter")] + ["", ""])
    sel = (m.get("dev") or {}).get("selected_by") or "macro average"
    return [("h2", "Scores per direction"),
            ("table", ["Direction / system", "BLEU", "chrF++", "TER", "Test segments", "Paired bootstrap p"], rows),
            ("p", "Each direction is scored on its own test set, generating with the forced BOS token of its target "
                  f"language; the macro average is the plain mean over the directions. The best checkpoint was "
                  f"picked by the dev {((m.get('dev') or {}).get('metric') or 'chrf')} of: {sel}. The significance "
                  "section below (if any) pools the test segments of all directions.")]


def _forgetting_direction_blocks(m: dict) -> list:
    """Untrained directions scored before and after fine-tuning, drops over the threshold flagged."""
    fd = m.get("forgetting_directions")
    if not fd:
        return []
    rows, flagged = [], []
    for name, f in fd.items():
        b, t = f.get("baseline"), f["finetuned"]
        cls = "bad" if f.get("flagged") else "good" if f.get("flagged") is False else ""
        rows.append([f"`{name}`", fmt_number(b["chrf"]) if b else "not scored", fmt_number(t["chrf"]),
                     (f"{-f['drop']:+.1f}" if f.get("drop") is not None else "n/a", cls),
                     fmt_number(b["bleu"]) if b else "not scored", fmt_number(t["bleu"]),
                     ("yes" if f.get("flagged") else "no" if f.get("flagged") is False else "n/a", cls),
                     f"`{f.get('source')}` ({f.get('n_segments')})"])
        if f.get("flagged"):
            flagged.append(name)
    thr = next(iter(fd.values())).get("threshold")
    out: list = [("h2", "Forgetting check (directions not trained)")]
    if flagged:
        out.append(("box", f"Forgetting in {', '.join(flagged)}: chrF++ fell by more than {thr:g} points.", "bad"))
    else:
        out.append(("box", f"No forgetting flagged in the untrained directions (threshold: a chrF++ drop of {thr:g}).",
                    "good"))
    out.append(("table", ["Direction", "chrF++ baseline", "chrF++ fine-tuned", "Difference", "BLEU baseline",
                          "BLEU fine-tuned", "Flagged", "Test set (segments)"], rows))
    return out


def evaluation_blocks(m: dict) -> list:
    """The evaluation sections as blocks (see the module's block format): per-direction scores
    (multilingual runs), significance, further metrics, forgetting checks, per-epoch checkpoint scores,
    error analysis and the HPO summary, each only when ``m`` (the ``metrics.json`` dict) holds its data."""
    return (_direction_blocks(m) + _sig_blocks(m) + _extra_metric_blocks(m) + _forgetting_blocks(m)
            + _forgetting_direction_blocks(m) + _checkpoint_blocks(m) + _analysis_blocks(m) + _hpo_blocks(m))


# ----------------------------------------------------------------------------- rendering

def _md_cell(c: Any) -> str:
    text = c[0] if isinstance(c, tuple) else str(c)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list) -> list[str]:
    """Markdown lines of ``blocks`` (images as relative links)."""
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h2", "h3"):
            out += ["", ("## " if kind == "h2" else "### ") + b[1], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "box":
            out += [f"**{b[1]}**", ""]
        elif kind == "pre":
            out += ["```", b[1], "```", ""]
        elif kind == "img":
            out += [f"![{b[2]}]({b[1]})", ""]
        elif kind == "table":
            out.append("| " + " | ".join(b[1]) + " |")
            out.append("|" + "|".join("---" if i == 0 else "---:" if _numeric_col(b[2], i) else "---"
                                      for i in range(len(b[1]))) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
            out.append("")
    while out and out[-1] == "":
        out.pop()
    return [ln for i, ln in enumerate(out) if ln or i == 0 or out[i - 1]]  # no double blank lines


def _numeric_col(rows: list, i: int) -> bool:
    vals = [(r[i][0] if isinstance(r[i], tuple) else str(r[i])) for r in rows if i < len(r)]
    return bool(vals) and all(re.fullmatch(r"[-+]?[\d.]+( \(.*\))?|n/a|p [<=] [\d.]+", v) for v in vals)


def evaluation_markdown(m: dict, hpo_markdown: Optional[str] = None) -> list[str]:
    """Markdown lines of :func:`evaluation_blocks` for ``report.md`` (empty when there is nothing).

    ``hpo_markdown``, the study's own HPO section (``## Hyperparameter search`` with its plots, written by
    :func:`adaptmllm.runs.hpo.artefacts.hpo_markdown`), takes the place of the short table built from
    ``m["hpo"]``, so that the report has one such section."""
    if hpo_markdown is None:
        return render_markdown(evaluation_blocks(m))
    lines = render_markdown(evaluation_blocks({k: v for k, v in m.items() if k != "hpo"}))
    return lines + [""] + hpo_markdown.strip("\n").split("\n")
