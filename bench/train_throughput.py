"""Training throughput of NLLB-200 fine-tuning: a transformers-example baseline against adaptmllm's
full fine-tuning (memory plan + batching), LoRA and QLoRA.

    .venv/bin/python bench/train_throughput.py --model 3.3B                  # on a GPU: variants a, b, c, d
    .venv/bin/python bench/train_throughput.py --model 600M --batch 2 --max-len 32 --steps 3 --warmup 1 \\
        --variants a,b,b-zero2,c,d                                               # a short CPU proof run

The weights are a random initialisation of the real NLLB-200 configuration (``adaptmllm.training.memory_plan.
nllb_config``: 3.3B = d_model 2048, 24+24 layers, 16 heads, FFN 8192, vocabulary 256,206); nothing is
downloaded. Sentence lengths come from a real corpus (default: LoResMT 2021 English-Irish training set
in ../shared/data), counted with a SentencePiece BPE trained on that corpus as a stand-in for NLLB's
tokenizer (+2 for the language code and ``</s>``), truncated to ``--max-len``; token ids are random.

Variants (each in its own process, so one out-of-memory does not stop the others):

- ``a`` baseline, configured as transformers' ``run_translation.py`` would be: ``Seq2SeqTrainer``,
  fp32 weights with bf16 autocast (fp32 on CPU), random batches (no length grouping), plain AdamW
  (``optim="adamw_torch"``), no gradient checkpointing, no TF32, label smoothing 0.
- ``b`` adaptmllm full fine-tuning: ``adaptmllm.training.train.training_args`` with the memory planner's plan
  (``train.deepspeed.stage=auto``), length-grouped batches, fused AdamW, TF32, label smoothing 0.1.
  ``b-zero2`` / ``b-zero3`` force that ZeRO stage instead.
- ``c`` adaptmllm LoRA (r 16 on q/k/v/out_proj, fc1, fc2; a bf16 base on a GPU), planned for a 16 GB GPU
  (``--lora-gpu-memory-gib``) so that the planner turns gradient checkpointing on where a T4 needs it.
- ``d`` adaptmllm QLoRA (a 4-bit NF4 base via bitsandbytes; CUDA only, recorded as skipped elsewhere).

Every variant trains exactly one epoch over the same ``(--warmup + --steps) x batch`` pairs (length
grouping changes only how they are batched); the first ``--warmup`` steps are not timed. Measured:
``tokens_per_s`` (source + target non-pad tokens per second), ``samples_per_s`` (sentence pairs per
second), ``peak_mem_gib`` (``torch.cuda.max_memory_allocated`` over the whole run; on CPU the process's
peak resident memory), ``padding_share`` (pad tokens / all tokens of the timed batches), and ``mfu``: model
FLOPs of the non-pad tokens (forward 2 x parameters x tokens per matmul, plus attention; backward 2x
forward, or 1x for a frozen LoRA base; recomputation not counted) per second over the device's peak
(H100 SXM bf16 dense 989 TFLOPS from NVIDIA's H100 datasheet; on CPU an estimate, see ``peak_flops``).

Writes ``bench/results/train-<device>-<date>.json`` (a list of records) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "loresmt2021" / "en_ga" / "train"
GIB = 2**30

from machine import cpu_model  # noqa: E402  (one way to name the machine, bench/machine.py)

PEAK_BF16_TFLOPS = [  # dense bf16 (fp16 for T4) tensor-core peaks from NVIDIA's datasheets, by device name
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
    ("A100", 312.0), ("A10G", 125.0), ("A10", 125.0), ("L40S", 362.0), ("L4", 121.0), ("T4", 65.0),
    ("V100", 125.0),
]


# ------------------------------------------------------------------------------------------- machine
def device_name() -> str:
    """``torch.cuda.get_device_name()`` or ``cpu (<model name>, <n> cores)``."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores)"


