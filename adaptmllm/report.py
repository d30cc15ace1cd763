"""What a run leaves for people: ``metrics.json``, ``report.md``, a training-curve PNG and the
model card (``README.md``) of the fine-tuned model.

Scores are sacrebleu's (0-100, see :mod:`adaptmllm.metrics`); energy is in kWh, emissions in
kgCO2eq and durations in seconds (see :mod:`adaptmllm.green`). Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from .io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["plot_history", "write_metrics", "write_report", "write_model_card", "verdict",
           "build_metrics", "verdict_info", "format_p", "system_labels"]

SCORE_KEYS = ("bleu", "chrf", "ter")
LABELS = {"bleu": "BLEU", "chrf": "chrF++", "ter": "TER"}
SAME = 0.05
"""Differences smaller than this (in score points) read as unchanged: they round to 0.0."""


# ----------------------------------------------------------------------------- helpers

def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config or {})


def _language_name(code: str) -> str:
    try:
        from .languages import language_name

        return language_name(code) or code
    except Exception:  # languages.py missing, or the code is unknown to it
        return code


def _hub_language(code: str) -> str:
    """ISO 639-1 code where known (``languages.iso639_1``), else the ISO 639-3 part of the FLORES code."""
    try:
        from .languages import iso639_1

        found = iso639_1(code)
        if found:
            return found
    except Exception:
        pass
    return code.split("_")[0]


def _n(x: Optional[float], fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _check_scores(name: str, scores: Any) -> Optional[dict]:
    if scores is None:
        return None
    if not isinstance(scores, dict) or any(not isinstance(scores.get(k), (int, float)) for k in SCORE_KEYS):
        raise ValueError(f"metrics[{name!r}] must be a dict with numeric bleu, chrf and ter "
                         "(as adaptmllm.metrics.score returns), or None")
    return scores


def build_metrics(metrics: dict) -> dict:
    """The fixed ``metrics.json`` shape from ``metrics``: ``baseline`` and ``finetuned`` score
    dicts (baseline may be None), ``delta`` (finetuned minus baseline for bleu/chrf/ter, None
    without a baseline), ``green`` (a :class:`~adaptmllm.green.GreenReport` or its dict, or None),
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
    :func:`adaptmllm.significance.paired_bootstrap`) the outcome is decided on chrF++: ``improved``
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
        info["text"] += f" model/ holds {sel.get('checkpoint')} (epoch {_n(sel.get('epoch'), 'g')}), selected by hand."
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


# ----------------------------------------------------------------------------- metrics.json

def write_metrics(run_dir: str | os.PathLike, metrics: dict) -> Path:
    """Write ``<run_dir>/metrics.json`` (atomically) in the fixed shape of :func:`build_metrics`,
    with ``verdict`` (:func:`verdict_info`) added.

    Returns the path. Raises ``ValueError`` as :func:`build_metrics` does, ``OSError`` on write errors.
    """
    m = build_metrics(metrics)
    m["verdict"] = verdict_info(m)
    return atomic_write_json(Path(run_dir) / "metrics.json", m)


# ----------------------------------------------------------------------------- report.md

def _scores_md(m: dict, model_name: str) -> list[str]:
    labels = system_labels(m)
    rows = [(labels["baseline"] + (f" (`{model_name}`)" if model_name else ""), m["baseline"]),
            (labels["finetuned"], m["finetuned"])]
    out = ["| System | BLEU | chrF++ | TER |", "|---|---:|---:|---:|"]
    for label, s in rows:
        cells = [_n(s[k]) if s else "not scored" for k in SCORE_KEYS]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if m["delta"]:
        out.append("| Difference | " + " | ".join(format(m["delta"][k], "+.1f") for k in SCORE_KEYS) + " |")
    scored = m["finetuned"] or m["baseline"] or {}
    out += ["", f"Higher is better for BLEU and chrF++, lower for TER. "
                f"Test segments: {scored.get('n_segments', 'n/a')}.", "", "sacrebleu signatures:", "",
            "```"]
    out += [f"{LABELS[k] + ':':8}{scored.get('signatures', {}).get(k, 'n/a')}" for k in SCORE_KEYS]
    return out + ["```"]


