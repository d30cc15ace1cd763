"""Tests of adaptmllm.data.pairs: loaders of every format, cleaning, splitting, preparation and saving."""

import csv
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptmllm.config import DataConfig
from adaptmllm.data.pairs import CLEANING_RULES, CleaningReport, PreparedData, clean, prepare_data, save_splits, split
from adaptmllm.data.readers import DataError, Pairs, load_pairs

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SRC = ["Hello.", '"Yes," he said.', "Commas, semicolons; and 'quotes'.", "Café – naïve, ünïcode ✓", "Good night."]
TGT = ["Dia duit.", '"Tá," ar seisean.', "Camóga, leathstadanna; agus 'comharthaí'.", "Caife – ✓", "Oíche mhaith."]


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"src_lang": "eng_Latn", "tgt_lang": "gle_Latn", **kw})


def write_rows(path: Path, header: list[str], rows: list[list[str]], delimiter: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)


def write_lines(path: Path, lines) -> None:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")


# --------------------------------------------------------------------------------- round trips

def w_text(d: Path) -> str:
    (d / "corpus.en").write_text("\n".join(SRC) + "\n", encoding="utf-8")
    (d / "corpus.ga").write_text("\n".join(TGT), encoding="utf-8")  # no final newline: same count
    return str(d / "corpus")


def w_tsv(d: Path) -> str:
    write_rows(d / "c.tsv", ["id", "en", "ga"], [[str(i), s, t] for i, (s, t) in enumerate(zip(SRC, TGT))], "\t")
    return str(d / "c.tsv")


def w_csv(d: Path) -> str:
    write_rows(d / "c.csv", ["ga", "en"], [[t, s] for s, t in zip(SRC, TGT)], ",")
    return str(d / "c.csv")


def w_jsonl_translation(d: Path) -> str:
    write_lines(d / "c.jsonl", [{"id": i, "translation": {"en": s, "ga": t}} for i, (s, t) in enumerate(zip(SRC, TGT))])
    return str(d / "c.jsonl")


def w_jsonl_flat(d: Path) -> str:
    write_lines(d / "c.json", [{"en": s, "ga": t} for s, t in zip(SRC, TGT)])
    return str(d / "c.json")


def w_json_array(d: Path) -> str:
    (d / "c.json").write_text(json.dumps([{"translation": {"en": s, "ga": t}} for s, t in zip(SRC, TGT)], indent=2))
    return str(d / "c.json")


def w_hf_dataset(d: Path) -> str:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"translation": [{"en": s, "ga": t} for s, t in zip(SRC, TGT)]}).save_to_disk(d / "hf")
    return str(d / "hf")


def w_hf_dict(d: Path) -> str:
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"en": SRC, "ga": TGT}),
                          "validation": datasets.Dataset.from_dict({"en": ["x"], "ga": ["y"]})}).save_to_disk(d / "hf")
    return str(d / "hf")


def w_hf_split(d: Path) -> str:
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"en": ["x"], "ga": ["y"]}),
                          "test": datasets.Dataset.from_dict({"en": SRC, "ga": TGT})}).save_to_disk(d / "hf")
    return str(d / "hf") + ":test"


@pytest.mark.parametrize("writer", [w_text, w_tsv, w_csv, w_jsonl_translation, w_jsonl_flat, w_json_array,
                                    w_hf_dataset, w_hf_dict, w_hf_split])
def test_round_trip(tmp_path, writer):
    pairs = load_pairs(writer(tmp_path), cfg())
    assert (pairs.src, pairs.tgt) == (SRC, TGT) and len(pairs) == len(SRC)


@pytest.mark.parametrize("fmt,name,text", [
    ("tsv", "pairs.txt", "en\tga\nHello.\tDia duit.\n"),
    ("jsonl", "pairs.data", '{"en": "Hello.", "ga": "Dia duit."}\n'),
    ("csv", "pairs", "en,ga\nHello.,Dia duit.\n"),
])
def test_explicit_format_overrides_suffix(tmp_path, fmt, name, text):
    (tmp_path / name).write_text(text, encoding="utf-8")
    pairs = load_pairs(str(tmp_path / name), cfg(format=fmt))
    assert (pairs.src, pairs.tgt) == (["Hello."], ["Dia duit."])


