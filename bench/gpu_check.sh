#!/usr/bin/env bash
# One prepared GPU check (about 10 minutes on one H100/H200): training and translation throughput of
# NLLB-200 architectures (random initialisation from adaptmllm.training.memory_plan.nllb_config; nothing downloaded),
# written beside the planner's estimates.
#
#   bash bench/gpu_check.sh            # on the GPU: bench/results/train-<gpu>-<date>.json, translate-<gpu>-<date>.json
#   bash bench/gpu_check.sh --tiny     # anywhere (CPU; 15 min on a loaded 2-core VM): the same steps at toy sizes,
#                                      # into $OUT or /tmp
#   bash bench/gpu_check.sh train      # or translate: one half only
#
# Training (bench/train_throughput.py, 3.3B, batch 16 x <=128 tokens, 3 untimed + 10 timed steps):
#   a  transformers-example baseline (run_translation.py settings), b  adaptmllm full fine-tuning (the
#   planner's choice), c  LoRA, d  QLoRA: tokens/s, MFU, peak GiB, and the planner's estimate
#   (planned_gpu_gib, planner_estimate) beside each measured peak.
# Translation (bench/translate_throughput.py, 600M and 3.3B, greedy and beam 4, 32 sentences x 48 tokens):
#   naive (one sentence at a time), adaptmllm batched, CTranslate2 float16 and int8_float16.
# Targets (docs/performance.md): 3.3B full fine-tuning fits 80 GB, b >= 1.5x a's tokens/s, b >= 35% MFU,
#   LoRA/QLoRA < 15 GiB, batched >= 5x naive.
#
# Data: sentence lengths and source sentences from LoResMT 2021 English-Irish ($BENCH_DATA, default
# ../shared/data/loresmt2021/en_ga); where it is absent, adaptmllm's own demo pairs stand in (recorded
# in the JSON's corpus/test_set fields). Python: $PYTHON (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0 PART=all
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    train|translate) PART=$arg ;;   # one half only (two device calls of ~5 minutes instead of one of ~10)
    *) echo "usage: bash bench/gpu_check.sh [--tiny] [train|translate]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" >&2; }

"$PY" - <<'PY' >&2
import importlib
for name in ("torch", "transformers", "accelerate", "deepspeed", "peft", "ctranslate2", "bitsandbytes", "sentencepiece"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # the benchmarks record a variant that needs it as skipped or failed
        print(f"  {name}: MISSING ({type(e).__name__})")
import torch
print("  device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU")
PY

DATA=${BENCH_DATA:-../shared/data/loresmt2021/en_ga}
WORK=$(mktemp -d -t adaptmllm-gpu-check-XXXX)
trap 'rm -rf "$WORK"' EXIT
if [[ -f "$DATA/train.en" && -f "$DATA/train.ga" && -f "$DATA/test.en2ga.en" ]]; then
  CORPUS="$DATA/train"; TEST="$DATA/test.en2ga.en"
else
  say "no LoResMT corpus at $DATA: adaptmllm's demo pairs stand in"
  mkdir -p "$WORK/adaptmllm-demo-corpus"
  "$PY" - "$WORK/adaptmllm-demo-corpus" <<'PY'
import sys
from pathlib import Path
from adaptmllm.data.demo import demo_splits
out = Path(sys.argv[1])
s = demo_splits("eng_Latn", "qaa_Latn", 2000, 0)
(out / "train.en").write_text("\n".join(s["train"][0]) + "\n")
(out / "train.ga").write_text("\n".join(s["train"][1]) + "\n")
(out / "test.en2ga.en").write_text("\n".join(s["test"][0]) + "\n")
PY
  CORPUS="$WORK/adaptmllm-demo-corpus/train"; TEST="$WORK/adaptmllm-demo-corpus/test.en2ga.en"
fi

if [[ $TINY == 1 ]]; then
  DEST=${OUT:-/tmp}/gpu-check-tiny
  mkdir -p "$DEST"
  say "tiny: training variants a,b,b-zero2,c,d on the tiny-arch model"
  "$PY" bench/train_throughput.py --model tiny-arch --variants a,b,b-zero2,c,d --batch 4 --batch-lora 4 \
      --max-len 32 --steps 2 --warmup 1 --pairs 200 --timeout 600 --corpus "$CORPUS" --out "$DEST/train-tiny.json"
  say "tiny: translation naive / batched / CTranslate2 on the demo base and the tiny-arch model"
  "$PY" bench/translate_throughput.py --models tiny,tiny-arch --engines naive,batched,ct2-float32,ct2-int8 --beams 1,2 \
      --n-tiny 16 --n-large 8 --max-new-large 8 --test-file "$TEST" --out "$DEST/translate-tiny.json"
  TRAIN="$DEST/train-tiny.json"; TRANSLATE="$DEST/translate-tiny.json"
else
  # Both benchmarks write their JSON after every record, so a cap that stops one keeps what it measured.
  if [[ "$PART" != translate ]]; then
    say "training: 3.3B a (baseline), b (planner), c (LoRA), d (QLoRA), at most 110 s each"
    timeout 450 "$PY" bench/train_throughput.py --model 3.3B --variants a,b,c,d --batch 16 --batch-lora 16 \
        --max-len 128 --steps 10 --warmup 3 --timeout 110 --corpus "$CORPUS" || say "training bench exited $?"
  fi
  if [[ "$PART" != train ]]; then
    say "translation: 600M and 3.3B, at most 240 s"
    timeout 240 "$PY" bench/translate_throughput.py --models 600M,3.3B \
        --engines naive,batched,ct2-float16,ct2-int8_float16 --beams 1,4 --n-large 32 --max-new-large 48 \
        --test-file "$TEST" || say "translation bench exited $?"
  fi
  TRAIN=$(ls -t bench/results/train-*.json 2>/dev/null | head -1 || true)
  TRANSLATE=$(ls -t bench/results/translate-*.json 2>/dev/null | head -1 || true)
fi

# One summary: every record, its error if any, and the targets where they apply.
"$PY" - "$TRAIN" "$TRANSLATE" "$TINY" <<'PY'
import json, os, sys
load = lambda p: json.load(open(p)) if p and os.path.isfile(p) else []
train, translate, tiny = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3] == "1"
print(f"\n{sys.argv[1]}")
for r in train:
    print(f"  {r['variant']:8} tokens/s {r.get('tokens_per_s')}  MFU {r.get('mfu')}  peak {r.get('peak_mem_gib')} GiB"
          f"  planned {r.get('planned_gpu_gib')} GiB  {r.get('error') or ''}")
print(f"{sys.argv[2]}")
for r in translate:
    print(f"  {r['model'][:30]:30} {r['engine']:18} beam {r['beam']}  {r['sentences_per_s']} sentences/s")
bad = [r for r in train if r.get("error") and "skipped" not in r["error"]]
if bad:
    sys.exit(f"training variants failed: {[r['variant'] for r in bad]}")
if not tiny:
    by = {r["variant"]: r for r in train if not r.get("error")}
    if "a" in by and "b" in by:
        print(f"  b/a tokens/s: {by['b']['tokens_per_s'] / by['a']['tokens_per_s']:.2f} (target >= 1.5); "
              f"b MFU {100 * (by['b']['mfu'] or 0):.1f}% (target >= 35%)")
PY
say "done"
