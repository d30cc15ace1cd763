"""Hyperparameter search: the search space (FixedTrial, bad entries), a real 3-trial study with
pruning and every artefact, all-failed studies, resume after SIGKILL, and two workers sharing one
study on a throwaway PostgreSQL server (CI=true: a server that does not start fails the test; elsewhere it skips).

Trials use the tiny demo base on ~100 pairs with one torch thread: a trial takes a few seconds.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, tiny_dict

optuna = pytest.importorskip("optuna")


# ----------------------------------------------------------------------------- helpers

@pytest.fixture()
def one_thread():
    """Tiny models train ~10x faster with one torch thread on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def hpo_dict(runs: Path, name: str, **hpo) -> dict:
    """A study over the small demo: 96 training pairs, 2 epochs, a 16-pair dev evaluation, no energy tracking."""
    d = tiny_dict(runs, name)
    d["data"]["demo_train_pairs"] = 96
    d["train"].update(num_train_epochs=2, eval_max_pairs=16, per_device_eval_batch_size=16, save_total_limit=1,
                      logging_steps=50)
    d["model"]["max_target_length"] = 40
    d["eval"] = {"num_beams": 1, "batch_size": 100, "max_new_tokens": 40}
    d["green"] = {"enabled": False}
    d["hpo"] = {"n_trials": 3, "pruner": "none", "sampler": "random", "seed": 1, "heartbeat_interval": 1,
                "grace_period": 2, "plots": False,
                "space": {"learning_rate": {"low": 1e-4, "high": 2e-3, "log": True},
                          "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "weight_decay": None,
                          "num_train_epochs": 2, "warmup_ratio": 0.0, "label_smoothing": {"low": 0.0, "high": 0.2}},
                **hpo}
    return d


def write_config(d: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


def cli_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adaptmllm.cli", "hpo", "--config", str(config), "--quiet", "true", *extra]


def sub_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


_STORAGES: dict = {}


def load(d: dict):
    """The study of config dict ``d`` (one storage object per URL: polling must not open a pool each time)."""
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.hpo.study import storage_url

    cfg = config_from_dict(d)
    url = storage_url(cfg)
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name=cfg.hpo.study_name or cfg.name, storage=_STORAGES[url])


def sqlite_states(db: Path) -> dict[int, str]:
    """Trial number -> state, read straight from the SQLite file (cheap enough to poll)."""
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return dict(con.execute("SELECT number, state FROM trials").fetchall())
    except sqlite3.Error:
        return {}


# ----------------------------------------------------------------------------- search space

def test_suggest_with_fixed_trial(tiny_cfg):
    from adaptmllm.config import config_from_dict, config_to_dict
    from adaptmllm.runs.hpo.space import suggest

    d = config_to_dict(tiny_cfg)
    d["hpo"]["space"] = {"learning_rate": {"low": 1e-5, "high": 9e-5, "log": True},
                         "per_device_train_batch_size": [8, 16, 32],
                         "gradient_accumulation_steps": {"low": 1, "high": 12},
                         "weight_decay": {"low": 0.01, "high": 2.0, "log": True},
                         "num_train_epochs": {"low": 1, "high": 10},
                         "warmup_ratio": 0.1, "label_smoothing": None, "precision": ["bf16", "fp16", "fp32"]}
    d["train"]["resume"] = True
    cfg = config_from_dict(d)
    params = {"learning_rate": 3e-5, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 4,
              "weight_decay": 0.1, "num_train_epochs": 3}
    out = suggest(optuna.trial.FixedTrial(params), cfg)
    for k, v in params.items():
        assert getattr(out.train, k) == v
    assert out.train.warmup_ratio == 0.1                           # fixed: set, not searched
    assert out.train.label_smoothing == cfg.train.label_smoothing  # empty: train's value kept
    assert out.train.resume is False                               # every trial starts from the untouched model
    assert out.data == cfg.data and out.model == cfg.model and out.name == cfg.name
    import torch

    if not torch.cuda.is_available():
        assert out.train.precision == "fp32"  # a CPU cannot run bf16/fp16: not searched here
    with pytest.raises(ValueError):
        suggest(optuna.trial.FixedTrial({"learning_rate": 3e-5}), cfg)  # a searched dimension is missing

    # The distributions a real trial gets: log-uniform learning rate, whole epochs, batch choices.
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    suggested = suggest(trial, cfg)
    dist = trial.distributions
    assert isinstance(dist["learning_rate"], optuna.distributions.FloatDistribution) and dist["learning_rate"].log
    assert isinstance(dist["num_train_epochs"], optuna.distributions.IntDistribution)
    assert isinstance(dist["gradient_accumulation_steps"], optuna.distributions.IntDistribution)
    assert dist["per_device_train_batch_size"].choices == (8, 16, 32)
    assert 1e-5 <= suggested.train.learning_rate <= 9e-5 and isinstance(suggested.train.num_train_epochs, int)


