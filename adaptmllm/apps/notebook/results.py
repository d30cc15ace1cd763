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
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import ipywidgets as widgets
from IPython.display import HTML, Image, display

from adaptmllm.apps.playground.app import serve
from adaptmllm.config import Config, ConfigError, __version__
from adaptmllm.data.pairs import DataError, detect_format, load_pairs, prepare_data
from adaptmllm.evaluation.human import DB_NAME, HumanEvalError, HumanEvalStore
from adaptmllm.evaluation.human_report import write_report
from adaptmllm.hardware import in_colab, resolve_precision
from adaptmllm.reporting.markdown import data_md
from adaptmllm.reporting.plots import plot_history
from adaptmllm.reporting.summary import LABELS, SCORE_KEYS, system_labels, verdict
from adaptmllm.training.deepspeed import check_installed
from adaptmllm.training.memory_plan import ModelSize, nllb_config, plan_memory

__all__ = ["LivePlot", "show_study", "environment", "mount_drive", "preview_data", "scores_html", "green_html",
    "green_chart_png", "samples_html", "show_scores", "show_green", "show_results", "launch_playground",
    "show_human_eval", "run_notebook", "quiet_notebook", "show_plan", "estimate_epoch_seconds", "check_corpus",
    "HARMLESS_WARNINGS"]

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


def environment(show: bool = True) -> dict:
    """Python, torch and GPU facts (name, memory, bf16 support) and advice on precision; shown as
    a table when ``show``. Returns the dict."""
    import platform

    import torch

    info: dict[str, Any] = {"adaptmllm": __version__, "python": platform.python_version(),
                            "torch": torch.__version__, "colab": in_colab(), "gpu": None,
                            "gpu_memory_gib": None, "bf16": False}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=bool(torch.cuda.is_bf16_supported()), gpus=torch.cuda.device_count())
    if info["gpu"] is None:
        info["advice"] = ("No GPU: the tiny demo runs on the CPU. For NLLB, pick a GPU runtime "
                          "(Colab: Runtime > Change runtime type > GPU).")
    elif info["bf16"]:
        info["advice"] = "bf16 is supported: train.precision auto uses it (NLLB overflows in fp16)."
    else:
        info["advice"] = ("No bf16 on this GPU: train.precision auto uses fp32 (NLLB can overflow in "
                          "fp16); for NLLB-200 3.3B use LoRA or a bigger GPU.")
    if show:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in info.items())
        display(HTML(f"<table>{rows}</table>"))
    return info


def mount_drive(folder: str = "adaptmllm", mount_point: Optional[str] = None) -> Optional[Path]:
    """On Colab, mount Google Drive and return ``MyDrive/<folder>`` (created) for data and run
    folders; elsewhere do nothing and return None. ``mount_point``: default ``$ADAPTMLLM_DRIVE`` or
    ``/content/drive`` (the environment variable is for tests and unusual set-ups)."""
    if not in_colab():
        print("Not on Colab: Google Drive is not mounted; run folders stay on this machine.")
        return None
    from google.colab import drive  # type: ignore

    mount_point = mount_point or os.environ.get("ADAPTMLLM_DRIVE", "/content/drive")
    drive.mount(mount_point)
    out = Path(mount_point) / "MyDrive" / folder
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------ quiet output

HARMLESS_WARNINGS = (
    r".*pin_memory.*",                      # DataLoader on a machine without an accelerator
    r".*[Dd]eprecat.*",                     # library deprecations: for developers, not for translators
    r".*(missing|newly initialized|not initialized).*(lm_head|weights).*",  # tied output layer of M2M100/NLLB
    r".*lm_head.*",
    r".*TRANSFORMERS_CACHE.*",
    r".*Setting accelerator to CPU.*",      # DeepSpeed on a machine without a GPU
)
"""Messages (regular expressions) that alarm a non-engineer but change nothing: hidden in the notebook by
:func:`quiet_notebook`, still written to the run folder's ``run.log``."""


