"""Faults injected into real (tiny) training runs: kill -9 mid-epoch then --train.resume (the final
metrics equal an uninterrupted run's), a planted Hugging Face token that must appear in no file a
run writes, a GPU out-of-memory error (a stand-in for the allocator raises torch.OutOfMemoryError
above a batch size) with and without --train.auto_batch, and a disk that fills while a checkpoint
is saved. The cheap cases are in tests/test_bad_input.py; the summary is docs/reliability.md."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_dict

SAVE_STEPS = 5

TRAINER = """
import hashlib, json, os, signal, sys
sys.path.insert(0, sys.argv[4])
from transformers import TrainerCallback
from conftest import tiny_dict
from adaptmllm.config import config_from_dict
from adaptmllm.data.pairs import prepare_data
from adaptmllm.training.setup import prepare_model
from adaptmllm.training.train import fine_tune

out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup, no atexit

d = tiny_dict(out + "/runs", "r")
d["data"]["demo_train_pairs"] = 200
d["train"].update(num_train_epochs=2, eval_max_pairs=20, save_steps=%d, save_total_limit=2, resume=resume,
                  logging_steps=1)  # every step's own loss (a logged loss averages the steps since the last log)
cfg = config_from_dict(d)
prep = prepare_data(cfg.data)
b = prepare_model(cfg, prep.train.src + prep.train.tgt, tokenizer_dir=out + "/tok", progress=False)
trainer, r = fine_tune(b.model, b.tokenizer, cfg.train, prep.train.src, prep.train.tgt, prep.dev.src, prep.dev.tgt,
                       out + "/checkpoints", cfg.data.tgt_lang, max_source_length=64, max_target_length=48,
                       progress=False, callbacks=[Kill()], score_baseline_dev=False)
weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())).hexdigest()
print(json.dumps({"global_step": r.global_step, "best_metric": r.best_metric, "resumed_from": r.resumed_from,
                  "history": r.history, "weights": weights}))
""" % SAVE_STEPS


def _train(out: Path, kill_at: int = 0, resume: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-c", TRAINER, str(out), str(kill_at), "resume" if resume else "new",
                           str(Path(__file__).parent)], env=env, capture_output=True, text=True, timeout=900)


def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    ref = _train(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_r = json.loads(ref.stdout.strip().splitlines()[-1])
    steps_per_epoch = ref_r["global_step"] // 2
    kill_at = next(s for s in range(steps_per_epoch + 1, 2 * steps_per_epoch) if s % SAVE_STEPS == 2)

    killed = _train(tmp_path / "cut", kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpts = tmp_path / "cut" / "checkpoints"
    newest = max(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*"))
    assert newest == kill_at - 2 and newest % steps_per_epoch != 0  # a mid-epoch checkpoint, from save_steps

    done = _train(tmp_path / "cut", resume=True)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["resumed_from"].endswith(f"checkpoint-{newest}")
    assert r["global_step"] == ref_r["global_step"]
    # The same seed; weights, optimizer, scheduler, RNG and data position restored from the checkpoint.
    ref_loss, cut_loss = _losses(ref_r["history"]), _losses(r["history"])
    assert cut_loss.keys() == ref_loss.keys() and len(ref_loss) == ref_r["global_step"]
    diff = {s: abs(cut_loss[s] - ref_loss[s]) for s in ref_loss if s > newest}
    evals = lambda h: [(e["step"], e["eval_bleu"], e["eval_chrf"], e["eval_ter"]) for e in h if "eval_chrf" in e]
    assert evals(r["history"]) == evals(ref_r["history"]) and len(evals(r["history"])) == 2, diff
    assert r["best_metric"] == ref_r["best_metric"]
    assert r["weights"] == ref_r["weights"], diff  # bit-identical final weights
    assert max(diff.values()) <= 1e-4, diff  # the losses of the steps after the resume
    print(f"resumed at step {newest} of {r['global_step']}; max |loss difference| after it: {max(diff.values()):.1e}")


def _losses(history: list) -> dict:
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def _bundle(tmp_path, **train):
    from adaptmllm.config import config_from_dict
    from adaptmllm.data.pairs import prepare_data
    from adaptmllm.training.setup import prepare_model

    d = tiny_dict(tmp_path / "runs", "oom")
    d["data"]["demo_train_pairs"] = 64
    d["train"].update({"num_train_epochs": 1, "eval_max_pairs": 8, "per_device_train_batch_size": 16, **train})
    cfg = config_from_dict(d)
    prepared = prepare_data(cfg.data)
    bundle = prepare_model(cfg, prepared.train.src + prepared.train.tgt, tokenizer_dir=tmp_path / "tok",
                           progress=False)
    return cfg, prepared, bundle.model, bundle.tokenizer


def _allocator_double(model, max_batch: int) -> None:
    """A stand-in for a GPU allocator that cannot hold more than ``max_batch`` sequences in training."""
    import functools

    import torch

    forward = model.forward

    @functools.wraps(forward)  # keeps forward's signature: the Trainer picks dataset columns by it
    def limited(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if model.training and ids is not None and ids.shape[0] > max_batch:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {ids.shape[0] * 64} MiB "
                                         f"(test double: batch > {max_batch})")
        return forward(*args, **kwargs)

    model.forward = limited


def _fine_tune(cfg, prepared, model, tokenizer, out):
    from adaptmllm.training.train import fine_tune

    return fine_tune(model, tokenizer, cfg.train, prepared.train.src, prepared.train.tgt, prepared.dev.src,
                     prepared.dev.tgt, out, cfg.data.tgt_lang, max_source_length=32, max_target_length=32,
                     progress=False, score_baseline_dev=False)


def test_out_of_memory_proposes_the_next_plan_or_auto_batch_retries(tmp_path):
    from adaptmllm.training.resilience import TrainingOutOfMemoryError

    cfg, prepared, model, tok = _bundle(tmp_path)
    _allocator_double(model, 4)
    with pytest.raises(TrainingOutOfMemoryError) as info:
        _fine_tune(cfg, prepared, model, tok, tmp_path / "ck1")
    msg = str(info.value)
    for words in ("out of GPU memory while training", "--train.per_device_train_batch_size 8 "
                  "--train.gradient_accumulation_steps 2", "--train.auto_batch true", "--train.gradient_checkpointing true",
                  "--train.deepspeed.stage 3", "--model.lora.enabled true"):
        assert words in msg

    cfg, prepared, model, tok = _bundle(tmp_path, auto_batch=True)
    _allocator_double(model, 4)
    trainer, result = _fine_tune(cfg, prepared, model, tok, tmp_path / "ck2")
    assert [(r["per_device_train_batch_size"], r["gradient_accumulation_steps"]) for r in result.auto_batch] == \
        [(16, 1), (8, 2)]
    assert result.batch["per_device_train_batch_size"] == 4 and result.batch["gradient_accumulation_steps"] == 4
    assert result.global_step == -(-len(prepared.train) // 16)  # the same effective batch: the same steps
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses and all(x == x for x in losses)  # trained, finite


def test_disk_full_while_saving_keeps_the_last_checkpoint_and_resumes(tmp_path, monkeypatch):
    from transformers import Trainer

    from adaptmllm.training.resilience import DiskFullError, check_checkpoint

    cfg, prepared, model, tok = _bundle(tmp_path, save_steps=2, per_device_train_batch_size=8)
    real = Trainer._save_optimizer_and_scheduler

    def full_disk(self, output_dir):
        if self.state.global_step >= 4:  # the weights of checkpoint-4 are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full_disk)
    out = tmp_path / "ck"
    with pytest.raises(DiskFullError, match="checkpoint-2 is kept"):
        _fine_tune(cfg, prepared, model, tok, out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2"]
    check_checkpoint(out / "checkpoint-2")

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", real)  # space freed: resume
    cfg.train.resume = True
    _, result = _fine_tune(cfg, prepared, model, tok, out)
    assert result.resumed_from.endswith("checkpoint-2") and result.global_step == -(-len(prepared.train) // 8)


ANNOTATOR = """
import sys
from adaptmllm.evaluation.human import HumanEvalStore

