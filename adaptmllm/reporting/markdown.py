"""report.md and the model card (model/README.md): scores with signatures, energy, data and coverage sections,
written atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from adaptmllm.io import atomic_write_text
from adaptmllm.languages import iso639_1
from adaptmllm.reporting.blocks import evaluation_markdown
from adaptmllm.reporting.summary import (LABELS, SCORE_KEYS, build_metrics, config_dict, display_language,
                                         fmt_number, system_labels, verdict)

__all__ = ["write_report", "write_model_card"]


def _hub_language(code: str) -> str:
    """ISO 639-1 code where known (``languages.iso639_1``), else the ISO 639-3 part of the FLORES code."""
    try:
        found = iso639_1(code)
        if found:
            return found
    except Exception:
        pass
    return code.split("_")[0]


# ----------------------------------------------------------------------------- report.md

def scores_md(m: dict, model_name: str) -> list[str]:
    labels = system_labels(m)
    rows = [(labels["baseline"] + (f" (`{model_name}`)" if model_name else ""), m["baseline"]),
            (labels["finetuned"], m["finetuned"])]
    out = ["| System | BLEU | chrF++ | TER |", "|---|---:|---:|---:|"]
    for label, s in rows:
        cells = [fmt_number(s[k]) if s else "not scored" for k in SCORE_KEYS]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if m["delta"]:
        out.append("| Difference | " + " | ".join(format(m["delta"][k], "+.1f") for k in SCORE_KEYS) + " |")
    scored = m["finetuned"] or m["baseline"] or {}
    out += ["", f"Higher is better for BLEU and chrF++, lower for TER. "
                f"Test segments: {scored.get('n_segments', 'n/a')}.", "", "sacrebleu signatures:", "",
            "```"]
    out += [f"{LABELS[k] + ':':8}{scored.get('signatures', {}).get(k, 'n/a')}" for k in SCORE_KEYS]
    return out + ["```"]


def green_md(green: Optional[dict]) -> list[str]:
    if not green:
        return ["Energy was not tracked for this run."]
    hw = green.get("cpu_model") or "unknown CPU"
    hw += f" with {green['gpu_model']}" if green.get("gpu_model") else ", no GPU tracked"
    out = [
        f"- Energy: {fmt_number(green.get('energy_kwh'), '.3g')} kWh (CPU {fmt_number(green.get('cpu_energy_kwh'), '.3g')}, "
        f"GPU {fmt_number(green.get('gpu_energy_kwh'), '.3g')}, RAM {fmt_number(green.get('ram_energy_kwh'), '.3g')} kWh)",
        f"- Emissions: {fmt_number(green.get('emissions_kg'), '.3g')} kgCO2eq "
        f"(carbon intensity of the {green.get('country_iso_code') or '?'} grid)",
        f"- Duration: {fmt_number(green.get('duration_s'))} s",
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


def data_md(data_report: Optional[dict]) -> list[str]:
    if data_report and "directions" in data_report:  # a multilingual run: one table per direction
        out = []
        for name, rep in data_report["directions"].items():
            out += ["", f"### `{name}`", ""] + data_md(rep)
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
                 data_report: Optional[dict], history_png: Optional[str], hpo_markdown: Optional[str] = None) -> Path:
    """Write ``<run_dir>/report.md`` (atomically): run and language pair, verdict, scores table with
    the sacrebleu signatures, energy and emissions with their caveats, data table (per split: pairs
    read, kept and dropped per cleaning rule: ``{"train": {"total", "kept", "dropped": {rule: n}}, ...}``,
    under ``"splits"`` as :func:`adaptmllm.data.pairs.prepare_data` reports it, with ``source`` and
    ``split_off`` where given), the training-curve PNG (linked by a path relative to ``run_dir``)
    and the config as YAML. ``config`` is a dataclass (e.g. :class:`~adaptmllm.config.Config`) or a dict.
    ``hpo_markdown``: the study's HPO section for a study's best model (see
    :func:`adaptmllm.reporting.blocks.evaluation_markdown`).

    Returns the path. Raises ``ValueError`` as :func:`build_metrics` does, ``OSError`` on write errors.
    """
    run_dir = Path(run_dir)
    cfg, m = config_dict(config), build_metrics(metrics)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    src, tgt = data.get("src_lang", "?"), data.get("tgt_lang", "?")
    pair = f"{display_language(src)} (`{src}`) → {display_language(tgt)} (`{tgt}`)"
    if data.get("directions"):
        pair = ", ".join(f"`{d['src_lang']}` → `{d['tgt_lang']}`" for d in data["directions"])
    lines = [f"# adaptmllm run `{cfg.get('name', run_dir.name)}`: {pair}", "",
             f"**{verdict(m)}**", "", "## Test scores", ""]
    lines += scores_md(m, model.get("name_or_path", ""))
    if m.get("best_checkpoint"):
        lines += ["", f"Best checkpoint: `{m['best_checkpoint']}`"]

    lines += evaluation_markdown(m, hpo_markdown)
    lines += ["", "## Energy and emissions", ""] + green_md(m["green"])
    lines += ["", "## Data", ""] + data_md(data_report)
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
    cfg, m = config_dict(config), build_metrics(metrics)
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
        f"# {name}: {display_language(src)} → {display_language(tgt)}", "",
        f"A translation model from {display_language(src)} (`{src}`) to {display_language(tgt)} (`{tgt}`), "
        f"fine-tuned with adaptmllm from `{base_model}`.", "",
        f"**{verdict(m)}**", "",
        "## Base model and licence", "",
        f"- Base model: `{base_model}`", f"- Licence: {licence}.", "",
        "## Languages", "",
        f"- Source: {display_language(src)} (`{src}`)", f"- Target: {display_language(tgt)} (`{tgt}`)", "",
        "## Data", "",
        f"- Training: `{data.get('train') or 'adaptmllm embedded demo corpus'}`",
        f"- Dev: `{data.get('dev') or 'held-out split of the training corpus'}`",
        f"- Test: `{test_name}`", "",
        "## Test scores", ""] + scores_md(m, base_model) + [
        "", "## How to use", "", usage, "",
        "## Energy and emissions of fine-tuning", ""] + green_md(m["green"]) + [""]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return atomic_write_text(model_dir / "README.md", f"---\n{front}---\n\n" + "\n".join(body))
