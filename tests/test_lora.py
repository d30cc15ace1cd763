"""LoRA through PEFT: the tiny model trains, merges into a plain checkpoint with the adapter model's
outputs, runs through the whole pipeline; QLoRA fails clearly without a GPU; freezing."""

from __future__ import annotations

import json

import pytest

from adaptmllm.config import ConfigError, FreezeConfig, LoraConfig, config_from_dict

from conftest import tiny_dict

pytest.importorskip("peft")


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models here train faster on one thread (and leave the other core to the rest)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_lora_trains_and_merges_into_a_checkpoint_with_the_same_outputs(tiny_cfg, tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer

    from adaptmllm.data import demo
    from adaptmllm.config import TrainConfig
    from adaptmllm.modeling.lora import is_peft_model, save_plain_model, trainable_parameters
    from adaptmllm.modeling.model import forced_bos_token_id
    from adaptmllm.training.setup import prepare_model
    from adaptmllm.training.train import make_collator, tokenize_pairs, training_args

    tiny_cfg.model.lora = LoraConfig(enabled=True, r=8, alpha=16, dropout=0.0)
    bundle = prepare_model(tiny_cfg, progress=False)
    model, tok = bundle.model, bundle.tokenizer
    assert is_peft_model(model)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < 0.25 * total
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    for target in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
        assert any(f"{target}.lora_A" in n for n in names), target

    src, tgt = demo.demo_splits("eng_Latn", tiny_cfg.data.tgt_lang, 96, seed=3)["train"]  # in-domain pairs
    ds = tokenize_pairs(tok, src, tgt, 32, 32)
    tc = TrainConfig(learning_rate=1e-2, max_steps=8, per_device_train_batch_size=12, logging_steps=1,
                     warmup_ratio=0.0, label_smoothing=0.0, precision="fp32")
    collator = make_collator(tok, model)
    trainer = Seq2SeqTrainer(model=model, args=training_args(tc, tmp_path / "t", evaluate=False, progress=False),
                             train_dataset=ds, processing_class=tok, data_collator=collator)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses

    model.eval()
    batch = collator([ds[i] for i in range(4)])
    gen = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=1, max_new_tokens=12,
               forced_bos_token_id=forced_bos_token_id(tok, tiny_cfg.data.tgt_lang))
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
        adapted_ids = model.generate(**gen)
    assert not torch.allclose(adapted, base, atol=1e-3)  # the adapters learned something

    folder = save_plain_model(model, tmp_path / "model")
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    plain = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        merged = plain(**batch).logits
        merged_ids = plain.generate(**gen)
    assert torch.allclose(merged, adapted, atol=1e-4)
    assert torch.equal(merged_ids, adapted_ids)


def test_lora_run_keeps_a_merged_plain_model(tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from adaptmllm.data import demo
    from adaptmllm.training.demo_base import SHIPPED_DEMO_BASE
    from adaptmllm.runs.pipeline import run

    splits = demo.demo_splits("eng_Latn", "qaa_Latn", 64, seed=5)  # a small corpus of our own
    for name, n in (("train", 64), ("dev", 8), ("test", 8)):
        src, tgt = splits[name]
        (tmp_path / f"{name}.tsv").write_text("en\tqaa\n" + "".join(f"{s}\t{t}\n" for s, t in zip(src[:n], tgt[:n])))
    d = tiny_dict(tmp_path / "runs", "lora")
    d["data"].update(train=str(tmp_path / "train.tsv"), dev=str(tmp_path / "dev.tsv"), test=str(tmp_path / "test.tsv"),
                     src_column="en", tgt_column="qaa")
    # the shipped demo base as a local "pretrained" folder (the load_pretrained path)
    d["model"].update(name_or_path=str(SHIPPED_DEMO_BASE), max_source_length=32, max_target_length=32,
                      lora={"enabled": True, "r": 8, "alpha": 16})
    d["train"].update(num_train_epochs=1, eval_max_pairs=8, learning_rate=1e-2)
    d["eval"] = {"num_beams": 1, "batch_size": 16, "max_new_tokens": 16, "bootstrap_samples": 100,
                 "score_baseline": False}
    d["green"] = {"enabled": False}
    result = run(config_from_dict(d), progress=False)
    assert not (result.model_dir / "adapter_config.json").exists()
    model = AutoModelForSeq2SeqLM.from_pretrained(result.model_dir)
    assert not any("lora" in n for n, _ in model.named_parameters())
    plan = json.loads((result.run_dir / "metrics.json").read_text())["train"]["memory_plan"]
    assert plan["zero_stage"] == 0 and "memory plan" in plan["explanation"]
    # The kept model is the one the dev scores pick (chrF++: higher is better; epoch 0 = the baseline)...
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    dev = metrics["dev"]
    assert dev["metric"] == "chrf" and dev["best"] is not None
    wins = dev["baseline"] is None or dev["best"] > dev["baseline"]
    assert metrics["kept"] == ("finetuned" if wins else "baseline"), dev
    # ... and model/ holds it: the base's weights when the baseline is kept, merged LoRA weights otherwise.
    base = AutoModelForSeq2SeqLM.from_pretrained(SHIPPED_DEMO_BASE)
    same = all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), model.state_dict().values()))
    assert same == (metrics["kept"] == "baseline")


