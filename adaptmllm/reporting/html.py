"""The one-file HTML report ``report.html``: verdict, scores with signatures, significance, forgetting
check, per-epoch scores, error analysis, data statistics, HPO summary, energy and the config, plots
embedded as base64 PNG so the file opens anywhere, offline, and can be mailed as it is.

It renders the same blocks as ``report.md`` (:mod:`adaptmllm.reporting.blocks`), so both show the same
numbers. Scores are sacrebleu's (0-100); energy kWh, emissions kgCO2eq, durations seconds.
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

from adaptmllm.config import __version__
from adaptmllm.io import atomic_write_text
from adaptmllm.reporting.blocks import evaluation_blocks
from adaptmllm.reporting.markdown import data_md, green_md, scores_md
from adaptmllm.reporting.summary import build_metrics, config_dict, display_language, verdict_info

__all__ = ["write_html_report", "render_html"]


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
        ValueError: as :func:`adaptmllm.reporting.summary.build_metrics`; OSError on write errors.
    """
    run_dir = Path(run_dir)
    cfg, m = config_dict(config), build_metrics(metrics)
    v = verdict_info(m)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    src, tgt = data.get("src_lang", "?"), data.get("tgt_lang", "?")
    title = (f"adaptmllm run {cfg.get('name', run_dir.name)}: {display_language(src)} ({src}) → "
             f"{display_language(tgt)} ({tgt})")
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
    parts += ["<h2>Test scores</h2>", _render_any(_md_to_blocks(scores_md(m, model.get("name_or_path", ""))), run_dir)]
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
    if m.get("hpo"):  # the study's plots (adaptmllm.runs.hpo.search writes them to <run folder>/hpo/, beside best/)
        for stem, alt in (("history", "Optimisation history"), ("importance", "Parameter importance")):
            png = next((p for p in (run_dir.parent / "hpo" / f"{stem}.png", run_dir / "hpo" / f"{stem}.png")
                        if p.is_file()), None)
            if png is not None:
                blocks.append(("img", str(png.absolute()), alt))
    parts.append(render_html(blocks, run_dir))
    parts += ["<h2>Data</h2>", _render_any(_md_to_blocks(data_md(data_report)), run_dir)]
    parts += ["<h2>Energy and emissions</h2>", _render_any(_md_to_blocks(green_md(m.get("green"))), run_dir)]
    parts += ["<h2>Configuration</h2>",
              f"<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).rstrip())}</pre>"]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    return atomic_write_text(run_dir / "report.html", page)
