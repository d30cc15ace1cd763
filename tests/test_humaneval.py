"""Human evaluation logic without Gradio: storage, assignment, resumption, SQM CI, MQM scoring, summary."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import threading

import pytest

from adaptmllm import config
from adaptmllm.evaluation import human as he, human_report

SRC0 = "one two three four"  # 4 words
SRC1 = "five six seven eight nine ten"  # 6 words
ITEMS = [(0, "A", SRC0, "uno dos tres cuatro"), (1, "A", SRC1, "cinco seis siete ocho nueve diez"),
         (0, "B", SRC0, "xx yy"), (1, "B", SRC1, "cinco seis sieben acht neun zehn")]


def _ids(store):
    return {(r[1], r[2]): r[0] for r in store._read("SELECT id, segment, system FROM items")}


@pytest.fixture()
def handmade(tmp_path):
    """A database with a hand-made set of annotations whose summary is worked out below."""
    store = he.HumanEvalStore(tmp_path / "he.sqlite", ITEMS, {"src_lang": "eng_Latn"})
    ids = _ids(store)
    # annotator x
    store.rate("x", ids[0, "A"], 6)
    store.add_error("x", ids[1, "A"], "accuracy", "minor", span_text="siete")
    store.add_error("x", ids[1, "A"], "fluency", "major", 0, 5)
    store.rate("x", ids[1, "A"], 4)
    store.add_error("x", ids[0, "B"], "accuracy", "non-translation")
    store.add_error("x", ids[0, "B"], "style", "minor", span_text="yy")
    store.rate("x", ids[0, "B"], 2)
    store.add_error("x", ids[1, "B"], "terminology", "minor", span_text="sieben")
    store.rate("x", ids[1, "B"], 3)
    # annotator y
    store.rate("y", ids[0, "A"], 5)
    store.add_error("y", ids[1, "B"], "locale convention", "major")
    store.add_error("y", ids[1, "B"], "accuracy", "major", span_text="neun")
    store.rate("y", ids[1, "B"], 1)
    # an error span on an item y has not scored: left out of the summary
    store.add_error("y", ids[0, "B"], "fluency", "major")
    return store


def test_summary_numbers_on_handmade_annotations(handmade):
    s = {d["system"]: d for d in human_report.summarize(handmade.annotations(), config.mqm_weights("mqm"))}
    a, b = s["A"], s["B"]
    half = 4.303 * 1.0 / math.sqrt(3)  # sd of [6, 4, 5] and of [2, 3, 1] is 1
    assert (a["ratings"], a["annotators"], b["ratings"], b["annotators"]) == (3, 2, 3, 2)
    assert a["sqm_mean"] == pytest.approx(5.0) and b["sqm_mean"] == pytest.approx(2.0)
    assert (a["sqm_ci_low"], a["sqm_ci_high"]) == pytest.approx((5 - half, 5 + half))
    assert (b["sqm_ci_low"], b["sqm_ci_high"]) == pytest.approx((2 - half, 2 + half))
    assert a["source_words"] == 4 + 6 + 4 and b["source_words"] == 4 + 6 + 6
    # A: minor 1 + major 5; B: non-translation 25 (its minor is moot) + minor 1 + 2 majors 10
    assert a["mqm_points"] == 6 and b["mqm_points"] == 36
    assert a["mqm_per_100_words"] == pytest.approx(600 / 14)
    assert b["mqm_per_100_words"] == pytest.approx(225.0)
    assert (a["errors"], a["errors_accuracy"], a["errors_fluency"]) == (2, 1, 1)
    assert (b["errors"], b["errors_accuracy"], b["errors_style"], b["errors_terminology"],
            b["errors_locale_convention"], b["errors_fluency"]) == (5, 2, 1, 1, 1, 0)
    assert (b["errors_minor"], b["errors_major"], b["errors_non_translation"]) == (2, 2, 1)
    # adaptMLLM's preset: major 10
    s2 = {d["system"]: d for d in human_report.summarize(handmade.annotations(), config.mqm_weights("adaptmllm"))}
    assert s2["A"]["mqm_points"] == 11 and s2["B"]["mqm_points"] == 25 + 1 + 20
    assert s2["B"]["mqm_per_100_words"] == pytest.approx(287.5)


def test_report_files_and_csv_export(handmade, tmp_path):
    out = human_report.write_human_report(handmade.path, tmp_path / "report", config.mqm_weights("mqm", {"major": 4}))
    p = out["paths"]
    assert all(path.is_file() for path in p.values())
    rows = list(csv.DictReader(p["annotations"].open(encoding="utf-8")))
    assert len(rows) == 6 and {r["annotator"] for r in rows} == {"x", "y"}
    row = next(r for r in rows if r["annotator"] == "x" and r["system"] == "A" and r["segment"] == "1")
    errs = json.loads(row["errors"])
    assert row["sqm"] == "4" and row["mqm_points"] == "5" and len(errs) == 2
    assert errs[0]["span_text"] == "siete" and errs[1] == {**errs[1], "span_start": 0, "span_end": 5,
                                                           "span_text": "cinco"}
    summary = json.loads(p["summary_json"].read_text())
    assert summary["weights"]["major"] == 4.0 and [s["system"] for s in summary["systems"]] == ["A", "B"]
    assert "| A | 3 | 2 | 5.00 [" in out["markdown"]
    assert p["plot"].stat().st_size > 1000


@pytest.mark.parametrize("df,expected", [(1, 12.706), (5, 2.571), (30, 2.042), (31, 2.0395), (40, 2.0211),
                                         (100, 1.9840), (1000, 1.9623)])
def test_t_quantile(df, expected):
    assert human_report.t_quantile_975(df) == pytest.approx(expected, abs=2e-4)


def test_mean_ci_degenerate():
    assert all(math.isnan(v) for v in human_report.mean_ci([]))
    m, lo, hi = human_report.mean_ci([3.0])
    assert m == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert human_report.mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert human_report.summarize([]) == [] and "No ratings" in human_report.summary_markdown([])


def test_resume_after_reopen_and_shuffled_order(tmp_path):
    items = [(i, sys, f"source {i}", f"{sys} {i}") for i in range(10) for sys in ("baseline", "finetuned")]
    store = he.HumanEvalStore(tmp_path / "he.sqlite", items)
    order_a, order_b = store.order("ann a"), store.order("ann b")
    assert sorted(order_a) == sorted(order_b) and order_a != order_b  # each annotator has their own shuffle
    first = [store.next_item("ann a") for _ in range(1)][0]
    assert first.id == order_a[0]
    for _ in range(3):
        store.rate("ann a", store.next_item("ann a").id, 5)
    store.add_error("ann a", store.next_item("ann a").id, "fluency", "minor")
    again = he.HumanEvalStore(tmp_path / "he.sqlite", items)  # a "server restart" with the same segments
    assert again.progress("ann a") == (3, 20)
    nxt = again.next_item("ann a")
    assert nxt.id == order_a[3] and len(again.errors("ann a", nxt.id)) == 1
    assert sqlite3.connect(tmp_path / "he.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(he.HumanEvalError, match="different set of segments"):
        he.HumanEvalStore(tmp_path / "he.sqlite", items[:-1])


def test_validation_messages(tmp_path):
    store = he.HumanEvalStore(tmp_path / "he.sqlite", ITEMS)
    item = store.next_item("z")
    for bad, match in ((7, "whole number from 0 to 6"), (2.5, "whole number"), ("", "Choose a score"),
                       ("abc", "not a number")):
        with pytest.raises(he.HumanEvalError, match=match):
            store.rate("z", item.id, bad)
    with pytest.raises(he.HumanEvalError, match="name"):
        store.rate("  ", item.id, 3)
    with pytest.raises(he.HumanEvalError, match="category"):
        store.add_error("z", item.id, "grammar", "minor")
    with pytest.raises(he.HumanEvalError, match="severity"):
        store.add_error("z", item.id, "fluency", "critical")
    with pytest.raises(he.HumanEvalError, match="not part of the translation"):
        store.add_error("z", item.id, "fluency", "minor", span_text="not in there")
    with pytest.raises(he.HumanEvalError, match="outside"):
        store.add_error("z", item.id, "fluency", "minor", 0, 10_000)
    with pytest.raises(he.HumanEvalError, match="no item"):
        store.rate("z", 999, 3)
    with pytest.raises(config.ConfigError, match="unknown MQM preset"):
        config.mqm_weights("nope")
    assert store.remove_last_error("z", item.id) is False
    item_a1 = store.item(_ids(store)[1, "A"])  # offsets from an edited copy: the selected text wins
    eid = store.add_error("z", item_a1.id, "fluency", "minor", 0, 2, span_text="siete")
    assert store.errors("z", item_a1.id)[0]["span_start"] == item_a1.output.index("siete")
    assert store.remove_error("z", eid)
    eid = store.add_error("z", item.id, "fluency", "minor")
    assert store.remove_error("someone else", eid) is False and store.remove_error("z", eid) is True
    store.rate("z", item.id, 3)
    store.rate("z", item.id, 4)  # a second click replaces, never duplicates
    assert store.count_ratings("z") == 1 and store.annotations()[0]["sqm"] == 4


def test_concurrent_writers_lose_nothing(tmp_path):
    items = [(i, "s", f"src {i}", f"out {i}") for i in range(20)]
    store = he.HumanEvalStore(tmp_path / "he.sqlite", items)

    def annotate(name):
        while (item := store.next_item(name)) is not None:
            store.add_error(name, item.id, "style", "minor")
            store.rate(name, item.id, 3)

    threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_ratings() == 5 * 20
    assert sum(s["errors"] for s in human_report.summarize(store.annotations())) == 5 * 20


def test_items_from_tsv_and_run(tmp_path):
    tsv = tmp_path / "segs.tsv"
    tsv.write_text("system\tsource\toutput\nA\thello\tbonjour\nB\thello\tsalut\nA\tbye\tau revoir\n", encoding="utf-8")
    assert he.items_from_tsv(tsv) == [(0, "A", "hello", "bonjour"), (0, "B", "hello", "salut"),
                                      (1, "A", "bye", "au revoir")]
    tsv.write_text("source\toutput\nhello\tbonjour\n", encoding="utf-8")
    with pytest.raises(he.HumanEvalError, match="line 1.*missing system"):
        he.items_from_tsv(tsv)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "data_report.json").write_text('{"src_lang": "eng_Latn", "tgt_lang": "qaa_Latn"}')
    (run / "data" / "test.eng_Latn").write_text("a\nb\nc\n")
    (run / "data" / "test.qaa_Latn").write_text("A\nB\nC\n")
    (run / "baseline.hyp.txt").write_text("x\ny\nz\n")
    (run / "finetuned.hyp.txt").write_text("X\nY\nZ\n")
    rows, meta = he.items_from_run(run, max_segments=2, include_reference=True)
    assert meta["src_lang"] == "eng_Latn" and len(rows) == 6
    assert {r[1] for r in rows} == {"baseline", "finetuned", "reference"}
    (run / "finetuned.hyp.txt").write_text("X\n")
    with pytest.raises(he.HumanEvalError, match="finetuned has 1 lines"):
        he.items_from_run(run)


def test_cli_human_eval_report(handmade, tmp_path, capsys):
    from adaptmllm.cli import main

    assert main(["human-eval-report", "--db", str(handmade.path), "--out", str(tmp_path / "r"),
                 "--mqm_preset", "adaptmllm"]) == 0
    out = capsys.readouterr().out
    assert "| A | 3 | 2 | 5.00 [" in out and (tmp_path / "r" / "human_eval.png").is_file()
    assert main(["human-eval-report", "--db", str(tmp_path / "missing.sqlite")]) == 2
