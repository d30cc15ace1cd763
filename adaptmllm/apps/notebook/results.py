"""Notebook front end (Colab, Jupyter), the results side: a live training plot, the results as tables
and charts, the playground cell and the set-up checks. Thin: every step calls the package. The config
form is :mod:`adaptmllm.apps.notebook.forms`.

    from adaptmllm.apps.notebook.forms import ConfigForm
    from adaptmllm.apps.notebook.results import LivePlot, show_scores, show_green
    form = ConfigForm()                      # every Config field, its docstring as help
    config = form.value                      # -> adaptmllm.Config; a bad entry is shown beside its field
    plot = LivePlot(); display(plot)
    result = adaptmllm.run(config, callbacks=[plot.callback()])
    show_scores(result); show_green(result)

Works with ipywidgets 7 (Colab) and 8. Importing this module imports ipywidgets, not torch.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import ipywidgets as widgets
from IPython.display import HTML, Image, display

from adaptmllm.apps.notebook.setup import md_table_html
from adaptmllm.apps.playground.app import serve
from adaptmllm.evaluation.human import DB_NAME, HumanEvalError, HumanEvalStore
from adaptmllm.evaluation.human_report import write_human_report
from adaptmllm.hardware import in_colab
from adaptmllm.reporting.plots import plot_history
from adaptmllm.reporting.summary import LABELS, SCORE_KEYS, system_labels, verdict

__all__ = ["LivePlot", "show_study", "scores_html", "green_html", "green_chart_png", "samples_html", "show_scores",
           "show_green", "show_results", "launch_playground", "show_human_eval", "run_notebook"]

log = logging.getLogger("adaptmllm")


# ------------------------------------------------------------------------------------------ live feedback

def _history_png(history: list[dict]) -> Optional[bytes]:
    """The training-curve PNG of :func:`adaptmllm.reporting.plots.plot_history` as bytes (None: nothing logged)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_history(history, Path(tmp) / "curves.png")
        return path.read_bytes() if path else None


class LivePlot:
    """Loss and dev-metric curves that redraw while training runs, in an ``ipywidgets.Output``.

    ``callback()`` gives the ``transformers.TrainerCallback`` to pass to
    ``adaptmllm.runs.pipeline.run(config, callbacks=[...])``: each Trainer log (training loss every
    ``train.logging_steps``, dev BLEU/chrF++ each evaluation) is appended to :attr:`history` and
    the figure is redrawn (training-loss redraws at most every ``min_interval_s`` seconds).
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.history: list[dict] = []
        self.output = widgets.Output()
        self.label = widgets.HTML("<i>waiting for the first log...</i>")
        self.widget = widgets.VBox([self.label, self.output])
        self.min_interval_s = min_interval_s
        self.redraws = 0
        self._last = 0.0
        self._latest: dict = {}

    def _ipython_display_(self) -> None:
        display(self.widget)

    def update(self, entry: dict) -> None:
        """Add one log entry (a Trainer ``logs`` dict with ``step`` and ``epoch``) and redraw."""
        self.history.append(dict(entry))
        is_eval = any(k.startswith("eval_") for k in entry)
        self._latest.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
        latest = self._latest
        parts = [f"step {latest.get('step', '?')}", f"epoch {float(latest.get('epoch') or 0):.2f}"]
        for key, label in (("loss", "training loss"), ("eval_loss", "dev loss"), ("eval_bleu", "dev BLEU"),
                           ("eval_chrf", "dev chrF++")):
            if key in latest:
                parts.append(f"{label} {latest[key]:.3g}" if "loss" in key else f"{label} {latest[key]:.1f}")
        self.label.value = " &middot; ".join(parts)
        if is_eval or time.monotonic() - self._last >= self.min_interval_s:
            self.redraw()

    def redraw(self) -> None:
        """Draw the curves of :attr:`history` into the output (replacing the previous figure)."""
        png = _history_png(self.history)
        self._last = time.monotonic()
        if png is None:
            return
        # Set the Output widget's state directly (no capture context): works from any thread and
        # without a kernel, and the saved widget state holds the latest figure.
        self.output.outputs = ()
        self.output.append_display_data(Image(data=png, format="png"))
        self.redraws += 1

    def callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that feeds this plot."""
        from transformers import TrainerCallback

        plot = self

        class _LivePlotCallback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - Trainer hook
                if logs:
                    plot.update({**logs, "step": state.global_step, "epoch": state.epoch or 0.0})

            def on_train_end(self, args, state, control, **kwargs):
                plot.redraw()

        return _LivePlotCallback()


# ------------------------------------------------------------------------------------------ results

def _metrics(result: Any) -> tuple[dict, Optional[Path]]:
    """(metrics dict, run folder) from a RunResult, a run folder or a metrics dict."""
    if isinstance(result, dict):
        return result, None
    run_dir = Path(getattr(result, "run_dir", result))
    metrics = getattr(result, "metrics", None)
    if metrics is None:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return metrics, run_dir