def device_slug(name: str) -> str:
    """File-name form of a device: ``nvidia-h100-80gb-hbm3``, ``cpu``."""
    if name.startswith("cpu"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def peak_flops() -> tuple[float, str]:
    """Peak FLOP/s of this device and where the number comes from.

    GPUs: the dense bf16 tensor-core peak of :data:`PEAK_BF16_TFLOPS` (NVIDIA datasheets). CPUs: an
    estimate, cores x clock x 32 fp32 FLOPs per cycle (two 256-bit FMA pipes, as on AVX2 and Zen 4
    cores), with the clock from /proc/cpuinfo (or BogoMIPS / 2).
    """
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tf in PEAK_BF16_TFLOPS:
            if key.lower() in name.lower():
                return tf * 1e12, f"{key} dense bf16 peak, {tf} TFLOPS (NVIDIA datasheet)"
        return float("nan"), f"unknown peak for {name}"
    mhz = None
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"cpu MHz\s*:\s*([\d.]+)", text) or None
        if m:
            mhz = float(m.group(1))
        else:
            b = re.search(r"bogomips\s*:\s*([\d.]+)", text, re.I)
            mhz = float(b.group(1)) / 2 if b else None
    except OSError:
        pass
    mhz = mhz or 2500.0
    cores = os.cpu_count() or 1
    return cores * mhz * 1e6 * 32, f"estimate: {cores} cores x {mhz / 1000:.2f} GHz x 32 fp32 FLOPs/cycle"


# ---------------------------------------------------------------------------------------------- data
def corpus_lengths(prefix: Path, src_suffix: str, tgt_suffix: str, max_len: int, limit: int, seed: int = 0) -> dict:
    """Token lengths of up to ``limit`` sentence pairs of the aligned corpus ``prefix.{src,tgt}``, with a
    SentencePiece BPE (8k) trained on it standing in for NLLB's tokenizer: ``{"src": [...], "tgt": [...],
    "source": ...}``, each length + 2 (language code, ``</s>``), at most ``max_len``.

    Raises:
        FileNotFoundError: the corpus is missing (the benchmark needs a real corpus for its lengths).
    """
    import random

    from adaptmllm.modeling.model import build_tokenizer

    src_lines = (prefix.parent / f"{prefix.name}.{src_suffix}").read_text(encoding="utf-8").splitlines()
    tgt_lines = (prefix.parent / f"{prefix.name}.{tgt_suffix}").read_text(encoding="utf-8").splitlines()
    pairs = [(s, t) for s, t in zip(src_lines, tgt_lines) if s.strip() and t.strip()]
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(tmp, [s for s, _ in pairs] + [t for _, t in pairs], 8000, "eng_Latn", "gle_Latn")
        src = [min(max_len, len(tok(s).input_ids)) for s, _ in pairs]
        tgt = [min(max_len, len(tok(text_target=t).input_ids)) for _, t in pairs]
    return {"src": src, "tgt": tgt, "source": f"{prefix} ({len(pairs)} pairs, SentencePiece BPE 8k on the corpus)"}


