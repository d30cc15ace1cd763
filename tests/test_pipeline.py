"""End-to-end: the whole pipeline on the small demo, and what it writes."""

from __future__ import annotations

import json

import pytest


def test_run_folder_and_bleu_rises(tiny_run):
    m = tiny_run.metrics
    run_dir = tiny_run.run_dir
    for name in ("config.yaml", "metrics.json", "report.md", "history.json", "training_curves.png", "run.log",
                 "baseline.hyp.txt", "finetuned.hyp.txt", "data/data_report.json", "green/emissions.csv",
                 "model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/README.md"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    for system in ("baseline", "finetuned"):
        assert set(saved[system]) >= {"bleu", "chrf", "ter", "signatures"}
        assert saved[system]["signatures"]["chrf"].startswith("nrefs:1|")
    assert set(saved["green"]) >= {"energy_kwh", "emissions_kg", "duration_s"}
    assert saved["green"]["duration_s"] > 0
    # The demo base translates a little; fine-tuning must clearly improve on it.
    assert m["baseline"]["bleu"] > 1.0
    assert m["finetuned"]["bleu"] > m["baseline"]["bleu"] + 5
    assert m["finetuned"]["chrf"] > m["baseline"]["chrf"]
    assert m["kept"] == "finetuned"
    report = (run_dir / "report.md").read_text()
    assert f"{m['finetuned']['bleu']:.1f}" in report and "nrefs:1" in report
    card = (run_dir / "model" / "README.md").read_text()
    assert "license: apache-2.0" in card and "qaa_Latn" in card
    hyps = (run_dir / "finetuned.hyp.txt").read_text().splitlines()
    assert len(hyps) == m["finetuned"]["n_segments"]


def test_training_loss_falls_and_dev_rises(tiny_run):
    hist = json.loads((tiny_run.run_dir / "history.json").read_text())
    losses = [h["loss"] for h in hist if "loss" in h]
    dev = [h["eval_chrf"] for h in hist if "eval_chrf" in h]
    assert losses[-1] < losses[0]
    assert hist[0]["step"] == 0 and "eval_chrf" in hist[0]  # the baseline's dev score is epoch 0
    assert max(dev[1:]) > dev[0]


def test_translate_cli_with_run_model(tiny_run, tmp_path, capsys):
    from adaptmllm.cli import main

    src = tmp_path / "in.txt"
    src.write_text("The nurse treats the patient.\nA doctor examines the sick child.\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["translate", "--model", str(tiny_run.model_dir), "--src", "eng_Latn", "--tgt", "qaa_Latn",
                 "--input", str(src), "--output", str(out), "--num_beams", "2"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(lines) and lines[0] != "The nurse treats the patient."


def test_run_folder_is_not_mixed(tiny_run):
    from adaptmllm.config import config_from_dict, config_to_dict
    from adaptmllm.runs.run_folder import RunFolderError, prepare_run_dir

    cfg = config_to_dict(config_from_dict({"name": tiny_run.run_dir.name, "runs_dir": str(tiny_run.run_dir.parent)}))
    with pytest.raises(RunFolderError, match="--overwrite"):
        prepare_run_dir(config_from_dict(cfg))
    cfg["train"]["resume"] = True  # resume with a different config is refused too, naming the field
    with pytest.raises(RunFolderError, match="differs"):
        prepare_run_dir(config_from_dict(cfg))


def test_bad_corpus_fails_clearly_and_writes_nothing(tmp_path, capsys):
    from adaptmllm.cli import main

    (tmp_path / "train.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "train.ga").write_text("aon\ndó\n", encoding="utf-8")
    runs = tmp_path / "runs"
    code = main(["run", "--name", "bad", "--runs_dir", str(runs), "--data.train", str(tmp_path / "train"),
                 "--data.tgt_lang", "gle_Latn", "--quiet", "true"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (f"adaptmllm: error: {tmp_path / 'train.en'} has 3 lines but {tmp_path / 'train.ga'} has 2; "
                           "the files must be aligned line by line")
    assert not (runs / "bad").exists()

    (tmp_path / "train.ga").write_bytes("aon\nd\xf3\ntrí\n".encode("latin-1", errors="replace"))
    assert main(["run", "--name", "bad", "--runs_dir", str(runs), "--data.train", str(tmp_path / "train"),
                 "--data.tgt_lang", "gle_Latn", "--quiet", "true"]) == 2
    err = capsys.readouterr().err
    assert "train.ga" in err and "line 2" in err and "UTF-8" in err


def test_unknown_language_code_suggests(capsys):
    from adaptmllm.cli import main

    assert main(["run", "--data.tgt_lang", "gle_latn"]) == 2
    assert "gle_Latn" in capsys.readouterr().err
