"""Optional metrics: spBLEU from a local SentencePiece model (never downloaded), COMET's clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adaptmllm.metrics.corpus import MetricUnavailable, check_optional_metrics, comet, score, spbleu, spbleu_metric

REFS = ["The cat sat on the mat near the door .", "A quick brown fox jumps over the lazy dog .",
        "Fine-tuning adapts a large model to a small language pair .", "Nurses vaccinate patients in the clinic ."]
HYPS = ["The cat sat on a mat by the door .", "The quick brown fox jumped over a lazy dog",
        "Fine tuning adapts big models to small pairs .", "The nurse vaccinates a patient at the clinic ."]


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory) -> Path:
    """A small SentencePiece model trained on the fly (stands in for FLORES-200's)."""
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("spm")
    text = (REFS + HYPS) * 20 + ["the a an of to in on by over near with at for and or but"] * 5
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(folder / "tiny_spm"),
                                   vocab_size=60, model_type="unigram", character_coverage=1.0,
                                   minloglevel=2, num_threads=1)
    return folder / "tiny_spm.model"


def test_spbleu_local_model_and_signature(spm_file):
    s = spbleu(HYPS, REFS, spm_file)
    assert 0 < s["score"] < 100
    assert "|tok:spm-local-tiny_spm.model-" in s["signature"] and "nrefs:1" in s["signature"]
    assert spbleu(REFS, REFS, spm_file)["score"] == pytest.approx(100.0)
    full = score(HYPS, REFS, spm_model=spm_file)
    assert full["spbleu"] == pytest.approx(s["score"]) and full["signatures"]["spbleu"] == s["signature"]
    assert full["bleu"] != full["spbleu"]  # a different tokenization


def test_spbleu_equals_sacrebleu_cli_flores200(spm_file, tmp_path):
    """With the model file where sacrebleu keeps its FLORES-200 model, ``sacrebleu -tok flores200``
    reads it instead of downloading: its score must equal ours."""
    home = tmp_path / "sacrebleu"
    (home / "models").mkdir(parents=True)
    shutil.copy(spm_file, home / "models" / "flores200sacrebleuspm")
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("sacrebleu")
    out = subprocess.run([str(cli), str(ref), "-i", str(hyp), "-m", "bleu", "-tok", "flores200", "-w", "4", "-f", "json"],
                         check=True, capture_output=True, text=True, env={**os.environ, "SACREBLEU": str(home)}).stdout
    theirs = json.loads(out)
    theirs = theirs[0] if isinstance(theirs, list) else theirs
    assert "tok:flores200" in theirs["signature"]
    assert spbleu(HYPS, REFS, spm_file)["score"] == pytest.approx(theirs["score"], abs=1e-4)


@pytest.mark.parametrize("make, match", [
    (lambda tmp: tmp / "missing.model", "no SentencePiece model there.*never downloads.*tinyurl"),
    (lambda tmp: (tmp / "junk.model").write_text("not a model") and tmp / "junk.model", "not a SentencePiece model"),
])
def test_spbleu_errors(tmp_path, make, match):
    with pytest.raises(MetricUnavailable, match=match):
        spbleu_metric(make(tmp_path))
    with pytest.raises(MetricUnavailable, match=match):
        score(HYPS, REFS, spm_model=make(tmp_path))


def test_comet_unavailable_messages(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("comet") is None:  # the CI case: the extra is not installed
        ckpt = tmp_path / "model.ckpt"
        ckpt.write_bytes(b"")
        with pytest.raises(MetricUnavailable, match=r"pip install 'adaptmllm\[comet\]'"):
            comet(REFS, HYPS, REFS, ckpt)
        with pytest.raises(MetricUnavailable, match="not installed"):
            check_optional_metrics(comet_model=ckpt)
    with pytest.raises(MetricUnavailable, match="local path of a COMET checkpoint.*never downloads"):
        comet(REFS, HYPS, REFS, None)
    with pytest.raises(MetricUnavailable, match="no COMET checkpoint there"):
        comet(REFS, HYPS, REFS, tmp_path / "nowhere" / "model.ckpt")
    with pytest.raises(MetricUnavailable, match="no COMET checkpoint there"):
        check_optional_metrics(comet_model=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="one source per hypothesis"):
        comet(REFS[:1], HYPS, REFS, tmp_path / "model.ckpt")
    check_optional_metrics()  # nothing asked: nothing to check


def test_pipeline_refuses_unusable_metric_before_writing(tmp_path):
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.pipeline import run

    cfg = config_from_dict({"name": "x", "runs_dir": str(tmp_path / "runs"),
                            "eval": {"spm_model": str(tmp_path / "flores200.model")}})
    with pytest.raises(MetricUnavailable, match="flores200.model"):
        run(cfg, progress=False)
    assert not (tmp_path / "runs" / "x").exists()