class _HarmlessFilter(logging.Filter):
    """Drops records matching :data:`HARMLESS_WARNINGS`; ``forward``: logs them to ``adaptmllm.warnings``
    first (for loggers whose records would otherwise not reach run.log)."""

    def __init__(self, forward: bool = False) -> None:
        super().__init__()
        self.forward = forward

    def filter(self, record: logging.LogRecord) -> bool:  # False: not shown
        msg = record.getMessage()
        harmless = any(re.match(p, msg, re.S) for p in HARMLESS_WARNINGS)
        if harmless and self.forward:
            logging.getLogger("adaptmllm.warnings").info("%s: %s", record.name, msg)
        return not harmless


def quiet_notebook() -> None:
    """Hide :data:`HARMLESS_WARNINGS` in the notebook: Python warnings that match go to the
    ``adaptmllm.warnings`` logger at INFO (so a run's ``run.log`` keeps them), and transformers' console
    handler drops matching log records (its ``run.log`` handler keeps them). Other warnings still show.
    Idempotent."""
    import warnings

    original = getattr(warnings.showwarning, "__wrapped__", warnings.showwarning)
    quiet_log = logging.getLogger("adaptmllm.warnings")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(re.match(p, text, re.S) for p in HARMLESS_WARNINGS) or issubclass(
                category, (DeprecationWarning, FutureWarning)):
            quiet_log.info("%s: %s (%s:%s)", category.__name__, text, filename, lineno)
            return
        original(message, category, filename, lineno, file, line)

    showwarning.__wrapped__ = original  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.get_logger()  # creates transformers' own console handler
    except Exception:  # pragma: no cover - transformers always present
        pass
    for handler in logging.getLogger("transformers").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                and not any(isinstance(f, _HarmlessFilter) for f in handler.filters):
            handler.addFilter(_HarmlessFilter())
    deepspeed_log = logging.getLogger("DeepSpeed")  # its own handler, created when deepspeed is imported
    if not any(isinstance(f, _HarmlessFilter) for f in deepspeed_log.filters):
        deepspeed_log.addFilter(_HarmlessFilter(forward=True))


# ------------------------------------------------------------------------------------------ memory plan

GPU_PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125, "V100": 125,
                   "T4": 65, "4090": 165, "3090": 71}
"""Dense 16-bit tensor-core peak (TFLOP/s) by GPU name, from the vendors' data sheets (NVIDIA A100, H100,
L4, T4, V100 data sheets; H200 as H100)."""
ASSUMED_UTILISATION = 0.3
"""Share of the peak a fine-tuning run reaches (model FLOPs utilisation), an assumption: 0.3-0.5 is usual for
transformer training with mixed precision; seq2seq with short sentences is at the low end."""
CHARS_PER_TOKEN = 4.0
"""Characters per subword token assumed for the time estimate (SentencePiece on European languages: 3-5)."""


def estimate_epoch_seconds(trainable_params: int, total_params: int, tokens: float, gpu_name: Optional[str],
                           gradient_checkpointing: bool = False) -> Optional[float]:
    """An ESTIMATE of the seconds per training epoch: ``6 x parameters x tokens`` FLOPs for full
    fine-tuning (forward 2, backward 4; LoRA: ``2 x total + 4 x trainable``), x 4/3 with gradient
    checkpointing, at :data:`ASSUMED_UTILISATION` of the GPU's peak (:data:`GPU_PEAK_TFLOPS`).
    None when the GPU is unknown or absent (no estimate on a CPU)."""
    if not gpu_name:
        return None
    peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in gpu_name.upper()), None)
    if peak is None:
        return None
    flops = (2 * total_params + 4 * trainable_params) * tokens * (4 / 3 if gradient_checkpointing else 1)
    return flops / (peak * 1e12 * ASSUMED_UTILISATION)


def _model_size(config: Config) -> Any:
    """:class:`adaptmllm.training.memory_plan.ModelSize` of the configured model without loading weights (None: unknown)."""
    name = config.model.name_or_path
    try:
        if name == "tiny":
            from transformers import M2M100Config

            t = config.model.tiny
            return ModelSize.from_config(M2M100Config(
                vocab_size=t.vocab_size, d_model=t.d_model, encoder_layers=t.encoder_layers,
                decoder_layers=t.decoder_layers, encoder_attention_heads=t.attention_heads,
                decoder_attention_heads=t.attention_heads, encoder_ffn_dim=t.ffn_dim, decoder_ffn_dim=t.ffn_dim))
        try:
            return ModelSize.from_config(nllb_config(name))
        except ValueError:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(name, local_files_only=True)
            return ModelSize.from_config(cfg) if hasattr(cfg, "encoder_ffn_dim") else None
    except Exception:
        return None


