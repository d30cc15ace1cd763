"""The evaluation sections of the run report (markdown for ``report.md``) and the one-file HTML
report ``report.html``: verdict, scores with signatures, significance, forgetting check, per-epoch
scores, error analysis, data statistics, HPO summary, energy and the config, plots embedded as
base64 PNG so the file opens anywhere, offline, and can be mailed as it is.

Both formats are rendered from the same blocks, so they show the same numbers. Scores are
sacrebleu's (0-100); energy kWh, emissions kgCO2eq, durations seconds.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from .io import atomic_write_text

__all__ = ["evaluation_markdown", "write_html_report", "evaluation_blocks", "render_markdown", "render_html"]

_LABELS = {"bleu": "BLEU", "chrf": "chrF++", "ter": "TER", "spbleu": "spBLEU", "comet": "COMET"}
_KIND_LABELS = {"empty": "empty output", "copied_source": "copy of the source", "untranslated": "mostly untranslated"}


def _n(x: Optional[float], fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


# A block is a tuple: ("h2", text) | ("p", text) | ("table", headers, rows) | ("img", path, alt)
# | ("pre", text) | ("box", text, css_class). Cells are strings, or (string, css_class) pairs.
# Text may hold **bold** and `code` (rendered in both formats).

def _sig_blocks(m: dict) -> list:
    sig = m.get("significance")
    if not sig:
        return []
    from .report import format_p

    rows = []
    for k, s in sig["metrics"].items():
        lo, hi = s["delta_ci"]
        better = s.get("better")
        cls = "good" if better == "finetuned" else "bad" if better == "baseline" else ""
        rows.append([_LABELS.get(k, k), _n(s["baseline"]), _n(s["finetuned"]), (f"{s['delta']:+.1f}", cls),
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
        rows.append([_LABELS[k], _n(b, fmt), _n(f, fmt), "n/a" if b is None or f is None else format(f - b, "+" + fmt)])
        sig = ((m.get("finetuned") or m.get("baseline") or {}).get("signatures") or {}).get(k)
        sigs.append(f"{_LABELS[k]}: {sig}")
    return [("h2", "Further metrics"), ("table", ["Metric", "Baseline", "Fine-tuned", "Difference"], rows),
            ("p", "spBLEU: BLEU over SentencePiece pieces of the local model named in its signature. "
                  "COMET: on COMET's own scale (not 0-100)."), ("pre", "\n".join(sigs))]


def _forgetting_blocks(m: dict) -> list:
    f = m.get("forgetting")
    if not f:
        return []
    from .report import format_p

    out: list = [("h2", "Forgetting check (general-domain test set)")]
    if f.get("flagged"):
        out.append(("box", f"Forgetting: general-domain chrF++ fell by {f['drop']:.1f} points, more than the "
                           f"{f['threshold']:g}-point threshold.", "bad"))
    elif f.get("flagged") is False:
        out.append(("box", f"No forgetting flagged: general-domain chrF++ changed by {-f['drop']:+.1f} points "
                           f"(threshold: a drop of {f['threshold']:g}).", "good"))
    rows = []
    for name, s in (("Baseline", f.get("baseline")), ("Fine-tuned", f.get("finetuned"))):
        rows.append([name] + ([_n(s[k]) for k in ("bleu", "chrf", "ter")] if s else ["not scored"] * 3))
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
        rows.append([f"`{c['checkpoint']}`{mark}", _n(c.get("epoch"), "g"), str(c.get("step")),
                     _n(c["dev"]["chrf"]), _n(c["dev"]["bleu"]), _n(g.get("chrf")), _n(g.get("bleu"))])
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
            row.append(_n(b.get("baseline_chrf")))
        row.append(_n(b.get("finetuned_chrf")))
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
                 _n(s["chrf_baseline"]), _n(s["chrf_finetuned"]),
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
    from .report import format_p

    rows = []
    for name, d in dirs.items():
        b, f, sig = d.get("baseline"), d["finetuned"], ((d.get("significance") or {}).get("metrics") or {})
        for label, s in (("baseline", b), ("fine-tuned", f)):
            rows.append([f"`{name}` {label}"] + ([_n(s[k]) for k in ("bleu", "chrf", "ter")] if s else ["not scored"] * 3)
                        + [str(d.get("n_segments", "n/a")), ""])
        if d.get("delta"):
            cls = "good" if d["delta"]["chrf"] > 0 else "bad" if d["delta"]["chrf"] < 0 else ""
            p = ", ".join(f"{_LABELS.get(k, k)} {format_p(sig[k]['p_value'])}" for k in ("chrf", "bleu") if k in sig)
            rows.append([f"`{name}` difference"] + [(f"{d['delta'][k]:+.1f}", cls if k == "chrf" else "")
                                                    for k in ("bleu", "chrf", "ter")] + ["", p])
    b, f = m.get("baseline"), m.get("finetuned")
    rows.append(["**macro average** baseline"] + ([_n(b[k]) for k in ("bleu", "chrf", "ter")] if b else
                                                  ["not scored"] * 3) + ["", ""])
    fine_label = "fine-tuned (discarded, not in model/)" if m.get("kept") == "baseline" else "fine-tuned"
    rows.append([f"**macro average** {fine_label}"] + [_n(f[k]) for k in ("bleu", "chrf", "ter")] + ["", ""])
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
        rows.append([f"`{name}`", _n(b["chrf"]) if b else "not scored", _n(t["chrf"]),
                     (f"{-f['drop']:+.1f}" if f.get("drop") is not None else "n/a", cls),
                     _n(b["bleu"]) if b else "not scored", _n(t["bleu"]),
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


def evaluation_markdown(m: dict) -> list[str]:
    """Markdown lines of :func:`evaluation_blocks` for ``report.md`` (empty when there is nothing)."""
    return render_markdown(evaluation_blocks(m))


def _inline(text: str) -> str:
    t = html.escape(str(text), quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", t)


def _img_tag(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def render_html(blocks: list, base_dir: Path) -> str:
    """HTML of ``blocks``; images are read from paths relative to ``base_dir`` (or absolute ones,
    or in-memory PNG bytes) and embedded as base64."""
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h2", "h3"):
            out.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "box":
            out.append(f'<div class="box {b[2]}">{_inline(b[1])}</div>')
        elif kind == "pre":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "img":
            src = b[1]
            if isinstance(src, bytes):
                data = base64.b64encode(src).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
            else:
                out.append(_img_tag(Path(src) if Path(src).is_absolute() else base_dir / src, b[2]))
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b[1])
            body = []
            for row in b[2]:
                cells = []
                for c in row:
                    text, cls = (c if isinstance(c, tuple) else (str(c), ""))
                    num = " num" if re.fullmatch(r"[-+]?[\d.]+( \(.*\))?|n/a|p [<=] [\d.]+", text) else ""
                    attr = f' class="{(cls + num).strip()}"' if (cls or num) else ""
                    cells.append(f"<td{attr}>{_inline(text)}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return "\n".join(out)


def _md_to_blocks(lines: list[str]) -> list:
    """Blocks from the small markdown subset report.py writes (tables, bullets, code fences, text)."""
    blocks: list = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append(("pre", "\n".join(lines[i + 1:j])))
            i = j + 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", lines[i].strip())[1:-1]]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            blocks.append(("table", rows[0], rows[1:]))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(lines[i][2:])
                i += 1
            blocks.append(("ul", items))
        elif line.strip():
            blocks.append(("p", line))
            i += 1
        else:
            i += 1
    return blocks


def _render_any(blocks: list, base: Path) -> str:
    out = []
    for b in blocks:
        if b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b[1]) + "</ul>")
        else:
            out.append(render_html([b], base))
    return "\n".join(out)


def _bucket_png(a: dict) -> Optional[bytes]:
    buckets = [b for b in (a or {}).get("length_buckets", []) if b["n"]]
    if not buckets:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = list(range(len(buckets)))
    systems = [s for s in ("baseline", "finetuned") if f"{s}_chrf" in buckets[0]]
    width = 0.8 / len(systems)
    for j, s in enumerate(systems):
        ax.bar([x + (j - (len(systems) - 1) / 2) * width for x in xs], [b[f"{s}_chrf"] for b in buckets], width,
               label="fine-tuned" if s == "finetuned" else s, color="tab:green" if s == "finetuned" else "tab:grey")
    ax.set_xticks(xs, [f"{b['bucket']}\n(n={b['n']})" for b in buckets])
    ax.set_xlabel(f"source length ({a.get('length_unit', 'words')})")
    ax.set_ylabel("chrF++ (0-100)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b1f24;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #d0d7de;padding:.3em .6em;
vertical-align:top}th{background:#f6f8fa;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.good{color:#116329;font-weight:600}td.bad{color:#b91c1c;font-weight:700}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;font-size:.85em}code{background:#f6f8fa;padding:0 .2em}
.box{padding:.8em 1em;border-radius:6px;margin:.8em 0;font-size:1.1em;font-weight:600}
.box.good,.box.improved{background:#dafbe1;border:1px solid #4ac26b}
.box.bad,.box.worse{background:#ffebe9;border:2px solid #cf222e;color:#b91c1c}
.box.unchanged,.box.neutral{background:#f6f8fa;border:1px solid #8c959f}
figure{margin:.8em 0}img{max-width:100%}figcaption{font-size:.85em;color:#57606a}
.meta{color:#57606a;font-size:.9em}
"""


