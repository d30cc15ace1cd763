"""Multilingual fine-tuning (adaptmllm.runs.multilingual): several directions in one model, new language
codes, tokenizer coverage, vocabulary extension, replay and the forgetting check per direction."""

from __future__ import annotations

import json
import re

import pytest

from adaptmllm.data import demo
from adaptmllm.runs import pipeline
from adaptmllm.config import ConfigError, DataConfig, config_from_dict
from adaptmllm.training.demo_base import SHIPPED_DEMO_BASE
from adaptmllm.modeling.model import ModelError
from adaptmllm.modeling.vocabulary import add_languages, check_language_codes, extend_vocabulary, tokenizer_coverage
from adaptmllm.data.directions import prepare_directions, sample_sizes

from conftest import tiny_dict


def _demo_base():
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(SHIPPED_DEMO_BASE), AutoTokenizer.from_pretrained(SHIPPED_DEMO_BASE)


def _share_in_lexicon(lines: list[str], lang: str) -> float:
    """Share of the output's words that are words of ``lang``'s demo lexicon."""
    lex = set(demo.lex(lang).values())
    words = [w.lower() for ln in lines for w in re.findall(r"\w+", ln)]
    return sum(w in lex for w in words) / max(1, len(words))


def test_two_directions_in_one_model_beat_baseline_in_the_right_language(tmp_path):
    cfg = tiny_dict(tmp_path, "multi")
    # Demo languages B and C: the demo base knows some of their health-domain words, so two short epochs
    # on 200 pairs each are enough to move both; Demo language A is the untrained direction.
    cfg["data"].update({"directions": ["eng_Latn->qab_Latn", "eng_Latn->qac_Latn"], "demo_train_pairs": 200,
                        "test_size": 100})
    cfg["train"].update({"num_train_epochs": 2, "eval_max_pairs": 50})
    cfg["eval"].update({"bootstrap_samples": 100, "num_beams": 1,
                        "forgetting_tests": [{"src_lang": "eng_Latn", "tgt_lang": "qaa_Latn", "test": "demo"}]})
    r = pipeline.run(cfg, progress=False)
    m = json.loads((r.run_dir / "metrics.json").read_text())
    assert set(m["directions"]) == {"eng_Latn->qab_Latn", "eng_Latn->qac_Latn"}
    for name, d in m["directions"].items():
        assert d["finetuned"]["chrf"] > d["baseline"]["chrf"], name
        assert d["finetuned"]["bleu"] > d["baseline"]["bleu"], name
        assert d["significance"]["metrics"]["chrf"]["p_value"] < 0.05
    # the macro average is the mean of the directions
    assert m["finetuned"]["chrf"] == pytest.approx(sum(d["finetuned"]["chrf"] for d in m["directions"].values()) / 2)
    # outputs are in each direction's own target language, never the other one's
    for tgt, other in (("qab_Latn", "qac_Latn"), ("qac_Latn", "qab_Latn")):
        hyps = (r.run_dir / f"finetuned.eng_Latn-{tgt}.hyp.txt").read_text().splitlines()
        assert len(hyps) == 200
        assert _share_in_lexicon(hyps, tgt) > 0.8
        assert _share_in_lexicon(hyps, other) < 0.2
    # per-direction dev scores each epoch, and the selection metric is their mean
    hist = json.loads((r.run_dir / "history.json").read_text())
    ep0 = hist[0]
    assert ep0["eval_chrf"] == pytest.approx((ep0["eval_eng_Latn->qab_Latn_chrf"] + ep0["eval_eng_Latn->qac_Latn_chrf"]) / 2)
    # the untrained direction is scored before and after, and a drop over the threshold is flagged
    f = m["forgetting_directions"]["eng_Latn->qaa_Latn"]
    assert f["n_segments"] == 100 and (r.run_dir / "forgetting.eng_Latn-qaa_Latn.finetuned.hyp.txt").is_file()
    assert f["drop"] == pytest.approx(f["baseline"]["chrf"] - f["finetuned"]["chrf"])
    assert f["flagged"] == (f["drop"] > f["threshold"])
    report = r.report.read_text()
    assert "## Scores per direction" in report and "macro average" in report
    assert "## Forgetting check (directions not trained)" in report
    assert "### `eng_Latn->qab_Latn`" in report and "Tokenizer coverage" in report
    assert (r.run_dir / "data" / "eng_Latn-qab_Latn" / "test.qab_Latn").is_file()


