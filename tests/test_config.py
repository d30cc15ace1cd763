"""The typed config: YAML round trip, presets, CLI overrides, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptmllm.config import Config, ConfigError, config_from_dict, config_to_dict, load_config, save_config

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_yaml_round_trip(tmp_path):
    cfg = config_from_dict({"name": "x", "train": {"learning_rate": 3e-4}, "data": {"tgt_lang": "gle_Latn"}})
    path = save_config(cfg, tmp_path / "c.yaml")
    again = load_config(path)
    assert again == cfg and again.train.learning_rate == 3e-4 and again.run_dir == Path("runs/x")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_shipped_preset_loads(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, Config) and cfg.name


@pytest.mark.parametrize("data, field", [
    ({"train": {"learning_rate": -1}}, "train.learning_rate"),
    ({"train": {"precision": "fp8"}}, "train.precision"),
    ({"train": {"metric_for_best_model": "meteor"}}, "train.metric_for_best_model"),
    ({"data": {"src_lang": "english"}}, "data.src_lang"),
    ({"data": {"tgt_lang": "eng_Latn"}}, "data.tgt_lang"),
    ({"data": {"format": "xlsx"}}, "data.format"),
    ({"model": {"tiny": {"d_model": 100, "attention_heads": 3}}}, "model.tiny.attention_heads"),
    ({"green": {"country_iso_code": "Ireland"}}, "green.country_iso_code"),
    ({"eval": {"bleu_tokenize": "flores200"}}, "eval.bleu_tokenize"),
    ({"name": "a/b"}, "name"),
    ({"data": {"max_train_pairs": -1}}, "data.max_train_pairs"),  # once unreachable code after a return
    ({"data": {"demo_train_pairs": 5}}, "data.demo_train_pairs"),
])
def test_errors_name_the_field(data, field):
    with pytest.raises(ValueError) as e:
        config_from_dict(data)
    assert str(e.value).startswith(field), str(e.value)


def test_unknown_field_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"train.learning_rat: unknown field; did you mean learning_rate"):
        config_from_dict({"train": {"learning_rat": 1e-4}})


def test_bad_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain:\n  learning_rate: [1e-4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_cli_flags_override_the_yaml(tmp_path):
    from adaptmllm.cli import config_from_namespace, build_parser

    preset = tmp_path / "p.yaml"
    preset.write_text("name: from-yaml\ntrain:\n  learning_rate: 0.001\n  num_train_epochs: 2\n")
    ns = build_parser().parse_args(["run", "--config", str(preset), "--train.learning_rate", "3e-4"])
    cfg = config_from_namespace(ns.run)
    assert (cfg.name, cfg.train.learning_rate, cfg.train.num_train_epochs) == ("from-yaml", 3e-4, 2)
    assert config_to_dict(cfg)["data"]["src_lang"] == "eng_Latn"


def test_cli_reports_config_errors_cleanly(capsys):
    from adaptmllm.cli import main

    assert main(["run", "--train.learning_rate", "-1"]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate" in err and "Traceback" not in err


def test_field_docstrings_are_the_cli_help(capsys):
    from adaptmllm.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "Peak learning rate of AdamW" in out and "FLORES-200 code" in out


def test_zero_stage_written_as_a_yaml_integer_parses_through_the_cli(tmp_path):
    """`stage: 3` (a YAML integer, as users write it) is accepted by the CLI like `stage: "3"`; it was refused
    with "Expected a str. Got value: 3"."""
    from adaptmllm.cli import build_parser, config_from_namespace
    from conftest import REPO

    text = (REPO / "configs" / "nllb-3.3b-zero3.yaml").read_text(encoding="utf-8")
    assert 'stage: "3"' in text
    path = tmp_path / "c.yaml"
    path.write_text(text.replace('stage: "3"', "stage: 3"), encoding="utf-8")
    ns = build_parser().parse_args(["run", "--config", str(path)])
    config = config_from_namespace(ns.run)
    assert config.train.deepspeed.stage == "3"