def test_default_space_is_adaptmllms():
    from adaptmllm.config import Config

    s = Config().hpo.space
    assert s.learning_rate == {"low": 1e-5, "high": 9e-5, "log": True}
    assert s.gradient_accumulation_steps["low"] == 1 and s.gradient_accumulation_steps["high"] == 12
    assert s.num_train_epochs["low"] == 1 and s.num_train_epochs["high"] == 10
    assert s.weight_decay["low"] == 0.01 and s.weight_decay["high"] == 2.0
    assert set(s.searched()) == {"learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                                 "weight_decay", "num_train_epochs", "warmup_ratio", "label_smoothing", "precision"}
    # The tiny model's sizes and the warm-up steps / schedule are searchable but not searched by default.
    assert s.model_dims() == [] and s.warmup_steps is None and s.lr_scheduler is None


# The model.tiny dimensions (issue 20: what matters for a model trained from scratch on a CPU), with
# the values a FixedTrial gives them; the train dimensions warmup_steps and lr_scheduler beside them.
MODEL_SPACE = {"vocab_size": [1000, 2000], "d_model": [64, 128], "encoder_layers": {"low": 1, "high": 3},
               "decoder_layers": {"low": 1, "high": 3}, "ffn_dim": [128, 256], "attention_heads": [2, 4],
               "dropout": {"low": 0.1, "high": 0.4}, "warmup_steps": {"low": 0, "high": 400, "step": 100},
               "lr_scheduler": ["linear", "inverse_sqrt"]}
MODEL_PARAMS = {"vocab_size": 2000, "d_model": 128, "encoder_layers": 3, "decoder_layers": 2, "ffn_dim": 256,
                "attention_heads": 4, "dropout": 0.3, "warmup_steps": 300, "lr_scheduler": "inverse_sqrt"}


def test_suggest_puts_model_dims_into_model_tiny_and_train_dims_into_train(tiny_cfg):
    from adaptmllm.config import HPO_SECTIONS, config_from_dict, config_to_dict
    from adaptmllm.runs.hpo.space import suggest, tokenizer_dir

    d = config_to_dict(tiny_cfg)
    d["hpo"]["space"] = {**d["hpo"]["space"], **MODEL_SPACE}
    cfg = config_from_dict(d)
    fixed = {"learning_rate": 3e-5, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 4,
             "weight_decay": 0.1, "num_train_epochs": 3, "warmup_ratio": 0.1, "label_smoothing": 0.1}
    out = suggest(optuna.trial.FixedTrial({**fixed, **MODEL_PARAMS}), cfg)
    for dim in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "ffn_dim", "attention_heads", "dropout"):
        assert HPO_SECTIONS[dim] == "model.tiny" and getattr(out.model.tiny, dim) == MODEL_PARAMS[dim], dim
        assert not hasattr(out.train, dim), dim
    assert out.train.warmup_steps == 300 and out.train.lr_scheduler == "inverse_sqrt"
    assert HPO_SECTIONS["warmup_steps"] == HPO_SECTIONS["lr_scheduler"] == "train"
    # what is not searched keeps its value; the input config is untouched
    assert out.model.tiny.max_position_embeddings == cfg.model.tiny.max_position_embeddings
    assert out.model.name_or_path == "tiny" and cfg.model.tiny.d_model == 128 and cfg.model.tiny.vocab_size == 1000
    # each vocabulary size has its own SentencePiece folder; a study without vocab_size keeps tokenizer/
    assert tokenizer_dir(out) == cfg.run_dir / "tokenizer-v2000"
    assert tokenizer_dir(tiny_cfg) == tiny_cfg.run_dir / "tokenizer"

    # The distributions a real trial gets.
    trial = optuna.create_study(direction="maximize").ask()
    sampled = suggest(trial, cfg)
    dist = trial.distributions
    assert dist["vocab_size"].choices == (1000, 2000) and dist["lr_scheduler"].choices == ("linear", "inverse_sqrt")
    assert isinstance(dist["encoder_layers"], optuna.distributions.IntDistribution)
    assert isinstance(dist["warmup_steps"], optuna.distributions.IntDistribution) and dist["warmup_steps"].step == 100
    assert isinstance(dist["dropout"], optuna.distributions.FloatDistribution)
    assert sampled.model.tiny.d_model % sampled.model.tiny.attention_heads == 0
    assert 0.1 <= sampled.model.tiny.dropout <= 0.4 and 1 <= sampled.model.tiny.encoder_layers <= 3


