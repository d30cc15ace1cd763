"""Tokenizer and model: language codes where NLLB puts them, save/load round trip, the demo base."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from adaptmllm.data.demo import demo_splits
    from adaptmllm.modeling.model import build_tokenizer

    d = demo_splits("eng_Latn", "qaa_Latn", 300, 1)
    return build_tokenizer(tmp_path_factory.mktemp("tok"), d["train"][0] + d["train"][1], 300, "eng_Latn", "qaa_Latn")


def test_language_codes_where_nllb_puts_them(tok):
    enc = tok("The nurse treats the patient.", text_target="El zipi naur.")
    src = tok.convert_ids_to_tokens(enc["input_ids"])
    tgt = tok.convert_ids_to_tokens(enc["labels"])
    assert src[0] == "eng_Latn" and src[-1] == "</s>"
    assert tgt[0] == "qaa_Latn" and tgt[-1] == "</s>"
    assert tok.convert_tokens_to_ids("gle_Latn") != tok.unk_token_id  # all FLORES-200 codes are there
    # SentencePiece's pieces decode back to the text.
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "The nurse treats the patient."


def test_save_load_round_trip(tok, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from adaptmllm.config import TinyModelConfig
    from adaptmllm.modeling.model import build_tiny_model, load_pretrained

    model = build_tiny_model(TinyModelConfig(d_model=32, ffn_dim=64, attention_heads=2), tok)
    assert model.config.vocab_size == len(tok) and model.config.encoder_layerdrop == 0
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, t2 = load_pretrained(str(tmp_path), "eng_Latn", "qab_Latn")
    assert t2.convert_tokens_to_ids("qaa_Latn") == tok.convert_tokens_to_ids("qaa_Latn")
    assert t2("a b")["input_ids"] == tok("a b")["input_ids"]
    sd1, sd2 = model.state_dict(), AutoModelForSeq2SeqLM.from_pretrained(tmp_path).state_dict()
    assert all((sd1[k] == sd2[k]).all() for k in sd1)


def test_unknown_language_for_model_is_clear(tmp_path, tok):
    from adaptmllm.modeling.model import ModelError, set_languages

    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="data.tgt_lang.*xyz_Latn"):
        set_languages(tok, "eng_Latn", "xyz_Latn")


def test_hub_name_offline_gives_the_fix(monkeypatch):
    from adaptmllm.modeling.model import ModelError, load_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="local folder|--local-dir"):
        load_pretrained("facebook/nllb-200-distilled-600M", "eng_Latn", "gle_Latn")


def test_incomplete_folder_is_named(tmp_path):
    from adaptmllm.modeling.model import ModelError, load_pretrained

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=str(tmp_path)):
        load_pretrained(str(tmp_path), "eng_Latn", "gle_Latn")


def test_shipped_demo_base_matches_generator():
    """The base in assets/ must be the one the current code would build (else it is silently stale)."""
    from adaptmllm.config import TinyModelConfig
    from adaptmllm.training.demo_base import SHIPPED_DEMO_BASE, demo_base, demo_base_key

    meta = json.loads((SHIPPED_DEMO_BASE / "adaptmllm_base.json").read_text())
    assert meta["key"] == demo_base_key(TinyModelConfig())
    assert demo_base(TinyModelConfig()) == SHIPPED_DEMO_BASE


def test_demo_base_is_built_once_and_cached():
    from adaptmllm.config import TinyModelConfig
    from adaptmllm.training.demo_base import demo_base

    tiny = TinyModelConfig(vocab_size=200, d_model=32, ffn_dim=64, attention_heads=2, encoder_layers=1,
                           decoder_layers=1, pretrain_epochs=1, pretrain_pairs=100)
    folder = demo_base(tiny, progress=False)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert demo_base(tiny, progress=False) == folder
    assert (folder / "model.safetensors").stat().st_mtime == mtime  # reused, not retrained