def test_reversed_direction_reads_the_same_corpus_the_other_way_round(tmp_path):
    n = 60
    (tmp_path / "c.en").write_text("".join(f"english sentence number {i}\n" for i in range(n)))
    (tmp_path / "c.ga").write_text("".join(f"abairt gaeilge uimhir {i}\n" for i in range(n)))
    data = DataConfig(src_lang="eng_Latn", tgt_lang="gle_Latn", train=str(tmp_path / "c"), dev_size=10, test_size=10,
                      directions=["eng_Latn->gle_Latn", "gle_Latn->eng_Latn"])
    multi = prepare_directions(data)
    fwd, rev = (d.prepared for d in multi.directions)
    assert rev.dev.src == fwd.dev.tgt and rev.dev.tgt == fwd.dev.src
    assert rev.test.src == fwd.test.tgt
    assert all(s.startswith("english") for s in fwd.train.src) and all(s.startswith("abairt") for s in rev.train.src)
    assert multi.languages == [("eng_Latn", "gle_Latn"), ("gle_Latn", "eng_Latn")]
    assert len(multi.train) == 80 and multi.train_dirs.count(1) == 40


@pytest.mark.parametrize("counts, sampling, temperature, expected", [
    ([900, 100], "proportional", 5.0, [900, 100]),
    ([900, 100], "temperature", 1.0, [900, 100]),
    ([100, 100], "temperature", 5.0, [100, 100]),
    ([1000, 10], "temperature", 1e9, [505, 505]),
])
def test_sample_sizes(counts, sampling, temperature, expected):
    got = sample_sizes(counts, sampling, temperature)
    assert got == expected
    if sampling == "temperature" and counts[0] > counts[1] and temperature > 1:
        assert got[1] / got[0] > counts[1] / counts[0]  # the small direction is upsampled


def test_temperature_sampling_upsamples_the_small_direction():
    s = sample_sizes([1000, 10], "temperature", 5.0)
    assert sum(s) == pytest.approx(1010, abs=1) and s[1] > 10 and s[0] < 1000


def test_new_language_code_survives_save_and_load(tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tok = _demo_base()
    n_before = len(tok)
    qab = model.get_input_embeddings().weight[tok.convert_tokens_to_ids("qab_Latn")].detach().clone()
    ids = add_languages(model, tok, [{"code": "xyz_Latn", "init_from": "qab_Latn"},
                                     {"code": "xyw_Latn", "init_from": None}])
    assert ids == {"xyz_Latn": n_before, "xyw_Latn": n_before + 1}
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == n_before + 2
    assert torch.equal(emb[ids["xyz_Latn"]], qab)
    codes = [t for t in tok.convert_ids_to_tokens(tok.all_special_ids) if re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", t)
             and t not in ids]
    assert torch.allclose(emb[ids["xyw_Latn"]], emb[tok.convert_tokens_to_ids(codes)].mean(0), atol=1e-6)
    tok.src_lang = "xyz_Latn"
    assert tok("a dog")["input_ids"][0] == ids["xyz_Latn"]
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model2 = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "m")
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tok2.convert_tokens_to_ids("xyz_Latn") == ids["xyz_Latn"]
    assert torch.equal(model2.get_input_embeddings().weight[ids["xyz_Latn"]], qab)
    assert add_languages(model2, tok2, [{"code": "xyz_Latn", "init_from": "qab_Latn"}]) == {"xyz_Latn": ids["xyz_Latn"]}
    assert len(tok2) == n_before + 2  # nothing added twice


def test_unknown_token_rate_on_a_crafted_corpus():
    _, tok = _demo_base()
    clean = ["The nurse sees a dog.", "A child reads the book."]
    crafted = ["The nurse sees ß a dog.", "A child ß reads € the book ß."]
    cov = tokenizer_coverage(tok, {"eng_Latn": clean, "xyz_Latn": crafted})
    assert cov["eng_Latn"]["unk_tokens"] == 0 and cov["eng_Latn"]["unknown_chars"] == []
    c = cov["xyz_Latn"]
    assert [(u["char"], u["count"]) for u in c["unknown_chars"]] == [("ß", 3), ("€", 1)]
    assert c["unknown_chars"][0]["codepoint"] == "U+00DF"
    n_tokens = sum(len(tok.tokenize(t)) for t in crafted)
    assert c["tokens"] == n_tokens and c["unk_tokens"] == 4
    assert c["unk_rate"] == pytest.approx(4 / n_tokens)