@pytest.mark.parametrize("kw,header", [
    ({}, ["eng_Latn", "gle_Latn"]),  # FLORES codes work as column names too
    ({"src_column": "source", "tgt_column": "target"}, ["source", "target"]),
    ({"src_suffix": "english", "tgt_suffix": "irish"}, ["english", "irish"]),
])
def test_column_names(tmp_path, kw, header):
    write_rows(tmp_path / "c.tsv", header, [["Hello.", "Dia duit."]], "\t")
    assert load_pairs(str(tmp_path / "c.tsv"), cfg(**kw)).tgt == ["Dia duit."]


def test_demo_language_suffixes(tmp_path):
    (tmp_path / "c.en").write_text("a b c\n", encoding="utf-8")
    (tmp_path / "c.qaa").write_text("x y z\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"qaa_Latn has no ISO 639-1 code .* set data.tgt_suffix"):
        load_pairs(str(tmp_path / "c"), cfg(tgt_lang="qaa_Latn"))
    assert load_pairs(str(tmp_path / "c"), cfg(tgt_lang="qaa_Latn", tgt_suffix="qaa")).tgt == ["x y z"]


def test_bom_and_crlf_accepted(tmp_path):
    (tmp_path / "c.en").write_bytes(b"\xef\xbb\xbfHello.\r\n  Good night. \r\n")
    (tmp_path / "c.ga").write_bytes(b"Dia duit.\r\nOiche mhaith.\r\n")
    assert load_pairs(str(tmp_path / "c"), cfg()).src == ["Hello.", "Good night."]
    (tmp_path / "c.tsv").write_bytes(b"\xef\xbb\xbfen\tga\r\nHello.\tDia duit.\r\n")
    pairs = load_pairs(str(tmp_path / "c.tsv"), cfg())
    assert (pairs.src, pairs.tgt) == (["Hello."], ["Dia duit."])


def test_text_keeps_unicode_line_separators_inside_a_line(tmp_path):
    (tmp_path / "c.en").write_text("a\u2028b\x85c\nd\n", encoding="utf-8")
    (tmp_path / "c.ga").write_text("x\ny\n", encoding="utf-8")
    assert load_pairs(str(tmp_path / "c"), cfg()).src == ["a\u2028b\x85c", "d"]


def test_raw_tsv_with_quote_marks(tmp_path):
    (tmp_path / "c.tsv").write_text('en\tga\n"Yes," he said.\t"Tá," ar seisean.\n"Open quote\tx\n', encoding="utf-8")
    pairs = load_pairs(str(tmp_path / "c.tsv"), cfg())
    assert pairs.src == ['"Yes," he said.', '"Open quote'] and pairs.tgt == ['"Tá," ar seisean.', "x"]


def test_quoted_tab_in_tsv(tmp_path):
    write_rows(tmp_path / "c.tsv", ["en", "ga"], [["a\tb", "c"], ["two\nlines", "d"]], "\t")
    assert load_pairs(str(tmp_path / "c.tsv"), cfg()).src == ["a\tb", "two\nlines"]


# ------------------------------------------------------------------------------------ bad input

def _error(spec, data=None) -> str:
    with pytest.raises(DataError) as e:
        load_pairs(str(spec), data or cfg())
    return str(e.value)


def test_missing_file_names_path(tmp_path):
    (tmp_path / "c.en").write_text("a\n", encoding="utf-8")
    msg = _error(tmp_path / "c")
    assert str(tmp_path / "c.ga") in msg and "no such file" in msg
    msg = _error(tmp_path / "c.en")  # a side file instead of the prefix
    assert str(tmp_path / "c.en.en") in msg and "common prefix" in msg
    for name in ("nope.tsv", "nope.jsonl"):
        assert str(tmp_path / name) in _error(tmp_path / name)


def test_different_line_counts(tmp_path):
    (tmp_path / "c.en").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "c.ga").write_text("x\ny\n", encoding="utf-8")
    msg = _error(tmp_path / "c")
    assert f"{tmp_path / 'c.en'} has 3 lines but {tmp_path / 'c.ga'} has 2" in msg


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_non_utf8_names_line_and_offset(tmp_path, bom):
    (tmp_path / "c.en").write_bytes(bom + b"ok\nfine\ncaf\xe9\n")  # latin-1 e-acute
    (tmp_path / "c.ga").write_text("x\ny\nz\n", encoding="utf-8")
    msg = _error(tmp_path / "c")
    offset = len(bom) + len(b"ok\nfine\ncaf")
    assert msg.startswith(f"{tmp_path / 'c.en'} line 3: ") and f"byte offset {offset}" in msg and "iconv" in msg


