"""Tests of adaptmllm.languages: the code table, aliases and the error messages of check_code."""

import pytest

from adaptmllm.config import ConfigError, DataConfig
from adaptmllm.languages import (DEMO_LANGUAGES, FLORES200, ISO639_1, LANGUAGES, LanguageError, check_code, choices,
                                 find_code, iso639_1, language_name)


def test_table_matches_nllb_tokenizer():
    nllb = pytest.importorskip("transformers.models.nllb.tokenization_nllb")
    assert list(FLORES200) == list(nllb.FAIRSEQ_LANGUAGE_CODES)


def test_table_shape():
    assert len(FLORES200) == 202
    assert len(LANGUAGES) == 205 and set(DEMO_LANGUAGES) == {"qaa_Latn", "qab_Latn", "qac_Latn"}
    assert len(set(LANGUAGES.values())) == len(LANGUAGES), "names must be unique (dropdowns, find_code)"
    assert all(v in FLORES200 for v in ISO639_1.values())
    assert all(len(k) == 2 and k.islower() for k in ISO639_1)


@pytest.mark.parametrize("code,name", [
    ("eng_Latn", "English"), ("gle_Latn", "Irish"), ("mar_Deva", "Marathi"), ("zho_Hans", "Chinese (Simplified)"),
    ("zho_Hant", "Chinese (Traditional)"), ("gla_Latn", "Scottish Gaelic"), ("cym_Latn", "Welsh"),
    ("arb_Arab", "Modern Standard Arabic"), ("swh_Latn", "Swahili"), ("qaa_Latn", "Demo language A (artificial)"),
])
def test_language_name(code, name):
    assert language_name(code) == name


@pytest.mark.parametrize("alias,code", [
    ("en", "eng_Latn"), ("ga", "gle_Latn"), ("mr", "mar_Deva"), ("fr", "fra_Latn"), ("de", "deu_Latn"),
    ("es", "spa_Latn"), ("zh", "zho_Hans"), ("ar", "arb_Arab"), ("sw", "swh_Latn"), ("cy", "cym_Latn"),
    ("gd", "gla_Latn"), ("eu", "eus_Latn"), ("ca", "cat_Latn"), ("nb", "nob_Latn"),
])
def test_iso639_1_both_ways(alias, code):
    assert ISO639_1[alias] == code
    assert iso639_1(code) == alias


def test_iso639_1_none():
    assert iso639_1("qaa_Latn") is None and iso639_1("ace_Arab") is None and iso639_1("nonsense") is None


@pytest.mark.parametrize("code", ["eng_Latn", "gle_Latn", "qab_Latn", "zul_Latn"])
def test_check_code_accepts(code):
    assert check_code(code, "data.src_lang") == code


@pytest.mark.parametrize("bad,expected", [
    ("eng_latn", "eng_Latn"), ("gle_Lat", "gle_Latn"), ("Irish", "gle_Latn"), ("Irsh", "gle_Latn"),
    ("gle", "gle_Latn"), ("zho_Hanz", "zho_Hans"), ("kurdish", "kmr_Latn"), ("eng-Latn", "eng_Latn"),
])
def test_check_code_suggests(bad, expected):
    with pytest.raises(LanguageError) as e:
        check_code(bad, "data.tgt_lang")
    msg = str(e.value)
    assert msg.startswith("data.tgt_lang: ") and repr(bad) in msg and "did you mean" in msg and expected in msg


@pytest.mark.parametrize("alias,code", [("en", "eng_Latn"), ("GA", "gle_Latn")])
def test_check_code_iso_alias(alias, code):
    with pytest.raises(LanguageError) as e:
        check_code(alias, "data.src_lang")
    assert str(e.value) == f"data.src_lang: {alias!r} is an ISO 639-1 code; use the FLORES-200 code {code!r}"


@pytest.mark.parametrize("bad", ["xyz_Qqqq", "", None, 3])
def test_check_code_no_suggestion(bad):
    with pytest.raises(LanguageError, match=r"^language: "):
        check_code(bad)


def test_config_uses_check_code():
    with pytest.raises(ValueError, match=r"data.src_lang: 'en' is an ISO 639-1 code; use the FLORES-200 code 'eng_Latn'"):
        DataConfig(src_lang="en", tgt_lang="gle_Latn")
    assert issubclass(LanguageError, ValueError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("query,code", [
    ("Irish", "gle_Latn"), ("irish", "gle_Latn"), ("ga", "gle_Latn"), ("gle_latn", "gle_Latn"),
    ("gle_Latn", "gle_Latn"), (" English ", "eng_Latn"), ("Chinese (Simplified)", "zho_Hans"),
    ("demo language a (artificial)", "qaa_Latn"),
])
def test_find_code(query, code):
    assert find_code(query) == code


def test_find_code_unknown():
    with pytest.raises(LanguageError, match="did you mean gle_Latn"):
        find_code("Irissh")


def test_choices_sorted_for_dropdowns():
    c = choices()
    assert len(c) == len(LANGUAGES)
    assert [n.lower() for n, _ in c] == sorted(n.lower() for n, _ in c)
    assert ("Irish", "gle_Latn") in c and ("Demo language B (artificial)", "qab_Latn") in c
