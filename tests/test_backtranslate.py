"""Back-translation: tagged synthetic pairs, the TSV the data loader reads, mixing at a ratio."""

from __future__ import annotations

import logging

import pytest

from adaptmllm.runs.backtranslate import back_translate, mix_pairs, read_monolingual, write_pairs_tsv
from adaptmllm.config import DataConfig
from adaptmllm.data.readers import DataError, load_pairs

REAL_SRC = [f"real source {i}" for i in range(10)]
REAL_TGT = [f"real target {i}" for i in range(10)]
SYN_SRC = [f"<BT> synthetic source {i}" for i in range(8)]
SYN_TGT = [f"monolingual target {i}" for i in range(8)]


@pytest.mark.parametrize("ratio, n_syn", [(0.5, 5), (0.0, 0), (0.25, 2)])
def test_mix_ratio(ratio, n_syn):
    src, tgt, syn, stats = mix_pairs(REAL_SRC, REAL_TGT, SYN_SRC, SYN_TGT, ratio, seed=3)
    assert len(src) == 10 + n_syn and sum(syn) == n_syn and stats["synthetic"] == n_syn
    assert stats["ratio"] == pytest.approx(n_syn / 10) and stats["real"] == 10
    assert set(zip(src, tgt)) >= set(zip(REAL_SRC, REAL_TGT))  # every real pair kept
    assert all((s.startswith("<BT> ")) == flag for s, flag in zip(src, syn))
    assert mix_pairs(REAL_SRC, REAL_TGT, SYN_SRC, SYN_TGT, ratio, seed=3)[0] == src  # seeded


def test_mix_too_few_synthetic_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="adaptmllm"):
        _, _, syn, stats = mix_pairs(REAL_SRC, REAL_TGT, SYN_SRC, SYN_TGT, 2.0)
    assert sum(syn) == 8 and stats["ratio"] == 0.8 and stats["ratio_asked"] == 2.0
    assert "only 8 available" in caplog.text
    with pytest.raises(ValueError, match=">= 0"):
        mix_pairs(REAL_SRC, REAL_TGT, SYN_SRC, SYN_TGT, -1)


def test_tsv_round_trip_through_the_data_loader(tmp_path):
    src = ['<BT> He said "hi"', "tab\there", "plain"]
    tgt = ["Dúirt sé \"haigh\"", "x", "y"]
    p = write_pairs_tsv(tmp_path / "bt.tsv", "eng_Latn", "gle_Latn", src, tgt, [True, True, False])
    assert p.read_text(encoding="utf-8").splitlines()[0] == "eng_Latn\tgle_Latn\tsynthetic"
    pairs = load_pairs(str(p), DataConfig(src_lang="eng_Latn", tgt_lang="gle_Latn"))
    assert pairs.src == ['<BT> He said "hi"', "tab here", "plain"] and pairs.tgt == tgt


def test_read_monolingual(tmp_path):
    (tmp_path / "mono.ga").write_text("Dia duit.\n\n  Conas atá tú?  \n", encoding="utf-8")
    assert read_monolingual(tmp_path / "mono.ga") == ["Dia duit.", "Conas atá tú?"]
    (tmp_path / "empty.ga").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_monolingual(tmp_path / "empty.ga")


def test_back_translate_with_a_model_and_cli(tiny_run, tmp_path, capsys):
    """The tiny run's model stands in for a reverse-direction model (qaa_Latn -> eng_Latn here)."""
    from adaptmllm.cli import main

    from adaptmllm.modeling.model import load_pretrained

    mono = ["El loni tarizu el roen.", "Fu bona naur el keasbu."]
    out = back_translate(mono, tiny_run.model_dir, "eng_Latn", "qaa_Latn", num_beams=1, max_new_tokens=16)
    assert len(out) == 2 and all(s.startswith("<BT> ") for s in out)
    loaded = load_pretrained(str(tiny_run.model_dir), "qaa_Latn", "eng_Latn", local_files_only=True)
    untagged = back_translate(mono, loaded, "eng_Latn", "qaa_Latn", tag="", num_beams=1, max_new_tokens=16)
    assert [s.startswith("<BT> ") for s in untagged] == [False, False] and untagged == [s[5:] for s in out]
    with pytest.raises(ValueError, match="no tabs"):
        back_translate(mono, loaded, "eng_Latn", "qaa_Latn", tag="<B\tT>")

    (tmp_path / "mono.qaa").write_text("\n".join(mono) + "\n", encoding="utf-8")
    real = write_pairs_tsv(tmp_path / "real.tsv", "eng_Latn", "qaa_Latn", REAL_SRC[:4], REAL_TGT[:4], False)
    code = main(["back-translate", "--model", str(tiny_run.model_dir), "--src_lang", "eng_Latn", "--tgt_lang",
                 "qaa_Latn", "--input", str(tmp_path / "mono.qaa"), "--output", str(tmp_path / "bt.tsv"),
                 "--num_beams", "1", "--max_new_tokens", "16", "--mix_with", str(real), "--ratio", "0.5",
                 "--mixed_output", str(tmp_path / "mixed.tsv")])
    assert code == 0 and "4 real + 2 synthetic pairs" in capsys.readouterr().out
    mixed = load_pairs(str(tmp_path / "mixed.tsv"), DataConfig(src_lang="eng_Latn", tgt_lang="qaa_Latn"))
    assert len(mixed) == 6 and sum(s.startswith("<BT> ") for s in mixed.src) == 2
    assert main(["back-translate", "--model", str(tiny_run.model_dir), "--src_lang", "eng_Latn", "--tgt_lang",
                 "qaa_Latn", "--input", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "x.tsv")]) == 2
    assert "nope.txt" in capsys.readouterr().err
