"""Plots of a run: training curves (loss and dev metric per epoch) and the per-checkpoint in-domain vs
general-domain chrF++ plot.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional

from adaptmllm.io import atomic_write_bytes

__all__ = ["plot_checkpoints", "plot_history"]


def plot_checkpoints(history: list[dict], checkpoints: list[dict], forgetting_info: Optional[dict],
                     path: str | os.PathLike, kept: Optional[str] = None) -> Optional[Path]:
    """Per-epoch chrF++ curves to a PNG: in-domain dev from the training history (greedy, every
    evaluation, epoch 0 = baseline), in-domain dev and general-domain test of each remaining
    checkpoint (beam search), the baseline's general score at epoch 0, and the kept checkpoint
    marked. Returns the path, or None when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hist = [(e["epoch"], e["eval_chrf"]) for e in history or [] if e.get("eval_chrf") is not None
            and e.get("epoch") is not None]
    ck = [c for c in checkpoints or [] if c.get("epoch") is not None]
    if not hist and not ck:
        return None
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if hist:
        ax.plot([h[0] for h in hist], [h[1] for h in hist], marker="o", markersize=3, color="tab:blue", alpha=0.5,
                label="in-domain dev (training evaluation, greedy)")
    if ck:
        ax.plot([c["epoch"] for c in ck], [c["dev"]["chrf"] for c in ck], marker="s", color="tab:blue",
                linestyle="none", label="in-domain dev, checkpoint (beam)")
        gen = [(c["epoch"], c["general"]["chrf"]) for c in ck if c.get("general")]
        base = (forgetting_info or {}).get("baseline")
        if base:
            gen = [(0.0, base["chrf"])] + gen
        if gen:
            ax.plot([g[0] for g in gen], [g[1] for g in gen], marker="D", color="tab:red",
                    label="general-domain test")
        for c in ck:
            if kept and c["checkpoint"] == Path(kept).name:
                ax.axvline(c["epoch"], color="grey", linestyle=":", label=f"kept: {c['checkpoint']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("chrF++ (0-100)")
    ax.set_title("In-domain vs general-domain quality per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue())


# ----------------------------------------------------------------------------- plot

def plot_history(history: list[dict], path: str | os.PathLike) -> Optional[Path]:
    """Draw the training curves of a Hugging Face Trainer ``state.log_history`` to a PNG.

    Left panel: training loss (entries with ``loss``) and dev loss (``eval_loss``) against the
    step; right panel: dev BLEU (``eval_bleu``) and chrF++ (``eval_chrf``) against the epoch.
    Returns the path, or None (and writes nothing) when the history holds none of these.
    """
    def series(key: str, x: str) -> tuple[list, list]:
        pts = [(e[x], e[key]) for e in history or [] if e.get(key) is not None and e.get(x) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    lines = {
        0: [("training loss", *series("loss", "step")), ("dev loss", *series("eval_loss", "step"))],
        1: [("dev BLEU", *series("eval_bleu", "epoch")), ("dev chrF++", *series("eval_chrf", "epoch"))],
    }
    if not any(xs for panel in lines.values() for _, xs, _ in panel):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for i, (xlabel, ylabel) in enumerate((("step", "loss"), ("epoch", "score (0-100)"))):
        ax = axes[i]
        for label, xs, ys in lines[i]:
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if any(xs for _, xs, _ in lines[i]):
            ax.legend()
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("Loss")
    axes[1].set_title("Dev scores")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue())
