"""DeepSpeed ZeRO: NLLB sizes, the memory planner, every plan against the Trainer's arguments, and
real single-process ZeRO-2 and ZeRO-3 fine-tuning of the tiny model on CPU."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys

import pytest

from adaptmllm.config import ConfigError, DeepSpeedConfig, TrainConfig, config_from_dict
from adaptmllm.training.memory_plan import (ModelSize, ZeroPlan, activation_gib, candidate_plans, deepspeed_config,
                                            nllb_architecture, nllb_config, plan_memory)
from adaptmllm.training.deepspeed import apply_plan_to_model
from adaptmllm.hardware import ensure_distributed_env

from conftest import REPO, free_port

pytest.importorskip("deepspeed")

SIZE_3B = ModelSize.from_config(nllb_config("3.3B"))
SIZE_600M = ModelSize.from_config(nllb_config("600M"))


def _small_model(**overrides):
    from transformers import M2M100ForConditionalGeneration

    kw = dict(vocab_size=500, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_layers=2, decoder_layers=2,
              encoder_attention_heads=4, decoder_attention_heads=4, max_position_embeddings=64)
    kw.update(overrides)
    return M2M100ForConditionalGeneration(nllb_config("600M", **kw))


@pytest.mark.parametrize("name, billions", [("600M", 0.615), ("facebook/nllb-200-distilled-1.3B", 1.371),
                                            ("facebook/nllb-200-3.3B", 3.345)])
def test_nllb_sizes_match_the_published_parameter_counts(name, billions):
    size = ModelSize.from_config(nllb_config(name))
    assert size.total_params / 1e9 == pytest.approx(billions, abs=0.001)
    assert size.vocab_size == 256_206 and size.largest_layer_params == size.embedding_params


def test_analytic_counts_equal_a_built_model():
    model = _small_model(decoder_layers=3)
    assert ModelSize.from_config(model.config) == ModelSize.from_model(model)


def test_unknown_architecture_lists_the_known_ones():
    assert nllb_architecture("models/nllb-200-3.3B")["d_model"] == 2048
    with pytest.raises(ValueError, match="facebook/nllb-200-3.3B"):
        nllb_architecture("nllb-7B")


def test_checkpointing_and_precision_change_the_activation_estimate():
    full = activation_gib(SIZE_3B, 16, 128, 128)
    assert activation_gib(SIZE_3B, 16, 128, 128, checkpointing=True) < full / 2
    assert activation_gib(SIZE_3B, 16, 128, 128, act_bytes=4) > full
    assert activation_gib(SIZE_3B, 32, 128, 128) == pytest.approx(2 * full, rel=1e-6)


@pytest.mark.parametrize("size, gpu, ds, expect", [
    # one 80 GB GPU: plain (bf16 AMP) full fine-tuning of 3.3B fits at batch 16 x 128 tokens
    (SIZE_3B, 79.2, {}, (0, False, False, False)),
    # an A100-40GB, as in adaptMLLM's run: ZeRO-2 with the optimizer states in CPU memory
    (SIZE_3B, 39.4, {}, (2, True, False, False)),
    # a 16 GB GPU: ZeRO-2 offload and gradient checkpointing
    (SIZE_3B, 15.8, {}, (2, True, False, True)),
    (SIZE_600M, 22.0, {}, (0, False, False, False)),  # 600M on a 24 GB GPU: plain
    # overrides restrict the planner
    (SIZE_3B, 79.2, {"stage": "3"}, (3, False, False, False)),
    (SIZE_3B, 39.4, {"stage": "3"}, (3, True, False, False)),
    (SIZE_3B, 15.8, {"offload_params": True}, (3, True, True, True)),
    (SIZE_3B, 79.2, {"stage": "2", "offload_optimizer": True}, (2, True, False, False)),
])
def test_planner_picks_the_fastest_plan_that_fits(size, gpu, ds, expect):
    plan = plan_memory(size, DeepSpeedConfig(gpu_memory_gib=gpu, **ds), 16, 128, 128, "bf16", cpu_memory=120)
    assert (plan.stage, plan.offload_optimizer, plan.offload_params, plan.gradient_checkpointing) == expect
    assert plan.fits and plan.gpu_need_gib <= gpu
    assert "\n" not in plan.explanation and plan.name in plan.explanation and f"{gpu:.1f} GiB" in plan.explanation
    assert (plan.deepspeed_config() is None) == (plan.stage == 0)


def test_planner_reads_the_gpu_memory_field_and_explains_a_rejected_faster_plan():
    plan = plan_memory(SIZE_3B, DeepSpeedConfig(gpu_memory_gib=39.4), 16, 128, 128, "bf16", cpu_memory=120)
    assert "would need" in plan.explanation and "CPU RAM" in plan.explanation


def test_no_plan_fits_names_the_fields_to_change():
    with pytest.raises(ConfigError, match="train.per_device_train_batch_size") as e:
        plan_memory(SIZE_3B, DeepSpeedConfig(gpu_memory_gib=4), 64, 128, 128, "bf16", cpu_memory=32)
    assert "model.lora.enabled" in str(e.value)


def test_without_a_gpu_auto_means_no_deepspeed():
    plan = plan_memory(SIZE_600M, DeepSpeedConfig(), 2, 32, 32, "fp32", gpu_memory=None)
    assert plan.stage == 0 and not plan.uses_deepspeed and "no GPU" in plan.explanation


def test_lora_is_planned_without_deepspeed():
    lora_size = ModelSize(SIZE_3B.total_params, 10_000_000, *[getattr(SIZE_3B, f) for f in (
        "largest_layer_params", "embedding_params", "encoder_params", "decoder_params", "d_model", "encoder_layers",
        "decoder_layers", "attention_heads", "ffn_dim", "vocab_size")])
    plan = plan_memory(lora_size, DeepSpeedConfig(gpu_memory_gib=15.8), 16, 128, 128, "bf16", lora=True,
                       weight_bytes=2.0)
    assert plan.stage == 0 and plan.gradient_checkpointing and plan.fits


@pytest.mark.parametrize("ds, field", [
    ({"stage": "4"}, "train.deepspeed.stage"),
    ({"stage": "2", "offload_params": True}, "train.deepspeed.offload_params"),
    ({"stage": "off", "offload_optimizer": True}, "train.deepspeed.stage"),
    ({"gpu_memory_gib": 0}, "train.deepspeed.gpu_memory_gib"),
    ({"config_file": "/no/such/ds.json"}, "train.deepspeed.config_file"),
])
def test_deepspeed_config_errors_name_the_field(ds, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict({"train": {"deepspeed": ds}})


def test_stage_accepts_yaml_integers():
    assert config_from_dict({"train": {"deepspeed": {"stage": 3}}}).train.deepspeed.stage == "3"


@pytest.fixture()
def _no_global_deepspeed():
    """Creating TrainingArguments with a DeepSpeed config sets global state; undo it after the test."""
    yield
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)


EMITTABLE = sorted({(s, o, p) for s, o, p, _ in candidate_plans(DeepSpeedConfig(), None) if s})


@pytest.mark.parametrize("stage, offload_optimizer, offload_params", EMITTABLE)
def test_every_plan_validates_against_the_trainer_arguments(stage, offload_optimizer, offload_params, tmp_path,
                                                            _no_global_deepspeed):
    """Each ZeRO config the planner can emit, filled by the Trainer's HfTrainerDeepSpeedConfig from the
    arguments of :func:`training_args`, passes DeepSpeed's own config validation in every precision."""
    from deepspeed.runtime.config import DeepSpeedConfig as DSConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from adaptmllm.training.train import training_args

    model = _small_model()
    tc = TrainConfig(per_device_train_batch_size=8, gradient_accumulation_steps=2, precision="fp32",
                     learning_rate=3e-4, weight_decay=0.01, max_grad_norm=0.5, warmup_ratio=0.1)
    plan = ZeroPlan(stage, offload_optimizer, offload_params, precision="fp32")
    args = training_args(tc, tmp_path, evaluate=False, plan=plan)
    assert args.deepspeed == plan.deepspeed_config() and args.hf_deepspeed_config.is_zero3() == (stage == 3)
    for precision in ("fp32", "bf16", "fp16"):
        a = copy.copy(args)  # the Trainer's arguments as they would be on a GPU with this precision
        a.bf16, a.fp16 = precision == "bf16", precision == "fp16"
        hf = HfTrainerDeepSpeedConfig(plan.deepspeed_config())
        hf.trainer_config_process(a)
        hf.trainer_config_finalize(a, model, num_training_steps=100)
        assert "auto" not in json.dumps(hf.config)
        ds = DSConfig(hf.config)
        assert ds.zero_optimization_stage == stage
        assert (ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps, ds.train_batch_size) == (8, 2, 16)
        assert ds.gradient_clipping == 0.5
        assert ds.bfloat16_config.enabled == (precision == "bf16") and ds.float16_config.enabled == (precision == "fp16")
        zero = ds.zero_config
        assert (zero.offload_optimizer is not None and zero.offload_optimizer.device == "cpu") == offload_optimizer
        assert (zero.offload_param is not None and zero.offload_param.device == "cpu") == offload_params
        if offload_optimizer:  # DeepSpeed's CPU Adam, with the Trainer's hyperparameters
            assert hf.config["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                                                        "weight_decay": 0.01}
        if stage == 3:
            assert zero.gather_16bit_weights_on_model_save


def test_deepspeed_config_rejects_bad_combinations():
    with pytest.raises(ValueError):
        deepspeed_config(1)
    with pytest.raises(ValueError):
        deepspeed_config(2, offload_params=True)


def test_layerdrop_is_turned_off_under_zero3_only(caplog):
    model = _small_model(encoder_layerdrop=0.1, decoder_layerdrop=0.05)
    apply_plan_to_model(model, ZeroPlan(stage=2))
    assert model.model.encoder.layerdrop == 0.1
    with caplog.at_level(logging.WARNING, logger="adaptmllm.training.deepspeed"):
        apply_plan_to_model(model, ZeroPlan(stage=3))
    assert model.config.encoder_layerdrop == model.config.decoder_layerdrop == 0.0
    assert model.model.encoder.layerdrop == model.model.decoder.layerdrop == 0.0
    assert "LayerDrop" in caplog.text


def test_single_process_environment_is_filled_only_where_missing(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MASTER_PORT", "29555")
    done = ensure_distributed_env()
    assert os.environ["WORLD_SIZE"] == "1" and os.environ["MASTER_PORT"] == "29555" and "MASTER_PORT" not in done
    assert ensure_distributed_env() == {}


# One process runs ZeRO-2 then ZeRO-3 fine-tuning of the demo base through adaptmllm's own fine_tune
# (forced stages, plain-Trainer baseline dev score, per-epoch dev generation) and prints what it saw.
_WORKER = r"""
import importlib, json, sys
# The CPU accelerator's shared-memory all-reduce op is only for several ranks on one host; skip its
# ~2 minute first-time compilation in this single-process test.
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
from adaptmllm.config import config_from_dict
from adaptmllm.data.pairs import prepare_data
from adaptmllm.training.deepspeed import consolidated_model
from adaptmllm.training.setup import prepare_model
from adaptmllm.training.train import fine_tune

out = {}
for stage in ("2", "3"):
    cfg = config_from_dict({"name": "z", "data": {"demo_train_pairs": 128, "dev_size": 8, "test_size": 8},
        "model": {"max_source_length": 32, "max_target_length": 32},
        "train": {"learning_rate": 2e-3, "num_train_epochs": 1, "per_device_train_batch_size": 16, "logging_steps": 1,
                  "warmup_ratio": 0.0, "eval_max_pairs": 8, "deepspeed": {"stage": stage}}})
    prepared = prepare_data(cfg.data)
    b = prepare_model(cfg, progress=False)
    b.model.config.encoder_layerdrop = 0.1
    b.model.model.encoder.layerdrop = 0.1
    trainer, res = fine_tune(b.model, b.tokenizer, cfg.train, prepared.train.src, prepared.train.tgt,
                             prepared.dev.src, prepared.dev.tgt, sys.argv[1] + "/run" + stage, cfg.data.tgt_lang,
                             32, 32, progress=False)
    engine = type(trainer.model_wrapped).__name__
    model = consolidated_model(trainer)
    out[stage] = {"engine": engine, "losses": [h["loss"] for h in res.history if "loss" in h],
                  "evals": [h["eval_chrf"] for h in res.history if "eval_chrf" in h], "plan": res.memory_plan,
                  "plain": not any(hasattr(p, "ds_id") for p in model.parameters()),
                  "layerdrop": model.model.encoder.layerdrop, "params": sum(p.numel() for p in model.parameters())}
print("RESULT " + json.dumps(out))
"""


def test_zero2_and_zero3_fine_tuning_really_runs_on_cpu(tmp_path):
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "ADAPTMLLM_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}  # a tiny model: one thread is faster, and kinder to a shared machine
    proc = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT "):])
    for stage in ("2", "3"):
        r = out[stage]
        assert r["engine"] == "DeepSpeedEngine" and r["plan"]["zero_stage"] == int(stage)
        losses = r["losses"]
        assert len(losses) >= 6 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
        assert len(r["evals"]) == 2  # baseline (plain Trainer) + epoch 1 (under DeepSpeed)
        assert r["plain"] and r["params"] > 0
    assert out["3"]["layerdrop"] == 0.0  # LayerDrop off under ZeRO-3


def test_ranks_other_than_0_train_but_write_nothing(tmp_path, monkeypatch):
    from adaptmllm.runs.pipeline import run

    monkeypatch.setenv("RANK", "1")
    cfg = config_from_dict({"name": "rank1", "runs_dir": str(tmp_path / "runs"),
                            "data": {"demo_train_pairs": 32},
                            "model": {"max_source_length": 32, "max_target_length": 32},
                            "train": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "eval_max_pairs": 4},
                            "green": {"enabled": False}})
    assert run(cfg, progress=False) is None  # trained (its Trainer shares checkpoints/ with rank 0's) ...
    run_dir = tmp_path / "runs" / "rank1"
    for name in ("config.yaml", "metrics.json", "report.md", "model", "data", "run.log"):
        assert not (run_dir / name).exists(), name  # ... but wrote nothing of rank 0's