def show_plan(config: Config, prepared: Any = None, show: bool = True) -> dict:
    """Show, before training, the memory plan (GPU, strategy, estimated GiB per GPU and of host RAM,
    the faster option that did not fit) and an ESTIMATED time per epoch; returns them as a dict.

    Raises:
        SystemExit: a package the config needs is not installed, or no plan fits (after showing one
            sentence naming the pip command or the field to change), so that "Run all" stops here.
    """
    def stop(message: str) -> None:
        if show:
            display(HTML(f'<p style="color:#b00020">&#9888; {html.escape(message)}</p>'))
        raise SystemExit(message)

    try:
        check_installed(config)
    except ConfigError as e:
        stop(str(e))
    env = environment(show=False)
    size = _model_size(config)
    tc, lora = config.train, config.model.lora
    info: dict[str, Any] = {"gpu": env["gpu"] or "none (CPU)", "strategy": None, "gpu_gib": None, "host_gib": None,
                            "faster_option": None, "epoch_seconds_estimate": None, "explanation": ""}
    if size is None:
        info["explanation"] = (f"{config.model.name_or_path}: size not known before loading; the plan is made at the "
                               "first step and written to run.log")
    else:
        weight_bytes = 0.5 if lora.load_in_4bit else (2.0 if lora.enabled else 4.0)
        trainable = size.total_params // 100 if lora.enabled else size.total_params
        try:
            plan = plan_memory(size, tc.deepspeed, tc.per_device_train_batch_size, config.model.max_source_length,
                               config.model.max_target_length, resolve_precision(tc.precision),
                               tc.gradient_checkpointing, lora.enabled, weight_bytes,
                               gpu_memory=env["gpu_memory_gib"])
        except ConfigError as e:
            stop(str(e))
        info.update(strategy=plan.name + (", gradient checkpointing" if plan.gradient_checkpointing else ""),
                    gpu_gib=round(plan.gpu_need_gib, 1) if plan.gpu_memory_gib else None,
                    host_gib=round(plan.cpu_gib, 1), explanation=plan.explanation)
        m = re.search(r"the faster (.+?) would need ([\d.]+) GiB", plan.explanation)
        info["faster_option"] = f"{m.group(1)} (~{m.group(2)} GiB)" if m else "none: the fastest option fits"
        if prepared is not None:
            chars = sum(len(a) + len(b) for a, b in zip(prepared.train.src, prepared.train.tgt))
            info["epoch_seconds_estimate"] = estimate_epoch_seconds(
                trainable, size.total_params, chars / CHARS_PER_TOKEN,
                env["gpu"] or (f"{tc.deepspeed.gpu_memory_gib} GiB" if tc.deepspeed.gpu_memory_gib else None),
                plan.gradient_checkpointing)
    if show:
        est = info["epoch_seconds_estimate"]
        rows = [("GPU", info["gpu"]), ("Strategy (estimate)", info["strategy"] or "decided at the first step"),
                ("GPU memory per GPU (estimate)", "n/a (no GPU)" if info["gpu_gib"] is None else f"~{info['gpu_gib']} GiB"
                 f" of {env['gpu_memory_gib'] or tc.deepspeed.gpu_memory_gib} GiB"),
                ("Host RAM for offloaded states (estimate)", f"~{info['host_gib'] or 0} GiB"),
                ("Faster option that did not fit", info["faster_option"] or "n/a"),
                ("Time per epoch (estimate)", f"~{est / 60:.0f} min ({ASSUMED_UTILISATION:.0%} of the GPU's peak "
                 f"assumed; the progress bar shows the real pace)" if est else
                 "no estimate (no known GPU, or the corpus was not read yet): the progress bar shows the pace")]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(str(v))}</td></tr>" for k, v in rows)
        display(HTML(f"<p><b>Memory plan</b> (estimates, before the first step)</p><table>{body}</table>"
                     f"<p style='color:#666;font-size:90%'>{html.escape(info['explanation'])}</p>"))
    return info


