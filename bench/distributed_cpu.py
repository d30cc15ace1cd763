"""Several processes training one model on a CPU: the demo trained by one process (batch 16) and by two
(``torchrun --nproc_per_node 2``, batch 8 each: the same global batch) with plain data parallelism (gloo),
DeepSpeed ZeRO-2 and ZeRO-3 (DeepSpeed's CPU accelerator).

    nice -n 10 .venv/bin/python bench/distributed_cpu.py        # ~4 min on 2 cores

Each rank runs through tests/distributed_worker.py, which records that rank's loss on its own shard of
every step. Recorded per setting: wall seconds of the whole command (start-up, baseline scoring,
training, test scoring, reports), ``train_runtime_s`` (metrics.json), the logged loss per step (the
mean over ranks), each rank's own losses, dev chrF++ after training and test BLEU/chrF++.
Writes ``bench/results/distributed-cpu-<date>.json``; docs/performance.md quotes it (tests compare).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
SETTINGS = [("one process", 1, 16, []), ("2 processes, data parallel (gloo)", 2, 8, []),
            ("2 processes, ZeRO-2", 2, 8, ["--train.deepspeed.stage", "2"]),
            ("2 processes, ZeRO-3", 2, 8, ["--train.deepspeed.stage", "3"])]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(records: list[dict]) -> str:
    """The markdown table docs/performance.md quotes (one row per setting)."""
    rows = ["| setting | processes x batch | ZeRO | steps | loss, first -> last step | each rank's last loss | "
            "dev chrF++ after | test chrF++ | wall s | training s |",
            "|---|---|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in records:
        ranks = " / ".join(f"{x[-1]:.3f}" for x in r["rank_losses"])
        rows.append(f"| {r['setting']} | {r['processes']} x {r['per_device_batch']} | {r['zero_stage']} | "
                    f"{r['global_step']} | {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} | {ranks} | "
                    f"{r['dev_chrf'][-1]:.1f} | {r['test']['chrf']:.1f} | {r['wall_s']:.0f} | "
                    f"{r['train_runtime_s']:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=384, help="training pairs (a multiple of 16)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    records = []
    with tempfile.TemporaryDirectory(prefix="adaptmllm-dist-") as tmp:
        for i, (label, nproc, per_device, extra) in enumerate(SETTINGS):
            name, runs, rec_dir = f"s{i}", Path(tmp) / "runs", Path(tmp) / f"record{i}"
            cli = ["run", "--config", str(ROOT / "configs" / "demo.yaml"), "--runs_dir", str(runs), "--name", name,
                   "--data.demo_train_pairs", str(args.pairs), "--data.dev_size", "100", "--data.test_size", "100",
                   "--train.num_train_epochs", str(args.epochs), "--train.per_device_train_batch_size",
                   str(per_device), "--train.eval_max_pairs", "50", "--train.logging_steps", "1",
                   "--eval.num_beams", "1", "--quiet", "true", *extra]
            launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
                       "127.0.0.1", "--master_port", str(_port())] if nproc > 1 else [sys.executable])
            t0 = time.perf_counter()
            proc = subprocess.run(launch + [str(WORKER), str(rec_dir), str(runs)] + cli, env=env, cwd=tmp,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            run_dir = runs / name
            m = json.loads((run_dir / "metrics.json").read_text())
            hist = json.loads((run_dir / "history.json").read_text())
            ranks = [json.loads((rec_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
            records.append({
                "setting": label, "processes": nproc, "per_device_batch": per_device, "global_batch": per_device * nproc,
                "zero_stage": m["train"]["memory_plan"]["zero_stage"], "world_size": m["train"]["batch"]["world_size"],
                "global_step": m["train"]["global_step"], "wall_s": round(wall, 1),
                "train_runtime_s": m["train"]["train_runtime_s"],
                "losses": [h["loss"] for h in hist if "loss" in h],
                "rank_losses": [r["losses"] for r in ranks],
                "dev_chrf": [h["eval_chrf"] for h in hist if "eval_chrf" in h],
                "test": {k: m["finetuned"][k] for k in ("bleu", "chrf")},
                "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()
                                and "rng_state" not in p.name),
            })
            print(f"{label}: {wall:.0f} s, loss {records[-1]['losses'][0]:.3f} -> {records[-1]['losses'][-1]:.3f}",
                  file=sys.stderr, flush=True)
    import platform

    import torch

    machine = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "load_average_at_end": os.getloadavg()[0]}
    date = dt.date.today().isoformat()
    out = Path(args.out or ROOT / "bench" / "results" / f"distributed-cpu-{date}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": date, "machine": machine, "pairs": args.pairs, "epochs": args.epochs,
                               "records": records}, indent=1) + "\n")
    print(table(records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
