"""The training recipe (issue 20): the learning-rate schedule (train.lr_scheduler, train.warmup_steps)
on a real tiny run follows the chosen schedule, and length-grouped batches come in a shuffled order."""

from __future__ import annotations

import math

import pytest

from adaptmllm.config import ConfigError, TrainConfig


def _logged_rates(tc: TrainConfig, tmp_path) -> dict[int, float]:
    """Train a 2-layer tiny model for ``tc.max_steps`` steps on demo pairs; the learning rate logged at each step."""
    import torch
    from transformers import Seq2SeqTrainer

    from adaptmllm.data import demo
    from adaptmllm.config import TinyModelConfig
    from adaptmllm.modeling.model import build_tiny_model, build_tokenizer
    from adaptmllm.training.train import make_collator, tokenize_pairs, training_args

    src, tgt = demo.demo_splits("eng_Latn", "qaa_Latn", 64, seed=3)["train"]
    tok = build_tokenizer(tmp_path / "tok", src + tgt, 200, "eng_Latn", "qaa_Latn")
    model = build_tiny_model(TinyModelConfig(vocab_size=200, d_model=32, encoder_layers=1, decoder_layers=1,
                                             attention_heads=2, ffn_dim=64, pretrain=False), tok)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Seq2SeqTrainer(model=model, args=training_args(tc, tmp_path / "t", evaluate=False, progress=False),
                                 train_dataset=tokenize_pairs(tok, src, tgt, 32, 32), processing_class=tok,
                                 data_collator=make_collator(tok, model))
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    return {h["step"]: h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h}


def test_inverse_sqrt_schedule_with_warmup_steps(tmp_path):
    peak, warm = 1e-3, 4
    tc = TrainConfig(learning_rate=peak, lr_scheduler="inverse_sqrt", warmup_steps=warm, warmup_ratio=0.5,
                     max_steps=16, per_device_train_batch_size=4, logging_steps=1, precision="fp32")
    rates = _logged_rates(tc, tmp_path)
    # The rate logged at step s is the one its update used: warm-up to the peak over 4 steps (not the
    # ratio's 8), then peak * sqrt(4 / s), whatever the run's length.
    assert rates[2] == pytest.approx(peak * 1 / warm, rel=1e-6)
    assert rates[4] == pytest.approx(peak * 3 / warm, rel=1e-6)
    assert rates[5] == pytest.approx(peak, rel=1e-6)
    assert rates[16] == pytest.approx(peak * math.sqrt(warm / 15), rel=1e-6)
    assert rates[16] > peak / 2  # a linear decay would be near 0 at the last step


def test_default_schedule_stays_linear_over_the_warmup_ratio(tmp_path):
    tc = TrainConfig(learning_rate=1e-3, warmup_ratio=0.25, max_steps=8, per_device_train_batch_size=4,
                     logging_steps=1, precision="fp32")
    rates = _logged_rates(tc, tmp_path)
    assert max(rates.values()) == pytest.approx(1e-3)
    assert rates[8] == pytest.approx(1e-3 * 1 / 6, rel=1e-6)  # linear: 1/6 of the way left after warm-up


@pytest.mark.parametrize("field,value,fix", [("lr_scheduler", "exponential", "not one of"),
                                             ("warmup_steps", -1, "must be >= 0")])
def test_bad_schedule_settings_name_the_field(field, value, fix):
    with pytest.raises(ConfigError, match=f"train.{field}.*{fix}"):
        TrainConfig(**{field: value})


def test_length_grouped_batches_come_in_a_shuffled_order(tmp_path):
    """The Trainer's sampler: batches of similar lengths, but not transformers' sweep from the longest to
    the shortest batch every mega-batch (which made training drift periodically)."""
    import random

    from datasets import Dataset
    from transformers import Seq2SeqTrainer

    from adaptmllm.config import TinyModelConfig
    from adaptmllm.modeling.model import build_tiny_model, build_tokenizer
    from adaptmllm.training.resilience import resilient_trainer_class
    from adaptmllm.training.train import training_args

    tok = build_tokenizer(tmp_path / "tok", ["a b c d e f g h i j k l m n o p"] * 20, 100, "eng_Latn", "gle_Latn")
    model = build_tiny_model(TinyModelConfig(vocab_size=100, d_model=16, encoder_layers=1, decoder_layers=1,
                                             attention_heads=2, ffn_dim=32, pretrain=False), tok)
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(643)]
    ds = Dataset.from_dict({"input_ids": [[5] * n for n in lengths], "labels": [[5] * n for n in lengths]})
    tc = TrainConfig(per_device_train_batch_size=4, group_by_length=True, precision="fp32")
    cls = resilient_trainer_class(Seq2SeqTrainer)
    trainer = cls(model=model, args=training_args(tc, tmp_path / "t", evaluate=False, progress=False),
                  train_dataset=ds, processing_class=tok)
    sampler = trainer._get_train_sampler()
    order = list(sampler)
    assert sorted(order) == list(range(643))  # every pair once
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    longest = [max(lengths[i] for i in b) for b in batches]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches[:-1]]
    assert sum(spread) / len(spread) < 3  # still grouped by length (random batches: ~30)
    assert longest[0] == max(lengths) and len(batches[-1]) == 3  # longest first, the short batch last
    mega = longest[:40]  # one mega-batch (40 batches here): once sorted longest to shortest
    falls = sum(a >= b for a, b in zip(mega, mega[1:]))
    assert falls < 30, mega  # a sorted sweep has 39 of 39
    sampler.set_epoch(1)
    again = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == order and again != order  # a function of (seed, epoch) only


