"""What a study leaves in ``<run>/hpo/``: trials.csv, green.json, the optimisation history and parameter
importance plots, best_params.yaml, summary.json, and the report's HPO section.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from adaptmllm.config import Config, config_to_dict
from adaptmllm.io import atomic_write_bytes, atomic_write_json, atomic_write_text, spreadsheet_cell
from adaptmllm.runs.hpo.space import suggest
from adaptmllm.runs.hpo.study import Timer, finished_states, masked_url, storage_url, study_best

__all__ = ["write_study_artefacts"]

_METRIC_NAMES = {"chrf": "chrF++", "bleu": "BLEU", "ter": "TER"}


# ----------------------------------------------------------------------------- artefacts

def _trial_rows(study: Any) -> list[dict]:
    params = list(dict.fromkeys(p for t in study.get_trials(deepcopy=False) for p in t.params))
    rows = []
    for t in study.get_trials(deepcopy=False):
        g = t.user_attrs.get("green") or {}
        r = t.user_attrs.get("result") or {}
        duration = ((t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_complete and t.datetime_start else None)
        row = {"number": t.number, "state": t.state.name, "value": t.value,
               "last_epoch": max(t.intermediate_values) if t.intermediate_values else None,
               **{f"param_{p}": t.params.get(p) for p in params},
               "duration_s": None if duration is None else round(duration, 2),
               "energy_kwh": g.get("energy_kwh"), "emissions_kg": g.get("emissions_kg"),
               "peak_rss_mb": r.get("peak_rss_mb"), "peak_cuda_mb": r.get("peak_cuda_mb"),
               "rss_after_cleanup_mb": r.get("rss_after_cleanup_mb"),
               "worker": t.user_attrs.get("worker"),
               "retry_of": t.system_attrs.get("failed_trial"),
               "error": t.user_attrs.get("error"),
               "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
               "datetime_complete": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None}
        rows.append(row)
    return rows


def write_trials_csv(study: Any, path: Path) -> Path:
    rows = _trial_rows(study)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)
    return atomic_write_text(path, buf.getvalue())


def _green_summary(study: Any) -> dict:
    per_trial, total = [], defaultdict(float)
    measured = True
    for t in study.get_trials(deepcopy=False):
        g = t.user_attrs.get("green")
        if not g:
            continue
        figures = ("energy_kwh", "emissions_kg", "duration_s", "cpu_energy_kwh", "gpu_energy_kwh", "ram_energy_kwh")
        per_trial.append({"number": t.number, "state": t.state.name, **{k: g.get(k) for k in figures},
                          "measured": bool(g.get("measured")), "tracking": g.get("tracking")})
        for k in figures:
            total[k] += g.get(k) or 0.0
        measured = measured and bool(g.get("measured"))
    note = ("Sum over every trial of the study (completed, pruned and failed): the search's full cost. "
            + ("" if measured and per_trial else "These are estimates, not measurements (see each trial's "
               "green/emissions.csv and the run report's energy section)."))
    return {"units": {"energy": "kWh", "emissions": "kgCO2eq", "duration": "s"}, "trials": per_trial,
            "total": {**dict(total), "n_trials": len(per_trial),
                      "measured": measured and bool(per_trial)},
            "note": note.strip()}


def _png(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _history_png(study: Any, label: str, path: Path) -> Path:
    """Optimisation history: each trial's dev score (pruned: its last reported score), best so far as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    done, line, pruned = _history_points(study)
    if done:
        ax.plot([n for n, _ in done], [v for _, v in done], "o", color="tab:blue", label="completed trial")
        ax.step([n for n, _ in line], [v for _, v in line], where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot([n for n, _ in pruned], [v for _, v in pruned], "x", color="grey", label="pruned trial (last score)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend()
    return _png(fig, path)


def _importance_png(importances: dict, method: str, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(8, 0.5 * len(names) + 1.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center")
    ax.set_xlabel(f"importance for the dev score ({method})")
    ax.set_xlim(0, max(1.0, max(importances.values()) * 1.15))
    ax.set_title("Hyperparameter importance")
    return _png(fig, path)


def _importance_evaluator(notes: list[str]) -> Any:
    """fANOVA (Optuna's default; needs scikit-learn), else PED-ANOVA (no extra dependency), said in ``notes``."""
    import optuna

    try:
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        notes.append("Parameter importance by PED-ANOVA: fANOVA needs scikit-learn (pip install scikit-learn).")
        return optuna.importance.PedAnovaImportanceEvaluator()


def _importances(study: Any, notes: list[str]) -> tuple[Optional[dict], str]:
    """Parameter importances (fANOVA with scikit-learn, else PED-ANOVA), or None with a note."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        notes.append(f"Parameter importance skipped: it needs at least 2 completed trials with searched "
                     f"parameters ({len(complete)} completed).")
        return None, ""
    evaluator = _importance_evaluator(notes)
    method = "fANOVA" if isinstance(evaluator, optuna.importance.FanovaImportanceEvaluator) else "PED-ANOVA"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as e:  # e.g. every completed trial has the same parameters
        notes.append(f"Parameter importance skipped: {type(e).__name__}: {e}")
        return None, ""
    return {k: float(v) for k, v in values.items()}, method


def _history_points(study: Any) -> tuple[list, list, list]:
    """(completed (number, value), best-so-far (number, value), pruned (number, last reported value))."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=finished_states())
    done = sorted((t.number, t.value) for t in trials if t.state == TrialState.COMPLETE and t.value is not None)
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values]
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    best, line = None, []
    for number, value in done:
        best = value if best is None else pick(best, value)
        line.append((number, best))
    return done, line, pruned


def _write_plots(study: Any, hpo_dir: Path, notes: list[str]) -> list[str]:
    """Optimisation history and parameter importance as PNG (matplotlib) and HTML (plotly), and each
    trial's dev score per epoch (the learning curves the pruner saw) as HTML. Returns the file names.

    The figures are drawn here rather than by ``optuna.visualization`` (which also imports pyplot):
    a study's plots then take well under a second. For slice, parallel-coordinate and timeline views,
    open the study with ``optuna-dashboard <storage URL>`` or ``optuna.visualization``."""
    written: list[str] = []
    label = f"dev {_METRIC_NAMES.get(study.user_attrs.get('metric'), 'score')}"
    importances, method = _importances(study, notes)
    try:
        written.append(_history_png(study, label, hpo_dir / "history.png").name)
        if importances:
            written.append(_importance_png(importances, method, hpo_dir / "importance.png").name)
    except Exception as e:  # a plot must never lose the study's results
        notes.append(f"PNG plots skipped: {type(e).__name__}: {e}")
    try:
        import plotly.graph_objects as go
    except ImportError as e:
        notes.append(f"HTML plots skipped: {e.name} is not installed (pip install plotly)")
        return written
    done, line, pruned = _history_points(study)

    def history() -> Any:
        fig = go.Figure(layout={"title": "Optimisation history", "xaxis_title": "trial", "yaxis_title": label})
        fig.add_scatter(x=[n for n, _ in done], y=[v for _, v in done], mode="markers", name="completed trial")
        fig.add_scatter(x=[n for n, _ in line], y=[v for _, v in line], mode="lines", line_shape="hv",
                        name="best so far")
        if pruned:
            fig.add_scatter(x=[n for n, _ in pruned], y=[v for _, v in pruned], mode="markers",
                            marker_symbol="x", name="pruned trial (last score)")
        return fig

    def importance() -> Any:
        names = list(importances)[::-1]
        return go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"),
                         layout={"title": f"Hyperparameter importance ({method})",
                                 "xaxis_title": f"importance for the {label}"})

    def intermediate() -> Any:
        fig = go.Figure(layout={"title": "Dev score per epoch (what the pruner saw)", "xaxis_title": "epoch",
                                "yaxis_title": label})
        for t in study.get_trials(deepcopy=False):
            if t.intermediate_values:
                steps = sorted(t.intermediate_values)
                fig.add_scatter(x=steps, y=[t.intermediate_values[k] for k in steps], mode="lines+markers",
                                name=f"trial {t.number} ({t.state.name.lower()})")
        return fig

    figures = [("history", history), ("intermediate", intermediate)] + ([("importance", importance)]
                                                                      if importances else [])
    for stem, make in figures:
        try:
            make().write_html(str(hpo_dir / f"{stem}.html"), include_plotlyjs="directory")
            written.append(f"{stem}.html")
        except Exception as e:
            notes.append(f"{stem}.html skipped: {type(e).__name__}: {e}")
    return written


def _best_params_yaml(study: Any, config: Config, path: Path) -> Optional[Path]:
    import optuna
    import yaml

    number, value = study_best(study)
    if number is None:
        return None
    best = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    cfg = suggest(optuna.trial.FixedTrial(best.params, number), config)
    cfg = dataclasses.replace(cfg, name=f"{config.name}-best", overwrite=False)
    data = config_to_dict(cfg)
    data.pop("hpo", None)
    head = [f"# Best trial {number} of study {study.study_name!r}: dev "
            f"{_METRIC_NAMES.get(study.user_attrs.get('metric'), 'score')} "
            f"{value:.4f}", "# Searched parameters:"]
    head += [f"#   {k}: {v!r}" for k, v in best.params.items()]
    head += ["# A config: adaptmllm run --config <this file> trains a model with these settings.", ""]
    return atomic_write_text(path, "\n".join(head) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_study_artefacts(study: Any, config: Config, plots: bool = True, timings: Optional[dict] = None,
                          timer: Optional[Timer] = None) -> dict:
    """Write the study folder ``<run folder>/hpo/``: ``trials.csv``, ``best_params.yaml`` (when a
    trial completed), ``green.json`` (energy per trial and in total), the plots (``plots``) and
    ``summary.json``. Returns the summary dict (counts per state, best trial and parameters, total
    energy in kWh and emissions in kgCO2eq, written files, notes)."""
    from optuna.trial import TrialState

    hpo_dir = config.run_dir / "hpo"
    notes: list[str] = []
    write_trials_csv(study, hpo_dir / "trials.csv")
    best_yaml = _best_params_yaml(study, config, hpo_dir / "best_params.yaml")
    green = _green_summary(study)
    atomic_write_json(hpo_dir / "green.json", green)
    files = ["trials.csv", "green.json"] + (["best_params.yaml"] if best_yaml else [])
    if plots:
        with timer("artefacts.plots") if timer is not None else contextlib.nullcontext():
            files += _write_plots(study, hpo_dir, notes)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    number, value = study_best(study)
    summary = {
        "study_name": study.study_name, "storage": masked_url(storage_url(config)),
        "metric": config.train.metric_for_best_model, "direction": study.direction.name.lower(),
        "n_trials_target": config.hpo.n_trials, "counts": counts,
        "best_trial": number, "best_value": value,
        "best_params": next((t.params for t in trials if t.number == number), None),
        "baseline_dev": study.user_attrs.get("baseline_dev"),
        "green_total": green["total"], "files": files, "notes": notes,
    }
    if timings is not None:
        summary["timings_s"] = timings
    atomic_write_json(hpo_dir / "summary.json", summary)
    return summary


def hpo_markdown(summary: dict, best_dir: Path) -> str:
    c = summary["counts"]
    g = summary["green_total"]
    metric = _METRIC_NAMES.get(summary["metric"], summary["metric"])
    lines = ["", "## Hyperparameter search", "",
             f"Optuna study `{summary['study_name']}` ({summary['storage']}): {c.get('complete', 0)} trials completed, "
             f"{c.get('pruned', 0)} pruned, {c.get('fail', 0)} failed; objective: dev {metric} "
             f"({summary['direction']}). This model comes from trial {summary['best_trial']} "
             f"(dev {metric} {summary['best_value']:.2f}"
             + (f"; untouched model: {summary['baseline_dev']:.2f}" if summary.get("baseline_dev") is not None else "")
             + ").", "", "| Parameter | Best value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in (summary.get("best_params") or {}).items()]
    lines += ["", f"**Energy of the whole search: {g.get('energy_kwh', 0):.3g} kWh, "
                  f"{g.get('emissions_kg', 0):.3g} kgCO2eq "
                  f"over {g.get('n_trials', 0)} trials** (per trial: `hpo/trials.csv`, `hpo/green.json`); the energy "
                  "section above covers the kept trial's fine-tuning only."
                  + ("" if g.get("measured") else " Estimates, not measurements."), ""]
    hpo_rel = os.path.relpath((best_dir.parent / "hpo").absolute(), best_dir.absolute())
    for stem, title in (("history", "Optimisation history"), ("importance", "Parameter importance")):
        if f"{stem}.png" in summary["files"]:
            lines += [f"![{title}]({hpo_rel}/{stem}.png)", ""]
    lines += [f"- {n}" for n in summary.get("notes") or []]
    return "\n".join(lines) + "\n"
