"""The pipeline on a slice of the real English->Irish LoResMT 2021 corpus (skipped without ../shared/data)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA

EN_GA = SHARED_DATA / "loresmt2021" / "en_ga"


@pytest.mark.skipif(not (EN_GA / "train.en").is_file(), reason=f"real corpus not present at {EN_GA}")
def test_pipeline_on_real_en_ga_slice(tmp_path):
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.pipeline import run

    cfg = config_from_dict({
        "name": "en-ga-slice", "runs_dir": str(tmp_path),
        "data": {"src_lang": "eng_Latn", "tgt_lang": "gle_Latn", "train": str(EN_GA / "train"),
                 "dev": str(EN_GA / "dev"), "test": str(EN_GA / "test.en2ga"), "src_suffix": "en",
                 "tgt_suffix": "ga", "max_train_pairs": 600},
        "model": {"name_or_path": "tiny", "max_source_length": 48, "max_target_length": 48,
                  "tiny": {"vocab_size": 800, "d_model": 64, "encoder_layers": 1, "decoder_layers": 1,
                           "attention_heads": 2, "ffn_dim": 128, "pretrain": False}},
        "train": {"learning_rate": 3e-3, "num_train_epochs": 2, "per_device_train_batch_size": 32,
                  "eval_max_pairs": 20, "logging_steps": 5},
        "eval": {"num_beams": 1, "max_new_tokens": 24},
        "green": {"measure_power_secs": 1.0},
    })
    result = run(cfg, progress=False)
    m = result.metrics
    assert m["data"]["train"] == 600 and m["data"]["test"] == 500  # the given test set is scored whole
    report = json.loads((result.run_dir / "data" / "data_report.json").read_text())
    assert report["splits"]["train"]["total"] == 8112
    assert report["splits"]["dev"]["dropped"]["identical"] > 0  # the dev set's untranslated copies
    hist = json.loads((result.run_dir / "history.json").read_text())
    losses = [h["loss"] for h in hist if "loss" in h]
    assert losses[-1] < losses[0]
    assert len((result.run_dir / "finetuned.hyp.txt").read_text(encoding="utf-8").splitlines()) == 500
    assert (result.model_dir / "README.md").is_file() and "gle_Latn" in (result.run_dir / "report.md").read_text()
