"""Translation throughput: naive transformers (one segment at a time, as the seed tutorials do) against
adaptmllm's batched :func:`adaptmllm.inference.translate.translate_texts` and CTranslate2 exports (float32, int8).

    nice -n 10 .venv/bin/python bench/translate_throughput.py                       # CPU: tiny + 600M
    .venv/bin/python bench/translate_throughput.py --models 3.3B --engines naive,batched,ct2-float16 \\
        --n-large 500 --max-new-large 128                                          # a GPU

Engines (the same sentences, the same beam size, the same maximum output length):

- ``naive``: ``model.generate`` per sentence (batch 1), ``forced_bos_token_id``, nothing else.
- ``batched``: ``translate_texts`` (length-sorted, token-budget batches of ``--max-batch-tokens``,
  ``torch.inference_mode``, bf16 autocast on a GPU; sentence splitting off: the test set is sentences).
- ``ct2-<type>``: the model exported with ``adaptmllm.inference.ct2.export_ctranslate2`` at that quantization,
  through the same ``translate_texts`` (same batches).

Models: ``tiny`` (the shipped demo base, assets/demo-base, translating into the demo language
qaa_Latn) and random initialisations of the real NLLB-200 configurations (``600M``, ``3.3B``, from
``adaptmllm.training.memory_plan.nllb_config``; vocabulary 256,206; nothing downloaded) with the demo tokenizer
for source pieces. Every engine makes a random model write exactly ``--max-new-large`` tokens
(transformers ``min_new_tokens``, CTranslate2 ``min_decoding_length``), so all do the same work.

Source sentences: the real LoResMT 2021 English-Irish test set (English side, 500 sentences) in
../shared/data; the large models use its first ``--n-large`` sentences. Measured: ``sentences_per_s``,
``tokens_per_s`` (source tokens, language code and ``</s>`` included, per second), ``out_tokens_per_s``
and wall ``seconds``, after one untimed warm-up batch. Also recorded: the machine's memory bandwidth
(a numpy copy of 512 MiB) and the memory-bandwidth bound of batch-1 greedy decoding for each model:
parameter bytes read per token step / bandwidth.

Writes ``bench/results/translate-<device>-<date>.json`` (a list of records) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
TEST = ROOT.parent / "shared" / "data" / "loresmt2021" / "en_ga" / "test.en2ga.en"
SRC, TGT = "eng_Latn", "qaa_Latn"

from train_throughput import device_name, device_slug  # noqa: E402  (same machine naming)


def bandwidth_gbs() -> float:
    """Memory bandwidth in GB/s: bytes read + written by a numpy copy of 512 MiB (best of 5)."""
    import numpy as np

    a = np.ones(512 * 2**20 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def load_model(name: str, workdir: Path):
    """``(model, tokenizer, folder)``: the demo base, or a random-init NLLB-200 architecture saved to ``workdir``."""
    import torch

    from adaptmllm.modeling.model import load_pretrained

    base = ROOT / "assets" / "demo-base"
    model, tok = load_pretrained(str(base), SRC, TGT, local_files_only=True)
    if name == "tiny":
        return model, tok, base
    from transformers import AutoModelForSeq2SeqLM

    from train_throughput import arch_config  # bench/: NLLB-200 sizes, or tiny-arch for a CPU check

    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForSeq2SeqLM.from_config(arch_config(name), dtype=dtype)
    folder = workdir / f"nllb-{name}"
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return model, tok, folder


def naive(model, tok, texts, beam, max_new):
    """One sentence at a time, as the seed tutorials translate."""
    bos = tok.convert_tokens_to_ids(TGT)
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt").to(model.device)
        ids = model.generate(**enc, forced_bos_token_id=bos, num_beams=beam, max_new_tokens=max_new)
        out.append(tok.decode(ids[0], skip_special_tokens=True))
    return out


class _FixedLength:
    """A CTranslate2 translator that writes exactly ``n`` tokens (``min_decoding_length``), as a random-init
    model does in transformers with ``generation_config.min_new_tokens``: the same work for every engine."""

    def __init__(self, ct2_model, n):
        self.inner, self.n, self.is_ctranslate2 = ct2_model.translator, n, True

    @property
    def translator(self):
        return self

    def translate_batch(self, tokens, **kw):
        return self.inner.translate_batch(tokens, min_decoding_length=self.n, **kw)


def run_one(engine, model, tok, texts, beam, max_new, max_batch_tokens):
    from adaptmllm.inference.translate import translate_texts

    if engine == "naive":
        return naive(model, tok, texts, beam, max_new)
    return translate_texts(model, tok, texts, SRC, TGT, num_beams=beam, max_new_tokens=max_new, batch_size=64,
                           max_batch_tokens=max_batch_tokens, split_sentences=False)


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,600M")
    ap.add_argument("--engines", default="naive,batched,ct2-float32,ct2-int8")
    ap.add_argument("--beams", default="1,4")
    ap.add_argument("--n-tiny", type=int, default=200, help="sentences for the tiny model (of 500)")
    ap.add_argument("--n-large", type=int, default=24, help="sentences for random-init NLLB architectures")
    ap.add_argument("--max-new-tiny", type=int, default=128)
    ap.add_argument("--max-new-large", type=int, default=16, help="output cap (tokens) for random-init models")
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--out", default=None)
    ap.add_argument("--test-file", default=str(TEST), help="source sentences, one a line (default: LoResMT 2021 "
                    "en-ga test, English side)")
    args = ap.parse_args(argv)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    test_file = Path(args.test_file)
    texts_all = [line.strip() for line in test_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    device = device_name()
    on_gpu = torch.cuda.is_available()
    bw = None if on_gpu else bandwidth_gbs()
    records = []
    out = Path(args.out) if args.out else (ROOT / "bench" / "results" /
                                          f"translate-{device_slug(device)}-{dt.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adaptmllm-bench-") as tmp:
        for name in args.models.split(","):
            model, tok, folder = load_model(name, Path(tmp))
            if on_gpu:
                model = model.to("cuda")
            model.eval()
            n_params = sum(p.numel() for p in model.parameters())
            large = name != "tiny"
            texts = texts_all[: args.n_large if large else args.n_tiny]
            max_new = args.max_new_large if large else args.max_new_tiny
            src_tokens = sum(len(x) for x in tok(texts)["input_ids"])
            if large:  # every engine writes exactly max_new tokens (language code included)
                model.generation_config.min_new_tokens = max_new
            for engine in args.engines.split(","):
                m = model
                if engine.startswith("ct2-"):
                    from adaptmllm.inference.ct2 import export_ctranslate2, load_ct2

                    q = engine[4:]
                    t0 = time.perf_counter()
                    out_dir = export_ctranslate2(folder, Path(tmp) / f"{name}-{q}", q, force=True)
                    convert_s = time.perf_counter() - t0
                    m, _ = load_ct2(out_dir, SRC, TGT, device="cuda" if on_gpu else "cpu", threads=threads)
                    if large:
                        m = _FixedLength(m, max_new)
                for beam in [int(b) for b in args.beams.split(",")]:
                    if on_gpu:
                        torch.cuda.reset_peak_memory_stats()
                    run_one(engine, m, tok, texts[:4], beam, max_new, args.max_batch_tokens)  # warm-up
                    t0 = time.perf_counter()
                    hyps = run_one(engine, m, tok, texts, beam, max_new, args.max_batch_tokens)
                    if on_gpu:
                        torch.cuda.synchronize()
                    s = time.perf_counter() - t0
                    out_tokens = (max_new - 1) * len(texts) if large else \
                        sum(len(x) for x in tok(hyps, add_special_tokens=False)["input_ids"])
                    rec = {
                        "engine": engine if engine != "batched" else "adaptmllm-batched",
                        "model": "demo base (tiny)" if not large else f"nllb-200-{name} (random init)",
                        "parameters": n_params, "device": device, "beam": beam, "sentences": len(texts),
                        "max_new_tokens": max_new, "sentences_per_s": round(len(texts) / s, 3),
                        "tokens_per_s": round(src_tokens / s, 1), "out_tokens_per_s": round(out_tokens / s, 1),
                        "mean_out_tokens": round(out_tokens / len(texts), 1), "seconds": round(s, 2),
                        "threads": threads, "max_batch_tokens": None if engine == "naive" else args.max_batch_tokens,
                        "date": dt.date.today().isoformat(),
                        "test_set": (f"LoResMT 2021 en-ga test (English side), first {len(texts)} sentences"
                                     if test_file == TEST else f"{test_file}, first {len(texts)} sentences"),
                    }
                    if engine.startswith("ct2-"):
                        rec["convert_s"] = round(convert_s, 1)
                    if on_gpu and not engine.startswith("ct2-"):  # CTranslate2 allocates outside torch
                        rec["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                        rec["weights_gib"] = round(n_params * 2 / 2**30, 2)  # bf16 weights: the floor
                    if bw:
                        rec["bandwidth_gbs"] = round(bw, 1)
                        # batch-1 greedy decoding reads every parameter once per token step
                        bpp = 1 if engine == "ct2-int8" else 4
                        rec["bound_steps_per_s_batch1"] = round(bw * 1e9 / (n_params * bpp), 1)
                    records.append(rec)
                    print(json.dumps(rec), flush=True)
                    out.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")  # a stopped run keeps these
                if m is not model:
                    del m
                    gc.collect()
            del model
            gc.collect()
    naive_rate = {(r["model"], r["beam"]): r["sentences_per_s"] for r in records if r["engine"] == "naive"}
    print(f"\n{out}\n\n| model | engine | beam | sentences/s | source tokens/s | x naive |\n|---|---|---|---|---|---|")
    for r in records:
        base = naive_rate.get((r["model"], r["beam"]))
        x = f"{r['sentences_per_s'] / base:.1f}" if base else "-"
        print(f"| {r['model']} | {r['engine']} | {r['beam']} | {r['sentences_per_s']} | {r['tokens_per_s']} | {x} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