def test_qlora_without_a_gpu_fails_clearly_before_loading(tiny_cfg):
    import torch

    from adaptmllm.modeling.model import ModelError
    from adaptmllm.training.setup import prepare_model

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tiny_cfg.model.lora = LoraConfig(enabled=True, load_in_4bit=True)
    with pytest.raises(ModelError, match="model.lora.load_in_4bit") as e:
        prepare_model(tiny_cfg, progress=False)
    assert "CUDA GPU" in str(e.value)


@pytest.mark.parametrize("data, field", [
    ({"model": {"lora": {"r": 0}}}, "model.lora.r"),
    ({"model": {"lora": {"dropout": 1.0}}}, "model.lora.dropout"),
    ({"model": {"lora": {"load_in_4bit": True}}}, "model.lora.load_in_4bit"),
    ({"model": {"lora": {"target_modules": []}}}, "model.lora.target_modules"),
    ({"model": {"lora": {"enabled": True}, "freeze": {"encoder": True}}}, "model.freeze"),
    ({"model": {"freeze": {"train_top_layers": -1}}}, "model.freeze.train_top_layers"),
])
def test_lora_and_freeze_errors_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(data)


def test_target_modules_accept_a_comma_list():
    cfg = config_from_dict({"model": {"lora": {"target_modules": "q_proj, v_proj"}}})
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]


def test_freezing_embeddings_encoder_and_lower_layers():
    from transformers import M2M100ForConditionalGeneration

    from adaptmllm.training.memory_plan import nllb_config
    from adaptmllm.modeling.lora import freeze_layers

    def fresh():
        return M2M100ForConditionalGeneration(nllb_config(
            "600M", vocab_size=300, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_layers=3,
            decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4, max_position_embeddings=64))

    m = fresh()
    assert freeze_layers(m, FreezeConfig()) == 0
    n = freeze_layers(m, FreezeConfig(embeddings=True))
    assert n == 300 * 32 and not m.model.shared.weight.requires_grad and not m.lm_head.weight.requires_grad
    assert m.model.encoder.layers[0].fc1.weight.requires_grad

    m = fresh()
    freeze_layers(m, FreezeConfig(encoder=True))
    assert not any(p.requires_grad for p in m.model.encoder.layers.parameters())
    assert not m.model.encoder.layer_norm.weight.requires_grad
    assert m.model.shared.weight.requires_grad and all(p.requires_grad for p in m.model.decoder.layers.parameters())

    m = fresh()
    freeze_layers(m, FreezeConfig(train_top_layers=1))
    for stack in (m.model.encoder, m.model.decoder):
        assert not any(p.requires_grad for layer in stack.layers[:2] for p in layer.parameters())
        assert all(p.requires_grad for p in stack.layers[2].parameters())