def scores_html(metrics: dict) -> str:
    """The verdict, the test scores table (baseline vs fine-tuned, difference) and the sacrebleu
    signatures of a ``metrics.json`` dict, as HTML."""
    base, fine, delta = metrics.get("baseline"), metrics.get("finetuned"), metrics.get("delta")
    head = "".join(f"<th>{LABELS[k]}</th>" for k in SCORE_KEYS)
    rows = []
    labels = system_labels(metrics)
    for label, s in ((labels["baseline"], base), (labels["finetuned"], fine)):
        cells = "".join(f"<td>{s[k]:.1f}</td>" if s else "<td>not scored</td>" for k in SCORE_KEYS)
        rows.append(f"<tr><td style='text-align:left'>{label}</td>{cells}</tr>")
    if delta:
        rows.append("<tr><td style='text-align:left'><b>Difference</b></td>"
                    + "".join(f"<td><b>{delta[k]:+.1f}</b></td>" for k in SCORE_KEYS) + "</tr>")
    sig = (metrics.get("significance") or {}).get("metrics") if isinstance(metrics.get("significance"), dict) else None
    if sig:
        def cell(k: str) -> str:
            s = sig.get(k) or {}
            if not isinstance(s.get("p_value"), (int, float)):
                return "<td>n/a</td>"
            mark = " (significant)" if s.get("significant") else ""
            return f"<td>{s['p_value']:.3f}{mark}</td>"
        rows.append("<tr><td style='text-align:left'>p-value (paired bootstrap)</td>"
                    + "".join(cell(k) for k in SCORE_KEYS) + "</tr>")
    scored = fine or base or {}
    sigs = "".join(f"<tr><td style='text-align:left'>{LABELS[k]}</td><td style='text-align:left'><code>"
                   f"{html.escape(str(scored.get('signatures', {}).get(k, 'n/a')))}</code></td></tr>"
                   for k in SCORE_KEYS)
    kept = metrics.get("kept")
    kept_line = (f"<p>Kept in <code>model/</code>: the <b>{html.escape(kept)}</b> model"
                 f"{' (fine-tuning never beat it on the dev set)' if kept == 'baseline' else ''}.</p>"
                 if kept else "")
    return (f"<p><b>{html.escape(verdict(metrics))}</b></p>"
            f"<table><tr><th style='text-align:left'>System (test set, {scored.get('n_segments', '?')} segments)"
            f"</th>{head}</tr>{''.join(rows)}</table>"
            "<p>Higher is better for BLEU and chrF++, lower for TER.</p>" + kept_line +
            f"<p>sacrebleu signatures:</p><table>{sigs}</table>")


def samples_html(run_dir: str | os.PathLike, n: int = 5) -> str:
    """The first ``n`` test segments with reference, baseline and fine-tuned translations, as HTML
    ('' when the run folder lacks them)."""
    import yaml

    run_dir = Path(run_dir)
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        src_lang, tgt_lang = cfg["data"]["src_lang"], cfg["data"]["tgt_lang"]
        cols = {"source": run_dir / "data" / f"test.{src_lang}", "reference": run_dir / "data" / f"test.{tgt_lang}",
                "baseline": run_dir / "baseline.hyp.txt", "fine-tuned": run_dir / "finetuned.hyp.txt"}
        texts = {k: p.read_text(encoding="utf-8").splitlines()[:n] for k, p in cols.items() if p.is_file()}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return ""
    if "source" not in texts:
        return ""
    head = "".join(f"<th style='text-align:left'>{k}</th>" for k in texts)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v[i]) if i < len(v) else ''}</td>"
                                    for v in texts.values()) + "</tr>" for i in range(len(texts["source"])))
    return f"<p><b>Test translations</b> (first {n})</p><table><tr>{head}</tr>{body}</table>"


def green_html(green: Optional[dict]) -> str:
    """The green report (energy in kWh by part, emissions in kgCO2eq, duration, hardware, whether
    measured or estimated, and its caveats) as an HTML table."""
    if not green:
        return "<p>Energy was not tracked for this run.</p>"

    def n(x: Any, fmt: str = ".3g") -> str:
        return "n/a" if x is None else format(x, fmt)

    rows = [("Energy", f"{n(green.get('energy_kwh'))} kWh"),
            ("CPU / GPU / RAM", f"{n(green.get('cpu_energy_kwh'))} / {n(green.get('gpu_energy_kwh'))} / "
                                f"{n(green.get('ram_energy_kwh'))} kWh"),
            ("Emissions", f"{n(green.get('emissions_kg'))} kgCO2eq ({n((green.get('emissions_kg') or 0) * 1000)} g), "
                          f"grid of {green.get('country_iso_code') or '?'}"),
            ("Duration", f"{n(green.get('duration_s'), '.1f')} s"),
            ("Hardware", (green.get("cpu_model") or "unknown CPU")
             + (f" with {green['gpu_model']}" if green.get("gpu_model") else ", no GPU tracked")),
            ("How obtained", green.get("tracking") or "unknown"),
            ("Measured?", "yes, hardware energy counters" if green.get("measured") else "no: these are estimates")]
    body = "".join(f"<tr><th style='text-align:left'>{k}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    notes = "".join(f"<li>{html.escape(x)}</li>" for x in green.get("notes") or [])
    return f"<table>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")


