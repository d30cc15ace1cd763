"""adaptmllm.metrics.corpus: degenerate cases, errors, and equality with the sacrebleu command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaptmllm.metrics.corpus import score, sentence_chrf, write_hypotheses

REFS = ["The cat sat on the mat near the door .", "A quick brown fox jumps over the lazy dog .",
        "Fine-tuning adapts a large model to a small language pair ."]
HYPS = ["The cat sat on a mat by the door .", "The quick brown fox jumped over a lazy dog",
        "Fine tuning adapts big models to small pairs ."]


@pytest.mark.parametrize("hyps, expect", [
    (REFS, {"bleu": 100.0, "chrf": 100.0, "ter": 0.0}),
    (["", "", ""], {"bleu": 0.0, "chrf": 0.0, "ter": 100.0}),
])
def test_degenerate_scores(hyps, expect):
    s = score(hyps, REFS)
    for key, value in expect.items():
        assert s[key] == pytest.approx(value, abs=1e-6), key
    assert s["n_segments"] == 3
    assert "tok:13a" in s["signatures"]["bleu"]
    assert "nw:2" in s["signatures"]["chrf"]  # chrF++, not chrF
    assert "tok:tercom" in s["signatures"]["ter"]


def test_partly_empty_hypotheses_score_between():
    s = score(["", HYPS[1], HYPS[2]], REFS)
    full = score(HYPS, REFS)
    assert 0 < s["chrf"] < full["chrf"]


@pytest.mark.parametrize("hyps, refs, match", [
    (["a", "b"], ["a"], "2 hypotheses but 1 references"),
    ([], [], "no hypotheses"),
])
def test_bad_lists_raise(hyps, refs, match):
    with pytest.raises(ValueError, match=match):
        score(hyps, refs)
    with pytest.raises(ValueError, match=match):
        sentence_chrf(hyps, refs)


@pytest.mark.parametrize("tok, match", [("flores200", "downloads"), ("spm", "downloads"),
                                        ("flores101", "downloads"), ("nope", "unknown BLEU tokenizer")])
def test_refused_tokenizers(tok, match):
    with pytest.raises(ValueError, match=match):
        score(HYPS, REFS, bleu_tokenize=tok)


def test_other_tokenizer_changes_signature():
    assert "tok:char" in score(HYPS, REFS, bleu_tokenize="char")["signatures"]["bleu"]


def test_sentence_chrf():
    per = sentence_chrf([REFS[0], "", HYPS[2]], REFS)
    assert per[0] == pytest.approx(100.0) and per[1] == 0.0 and 0 < per[2] < 100


def test_write_hypotheses_one_line_each(tmp_path):
    p = write_hypotheses(tmp_path / "sub" / "hyp.txt", ["a\nb", "", "c\r\nd", "e"])
    assert p.read_text(encoding="utf-8") == "a b\n\nc d\ne\n"
    assert not [f for f in p.parent.iterdir() if f.name != "hyp.txt"]  # no temp file left


def test_equal_to_sacrebleu_cli(tmp_path):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    write_hypotheses(hyp, HYPS)
    cli = Path(sys.executable).with_name("sacrebleu")
    out = subprocess.run([str(cli), str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "ter",
                          "--chrf-word-order", "2", "-w", "4", "-f", "json"],
                         check=True, capture_output=True, text=True).stdout
    cli_scores = {d["name"]: d for d in json.loads(out)}
    ours = score(HYPS, REFS)
    assert ours["bleu"] == pytest.approx(cli_scores["BLEU"]["score"], abs=1e-4)
    assert ours["chrf"] == pytest.approx(cli_scores["chrF2++"]["score"], abs=1e-4)
    assert ours["ter"] == pytest.approx(cli_scores["TER"]["score"], abs=1e-4)
    assert ours["signatures"]["bleu"] == cli_scores["BLEU"]["signature"]
    assert ours["signatures"]["chrf"] == cli_scores["chrF2++"]["signature"]
    assert ours["signatures"]["ter"] == cli_scores["TER"]["signature"]
    assert 0 < ours["bleu"] < 100
