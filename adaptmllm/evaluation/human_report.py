"""The human evaluation's summary: SQM means and MQM points with 95% confidence intervals per system, its
Markdown table, plot and report files.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from adaptmllm.config import MQM_PRESETS
from adaptmllm.evaluation.human import CATEGORIES, SEVERITIES, HumanEvalError, HumanEvalStore, segment_mqm_points
from adaptmllm.io import atomic_write_json, atomic_write_text, spreadsheet_cell

__all__ = ["t_quantile_975", "mean_ci", "summarize", "summary_markdown", "plot_summary", "write_human_report"]

# -- statistics ----------------------------------------------------------------------------------------
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t distribution with ``df`` degrees of freedom (two-sided 95%).

    Exact to 3 decimals from a table for ``df <= 30``; above, the Cornish-Fisher expansion (error
    < 1e-4). Raises ``ValueError`` for ``df < 1``.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% confidence interval ``(mean, low, high)`` of ``values`` (Student t, sample SD).

    With one value the interval is ``(nan, nan)``; with none all three are ``nan``.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _words(text: str) -> int:
    return len(text.split())


def summarize(annotations: Sequence[Mapping[str, Any]], weights: Optional[Mapping[str, float]] = None) -> list[dict]:
    """Per-system summary of scored items (as returned by :meth:`HumanEvalStore.annotations`).

    For each system (sorted by name), a dict with:
        ``system``; ``ratings`` (scored items, all annotators); ``annotators``; ``sqm_mean``,
        ``sqm_ci_low``, ``sqm_ci_high`` (95% t interval of the mean over ratings; ``nan`` with
        fewer than 2); ``source_words`` (whitespace-separated words of the scored items' sources,
        counted once per rating); ``mqm_points`` (see :func:`segment_mqm_points`);
        ``mqm_per_100_words`` (``100 * mqm_points / source_words``; lower is better);
        ``errors`` (count); ``errors_<category>`` for each of :data:`CATEGORIES` (spaces as ``_``);
        ``errors_<severity>`` for each of :data:`SEVERITIES` (``-`` as ``_``).

    ``weights`` default to the ``mqm`` preset.
    """
    weights = dict(weights or MQM_PRESETS["mqm"])
    by_sys: dict[str, list[Mapping[str, Any]]] = {}
    for a in annotations:
        by_sys.setdefault(a["system"], []).append(a)
    out = []
    for system in sorted(by_sys):
        rows = by_sys[system]
        mean, low, high = mean_ci([float(r["sqm"]) for r in rows])
        words = sum(_words(r["source"]) for r in rows)
        points = sum(segment_mqm_points(r["errors"], weights) for r in rows)
        d: dict[str, Any] = {
            "system": system, "ratings": len(rows), "annotators": len({r["annotator"] for r in rows}),
            "sqm_mean": mean, "sqm_ci_low": low, "sqm_ci_high": high, "source_words": words,
            "mqm_points": points, "mqm_per_100_words": (100.0 * points / words) if words else math.nan,
            "errors": sum(len(r["errors"]) for r in rows),
        }
        for c in CATEGORIES:
            d[f"errors_{c.replace(' ', '_')}"] = sum(1 for r in rows for e in r["errors"] if e["category"] == c)
        for s in SEVERITIES:
            d[f"errors_{s.replace('-', '_')}"] = sum(1 for r in rows for e in r["errors"] if e["severity"] == s)
        out.append(d)
    return out


def _num(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def summary_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    """The summary as a markdown table (one row per system); ``_no ratings yet_`` when empty."""
    if not summary:
        return "_No ratings yet._"
    cats = [f"errors_{c.replace(' ', '_')}" for c in CATEGORIES]
    head = ["system", "ratings", "annotators", "SQM mean [95% CI]", "MQM / 100 words", "errors"] + \
        [c.replace("_", " ") for c in CATEGORIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        ci = "" if math.isnan(s["sqm_ci_low"]) else f" [{s['sqm_ci_low']:.2f}, {s['sqm_ci_high']:.2f}]"
        cells = [s["system"], s["ratings"], s["annotators"], _num(s["sqm_mean"]) + ci, _num(s["mqm_per_100_words"]),
                 s["errors"]] + [s[c] for c in cats]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def plot_summary(summary: Sequence[Mapping[str, Any]], path: Optional[str | Path] = None,
                 weights: Optional[Mapping[str, float]] = None,
                 annotations: Optional[Sequence[Mapping[str, Any]]] = None) -> Any:
    """Bar charts per system: mean SQM with its 95% CI (higher is better) and MQM points per 100
    source words (lower is better), stacked by error category when ``annotations`` are given.

    Returns the matplotlib ``Figure``; also saves it as PNG to ``path`` when given.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: thread-safe, no GUI backend

    weights = dict(weights or MQM_PRESETS["mqm"])
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    systems = [s["system"] for s in summary]
    x = list(range(len(systems)))
    means = [0.0 if math.isnan(s["sqm_mean"]) else s["sqm_mean"] for s in summary]
    err_lo = [0.0 if math.isnan(s["sqm_ci_low"]) else s["sqm_mean"] - s["sqm_ci_low"] for s in summary]
    err_hi = [0.0 if math.isnan(s["sqm_ci_high"]) else s["sqm_ci_high"] - s["sqm_mean"] for s in summary]
    colors = colormaps["tab10"].colors
    ax1.bar(x, means, yerr=[err_lo, err_hi], capsize=6, color=[colors[i % 10] for i in x])
    ax1.set_ylim(0, 6)
    ax1.set_title("SQM (0-6, higher is better), 95% CI", fontsize=10)
    ax1.set_xticks(x, systems)
    if annotations is not None:
        bottom = [0.0] * len(systems)
        for ci, cat in enumerate(CATEGORIES):
            vals = []
            for s in summary:
                rows = [a for a in annotations if a["system"] == s["system"]]
                pts = 0.0
                for r in rows:
                    if any(e["severity"] == "non-translation" for e in r["errors"]):
                        # a non-translation's points go to the category of its non-translation error
                        nt = next(e for e in r["errors"] if e["severity"] == "non-translation")
                        pts += weights["non-translation"] if nt["category"] == cat else 0.0
                    else:
                        pts += sum(weights[e["severity"]] for e in r["errors"] if e["category"] == cat)
                vals.append(100.0 * pts / s["source_words"] if s["source_words"] else 0.0)
            ax2.bar(x, vals, bottom=bottom, label=cat, color=colormaps["Set2"].colors[ci % 8])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax2.legend(fontsize=7, loc="best")
    else:
        ax2.bar(x, [0.0 if math.isnan(s["mqm_per_100_words"]) else s["mqm_per_100_words"] for s in summary],
                color=[colors[i % 10] for i in x])
    ax2.set_title("MQM points per 100 source words (lower is better)", fontsize=10)
    ax2.set_xticks(x, systems)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def write_human_report(db_path: str | Path, out_dir: Optional[str | Path] = None,
                 weights: Optional[Mapping[str, float]] = None) -> dict:
    """Summarise a human evaluation database into ``out_dir`` (default: the database's folder):
    ``human_eval_annotations.csv`` (:meth:`HumanEvalStore.export_csv`), ``human_eval_summary.csv``
    and ``.json`` (:func:`summarize`), ``human_eval_summary.md`` (the table) and
    ``human_eval.png`` (:func:`plot_summary`).

    Returns ``{"summary": [...], "markdown": str, "paths": {name: Path}}``.

    Raises:
        HumanEvalError: the database does not exist or holds no items.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise HumanEvalError(f"{db_path}: no human evaluation database there; serve the run with "
                             "`adaptmllm serve` first so that annotators can rate it")
    store = HumanEvalStore(db_path)
    out = Path(out_dir) if out_dir is not None else db_path.parent
    weights = dict(weights or MQM_PRESETS["mqm"])
    annotations = store.annotations()
    summary = summarize(annotations, weights)
    md = summary_markdown(summary)
    paths = {"annotations": store.export_csv(out / "human_eval_annotations.csv", weights)}
    buf = io.StringIO()
    if summary:
        w = csv.DictWriter(buf, fieldnames=list(summary[0]))
        w.writeheader()
        for s in summary:
            w.writerow({k: spreadsheet_cell(_num(v, 4) if isinstance(v, float) else v) for k, v in s.items()})
    paths["summary_csv"] = atomic_write_text(out / "human_eval_summary.csv", buf.getvalue())
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()} for s in summary]
    paths["summary_json"] = atomic_write_json(out / "human_eval_summary.json",
                                              {"weights": weights, "systems": clean, "meta": store.meta})
    paths["summary_md"] = atomic_write_text(out / "human_eval_summary.md", md + "\n")
    paths["plot"] = out / "human_eval.png"
    plot_summary(summary, paths["plot"], weights, annotations)
    return {"summary": summary, "markdown": md, "paths": paths}