def green_chart_png(green: Optional[dict]) -> Optional[bytes]:
    """A bar chart of the energy by part (CPU, GPU, RAM, in Wh) with the emissions in the title,
    as PNG bytes (None when energy was not tracked)."""
    if not green:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    parts = ["CPU", "GPU", "RAM"]
    values = [1000 * float(green.get(f"{p.lower()}_energy_kwh") or 0.0) for p in parts]
    fig = Figure(figsize=(6, 2.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bars = ax.barh(parts, values, color=["#4c72b0", "#55a868", "#c44e52"])
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.3g} Wh", va="center")
    ax.set_xlabel("energy (Wh)")
    ax.set_xlim(0, max(values + [1e-6]) * 1.35)
    kind = "measured" if green.get("measured") else "estimated"
    ax.set_title(f"{1000 * float(green.get('energy_kwh') or 0):.3g} Wh, "
                 f"{1000 * float(green.get('emissions_kg') or 0):.3g} gCO2eq ({kind}), "
                 f"{float(green.get('duration_s') or 0):.0f} s", fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def show_scores(result: Any, samples: int = 5, curves: bool = True) -> dict:
    """Show the scores table (baseline vs fine-tuned, signatures), the verdict, ``samples`` test
    translations and (``curves``) the training curves of a run (a ``RunResult`` or a run folder).
    Returns the metrics."""
    metrics, run_dir = _metrics(result)
    display(HTML(scores_html(metrics)))
    if run_dir is not None:
        if samples:
            sample = samples_html(run_dir, samples)
            if sample:
                display(HTML(sample))
        png = run_dir / "training_curves.png"
        if curves and png.is_file():
            display(Image(data=png.read_bytes(), format="png"))
        reports = [name for name in ("report.html", "report.md") if (run_dir / name).is_file()]
        if reports:
            names = ", ".join(f"<code>{html.escape(str(run_dir / r))}</code>" for r in reports)
            display(HTML(f"<p>Full report: {names}</p>"))
    return metrics


def show_green(result: Any) -> Optional[dict]:
    """Show the green report of a run as a table and a chart. Returns its dict (None: not tracked)."""
    metrics, _ = _metrics(result)
    green = metrics.get("green")
    display(HTML(green_html(green)))
    png = green_chart_png(green)
    if png:
        display(Image(data=png, format="png"))
    return green


def show_study(study: Any) -> None:
    """Show a hyperparameter search (an :class:`adaptmllm.runs.hpo.search.StudyResult`): trials per state, the
    best trial's dev score and parameters, and the optimisation-history and importance plots."""
    counts = ", ".join(f"{n} {state}" for state, n in (study.counts or {}).items() if n)
    params = "".join(f"<tr><td style='text-align:left'>{html.escape(str(k))}</td><td style='text-align:left'>"
                     f"{html.escape(str(v))}</td></tr>" for k, v in (study.best_params or {}).items())
    value = "n/a" if study.best_value is None else f"{study.best_value:.2f}"
    green = (getattr(study, "summary", None) or {}).get("green_total") or {}
    energy = (f" The whole study used {green['energy_kwh']:.3g} kWh ({1000 * (green.get('emissions_kg') or 0):.3g} "
              f"gCO2eq, {'measured' if green.get('measured') else 'estimated'}) over {green.get('n_trials', '?')} "
              "trials." if isinstance(green.get("energy_kwh"), (int, float)) else "")
    display(HTML(f"<p><b>Study {html.escape(str(study.study_name))}</b>: {html.escape(counts)}. Best trial "
                 f"{study.best_trial} with dev score {value}.{html.escape(energy)}</p>"
                 "<table><tr><th style='text-align:left'>parameter</th>"
                 f"<th style='text-align:left'>best value</th></tr>{params}</table>"
                 f"<p>Study folder: <code>{html.escape(str(study.hpo_dir))}</code></p>"))
    for name in ("history.png", "importance.png"):
        path = Path(study.hpo_dir) / name
        if path.is_file():
            display(Image(data=path.read_bytes(), format="png"))


def show_results(result: Any) -> dict:
    """:func:`show_scores` then :func:`show_green`. Returns the metrics."""
    metrics = show_scores(result)
    show_green(result)
    return metrics


# ------------------------------------------------------------------------------------------ playground

def _secret(name: str) -> Optional[str]:
    """An environment variable, else a Colab secret of that name (None if neither)."""
    value = os.environ.get(name)
    if value:
        return value
    if in_colab():
        try:
            from google.colab import userdata  # type: ignore

            return userdata.get(name) or None
        except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException
            return None
    return None


def launch_playground(result: Any, share: Optional[bool] = None, auth: Any = None, baseline: Optional[str] = None,
                      **kwargs: Any) -> Any:
    """Launch the translation playground and human evaluation (:func:`adaptmllm.apps.playground.app.serve`)
    for a run, inline in the notebook. Returns the ``Server`` (``server.close()`` stops it).

    ``share=None`` shares a public link only on Colab, never elsewhere (so CI and local
    notebooks stay local). A shared link always gets a password: ``auth``, else
    ``ADAPTMLLM_AUTH`` (``user:password``, environment or Colab secret), else a random one shown
    once below the link.
    """
    _, run_dir = _metrics(result)
    model_dir = Path(getattr(result, "model_dir", None) or run_dir / "model")
    effective = in_colab() if share is None else bool(share)
    made = None
    if effective and not auth:
        auth = _secret("ADAPTMLLM_AUTH")
        if not auth:
            made = ("translator", secrets.token_urlsafe(9))
            auth = made
    server = serve(model_dir, baseline, run_dir=run_dir, share=effective, auth=auth, quiet=True, **kwargs)
    colab = in_colab()
    lines = [] if colab else [f"Playground running at <a href='{server.local_url}' target='_blank'>{server.local_url}</a>"]
    if server.share_url:
        lines.append(f"Public link for translators: "
                     f"<a href='{server.share_url}' target='_blank'>{server.share_url}</a> (open it in a new tab; "
                     "it lasts while this runtime runs)")
        user = auth[0] if isinstance(auth, (tuple, list)) else str(auth).split(":", 1)[0]
        if made:
            lines.append(f"Sign in as <code>{html.escape(user)}</code> with the password shown below (made for this "
                         "session; to choose your own, add a Colab secret ADAPTMLLM_AUTH = user:password).")
        else:
            lines.append(f"Sign in as <code>{html.escape(user)}</code> with the password of your ADAPTMLLM_AUTH secret.")
    elif colab:
        lines.append("No public link could be made (Gradio's share service did not answer): run this cell again, "
                     "or use the playground from a machine of your own with `adaptmllm serve`.")
    display(HTML("<br>".join(lines)))
    if made and server.share_url:
        # A widget, not an output: Colab does not save widget values in the notebook file, so the password
        # is shown in this session only and never stored with the notebook.
        display(widgets.HTML(f"Password: <code>{html.escape(made[1])}</code>"))
    return server


def show_human_eval(run_dir: str | os.PathLike, weights: Optional[dict] = None) -> Optional[dict]:
    """Summarise the human evaluation of a run (mean SQM with 95% CI, MQM points, error counts;
    :func:`adaptmllm.evaluation.human_report.write_human_report`) as a table and chart. Returns its dict, or None (with
    a note) when nobody has rated yet."""
    db = Path(run_dir) / DB_NAME
    if not db.is_file() or HumanEvalStore(db).count_ratings() == 0:
        display(HTML("<p>No human ratings yet: share the playground link with translators (Human "
                     "evaluation tab), then run this cell again.</p>"))
        return None
    try:
        out = write_human_report(db, weights=weights)
    except HumanEvalError as e:
        display(HTML(f"<p>{html.escape(str(e))}</p>"))
        return None
    display(HTML(md_table_html(out["markdown"])))
    plot = out["paths"].get("plot")
    if plot and Path(plot).is_file():
        display(Image(data=Path(plot).read_bytes(), format="png"))
    return out


# ------------------------------------------------------------------------------------------ headless runs

def run_notebook(path: str | os.PathLike, parameters: Optional[dict] = None, cwd: str | os.PathLike | None = None,
                 timeout: int = 600, kernel_name: str = "python3") -> Any:
    """Execute a notebook headless with nbclient, papermill-style: ``parameters`` are assigned in
    a cell (tagged ``injected-parameters``) inserted after the cell tagged ``parameters``. Widget
    state is stored in the notebook's metadata. Returns the executed ``nbformat`` notebook (not saved).

    Used by CI (``tests/test_notebooks_run.py``) and the screenshot tool. Needs ``nbclient`` and
    ``ipykernel``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised (the message holds its traceback).
        ValueError: ``parameters`` given but no cell is tagged ``parameters``.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    if parameters:
        index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
        if index is None:
            raise ValueError(f"{path}: no cell is tagged 'parameters'")
        source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(index + 1, cell)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
                            resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    client.execute()
    return nb
