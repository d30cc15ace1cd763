"""Error analysis on crafted outputs: failure counts, most worse/better segments, length buckets."""

from __future__ import annotations

import pytest
from sacrebleu.metrics import CHRF

from adaptmllm.metrics.analysis import error_analysis, failure_kind, length_unit, write_segments_tsv


@pytest.mark.parametrize("hyp, src, ref, kind", [
    ("", "The nurse treats the patient.", "El loni tarizu.", "empty"),
    ("   ", "The nurse treats the patient.", "El loni tarizu.", "empty"),
    ("the NURSE  treats the patient.", "The nurse treats the patient.", "El loni tarizu.", "copied_source"),
    ("El nurse treats patient.", "The nurse treats the patient.", "El loni tarizu el roen.", "untranslated"),
    ("El loni treats el roen.", "The nurse treats the patient.", "El loni tarizu el roen.", None),  # 1 of 5 words
    ("El loni tarizu el roen.", "The nurse treats the patient.", "El loni tarizu el roen.", None),
    ("Dublin", "Dublin", "Dublin", None),  # the reference is the source: copying is right
    ("COVID-19 2021", "COVID-19 in 2021", "COVID-19 i 2021", None),  # names and numbers are not "untranslated"
])
def test_failure_kind(hyp, src, ref, kind):
    assert failure_kind(hyp, src, ref) == kind


SRC = ["one two three", "one two three four five six seven eight nine ten eleven twelve",
       "alpha beta", "gamma delta epsilon", "a b c d e f g h i j k l m n o p q r s t u v w x y z"]
REF = ["un deux trois", "un deux trois quatre cinq six sept huit neuf dix onze douze",
       "alfa beta", "gama delta", "lettres de l'alphabet"]
BASE = ["un deux trois", "", "alpha beta", "gama delta", "lettres de l'alphabet"]
FINE = ["un deux", "un deux trois quatre cinq six sept huit neuf dix onze douze", "alfa beta",
        "gamma delta epsilon", "lettres de l'alphabet"]


def test_error_analysis_counts_and_rankings():
    a = error_analysis(SRC, REF, FINE, BASE, n=2, src_lang="eng_Latn")
    assert a["n_segments"] == 5 and a["systems"] == ["baseline", "finetuned"]
    assert a["failures"]["baseline"] == {"empty": 1, "copied_source": 1, "untranslated": 0}
    assert a["failures"]["finetuned"] == {"empty": 0, "copied_source": 1, "untranslated": 0}
    assert a["failure_examples"]["baseline"]["empty"] == [1]
    assert a["failure_examples"]["finetuned"]["copied_source"] == [3]
    assert a["change"] == {"better": 2, "worse": 2, "same": 1}
    worse, better = a["most_worse"], a["most_better"]
    assert [w["index"] for w in worse] == [0, 3] or [w["index"] for w in worse] == [3, 0]
    assert worse[0]["delta"] <= worse[1]["delta"] < 0
    assert better[0]["index"] == 1 and better[0]["delta"] == pytest.approx(100.0)
    assert better[0]["baseline"] == "" and better[0]["reference"] == REF[1]
    per = a["sentence_chrf"]
    assert per["finetuned"][4] == pytest.approx(100.0) and per["baseline"][1] == 0.0


def test_length_buckets_are_corpus_chrf_of_the_subset():
    a = error_analysis(SRC, REF, FINE, BASE, src_lang="eng_Latn")
    buckets = {b["bucket"]: b for b in a["length_buckets"]}
    assert list(buckets) == ["1-10", "11-20", "21-30", "31-50", "51+"] and a["length_unit"] == "words"
    assert buckets["1-10"]["n"] == 3 and buckets["11-20"]["n"] == 1 and buckets["21-30"]["n"] == 1
    assert buckets["51+"]["n"] == 0 and buckets["51+"]["finetuned_chrf"] is None
    idx = [0, 2, 3]
    chrf = CHRF(word_order=2)
    want = chrf.corpus_score([FINE[i] for i in idx], [[REF[i] for i in idx]]).score
    assert buckets["1-10"]["finetuned_chrf"] == pytest.approx(want)
    assert buckets["1-10"]["delta"] == pytest.approx(want - buckets["1-10"]["baseline_chrf"])


def test_without_baseline_and_char_unit():
    a = error_analysis(["我爱你", "今天天气很好啊朋友们大家好世界和平万岁一二三四五六"], ["I love you", "x"],
                       ["I love you", ""], src_lang="zho_Hans")
    assert a["systems"] == ["finetuned"] and "most_worse" not in a and "change" not in a
    assert a["length_unit"] == "chars" and [b["n"] for b in a["length_buckets"]][:2] == [1, 1]
    assert a["failures"]["finetuned"]["empty"] == 1
    assert length_unit("gle_Latn") == "words" and length_unit("jpn_Jpan") == "chars"


@pytest.mark.parametrize("args, kwargs, match", [
    ((["a"], ["a", "b"], ["a"]), {}, "1 sources, 2 references"),
    (([], [], []), {}, "empty"),
    ((["a"], ["a"], ["a"]), {"n": 0}, "n=0"),
    ((["a"], ["a"], ["a"]), {"unit": "bytes"}, "unit="),
])
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        error_analysis(*args, **kwargs)


def test_segments_tsv(tmp_path):
    a = error_analysis(SRC, REF, FINE, BASE)
    p = write_segments_tsv(tmp_path / "segments.tsv", a, SRC, REF, FINE, BASE)
    rows = [r.split("\t") for r in p.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["index", "source", "reference", "baseline", "finetuned", "chrf_baseline", "chrf_finetuned",
                       "delta", "failure_finetuned"]
    assert len(rows) == 6 and rows[2][7] == "+100.00" and rows[4][8] == "copied_source"