def _green_md(green: Optional[dict]) -> list[str]:
    if not green:
        return ["Energy was not tracked for this run."]
    hw = green.get("cpu_model") or "unknown CPU"
    hw += f" with {green['gpu_model']}" if green.get("gpu_model") else ", no GPU tracked"
    out = [
        f"- Energy: {_n(green.get('energy_kwh'), '.3g')} kWh (CPU {_n(green.get('cpu_energy_kwh'), '.3g')}, "
        f"GPU {_n(green.get('gpu_energy_kwh'), '.3g')}, RAM {_n(green.get('ram_energy_kwh'), '.3g')} kWh)",
        f"- Emissions: {_n(green.get('emissions_kg'), '.3g')} kgCO2eq "
        f"(carbon intensity of the {green.get('country_iso_code') or '?'} grid)",
        f"- Duration: {_n(green.get('duration_s'))} s",
        f"- Hardware: {hw}",
        f"- How it was obtained: {green.get('tracking') or 'unknown'}",
        "- " + ("Measured with hardware energy counters." if green.get("measured") else
                "**These are estimates, not measurements.**"),
    ]
    return out + [f"- {note}" for note in green.get("notes") or []]


def _coverage_md(cov: dict) -> list[str]:
    """Tokenizer coverage per language (unknown-token rate, characters it cannot represent)."""
    out = ["", "### Tokenizer coverage", "", "| Language | Stage | Tokens | Unknown tokens | Unknown-token rate | "
           "Characters it cannot represent |", "|---|---|---:|---:|---:|---|"]
    for stage in ("before", "after"):
        for lang, c in (cov.get(stage) or {}).items():
            chars = ", ".join(f"`{u['char']}` {u['codepoint']} ×{u['count']}" for u in c["unknown_chars"][:10])
            more = c.get("n_unknown_chars", 0) - min(10, len(c["unknown_chars"]))
            chars += f" (+{more} more)" if more > 0 else ""
            label = "as loaded" if stage == "before" else "after vocabulary extension"
            out.append(f"| `{lang}` | {label} | {c['tokens']} | {c['unk_tokens']} | {100 * c['unk_rate']:.2f}% | "
                       f"{chars or 'none'} |")
    ext = cov.get("extension")
    if ext:
        out += ["", f"Vocabulary extension (data.extend_vocab={ext['requested']}): {ext['added']} pieces added "
                    f"(of {ext['learned']} learned on the training corpus), each embedding initialised as the mean "
                    "of its old segmentation's."]
    new = cov.get("new_languages")
    if new:
        out += ["", "New language codes (data.new_languages): " + ", ".join(f"`{c}` (id {i})" for c, i in new.items())]
    return out


def _data_md(data_report: Optional[dict]) -> list[str]:
    if data_report and "directions" in data_report:  # a multilingual run: one table per direction
        out = []
        for name, rep in data_report["directions"].items():
            out += ["", f"### `{name}`", ""] + _data_md(rep)
        samp = data_report.get("sampling") or {}
        rows = [f"| `{n}` | {p['available']} | {p['drawn']} | "
                f"{(data_report.get('overlap_across_directions') or {}).get(n, 0)} |"
                for n, p in (samp.get("pairs") or {}).items()]
        t = f", temperature {samp['temperature']:g}" if samp.get("temperature") else ""
        out += ["", f"### Mixture ({samp.get('method', 'proportional')} sampling{t})", "",
                "| Direction | Training pairs | Drawn per epoch | Dropped: in another direction's dev/test |",
                "|---|---:|---:|---:|"] + rows
        replay = data_report.get("replay")
        if replay:
            out += ["", f"Replay (ratio {replay['ratio']:g}): " + ", ".join(
                f"`{n}` {r['drawn']} pairs from `{r['source']}`" for n, r in replay["entries"].items())]
        if data_report.get("tokenizer"):
            out += _coverage_md(data_report["tokenizer"])
        return out[1:]
    splits = (data_report or {}).get("splits", data_report or {})
    splits = {k: v for k, v in splits.items() if isinstance(v, dict) and ("kept" in v or "total" in v)}
    if not splits:
        return ["No data report for this run."]
    rules = list(dict.fromkeys(r for s in splits.values() for r in (s.get("dropped") or {})))
    split_off = any("split_off" in s for s in splits.values())
    out = ["| Split | Source | Pairs read | Kept | " + ("Split off to dev/test | " if split_off else "")
           + " | ".join(f"Dropped: {r.replace('_', ' ')}" for r in rules) + " |",
           "|---|---|---:|---:|" + "---:|" * (len(rules) + split_off)]
    for name, s in splits.items():
        dropped = s.get("dropped") or {}
        cells = [name, f"`{s.get('source', 'n/a')}`", s.get("total", "n/a"), s.get("kept", "n/a")]
        cells += [s.get("split_off", 0)] if split_off else []
        out.append("| " + " | ".join(str(c) for c in cells + [dropped.get(r, 0) for r in rules]) + " |")
    if (data_report or {}).get("tokenizer"):
        out += _coverage_md(data_report["tokenizer"])
    return out