def write_html_report(run_dir: str | os.PathLike, config: Any, metrics: dict, data_report: Optional[dict] = None,
                      history_png: Optional[str] = None) -> Path:
    """Write ``<run_dir>/report.html`` (atomically): one self-contained file, all plots embedded.

    Sections: title, verdict (green when fine-tuning significantly improved chrF++, grey when it did
    not significantly change it, red when it made it worse), a red banner when the forgetting check
    is flagged, test scores with the sacrebleu signatures, significance, further metrics, forgetting
    check, per-epoch checkpoint scores, training curves, error analysis, data statistics (pairs
    kept and dropped per cleaning rule), HPO summary (``metrics["hpo"]`` when there was a study:
    its scalar entries and ``best_params``), energy and emissions, and the config. ``config`` is a
    dataclass or a dict; ``metrics`` the ``metrics.json`` shape. Returns the path.

    Raises:
        ValueError: as :func:`adaptmllm.report.build_metrics`; OSError on write errors.
    """
    from . import __version__
    from .report import _config_dict, _data_md, _green_md, _language_name, _scores_md, build_metrics, verdict_info

    run_dir = Path(run_dir)
    cfg, m = _config_dict(config), build_metrics(metrics)
    v = verdict_info(m)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    src, tgt = data.get("src_lang", "?"), data.get("tgt_lang", "?")
    title = (f"adaptmllm run {cfg.get('name', run_dir.name)}: {_language_name(src)} ({src}) → "
             f"{_language_name(tgt)} ({tgt})")
    if data.get("directions"):
        title = f"adaptmllm run {cfg.get('name', run_dir.name)}: " + ", ".join(
            f"{d['src_lang']} → {d['tgt_lang']}" for d in data["directions"])
    # green only when the model in model/ is the fine-tuned one that improved
    box = {"improved": "improved", "worse": "worse"}.get(v["outcome"], "unchanged") if v["kept"] != "baseline" else "unchanged"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">Model: <code>{html.escape(str(model.get("name_or_path", "?")))}</code> · '
             f"report written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by adaptmllm {__version__}</p>",
             f'<div class="box {box}" id="verdict">{_inline(v["text"])}</div>']
    f = m.get("forgetting") or {}
    if f.get("flagged"):
        parts.append(f'<div class="box bad" id="forgetting">Forgetting: general-domain chrF++ fell by {f["drop"]:.1f} '
                     f"points (threshold {f['threshold']:g}).</div>")
    parts += ["<h2>Test scores</h2>", _render_any(_md_to_blocks(_scores_md(m, model.get("name_or_path", ""))), run_dir)]
    if m.get("best_checkpoint"):
        parts.append(f"<p>Best checkpoint on the dev set: <code>{html.escape(str(m['best_checkpoint']))}</code>; "
                     f"<code>model/</code> holds the {'baseline' if m.get('kept') == 'baseline' else 'fine-tuned'} model.</p>")
    blocks = evaluation_blocks(m)
    a = m.get("error_analysis")
    if a:
        png = _bucket_png(a)
        if png:
            at = next((i for i, b in enumerate(blocks) if b[0] == "h3" and b[1] == "By source length"), None)
            if at is not None:
                blocks.insert(at + 2, ("img", png, "chrF++ by source length"))
    curves = [("h2", "Training curves"), ("img", str(Path(history_png).absolute()), "Training curves")] if history_png else []
    # training curves go right before the error analysis
    at = next((i for i, b in enumerate(blocks) if b[0] == "h2" and b[1] == "Error analysis"), len(blocks))
    blocks = blocks[:at] + curves + blocks[at:]
    if m.get("hpo"):  # the study's plots (adaptmllm.hpo writes them to <run folder>/hpo/, beside best/)
        for stem, alt in (("history", "Optimisation history"), ("importance", "Parameter importance")):
            png = next((p for p in (run_dir.parent / "hpo" / f"{stem}.png", run_dir / "hpo" / f"{stem}.png")
                        if p.is_file()), None)
            if png is not None:
                blocks.append(("img", str(png.absolute()), alt))
    parts.append(render_html(blocks, run_dir))
    parts += ["<h2>Data</h2>", _render_any(_md_to_blocks(_data_md(data_report)), run_dir)]
    parts += ["<h2>Energy and emissions</h2>", _render_any(_md_to_blocks(_green_md(m.get("green"))), run_dir)]
    parts += ["<h2>Configuration</h2>",
              f"<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).rstrip())}</pre>"]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    return atomic_write_text(run_dir / "report.html", page)
