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


def bt_plot() -> None:
    h = HERE / "ga-en-bt" / "history.json"
    if not h.is_file():
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    s, v = dev(B16 / "ga-en" / "history.json")
    ax.plot(s, v, "o-", label="real pairs (7,684)")
    s, v = dev(h)
    ax.plot(s, v, "s-", label="real + back-translated pairs, 1:1, from the first step")
    ax.set(title="Irish -> English", xlabel="training steps (batch 16)", ylabel="dev chrF++ (beam 4, 200 pairs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "dev_curves_bt.png", dpi=110)


def search_plot() -> None:
    h = HERE / "search-best" / "history.json"
    if not h.is_file():
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    s, v = dev(B16 / "en-ga" / "history.json")
    ax.plot(s, v, "o-", label="b16 preset (d_model 256, 3+3 layers, vocab 2000)")
    s, v = dev(h)
    ax.plot(s, v, "s-", label="the search's best")
    ax.set(title="English -> Irish", xlabel="training steps", ylabel="dev chrF++ (beam 4, 200 pairs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "dev_curves_search.png", dpi=110)


if __name__ == "__main__":
    joint_plot()
    bt_plot()
    search_plot()
