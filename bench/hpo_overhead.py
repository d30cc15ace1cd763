"""Overhead of the hyperparameter search outside training, and memory across trials.

    .venv/bin/python bench/hpo_overhead.py                # 5 trials on the demo data, CPU
    .venv/bin/python bench/hpo_overhead.py --trials 5 --pairs 1500 --epochs 3 --threads 1

Runs a 5-trial Optuna study (:func:`adaptmllm.runs.hpo.search.run_study`) on the embedded demo with energy
tracking, SQLite storage, plots and the final test scoring, as ``adaptmllm hpo`` does. Every
trial has the same shapes (batch size and epochs fixed; learning rate, weight decay, warm-up and
label smoothing searched; no pruner), so their memory can be compared.

Overhead = the study's wall time minus the machine-learning work (data preparation, model
building, training with its per-epoch dev evaluation, and the final test scoring): storage
(study creation, every Optuna call, the heartbeat), energy tracking start/stop, freeing memory
between trials, trials.csv after each trial and the plots at the end. Reported as seconds per
part, split into a per-trial and a fixed (per-study) part, and as a share of the total; the bar is < 5%.
The share shrinks with longer trials: a real NLLB trial takes minutes to hours, a demo trial about a minute.

Memory: the peak resident memory (and peak CUDA memory on a GPU) of each trial, and the resident
memory at its start and left after its clean-up. The bar: trial 5 peaks no higher than trial 1
(within 1%, the noise of sampling RSS every 0.2 s). Also reported: whether the peaks grow from
trial 2 on (trial 1 starts before the libraries' lazy imports and kernel caches exist, so on a CPU
its peak is lower by that one-off amount; a leak shows as growth across the later trials).

Writes ``bench/results/hpo-overhead-<machine>-<date>.json`` (machine = host name).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERHEAD_PARTS = ("setup", "storage_open", "storage", "tracking", "cleanup", "trials_csv", "artefacts",
                  "artefacts.plots")
"""The study's own parts timed by run_study (artefacts.plots is part of artefacts, listed apart)."""
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_model, memory_gb  # noqa: E402  (one way to name the machine, bench/machine.py)


def machine() -> dict:
    """This machine: host name, CPU model, cores, memory, GPU, load average, library versions."""
    cpu, mem_gb = cpu_model(), memory_gb()
    import optuna
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "gpu": gpu,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "transformers": transformers.__version__, "optuna": optuna.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5, help="trials in the study")
    ap.add_argument("--pairs", type=int, default=1500, help="demo training pairs (the demo's 1500 by default)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per trial (configs/demo.yaml: 6)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default); 1 is much faster on a busy 2-core machine")
    ap.add_argument("--out", default=None,
                    help="output JSON (default bench/results/hpo-overhead-<machine>-<date>.json)")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from adaptmllm.config import config_from_dict
    from adaptmllm.runs.hpo.study import load_study_config
    from adaptmllm.runs.hpo.search import run_study
    import optuna

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="adaptmllm-hpo-bench-"))
    config = config_from_dict({
        "name": "bench", "runs_dir": str(work), "overwrite": True,
        "data": {"src_lang": "eng_Latn", "tgt_lang": "qaa_Latn", "demo_train_pairs": args.pairs},
        "model": {"name_or_path": "tiny"},
        "train": {"learning_rate": 1e-3, "num_train_epochs": args.epochs, "per_device_train_batch_size": 32,
                  "eval_max_pairs": 100, "logging_steps": 50},
        "eval": {"num_beams": 2, "batch_size": 64},
        "green": {"enabled": True, "measure_power_secs": 5.0},
        "hpo": {"n_trials": args.trials, "sampler": "tpe", "seed": 13, "pruner": "none", "plots": True,
                "space": {"learning_rate": {"low": 3e-4, "high": 3e-3, "log": True},
                          "per_device_train_batch_size": None, "gradient_accumulation_steps": None,
                          "weight_decay": {"low": 1e-3, "high": 0.1, "log": True}, "num_train_epochs": None,
                          "warmup_ratio": {"low": 0.0, "high": 0.1}, "label_smoothing": {"low": 0.0, "high": 0.2}}},
    })
    t0 = time.perf_counter()
    result = run_study(config, progress=False)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{result.hpo_dir / 'study.db'}")
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               **{k: (t.user_attrs.get("result") or {}).get(k) for k in (
                   "trial_seconds", "train_runtime_s", "rss_start_mb", "peak_rss_mb", "peak_cuda_mb",
                   "rss_after_cleanup_mb")},
               "energy_kwh": (t.user_attrs.get("green") or {}).get("energy_kwh")} for t in study.trials]
    first, last = trials[0], trials[-1]
    key = "peak_cuda_mb" if (first.get("peak_cuda_mb") or 0) > 0 else "peak_rss_mb"
    growth = (last[key] - first[key]) / first[key] if first[key] else 0.0
    timings = result.timings
    # Per trial: Optuna calls, tracker start/stop, freeing memory, trials.csv; the rest once per study.
    per_trial = sum(timings.get(k, 0.0) for k in ("storage", "tracking", "cleanup", "trials_csv")) / len(trials)
    out = {
        "benchmark": "hpo-overhead", "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": info,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {"trials": args.trials, "demo_train_pairs": args.pairs, "epochs": args.epochs,
                     "threads": torch.get_num_threads(), "storage": "sqlite (run folder)", "green": True,
                     "plots": True, "searched": load_study_config(config.run_dir).hpo.space.searched()},
        "wall_s": round(wall, 2),
        "timings_s": timings,
        "ml_work_s": round(sum(timings.get(k, 0.0) for k in ("data", "model", "training", "final")), 2),
        "overhead_s": timings["overhead"],
        "overhead_parts_s": {k: v for k, v in timings.items() if k in OVERHEAD_PARTS},
        "overhead_unattributed_s": round(timings["overhead"] - sum(
            timings.get(k, 0.0) for k in OVERHEAD_PARTS if "." not in k), 3),
        "overhead_per_trial_s": round(per_trial, 3),
        "overhead_fixed_s": round(timings["overhead"] - per_trial * len(trials), 3),
        "overhead_share": timings["overhead_share"],
        "overhead_target": 0.05,
        "overhead_ok": timings["overhead_share"] < 0.05,
        "trials": trials,
        "memory": {
            "measure": key, "trial_1": first[key], f"trial_{len(trials)}": last[key],
            "growth_share": round(growth, 4), "trial_last_le_trial_1": last[key] <= first[key] * 1.01,
            # Trial 1 starts before the libraries' lazy imports and kernel caches exist (its start RSS
            # is far lower); a leak shows as growth from trial 2 on, which this checks.
            "peaks_from_trial_2": [t[key] for t in trials[1:]],
            "no_growth_after_trial_2": (max(t[key] for t in trials[2:]) <= trials[1][key] * 1.01
                                        if len(trials) > 2 else None),
            "rss_after_cleanup_growth_per_trial_mb": round(
                (last["rss_after_cleanup_mb"] - trials[1]["rss_after_cleanup_mb"]) / max(1, len(trials) - 2), 2)
            if len(trials) > 2 else None},
        "best": {"trial": result.best_trial, "dev_chrf": result.best_value, "params": result.best_params,
                 "test": {k: (result.run.metrics.get(k) or {}).get("chrf") for k in ("baseline", "finetuned")}},
    }
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", info["host"]) or "machine"
    path = Path(args.out) if args.out else ROOT / "bench" / "results" / f"hpo-overhead-{host}-{dt.date.today()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("wall_s", "overhead_s", "overhead_share", "overhead_ok", "memory")},
                     indent=2, default=str))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
