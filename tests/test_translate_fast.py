"""Fast translation (issue 9): token-budget batching, order restored, sentence splitting of long inputs,
CTranslate2 export round trip, and the engine switch in the CLI, evaluation and playground.

All on the shipped demo base (assets/demo-base), which translates the demo's English into qaa_Latn
correctly, so a lost, cut or misplaced sentence shows up as a wrong translation.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptmllm.inference.translate import split_into_sentences, token_budget_batches, translate_texts

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "assets" / "demo-base"
SRC, TGT = "eng_Latn", "qaa_Latn"
# Out-of-domain English (words the demo never saw): the model's outputs are far from perfect, so engines
# that agree here agree for a reason, not because both are right.
OUT_OF_DOMAIN = [
    "Important notice: latest information on services during the pandemic.",
    "The committee will publish its annual report next spring.",
    "Please wash your hands regularly and keep a safe distance.",
    "Schools reopened on Monday after a long closure.",
    "Visitors must book their tickets online in advance.",
    "A new bridge connects the two villages across the river.",
]


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=60), st.integers(min_value=1, max_value=2000),
       st.one_of(st.none(), st.integers(min_value=1, max_value=16)))
@settings(max_examples=300, deadline=None)
def test_token_budget_batches_never_exceed_the_budget(lengths, budget, max_segments):
    batches = token_budget_batches(lengths, budget, max_segments)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each index exactly once
    for b in batches:
        cost = len(b) * max(1, max(lengths[i] for i in b))
        assert cost <= budget or len(b) == 1  # only a lone over-long segment may exceed it
        assert max_segments is None or len(b) <= max_segments
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)  # length-sorted, longest first


def test_token_budget_batches_rejects_bad_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches([3, 4], 0)


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("One sentence only.", [("One sentence only.", "")]),
    ("Dr. Smith went home.  He left.", [("Dr. Smith went home.", "  "), ("He left.", "")]),
    ("First line.\n\nSecond para. Third one!", [("First line.", "\n\n"), ("Second para.", " "), ("Third one!", "")]),
    ("  no final stop\nnext line  ", [("no final stop", "\n"), ("next line", "")]),
])
def test_split_into_sentences_keeps_separators(text, expected):
    pairs = split_into_sentences(text, SRC)
    assert pairs == expected
    assert "".join(s + sep for s, sep in pairs) == text.strip()


@pytest.fixture(scope="module")
def demo():
    """The demo base model, its tokenizer, and demo test pairs it translates correctly."""
    from adaptmllm.data.demo import general_pairs
    from adaptmllm.modeling.model import load_pretrained

    model, tok = load_pretrained(str(BASE), SRC, TGT, local_files_only=True)
    src, ref = general_pairs(TGT, 120, seed=5)
    return model, tok, src, ref


def test_order_restored_under_a_small_token_budget(demo):
    model, tok, src, ref = demo
    rng = random.Random(0)
    idx = list(range(40))
    rng.shuffle(idx)
    texts = [src[i] for i in idx]
    texts[3] = ""  # empty segments stay empty, in place
    # 64 tokens per batch: many small batches, sorted by length: the output must still be in input order
    out = translate_texts(model, tok, texts, SRC, TGT, num_beams=1, max_batch_tokens=64, batch_size=8)
    assert out[3] == ""
    assert [o for k, o in enumerate(out) if k != 3] == [ref[i] for k, i in enumerate(idx) if k != 3]


def test_a_3000_character_paragraph_comes_back_whole(demo, caplog):
    model, tok, src, ref = demo
    n = next(k for k in range(len(src)) if len(" ".join(src[:k])) >= 3000)
    para = " ".join(src[:n // 2]) + "\n\n" + " ".join(src[n // 2:n])
    assert len(para) >= 3000
    (out,) = translate_texts(model, tok, [para], SRC, TGT, num_beams=1, split_sentences=True, max_batch_tokens=512)
    # every sentence translated, in order, and the paragraph break kept
    assert out == " ".join(ref[:n // 2]) + "\n\n" + " ".join(ref[n // 2:n])
    # the same paragraph fed whole is cut at max_source_length (and says so): most sentences are lost
    with caplog.at_level(logging.WARNING, logger="adaptmllm.inference.translate"):
        (whole,) = translate_texts(model, tok, [para], SRC, TGT, num_beams=1, split_sentences=False)
    assert "truncated" in caplog.text
    assert sum(r in whole for r in ref[:n]) < n // 2


def test_an_over_long_sentence_is_cut_between_words_not_truncated(demo):
    model, tok, src, ref = demo
    long = " ".join(s.rstrip(".") for s in src[:6]) + "."  # one "sentence" of ~60 tokens
    (out,) = translate_texts(model, tok, [long], SRC, TGT, num_beams=1, split_sentences=True, max_source_length=24)
    (trunc,) = translate_texts(model, tok, [long], SRC, TGT, num_beams=1, split_sentences=False,
                               max_source_length=24)
    assert len(out.split()) > 1.8 * len(trunc.split())  # the pieces past 24 tokens were translated too


# -- CTranslate2 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from adaptmllm.inference.ct2 import export_ctranslate2

    root = tmp_path_factory.mktemp("ct2")
    return {q: export_ctranslate2(BASE, root / f"demo-{q}", q) for q in ("float32", "int8")}


def test_export_is_self_contained(exports):
    import json

    folder = exports["int8"]
    for name in ("model.bin", "config.json", "tokenizer.json", "adaptmllm_export.json"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "adaptmllm_export.json").read_text())["quantization"] == "int8"


def test_export_float32_matches_transformers_greedy_and_int8_within_1_chrf(demo, exports):
    from adaptmllm.inference.ct2 import load_ct2
    from adaptmllm.metrics.corpus import score

    model, tok, src, ref = demo
    test_src = src[:60] + OUT_OF_DOMAIN
    hf = translate_texts(model, tok, test_src, SRC, TGT, num_beams=1, max_new_tokens=64)
    ct_model, ct_tok = load_ct2(exports["float32"], SRC, TGT, device="cpu")
    assert ct_model.compute_type == "float32"
    assert translate_texts(ct_model, ct_tok, test_src, SRC, TGT, num_beams=1, max_new_tokens=64) == hf
    # the same maximum length semantics (the language code counts in both)
    short = translate_texts(model, tok, OUT_OF_DOMAIN, SRC, TGT, num_beams=1, max_new_tokens=4)
    assert translate_texts(ct_model, ct_tok, OUT_OF_DOMAIN, SRC, TGT, num_beams=1, max_new_tokens=4) == short
    q_model, q_tok = load_ct2(exports["int8"], SRC, TGT, device="cpu")
    q = translate_texts(q_model, q_tok, src[:60], SRC, TGT, num_beams=1, max_new_tokens=64)
    assert abs(score(q, ref[:60])["chrf"] - score(hf[:60], ref[:60])["chrf"]) < 1.0


def test_export_refuses_bad_input(tmp_path, exports):
    from adaptmllm.inference.ct2 import CT2Error, export_ctranslate2, load_ct2

    with pytest.raises(CT2Error, match="--quantization"):
        export_ctranslate2(BASE, tmp_path / "x", "int4")
    with pytest.raises(CT2Error, match="already exists"):
        export_ctranslate2(BASE, exports["int8"], "int8")
    with pytest.raises(CT2Error, match="no config.json"):
        export_ctranslate2(tmp_path, tmp_path / "y", "int8")
    with pytest.raises(CT2Error, match="adaptmllm export"):
        load_ct2(BASE, SRC, TGT)


def test_cli_export_and_engine_switch(tmp_path, capsys):
    import shutil

    from adaptmllm.cli import main

    model = tmp_path / "model"
    shutil.copytree(BASE, model)
    assert main(["export", "--model", str(model), "--format", "ctranslate2", "--quantization", "float32"]) == 0
    out_dir = tmp_path / "model-ct2-float32"
    assert capsys.readouterr().out.strip() == str(out_dir)
    inp = tmp_path / "in.txt"
    inp.write_text(OUT_OF_DOMAIN[0] + " " + OUT_OF_DOMAIN[1] + "\n" + OUT_OF_DOMAIN[2] + "\n", encoding="utf-8")
    outs = {}
    for engine, folder in (("transformers", model), ("ctranslate2", out_dir), ("auto", out_dir)):
        o = tmp_path / f"out-{engine}.txt"
        assert main(["translate", "--model", str(folder), "--engine", engine, "--src", SRC, "--tgt", TGT,
                     "--input", str(inp), "--output", str(o), "--num_beams", "1"]) == 0
        outs[engine] = o.read_text(encoding="utf-8")
    assert outs["transformers"] == outs["ctranslate2"] == outs["auto"]
    assert len(outs["ctranslate2"].splitlines()) == 2 and all(outs["ctranslate2"].splitlines())
    capsys.readouterr()
    # the wrong engine for a folder: a clear error, exit status 2
    assert main(["translate", "--model", str(out_dir), "--engine", "transformers", "--src", SRC, "--tgt", TGT,
                 "--input", str(inp)]) == 2
    assert "--engine ctranslate2" in capsys.readouterr().err
    assert main(["translate", "--model", str(model), "--engine", "ctranslate2", "--src", SRC, "--tgt", TGT,
                 "--input", str(inp)]) == 2
    assert "adaptmllm export" in capsys.readouterr().err
    assert main(["export", "--model", str(model), "--quantization", "float32"]) == 2  # exists: no --force
    assert "already exists" in capsys.readouterr().err


def test_evaluation_scores_with_the_ctranslate2_engine(demo, tiny_cfg):
    from adaptmllm.config import ConfigError, EvalConfig
    from adaptmllm.evaluation.scoring import score_model

    model, tok, src, ref = demo
    tiny_cfg.eval.num_beams = 1
    s_hf = score_model(model, tok, tiny_cfg, src[:40], ref[:40])
    tiny_cfg.eval.engine, tiny_cfg.eval.ct2_quantization = "ctranslate2", "int8"
    s_ct = score_model(model, tok, tiny_cfg, src[:40], ref[:40])
    assert s_hf["chrf"] > 90 and abs(s_ct["chrf"] - s_hf["chrf"]) < 1.0
    with pytest.raises(ConfigError, match="eval.engine"):
        EvalConfig(engine="onnx")
    with pytest.raises(ConfigError, match="eval.max_batch_tokens"):
        EvalConfig(max_batch_tokens=0)


def test_playground_engine_serves_an_export(exports):
    from adaptmllm.apps.playground.worker import Engine

    eng = Engine.from_path(exports["int8"], SRC, TGT, split_sentences=True, max_batch_tokens=256)
    try:
        from adaptmllm.data.demo import general_pairs

        src, ref = general_pairs(TGT, 3, seed=5)
        assert eng.translate([" ".join(src)], SRC, TGT, num_beams=2, timeout=120) == [" ".join(ref)]
    finally:
        eng.close()


def test_cli_evaluate_translates_with_the_ctranslate2_engine(tiny_run, tmp_path, capsys, caplog):
    """`adaptmllm evaluate --eval.engine ctranslate2` makes its translations (here the forgetting check's)
    with a CTranslate2 int8 conversion, recorded in metrics.json; the scores stay within 1 chrF++ point of
    the transformers engine's on the same run."""
    import json
    import shutil

    from adaptmllm.cli import main

    import logging

    caplog.set_level(logging.INFO, logger="adaptmllm.inference.ct2")
    scores, exports = {}, {}
    for engine in ("transformers", "ctranslate2"):
        caplog.clear()
        run = tmp_path / engine
        shutil.copytree(tiny_run.run_dir, run)
        argv = ["evaluate", "--run", str(run), "--eval.general_test", "demo", "--eval.engine", engine,
                "--eval.ct2_quantization", "int8", "--quiet", "true"]
        assert main(argv) == 0
        m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        assert m["evaluated_with"]["eval"]["engine"] == engine
        scores[engine] = m["forgetting"]["finetuned"]["chrf"]
        exports[engine] = [r.getMessage() for r in caplog.records if r.name == "adaptmllm.inference.ct2"]
    assert exports["transformers"] == []
    assert any("CTranslate2, int8" in msg for msg in exports["ctranslate2"]), exports
    assert "report.html" in capsys.readouterr().out
    assert abs(scores["ctranslate2"] - scores["transformers"]) < 1.0, scores