@pytest.mark.parametrize("space, model, field, words", [
    # a model dimension with a pretrained model: those sizes only build the tiny model from scratch
    ({"d_model": [128, 256]}, {"name_or_path": "facebook/nllb-200-distilled-600M"}, "hpo.space.d_model",
     ("model.name_or_path", "tiny", "null")),
    ({"vocab_size": 2000}, {"name_or_path": "facebook/nllb-200-distilled-600M"}, "hpo.space.vocab_size",
     ("model.name_or_path", "tiny")),
    # values their model.tiny / train field would refuse
    ({"dropout": {"low": 0.1, "high": 1.0}}, {}, "hpo.space.dropout.high", ("[0, 1)",)),
    ({"vocab_size": [50, 1000]}, {}, "hpo.space.vocab_size.choices[0]", (">= 100",)),
    ({"encoder_layers": {"low": 0, "high": 3}}, {}, "hpo.space.encoder_layers.low", ("> 0",)),
    ({"decoder_layers": {"low": 1.5, "high": 3}}, {}, "hpo.space.decoder_layers.low", ("whole number",)),
    ({"ffn_dim": {"low": 512, "high": 128}}, {}, "hpo.space.ffn_dim.low", ("swap",)),
    ({"warmup_steps": {"low": -100, "high": 400}}, {}, "hpo.space.warmup_steps.low", (">= 0",)),
    ({"lr_scheduler": ["linear", "cosin"]}, {}, "hpo.space.lr_scheduler.choices[1]", ("inverse_sqrt",)),
    ({"lr_scheduler": {"low": 0, "high": 1}}, {}, "hpo.space.lr_scheduler", ("choices",)),
    # attention_heads that do not divide every d_model a trial could get: refused before any trial
    ({"d_model": [128, 250], "attention_heads": [4, 8]}, {}, "hpo.space.attention_heads", ("d_model 250", "divide")),
    ({"attention_heads": [3, 4]}, {}, "hpo.space.attention_heads", ("attention_heads 3", "model.tiny.d_model 128")),
    ({"d_model": {"low": 64, "high": 256}}, {}, "hpo.space.d_model", ("d_model 65", "step")),
])
def test_bad_model_search_space_names_the_field_and_the_fix(space, model, field, words):
    from adaptmllm.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as e:
        config_from_dict({"hpo": {"space": space}, "model": model})
    message = str(e.value)
    assert message.startswith(field + ":") and all(w in message for w in words), message


def test_a_study_started_before_the_model_dims_continues_and_a_changed_space_is_refused(tmp_path):
    """A study stored by an adaptmllm without the new dimensions (its settings lack the keys) continues
    when they are left empty; searching one of them in that study is refused, naming it."""
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.hpo.study import HPOError, open_study

    d = hpo_dict(tmp_path / "runs", "old")
    study = open_study(config_from_dict(d))
    stored = study.user_attrs["adaptmllm_config"]
    for key in ("warmup_steps", "lr_scheduler", "vocab_size", "d_model", "encoder_layers", "decoder_layers",
                "ffn_dim", "attention_heads", "dropout"):
        del stored["hpo"]["space"][key]
    study.set_user_attr("adaptmllm_config", stored)  # as the older adaptmllm stored it
    assert open_study(config_from_dict(d)).study_name == "old"
    d["hpo"]["space"]["dropout"] = [0.1, 0.3]
    with pytest.raises(HPOError, match=r"hpo\.space\.dropout \(None -> \{'choices': \[0\.1, 0\.3\]\}\)"):
        open_study(config_from_dict(d))


def test_model_search_space_that_divides_is_accepted():
    from adaptmllm.config import config_from_dict

    cfg = config_from_dict({"hpo": {"space": {"d_model": {"low": 128, "high": 512, "step": 128},
                                              "attention_heads": [4, 8], "dropout": [0.1, 0.3]}}})
    assert cfg.hpo.space.model_dims() == ["d_model", "attention_heads", "dropout"]
    assert cfg.hpo.space.d_model == {"low": 128, "high": 512, "log": False, "step": 128}


@pytest.mark.parametrize("space, field", [
    ({"learning_rate": {"low": 1e-3, "high": 1e-5}}, "hpo.space.learning_rate.low"),
    ({"precision": {"choices": ["bf16", "fp8"]}}, "hpo.space.precision.choices[1]"),
    ({"precision": {"low": 1, "high": 2}}, "hpo.space.precision"),
    ({"per_device_train_batch_size": {"low": 4.5, "high": 8}}, "hpo.space.per_device_train_batch_size.low"),
    ({"weight_decay": {"low": 0.0, "high": 1.0, "log": True}}, "hpo.space.weight_decay.log"),
    ({"warmup_ratio": {"low": 0.0, "high": 1.5}}, "hpo.space.warmup_ratio.high"),
    ({"learning_rate": {"low": 1e-5, "hihg": 1e-4}}, "hpo.space.learning_rate.hihg"),
    ({"learning_rate": {"low": "fast", "high": 1e-4}}, "hpo.space.learning_rate.low"),
    ({"dropout": {"low": 0.0, "high": 1.0}}, "hpo.space.dropout.high"),
])
def test_bad_search_space_names_the_field(space, field):
    from adaptmllm.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as e:
        config_from_dict({"hpo": {"space": space}})
    assert str(e.value).startswith(field), str(e.value)


