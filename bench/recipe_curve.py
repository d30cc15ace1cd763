"""Side-by-side learning curves: adaptmllm's training path and preset against a plain transformers
``Seq2SeqTrainer`` loop, on the same tokenised LoResMT 2021 English->Irish data and the same
4.5M-parameter tiny NLLB architecture (issue 20).

    nice -n 10 python bench/recipe_curve.py --variant preset --steps 500 --out /tmp/preset.json &
    nice -n 10 python bench/recipe_curve.py --variant plain --steps 500 --out /tmp/plain.json &
    wait
    python bench/recipe_curve.py --combine /tmp/preset.json /tmp/plain.json \\
        --result bench/results/recipe-curve-<machine>-<date>.json --png bench/results/recipe-curve-<date>.png

Variants (each in its own process, one CPU thread, so that two run side by side on 2 cores):

- ``preset``: adaptmllm's own path (``adaptmllm.training.train.fine_tune``) with the training settings of a
  preset (``--config``, default the committed ``configs/loresmt2021-en-ga-cpu.yaml`` of the git
  revision ``--config-rev``, or a file), its schedule sized by its own epochs, stopped after ``--steps``.
- ``plain``: transformers' ``Seq2SeqTrainer`` as a user would write it: learning rate 5e-4,
  ``inverse_sqrt`` decay after 120 warm-up steps, dropout 0.1, label smoothing 0.1, batch 32,
  random batches, ``adamw_torch``, no weight decay; labels padded with -100 and decoder inputs the
  labels shifted right (``shift_tokens_right``), nothing of adaptmllm's besides the tokenizer and
  the model builder.
- ``ours-plain-hp``: adaptmllm's path with the ``plain`` variant's hyperparameters (separates the
  path from the preset).

Both variants share the SentencePiece vocabulary (``--vocab``, trained once on the cleaned training
set, seed 42) and the model initialisation (seed 42). Training loss (label-smoothed, as the Trainer
logs it, so it depends on the smoothing factor) is recorded every 25 steps; because label smoothing
and dropout differ between variants, every ``--eval-every`` steps the dev cross-entropy (nats per
target token, no smoothing, no dropout, the first 200 cleaned dev pairs) is also recorded: that is
the comparable number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
DATA = ROOT.parent / "shared" / "data" / "loresmt2021" / "en_ga"

from machine import cpu_model  # noqa: E402  (one way to name the machine, bench/machine.py)

PLAIN = dict(learning_rate=5e-4, lr_scheduler_type="inverse_sqrt", warmup_steps=120, dropout=0.1,
             label_smoothing=0.1, weight_decay=0.0, batch_size=32)


def _data():
    from adaptmllm.config import DataConfig
    from adaptmllm.data.pairs import prepare_data

    d = DataConfig(src_lang="eng_Latn", tgt_lang="gle_Latn", train=str(DATA / "train"), dev=str(DATA / "dev"),
                   test=str(DATA / "test.en2ga"), src_suffix="en", tgt_suffix="ga", max_length_ratio=3.0)
    return prepare_data(d)


def _tokenizer(folder: Path, prepared, vocab: int):
    from transformers import AutoTokenizer

    from adaptmllm.modeling.model import build_tokenizer

    if not (folder / "tokenizer.json").is_file():
        tok = build_tokenizer(folder, prepared.train.src + prepared.train.tgt, vocab, "eng_Latn", "gle_Latn", seed=42)
        tok.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.src_lang, tok.tgt_lang = "eng_Latn", "gle_Latn"
    return tok


def _config(args):
    from adaptmllm.config import load_config

    if args.config_rev:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.config_rev}:{args.config}"], check=True,
                              capture_output=True, text=True).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            fh.write(text)
        return load_config(fh.name)
    return load_config(ROOT / args.config)


def _probe(dev_batches, every: int, steps: int, record: list):
    """A TrainerCallback: dev cross-entropy every ``every`` steps (and at step 0), stop at ``steps``."""
    import torch
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def _dev_nll(self, model) -> float:
            was = model.training
            model.eval()
            tot, n = 0.0, 0
            with torch.no_grad():
                for b in dev_batches:
                    logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits
                    lab = b["labels"]
                    mask = lab != -100
                    lp = torch.log_softmax(logits.float(), -1)
                    nll = -lp.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                    tot += float(nll[mask].sum())
                    n += int(mask.sum())
            model.train(was)
            return tot / n

        def on_train_begin(self, args, state, control, model=None, **kw):
            record.append({"step": 0, "dev_nll": self._dev_nll(model), "t": time.perf_counter()})

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % every == 0:
                record.append({"step": state.global_step, "dev_nll": self._dev_nll(model),
                               "t": time.perf_counter()})
                print(f"step {state.global_step}: dev cross-entropy {record[-1]['dev_nll']:.3f}", flush=True)
            if state.global_step >= steps:
                control.should_training_stop = True
            return control

    return Probe()


def _dev_batches(tokenizer, prepared, collate, n: int = 200, bs: int = 50):
    from adaptmllm.training.train import tokenize_pairs

    ds = tokenize_pairs(tokenizer, prepared.dev.src[:n], prepared.dev.tgt[:n], 128, 128)
    rows = [ds[i] for i in range(len(ds))]
    return [collate(rows[i:i + bs]) for i in range(0, len(rows), bs)]


def run_variant(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import (DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments,
                              TrainerCallback)
    from transformers.models.m2m_100.modeling_m2m_100 import shift_tokens_right

    from adaptmllm.config import TinyModelConfig, TrainConfig
    from adaptmllm.modeling.model import build_tiny_model
    from adaptmllm.training.train import fine_tune, make_collator, tokenize_pairs

    prepared = _data()
    tok = _tokenizer(Path(args.vocab_dir), prepared, args.vocab)
    cfg = _config(args)
    tiny = cfg.model.tiny
    work = Path(tempfile.mkdtemp(prefix=f"recipe-{args.variant}-"))
    record: list = []
    hp: dict
    if args.variant in ("preset", "ours-plain-hp"):
        if args.batch_order == "sorted":
            import adaptmllm.training.resilience

            adaptmllm.training.resilience.shuffle_batches = lambda indices, batch_size, generator: indices
        tc = cfg.train
        if args.variant == "ours-plain-hp":
            tiny = TinyModelConfig(**{**tiny.__dict__, "dropout": PLAIN["dropout"]})
            over = dict(learning_rate=PLAIN["learning_rate"], label_smoothing=PLAIN["label_smoothing"],
                        weight_decay=PLAIN["weight_decay"])
            if hasattr(TrainConfig, "lr_scheduler"):
                over.update(lr_scheduler=PLAIN["lr_scheduler_type"], warmup_steps=PLAIN["warmup_steps"])
            tc = TrainConfig(**{**{k: getattr(tc, k) for k in tc.__dataclass_fields__}, **over})
        tc.eval_every_epochs = 10_000  # no dev generation inside the measured steps
        tc.logging_steps = 25
        tc.precision = "fp32"
        model = build_tiny_model(tiny, tok, seed=tc.seed)
        dev = _dev_batches(tok, prepared, make_collator(tok, model))
        probe = _probe(dev, args.eval_every, args.steps, record)
        t0 = time.perf_counter()
        trainer, result = fine_tune(model, tok, tc, prepared.train.src, prepared.train.tgt, prepared.dev.src,
                                    prepared.dev.tgt, work / "ckpt", "gle_Latn", progress=False, callbacks=[probe],
                                    score_baseline_dev=False)
        history = result.history
        hp = {k: getattr(tc, k) for k in ("learning_rate", "num_train_epochs", "warmup_ratio", "label_smoothing",
                                          "weight_decay", "per_device_train_batch_size", "group_by_length",
                                          "max_grad_norm", "optim")}
        hp.update({k: getattr(tc, k) for k in ("lr_scheduler", "warmup_steps") if hasattr(tc, k)})
        hp["dropout"] = tiny.dropout
        hp["batch_order"] = args.batch_order if tc.group_by_length else "random"
    else:
        tiny = TinyModelConfig(**{**tiny.__dict__, "dropout": PLAIN["dropout"]})
        model = build_tiny_model(tiny, tok, seed=42)
        base = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100)

        def collate(features):
            b = base(features)
            b["decoder_input_ids"] = shift_tokens_right(b["labels"], model.config.pad_token_id,
                                                        model.config.decoder_start_token_id)
            return b

        train_ds = tokenize_pairs(tok, prepared.train.src, prepared.train.tgt, 128, 128)
        dev = _dev_batches(tok, prepared, collate)
        probe = _probe(dev, args.eval_every, args.steps, record)
        targs = Seq2SeqTrainingArguments(
            output_dir=str(work / "ckpt"), learning_rate=PLAIN["learning_rate"],
            lr_scheduler_type=PLAIN["lr_scheduler_type"], warmup_steps=PLAIN["warmup_steps"],
            label_smoothing_factor=PLAIN["label_smoothing"], weight_decay=PLAIN["weight_decay"],
            per_device_train_batch_size=PLAIN["batch_size"], max_steps=args.steps * 3, logging_steps=25,
            logging_first_step=True, save_strategy="no", eval_strategy="no", report_to=[], seed=42,
            optim="adamw_torch", disable_tqdm=True, dataloader_num_workers=0)
        trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=train_ds, data_collator=collate,
                                 processing_class=tok, callbacks=[probe])
        t0 = time.perf_counter()
        trainer.train()
        history = trainer.state.log_history
        hp = {**PLAIN, "optim": "adamw_torch", "group_by_length": False, "max_grad_norm": 1.0,
              "batch_order": "random"}
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    losses = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
              for h in history if "loss" in h and "step" in h]
    for r in record:
        r["t"] = round(r["t"] - t0, 1)
    name = args.variant if args.variant == "plain" else f"{args.variant} ({hp['batch_order']} batches)"
    return {"variant": name, "config": args.config, "config_rev": args.config_rev, "hyperparameters": hp,
            "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tok),
            "train_pairs": len(prepared.train), "steps": args.steps, "threads": args.threads,
            "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "train_loss": losses,
            "dev_nll": record}


def _machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def from_log(path: str, steps_per_epoch: int = 240) -> dict:
    """The curves of a variant stopped before it wrote its JSON, read back from its log: the Trainer's
    printed ``{'loss': ..., 'epoch': ...}`` lines (step = epoch x ``steps_per_epoch``, 240 for batch 32
    here) and this script's ``step N: dev cross-entropy X`` lines."""
    import ast
    import re

    losses, dev = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("{'loss'"):
            h = ast.literal_eval(line)
            losses.append({"step": round(float(h["epoch"]) * steps_per_epoch), "loss": float(h["loss"]),
                           "learning_rate": float(h["learning_rate"])})
        m = re.match(r"step (\d+): dev cross-entropy ([0-9.]+)", line)
        if m:
            dev.append({"step": int(m.group(1)), "dev_nll": float(m.group(2))})
    return {"train_loss": losses, "dev_nll": dev, "stopped_at": dev[-1]["step"] if dev else None,
            "source": "parsed from the log of a run stopped after its last dev probe"}


