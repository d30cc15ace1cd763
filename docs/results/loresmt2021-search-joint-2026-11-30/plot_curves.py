"""Dev curves of this record, from the committed history.json files (run from the repository root):
python docs/results/loresmt2021-search-joint-2026-11-30/plot_curves.py"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
B16 = HERE.parent / "loresmt2021-cpu-b16-2026-11-30"


def dev(path: Path, key: str = "eval_chrf") -> tuple[list[int], list[float]]:
    rows = [r for r in json.loads(path.read_text()) if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def joint_plot() -> None:
    h = HERE / "multi" / "history.json"
    if not h.is_file():
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (sep, key, title) in zip(axes, [
            ("en-ga", "eval_eng_Latn->gle_Latn_chrf", "English -> Irish"),
            ("ga-en", "eval_gle_Latn->eng_Latn_chrf", "Irish -> English")]):
        s, v = dev(B16 / sep / "history.json")
        ax.plot([2 * x for x in s], v, "o-", label="separate model (x: steps of both separate runs)")
        s, v = dev(h, key)
        ax.plot(s, v, "s-", label="one model for both directions")
        ax.set(title=title, xlabel="training steps, both directions together (batch 16)", ylabel="dev chrF++ (beam 4)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "dev_curves_joint.png", dpi=110)


def against_b16(run: str, b16: str, title: str, labels: tuple[str, str], out: str) -> None:
    """Dev chrF++ of ``run`` (a sub-folder here) beside the b16 run ``b16``, by training step."""
    h = HERE / run / "history.json"
    if not h.is_file():
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for path, marker, label in ((B16 / b16 / "history.json", "o-", labels[0]), (h, "s-", labels[1])):
        s, v = dev(path)
        ax.plot(s, v, marker, label=label)
    ax.set(title=title, xlabel="training steps (batch 16)", ylabel="dev chrF++ (beam 4, 200 pairs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / out, dpi=110)


if __name__ == "__main__":
    joint_plot()
    against_b16("ga-en-bt", "ga-en", "Irish -> English", ("real pairs (7,684)",
                "real + back-translated pairs, 1:1, from the first step"), "dev_curves_bt.png")
    against_b16("search-best", "en-ga", "English -> Irish", ("b16 preset (d_model 256, 3+3 layers, vocab 2000)",
                "the search's best (d_model 128, 2+4 layers, vocab 1000)"), "dev_curves_search.png")