@pytest.mark.parametrize("hpo, field", [
    ({"n_trials": 0}, "hpo.n_trials"),
    ({"pruner": "asha"}, "hpo.pruner"),
    ({"storage": "study.db"}, "hpo.storage"),
    ({"enqueue": [{"warmup_ratio": 0.1}], "space": {"warmup_ratio": 0.0}}, "hpo.enqueue[0].warmup_ratio"),
    ({"grace_period": 5, "heartbeat_interval": 10}, "hpo.grace_period"),
])
def test_bad_hpo_settings_name_the_field(hpo, field):
    from adaptmllm.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"hpo": hpo})


def test_cli_rejects_bad_space_without_traceback(tmp_path, capsys):
    from adaptmllm.cli import main

    code = main(["hpo", "--runs_dir", str(tmp_path), "--hpo.space.learning_rate", "{low: 1e-3, high: 1e-5}"])
    err = capsys.readouterr().err
    assert code == 2 and "hpo.space.learning_rate.low" in err and "Traceback" not in err
    code = main(["hpo", "--runs_dir", str(tmp_path), "--hpo.space.precision", "[fp32, fp4]"])
    err = capsys.readouterr().err
    assert code == 2 and "hpo.space.precision.choices[1]" in err and "fp4" in err
    assert not any(tmp_path.iterdir())


def test_yaml_numbers_without_dot_and_demo_preset():
    from adaptmllm.config import config_from_dict, load_config

    cfg = config_from_dict(yaml.safe_load("hpo:\n  space:\n    learning_rate: {low: 1e-5, high: 9e-5, log: true}\n"))
    assert cfg.hpo.space.learning_rate == {"low": 1e-5, "high": 9e-5, "log": True}
    demo = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo-hpo.yaml")
    assert demo.name == "demo-hpo" and demo.hpo.n_trials == 3 and demo.hpo.space.searched()


# ----------------------------------------------------------------------------- studies