def test_vocabulary_extension_removes_unknown_tokens_and_survives_save_load(tmp_path):
    import torch
    from transformers import AutoTokenizer

    model, tok = _demo_base()
    corpus = [f"Þá {w} ßóðir þeirra {i}." for i in range(40) for w in ("sá", "þú")]
    before = tokenizer_coverage(tok, {"xyz_Latn": corpus})["xyz_Latn"]
    assert before["unk_rate"] > 0.05
    old_tokens = tok.tokenize("ßóðir þeirra")
    old_unk_row = model.get_input_embeddings().weight[tok.unk_token_id].detach().clone()
    rep = extend_vocabulary(model, tok, corpus, 60, tmp_path / "ext")
    assert rep["added"] > 0
    after = tokenizer_coverage(tok, {"xyz_Latn": corpus})["xyz_Latn"]
    assert after["unk_tokens"] == 0 and after["tokens"] < before["tokens"]
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok)
    assert torch.equal(emb[tok.convert_tokens_to_ids("ß")], old_unk_row)  # an unknown char: the unk row
    # a piece made of known characters: the mean of its old segmentation
    known = next(p for p in rep["pieces"] if len(p) > 1 and all(c in "▁abcdefghijklmnopqrstuvwxyz" for c in p))
    old_tok = _demo_base()[1]
    ids_old = [old_tok.convert_tokens_to_ids(t.value) for t in old_tok.backend_tokenizer.model.tokenize(known)]
    assert torch.allclose(emb[tok.convert_tokens_to_ids(known)], emb[ids_old].mean(0), atol=1e-6)
    # the English text the model knew is tokenized as before
    assert tok.tokenize("The nurse sees a dog.") == _demo_base()[1].tokenize("The nurse sees a dog.")
    tok.save_pretrained(tmp_path / "t")
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert tok2.tokenize(corpus[0]) == tok.tokenize(corpus[0])
    assert old_tokens != tok2.tokenize("ßóðir þeirra")


def test_unknown_direction_and_missing_code_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.directions\[1\]\.tgt_lang.*new_languages"):
        DataConfig(directions=["eng_Latn->qaa_Latn", "eng_Latn->xyz_Latn"])
    with pytest.raises(ConfigError, match=r"data\.directions\[0\]: 'eng_Latn to gle_Latn' is not a direction"):
        DataConfig(directions=["eng_Latn to gle_Latn"])
    with pytest.raises(ConfigError, match=r"data\.directions\[0\]\.tgt: unknown key.*tgt_lang"):
        DataConfig(directions=[{"src_lang": "eng_Latn", "tgt": "gle_Latn"}])
    with pytest.raises(ConfigError, match=r"data\.directions: eng_Latn->qaa_Latn is listed twice"):
        DataConfig(directions=["eng_Latn->qaa_Latn", "eng_Latn->qaa_Latn"])
    with pytest.raises(ConfigError, match=r"data\.new_languages\[0\]\.init_from"):
        DataConfig(new_languages=[{"code": "xyz_Latn", "init_from": "klingon"}])
    # declared as new: valid config; the model lacks the code until add_languages runs
    DataConfig(directions=["eng_Latn->xyz_Latn"], new_languages=[{"code": "xyz_Latn", "init_from": "gle_Latn"}])
    _, tok = _demo_base()
    with pytest.raises(ModelError, match=r"data\.directions\[0\]\.tgt_lang: .*no language code 'xyz_Latn'.*"
                                         r"data\.new_languages"):
        check_language_codes(tok, [("data.directions[0].tgt_lang", "xyz_Latn")])
    cfg = tiny_dict(tmp_path, "sel")
    cfg["data"]["directions"] = ["eng_Latn->qaa_Latn", "eng_Latn->qab_Latn"]
    cfg["train"]["select_direction"] = "eng_Latn->qac_Latn"
    with pytest.raises(ConfigError, match="train.select_direction: eng_Latn->qac_Latn is not one of data.directions"):
        pipeline.run(config_from_dict(cfg), progress=False)
    assert not (tmp_path / "sel").exists()


def test_replay_pairs_are_mixed_in():
    data = DataConfig(directions=["eng_Latn->qaa_Latn"], demo_train_pairs=200,
                      replay=[{"src_lang": "eng_Latn", "tgt_lang": "qac_Latn", "train": "demo"}], replay_ratio=0.5)
    multi = prepare_directions(data)
    assert multi.languages == [("eng_Latn", "qaa_Latn"), ("eng_Latn", "qac_Latn")]
    assert multi.train_dirs.count(0) == 200 and multi.train_dirs.count(1) == 100
    replayed = [t for t, d in zip(multi.train.tgt, multi.train_dirs) if d == 1]
    assert _share_in_lexicon(replayed, "qac_Latn") > 0.9
    assert multi.report["replay"]["entries"]["eng_Latn->qac_Latn"]["drawn"] == 100
