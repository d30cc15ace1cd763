"""adaptmllm.reporting.summary: verdict, metrics.json, report.md, training-curve PNG and model card."""

import json
from dataclasses import dataclass, field

import pytest
import yaml

from adaptmllm.training.green import GreenReport
from adaptmllm.reporting.summary import build_metrics, verdict, write_metrics
from adaptmllm.reporting.plots import plot_history
from adaptmllm.reporting.markdown import write_model_card, write_report

SIGS = {"bleu": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
        "chrf": "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0",
        "ter": "nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:2.6.0"}


def scores(bleu, chrf, ter):
    return {"bleu": bleu, "chrf": chrf, "ter": ter, "signatures": dict(SIGS), "n_segments": 200}


GREEN = GreenReport(energy_kwh=0.0123, emissions_kg=0.00456, duration_s=789.0, cpu_energy_kwh=0.01,
                    ram_energy_kwh=0.0023, cpu_model="AMD EPYC", country_iso_code="IRL",
                    tracking="CPU: estimate; RAM: model; GPU: none found", measured=False,
                    notes=["The energy figure is an estimate, not a measurement."])


@dataclass
class Data:
    src_lang: str = "eng_Latn"
    tgt_lang: str = "gle_Latn"
    train: str = "corpus/train.tsv"
    dev: str = None
    test: str = None


@dataclass
class Model:
    name_or_path: str = "facebook/nllb-200-distilled-600M"


@dataclass
class Cfg:
    name: str = "ga-run"
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)


def metrics():
    return {"baseline": scores(20.0, 45.0, 70.0), "finetuned": scores(32.34, 55.06, 60.0), "green": GREEN,
            "best_checkpoint": "checkpoint-40"}


@pytest.mark.parametrize("base, fine, words", [
    (scores(20, 45, 70), scores(32.3, 55.1, 60), ["improved BLEU by +12.3 and chrF++ by +10.1"]),
    (scores(20, 45, 70), scores(19.0, 46.0, 71), ["improved chrF++ by +1.0", "BLEU -1.0"]),
    (scores(20, 45, 70), scores(21.0, 45.01, 70), ["improved BLEU by +1.0", "chrF++ +0.0"]),
    (scores(20, 45, 70), scores(25.0, 44.0, 65), ["did not improve"]),
    (scores(20, 45, 70), scores(20.01, 45.02, 70), ["unchanged"]),
    (None, scores(20, 45, 70), ["not scored", "BLEU 20.0"]),
])
def test_verdict(base, fine, words):
    v = verdict({"baseline": base, "finetuned": fine})
    for w in words:
        assert w in v, v


def test_metrics_json_fixed_shape(tmp_path):
    p = write_metrics(tmp_path, {**metrics(), "data": {"train": 10}, "delta": "ignored"})
    m = json.loads(p.read_text())
    assert list(m)[:4] == ["baseline", "finetuned", "delta", "green"]
    assert m["delta"] == pytest.approx({"bleu": 12.34, "chrf": 10.06, "ter": -10.0})
    assert m["green"]["energy_kwh"] == 0.0123 and m["green"]["measured"] is False
    assert m["best_checkpoint"] == "checkpoint-40" and m["data"] == {"train": 10}
    assert m["finetuned"]["signatures"]["chrf"] == SIGS["chrf"]
    no_base = json.loads(write_metrics(tmp_path, {"baseline": None, "finetuned": scores(1, 2, 3)}).read_text())
    assert no_base["baseline"] is None and no_base["delta"] is None and no_base["green"] is None


@pytest.mark.parametrize("bad", [{"baseline": None}, {"finetuned": {"bleu": 1.0}}])
def test_metrics_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        build_metrics(bad)


HISTORY = [{"loss": 5.0, "step": 10, "epoch": 0.5}, {"loss": 4.0, "step": 20, "epoch": 1.0},
           {"eval_loss": 4.2, "eval_bleu": 5.0, "eval_chrf": 20.0, "step": 20, "epoch": 1.0},
           {"loss": 3.0, "step": 30, "epoch": 1.5}, {"loss": 2.5, "step": 40, "epoch": 2.0},
           {"eval_loss": 3.1, "eval_bleu": 9.0, "eval_chrf": 30.0, "step": 40, "epoch": 2.0},
           {"train_loss": 3.6, "train_runtime": 12.0, "step": 40, "epoch": 2.0}]