def test_three_trial_study_with_pruning_writes_every_artefact(tmp_path, one_thread, capsys):
    """CLI in-process: trial 2's learning rate (0.1) wrecks the model and the median pruner stops it after epoch 1."""
    from adaptmllm.cli import main
    from adaptmllm.config import load_config

    d = hpo_dict(tmp_path / "runs", "study", pruner="median", pruner_startup_trials=2, pruner_warmup_epochs=1,
                 plots=True, space={**hpo_dict(tmp_path, "x")["hpo"]["space"],
                                    "learning_rate": {"low": 1e-5, "high": 0.1, "log": True}},
                 enqueue=[{"learning_rate": 1e-3, "label_smoothing": 0.1},
                          {"learning_rate": 3e-4, "label_smoothing": 0.0},
                          {"learning_rate": 0.1, "label_smoothing": 0.1}])
    d["green"] = {"enabled": True, "measure_power_secs": 1.0}
    config = write_config(d, tmp_path / "study.yaml")
    argv = ["hpo", "--config", str(config), "--quiet", "true"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 completed, 1 pruned, 0 failed" in out

    study = load(d)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = study.trials[2]
    assert list(pruned.intermediate_values) == [1] and pruned.user_attrs["result"]["pruned_at_epoch"] == 1
    assert list(study.trials[0].intermediate_values) == [1, 2]  # dev chrF++ reported after every epoch

    run_dir = tmp_path / "runs" / "study"
    hpo = run_dir / "hpo"
    for name in ("study.db", "study_config.yaml", "trials.csv", "best_params.yaml", "green.json", "summary.json",
                 "history.png", "importance.png", "history.html", "importance.html", "intermediate.html",
                 "plotly.min.js",
                 "trial-0/config.yaml", "trial-0/history.json", "trial-0/green/emissions.csv"):
        assert (hpo / name).is_file(), name
    assert (hpo / "history.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((hpo / "trials.csv").open()))
    assert [r["state"] for r in rows] == states
    assert {"param_learning_rate", "value", "energy_kwh", "emissions_kg", "peak_rss_mb", "duration_s"} <= set(rows[0])
    assert all(float(r["peak_rss_mb"]) > 0 for r in rows)

    green = json.loads((hpo / "green.json").read_text())
    assert len(green["trials"]) == 3 and all(t["energy_kwh"] > 0 for t in green["trials"])
    assert green["total"]["energy_kwh"] == pytest.approx(sum(t["energy_kwh"] for t in green["trials"]), rel=1e-6)
    assert green["total"]["emissions_kg"] > 0

    # The best trial's model is kept (the others' removed), scored on the test set against the baseline.
    best = study.best_trial
    assert best.number in (0, 1)
    assert (hpo / f"trial-{best.number}" / "model" / "model.safetensors").is_file()
    assert not any((hpo / f"trial-{n}" / "model").exists() for n in (0, 1, 2) if n != best.number)
    assert not list(hpo.glob("trial-*/checkpoints"))
    metrics = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert set(metrics["baseline"]) >= {"bleu", "chrf", "ter"} and set(metrics["finetuned"]) >= {"bleu", "chrf"}
    assert metrics["hpo"]["best_trial"] == best.number and metrics["hpo"]["counts"]["pruned"] == 1
    assert metrics["hpo"]["green_total"]["energy_kwh"] == pytest.approx(green["total"]["energy_kwh"])
    for name in ("model/model.safetensors", "model/README.md", "report.md", "baseline.hyp.txt", "finetuned.hyp.txt"):
        assert (run_dir / "best" / name).is_file(), name
    report = (run_dir / "best" / "report.md").read_text()
    assert "## Hyperparameter search" in report and "../hpo/history.png" in report
    _assert_ends_like_every_run(run_dir / "best")

    # best_params.yaml is a config holding the best trial's parameters.
    cfg = load_config(hpo / "best_params.yaml")
    assert cfg.train.learning_rate == pytest.approx(best.params["learning_rate"])
    assert cfg.train.label_smoothing == pytest.approx(best.params["label_smoothing"])
    summary = json.loads((hpo / "summary.json").read_text())
    assert summary["counts"]["complete"] == 2 and 0 < summary["timings_s"]["overhead_share"] < 1

    # Running the same command again finds the study finished: nothing is rerun.
    assert main(argv) == 0
    assert len(load(d).trials) == 3


def test_study_over_model_sizes_gives_each_trial_its_architecture_and_vocabulary(tmp_path, one_thread):
    """Two 1-epoch trials of the tiny model built from scratch (demo corpus, no demo base) that differ in
    vocabulary size, width and dropout: each trial's config and model have its sampled sizes, each
    vocabulary size has its own SentencePiece folder, and best_params.yaml rebuilds the best trial's model."""
    import transformers

    from adaptmllm.config import load_config
    from adaptmllm.data.pairs import prepare_data
    from adaptmllm.runs.hpo.search import run_study
    from adaptmllm.training.setup import prepare_model

    d = hpo_dict(tmp_path / "runs", "sizes", n_trials=2,
                 space={"learning_rate": 2e-3, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1,
                        "weight_decay": None, "num_train_epochs": 1, "warmup_ratio": 0.0, "label_smoothing": 0.1,
                        "vocab_size": [200, 300], "d_model": [32, 64], "dropout": [0.1, 0.3]},
                 enqueue=[{"vocab_size": 200, "d_model": 32, "dropout": 0.1},
                          {"vocab_size": 300, "d_model": 64, "dropout": 0.3}])
    d["model"]["tiny"] = {"pretrain": False, "vocab_size": 1000, "d_model": 128, "attention_heads": 2,
                          "encoder_layers": 1, "decoder_layers": 1, "ffn_dim": 64}
    d["train"]["num_train_epochs"] = 1
    result = run_study(d, progress=False)
    run_dir = tmp_path / "runs" / "sizes"
    hpo = run_dir / "hpo"
    assert result.counts["complete"] == 2

    sizes = {}
    for n, (vocab, width, dropout) in enumerate([(200, 32, 0.1), (300, 64, 0.3)]):
        tiny = load_config(hpo / f"trial-{n}" / "config.yaml").model.tiny
        assert (tiny.vocab_size, tiny.d_model, tiny.dropout) == (vocab, width, dropout)
        assert (tiny.attention_heads, tiny.ffn_dim, tiny.encoder_layers) == (2, 64, 1)  # not searched: kept
        tok = transformers.AutoTokenizer.from_pretrained(run_dir / f"tokenizer-v{vocab}")
        sizes[vocab] = len(tok)
    assert sizes[300] - sizes[200] == 100  # two SentencePiece models (plus the same language codes)
    assert not (run_dir / "tokenizer").exists()
    rows = {int(r["number"]): r for r in csv.DictReader((hpo / "trials.csv").open())}
    assert (rows[1]["param_vocab_size"], rows[1]["param_d_model"], rows[1]["param_dropout"]) == ("300", "64", "0.3")

    # The best model (trial model and best/model) has the best trial's sizes and its own vocabulary.
    best = result.best_params
    for folder in (hpo / f"trial-{result.best_trial}" / "model", run_dir / "best" / "model"):
        arch = json.loads((folder / "config.json").read_text())
        assert (arch["d_model"], arch["dropout"], arch["vocab_size"]) == (best["d_model"], best["dropout"],
                                                                          sizes[best["vocab_size"]]), folder
        assert len(transformers.AutoTokenizer.from_pretrained(folder)) == sizes[best["vocab_size"]]

    # best_params.yaml is a config for `adaptmllm run` that builds the best trial's architecture again.
    cfg = load_config(hpo / "best_params.yaml")
    assert (cfg.model.tiny.vocab_size, cfg.model.tiny.d_model, cfg.model.tiny.dropout) == (
        best["vocab_size"], best["d_model"], best["dropout"])
    prepared = prepare_data(cfg.data)
    rebuilt = prepare_model(cfg, prepared.train.src + prepared.train.tgt, tokenizer_dir=tmp_path / "tok",
                            progress=False).model.config.to_dict()
    kept = json.loads((run_dir / "best" / "model" / "config.json").read_text())
    for key in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "encoder_ffn_dim", "dropout"):
        assert rebuilt[key] == kept[key], key


def _assert_ends_like_every_run(best_dir: Path) -> None:
    """<run>/best holds the files of every run folder (issue 18: one end of a run, runs.run_folder.finish_run):
    before it, a kept best model had no report.html, no significance test and no segments.tsv."""
    for name in ("metrics.json", "report.md", "report.html", "model/README.md", "segments.tsv"):
        assert (best_dir / name).is_file(), name
    metrics = json.loads((best_dir / "metrics.json").read_text())
    assert metrics["significance"]["n_segments"] == metrics["finetuned"]["n_segments"]
    assert metrics["verdict"]["outcome"] in ("improved", "unchanged", "worse") and metrics["verdict"]["text"]
    assert metrics["hpo"]["best_trial"] is not None and "error_analysis" in metrics
    assert "Hyperparameter search" in (best_dir / "report.html").read_text()
    assert (best_dir / "report.md").read_text().count("## Hyperparameter search") == 1


def test_retrained_best_model_ends_like_every_run(tmp_path, one_thread):
    """hpo.best_model retrain: the best trial's parameters are trained again into <run>/best by the pipeline,
    which then holds the HPO section, the study summary and the significance test like a kept best model."""
    from adaptmllm.runs.hpo.search import run_study

    d = hpo_dict(tmp_path / "runs", "retrain", n_trials=1, best_model="retrain")
    result = run_study(d, progress=False)
    best_dir = tmp_path / "runs" / "retrain" / "best"
    assert result.run.run_dir == best_dir and result.run.metrics["retrained"] is True
    _assert_ends_like_every_run(best_dir)
    assert json.loads((best_dir / "metrics.json").read_text()) == result.run.metrics


def test_study_where_every_trial_fails_ends_with_a_message(tmp_path, monkeypatch, capsys, one_thread):
    import adaptmllm.runs.hpo.trial as trial_module  # the trial calls the fine_tune it imported
    from adaptmllm.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(trial_module, "fine_tune", broken)
    d = hpo_dict(tmp_path / "runs", "fails", n_trials=2)
    config = write_config(d, tmp_path / "c.yaml")
    assert main(["hpo", "--config", str(config), "--quiet", "true"]) == 1
    err = capsys.readouterr().err
    assert "no trial completed" in err and "2 failed" in err and "Traceback" not in err
    rows = list(csv.DictReader((tmp_path / "runs" / "fails" / "hpo" / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"] and "out of memory" in rows[0]["error"]

    def pruned(*args, **kwargs):
        raise optuna.TrialPruned("pruned (simulated)")

    monkeypatch.setattr(trial_module, "fine_tune", pruned)
    d = hpo_dict(tmp_path / "runs", "pruned", n_trials=2)
    from adaptmllm.runs.hpo.study import NoCompletedTrialError
    from adaptmllm.runs.hpo.search import run_study

    with pytest.raises(NoCompletedTrialError, match="2 pruned.*--hpo.pruner none"):
        run_study(d, progress=False)


@pytest.mark.parametrize("backend", ["tensorboard", "mlflow"])
def test_each_trial_logs_to_experiment_tracking(tmp_path, one_thread, backend):
    """train.report_to: each trial logs through the Trainer to its own TensorBoard folder / MLflow run (local store).
    tensorboard is in the test extra, so that case always runs; MLflow is optional."""
    if backend == "mlflow":
        pytest.importorskip("mlflow", reason="MLflow is optional (pip install mlflow); not in the test extra")
    from adaptmllm.runs.hpo.search import run_study

    d = hpo_dict(tmp_path / "runs", "tracked", n_trials=2)
    d["train"]["report_to"] = backend
    old = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    try:
        run_study(d, progress=False)
    finally:
        os.environ.update({k: v for k, v in old.items() if v is not None})
    hpo = tmp_path / "runs" / "tracked" / "hpo"
    if backend == "tensorboard":
        for n in (0, 1):
            assert list((hpo / "tensorboard" / f"trial-{n}").glob("events.out.tfevents.*")), n
    else:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{hpo / 'mlflow.db'}")
        runs = mlflow.search_runs(experiment_names=["tracked"], output_format="list")
        assert sorted(r.info.run_name for r in runs) == ["tracked-trial-0", "tracked-trial-1"]
        assert all(r.info.status == "FINISHED" and "eval_chrf" in r.data.metrics for r in runs)
        assert mlflow.active_run() is None


def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path, one_thread):
    """SIGKILL during trial 1; the same command resumes: trial 0 is kept, trial 1 is failed by its stale
    heartbeat and retried with its parameters, and the study ends with exactly n_trials finished."""
    from adaptmllm.cli import main

    d = hpo_dict(tmp_path / "runs", "killed", n_trials=3)
    config = write_config(d, tmp_path / "c.yaml")
    db = tmp_path / "runs" / "killed" / "hpo" / "study.db"
    log = tmp_path / "killed.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cli_cmd(config), env=sub_env(), stdout=subprocess.DEVNULL, stderr=fh)
    deadline = time.time() + 300
    states: dict = {}
    started = tmp_path / "runs" / "killed" / "hpo" / "trial-1" / "config.yaml"  # written once its parameters are set
    try:
        while time.time() < deadline and proc.poll() is None:
            states = sqlite_states(db)
            if states.get(0) == "COMPLETE" and states.get(1) == "RUNNING" and started.is_file():
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert states.get(0) == "COMPLETE" and states.get(1) == "RUNNING", (states, log.read_text()[-3000:])
    before = load(d)
    t0 = before.trials[0]
    assert before.trials[1].state.name == "RUNNING"
    mtime0 = (tmp_path / "runs" / "killed" / "hpo" / "trial-0" / "config.yaml").stat().st_mtime

    time.sleep(2.5)  # longer than hpo.grace_period: the killed trial's heartbeat is now stale
    assert main(["hpo", "--config", str(config), "--quiet", "true"]) == 0
    study = load(d)
    trials = study.trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    assert trials[0].state.name == "COMPLETE" and trials[0].value == t0.value
    assert trials[0].datetime_complete == t0.datetime_complete and trials[0].params == t0.params
    assert (tmp_path / "runs" / "killed" / "hpo" / "trial-0" / "config.yaml").stat().st_mtime == mtime0
    assert trials[1].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].params == trials[1].params and retried[0].state.name == "COMPLETE"
    # No finished trial was repeated: every other trial has other parameters than trial 0.
    assert all(t.params != t0.params for t in trials[1:])
    assert (tmp_path / "runs" / "killed" / "best" / "metrics.json").is_file()


# ----------------------------------------------------------------------------- two workers

def _start_postgres(root: Path) -> tuple[str, list[str]]:
    """Start a throwaway PostgreSQL server on 127.0.0.1 (Debian's binaries; as user postgres when root).

    Returns the URL and the command that stops it. Raises RuntimeError saying why it cannot start.
    """
    import importlib

    importlib.import_module("psycopg2")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise RuntimeError("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin; apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*cmd):
        return subprocess.run(as_user + [str(c) for c in cmd], capture_output=True, text=True, timeout=120)

    r = run(bindir / "initdb", "-D", data, "-U", "adaptmllm", "--auth=trust", "-E", "UTF8", "--no-sync")
    if r.returncode:
        raise RuntimeError(f"initdb failed: {r.stderr.strip()[-500:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
    r = run(bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "server.log", "-w", "-t", "60", "start")
    if r.returncode:
        raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-500:]}")
    stop = as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
    return f"postgresql+psycopg2://adaptmllm@127.0.0.1:{port}/postgres", stop


def postgres_unavailable(reason: str) -> None:
    """No PostgreSQL server could be started: a failure in CI (``CI=true``: .ci/run installs PostgreSQL, so
    the two-worker test must run on it there), a skip with the reason elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but no PostgreSQL server could be started for the two-worker HPO test: {reason}")
    pytest.skip(f"no PostgreSQL server could be started here ({reason}); .ci/run installs one")


@pytest.fixture(scope="module")
def shared_storage():
    """The URL of a throwaway PostgreSQL server started here (see :func:`postgres_unavailable` when none starts)."""
    root = Path(tempfile.mkdtemp(prefix="adaptmllm-pg-"))
    stop = None
    try:
        try:
            url, stop = _start_postgres(root)
        except (ImportError, RuntimeError, OSError, subprocess.SubprocessError) as e:
            postgres_unavailable(f"{type(e).__name__}: {e}")
        yield url
    finally:
        if stop:
            subprocess.run(stop, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study(tmp_path, shared_storage, one_thread):
    """Worker A (a subprocess that leaves finalising to others) and worker B (this process) run one study at once."""
    from adaptmllm.cli import main

    d = hpo_dict(tmp_path / "runs", "shared", n_trials=3, storage=shared_storage, seed=None)
    config = write_config(d, tmp_path / "c.yaml")
    log = tmp_path / "worker_a.log"
    with log.open("wb") as fh:
        worker_a = subprocess.Popen(cli_cmd(config, "--hpo.finalize", "false", "--hpo.seed", "1"), env=sub_env(),
                                    stdout=subprocess.DEVNULL, stderr=fh)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and worker_a.poll() is None:
            try:
                if any(t.state.name == "RUNNING" for t in load(d).trials):
                    break
            except KeyError:  # the study does not exist yet
                pass
            time.sleep(0.3)
        assert worker_a.poll() is None, log.read_text()[-3000:]
        assert main(["hpo", "--config", str(config), "--quiet", "true", "--hpo.seed", "2"]) == 0
        worker_a.wait(timeout=300)
    finally:
        if worker_a.poll() is None:
            worker_a.kill()
    assert worker_a.returncode == 0, log.read_text()[-3000:]
    trials = load(d).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 3 <= len(finished) <= 4  # each worker finishes the trial it runs when the count is reached
    assert len({t.user_attrs["worker"] for t in finished}) == 2, [t.user_attrs for t in finished]
    assert len({t.number for t in trials}) == len(trials)
    assert (tmp_path / "runs" / "shared" / "best" / "metrics.json").is_file()
    summary = json.loads((tmp_path / "runs" / "shared" / "hpo" / "summary.json").read_text())
    assert summary["storage"].startswith("postgresql")


def test_two_workers_of_two_processes_each_share_one_study(tmp_path, shared_storage):
    """Two Optuna workers, each a two-process training (torchrun, gloo), on one study: no trial lost or
    run twice, every trial trained by both processes of its worker, and only rank 0 of a worker opens
    the storage or writes the run folder (tests/distributed_worker.py records each rank)."""
    import collections
    import re

    from conftest import REPO

    storage = shared_storage
    d = hpo_dict(tmp_path / "runs", "ddp", n_trials=4, storage=storage, seed=None)
    d["train"].update(num_train_epochs=1, per_device_train_batch_size=8)
    d["hpo"]["space"].update(per_device_train_batch_size=8, num_train_epochs=1)
    # Nothing is killed here: a grace period of 2 s (hpo_dict's, for the kill tests) let a heartbeat starved by
    # other load fail a live trial, whose retry then repeated its parameters (seen once on a loaded 2-core machine).
    d["hpo"].update(heartbeat_interval=2, grace_period=60)
    config = write_config(d, tmp_path / "c.yaml")
    env = {k: v for k, v in sub_env().items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = str(REPO)
    workers = {}
    for name, seed, finalize in (("a", "1", "false"), ("b", "2", "true")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(REPO / "tests" / "distributed_worker.py"),
               str(tmp_path / f"record-{name}"), str(tmp_path / "runs"), "hpo", "--config", str(config), "--quiet",
               "true", "--hpo.seed", seed, "--hpo.finalize", finalize]
        log = (tmp_path / f"worker-{name}.log").open("wb")
        workers[name] = (subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), log)
    try:
        for name, (proc, log) in workers.items():
            proc.wait(timeout=900)
            log.close()
            assert proc.returncode == 0, (tmp_path / f"worker-{name}.log").read_text()[-4000:]
    finally:
        for proc, _ in workers.values():
            if proc.poll() is None:
                proc.kill()
    trials = load(d).trials
    assert all(t.state.name == "COMPLETE" for t in trials), [(t.number, t.state.name) for t in trials]
    assert 4 <= len(trials) <= 5  # each worker finishes the trial it runs when the count is reached
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # none lost, none run twice
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    # 96 pairs at a global batch of 8 x 2 ranks: 6 steps a trial (one process would take 12).
    assert {t.user_attrs["result"]["global_step"] for t in trials} == {6}
    own = re.compile(r"hpo/trial-\d+/checkpoints/checkpoint-\d+(/rng_state_1\.pth)?$")
    runs = os.path.realpath(tmp_path / "runs")
    ran = collections.Counter()
    for name in workers:
        ranks = {r: json.loads((tmp_path / f"record-{name}" / f"rank{r}.json").read_text()) for r in (0, 1)}
        assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
        assert ranks[0]["storages"] and not ranks[1]["storages"]  # rank 1 never opened the study
        assert ranks[0]["storages"][0].startswith("postgresql")
        foreign = [w for w in ranks[1]["writes"] if not own.search(os.path.relpath(os.path.realpath(w[1]), runs))]
        assert foreign == []
        b0, b1 = ranks[0]["batches"], ranks[1]["batches"]
        assert len(b0) == len(b1) and len(b0) % 6 == 0 and b0
        for x, y in zip(b0, b1):
            assert not set(map(tuple, x)) & set(map(tuple, y))  # different shards of each batch
        ran[name] = len(b0) // 6
    finished = collections.Counter(t.user_attrs["worker"] for t in trials)
    assert sorted(ran.values()) == sorted(finished.values())  # rank 1 trained exactly the trials rank 0 ran
    assert (tmp_path / "runs" / "ddp" / "best" / "metrics.json").is_file()


def test_postgres_missing_fails_in_ci_and_skips_elsewhere(monkeypatch):
    """The two-worker test never silently falls back to SQLite: CI=true makes a missing server a failure."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no PostgreSQL server.*initdb failed"):
        postgres_unavailable("RuntimeError: initdb failed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server could be started here"):
        postgres_unavailable("RuntimeError: initdb failed")