def write_report(run_dir: str | os.PathLike, config: Any, metrics: dict,
                 data_report: Optional[dict], history_png: Optional[str]) -> Path:
    """Write ``<run_dir>/report.md`` (atomically): run and language pair, verdict, scores table with
    the sacrebleu signatures, energy and emissions with their caveats, data table (per split: pairs
    read, kept and dropped per cleaning rule: ``{"train": {"total", "kept", "dropped": {rule: n}}, ...}``,
    under ``"splits"`` as :func:`adaptmllm.data.prepare_data` reports it, with ``source`` and
    ``split_off`` where given), the training-curve PNG (linked by a path relative to ``run_dir``)
    and the config as YAML. ``config`` is a dataclass (e.g. :class:`~adaptmllm.config.Config`) or a dict.

    Returns the path. Raises ``ValueError`` as :func:`build_metrics` does, ``OSError`` on write errors.
    """
    run_dir = Path(run_dir)
    cfg, m = _config_dict(config), build_metrics(metrics)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    src, tgt = data.get("src_lang", "?"), data.get("tgt_lang", "?")
    pair = f"{_language_name(src)} (`{src}`) → {_language_name(tgt)} (`{tgt}`)"
    if data.get("directions"):
        pair = ", ".join(f"`{d['src_lang']}` → `{d['tgt_lang']}`" for d in data["directions"])
    lines = [f"# adaptmllm run `{cfg.get('name', run_dir.name)}`: {pair}", "",
             f"**{verdict(m)}**", "", "## Test scores", ""]
    lines += _scores_md(m, model.get("name_or_path", ""))
    if m.get("best_checkpoint"):
        lines += ["", f"Best checkpoint: `{m['best_checkpoint']}`"]
    from .report_html import evaluation_markdown  # significance, forgetting, checkpoints, error analysis

    lines += evaluation_markdown(m)
    lines += ["", "## Energy and emissions", ""] + _green_md(m["green"])
    lines += ["", "## Data", ""] + _data_md(data_report)
    if history_png:
        rel = Path(os.path.relpath(Path(history_png).absolute(), run_dir.absolute())).as_posix()
        lines += ["", "## Training curves", "", f"![Training curves]({rel})"]
    lines += ["", "## Configuration", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))


# ----------------------------------------------------------------------------- model card