def test_plot_history_png(tmp_path):
    p = plot_history(HISTORY, tmp_path / "plots" / "curves.png")
    assert p is not None and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert plot_history([{"loss": 1.0, "step": 1, "epoch": 0.1}], tmp_path / "one.png").is_file()


@pytest.mark.parametrize("history", [[], [{"train_runtime": 3.0, "step": 5, "epoch": 1.0}]])
def test_plot_history_nothing(tmp_path, history):
    assert plot_history(history, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_report_md(tmp_path):
    png = plot_history(HISTORY, tmp_path / "training_curves.png")
    data = {"src_lang": "eng_Latn", "tgt_lang": "gle_Latn", "counts": {"train": 750, "test": 199},
            "splits": {"train": {"source": "corpus/train.tsv", "total": 1000, "kept": 750, "split_off": 200,
                                 "dropped": {"empty": 30, "too_long": 20}},
                       "test": {"source": "split from train", "total": 199, "kept": 199, "dropped": {}}}}
    text = write_report(tmp_path, Cfg(), metrics(), data, str(png)).read_text()
    assert text.startswith("# adaptmllm run `ga-run`: English (`eng_Latn`) → Irish (`gle_Latn`)")
    assert "Fine-tuning improved BLEU by +12.3 and chrF++ by +10.1" in text
    assert "| Baseline (`facebook/nllb-200-distilled-600M`) | 20.0 | 45.0 | 70.0 |" in text
    assert "| Fine-tuned | 32.3 | 55.1 | 60.0 |" in text
    assert "| Difference | +12.3 | +10.1 | -10.0 |" in text
    for sig in SIGS.values():
        assert sig in text
    assert "0.0123 kWh" in text and "0.00456 kgCO2eq" in text and "789.0 s" in text
    assert "AMD EPYC" in text and "estimates, not measurements" in text
    assert "| Split off to dev/test | Dropped: empty | Dropped: too long |" in text
    assert "| train | `corpus/train.tsv` | 1000 | 750 | 200 | 30 | 20 |" in text
    assert "| test | `split from train` | 199 | 199 | 0 | 0 | 0 |" in text
    assert "![Training curves](training_curves.png)" in text
    assert "checkpoint-40" in text
    cfg_block = text.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(cfg_block)["data"]["tgt_lang"] == "gle_Latn"


def test_report_without_baseline_or_data(tmp_path):
    text = write_report(tmp_path, {"name": "x", "data": {"src_lang": "eng_Latn", "tgt_lang": "qaa_Latn"}},
                        {"baseline": None, "finetuned": scores(10, 20, 90)}, None, None).read_text()
    assert "| Baseline | not scored |" in text and "Difference" not in text
    assert "baseline was not scored" in text and "Energy was not tracked" in text
    assert "Training curves" not in text


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_nllb(tmp_path):
    text = write_model_card(tmp_path / "model", Cfg(), metrics(), "facebook/nllb-200-distilled-600M",
                            "cc-by-nc-4.0").read_text()
    meta = front_matter(text)
    assert meta["license"] == "cc-by-nc-4.0" and meta["base_model"] == "facebook/nllb-200-distilled-600M"
    assert meta["tags"] == ["translation", "nllb", "adaptmllm"] and meta["metrics"] == ["bleu", "chrf", "ter"]
    assert meta["language"] == ["en", "ga"] and meta["language_details"] == "eng_Latn, gle_Latn"
    assert "datasets" not in meta  # corpus/train.tsv is a local file, not a hub dataset
    results = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"bleu": 32.34, "chrf": 55.06, "ter": 60.0}
    assert "NLLB-200 weights are licensed CC BY-NC 4.0: non-commercial use only" in text
    assert 'src_lang="eng_Latn"' in text and 'convert_tokens_to_ids("gle_Latn")' in text
    for sig in SIGS.values():
        assert sig in text
    assert "0.0123 kWh" in text and "estimates, not measurements" in text


def test_model_card_tiny(tmp_path):
    cfg = Cfg(data=Data(tgt_lang="qaa_Latn"), model=Model("tiny"))
    m = {**metrics(), "datasets": ["someone/parallel-corpus"]}
    meta = front_matter(write_model_card(tmp_path, cfg, m, "tiny", "apache-2.0").read_text())
    assert meta["license"] == "apache-2.0" and "base_model" not in meta
    assert meta["datasets"] == ["someone/parallel-corpus"]
    assert meta["language"] == ["en", "qaa"]  # ISO 639-1 where it exists, else the ISO 639-3 part
    assert "non-commercial" not in (tmp_path / "README.md").read_text()
