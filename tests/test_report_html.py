"""The one report: report.html (self-contained), report.md and metrics.json on the tiny run; the
forgetting check, per-checkpoint scores and checkpoint selection on a copy of it; headless Chromium
renders the HTML to PNG and shows the numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from adaptmllm.reporting.html import write_html_report

CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def test_tiny_run_report_end_to_end(tiny_run):
    run_dir, m = tiny_run.run_dir, tiny_run.metrics
    assert tiny_run.html == run_dir / "report.html"
    saved = json.loads((run_dir / "metrics.json").read_text())
    sig = saved["significance"]["metrics"]
    assert set(sig) == {"chrf", "bleu", "ter"} and saved["significance"]["n_samples"] == 1000
    assert sig["chrf"]["delta"] == pytest.approx(saved["finetuned"]["chrf"] - saved["baseline"]["chrf"])
    assert sig["chrf"]["p_value"] < 0.05 and sig["chrf"]["better"] == "finetuned"  # the demo clearly improves
    assert saved["verdict"]["outcome"] == "improved" and saved["verdict"] == m["verdict"]
    assert saved["verdict"]["text"].startswith("Fine-tuning improved chrF++ by")
    ea = saved["error_analysis"]
    assert ea["n_segments"] == saved["finetuned"]["n_segments"] and "sentence_chrf" not in ea
    assert sum(b["n"] for b in ea["length_buckets"]) == ea["n_segments"]
    assert sum(ea["change"].values()) == ea["n_segments"]
    assert "forgetting" not in saved and "checkpoints" not in saved  # both off by default
    rows = (run_dir / "segments.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == ea["n_segments"] + 1

    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert saved["verdict"]["text"] in md and "## Significance (paired bootstrap)" in md
    assert "## Error analysis" in md and "bs:1000|seed:12345" in md

    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'class="box improved"' in page
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # self-contained: nothing fetched
    assert page.count("data:image/png;base64,") >= 2  # training curves, length buckets
    text = re.sub(r"<[^>]+>", " ", page)
    for needle in (f"{saved['finetuned']['chrf']:.1f}", f"{saved['baseline']['bleu']:.1f}",
                   saved["finetuned"]["signatures"]["chrf"], "Dropped: duplicate", "Energy and emissions",
                   "Segments that got most better", "learning_rate"):
        assert needle in text, needle


@pytest.fixture(scope="module")
def evaluated_copy(tiny_run, tmp_path_factory):
    """A copy of the tiny run re-evaluated with a small general-domain test set (a TSV file) and
    per-checkpoint scores."""
    from adaptmllm.runs.backtranslate import write_pairs_tsv
    from adaptmllm.data.test_sets import demo_general_test
    from adaptmllm.runs.evaluate import evaluate_run

    base = tmp_path_factory.mktemp("evaluated")
    run_dir = base / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())  # keep re-translation short: greedy, 20 dev pairs
    cfg["eval"]["num_beams"], cfg["train"]["eval_max_pairs"] = 1, 20
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    src, tgt = demo_general_test("qaa_Latn", 24, seed=5)
    general = write_pairs_tsv(base / "general.tsv", "eng_Latn", "qaa_Latn", src, tgt, False)
    m = evaluate_run(run_dir, {"general_test": str(general), "score_checkpoints": True,
                               "forgetting_threshold": 0.5})
    return run_dir, m


def test_forgetting_check_and_checkpoints(evaluated_copy):
    run_dir, m = evaluated_copy
    f = m["forgetting"]
    assert f["n_segments"] == 24 and f["threshold"] == 0.5 and f["metric"] == "chrf"
    assert f["drop"] == pytest.approx(f["baseline"]["chrf"] - f["finetuned"]["chrf"])
    assert f["flagged"] == (f["drop"] > 0.5) and m["verdict"]["forgetting"] == f["flagged"]
    assert set(f["significance"]["metrics"]) == {"chrf", "bleu", "ter"}
    for name in ("general.baseline.hyp.txt", "general.finetuned.hyp.txt", "data/general.qaa_Latn",
                 "checkpoint_scores.png"):
        assert (run_dir / name).is_file(), name
    cks = m["checkpoints"]
    assert cks and [c["step"] for c in cks] == sorted(c["step"] for c in cks)
    for c in cks:
        assert c["epoch"] > 0 and 0 <= c["dev"]["chrf"] <= 100 and c["general"]["n_segments"] == 24
        assert c["dev"]["n_segments"] == 20
    assert m["evaluated_with"]["eval"]["general_test"].endswith("general.tsv")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Forgetting check (general-domain test set)" in page and "Per-epoch scores" in page
    assert cks[0]["checkpoint"] in page and f"{f['finetuned']['chrf']:.1f}" in page
    assert ('id="forgetting"' in page) == bool(f["flagged"])


def test_select_checkpoint(evaluated_copy):
    import torch
    from safetensors.torch import load_file

    from adaptmllm.evaluation.scoring import EvaluationError, list_checkpoints
    from adaptmllm.runs.evaluate import select_checkpoint

    run_dir, _ = evaluated_copy
    cks = list_checkpoints(run_dir)
    with pytest.raises(EvaluationError, match=r"left: checkpoint-\d+ \(epoch"):
        select_checkpoint(run_dir, "checkpoint-999999")
    with pytest.raises(EvaluationError, match="either"):
        select_checkpoint(run_dir)
    first = cks[0]
    m = select_checkpoint(run_dir, epoch=first["epoch"])
    assert m["selected_checkpoint"]["checkpoint"] == first["checkpoint"] and m["kept"] == "finetuned"
    assert f"model/ holds {first['checkpoint']}" in m["verdict"]["text"]
    kept, chosen = load_file(run_dir / "model" / "model.safetensors"), load_file(Path(first["path"]) / "model.safetensors")
    assert kept.keys() == chosen.keys() and all(torch.equal(kept[k], chosen[k]) for k in kept)
    assert (run_dir / "model" / "tokenizer.json").is_file() and not (run_dir / "model.previous").exists()
    # the test set was translated again with the selected model, and the reports say so
    hyps = (run_dir / "finetuned.hyp.txt").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == m["finetuned"]["n_segments"]
    assert json.loads((run_dir / "metrics.json").read_text())["selected_checkpoint"]["checkpoint"] == first["checkpoint"]
    assert "selected by hand" in (run_dir / "report.md").read_text(encoding="utf-8")


def _metrics(flagged: bool) -> dict:
    sig = "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"
    s = lambda b, c, t: {"bleu": b, "chrf": c, "ter": t, "signatures": {"bleu": sig, "chrf": sig, "ter": sig},
                         "n_segments": 3}
    return {"baseline": s(30.0, 50.0, 60.0), "finetuned": s(28.0, 47.25, 62.0), "kept": "baseline",
            "significance": {"test": "paired bootstrap", "n_samples": 1000, "seed": 12345, "alpha": 0.05,
                             "n_segments": 3, "metrics": {"chrf": {
                                 "baseline": 50.0, "finetuned": 47.25, "delta": -2.75, "delta_ci": [-4.5, -1.0],
                                 "p_value": 0.003, "significant": True, "better": "baseline", "signature": sig}}},
            "forgetting": {"source": "flores/devtest", "n_segments": 3, "baseline": s(20.0, 45.0, 70.0),
                           "finetuned": s(15.0, 38.5, 75.0), "delta": {"bleu": -5.0, "chrf": -6.5, "ter": 5.0},
                           "metric": "chrf", "drop": 6.5, "threshold": 1.0, "flagged": flagged, "significance": None},
            "hpo": {"study_name": "s1", "metric": "chrf", "counts": {"complete": 10, "pruned": 2}, "best_value": 51.234,
                    "best_params": {"learning_rate": 3e-4}}}


def test_html_worse_and_forgetting_in_red(tmp_path):
    cfg = {"name": "ga<run>", "data": {"src_lang": "eng_Latn", "tgt_lang": "gle_Latn"}, "model": {"name_or_path": "x"}}
    page = write_html_report(tmp_path, cfg, _metrics(True)).read_text(encoding="utf-8")
    # model/ holds the baseline: the verdict opens with that (a grey box: model/ is unchanged), then the
    # discarded checkpoint's worse test scores
    assert 'class="box unchanged" id="verdict">model/ holds the baseline' in page
    assert "discarded fine-tuned checkpoint was worse too, chrF++ 2.8 points lower" in page
    assert 'class="box bad" id="forgetting"' in page and "fell by 6.5 points" in page
    assert "ga&lt;run&gt;" in page and "ga<run>" not in page  # escaped
    assert "Hyperparameter search" in page and "51.23" in page and "learning_rate" in page and "pruned 2" in page
    calm = write_html_report(tmp_path, cfg, _metrics(False)).read_text(encoding="utf-8")
    assert 'id="forgetting"' not in calm and "No forgetting flagged" in calm  # not flagged: no red banner
    md_lines = __import__("adaptmllm.reporting.blocks", fromlist=["x"]).evaluation_markdown(_metrics(True))
    assert any("Forgetting: general-domain chrF++ fell by 6.5 points" in ln for ln in md_lines)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
def test_chromium_renders_report(tiny_run, tmp_path):
    page = tiny_run.run_dir / "report.html"
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    m = tiny_run.metrics
    for needle in (f"{m['finetuned']['chrf']:.1f}", f"{m['baseline']['chrf']:.1f}", "Fine-tuning improved chrF++ by",
                   f"{m['significance']['metrics']['chrf']['delta']:.1f}"):
        assert needle in text, needle


def test_lora_checkpoint_is_merged_onto_the_base(tmp_path):
    """Per-checkpoint scoring and select-checkpoint load LoRA checkpoints (adapters only) onto the base."""
    import torch

    from adaptmllm.config import config_from_dict
    from adaptmllm.training.setup import load_checkpoint_model
    from adaptmllm.modeling.lora import lora_model
    from adaptmllm.training.setup import prepare_base_model

    cfg = config_from_dict({"name": "l", "model": {"lora": {"enabled": True, "r": 4}}})
    peft_model = lora_model(prepare_base_model(cfg, progress=False).model, cfg.model.lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # B = 0 at init: make the adapters change the output
    peft_model.save_pretrained(tmp_path / "checkpoint-7")
    assert (tmp_path / "checkpoint-7" / "adapter_config.json").is_file()
    merged = load_checkpoint_model(tmp_path / "checkpoint-7", cfg, tmp_path)
    ids = torch.tensor([[5, 6, 7, 2]])
    dec = torch.tensor([[2, 9, 10]])
    peft_model.eval()
    merged.eval()
    with torch.no_grad():
        want = peft_model(input_ids=ids, decoder_input_ids=dec).logits
        got = merged(input_ids=ids, decoder_input_ids=dec).logits
    assert not hasattr(merged, "peft_config") and torch.allclose(want, got, atol=1e-4)
