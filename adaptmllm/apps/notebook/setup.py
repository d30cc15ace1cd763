"""Notebook front end (Colab, Jupyter), the set-up side: the machine's facts and precision advice
(:func:`environment`), Google Drive (:func:`mount_drive`), quiet output without harmless warnings
(:func:`quiet_notebook`), the memory plan and a time estimate per epoch before training (:func:`show_plan`),
and the data checks before a run (:func:`check_corpus`, :func:`preview_data`). The results side is
:mod:`adaptmllm.apps.notebook.results`, the config form :mod:`adaptmllm.apps.notebook.forms`.

Importing this module imports IPython, not torch.
"""

from __future__ import annotations

import html
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

from IPython.display import HTML, display

from adaptmllm.config import Config, ConfigError, __version__
from adaptmllm.data.pairs import prepare_data
from adaptmllm.data.readers import DataError, detect_format, load_pairs
from adaptmllm.hardware import in_colab, resolve_precision
from adaptmllm.reporting.markdown import data_md
from adaptmllm.training.deepspeed import check_installed
from adaptmllm.training.memory_plan import ModelSize, nllb_config, plan_memory

__all__ = ["environment", "mount_drive", "quiet_notebook", "HARMLESS_WARNINGS", "show_plan", "estimate_epoch_seconds",
           "check_corpus", "preview_data", "md_table_html"]

log = logging.getLogger("adaptmllm")


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
            :class:`adaptmllm.data.readers.DataError`: a missing file, uneven line counts, a bad row...).
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
        adaptmllm.data.readers.DataError: a corpus cannot be read (the message names the file and the fix).
    """
    prepared = prepare_data(config.data)
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(s)}</td><td style='text-align:left'>"
                   f"{html.escape(t)}</td></tr>" for s, t in list(zip(prepared.train.src, prepared.train.tgt))[:n])
    display(HTML(md_table_html("\n".join(data_md(prepared.report))) +
                 f"<p><b>Sample training pairs</b> ({html.escape(config.data.src_lang)} &rarr; "
                 f"{html.escape(config.data.tgt_lang)})</p><table><tr><th>source</th><th>target</th></tr>{rows}</table>"))
    return prepared


def md_table_html(md: str) -> str:
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