def write_model_card(model_dir: str | os.PathLike, config: Any, metrics: dict,
                     base_model: str, base_licence: str) -> Path:
    """Write ``<model_dir>/README.md`` (atomically), the Hugging Face model card.

    YAML front matter: ``language`` (ISO 639-1 codes where known, else the ISO 639-3 part of the
    FLORES code; the FLORES codes in ``language_details``), ``license`` (``base_licence``: the
    fine-tuned weights carry the base model's licence, cc-by-nc-4.0 for NLLB-200, apache-2.0 for
    the ``tiny`` model), ``base_model`` (hub names only), ``tags``, ``datasets`` (only
    hub dataset ids given as ``metrics["datasets"]``: local corpora have none),
    ``metrics`` and ``model-index`` with the test scores. Body: base model and licence, languages,
    data, scores with signatures, a transformers usage snippet and energy.

    Returns the path. Raises ``ValueError`` as :func:`build_metrics` does, ``OSError`` on write errors.
    """
    model_dir = Path(model_dir)
    cfg, m = _config_dict(config), build_metrics(metrics)
    data, ev = cfg.get("data") or {}, cfg.get("eval") or {}
    src, tgt = data.get("src_lang", "?"), data.get("tgt_lang", "?")
    # model-index: the scores of the model in this folder (the baseline when fine-tuning was discarded)
    fine = (m["baseline"] if m.get("kept") == "baseline" else m["finetuned"]) or {}
    is_hub = bool(re.fullmatch(r"[\w.-]+/[\w.-]+", base_model or "")) and not Path(base_model).exists()
    is_nllb = "nllb" in (base_model or "").lower() or base_licence.lower() == "cc-by-nc-4.0"
    name = cfg.get("name") or model_dir.name
    test_name = data.get("test") or "held-out split of the training corpus"
    meta: dict = {"language": list(dict.fromkeys(_hub_language(c) for c in (src, tgt))),
                  "language_details": f"{src}, {tgt}", "license": base_licence}
    if is_hub:
        meta["base_model"] = base_model
    meta["tags"] = ["translation", "nllb", "adaptmllm"]
    if m.get("datasets"):
        meta["datasets"] = list(m["datasets"])
    meta["metrics"] = ["bleu", "chrf", "ter"]
    if fine:
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": "translation", "name": f"Translation {src} to {tgt}"},
            "dataset": {"name": f"{test_name} ({fine.get('n_segments', '?')} segments)",
                        "type": Path(data["test"]).name if data.get("test") else "held-out-split"},
            "metrics": [{"type": k, "name": LABELS[k], "value": round(float(fine[k]), 2),
                         "verified": False} for k in SCORE_KEYS]}]}]
    licence = f"`{base_licence}`"
    if is_nllb:
        licence += (". NLLB-200 weights are licensed CC BY-NC 4.0: non-commercial use only. "
                    "This fine-tuned model is derived from them and carries the same licence")
    usage = "\n".join([
        "```python",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        "",
        f'model_dir = "{model_dir.name}"  # this folder, or its hub name once uploaded',
        f'tokenizer = AutoTokenizer.from_pretrained(model_dir, src_lang="{src}")',
        "model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)",
        'inputs = tokenizer(["Your sentence here."], return_tensors="pt")',
        "out = model.generate(**inputs,",
        f'                     forced_bos_token_id=tokenizer.convert_tokens_to_ids("{tgt}"),',
        f"                     num_beams={ev.get('num_beams', 4)}, max_new_tokens={ev.get('max_new_tokens', 128)})",
        "print(tokenizer.batch_decode(out, skip_special_tokens=True))",
        "```"])
    body = [
        f"# {name}: {_language_name(src)} → {_language_name(tgt)}", "",
        f"A translation model from {_language_name(src)} (`{src}`) to {_language_name(tgt)} (`{tgt}`), "
        f"fine-tuned with adaptmllm from `{base_model}`.", "",
        f"**{verdict(m)}**", "",
        "## Base model and licence", "",
        f"- Base model: `{base_model}`", f"- Licence: {licence}.", "",
        "## Languages", "",
        f"- Source: {_language_name(src)} (`{src}`)", f"- Target: {_language_name(tgt)} (`{tgt}`)", "",
        "## Data", "",
        f"- Training: `{data.get('train') or 'adaptmllm embedded demo corpus'}`",
        f"- Dev: `{data.get('dev') or 'held-out split of the training corpus'}`",
        f"- Test: `{test_name}`", "",
        "## Test scores", ""] + _scores_md(m, base_model) + [
        "", "## How to use", "", usage, "",
        "## Energy and emissions of fine-tuning", ""] + _green_md(m["green"]) + [""]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return atomic_write_text(model_dir / "README.md", f"---\n{front}---\n\n" + "\n".join(body))