def combine(paths, result: str, png: str, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(p).read_text()) for p in paths]
    def jitter(r: dict) -> Optional[float]:  # mean |change| of the logged loss between 25-step windows, steps 100-300
        xs = [x["loss"] for x in r["train_loss"] if 100 <= x["step"] <= 300]
        return round(sum(abs(a - b) for a, b in zip(xs, xs[1:])) / (len(xs) - 1), 3) if len(xs) > 2 else None

    summary = {r["variant"]: {"dev_nll": {str(x["step"]): round(x["dev_nll"], 3) for x in r["dev_nll"]},
                              "loss_jitter_100_300": jitter(r)} for r in runs}
    out = {"benchmark": "recipe_curve", "date": dt.date.today().isoformat(), "machine": _machine(),
           "load_note": note, "summary": summary, "runs": runs}
    Path(result).parent.mkdir(parents=True, exist_ok=True)
    Path(result).write_text(json.dumps(out, indent=1) + "\n")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        a.plot([x["step"] for x in r["train_loss"]], [x["loss"] for x in r["train_loss"]], label=r["variant"])
        b.plot([x["step"] for x in r["dev_nll"]], [x["dev_nll"] for x in r["dev_nll"]], marker="o",
               label=r["variant"])
    a.set(xlabel="optimizer step", ylabel="training loss (label-smoothed, as logged)",
          title="training loss")
    b.set(xlabel="optimizer step", ylabel="dev cross-entropy (nats/token, no smoothing)",
          title="dev cross-entropy (comparable)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("LoResMT 2021 en->ga, tiny NLLB architecture, batch 32 pairs")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(json.dumps({r["variant"]: {x["step"]: round(x["dev_nll"], 3) for x in r["dev_nll"]} for r in runs}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("preset", "plain", "ours-plain-hp"))
    p.add_argument("--config", default="configs/loresmt2021-en-ga-cpu.yaml")
    p.add_argument("--config-rev", default="", help="git revision to read --config from (empty: the work tree)")
    p.add_argument("--batch-order", choices=("shuffled", "sorted"), default="shuffled",
                   help="adaptmllm variants: length-grouped batches in a shuffled order (adaptmllm now) or in "
                        "transformers' sorted sweeps, longest to shortest every 50 batches (adaptmllm before issue 20)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--vocab-dir", default=str(Path(tempfile.gettempdir()) / "adaptmllm-recipe-vocab-2000"))
    p.add_argument("--out")
    p.add_argument("--combine", nargs="*")
    p.add_argument("--result")
    p.add_argument("--png")
    p.add_argument("--note", default="")
    args = p.parse_args()
    if args.combine:
        combine(args.combine, args.result, args.png, args.note)
        return
    res = run_variant(args)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({x["step"]: round(x["dev_nll"], 3) for x in res["dev_nll"]}))


if __name__ == "__main__":
    main()