def make_dataset(lengths: dict, vocab: int, seed: int = 0):
    """A ``datasets.Dataset`` of random token ids with the given source/target lengths (NLLB ids:
    pad 1, ``</s>`` 2, a language code first)."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for s, t in zip(lengths["src"], lengths["tgt"]):
        ids.append([256047] * (vocab > 256047) + rng.integers(4, vocab, max(0, s - 2)).tolist() + [2])
        labels.append([256068] * (vocab > 256068) + rng.integers(4, vocab, max(0, t - 2)).tolist() + [2])
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels})


class Collator:
    """Pads to the longest in the batch, as ``DataCollatorForSeq2Seq`` does (pad 1, labels -100), and adds
    ``decoder_input_ids`` (labels shifted right after ``</s>``). Used by every variant."""

    def __init__(self, pad: int = 1, start: int = 2):
        self.pad, self.start = pad, start

    def __call__(self, features):
        import torch

        n = max(len(f["input_ids"]) for f in features)
        m = max(len(f["labels"]) for f in features)
        ids = torch.full((len(features), n), self.pad)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        lab = torch.full((len(features), m), -100)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
            lab[i, : len(f["labels"])] = torch.tensor(f["labels"])
        dec = lab.clone()
        dec[dec == -100] = self.pad
        dec = torch.cat([torch.full((len(features), 1), self.start), dec[:, :-1]], dim=1)
        return {"input_ids": ids, "attention_mask": mask, "labels": lab, "decoder_input_ids": dec}


# --------------------------------------------------------------------------------------------- FLOPs
def sample_flops(size, src: int, tgt: int, frozen_base: bool = False) -> float:
    """Model FLOPs of one training step on one sentence pair of ``src``/``tgt`` non-pad tokens.

    Forward: 2 FLOPs per parameter per token for every matmul (encoder weights on source tokens;
    decoder weights and the 256k-vocabulary output projection on target tokens; cross-attention
    key/value projections on source tokens), plus attention scores and values (4*s*s*d per encoder
    layer, 4*t*t*d + 4*t*s*d per decoder layer). Backward: 2x forward (weights and inputs), or 1x
    when the base is frozen (LoRA/QLoRA: input gradients only; the adapters are negligible).
    Recomputation under gradient checkpointing is not counted (the usual MFU convention).
    """
    d = size.d_model
    cross_kv = 2 * (d * d + d) * size.decoder_layers
    fwd = 2 * (size.encoder_params * src + (size.decoder_params - cross_kv) * tgt + cross_kv * src
               + size.embedding_params * tgt)
    fwd += size.encoder_layers * 4 * src * src * d + size.decoder_layers * (4 * tgt * tgt * d + 4 * tgt * src * d)
    return fwd * (2 if frozen_base else 3)


# -------------------------------------------------------------------------------------------- worker
TINY_ARCH = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=128, decoder_ffn_dim=128)
"""``--model tiny-arch``: NLLB's shape (vocabulary 256,206, tied embeddings) at toy width and depth, so that a
CPU can check the whole benchmark (``bench/gpu_check.sh --tiny``) in minutes; its numbers mean nothing."""


def arch_config(arch: str):
    """The ``M2M100Config`` of ``--model``: an NLLB-200 architecture (600M, 1.3B, 3.3B) or ``tiny-arch``."""
    from adaptmllm.training.memory_plan import nllb_config

    return nllb_config("600M", **TINY_ARCH) if arch == "tiny-arch" else nllb_config(arch)


def _build_model(arch: str, dtype, device):
    import torch
    from transformers import M2M100ForConditionalGeneration

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = M2M100ForConditionalGeneration(arch_config(arch))
    finally:
        torch.set_default_dtype(old)
    return model


def run_variant(variant: str, ns: argparse.Namespace) -> dict:
    """Train ``ns.warmup + ns.steps`` steps of one variant and measure it; returns its record."""
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from adaptmllm.config import DeepSpeedConfig, LoraConfig, TrainConfig
    from adaptmllm.training.memory_plan import ModelSize, plan_memory, plan_training
    from adaptmllm.training.deepspeed import apply_plan_to_model, trainer_class
    from adaptmllm.hardware import ensure_distributed_env
    from adaptmllm.modeling.lora import lora_model, model_load_kwargs
    from adaptmllm.hardware import resolve_precision
    from adaptmllm.training.train import training_args

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda") if cuda else torch.device("cpu")
    lengths = json.loads(Path(ns.lengths).read_text())
    size = ModelSize.from_config(arch_config(ns.model))
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{variant}-"))
    base = variant.split("-")[0]
    lora = base in ("c", "d")
    batch = ns.batch_lora if lora else ns.batch
    # Exactly one epoch over the same pairs for every variant with this batch size: length grouping
    # changes only how they are batched. The first --warmup steps are not timed (for grouped batches
    # those hold the longest pairs, so the timed steps are, if anything, shorter than the baseline's).
    n = (ns.warmup + ns.steps) * batch
    lengths = {k: [lengths[k][i % len(lengths[k])] for i in range(n)] for k in ("src", "tgt")}
    record = {"variant": variant, "model": f"nllb-200-{ns.model} (random init)", "device": device_name(),
              "batch": batch, "zero_stage": 0, "max_len": ns.max_len, "steps": ns.steps, "warmup": ns.warmup}
    if base == "d" and not cuda:
        return {**record, "error": "skipped: QLoRA (bitsandbytes 4-bit) needs a CUDA GPU"}

    precision = resolve_precision("auto")
    tc = TrainConfig(per_device_train_batch_size=batch, learning_rate=1e-5, max_steps=ns.warmup + ns.steps,
                     warmup_ratio=0.0, logging_steps=10_000, save_total_limit=1, precision=precision,
                     deepspeed=DeepSpeedConfig(stage={"b-zero2": "2", "b-zero3": "3"}.get(variant, "auto"),
                                               gpu_memory_gib=ns.lora_gpu_memory_gib if lora else ns.gpu_memory_gib))
    plan = None
    if base == "a":  # the planner's estimate for the baseline's setting: no DeepSpeed, no checkpointing
        est = plan_memory(size, DeepSpeedConfig(stage="off", gpu_memory_gib=ns.gpu_memory_gib), batch,
                          max(lengths["src"]), max(lengths["tgt"]), precision, gradient_checkpointing=False)
        record["planner_estimate"] = est.to_dict()
        model = _build_model(ns.model, torch.float32, dev)
        args = Seq2SeqTrainingArguments(
            output_dir=str(out_dir), per_device_train_batch_size=batch, max_steps=ns.warmup + ns.steps,
            learning_rate=1e-5, bf16=precision == "bf16", optim="adamw_torch", report_to=[], save_strategy="no",
            logging_steps=10_000, disable_tqdm=True, dataloader_num_workers=0, seed=0, data_seed=0,
            label_names=["labels"])
        record.update(precision=precision, optim="adamw_torch", group_by_length=False, gradient_checkpointing=False)
        trainer_cls = Seq2SeqTrainer
    else:
        from types import SimpleNamespace

        if base == "d":
            from transformers import AutoModelForSeq2SeqLM

            cfg = SimpleNamespace(model=SimpleNamespace(lora=LoraConfig(enabled=True, load_in_4bit=True)),
                                  train=tc)
            folder = out_dir / "base"
            _build_model(ns.model, torch.bfloat16, dev).save_pretrained(folder)
            torch.cuda.empty_cache()
            model = AutoModelForSeq2SeqLM.from_pretrained(folder, **model_load_kwargs(cfg))
        elif base == "c":
            model = _build_model(ns.model, torch.bfloat16 if precision == "bf16" else torch.float32, dev)
        else:
            model = _build_model(ns.model, torch.float32, dev)
        if lora:
            model = lora_model(model, LoraConfig(enabled=True, r=16, alpha=32, dropout=0.05,
                                                 load_in_4bit=base == "d"))
        tc.label_smoothing = 0.1
        plan = plan_training(model, tc, max(lengths["src"]), max(lengths["tgt"]), precision)
        apply_plan_to_model(model, plan)
        if plan.uses_deepspeed:
            ensure_distributed_env()
            if not cuda:  # the CPU accelerator's shm all-reduce is for several ranks; skip its compilation
                import importlib

                importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        args = training_args(tc, out_dir, evaluate=False, progress=False, plan=plan)
        args.logging_steps = 10_000
        record.update(precision=precision, optim=args.optim if isinstance(args.optim, str) else args.optim.value,
                      group_by_length=True, gradient_checkpointing=plan.gradient_checkpointing,
                      zero_stage=plan.stage, offload_optimizer=plan.offload_optimizer,
                      offload_params=plan.offload_params, plan=plan.explanation, planner_estimate=plan.to_dict())
        trainer_cls = trainer_class(plan)
        if lora:
            record["lora"] = {"r": 16, "alpha": 32, "targets": "q_proj k_proj v_proj out_proj fc1 fc2",
                              "base": "nf4 4-bit" if base == "d" else str(next(model.parameters()).dtype)}

    ds = make_dataset(lengths, size.vocab_size)
    stats = {"t0": None, "t1": None, "tokens": 0, "padded": 0, "samples": 0, "flops": 0.0, "step": 0, "cpu0": 0.0,
             "cpu1": 0.0}

    def cpu_seconds() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stats["step"] = state.global_step
            if state.global_step == ns.warmup:
                sync()
                stats["t0"], stats["cpu0"] = time.perf_counter(), cpu_seconds()

        def on_train_end(self, args, state, control, **kw):
            sync()
            stats["t1"], stats["cpu1"] = time.perf_counter(), cpu_seconds()

    class Measured(trainer_cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            if stats["t0"] is not None:  # a measured step: count its non-pad tokens and model FLOPs
                src = inputs["attention_mask"].sum(dim=1).tolist()
                tgt = (inputs["labels"] != -100).sum(dim=1).tolist()
                stats["tokens"] += sum(src) + sum(tgt)
                stats["padded"] += inputs["input_ids"].numel() + inputs["labels"].numel()
                stats["samples"] += len(src)
                stats["flops"] += sum(sample_flops(size, s, t, frozen_base=lora) for s, t in zip(src, tgt))
            return super().training_step(model, inputs, num_items_in_batch)

    if ns.warmup == 0:
        stats["t0"], stats["cpu0"] = time.perf_counter(), cpu_seconds()
    trainer = Measured(model=model, args=args, train_dataset=ds, data_collator=Collator(), callbacks=[Timer()])
    trainer.train()
    elapsed = stats["t1"] - stats["t0"]
    peak, source = peak_flops()
    mem = (torch.cuda.max_memory_allocated() / GIB if cuda
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB)
    record.update(
        tokens_per_s=round(stats["tokens"] / elapsed, 1), samples_per_s=round(stats["samples"] / elapsed, 3),
        planned_gpu_gib=record.get("planner_estimate", {}).get("gpu_need_gib"),
        peak_mem_gib=round(mem, 2), mfu=round(stats["flops"] / elapsed / peak, 4) if peak == peak else None,
        peak_mem_kind="torch.cuda.max_memory_allocated" if cuda else "peak resident memory of the process (ru_maxrss)",
        peak_flops=peak, peak_flops_source=source, measured_s=round(elapsed, 2),
        process_cpu_s=round(stats["cpu1"] - stats["cpu0"], 2),
        padding_share=round(1 - stats["tokens"] / max(1, stats["padded"]), 3),
        mean_src_tokens=round(sum(lengths["src"]) / len(lengths["src"]), 1),
        mean_tgt_tokens=round(sum(lengths["tgt"]) / len(lengths["tgt"]), 1),
        parameters=size.total_params)
    if cuda:
        record["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
    return record


# -------------------------------------------------------------------------------------------- driver
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "deepspeed", "peft", "accelerate", "bitsandbytes"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    return out


def table(records: list[dict]) -> str:
    """A markdown table of the records."""
    head = ("| variant | device | batch | ZeRO | tokens/s | samples/s | peak GiB | planned GiB | MFU | note |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
    rows = []
    for r in records:
        if r.get("error"):
            rows.append(f"| {r['variant']} | {r['device']} | {r['batch']} | | | | | | | {r['error'][:120]} |")
            continue
        note = ("checkpointing" if r.get("gradient_checkpointing") else "") + (
            " offload" if r.get("offload_optimizer") else "")
        mfu = "" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        rows.append(f"| {r['variant']} | {r['device']} | {r['batch']} | {r['zero_stage']} | {r['tokens_per_s']:,.0f} | "
                    f"{r['samples_per_s']:.2f} | {r['peak_mem_gib']:.1f} | {r.get('planned_gpu_gib') or ''} | {mfu} | "
                    f"{note.strip()} |")
    return head + "\n".join(rows)


def main(argv=None) -> int:
    """Measure the chosen variants (each in a subprocess), write the JSON records, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="3.3B", help="NLLB-200 architecture: 600M, 1.3B or 3.3B (tiny-arch: a CPU check)")
    p.add_argument("--variants", default="a,b,c,d", help="comma list of a, b, b-zero2, b-zero3, c, d")
    p.add_argument("--batch", type=int, default=16, help="sentence pairs per step for a and b")
    p.add_argument("--batch-lora", type=int, default=16, help="sentence pairs per step for c and d")
    p.add_argument("--max-len", type=int, default=128, help="longest sentence in tokens (truncation)")
    p.add_argument("--steps", type=int, default=30, help="measured optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured steps first")
    p.add_argument("--pairs", type=int, default=8112, help="corpus pairs whose lengths are used")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="aligned corpus prefix (PREFIX.en, PREFIX.ga)")
    p.add_argument("--src-suffix", default="en")
    p.add_argument("--tgt-suffix", default="ga")
    p.add_argument("--gpu-memory-gib", type=float, default=None, help="GPU memory the planner plans b for")
    p.add_argument("--lora-gpu-memory-gib", type=float, default=15.0,
                   help="GPU memory the planner plans c and d for (15: a 16 GB Colab T4)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per variant")
    p.add_argument("--out", default=None, help="output JSON (default bench/results/train-<device>-<date>.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--lengths", default=None, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if ns.worker:
        try:
            rec = run_variant(ns.worker, ns)
        except Exception as e:  # noqa: BLE001 - recorded, not raised: the other variants go on
            import traceback

            traceback.print_exc()
            oom = "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"
            rec = {"variant": ns.worker, "model": f"nllb-200-{ns.model} (random init)", "device": device_name(),
                   "batch": ns.batch_lora if ns.worker[0] in "cd" else ns.batch, "zero_stage": None,
                   "error": ("out of memory: " if oom else f"{type(e).__name__}: ") + str(e)[:300]}
        print("RESULT " + json.dumps(rec), flush=True)
        return 0

    lengths = corpus_lengths(Path(ns.corpus), ns.src_suffix, ns.tgt_suffix, ns.max_len, ns.pairs)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(lengths, fh)
        lengths_file = fh.name
    dev = device_name()
    date = dt.date.today().isoformat()
    out = Path(ns.out or ROOT / "bench" / "results" / f"train-{device_slug(dev)}-{date}.json")
    records = []
    for variant in [v.strip() for v in ns.variants.split(",") if v.strip()]:
        cmd = [sys.executable, __file__, "--worker", variant, "--lengths", lengths_file] + [
            a for a in (argv if argv is not None else sys.argv[1:])]
        t0 = time.perf_counter()
        print(f"variant {variant} ...", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ns.timeout, cwd=ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            rec = json.loads(lines[-1][7:]) if lines else {
                "variant": variant, "device": dev, "batch": ns.batch, "zero_stage": None,
                "error": f"worker exited {proc.returncode}: {proc.stderr[-300:]}"}
            if rec.get("error"):
                print(proc.stderr[-2000:], file=sys.stderr)
        except subprocess.TimeoutExpired:
            rec = {"variant": variant, "device": dev, "batch": ns.batch, "zero_stage": None,
                   "error": f"timed out after {ns.timeout} s"}
        rec.update(date=date, wall_s=round(time.perf_counter() - t0, 1), corpus=lengths["source"],
                   machine={"cpu": cpu_model(), "cores": os.cpu_count(), **_versions()})
        records.append(rec)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=2) + "\n")  # after each variant: a stopped run keeps these
        print(json.dumps({k: rec.get(k) for k in ("variant", "tokens_per_s", "samples_per_s", "peak_mem_gib", "mfu",
                                                  "zero_stage", "error")}), file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2) + "\n")
    print(table(records))
    print(f"\nwrote {out}")
    os.unlink(lengths_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