def test_labels_language_codes_and_padding_enter_the_loss_as_in_a_plain_loop(tmp_path):
    """adaptmllm's batches are those of transformers' DataCollatorForSeq2Seq with the decoder inputs
    shifted right (shift_tokens_right), the labels start with the target's language code, and padding
    (-100 in the labels, masked in the encoder) changes neither the loss nor its label-smoothed form."""
    import torch
    from transformers import DataCollatorForSeq2Seq
    from transformers.models.m2m_100.modeling_m2m_100 import shift_tokens_right
    from transformers.trainer_pt_utils import LabelSmoother

    from adaptmllm.data import demo
    from adaptmllm.config import TinyModelConfig
    from adaptmllm.modeling.model import build_tiny_model, build_tokenizer
    from adaptmllm.training.train import make_collator, tokenize_pairs

    src, tgt = demo.demo_splits("eng_Latn", "qaa_Latn", 64, seed=3)["train"]
    tok = build_tokenizer(tmp_path / "tok", src + tgt, 200, "eng_Latn", "qaa_Latn")
    model = build_tiny_model(TinyModelConfig(vocab_size=200, d_model=32, encoder_layers=1, decoder_layers=1,
                                             attention_heads=2, ffn_dim=64, pretrain=False), tok).eval()
    ds = tokenize_pairs(tok, src[:6], tgt[:6], 32, 32)
    rows = [ds[i] for i in range(len(ds))]
    ours = make_collator(tok, model)(rows)
    plain = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100)(rows)
    plain["decoder_input_ids"] = shift_tokens_right(plain["labels"], model.config.pad_token_id,
                                                    model.config.decoder_start_token_id)
    assert set(ours) == set(plain) and all(torch.equal(ours[k], plain[k]) for k in ours)
    assert (ours["labels"][:, 0] == tok.convert_tokens_to_ids("qaa_Latn")).all()
    assert (ours["input_ids"][:, 0] == tok.convert_tokens_to_ids("eng_Latn")).all()
    assert (ours["decoder_input_ids"][:, 0] == tok.eos_token_id).all()
    assert (ours["labels"] == -100).any()  # the batch has padding

    wide = make_collator(tok, model)
    wide.pad_to_multiple_of = 64  # twice as long as the longest pair: much more padding
    padded = wide(rows)
    assert padded["labels"].shape[1] == 64 and padded["input_ids"].shape[1] == 64
    smooth = LabelSmoother(epsilon=0.1)
    with torch.no_grad():
        a, b = model(**ours), model(**padded)
        assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-5)
        assert float(smooth(a, ours["labels"])) == pytest.approx(float(smooth(b, padded["labels"])), rel=1e-5)


def test_resume_may_change_the_runs_length_only(tmp_path):
    """A resumed run may end earlier or later (train.num_train_epochs / max_steps: how a killed long run
    is finished and scored); any other difference is still refused, naming the field."""
    from adaptmllm.config import config_from_dict, load_config
    from adaptmllm.runs.run_folder import RunFolderError, prepare_run_dir

    base = {"name": "x", "runs_dir": str(tmp_path), "train": {"num_train_epochs": 30}}
    run_dir = prepare_run_dir(config_from_dict(base))
    (run_dir / "checkpoints").mkdir()
    shorter = {**base, "train": {"num_train_epochs": 4, "max_steps": 900, "resume": True}}
    prepare_run_dir(config_from_dict(shorter))
    saved = load_config(run_dir / "config.yaml").train
    assert (saved.num_train_epochs, saved.max_steps) == (4, 900)  # config.yaml says what the run did
    with pytest.raises(RunFolderError, match=r"differs in train.learning_rate"):
        prepare_run_dir(config_from_dict({**base, "train": {"num_train_epochs": 4, "resume": True,
                                                             "learning_rate": 1e-3}}))