@pytest.mark.parametrize("name", ["c.tsv", "c.csv", "c.jsonl"])
def test_non_utf8_structured(tmp_path, name):
    (tmp_path / name).write_bytes(b"en\tga\n\xff\xfe\n")
    assert f"{tmp_path / name} line 2:" in _error(tmp_path / name)


@pytest.mark.parametrize("name,content", [("c.tsv", ""), ("c.jsonl", "\n\n"), ("c.csv", "  \r\n"), ("c.tsv", "\xef\xbb\xbf")])
def test_empty_file(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert "empty" in _error(tmp_path / name)


def test_empty_text_side(tmp_path):
    (tmp_path / "c.en").write_text("", encoding="utf-8")
    (tmp_path / "c.ga").write_text("x\n", encoding="utf-8")
    assert f"{tmp_path / 'c.en'}: the file is empty" in _error(tmp_path / "c")


def test_header_only(tmp_path):
    (tmp_path / "c.tsv").write_text("en\tga\n", encoding="utf-8")
    assert "only a header row" in _error(tmp_path / "c.tsv")


def test_tsv_missing_column(tmp_path):
    write_rows(tmp_path / "c.tsv", ["english", "ga"], [["a", "b"]], "\t")
    msg = _error(tmp_path / "c.tsv")
    assert msg.startswith(f"{tmp_path / 'c.tsv'} line 1: no src column 'en'")
    assert "columns present: 'english', 'ga'" in msg and "data.src_column" in msg


def test_tsv_stray_tab(tmp_path):
    (tmp_path / "c.tsv").write_text("en\tga\nHello.\tDia duit.\nOne\ttwo\tthree\n", encoding="utf-8")
    msg = _error(tmp_path / "c.tsv")
    assert f"{tmp_path / 'c.tsv'} line 3: 3 fields, but the header has 2" in msg
    assert "a tab inside a field? quote the field" in msg


def test_csv_bad_quoting(tmp_path):
    (tmp_path / "c.csv").write_text('en,ga\nok,fine\n"abc"x,y\n', encoding="utf-8")
    msg = _error(tmp_path / "c.csv")
    assert f"{tmp_path / 'c.csv'} line 3: bad quoting" in msg


@pytest.mark.parametrize("line2,expected", [
    ('{"en": "b", "ga": ', "line 2: not valid JSON"),
    ('["b", "y"]', "line 2: expected a JSON object, got list"),
    ('{"en": "b"}', "line 2: no tgt column 'ga'"),
    ('{"en": 3, "ga": "y"}', "line 2: 'en' is a int, expected a string"),
    ('{"en": "\\ud800", "ga": "y"}', "line 2: 'en' holds a lone surrogate"),
])
def test_jsonl_bad_line(tmp_path, line2, expected):
    (tmp_path / "c.jsonl").write_text('{"en": "a", "ga": "x"}\n' + line2 + "\n", encoding="utf-8")
    assert f"{tmp_path / 'c.jsonl'} {expected}" in _error(tmp_path / "c.jsonl")


def test_json_array_broken(tmp_path):
    (tmp_path / "c.json").write_text('[\n {"en": "a", "ga": "x"},\n {"en": \n]', encoding="utf-8")
    assert f"{tmp_path / 'c.json'} line 4: not valid JSON" in _error(tmp_path / "c.json")


def test_hf_errors(tmp_path):
    w_hf_dict(tmp_path)
    assert "no split 'dev'; splits present: train, validation" in _error(f"{tmp_path / 'hf'}:dev")
    (tmp_path / "plain").mkdir()
    assert "not a folder saved by `datasets`" in _error(tmp_path / "plain")


# ------------------------------------------------------------------------------------- cleaning

CRAFTED = [  # (src, tgt, rule that drops it or None)
    ("", "x", "empty"), ("x", "", "empty"), ("a" * 51, "", "empty"),
    ("a" * 51, "b" * 51, "too_long"), ("ok", "b" * 60, "too_long"),
    ("Hi", "x" * 30, "length_ratio"), ("Thanks a lot", "y" * 40, "length_ratio"),
    ("OK", "Go raibh maith agat", None),  # longer side < 20 chars: ratio not checked
    ("Moderna", "Moderna", "identical"), ("Moderna", "Moderna", "identical"),
    ("Good morning.", "Maidin mhaith.", None), ("Good morning.", "Maidin mhaith.", "duplicate"),
    ("Good morning.", "Maidin mhaith.", "duplicate"), ("Good morning.", "Dia duit ar maidin.", None),
    ("Thank you.", "Go raibh maith agat.", None),
]


def test_cleaning_counts():
    pairs = Pairs([s for s, _, _ in CRAFTED], [t for _, t, _ in CRAFTED])
    kept, report = clean(pairs, cfg(max_chars=50))
    expected = {rule: sum(r == rule for _, _, r in CRAFTED) for rule in CLEANING_RULES}
    assert report.dropped == expected == {"empty": 3, "too_long": 2, "length_ratio": 2, "identical": 2, "duplicate": 2}
    assert (report.total, report.kept) == (15, 4)
    assert list(zip(kept.src, kept.tgt)) == [(s, t) for s, t, r in CRAFTED if r is None]
    assert report.to_dict() == {"total": 15, "kept": 4, "dropped": expected}


@pytest.mark.parametrize("kw,identical,duplicate,kept", [
    ({"drop_identical": False}, 0, 3, 5),  # the 2nd "Moderna" becomes a duplicate
    ({"drop_duplicates": False}, 2, 0, 6),
    ({"drop_identical": False, "drop_duplicates": False}, 0, 0, 8),
])
def test_cleaning_switches(kw, identical, duplicate, kept):
    pairs = Pairs([s for s, _, _ in CRAFTED], [t for _, t, _ in CRAFTED])
    _, report = clean(pairs, cfg(max_chars=50, **kw))
    assert (report.dropped["identical"], report.dropped["duplicate"], report.kept) == (identical, duplicate, kept)


def test_cleaning_report_default():
    assert CleaningReport(total=0, kept=0).dropped == dict.fromkeys(CLEANING_RULES, 0)


# ------------------------------------------------------------------------------------ splitting

def numbered(n: int, prefix: str = "s") -> Pairs:
    return Pairs([f"{prefix}{i} source" for i in range(n)], [f"{prefix}{i} target" for i in range(n)])


def test_split_deterministic_and_disjoint():
    pairs = numbered(100)
    a, b, c = split(pairs, 10, 15, seed=1), split(pairs, 10, 15, seed=1), split(pairs, 10, 15, seed=2)
    assert a == b and a != c
    train, dev, test = a
    assert (len(train), len(dev), len(test)) == (75, 10, 15)
    assert sorted(train.src + dev.src + test.src) == sorted(pairs.src)
    for part in a:
        assert part.src == sorted(part.src, key=pairs.src.index)  # corpus order kept
        assert part.tgt == [s.replace("source", "target") for s in part.src]  # still aligned


def test_split_zero_sizes():
    train, dev, test = split(numbered(5), 0, 0, seed=0)
    assert len(train) == 5 and len(dev) == len(test) == 0


def test_split_too_small():
    with pytest.raises(DataError, match=r"only 20 pairs.*leave 8 for training.*data.dev_size / data.test_size"):
        split(numbered(20), 6, 6, seed=0)


def test_pairs_misaligned():
    with pytest.raises(ValueError):
        Pairs(["a"], [])


# ---------------------------------------------------------------------------------- preparation

def write_text_corpus(prefix: Path, pairs: Pairs) -> str:
    prefix.with_name(prefix.name + ".en").write_text("\n".join(pairs.src) + "\n", encoding="utf-8")
    prefix.with_name(prefix.name + ".ga").write_text("\n".join(pairs.tgt) + "\n", encoding="utf-8")
    return str(prefix)


def check_invariant(report: dict) -> None:
    tr = report["splits"]["train"]
    assert tr["total"] == tr["kept"] + sum(tr["dropped"].values()) + tr["split_off"]
    assert report["counts"]["train"] == tr["kept"]


def test_prepare_split_off(tmp_path):
    pairs = numbered(60)
    pairs = Pairs(pairs.src + pairs.src[:3] + [""], pairs.tgt + pairs.tgt[:3] + ["x"])  # 3 duplicates, 1 empty
    prep = prepare_data(cfg(train=write_text_corpus(tmp_path / "train", pairs), dev_size=5, test_size=7))
    assert (len(prep.train), len(prep.dev), len(prep.test)) == (48, 5, 7)
    rep = prep.to_dict()
    assert rep["splits"]["train"]["dropped"] == {"empty": 1, "too_long": 0, "length_ratio": 0, "identical": 0,
                                                 "duplicate": 3, "overlap_with_eval": 0, "over_max_train_pairs": 0}
    assert rep["splits"]["dev"] == {"source": "split from train", "total": 5, "kept": 5, "dropped": {}}
    assert not set(prep.train.src) & (set(prep.dev.src) | set(prep.test.src))
    check_invariant(rep)
    json.dumps(rep)


def test_prepare_given_dev_test_and_overlap(tmp_path):
    train = numbered(40)
    dev = Pairs(train.src[:2] + ["fresh dev sentence"], ["other target 1", "other target 2", "x dev target"])
    write_rows(tmp_path / "dev.tsv", ["en", "ga"], [[s, t] for s, t in zip(dev.src, dev.tgt)], "\t")
    write_lines(tmp_path / "test.jsonl", [{"translation": {"en": "test only", "ga": "tástáil amháin"}},
                                          {"translation": {"en": "", "ga": "empty source"}}])
    data = cfg(train=write_text_corpus(tmp_path / "train", train), dev=str(tmp_path / "dev.tsv"),
               test=str(tmp_path / "test.jsonl"))
    prep = prepare_data(data)
    rep = prep.report
    # A given test set is scored as given (comparable with published scores): not cleaned.
    assert (len(prep.train), len(prep.dev), len(prep.test)) == (38, 3, 2)
    assert rep["splits"]["train"]["dropped"]["overlap_with_eval"] == 2 and rep["splits"]["train"]["split_off"] == 0
    assert rep["splits"]["test"]["source"] == str(tmp_path / "test.jsonl")
    assert rep["splits"]["test"]["dropped"] == {} and rep["splits"]["test"]["note"].startswith("not cleaned")
    assert train.src[0] not in prep.train.src
    check_invariant(rep)


def test_prepare_given_dev_only(tmp_path):
    (tmp_path / "dev.en").write_text("dev a\ndev b\n", encoding="utf-8")
    (tmp_path / "dev.ga").write_text("forbairt a\nforbairt b\n", encoding="utf-8")
    prep = prepare_data(cfg(train=write_text_corpus(tmp_path / "train", numbered(30)), dev=str(tmp_path / "dev"),
                            test_size=4))
    assert (len(prep.train), len(prep.dev), len(prep.test)) == (26, 2, 4)
    assert prep.report["splits"]["test"]["source"] == "split from train"
    check_invariant(prep.report)


def test_prepare_max_train_pairs(tmp_path):
    data = cfg(train=write_text_corpus(tmp_path / "train", numbered(50)), dev_size=5, test_size=5, max_train_pairs=7)
    a, b = prepare_data(data), prepare_data(data)
    assert len(a.train) == 7 and a.train == b.train
    assert a.report["splits"]["train"]["dropped"]["over_max_train_pairs"] == 33
    check_invariant(a.report)


def test_prepare_errors(tmp_path):
    with pytest.raises(DataError, match="data.dev is set but data.train is empty"):
        prepare_data(cfg(dev="somewhere"))
    with pytest.raises(DataError, match="only 12 pairs"):
        prepare_data(cfg(train=write_text_corpus(tmp_path / "train", numbered(12)), dev_size=5, test_size=5))
    with pytest.raises(DataError, match="no such file"):
        prepare_data(cfg(train=str(tmp_path / "missing.tsv")))


def test_prepare_demo():
    demo = pytest.importorskip("adaptmllm.data.demo")
    assert hasattr(demo, "demo_splits")
    data = DataConfig(demo_train_pairs=200)
    prep = prepare_data(data)
    assert all(len(p) > 0 for p in (prep.train, prep.dev, prep.test))
    assert all(prep.report["splits"][k]["source"] == "demo" for k in ("train", "dev", "test"))
    check_invariant(prep.report)


def test_save_splits(tmp_path):
    prep = prepare_data(cfg(train=write_text_corpus(tmp_path / "train", numbered(30)), dev_size=3, test_size=3))
    prep.train.src[0] = "two\nlines"
    paths = save_splits(prep, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == sorted(
        [f"{s}.{l}" for s in ("train", "dev", "test") for l in ("eng_Latn", "gle_Latn")] + ["data_report.json"])
    for name in ("train", "dev", "test"):
        part = getattr(prep, name)
        src = paths[f"{name}.src"].read_text(encoding="utf-8").split("\n")[:-1]
        tgt = paths[f"{name}.tgt"].read_text(encoding="utf-8").split("\n")[:-1]
        assert len(src) == len(tgt) == len(part)
    assert paths["train.src"].read_text(encoding="utf-8").startswith("two lines\n")
    assert json.loads(paths["report"].read_text(encoding="utf-8")) == prep.to_dict()
    assert isinstance(prep, PreparedData)


# --------------------------------------------------------------------------------- real corpus

def test_real_corpus_loresmt_en_ga():
    prefix = SHARED_DATA / "loresmt2021" / "en_ga" / "train"
    if not (prefix.with_name("train.en").is_file() and prefix.with_name("train.ga").is_file()):
        pytest.skip(f"{prefix}.en/.ga not present")
    data = cfg(train=str(prefix))
    pairs = load_pairs(str(prefix), data)
    assert len(pairs) == 8112
    kept, report = clean(pairs, data)
    assert report.total == 8112 and report.kept == len(kept)
    assert report.kept + sum(report.dropped.values()) == 8112
    assert 0.85 * 8112 < report.kept < 8112  # cleaning drops some, but not most
    assert report.dropped["duplicate"] > 0 and report.dropped["identical"] > 0
    assert all(s and t for s, t in zip(kept.src, kept.tgt))
    prep = prepare_data(data)
    assert (len(prep.dev), len(prep.test)) == (200, 200)
    check_invariant(prep.report)


# ---------------------------------------------------------------------------- property tests

PROPS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_NASTY = st.text(alphabet=st.sampled_from(list('ab"\t,\n\r \\{}[]:\x00\u2028\ufeffé')) | st.characters(), max_size=40)


def _load_or_data_error(files: dict[str, bytes], spec: str, **kw) -> None:
    with tempfile.TemporaryDirectory() as d:
        for name, raw in files.items():
            (Path(d) / name).write_bytes(raw)
        try:
            pairs = load_pairs(str(Path(d) / spec), cfg(**kw))
        except DataError:
            return
        assert len(pairs.src) == len(pairs.tgt) > 0
        assert all(isinstance(s, str) and s == s.strip() for s in pairs.src + pairs.tgt)


@PROPS
@given(raw=st.binary(max_size=200), other=st.binary(max_size=50),
       name=st.sampled_from(["c.tsv", "c.csv", "c.jsonl", "c.json", "c"]))
def test_random_bytes_load_or_data_error(raw, other, name):
    if name == "c":
        _load_or_data_error({"c.en": raw, "c.ga": other}, "c")
    else:
        _load_or_data_error({name: raw}, name)


@PROPS
@given(header=st.lists(st.sampled_from(["en", "ga", "id", "", '"en"']), max_size=4),
       rows=st.lists(st.lists(_NASTY, max_size=4), max_size=5), delim=st.sampled_from(["\t", ","]),
       eol=st.sampled_from(["\n", "\r\n"]))
def test_random_table_load_or_data_error(header, rows, delim, eol):
    text = eol.join(delim.join(r) for r in [header] + rows)
    _load_or_data_error({"c.tsv" if delim == "\t" else "c.csv": text.encode("utf-8", "surrogatepass")},
                        "c.tsv" if delim == "\t" else "c.csv")


_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _NASTY,
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["en", "ga", "x"]), c,
                                                                                 max_size=3), max_leaves=8)
_RECORDS = st.dictionaries(st.sampled_from(["en", "ga", "translation", "id"]), _JSON_VALUES, max_size=4)


@PROPS
@given(lines=st.lists(st.one_of(_RECORDS.map(json.dumps), _NASTY), max_size=6))
def test_random_jsonl_load_or_data_error(lines):
    _load_or_data_error({"c.jsonl": "\n".join(lines).encode("utf-8", "surrogatepass")}, "c.jsonl")