# ------------------------------------------------------------------------------------------ data

_CORPUS_CACHE: dict = {}


def _corpus_key(spec: str, data: Any) -> tuple:
    p = Path(spec)
    files = [p] if p.exists() else [Path(f"{spec}.{data.src_suffix}"), Path(f"{spec}.{data.tgt_suffix}")]
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
    return (spec, stamp, data.format, data.src_suffix, data.tgt_suffix, data.src_column, data.tgt_column,
            data.src_lang, data.tgt_lang)


def check_corpus(spec: str, data: Any, n: int = 3) -> str:
    """Check a corpus path as it is entered: it exists, its format is detected, the two sides have as
    many lines, and show the pair count and the first ``n`` pairs. Returns that description as HTML.

    Raises:
        ConfigError: ``data.<train|dev|test>: <what is wrong and the fix>`` (from
            :class:`adaptmllm.data.pairs.DataError`: a missing file, uneven line counts, a bad row...).
    """
    field = next((f"data.{k}" for k in ("train", "dev", "test") if getattr(data, k, None) == spec), "data.train")
    key = _corpus_key(spec, data)
    if key not in _CORPUS_CACHE:
        try:
            pairs = load_pairs(spec, data)
        except (DataError, OSError, ValueError) as e:
            raise ConfigError(f"{field}: {e}") from None
        fmt = data.format if data.format != "auto" else detect_format(spec)
        rows = "".join(f"<tr><td style='text-align:left'>{html.escape(a[:120])}</td><td style='text-align:left'>"
                       f"{html.escape(b[:120])}</td></tr>" for a, b in list(zip(pairs.src, pairs.tgt))[:n])
        _CORPUS_CACHE.clear()  # one corpus at a time: the cache is only for re-validation
        _CORPUS_CACHE[key] = (f'<div style="margin:0 0 8px 198px;font-size:90%">&#10003; {html.escape(fmt)} corpus, '
                              f"{len(pairs):,} pairs (both sides the same length); first pairs:<table>{rows}</table></div>")
    return _CORPUS_CACHE[key]

def preview_data(config: Config, n: int = 3) -> Any:
    """Load, clean and split ``config.data`` (as the run will) and show the counts per split,
    pairs dropped per cleaning rule, and ``n`` sample training pairs. Returns the
    :class:`~adaptmllm.data.pairs.PreparedData`.

    Raises:
        adaptmllm.data.pairs.DataError: a corpus cannot be read (the message names the file and the fix).
    """
    prepared = prepare_data(config.data)
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(s)}</td><td style='text-align:left'>"
                   f"{html.escape(t)}</td></tr>" for s, t in list(zip(prepared.train.src, prepared.train.tgt))[:n])
    display(HTML(_md_table_html("\n".join(data_md(prepared.report))) +
                 f"<p><b>Sample training pairs</b> ({html.escape(config.data.src_lang)} &rarr; "
                 f"{html.escape(config.data.tgt_lang)})</p><table><tr><th>source</th><th>target</th></tr>{rows}</table>"))
    return prepared


def _md_table_html(md: str) -> str:
    """A markdown pipe table (as report.py writes) as an HTML table; other lines as paragraphs."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, body = rows[0], rows[2:] if len(rows) > 1 else []
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            flush()
            if line.strip():
                out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "".join(out)


def _inline(text: str) -> str:
    esc = html.escape(text)
    esc = re.sub(r"`(.+?)`", r"<code>\1</code>", esc)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc)


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
    :func:`adaptmllm.evaluation.human_report.write_report`) as a table and chart. Returns its dict, or None (with
    a note) when nobody has rated yet."""
    db = Path(run_dir) / DB_NAME
    if not db.is_file() or HumanEvalStore(db).count_ratings() == 0:
        display(HTML("<p>No human ratings yet: share the playground link with translators (Human "
                     "evaluation tab), then run this cell again.</p>"))
        return None
    try:
        out = write_report(db, weights=weights)
    except HumanEvalError as e:
        display(HTML(f"<p>{html.escape(str(e))}</p>"))
        return None
    display(HTML(_md_table_html(out["markdown"])))
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