items = [(i, s, f"source {i}", f"{s} {i}") for i in range(200) for s in ("baseline", "finetuned")]
store = HumanEvalStore(sys.argv[1], items)
while True:
    item = store.next_item("ann")
    store.rate("ann", item.id, 4)
    print(item.id, flush=True)  # after the commit: this rating is saved
"""


def test_human_evaluation_database_survives_kill_9(tmp_path):
    import signal
    import sqlite3
    import time

    from adaptmllm.evaluation.human import HumanEvalStore

    db = tmp_path / "human_eval.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", ANNOTATOR, str(db)], stdout=subprocess.PIPE, text=True)
    saved = []
    deadline = time.time() + 120
    while len(saved) < 30 and time.time() < deadline:
        saved.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)  # mid-write: the next rating's transaction may be open
    proc.wait()
    assert len(saved) == 30
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    items = [(i, s, f"source {i}", f"{s} {i}") for i in range(200) for s in ("baseline", "finetuned")]
    store = HumanEvalStore(db, items)
    rated = store.rated_ids("ann")
    assert set(saved) <= rated and len(rated) <= len(saved) + 1  # every confirmed rating kept, at most one more
    assert store.next_item("ann").id not in rated  # the annotator resumes where they were


def test_temporary_env_puts_back_what_was_there(monkeypatch):
    """adaptmllm.io.temporary_env (HPO trials, tests): set variables are restored, unset ones unset again,
    also when the block raises, and names in ``restore`` that the block sets are undone."""
    import os

    from adaptmllm.io import temporary_env

    monkeypatch.setenv("ADAPTMLLM_T_SET", "before")
    monkeypatch.delenv("ADAPTMLLM_T_UNSET", raising=False)
    monkeypatch.delenv("ADAPTMLLM_T_LEAK", raising=False)
    with pytest.raises(RuntimeError):
        with temporary_env({"ADAPTMLLM_T_SET": "during", "ADAPTMLLM_T_UNSET": "during"}, restore=["ADAPTMLLM_T_LEAK"]):
            assert os.environ["ADAPTMLLM_T_SET"] == os.environ["ADAPTMLLM_T_UNSET"] == "during"
            os.environ["ADAPTMLLM_T_LEAK"] = "set inside"
            raise RuntimeError("boom")
    assert os.environ["ADAPTMLLM_T_SET"] == "before"
    assert "ADAPTMLLM_T_UNSET" not in os.environ
    assert "ADAPTMLLM_T_LEAK" not in os.environ
